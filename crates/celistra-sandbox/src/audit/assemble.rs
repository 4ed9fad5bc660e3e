//! Groups audit records into events by their stamp. An event is complete at its end-of-event
//! record, or after [`STALE_AFTER`] without one. A later serial does not end an earlier event:
//! with several CPUs, events interleave (a Landlock record is logged mid-syscall, the `SYSCALL`
//! record that names the process only at the syscall's exit).

use std::time::{Duration, Instant};

use super::record::{Record, Stamp, kind};

/// How long an event without an end-of-event record waits for more records.
pub(crate) const STALE_AFTER: Duration = Duration::from_millis(50);
/// Bounds on buffered records, so a flood of unfinished events cannot grow memory.
const MAX_PENDING_EVENTS: usize = 256;
const MAX_RECORDS_PER_EVENT: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct EventAssembler {
    pending: Vec<PendingEvent>,
}

#[derive(Debug)]
struct PendingEvent {
    stamp: Stamp,
    first_seen: Instant,
    records: Vec<Record>,
}

impl EventAssembler {
    /// Takes one record and returns the events it completed (in stamp order). Only events with a
    /// Landlock or seccomp record are assembled: a `SYSCALL` or end-of-event record joins an event
    /// already started (they come after the records logged during the syscall), and every other
    /// record is ignored.
    pub(crate) fn push(&mut self, record: Record, now: Instant) -> Vec<Vec<Record>> {
        let position = self.pending.iter().position(|p| p.stamp == record.stamp);
        match (record.kind, position) {
            (kind::END_OF_EVENT, Some(i)) => vec![self.pending.remove(i).records],
            // Seccomp logs before the syscall is entered, so the kernel ends its event right away.
            (kind::SECCOMP, None) => vec![vec![record]],
            (
                kind::SYSCALL | kind::SECCOMP | kind::LANDLOCK_ACCESS | kind::LANDLOCK_DOMAIN,
                Some(i),
            ) => {
                let records = &mut self.pending[i].records;
                if records.len() < MAX_RECORDS_PER_EVENT {
                    records.push(record);
                }
                Vec::new()
            }
            (kind::LANDLOCK_ACCESS | kind::LANDLOCK_DOMAIN, None) => {
                let evicted = (self.pending.len() >= MAX_PENDING_EVENTS)
                    .then(|| self.oldest())
                    .flatten();
                self.pending.push(PendingEvent {
                    stamp: record.stamp,
                    first_seen: now,
                    records: vec![record],
                });
                evicted.into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    /// Removes and returns the events that waited [`STALE_AFTER`] or longer, in stamp order.
    pub(crate) fn take_stale(&mut self, now: Instant) -> Vec<Vec<Record>> {
        let (mut stale, fresh): (Vec<_>, Vec<_>) = self
            .pending
            .drain(..)
            .partition(|p| now.saturating_duration_since(p.first_seen) >= STALE_AFTER);
        self.pending = fresh;
        stale.sort_by_key(|p| p.stamp);
        stale.into_iter().map(|p| p.records).collect()
    }

    /// When the oldest pending event becomes stale.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .iter()
            .map(|p| p.first_seen + STALE_AFTER)
            .min()
    }

    fn oldest(&mut self) -> Option<Vec<Record>> {
        let i = (0..self.pending.len()).min_by_key(|&i| self.pending[i].stamp)?;
        Some(self.pending.remove(i).records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::block::tests::{
        CONNECT_DENIED, DOMAIN_FREED, SECCOMP_DENIED, WRITE_DENIED, records,
    };
    use proptest::prelude::*;

    fn kinds(event: &[Record]) -> Vec<u16> {
        event.iter().map(|r| r.kind).collect()
    }

    #[test]
    fn an_event_completes_at_its_end_record_and_keeps_what_matters() {
        let mut assembler = EventAssembler::default();
        let now = Instant::now();
        let mut done = Vec::new();
        for record in records(WRITE_DENIED) {
            done.extend(assembler.push(record, now));
        }
        assert_eq!(done.len(), 1);
        assert_eq!(kinds(&done[0]), [1423, 1424, 1300], "PROCTITLE is not kept");
        assert_eq!(assembler.next_deadline(), None);
    }

    #[test]
    fn interleaved_events_stay_apart() {
        let mut assembler = EventAssembler::default();
        let now = Instant::now();
        let write = records(WRITE_DENIED);
        let connect = records(CONNECT_DENIED);
        let order = [
            &write[0],
            &connect[0],
            &write[1],
            &connect[1],
            &write[2],
            &write[4],
            &connect[2],
        ];
        let done: Vec<_> = order
            .into_iter()
            .flat_map(|r| assembler.push(r.clone(), now))
            .collect();
        assert_eq!(done.len(), 2);
        assert_eq!(kinds(&done[0]), [1423, 1424, 1300]);
        assert_eq!(kinds(&done[1]), [1423, 1300]);
        assert!(
            done.iter()
                .all(|event| event.iter().all(|r| r.stamp == event[0].stamp))
        );
    }

    #[test]
    fn seccomp_records_are_events_of_their_own() {
        let mut assembler = EventAssembler::default();
        let done = assembler.push(records(&[SECCOMP_DENIED]).remove(0), Instant::now());
        assert_eq!(done.len(), 1);
        assert_eq!(assembler.next_deadline(), None);
    }

    #[test]
    fn events_without_an_end_record_are_flushed_when_stale() {
        let mut assembler = EventAssembler::default();
        let start = Instant::now();
        assert!(
            assembler
                .push(records(&[DOMAIN_FREED]).remove(0), start)
                .is_empty()
        );
        assert!(
            assembler
                .push(records(WRITE_DENIED).remove(0), start + STALE_AFTER / 2)
                .is_empty()
        );
        assert_eq!(assembler.next_deadline(), Some(start + STALE_AFTER));
        assert!(assembler.take_stale(start + STALE_AFTER / 3).is_empty());
        let first = assembler.take_stale(start + STALE_AFTER);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0][0].stamp.serial, 5);
        assert_eq!(assembler.take_stale(start + STALE_AFTER * 2).len(), 1);
        assert_eq!(assembler.next_deadline(), None);
    }

    #[test]
    fn unrelated_records_are_not_buffered() {
        let mut assembler = EventAssembler::default();
        let now = Instant::now();
        for (kind, text) in [
            (1300, "audit(1.000:1): pid=3 syscall=59"),
            (1327, "audit(1.000:1): proctitle=6C73"),
            (1320, "audit(1.000:1): "),
            (1100, "audit(1.000:2): pid=1 msg='op=login'"),
        ] {
            let record = Record::parse(kind, text.as_bytes()).expect("valid");
            assert!(assembler.push(record, now).is_empty());
        }
        assert_eq!(assembler.next_deadline(), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut assembler = EventAssembler::default();
        let now = Instant::now();
        let mut evicted = 0;
        for serial in 0..MAX_PENDING_EVENTS as u64 + 10 {
            for _ in 0..MAX_RECORDS_PER_EVENT + 5 {
                let text = format!("audit(1.000:{serial}): domain=1 blockers=fs.read_file");
                let record = Record::parse(1423, text.as_bytes()).expect("valid");
                evicted += assembler.push(record, now).len();
            }
        }
        assert_eq!(evicted, 10);
        assert_eq!(assembler.pending.len(), MAX_PENDING_EVENTS);
        assert!(
            assembler
                .pending
                .iter()
                .all(|p| p.records.len() == MAX_RECORDS_PER_EVENT)
        );
        assert_eq!(
            assembler.pending.iter().map(|p| p.stamp.serial).min(),
            Some(10)
        );
    }

    proptest! {
        /// Every record of a completed event has the event's stamp, whatever arrives in any order.
        #[test]
        fn events_never_mix_stamps(
            arrivals in proptest::collection::vec((0u64..4, prop::sample::select(vec![1300u16, 1320, 1326, 1423, 1424, 1327]), 0u64..100), 0..60)
        ) {
            let mut assembler = EventAssembler::default();
            let start = Instant::now();
            for (serial, kind, millis) in arrivals {
                let text = format!("audit(1.000:{serial}): pid=1 domain=2 blockers=fs.x code=0x50000");
                let record = Record::parse(kind, text.as_bytes()).expect("valid");
                let now = start + Duration::from_millis(millis);
                let done = assembler.push(record, now).into_iter().chain(assembler.take_stale(now));
                for event in done {
                    prop_assert!(!event.is_empty());
                    prop_assert!(event.iter().all(|r| r.stamp == event[0].stamp));
                }
            }
        }
    }
}
