//! `ctl audit`: query the audit log, verify it (here, not by trusting the daemon), export a
//! bundle, sign a checkpoint, prove an entry's inclusion; and `celistrad audit verify DIR`, which
//! checks an exported bundle offline.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use celistra_client::{Client, next_chunk};
use celistra_proto::{
    AuditBundle, AuditCheckpoint, AuditExportFormat, AuditPage, AuditProof, AuditQuery,
    ExportQuery, ProofQuery,
};
use clap::{Args, Subcommand};

use super::table::render;
use super::{CtlResult, Failure, print_json};

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List entries, newest first (filters combine).
    Ls(LsArgs),
    /// Verify the whole log here: every hash of the chain, the Merkle root against a fresh signed
    /// checkpoint, and consistency with the checkpoint this command saw last time (so a log rolled
    /// back to an older copy, or signed by another key, is caught).
    Verify(VerifyArgs),
    /// Write a self-contained bundle: DIR/entries.jsonl, DIR/checkpoint, DIR/public.key
    /// (`celistrad audit verify DIR` checks it offline); or CSV with --format csv.
    Export(ExportArgs),
    /// Sign and print a checkpoint of the log as it is now.
    Checkpoint,
    /// Print and check the proof that entry SEQ is in the log's current tree.
    Prove(ProveArgs),
}

#[derive(Debug, Args)]
struct LsArgs {
    /// Only entries since a time: a duration ago (30m, 2h, 7d) or a time (2026-11-23T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only entries until a time, in the same forms.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only this actor (`machine-secret`, `system`, `unauthenticated`, …).
    #[arg(long)]
    actor: Option<String>,
    /// Only this action (`agent_spawned`, `sandbox_block`, `auth_failed`, …).
    #[arg(long)]
    action: Option<String>,
    /// Only entries about this agent id.
    #[arg(long)]
    agent: Option<String>,
    /// Only entries containing this text.
    #[arg(long)]
    text: Option<String>,
    /// Entries after this sequence number (the next page).
    #[arg(long, value_name = "SEQ")]
    after: Option<u64>,
    /// Page size (at most 1000).
    #[arg(long, short = 'n', default_value_t = 100)]
    limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Where this client keeps the last checkpoint it verified [default:
    /// ~/.local/state/celistra/audit-<machine id>.checkpoint]; keep it off the daemon's machine to
    /// catch a root that rewrites both.
    #[arg(long, value_name = "FILE")]
    seen: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Directory to write the bundle (or the CSV file's directory with --format csv).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// `bundle` (default) or `csv` (DIR/audit.csv).
    #[arg(long, default_value = "bundle")]
    format: String,
}

#[derive(Debug, Args)]
struct ProveArgs {
    /// The entry's sequence number.
    seq: u64,
    /// Print JSON (`seq`, `tree_size`, `proof`, `checkpoint`) instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(client: &Client, args: AuditArgs) -> CtlResult {
    match args.action {
        Action::Ls(args) => list(client, args).await,
        Action::Verify(args) => verify(client, args).await,
        Action::Export(args) => export(client, args).await,
        Action::Checkpoint => {
            let checkpoint: AuditCheckpoint = client.sign_audit_checkpoint().await?;
            print!("{}", checkpoint.checkpoint);
            Ok(())
        }
        Action::Prove(args) => prove(client, args).await,
    }
}

async fn list(client: &Client, args: LsArgs) -> CtlResult {
    let query = AuditQuery {
        since: args.since,
        until: args.until,
        actor: args.actor,
        action: args.action,
        agent: args.agent,
        text: args.text,
        after: args.after,
        limit: Some(args.limit),
    };
    let page: AuditPage = client.list_audit(&query).await?;
    if args.json {
        print_json(&page);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            let mut body = e.body.to_string();
            if body.len() > 80 {
                let cut = (0..=77)
                    .rev()
                    .find(|i| body.is_char_boundary(*i))
                    .unwrap_or(0);
                body.truncate(cut);
                body.push('…');
            }
            vec![
                e.seq.to_string(),
                celistra_core::clock::format_rfc3339_ms(e.time_ms),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                body,
            ]
        })
        .collect();
    println!(
        "{}",
        render(&["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "BODY"], &rows)
    );
    if let Some(next) = page.next_after {
        eprintln!("more: --after {next}");
    }
    Ok(())
}

fn write_bundle(dir: &Path, bundle: &AuditBundle) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Failed(format!("cannot create {}: {e}", dir.display())))?;
    for (name, content) in [
        ("entries.jsonl", &bundle.entries_jsonl),
        ("checkpoint", &bundle.checkpoint),
        ("public.key", &bundle.public_key),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, content)
            .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

async fn export(client: &Client, args: ExportArgs) -> CtlResult {
    match args.format.as_str() {
        "bundle" => {
            let bundle: AuditBundle = client.get_audit_bundle().await?;
            write_bundle(&args.out, &bundle)?;
            println!(
                "wrote {} (check it with `celistrad audit verify {}`)",
                args.out.display(),
                args.out.display()
            );
            Ok(())
        }
        "csv" => {
            let query = ExportQuery {
                format: AuditExportFormat::Csv,
            };
            let mut body = client.export_audit(&query).await?;
            let mut csv = Vec::new();
            while let Some(chunk) = next_chunk(&mut body).await? {
                csv.extend_from_slice(&chunk);
            }
            std::fs::create_dir_all(&args.out)
                .map_err(|e| Failure::Failed(format!("{}: {e}", args.out.display())))?;
            let path = args.out.join("audit.csv");
            std::fs::write(&path, csv)
                .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", path.display())))?;
            println!("wrote {}", path.display());
            Ok(())
        }
        other => Err(Failure::Usage(format!(
            "unknown format `{other}`; use bundle or csv"
        ))),
    }
}

/// Prints verification progress on a terminal.
fn progress(done: u64, total: u64) {
    if std::io::stderr().is_terminal()
        && total > 10_000
        && (done.is_multiple_of(10_000) || done == total)
    {
        let percent = done * 100 / total.max(1);
        eprint!("\rverifying: {done}/{total} entries ({percent}%)");
        if done == total {
            eprintln!();
        }
    }
}

async fn verify(client: &Client, args: VerifyArgs) -> CtlResult {
    let bundle: AuditBundle = client.get_audit_bundle().await?;
    let dir = tempfile::tempdir()
        .map_err(|e| Failure::Failed(format!("cannot create a temporary directory: {e}")))?;
    write_bundle(dir.path(), &bundle)?;
    let verified = celistra_audit::verify_bundle(dir.path(), &mut progress)
        .map_err(|tamper| Failure::Failed(format!("the audit log is altered: {tamper}")))?;
    let checkpoint = celistra_audit::verify_checkpoint(&bundle.checkpoint, &bundle.public_key)
        .map_err(|tamper| Failure::Failed(format!("the audit log is altered: {tamper}")))?;
    let health: celistra_proto::Health = client.get_health().await?;
    let seen = match args.seen {
        Some(path) => path,
        None => default_seen_file(&health.machine_id)?,
    };
    check_against_seen(client, &seen, &bundle, &checkpoint).await?;
    save_seen(&seen, &bundle)?;
    println!(
        "ok: {} entries; chain, Merkle root and signed checkpoint verified, consistent with the \
         checkpoint seen before",
        verified.entries
    );
    Ok(())
}

fn default_seen_file(machine_id: &str) -> Result<PathBuf, Failure> {
    let home = std::env::var_os("HOME")
        .ok_or_else(|| Failure::Usage("$HOME is not set; pass --seen FILE".into()))?;
    Ok(PathBuf::from(home)
        .join(".local/state/celistra")
        .join(format!("audit-{machine_id}.checkpoint")))
}

/// The log must extend the checkpoint this client verified last time, signed by the same key.
async fn check_against_seen(
    client: &Client,
    seen: &Path,
    bundle: &AuditBundle,
    new: &celistra_audit::Checkpoint,
) -> CtlResult {
    let Ok(saved) = std::fs::read_to_string(seen) else {
        return Ok(());
    };
    let Some((old_checkpoint, old_key)) = saved.split_once("\n\n=== key\n") else {
        return Err(Failure::Failed(format!(
            "{} is not a saved checkpoint; remove it to start afresh",
            seen.display()
        )));
    };
    if old_key.trim() != bundle.public_key.trim() {
        return Err(Failure::Failed(format!(
            "the audit log is altered: it is now signed by another key ({}) than the one seen \
             before ({})",
            bundle.public_key.trim(),
            old_key.trim()
        )));
    }
    let old = celistra_audit::verify_checkpoint(old_checkpoint, old_key)
        .map_err(|tamper| Failure::Failed(format!("{}: {tamper}", seen.display())))?;
    let altered = |tamper: celistra_audit::Tamper| {
        Failure::Failed(format!(
            "the audit log is altered: it does not extend the checkpoint seen before ({tamper})"
        ))
    };
    if old.size > new.size {
        return Err(altered(
            celistra_audit::verify_consistency(&old, new, &[]).unwrap_err(),
        ));
    }
    let query = ProofQuery {
        seq: None,
        old_size: Some(old.size),
        tree_size: new.size,
    };
    let proof: AuditProof = client.get_audit_proof(&query).await?;
    celistra_audit::verify_consistency(&old, new, &proof.proof).map_err(altered)
}

fn save_seen(seen: &Path, bundle: &AuditBundle) -> CtlResult {
    if let Some(dir) = seen.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(
        seen,
        format!("{}\n\n=== key\n{}", bundle.checkpoint, bundle.public_key),
    )
    .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", seen.display())))
}

async fn prove(client: &Client, args: ProveArgs) -> CtlResult {
    let seq = args.seq;
    let checkpoint: AuditCheckpoint = client.sign_audit_checkpoint().await?;
    let signed = celistra_audit::verify_checkpoint(&checkpoint.checkpoint, &checkpoint.public_key)
        .map_err(|tamper| Failure::Failed(tamper.to_string()))?;
    let query = ProofQuery {
        seq: Some(seq),
        old_size: None,
        tree_size: signed.size,
    };
    let proof: AuditProof = client.get_audit_proof(&query).await?;
    // Listing is newest first: the page after `seq + 1` starts with `seq`.
    let query = AuditQuery {
        after: Some(seq + 1),
        limit: Some(1),
        ..AuditQuery::default()
    };
    let page: AuditPage = client.list_audit(&query).await?;
    let entry = page
        .entries
        .into_iter()
        .find(|e| e.seq == seq)
        .ok_or_else(|| Failure::Failed(format!("no audit entry {seq}")))?;
    let entry: celistra_audit::Entry = serde_json::to_value(&entry)
        .and_then(serde_json::from_value)
        .map_err(|e| Failure::Failed(format!("entry {seq}: {e}")))?;
    celistra_audit::verify_inclusion(&entry, &proof.proof, &signed)
        .map_err(|tamper| Failure::Failed(format!("entry {seq} is not in the log: {tamper}")))?;
    if args.json {
        print_json(&serde_json::json!({
            "seq": seq,
            "tree_size": signed.size,
            "proof": proof.proof,
            "checkpoint": checkpoint.checkpoint,
        }));
        return Ok(());
    }
    println!(
        "entry {seq} is in the signed tree of {} entries (proof of {} hashes checked)",
        signed.size,
        proof.proof.len()
    );
    for hash in &proof.proof {
        println!("  {hash}");
    }
    Ok(())
}

/// `celistrad audit verify DIR`: checks an exported bundle with nothing but its files.
pub(crate) fn verify_offline(dir: &Path) -> std::process::ExitCode {
    match celistra_audit::verify_bundle(dir, &mut progress) {
        Ok(verified) => {
            println!(
                "ok: {} entries; chain, Merkle root and signed checkpoint verified with {}",
                verified.entries,
                dir.join("public.key").display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(tamper) => {
            eprintln!("error: the bundle is altered: {tamper}");
            std::process::ExitCode::FAILURE
        }
    }
}
