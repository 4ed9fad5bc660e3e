//! The code pages (the executable's and its libraries') and the heap's free memory given back
//! (`celistra_sandbox::release_idle_memory`): once the daemon serves, since
//! start-up code does not run again, and again once the daemon has been quiet for a while after
//! start-up's last work, a burst of agent starts, stops and spawns, or requests, since an idle
//! daemon never needs that code. A page needed again comes back from the page cache with a minor
//! fault.

use std::sync::Arc;
use std::time::Duration;

use celistra_proto::EventKind;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::events::EventBus;

/// How long agents must have stayed as they are, and the API unasked, before the pages go back
/// again.
const QUIET: Duration = Duration::from_secs(10);

/// Releases the pages now, then once start-up's last work is done (the history's check and first
/// maintenance, the audit chain's verification run after the daemon serves), and after every
/// burst of agent starts, stops and spawns or of requests, until `stopping`.
pub(crate) async fn release_when_quiet(
    events: Arc<EventBus>,
    mut requests: tokio::sync::watch::Receiver<u64>,
    stopping: CancellationToken,
) {
    let mut live = events.subscribe(None).live;
    release().await;
    let mut due = Some(tokio::time::Instant::now() + QUIET);
    loop {
        let wait_due = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stopping.cancelled() => return,
            () = wait_due => {
                due = None;
                release().await;
            }
            answered = requests.changed() => match answered {
                Ok(()) => due = Some(tokio::time::Instant::now() + QUIET),
                // The metrics are gone: the daemon is stopping.
                Err(_) => return,
            },
            event = live.recv() => match event {
                Ok(event) if touches_spawn_code(&event.kind) => {
                    due = Some(tokio::time::Instant::now() + QUIET);
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => due = Some(tokio::time::Instant::now() + QUIET),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Whether an event means the daemon ran its spawn or stop paths.
fn touches_spawn_code(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::AgentSpawned { .. }
            | EventKind::AgentRemoved { .. }
            | EventKind::AgentState { .. }
    )
}

async fn release() {
    let released = tokio::task::spawn_blocking(celistra_sandbox::release_idle_memory).await;
    match released {
        Ok(Ok(bytes)) => tracing::debug!(bytes, "released the resident code pages"),
        Ok(Err(e)) => tracing::debug!("the code pages stay: {e}"),
        Err(e) => tracing::debug!("releasing the code pages failed: {e}"),
    }
}
