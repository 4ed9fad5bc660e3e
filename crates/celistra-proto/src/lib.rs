//! Wire types of the celistrad HTTP API: request and response bodies, agent states, signals, events,
//! run history, log lines, the shared-terminal protocol and error codes. Shared by the daemon, its clients and the later fleet hub; performs no I/O.

mod access;
mod activity;
mod agent;
mod approval;
mod audit;
mod error;
mod event;
mod fleet;
mod history;
mod notify;
mod probe;
mod sandbox;
mod secret;
mod session;
mod signal;
mod terminal;
mod watch;

pub use access::*;
pub use activity::*;
pub use agent::*;
pub use approval::*;
pub use audit::*;
pub use error::*;
pub use event::*;
pub use fleet::*;
pub use history::*;
pub use notify::*;
pub use probe::*;
pub use sandbox::*;
pub use secret::*;
pub use session::*;
pub use signal::*;
pub use terminal::*;
pub use watch::*;

/// Version of this API; bumped when a breaking change is made to any type here.
pub const API_VERSION: &str = "v1";

/// Header a client sets to say which surface it is (`cli`, `dashboard`, `api`, …). It is recorded with
/// each spawned agent and will be a match key of capability grants.
pub const SOURCE_HEADER: &str = "x-celistra-source";
