//! Each agent's own socket to its daemon, through which it asks for approval (`celistrad ask`)
//! and its hooks report what it is doing (`celistrad hook`).
//! The socket is the agent's identity: it is made for that agent, handed to the agent's user, and
//! inside a sandbox it is the only socket of the daemon the agent can see (bound at
//! `ASK_SOCKET_INSIDE`), so an agent can only ask as itself, and it can decide nothing. The same
//! directory holds `bin/celistrad`, the daemon's binary on an unsandboxed agent's `PATH` (a
//! sandboxed one finds it at `AGENT_BIN_INSIDE`).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::extract::{Query, State};
use axum::routing::post;
use axum::{Extension, Json, Router};
use celistra_proto::{ApiError, Approval, AskQuery, AskRequest, ErrorCode, HookReport};
use tokio::task::JoinHandle;

use crate::wire::{Failure, JsonBody, failure};

/// Who answers what agents ask (the daemon's approval flow); a trait so that this module, which
/// the daemon's shared services hold, depends on nothing that holds them.
pub(crate) trait Answerer: Clone + Send + Sync + 'static {
    /// Agent `agent_id` asks (`origin`: `ask` or `hook`); resolves once decided or expired.
    fn answer(
        &self,
        agent_id: &str,
        origin: &'static str,
        request: AskRequest,
    ) -> impl Future<Output = Result<Approval, ApiError>> + Send;

    /// Agent `agent_id`'s hook reports what its CLI is doing (`celistrad hook <kind>`).
    fn report(&self, agent_id: &str, report: &HookReport) -> Result<(), ApiError>;
}

/// Variable that tells an agent where its socket is.
pub(crate) const ASK_SOCKET_ENV: &str = "CELISTRA_ASK_SOCKET";

/// The agents' sockets of one daemon.
#[derive(Debug)]
pub(crate) struct AskSockets {
    dir: PathBuf,
    /// Each agent's server, and a copy of its listening socket to hand to the next image.
    servers: Mutex<HashMap<String, (JoinHandle<()>, OwnedFd)>>,
    /// `bin/`, holding `celistrad` (a link to the daemon's binary), when the daemon knows its
    /// binary.
    bin: Option<PathBuf>,
    /// The routes every socket serves, made once (at the first socket, with the approval flow
    /// every socket asks through): a route table of its own cost each agent 3.5 KiB.
    routes: OnceLock<Router>,
}

impl AskSockets {
    /// Makes the directory (0711: agents of other users reach their own socket, list nothing):
    /// `/run/celistra-<tag>` for a root daemon, else in `$XDG_RUNTIME_DIR`, else in `/tmp`.
    pub(crate) fn create(
        tag: &str,
        binary: Option<&std::path::Path>,
    ) -> Result<AskSockets, crate::Error> {
        let euid = rustix::process::geteuid();
        let dir = if euid.is_root() {
            PathBuf::from(format!("/run/celistra-{tag}"))
        } else if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
            PathBuf::from(runtime).join(format!("celistra-{tag}"))
        } else {
            PathBuf::from(format!("/tmp/celistra-{}-{tag}", euid.as_raw()))
        };
        let context = || {
            format!(
                "cannot create the agents' socket directory {}",
                dir.display()
            )
        };
        std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(context(), e))?;
        let owner = std::fs::metadata(&dir).map_err(|e| crate::Error::io(context(), e))?;
        if std::os::unix::fs::MetadataExt::uid(&owner) != euid.as_raw() {
            return Err(crate::Error::Insecure(format!(
                "{} belongs to another user; remove it or run the daemon as its owner",
                dir.display()
            )));
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| crate::Error::io(context(), e))?;
        let bin = binary
            .map(|binary| link_binary(&dir.join("bin"), binary))
            .transpose()?;
        Ok(AskSockets {
            dir,
            servers: Mutex::default(),
            bin,
            routes: OnceLock::new(),
        })
    }

    /// The directory an unsandboxed agent's `PATH` starts with, holding `celistrad`.
    pub(crate) fn bin_dir(&self) -> Option<&std::path::Path> {
        self.bin.as_deref()
    }

    /// Agent `agent_id`'s socket, `ask.sock` in a directory of its own (which its sandbox sees,
    /// so the socket a next daemon binds there is found).
    pub(crate) fn path(&self, agent_id: &str) -> PathBuf {
        self.dir.join(agent_id).join("ask.sock")
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, HashMap<String, (JoinHandle<()>, OwnedFd)>> {
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens agent `agent_id`'s socket (0600), or takes the one the previous image handed over
    /// (an upgrade: no connection is refused meanwhile), and serves it, asking through `flow`. A
    /// failure is logged: the agent runs, it only cannot ask.
    pub(crate) fn open<A: Answerer>(&self, agent_id: &str, flow: A) {
        let path = self.path(agent_id);
        let Some(listener) = inherited(agent_id, &path).or_else(|| self.bind(agent_id, &path))
        else {
            return;
        };
        let copy = match listener.as_fd().try_clone_to_owned() {
            Ok(copy) => copy,
            Err(e) => {
                tracing::warn!(agent = agent_id, "cannot keep {}: {e}", path.display());
                return;
            }
        };
        let routes = self.routes.get_or_init(|| routes(flow)).clone();
        let agent = FromAgent(Arc::from(agent_id));
        let service = tower::ServiceExt::map_request(
            routes,
            move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(agent.clone());
                request
            },
        );
        let server = tokio::spawn(serve_agent_socket(listener, service));
        if let Some((old, _)) = self.servers().insert(agent_id.to_owned(), (server, copy)) {
            old.abort();
        }
    }

    /// Binds agent `agent_id`'s socket at `path` (0600), in a directory of its own.
    fn bind(&self, agent_id: &str, path: &std::path::Path) -> Option<tokio::net::UnixListener> {
        let own_dir = self.dir.join(agent_id);
        // 0711 like the directory above it: its user reaches the socket, lists nothing.
        if let Err(e) = std::fs::create_dir_all(&own_dir).and_then(|()| {
            std::fs::set_permissions(&own_dir, std::fs::Permissions::from_mode(0o711))
        }) {
            tracing::warn!(agent = agent_id, "cannot make {}: {e}", own_dir.display());
            return None;
        }
        let _ = std::fs::remove_file(path);
        let listener = match tokio::net::UnixListener::bind(path) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(agent = agent_id, "cannot open {}: {e}", path.display());
                return None;
            }
        };
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(agent = agent_id, "cannot restrict {}: {e}", path.display());
            return None;
        }
        Some(listener)
    }

    /// Copies of every agent's socket, named for the next image (see `celistra_sandbox::reexec`).
    pub(crate) fn for_handover(&self) -> Vec<(String, OwnedFd)> {
        self.servers()
            .iter()
            .filter_map(|(agent_id, (_, fd))| Some((handover_name(agent_id), fd.try_clone().ok()?)))
            .collect()
    }

    /// Hands the socket to the user a run executes as, so it can connect.
    pub(crate) fn hand_to(&self, agent_id: &str, uid: u32, gid: u32) {
        let path = self.path(agent_id);
        if let Err(e) = std::os::unix::fs::chown(&path, Some(uid), Some(gid)) {
            tracing::warn!(
                agent = agent_id,
                "cannot hand {} to uid {uid}: {e}",
                path.display()
            );
        }
    }

    /// Closes and removes an agent's socket (the agent is removed).
    pub(crate) fn close(&self, agent_id: &str) {
        if let Some((server, _)) = self.servers().remove(agent_id) {
            server.abort();
        }
        let _ = std::fs::remove_dir_all(self.dir.join(agent_id));
    }

    /// Closes every socket and removes the directory (the daemon stops).
    pub(crate) fn close_all(&self) {
        for (_, (server, _)) in self.servers().drain() {
            server.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The name of agent `agent_id`'s socket in the handover list (agent ids hold neither `,` nor
/// `=`).
fn handover_name(agent_id: &str) -> String {
    format!("ask-{agent_id}")
}

/// The socket of agent `agent_id` that the previous image handed over, if it is still the one
/// bound at `path`.
fn inherited(agent_id: &str, path: &std::path::Path) -> Option<tokio::net::UnixListener> {
    let listener = std::os::unix::net::UnixListener::from(celistra_sandbox::inherited_listener(
        &handover_name(agent_id),
    )?);
    let bound_here = listener
        .local_addr()
        .is_ok_and(|address| address.as_pathname() == Some(path))
        && path.exists();
    if !bound_here {
        return None;
    }
    listener.set_nonblocking(true).ok()?;
    tokio::net::UnixListener::from_std(listener).ok()
}

/// Serves one agent's socket, each connection in a task of its own. Not `axum::serve`, which
/// keeps two watch channels and a boxed future per listener: about 1.3 KiB of every agent.
async fn serve_agent_socket<S>(mut listener: tokio::net::UnixListener, service: S)
where
    S: tower::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    loop {
        // Retries by itself after a failed accept (a full descriptor table: a second later).
        let (stream, _) = axum::serve::Listener::accept(&mut listener).await;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("an agent's connection ended: {e}");
            }
        });
    }
}

/// What every agent's socket serves, asking through `flow`.
fn routes<A: Answerer>(flow: A) -> Router {
    Router::new()
        .route("/v1/ask", post(ask::<A>))
        .route("/v1/hook", post(hook::<A>))
        .fallback(|| async {
            failure(
                ErrorCode::NotFound,
                "an agent's socket only takes POST /v1/ask and POST /v1/hook; deciding needs the \
                 machine secret",
            )
        })
        .with_state(flow)
}

/// The agent whose socket a request came in on, which its server puts in every request.
#[derive(Clone)]
struct FromAgent(Arc<str>);

/// `POST /v1/ask` on an agent's socket: asks as that agent and answers once decided.
async fn ask<A: Answerer>(
    State(flow): State<A>,
    Extension(FromAgent(agent_id)): Extension<FromAgent>,
    Query(query): Query<AskQuery>,
    JsonBody(request): JsonBody<AskRequest>,
) -> Result<Json<Approval>, Failure> {
    Ok(Json(
        flow.answer(&agent_id, query.origin.as_str(), request)
            .await?,
    ))
}

/// `POST /v1/hook` on an agent's socket: a structured signal of what the agent is doing.
async fn hook<A: Answerer>(
    State(flow): State<A>,
    Extension(FromAgent(agent_id)): Extension<FromAgent>,
    JsonBody(report): JsonBody<HookReport>,
) -> Result<axum::http::StatusCode, Failure> {
    flow.report(&agent_id, &report)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Makes `bin` (0755) hold `celistrad`, a link to the daemon's `binary` (replacing one left by an
/// earlier run, which may have been another binary).
fn link_binary(bin: &std::path::Path, binary: &std::path::Path) -> Result<PathBuf, crate::Error> {
    let context = || format!("cannot put celistrad in {}", bin.display());
    std::fs::create_dir_all(bin).map_err(|e| crate::Error::io(context(), e))?;
    std::fs::set_permissions(bin, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| crate::Error::io(context(), e))?;
    let link = bin.join("celistrad");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(binary, &link).map_err(|e| crate::Error::io(context(), e))?;
    Ok(bin.to_path_buf())
}
