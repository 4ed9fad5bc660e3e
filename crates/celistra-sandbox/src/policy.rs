//! What a sandboxed process may do, in concrete terms. The daemon turns capability tokens into a
//! [`Policy`]; every platform's enforcement (namespaces + Landlock + seccomp here, Seatbelt on macOS)
//! is generated from this one value.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The permissions of one sandboxed run. Paths are absolute and, where they exist, canonical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The agent's working directory.
    pub workspace: PathBuf,
    /// `workspace_rw`: the workspace may be written (otherwise it is only readable).
    pub workspace_writable: bool,
    /// `read_anywhere`: every visible path may be read (otherwise only the system's runtime
    /// directories, the workspace and `read` paths).
    pub read_anywhere: bool,
    /// `network`, or TCP limited to some ports, or none.
    pub network: Network,
    /// `subprocess`: the process may fork and exec freely (otherwise it cannot fork, and may exec only
    /// the `exec` paths).
    pub subprocess: bool,
    /// `read:<path>`: extra readable paths.
    pub read: Vec<PathBuf>,
    /// `write:<path>`: extra writable paths.
    pub write: Vec<PathBuf>,
    /// `exec:<path>`: paths that may be executed when `subprocess` is absent.
    pub exec: Vec<PathBuf>,
    /// Paths that must not be visible at all inside the sandbox: the daemon's state directory with its
    /// secrets and sockets.
    pub hidden: Vec<PathBuf>,
    /// macOS privacy (TCC) grants; recorded everywhere, meaningful only on macOS.
    pub macos: MacosGrants,
    /// The agent's own socket to the daemon (approvals), named `ask.sock` in a directory of its
    /// own, which is made visible inside the sandbox (so a socket the next daemon binds there is
    /// seen too), the socket at [`ASK_SOCKET_INSIDE`].
    #[serde(default)]
    pub ask_socket: Option<PathBuf>,
}

/// Where a sandboxed agent finds its socket to the daemon: in its private `/tmp`, so the mount point
/// is made in the sandbox's own tmpfs, never on the host.
pub const ASK_SOCKET_INSIDE: &str = "/tmp/.celistra-ask/ask.sock";

/// The directory holding [`ASK_SOCKET_INSIDE`]: the agent's socket directory, bound.
pub(crate) const ASK_DIR_INSIDE: &str = "/tmp/.celistra-ask";

/// Where a sandboxed agent finds the daemon's own binary, read-only, as `celistrad` (for
/// `celistrad ask` and `celistrad hook`): first on its `PATH`, in its private `/tmp` like the
/// socket.
pub const AGENT_BIN_INSIDE: &str = "/tmp/.celistra/bin";

/// Network access of a sandboxed process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The host's network, unrestricted (`network`).
    Full,
    /// The host's network, but TCP only to `connect` ports and listening only on `bind` ports
    /// (`connect:<port>`, `bind:<port>`).
    Ports { connect: Vec<u16>, bind: Vec<u16> },
    /// A private network namespace with nothing but a loopback interface.
    None,
}

/// macOS privacy grants (TCC). Seatbelt cannot grant them; a profile only avoids denying the services
/// they need, and the user grants the daemon's binary in System Settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacosGrants {
    pub screen_capture: bool,
    pub accessibility: bool,
    pub full_disk_access: bool,
}
