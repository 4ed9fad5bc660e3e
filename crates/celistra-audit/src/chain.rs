//! Checking the lines of a log, in order, against the hash chain: shared by opening the store
//! (which notes problems and carries on) and by verification (which stops at the first).

use std::io::BufRead;

use crate::digest::{Hash, hash_from_hex};
use crate::entry::{Entry, GENESIS_HASH};
use crate::error::Tamper;
use crate::merkle::leaf_hash;

/// Where the chain stands before the next line: the position (which is the seq it must carry) and
/// the hash it must name as `prev_hash`.
#[derive(Debug, Clone)]
pub(crate) struct ChainCursor {
    pub(crate) next_seq: u64,
    pub(crate) prev_hash: Hash,
}

/// What one line turned out to be.
pub(crate) struct LineVerdict {
    /// The hash the line states (zeros when it has none), which is what the next line chains to and
    /// what the Merkle leaf is made of.
    pub(crate) hash: Hash,
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

    /// Checks the line at position `next_seq` (without its newline) and moves past it whatever it
    /// holds, so the lines after a bad one are judged on their own.
    pub(crate) fn advance(&mut self, line: &[u8]) -> LineVerdict {
        let position = self.next_seq;
        self.next_seq += 1;
        let entry: Entry = match serde_json::from_slice(line) {
            Ok(entry) => entry,
            Err(e) => {
                self.prev_hash = [0; 32];
                return LineVerdict {
                    hash: [0; 32],
                    time_ms: 0,
                    problem: Some(Tamper::at(
                        position,
                        format!("line {} is not an audit entry ({e})", position + 1),
                    )),
                };
            }
        };
        let (Some(stored_hash), Some(stored_prev)) =
            (hash_from_hex(&entry.hash), hash_from_hex(&entry.prev_hash))
        else {
            self.prev_hash = [0; 32];
            return LineVerdict {
                hash: [0; 32],
                time_ms: entry.time_ms,
                problem: Some(Tamper::at(
                    position,
                    "hash or prev_hash is not 64 lowercase hex digits",
                )),
            };
        };
        let expected_prev = std::mem::replace(&mut self.prev_hash, stored_hash);
        let problem = Self::judge(position, &entry, &stored_hash, &stored_prev, &expected_prev);
        LineVerdict {
            hash: stored_hash,
            time_ms: entry.time_ms,
            problem,
        }
    }

    fn judge(
        position: u64,
        entry: &Entry,
        stored_hash: &Hash,
        stored_prev: &Hash,
        expected_prev: &Hash,
    ) -> Option<Tamper> {
        if entry.seq != position {
            // The entry just before holds this seq too: that one (or this one) was slipped in.
            if entry.seq + 1 == position {
                return Some(Tamper::at(
                    entry.seq,
                    format!(
                        "seq {} appears twice (lines {} and {}): an entry was inserted or duplicated",
                        entry.seq,
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
                    entry.seq
                ),
            ));
        }
        if entry.computed_hash(stored_prev) != *stored_hash {
            return Some(Tamper::at(
                position,
                "the entry's content, time or seq was changed: its hash does not match them",
            ));
        }
        if stored_prev != expected_prev {
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
    let mut line = Vec::with_capacity(512);
    let mut checked = 0;
    while checked < limit {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Tamper::general(format!("cannot read the log: {e}")))?;
        if read == 0 {
            break;
        }
        let seq = cursor.next_seq;
        let Some(content) = line.strip_suffix(b"\n") else {
            return Err(Tamper::at(
                seq,
                format!(
                    "line {} is incomplete (no newline): it was cut short",
                    seq + 1
                ),
            ));
        };
        let verdict = cursor.advance(content);
        if let Some(problem) = verdict.problem {
            return Err(problem);
        }
        on_leaf(seq, leaf_hash(&verdict.hash))?;
        checked += 1;
        if checked % progress_every == 0 {
            progress(checked, limit);
        }
    }
    progress(checked, limit);
    Ok(checked)
}
