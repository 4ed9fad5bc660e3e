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

    /// The ring's contents, and a receiver of everything pushed after them.
    pub(crate) fn snapshot_and_follow(&self) -> (Vec<u8>, broadcast::Receiver<Bytes>) {
        let ring = self.lock();
        (ring.bytes.iter().copied().collect(), self.live.subscribe())
    }

    pub(crate) fn snapshot(&self) -> Vec<u8> {
        self.lock().bytes.iter().copied().collect()
    }
}

/// The last `lines` lines of `bytes` (a trailing partial line counts as one).
pub(crate) fn tail_lines(bytes: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &bytes[bytes.len()..];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (index, &b) in body.iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == lines {
                return &bytes[index + 1..];
            }
        }
    }
    bytes
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

    #[test]
    fn follower_sees_what_follows_the_snapshot() {
        let output = Output::new(64);
        output.push(Bytes::from_static(b"before\n"));
        let (snapshot, mut live) = output.snapshot_and_follow();
        output.push(Bytes::from_static(b"after\n"));
        assert_eq!(snapshot, b"before\n");
        assert_eq!(live.try_recv().unwrap(), Bytes::from_static(b"after\n"));
    }

    #[test]
    fn tails_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail_lines(b"a\nb\n", 0), b"");
    }
}
