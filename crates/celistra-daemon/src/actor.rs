//! Who does things: a credential (its name and role) or the daemon itself. Every event and audit
//! entry of a privileged action names its actor, and a credential's role with it.

use celistra_proto::Role;

/// The actor of what the daemon does by itself.
pub(crate) const SYSTEM: &str = "system";

/// The actor of what the daemon does because a schedule or `restart_cron` said so.
pub(crate) const SCHEDULE: &str = "schedule";

/// The actor of what the daemon does because files an agent watches changed.
pub(crate) const WATCH: &str = "watch";
/// The actor of what the daemon does because an agent's memory stayed above its `memory_restart`.
pub(crate) const MEMORY: &str = "memory";

/// Who asked for something: a credential's name as recorded (`machine-secret`, `token:<name>`,
/// `session:<id>`, `link:<channel>`) and its role, or the daemon itself (`system`, no role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Actor {
    pub name: String,
    pub role: Option<Role>,
}

impl Actor {
    pub(crate) fn system() -> Actor {
        Actor {
            name: SYSTEM.to_owned(),
            role: None,
        }
    }

    /// The daemon's scheduler (`scheduler.rs`).
    pub(crate) fn schedule() -> Actor {
        Actor {
            name: SCHEDULE.to_owned(),
            role: None,
        }
    }

    /// The daemon's file watching (`file_watch.rs`).
    pub(crate) fn watch() -> Actor {
        Actor {
            name: WATCH.to_owned(),
            role: None,
        }
    }

    /// The usage sampler's memory restarts (`usage.rs`).
    pub(crate) fn memory() -> Actor {
        Actor {
            name: MEMORY.to_owned(),
            role: None,
        }
    }

    pub(crate) fn credential(name: impl Into<String>, role: Role) -> Actor {
        Actor {
            name: name.into(),
            role: Some(role),
        }
    }

    /// The actor an event names.
    pub(crate) fn recorded(name: &str, role: Option<Role>) -> Actor {
        Actor {
            name: name.to_owned(),
            role,
        }
    }

    pub(crate) fn is_system(&self) -> bool {
        self.name == SYSTEM
    }
}
