//! The keeper's protocol: typed messages, one per `SOCK_SEQPACKET` datagram, descriptors passed
//! alongside with `SCM_RIGHTS`. A datagram is `[u32 LE header length][JSON header][payload]`; the
//! payload carries output bytes, so they never go through JSON.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::{ExitInfo, Launch};

/// The largest datagram either side sends: a header and at most [`CHUNK`] bytes of output.
const DATAGRAM_LIMIT: usize = 128 * 1024;

/// Output is handed over in pieces of at most this many bytes.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The most descriptors one message carries (a run on pipes: stdin, stdout, stderr, readiness).
const FDS_LIMIT: usize = 4;

/// Which output of a run a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Pty,
    Stdout,
    Stderr,
}

/// How a run ended, as the keeper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// When the keeper reaped it (ms since the epoch).
    pub at_ms: u64,
}

impl KeptExit {
    pub fn info(&self) -> ExitInfo {
        ExitInfo {
            code: self.code,
            signal: self.signal,
        }
    }
}

/// What the keeper tells a daemon about a run it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRun {
    pub agent_id: String,
    /// The daemon's history id of the run.
    pub run_id: u64,
    pub pid: u32,
    /// On a PTY (one descriptor, the master) rather than pipes (stdin, stdout, stderr).
    pub pty: bool,
    /// Set once the run ended; its descriptors may then be gone.
    pub exit: Option<KeptExit>,
    /// Output read while no daemon was there, past what the keeper keeps per run.
    pub dropped_bytes: u64,
    /// Since when no daemon read the run's output (ms since the epoch), if ever.
    pub unattended_since_ms: Option<u64>,
    /// What the daemon that spawned it noted with it.
    #[serde(default)]
    pub note: serde_json::Value,
}

/// A daemon's requests.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ToKeeper {
    /// Take over: the keeper answers [`FromKeeper::Welcome`], one [`FromKeeper::Held`] per run
    /// (with its descriptors) followed by its [`FromKeeper::Output`], then
    /// [`FromKeeper::WelcomeDone`].
    Hello,
    /// Kill this cgroup if the keeper dies (the death guard).
    Guard { cgroup: PathBuf },
    /// Spawn a run; its shared listening socket (`LISTENER_FD` in the child), if any, is the one
    /// descriptor that comes with the message.
    Spawn {
        request: u64,
        agent_id: String,
        run_id: u64,
        launch: Box<Launch>,
        /// A PTY of this many rows and columns; pipes without one.
        pty: Option<(u16, u16)>,
        /// Kept with the run, for the daemon that takes it over.
        note: serde_json::Value,
        /// A standby: the sandbox is set up and its agent waits before `execve` until
        /// [`ToKeeper::Wake`]. It is never handed to another daemon: the keeper ends it when the
        /// daemon goes, and forgets it when it ends unwoken (the daemon drops one it will not use
        /// by killing it).
        #[serde(default)]
        standby: bool,
    },
    /// Start standby `pid`'s program, as run `run_id` with `note` from now on.
    Wake {
        pid: u32,
        run_id: u64,
        note: serde_json::Value,
    },
    /// The daemon has recorded the end of this run: the keeper forgets it.
    Forget { pid: u32 },
    /// The daemon hangs this run's terminal up: the keeper closes its copies of the descriptors.
    HangUp { pid: u32 },
    /// The daemon stopped every agent: the keeper exits once it holds no run.
    Exit,
}

/// The keeper's answers and news.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum FromKeeper {
    Welcome {
        keeper_pid: u32,
        /// It sets standbys up (`Spawn { standby }`, `Wake`). A keeper from before them, which a
        /// daemon upgraded in place still talks to, answers without this: a daemon must then never
        /// ask it for one, since it would start the program at once.
        #[serde(default)]
        standbys: bool,
    },
    Held {
        run: HeldRun,
        descriptors: usize,
    },
    Output {
        pid: u32,
        stream: OutputStream,
        at_ms: u64,
    },
    WelcomeDone,
    Spawned {
        request: u64,
        pid: u32,
        /// The last descriptor is the sandbox's readiness pipe.
        ready: bool,
        /// The run's kernel audit session, read before the keeper could reap it, so that blocks
        /// of a run that is denied and ends at once are still attributed.
        #[serde(default)]
        audit_session: Option<u32>,
    },
    SpawnFailed {
        request: u64,
        error: String,
    },
    Exited {
        pid: u32,
        exit: KeptExit,
    },
}

/// One datagram: a message, its payload, its descriptors.
pub(crate) struct Datagram<M> {
    pub message: M,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Encodes a message and its payload into one datagram's bytes.
pub(crate) fn encode<M: Serialize>(message: &M, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let header = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let length = u32::try_from(header.len()).map_err(std::io::Error::other)?;
    let mut bytes = Vec::with_capacity(4 + header.len() + payload.len());
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(payload);
    Ok(bytes)
}

/// Decodes one datagram's bytes.
pub(crate) fn decode<M: for<'de> Deserialize<'de>>(bytes: &[u8]) -> std::io::Result<(M, Vec<u8>)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let length: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("a keeper message shorter than its header length"))?;
    let end = 4 + u32::from_le_bytes(length) as usize;
    let header = bytes
        .get(4..end)
        .ok_or_else(|| invalid("a keeper message shorter than its header"))?;
    let message = serde_json::from_slice(header).map_err(|e| invalid(&e.to_string()))?;
    Ok((message, bytes[end..].to_vec()))
}

/// A connected `SOCK_SEQPACKET` socket on the reactor.
#[derive(Debug)]
pub(crate) struct Socket(AsyncFd<OwnedFd>);

impl Socket {
    fn new(fd: OwnedFd) -> std::io::Result<Socket> {
        register(fd, Interest::READABLE | Interest::WRITABLE).map(Socket)
    }

    /// Connects to the keeper listening at `path`.
    pub(crate) fn connect(path: &Path) -> std::io::Result<Socket> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
        rustix::io::ioctl_fionbio(&fd, true)?;
        Socket::new(fd)
    }

    /// Sends one datagram. Waits while the peer's queue is full.
    pub(crate) async fn send<M: Serialize>(
        &self,
        message: &M,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> std::io::Result<()> {
        let bytes = encode(message, payload)?;
        loop {
            let mut ready = self.0.writable().await?;
            let sent = ready.try_io(|socket| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_LIMIT))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                    return Err(std::io::Error::other(
                        "too many descriptors for one message",
                    ));
                }
                rustix::net::sendmsg(
                    socket.get_ref(),
                    &[IoSlice::new(&bytes)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
                .map_err(Into::into)
            });
            match sent {
                Ok(result) => return result.map(drop),
                Err(_would_block) => {}
            }
        }
    }

    /// Receives one datagram; `None` once the peer closed.
    pub(crate) async fn receive<M: for<'de> Deserialize<'de>>(
        &self,
    ) -> std::io::Result<Option<Datagram<M>>> {
        let mut buffer = vec![0u8; DATAGRAM_LIMIT];
        loop {
            let mut ready = self.0.readable().await?;
            let received = ready.try_io(|socket| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_LIMIT))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let got = rustix::net::recvmsg(
                    socket.get_ref(),
                    &mut [IoSliceMut::new(&mut buffer)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                let mut fds = Vec::new();
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(passed) = message {
                        fds.extend(passed);
                    }
                }
                Ok((got.bytes, fds))
            });
            match received {
                Ok(Ok((0, _))) => return Ok(None),
                Ok(Ok((length, fds))) => {
                    let (message, payload) = decode(&buffer[..length])?;
                    return Ok(Some(Datagram {
                        message,
                        payload,
                        fds,
                    }));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// The uid of the process at the other end.
    pub(crate) fn peer_uid(&self) -> std::io::Result<u32> {
        Ok(rustix::net::sockopt::socket_peercred(self.0.get_ref())?
            .uid
            .as_raw())
    }
}

/// The keeper's listening socket.
#[derive(Debug)]
pub(crate) struct Listener(AsyncFd<OwnedFd>);

impl Listener {
    /// Listens at `path` (replacing a stale socket file), readable by its owner only.
    pub(crate) fn bind(path: &Path) -> std::io::Result<Listener> {
        let _ = std::fs::remove_file(path);
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
        std::fs::set_permissions(
            path,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )?;
        rustix::net::listen(&fd, 8)?;
        register(fd, Interest::READABLE).map(Listener)
    }

    pub(crate) async fn accept(&self) -> std::io::Result<Socket> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|listener| {
                rustix::net::accept_with(
                    listener.get_ref(),
                    SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                )
                .map_err(Into::into)
            }) {
                Ok(accepted) => return Socket::new(accepted?),
                Err(_would_block) => {}
            }
        }
    }
}

/// Puts a descriptor on the reactor. The deprecation is about types whose descriptor can change
/// or close behind the reactor's back; an `OwnedFd` owned by the `AsyncFd` cannot.
#[allow(deprecated, reason = "sound for an OwnedFd that the AsyncFd owns")]
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::with_interest(fd, interest)
}

/// Borrows every descriptor of a list, for [`Socket::send`].
pub(crate) fn borrow_all(fds: &[impl AsFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(AsFd::as_fd).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_and_its_payload_survive_encoding() {
        let message = FromKeeper::Output {
            pid: 42,
            stream: OutputStream::Pty,
            at_ms: 7,
        };
        let bytes = encode(&message, b"\x00\xffraw bytes").unwrap();
        let (decoded, payload) = decode::<FromKeeper>(&bytes).unwrap();
        assert!(matches!(
            decoded,
            FromKeeper::Output {
                pid: 42,
                stream: OutputStream::Pty,
                at_ms: 7
            }
        ));
        assert_eq!(payload, b"\x00\xffraw bytes");
    }

    /// What an older keeper sent with `header`: a keeper outlives upgrades, so the daemon reads
    /// what a keeper of an older version writes.
    fn from_an_older_keeper(header: &[u8]) -> FromKeeper {
        let mut bytes = u32::try_from(header.len()).unwrap().to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        decode::<FromKeeper>(&bytes).unwrap().0
    }

    #[test]
    fn a_keeper_of_an_older_version_is_understood() {
        let decoded =
            from_an_older_keeper(br#"{"op":"spawned","request":3,"pid":42,"ready":true}"#);
        assert!(matches!(
            decoded,
            FromKeeper::Spawned {
                request: 3,
                pid: 42,
                ready: true,
                audit_session: None
            }
        ));
    }

    #[test]
    fn a_keeper_from_before_standbys_is_not_asked_for_one() {
        let decoded = from_an_older_keeper(br#"{"op":"welcome","keeper_pid":42}"#);
        assert!(matches!(
            decoded,
            FromKeeper::Welcome {
                keeper_pid: 42,
                standbys: false
            }
        ));
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let bytes = encode(&ToKeeper::Hello, b"").unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<ToKeeper>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
