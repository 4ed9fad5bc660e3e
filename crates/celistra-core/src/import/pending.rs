//! The mappings whose Celistra field is being built alongside the importers (issue 19): each is one
//! function that says today why the key is not imported, and will set its field once that exists.
//! A function returns `Err(why)` for "reported as not supported yet".

use celistra_proto::AgentSpec;

/// Why each of these keys is not imported yet.
fn not_yet(field: &str, what: &str) -> String {
    format!("not supported yet: {what} needs the agent setting `{field}`, which is coming")
}

/// supervisord `startsecs`, PM2 `min_uptime`: the start-success window.
pub(super) fn start_secs(_spec: &mut AgentSpec, secs: u64) -> Result<(), String> {
    Err(not_yet(
        "start_secs",
        &format!("a {secs} s start-success window"),
    ))
}

/// supervisord `priority` (programs and groups): start order, lower first. `agents` are sorted
/// by `priorities` (lowest first, one per agent): each should wait, with `depends_on` condition
/// `started`, for the agents of the next lower priority.
pub(super) fn start_order(_agents: &mut [AgentSpec], _priorities: &[i64]) -> Result<(), String> {
    Err(not_yet(
        "depends_on",
        "start order (lower priority first; until then the file lists agents in that order and \
         they start at once)",
    ))
}

/// PM2 `instances`: N copies (`max` and `-1`: as many as, or one fewer than, the CPUs).
pub(super) fn instances(_spec: &mut AgentSpec, instances: &str) -> Result<(), String> {
    Err(not_yet("instances", &format!("{instances} copies")))
}

/// PM2 `exec_mode: cluster`: copies sharing one listening socket.
pub(super) fn cluster_mode(_spec: &mut AgentSpec) -> Result<(), String> {
    Err(not_yet(
        "socket",
        "cluster mode (copies sharing one listening socket, for any language)",
    ))
}

/// PM2 `max_memory_restart`: restart above a memory use.
pub(super) fn memory_restart(_spec: &mut AgentSpec, bytes: u64) -> Result<(), String> {
    Err(not_yet(
        "memory_restart",
        &format!("a restart above {bytes} bytes"),
    ))
}

/// PM2 `watch`: restart when these paths change.
pub(super) fn watch(_spec: &mut AgentSpec, paths: &[String]) -> Result<(), String> {
    Err(not_yet(
        "watch",
        &format!("restarting on changes of {}", paths.join(", ")),
    ))
}

/// PM2 `ignore_watch`: changes that do not count.
pub(super) fn watch_ignore(_spec: &mut AgentSpec, globs: &[String]) -> Result<(), String> {
    Err(not_yet(
        "watch_ignore",
        &format!("ignoring changes of {}", globs.join(", ")),
    ))
}

/// PM2 `wait_ready` (with `listen_timeout`): the app says when it is ready.
pub(super) fn readiness(_spec: &mut AgentSpec, timeout_ms: Option<u64>) -> Result<(), String> {
    let within = timeout_ms.map_or(String::new(), |ms| format!(" within {ms} ms"));
    Err(not_yet(
        "readiness",
        &format!(
            "waiting for the app to be ready{within} (a readiness probe: a line on its output, an \
                HTTP GET or a TCP connect)"
        ),
    ))
}
