//! `celistrad`: runs the daemon (no subcommand) or talks to it (`celistrad ctl …`).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the binary owns the terminal: `ctl` output, and errors before logging starts"
)]

mod ctl;
mod keeper_main;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Keeps long-running processes alive, each in its own PTY: AI coding agents, scrapers, servers.
#[derive(Debug, Parser)]
#[command(name = "celistrad", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    home: HomeArg,
    /// HTTP listen address (port 0 picks a free one; the bound address goes to `http.addr`).
    #[arg(long, default_value = celistra_daemon::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Size of each agent's output ring in KiB, for agents that set none (overrides config.json).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    scrollback_kb: Option<u32>,
    /// Serve the API and dashboard over HTTPS only, with a self-signed certificate made on first
    /// start (tls-cert.pem, tls-key.pem in the state directory); its SHA-256 is printed.
    #[arg(long)]
    tls: bool,
    /// Serve HTTPS with this PEM certificate chain instead (e.g. from an ACME client); picked up
    /// again when the file changes.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Allow plain HTTP on an address other machines can reach (refused otherwise).
    #[arg(long, conflicts_with_all = ["tls", "tls_cert"])]
    insecure_http: bool,
    /// This machine's name in a fleet: a lower-case DNS label (default: the host name's first
    /// label). Kept in the state directory, so later starts need not repeat it.
    #[arg(long, value_name = "NAME")]
    machine_name: Option<String>,
    /// Be the fleet's hub: other machines join with `ctl join` and keep a link to it.
    #[arg(long)]
    hub: bool,
    /// Where the hub takes its machines' links (TLS 1.3; open it to them).
    #[arg(long, default_value = "0.0.0.0:33121", requires = "hub")]
    hub_listen: SocketAddr,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The daemon's state directory.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HomeArg {
    /// State directory [default: $CELISTRA_HOME, else ~/.celistra].
    #[arg(long, global = true, env = "CELISTRA_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
}

impl HomeArg {
    pub(crate) fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(home) = &self.home {
            return Ok(std::path::absolute(home)?);
        }
        let user_home =
            std::env::var_os("HOME").context("neither --home, $CELISTRA_HOME nor $HOME is set")?;
        Ok(PathBuf::from(user_home).join(".celistra"))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Control a running daemon.
    Ctl(Box<ctl::Ctl>),
    /// Work with exported audit logs, without a daemon.
    Audit(OfflineAudit),
    /// Ask for approval, from inside an agent: waits for the decision. Exit 0 go ahead, 1 denied,
    /// 3 expired, 2 usage.
    Ask(ctl::AskArgs),
    /// Report a hook of the agent's CLI, from inside an agent: `celistrad hook claude` (payload
    /// on stdin; Gemini CLI the same), `celistrad hook codex JSON` (Codex `notify`). Prints
    /// nothing on stdout and exits 0 even when the report fails (why, on stderr); 2 for usage.
    Hook(ctl::HookArgs),
    /// Print a completion script for a shell: `source <(celistrad completions bash)`, or save it
    /// where the shell loads completions (`/usr/share/bash-completion/completions/celistrad`,
    /// a directory of `$fpath` as `_celistrad`, `~/.config/fish/completions/celistrad.fish`).
    Completions { shell: clap_complete::Shell },
    /// Write the manual pages: celistrad.1 and one per command (celistrad-ctl-spawn.1, …).
    Man {
        /// Where to write them, e.g. /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Run the daemon as a systemd service: `sudo celistrad service install`, or `--user`.
    Service(service::ServiceArgs),
}

#[derive(Debug, clap::Args)]
struct OfflineAudit {
    #[command(subcommand)]
    action: OfflineAuditAction,
}

#[derive(Debug, Subcommand)]
enum OfflineAuditAction {
    /// Verify an export bundle (`ctl audit export --out DIR`) with only its files and public key.
    Verify {
        /// The bundle's directory: entries.jsonl, checkpoint, public.key.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    // Started as a sandbox's launcher, this binary sets the sandbox up and runs the agent's
    // command in it, before any runtime or thread exists.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == celistra_sandbox::LAUNCHER_ARG)
    {
        celistra_sandbox::launcher_main();
    }
    // Before any thread exists: threads that allocate each take a heap of their own otherwise.
    celistra_sandbox::limit_heap_arenas();
    // The keeper, which holds the agents for whichever daemon runs (`keeper` in the sandbox crate).
    if keeper_main::is_keeper() {
        return keeper_main::run_keeper();
    }
    let cli = Cli::parse();
    // A closed stdout (`ctl events | head -1`) ends a client quietly, killed by SIGPIPE as a Unix
    // filter is (the shell reports 141; a pipeline's status is its last command's). Not for the
    // daemon, whose writes to a closed connection must stay errors, nor for the verbs that must
    // outlive one (`ctl attach` restores the terminal; `ctl daemon stop` polls a daemon going away).
    let dies_of_sigpipe = match &cli.command {
        Some(Command::Ctl(ctl)) => !ctl.must_outlive_a_closed_pipe(),
        Some(
            Command::Audit(_)
            | Command::Ask(_)
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Service(_),
        ) => true,
        // A hook exits 0 whatever becomes of its stderr.
        Some(Command::Hook(_)) | None => false,
    };
    if dies_of_sigpipe {
        celistra_sandbox::default_sigpipe();
    }
    match &cli.command {
        Some(Command::Completions { shell }) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "celistrad", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::Man { out }) => {
            return match clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "error: cannot write the manual pages into {}: {e}",
                        out.display()
                    );
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    if let Some(Command::Audit(offline)) = &cli.command {
        let OfflineAuditAction::Verify { dir } = &offline.action;
        return ctl::verify_audit_bundle(dir);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Ctl(ctl)) => ctl::run(*ctl, &cli.home).await,
            Some(Command::Audit(_) | Command::Completions { .. } | Command::Man { .. }) => {
                unreachable!("handled before the runtime starts")
            }
            Some(Command::Ask(args)) => Ok(ctl::ask(args).await),
            Some(Command::Service(args)) => service::run(args, &cli.home).await,
            Some(Command::Hook(args)) => Ok(ctl::hook(args).await),
            None => run_daemon(cli).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_daemon(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CELISTRA_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let tls = match (cli.tls_cert, cli.tls_key) {
        (Some(cert), Some(key)) => Some(celistra_daemon::TlsMode::Files {
            cert: std::path::absolute(cert)?,
            key: std::path::absolute(key)?,
        }),
        _ => cli.tls.then_some(celistra_daemon::TlsMode::Generate),
    };
    let (ready, mut started) = tokio::sync::mpsc::unbounded_channel();
    let leaving =
        std::sync::Arc::new(tokio::sync::watch::channel(celistra_daemon::Leaving::StopAgents).0);
    let leave = std::sync::Arc::clone(&leaving);
    // Where this binary is now: an upgrade re-executes what is there then (a new version if it
    // was replaced).
    let binary = std::env::var_os(celistra_sandbox::BINARY_ENV)
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok());
    let options = celistra_daemon::Options {
        home: cli.home.resolve()?,
        listen: cli.listen,
        scrollback_kb: cli.scrollback_kb,
        subreaper: true,
        launcher: binary.clone(),
        tls,
        insecure_http: cli.insecure_http,
        machine_name: cli.machine_name,
        hub_listen: cli.hub.then_some(cli.hub_listen),
        ready: Some(ready),
        leaving: Some(leaving),
    };
    tokio::spawn(async move {
        if let Some(ready) = started.recv().await {
            match ready.fingerprint_sha256 {
                Some(fingerprint) => println!(
                    "celistrad: serving {}\ncertificate SHA-256: {fingerprint}\nremote ctl: celistrad ctl context add NAME --url {} --token SECRET --fingerprint {fingerprint}",
                    ready.url, ready.url
                ),
                None => println!("celistrad: serving {}", ready.url),
            }
        }
    });
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        use celistra_daemon::Leaving;
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr2)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!("cannot install the SIGTERM, SIGINT, SIGHUP and SIGUSR2 handlers");
            return;
        };
        let how = tokio::select! {
            _ = term.recv() => Leaving::StopAgents,
            _ = int.recv() => Leaving::StopAgents,
            _ = hup.recv() => Leaving::Upgrade,
            _ = usr2.recv() => Leaving::KeepAgents,
        };
        leave.send_replace(how);
        on_signal.cancel();
    });
    let stopped = celistra_daemon::run(options, shutdown).await?;
    if stopped.leaving == celistra_daemon::Leaving::Upgrade {
        // Same pid, same arguments: the agents stay the keeper's, and the new image takes them
        // over. Only returns if no binary could be executed.
        let arguments: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let error = celistra_sandbox::reexec(binary.as_deref(), &arguments, &stopped.listeners);
        anyhow::bail!(
            "cannot re-execute the daemon for the upgrade: {error}; the agents keep running in \
             the keeper, and starting celistrad again takes them over"
        );
    }
    Ok(())
}
