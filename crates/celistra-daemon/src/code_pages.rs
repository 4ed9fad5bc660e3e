//! The executable's code pages and the heap's free memory given back
//! (`celistra_sandbox::release_executable_pages`, `release_free_heap`): once the
//! daemon serves, since start-up code does not run again, and again once agents have stopped
//! starting and stopping for a while, since spawning runs code an idle agent never needs. A page
//! needed again comes back from the page cache with a minor fault.

use std::sync::Arc;
use std::time::Duration;

use celistra_proto::EventKind;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::events::EventBus;

/// How long agents must have stayed as they are before the pages go back again.
const QUIET: Duration = Duration::from_secs(10);

/// Releases the pages now, then after every burst of agent starts, stops and spawns, until
/// `stopping`.
pub(crate) async fn release_when_quiet(events: Arc<EventBus>, stopping: CancellationToken) {
    let mut live = events.subscribe(None).live;
    release().await;
    let mut due = None;
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
    let released = tokio::task::spawn_blocking(|| {
        celistra_sandbox::release_free_heap();
        celistra_sandbox::release_executable_pages()
    })
    .await;
    match released {
        Ok(Ok(bytes)) => tracing::debug!(bytes, "released the executable's resident code pages"),
        Ok(Err(e)) => tracing::debug!("the executable's code pages stay: {e}"),
        Err(e) => tracing::debug!("releasing the executable's code pages failed: {e}"),
    }
}
