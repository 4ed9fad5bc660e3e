//! The event bus: numbered events, a bounded backlog for resuming with `Last-Event-ID`, and live
//! fan-out to subscribers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use celistra_proto::{Event, EventKind};
use tokio::sync::broadcast;

/// Events kept for clients that resume.
pub(crate) const BACKLOG: usize = 4096;

#[derive(Debug)]
struct Log {
    next_id: u64,
    backlog: VecDeque<Arc<Event>>,
}

#[derive(Debug)]
pub(crate) struct EventBus {
    log: Mutex<Log>,
    /// Holds `Arc`s: the channel's 4096 slots are made up front, at 40 bytes each rather than
    /// an event's 240 (1 MiB of an idle daemon's heap), and an event is shared, not copied,
    /// between the backlog and the live slots.
    live: broadcast::Sender<Arc<Event>>,
    store: Arc<crate::store::Store>,
    /// Privileged actions among the events go to the audit log, in event order.
    audit: Arc<crate::audit::Auditor>,
}

/// A subscription: the events after the requested id that are still in the backlog, then live ones.
pub(crate) struct Subscription {
    pub replay: Vec<Event>,
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl EventBus {
    /// Ids continue after `last_seq` (from the previous run) and never go below `floor`.
    pub(crate) fn new(
        last_seq: u64,
        floor: u64,
        store: Arc<crate::store::Store>,
        audit: Arc<crate::audit::Auditor>,
    ) -> EventBus {
        EventBus {
            log: Mutex::new(Log {
                next_id: last_seq.max(floor) + 1,
                backlog: VecDeque::with_capacity(64),
            }),
            live: broadcast::channel(BACKLOG).0,
            store,
            audit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn publish(&self, kind: EventKind) {
        let mut log = self.lock();
        let event = Arc::new(Event {
            id: log.next_id,
            time_ms: crate::now_ms(),
            kind,
        });
        log.next_id += 1;
        self.store.note_event_seq(event.id);
        self.audit.record_event(&event.kind);
        if log.backlog.len() == BACKLOG {
            log.backlog.pop_front();
        }
        log.backlog.push_back(Arc::clone(&event));
        // Sending under the lock keeps live order equal to id order; no receiver is not an error.
        let _ = self.live.send(event);
    }

    /// Subscribes; with `after`, first replays the backlog's events with a larger id. If events
    /// after `after` have already left the backlog, the replay starts with a `resync` event. Backlog
    /// and receiver are taken under one lock, so live events follow the replay with no gap or repeat.
    pub(crate) fn subscribe(&self, after: Option<u64>) -> Subscription {
        let log = self.lock();
        let live = self.live.subscribe();
        let mut replay = Vec::new();
        if let Some(after) = after {
            let oldest = log.backlog.front().map_or(log.next_id, |e| e.id);
            if after + 1 < oldest {
                replay.push(Event {
                    id: oldest.saturating_sub(1),
                    time_ms: crate::now_ms(),
                    kind: EventKind::Resync {
                        oldest_available: oldest,
                    },
                });
            }
            replay.extend(
                log.backlog
                    .iter()
                    .filter(|e| e.id > after)
                    .map(|e| Event::clone(e)),
            );
        }
        Subscription { replay, live }
    }
}
