//! Checking the lines of a log, in order, against the hash chain: shared by opening the store
//! (which notes problems and carries on) and by verification (which stops at the first).
//!
//! What a line says about itself (parsing it, recomputing its hash) does not depend on its
//! neighbours, so lines are read in batches and those facts computed on every core; only the
//! linking, which is cheap, runs in order.

use std::io::BufRead;
use std::num::NonZeroUsize;

use crate::digest::{Hash, hash_from_hex};
use crate::entry::{EntryLine, GENESIS_HASH};
use crate::error::Tamper;
use crate::merkle::leaf_hash;

/// Lines per batch: enough to keep every core busy, small enough to stay in cache.
pub(crate) const BATCH_LINES: usize = 16384;

/// Where the chain stands before the next line: the position (which is the seq it must carry) and
/// the hash it must name as `prev_hash`.
#[derive(Debug, Clone)]
pub(crate) struct ChainCursor {
    pub(crate) next_seq: u64,
    pub(crate) prev_hash: Hash,
}

/// What a line says about itself.
pub(crate) enum LineFacts {
    Unparseable(String),
    BadHashes { time_ms: u64 },
    Parsed(ParsedLine),
}

pub(crate) struct ParsedLine {
    seq: u64,
    time_ms: u64,
    stored_hash: Hash,
    stored_prev: Hash,
    /// The hash the entry's fields call for, given its stated `prev_hash`.
    computed_hash: Hash,
    /// The Merkle leaf of the stored hash.
    leaf: Hash,
}

impl LineFacts {
    /// Parses one line (without its newline) and recomputes its hash.
    pub(crate) fn of(line: &[u8]) -> LineFacts {
        let entry: EntryLine<'_> = match serde_json::from_slice(line) {
            Ok(entry) => entry,
            Err(e) => return LineFacts::Unparseable(e.to_string()),
        };
        let (Some(stored_hash), Some(stored_prev)) =
            (hash_from_hex(&entry.hash), hash_from_hex(&entry.prev_hash))
        else {
            return LineFacts::BadHashes {
                time_ms: entry.time_ms,
            };
        };
        LineFacts::Parsed(ParsedLine {
            seq: entry.seq,
            time_ms: entry.time_ms,
            stored_hash,
            stored_prev,
            computed_hash: entry.computed_hash(&stored_prev),
            leaf: leaf_hash(&stored_hash),
        })
    }
}

/// What one line turned out to be, in its place in the chain.
pub(crate) struct LineVerdict {
    /// The Merkle leaf of the hash the line states (of zeros when it states none).
    pub(crate) leaf: Hash,
    pub(crate) time_ms: u64,
    pub(crate) problem: Option<Tamper>,
}

impl ChainCursor {
    pub(crate) fn genesis() -> ChainCursor {
        ChainCursor {
            next_seq: 0,
            prev_hash: GENESIS_HASH,
        }
    }

    /// Judges the line at position `next_seq` and moves past it whatever it holds, so the lines
    /// after a bad one are judged on their own.
    pub(crate) fn advance(&mut self, facts: &LineFacts) -> LineVerdict {
        let position = self.next_seq;
        self.next_seq += 1;
        let line = match facts {
            LineFacts::Parsed(line) => line,
            LineFacts::Unparseable(e) => {
                return self.broken(
                    position,
                    0,
                    format!("line {} is not an audit entry ({e})", position + 1),
                );
            }
            LineFacts::BadHashes { time_ms } => {
                return self.broken(
                    position,
                    *time_ms,
                    "hash or prev_hash is not 64 lowercase hex digits".into(),
                );
            }
        };
        let expected_prev = std::mem::replace(&mut self.prev_hash, line.stored_hash);
        LineVerdict {
            leaf: line.leaf,
            time_ms: line.time_ms,
            problem: judge(position, line, &expected_prev),
        }
    }
}

impl ChainCursor {
    /// A line without a usable hash: the next line is judged against zeros.
    fn broken(&mut self, position: u64, time_ms: u64, what: String) -> LineVerdict {
        self.prev_hash = [0; 32];
        LineVerdict {
            leaf: leaf_hash(&[0; 32]),
            time_ms,
            problem: Some(Tamper::at(position, what)),
        }
    }
}

fn judge(position: u64, line: &ParsedLine, expected_prev: &Hash) -> Option<Tamper> {
    if line.seq != position {
        // The entry just before holds this seq too: that one (or this one) was slipped in.
        if line.seq + 1 == position {
            return Some(Tamper::at(
                line.seq,
                format!(
                    "seq {} appears twice (lines {} and {}): an entry was inserted or duplicated",
                    line.seq,
                    position,
                    position + 1
                ),
            ));
        }
        return Some(Tamper::at(
            position,
            format!(
                "line {} holds seq {}, where seq {position} belongs: an entry was removed or the entries were reordered",
                position + 1,
                line.seq
            ),
        ));
    }
    if line.computed_hash != line.stored_hash {
        return Some(Tamper::at(
            position,
            "the entry's content, time or seq was changed: its hash does not match them",
        ));
    }
    if line.stored_prev != *expected_prev {
        // This entry is intact, so it still records the hash the previous entry had when it was
        // written: the previous entry was rewritten, hash and all.
        return Some(match position.checked_sub(1) {
            Some(previous) => Tamper::at(
                previous,
                format!(
                    "the entry was rewritten: entry {position} records a different hash for it"
                ),
            ),
            None => Tamper::at(0, "the first entry's prev_hash is not 64 zeros"),
        });
    }
    None
}

/// Complete lines read from a log, and the length of an incomplete last line if the input ended
/// in one.
#[derive(Default)]
pub(crate) struct LineBatch {
    bytes: Vec<u8>,
    /// Each line's range in `bytes`, without its newline.
    lines: Vec<(usize, usize)>,
    pub(crate) partial: Option<u64>,
}

impl LineBatch {
    /// Reads up to `max_lines` complete lines, replacing the batch's contents.
    pub(crate) fn read(
        &mut self,
        reader: &mut impl BufRead,
        max_lines: usize,
    ) -> std::io::Result<()> {
        self.bytes.clear();
        self.lines.clear();
        self.partial = None;
        while self.lines.len() < max_lines {
            let start = self.bytes.len();
            if reader.read_until(b'\n', &mut self.bytes)? == 0 {
                break;
            }
            if self.bytes.last() != Some(&b'\n') {
                self.partial = Some((self.bytes.len() - start) as u64);
                break;
            }
            self.lines.push((start, self.bytes.len() - 1));
        }
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Each line's length on disk, newline included.
    pub(crate) fn line_len(&self, index: usize) -> u64 {
        let (start, end) = self.lines[index];
        (end - start + 1) as u64
    }

    /// Every line's facts, computed on all cores.
    pub(crate) fn facts(&self) -> Vec<LineFacts> {
        let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let per_thread = self.lines.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .lines
                .chunks(per_thread)
                .map(|chunk| {
                    let worker = scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|&(start, end)| LineFacts::of(&self.bytes[start..end]))
                            .collect::<Vec<_>>()
                    });
                    (chunk.len(), worker)
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|(lines, worker)| {
                    // Parsing and hashing do not panic on any input; if a worker did anyway, its
                    // lines count as unchecked rather than vanish.
                    worker.join().unwrap_or_else(|_| {
                        (0..lines)
                            .map(|_| LineFacts::Unparseable("the checking thread failed".into()))
                            .collect()
                    })
                })
                .collect()
        })
    }
}

/// Checks up to `limit` lines from `reader`, handing each line's seq and Merkle leaf to `on_leaf`,
/// and stops at the first problem. Returns the number of lines checked: fewer than `limit` when the
/// input ended first. A last line without its newline is a problem (it was never completely written).
pub(crate) fn check_lines(
    reader: &mut impl BufRead,
    cursor: &mut ChainCursor,
    limit: u64,
    mut on_leaf: impl FnMut(u64, Hash) -> Result<(), Tamper>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, Tamper> {
    // About 1/128 of the work per call: smooth enough for a progress bar, rare enough to be free.
    let progress_every = (limit / 128).clamp(1024, 1 << 16);
    let mut batch = LineBatch::default();
    let mut checked = 0;
    while checked < limit {
        let wanted = usize::try_from(limit - checked)
            .unwrap_or(usize::MAX)
            .min(BATCH_LINES);
        batch
            .read(reader, wanted)
            .map_err(|e| Tamper::general(format!("cannot read the log: {e}")))?;
        for facts in batch.facts() {
            let seq = cursor.next_seq;
            let verdict = cursor.advance(&facts);
            if let Some(problem) = verdict.problem {
                return Err(problem);
            }
            on_leaf(seq, verdict.leaf)?;
            checked += 1;
            if checked % progress_every == 0 {
                progress(checked, limit);
            }
        }
        if batch.partial.is_some() {
            let seq = cursor.next_seq;
            return Err(Tamper::at(
                seq,
                format!(
                    "line {} is incomplete (no newline): it was cut short",
                    seq + 1
                ),
            ));
        }
        if batch.len() < wanted {
            break;
        }
    }
    progress(checked, limit);
    Ok(checked)
}
