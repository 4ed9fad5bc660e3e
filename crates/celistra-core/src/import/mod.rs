//! Importers: supervisord INI files and PM2 ecosystem files turned into the specs of an `apply`
//! file, with a note for every source key that was not mapped one to one. Pure: the caller reads
//! the files, resolves supervisord's includes and evaluates PM2's JavaScript, and passes text in.

pub mod pm2;
pub mod supervisord;
mod tree;

use std::fmt;

use celistra_proto::AgentSpec;
use serde::Serialize;

/// What an import produced: the agents, and what the reader should know about the source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Import {
    pub agents: Vec<AgentSpec>,
    pub notes: Vec<Note>,
}

/// One source key (or section) that was mapped with a difference worth knowing, or not mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub file: String,
    /// 1-based; absent where it cannot be known (a PM2 file evaluated by node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Where the key is: `[program:web]`, `apps[0] (api)`.
    pub within: String,
    /// The key; empty for a note on a whole section.
    pub key: String,
    pub kind: NoteKind,
    /// What became of it and why; for an unsupported key, what to do instead.
    pub message: String,
}

/// Whether a key made it into the specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoteKind {
    /// Mapped, with a difference the message explains.
    Mapped,
    /// Not in the specs: Celistra has no such setting, or not yet.
    Unsupported,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.within)?;
        if !self.key.is_empty() {
            write!(f, " {}", self.key)?;
        }
        let kind = match self.kind {
            NoteKind::Mapped => "mapped",
            NoteKind::Unsupported => "not imported",
        };
        write!(f, ": {kind}: {}", self.message)
    }
}

/// Why a file could not be imported at all: it does not parse, or a value is one its own program
/// would refuse too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ImportError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Where a key came from, to file notes and errors under.
#[derive(Debug, Clone)]
struct Place<'a> {
    file: &'a str,
    line: Option<usize>,
    within: &'a str,
    key: &'a str,
}

impl Place<'_> {
    fn note(&self, kind: NoteKind, message: impl Into<String>) -> Note {
        Note {
            file: self.file.to_owned(),
            line: self.line,
            within: self.within.to_owned(),
            key: self.key.to_owned(),
            kind,
            message: message.into(),
        }
    }

    fn error(&self, message: impl fmt::Display) -> ImportError {
        let key = if self.key.is_empty() {
            String::new()
        } else {
            format!(" {}", self.key)
        };
        ImportError {
            file: self.file.to_owned(),
            line: self.line,
            message: format!("{}{key}: {message}", self.within),
        }
    }
}

/// The notes every importer gives for an output or log file key: Celistra keeps output itself.
const KEEPS_HISTORY: &str = "Celistra keeps every agent's output itself, with a timestamp per \
    line and its stream (`ctl logs NAME`, `--stdout`/`--stderr`, `-f`); retention is \
    `logs_max_age_days`/`logs_max_agent_mb` in config.json. To also write a file, pipe the \
    command's output into one";
