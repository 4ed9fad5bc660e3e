//! The celistrad daemon as a library: [`run`] boots it on a state directory and serves until the
//! cancellation token fires, so tests can run a real daemon in-process.

mod actor;
mod agent_rules;
mod api;
mod approval_flow;
mod approvals;
mod asks;
mod audit;
mod blocks;
mod code_pages;
mod events;
mod file_watch;
mod fleet;
mod home;
mod metrics;
mod notify;
mod sandbox;
mod scheduler;
mod secrets;
mod serve;
mod services;
mod sessions;
mod sockets;
mod store;
mod supervisor;
mod tls;
mod tokens;
mod usage;
mod wire;
mod worktree;
mod zone;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use celistra_core::config::DaemonConfig;
use celistra_history::{History, HistoryEvent, Limits};
use celistra_proto::{EventKind, Health, HistoryHealth};
use celistra_sandbox::{CgroupRoot, ResourceControl};
use tokio_util::sync::CancellationToken;

pub use home::Home;
pub use tls::TlsMode;

/// Default HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:33120";

/// What a stopping daemon does with its agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Leaving {
    /// Stop them gracefully; they come back on the next start (`SIGTERM`, a service stop).
    #[default]
    StopAgents,
    /// Leave them running in the keeper for the next daemon (`ctl daemon stop --keep-agents`).
    KeepAgents,
    /// Leave them running and re-execute the daemon's binary (`SIGHUP`, `ctl daemon upgrade`).
    Upgrade,
}

/// How the daemon stopped.
#[derive(Debug)]
pub struct Stopped {
    pub leaving: Leaving,
    /// For an upgrade: the API's listening sockets (`unix`, `tcp`) and the agents' shared ones
    /// (`socket-…`), to hand to the next image.
    pub listeners: Vec<(String, std::os::fd::OwnedFd)>,
}

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct Options {
    pub home: PathBuf,
    /// HTTP listen address; port 0 picks a free port (written to `http.addr`).
    pub listen: SocketAddr,
    /// `--scrollback-kb`: ring size of agents that set none, overriding `config.json`.
    pub scrollback_kb: Option<u32>,
    /// Become the child subreaper and reap orphaned descendants. Set by the binary; left off by
    /// in-process tests, whose test harness owns the process.
    pub subreaper: bool,
    /// The binary whose `__sandbox-exec` mode sets up each sandbox and confines the agent (the
    /// `celistrad` executable). Without it, sandboxed spawns are refused.
    pub launcher: Option<PathBuf>,
    /// Serve the TCP port over HTTPS only (`--tls`, `--tls-cert`/`--tls-key`).
    pub tls: Option<TlsMode>,
    /// `--insecure-http`: allow plain HTTP on an address other machines can reach.
    pub insecure_http: bool,
    /// `--machine-name`: this machine's name in a fleet (kept in the state directory).
    pub machine_name: Option<String>,
    /// `--hub`: be a fleet hub, taking nodes' links on this address (`--hub-listen`).
    pub hub_listen: Option<SocketAddr>,
    /// What becomes of the agents when `shutdown` is cancelled (stopped when absent). Whoever
    /// cancels it (a signal handler, `POST /v1/daemon/stop`) says so here first.
    pub leaving: Option<Arc<tokio::sync::watch::Sender<Leaving>>>,
    /// Told once the API answers: where, and with which certificate (for the binary to print).
    pub ready: Option<tokio::sync::mpsc::UnboundedSender<Ready>>,
}

/// What a started daemon serves, for whoever started it to show.
#[derive(Debug, Clone)]
pub struct Ready {
    /// `http://…` or `https://…`: the TCP port (loopback when bound to every address).
    pub url: String,
    /// SHA-256 of the served certificate (lowercase hex) when the port speaks HTTPS.
    pub fingerprint_sha256: Option<String>,
    /// The API's router, as both listeners serve it, to call in-process without a socket
    /// (`celistra-bench --only auth` times authentication and role checks this way).
    pub router: axum::Router,
}

/// Errors that stop the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("celistrad is already running with state directory {} (pid {pid}); stop it first or use another --home", home.display())]
    AlreadyRunning { home: PathBuf, pid: String },
    #[error("{0}")]
    Insecure(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(context: String, source: std::io::Error) -> Error {
        Error::Io { context, source }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fleet node's link without a daemon: joins the hub of `request` as `machine_name` (its link key
/// kept in `home`), then keeps the link up, serving `router` on it, until `stop` is cancelled; the
/// same code as a daemon's own membership. Returns once joined (the link runs on in a task).
/// `celistra-bench --only fleet` runs many such light nodes in one process. No audit key is
/// pinned, so the hub witnesses nothing of such a node.
pub async fn fleet_link(
    home: &std::path::Path,
    machine_name: &str,
    router: axum::Router,
    request: celistra_proto::JoinRequest,
    stop: CancellationToken,
) -> Result<(), String> {
    let member = Arc::new(
        fleet::Member::load(&Home::new(home), machine_name, String::new(), stop)
            .map_err(|e| e.to_string())?,
    );
    member.start(router);
    member
        .join(request)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Runs the daemon until `shutdown` is cancelled, then stops every agent gracefully (or leaves
/// them to the keeper, as `options.leaving` says) and returns what it did. If the keeper dies
/// (taking the agents with it), the daemon stops too and answers [`Leaving::Upgrade`]: executed
/// again, it starts a new keeper and the agents that should run.
pub async fn run(options: Options, shutdown: CancellationToken) -> Result<Stopped, Error> {
    // Tokens and session cookies cross the network in the clear without TLS.
    if !options.listen.ip().is_loopback() && options.tls.is_none() && !options.insecure_http {
        return Err(Error::Insecure(format!(
            "refusing to serve plain HTTP on {}, which other machines can reach: tokens and \
             cookies would cross the network unencrypted. Add --tls (a generated certificate) or \
             --tls-cert FILE --tls-key FILE, or --insecure-http if something else encrypts the \
             link (a VPN, an SSH tunnel)",
            options.listen
        )));
    }
    let leaving = options
        .leaving
        .clone()
        .unwrap_or_else(|| Arc::new(tokio::sync::watch::channel(Leaving::StopAgents).0));
    let home = Home::new(&options.home);
    home.create()?;
    let _lock = home.lock()?;
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let certificates = match &options.tls {
        Some(mode) => Some(tls::Certificates::load(
            &home,
            mode,
            &hostname,
            options.listen.ip(),
        )?),
        None => None,
    };
    let secret = home.load_or_create_secret()?;
    let machine_id = home.load_or_create_machine_id()?;
    let machine_name = home.machine_name(options.machine_name.as_deref(), &hostname)?;
    let config_path = home.config_file();
    let config = match std::fs::read_to_string(&config_path) {
        Ok(text) => DaemonConfig::parse(&text, &config_path.display().to_string())
            .map_err(|e| Error::Invalid(e.to_string()))?,
        Err(_) => DaemonConfig::default(),
    };

    if options.subreaper {
        celistra_sandbox::become_subreaper()
            .map_err(|e| Error::io("cannot become child subreaper".into(), e))?;
    }
    // The keeper holds the agents across daemons: connect first, taking over what it holds.
    let (keeper, held) = match &options.launcher {
        Some(binary) => {
            let dir = celistra_sandbox::keeper::keeper_dir(&home.dir);
            std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    std::fs::set_permissions(
                        &dir,
                        std::os::unix::fs::PermissionsExt::from_mode(0o700),
                    )
                })
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
            let (keeper, held) = celistra_sandbox::keeper::Keeper::connect(&dir, Some(binary))
                .await
                .map_err(|e| Error::Invalid(e.to_string()))?;
            (Some(keeper), held)
        }
        None => (None, vec![]),
    };
    if !held.is_empty() {
        tracing::info!(
            runs = held.len(),
            keeper = keeper.as_ref().map(celistra_sandbox::keeper::Keeper::pid),
            "taking over the runs the keeper held"
        );
    }
    // The instance's cgroup is the keeper's: it outlives daemons as the agents do.
    let instance = keeper
        .as_ref()
        .map_or_else(std::process::id, celistra_sandbox::keeper::Keeper::pid);
    let audit = open_audit_log(&home, &machine_id).await?;
    let sandbox =
        sandbox::SandboxControl::load(&home, options.launcher.clone(), Arc::clone(&audit))?;
    let cgroups = CgroupRoot::create(&home_tag(&home), instance);
    let limits = ResourceControl::create(&home_tag(&home), instance, cgroups.as_ref());
    let asks = asks::AskSockets::create(&home_tag(&home), options.launcher.as_deref())?;
    let approvals = approvals::Broker::load(home.dir.join("approvals.json"), now_ms());
    let secrets = Arc::new(secrets::Secrets::load(&home.dir)?);
    if let (Some(keeper), Some(root)) = (&keeper, &cgroups) {
        // Kills every agent process if the keeper dies, however it dies.
        keeper.guard(root.path()).await;
    }

    let (history_events, history_announcements) = tokio::sync::mpsc::unbounded_channel();
    let ceiling = config.fleet;
    let history = tokio::task::spawn_blocking({
        let path = home.history_file();
        move || History::open(&path, log_limits(&config), history_events, now_ms())
    })
    .await
    .map_err(|e| Error::io("cannot open the history".into(), std::io::Error::other(e)))?;
    let (store, stored, last_seq) = store::Store::load(home.agents_file());
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(Arc::clone(&store).write_loop(writer_stop.clone()));
    let reader_thread = supervisor::ReaderThread::start()
        .map_err(|e| Error::io("cannot start the output reader thread".into(), e))?;
    let events = Arc::new(events::EventBus::new(
        last_seq,
        0,
        Arc::clone(&store),
        Arc::clone(&audit),
    ));
    let notify = Arc::new(notify::Notifications::load(
        &home,
        machine_id.clone(),
        Arc::clone(&events),
        Arc::clone(&audit),
    )?);
    let services = Arc::new(services::Services {
        home: home.clone(),
        events,
        audit: Arc::clone(&audit),
        store: Arc::clone(&store),
        history: history.clone(),
        cgroups,
        keeper,
        limits,
        sandbox,
        asks,
        approvals: Arc::new(approvals),
        notify,
        secrets,
        sockets: sockets::SharedSockets::default(),
        scrollback_kb: options.scrollback_kb,
        default_workspace: std::env::var("HOME").unwrap_or_else(|_| "/".into()),
        base_env: std::env::vars()
            // Socket activation variables are set per agent, for the agents that have a socket.
            .filter(|(k, _)| !k.starts_with("CELISTRA_") && !k.starts_with("LISTEN_"))
            .chain([("TERM".into(), "xterm-256color".into())])
            .collect(),
        readers: reader_thread.handle().clone(),
        main: tokio::runtime::Handle::current(),
        agent_rules: agent_rules::AgentRules::new(home.dir.join("agent-rules.json")),
        zone: zone::machine_zone(),
        metrics: metrics::Metrics::new(),
        spawning: tokio::sync::Semaphore::new(services::SPAWNS_AT_ONCE),
    });
    let metrics_follower =
        tokio::spawn(Arc::clone(&services.metrics).follow(services.events.subscribe(None).live));
    let supervisor = supervisor::Supervisor::new(Arc::clone(&services));
    let directory: Arc<dyn services::AgentDirectory> = Arc::clone(&supervisor) as _;
    let block_monitor = blocks::report_blocks(&services, Arc::downgrade(&directory));
    let activity_watch = tokio::spawn(supervisor::watch_activity(Arc::downgrade(&supervisor)));
    let usage_sampler = tokio::spawn(usage::run(Arc::downgrade(&supervisor)));
    let announcer = tokio::spawn(announce_history(
        history_announcements,
        Arc::clone(&services),
    ));

    let stopping = CancellationToken::new();
    let socket_path = home.socket_file();
    // After an upgrade the listening sockets are the previous image's: connections made meanwhile
    // wait in their backlog, and the port stays.
    let unix = match celistra_sandbox::inherited_listener("unix") {
        Some(fd) => {
            let listener = std::os::unix::net::UnixListener::from(fd);
            listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixListener::from_std(listener))
                .map_err(|e| Error::io("cannot take over the API socket".into(), e))?
        }
        None => {
            let _ = std::fs::remove_file(&socket_path);
            let unix = tokio::net::UnixListener::bind(&socket_path)
                .map_err(|e| Error::io(format!("cannot listen on {}", socket_path.display()), e))?;
            std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(format!("cannot restrict {}", socket_path.display()), e))?;
            unix
        }
    };
    let tcp = match celistra_sandbox::inherited_listener("tcp") {
        Some(fd) => {
            let listener = std::net::TcpListener::from(fd);
            listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(listener))
                .map_err(|e| Error::io("cannot take over the API port".into(), e))?
        }
        None => tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", options.listen), e))?,
    };
    // Copies for the next image, should this one be upgraded.
    let listeners = [("unix", unix.as_fd()), ("tcp", tcp.as_fd())]
        .into_iter()
        .map(|(name, fd)| fd.try_clone_to_owned().map(|fd| (name.to_owned(), fd)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::io("cannot keep the listening sockets".into(), e))?;
    let bound = tcp
        .local_addr()
        .map_err(|e| Error::io("cannot read the bound address".into(), e))?;
    let base_url = format!(
        "{}://{}",
        if certificates.is_some() {
            "https"
        } else {
            "http"
        },
        if bound.ip().is_unspecified() {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port())
        } else {
            bound
        }
    );
    services.notify.set_listen_base(&base_url);
    if !bound.ip().is_loopback() && certificates.is_none() {
        tracing::warn!(
            "serving plain HTTP on {bound}, which is reachable from other machines (--insecure-http)"
        );
    }
    std::fs::write(home.addr_file(), format!("{bound}\n"))
        .map_err(|e| Error::io(format!("cannot write {}", home.addr_file().display()), e))?;

    let member = Arc::new(fleet::Member::load(
        &home,
        &machine_name,
        audit.log().public_key(),
        stopping.clone(),
    )?);
    let hub = match options.hub_listen {
        Some(listen) => Some(
            fleet::Hub::start(
                &fleet::HubOptions { listen },
                &home,
                &machine_name,
                &hostname,
                Arc::clone(&services.events),
                Arc::clone(&audit),
                stopping.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let fleet = Arc::new(fleet::Fleet {
        machine_name: machine_name.clone(),
        ceiling,
        hub: hub.clone(),
        member: Arc::clone(&member),
        local: std::sync::OnceLock::new(),
    });
    let started_at_ms = now_ms();
    let state = api::AppState {
        daemon: Arc::new(api::DaemonControl {
            shutdown: shutdown.clone(),
            leaving: Arc::clone(&leaving),
            this: celistra_proto::DaemonLeaving {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
                started_at_ms,
            },
            services: Arc::clone(&services),
        }),
        supervisor: Arc::clone(&supervisor),
        secret: secret.into(),
        health: Arc::new(Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            machine_id,
            machine_name,
            hostname,
            pid: std::process::id(),
            started_at_ms,
            agents: 0,
            agents_running: 0,
            cgroups: services.cgroups.is_some(),
            history: HistoryHealth::default(),
            audit: celistra_proto::AuditHealth::default(),
            tls: None,
        }),
        tickets: Arc::default(),
        sessions: Arc::new(sessions::Sessions::load(home.dir.join("sessions.json"))),
        tokens: Arc::new(tokens::Tokens::load(home.dir.join("tokens.json"))?),
        lifetimes: Arc::new(api::Lifetimes::new(stopping.clone())),
        base_url: base_url.clone().into(),
        tls: certificates.is_some(),
        certificates: certificates.clone(),
        fleet: Arc::clone(&fleet),
    };
    // The agents of the previous run are back in the registry before the API answers, so a client
    // never sees a daemon that has forgotten them.
    services.events.publish(EventKind::DaemonStarted {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
    });
    let last_fires = stored
        .iter()
        .filter_map(|a| Some((a.id.clone(), a.last_fire_ms?)))
        .collect();
    supervisor.restore(stored, held).await;
    supervisor.approvals.restore();
    let scheduler = tokio::spawn(scheduler::run(
        Arc::clone(&supervisor),
        last_fires,
        stopping.clone(),
    ));
    let file_watch = tokio::spawn(file_watch::run(Arc::clone(&supervisor), stopping.clone()));
    let router = api::router(state);
    let _ = fleet.local.set(router.clone());
    member.start(router.clone());
    let in_process = router.clone();
    let unix_server = tokio::spawn(serve::serve(unix, None, router.clone(), stopping.clone()));
    // Small answers go out at once rather than waiting on the peer's delayed ACK (Nagle).
    let tcp = axum::serve::ListenerExt::tap_io(tcp, |stream| {
        let _ = stream.set_nodelay(true);
    });
    let tcp_server = match &certificates {
        Some(certificates) => {
            let acceptor = certificates.acceptor()?;
            let router = router.layer(axum::middleware::map_response(
                tls::strict_transport_security,
            ));
            tokio::spawn(serve::serve(tcp, Some(acceptor), router, stopping.clone()))
        }
        None => tokio::spawn(serve::serve(tcp, None, router, stopping.clone())),
    };
    let reloader = certificates
        .clone()
        .map(|c| tokio::spawn(c.reload_on_change(stopping.clone())));
    let verifier = tokio::spawn(Arc::clone(&services).verify_audit_periodically(stopping.clone()));
    let reaper = options
        .subreaper
        .then(|| tokio::spawn(reap_orphans_forever(stopping.clone())));

    let fingerprint = certificates.as_ref().map(|c| c.fingerprint());
    match &fingerprint {
        Some(fingerprint) => tracing::info!(
            home = %home.dir.display(),
            https = %bound,
            fingerprint_sha256 = %fingerprint,
            "celistrad is running (HTTPS; clients pin the certificate with --fingerprint {fingerprint})"
        ),
        None => tracing::info!(home = %home.dir.display(), http = %bound, "celistrad is running"),
    }
    if let Some(ready) = &options.ready {
        let _ = ready.send(Ready {
            url: base_url,
            fingerprint_sha256: fingerprint,
            router: in_process,
        });
    }
    let code_pages = tokio::spawn(code_pages::release_when_quiet(
        Arc::clone(&services.events),
        services.metrics.requests_answered(),
        stopping.clone(),
    ));

    let keeper_lost = async {
        match &services.keeper {
            Some(keeper) => keeper.lost().await,
            None => std::future::pending().await,
        }
    };
    let leaving = tokio::select! {
        () = shutdown.cancelled() => *leaving.borrow(),
        () = keeper_lost => {
            tracing::error!(
                "the keeper died, and every agent with it; the daemon starts again to start \
                 a new keeper and the agents that should run"
            );
            Leaving::Upgrade
        }
    };
    let keep_agents = leaving != Leaving::StopAgents;
    if keep_agents {
        tracing::info!("leaving every agent running in the keeper ({leaving:?})");
    } else {
        tracing::info!("stopping every agent");
    }
    services.events.publish(EventKind::DaemonStopping);
    if let Some(hub) = &hub {
        hub.shutdown().await;
    }
    stopping.cancel();
    let _ = scheduler.await;
    let _ = file_watch.await;
    let _ = code_pages.await;
    if keep_agents {
        supervisor.leave().await;
    } else {
        supervisor.shutdown().await;
        if let Some(keeper) = &services.keeper {
            keeper.release().await;
        }
    }
    let _ = tokio::join!(unix_server, tcp_server);
    if let Some(reloader) = reloader {
        let _ = reloader.await;
    }
    if let Some(reaper) = reaper {
        reaper.abort();
    }
    let _ = verifier.await;
    if let Err(e) = services.audit.log().sync() {
        tracing::error!("cannot make the last audit entries durable: {e}");
    }
    writer_stop.cancel();
    let _ = writer.await;
    let _ = tokio::task::spawn_blocking(move || {
        // The next image opens the database at once: it takes the WAL as it is.
        if leaving == Leaving::Upgrade {
            history.leave();
        } else {
            history.close();
        }
        drop(reader_thread);
    })
    .await;
    announcer.abort();
    activity_watch.abort();
    usage_sampler.abort();
    metrics_follower.abort();
    // Left agents keep their cgroups, their sockets and the binary their sandboxes see.
    if !keep_agents {
        if let Some(root) = &services.cgroups {
            root.destroy();
        }
        services.limits.destroy();
        services.asks.close_all();
    }
    drop(block_monitor);
    if leaving != Leaving::Upgrade {
        let _ = std::fs::remove_file(&socket_path);
        let _ = std::fs::remove_file(home.addr_file());
    }
    tracing::info!("celistrad stopped");
    Ok(Stopped {
        leaving,
        listeners: if leaving == Leaving::Upgrade {
            listeners
                .into_iter()
                .chain(services.sockets.for_handover())
                .chain(services.asks.for_handover())
                .collect()
        } else {
            vec![]
        },
    })
}

/// Opens (or creates) `audit.log` with its signing key; a torn last entry left by a crash is cut
/// and the cut recorded.
async fn open_audit_log(home: &Home, machine_id: &str) -> Result<Arc<audit::Auditor>, Error> {
    let dir = home.dir.clone();
    let origin = format!("celistra/{machine_id}");
    let opened = tokio::task::spawn_blocking(move || celistra_audit::AuditLog::open(&dir, &origin))
        .await
        .map_err(|e| Error::io("cannot open the audit log".into(), std::io::Error::other(e)))?
        .map_err(|e| Error::Invalid(format!("audit log: {e}")))?;
    let (log, report) = opened;
    if let Some(bytes) = report.truncated_bytes {
        tracing::warn!("the audit log ended in a torn entry ({bytes} bytes): cut and recorded");
    }
    Ok(Arc::new(audit::Auditor::new(log)))
}

/// The history's retention limits from the daemon's configuration.
pub(crate) fn log_limits(config: &DaemonConfig) -> Limits {
    const MIB: u64 = 1024 * 1024;
    Limits {
        max_age_ms: u64::from(config.logs_max_age_days) * 86_400_000,
        max_total_bytes: config.logs_max_total_mb.saturating_mul(MIB),
        max_agent_bytes: config.logs_max_agent_mb.saturating_mul(MIB),
    }
}

/// Publishes what the history reports as events.
async fn announce_history(
    mut announcements: tokio::sync::mpsc::UnboundedReceiver<HistoryEvent>,
    services: Arc<services::Services>,
) {
    while let Some(announcement) = announcements.recv().await {
        services.events.publish(match announcement {
            HistoryEvent::Dropped {
                agent_id,
                bytes,
                reason,
            } => EventKind::LogsDropped {
                agent_id,
                bytes,
                reason,
            },
            HistoryEvent::Recovered { dropped_bytes } => EventKind::LogsRecovered { dropped_bytes },
            HistoryEvent::Reset { moved_to, reason } => {
                EventKind::HistoryReset { moved_to, reason }
            }
        });
    }
}

/// A short stable tag of the state directory, so daemons on different state directories never
/// touch each other's cgroups.
fn home_tag(home: &Home) -> String {
    let canonical = std::fs::canonicalize(&home.dir).unwrap_or_else(|_| home.dir.clone());
    let hash = canonical
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{:08x}", hash as u32)
}

/// Reaps orphans re-parented to the daemon whenever a child changes state.
async fn reap_orphans_forever(stopping: CancellationToken) {
    let Ok(mut children) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
    else {
        tracing::warn!(
            "cannot watch SIGCHLD; orphans of agents are reaped by their cgroup kill only"
        );
        return;
    };
    loop {
        tokio::select! {
            _ = children.recv() => {}
            () = stopping.cancelled() => return,
        }
        let _ = tokio::task::spawn_blocking(celistra_sandbox::reap_orphans).await;
    }
}
