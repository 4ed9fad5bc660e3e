//! What the launcher enforces on the agent inside the sandbox: the Landlock rules (paths with their
//! rights, TCP ports, scopes) and the seccomp policy. The daemon computes it once per plan and
//! passes it encoded on the launcher's command line, so what `describe` shows is what is applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};

/// Rights on one file hierarchy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rights {
    /// Read files and list directories.
    pub read: bool,
    /// Every write-ish right of the ABI: write, truncate, create and remove entries of any kind,
    /// link or rename across directories (REFER), device ioctls.
    pub write: bool,
    pub execute: bool,
}

impl Rights {
    pub(crate) const READ: Rights = Rights {
        read: true,
        write: false,
        execute: false,
    };
    pub(crate) const READ_WRITE: Rights = Rights {
        read: true,
        write: true,
        execute: false,
    };
    pub(crate) const READ_EXECUTE: Rights = Rights {
        read: true,
        write: false,
        execute: true,
    };

    pub(crate) fn with_execute(self, execute: bool) -> Rights {
        Rights {
            execute: self.execute || execute,
            ..self
        }
    }

    fn union(self, other: Rights) -> Rights {
        Rights {
            read: self.read || other.read,
            write: self.write || other.write,
            execute: self.execute || other.execute,
        }
    }

    fn access(self, abi: ABI) -> BitFlags<AccessFs> {
        let mut access = BitFlags::EMPTY;
        if self.read {
            access |= AccessFs::ReadFile | AccessFs::ReadDir;
        }
        if self.write {
            access |= AccessFs::from_write(abi);
        }
        if self.execute {
            access |= AccessFs::Execute;
        }
        access
    }

    fn label(self) -> String {
        let names = [
            (self.read, "read"),
            (self.write, "write"),
            (self.execute, "execute"),
        ];
        let named: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|&(_, name)| name)
            .collect();
        named.join("+")
    }
}

/// TCP ports a process may connect to and bind (Landlock ABI 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TcpPorts {
    pub connect: Vec<u16>,
    pub bind: Vec<u16>,
}

/// Everything the launcher applies before exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Confinement {
    /// The Landlock ABI whose rights are handled: the kernel's, capped at the newest this code was
    /// tested with. 0: no Landlock.
    pub landlock_abi: u32,
    /// Rights by path; everything else handled by the ABI is denied.
    pub paths: BTreeMap<PathBuf, Rights>,
    /// Set when TCP is limited to some ports.
    pub tcp: Option<TcpPorts>,
    /// `subprocess`: fork and exec freely.
    pub subprocess: bool,
}

/// Why the launcher could not restrict itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LandlockError {
    #[error("{path}: {source}")]
    Path {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ruleset(#[from] landlock::RulesetError),
    #[error("the kernel enforced the ruleset only {0:?}, not fully as planned")]
    NotFullyEnforced(RulesetStatus),
}

impl Confinement {
    /// Grants `rights` on `path`, on top of what it has.
    pub(crate) fn grant(&mut self, path: &Path, rights: Rights) {
        let entry = self.paths.entry(path.to_path_buf()).or_default();
        *entry = entry.union(rights);
    }

    fn abi(&self) -> ABI {
        ABI::from(i32::try_from(self.landlock_abi).unwrap_or(i32::MAX))
    }

    /// Human-readable rule lines for `ctl sandbox explain`.
    pub(crate) fn describe(&self) -> Vec<String> {
        if self.landlock_abi == 0 {
            return vec!["not available on this kernel: nothing is enforced by Landlock".into()];
        }
        let abi = self.abi();
        let mut lines = vec![format!(
            "handled: {} (everything not granted below is denied)",
            names(AccessFs::from_all(abi))
        )];
        for (path, rights) in &self.paths {
            lines.push(format!("{:<20} {}", rights.label(), path.display()));
        }
        if let Some(tcp) = &self.tcp {
            lines.push(format!("tcp connect: {}", ports(&tcp.connect)));
            lines.push(format!("tcp bind: {}", ports(&tcp.bind)));
        }
        if abi >= ABI::V6 {
            lines.push(
                "scoped: signals and abstract unix sockets reach only this sandbox".to_owned(),
            );
        }
        if abi >= ABI::V7 {
            lines.push(
                "logged: denials, also after exec, are audit records (LOG_NEW_EXEC_ON)".to_owned(),
            );
        }
        lines
    }

    /// Restricts the calling thread and its future children. Paths that do not exist inside the
    /// sandbox are skipped: there is nothing to grant on them.
    pub(crate) fn restrict_self(&self) -> Result<(), LandlockError> {
        if self.landlock_abi == 0 {
            return Ok(());
        }
        let abi = self.abi();
        let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(abi))?;
        if self.tcp.is_some() {
            ruleset = ruleset.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?;
        }
        if abi >= ABI::V6 {
            ruleset = ruleset.scope(Scope::from_all(abi))?;
        }
        let mut created = ruleset.create()?;
        if abi >= ABI::V7 {
            created = created.log_new_exec(true)?;
        }
        for (path, rights) in &self.paths {
            let metadata = match std::fs::metadata(path) {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(path_error(path, source)),
            };
            let mut access = rights.access(abi);
            if !metadata.is_dir() {
                access &= AccessFs::from_file(abi);
            }
            let fd = PathFd::new(path).map_err(|e| path_error(path, std::io::Error::other(e)))?;
            created = created.add_rule(PathBeneath::new(fd, access))?;
        }
        if let Some(tcp) = &self.tcp {
            for &port in &tcp.connect {
                created = created.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
            }
            for &port in &tcp.bind {
                created = created.add_rule(NetPort::new(port, AccessNet::BindTcp))?;
            }
        }
        // The plan asked for exactly the kernel's ABI, so anything short of full enforcement means
        // the description would be a lie.
        match created.restrict_self()?.ruleset {
            RulesetStatus::FullyEnforced => Ok(()),
            other => Err(LandlockError::NotFullyEnforced(other)),
        }
    }
}

fn path_error(path: &Path, source: std::io::Error) -> LandlockError {
    LandlockError::Path {
        path: path.display().to_string(),
        source,
    }
}

fn names(access: BitFlags<AccessFs>) -> String {
    let names: Vec<String> = access.iter().map(|a| format!("{a:?}")).collect();
    names.join(", ")
}

fn ports(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "none".to_owned();
    }
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ports.join(", ")
}
