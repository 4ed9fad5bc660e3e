//! Pure supervision logic: restart policy and backoff, agent names and ids, capabilities and grants,
//! specs and their validation, daemon configuration, JSON errors with positions, `apply` plans,
//! readable text from terminal output with `--grep` patterns, times for humans, the formats
//! agents ask for approval in, and secrets: their references in specs and masking their values. No I/O, no tokio.

pub mod apply;
pub mod approval_hooks;
pub mod approval_line;
pub mod capability;
pub mod clock;
pub mod config;
pub mod duration;
pub mod json;
pub mod logtext;
pub mod mask;
pub mod names;
pub mod notifications;
pub mod restart;
pub mod secret;
pub mod spec;
