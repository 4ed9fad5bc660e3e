//! The programs a sandboxed spawn runs through: bubblewrap and our own launcher.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use rustix::fs::Access;

use crate::Error;

/// Where bubblewrap, the launcher (a binary whose `launcher_main` handles
/// [`crate::LAUNCHER_ARG`]) and the daemon's own binary (an agent's `celistrad`) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub bwrap: PathBuf,
    pub launcher: PathBuf,
    pub daemon: PathBuf,
}

/// The launcher's own binary, installed next to `celistrad`. It starts in about 2 ms, where
/// `celistrad __sandbox-exec` takes about 4: a 30 MB position-independent binary has 1.4 MiB of
/// relocations to apply before its `main` runs (BENCHMARKS.md, issue 18).
pub(crate) const LAUNCHER_BINARY: &str = "celistra-launch";

impl Tools {
    /// Finds `bwrap` in `$PATH`, and the launcher next to `daemon` (the daemon's binary, an
    /// executable file), else `daemon` itself in its launcher mode. There is no fallback for
    /// bubblewrap: without it a sandboxed agent does not start.
    pub fn find(daemon: PathBuf) -> Result<Tools, Error> {
        Tools::find_in(&std::env::var_os("PATH").unwrap_or_default(), daemon)
    }

    /// [`Tools::find`] with `search_path` in place of `$PATH`.
    fn find_in(search_path: &OsStr, daemon: PathBuf) -> Result<Tools, Error> {
        let bwrap = std::env::split_paths(search_path)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join("bwrap"))
            .find(|candidate| is_executable(candidate))
            .ok_or(Error::BwrapMissing)?;
        if !daemon.is_absolute() || !is_executable(&daemon) {
            return Err(Error::LauncherMissing { path: daemon });
        }
        let launcher = daemon
            .parent()
            .map(|dir| dir.join(LAUNCHER_BINARY))
            .filter(|launcher| is_executable(launcher))
            .unwrap_or_else(|| daemon.clone());
        Ok(Tools {
            bwrap,
            launcher,
            daemon,
        })
    }
}

fn is_executable(path: &Path) -> bool {
    path.is_file() && rustix::fs::access(path, Access::EXEC_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bwrap_is_found_in_the_search_path_or_its_absence_explained() {
        let launcher = PathBuf::from("/bin/sh");
        let tools = Tools::find_in(OsStr::new("/nonexistent:/usr/bin"), launcher.clone()).unwrap();
        assert_eq!(tools.bwrap, Path::new("/usr/bin/bwrap"));
        let missing = Tools::find_in(OsStr::new("/nonexistent"), launcher).unwrap_err();
        let message = missing.to_string();
        for hint in [
            "apt-get install bubblewrap",
            "dnf install bubblewrap",
            "ctl sandbox off",
            "`privileged`",
        ] {
            assert!(message.contains(hint), "{hint:?} not in {message}");
        }
        let relative = Tools::find_in(OsStr::new("/usr/bin"), PathBuf::from("celistrad"));
        assert!(matches!(relative, Err(Error::LauncherMissing { .. })));
    }

    #[test]
    fn the_launcher_beside_the_daemon_is_used_and_else_the_daemon_itself() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let install = |name: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let daemon = install("celistrad", 0o755);
        let alone = Tools::find_in(OsStr::new("/usr/bin"), daemon.clone()).unwrap();
        assert_eq!((&alone.launcher, &alone.daemon), (&daemon, &daemon));
        let launcher = install(LAUNCHER_BINARY, 0o644);
        let not_executable = Tools::find_in(OsStr::new("/usr/bin"), daemon.clone()).unwrap();
        assert_eq!(
            not_executable.launcher, daemon,
            "a launcher that cannot run is passed over"
        );
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
        let beside = Tools::find_in(OsStr::new("/usr/bin"), daemon.clone()).unwrap();
        assert_eq!((&beside.launcher, &beside.daemon), (&launcher, &daemon));
    }
}
