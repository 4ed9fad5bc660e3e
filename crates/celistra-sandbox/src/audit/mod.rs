//! Kernel block decisions as data: which agent's sandboxed process the kernel denied what
//! (Landlock filesystem, network and scope denials; seccomp filters installed with
//! `SECCOMP_FILTER_FLAG_LOG`), and when. [`BlockMonitor`] reads the kernel audit log's multicast
//! feed on its own thread, assembles events, attributes them to agents, rate-limits them per
//! agent and hands them to the daemon.

mod assemble;
mod attribute;
mod block;
mod netlink;
mod owner;
mod record;
mod syscalls;

#[cfg(test)]
#[allow(unsafe_code, reason = "a test child restricts itself in pre_exec")]
mod live_tests;

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, pipe_with};
use serde::{Deserialize, Serialize};

use assemble::EventAssembler;
use attribute::{Attributor, RateLimiter};
pub use block::{Blocked, KernelBlock};
use netlink::{AuditStatus, RecordFeed, StatusField};
pub use owner::{agent_of_pid, audit_session_of};
use record::{Record, kind};

/// A block and the agent it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributedBlock {
    pub agent_id: String,
    pub block: KernelBlock,
    /// The agent's blocks dropped by rate limiting since its previous delivered block.
    pub suppressed: u64,
}

/// What [`BlockMonitor::start`] changed in the kernel. Both changes outlive the monitor: the
/// kernel keeps no record of who made them, so undoing them could undo someone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartReport {
    /// Kernel audit was off and the monitor turned it on.
    pub enabled_kernel_audit: bool,
    /// The kernel's audit backlog was this small (the boot default is 64 records, which a burst
    /// of denials overflows, losing records) and the monitor raised it (to 8192, as auditd
    /// usually sets it).
    pub raised_backlog_from: Option<u32>,
}

/// The audit backlog the monitor wants. It only bounds the memory of records the kernel queues
/// while delivering them (about 1 KiB each).
const AUDIT_BACKLOG: u32 = 8192;

/// Why blocks cannot be reported. Sandboxes are enforced either way.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot subscribe to kernel audit records: {source}. {}", consequence(.source))]
    Subscribe { source: io::Error },
    #[error("cannot read the kernel audit status: {source}. {}", consequence(.source))]
    ReadStatus { source: io::Error },
    #[error("cannot enable kernel audit: {source}. {}", consequence(.source))]
    Enable { source: io::Error },
    #[error("cannot start the block monitor thread: {source}. {}", consequence(.source))]
    Thread { source: io::Error },
}

/// What to do about `error`, and what it costs.
fn consequence(error: &io::Error) -> String {
    let remedy = match Errno::from_io_error(error) {
        Some(Errno::PERM | Errno::ACCESS) => {
            "Kernel audit records are readable only by root (CAP_AUDIT_READ and CAP_AUDIT_CONTROL \
             in the initial user namespace); run celistrad as root to see them. "
        }
        Some(Errno::CONNREFUSED) => {
            "The kernel answers audit requests only from the initial user and network \
             namespaces, not inside a container. "
        }
        Some(Errno::PROTONOSUPPORT | Errno::AFNOSUPPORT) => {
            "This kernel has no audit support (CONFIG_AUDIT). "
        }
        _ => "",
    };
    format!("{remedy}Sandbox blocks are still enforced, but not reported")
}

/// Reports kernel blocks of sandboxed agents until dropped.
#[derive(Debug)]
pub struct BlockMonitor {
    /// Closing it wakes the thread and tells it to stop.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl BlockMonitor {
    /// Subscribes to kernel audit records (enabling kernel audit if it is off) and starts the
    /// monitor thread. For each block, `resolve(pid, audit_session)` names the agent owning the
    /// process (or
    /// `None`: the block is someone else's and is dropped), and `sink` receives the block. Both run
    /// on the monitor's thread: they must return promptly, and must not drop the monitor.
    pub fn start(
        resolve: impl Fn(u32, Option<u32>) -> Option<String> + Send + 'static,
        sink: impl Fn(AttributedBlock) + Send + 'static,
    ) -> Result<(BlockMonitor, StartReport), MonitorError> {
        // Subscribing first: without it there is no point in changing the system's audit state.
        let feed = RecordFeed::subscribe().map_err(|source| MonitorError::Subscribe { source })?;
        let status =
            netlink::audit_status().map_err(|source| MonitorError::ReadStatus { source })?;
        let enabled_kernel_audit = status.enabled == 0;
        if enabled_kernel_audit {
            netlink::set_audit_status(StatusField::Enabled, 1)
                .map_err(|source| MonitorError::Enable { source })?;
        }
        let raised_backlog_from = raise_backlog(status);
        let (stop_reader, stop_writer) =
            pipe_with(PipeFlags::CLOEXEC).map_err(|errno| MonitorError::Thread {
                source: errno.into(),
            })?;
        let pipeline = Pipeline::new(resolve, sink);
        let thread = std::thread::Builder::new()
            .name("celistra-blocks".into())
            .spawn(move || watch(feed, &stop_reader, pipeline))
            .map_err(|source| MonitorError::Thread { source })?;
        let monitor = BlockMonitor {
            stop: Some(stop_writer),
            thread: Some(thread),
        };
        let report = StartReport {
            enabled_kernel_audit,
            raised_backlog_from,
        };
        Ok((monitor, report))
    }
}

/// Raises a small audit backlog, unless an audit daemon is registered: its settings are its
/// administrator's. A failure only costs records in bursts, so it is logged, not returned.
fn raise_backlog(status: AuditStatus) -> Option<u32> {
    let small = status.backlog_limit != 0 && status.backlog_limit < AUDIT_BACKLOG;
    if status.daemon_pid != 0 || !small {
        return None;
    }
    match netlink::set_audit_status(StatusField::BacklogLimit, AUDIT_BACKLOG) {
        Ok(()) => Some(status.backlog_limit),
        Err(e) => {
            tracing::warn!(
                "cannot raise the kernel audit backlog from {} records: {e}; bursts of sandbox \
                 blocks may lose records",
                status.backlog_limit
            );
            None
        }
    }
}

impl Drop for BlockMonitor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The monitor thread: waits for records, for the oldest unfinished event to go stale, or for
/// the stop pipe to hang up.
fn watch<R, S>(mut feed: RecordFeed, stop: &OwnedFd, mut pipeline: Pipeline<R, S>)
where
    R: Fn(u32, Option<u32>) -> Option<String>,
    S: Fn(AttributedBlock),
{
    loop {
        // A deadline is at most `STALE_AFTER` away, so it always converts.
        let timeout = pipeline.next_deadline().and_then(|deadline| {
            Timespec::try_from(deadline.saturating_duration_since(Instant::now())).ok()
        });
        let mut fds = [
            PollFd::new(&feed, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => {
                tracing::error!("sandbox blocks are no longer reported: poll failed: {e}");
                return;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        if !fds[0].revents().is_empty()
            && let Err(e) = feed.drain(|kind, text| pipeline.record(kind, text, Instant::now()))
        {
            tracing::error!(
                "sandbox blocks are no longer reported: reading audit records failed: {e}"
            );
            return;
        }
        pipeline.expire(Instant::now());
    }
}

/// Records in, attributed and rate-limited blocks out. No I/O of its own, so it is tested with
/// captured records.
struct Pipeline<R, S> {
    assembler: EventAssembler,
    attributor: Attributor<R>,
    limiter: RateLimiter,
    /// Per agent, its latest suppressed block, delivered (with the count of those suppressed) once
    /// the agent may report again, so a burst that stops is still summed up.
    held: HashMap<String, AttributedBlock>,
    /// When held blocks are next looked at.
    release_at: Option<Instant>,
    sink: S,
}

/// Agents whose latest suppressed block is kept (the counts are kept for all of them anyway).
const MAX_HELD: usize = 1024;

impl<R: Fn(u32, Option<u32>) -> Option<String>, S: Fn(AttributedBlock)> Pipeline<R, S> {
    fn new(resolve: R, sink: S) -> Self {
        Pipeline {
            assembler: EventAssembler::default(),
            attributor: Attributor::new(resolve),
            limiter: RateLimiter::new(),
            held: HashMap::new(),
            release_at: None,
            sink,
        }
    }

    fn record(&mut self, record_kind: u16, text: &[u8], now: Instant) {
        // Most audit traffic on a busy system is of other types; skip it before parsing.
        if !kind::MONITORED.contains(&record_kind) {
            return;
        }
        let Some(record) = Record::parse(record_kind, text) else {
            return;
        };
        for event in self.assembler.push(record, now) {
            self.event(&event, now);
        }
    }

    fn expire(&mut self, now: Instant) {
        for event in self.assembler.take_stale(now) {
            self.event(&event, now);
        }
        if self.release_at.is_some_and(|at| at <= now) {
            self.release_held(now);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match (self.assembler.next_deadline(), self.release_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Delivers the held blocks of agents that may report again.
    fn release_held(&mut self, now: Instant) {
        let limiter = &mut self.limiter;
        let sink = &self.sink;
        self.held
            .retain(|agent, held| match limiter.release(agent, now) {
                Some(suppressed) => {
                    sink(AttributedBlock {
                        suppressed: suppressed.saturating_sub(1),
                        ..held.clone()
                    });
                    false
                }
                None => true,
            });
        self.release_at = (!self.held.is_empty()).then(|| now + attribute::RETRY_AFTER);
    }

    fn event(&mut self, records: &[Record], now: Instant) {
        let facts = block::read_event(records);
        for (domain, creator) in &facts.domains_created {
            self.attributor.domain_created(domain, *creator);
        }
        for block in facts.blocks {
            let Some(agent_id) =
                self.attributor
                    .agent_of(block.pid, block.session, block.domain.as_deref())
            else {
                continue;
            };
            match self.limiter.admit(&agent_id, now) {
                Some(suppressed) => {
                    // Counted in `suppressed`: a held block is superseded by this one.
                    self.held.remove(&agent_id);
                    (self.sink)(AttributedBlock {
                        agent_id,
                        block,
                        suppressed,
                    });
                }
                None if self.held.len() < MAX_HELD || self.held.contains_key(&agent_id) => {
                    self.held.insert(
                        agent_id.clone(),
                        AttributedBlock {
                            agent_id,
                            block,
                            suppressed: 0,
                        },
                    );
                    self.release_at.get_or_insert(now + attribute::RETRY_AFTER);
                }
                None => {}
            }
        }
        for domain in &facts.domains_freed {
            self.attributor.domain_freed(domain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use block::tests::{
        CONNECT_DENIED, DOMAIN_FREED, MAKE_REG_DENIED, SECCOMP_DENIED, WRITE_DENIED,
    };
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    type Delivered = Rc<RefCell<Vec<AttributedBlock>>>;
    type TestPipeline =
        Pipeline<Box<dyn Fn(u32, Option<u32>) -> Option<String>>, Box<dyn Fn(AttributedBlock)>>;

    /// A pipeline whose resolver knows the pids `known` (as agent `ag-PID`) and audit session 42
    /// (as agent `ag-session`).
    fn pipeline(known: &'static [u32]) -> (TestPipeline, Delivered) {
        let delivered = Delivered::default();
        let sink = {
            let delivered = delivered.clone();
            move |block| delivered.borrow_mut().push(block)
        };
        let resolve = move |pid, session| match session {
            Some(42) => Some("ag-session".to_owned()),
            _ => known.contains(&pid).then(|| format!("ag-{pid}")),
        };
        (Pipeline::new(Box::new(resolve), Box::new(sink)), delivered)
    }

    fn feed(pipeline: &mut TestPipeline, texts: &[(u16, impl AsRef<str>)], now: Instant) {
        for (kind, text) in texts {
            pipeline.record(*kind, text.as_ref().as_bytes(), now);
        }
    }

    /// Captured records with `from` replaced by `to`.
    fn edited(texts: &[(u16, &str)], from: &str, to: &str) -> Vec<(u16, String)> {
        texts
            .iter()
            .map(|(kind, text)| (*kind, text.replace(from, to)))
            .collect()
    }

    fn descriptions(delivered: &Delivered) -> Vec<String> {
        delivered
            .borrow()
            .iter()
            .map(|b| format!("{} {}", b.agent_id, b.block.what))
            .collect()
    }

    #[test]
    fn captured_events_reach_the_sink_attributed() {
        let (mut pipeline, delivered) = pipeline(&[29368, 29420, 29428]);
        let now = Instant::now();
        feed(&mut pipeline, WRITE_DENIED, now);
        feed(&mut pipeline, CONNECT_DENIED, now);
        feed(&mut pipeline, &[SECCOMP_DENIED], now);
        assert_eq!(
            descriptions(&delivered),
            [
                "ag-29368 write_file /dev/tty",
                "ag-29420 connect_tcp port 38573",
                "ag-29428 syscall unshare"
            ]
        );
        assert_eq!(pipeline.next_deadline(), None);
    }

    #[test]
    fn blocks_of_unknown_processes_are_dropped() {
        let (mut pipeline, delivered) = pipeline(&[]);
        let now = Instant::now();
        feed(&mut pipeline, WRITE_DENIED, now);
        feed(&mut pipeline, &[SECCOMP_DENIED], now);
        assert!(delivered.borrow().is_empty());
    }

    #[test]
    fn a_process_is_attributed_through_its_audit_session_even_when_gone() {
        let (mut pipeline, delivered) = pipeline(&[]);
        let now = Instant::now();
        feed(
            &mut pipeline,
            &edited(&[SECCOMP_DENIED], "ses=4294967295", "ses=42"),
            now,
        );
        feed(
            &mut pipeline,
            &edited(WRITE_DENIED, "ses=4294967295", "ses=42"),
            now,
        );
        assert_eq!(
            descriptions(&delivered),
            [
                "ag-session syscall unshare",
                "ag-session write_file /dev/tty"
            ]
        );
        assert_eq!(delivered.borrow()[0].block.session, Some(42));
    }

    #[test]
    fn an_exited_process_is_attributed_through_its_domain() {
        // Only the domain's creator resolves (the agent's leader); the denied process is gone.
        let (mut pipeline, delivered) = pipeline(&[29368]);
        let now = Instant::now();
        let later_child = edited(MAKE_REG_DENIED, " pid=29368", " pid=29999");
        feed(&mut pipeline, WRITE_DENIED, now);
        feed(&mut pipeline, &later_child, now);
        assert_eq!(
            descriptions(&delivered),
            ["ag-29368 write_file /dev/tty", "ag-29368 make_reg /etc"]
        );
        assert_eq!(delivered.borrow()[1].block.pid, 29999);

        // Once freed, the domain is forgotten (after its event went stale).
        feed(&mut pipeline, &[DOMAIN_FREED], now);
        pipeline.expire(now + Duration::from_secs(1));
        feed(&mut pipeline, &later_child, now);
        assert_eq!(delivered.borrow().len(), 2);
    }

    /// 100 denials of agent `ag-29420` at `start`.
    fn burst(pipeline: &mut TestPipeline, start: Instant) {
        for serial in 1000..1100 {
            let event = edited(CONNECT_DENIED, ".446:10)", &format!(".446:{serial})"));
            feed(pipeline, &event, start);
        }
    }

    #[test]
    fn a_denial_loop_is_rate_limited_and_counted() {
        let (mut pipeline, delivered) = pipeline(&[29420]);
        let start = Instant::now();
        burst(&mut pipeline, start);
        assert_eq!(delivered.borrow().len(), 20);
        feed(
            &mut pipeline,
            CONNECT_DENIED,
            start + Duration::from_millis(100),
        );
        let last = delivered.borrow().last().cloned().expect("delivered");
        assert_eq!((delivered.borrow().len(), last.suppressed), (21, 80));
    }

    #[test]
    fn a_burst_that_stops_is_summed_up_once_the_agent_may_report_again() {
        let (mut pipeline, delivered) = pipeline(&[29420]);
        let start = Instant::now();
        burst(&mut pipeline, start);
        assert_eq!(delivered.borrow().len(), 20);
        let due = pipeline.next_deadline().expect("a release is due");
        assert!(due <= start + Duration::from_millis(100));
        pipeline.expire(start + Duration::from_millis(50));
        assert_eq!(delivered.borrow().len(), 20, "no token yet");
        pipeline.expire(start + Duration::from_millis(100));
        let last = delivered.borrow().last().cloned().expect("delivered");
        // 20 delivered at once, the last of the burst delivered now, and 79 between them counted.
        assert_eq!((delivered.borrow().len(), last.suppressed), (21, 79));
        assert!(last.block.what.to_string().contains("connect_tcp"));
        assert_eq!(pipeline.next_deadline(), None);
    }

    #[test]
    fn garbage_never_panics() {
        let (mut pipeline, delivered) = pipeline(&[1, 29368, 29420]);
        let now = Instant::now();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let length = (next() % 200) as usize;
            let bytes: Vec<u8> = (0..length).map(|_| next() as u8).collect();
            let kind = kind::MONITORED[(next() % 5) as usize];
            pipeline.record(kind, &bytes, now);
            let mut text = b"audit(1.000:1): ".to_vec();
            text.extend_from_slice(&bytes);
            pipeline.record(kind, &text, now);
        }
        // Every prefix of every captured record, in order.
        for texts in [WRITE_DENIED, MAKE_REG_DENIED, &[SECCOMP_DENIED]] {
            for (kind, text) in texts {
                for end in 0..=text.len() {
                    pipeline.record(*kind, &text.as_bytes()[..end], now);
                }
            }
        }
        pipeline.expire(now + Duration::from_secs(1));
        delivered.borrow_mut().clear();
        feed(&mut pipeline, CONNECT_DENIED, now);
        assert_eq!(
            descriptions(&delivered),
            ["ag-29420 connect_tcp port 38573"]
        );
    }
}
