//! `AuditLog`: the audit log in the daemon's state directory (`audit.log`, `audit.key`,
//! `audit.pub`, `audit.checkpoint`), with appends that never wait for the disk, proofs served from
//! the in-memory tree, queries, checkpoints and verification of the file against both.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::broadcast;

use crate::chain::{BATCH_LINES, ChainCursor, LineBatch, LineFacts, check_lines};
use crate::digest::to_hex;
use crate::entry::{Entry, NewEntry};
use crate::error::{Error, Tamper};
use crate::merkle::{MerkleTree, leaf_hash};
use crate::note::{Checkpoint, NoteSigner, NoteVerifier, valid_key_name};
use crate::query::{Page, Query};
use crate::writer::{WriteQueue, lock};

pub(crate) const LOG_FILE: &str = "audit.log";
const KEY_FILE: &str = "audit.key";
const PUBLIC_KEY_FILE: &str = "audit.pub";
const CHECKPOINT_FILE: &str = "audit.checkpoint";
/// Live-tail entries a slow subscriber may fall behind by before it sees `Lagged`.
const LIVE_CAPACITY: usize = 1024;
/// Entries read per step of a newest-first scan.
const QUERY_WINDOW: u64 = 512;

/// What opening the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Entries in the log after opening (a cut tail removed, its `audit_log_truncated` record added).
    pub entries: u64,
    /// Bytes cut from the end of `audit.log` (a torn last write), if any.
    pub truncated_bytes: Option<u64>,
    /// The first inconsistency found in the log or the checkpoint. The log was left as it is and
    /// `verify` reports it too.
    pub problem: Option<Tamper>,
    /// Whether a new signing key was generated (first start, or `audit.key` was missing).
    pub key_created: bool,
}

/// The outcome of a verification that found nothing wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries checked against the chain (from seq 0, or from `from_seq` for an incremental check).
    pub entries: u64,
    /// The signed checkpoint the Merkle root was checked against; entries after its size are
    /// chained but not yet covered by a signature. `None` when no checkpoint has been signed yet.
    pub checkpoint: Option<Checkpoint>,
}

/// What `export` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub entries: u64,
    /// Size of `entries.jsonl`.
    pub bytes: u64,
    pub checkpoint: Checkpoint,
}

/// The chain's head and everything derived from the lines so far, changed under one lock.
struct ChainState {
    cursor: ChainCursor,
    last_time_ms: u64,
    tree: MerkleTree,
    /// Byte offset of each line; a line ends where the next starts, the last at `end`.
    line_starts: Vec<u64>,
    end: u64,
}

impl ChainState {
    fn line_range(&self, lo: u64, hi: u64) -> (u64, u64) {
        let offset = |seq: u64| {
            self.line_starts
                .get(seq as usize)
                .copied()
                .unwrap_or(self.end)
        };
        (offset(lo), offset(hi))
    }
}

/// The latest checkpoint, and whether signing is refused because the stored one does not fit.
struct Signing {
    latest: Option<Checkpoint>,
    latest_note: Option<String>,
    /// Why the stored checkpoint does not fit the log or the key; signing is refused until an
    /// operator moves it aside.
    blocked: Option<Tamper>,
}

/// The tamper-evident audit log. Share it behind an `Arc`; every method takes `&self`.
pub struct AuditLog {
    dir: PathBuf,
    origin: String,
    signer: NoteSigner,
    verifier: NoteVerifier,
    chain: Mutex<ChainState>,
    writes: Arc<WriteQueue>,
    /// `Arc`s: the 1024 slots are made up front, 40 bytes each rather than an entry's 190.
    live: broadcast::Sender<Arc<Entry>>,
    signing: Mutex<Signing>,
    reader: File,
    writer: Option<JoinHandle<()>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, signing checkpoints as `origin` (a key name: no spaces,
    /// no `+`; the same on every start). A torn last line is cut and the cut recorded; any other
    /// inconsistency is left in place and reported in [`OpenReport::problem`] and by `verify`.
    pub fn open(dir: &Path, origin: &str) -> Result<(AuditLog, OpenReport), Error> {
        if !valid_key_name(origin) {
            return Err(Error::BadOrigin(origin.to_owned()));
        }
        fs::create_dir_all(dir).map_err(|e| Error::io_at("create", dir, e))?;
        let (signer, key_created) = load_or_create_key(dir, origin)?;
        let verifier_text = signer.verifier_key();
        let verifier = NoteVerifier::parse(&verifier_text).map_err(|reason| Error::BadKey {
            path: dir.join(KEY_FILE).display().to_string(),
            reason,
        })?;
        write_if_changed(&dir.join(PUBLIC_KEY_FILE), &format!("{verifier_text}\n"))?;
        let mut signing = load_checkpoint(dir, &verifier)?;

        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io_at("open", &path, e))?;
        let signed_size = signing.latest.as_ref().map_or(0, |c| c.size);
        let scan = scan_log(&file, signed_size).map_err(|e| Error::io_at("read", &path, e))?;
        let mut problem = scan.problem.or_else(|| signing.blocked.clone());
        if let Some(cut) = &scan.cut {
            file.set_len(scan.state.end)
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io_at("truncate", &path, e))?;
            tracing::warn!(
                "cut {} bytes from the end of {}: {}",
                cut.bytes,
                path.display(),
                cut.reason
            );
        }
        if let Some(latest) = &signing.latest {
            let mismatch = consistency_problem(&scan.state.tree, latest);
            if let Some(mismatch) = mismatch {
                signing.blocked.get_or_insert_with(|| mismatch.clone());
                problem.get_or_insert(mismatch);
            }
        }

        let entries = scan.state.cursor.next_seq;
        let writes = Arc::new(WriteQueue::starting_at(entries));
        let writer_file = file
            .try_clone()
            .map_err(|e| Error::io_at("open", &path, e))?;
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn({
                let writes = writes.clone();
                let end = scan.state.end;
                move || writes.run_writer(writer_file, end)
            })
            .map_err(|e| Error::io("start the audit log writer thread", e))?;
        let log = AuditLog {
            dir: dir.to_owned(),
            origin: origin.to_owned(),
            signer,
            verifier,
            chain: Mutex::new(scan.state),
            writes,
            live: broadcast::channel(LIVE_CAPACITY).0,
            signing: Mutex::new(signing),
            reader: file,
            writer: Some(writer),
        };
        if let Some(cut) = &scan.cut {
            log.append(NewEntry {
                actor: "system".into(),
                action: "audit_log_truncated".into(),
                target: LOG_FILE.into(),
                body: json!({"bytes": cut.bytes, "reason": cut.reason}),
            });
        }
        let report = OpenReport {
            entries: log.tree_size(),
            truncated_bytes: scan.cut.map(|cut| cut.bytes),
            problem,
            key_created,
        };
        Ok((log, report))
    }

    /// Appends an entry and returns its seq. Assigns the time (never earlier than the previous
    /// entry's) and the hashes, queues the line for the writer thread and the live tail, and
    /// returns without waiting for the disk; [`AuditLog::sync`] waits.
    pub fn append(&self, entry: NewEntry) -> u64 {
        let mut chain = lock(&self.chain);
        let seq = chain.cursor.next_seq;
        let time_ms = now_ms().max(chain.last_time_ms);
        let (entry, hash) = Entry::seal(entry, seq, time_ms, &chain.cursor.prev_hash);
        let mut line =
            serde_json::to_vec(&entry).expect("strings and JSON values always serialise");
        line.push(b'\n');
        chain.cursor = ChainCursor {
            next_seq: seq + 1,
            prev_hash: hash,
        };
        chain.last_time_ms = time_ms;
        chain.tree.push(leaf_hash(&hash));
        let start = chain.end;
        chain.line_starts.push(start);
        chain.end += line.len() as u64;
        self.writes.push(&line, seq + 1);
        // Sent under the chain lock so subscribers see entries in seq order.
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(Arc::new(entry));
        }
        seq
    }

    /// Blocks until every entry appended before the call is written and fdatasync'd.
    pub fn sync(&self) -> Result<(), Error> {
        self.sync_count().map(drop)
    }

    /// Like `sync`, returning how many entries are durable.
    fn sync_count(&self) -> Result<u64, Error> {
        let target = lock(&self.chain).cursor.next_seq;
        self.writes
            .wait_durable(target)
            .map_err(Error::WriterFailed)
    }

    /// Entries on disk, after waiting for those appended so far unless the writer is failing.
    fn written_count(&self) -> u64 {
        self.sync_count()
            .unwrap_or_else(|_| lock(&self.writes.durable).entries)
    }

    /// Entries appended from now on, in seq order. A receiver that falls more than 1024 entries
    /// behind gets `Lagged` and can catch up with [`AuditLog::query`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Entry>> {
        self.live.subscribe()
    }

    /// Lists entries, newest first (see [`Query`]). Entries that do not parse are skipped here;
    /// `verify` reports them.
    pub fn query(&self, query: &Query) -> Result<Page, Error> {
        let visible = self.written_count();
        let limit = query.page_size();
        let needle = query.text.as_ref().map(|text| text.to_lowercase());
        let mut entries = Vec::new();
        let mut hi = query.after_seq.map_or(visible, |after| after.min(visible));
        let mut buffer = Vec::new();
        while hi > 0 {
            let lo = hi.saturating_sub(QUERY_WINDOW);
            let (start, end) = lock(&self.chain).line_range(lo, hi);
            buffer.resize((end - start) as usize, 0);
            self.reader
                .read_exact_at(&mut buffer, start)
                .map_err(|e| Error::io_at("read", &self.dir.join(LOG_FILE), e))?;
            for line in buffer
                .split(|&b| b == b'\n')
                .rev()
                .filter(|line| !line.is_empty())
            {
                let Ok(entry) = serde_json::from_slice::<Entry>(line) else {
                    continue;
                };
                if query.is_before_range(&entry) {
                    return Ok(Page {
                        entries,
                        next: None,
                    });
                }
                if query.matches(&entry, needle.as_deref()) {
                    let seq = entry.seq;
                    entries.push(entry);
                    if entries.len() == limit {
                        return Ok(Page {
                            entries,
                            next: (seq > 0).then_some(seq),
                        });
                    }
                }
            }
            hi = lo;
        }
        Ok(Page {
            entries,
            next: None,
        })
    }

    /// Entries appended so far (the Merkle tree's size; the next entry's seq).
    pub fn tree_size(&self) -> u64 {
        lock(&self.chain).cursor.next_seq
    }

    /// Signs a checkpoint of everything appended so far (after making it durable), keeps it as
    /// `audit.checkpoint` and returns the signed note. Refuses when the log no longer contains the
    /// previous checkpoint's tree: signing over it would hide the damage.
    pub fn checkpoint(&self) -> Result<String, Error> {
        let mut signing = lock(&self.signing);
        if let Some(problem) = &signing.blocked {
            return Err(Error::Inconsistent(format!(
                "{problem}. Run `celistrad ctl audit verify`; once the damage is understood, move {} aside to sign afresh",
                self.dir.join(CHECKPOINT_FILE).display()
            )));
        }
        let size = self.sync_count()?;
        let root = {
            let chain = lock(&self.chain);
            if let Some(problem) = signing
                .latest
                .as_ref()
                .and_then(|latest| consistency_problem(&chain.tree, latest))
            {
                return Err(Error::Inconsistent(problem.to_string()));
            }
            chain.tree.root(size).unwrap_or_default()
        };
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
            time_ms: now_ms(),
        };
        let note = self.signer.sign(&checkpoint.body());
        write_atomically(&self.dir.join(CHECKPOINT_FILE), note.as_bytes(), 0o644)?;
        signing.latest = Some(checkpoint);
        signing.latest_note = Some(note.clone());
        Ok(note)
    }

    /// The audit path (hex hashes, nearest the leaf first) of entry `seq` in the tree of the first
    /// `tree_size` entries.
    pub fn inclusion_proof(&self, seq: u64, tree_size: u64) -> Result<Vec<String>, Error> {
        let chain = lock(&self.chain);
        let proof = chain.tree.inclusion_proof(seq, tree_size).ok_or_else(|| {
            Error::OutOfRange(format!("no inclusion proof for entry {seq} in a tree of {tree_size}: the entry must be below the tree size, and the log has {} entries", chain.tree.size()))
        })?;
        Ok(proof.iter().map(|hash| to_hex(hash)).collect())
    }

    /// The proof (hex hashes) that the tree of `old_size` entries is a prefix of the tree of
    /// `new_size` entries.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<String>, Error> {
        let chain = lock(&self.chain);
        let proof = chain.tree.consistency_proof(old_size, new_size).ok_or_else(|| {
            Error::OutOfRange(format!("no consistency proof from {old_size} to {new_size} entries: the sizes must not decrease, and the log has {} entries", chain.tree.size()))
        })?;
        Ok(proof.iter().map(|hash| to_hex(hash)).collect())
    }

    /// The verifier key text (`<origin>+<key id>+<base64 key>`), also in `audit.pub`.
    pub fn public_key(&self) -> String {
        self.signer.verifier_key()
    }

    /// Re-reads `audit.log` from `from_seq` (0 for everything) and checks the chain, that each line
    /// is the one this daemon wrote, and the Merkle root against the latest signed checkpoint.
    /// `progress(done, total)` is called about every 1/128 of the entries (1024 to 65536 apart) and at
    /// the end.
    pub fn verify(
        &self,
        from_seq: u64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Verified, Tamper> {
        let count = self.written_count();
        let from = from_seq.min(count);
        let path = self.dir.join(LOG_FILE);
        let cannot_read =
            |e: std::io::Error| Tamper::general(format!("cannot read {}: {e}", path.display()));
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&path).map_err(cannot_read)?);
        let mut cursor = ChainCursor::genesis();
        if let Some(anchor) = from.checked_sub(1) {
            cursor = self.anchor_at(&mut reader, anchor).map_err(cannot_read)??;
        }
        let checked = check_lines(
            &mut reader,
            &mut cursor,
            count - from,
            |seq, leaf| match lock(&self.chain).tree.leaf(seq) {
                Some(written) if *written == leaf => Ok(()),
                _ => Err(Tamper::at(
                    seq,
                    "the entry differs from the one this daemon wrote: audit.log was changed while the daemon ran",
                )),
            },
            progress,
        )?;
        if from + checked < count {
            let end = from + checked;
            return Err(Tamper::at(
                end,
                format!(
                    "audit.log ends after {end} entries but {count} were written: entries from {end} on were removed"
                ),
            ));
        }
        // After the chain, which can name the entry; a checkpoint problem often cannot.
        let checkpoint = self.stored_checkpoint()?;
        if let Some(checkpoint) = &checkpoint
            && let Some(problem) = consistency_problem(&lock(&self.chain).tree, checkpoint)
        {
            return Err(problem);
        }
        Ok(Verified {
            entries: count - from,
            checkpoint,
        })
    }

    /// The chain cursor after entry `anchor`, read from the file at its known offset, after checking
    /// the line is still the one written.
    fn anchor_at(
        &self,
        reader: &mut BufReader<File>,
        anchor: u64,
    ) -> std::io::Result<Result<ChainCursor, Tamper>> {
        let (start, _) = lock(&self.chain).line_range(anchor, anchor + 1);
        reader.seek(SeekFrom::Start(start))?;
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line)?;
        let mut cursor = ChainCursor {
            next_seq: anchor,
            prev_hash: [0; 32],
        };
        let verdict = cursor.advance(&LineFacts::of(line.strip_suffix(b"\n").unwrap_or(&line)));
        let written = lock(&self.chain).tree.leaf(anchor).copied();
        if written != Some(verdict.leaf) {
            return Ok(Err(Tamper::at(
                anchor,
                "the entry changed since it was written (found while resuming an incremental verification; run a full one)",
            )));
        }
        Ok(Ok(cursor))
    }

    /// The checkpoint in `audit.checkpoint`, verified with this log's key and compared with the
    /// one this process last signed or loaded.
    fn stored_checkpoint(&self) -> Result<Option<Checkpoint>, Tamper> {
        let signing = lock(&self.signing);
        if let Some(problem) = &signing.blocked {
            return Err(problem.clone());
        }
        let path = self.dir.join(CHECKPOINT_FILE);
        let note = match fs::read_to_string(&path) {
            Ok(note) => note,
            Err(e) if e.kind() == ErrorKind::NotFound && signing.latest.is_none() => {
                return Ok(None);
            }
            Err(e) => {
                return Err(Tamper::general(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        if signing.latest_note.as_deref() != Some(note.as_str()) {
            return Err(Tamper::general(format!(
                "{} is not the checkpoint this daemon last signed: it was replaced",
                path.display()
            )));
        }
        verify_checkpoint(&note, &self.signer.verifier_key()).map(Some)
    }

    /// Writes `DIR/entries.jsonl`, `DIR/checkpoint` (signed now, covering exactly those entries) and
    /// `DIR/public.key`: a bundle [`crate::verify_bundle`] checks with nothing else.
    pub fn export(&self, dir: &Path) -> Result<ExportReport, Error> {
        fs::create_dir_all(dir).map_err(|e| Error::io_at("create", dir, e))?;
        let note = self.checkpoint()?;
        let checkpoint =
            Checkpoint::parse_body(self.verifier.open(&note).map_err(Error::Inconsistent)?)
                .map_err(Error::Inconsistent)?;
        let (_, bytes) = lock(&self.chain).line_range(0, checkpoint.size);
        let out_path = dir.join(crate::bundle::ENTRIES_FILE);
        let mut out = File::create(&out_path).map_err(|e| Error::io_at("create", &out_path, e))?;
        let mut source = self.open_log_prefix(bytes)?;
        let copied = std::io::copy(&mut source, &mut out)
            .and_then(|copied| out.sync_all().map(|()| copied))
            .map_err(|e| Error::io_at("write", &out_path, e))?;
        if copied != bytes {
            return Err(Error::io_at(
                "read",
                &self.dir.join(LOG_FILE),
                ErrorKind::UnexpectedEof.into(),
            ));
        }
        write_atomically(
            &dir.join(crate::bundle::CHECKPOINT_FILE),
            note.as_bytes(),
            0o644,
        )?;
        write_atomically(
            &dir.join(crate::bundle::PUBLIC_KEY_FILE),
            format!("{}\n", self.public_key()).as_bytes(),
            0o644,
        )?;
        Ok(ExportReport {
            entries: checkpoint.size,
            bytes,
            checkpoint,
        })
    }

    /// Writes every entry, oldest first, as CSV with a header row (see docs/audit-format.md);
    /// returns the number of entries written.
    pub fn export_csv(&self, out: &mut dyn Write) -> Result<u64, Error> {
        let count = self.written_count();
        let (_, bytes) = lock(&self.chain).line_range(0, count);
        let mut source = BufReader::with_capacity(1 << 20, self.open_log_prefix(bytes)?);
        crate::bundle::write_csv(&mut source, out).map_err(|e| Error::io("write the CSV export", e))
    }

    /// The first `bytes` of `audit.log`, through a handle of its own so concurrent readers do not
    /// share a file position.
    fn open_log_prefix(&self, bytes: u64) -> Result<std::io::Take<File>, Error> {
        let path = self.dir.join(LOG_FILE);
        Ok(File::open(&path)
            .map_err(|e| Error::io_at("read", &path, e))?
            .take(bytes))
    }
}

impl Drop for AuditLog {
    /// Writes what is queued and stops the writer thread.
    fn drop(&mut self) {
        self.writes.close();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The problem with `tree` given a checkpoint signed earlier: fewer entries, or different ones.
fn consistency_problem(tree: &MerkleTree, checkpoint: &Checkpoint) -> Option<Tamper> {
    match tree.root(checkpoint.size) {
        None => Some(Tamper::at(
            tree.size(),
            format!(
                "the log holds {} entries but a signed checkpoint covers {}: entries from {} on were removed or the log was rolled back",
                tree.size(),
                checkpoint.size,
                tree.size()
            ),
        )),
        Some(root) if root != checkpoint.root => Some(Tamper::general(format!(
            "the first {} entries do not match the signed checkpoint's root hash: an entry before {} was changed, removed or replaced",
            checkpoint.size, checkpoint.size
        ))),
        Some(_) => None,
    }
}

/// Verifies a checkpoint note with a verifier key and reads its body.
pub fn verify_checkpoint(note: &str, vkey: &str) -> Result<Checkpoint, Tamper> {
    let verifier = NoteVerifier::parse(vkey)
        .map_err(|e| Tamper::general(format!("the verifier key is malformed: {e}")))?;
    let text = verifier
        .open(note)
        .map_err(|e| Tamper::general(format!("the checkpoint does not verify: {e}")))?;
    Checkpoint::parse_body(text)
        .map_err(|e| Tamper::general(format!("the checkpoint is malformed: {e}")))
}

/// The log's lines as found at open.
struct Scan {
    state: ChainState,
    cut: Option<Cut>,
    problem: Option<Tamper>,
}

struct Cut {
    bytes: u64,
    reason: String,
}

/// Reads the whole log, building the tree and offsets. The last line is cut if it is incomplete, or
/// if it is bad while every line before it is good and no signed checkpoint covers it: a line a
/// checkpoint covered was written completely, and a last line that fails to chain after earlier
/// damage is a consequence of that damage, so both are tampering and stay.
fn scan_log(file: &File, signed_size: u64) -> std::io::Result<Scan> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut state = ChainState {
        cursor: ChainCursor::genesis(),
        last_time_ms: 0,
        tree: MerkleTree::default(),
        line_starts: Vec::new(),
        end: 0,
    };
    let mut problem = None;
    let mut batch = LineBatch::default();
    // Each line is held back until the next is read, because only the last may be cut.
    let mut held: Option<(LineFacts, u64)> = None;
    loop {
        batch.read(&mut reader, BATCH_LINES)?;
        for (index, facts) in batch.facts().into_iter().enumerate() {
            if let Some((facts, len)) = held.replace((facts, batch.line_len(index))) {
                accept_line(&mut state, &mut problem, &facts, len);
            }
        }
        if batch.partial.is_some() || batch.len() < BATCH_LINES {
            break;
        }
    }
    if let Some(bytes) = batch.partial {
        if let Some((facts, len)) = held {
            accept_line(&mut state, &mut problem, &facts, len);
        }
        let reason = format!("the last line was incomplete ({bytes} bytes without a newline)");
        return Ok(Scan {
            state,
            cut: Some(Cut { bytes, reason }),
            problem,
        });
    }
    let mut cut = None;
    if let Some((facts, len)) = held {
        match state.cursor.clone().advance(&facts).problem {
            Some(bad) if problem.is_none() && state.cursor.next_seq >= signed_size => {
                cut = Some(Cut {
                    bytes: len,
                    reason: format!("the last line was bad: {}", bad.what),
                });
            }
            _ => accept_line(&mut state, &mut problem, &facts, len),
        }
    }
    Ok(Scan {
        state,
        cut,
        problem,
    })
}

fn accept_line(state: &mut ChainState, problem: &mut Option<Tamper>, facts: &LineFacts, len: u64) {
    let verdict = state.cursor.advance(facts);
    if let Some(bad) = verdict.problem {
        problem.get_or_insert(bad);
    }
    state.last_time_ms = state.last_time_ms.max(verdict.time_ms);
    state.tree.push(verdict.leaf);
    state.line_starts.push(state.end);
    state.end += len;
}

/// Reads `audit.key` (refusing one others may read), or creates it on first start.
fn load_or_create_key(dir: &Path, origin: &str) -> Result<(NoteSigner, bool), Error> {
    let path = dir.join(KEY_FILE);
    let bad_key = |reason: String| Error::BadKey {
        path: path.display().to_string(),
        reason,
    };
    match fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::InsecureKey {
                    path: path.display().to_string(),
                    mode,
                });
            }
            let text = fs::read_to_string(&path).map_err(|e| Error::io_at("read", &path, e))?;
            let signer = NoteSigner::parse(&text).map_err(bad_key)?;
            if signer.name() != origin {
                return Err(bad_key(format!(
                    "it signs as {:?} but the log's origin is {origin:?}",
                    signer.name()
                )));
            }
            Ok((signer, false))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| {
                Error::io(
                    "get random bytes for the audit key",
                    std::io::Error::other(e.to_string()),
                )
            })?;
            let signer = NoteSigner::from_seed(origin, &seed);
            write_atomically(&path, signer.private_key_text().as_bytes(), 0o600)?;
            Ok((signer, true))
        }
        Err(e) => Err(Error::io_at("read", &path, e)),
    }
}

/// Loads `audit.checkpoint`, blocking signing when it was not signed by this key.
fn load_checkpoint(dir: &Path, verifier: &NoteVerifier) -> Result<Signing, Error> {
    let path = dir.join(CHECKPOINT_FILE);
    let note = match fs::read_to_string(&path) {
        Ok(note) => note,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Ok(Signing {
                latest: None,
                latest_note: None,
                blocked: None,
            });
        }
        Err(e) => return Err(Error::io_at("read", &path, e)),
    };
    let checked = verifier.open(&note).and_then(Checkpoint::parse_body);
    Ok(match checked {
        Ok(checkpoint) => Signing {
            latest: Some(checkpoint),
            latest_note: Some(note),
            blocked: None,
        },
        Err(reason) => Signing {
            latest: None,
            latest_note: None,
            blocked: Some(Tamper::general(format!(
                "{} does not verify with audit.key ({reason}): the key or the checkpoint was replaced",
                path.display()
            ))),
        },
    })
}

/// Writes `contents` to `path` if it holds something else (`audit.pub` is derived from the key).
fn write_if_changed(path: &Path, contents: &str) -> Result<(), Error> {
    if fs::read_to_string(path).is_ok_and(|current| current == contents) {
        return Ok(());
    }
    write_atomically(path, contents.as_bytes(), 0o644)
}

/// Replaces `path` with `contents` (given mode): temporary file, fsync, rename, directory fsync.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io_at("write", path, e)
    })
}
