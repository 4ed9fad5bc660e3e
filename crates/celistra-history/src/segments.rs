//! Segments on disk: inserting them (compressed now or in idle time), deleting the oldest (with their index entries),
//! merging small neighbours, and feeding the search index. Called by the writer thread only.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use celistra_core::logtext::readable_text;
use rusqlite::{Connection, params};

use crate::Error;
use crate::codec;
use crate::marks::{self, Mark};

/// Largest segment; large output is cut at a line end near this size.
pub(crate) const SEGMENT_MAX: usize = 256 * 1024;
/// Segments smaller than this are merged with their neighbours once they are `SETTLE_MS` old.
pub(crate) const SMALL_SEGMENT: usize = 64 * 1024;
pub(crate) const SETTLE_MS: u64 = 60_000;
/// Idle-time work done in one step (tens of milliseconds): large enough that the search index grows
/// in few, large commits, small enough that arriving output never waits long.
const MAINTENANCE_STEP_BYTES: usize = 1024 * 1024;
/// Compressing is cheaper than indexing (about 500 MiB/s here): a step compresses more.
const COMPRESS_STEP_BYTES: usize = 4 * 1024 * 1024;

/// A segment ready to insert.
pub(crate) struct Segment {
    pub agent_id: Arc<str>,
    pub run_id: u64,
    pub pos: u64,
    /// A slice of the pending buffer it was cut from: cutting copies nothing.
    pub bytes: Bytes,
    pub marks: Vec<Mark>,
}

impl Segment {
    pub(crate) fn t_first(&self) -> u64 {
        self.marks.first().map_or(0, |m| m.time_ms)
    }

    pub(crate) fn t_last(&self) -> u64 {
        self.marks.iter().map(|m| m.time_ms).max().unwrap_or(0)
    }
}

/// How a commit stores its segments.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Packing {
    /// Compressed now (see codec.rs).
    Now,
    /// As they came, marked for [`compress_deferred`]: the writer is behind and an agent waits.
    Later,
}

/// Inserts segments in one transaction; returns the stored size of each.
pub(crate) fn write_segments(
    conn: &mut Connection,
    segments: &[Segment],
    packing: Packing,
) -> Result<Vec<u64>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut sizes = Vec::with_capacity(segments.len());
    for segment in segments {
        sizes.push(insert_segment(&tx, segment, packing)?);
    }
    tx.commit()?;
    Ok(sizes)
}

/// Inserts one segment; returns its stored size.
pub(crate) fn insert_segment(
    conn: &Connection,
    segment: &Segment,
    packing: Packing,
) -> Result<u64, rusqlite::Error> {
    let stored = match packing {
        Packing::Now => codec::pack(&segment.bytes),
        Packing::Later => codec::store_as_is(&segment.bytes),
    };
    let t_first = segment.t_first();
    conn.prepare_cached(
        "INSERT INTO segments \
         (agent_id, run_id, pos, len, stored, t_first, t_last, marks, bytes, deferred) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        &*segment.agent_id,
        segment.run_id as i64,
        segment.pos as i64,
        segment.bytes.len() as i64,
        stored.len() as i64,
        t_first as i64,
        segment.t_last() as i64,
        marks::encode(&segment.marks, t_first),
        stored,
        packing == Packing::Later,
    ])?;
    Ok(stored.len() as u64)
}

/// Compresses segments a burst stored as they came, up to a step's worth. Returns bytes compressed.
pub(crate) fn compress_deferred(conn: &Connection) -> Result<usize, Error> {
    let mut batch: Vec<(i64, Vec<u8>)> = vec![];
    let mut done = 0;
    {
        let mut select =
            conn.prepare_cached("SELECT id, bytes FROM segments WHERE deferred = 1 ORDER BY id")?;
        let mut rows = select.query([])?;
        while done < COMPRESS_STEP_BYTES {
            let Some(row) = rows.next()? else { break };
            let stored: Vec<u8> = row.get(1)?;
            done += stored.len().max(1);
            batch.push((row.get(0)?, stored));
        }
    }
    let tx = conn.unchecked_transaction()?;
    {
        let mut update = tx.prepare_cached(
            "UPDATE segments SET bytes = ?2, stored = ?3, deferred = 0 WHERE id = ?1",
        )?;
        for (id, stored) in batch {
            // A damaged segment stays as it is, for the reader to report; it is not retried.
            let packed = codec::unpack(&stored).map_or(stored, |bytes| codec::pack(&bytes));
            update.execute(params![id, packed, packed.len() as i64])?;
        }
    }
    tx.commit()?;
    Ok(done)
}

/// Deletes the oldest segments (of one agent, or of all) until at least `bytes` are freed.
pub(crate) fn delete_oldest(
    conn: &Connection,
    agent_id: Option<&str>,
    bytes: u64,
) -> Result<Vec<(Arc<str>, u64)>, Error> {
    let (sql, agent) = match agent_id {
        Some(agent) => (
            "SELECT id, agent_id, stored FROM segments WHERE agent_id = ?1 ORDER BY pos",
            agent,
        ),
        None => (
            "SELECT id, agent_id, stored FROM segments WHERE ?1 = ?1 ORDER BY t_first, id",
            "",
        ),
    };
    let mut ids = vec![];
    {
        let mut statement = conn.prepare_cached(sql)?;
        let mut rows = statement.query(params![agent])?;
        let mut freed = 0u64;
        while freed < bytes {
            let Some(row) = rows.next()? else { break };
            let len: i64 = row.get(2)?;
            ids.push(row.get::<_, i64>(0)?);
            freed += len.max(0) as u64;
        }
    }
    let tx = conn.unchecked_transaction()?;
    let freed = delete_where(
        &tx,
        "id IN (SELECT value FROM json_each(?1))",
        params![serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())],
    )?;
    tx.commit()?;
    Ok(freed)
}

/// Deletes the segments matching `condition` and their index entries; returns the bytes freed per agent.
pub(crate) fn delete_where(
    conn: &Connection,
    condition: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<(Arc<str>, u64)>, Error> {
    let mut freed: HashMap<Arc<str>, u64> = HashMap::new();
    {
        let mut select = conn.prepare(&format!(
            "SELECT id, agent_id, stored, indexed FROM segments WHERE {condition}"
        ))?;
        let mut unindex = conn.prepare_cached("DELETE FROM segments_fts WHERE rowid = ?1")?;
        let mut rows = select.query(params)?;
        while let Some(row) = rows.next()? {
            let agent_id: String = row.get(1)?;
            *freed.entry(Arc::from(agent_id)).or_default() += row.get::<_, i64>(2)?.max(0) as u64;
            if row.get::<_, i64>(3)? != 0 {
                unindex.execute([row.get::<_, i64>(0)?])?;
            }
        }
    }
    conn.execute(&format!("DELETE FROM segments WHERE {condition}"), params)?;
    Ok(freed.into_iter().collect())
}

/// Merges runs of small, settled, adjacent segments of one run into larger ones. Returns bytes merged.
pub(crate) fn merge_small(conn: &Connection, now: u64) -> Result<usize, Error> {
    struct Small {
        id: i64,
        agent_id: String,
        run_id: i64,
        pos: i64,
        indexed: bool,
        marks: Vec<Mark>,
        bytes: Vec<u8>,
    }
    let settled = now.saturating_sub(SETTLE_MS) as i64;
    let mut smalls = vec![];
    {
        let mut statement = conn.prepare_cached(
            "SELECT id, agent_id, run_id, pos, indexed, t_first, marks, bytes FROM segments \
             WHERE len < ?1 AND t_last < ?2 ORDER BY agent_id, pos LIMIT 512",
        )?;
        let mut rows = statement.query(params![SMALL_SEGMENT as i64, settled])?;
        while let Some(row) = rows.next()? {
            let t_first: i64 = row.get(5)?;
            let encoded: Vec<u8> = row.get(6)?;
            let stored: Vec<u8> = row.get(7)?;
            let (Some(marks), Some(bytes)) = (
                marks::decode(&encoded, t_first as u64),
                codec::unpack(&stored),
            ) else {
                continue;
            };
            smalls.push(Small {
                id: row.get(0)?,
                agent_id: row.get(1)?,
                run_id: row.get(2)?,
                pos: row.get(3)?,
                indexed: row.get::<_, i64>(4)? != 0,
                marks,
                bytes,
            });
        }
    }
    // Group neighbours: same agent and run, contiguous positions, up to the segment size.
    let mut groups: Vec<Vec<Small>> = vec![];
    for small in smalls {
        let joins = groups.last().and_then(|g| g.last()).is_some_and(|last| {
            last.agent_id == small.agent_id
                && last.run_id == small.run_id
                && last.pos + last.bytes.len() as i64 == small.pos
        }) && groups.last().is_some_and(|g| {
            g.iter().map(|s| s.bytes.len()).sum::<usize>() + small.bytes.len() <= SEGMENT_MAX
        });
        if joins {
            groups.last_mut().expect("checked").push(small);
        } else {
            groups.push(vec![small]);
        }
    }
    let mut merged_bytes = 0;
    let tx = conn.unchecked_transaction()?;
    for group in groups.into_iter().filter(|g| g.len() > 1) {
        let mut bytes = vec![];
        let mut all_marks = vec![];
        for small in &group {
            bytes.extend_from_slice(&small.bytes);
            for mark in &small.marks {
                marks::push(&mut all_marks, *mark);
            }
            if small.indexed {
                tx.execute("DELETE FROM segments_fts WHERE rowid = ?1", [small.id])?;
            }
            tx.execute("DELETE FROM segments WHERE id = ?1", [small.id])?;
        }
        let segment = Segment {
            agent_id: Arc::from(group[0].agent_id.as_str()),
            run_id: group[0].run_id as u64,
            pos: group[0].pos as u64,
            bytes: Bytes::from(bytes),
            marks: all_marks,
        };
        insert_segment(&tx, &segment, Packing::Now)?;
        merged_bytes += segment.bytes.len();
    }
    tx.commit()?;
    Ok(merged_bytes)
}

/// Adds settled segments to the search index, up to a step's worth. Returns bytes indexed.
pub(crate) fn index_some(conn: &Connection, now: u64) -> Result<usize, Error> {
    let settled = now.saturating_sub(SETTLE_MS) as i64;
    let tx = conn.unchecked_transaction()?;
    let mut done = 0;
    {
        let mut select = tx.prepare_cached(
            "SELECT id, bytes FROM segments WHERE indexed = 0 AND (len >= ?1 OR t_last < ?2) \
             ORDER BY id LIMIT 64",
        )?;
        let mut insert =
            tx.prepare_cached("INSERT INTO segments_fts (rowid, text) VALUES (?1, ?2)")?;
        let mut mark = tx.prepare_cached("UPDATE segments SET indexed = 1 WHERE id = ?1")?;
        let mut rows = select.query(params![SMALL_SEGMENT as i64, settled])?;
        while done < MAINTENANCE_STEP_BYTES {
            let Some(row) = rows.next()? else { break };
            let id: i64 = row.get(0)?;
            let bytes = codec::unpack(&row.get::<_, Vec<u8>>(1)?).unwrap_or_default();
            insert.execute(params![id, readable_text(&bytes)])?;
            mark.execute([id])?;
            done += bytes.len().max(1);
        }
    }
    tx.commit()?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(pos: u64, text: &str) -> Segment {
        Segment {
            agent_id: Arc::from("ag-seg"),
            run_id: 1,
            pos,
            bytes: Bytes::from(text.to_owned()),
            marks: vec![Mark {
                stream: celistra_core::logtext::Stream::Stdout,
                len: text.len(),
                time_ms: 1_000,
            }],
        }
    }

    #[test]
    fn segments_stored_later_are_compressed_by_a_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::schema::open_writer(&dir.path().join("history.db")).unwrap();
        let text = "INFO request served in 12ms\n".repeat(2000);
        let segments = [segment(0, &text), segment(text.len() as u64, &text)];
        let sizes = write_segments(&mut conn, &segments, Packing::Later).unwrap();
        assert_eq!(sizes, vec![text.len() as u64 + 4; 2]);
        let deferred = |conn: &Connection| -> i64 {
            conn.query_row(
                "SELECT COUNT(*) FROM segments WHERE deferred = 1",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(deferred(&conn), 2);
        assert_eq!(compress_deferred(&conn).unwrap(), 2 * (text.len() + 4));
        assert_eq!(deferred(&conn), 0);
        assert_eq!(compress_deferred(&conn).unwrap(), 0, "nothing left to do");
        let mut rows = conn
            .prepare("SELECT len, stored, bytes FROM segments ORDER BY pos")
            .unwrap();
        let rows: Vec<(i64, i64, Vec<u8>)> = rows
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (len, stored, bytes) in rows {
            assert!(stored * 10 < len, "compressed: {stored} of {len}");
            assert_eq!(stored as usize, bytes.len());
            assert_eq!(codec::unpack(&bytes).unwrap(), text.as_bytes());
        }
    }
}
