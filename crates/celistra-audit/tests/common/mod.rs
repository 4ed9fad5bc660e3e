//! Helpers shared by the store and tamper tests: a log in a temporary directory, and line-level
//! edits of `audit.log` the way an attacker would make them.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use celistra_audit::{AuditLog, Entry, NewEntry, OpenReport, hash_from_hex, to_hex};
use serde_json::json;

pub const ORIGIN: &str = "celistra.test/audit";

pub fn open(dir: &Path) -> (AuditLog, OpenReport) {
    AuditLog::open(dir, ORIGIN).expect("open the audit log")
}

pub fn new_entry(i: u64) -> NewEntry {
    NewEntry {
        actor: if i.is_multiple_of(2) {
            "ops".into()
        } else {
            "system".into()
        },
        action: if i.is_multiple_of(3) {
            "agent_stop".into()
        } else {
            "agent_spawn".into()
        },
        target: format!("ag-{:04}", i % 7),
        body: json!({"i": i, "command": format!("run-{i}.sh"), "ratio": i as f64 / 3.0}),
    }
}

/// Appends `count` entries and makes them durable.
pub fn fill(log: &AuditLog, count: u64) {
    let start = log.tree_size();
    for i in start..start + count {
        log.append(new_entry(i));
    }
    log.sync().expect("sync");
}

pub fn lines(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("audit.log")).expect("read audit.log");
    text.lines().map(str::to_owned).collect()
}

pub fn write_lines(dir: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    std::fs::write(dir.join("audit.log"), text).expect("write audit.log");
}

pub fn parse(line: &str) -> Entry {
    serde_json::from_str(line).expect("an entry line")
}

pub fn render(entry: &Entry) -> String {
    serde_json::to_string(entry).expect("serialise")
}

/// Recomputes an entry's hash after an edit, as an attacker who knows the format would.
pub fn reseal(entry: &mut Entry) {
    let prev = hash_from_hex(&entry.prev_hash).expect("prev_hash");
    entry.hash = to_hex(&entry.computed_hash(&prev));
}

/// Rewrites the chain from `from` on so every entry links and hashes correctly again: the strongest
/// edit possible without the signing key.
pub fn rechain(lines: &mut [String], from: usize) {
    for index in from..lines.len() {
        let mut entry = parse(&lines[index]);
        entry.seq = index as u64;
        if index > 0 {
            entry.prev_hash = parse(&lines[index - 1]).hash;
        }
        reseal(&mut entry);
        lines[index] = render(&entry);
    }
}
