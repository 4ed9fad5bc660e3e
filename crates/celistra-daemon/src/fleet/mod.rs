//! The fleet: this daemon as a member of a hub's fleet (`member.rs`: joining, the outbound link),
//! as a hub (`hub.rs`: the link port, the live links, the machines' caches; `registry.rs`: its
//! durable state), and the link identity both use (`identity.rs`).

mod hub;
mod identity;
mod member;
mod registry;
mod splice;
mod witness;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use celistra_proto::Role;

pub(crate) use hub::{Hub, HubOptions};
pub(crate) use member::{JoinError, Member};

/// This daemon's place in a fleet: its name, the most a hub may do here, the hub it is (if it is
/// one) and its membership of a hub (if it joined one).
#[derive(Debug)]
pub(crate) struct Fleet {
    pub machine_name: String,
    /// `fleet` in config.json: the highest role a hub user gets on this machine.
    pub ceiling: Role,
    pub hub: Option<Arc<Hub>>,
    pub member: Arc<Member>,
    /// This daemon's own router, for requests a hub's API addresses to its own machine.
    pub local: std::sync::OnceLock<axum::Router>,
}

/// Marks a request that came over this node's link to its hub: only the link's server sets it,
/// so the hub user's identity headers are believed on the link and nowhere else.
#[derive(Debug, Clone)]
pub(crate) struct Tunnel {
    pub hub_name: String,
}

/// The role a hub user gets on this node: theirs, but never more than the node's `fleet` ceiling.
pub(crate) fn capped(role: Role, ceiling: Role) -> Role {
    if ceiling.satisfies(role) {
        role
    } else if role.satisfies(ceiling) {
        ceiling
    } else {
        // Neither includes the other (an approver under a viewer ceiling): the least, reading.
        Role::Viewer
    }
}

/// A random number for spreading retries (jitter); no secret depends on it.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// What the hub said on a link before closing it: when to come back, or why it refused.
#[derive(Debug, Clone, Default)]
struct ReconnectHint(Arc<Mutex<(Option<Duration>, Option<String>)>>);

impl ReconnectHint {
    fn set(&self, after: Duration) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).0 = Some(after);
    }

    fn refuse(&self, message: String) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).1 = Some(message);
    }

    fn take(&self) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .take()
    }

    fn refusal(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_user_never_gets_more_than_the_ceiling() {
        use Role::{Approver, Operator, Owner, Viewer};
        let cases = [
            (Owner, Operator, Operator),
            (Operator, Operator, Operator),
            (Viewer, Operator, Viewer),
            (Approver, Operator, Approver),
            (Owner, Owner, Owner),
            (Operator, Viewer, Viewer),
            (Approver, Viewer, Viewer),
            (Owner, Viewer, Viewer),
        ];
        for (role, ceiling, expected) in cases {
            assert_eq!(capped(role, ceiling), expected, "{role} under {ceiling}");
        }
    }
}
