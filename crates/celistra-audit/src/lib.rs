//! Celistra's tamper-evident audit log (issue 6): every privileged action as one hash-chained JSON
//! line in `audit.log`, each entry also a leaf of an RFC 6962 Merkle tree whose head the daemon
//! signs as a C2SP checkpoint with an Ed25519 key, with inclusion and consistency proofs, queries, a
//! live tail, verification and export. docs/audit-format.md specifies the formats.

mod bundle;
mod chain;
mod digest;
mod entry;
mod error;
#[cfg(test)]
mod format_doc;
pub mod merkle;
mod note;
mod query;
mod store;
mod writer;

pub use bundle::{
    CHECKPOINT_FILE, ENTRIES_FILE, PUBLIC_KEY_FILE, verify_bundle, verify_consistency,
    verify_inclusion,
};
pub use digest::{Hash, hash_from_hex, to_hex};
pub use entry::{
    Entry, GENESIS_HASH, NewEntry, REDACTED, canonical_content, chain_hash, content_hash, redact,
};
pub use error::{Error, Tamper};
pub use note::{Checkpoint, NoteVerifier};
pub use query::{DEFAULT_LIMIT, MAX_LIMIT, Page, Query};
pub use store::{AuditLog, ExportReport, OpenReport, Verified, verify_checkpoint};
