//! Offline checks and portable forms: verifying an export bundle with only its own files, checking
//! proofs the API served, and the CSV export.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use crate::chain::{ChainCursor, check_lines};
use crate::digest::{Hash, hash_from_hex};
use crate::entry::Entry;
use crate::error::Tamper;
use crate::merkle::{MerkleTree, leaf_hash, verify_consistency_proof, verify_inclusion_proof};
use crate::note::Checkpoint;
use crate::store::{Verified, verify_checkpoint};

/// The entries of an export bundle, one JSON line each, in order.
pub const ENTRIES_FILE: &str = "entries.jsonl";
/// The bundle's signed checkpoint, covering exactly its entries.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// The bundle's verifier key text.
pub const PUBLIC_KEY_FILE: &str = "public.key";

/// Verifies an export bundle offline: the checkpoint's signature with the bundle's `public.key`,
/// the chain of `entries.jsonl`, and that the entries are exactly the ones the checkpoint covers.
/// Compare `public.key` with the key you trust to rule out a re-signed bundle. `progress` is called
/// now and then with the entries checked and the entries the checkpoint covers.
pub fn verify_bundle(dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Verified, Tamper> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| Tamper::general(format!("cannot read {}: {e}", dir.join(name).display())))
    };
    let checkpoint = verify_checkpoint(&read(CHECKPOINT_FILE)?, read(PUBLIC_KEY_FILE)?.trim_end())?;
    let path = dir.join(ENTRIES_FILE);
    let file = File::open(&path)
        .map_err(|e| Tamper::general(format!("cannot read {}: {e}", path.display())))?;
    let mut tree = MerkleTree::default();
    let count = check_lines(
        &mut BufReader::with_capacity(1 << 20, file),
        &mut ChainCursor::genesis(),
        u64::MAX,
        |_, leaf| {
            tree.push(leaf);
            Ok(())
        },
        &mut |checked, _| progress(checked, checkpoint.size),
    )?;
    if count < checkpoint.size {
        return Err(Tamper::at(
            count,
            format!(
                "the bundle has {count} entries but its checkpoint covers {}: entries from {count} on were removed",
                checkpoint.size
            ),
        ));
    }
    if count > checkpoint.size {
        return Err(Tamper::at(
            checkpoint.size,
            format!(
                "entries from {} on are not covered by the bundle's checkpoint ({count} entries, {} signed)",
                checkpoint.size, checkpoint.size
            ),
        ));
    }
    if tree.root(count) != Some(checkpoint.root) {
        return Err(Tamper::general(
            "the entries chain correctly but their Merkle root differs from the signed checkpoint's: the chain was rewritten",
        ));
    }
    Ok(Verified {
        entries: count,
        checkpoint: Some(checkpoint),
    })
}

fn parse_proof(proof: &[String]) -> Result<Vec<Hash>, Tamper> {
    proof
        .iter()
        .map(|hex| {
            hash_from_hex(hex).ok_or_else(|| {
                Tamper::general(format!("proof node {hex:?} is not 64 lowercase hex digits"))
            })
        })
        .collect()
}

/// Checks that `entry` (its hash recomputed from its content and its stated `prev_hash`) is leaf
/// `entry.seq` of the tree a verified checkpoint signed, using a proof from `inclusion_proof`.
pub fn verify_inclusion(
    entry: &Entry,
    proof: &[String],
    checkpoint: &Checkpoint,
) -> Result<(), Tamper> {
    let prev = hash_from_hex(&entry.prev_hash)
        .ok_or_else(|| Tamper::at(entry.seq, "prev_hash is not 64 lowercase hex digits"))?;
    let hash = entry.computed_hash(&prev);
    if hash_from_hex(&entry.hash) != Some(hash) {
        return Err(Tamper::at(
            entry.seq,
            "the entry's hash does not match its content",
        ));
    }
    if !verify_inclusion_proof(
        &leaf_hash(&hash),
        entry.seq,
        checkpoint.size,
        &parse_proof(proof)?,
        &checkpoint.root,
    ) {
        return Err(Tamper::at(
            entry.seq,
            format!(
                "the entry is not in the log the checkpoint of {} entries signed",
                checkpoint.size
            ),
        ));
    }
    Ok(())
}

/// Checks that the log `new` signed still contains the log `old` signed (a checkpoint seen
/// earlier), using a proof from `consistency_proof(old.size, new.size)`: a rollback or a rewritten
/// history fails.
pub fn verify_consistency(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &[String],
) -> Result<(), Tamper> {
    if new.size < old.size {
        return Err(Tamper::at(
            new.size,
            format!(
                "the log shrank from {} to {} entries: entries from {} on were removed or the log was rolled back",
                old.size, new.size, new.size
            ),
        ));
    }
    if !verify_consistency_proof(
        old.size,
        new.size,
        &old.root,
        &new.root,
        &parse_proof(proof)?,
    ) {
        return Err(Tamper::general(format!(
            "the log of {} entries does not extend the one of {} seen earlier: its history was rewritten",
            new.size, old.size
        )));
    }
    Ok(())
}

/// CSV columns, in order.
const CSV_HEADER: &str = "seq,time,time_ms,actor,action,target,body,prev_hash,hash\n";

/// Writes the entries of a JSON-lines log as CSV; lines that do not parse are skipped.
pub(crate) fn write_csv(log: &mut impl BufRead, out: &mut dyn Write) -> std::io::Result<u64> {
    out.write_all(CSV_HEADER.as_bytes())?;
    let mut rows = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        if log.read_until(b'\n', &mut line)? == 0 {
            return Ok(rows);
        }
        let Ok(entry) = serde_json::from_slice::<Entry>(&line) else {
            continue;
        };
        let fields = [
            entry.seq.to_string(),
            celistra_core::clock::format_rfc3339_ms(entry.time_ms),
            entry.time_ms.to_string(),
            entry.actor,
            entry.action,
            entry.target,
            entry.body.to_string(),
            entry.prev_hash,
            entry.hash,
        ];
        let row: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
        writeln!(out, "{}", row.join(","))?;
        rows += 1;
    }
}

/// RFC 4180 quoting, plus a leading `'` on text a spreadsheet would run as a formula.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) && text.parse::<f64>().is_err()
    {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("-12"), "-12");
        assert_eq!(
            csv_field("{\"a\":1,\"b\":2}"),
            "\"{\"\"a\"\":1,\"\"b\"\":2}\""
        );
    }
}
