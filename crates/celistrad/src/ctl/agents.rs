//! Agent verbs: spawn, ls, status, stop, start, restart, kill, rm, rename, set.

use std::collections::BTreeMap;

use celistra_client::{Client, ClientError};
use celistra_core::duration::{format_bytes, parse_bytes, parse_millis};
use celistra_proto::{
    Activity, ActivityNotify, AgentInfo, AgentSpec, GroupInfo, IoMode, KillRequest, RemoveQuery,
    RenameRequest, ScaleRequest, Signal, SignalTier, UpdateRequest,
};
use clap::Args;
use futures_util::StreamExt;

use super::health::{ClearHealthArgs, HealthArgs};
use super::schedule::{ClearScheduleArgs, ScheduleArgs, next_run_badge, status_lines};
use super::table::{compact_duration, exit_text, now_ms, render, uptime_text};
use super::watch::{ClearWatchArgs, WatchArgs};
use super::{CtlResult, Failure, on_machine_of, print_json};

#[derive(Debug, Args)]
pub(crate) struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Every machine's agents, from the hub's cache, with a MACHINE column.
    #[arg(long)]
    all_machines: bool,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Debug, Args)]
pub(crate) struct OneAgent {
    /// Agent id or name; MACHINE/AGENT for an agent of another machine of the fleet.
    agent: String,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Debug, Args)]
pub(crate) struct ManyAgents {
    /// Agent ids or names; MACHINE/AGENT for an agent of another machine of the fleet.
    #[arg(required = true)]
    agents: Vec<String>,
    #[command(flatten)]
    json: JsonFlag,
}

/// Settings shared by `spawn` and `set`.
#[derive(Debug, Args)]
pub(crate) struct SettingArgs {
    /// Working directory; must exist [spawn default: the current directory].
    #[arg(long, value_name = "DIR")]
    workspace: Option<std::path::PathBuf>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Give the agent a secret (`ctl secret set`) as the environment variable of its name
    /// (repeatable; an owner's credential is needed). `--env VAR=secret:NAME` gives one under
    /// another name. On `set`, replaces the agent's secrets.
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// Signal that `stop` sends to the process group [default: TERM].
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<Signal>,
    /// Grace period between the stop signal and SIGKILL, e.g. 10s, 500ms [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
    stop_timeout: Option<u64>,
    /// Restart ceiling: restarts allowed in the window [default: 5].
    #[arg(long, value_name = "N")]
    restart_max: Option<u32>,
    /// Length of the restart window, e.g. 60s [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
    restart_window: Option<u64>,
    /// Delay of the second consecutive restart (the first is immediate), doubling per crash [default: 10ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
    backoff_initial: Option<u64>,
    /// Cap of the restart delay [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
    backoff_max: Option<u64>,
    /// Uptime after which the backoff resets [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
    backoff_reset: Option<u64>,
    /// Size of the output ring in KiB [default: 64].
    #[arg(long, value_name = "KIB")]
    scrollback_kb: Option<u32>,
    /// Add a capability to the default set (repeatable): workspace_rw, read_anywhere, network,
    /// subprocess, read:PATH, write:PATH, exec:PATH, connect:PORT, bind:PORT, privileged, …
    /// On `set`, replaces the agent's added capabilities.
    #[arg(long = "cap", value_name = "TOKEN")]
    caps: Vec<String>,
    /// Remove a capability (repeatable); wins over grants. On `set`, replaces the dropped list.
    #[arg(long = "drop-cap", value_name = "TOKEN")]
    drop_caps: Vec<String>,
    /// Run as this user (name or uid) [default: the daemon's user; as root, the workspace's owner].
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Memory ceiling, e.g. 512M, 2G; beyond it the kernel kills the agent.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    memory_max: Option<u64>,
    /// Most processes and threads the agent may have at once.
    #[arg(long, value_name = "N")]
    pids_max: Option<u32>,
    /// CPU share relative to other agents, 1 to 10000 [default: 100].
    #[arg(long, value_name = "WEIGHT")]
    cpu_weight: Option<u32>,
    /// Which AI agent CLI it runs: claude, codex, gemini, aider, or another name (picks its
    /// screen rules) [default: guessed from the command].
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// Type this (then Enter) into the agent when its usage limit resets, e.g. `continue`
    /// [default: restart it at the reset].
    #[arg(long, value_name = "TEXT")]
    limit_input: Option<String>,
    /// Restarts after model errors (overloaded, 5xx, 429, network) allowed in the window before
    /// the agent is stopped [default: 10]; they do not count toward --restart-max.
    #[arg(long, value_name = "N")]
    model_error_max: Option<u32>,
    /// Window of --model-error-max, e.g. 1h [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
    model_error_window: Option<u64>,
    /// Notify (ntfy, webhooks, phones) when the agent has been in an activity for a while, e.g.
    /// `needs-input:60s`, `waiting-limit` (repeatable). On `set`, replaces the list.
    #[arg(long = "notify-on", value_name = "ACTIVITY[:AFTER]", value_parser = parse_notify_on)]
    notify_on: Vec<ActivityNotify>,
    #[command(flatten)]
    schedule: ScheduleArgs,
    #[command(flatten)]
    watch: WatchArgs,
    /// Exit codes that are expected, e.g. `0,2` (repeatable): with --auto-restart, only other
    /// exits are restarted. On `set`, replaces the list.
    #[arg(
        long = "expected-exit-code",
        value_name = "CODE",
        value_delimiter = ','
    )]
    expected_exit_codes: Vec<i32>,
    /// Listen on ADDR and hand the socket to the agent (each instance of a group) as fd 3 with
    /// LISTEN_FDS=1 and LISTEN_PID (systemd socket activation): PORT (on 127.0.0.1),
    /// IP:PORT, or an absolute Unix socket path.
    #[arg(long, value_name = "ADDR")]
    socket: Option<String>,
    #[command(flatten)]
    health: HealthArgs,
    /// Restart the agent (gracefully) when its memory stays above this, e.g. 500M, 1G, 300K
    /// (checked every 2 s; two samples in a row above it). Unlike --memory-max, the kernel kills
    /// nothing; restarts for memory do not count toward --restart-max.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_memory: Option<u64>,
}

/// `needs-input:60s` → notify when the agent has needed input for 60 s.
fn parse_notify_on(text: &str) -> Result<ActivityNotify, String> {
    let (name, after) = text.split_once(':').unwrap_or((text, "0s"));
    let activity = Activity::parse(name).ok_or_else(|| {
        format!(
            "unknown activity `{name}`; use working, needs-input, waiting-approval, \
             waiting-limit, model-error or idle"
        )
    })?;
    Ok(ActivityNotify {
        activity,
        after_secs: parse_millis(after)?.div_ceil(1000),
    })
}

impl SettingArgs {
    /// The settings given on the command line as an update (absent flags leave things as they are).
    fn to_update(&self) -> Result<UpdateRequest, Failure> {
        let mut update = UpdateRequest {
            workspace: self.workspace()?,
            env: self.env_map()?,
            stop_signal: self.stop_signal,
            stop_timeout_ms: self.stop_timeout,
            restart_max: self.restart_max,
            restart_window_secs: secs(self.restart_window),
            backoff_initial_ms: self.backoff_initial,
            backoff_max_ms: self.backoff_max,
            backoff_reset_secs: secs(self.backoff_reset),
            scrollback_kb: self.scrollback_kb,
            capabilities: (!self.caps.is_empty()).then(|| self.caps.clone()),
            drop_capabilities: (!self.drop_caps.is_empty()).then(|| self.drop_caps.clone()),
            user: self.user.clone(),
            memory_max: self.memory_max,
            pids_max: self.pids_max,
            cpu_weight: self.cpu_weight,
            kind: self.kind.clone(),
            limit_input: self.limit_input.clone(),
            model_error_max: self.model_error_max,
            model_error_window_secs: secs(self.model_error_window),
            notify_activity: (!self.notify_on.is_empty()).then(|| self.notify_on.clone()),
            secrets: (!self.secrets.is_empty()).then(|| self.secrets.clone()),
            expected_exit_codes: (!self.expected_exit_codes.is_empty())
                .then(|| self.expected_exit_codes.clone()),
            socket: self.socket.clone(),
            memory_restart: self.max_memory,
            ..UpdateRequest::default()
        };
        self.schedule.fill(&mut update)?;
        self.watch.fill(&mut update)?;
        self.health.fill(&mut update)?;
        Ok(update)
    }

    fn env_map(&self) -> Result<Option<BTreeMap<String, String>>, Failure> {
        if self.env.is_empty() {
            return Ok(None);
        }
        let mut env = BTreeMap::new();
        for pair in &self.env {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| Failure::Usage(format!("--env `{pair}` is not KEY=VALUE")))?;
            env.insert(key.to_owned(), value.to_owned());
        }
        Ok(Some(env))
    }

    fn workspace(&self) -> Result<Option<String>, Failure> {
        self.workspace
            .as_ref()
            .map(|dir| {
                std::path::absolute(dir)
                    .map(|p| p.display().to_string())
                    .map_err(|e| Failure::Usage(format!("--workspace {}: {e}", dir.display())))
            })
            .transpose()
    }
}

fn secs(ms: Option<u64>) -> Option<u64> {
    ms.map(|ms| ms.div_ceil(1000))
}

#[derive(Debug, Args)]
pub(crate) struct SpawnArgs {
    /// Unique name [default: derived from the command]; MACHINE/NAME spawns it on that machine of
    /// the fleet.
    #[arg(long)]
    name: Option<String>,
    /// Restart after any exit you did not ask for (at most 5 restarts in 60 s by default).
    #[arg(long)]
    auto_restart: bool,
    /// Run with stdin, stdout and stderr on pipes instead of a PTY (for services): stdout and stderr
    /// are logged apart (`ctl logs --stderr`) and output is not capped by the PTY layer.
    #[arg(long)]
    no_pty: bool,
    /// Run in a git worktree of the workspace's repository on this branch (made at the first
    /// spawn beside the repository, in `<repo>.worktrees/BRANCH`; an existing branch is checked
    /// out, a new one made from HEAD). One agent per branch.
    #[arg(long, value_name = "BRANCH")]
    worktree: Option<String>,
    /// Create the agent stopped: it runs once you `ctl start` it.
    #[arg(long)]
    no_autostart: bool,
    /// Run N copies, NAME-0 … NAME-(N-1), each with CELISTRA_INSTANCE set to its number; NAME
    /// then names the group (`stop`, `start`, `restart`, `rm` act on every instance; `scale`).
    #[arg(long, value_name = "N")]
    instances: Option<u32>,
    #[command(flatten)]
    settings: SettingArgs,
    #[command(flatten)]
    json: JsonFlag,
    /// The command line, run with /bin/sh -c (quote it as one argument, or put it after --).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

pub(crate) async fn spawn(client: &Client, args: SpawnArgs) -> CtlResult {
    let workspace = match args.settings.workspace()? {
        Some(dir) => dir,
        None => std::env::current_dir()
            .map_err(|e| {
                Failure::Failed(format!(
                    "cannot read the current directory: {e}; pass --workspace"
                ))
            })?
            .display()
            .to_string(),
    };
    let mut spec = AgentSpec {
        name: args.name.unwrap_or_default(),
        command: args.command.join(" "),
        workspace: Some(workspace),
        auto_restart: args.auto_restart,
        no_pty: args.no_pty,
        worktree: args.worktree,
        no_autostart: args.no_autostart,
        instances: args.instances,
        ..AgentSpec::default()
    };
    celistra_core::spec::apply_update(&mut spec, &args.settings.to_update()?);
    let (client, name) = on_machine_of(client, &spec.name)?;
    spec.name = name.to_owned();
    let agent: AgentInfo = client.spawn_agent(&spec).await?;
    if args.json.json {
        print_json(&agent);
    } else {
        println!("{}", agent.id);
        if agent.state == celistra_proto::AgentState::Stopped
            && agent.run == 0
            && agent.schedule.is_none()
        {
            eprintln!(
                "note: it was created stopped (--no-autostart); `celistrad ctl start {}` runs it",
                agent.name
            );
        }
        if let Some(next) = next_run_badge(&agent) {
            eprintln!(
                "note: it waits for its schedule ({next}); `celistrad ctl start {}` runs it now",
                agent.name
            );
        }
    }
    match &agent.last_error {
        Some(error) => Err(Failure::Failed(format!(
            "agent {} ({}) did not start: {error}",
            agent.id, agent.name
        ))),
        None => Ok(()),
    }
}

pub(crate) async fn list(client: &Client, args: LsArgs) -> CtlResult {
    if args.all_machines {
        return list_all_machines(client, args.json).await;
    }
    let agents: Vec<AgentInfo> = client.list_agents().await?;
    if args.json.json {
        print_json(&agents);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = agents.iter().map(agent_row).collect();
    println!("{}", render(&AGENT_COLUMNS, &rows));
    Ok(())
}

const AGENT_COLUMNS: [&str; 12] = [
    "ID", "NAME", "STATE", "ACTIVITY", "PID", "RESTARTS", "CPU", "MEM", "EXIT", "UPTIME",
    "SANDBOX", "COMMAND",
];

/// `ls --all-machines`: one table, a MACHINE column first; an offline machine's agents are as the
/// hub last saw them, and say so.
async fn list_all_machines(client: &Client, json: JsonFlag) -> CtlResult {
    if client.machine().is_some() {
        return Err(Failure::Usage(
            "--all-machines lists every machine; leave out --machine".into(),
        ));
    }
    let machines = client.list_fleet_agents().await?;
    if json.json {
        print_json(&machines);
        return Ok(());
    }
    let mut rows = vec![];
    for machine in &machines {
        let label = if machine.online {
            machine.machine.clone()
        } else {
            format!("{} (OFFLINE)", machine.machine)
        };
        for agent in &machine.agents {
            let mut row = vec![label.clone()];
            row.extend(agent_row(agent));
            rows.push(row);
        }
    }
    let header: Vec<&str> = std::iter::once("MACHINE").chain(AGENT_COLUMNS).collect();
    println!("{}", render(&header, &rows));
    for machine in machines.iter().filter(|m| !m.online) {
        eprintln!(
            "note: machine {} is offline; its agents are shown as the hub last saw them",
            machine.machine
        );
    }
    Ok(())
}

fn agent_row(a: &AgentInfo) -> Vec<String> {
    vec![
        a.id.clone(),
        a.name.clone(),
        a.state.as_str().to_owned(),
        activity_text(a),
        a.pid.map_or("-".into(), |p| p.to_string()),
        a.restarts.to_string(),
        cpu_text(a),
        memory_text(a),
        exit_text(a),
        next_run_badge(a).unwrap_or_else(|| uptime_text(a)),
        sandbox_badge(a).to_owned(),
        a.command.clone(),
    ]
}

/// CPU load as last sampled, `12.5%` (of one core), or `-` without a process.
pub(crate) fn cpu_text(agent: &AgentInfo) -> String {
    agent
        .usage
        .map_or("-".into(), |u| format!("{:.1}%", u.cpu_percent))
}

/// Memory as last sampled, `45.2 MiB`, or `-` without a process.
pub(crate) fn memory_text(agent: &AgentInfo) -> String {
    agent
        .usage
        .map_or("-".into(), |u| format_bytes(u.memory_bytes))
}

/// `ls`'s ACTIVITY column: the activity, with the reset of a usage limit it waits on.
fn activity_text(agent: &AgentInfo) -> String {
    let Some(current) = &agent.activity else {
        return "-".into();
    };
    match (&agent.limit, current.activity) {
        (Some(limit), Activity::WaitingLimit) => format!(
            "waiting-limit ({})",
            limit.reset_at_ms.map_or_else(
                || "reset unknown".to_owned(),
                |reset| format!(
                    "resets in {}",
                    compact_duration(reset.saturating_sub(now_ms()))
                )
            )
        ),
        _ => current.activity.as_str().to_owned(),
    }
}

/// `status`'s lines about what the agent does and why: activity, evidence, last exit's class,
/// the usage limit it waits on, model errors.
fn activity_lines(agent: &AgentInfo) -> Vec<(&'static str, String)> {
    let ago = |at: u64| compact_duration(now_ms().saturating_sub(at));
    let mut lines = vec![("kind", agent.kind.clone())];
    match &agent.activity {
        Some(current) => {
            let evidence = &current.evidence;
            lines.push((
                "activity",
                format!(
                    "{} for {}",
                    current.activity.as_str(),
                    ago(current.since_ms)
                ),
            ));
            lines.push((
                "because",
                format!(
                    "{} ({}, {} ago){}",
                    evidence.signal,
                    match evidence.tier {
                        SignalTier::Hook => "hook",
                        SignalTier::Terminal => "terminal",
                        SignalTier::Screen => "screen",
                    },
                    ago(evidence.at_ms),
                    if evidence.said.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", evidence.said)
                    }
                ),
            ));
        }
        None => lines.push(("activity", "- (no signal yet)".into())),
    }
    if let Some(class) = &agent.exit_class {
        lines.push((
            "exit class",
            format!(
                "{} (from its {}): {}",
                class.class.as_str(),
                class.source,
                class.said
            ),
        ));
    }
    if let Some(limit) = &agent.limit {
        lines.push((
            "usage limit",
            format!(
                "resets {}; {} at {} ({})",
                limit.reset_at_ms.map_or_else(
                    || "at an unknown time".to_owned(),
                    celistra_core::clock::format_rfc3339_ms
                ),
                if limit.action == "input" {
                    "types its limit input"
                } else {
                    "restarts"
                },
                celistra_core::clock::format_rfc3339_ms(limit.resume_at_ms),
                limit.said
            ),
        ));
    }
    if agent.model_errors > 0 {
        lines.push((
            "model errors",
            format!("{} in the window", agent.model_errors),
        ));
    }
    lines
}

pub(crate) async fn status(client: &Client, args: OneAgent) -> CtlResult {
    let (client, key) = on_machine_of(client, &args.agent)?;
    let agent: AgentInfo = client.get_agent(key).await?;
    if args.json.json {
        print_json(&agent);
        return Ok(());
    }
    let s = &agent.settings;
    let mut lines = vec![
        ("id", agent.id.clone()),
        ("name", agent.name.clone()),
        ("state", agent.state.as_str().to_owned()),
        ("pid", agent.pid.map_or("-".into(), |p| p.to_string())),
        ("uptime", uptime_text(&agent)),
        ("restarts", agent.restarts.to_string()),
        ("cpu", cpu_text(&agent)),
        ("memory", memory_text(&agent)),
        ("last exit", exit_text(&agent)),
        ("command", agent.command.clone()),
        ("workspace", agent.workspace.clone()),
        (
            "worktree",
            agent.worktree.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "env keys",
            if agent.env_keys.is_empty() {
                "-".into()
            } else {
                agent.env_keys.join(", ")
            },
        ),
        ("auto-restart", agent.auto_restart.to_string()),
        (
            "io",
            match agent.mode {
                IoMode::Pty => "pty".to_owned(),
                IoMode::Pipes => "pipes (stdout and stderr apart)".to_owned(),
            },
        ),
        ("source", agent.source.clone()),
        ("sandbox", sandbox_text(&agent)),
        (
            "capabilities",
            agent
                .sandbox
                .as_ref()
                .map_or("-".into(), |s| s.capabilities.join(" ")),
        ),
        (
            "user",
            agent
                .sandbox
                .as_ref()
                .map_or("-".into(), |s| s.user.clone()),
        ),
        (
            "limits",
            agent
                .sandbox
                .as_ref()
                .filter(|s| !s.limits.is_empty())
                .map_or("-".into(), |s| s.limits.join("; ")),
        ),
        (
            "stop",
            format!(
                "{} then SIGKILL after {} ms",
                s.stop_signal, s.stop_timeout_ms
            ),
        ),
        (
            "ceiling",
            format!("{} restarts in {} s", s.restart_max, s.restart_window_secs),
        ),
        (
            "backoff",
            format!(
                "immediate, then {} ms doubling to {} ms; resets after {} s up",
                s.backoff_initial_ms, s.backoff_max_ms, s.backoff_reset_secs
            ),
        ),
        (
            "last error",
            agent.last_error.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    lines.splice(3..3, activity_lines(&agent));
    let more = status_lines(&agent)
        .into_iter()
        .chain(super::watch::status_lines(&agent));
    let health = super::health::status_lines(&agent);
    for (label, value) in lines.into_iter().chain(health).chain(more) {
        println!("{:<14}{value}", format!("{label}:"));
    }
    Ok(())
}

/// `ls`'s SANDBOX column: `on`, `OFF` (unsandboxed, loud on purpose), or `-` before the first run.
fn sandbox_badge(agent: &AgentInfo) -> &'static str {
    match &agent.sandbox {
        Some(run) if run.sandboxed => "on",
        Some(_) => "OFF",
        None => "-",
    }
}

/// `status`'s sandbox line.
fn sandbox_text(agent: &AgentInfo) -> String {
    match &agent.sandbox {
        Some(run) if run.sandboxed => "on (namespaces + Landlock + seccomp)".into(),
        Some(run) => format!(
            "OFF: runs unsandboxed ({})",
            match run.unsandboxed_because.as_deref() {
                Some("privileged") => "it holds the `privileged` capability",
                Some("switched_off") => "the sandbox is switched off: `celistrad ctl sandbox on`",
                _ => "unknown reason",
            }
        ),
        None => "- (not spawned yet)".into(),
    }
}

/// Stops agents; of those named, dependents stop before what they depend on.
pub(crate) async fn stop(client: &Client, args: ManyAgents) -> CtlResult {
    let waves = super::health::stop_waves(client, &args.agents).await?;
    each(client, waves, &args.json, "stopped", async |c, key| {
        c.stop_agent(key).await
    })
    .await
}

pub(crate) async fn start(client: &Client, args: ManyAgents) -> CtlResult {
    each(
        client,
        vec![args.agents],
        &args.json,
        "started",
        async |c, key| c.start_agent(key).await,
    )
    .await
}

/// `restart`: agents or groups, at once or (groups) one instance at a time.
#[derive(Debug, Args)]
pub(crate) struct RestartArgs {
    #[command(flatten)]
    agents: ManyAgents,
    /// For a group: restart its instances one at a time, each new one running before the next
    /// old one stops (with --socket, no connection is refused meanwhile).
    #[arg(long)]
    rolling: bool,
}

pub(crate) async fn restart(client: &Client, args: RestartArgs) -> CtlResult {
    if !args.rolling {
        return each(
            client,
            vec![args.agents.agents],
            &args.agents.json,
            "restarted",
            async |c, key| c.restart_agent(key).await,
        )
        .await;
    }
    for key in &args.agents.agents {
        let (client, group) = on_machine_of(client, key)?;
        let info = client.rolling_restart_group(group).await?;
        print_group(&info, "restarted", args.agents.json.json);
    }
    Ok(())
}

/// The agent or group part of a `ctl` key (`MACHINE/NAME` or `NAME`).
fn group_or_agent(key: &str) -> String {
    key.rsplit_once('/')
        .map_or(key, |(_, name)| name)
        .to_owned()
}

/// `scale`: a group's number of instances.
#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    /// Group name (MACHINE/GROUP on another machine).
    group: String,
    /// How many instances it should have; the highest-numbered ones are added or removed.
    instances: u32,
    #[command(flatten)]
    json: JsonFlag,
}

pub(crate) async fn scale(client: &Client, args: ScaleArgs) -> CtlResult {
    let (client, group) = on_machine_of(client, &args.group)?;
    let request = ScaleRequest {
        instances: args.instances,
    };
    let info = client.scale_group(group, &request).await?;
    print_group(&info, "scaled", args.json.json);
    Ok(())
}

fn print_group(info: &GroupInfo, done: &str, json: bool) {
    if json {
        print_json(info);
    } else {
        println!("{done} {}: {}", info.name, info.instances.join(" "));
    }
}

/// `rm`: agents, and what becomes of their worktrees.
#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    #[command(flatten)]
    agents: ManyAgents,
    /// Keep a --worktree agent's worktree and branch (only the agent goes).
    #[arg(long, conflicts_with = "discard_worktree")]
    keep_worktree: bool,
    /// Remove a --worktree agent's worktree even with uncommitted or untracked work in it (its
    /// branch and commits stay). Without either flag, such a worktree is refused, listing the files.
    #[arg(long)]
    discard_worktree: bool,
}

pub(crate) async fn remove(client: &Client, args: RemoveArgs) -> CtlResult {
    let query = RemoveQuery {
        keep_worktree: args.keep_worktree,
        discard_worktree: args.discard_worktree,
    };
    let agents = args.agents;
    each(
        client,
        vec![agents.agents],
        &agents.json,
        "removed",
        async |c, key| c.remove_agent(key, &query).await,
    )
    .await
}

/// Most requests `each` has in flight at once.
const AT_ONCE: usize = 64;

/// Runs `operation` on every agent, wave after wave, each wave's agents concurrently (stopping a
/// hundred agents, each with its grace period, takes about as long as the slowest), and reports
/// each as `done`, in the order given; fails if any failed.
async fn each(
    client: &Client,
    waves: Vec<Vec<String>>,
    json: &JsonFlag,
    done: &str,
    operation: impl AsyncFn(&Client, &str) -> Result<AgentInfo, ClientError>,
) -> CtlResult {
    let operation = &operation;
    let mut outcomes = vec![];
    for wave in &waves {
        let targets = wave
            .iter()
            .map(|key| on_machine_of(client, key).map(|(client, agent)| (key, client, agent)))
            .collect::<Result<Vec<_>, Failure>>()?;
        let wave_outcomes: Vec<_> = futures_util::stream::iter(targets)
            .map(|(key, client, agent)| async move { (key, operation(&client, agent).await) })
            .buffered(AT_ONCE)
            .collect()
            .await;
        outcomes.extend(wave_outcomes);
    }
    let mut failed = vec![];
    let mut results = vec![];
    for (key, result) in outcomes {
        match result {
            Ok(agent) if json.json => results.push(agent),
            // A group's name answers with its first instance, having acted on every one.
            Ok(agent) if ![&agent.id, &agent.name].contains(&&group_or_agent(key)) => {
                println!("{done} group {} (every instance)", group_or_agent(key));
            }
            Ok(agent) => println!("{done} {} ({})", agent.id, agent.name),
            Err(e) => failed.push(format!("{key}: {e}")),
        }
    }
    if json.json {
        print_json(&results);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Failed(failed.join("\nerror: ")))
    }
}

#[derive(Debug, Args)]
pub(crate) struct KillArgs {
    /// Agent id or name (MACHINE/AGENT on another machine).
    agent: String,
    /// HUP, INT, TERM, QUIT or KILL.
    #[arg(long, short, default_value = "TERM")]
    signal: Signal,
}

pub(crate) async fn kill(client: &Client, args: KillArgs) -> CtlResult {
    let request = KillRequest {
        signal: args.signal,
    };
    let (client, key) = on_machine_of(client, &args.agent)?;
    let agent: AgentInfo = client.kill_agent(key, &request).await?;
    println!("sent {} to {} ({})", args.signal, agent.id, agent.name);
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct RenameArgs {
    /// Agent id or current name (MACHINE/AGENT on another machine).
    agent: String,
    /// The new name.
    name: String,
}

pub(crate) async fn rename(client: &Client, args: RenameArgs) -> CtlResult {
    let (client, key) = on_machine_of(client, &args.agent)?;
    let agent: AgentInfo = client
        .rename_agent(key, &RenameRequest { name: args.name })
        .await?;
    println!("renamed {} to {}", agent.id, agent.name);
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// Agent id or name (MACHINE/AGENT on another machine).
    agent: String,
    /// New command line.
    #[arg(long)]
    command: Option<String>,
    /// Turn automatic restarts on or off.
    #[arg(long, value_name = "true|false")]
    auto_restart: Option<bool>,
    #[command(flatten)]
    settings: SettingArgs,
    #[command(flatten)]
    clear: ClearScheduleArgs,
    #[command(flatten)]
    clear_watch: ClearWatchArgs,
    #[command(flatten)]
    clear_health: ClearHealthArgs,
    /// Stop giving the agent its secrets (`--secret`; `secret:NAME` values of `--env` stay until
    /// replaced).
    #[arg(long, conflicts_with = "secrets")]
    no_secrets: bool,
    /// Stop restarting the agent for its memory (`--max-memory`).
    #[arg(long, conflicts_with = "max_memory")]
    no_max_memory: bool,
    /// Restart the agent now so the change applies.
    #[arg(long)]
    restart: bool,
    #[command(flatten)]
    json: JsonFlag,
}

pub(crate) async fn set(client: &Client, args: SetArgs) -> CtlResult {
    let mut update = UpdateRequest {
        command: args.command.clone(),
        auto_restart: args.auto_restart,
        restart: args.restart,
        ..args.settings.to_update()?
    };
    args.clear.fill(&mut update);
    args.clear_watch.fill(&mut update);
    args.clear_health.fill(&mut update);
    if args.no_secrets {
        update.secrets = Some(vec![]);
    }
    update.clear_memory_restart = args.no_max_memory;
    let (client, key) = on_machine_of(client, &args.agent)?;
    let agent: AgentInfo = client.update_agent(key, &update).await?;
    if args.json.json {
        print_json(&agent);
    } else {
        println!("updated {} ({})", agent.id, agent.name);
    }
    Ok(())
}
