//! Pure supervision logic: restart policy and backoff, agent names and ids, capabilities and grants,
//! specs and their validation, daemon configuration, JSON errors with positions, `apply` plans,
//! readable text from terminal output with `--grep` patterns, times for humans, cron schedules in
//! time zones, the formats agents ask for approval in, what AI coding agents say about themselves
//! (`agents`: exit classes, usage-limit resets, terminal signals, screen rules, hooks), and secrets:
//! their references in specs and masking their values. No I/O, no tokio.

pub mod agents;
pub mod apply;
pub mod approval_hooks;
pub mod approval_line;
pub mod capability;
pub mod clock;
pub mod config;
pub mod depends;
pub mod duration;
pub mod import;
pub mod json;
pub mod listen;
pub mod logtext;
pub mod mask;
pub mod model_trouble;
pub mod names;
pub mod notifications;
pub mod probe;
pub mod restart;
pub mod schedule;
pub mod secret;
pub mod shell;
pub mod spec;
pub mod watch;
