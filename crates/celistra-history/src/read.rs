//! Reading history: runs, output in order from a position (for tails and follows), and searches.
//! Readers use pooled connections of their own, so they never wait for the writer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use celistra_core::logtext::{GrepPattern, Line, LineAssembler, Stream};
use celistra_proto::{ExitClass, IoMode, RunCause, RunRecord};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::marks::{self, Mark};
use crate::{Error, History, Message, codec, lock, schema};

/// Segments read per query while scanning, so no read transaction stays open for long.
const PAGE: i64 = 32;

/// Which output to read.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// One agent, or every agent (searches only).
    pub agent_id: Option<String>,
    pub run_id: Option<u64>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub stream: Option<Stream>,
}

impl LogFilter {
    fn keeps_time(&self, time_ms: u64) -> bool {
        self.since_ms.is_none_or(|s| time_ms >= s) && self.until_ms.is_none_or(|u| time_ms <= u)
    }

    fn keeps_stream(&self, stream: Stream) -> bool {
        self.stream.is_none_or(|s| s == stream)
    }
}

/// Something read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes exactly as written (raw reads).
    Bytes {
        agent_id: String,
        run: u64,
        stream: Stream,
        time_ms: u64,
        bytes: Vec<u8>,
    },
    /// A readable line.
    Line {
        agent_id: String,
        run: u64,
        line: Line,
    },
    /// Output of a new run follows.
    RunStarted { agent_id: String, run: u64 },
    /// Output that could not be saved.
    Dropped { agent_id: String, bytes: u64 },
}

/// Where a reader of one agent's output is, and its partial lines.
#[derive(Default)]
pub struct Cursor {
    pub pos: u64,
    /// Whether lines are assembled (readable text) or bytes passed through (raw).
    pub raw: bool,
    assembler: LineAssembler,
    run_id: Option<u64>,
    /// Run number of `run_id`.
    run: u64,
    agent_id: String,
}

impl Cursor {
    pub fn new(pos: u64, raw: bool) -> Cursor {
        Cursor {
            pos,
            raw,
            ..Cursor::default()
        }
    }
}

struct StoredSegment {
    agent_id: String,
    run_id: u64,
    pos: u64,
    /// Length of the output it holds (also when its bytes turned out damaged and were skipped).
    len: u64,
    marks: Vec<Mark>,
    bytes: Vec<u8>,
}

const SEGMENT_COLUMNS: &str = "agent_id, run_id, pos, len, t_first, marks, bytes";

fn segment(row: &Row<'_>) -> rusqlite::Result<StoredSegment> {
    let t_first: i64 = row.get(4)?;
    let encoded: Vec<u8> = row.get(5)?;
    let stored: Vec<u8> = row.get(6)?;
    let bytes = codec::unpack(&stored).unwrap_or_else(|| {
        tracing::warn!("a damaged output segment was skipped");
        Vec::new()
    });
    let marks = marks::decode(&encoded, t_first as u64)
        .filter(|m| m.iter().map(|m| m.len).sum::<usize>() == bytes.len())
        .unwrap_or_else(|| {
            // Damaged marks: keep the bytes, timed at the segment's start.
            vec![Mark {
                stream: Stream::Pty,
                len: bytes.len(),
                time_ms: t_first as u64,
            }]
        });
    Ok(StoredSegment {
        agent_id: row.get(0)?,
        run_id: row.get::<_, i64>(1)? as u64,
        pos: row.get::<_, i64>(2)? as u64,
        len: row.get::<_, i64>(3)?.max(0) as u64,
        marks,
        bytes,
    })
}

impl StoredSegment {
    /// The pieces of this segment from `from` on that the filter keeps: (stream, time, bytes).
    fn chunks<'a>(
        &'a self,
        from: u64,
        filter: &'a LogFilter,
    ) -> impl Iterator<Item = (Stream, u64, &'a [u8])> + 'a {
        let mut offset = 0usize;
        self.marks.iter().filter_map(move |mark| {
            let start = offset;
            let end = (offset + mark.len).min(self.bytes.len());
            offset += mark.len;
            let skip = from.saturating_sub(self.pos) as usize;
            let start = start.max(skip);
            (start < end && filter.keeps_stream(mark.stream) && filter.keeps_time(mark.time_ms))
                .then(|| (mark.stream, mark.time_ms, &self.bytes[start..end]))
        })
    }
}

/// Run numbers by run id, looked up once per reader.
#[derive(Default)]
struct RunNumbers(HashMap<u64, u64>);

impl RunNumbers {
    fn get(&mut self, conn: &Connection, run_id: u64) -> u64 {
        *self.0.entry(run_id).or_insert_with(|| {
            conn.query_row("SELECT run FROM runs WHERE id = ?1", [run_id as i64], |r| {
                r.get::<_, i64>(0)
            })
            .map_or(0, |n| n.max(0) as u64)
        })
    }
}

impl History {
    /// Runs a closure with a pooled reader connection.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let pooled = {
            let mut readers = lock(&self.inner.readers);
            readers.retain(|(g, _)| *g == generation);
            readers.pop()
        };
        let conn = match pooled {
            Some((_, conn)) => conn,
            None => schema::open_reader(&self.inner.path)?,
        };
        let result = f(&conn);
        if self.inner.generation.load(Ordering::SeqCst) == generation {
            let mut readers = lock(&self.inner.readers);
            if readers.len() < 4 {
                readers.push((generation, conn));
            }
        }
        if let Err(error) = &result
            && schema::is_damage(error)
        {
            *lock(&self.inner.damaged) = Some(error.to_string());
            let _ = self.sender.send(Message::DamageFound);
        }
        result
    }

    /// Runs, oldest first: of one agent or all, started in the time range, the last `limit` of them.
    pub fn runs(
        &self,
        agent_id: Option<&str>,
        since_ms: Option<u64>,
        until_ms: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, Error> {
        self.with_reader(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT r.agent_id, r.name, r.run, r.command, r.workspace, r.env_keys, r.mode, r.pid, \
                 r.attempt, r.settings, r.started_ms, r.ended_ms, r.exit_code, r.exit_signal, r.cause, \
                 r.stopped_by, (SELECT COALESCE(SUM(len), 0) FROM segments s WHERE s.run_id = r.id), \
                 r.exit_class \
                 FROM runs r WHERE (?1 IS NULL OR r.agent_id = ?1) \
                 AND (?2 IS NULL OR COALESCE(r.ended_ms, 9223372036854775807) >= ?2) \
                 AND (?3 IS NULL OR r.started_ms <= ?3) ORDER BY r.started_ms DESC, r.id DESC LIMIT ?4",
            )?;
            let rows = statement.query_map(
                params![
                    agent_id,
                    since_ms.map(|v| v as i64),
                    until_ms.map(|v| v as i64),
                    limit as i64
                ],
                run_record,
            )?;
            let mut runs = rows.collect::<Result<Vec<_>, _>>()?;
            runs.reverse();
            Ok(runs)
        })
    }

    /// The agent id a key names in the history: an id, or the name of the agent's most recent run.
    pub fn resolve_agent(&self, key: &str) -> Result<Option<String>, Error> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT agent_id FROM runs WHERE agent_id = ?1 OR name = ?1 \
                     ORDER BY (agent_id = ?1) DESC, started_ms DESC LIMIT 1",
                    [key],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    /// The id of an agent's run number `run`.
    pub fn run_id(&self, agent_id: &str, run: u64) -> Result<Option<u64>, Error> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT id FROM runs WHERE agent_id = ?1 AND run = ?2 ORDER BY id DESC LIMIT 1",
                    params![agent_id, run as i64],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .map(|id| id as u64))
        })
    }

    /// The position after an agent's last saved byte.
    pub fn end_pos(&self, agent_id: &str) -> Result<u64, Error> {
        self.with_reader(|conn| {
            let end: Option<i64> = conn.query_row(
                "SELECT MAX(pos + len) FROM segments WHERE agent_id = ?1",
                [agent_id],
                |r| r.get(0),
            )?;
            Ok(end.map_or(0, |e| e.max(0) as u64))
        })
    }

    /// Where to start reading to get the last `lines` lines the filter keeps.
    pub fn tail_start(&self, filter: &LogFilter, lines: usize) -> Result<u64, Error> {
        let agent_id = filter.agent_id.as_deref().unwrap_or_default();
        self.with_reader(|conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {SEGMENT_COLUMNS} FROM segments WHERE agent_id = ?1 \
                 AND (?2 IS NULL OR run_id = ?2) AND (?3 IS NULL OR t_last >= ?3) \
                 AND (?4 IS NULL OR t_first <= ?4) ORDER BY pos DESC"
            ))?;
            let mut rows = statement.query(params![
                agent_id,
                filter.run_id.map(|v| v as i64),
                filter.since_ms.map(|v| v as i64),
                filter.until_ms.map(|v| v as i64),
            ])?;
            let mut newlines = 0;
            let mut start = 0;
            while let Some(row) = rows.next()? {
                let segment = segment(row)?;
                start = segment.pos;
                newlines += segment
                    .chunks(0, filter)
                    .map(|(_, _, bytes)| memchr::memchr_iter(b'\n', bytes).count())
                    .sum::<usize>();
                // One more line end than wanted: the first wanted line starts after it.
                if newlines > lines {
                    break;
                }
            }
            Ok(start)
        })
    }

    /// Reads one agent's output from `cursor.pos` to the end of what is saved, in order, passing each
    /// piece to `emit` until it returns false. The cursor moves past what was read, so calling again
    /// after new output was committed continues without a gap or a duplicate.
    pub fn read_forward(
        &self,
        filter: &LogFilter,
        cursor: &mut Cursor,
        emit: &mut dyn FnMut(Piece) -> bool,
    ) -> Result<(), Error> {
        let agent_id = filter.agent_id.clone().unwrap_or_default();
        let mut runs = RunNumbers::default();
        loop {
            let page = self.with_reader(|conn| {
                let mut statement = conn.prepare_cached(&format!(
                    "SELECT {SEGMENT_COLUMNS} FROM segments WHERE agent_id = ?1 AND pos + len > ?2 \
                     AND (?3 IS NULL OR run_id = ?3) AND (?4 IS NULL OR t_last >= ?4) \
                     AND (?5 IS NULL OR t_first <= ?5) ORDER BY pos LIMIT ?6"
                ))?;
                let rows = statement.query_map(
                    params![
                        agent_id,
                        cursor.pos as i64,
                        filter.run_id.map(|v| v as i64),
                        filter.since_ms.map(|v| v as i64),
                        filter.until_ms.map(|v| v as i64),
                        PAGE,
                    ],
                    segment,
                )?;
                let segments = rows.collect::<Result<Vec<_>, _>>()?;
                let numbers: Vec<u64> = segments.iter().map(|s| runs.get(conn, s.run_id)).collect();
                Ok((segments, numbers))
            })?;
            let (segments, numbers) = page;
            if segments.is_empty() {
                return Ok(());
            }
            let full = segments.len() as i64 == PAGE;
            for (segment, run) in segments.iter().zip(numbers) {
                if !render_segment(segment, run, filter, cursor, emit) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Emits the partial lines a cursor holds, as lines: at the end of a read.
    pub fn finish_partial(&self, cursor: &mut Cursor, emit: &mut dyn FnMut(Piece) -> bool) {
        let mut lines = vec![];
        cursor.assembler.finish(&mut lines);
        for line in lines {
            if !emit(Piece::Line {
                agent_id: cursor.agent_id.clone(),
                run: cursor.run,
                line,
            }) {
                return;
            }
        }
    }

    /// Lines matching `pattern`, oldest first; with `last`, only the last that many. Uses the search
    /// index for indexed output and scans what is not indexed yet.
    pub fn grep(
        &self,
        filter: &LogFilter,
        pattern: &GrepPattern,
        last: Option<usize>,
        emit: &mut dyn FnMut(Piece) -> bool,
    ) -> Result<(), Error> {
        let newest_first = last.is_some();
        let candidates = match pattern.fts_query() {
            Some(_) => {
                "(indexed = 0 OR id IN (SELECT rowid FROM segments_fts WHERE segments_fts MATCH ?1))"
            }
            None => "?1 IS NOT NULL",
        };
        let order = if newest_first { "DESC" } else { "" };
        let sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE {candidates} \
             AND (?2 IS NULL OR agent_id = ?2) AND (?3 IS NULL OR run_id = ?3) \
             AND (?4 IS NULL OR t_last >= ?4) AND (?5 IS NULL OR t_first <= ?5) \
             ORDER BY t_first {order}, id {order}"
        );
        let query = pattern.fts_query().unwrap_or_default();
        let mut kept: VecDeque<Piece> = VecDeque::new();
        self.with_reader(|conn| {
            let mut runs = RunNumbers::default();
            let mut statement = conn.prepare(&sql)?;
            let mut rows = statement.query(params![
                query,
                filter.agent_id,
                filter.run_id.map(|v| v as i64),
                filter.since_ms.map(|v| v as i64),
                filter.until_ms.map(|v| v as i64),
            ])?;
            while let Some(row) = rows.next()? {
                let segment = segment(row)?;
                let run = runs.get(conn, segment.run_id);
                let mut cursor = Cursor::new(segment.pos, false);
                let mut matches = vec![];
                let mut keep = |piece: Piece| {
                    if let Piece::Line { line, .. } = &piece
                        && pattern.matches(&line.text)
                    {
                        matches.push(piece);
                    }
                    true
                };
                render_segment(&segment, run, filter, &mut cursor, &mut keep);
                self.finish_partial(&mut cursor, &mut keep);
                match last {
                    Some(limit) => {
                        for piece in matches.into_iter().rev() {
                            kept.push_front(piece);
                        }
                        if kept.len() >= limit {
                            break;
                        }
                    }
                    None => {
                        for piece in matches {
                            if !emit(piece) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            Ok(())
        })?;
        if let Some(limit) = last {
            // `kept` holds whole segments' matches, newest segments last; keep the last `limit`.
            let excess = kept.len().saturating_sub(limit);
            for piece in kept.into_iter().skip(excess) {
                if !emit(piece) {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Feeds one segment's kept bytes to the cursor and emits what comes out. Returns false if `emit` did.
fn render_segment(
    segment: &StoredSegment,
    run: u64,
    filter: &LogFilter,
    cursor: &mut Cursor,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> bool {
    let agent_id = &segment.agent_id;
    if segment.pos > cursor.pos
        && cursor.run_id == Some(segment.run_id)
        && filter.since_ms.is_none()
    {
        let dropped = segment.pos - cursor.pos;
        if !emit(Piece::Dropped {
            agent_id: agent_id.clone(),
            bytes: dropped,
        }) {
            return false;
        }
    }
    if cursor.run_id != Some(segment.run_id) {
        let mut lines = vec![];
        cursor.assembler.finish(&mut lines);
        for line in lines {
            if !emit(Piece::Line {
                agent_id: agent_id.clone(),
                run: cursor.run,
                line,
            }) {
                return false;
            }
        }
        let previous_run = cursor.run_id.replace(segment.run_id);
        cursor.run = run;
        cursor.agent_id.clone_from(agent_id);
        if previous_run.is_some()
            && !emit(Piece::RunStarted {
                agent_id: agent_id.clone(),
                run,
            })
        {
            return false;
        }
    }
    let mut lines = vec![];
    for (stream, time_ms, bytes) in segment.chunks(cursor.pos, filter) {
        if cursor.raw {
            if !emit(Piece::Bytes {
                agent_id: agent_id.clone(),
                run,
                stream,
                time_ms,
                bytes: bytes.to_vec(),
            }) {
                return false;
            }
        } else {
            cursor.assembler.push(stream, time_ms, bytes, &mut lines);
        }
    }
    cursor.pos = cursor.pos.max(segment.pos + segment.len);
    for line in lines {
        if !emit(Piece::Line {
            agent_id: agent_id.clone(),
            run,
            line,
        }) {
            return false;
        }
    }
    true
}

fn run_record(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let env_keys: String = row.get(5)?;
    let mode: String = row.get(6)?;
    let settings: String = row.get(9)?;
    let cause: Option<String> = row.get(14)?;
    let invalid = |column: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok(RunRecord {
        agent_id: row.get(0)?,
        name: row.get(1)?,
        run: row.get::<_, i64>(2)?.max(0) as u64,
        command: row.get(3)?,
        workspace: row.get(4)?,
        env_keys: serde_json::from_str(&env_keys).map_err(|e| invalid(5, e))?,
        mode: if mode == IoMode::Pipes.as_str() {
            IoMode::Pipes
        } else {
            IoMode::Pty
        },
        pid: row.get(7)?,
        attempt: row.get(8)?,
        settings: serde_json::from_str(&settings).map_err(|e| invalid(9, e))?,
        started_at_ms: row.get::<_, i64>(10)?.max(0) as u64,
        ended_at_ms: row.get::<_, Option<i64>>(11)?.map(|v| v.max(0) as u64),
        exit_code: row.get(12)?,
        exit_signal: row.get(13)?,
        cause: cause.as_deref().and_then(RunCause::parse),
        stopped_by: row.get(15)?,
        output_bytes: row.get::<_, i64>(16)?.max(0) as u64,
        exit_class: row
            .get::<_, Option<String>>(17)?
            .as_deref()
            .and_then(ExitClass::parse),
    })
}
