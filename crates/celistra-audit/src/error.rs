//! The two ways things go wrong: an [`Error`] (the store could not do what was asked) and a
//! [`Tamper`] (the log, a checkpoint or a proof is not what it should be).

use std::fmt;
use std::path::Path;

/// Something the audit store could not do, saying what and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "{path} has mode {mode:04o}, so other users may read the audit signing key; run `chmod 600 {path}`"
    )]
    InsecureKey { path: String, mode: u32 },
    #[error(
        "{path} is not a usable audit signing key ({reason}); restore it from a backup: a new key would make every checkpoint clients saw unverifiable"
    )]
    BadKey { path: String, reason: String },
    #[error(
        "the audit origin {0:?} is not a valid key name: it must be non-empty, without whitespace or `+`"
    )]
    BadOrigin(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error(
        "the audit log writer cannot write: {0}; entries are kept in memory and retried every second"
    )]
    WriterFailed(String),
    #[error("refusing to sign a checkpoint: {0}")]
    Inconsistent(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn io_at(action: &str, path: &Path, source: std::io::Error) -> Error {
        Error::io(format!("{action} {}", path.display()), source)
    }
}

/// What verification found wrong: the first bad sequence number, when one entry can be blamed, and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    pub seq: Option<u64>,
    pub what: String,
}

impl Tamper {
    pub(crate) fn at(seq: u64, what: impl Into<String>) -> Tamper {
        Tamper {
            seq: Some(seq),
            what: what.into(),
        }
    }

    pub(crate) fn general(what: impl Into<String>) -> Tamper {
        Tamper {
            seq: None,
            what: what.into(),
        }
    }
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "audit entry {seq}: {}", self.what),
            None => write!(f, "audit log: {}", self.what),
        }
    }
}

impl std::error::Error for Tamper {}
