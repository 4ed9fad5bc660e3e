//! An agent's output: a bounded ring of the latest bytes (kept across runs and client disconnects)
//! and live fan-out to followers, with no gap and no duplicate between the two.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::broadcast;

/// Chunks a follower may lag behind before it is told it missed output.
const FOLLOW_QUEUE: usize = 1024;

#[derive(Debug)]
struct Ring {
    bytes: VecDeque<u8>,
    capacity: usize,
}

#[derive(Debug)]
pub(crate) struct Output {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Bytes>,
}

impl Output {
    pub(crate) fn new(capacity: usize) -> Output {
        Output {
            ring: Mutex::new(Ring {
                bytes: VecDeque::new(),
                capacity,
            }),
            live: broadcast::channel(FOLLOW_QUEUE).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the ring's size, dropping the oldest bytes if it shrinks.
    pub(crate) fn set_capacity(&self, capacity: usize) {
        let mut ring = self.lock();
        ring.capacity = capacity;
        let excess = ring.bytes.len().saturating_sub(capacity);
        ring.bytes.drain(..excess);
    }

    pub(crate) fn push(&self, chunk: Bytes) {
        let mut ring = self.lock();
        let keep = chunk.len().min(ring.capacity);
        let excess = (ring.bytes.len() + keep).saturating_sub(ring.capacity);
        ring.bytes.drain(..excess);
        ring.bytes.extend(&chunk[chunk.len() - keep..]);
        let _ = self.live.send(chunk);
    }

    #[cfg(test)]
    fn snapshot(&self) -> Vec<u8> {
        self.lock().bytes.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes() {
        let output = Output::new(8);
        output.push(Bytes::from_static(b"abcdef"));
        output.push(Bytes::from_static(b"ghij"));
        assert_eq!(output.snapshot(), b"cdefghij");
        output.push(Bytes::from_static(b"0123456789"));
        assert_eq!(output.snapshot(), b"23456789");
        output.set_capacity(3);
        assert_eq!(output.snapshot(), b"789");
    }
}
