//! The listening sockets agents share (`socket` in a spec): each address bound once by the
//! daemon, handed to every run that names it (as fd 3, by the keeper), kept open across an
//! upgrade, and bound again (with `SO_REUSEPORT`) by a daemon that starts after a crash while
//! adopted runs still hold the old one.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use celistra_core::listen::ListenAddr;
use celistra_proto::{ApiError, ErrorCode};

/// Backlog of a shared socket: connections queue here while no instance accepts (during a
/// rolling restart, say).
const BACKLOG: u32 = 1024;

/// Prefix of a shared socket's name in the list an upgrade hands to the next image.
const HANDOVER_PREFIX: &str = "socket-";

/// The shared sockets, by canonical address.
#[derive(Debug, Default)]
pub(crate) struct SharedSockets {
    bound: Mutex<BTreeMap<ListenAddr, Arc<OwnedFd>>>,
}

impl SharedSockets {
    /// The socket listening on `socket` (a spec's value): the one already bound, the one the
    /// previous image handed over, or a new one.
    pub(crate) fn get(&self, socket: &str) -> Result<Arc<OwnedFd>, ApiError> {
        let address =
            ListenAddr::parse(socket).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
        let mut bound = self.bound.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fd) = bound.get(&address) {
            return Ok(Arc::clone(fd));
        }
        let fd = match celistra_sandbox::inherited_listener(&handover_name(&address)) {
            Some(fd) => fd,
            None => bind(&address).map_err(|e| bind_error(&address, &e))?,
        };
        let fd = Arc::new(fd);
        bound.insert(address, Arc::clone(&fd));
        Ok(fd)
    }

    /// Takes back the socket of `socket` if the previous image handed it over (an upgrade), so
    /// that it is handed over again even if no run needs it before the next upgrade. Binds
    /// nothing: after a crash, a socket bound now would take connections before any instance
    /// accepts on it, while the adopted ones still serve the old one.
    pub(crate) fn adopt_inherited(&self, socket: &str) {
        let Ok(address) = ListenAddr::parse(socket) else {
            return;
        };
        let mut bound = self.bound.lock().unwrap_or_else(PoisonError::into_inner);
        if !bound.contains_key(&address)
            && let Some(fd) = celistra_sandbox::inherited_listener(&handover_name(&address))
        {
            bound.insert(address, Arc::new(fd));
        }
    }

    /// Closes the socket of `socket` unless `still_used` (another agent names it).
    pub(crate) fn release(&self, socket: &str, still_used: bool) {
        let Ok(address) = ListenAddr::parse(socket) else {
            return;
        };
        if still_used {
            return;
        }
        let removed = self
            .bound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&address);
        if removed.is_some()
            && let ListenAddr::Unix(path) = &address
        {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Copies of every socket, named for the next image (see `celistra_sandbox::reexec`).
    pub(crate) fn for_handover(&self) -> Vec<(String, OwnedFd)> {
        let bound = self.bound.lock().unwrap_or_else(PoisonError::into_inner);
        bound
            .iter()
            .filter_map(|(address, fd)| {
                let copy = fd.as_fd().try_clone_to_owned().ok()?;
                Some((handover_name(address), copy))
            })
            .collect()
    }
}

/// The name of a socket in the handover list, which separates entries with `,` and `=`: the
/// address in hex.
fn handover_name(address: &ListenAddr) -> String {
    use std::fmt::Write;
    address
        .to_string()
        .bytes()
        .fold(HANDOVER_PREFIX.to_owned(), |mut name, byte| {
            let _ = write!(name, "{byte:02x}");
            name
        })
}

fn bind(address: &ListenAddr) -> std::io::Result<OwnedFd> {
    match address {
        ListenAddr::Tcp(address) => {
            let socket = if address.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            // A daemon started after a crash binds next to the socket its adopted runs still hold.
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(*address)?;
            let listener = socket.listen(BACKLOG)?;
            let listener = listener.into_std()?;
            // Instances accept in blocking mode, as a program handed a socket expects.
            listener.set_nonblocking(false)?;
            Ok(OwnedFd::from(listener))
        }
        ListenAddr::Unix(path) => {
            // A socket file left by a daemon that stopped or crashed goes; a socket someone still
            // accepts on is another program's, and anything else is refused by the bind.
            if let Ok(meta) = std::fs::symlink_metadata(path)
                && std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
            {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!("another program listens on {path}"),
                    ));
                }
                std::fs::remove_file(path)?;
            }
            let listener = std::os::unix::net::UnixListener::bind(path)?;
            Ok(OwnedFd::from(listener))
        }
    }
}

fn bind_error(address: &ListenAddr, error: &std::io::Error) -> ApiError {
    let hint = match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another program listens there; stop it or pick another address".to_owned()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "that IP address is not one of this machine's; use 127.0.0.1, 0.0.0.0 or a local \
             address"
                .to_owned()
        }
        std::io::ErrorKind::PermissionDenied => {
            "the daemon may not bind it; pick a port from 1024 up or a path the daemon can write"
                .to_owned()
        }
        _ => "check the address".to_owned(),
    };
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("socket {address}: cannot listen: {error}; {hint}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handover_names_carry_no_list_separators() {
        let name = handover_name(&ListenAddr::Unix("/tmp/a,b=c.sock".into()));
        assert!(name.starts_with(HANDOVER_PREFIX));
        assert!(!name.contains([',', '=']));
    }

    #[tokio::test]
    async fn one_address_is_bound_once_and_a_taken_one_is_a_clear_error() {
        let sockets = SharedSockets::default();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = sockets.get(&port.to_string()).unwrap_err();
        assert!(
            error.message.contains("another program listens there"),
            "{}",
            error.message
        );
        drop(taken);
        let first = sockets.get(&port.to_string()).unwrap();
        let again = sockets.get(&format!("127.0.0.1:{port}")).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[tokio::test]
    async fn a_unix_socket_left_behind_is_replaced_and_a_live_one_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.sock");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let sockets = SharedSockets::default();
        let error = sockets.get(&path.display().to_string()).unwrap_err();
        assert!(
            error.message.contains("another program listens"),
            "{}",
            error.message
        );
        assert!(path.exists(), "the other program's socket stays");
        // Its program gone, the file is a leftover and makes room for a new socket.
        drop(live);
        assert!(sockets.get(&path.display().to_string()).is_ok());
    }
}
