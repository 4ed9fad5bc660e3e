//! `ctl secret`: secrets for agents. `set NAME` takes the value from stdin when stdin is not a
//! terminal, else prompts for it with echo off (the terminal restored on every way out), never from
//! the command line, where other users could read it in the process list; `ls` shows names and
//! times only; `rm NAME` forgets one.

use std::io::{BufRead, Read};

use celistra_client::Client;
use celistra_proto::{SecretInfo, SecretRequest};
use clap::{Args, Subcommand};
use rustix::termios::{self, LocalModes, OptionalActions, Termios};
use tokio::signal::unix::{SignalKind, signal};

use super::table::{clock, render};
use super::{CtlResult, Failure, print_json};

#[derive(Debug, Args)]
pub(crate) struct SecretArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Set a secret's value, read from stdin (one trailing newline dropped) or, on a terminal, a
    /// prompt that does not echo. Only an owner may. Agents get it by `--secret NAME` or
    /// `--env VAR=secret:NAME`, and their output shows `[secret:NAME]` where it would appear.
    Set {
        /// `[A-Z_][A-Z0-9_]*`, at most 64 bytes, like an environment variable.
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List secrets: names and times, never a value.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Forget a secret; agents that refer to it fail to start until it is set again.
    Rm {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(client: &Client, args: SecretArgs) -> CtlResult {
    match args.action {
        Action::Set { name, json } => {
            celistra_core::secret::validate_name(&name).map_err(Failure::Usage)?;
            let value = if termios::isatty(std::io::stdin()) {
                prompt(&name).await?
            } else {
                read_stdin().await?
            };
            celistra_core::secret::validate_value(&value).map_err(Failure::Usage)?;
            let info: SecretInfo = client.set_secret(&name, &SecretRequest { value }).await?;
            if json {
                print_json(&info);
            } else {
                println!("set secret {}", info.name);
            }
            Ok(())
        }
        Action::Ls { json } => {
            let secrets: Vec<SecretInfo> = client.list_secrets().await?;
            if json {
                print_json(&secrets);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = secrets
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        clock(s.created_at_ms),
                        clock(s.updated_at_ms),
                    ]
                })
                .collect();
            println!("{}", render(&["NAME", "CREATED", "UPDATED"], &rows));
            Ok(())
        }
        Action::Rm { name, json } => {
            let removed: SecretInfo = client.remove_secret(&name).await?;
            if json {
                print_json(&removed);
            } else {
                println!("removed secret {}", removed.name);
            }
            Ok(())
        }
    }
}

/// Stdin whole, less one trailing line end (`echo VALUE |` adds one).
async fn read_stdin() -> Result<String, Failure> {
    let read = tokio::task::spawn_blocking(|| {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
    })
    .await
    .map_err(|e| Failure::Failed(e.to_string()))?
    .map_err(|e| Failure::Failed(format!("cannot read the value from stdin: {e}")))?;
    let mut value = String::from_utf8(read)
        .map_err(|_| Failure::Usage("the value on stdin is not UTF-8 text".into()))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// The terminal with echo off. Dropping it restores the settings it had, on every way out:
/// errors, panics (which unwind through the future that holds it), and the signals `prompt` waits
/// for.
struct EchoOff {
    saved: Termios,
}

impl EchoOff {
    fn enter() -> rustix::io::Result<EchoOff> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        // The Enter that ends the value still moves to the next line.
        quiet.local_modes.insert(LocalModes::ECHONL);
        termios::tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
        Ok(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Asks for the value on the terminal without echoing it. Ctrl-C, SIGTERM and SIGHUP end the
/// prompt with the terminal restored.
async fn prompt(name: &str) -> Result<String, Failure> {
    let failed = |e: std::io::Error| Failure::Failed(format!("cannot read from the terminal: {e}"));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(failed)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(failed)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(failed)?;
    eprint!("Value of secret {name} (not shown): ");
    let quiet = EchoOff::enter().map_err(|e| failed(e.into()))?;
    // A thread of its own, not the runtime's blocking pool: an interrupted read must not hold up
    // the runtime's shutdown.
    let (sender, line) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = sender.send(std::io::stdin().lock().read_line(&mut line).map(|_| line));
    });
    let read = tokio::select! {
        read = line => read,
        _ = interrupt.recv() => return Err(interrupted(quiet)),
        _ = terminate.recv() => return Err(interrupted(quiet)),
        _ = hangup.recv() => return Err(interrupted(quiet)),
    };
    drop(quiet);
    let mut value = read
        .map_err(|_| Failure::Failed("the terminal reader ended".into()))?
        .map_err(failed)?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// The prompt was interrupted: the terminal is restored before the failure is reported.
fn interrupted(quiet: EchoOff) -> Failure {
    drop(quiet);
    eprintln!();
    Failure::Failed("interrupted; the secret was not set".into())
}
