//! Typed async client of a celistrad's HTTP API, over the daemon's Unix socket (the default for a
//! local `ctl`), TCP, or TLS to a remote daemon (`https://`, optionally pinned by certificate
//! fingerprint). One HTTP/1.1 connection per request keeps it simple and stateless.

mod api;
mod sse;
mod terminal;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use celistra_proto::{ApiError, SOURCE_HEADER};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use api::{SseStream, via_hub};
pub use sse::{SseFrame, SseParser};
pub use terminal::{Terminal, TerminalEvent, TerminalInput, TerminalOutput};
pub use tls::{BadFingerprint, Fingerprint, link_client_config, pin_mismatch};

/// How long connecting to a daemon over the network (TCP, then TLS) may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection to the daemon: a Unix socket, TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// What went wrong talking to a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("daemon not running at {}; start it with `celistrad`", home.display())]
    NotRunning { home: PathBuf },
    #[error("cannot read {}: {source}; is this the daemon's state directory?", path.display())]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Api(ApiError),
    #[error("talking to the daemon failed: {0}")]
    Transport(String),
    #[error("bad daemon URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the daemon at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "the daemon at {url} presented a certificate with SHA-256 fingerprint {presented}, but \
         {expected} was expected (pinned); refusing to talk to it. If its certificate was \
         replaced on purpose, pin the new one (its /v1/health and its start-up output show it)"
    )]
    FingerprintMismatch {
        url: String,
        expected: Fingerprint,
        presented: Fingerprint,
    },
    #[error(
        "TLS with the daemon at {url} failed: {reason}. A daemon with its own generated \
         certificate needs it pinned: --fingerprint (or CELISTRA_FINGERPRINT) with the SHA-256 \
         its start-up output and /v1/health show"
    )]
    Tls { url: String, reason: String },
}

#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Net(Arc<Net>),
}

/// A daemon reached over the network: plain HTTP, or HTTPS with a rustls configuration.
#[derive(Debug)]
struct Net {
    /// `http(s)://authority`, for messages.
    url: String,
    /// `host:port` as written in the URL: the `Host` header and the WebSocket's address.
    authority: String,
    /// The host to connect to (an IPv6 address without its brackets) and its port.
    host: String,
    port: u16,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    home: PathBuf,
    secret: String,
    source: String,
    /// The fleet machine every via-hub route is addressed to (see [`Client::on_machine`]).
    machine: Option<String>,
}

#[derive(serde::Deserialize)]
struct AuthFile {
    secret: String,
}

impl Client {
    /// A client of the daemon whose state directory is `home`, over its Unix socket, with the
    /// secret from its `auth.json`. `source` names the caller's surface (`cli`, …).
    pub fn for_home(home: &Path, source: &str) -> Result<Client, ClientError> {
        let auth_path = home.join("auth.json");
        let text = match std::fs::read_to_string(&auth_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::NotRunning {
                    home: home.to_owned(),
                });
            }
            Err(source) => {
                return Err(ClientError::Secret {
                    path: auth_path,
                    source,
                });
            }
        };
        let auth: AuthFile = serde_json::from_str(&text).map_err(|e| ClientError::Secret {
            path: auth_path.clone(),
            source: std::io::Error::other(e),
        })?;
        Ok(Client {
            endpoint: Endpoint::Unix(home.join("celistrad.sock")),
            home: home.to_owned(),
            secret: auth.secret,
            source: source.to_owned(),
            machine: None,
        })
    }

    /// A client of an agent's own socket to its daemon (`$CELISTRA_ASK_SOCKET`): no secret, the
    /// socket itself says which agent is asking.
    pub fn for_agent_socket(socket: &Path) -> Client {
        Client {
            endpoint: Endpoint::Unix(socket.to_owned()),
            home: socket.parent().map(Path::to_owned).unwrap_or_default(),
            secret: String::new(),
            source: "agent".to_owned(),
            machine: None,
        }
    }

    /// A client of the daemon at `url` (`https://host:port`, or `http://` for loopback or a
    /// tunnel) presenting `token`. With `pin`, https accepts exactly the certificate with that
    /// fingerprint (a daemon's generated one); without, the platform's trusted roots decide.
    pub fn remote(
        url: &str,
        token: &str,
        pin: Option<Fingerprint>,
        source: &str,
    ) -> Result<Client, ClientError> {
        let bad = |why: &str| ClientError::BadUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("it must start with https:// (or http://)")),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty() && !a.as_str().contains('@'))
            .ok_or_else(|| bad("it needs a host, and no user name"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(
                "it must be the daemon's address only, without a path or query",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| bad("its host is neither a DNS name nor an IP address"))?;
            Some((tls::client_config(pin)?, name))
        } else if pin.is_some() {
            return Err(bad(
                "a fingerprint pins an https certificate; use https:// with it",
            ));
        } else {
            None
        };
        Ok(Client {
            endpoint: Endpoint::Net(Arc::new(Net {
                url: format!("{}://{authority}", if https { "https" } else { "http" }),
                authority: authority.as_str().to_owned(),
                host,
                port,
                tls,
            })),
            home: PathBuf::new(),
            secret: token.to_owned(),
            source: source.to_owned(),
            machine: None,
        })
    }

    /// The same client, over plain TCP to `addr` instead of the Unix socket.
    pub fn over_tcp(mut self, addr: SocketAddr) -> Client {
        self.endpoint = Endpoint::Net(Arc::new(Net {
            url: format!("http://{addr}"),
            authority: addr.to_string(),
            host: addr.ip().to_string(),
            port: addr.port(),
            tls: None,
        }));
        self
    }

    /// Where this client talks to: the daemon's URL, or its Unix socket's path.
    pub fn target(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(path) => path.display().to_string(),
            Endpoint::Net(net) => net.url.clone(),
        }
    }

    /// The same client, presenting `secret` instead (to test authentication).
    pub fn with_secret(mut self, secret: &str) -> Client {
        self.secret = secret.to_owned();
        self
    }

    /// The same client, addressing the fleet machine `machine` through this daemon (its hub): every
    /// route a hub forwards ([`via_hub`]) goes to `/v1/machines/{machine}/…` instead of `/v1/…`;
    /// the hub's own routes (tokens, sessions, the fleet's) are left as they are. A daemon answers
    /// its own machine's name too, so this also works against a lone daemon.
    pub fn on_machine(&self, machine: &str) -> Client {
        Client {
            machine: Some(machine.to_owned()),
            ..self.clone()
        }
    }

    /// The machine this client addresses through its hub, if any.
    pub fn machine(&self) -> Option<&str> {
        self.machine.as_deref()
    }

    /// `path` as this client sends it: the one place where a machine scope applies, so every
    /// typed method (and the terminal's WebSocket) follows it.
    fn request_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.machine {
            Some(machine) => api::machine_path(machine, path),
            None => std::borrow::Cow::Borrowed(path),
        }
    }

    /// Sends a request and returns the response whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(self.request_path(path).as_ref())
            .header(hyper::header::HOST, self.host_header())
            .header(SOURCE_HEADER, &self.source);
        if !self.secret.is_empty() {
            builder = builder.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.secret),
            );
        }
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        exchange(self.connect().await?, request).await
    }

    fn host_header(&self) -> &str {
        match &self.endpoint {
            Endpoint::Unix(_) => "localhost",
            Endpoint::Net(net) => &net.authority,
        }
    }

    /// A fresh connection to the daemon (TLS already negotiated for https).
    async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        let net = match &self.endpoint {
            Endpoint::Unix(path) => {
                return Ok(Box::new(
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| self.connect_error(e))?,
                ));
            }
            Endpoint::Net(net) => net,
        };
        let unreachable = |reason: String| ClientError::Unreachable {
            url: net.url.clone(),
            reason,
        };
        let timed_out = || unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"));
        // A host that drops packets would otherwise hold ctl for minutes.
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((net.host.as_str(), net.port)),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| unreachable(e.to_string()))?;
        // Requests are small writes: send them now, not after the daemon's delayed ACK (Nagle).
        let _ = tcp.set_nodelay(true);
        let Some((config, name)) = &net.tls else {
            return Ok(Box::new(tcp));
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
        let handshake = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp));
        match handshake.await.map_err(|_| timed_out())? {
            Ok(stream) => Ok(Box::new(stream)),
            Err(e) => Err(match tls::mismatch_in(&e) {
                Some(mismatch) => ClientError::FingerprintMismatch {
                    url: net.url.clone(),
                    expected: mismatch.expected,
                    presented: mismatch.presented,
                },
                None => ClientError::Tls {
                    url: net.url.clone(),
                    reason: e.to_string(),
                },
            }),
        }
    }

    fn connect_error(&self, error: std::io::Error) -> ClientError {
        use std::io::ErrorKind::{ConnectionRefused, NotFound};
        match error.kind() {
            NotFound | ConnectionRefused => ClientError::NotRunning {
                home: self.home.clone(),
            },
            _ => ClientError::Transport(error.to_string()),
        }
    }

    /// Sends a request and decodes a JSON answer; an error status becomes [`ClientError::Api`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("request bodies serialise"));
        let response = self.send(method, path, body).await?;
        let status = response.status();
        decode(status, &read_all(response).await?)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Opens a streaming response (logs, events); an error status becomes [`ClientError::Api`].
    async fn open_stream(&self, path: &str) -> Result<Incoming, ClientError> {
        let response = self.send(Method::GET, path, None).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.into_body());
        }
        Err(decode::<()>(status, &read_all(response).await?)
            .err()
            .unwrap_or_else(|| ClientError::Transport(format!("status {status}"))))
    }
}

/// Sends one request on a fresh HTTP/1.1 connection over `stream`.
async fn exchange(
    stream: Box<dyn Io>,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, ClientError> {
    let transport_error = |e: hyper::Error| ClientError::Transport(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(transport_error)?;
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(transport_error)
}

/// Reads a whole response body.
async fn read_all(response: Response<Incoming>) -> Result<Bytes, ClientError> {
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    Ok(collected.to_bytes())
}

/// Decodes a JSON body: the expected type on success, the API error otherwise.
pub fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, ClientError> {
    if status.is_success() {
        return serde_json::from_slice(bytes)
            .map_err(|e| ClientError::Transport(format!("unexpected answer: {e}")));
    }
    match serde_json::from_slice::<ApiError>(bytes) {
        Ok(error) => Err(ClientError::Api(error)),
        Err(_) => Err(ClientError::Transport(format!(
            "status {status}: {}",
            String::from_utf8_lossy(bytes)
        ))),
    }
}

/// Reads the next chunk of a streaming body, skipping trailers; `None` at the end.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, ClientError> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}
