//! The programs a sandboxed spawn runs through: bubblewrap and our own launcher.

use std::ffi::OsStr;
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
        Tools::find_in(&std::env::var_os("PATH").unwrap_or_default(), launcher)
    }

    /// [`Tools::find`] with `search_path` in place of `$PATH`.
    fn find_in(search_path: &OsStr, launcher: PathBuf) -> Result<Tools, Error> {
        let bwrap = std::env::split_paths(search_path)
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
}
