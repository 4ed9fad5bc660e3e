//! The listening addresses agents share (`socket` in a spec): what one may be, and its one
//! canonical form, so `8080` and `127.0.0.1:8080` name the same socket.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Lowest port an agent socket may use: the ones below are privileged, and a daemon that may
/// bind them should not do it for an agent's spec.
pub const MIN_PORT: u16 = 1024;

/// Longest Unix socket path the kernel takes (`sun_path` less its terminating NUL).
const MAX_UNIX_PATH: usize = 107;

/// A parsed `socket` value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(String),
}

impl ListenAddr {
    /// Parses `PORT` (on loopback), `HOST:PORT` with an IP address (`[::1]:PORT` for IPv6), or an
    /// absolute path (a Unix socket).
    pub fn parse(text: &str) -> Result<ListenAddr, String> {
        if text.starts_with('/') {
            if text.len() > MAX_UNIX_PATH || text.contains('\0') || text.ends_with('/') {
                return Err(format!(
                    "socket `{text}` is not a usable Unix socket path: at most {MAX_UNIX_PATH} \
                     bytes, no NUL, not a directory"
                ));
            }
            return Ok(ListenAddr::Unix(text.to_owned()));
        }
        let address = match text.parse::<u16>() {
            Ok(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            Err(_) => text.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "socket `{text}` is neither a port, an IP address with a port (127.0.0.1:8080, \
                     [::1]:8080) nor an absolute Unix socket path"
                )
            })?,
        };
        if address.port() < MIN_PORT {
            return Err(format!(
                "socket `{text}`: port {} is below {MIN_PORT} (privileged, or 0 which would change at \
                 every bind); use a port from {MIN_PORT} to 65535 and put a redirect in front for 80 \
                 or 443",
                address.port()
            ));
        }
        Ok(ListenAddr::Tcp(address))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(address) => write!(f, "{address}"),
            ListenAddr::Unix(path) => f.write_str(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_means_loopback_and_forms_are_canonical() {
        let canonical = |text| ListenAddr::parse(text).unwrap().to_string();
        assert_eq!(canonical("8080"), "127.0.0.1:8080");
        assert_eq!(canonical("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(canonical("0.0.0.0:9000"), "0.0.0.0:9000");
        assert_eq!(canonical("[::1]:9000"), "[::1]:9000");
        assert_eq!(canonical("/run/app.sock"), "/run/app.sock");
    }

    #[test]
    fn privileged_ports_names_and_relative_paths_are_refused_saying_what_to_use() {
        for (text, says) in [
            ("80", "below 1024"),
            ("0", "below 1024"),
            ("127.0.0.1:443", "below 1024"),
            ("localhost:8080", "neither a port"),
            ("run/app.sock", "neither a port"),
            ("70000", "neither a port"),
            ("/run/", "not a usable Unix socket path"),
        ] {
            let error = ListenAddr::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        assert!(ListenAddr::parse(&format!("/{}", "a".repeat(120))).is_err());
    }
}
