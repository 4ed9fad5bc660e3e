//! The fleet's wire types: machines as the hub lists them, pairing codes, joining a hub, and the
//! merged event stream's events (each tagged with its machine).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Event;

/// Default port a hub listens on for its nodes' links (`--hub-listen`).
pub const HUB_PORT: u16 = 33121;
/// ALPN of a node's link to its hub: over it the node serves its API as an HTTP/2 server.
pub const FLEET_ALPN: &[u8] = b"celistra-fleet/1";
/// ALPN of a joining node's one HTTP/1.1 request to the hub (`POST /fleet/v1/enroll`).
pub const ENROLL_ALPN: &[u8] = b"celistra-enroll/1";
/// Headers the hub sets on requests it forwards to a node over the link: the hub user's name and
/// role. A node trusts them only on the link, never on its own listeners.
pub const FLEET_USER_HEADER: &str = "celistra-fleet-user";
pub const FLEET_ROLE_HEADER: &str = "celistra-fleet-role";

/// One machine of the fleet, as `GET /v1/machines` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Machine {
    /// Its machine name (`--machine-name`), unique in the fleet.
    pub name: String,
    /// The machine of the daemon answering (the hub itself, or a lone daemon).
    pub this: bool,
    /// Whether its link to the hub is up (always true for `this`).
    pub online: bool,
    /// When the hub last heard from it (link up, event, answer), in ms since the Unix epoch.
    pub last_seen_ms: Option<u64>,
    /// The address its link comes from, as the hub sees it.
    pub address: Option<String>,
    /// Its daemon's version.
    pub version: Option<String>,
    /// Its agents, and how many of them run, from the hub's live cache.
    pub agents: u32,
    pub agents_running: u32,
    /// When it joined the fleet.
    pub joined_at_ms: Option<u64>,
    /// What the hub's witnessing of its audit log found.
    pub audit: WitnessState,
}

/// The hub's view of a node's audit log: the latest signed checkpoint it has checked, and whether
/// every new one extended the previous (a consistency proof) or the history was rewritten.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WitnessState {
    /// `ok`, `unwitnessed` (no checkpoint yet) or `tampered`.
    pub status: WitnessStatus,
    /// Entries covered by the latest witnessed checkpoint.
    pub size: u64,
    /// When it was last checked, in ms since the Unix epoch.
    pub checked_at_ms: Option<u64>,
    /// What was found wrong, for `tampered`.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WitnessStatus {
    #[default]
    Unwitnessed,
    Ok,
    Tampered,
}

/// `POST /v1/fleet/pairing-codes`: a single-use code for one new machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PairingCode {
    pub code: String,
    pub expires_at_ms: u64,
    /// The hub's link address, as the joining machine should dial it.
    pub hub: String,
    /// SHA-256 of the hub's link certificate, lowercase hex.
    pub fingerprint: String,
    /// The one line to run on the new machine.
    pub command: String,
}

/// `POST /v1/fleet/join`: tells this daemon to join a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JoinRequest {
    /// The hub's link address, `host:port`.
    pub hub: String,
    pub code: String,
    /// SHA-256 of the hub's link certificate (hex, colons allowed).
    pub fingerprint: String,
}

/// This daemon's place in a fleet (`GET /v1/fleet`, and the answer to a join).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FleetStatus {
    pub machine_name: String,
    /// Whether this daemon is a hub (`--hub`).
    pub hub: bool,
    /// The hub this machine belongs to, when it joined one.
    pub member_of: Option<Membership>,
    /// The most a hub may do here (`fleet` in config.json): `operator` unless set.
    pub ceiling: crate::Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Membership {
    /// The hub's machine name.
    pub hub_name: String,
    /// The hub's link address.
    pub hub: String,
    pub fingerprint: String,
    /// Whether the link to the hub is up now.
    pub connected: bool,
    /// Why the last attempt failed, while it is down.
    pub last_error: Option<String>,
}

/// What a joining node sends the hub (`POST /fleet/v1/enroll`, over a link that presents the
/// node's own certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub code: String,
    pub machine_name: String,
    pub version: String,
    /// The node's audit log verification key (`celistra/<id>+<hash>+<key>`), which the hub pins to
    /// witness its checkpoints.
    pub audit_key: String,
}

/// The hub's answer to an enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollAnswer {
    pub hub_name: String,
    pub machine_name: String,
}

/// One event of the hub's merged stream (`GET /v1/fleet/events`): the machine's own event, its id
/// replaced by the hub's stream position, the machine's id kept as `machine_event_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetEvent {
    pub machine: String,
    pub machine_event_id: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// A hub going away tells each node when to dial again (`POST /fleet/v1/reconnect` on the link),
/// so its nodes do not all come back in the same second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconnectAfter {
    pub after_ms: u64,
}

/// A hub refusing a link says why before it closes it (`POST /fleet/v1/refused` on the link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRefusal {
    pub message: String,
}

/// One machine's agents, as the hub's cache has them (`GET /v1/fleet/agents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MachineAgents {
    pub machine: String,
    pub online: bool,
    pub agents: Vec<crate::AgentInfo>,
}
