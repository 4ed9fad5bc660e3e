//! The one thread that writes `audit.log`: group commit (everything queued since the last write
//! goes out in one positional write and one fdatasync), so appenders never wait for the disk.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a failed write waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Locks a mutex whether or not a panicking thread poisoned it: every value behind these locks is
/// updated in one step, so it is never half-changed.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lines waiting to be written.
#[derive(Default)]
pub(crate) struct Queue {
    bytes: Vec<u8>,
    /// The number of entries in the file once `bytes` are written.
    entries: u64,
    closing: bool,
}

/// What is on disk.
#[derive(Default)]
pub(crate) struct Durable {
    /// Entries written and fdatasync'd.
    pub(crate) entries: u64,
    /// The last write's error, until a write succeeds.
    pub(crate) failure: Option<String>,
}

/// The queue and the durability mark, shared by the appenders, the writer and the waiters.
#[derive(Default)]
pub(crate) struct WriteQueue {
    queue: Mutex<Queue>,
    queued: Condvar,
    pub(crate) durable: Mutex<Durable>,
    durable_changed: Condvar,
}

impl WriteQueue {
    pub(crate) fn starting_at(entries: u64) -> WriteQueue {
        WriteQueue {
            queue: Mutex::new(Queue {
                entries,
                ..Queue::default()
            }),
            durable: Mutex::new(Durable {
                entries,
                failure: None,
            }),
            ..WriteQueue::default()
        }
    }

    /// Queues one entry's line; the caller holds the chain lock, so lines queue in seq order.
    pub(crate) fn push(&self, line: &[u8], entries_after: u64) {
        let mut queue = lock(&self.queue);
        queue.bytes.extend_from_slice(line);
        queue.entries = entries_after;
        drop(queue);
        self.queued.notify_one();
    }

    /// Blocks until at least `entries` are durable, or returns the writer's current error.
    pub(crate) fn wait_durable(&self, entries: u64) -> Result<u64, String> {
        let mut durable = lock(&self.durable);
        loop {
            if durable.entries >= entries {
                return Ok(durable.entries);
            }
            if let Some(failure) = &durable.failure {
                return Err(failure.clone());
            }
            durable = self
                .durable_changed
                .wait(durable)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Asks the writer to write what is queued and stop.
    pub(crate) fn close(&self) {
        lock(&self.queue).closing = true;
        self.queued.notify_one();
    }

    /// The writer thread's body: `file` is `audit.log`, `end` its length.
    pub(crate) fn run_writer(self: Arc<Self>, file: File, mut end: u64) {
        let mut batch = Vec::new();
        loop {
            let (entries, closing) = {
                let mut queue = lock(&self.queue);
                while queue.bytes.is_empty() && batch.is_empty() && !queue.closing {
                    queue = self
                        .queued
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                // A batch that failed before is written again with whatever came since.
                batch.append(&mut queue.bytes);
                (queue.entries, queue.closing)
            };
            if batch.is_empty() {
                return;
            }
            let result = file
                .write_all_at(&batch, end)
                .and_then(|()| file.sync_data());
            let mut durable = lock(&self.durable);
            match result {
                Ok(()) => {
                    end += batch.len() as u64;
                    batch.clear();
                    durable.entries = entries;
                    durable.failure = None;
                }
                Err(e) => {
                    tracing::error!("cannot write audit.log: {e}; retrying in {RETRY_AFTER:?}");
                    durable.failure = Some(e.to_string());
                }
            }
            drop(durable);
            self.durable_changed.notify_all();
            if !batch.is_empty() {
                if closing {
                    // The next start cuts a partly written last line and records the cut.
                    return;
                }
                let queue = lock(&self.queue);
                drop(
                    self.queued
                        .wait_timeout(queue, RETRY_AFTER)
                        .unwrap_or_else(PoisonError::into_inner),
                );
            }
        }
    }
}
