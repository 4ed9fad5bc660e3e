//! STUB (replaced by the signals branch): what AI agents say, parsed.
#![allow(dead_code, unused_variables, clippy::all, missing_docs)]
pub mod classify;
pub mod hooks;
pub mod limit_reset;
pub mod rules;
pub mod terminal;
pub fn guess_kind(command: &str) -> &'static str {
    if command.contains("claude") {
        "claude"
    } else {
        "generic"
    }
}
