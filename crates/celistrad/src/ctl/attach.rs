//! `ctl attach`: an agent's live terminal in this one (raw mode, input, output and size), the detach
//! key, and reconnecting while the daemon is away (docs/terminal-protocol.md).

use std::fmt;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celistra_client::{
    Client, ClientError, Terminal, TerminalEvent, TerminalInput, TerminalOutput,
};
use celistra_proto::{ErrorCode, TerminalClientMessage, TerminalRole, TerminalServerMessage};
use clap::Args;
use rustix::termios::{self, OptionalActions, Termios};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use super::{CtlResult, Failure};

/// The largest input frame the daemon takes.
const MAX_INPUT_FRAME: usize = 64 * 1024;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// A reconnect attempt that hangs this long (a daemon that accepts but does not answer) is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long leaving waits for the daemon to end the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The close code the daemon sends when the agent was removed.
const CLOSE_AGENT_REMOVED: u16 = 1000;
const CLEAR_SCREEN: &[u8] = b"\x1b[H\x1b[2J";
const RESET_TERMINAL: &[u8] = b"\x1bc";
const ACCEPTED_KEYS: &str = "ctrl-], ctrl-\\, ctrl-^, ctrl-_, ctrl-@ and ctrl-a to ctrl-z";

#[derive(Debug, Args)]
pub(crate) struct AttachArgs {
    /// Agent id or name (MACHINE/AGENT on another machine, through the hub).
    agent: String,
    /// Only watch: the daemon refuses what you type, and this terminal's size is not applied.
    #[arg(long)]
    read_only: bool,
    /// The key that detaches: ctrl-], ctrl-\, ctrl-^, ctrl-_, ctrl-@ or ctrl-a to ctrl-z. It is
    /// never sent to the agent.
    #[arg(long, value_name = "KEY", default_value = "ctrl-]", value_parser = DetachKey::parse)]
    detach_key: DetachKey,
}

/// The control character that detaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DetachKey(u8);

impl DetachKey {
    fn parse(text: &str) -> Result<DetachKey, String> {
        let lower = text.to_ascii_lowercase();
        match lower.strip_prefix("ctrl-").map(str::as_bytes) {
            // A control key is its character with the top three bits cleared: ']' is 0x1d.
            Some([key @ (b'a'..=b'z' | b']' | b'\\' | b'^' | b'_' | b'@')]) => {
                Ok(DetachKey(key.to_ascii_uppercase() & 0x1f))
            }
            _ => Err(format!(
                "unknown detach key {text:?}; accepted: {ACCEPTED_KEYS}"
            )),
        }
    }

    /// Splits what was typed at the detach key: the bytes before it, to send, and whether it was
    /// pressed. What follows the key in the same read is dropped with it.
    fn split(self, typed: &[u8]) -> (&[u8], bool) {
        match typed.iter().position(|&byte| byte == self.0) {
            Some(at) => (&typed[..at], true),
            None => (typed, false),
        }
    }
}

impl fmt::Display for DetachKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ctrl-{}", char::from(self.0 | 0x40))
    }
}

/// Stdin in raw mode. Dropping it restores the settings it had, on every way out: errors and
/// panics (which unwind through the future that holds it) too.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> rustix::io::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// The signals that matter while attached.
struct Signals {
    terminate: Signal,
    hangup: Signal,
    window_changed: Signal,
}

impl Signals {
    fn listen() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            window_changed: signal(SignalKind::window_change())?,
        })
    }

    async fn next(&mut self) -> Arrived {
        tokio::select! {
            _ = self.terminate.recv() => Arrived::Stop,
            _ = self.hangup.recv() => Arrived::Stop,
            _ = self.window_changed.recv() => Arrived::Resize,
        }
    }
}

/// What a signal asks for.
enum Arrived {
    /// SIGTERM or SIGHUP: leave, restoring the terminal.
    Stop,
    /// SIGWINCH: this terminal's size changed.
    Resize,
}

/// How an attachment ended well.
enum Outcome {
    /// The detach key, the end of stdin, SIGTERM or SIGHUP.
    Detached,
    /// The daemon closed the terminal because the agent was removed.
    Removed,
}

/// How one connection ended.
enum Connection {
    Ended(Outcome),
    /// It broke (for this reason); a new one is worth opening.
    Lost(String),
}

/// One attachment to an agent's terminal, across reconnects.
struct Attachment<'a> {
    client: &'a Client,
    /// The agent as typed: an id or name.
    agent: String,
    role: TerminalRole,
    detach_key: DetachKey,
    /// The agent's name for notices: as typed until `hello` tells.
    name: String,
    /// Stdin is in raw mode, so line ends must be written as "\r\n".
    raw: bool,
    /// Stdout is a terminal, so clearing and resetting it makes sense.
    stdout_is_terminal: bool,
    input: mpsc::Receiver<Vec<u8>>,
    signals: Signals,
    /// The last error shown, so that a viewer typing gets one notice and not one per key.
    last_error: Option<String>,
}

pub(crate) async fn run(client: &Client, args: AttachArgs) -> CtlResult {
    let role = if args.read_only {
        TerminalRole::Viewer
    } else {
        TerminalRole::Writer
    };
    let (client, agent) = super::on_machine_of(client, &args.agent)?;
    let (client, agent) = (&client, agent.to_owned());
    // The first connection's failure (no daemon, no such agent) is reported, not retried.
    let terminal = client.attach(&agent, role).await?;
    let signals = Signals::listen()
        .map_err(|e| Failure::Failed(format!("cannot listen for signals: {e}")))?;
    let input =
        read_stdin().map_err(|e| Failure::Failed(format!("cannot start reading input: {e}")))?;
    let raw_mode = termios::isatty(std::io::stdin())
        .then(RawMode::enter)
        .transpose()
        .map_err(|e| Failure::Failed(format!("cannot switch the terminal to raw mode: {e}")))?;
    let mut attachment = Attachment {
        client,
        agent: agent.clone(),
        role,
        detach_key: args.detach_key,
        name: agent.clone(),
        raw: raw_mode.is_some(),
        stdout_is_terminal: termios::isatty(std::io::stdout()),
        input,
        signals,
        last_error: None,
    };
    let result = attachment.run(terminal).await;
    // Said before the terminal is restored, in the line ends its mode takes.
    match &result {
        Ok(Outcome::Detached) => attachment.notice(&format!("[detached from {}]", attachment.name)),
        Ok(Outcome::Removed) => {
            attachment.notice(&format!("[celistra: {} was removed]", attachment.name));
        }
        Err(_) => {}
    }
    drop(raw_mode);
    result.map(|_| ())
}

impl Attachment<'_> {
    async fn run(&mut self, first: Terminal) -> Result<Outcome, Failure> {
        let mut terminal = first;
        loop {
            let reason = match self.serve(terminal).await? {
                Connection::Ended(outcome) => return Ok(outcome),
                Connection::Lost(reason) => reason,
            };
            self.notice(&format!(
                "[celistra: connection lost ({reason}); reconnecting…]"
            ));
            terminal = match self.reconnect().await? {
                Some(terminal) => terminal,
                None => return Ok(Outcome::Detached),
            };
        }
    }

    /// Relays one connection until it ends.
    async fn serve(&mut self, terminal: Terminal) -> Result<Connection, Failure> {
        let (mut to_daemon, mut from_daemon) = terminal.split();
        if let Err(e) = send_size(&mut to_daemon).await {
            return Ok(Connection::Lost(e.to_string()));
        }
        loop {
            tokio::select! {
                event = from_daemon.next() => match event {
                    TerminalEvent::Output(bytes) => {
                        self.last_error = None;
                        write_stdout(&bytes)?;
                    }
                    TerminalEvent::Control(message) => self.show(message)?,
                    TerminalEvent::Closed { code: CLOSE_AGENT_REMOVED, .. } => {
                        return Ok(Connection::Ended(Outcome::Removed));
                    }
                    TerminalEvent::Closed { code, reason } if reason.is_empty() => {
                        return Ok(Connection::Lost(format!("close code {code}")));
                    }
                    TerminalEvent::Closed { reason, .. } => return Ok(Connection::Lost(reason)),
                },
                typed = self.input.recv() => {
                    // The end of stdin (a script's pipe) detaches like the key.
                    let (to_send, detach) = match &typed {
                        Some(typed) => self.detach_key.split(typed),
                        None => (&[][..], true),
                    };
                    let sent = if to_send.is_empty() {
                        Ok(())
                    } else {
                        to_daemon.send_input(to_send.to_vec()).await
                    };
                    if detach {
                        close(to_daemon, from_daemon).await;
                        return Ok(Connection::Ended(Outcome::Detached));
                    }
                    if let Err(e) = sent {
                        return Ok(Connection::Lost(e.to_string()));
                    }
                }
                arrived = self.signals.next() => match arrived {
                    Arrived::Resize => {
                        if let Err(e) = send_size(&mut to_daemon).await {
                            return Ok(Connection::Lost(e.to_string()));
                        }
                    }
                    Arrived::Stop => {
                        close(to_daemon, from_daemon).await;
                        return Ok(Connection::Ended(Outcome::Detached));
                    }
                },
            }
        }
    }

    /// Opens a new connection (a fresh ticket each time) with backoff, while still watching for
    /// the detach key and signals; `None` if the user left meanwhile.
    async fn reconnect(&mut self) -> Result<Option<Terminal>, Failure> {
        let mut delay = FIRST_RETRY_DELAY;
        let mut last_failure = String::new();
        loop {
            let (wait, client, agent, role) =
                (with_jitter(delay), self.client, &self.agent, self.role);
            let attempt = async move {
                tokio::time::sleep(wait).await;
                tokio::time::timeout(ATTEMPT_TIMEOUT, client.attach(agent, role)).await
            };
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    result = &mut attempt => break result,
                    typed = self.input.recv() => {
                        // Typing into a broken connection goes nowhere; only the key counts.
                        if typed.is_none_or(|typed| self.detach_key.split(&typed).1) {
                            return Ok(None);
                        }
                    }
                    arrived = self.signals.next() => {
                        // The size is sent on connecting anyway.
                        if let Arrived::Stop = arrived {
                            return Ok(None);
                        }
                    }
                }
            };
            let failure = match result {
                Ok(Ok(terminal)) => return Ok(Some(terminal)),
                Ok(Err(ClientError::Api(error))) if error.code == ErrorCode::NotFound => {
                    return Err(Failure::Failed(error.message));
                }
                Ok(Err(ClientError::Api(error)))
                    if matches!(error.code, ErrorCode::Unauthorized | ErrorCode::Forbidden) =>
                {
                    return Err(ClientError::Api(error).into());
                }
                // Retrying cannot fix a bad address or a certificate that is not the pinned one.
                Ok(Err(
                    error @ (ClientError::Secret { .. }
                    | ClientError::BadUrl { .. }
                    | ClientError::FingerprintMismatch { .. }
                    | ClientError::Tls { .. }),
                )) => return Err(error.into()),
                Ok(Err(ClientError::NotRunning { .. })) => "the daemon is not running".to_owned(),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
            };
            // Each new reason once: the daemon coming back may refuse differently than it failed.
            if failure != last_failure {
                self.notice(&format!("[celistra: {failure}; retrying…]"));
                last_failure = failure;
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    /// Shows a control message: markers go into the terminal's stream, the rest is silent.
    fn show(&mut self, message: TerminalServerMessage) -> Result<(), Failure> {
        match message {
            TerminalServerMessage::Hello {
                agent_id,
                name,
                role,
                ..
            } => {
                // A replay of the scrollback follows: it draws on a clean screen.
                if self.stdout_is_terminal {
                    write_stdout(CLEAR_SCREEN)?;
                }
                let line_end = if self.raw { "\r\n" } else { "\n" };
                let _ = write!(
                    std::io::stderr(),
                    "[attached to {name} ({agent_id}) as {}; detach with {}]{line_end}",
                    role.as_str(),
                    self.detach_key
                );
                self.name = name;
            }
            TerminalServerMessage::Restarted { run, .. } => {
                write_stdout(format!("\r\n[celistra: run {run} started]\r\n").as_bytes())?;
            }
            TerminalServerMessage::Exit {
                run,
                exit_code,
                exit_signal,
            } => {
                let how = match (exit_signal, exit_code) {
                    (Some(signal), _) => format!(" with signal {signal}"),
                    (None, Some(code)) => format!(" with code {code}"),
                    (None, None) => String::new(),
                };
                write_stdout(format!("\r\n[celistra: run {run} exited{how}]\r\n").as_bytes())?;
            }
            TerminalServerMessage::Resync { .. } => {
                if self.stdout_is_terminal {
                    write_stdout(RESET_TERMINAL)?;
                }
            }
            TerminalServerMessage::Error { message, .. } => {
                if self.last_error.as_ref() != Some(&message) {
                    write_stdout(format!("\r\n[celistra: {message}]\r\n").as_bytes())?;
                    self.last_error = Some(message);
                }
            }
            TerminalServerMessage::Replayed { .. }
            | TerminalServerMessage::Size { .. }
            | TerminalServerMessage::Title { .. } => {}
        }
        Ok(())
    }

    /// Writes a notice on a line of its own on stderr. The cursor may be anywhere in the agent's
    /// line, and in raw mode the terminal does not turn "\n" into "\r\n".
    fn notice(&self, text: &str) {
        let line = if self.raw {
            format!("\r\n{text}\r\n")
        } else {
            format!("{text}\n")
        };
        // Stderr may be gone (a hung-up terminal); there is nowhere else to say it.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Closes the connection and waits (briefly) for the daemon to end it too: the daemon has then read
/// everything sent before the close, so what was typed (or piped) just before leaving is not lost
/// to a connection torn down under it.
async fn close(to_daemon: TerminalInput, mut from_daemon: TerminalOutput) {
    if to_daemon.close().await.is_err() {
        return;
    }
    let ended =
        async { while !matches!(from_daemon.next().await, TerminalEvent::Closed { .. }) {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ended).await;
}

/// Tells the daemon this terminal's size, if stdout or stdin is a terminal.
async fn send_size(to_daemon: &mut TerminalInput) -> Result<(), ClientError> {
    match terminal_size() {
        Some(resize) => to_daemon.send_control(&resize).await,
        None => Ok(()),
    }
}

fn terminal_size() -> Option<TerminalClientMessage> {
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    let size = if termios::isatty(&stdout) {
        termios::tcgetwinsize(&stdout).ok()?
    } else if termios::isatty(&stdin) {
        termios::tcgetwinsize(&stdin).ok()?
    } else {
        return None;
    };
    // A terminal that has no size yet (0×0) says nothing useful; the protocol caps sizes at 1000.
    (size.ws_col > 0 && size.ws_row > 0).then(|| TerminalClientMessage::Resize {
        cols: size.ws_col.min(1000),
        rows: size.ws_row.min(1000),
    })
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::Failed(format!("cannot write output: {e}")))
}

/// Reads stdin on a thread of its own, in chunks of at most one frame; the channel closes at its
/// end. A plain thread and not tokio's stdin: a blocking read cannot be cancelled, and tokio would
/// wait for it when the runtime shuts down, so leaving would take another key press.
fn read_stdin() -> std::io::Result<mpsc::Receiver<Vec<u8>>> {
    let (sender, receiver) = mpsc::channel(4);
    std::thread::Builder::new()
        .name("attach-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = vec![0; MAX_INPUT_FRAME];
            loop {
                let read = match stdin.read(&mut buffer) {
                    Ok(0) => return,
                    Ok(read) => read,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // A read error (a hung-up terminal) ends input like its end does.
                    Err(_) => return,
                };
                if sender.blocking_send(buffer[..read].to_vec()).is_err() {
                    return;
                }
            }
        })?;
    Ok(receiver)
}

/// `delay` less up to half of it, so clients that lost the same daemon do not all return at once.
fn with_jitter(delay: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    delay.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_case_insensitively() {
        assert_eq!(DetachKey::parse("ctrl-]"), Ok(DetachKey(0x1d)));
        assert_eq!(DetachKey::parse("Ctrl-\\"), Ok(DetachKey(0x1c)));
        assert_eq!(DetachKey::parse("CTRL-^"), Ok(DetachKey(0x1e)));
        assert_eq!(DetachKey::parse("ctrl-_"), Ok(DetachKey(0x1f)));
        assert_eq!(DetachKey::parse("ctrl-@"), Ok(DetachKey(0x00)));
        assert_eq!(DetachKey::parse("ctrl-a"), Ok(DetachKey(0x01)));
        assert_eq!(DetachKey::parse("Ctrl-Q"), Ok(DetachKey(0x11)));
        assert_eq!(DetachKey::parse("ctrl-z"), Ok(DetachKey(0x1a)));
    }

    #[test]
    fn other_detach_keys_are_refused_with_the_accepted_ones() {
        for text in [
            "", "]", "ctrl-", "ctrl-[", "ctrl-1", "ctrl-ab", "alt-a", "ctrl+a", "ctrl-é",
        ] {
            let error = DetachKey::parse(text).unwrap_err();
            assert!(error.contains(ACCEPTED_KEYS), "{text:?}: {error}");
        }
    }

    #[test]
    fn detach_keys_are_named_as_typed() {
        for (text, shown) in [
            ("ctrl-]", "Ctrl-]"),
            ("ctrl-a", "Ctrl-A"),
            ("ctrl-@", "Ctrl-@"),
        ] {
            assert_eq!(DetachKey::parse(text).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn input_is_sent_up_to_the_detach_key() {
        let key = DetachKey(0x1d);
        assert_eq!(key.split(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(key.split(b"ls\x1d"), (&b"ls"[..], true));
        assert_eq!(key.split(b"\x1d"), (&b""[..], true));
        assert_eq!(key.split(b"a\x1dafter"), (&b"a"[..], true));
        assert_eq!(key.split(b""), (&b""[..], false));
    }

    #[test]
    fn jitter_keeps_the_delay_between_half_and_all_of_it() {
        for _ in 0..100 {
            let delay = with_jitter(MAX_RETRY_DELAY);
            assert!(
                delay >= MAX_RETRY_DELAY / 2 && delay <= MAX_RETRY_DELAY,
                "{delay:?}"
            );
        }
    }
}
