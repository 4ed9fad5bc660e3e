//! The programs a sandboxed spawn runs through: bubblewrap and our own launcher.

use std::path::{Path, PathBuf};

use rustix::fs::Access;

use crate::Error;

/// Where bubblewrap and the launcher (a binary whose `launcher_main` handles
/// [`crate::LAUNCHER_ARG`]) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub bwrap: PathBuf,
    pub launcher: PathBuf,
}

impl Tools {
    /// Finds `bwrap` in `$PATH` and checks that `launcher` is an executable file. There is no
    /// fallback: without bubblewrap a sandboxed agent does not start.
    pub fn find(launcher: PathBuf) -> Result<Tools, Error> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let bwrap = std::env::split_paths(&path)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join("bwrap"))
            .find(|candidate| is_executable(candidate))
            .ok_or(Error::BwrapMissing)?;
        if !launcher.is_absolute() || !is_executable(&launcher) {
            return Err(Error::LauncherMissing { path: launcher });
        }
        Ok(Tools { bwrap, launcher })
    }
}

fn is_executable(path: &Path) -> bool {
    path.is_file() && rustix::fs::access(path, Access::EXEC_OK).is_ok()
}
