//! An agent's terminal fan-out: the scrollback ring (kept across runs and client disconnects), the
//! attached clients each with its own bounded queue, the terminal's size and title, and the way in
//! to the running program's input. docs/terminal-protocol.md is the contract.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use celistra_proto::{TermSize, TerminalRole, TerminalServerMessage};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

/// Output queued for one client beyond which it is skipped and later resynced.
pub(crate) const HIGH_WATERMARK: usize = 256 * 1024;
/// A client that keeps falling behind is resynced at most this often: it then sees the terminal
/// at ten frames a second instead of costing the daemon a replay per watermark's worth of output.
const MIN_RESYNC_INTERVAL: Duration = Duration::from_millis(100);
/// A client behind again within this time of its last resync is in a flood (see `next_for`).
const FLOOD_WINDOW: Duration = Duration::from_secs(1);
/// Clients attached to one agent at most.
pub(crate) const MAX_CLIENTS: usize = 256;
/// Size of a terminal no writer has sized yet.
const DEFAULT_SIZE: TermSize = TermSize { cols: 80, rows: 24 };
/// Longest window title kept; longer ones are ignored.
const MAX_TITLE: usize = 256;
/// Refusals queued for one client at most: a client that sends but never reads cannot make its
/// own queue grow without bound. (A size or title replaces the one still queued instead.)
const MAX_QUEUED_ERRORS: usize = 64;

/// Something for one client, in order.
#[derive(Debug)]
pub(crate) enum Delivery {
    Output(Bytes),
    Control(TerminalServerMessage),
    /// The client fell behind before a control message: this replay resets it first.
    Resync {
        skipped: u64,
        replay: Bytes,
    },
    /// The agent was removed: the connection ends.
    Closed,
}

impl Delivery {
    fn output_len(&self) -> usize {
        match self {
            Delivery::Output(bytes) => bytes.len(),
            _ => 0,
        }
    }
}

/// What a client's connection has to send next.
#[derive(Debug)]
pub(crate) enum Next {
    Items(Vec<Delivery>),
    /// The client fell behind: reset it with this replay (`skipped` bytes were not sent).
    Resync {
        skipped: u64,
        replay: Bytes,
    },
    /// The client is behind and was resynced recently: the next resync is due then.
    ResyncAt(Instant),
    Nothing,
}

/// What goes to the running program.
#[derive(Debug)]
pub(crate) enum InputOp {
    Bytes(Bytes),
    Resize(TermSize),
}

/// The way into a run's input. Its ops travel boxed: the channel allocates room for 32 of what it
/// carries as soon as it is made, 256 bytes of boxes instead of 1.3 KiB of ops.
pub(crate) type InputSender = mpsc::Sender<Box<InputOp>>;

/// How many input operations may wait for a program that does not read: then writers wait.
const INPUT_QUEUE: usize = 64;

/// Where a run's input goes: the PTY's master (the keeper holds it too: a hang-up asks it to let
/// go) or the pipe to the program's stdin. Non-blocking descriptors.
#[derive(Debug)]
pub(crate) enum Input {
    Pty(OwnedFd),
    Pipe(OwnedFd),
}

impl Input {
    /// Writes clients' input and applies resizes, in the order they came, until the run ends.
    async fn feed(self, mut ops: mpsc::Receiver<Box<InputOp>>) {
        let (pty, fd) = match self {
            Input::Pty(fd) => (true, fd),
            Input::Pipe(fd) => (false, fd),
        };
        let mut writer = match pipe::Sender::from_owned_fd_unchecked(fd) {
            Ok(writer) => writer,
            Err(e) => {
                tracing::warn!("the agent's input cannot be written: {e}");
                return;
            }
        };
        while let Some(op) = ops.recv().await {
            // A failed write means the program is gone; the run's end closes the channel.
            match *op {
                InputOp::Bytes(bytes) => {
                    let _ = writer.write_all(&bytes).await;
                }
                InputOp::Resize(size) if pty => {
                    let size = rustix::termios::Winsize {
                        ws_row: size.rows,
                        ws_col: size.cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // The kernel sends SIGWINCH to the terminal's foreground process group.
                    if let Err(e) = rustix::termios::tcsetwinsize(&writer, size) {
                        tracing::debug!("cannot resize the terminal: {e}");
                    }
                }
                InputOp::Resize(_) => {}
            }
        }
    }
}

/// A run's input. Most runs are never typed into, so the task that writes, its queue and the
/// descriptor's registration with the runtime (about 1 KiB per agent) wait for the first input.
#[derive(Debug)]
enum InputPort {
    Unopened(Input),
    Open {
        sender: InputSender,
        _writer: Writer,
    },
}

impl InputPort {
    /// The port, opened if nothing was sent yet, and the way in. In a runtime.
    fn opened(self) -> (InputPort, InputSender) {
        match self {
            InputPort::Open { sender, _writer } => {
                let way_in = sender.clone();
                (InputPort::Open { sender, _writer }, way_in)
            }
            InputPort::Unopened(input) => {
                let (sender, ops) = mpsc::channel(INPUT_QUEUE);
                let writer = Writer(tokio::spawn(input.feed(ops)).abort_handle());
                let way_in = sender.clone();
                (
                    InputPort::Open {
                        sender,
                        _writer: writer,
                    },
                    way_in,
                )
            }
        }
    }
}

/// The task writing a run's input. Dropped, it closes the input at once, even with writes
/// waiting for a program that does not read.
#[derive(Debug)]
struct Writer(AbortHandle);

impl Drop for Writer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Delivery>,
    output_bytes: usize,
    /// Output not sent since the client went over the high watermark.
    skipped: Option<u64>,
    /// When it was last resynced because it fell behind.
    last_resync: Option<Instant>,
}

/// One attached client.
#[derive(Debug)]
pub(crate) struct Client {
    id: u64,
    pub role: TerminalRole,
    queue: Mutex<Queue>,
    /// Woken when something is queued.
    pub ready: Notify,
}

impl Client {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver_output(&self, chunk: &Bytes) {
        let mut queue = self.lock();
        if let Some(skipped) = &mut queue.skipped {
            *skipped += chunk.len() as u64;
            return;
        }
        if queue.output_bytes + chunk.len() > HIGH_WATERMARK {
            // Output after the last control message is dropped; what precedes a control message
            // stays, so that message never arrives before output that came before it.
            let keep = queue
                .items
                .iter()
                .rposition(|item| !matches!(item, Delivery::Output(_)))
                .map_or(0, |last| last + 1);
            let dropped: usize = queue
                .items
                .drain(keep..)
                .map(|item| item.output_len())
                .sum();
            queue.output_bytes -= dropped;
            queue.skipped = Some(dropped as u64 + chunk.len() as u64);
        } else {
            queue.output_bytes += chunk.len();
            queue.items.push_back(Delivery::Output(chunk.clone()));
        }
        drop(queue);
        self.ready.notify_one();
    }

    /// Queues a control message for this client only.
    pub(crate) fn tell(&self, message: TerminalServerMessage) {
        use TerminalServerMessage::{Error, Size, Title};
        let mut queue = self.lock();
        let errors = queue
            .items
            .iter()
            .filter(|item| matches!(item, Delivery::Control(Error { .. })))
            .count();
        match message {
            // Only the newest size or title matters to a client that has not been sent the older.
            Size { .. } => queue
                .items
                .retain(|item| !matches!(item, Delivery::Control(Size { .. }))),
            Title { .. } => queue
                .items
                .retain(|item| !matches!(item, Delivery::Control(Title { .. }))),
            Error { .. } if errors >= MAX_QUEUED_ERRORS => return,
            _ => {}
        }
        queue.items.push_back(Delivery::Control(message));
        drop(queue);
        self.ready.notify_one();
    }

    fn queue_item(&self, item: Delivery) {
        self.lock().items.push_back(item);
        self.ready.notify_one();
    }
}

#[derive(Debug)]
struct State {
    ring: VecDeque<u8>,
    capacity: usize,
    /// Output has fallen off the ring's front: the ring may start inside a sequence or a line.
    trimmed: bool,
    clients: Vec<Arc<Client>>,
    size: TermSize,
    title: Option<String>,
    titles: TitleScanner,
    /// The running program's input; `None` while no run is alive.
    input: Option<InputPort>,
    /// The agent was removed: no more clients.
    closed: bool,
}

#[derive(Debug)]
pub(crate) struct Fanout {
    state: Mutex<State>,
    next_client: AtomicU64,
}

impl Fanout {
    pub(crate) fn new(capacity: usize) -> Fanout {
        Fanout {
            state: Mutex::new(State {
                ring: VecDeque::new(),
                capacity,
                trimmed: false,
                clients: Vec::new(),
                size: DEFAULT_SIZE,
                title: None,
                titles: TitleScanner::default(),
                input: None,
                closed: false,
            }),
            next_client: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the ring's size, dropping the oldest bytes if it shrinks.
    pub(crate) fn set_capacity(&self, capacity: usize) {
        let mut state = self.lock();
        state.capacity = capacity;
        let excess = state.ring.len().saturating_sub(capacity);
        state.ring.drain(..excess);
        state.trimmed |= excess > 0;
    }

    pub(crate) fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// Fills an empty ring with output saved before the daemon restarted. Unless it is `whole`
    /// (all the agent ever wrote), its start is arbitrary, so replays start at a sane boundary.
    pub(crate) fn seed(&self, saved: &[u8], whole: bool) {
        let mut state = self.lock();
        if state.ring.is_empty() && !saved.is_empty() {
            let keep = saved.len().min(state.capacity);
            state.ring.extend(&saved[saved.len() - keep..]);
            state.trimmed = !whole || keep < saved.len();
        }
    }

    pub(crate) fn size(&self) -> TermSize {
        self.lock().size
    }

    pub(crate) fn title(&self) -> Option<String> {
        self.lock().title.clone()
    }

    /// Output of the program: into the ring and to every client, never waiting for any of them.
    pub(crate) fn push(&self, chunk: &Bytes) {
        let mut state = self.lock();
        let keep = chunk.len().min(state.capacity);
        let excess = (state.ring.len() + keep).saturating_sub(state.capacity);
        state.ring.drain(..excess);
        state.trimmed |= excess > 0 || keep < chunk.len();
        state.ring.extend(&chunk[chunk.len() - keep..]);
        for client in &state.clients {
            client.deliver_output(chunk);
        }
        if let Some(title) = state.titles.scan(chunk) {
            state.title = Some(title.clone());
            broadcast(&state, &TerminalServerMessage::Title { title });
        }
    }

    /// Sends a control message to every client, after the output before it.
    pub(crate) fn announce(&self, message: &TerminalServerMessage) {
        broadcast(&self.lock(), message);
    }

    /// Attaches a client: returns it with the replay it starts from. Output pushed afterwards is
    /// queued for it, so replay and live output neither overlap nor leave a gap.
    pub(crate) fn attach(&self, role: TerminalRole) -> Option<(Arc<Client>, Bytes)> {
        let mut state = self.lock();
        if state.closed || state.clients.len() >= MAX_CLIENTS {
            return None;
        }
        let client = Arc::new(Client {
            id: self.next_client.fetch_add(1, Ordering::Relaxed),
            role,
            queue: Mutex::default(),
            ready: Notify::new(),
        });
        state.clients.push(Arc::clone(&client));
        Some((client, replay(&state)))
    }

    /// The agent is removed: every client's connection ends once what was queued before is sent.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for client in state.clients.drain(..) {
            client.queue_item(Delivery::Closed);
        }
    }

    pub(crate) fn detach(&self, client: &Client) {
        self.lock().clients.retain(|c| c.id != client.id);
    }

    /// Takes what a client has to send next. A client that fell behind is resynced only once what
    /// was queued before (control messages) is out: the low watermark is an empty queue.
    pub(crate) fn next_for(&self, client: &Client) -> Next {
        {
            // The common case needs only the client's own lock, not the fanout's that output takes.
            let mut queue = client.lock();
            if !queue.items.is_empty() {
                queue.output_bytes = 0;
                return Next::Items(queue.items.drain(..).collect());
            }
            if queue.skipped.is_none() {
                return Next::Nothing;
            }
        }
        // A resync: the replay and clearing `skipped` happen under the fanout's lock, so output
        // pushed afterwards is queued live. Locks are taken fanout first, as `push` does.
        let state = self.lock();
        let mut queue = client.lock();
        if !queue.items.is_empty() {
            queue.output_bytes = 0;
            return Next::Items(queue.items.drain(..).collect());
        }
        let now = Instant::now();
        if let Some(due) = queue.last_resync.map(|at| at + MIN_RESYNC_INTERVAL)
            && due > now
            && queue.skipped.is_some()
        {
            return Next::ResyncAt(due);
        }
        match queue.skipped.take() {
            // Nothing was skipped since the last resync: the client is live again.
            Some(0) | None => Next::Nothing,
            Some(skipped) => {
                // Behind again soon after a resync, by a watermark or more: a flood. The client
                // stays behind and gets a frame (a resync) per interval until the flood ends,
                // instead of output it cannot keep up with between frames.
                let flood = skipped >= HIGH_WATERMARK as u64
                    && queue
                        .last_resync
                        .is_some_and(|at| now.duration_since(at) < FLOOD_WINDOW);
                if flood {
                    queue.skipped = Some(0);
                }
                queue.last_resync = Some(now);
                Next::Resync {
                    skipped,
                    replay: replay(&state),
                }
            }
        }
    }

    /// Connects a new run's input, or closes it (`None`) when the run ends or hangs up.
    pub(crate) fn set_input(&self, input: Option<Input>) {
        self.lock().input = input.map(InputPort::Unopened);
    }

    /// The running program's input, if a run is alive. In a runtime.
    pub(crate) fn input(&self) -> Option<InputSender> {
        open_input(&mut self.lock())
    }

    /// A writer's size: kept for later runs, sent to the program, and announced to every client.
    pub(crate) fn resize(&self, size: TermSize) -> Option<InputSender> {
        let mut state = self.lock();
        if state.size != size {
            state.size = size;
            broadcast(
                &state,
                &TerminalServerMessage::Size {
                    cols: size.cols,
                    rows: size.rows,
                },
            );
        }
        open_input(&mut state)
    }

    /// How many clients are attached.
    pub(crate) fn clients(&self) -> usize {
        self.lock().clients.len()
    }
}

/// The way into the running program's input, opened if nothing was sent yet.
fn open_input(state: &mut State) -> Option<InputSender> {
    let (port, sender) = state.input.take()?.opened();
    state.input = Some(port);
    Some(sender)
}

/// Sends a control message to every client, in order with the output: a client that is behind is
/// resynced up to this point first, so it never sees the message before output that preceded it.
fn broadcast(state: &State, message: &TerminalServerMessage) {
    for client in &state.clients {
        let mut queue = client.lock();
        match queue.skipped.take() {
            Some(0) | None => {}
            Some(skipped) => queue.items.push_back(Delivery::Resync {
                skipped,
                replay: replay(state),
            }),
        }
        drop(queue);
        client.tell(message.clone());
    }
}

/// The ring, from a sane boundary if its start was cut (docs/terminal-protocol.md section 5).
fn replay(state: &State) -> Bytes {
    let (front, back) = state.ring.as_slices();
    let mut bytes = Vec::with_capacity(state.ring.len());
    bytes.extend_from_slice(front);
    bytes.extend_from_slice(back);
    let start = if state.trimmed {
        replay_start(&bytes)
    } else {
        0
    };
    Bytes::from(bytes).slice(start..)
}

/// Where a replay of `bytes` should start: the first line start with no escape sequence open,
/// else the first byte that is not a UTF-8 continuation.
fn replay_start(bytes: &[u8]) -> usize {
    let mut scanner = SequenceState::Ground;
    for (index, &byte) in bytes.iter().enumerate() {
        if index > 0 && bytes[index - 1] == b'\n' && scanner == SequenceState::Ground {
            return index;
        }
        scanner = scanner.next(byte);
    }
    bytes
        .iter()
        .position(|&b| !(0x80..0xc0).contains(&b))
        .unwrap_or(bytes.len())
}

/// Just enough of a terminal parser to know whether an escape sequence is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SequenceState {
    Ground,
    Escape,
    /// CSI: parameters until a final byte.
    Csi,
    /// OSC, DCS, SOS, PM, APC: a string until BEL or ST.
    Text,
    /// ESC inside a string: `\` ends it.
    TextEscape,
}

impl SequenceState {
    fn next(self, byte: u8) -> SequenceState {
        use SequenceState::{Csi, Escape, Ground, Text, TextEscape};
        match (self, byte) {
            (Text, 0x07) => Ground,
            (Text, 0x1b) => TextEscape,
            (Text, _) => Text,
            (TextEscape, b'\\') => Ground,
            (TextEscape, _) => Text,
            (_, 0x18 | 0x1a) => Ground,
            (_, 0x1b) => Escape,
            (Escape, b'[') => Csi,
            (Escape, b']' | b'P' | b'X' | b'^' | b'_') => Text,
            // Intermediate bytes keep the escape sequence open; anything else ends it.
            (Escape, 0x20..=0x2f) => Escape,
            (Escape, _) => Ground,
            (Csi, 0x40..=0x7e) => Ground,
            (Csi, _) => Csi,
            (Ground, _) => Ground,
        }
    }
}

/// Finds window titles (OSC 0 and OSC 2) in output, across chunk boundaries.
#[derive(Debug, Default)]
struct TitleScanner {
    /// The start of a title whose end has not come yet.
    partial: Option<Vec<u8>>,
}

impl TitleScanner {
    /// The last complete title set in `chunk`, if any.
    fn scan(&mut self, chunk: &[u8]) -> Option<String> {
        let mut found = None;
        let mut rest = chunk;
        if let Some(mut partial) = self.partial.take() {
            match title_end(rest) {
                Some((end, after)) => {
                    partial.extend_from_slice(&rest[..end]);
                    found = Some(partial);
                    rest = &rest[after..];
                }
                None => {
                    if partial.len() + rest.len() <= MAX_TITLE {
                        partial.extend_from_slice(rest);
                        self.partial = Some(partial);
                    }
                    return None;
                }
            }
        }
        while let Some(start) = memchr::memmem::find(rest, b"\x1b]") {
            let after = &rest[start + 2..];
            if !(after.starts_with(b"0;") || after.starts_with(b"2;")) {
                rest = after;
                continue;
            }
            let body = &after[2..];
            match title_end(body) {
                Some((end, next)) => {
                    found = Some(body[..end].to_vec());
                    rest = &body[next..];
                }
                None => {
                    if body.len() <= MAX_TITLE {
                        self.partial = Some(body.to_vec());
                    }
                    break;
                }
            }
        }
        found
            .filter(|title| title.len() <= MAX_TITLE)
            .map(|title| String::from_utf8_lossy(&title).into_owned())
    }
}

/// Where a title ends (BEL or ST) and where the bytes after its terminator start.
fn title_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(offset) = memchr::memchr2(0x07, 0x1b, &bytes[from..]) {
        let at = from + offset;
        if bytes[at] == 0x07 {
            return Some((at, at + 1));
        }
        if bytes.get(at + 1) == Some(&b'\\') {
            return Some((at, at + 2));
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    fn outputs(next: Next) -> Vec<u8> {
        match next {
            Next::Items(items) => items
                .into_iter()
                .flat_map(|item| match item {
                    Delivery::Output(bytes) => bytes.to_vec(),
                    Delivery::Control(_) | Delivery::Resync { .. } | Delivery::Closed => vec![],
                })
                .collect(),
            other => panic!("expected items, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_runs_input_opens_at_its_first_use_and_its_end_closes_it_with_writes_waiting() {
        use tokio::io::AsyncReadExt;
        let limit = Duration::from_secs(10);
        let (read_end, write_end) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC,
        )
        .unwrap();
        let fanout = Fanout::new(1024);
        fanout.set_input(Some(Input::Pipe(write_end)));
        assert!(matches!(fanout.lock().input, Some(InputPort::Unopened(_))));
        let sender = fanout.input().expect("a run's input");
        assert!(matches!(fanout.lock().input, Some(InputPort::Open { .. })));
        sender
            .send(Box::new(InputOp::Bytes(Bytes::from_static(b"typed"))))
            .await
            .unwrap();
        let mut program = pipe::Receiver::from_owned_fd_unchecked(read_end).unwrap();
        let mut typed = [0u8; 5];
        tokio::time::timeout(limit, program.read_exact(&mut typed))
            .await
            .expect("the input arrives")
            .unwrap();
        assert_eq!(&typed, b"typed");
        // A program that stops reading: more than its pipe holds waits to be written.
        let more = 1 << 20;
        sender
            .send(Box::new(InputOp::Bytes(Bytes::from(vec![b'x'; more]))))
            .await
            .unwrap();
        fanout.set_input(None);
        assert!(fanout.input().is_none());
        let mut rest = vec![];
        tokio::time::timeout(limit, program.read_to_end(&mut rest))
            .await
            .expect("the input is closed")
            .unwrap();
        assert!(
            rest.len() < more,
            "the waiting write went on: {} bytes",
            rest.len()
        );
    }

    #[test]
    fn ring_keeps_the_newest_bytes() {
        let fanout = Fanout::new(8);
        fanout.push(&chunk(b"abcdef"));
        fanout.push(&chunk(b"ghij"));
        assert_eq!(replay(&fanout.lock()), &b"cdefghij"[..]);
        fanout.set_capacity(3);
        assert_eq!(replay(&fanout.lock()), &b"hij"[..]);
        // Once trimmed, a replay starts at a line start.
        fanout.set_capacity(16);
        fanout.push(&chunk(b"\x1b[1mX\nline\n"));
        assert_eq!(replay(&fanout.lock()), &b"line\n"[..]);
    }

    #[test]
    fn a_late_joiner_gets_the_replay_then_only_what_follows() {
        let fanout = Fanout::new(1024);
        fanout.push(&chunk(b"one\ntwo\n"));
        let (client, replayed) = fanout.attach(TerminalRole::Viewer).unwrap();
        fanout.push(&chunk(b"three\n"));
        assert_eq!(replayed, &b"one\ntwo\n"[..]);
        assert_eq!(outputs(fanout.next_for(&client)), b"three\n");
        assert!(matches!(fanout.next_for(&client), Next::Nothing));
        fanout.detach(&client);
        assert_eq!(fanout.clients(), 0);
    }

    #[test]
    fn replay_starts_at_a_line_with_no_sequence_open() {
        // Cut in the middle of a colour sequence: the replay starts at the next line.
        assert_eq!(replay_start(b"1;31mred\x1b[0m\nnext"), 13);
        // A newline inside an OSC string is not a boundary.
        assert_eq!(replay_start(b"x\x1b]0;a\nb\x07\nline"), 10);
        // One long line: skip only UTF-8 continuation bytes.
        assert_eq!(replay_start("\u{e9}t\u{e9}".as_bytes()[1..].as_ref()), 1);
        assert_eq!(replay_start(b""), 0);
    }

    #[test]
    fn a_client_over_the_high_watermark_is_resynced_and_keeps_its_controls() {
        let fanout = Fanout::new(64);
        let (slow, _) = fanout.attach(TerminalRole::Viewer).unwrap();
        let (fast, _) = fanout.attach(TerminalRole::Viewer).unwrap();
        let piece = Bytes::from(vec![b'x'; 64 * 1024]);
        let kinds = |next: &Next| match next {
            Next::Items(items) => items
                .iter()
                .map(|item| match item {
                    Delivery::Output(bytes) => format!("output {}", bytes.len()),
                    Delivery::Control(message) => format!("{message:?}"),
                    Delivery::Resync { skipped, replay } => {
                        format!("resync {skipped} {}", replay.len())
                    }
                    Delivery::Closed => "closed".into(),
                })
                .collect::<Vec<_>>(),
            Next::Resync { skipped, replay } => {
                vec![format!("lazy resync {skipped} {}", replay.len())]
            }
            Next::ResyncAt(_) => vec!["resync later".into()],
            Next::Nothing => vec![],
        };
        // One piece more than the watermark holds.
        let over = HIGH_WATERMARK / piece.len() + 1;
        let half = over / 2;
        let skipped = |pieces: usize| (pieces * piece.len()) as u64;
        for _ in 0..over {
            fanout.push(&piece);
            // The fast client keeps up; the slow one never reads.
            assert_eq!(outputs(fanout.next_for(&fast)).len(), piece.len());
        }
        assert!(slow.lock().output_bytes <= HIGH_WATERMARK);
        fanout.announce(&TerminalServerMessage::Exit {
            run: 1,
            exit_code: Some(0),
            exit_signal: None,
        });
        fanout.push(&chunk(b"tail\n"));
        // The exit comes after a resync to the output before it, then what followed it.
        let next = fanout.next_for(&slow);
        assert_eq!(
            kinds(&next),
            [
                format!("resync {} 64", skipped(over)),
                "Exit { run: 1, exit_code: Some(0), exit_signal: None }".to_owned(),
                "output 5".to_owned(),
            ]
        );
        // Over the watermark again with no control message: resynced once its queue is empty.
        for _ in 0..over {
            fanout.push(&piece);
        }
        assert_eq!(
            kinds(&fanout.next_for(&slow)),
            [format!("lazy resync {} 64", skipped(over))]
        );
        fanout.push(&chunk(b"live\n"));
        assert_eq!(outputs(fanout.next_for(&slow)), b"live\n");
        // Output queued before a control message stays when the watermark is crossed after it.
        for _ in 0..half {
            fanout.push(&piece);
        }
        fanout.announce(&TerminalServerMessage::Title { title: "t".into() });
        for _ in 0..over - half {
            fanout.push(&piece);
        }
        let kinds = kinds(&fanout.next_for(&slow));
        assert_eq!(kinds.len(), half + 1, "{kinds:?}");
        assert!(kinds[half].starts_with("Title"), "{kinds:?}");
        // Behind again so soon after a resync: the next one waits for its interval.
        let Next::ResyncAt(due) = fanout.next_for(&slow) else {
            panic!("expected a later resync");
        };
        assert!(due > Instant::now() && due <= Instant::now() + MIN_RESYNC_INTERVAL);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        assert!(matches!(
            fanout.next_for(&slow),
            Next::Resync { skipped: s, .. } if s == skipped(over - half)
        ));
        // A flood: behind by a watermark again within a second of a resync. The client gets
        // frames only (a resync per interval), no output in between, until the flood ends.
        for _ in 0..over {
            fanout.push(&piece);
        }
        let Next::ResyncAt(due) = fanout.next_for(&slow) else {
            panic!("expected a later resync");
        };
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        assert!(matches!(fanout.next_for(&slow), Next::Resync { .. }));
        fanout.push(&piece);
        let Next::ResyncAt(due) = fanout.next_for(&slow) else {
            panic!("in a flood, output waits for the next frame");
        };
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        assert!(
            matches!(fanout.next_for(&slow), Next::Resync { skipped: s, .. } if s == skipped(1))
        );
        // Less than a watermark skipped in that frame: the flood is over, output is live again.
        fanout.push(&chunk(b"calm\n"));
        assert_eq!(outputs(fanout.next_for(&slow)), b"calm\n");
    }

    #[test]
    fn a_client_that_never_reads_queues_a_bounded_number_of_controls() {
        let fanout = Fanout::new(64);
        let (client, _) = fanout.attach(TerminalRole::Viewer).unwrap();
        for cols in 1..=1000 {
            fanout.resize(TermSize { cols, rows: 24 });
            client.tell(TerminalServerMessage::Error {
                code: "read_only".into(),
                message: "no".into(),
            });
        }
        let queued = client.lock().items.len();
        assert!(queued <= 2 * MAX_QUEUED_ERRORS, "{queued} items queued");
    }

    #[test]
    fn titles_are_found_across_chunks() {
        let mut scanner = TitleScanner::default();
        assert_eq!(
            scanner.scan(b"ab\x1b]0;first\x07cd\x1b]2;sec"),
            Some("first".into())
        );
        assert_eq!(scanner.scan(b"ond\x1b\\rest"), Some("second".into()));
        assert_eq!(scanner.scan(b"\x1b]8;;link\x07"), None);
        let fanout = Fanout::new(64);
        let (client, _) = fanout.attach(TerminalRole::Writer).unwrap();
        fanout.push(&chunk(b"\x1b]2;build\x07"));
        assert_eq!(fanout.title().as_deref(), Some("build"));
        match fanout.next_for(&client) {
            Next::Items(items) => assert!(items.iter().any(|item| matches!(
                item,
                Delivery::Control(TerminalServerMessage::Title { title }) if title == "build"
            ))),
            other => panic!("{other:?}"),
        }
    }
}
