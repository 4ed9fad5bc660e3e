//! The programs a sandboxed spawn runs through: our own launcher, and the daemon's binary that
//! agents run inside as `celistrad`.

use std::path::{Path, PathBuf};

use rustix::fs::Access;

use crate::Error;

/// Where the launcher (a binary whose `launcher_main` handles [`crate::LAUNCHER_ARG`]) and the
/// daemon's own binary (an agent's `celistrad`) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub launcher: PathBuf,
    pub daemon: PathBuf,
}

/// The launcher's own binary, installed next to `celistrad`. It starts in about 2 ms, where
/// `celistrad __sandbox-exec` takes about 4: a 30 MB position-independent binary has 1.4 MiB of
/// relocations to apply before its `main` runs (BENCHMARKS.md, issue 18). It also stays as each
/// sandbox's init, where a small binary costs less memory.
pub(crate) const LAUNCHER_BINARY: &str = "celistra-launch";

/// The keeper's own binary, installed next to `celistrad`: a small binary, so that the keeper,
/// which lives as long as any agent, carries none of the 1.4 MiB of tables the daemon's binary
/// relocates at start (BENCHMARKS.md, issue 18).
const KEEPER_BINARY: &str = "celistra-keeper";

impl Tools {
    /// The launcher next to `daemon` (the daemon's binary, an executable file), else `daemon`
    /// itself in its launcher mode.
    pub fn find(daemon: PathBuf) -> Result<Tools, Error> {
        if !daemon.is_absolute() || !is_executable(&daemon) {
            return Err(Error::LauncherMissing { path: daemon });
        }
        let launcher = beside(&daemon, LAUNCHER_BINARY).unwrap_or_else(|| daemon.clone());
        Ok(Tools { launcher, daemon })
    }
}

/// The binary a keeper runs as for the daemon whose binary is `daemon`: the keeper's own beside
/// it, else `daemon` itself in its keeper mode.
pub(crate) fn keeper_binary(daemon: &Path) -> PathBuf {
    beside(daemon, KEEPER_BINARY).unwrap_or_else(|| daemon.to_path_buf())
}

/// The executable file `name` in `binary`'s directory, if there is one.
fn beside(binary: &Path, name: &str) -> Option<PathBuf> {
    let candidate = binary.parent()?.join(name);
    is_executable(&candidate).then_some(candidate)
}

fn is_executable(path: &Path) -> bool {
    path.is_file() && rustix::fs::access(path, Access::EXEC_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_binary_that_is_not_an_absolute_executable_path_is_refused() {
        for daemon in ["celistrad", "/nonexistent/celistrad", "/etc/passwd"] {
            let refused = Tools::find(PathBuf::from(daemon));
            assert!(
                matches!(refused, Err(Error::LauncherMissing { .. })),
                "{daemon}: {refused:?}"
            );
        }
    }

    #[test]
    fn the_launcher_and_keeper_beside_the_daemon_are_used_and_else_the_daemon_itself() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let install = |name: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let daemon = install("celistrad", 0o755);
        let alone = Tools::find(daemon.clone()).unwrap();
        assert_eq!((&alone.launcher, &alone.daemon), (&daemon, &daemon));
        let launcher = install(LAUNCHER_BINARY, 0o644);
        let not_executable = Tools::find(daemon.clone()).unwrap();
        assert_eq!(
            not_executable.launcher, daemon,
            "a launcher that cannot run is passed over"
        );
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
        let beside = Tools::find(daemon.clone()).unwrap();
        assert_eq!((&beside.launcher, &beside.daemon), (&launcher, &daemon));
        // The keeper: its own binary beside the daemon once it can run, else the daemon's.
        assert_eq!(keeper_binary(&daemon), daemon);
        let keeper = install(KEEPER_BINARY, 0o644);
        assert_eq!(keeper_binary(&daemon), daemon, "a keeper that cannot run");
        std::fs::set_permissions(&keeper, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(keeper_binary(&daemon), keeper);
    }
}
