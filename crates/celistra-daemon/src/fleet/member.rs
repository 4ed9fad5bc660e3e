//! A node's side of the fleet: joining a hub (one pinned HTTP/1.1 request carrying the pairing
//! code), the membership kept in `fleet.json` (0600), and the outbound link: one TLS 1.3
//! connection to the hub, on which this daemon serves its own API router as an HTTP/2 server, and
//! which it dials again with capped, jittered backoff whenever it ends.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use celistra_client::{Fingerprint, link_client_config, pin_mismatch};
use celistra_proto::{
    ENROLL_ALPN, EnrollAnswer, EnrollRequest, FLEET_ALPN, JoinRequest, Membership,
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use super::identity::Identity;
use super::{ReconnectHint, Tunnel};
use crate::Error;
use crate::home::{Home, write_atomic_private};

/// Longest wait for the hub to answer a dial or a handshake.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the TLS handshake: a hub paces handshakes (100 a second), so after a hub
/// restart or a burst of joins a node may queue a while behind hundreds of others.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Redial delays: full jitter over `BACKOFF_BASE · 2^attempt`, at most [`BACKOFF_CAP`], so a node
/// is back within about 5 s of the network healing and a hub restart's nodes spread out.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(4);
/// A link that lasted this long was healthy: the next failure starts the backoff again.
const HEALTHY_LINK: Duration = Duration::from_secs(10);
/// How long a node whose link the hub refused waits before asking again.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// The node's own PINGs: a hub gone silent is noticed within 25 s.
const PING_EVERY: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// `fleet.json`: the hub this machine joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MembershipFile {
    hub: String,
    fingerprint: String,
    hub_name: String,
}

/// Why joining failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JoinError {
    #[error("{0}")]
    Usage(String),
    #[error("this machine already belongs to the hub {0}; run `celistrad ctl leave` first")]
    AlreadyMember(String),
    #[error(
        "wrong fingerprint: the hub at {hub} presented a certificate whose fingerprint is {presented}, not the {expected} given; copy the line `celistrad ctl pair` printed on the hub"
    )]
    WrongFingerprint {
        hub: String,
        expected: String,
        presented: String,
    },
    #[error("cannot reach the hub at {hub}: {why}")]
    Unreachable { hub: String, why: String },
    /// The hub's refusal (used, expired or wrong code, a name taken, too many attempts), with the
    /// hub's error code.
    #[error("the hub refused: {message}")]
    Refused {
        code: celistra_proto::ErrorCode,
        message: String,
    },
    #[error("{0}")]
    Local(#[from] Error),
}

#[derive(Debug, Default)]
struct LinkState {
    membership: Option<MembershipFile>,
    connected: bool,
    last_error: Option<String>,
    /// Ends the running link (on leave, or a new join).
    link: Option<CancellationToken>,
}

/// This daemon as a member of a fleet.
#[derive(Debug)]
pub(crate) struct Member {
    home: Home,
    machine_name: String,
    audit_key: String,
    stopping: CancellationToken,
    router: std::sync::OnceLock<Router>,
    state: Mutex<LinkState>,
}

impl Member {
    pub(crate) fn load(
        home: &Home,
        machine_name: &str,
        audit_key: String,
        stopping: CancellationToken,
    ) -> Result<Member, Error> {
        let path = home.dir.join("fleet.json");
        let membership = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                celistra_core::json::parse(&text, &path.display().to_string()).map_err(|e| {
                    Error::Invalid(format!("{e}; run `celistrad ctl leave` to forget the hub"))
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        Ok(Member {
            home: home.clone(),
            machine_name: machine_name.to_owned(),
            audit_key,
            stopping,
            router: std::sync::OnceLock::new(),
            state: Mutex::new(LinkState {
                membership,
                ..LinkState::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the link (when this machine is a member) with the router it serves to the hub.
    pub(crate) fn start(self: &Arc<Self>, router: Router) {
        let _ = self.router.set(router);
        let membership = self.lock().membership.clone();
        if let Some(membership) = membership {
            self.run_link(membership);
        }
    }

    fn run_link(self: &Arc<Self>, membership: MembershipFile) {
        let cancel = self.stopping.child_token();
        let previous = self.lock().link.replace(cancel.clone());
        if let Some(previous) = previous {
            previous.cancel();
        }
        tokio::spawn(Arc::clone(self).link_forever(membership, cancel));
    }

    /// The membership as the API shows it.
    pub(crate) fn membership(&self) -> Option<Membership> {
        let state = self.lock();
        state.membership.as_ref().map(|m| Membership {
            hub_name: m.hub_name.clone(),
            hub: m.hub.clone(),
            fingerprint: m.fingerprint.clone(),
            connected: state.connected,
            last_error: state.last_error.clone(),
        })
    }

    /// Joins the hub: makes this machine's link key (kept here; only its certificate goes to the
    /// hub), presents the code over a connection pinned to the hub's certificate, keeps the
    /// membership and starts the link.
    pub(crate) async fn join(
        self: &Arc<Self>,
        request: JoinRequest,
    ) -> Result<Membership, JoinError> {
        if let Some(current) = &self.lock().membership {
            return Err(JoinError::AlreadyMember(current.hub_name.clone()));
        }
        let pin: Fingerprint = request
            .fingerprint
            .parse()
            .map_err(|e: celistra_client::BadFingerprint| JoinError::Usage(e.to_string()))?;
        if request.code.trim().is_empty() {
            return Err(JoinError::Usage("the pairing code is empty".into()));
        }
        let identity = Identity::load_or_create(&self.home, &self.machine_name)?;
        let tls = dial(&request.hub, pin, &identity, ENROLL_ALPN).await?;
        let answer = enroll(
            tls,
            &EnrollRequest {
                code: request.code.trim().to_owned(),
                machine_name: self.machine_name.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                audit_key: self.audit_key.clone(),
            },
        )
        .await
        .map_err(|why| match why {
            EnrollFailure::Refused(error) => JoinError::Refused {
                code: error.code,
                message: error.message,
            },
            EnrollFailure::Transport(why) => JoinError::Unreachable {
                hub: request.hub.clone(),
                why,
            },
        })?;
        let membership = MembershipFile {
            hub: request.hub.clone(),
            fingerprint: pin.to_string(),
            hub_name: answer.hub_name,
        };
        let path = self.home.dir.join("fleet.json");
        write_atomic_private(
            &path,
            &serde_json::to_vec_pretty(&membership).expect("serialisable"),
        )
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        self.lock().membership = Some(membership.clone());
        self.run_link(membership);
        Ok(self.membership().expect("just joined"))
    }

    /// Forgets the hub: ends the link, deletes `fleet.json` and the link key (joining again makes a
    /// new one). Returns the hub's name, or `None` when this machine belonged to none.
    pub(crate) fn leave(&self) -> Result<Option<String>, Error> {
        let left = {
            let mut state = self.lock();
            if let Some(link) = state.link.take() {
                link.cancel();
            }
            state.connected = false;
            state.last_error = None;
            state.membership.take()
        };
        let path = self.home.dir.join("fleet.json");
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot remove {}", path.display()), e)),
        }
        Identity::forget(&self.home);
        Ok(left.map(|m| m.hub_name))
    }

    /// Keeps the link up until `cancel`: dial, serve, and after an end wait the hub's hint or a
    /// jittered backoff.
    async fn link_forever(self: Arc<Self>, membership: MembershipFile, cancel: CancellationToken) {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let hint = ReconnectHint::default();
            let ended = tokio::select! {
                ended = self.link_once(&membership, &hint) => ended,
                () = cancel.cancelled() => Ok(()),
            };
            {
                let mut state = self.lock();
                state.connected = false;
                if let Err(why) = &ended {
                    state.last_error = Some(why.clone());
                }
            }
            if cancel.is_cancelled() {
                return;
            }
            if started.elapsed() >= HEALTHY_LINK {
                attempt = 0;
            }
            let delay = hint.take().unwrap_or_else(|| full_jitter(attempt));
            attempt = attempt.saturating_add(1);
            match &ended {
                Ok(()) => {
                    tracing::info!(hub = %membership.hub, "link to the hub ended; dialing again in {delay:?}")
                }
                Err(why) => {
                    tracing::warn!(hub = %membership.hub, "link to the hub: {why}; dialing again in {delay:?}")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// One link: dial, then serve the API over HTTP/2 until the connection ends.
    async fn link_once(
        &self,
        membership: &MembershipFile,
        hint: &ReconnectHint,
    ) -> Result<(), String> {
        let identity =
            Identity::load_or_create(&self.home, &self.machine_name).map_err(|e| e.to_string())?;
        let pin: Fingerprint = membership
            .fingerprint
            .parse()
            .map_err(|e: celistra_client::BadFingerprint| e.to_string())?;
        let tls = dial(&membership.hub, pin, &identity, FLEET_ALPN)
            .await
            .map_err(|e| e.to_string())?;
        let Some(router) = self.router.get().cloned() else {
            return Err("the API is not ready yet".into());
        };
        let service = Router::new()
            .route("/fleet/v1/reconnect", post(reconnect_hint))
            .route("/fleet/v1/refused", post(refused))
            .with_state(hint.clone())
            .fallback_service(router.layer(Extension(Tunnel {
                hub_name: membership.hub_name.clone(),
            })));
        {
            let mut state = self.lock();
            state.connected = true;
            state.last_error = None;
        }
        tracing::info!(hub = %membership.hub, "linked to the hub {}", membership.hub_name);
        let connection = super::splice::node_server()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .keep_alive_interval(PING_EVERY)
            .keep_alive_timeout(PING_TIMEOUT)
            .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
        let result = connection.await;
        match (hint.refusal(), result) {
            (Some(why), _) => Err(why),
            (None, Ok(())) => Ok(()),
            (None, Err(e)) => Err(format!("the link broke: {e}")),
        }
    }
}

/// `rand(0, min(cap, base · 2^attempt))`.
fn full_jitter(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_CAP);
    let fraction = super::random_u64() as f64 / u64::MAX as f64;
    ceiling.mul_f64(fraction)
}

/// The hub's hint that it is going away: come back after this long.
async fn reconnect_hint(
    State(hint): State<ReconnectHint>,
    Json(after): Json<celistra_proto::ReconnectAfter>,
) {
    hint.set(Duration::from_millis(after.after_ms.min(60_000)));
}

/// The hub's refusal of this link (a revoked or unknown key), said before it closes.
async fn refused(
    State(hint): State<ReconnectHint>,
    Json(refusal): Json<celistra_proto::LinkRefusal>,
) {
    hint.refuse(refusal.message);
    // Asking again soon would not change the answer: a person must act (leave and join again).
    hint.set(REFUSED_RETRY);
}

/// Dials the hub and completes TLS, the hub's certificate pinned and this machine's presented.
async fn dial(
    hub: &str,
    pin: Fingerprint,
    identity: &Identity,
    alpn: &[u8],
) -> Result<TlsStream<TcpStream>, JoinError> {
    let unreachable = |why: String| JoinError::Unreachable {
        hub: hub.to_owned(),
        why,
    };
    let config = link_client_config(pin, identity.certificate.clone(), identity.key(), alpn)
        .map_err(|e| unreachable(format!("TLS setup: {e}")))?;
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(hub))
        .await
        .map_err(|_| unreachable(format!("no answer within {DIAL_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("celistra-hub").expect("a valid name");
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    {
        Err(_) => Err(unreachable(format!(
            "no TLS answer within {HANDSHAKE_TIMEOUT:?}"
        ))),
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(match pin_mismatch(&e) {
            Some((expected, presented)) => JoinError::WrongFingerprint {
                hub: hub.to_owned(),
                expected: expected.to_string(),
                presented: presented.to_string(),
            },
            None => unreachable(format!("TLS: {e}")),
        }),
    }
}

enum EnrollFailure {
    Refused(celistra_proto::ApiError),
    Transport(String),
}

/// Sends the enrolment over HTTP/1.1 and reads the hub's answer.
async fn enroll(
    tls: TlsStream<TcpStream>,
    request: &EnrollRequest,
) -> Result<EnrollAnswer, EnrollFailure> {
    let transport = |e: &dyn std::fmt::Display| EnrollFailure::Transport(e.to_string());
    let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| transport(&e))?;
    tokio::spawn(connection);
    let body = serde_json::to_vec(request).expect("serialisable");
    let http = hyper::Request::post("/fleet/v1/enroll")
        .header(hyper::header::HOST, "celistra-hub")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    let answer = tokio::time::timeout(DIAL_TIMEOUT, send.send_request(http))
        .await
        .map_err(|_| EnrollFailure::Transport(format!("no answer within {DIAL_TIMEOUT:?}")))?
        .map_err(|e| transport(&e))?;
    let status = answer.status();
    let bytes = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| transport(&e))?
        .to_bytes();
    if status.is_success() {
        serde_json::from_slice(&bytes).map_err(|e| transport(&e))
    } else {
        let error =
            serde_json::from_slice::<celistra_proto::ApiError>(&bytes).unwrap_or_else(|_| {
                celistra_proto::ApiError::new(
                    celistra_proto::ErrorCode::PairingRefused,
                    format!("status {status}"),
                )
            });
        Err(EnrollFailure::Refused(error))
    }
}
