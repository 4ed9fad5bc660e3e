//! Who does things: the actor recorded for what the daemon does by itself. Requests carry their
//! own actor (see `api`).

/// The actor of what the daemon does by itself.
pub(crate) const SYSTEM: &str = "system";
