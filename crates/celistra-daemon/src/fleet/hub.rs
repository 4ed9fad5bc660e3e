//! The hub: its link port (`--hub-listen`), where nodes enrol (one HTTP/1.1 request with a pairing
//! code) and keep their links (TLS 1.3, the node's certificate its identity; the hub the HTTP/2
//! client of the API each node serves); the live links, the newest of a node replacing an older
//! one; and what the hub keeps of each node: an agent cache fed by the node's event stream, the
//! merged event stream of the whole fleet, and the witnessed audit checkpoints.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use celistra_proto::{
    AgentInfo, AuditCheckpoint, AuditProof, ENROLL_ALPN, EnrollAnswer, EnrollRequest, ErrorCode,
    Event, EventKind, FLEET_ALPN, FLEET_ROLE_HEADER, FLEET_USER_HEADER, FleetEvent, Health,
    LinkRefusal, Machine, ReconnectAfter, Role, WitnessState, WitnessStatus,
};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::identity::Identity;
use super::registry::{MachineRecord, PairingRefusal, Registry, Witnessed};
use crate::Error;
use crate::actor::Actor;
use crate::home::Home;

/// The hub's PINGs: a link gone silent is found dead within 20 s.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a handshake, or a request the hub itself makes to a node, may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Handshakes the hub accepts per second (a burst of as many first), so nodes coming back together
/// cannot starve the hub's CPU.
const HANDSHAKES_PER_SECOND: u32 = 100;
/// Events of the merged stream kept for clients that resume.
const MERGED_BACKLOG: usize = 16_384;
/// When a node's audit log is witnessed: this long after its last witnessing once it has had
/// events, and at least this often when idle.
const WITNESS_AFTER_EVENTS: Duration = Duration::from_secs(10);
const WITNESS_IDLE: Duration = Duration::from_secs(600);
/// A hub going away tells its nodes to come back after a random delay in this range.
const COME_BACK_MS: std::ops::Range<u64> = 500..5_000;

/// How to run the hub.
#[derive(Debug, Clone)]
pub(crate) struct HubOptions {
    pub listen: SocketAddr,
}

/// One node's live link.
#[derive(Debug)]
struct Link {
    send: SendRequest<Body>,
    generation: u64,
    /// Ends this link (replaced by a newer one, revoked, the hub stopping).
    cancel: CancellationToken,
}

/// What the hub knows of a node right now.
#[derive(Debug, Default)]
struct Live {
    link: Option<Link>,
    address: Option<String>,
    agents: BTreeMap<String, AgentInfo>,
    /// The node daemon's boot (its start time) and the last of its event ids the hub took: the
    /// resume point of its event stream and the key events are deduplicated by.
    resume: Option<(u64, u64)>,
    /// When the hub last had an answer from it.
    last_seen_ms: Option<u64>,
    /// Its daemon's version, as its health says.
    version: Option<String>,
}

/// The merged event stream: every machine's events, numbered by the hub.
#[derive(Debug)]
struct Merged {
    log: Mutex<(u64, VecDeque<FleetEvent>)>,
    live: broadcast::Sender<FleetEvent>,
}

/// A subscription to the merged stream.
pub(crate) struct MergedSubscription {
    pub replay: Vec<FleetEvent>,
    pub live: broadcast::Receiver<FleetEvent>,
}

/// Why the hub cannot reach a machine.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreachable {
    #[error("no machine named `{0}` in this fleet; `celistrad ctl machines` lists them")]
    Unknown(String),
    #[error("machine `{0}` is offline (its link to the hub is down); its agents keep running")]
    Offline(String),
    #[error("machine `{machine}` did not answer: {why}")]
    Failed { machine: String, why: String },
}

impl Unreachable {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Unreachable::Unknown(_) => ErrorCode::NotFound,
            Unreachable::Offline(_) | Unreachable::Failed { .. } => ErrorCode::MachineOffline,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Hub {
    pub name: String,
    pub identity: Identity,
    /// Where nodes dial, as the join line says it.
    pub address: String,
    registry: Registry,
    live: Mutex<HashMap<String, Live>>,
    generations: AtomicU64,
    merged: Merged,
    events: Arc<crate::events::EventBus>,
    audit: Arc<crate::audit::Auditor>,
    handshakes: Mutex<Instant>,
    stopping: CancellationToken,
}

impl Hub {
    /// Loads the hub's state and starts listening for nodes.
    pub(crate) async fn start(
        options: &HubOptions,
        home: &Home,
        name: &str,
        hostname: &str,
        events: Arc<crate::events::EventBus>,
        audit: Arc<crate::audit::Auditor>,
        stopping: CancellationToken,
    ) -> Result<Arc<Hub>, Error> {
        let identity = Identity::load_or_create(home, name)?;
        let acceptor = TlsAcceptor::from(identity.hub_server_config()?);
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|e| Error::io(format!("cannot listen for nodes on {}", options.listen), e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the hub's bound address".into(), e))?;
        let address = if bound.ip().is_unspecified() {
            format!(
                "{}:{}",
                if hostname.is_empty() {
                    "localhost"
                } else {
                    hostname
                },
                bound.port()
            )
        } else {
            bound.to_string()
        };
        let hub = Arc::new(Hub {
            name: name.to_owned(),
            registry: Registry::load(home.dir.join("hub.json"), name)?,
            identity,
            address,
            live: Mutex::default(),
            generations: AtomicU64::new(0),
            merged: Merged {
                // Ids of this run start above any of a previous run's (its start in ms, shifted past a
                // million events), so a client resuming across a hub restart gets the new run's
                // backlog rather than skipping it.
                log: Mutex::new(((crate::now_ms() << 20) + 1, VecDeque::new())),
                live: broadcast::channel(4096).0,
            },
            events,
            audit,
            handshakes: Mutex::new(Instant::now()),
            stopping,
        });
        std::fs::write(home.dir.join("hub.addr"), format!("{bound}\n"))
            .map_err(|e| Error::io("cannot write hub.addr".into(), e))?;
        tokio::spawn(Arc::clone(&hub).accept_forever(listener, acceptor));
        tokio::spawn(Arc::clone(&hub).merge_own_events());
        tracing::info!(nodes = %bound, fingerprint = %hub.identity.fingerprint, "this daemon is a fleet hub");
        Ok(hub)
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mints a pairing code (the route is the owner's; minting is audited by the caller).
    pub(crate) fn mint_code(&self) -> Result<(String, u64), Error> {
        self.registry.mint_code(crate::now_ms())
    }

    /// Every machine of the fleet; `this` is the hub's own, as its caller sees it.
    pub(crate) fn machines(&self, this: Machine) -> Vec<Machine> {
        let live = self.live();
        let mut machines = vec![this];
        for record in self.registry.machines() {
            let now = live.get(&record.name);
            let agents = now.map(|l| &l.agents);
            machines.push(Machine {
                online: now.is_some_and(|l| l.link.is_some()),
                // A link that is up is heard from (its PINGs are answered) all the time.
                last_seen_ms: if now.is_some_and(|l| l.link.is_some()) {
                    Some(crate::now_ms())
                } else {
                    now.and_then(|l| l.last_seen_ms).or(record.last_seen_ms)
                },
                address: now
                    .and_then(|l| l.address.clone())
                    .or(record.last_address.clone()),
                version: now
                    .and_then(|l| l.version.clone())
                    .or(Some(record.version.clone())),
                agents: agents.map_or(0, |a| u32::try_from(a.len()).unwrap_or(u32::MAX)),
                agents_running: agents.map_or(0, |a| {
                    u32::try_from(a.values().filter(|a| a.state.is_active()).count())
                        .unwrap_or(u32::MAX)
                }),
                joined_at_ms: Some(record.joined_at_ms),
                audit: witness_state(&record),
                this: false,
                name: record.name,
            });
        }
        machines
    }

    /// A node's agents as the hub's cache has them.
    pub(crate) fn cached_agents(&self, machine: &str) -> Result<Vec<AgentInfo>, Unreachable> {
        let live = self.live();
        match live.get(machine) {
            Some(l) if l.link.is_some() => Ok(l.agents.values().cloned().collect()),
            _ => Err(self.not_linked(machine)),
        }
    }

    /// Why a machine without a live link cannot be reached: offline if it joined, else unknown.
    fn not_linked(&self, machine: &str) -> Unreachable {
        if self.registry.machine(machine).is_some() {
            Unreachable::Offline(machine.to_owned())
        } else {
            Unreachable::Unknown(machine.to_owned())
        }
    }

    /// Every node's cached agents (an offline node's as last seen).
    pub(crate) fn all_cached_agents(&self) -> Vec<celistra_proto::MachineAgents> {
        let live = self.live();
        self.registry
            .machines()
            .into_iter()
            .map(|record| {
                let now = live.get(&record.name);
                celistra_proto::MachineAgents {
                    online: now.is_some_and(|l| l.link.is_some()),
                    agents: now.map_or_else(Vec::new, |l| l.agents.values().cloned().collect()),
                    machine: record.name,
                }
            })
            .collect()
    }

    /// Cuts a machine off for good: its link is closed now and its key refused from now on.
    pub(crate) fn revoke(&self, machine: &str, actor: &Actor) -> bool {
        if self.registry.revoke(machine).is_none() {
            return false;
        }
        if let Some(live) = self.live().remove(machine)
            && let Some(link) = live.link
        {
            link.cancel.cancel();
        }
        self.events.publish(EventKind::MachineRevoked {
            name: machine.to_owned(),
            actor: actor.name.clone(),
            actor_role: actor.role,
        });
        true
    }

    /// Sends a request to a node over its link.
    pub(crate) async fn send(
        &self,
        machine: &str,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, Unreachable> {
        let mut send = {
            let live = self.live();
            match live.get(machine).and_then(|l| l.link.as_ref()) {
                Some(link) => link.send.clone(),
                None => return Err(self.not_linked(machine)),
            }
        };
        let failed = |why: String| Unreachable::Failed {
            machine: machine.to_owned(),
            why,
        };
        send.ready().await.map_err(|e| failed(e.to_string()))?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, send.send_request(request))
            .await
            .map_err(|_| failed(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| failed(e.to_string()))?;
        // Kept in memory (a write per request would cost a file sync); saved when the hub stops.
        if let Some(live) = self.live().get_mut(machine) {
            live.last_seen_ms = Some(crate::now_ms());
        }
        Ok(answer)
    }

    /// Opens a node's terminal for a browser (or `ctl attach`) that asked for a WebSocket: the
    /// node's terminal route over an extended CONNECT, its bytes spliced to the browser's until
    /// either ends, the link ends or the machine is revoked.
    pub(crate) async fn terminal(
        &self,
        machine: &str,
        request: Request<Body>,
        path_and_query: &str,
    ) -> Response<Body> {
        let link = {
            let live = self.live();
            live.get(machine)
                .and_then(|l| l.link.as_ref())
                .map(|link| (link.send.clone(), link.cancel.child_token()))
        };
        let Some((mut send, cut)) = link else {
            let error = self.not_linked(machine);
            return error_response(error.code(), &error.to_string());
        };
        super::splice::splice_terminal(request, &mut send, path_and_query, cut).await
    }

    /// Subscribes to the merged stream after hub id `after`.
    pub(crate) fn subscribe(&self, after: Option<u64>) -> MergedSubscription {
        let log = self
            .merged
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let live = self.merged.live.subscribe();
        let replay = after.map_or_else(Vec::new, |after| {
            log.1
                .iter()
                .filter(|e| e.event.id > after)
                .cloned()
                .collect()
        });
        MergedSubscription { replay, live }
    }

    fn merge(&self, machine: &str, event: Event) {
        let mut log = self
            .merged
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let merged = FleetEvent {
            machine: machine.to_owned(),
            machine_event_id: event.id,
            event: Event { id: log.0, ..event },
        };
        log.0 += 1;
        if log.1.len() == MERGED_BACKLOG {
            log.1.pop_front();
        }
        log.1.push_back(merged.clone());
        let _ = self.merged.live.send(merged);
    }

    /// The hub's own machine's events, into the merged stream.
    async fn merge_own_events(self: Arc<Self>) {
        let mut own = self.events.subscribe(None).live;
        loop {
            tokio::select! {
                event = own.recv() => match event {
                    Ok(event) => self.merge(&self.name, Arc::unwrap_or_clone(event)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = self.stopping.cancelled() => return,
            }
        }
    }

    /// Tells every node when to come back, spread over a few seconds, then closes the links.
    pub(crate) async fn shutdown(&self) {
        let links: Vec<(String, SendRequest<Body>)> = self
            .live()
            .iter()
            .filter_map(|(name, l)| {
                l.link
                    .as_ref()
                    .map(|link| (name.clone(), link.send.clone()))
            })
            .collect();
        let hints = links.into_iter().map(|(machine, mut send)| async move {
            let after_ms =
                COME_BACK_MS.start + super::random_u64() % (COME_BACK_MS.end - COME_BACK_MS.start);
            let body = serde_json::to_vec(&ReconnectAfter { after_ms }).expect("serialisable");
            let request = control_request("/fleet/v1/reconnect", body);
            let sent = async {
                send.ready().await?;
                send.send_request(request).await
            };
            if tokio::time::timeout(Duration::from_secs(2), sent)
                .await
                .is_err()
            {
                tracing::debug!(machine, "no answer to the reconnect hint");
            }
        });
        futures_util::future::join_all(hints).await;
        // Where each node's events resume and when it was last heard from, for the next start
        // (the live map is always locked before the registry).
        {
            let live = self.live();
            self.registry.update_each(|m| {
                if let Some(now) = live.get(&m.name) {
                    m.boot = now.resume.map(|(boot, _)| boot);
                    m.last_event_id = now.resume.map(|(_, id)| id);
                    m.last_seen_ms = now.last_seen_ms.or(m.last_seen_ms);
                    m.last_address = now.address.clone().or(m.last_address.take());
                    if let Some(version) = &now.version {
                        m.version.clone_from(version);
                    }
                }
            });
        }
        for live in self.live().values_mut() {
            if let Some(link) = live.link.take() {
                link.cancel.cancel();
            }
        }
    }

    async fn accept_forever(self: Arc<Self>, listener: TcpListener, acceptor: TlsAcceptor) {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("cannot accept a node's connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = self.stopping.cancelled() => return,
            };
            self.pace_handshakes().await;
            let hub = Arc::clone(&self);
            let acceptor = acceptor.clone();
            tokio::spawn(async move { hub.handle(tcp, peer, acceptor).await });
        }
    }

    /// Waits for the handshake budget: [`HANDSHAKES_PER_SECOND`], a second's worth in a burst.
    async fn pace_handshakes(&self) {
        let wait = {
            let mut next = self
                .handshakes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let slot = Duration::from_secs(1) / HANDSHAKES_PER_SECOND;
            *next = (*next).max(now.checked_sub(Duration::from_secs(1)).unwrap_or(now)) + slot;
            next.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    async fn handle(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor) {
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::info!(%peer, "a node's TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "a node's TLS handshake timed out");
                return;
            }
        };
        let (_, session) = tls.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let Some(fingerprint) = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| crate::tls::fingerprint(cert))
        else {
            return;
        };
        match alpn.as_deref() {
            Some(alpn) if alpn == ENROLL_ALPN => self.serve_enrolment(tls, peer, fingerprint).await,
            Some(alpn) if alpn == FLEET_ALPN => self.serve_link(tls, peer, &fingerprint).await,
            _ => tracing::info!(%peer, "a connection to the link port without a fleet protocol"),
        }
    }

    /// Serves one enrolment request.
    async fn serve_enrolment(
        self: Arc<Self>,
        tls: tokio_rustls::server::TlsStream<TcpStream>,
        peer: SocketAddr,
        fingerprint: String,
    ) {
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let hub = Arc::clone(&self);
            let fingerprint = fingerprint.clone();
            async move {
                Ok::<_, std::convert::Infallible>(hub.enroll(request, peer, fingerprint).await)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HANDSHAKE_TIMEOUT)
            .serve_connection(TokioIo::new(tls), service);
        if let Err(e) = connection.await {
            tracing::debug!(%peer, "enrolment connection: {e}");
        }
    }

    async fn enroll(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        fingerprint: String,
    ) -> Response<Body> {
        if request.method() != Method::POST || request.uri().path() != "/fleet/v1/enroll" {
            return error_response(
                ErrorCode::NotFound,
                "the link port serves only POST /fleet/v1/enroll",
            );
        }
        let body = match tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            http_body_util::Limited::new(request.into_body(), 16 * 1024).collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            _ => {
                return error_response(
                    ErrorCode::InvalidRequest,
                    "the enrolment body could not be read (at most 16 KiB)",
                );
            }
        };
        let Ok(enrolment) = serde_json::from_slice::<EnrollRequest>(&body) else {
            return error_response(
                ErrorCode::InvalidRequest,
                "the enrolment is not the JSON a celistrad of this version sends",
            );
        };
        if let Err(e) = celistra_core::names::validate_machine_name(&enrolment.machine_name) {
            return error_response(ErrorCode::InvalidRequest, &format!("machine name: {e}"));
        }
        let now = crate::now_ms();
        let record = MachineRecord {
            name: enrolment.machine_name.clone(),
            fingerprint,
            audit_key: enrolment.audit_key,
            joined_at_ms: now,
            version: enrolment.version,
            last_address: Some(peer.ip().to_string()),
            last_seen_ms: Some(now),
            witnessed: None,
            tampered: None,
            checked_at_ms: None,
            last_event_id: None,
            boot: None,
        };
        match self
            .registry
            .enroll(&enrolment.code, peer.ip(), record, now)
        {
            Ok(()) => {
                self.events.publish(EventKind::MachineJoined {
                    name: enrolment.machine_name.clone(),
                    address: peer.ip().to_string(),
                });
                let answer = EnrollAnswer {
                    hub_name: self.name.clone(),
                    machine_name: enrolment.machine_name,
                };
                Response::new(Body::from(
                    serde_json::to_vec(&answer).expect("serialisable"),
                ))
            }
            Err(refusal) => {
                self.audit.record(
                    &Actor::recorded("unauthenticated", None),
                    "pairing_refused",
                    &peer.ip().to_string(),
                    serde_json::json!({ "machine": enrolment.machine_name, "reason": refusal.to_string() }),
                );
                let code = match refusal {
                    PairingRefusal::TooMany(_) => ErrorCode::TooManyAttempts,
                    PairingRefusal::NameTaken(_) | PairingRefusal::HubName(_) => {
                        ErrorCode::Conflict
                    }
                    _ => ErrorCode::PairingRefused,
                };
                error_response(code, &refusal.to_string())
            }
        }
    }

    /// A node's link: the hub becomes the HTTP/2 client of the API the node serves on it.
    async fn serve_link(
        self: Arc<Self>,
        tls: tokio_rustls::server::TlsStream<TcpStream>,
        peer: SocketAddr,
        fingerprint: &str,
    ) {
        let known = self.registry.machine_by_fingerprint(fingerprint);
        // The flow-control windows (see `splice::hub_client`) keep one stalled stream (a slow
        // browser) from holding up the others.
        let handshake = super::splice::hub_client()
            .timer(TokioTimer::new())
            .keep_alive_interval(PING_EVERY)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake::<_, Body>(TokioIo::new(tls));
        let (mut send, connection) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await
        {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::info!(%peer, "a node's link failed to start: {e}");
                return;
            }
            Err(_) => return,
        };
        let cancel = self.stopping.child_token();
        let driver = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                tokio::select! {
                    ended = connection => ended.err().map(|e| e.to_string()),
                    () = cancel.cancelled() => None,
                }
            }
        });
        let Some(machine) = known else {
            let message = if self.registry.is_revoked(fingerprint) {
                "this machine was revoked from the fleet; run `celistrad ctl leave` on it, then join again with a new code"
            } else {
                "this machine's key is not in the fleet; join with `celistrad ctl join` and a code from `celistrad ctl pair`"
            };
            tracing::info!(%peer, "refused a link: {message}");
            let body = serde_json::to_vec(&LinkRefusal {
                message: message.into(),
            })
            .expect("serialisable");
            let refusal = async {
                send.ready().await?;
                send.send_request(control_request("/fleet/v1/refused", body))
                    .await
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), refusal).await;
            cancel.cancel();
            return;
        };
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let name = machine.name.clone();
        let replaced = {
            let mut live = self.live();
            let entry = live.entry(name.clone()).or_default();
            entry.address = Some(peer.ip().to_string());
            entry.last_seen_ms = Some(crate::now_ms());
            entry.link.replace(Link {
                send: send.clone(),
                generation,
                cancel: cancel.clone(),
            })
        };
        match replaced {
            // The newest connection wins: the node redialed before the hub saw the old one die.
            Some(old) => old.cancel.cancel(),
            None => self.events.publish(EventKind::MachineOnline {
                name: name.clone(),
                address: peer.ip().to_string(),
            }),
        }
        // Address and time are kept in memory and saved when the hub stops: a hub restart with
        // many nodes then costs no file sync per link.

        let follower = tokio::spawn(Arc::clone(&self).follow(name.clone(), generation));
        let ended = driver.await.ok().flatten();
        follower.abort();
        let still_current = {
            let mut live = self.live();
            match live.get_mut(&name) {
                Some(entry)
                    if entry
                        .link
                        .as_ref()
                        .is_some_and(|l| l.generation == generation) =>
                {
                    entry.link = None;
                    entry.last_seen_ms = Some(crate::now_ms());
                    true
                }
                _ => false,
            }
        };
        if still_current && !self.stopping.is_cancelled() {
            let reason = ended.unwrap_or_else(|| "the link closed".into());
            tracing::info!(machine = %name, "a node's link ended: {reason}");
            self.events
                .publish(EventKind::MachineOffline { name, reason });
        }
    }

    /// Keeps the hub's view of a node live while its link lasts: health, the agent list, then its
    /// event stream from where the hub left off, and its audit checkpoints.
    async fn follow(self: Arc<Self>, machine: String, generation: u64) {
        if let Err(why) = self.follow_events(&machine, generation).await {
            tracing::debug!(machine, "following a node's events stopped: {why}");
        }
    }

    async fn follow_events(&self, machine: &str, generation: u64) -> Result<(), String> {
        let health: Health = self.get_json(machine, "/v1/health").await?;
        // The resume point is (the node daemon's boot, its last event id taken): ids are only
        // comparable within one run of the node's daemon. A hub that restarted resumes from the
        // point it saved when it stopped.
        let boot = health.started_at_ms;
        let resume = {
            let mut live = self.live();
            let entry = live.entry(machine.to_owned()).or_default();
            entry.version = Some(health.version.clone());
            if entry.resume.is_none() {
                entry.resume = self
                    .registry
                    .machine(machine)
                    .and_then(|m| m.boot.zip(m.last_event_id));
            }
            match entry.resume {
                Some((seen_boot, last)) if seen_boot == boot => Some(last),
                _ => {
                    entry.resume = None;
                    None
                }
            }
        };
        // The list first; then every event after the resume point: after 0 for a new run of the
        // node's daemon, its whole backlog. Events that left the node's backlog meanwhile come as
        // a `resync`, on which the hub lists again.
        self.relist(machine).await?;
        let answer = self
            .call(
                machine,
                Request::get("/v1/events?follow=true")
                    .header("last-event-id", resume.unwrap_or(0).to_string()),
            )
            .await?;
        if !answer.status().is_success() {
            return Err(format!("events answered {}", answer.status()));
        }
        let mut body = answer.into_body();
        let mut parser = celistra_client::SseParser::default();
        // Witness at once, then soon after the node's events (its actions are audited), else
        // rarely: an idle link stays quiet.
        let mut witnessed_at = None::<Instant>;
        let mut changed = true;
        loop {
            let wait = if changed {
                WITNESS_AFTER_EVENTS
            } else {
                WITNESS_IDLE
            };
            let due = witnessed_at.map_or(Duration::ZERO, |at| wait.saturating_sub(at.elapsed()));
            if due.is_zero() {
                witnessed_at = Some(Instant::now());
                changed = false;
                self.witness(machine).await;
                continue;
            }
            let frame = tokio::time::timeout(due, body.frame()).await;
            let chunk = match frame {
                Err(_) => continue,
                Ok(None) => return Err("the event stream ended".into()),
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            for frame in parser.feed(&chunk) {
                let Ok(event) = serde_json::from_str::<Event>(&frame.data) else {
                    continue;
                };
                self.take_event(machine, generation, boot, event).await?;
                changed = true;
            }
        }
    }

    /// Applies one event of a node: skipped when already seen, else merged and the cache updated.
    async fn take_event(
        &self,
        machine: &str,
        generation: u64,
        boot: u64,
        event: Event,
    ) -> Result<(), String> {
        if matches!(event.kind, EventKind::Resync { .. }) {
            return self.relist(machine).await;
        }
        {
            let mut live = self.live();
            let Some(entry) = live.get_mut(machine) else {
                return Err("the machine left".into());
            };
            if entry
                .link
                .as_ref()
                .is_none_or(|l| l.generation != generation)
            {
                return Err("a newer link took over".into());
            }
            if entry
                .resume
                .is_some_and(|(b, last)| b == boot && event.id <= last)
            {
                return Ok(());
            }
            entry.resume = Some((boot, event.id));
            if let EventKind::AgentRemoved { agent_id, .. } = &event.kind {
                entry.agents.remove(agent_id);
            }
        }
        let changed = event.kind.changed_agent().map(str::to_owned);
        let removed = matches!(event.kind, EventKind::AgentRemoved { .. });
        self.merge(machine, event);
        if let (Some(agent), false) = (changed, removed) {
            let path = format!("/v1/agents/{agent}");
            if let Ok(info) = self.get_json::<AgentInfo>(machine, &path).await
                && let Some(entry) = self.live().get_mut(machine)
            {
                entry.agents.insert(info.id.clone(), info);
            }
        }
        Ok(())
    }

    /// Replaces the cached agent list of a node with what it lists now.
    async fn relist(&self, machine: &str) -> Result<(), String> {
        let agents: Vec<AgentInfo> = self.get_json(machine, "/v1/agents").await?;
        if let Some(entry) = self.live().get_mut(machine) {
            entry.agents = agents.into_iter().map(|a| (a.id.clone(), a)).collect();
        }
        Ok(())
    }

    /// Checks a node's newest audit checkpoint against the one witnessed before.
    async fn witness(&self, machine: &str) {
        let Some(record) = self.registry.machine(machine) else {
            return;
        };
        let checkpoint = match self
            .call_json::<AuditCheckpoint>(Method::POST, machine, "/v1/audit/checkpoint")
            .await
        {
            Ok(checkpoint) => checkpoint,
            Err(why) => {
                tracing::debug!(machine, "no audit checkpoint to witness: {why}");
                return;
            }
        };
        let previous = record.witnessed.as_ref();
        let proof = match previous {
            Some(old) if old.size > 0 && old.size < checkpoint.tree_size => {
                let path = format!(
                    "/v1/audit/proof?old_size={}&tree_size={}",
                    old.size, checkpoint.tree_size
                );
                match self.get_json::<AuditProof>(machine, &path).await {
                    Ok(proof) => proof.proof,
                    Err(_) => return,
                }
            }
            _ => Vec::new(),
        };
        let verdict = super::witness::witness(
            previous.map(|w| w.note.as_str()),
            &record.audit_key,
            &checkpoint.checkpoint,
            &proof,
        );
        let now = crate::now_ms();
        match verdict {
            Ok(new) => self.registry.update(machine, |m| {
                m.witnessed = Some(Witnessed {
                    note: checkpoint.checkpoint.clone(),
                    size: new.size,
                });
                m.checked_at_ms = Some(now);
            }),
            Err(problem) => {
                let first = record.tampered.is_none();
                self.registry.update(machine, |m| {
                    m.tampered.get_or_insert_with(|| problem.clone());
                    m.checked_at_ms = Some(now);
                });
                if first {
                    tracing::error!(machine, "audit witnessing: {problem}");
                    self.events.publish(EventKind::MachineAuditTampered {
                        name: machine.to_owned(),
                        problem,
                    });
                }
            }
        }
    }

    /// Sends a node a request of the hub's own, which carries the hub's identity: the hub itself,
    /// reading.
    async fn call(
        &self,
        machine: &str,
        request: http::request::Builder,
    ) -> Result<Response<Incoming>, String> {
        let request = request
            .header(FLEET_USER_HEADER, crate::actor::SYSTEM)
            .header(FLEET_ROLE_HEADER, Role::Viewer.as_str())
            .body(Body::empty())
            .expect("a valid request");
        self.send(machine, request).await.map_err(|e| e.to_string())
    }

    /// GETs a node route as the hub itself (a viewer) and reads its JSON.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        machine: &str,
        path: &str,
    ) -> Result<T, String> {
        self.call_json(Method::GET, machine, path).await
    }

    /// Calls a node route as the hub itself (a viewer) and reads its JSON.
    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        machine: &str,
        path: &str,
    ) -> Result<T, String> {
        let answer = self
            .call(machine, Request::builder().method(method).uri(path))
            .await?;
        let status = answer.status();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, answer.into_body().collect())
            .await
            .map_err(|_| format!("{path}: the answer took too long"))?
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
    }
}

/// A link control request (`/fleet/v1/…`), which only a node's link answers.
fn control_request(path: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(Bytes::from(body)))
        .expect("a valid request")
}

fn witness_state(record: &MachineRecord) -> WitnessState {
    WitnessState {
        status: match (&record.tampered, &record.witnessed) {
            (Some(_), _) => WitnessStatus::Tampered,
            (None, Some(_)) => WitnessStatus::Ok,
            (None, None) => WitnessStatus::Unwitnessed,
        },
        size: record.witnessed.as_ref().map_or(0, |w| w.size),
        checked_at_ms: record.checked_at_ms,
        problem: record.tampered.clone(),
    }
}

/// A JSON error answer, its status the code's.
fn error_response(code: ErrorCode, message: &str) -> Response<Body> {
    axum::response::IntoResponse::into_response(crate::wire::failure(code, message))
}
