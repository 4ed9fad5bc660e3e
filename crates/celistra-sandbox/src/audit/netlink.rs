//! The kernel audit netlink interface: reading and setting the audit status (`AUDIT_GET`,
//! `AUDIT_SET`), and the read-only multicast feed of records (`AUDIT_NLGRP_READLOG`), which needs
//! no audit daemon and coexists with one.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, socket_with, sockopt,
};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
/// `struct audit_status` is 11 `u32` words: `mask`, `enabled`, `failure`, `pid`, `rate_limit`,
/// `backlog_limit`, … The `AUDIT_STATUS_*` mask bits say which fields an `AUDIT_SET` changes.
const AUDIT_STATUS_WORDS: usize = 11;
const STATUS_MASK: usize = 0;
const STATUS_ENABLED: usize = 1;
const STATUS_PID: usize = 3;
const STATUS_BACKLOG_LIMIT: usize = 5;
const AUDIT_STATUS_ENABLED: u32 = 0x1;
const AUDIT_STATUS_BACKLOG_LIMIT: u32 = 0x10;
const AUDIT_NLGRP_READLOG: u32 = 1;
/// The kernel's replies come at once; this only bounds a kernel that never answers.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for a burst of records while the monitor thread is busy in the sink; the kernel caps it
/// at `net.core.rmem_max` unless the daemon may force it.
const FEED_BUFFER: usize = 4 << 20;
/// Larger than the kernel's biggest audit message (`MAX_AUDIT_MESSAGE_LENGTH`, 8970).
const DATAGRAM_BUFFER: usize = 64 << 10;
/// Datagrams read per [`RecordFeed::drain`], so that under a flood the monitor still expires
/// events and notices it should stop.
const DATAGRAMS_PER_DRAIN: usize = 512;

fn audit_socket(flags: SocketFlags) -> io::Result<OwnedFd> {
    Ok(socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC | flags,
        Some(netlink::AUDIT),
    )?)
}

/// The parts of the kernel's audit status the monitor looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuditStatus {
    /// 1, or 2 when locked; 0 when off.
    pub(crate) enabled: u32,
    /// The registered audit daemon's pid; 0 when none.
    pub(crate) daemon_pid: u32,
    /// Records the kernel queues before it drops new ones; 0 for no limit.
    pub(crate) backlog_limit: u32,
}

impl AuditStatus {
    fn parse(reply: &[u8]) -> Option<AuditStatus> {
        let word = |index: usize| {
            let bytes = reply.get(index * 4..index * 4 + 4)?;
            Some(u32::from_ne_bytes(bytes.try_into().ok()?))
        };
        Some(AuditStatus {
            enabled: word(STATUS_ENABLED)?,
            daemon_pid: word(STATUS_PID)?,
            backlog_limit: word(STATUS_BACKLOG_LIMIT)?,
        })
    }
}

/// A field of the audit status the monitor sets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StatusField {
    Enabled,
    BacklogLimit,
}

impl StatusField {
    /// The `AUDIT_SET` payload that sets this field to `value` and leaves every other alone.
    fn change(self, value: u32) -> Vec<u8> {
        let (mask, index) = match self {
            StatusField::Enabled => (AUDIT_STATUS_ENABLED, STATUS_ENABLED),
            StatusField::BacklogLimit => (AUDIT_STATUS_BACKLOG_LIMIT, STATUS_BACKLOG_LIMIT),
        };
        let mut words = [0u32; AUDIT_STATUS_WORDS];
        words[STATUS_MASK] = mask;
        words[index] = value;
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
}

pub(crate) fn audit_status() -> io::Result<AuditStatus> {
    let reply = request(&control_socket()?, AUDIT_GET, NLM_F_REQUEST, &[])?;
    AuditStatus::parse(&reply)
        .ok_or_else(|| io::Error::other("the kernel's audit status reply is too short"))
}

pub(crate) fn set_audit_status(field: StatusField, value: u32) -> io::Result<()> {
    let payload = field.change(value);
    request(
        &control_socket()?,
        AUDIT_SET,
        NLM_F_REQUEST | NLM_F_ACK,
        &payload,
    )
    .map(drop)
}

fn control_socket() -> io::Result<OwnedFd> {
    let socket = audit_socket(SocketFlags::empty())?;
    sockopt::set_socket_timeout(&socket, sockopt::Timeout::Recv, Some(REPLY_TIMEOUT))?;
    Ok(socket)
}

/// Sends one request and returns the payload of its reply: the message of the same type, or an
/// empty payload for a successful acknowledgement.
fn request(socket: &OwnedFd, message_type: u16, flags: u16, payload: &[u8]) -> io::Result<Vec<u8>> {
    const SEQUENCE: u32 = 1;
    let mut message = Vec::with_capacity(NLMSG_HDRLEN + payload.len());
    let length = u32::try_from(NLMSG_HDRLEN + payload.len()).map_err(io::Error::other)?;
    message.extend_from_slice(&length.to_ne_bytes());
    message.extend_from_slice(&message_type.to_ne_bytes());
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&SEQUENCE.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(payload);
    rustix::net::sendto(
        socket,
        &message,
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )?;

    let mut buffer = vec![0u8; DATAGRAM_BUFFER];
    loop {
        let (received, _) = match rustix::net::recv(socket, &mut buffer[..], RecvFlags::empty()) {
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the kernel did not answer an audit request",
                ));
            }
            other => other?,
        };
        for message in messages(&buffer[..received]).filter(|m| m.sequence == SEQUENCE) {
            match message.kind {
                NLMSG_ERROR => {
                    let error = message
                        .payload
                        .get(0..4)
                        .and_then(|b| b.try_into().ok())
                        .map(i32::from_ne_bytes)
                        .unwrap_or(0);
                    return match error {
                        0 => Ok(Vec::new()),
                        error => Err(io::Error::from_raw_os_error(error.saturating_neg())),
                    };
                }
                kind if kind == message_type => return Ok(message.payload.to_vec()),
                _ => {}
            }
        }
    }
}

/// One netlink message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub(crate) kind: u16,
    pub(crate) sequence: u32,
    pub(crate) payload: &'a [u8],
}

/// The messages of a datagram, up to the first malformed one.
pub(crate) fn messages(mut datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let header = datagram.get(..NLMSG_HDRLEN)?;
        let field = |range: std::ops::Range<usize>| header.get(range);
        let length = u32::from_ne_bytes(field(0..4)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(field(4..6)?.try_into().ok()?);
        let sequence = u32::from_ne_bytes(field(8..12)?.try_into().ok()?);
        if length < NLMSG_HDRLEN {
            return None;
        }
        let payload = datagram.get(NLMSG_HDRLEN..length)?;
        // Messages are 4-byte aligned; the last one may lack its padding.
        datagram = datagram.get(length.next_multiple_of(4)..).unwrap_or(&[]);
        Some(Message {
            kind,
            sequence,
            payload,
        })
    })
}

/// The multicast feed of audit records.
pub(crate) struct RecordFeed {
    socket: OwnedFd,
    buffer: Vec<u8>,
    overflows: u64,
}

impl RecordFeed {
    /// Joins the read-only log group. Needs `CAP_AUDIT_READ`.
    pub(crate) fn subscribe() -> io::Result<RecordFeed> {
        let socket = audit_socket(SocketFlags::NONBLOCK)?;
        if sockopt::set_socket_recv_buffer_size_force(&socket, FEED_BUFFER).is_err() {
            sockopt::set_socket_recv_buffer_size(&socket, FEED_BUFFER)?;
        }
        let group_mask = 1 << (AUDIT_NLGRP_READLOG - 1);
        rustix::net::bind(&socket, &SocketAddrNetlink::new(0, group_mask))?;
        Ok(RecordFeed {
            socket,
            buffer: vec![0u8; DATAGRAM_BUFFER],
            overflows: 0,
        })
    }

    /// Hands queued records to `each` as `(type, text)`, up to [`DATAGRAMS_PER_DRAIN`], without
    /// waiting for more.
    pub(crate) fn drain(&mut self, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        for _ in 0..DATAGRAMS_PER_DRAIN {
            let (received, _, sender) =
                match rustix::net::recvfrom(&self.socket, &mut self.buffer[..], RecvFlags::empty())
                {
                    Ok(datagram) => datagram,
                    Err(Errno::AGAIN) => return Ok(()),
                    Err(Errno::INTR) => continue,
                    Err(Errno::NOBUFS) => {
                        // The socket overflowed and records were lost; logging every overflow of a
                        // flood would be a flood of its own.
                        self.overflows += 1;
                        if self.overflows.is_power_of_two() {
                            tracing::warn!(
                                overflows = self.overflows,
                                "kernel audit records were lost: the block monitor fell behind"
                            );
                        }
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
            // Only the kernel sends to this group; anything else is not a record.
            let from_kernel = sender
                .and_then(|addr| SocketAddrNetlink::try_from(addr).ok())
                .is_some_and(|addr| addr.pid() == 0);
            if from_kernel {
                for message in messages(&self.buffer[..received]) {
                    each(message.kind, message.payload);
                }
            }
        }
        Ok(())
    }
}

impl AsFd for RecordFeed {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(kind: u16, sequence: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&0u16.to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(payload);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    #[test]
    fn splits_aligned_messages() {
        let mut datagram = message(1423, 0, b"audit(1.000:1): x");
        datagram.extend(message(1320, 7, b""));
        let all: Vec<_> = messages(&datagram).collect();
        assert_eq!(
            all,
            vec![
                Message {
                    kind: 1423,
                    sequence: 0,
                    payload: b"audit(1.000:1): x"
                },
                Message {
                    kind: 1320,
                    sequence: 7,
                    payload: b""
                }
            ]
        );
    }

    #[test]
    fn stops_at_a_truncated_or_lying_header() {
        let mut datagram = message(1300, 0, b"abc");
        datagram.extend_from_slice(&[200, 0, 0, 0, 1, 5]);
        assert_eq!(messages(&datagram).count(), 1);
        let mut lying = message(1300, 0, b"abcd");
        lying[0] = 255;
        assert_eq!(messages(&lying).count(), 0);
        lying[0] = 0;
        assert_eq!(messages(&lying).count(), 0, "a zero length must not loop");
        assert_eq!(messages(&[]).count(), 0);
    }

    #[test]
    fn reads_a_captured_status_reply() {
        // AUDIT_GET's reply on the project's machine right after boot.
        let words = [0u32, 0, 1, 0, 0, 64, 0, 0, 127, 15000, 0];
        let reply: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(
            AuditStatus::parse(&reply),
            Some(AuditStatus {
                enabled: 0,
                daemon_pid: 0,
                backlog_limit: 64
            })
        );
        assert_eq!(AuditStatus::parse(&reply[..20]), None);
    }

    #[test]
    fn a_change_sets_one_field_under_its_mask() {
        let words = |payload: Vec<u8>| -> Vec<u32> {
            payload
                .chunks_exact(4)
                .map(|w| u32::from_ne_bytes(w.try_into().expect("4 bytes")))
                .collect()
        };
        assert_eq!(
            words(StatusField::Enabled.change(1)),
            [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            words(StatusField::BacklogLimit.change(8192)),
            [0x10, 0, 0, 0, 0, 8192, 0, 0, 0, 0, 0]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for message in messages(&bytes) {
                prop_assert!(message.payload.len() <= bytes.len());
            }
        }
    }
}
