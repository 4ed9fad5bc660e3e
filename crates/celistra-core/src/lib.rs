//! Pure supervision logic: restart policy and backoff, agent names and ids, specs and their
//! validation, daemon configuration, JSON errors with positions, and `apply` plans. No I/O, no tokio.

pub mod apply;
pub mod config;
pub mod duration;
pub mod json;
pub mod names;
pub mod restart;
pub mod spec;
