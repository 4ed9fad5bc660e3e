//! Checks that the worked example in docs/audit-format.md is what this crate computes, so the
//! document an independent verifier is written from cannot drift from the code.

use serde_json::json;

use crate::digest::to_hex;
use crate::entry::{Entry, GENESIS_HASH, NewEntry, canonical_content, content_hash};
use crate::merkle::{MerkleTree, leaf_hash, node_hash};
use crate::note::{Checkpoint, NoteSigner};

const DOC: &str = include_str!("../../../docs/audit-format.md");

/// Every value of the worked example, in the order the document shows them.
fn example_values() -> Vec<String> {
    let first = NewEntry {
        actor: "ops".into(),
        action: "agent_spawn".into(),
        target: "ag-7x2k".into(),
        body: json!({"name": "web", "command": "./serve --port 8080", "env": {"API_TOKEN": "[redacted]"}, "restart": true}),
    };
    let second = NewEntry {
        actor: "system".into(),
        action: "agent_exit".into(),
        target: "ag-7x2k".into(),
        body: json!({"code": 0, "ratio": 0.5}),
    };
    let canonical = String::from_utf8(canonical_content(
        &first.actor,
        &first.action,
        &first.target,
        &first.body,
    ))
    .unwrap_or_default();
    let content = content_hash(&first.actor, &first.action, &first.target, &first.body);
    let mut chain_input = GENESIS_HASH.to_vec();
    chain_input.extend_from_slice(&0u64.to_be_bytes());
    chain_input.extend_from_slice(&1_750_000_000_000u64.to_be_bytes());
    chain_input.extend_from_slice(&content);
    let (entry0, hash0) = Entry::seal(first, 0, 1_750_000_000_000, &GENESIS_HASH);
    let (entry1, hash1) = Entry::seal(second, 1, 1_750_000_000_250, &hash0);
    let (leaf0, leaf1) = (leaf_hash(&hash0), leaf_hash(&hash1));
    let mut tree = MerkleTree::default();
    tree.push(leaf0);
    tree.push(leaf1);
    let root = tree.root(2).unwrap_or_default();
    assert_eq!(root, node_hash(&leaf0, &leaf1));
    let signer = NoteSigner::from_seed("celistra.example/audit", &[0x2a; 32]);
    let checkpoint = Checkpoint {
        origin: "celistra.example/audit".into(),
        size: 2,
        root,
        time_ms: 1_750_000_000_500,
    };
    vec![
        canonical,
        to_hex(&content),
        to_hex(&chain_input),
        to_hex(&hash0),
        serde_json::to_string(&entry0).unwrap_or_default(),
        serde_json::to_string(&entry1).unwrap_or_default(),
        to_hex(&leaf0),
        to_hex(&leaf1),
        to_hex(&root),
        signer.verifier_key(),
        signer.sign(&checkpoint.body()),
    ]
}

#[test]
fn the_documented_example_is_what_the_code_computes() {
    for value in example_values() {
        assert!(DOC.contains(&value), "docs/audit-format.md lacks:\n{value}");
    }
}
