//! History routes: runs (`/v1/history`), an agent's output logs (read, search, follow, clear) and a
//! search across every agent's output (`/v1/logs`).

use std::collections::VecDeque;

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use celistra_core::clock::format_rfc3339_ms;
use celistra_core::logtext::{GrepPattern, Stream};
use celistra_history::{Cursor, History, LogFilter, Piece};
use celistra_proto::{
    ApiError, Cleared, ErrorCode, HistoryQuery, LogFormat, LogLine, LogsQuery, MAX_TAIL, RunRecord,
    SearchQuery,
};
use tokio::sync::mpsc;

use super::responses::{BadQuery, Internal};
use super::{Failure, Revocation, bad_query, failure};
use crate::supervisor::Supervisor;

type ApiResult<T> = Result<T, Failure>;

/// Formatted pieces waiting for a slow client before the reader waits for it.
const STREAM_QUEUE: usize = 64;

fn internal(error: impl std::fmt::Display) -> Failure {
    failure(ErrorCode::Internal, format!("history: {error}"))
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, celistra_history::Error> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// The agent id a key names: a current agent, or one the history remembers.
async fn resolve(supervisor: &Supervisor, key: &str) -> ApiResult<String> {
    if let Ok(handle) = supervisor.find(key) {
        return Ok(handle.id.clone());
    }
    let history = supervisor.services.history.clone();
    let owned = key.to_owned();
    blocking(move || history.resolve_agent(&owned))
        .await?
        .ok_or_else(|| {
            Failure::from(ApiError::new(
                ErrorCode::NotFound,
                format!("no agent or agent history with id or name `{key}`; `celistrad ctl history` lists runs"),
            ))
        })
}

fn parse_grep(grep: Option<&str>) -> ApiResult<Option<GrepPattern>> {
    grep.map(|g| GrepPattern::new(g).map_err(|e| failure(ErrorCode::InvalidRequest, e)))
        .transpose()
}

/// Runs of agents, oldest first.
#[utoipa::path(
    get,
    path = "/v1/history",
    operation_id = "list_runs",
    tag = "history",
    params(HistoryQuery),
    responses((status = 200, body = Vec<RunRecord>), BadQuery, (status = 404, description = "`not_found`: no agent or agent history with that id or name", body = ApiError), Internal)
)]
pub(crate) async fn runs(
    State(supervisor): State<Arc<Supervisor>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<RunRecord>>> {
    let Query(query) = query.map_err(bad_query)?;
    let agent_id = match &query.agent {
        Some(key) => Some(resolve(&supervisor, key).await?),
        None => None,
    };
    let history = supervisor.services.history.clone();
    let limit = query.limit.unwrap_or(100).clamp(1, 100_000);
    let runs = blocking(move || history.runs(agent_id.as_deref(), query.since, query.until, limit))
        .await?;
    Ok(Json(runs))
}

/// Deletes every saved byte of an agent's output (its runs stay in the history).
#[utoipa::path(
    delete,
    path = "/v1/agents/{agent}/logs",
    operation_id = "clear_logs",
    tag = "history",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = Cleared), (status = 404, description = "`not_found`: no agent or agent history with that id or name", body = ApiError), Internal)
)]
pub(crate) async fn clear(
    State(supervisor): State<Arc<Supervisor>>,
    Path(agent): Path<String>,
) -> ApiResult<Json<Cleared>> {
    let agent_id = resolve(&supervisor, &agent).await?;
    let history = supervisor.services.history.clone();
    let id = agent_id.clone();
    let cleared_bytes = blocking(move || history.clear(&id)).await?;
    Ok(Json(Cleared {
        agent_id,
        cleared_bytes,
    }))
}

/// How pieces become response bytes.
#[derive(Clone)]
struct Printer {
    format: LogFormat,
    timestamps: bool,
    /// Prefix lines with the agent (searches across agents).
    label_agents: bool,
}

impl Printer {
    fn print(&self, piece: Piece) -> Option<Bytes> {
        match (piece, self.format) {
            (Piece::Bytes { bytes, .. }, _) => Some(Bytes::from(bytes)),
            (
                Piece::Line {
                    agent_id,
                    run,
                    line,
                },
                LogFormat::Jsonl,
            ) => {
                let record = LogLine {
                    agent_id,
                    run,
                    stream: line.stream.as_str().to_owned(),
                    time_ms: line.time_ms,
                    text: line.text,
                };
                let mut json = serde_json::to_vec(&record).ok()?;
                json.push(b'\n');
                Some(Bytes::from(json))
            }
            (Piece::Line { agent_id, line, .. }, _) => {
                let mut text = String::with_capacity(line.text.len() + 40);
                if self.timestamps {
                    text.push_str(&format_rfc3339_ms(line.time_ms));
                    text.push(' ');
                }
                if self.label_agents {
                    text.push_str(&agent_id);
                    text.push_str(" | ");
                }
                text.push_str(&line.text);
                text.push('\n');
                Some(Bytes::from(text))
            }
            (Piece::RunStarted { run, .. }, LogFormat::Text) => {
                Some(Bytes::from(format!("-- celistra: run {run} started --\n")))
            }
            (Piece::Dropped { bytes, .. }, LogFormat::Text) => Some(Bytes::from(format!(
                "-- celistra: {bytes} bytes of output were not saved --\n"
            ))),
            _ => None,
        }
    }
}

/// Keeps the last `lines` lines of what passes through: readable lines (with the markers between
/// them) or raw bytes.
struct Tail {
    lines: usize,
    kept: VecDeque<Piece>,
    kept_lines: usize,
    raw: Vec<u8>,
    /// The last raw piece, whose fields the kept bytes are returned with.
    last_raw: Option<Piece>,
}

impl Tail {
    fn new(lines: usize) -> Tail {
        Tail {
            lines,
            kept: VecDeque::new(),
            kept_lines: 0,
            raw: Vec::new(),
            last_raw: None,
        }
    }

    fn push(&mut self, piece: Piece) {
        match piece {
            Piece::Bytes { ref bytes, .. } => {
                self.raw.extend_from_slice(bytes);
                if self.raw.len() > 4 * 1024 * 1024 {
                    let keep = last_lines(&self.raw, self.lines).len();
                    self.raw.drain(..self.raw.len() - keep);
                }
                self.last_raw = Some(piece);
            }
            Piece::Line { .. } => {
                self.kept.push_back(piece);
                self.kept_lines += 1;
                while self.kept_lines > self.lines {
                    if let Some(Piece::Line { .. }) = self.kept.pop_front() {
                        self.kept_lines -= 1;
                    }
                }
            }
            marker => self.kept.push_back(marker),
        }
    }

    fn finish(self) -> Vec<Piece> {
        match self.last_raw {
            Some(Piece::Bytes {
                agent_id,
                run,
                stream,
                time_ms,
                ..
            }) => vec![Piece::Bytes {
                agent_id,
                run,
                stream,
                time_ms,
                bytes: last_lines(&self.raw, self.lines).to_vec(),
            }],
            _ => self.kept.into(),
        }
    }
}

/// The last `lines` lines of `bytes` (a trailing partial line counts as one).
fn last_lines(bytes: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &bytes[bytes.len()..];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    memchr::memrchr_iter(b'\n', body)
        .nth(lines - 1)
        .map_or(bytes, |index| &bytes[index + 1..])
}

/// An agent's output from the history: readable text (default), raw bytes or JSON lines; filtered by
/// time, run, stream or pattern; the last N lines; optionally followed live across restarts.
#[utoipa::path(
    get,
    path = "/v1/agents/{agent}/logs",
    operation_id = "get_logs",
    tag = "history",
    params(("agent" = String, Path, description = "Agent id or name"), LogsQuery),
    responses((status = 200, description = "The output: `text/plain` (format `text`), `application/octet-stream` (`raw`) or `application/jsonl` (`jsonl`: one `LogLine` per line)", content_type = "text/plain", body = String), (status = 400, description = "`invalid_request`: a query parameter is unknown, malformed or out of range, a bad grep pattern, or grep with format raw", body = ApiError), (status = 404, description = "`not_found`: no agent or agent history with that id or name, or no such run", body = ApiError), Internal)
)]
pub(crate) async fn logs(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(Revocation(ended)): Extension<Revocation>,
    Path(agent): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(bad_query)?;
    let agent_id = resolve(&supervisor, &agent).await?;
    let stream = query.stream.map(Stream::from);
    let pattern = parse_grep(query.grep.as_deref())?;
    if pattern.is_some() && query.format == LogFormat::Raw {
        return Err(failure(
            ErrorCode::InvalidRequest,
            "grep matches readable text; use format text or jsonl with it",
        ));
    }
    if query.tail.is_some_and(|t| t > MAX_TAIL) {
        return Err(failure(
            ErrorCode::InvalidRequest,
            format!("tail is limited to {MAX_TAIL} lines"),
        ));
    }
    let history = supervisor.services.history.clone();
    let run_id = match query.run {
        Some(run) => {
            let (history, id) = (history.clone(), agent_id.clone());
            Some(
                blocking(move || history.run_id(&id, run))
                    .await?
                    .ok_or_else(|| {
                        failure(
                            ErrorCode::NotFound,
                            format!("agent {agent_id} has no run {run} in the history; `celistrad ctl history {agent_id}` lists its runs"),
                        )
                    })?,
            )
        }
        None => None,
    };
    let filter = LogFilter {
        agent_id: Some(agent_id),
        run_id,
        since_ms: query.since,
        until_ms: query.until,
        stream,
    };
    let printer = Printer {
        format: query.format,
        timestamps: query.timestamps,
        label_agents: false,
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(STREAM_QUEUE);
    let job = LogJob {
        history,
        filter,
        printer,
        sender,
        raw: query.format == LogFormat::Raw,
    };
    tokio::spawn(async move {
        let _ = job.run(pattern, query.tail, query.follow, ended).await;
    });
    Ok(streamed(query.format, receiver))
}

/// Searches every agent's output (or one agent's) for a pattern; the newest matches, oldest first.
#[utoipa::path(
    get,
    path = "/v1/logs",
    operation_id = "search_logs",
    tag = "history",
    params(SearchQuery),
    responses((status = 200, description = "The matching lines: `text/plain` (format `text`) or `application/jsonl` (`jsonl`: one `LogLine` per line)", content_type = "text/plain", body = String), (status = 400, description = "`invalid_request`: a query parameter is unknown, malformed or out of range, a bad grep pattern, or format raw", body = ApiError), (status = 404, description = "`not_found`: no agent or agent history with that id or name", body = ApiError), Internal)
)]
pub(crate) async fn search(
    State(supervisor): State<Arc<Supervisor>>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(bad_query)?;
    let pattern = parse_grep(Some(&query.grep))?.ok_or_else(|| internal("no pattern"))?;
    if query.format == LogFormat::Raw {
        return Err(failure(
            ErrorCode::InvalidRequest,
            "a search returns lines; use format text or jsonl",
        ));
    }
    let agent_id = match &query.agent {
        Some(key) => Some(resolve(&supervisor, key).await?),
        None => None,
    };
    let filter = LogFilter {
        agent_id: agent_id.clone(),
        run_id: None,
        since_ms: query.since,
        until_ms: query.until,
        stream: query.stream.map(Stream::from),
    };
    let printer = Printer {
        format: query.format,
        timestamps: query.timestamps,
        label_agents: agent_id.is_none(),
    };
    let limit = query.limit.unwrap_or(1000).clamp(1, MAX_TAIL);
    let history = supervisor.services.history.clone();
    let (sender, receiver) = mpsc::channel::<Bytes>(STREAM_QUEUE);
    tokio::task::spawn_blocking(move || {
        let mut emit = |piece: Piece| {
            printer
                .print(piece)
                .is_none_or(|bytes| sender.blocking_send(bytes).is_ok())
        };
        if let Err(e) = history.grep(&filter, &pattern, Some(limit), &mut emit) {
            tracing::warn!("search failed: {e}");
        }
    });
    Ok(streamed(query.format, receiver))
}

fn streamed(format: LogFormat, receiver: mpsc::Receiver<Bytes>) -> Response {
    let content_type = match format {
        LogFormat::Text => "text/plain; charset=utf-8",
        LogFormat::Raw => "application/octet-stream",
        LogFormat::Jsonl => "application/jsonl",
    };
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let bytes = receiver.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(bytes), receiver))
    });
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}

/// One logs request: reads on the blocking pool, formats, and hands bytes to the response.
struct LogJob {
    history: History,
    filter: LogFilter,
    printer: Printer,
    sender: mpsc::Sender<Bytes>,
    raw: bool,
}

impl LogJob {
    fn send(&self, piece: Piece) -> bool {
        self.printer
            .print(piece)
            .is_none_or(|bytes| self.sender.blocking_send(bytes).is_ok())
    }

    async fn run(
        self,
        pattern: Option<GrepPattern>,
        tail: Option<usize>,
        follow: bool,
        stopping: tokio_util::sync::CancellationToken,
    ) -> ApiResult<()> {
        let mut changes = self.history.watch();
        changes.mark_unchanged();
        let job = std::sync::Arc::new(self);
        // The first part: a search, a tail, or everything kept.
        let first = {
            let job = std::sync::Arc::clone(&job);
            let pattern = pattern.clone();
            tokio::task::spawn_blocking(move || job.first_part(pattern.as_ref(), tail))
                .await
                .map_err(internal)?
                .map_err(internal)?
        };
        let Some(mut cursor) = first else {
            return Ok(());
        };
        if !follow {
            return Ok(());
        }
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return Ok(()) },
                () = stopping.cancelled() => return Ok(()),
                () = job.sender.closed() => return Ok(()),
            }
            let step = {
                let job = std::sync::Arc::clone(&job);
                let pattern = pattern.clone();
                tokio::task::spawn_blocking(move || {
                    let open = job.forward(&mut cursor, pattern.as_ref())?;
                    Ok::<_, celistra_history::Error>((cursor, open))
                })
                .await
                .map_err(internal)?
                .map_err(internal)?
            };
            cursor = step.0;
            if !step.1 {
                return Ok(());
            }
        }
    }

    /// Sends the first part of the answer; returns the cursor to follow from (None: client gone).
    fn first_part(
        &self,
        pattern: Option<&GrepPattern>,
        tail: Option<usize>,
    ) -> Result<Option<Cursor>, celistra_history::Error> {
        let agent_id = self.filter.agent_id.as_deref().unwrap_or_default();
        if let Some(pattern) = pattern {
            let end = self.history.end_pos(agent_id)?;
            let mut open = true;
            self.history
                .grep(&self.filter, pattern, tail, &mut |piece| {
                    open = self.send(piece);
                    open
                })?;
            return Ok(open.then(|| Cursor::new(end, false)));
        }
        let start = match tail {
            Some(lines) => self.history.tail_start(&self.filter, lines)?,
            None => 0,
        };
        let mut cursor = Cursor::new(start, self.raw);
        let mut open = true;
        match tail {
            Some(lines) => {
                let mut kept = Tail::new(lines);
                self.history
                    .read_forward(&self.filter, &mut cursor, &mut |piece| {
                        kept.push(piece);
                        true
                    })?;
                self.history.finish_partial(&mut cursor, &mut |piece| {
                    kept.push(piece);
                    true
                });
                for piece in kept.finish() {
                    if !self.send(piece) {
                        return Ok(None);
                    }
                }
            }
            None => {
                self.history
                    .read_forward(&self.filter, &mut cursor, &mut |piece| {
                        open = self.send(piece);
                        open
                    })?;
                self.history.finish_partial(&mut cursor, &mut |piece| {
                    open = open && self.send(piece);
                    open
                });
            }
        }
        Ok(open.then_some(cursor))
    }

    /// Sends what was committed after the cursor; false when the client has gone.
    fn forward(
        &self,
        cursor: &mut Cursor,
        pattern: Option<&GrepPattern>,
    ) -> Result<bool, celistra_history::Error> {
        let mut open = true;
        let mut send = |piece: Piece| {
            let wanted = match (&piece, pattern) {
                (Piece::Line { line, .. }, Some(pattern)) => pattern.matches(&line.text),
                (_, Some(_)) => false,
                _ => true,
            };
            if wanted && open {
                open = self.send(piece);
            }
            open
        };
        self.history.read_forward(&self.filter, cursor, &mut send)?;
        self.history.finish_partial(cursor, &mut send);
        Ok(open)
    }
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn keeps_last_lines() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
    }
}
