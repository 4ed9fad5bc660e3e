//! Agent specs: what makes one valid, and how an update changes one.

use celistra_proto::{AgentSpec, UpdateRequest};

use crate::{capability, names};

/// Longest command line accepted, in bytes.
pub const MAX_COMMAND_LEN: usize = 64 * 1024;
/// Largest per-agent output ring, in KiB.
pub const MAX_SCROLLBACK_KB: u32 = 64 * 1024;
const DAY_MS: u64 = 86_400_000;

/// Checks a spec. An empty name is allowed only when `name_required` is false (one will be generated).
pub fn validate(spec: &AgentSpec, name_required: bool) -> Result<(), String> {
    if !spec.name.is_empty() || name_required {
        names::validate_name(&spec.name)?;
    }
    if spec.command.trim().is_empty() {
        return Err("command is empty; give the command line to run, e.g. 'python3 run.py'".into());
    }
    if spec.command.len() > MAX_COMMAND_LEN {
        return Err(format!(
            "command is {} bytes long; at most {MAX_COMMAND_LEN} are allowed",
            spec.command.len()
        ));
    }
    if spec.command.contains('\0') {
        return Err("command contains a NUL byte".into());
    }
    if let Some(workspace) = &spec.workspace {
        if !workspace.starts_with('/') {
            return Err(format!("workspace `{workspace}` is not an absolute path"));
        }
        if workspace.contains('\0') {
            return Err("workspace contains a NUL byte".into());
        }
    }
    for (key, value) in &spec.env {
        names::validate_env(key, value)?;
    }
    crate::secret::validate_references(spec)?;
    capability::parse_tokens(&spec.capabilities).map_err(|e| format!("capabilities: {e}"))?;
    capability::parse_tokens(&spec.drop_capabilities)
        .map_err(|e| format!("drop_capabilities: {e}"))?;
    if let Some(user) = &spec.user {
        validate_user(user)?;
    }
    if let Some(kind) = &spec.kind {
        let well_formed = !kind.is_empty()
            && kind.len() <= 32
            && kind.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
        if !well_formed {
            return Err(format!(
                "kind `{kind}` is not an agent kind; use e.g. claude, codex, gemini, aider, or a \
                 lower-case name of your own"
            ));
        }
    }
    if let Some(input) = &spec.limit_input
        && (input.len() > 4096 || input.contains('\0'))
    {
        return Err("limit_input: at most 4096 bytes, without NUL".into());
    }
    if let Some(wait) = spec.notify_activity.iter().find(|n| n.after_secs > 86_400) {
        return Err(format!(
            "notify_activity: {} s is too long to wait; use at most 86400 (a day)",
            wait.after_secs
        ));
    }
    if let Some(schedule) = &spec.schedule {
        crate::schedule::check_schedule(schedule)?;
    }
    if let Some(restart_cron) = &spec.restart_cron {
        crate::schedule::check_restart_cron(restart_cron)?;
    }
    if let Some(watch) = &spec.watch {
        crate::watch::check(watch)?;
    }
    check_exit_codes(&spec.expected_exit_codes)?;
    check_replicas(spec)?;
    check_health_and_order(spec)?;
    check_settings(spec).map_err(|(field, message)| format!("{field}: {message}"))
}

/// Most expected exit codes an agent may list.
pub const MAX_EXPECTED_EXIT_CODES: usize = 256;

/// Exit codes are 0 to 255: a listed code outside that range could never match.
fn check_exit_codes(codes: &[i32]) -> Result<(), String> {
    if codes.len() > MAX_EXPECTED_EXIT_CODES {
        return Err(format!(
            "expected_exit_codes: {} codes listed; at most {MAX_EXPECTED_EXIT_CODES} are allowed",
            codes.len()
        ));
    }
    match codes.iter().find(|code| !(0..=255).contains(*code)) {
        Some(code) => Err(format!(
            "expected_exit_codes: {code} is not an exit code; use 0 to 255"
        )),
        None => Ok(()),
    }
}

/// Whether a run that ended with exit `code` (`None`: killed by a signal) ended as expected: code 0
/// when the agent lists no `expected_exit_codes`, else one of them. `auto_restart` restarts every
/// exit of an agent without a list, and only unexpected ones of an agent with one.
pub fn exit_is_expected(expected_exit_codes: &[i32], code: Option<i32>) -> bool {
    match code {
        None => false,
        Some(code) if expected_exit_codes.is_empty() => code == 0,
        Some(code) => expected_exit_codes.contains(&code),
    }
}

/// Most instances one group may have.
pub const MAX_INSTANCES: u32 = 1000;

/// Checks `instances` (1 to [`MAX_INSTANCES`], and the last instance's name must be a valid
/// name) and `socket` (see [`crate::listen::ListenAddr::parse`]).
fn check_replicas(spec: &AgentSpec) -> Result<(), String> {
    if let Some(instances) = spec.instances {
        if !(1..=MAX_INSTANCES).contains(&instances) {
            return Err(format!(
                "instances: {instances} is out of range; give 1 to {MAX_INSTANCES}"
            ));
        }
        if !spec.name.is_empty() {
            names::validate_name(&instance_name(&spec.name, instances - 1))
                .map_err(|e| format!("instances: {e}; pick a shorter group name"))?;
        }
        if spec.worktree.is_some() {
            return Err(
                "instances: a group cannot use one worktree for every instance; drop --worktree or --instances"
                    .into(),
            );
        }
    }
    if let Some(socket) = &spec.socket {
        crate::listen::ListenAddr::parse(socket)?;
    }
    Ok(())
}

/// The name of instance `index` of group `group`.
pub fn instance_name(group: &str, index: u32) -> String {
    format!("{group}-{index}")
}

/// Checks the numeric overrides of a spec; on error returns the field's name and what is wrong.
pub fn check_settings(spec: &AgentSpec) -> Result<(), (&'static str, String)> {
    let within = |field: &'static str, value: Option<u64>, min: u64, max: u64| match value {
        Some(v) if v < min || v > max => {
            Err((field, format!("{v} is out of range; use {min} to {max}")))
        }
        _ => Ok(()),
    };
    within("stop_timeout_ms", spec.stop_timeout_ms, 0, DAY_MS)?;
    within("restart_max", spec.restart_max.map(u64::from), 0, 10_000)?;
    within("restart_window_secs", spec.restart_window_secs, 1, 86_400)?;
    within("backoff_initial_ms", spec.backoff_initial_ms, 0, DAY_MS)?;
    within("backoff_max_ms", spec.backoff_max_ms, 0, DAY_MS)?;
    within("backoff_reset_secs", spec.backoff_reset_secs, 0, 86_400)?;
    within("memory_max", spec.memory_max, MIN_MEMORY_MAX, u64::MAX)?;
    within("pids_max", spec.pids_max.map(u64::from), 1, 4_194_304)?;
    within("cpu_weight", spec.cpu_weight.map(u64::from), 1, 10_000)?;
    within(
        "model_error_max",
        spec.model_error_max.map(u64::from),
        0,
        10_000,
    )?;
    within(
        "model_error_window_secs",
        spec.model_error_window_secs,
        1,
        604_800,
    )?;
    within(
        "scrollback_kb",
        spec.scrollback_kb.map(u64::from),
        1,
        u64::from(MAX_SCROLLBACK_KB),
    )?;
    within(
        "memory_restart",
        spec.memory_restart,
        MIN_MEMORY_RESTART,
        u64::MAX,
    )?;
    Ok(())
}

/// Checks the probes, the start window and the dependency list.
fn check_health_and_order(spec: &AgentSpec) -> Result<(), String> {
    use crate::probe::{ProbeKind, check};
    if let Some(probe) = &spec.readiness {
        check(probe, ProbeKind::Readiness)?;
    }
    if let Some(probe) = &spec.liveness {
        check(probe, ProbeKind::Liveness)?;
    }
    if let Some(secs) = spec.start_secs
        && secs > 86_400
    {
        return Err(format!(
            "start_secs: {secs} is out of range; use 0 to 86400"
        ));
    }
    crate::depends::check_list(&spec.name, &spec.depends_on)
}

/// Smallest memory restart threshold accepted: below it a shell alone would be restarted forever.
pub const MIN_MEMORY_RESTART: u64 = 1024 * 1024;

/// Smallest memory ceiling accepted: below it even a shell cannot start.
pub const MIN_MEMORY_MAX: u64 = 4 * 1024 * 1024;

/// A user name as `useradd` accepts it, or a numeric uid.
fn validate_user(user: &str) -> Result<(), String> {
    let well_formed = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "user `{user}` is not a user name or uid; use e.g. `www-data` or `1000`"
        ))
    }
}

/// Refuses an update that contradicts itself (a schedule set and cleared at once).
pub fn check_update(update: &UpdateRequest) -> Result<(), String> {
    if update.clear_schedule && update.schedule.is_some() {
        return Err("schedule and clear_schedule were both given; give one".into());
    }
    if update.clear_restart_cron && update.restart_cron.is_some() {
        return Err("restart_cron and clear_restart_cron were both given; give one".into());
    }
    if update.clear_watch && update.watch.is_some() {
        return Err("watch and clear_watch were both given; give one".into());
    }
    if update.clear_readiness && update.readiness.is_some() {
        return Err("readiness and clear_readiness were both given; give one".into());
    }
    if update.clear_liveness && update.liveness.is_some() {
        return Err("liveness and clear_liveness were both given; give one".into());
    }
    if update.clear_memory_restart && update.memory_restart.is_some() {
        return Err("memory_restart and clear_memory_restart were both given; give one".into());
    }
    Ok(())
}

/// Applies the fields an update names. The caller validates the result.
pub fn apply_update(spec: &mut AgentSpec, update: &UpdateRequest) {
    let UpdateRequest {
        name,
        command,
        workspace,
        env,
        auto_restart,
        stop_signal,
        stop_timeout_ms,
        restart_max,
        restart_window_secs,
        backoff_initial_ms,
        backoff_max_ms,
        backoff_reset_secs,
        scrollback_kb,
        no_pty,
        capabilities,
        drop_capabilities,
        user,
        memory_max,
        pids_max,
        cpu_weight,
        kind,
        limit_input,
        model_error_max,
        model_error_window_secs,
        notify_activity,
        schedule,
        restart_cron,
        clear_schedule,
        clear_restart_cron,
        secrets,
        watch,
        clear_watch,
        restart: _,
        expected_exit_codes,
        no_autostart,
        instances,
        socket,
        readiness,
        liveness,
        clear_readiness,
        clear_liveness,
        start_secs,
        depends_on,
        memory_restart,
        clear_memory_restart,
    } = update.clone();
    if let Some(name) = name {
        spec.name = name;
    }
    if let Some(command) = command {
        spec.command = command;
    }
    if workspace.is_some() {
        spec.workspace = workspace;
    }
    if let Some(env) = env {
        spec.env = env;
    }
    if let Some(auto_restart) = auto_restart {
        spec.auto_restart = auto_restart;
    }
    spec.stop_signal = stop_signal.or(spec.stop_signal);
    spec.stop_timeout_ms = stop_timeout_ms.or(spec.stop_timeout_ms);
    spec.restart_max = restart_max.or(spec.restart_max);
    spec.restart_window_secs = restart_window_secs.or(spec.restart_window_secs);
    spec.backoff_initial_ms = backoff_initial_ms.or(spec.backoff_initial_ms);
    spec.backoff_max_ms = backoff_max_ms.or(spec.backoff_max_ms);
    spec.backoff_reset_secs = backoff_reset_secs.or(spec.backoff_reset_secs);
    spec.scrollback_kb = scrollback_kb.or(spec.scrollback_kb);
    if let Some(no_pty) = no_pty {
        spec.no_pty = no_pty;
    }
    if let Some(capabilities) = capabilities {
        spec.capabilities = capabilities;
    }
    if let Some(drop_capabilities) = drop_capabilities {
        spec.drop_capabilities = drop_capabilities;
    }
    spec.user = user.or(spec.user.take());
    spec.memory_max = memory_max.or(spec.memory_max);
    spec.pids_max = pids_max.or(spec.pids_max);
    spec.cpu_weight = cpu_weight.or(spec.cpu_weight);
    spec.kind = kind.or(spec.kind.take());
    spec.limit_input = limit_input.or(spec.limit_input.take());
    spec.model_error_max = model_error_max.or(spec.model_error_max);
    spec.model_error_window_secs = model_error_window_secs.or(spec.model_error_window_secs);
    if let Some(notify_activity) = notify_activity {
        spec.notify_activity = notify_activity;
    }
    spec.schedule = schedule.map(Box::new).or(spec.schedule.take());
    spec.restart_cron = restart_cron.map(Box::new).or(spec.restart_cron.take());
    if clear_schedule {
        spec.schedule = None;
    }
    if clear_restart_cron {
        spec.restart_cron = None;
    }
    if let Some(secrets) = secrets {
        spec.secrets = secrets;
    }
    spec.watch = watch.map(Box::new).or(spec.watch.take());
    if clear_watch {
        spec.watch = None;
    }
    if let Some(expected_exit_codes) = expected_exit_codes {
        spec.expected_exit_codes = expected_exit_codes;
    }
    if let Some(no_autostart) = no_autostart {
        spec.no_autostart = no_autostart;
    }
    spec.instances = instances.or(spec.instances);
    spec.socket = socket.or(spec.socket.take());
    spec.readiness = readiness.map(Box::new).or(spec.readiness.take());
    spec.liveness = liveness.map(Box::new).or(spec.liveness.take());
    if clear_readiness {
        spec.readiness = None;
    }
    if clear_liveness {
        spec.liveness = None;
    }
    match start_secs {
        Some(0) => spec.start_secs = None,
        Some(secs) => spec.start_secs = Some(secs),
        None => {}
    }
    if let Some(depends_on) = depends_on {
        spec.depends_on = depends_on;
    }
    spec.memory_restart = memory_restart.or(spec.memory_restart);
    if clear_memory_restart {
        spec.memory_restart = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str) -> AgentSpec {
        AgentSpec {
            name: "web".into(),
            command: command.into(),
            ..AgentSpec::default()
        }
    }

    #[test]
    fn rejects_what_cannot_run() {
        assert!(validate(&spec("sleep 1"), true).is_ok());
        assert!(
            validate(&spec("  "), true)
                .unwrap_err()
                .contains("command is empty")
        );
        let relative = AgentSpec {
            workspace: Some("rel/dir".into()),
            ..spec("x")
        };
        assert!(validate(&relative, true).unwrap_err().contains("absolute"));
        let unnamed = AgentSpec {
            name: String::new(),
            ..spec("x")
        };
        assert!(validate(&unnamed, false).is_ok());
        assert!(validate(&unnamed, true).is_err());
        let slow = AgentSpec {
            restart_window_secs: Some(0),
            ..spec("x")
        };
        assert!(
            validate(&slow, true)
                .unwrap_err()
                .starts_with("restart_window_secs")
        );
    }

    #[test]
    fn rejects_bad_capabilities_users_and_limits_naming_them() {
        let with = |f: fn(&mut AgentSpec)| {
            let mut s = spec("x");
            f(&mut s);
            validate(&s, true)
        };
        let err = with(|s| s.capabilities = vec!["network".into(), "fly".into()]).unwrap_err();
        assert!(
            err.starts_with("capabilities: unknown capability `fly`"),
            "{err}"
        );
        let err = with(|s| s.drop_capabilities = vec!["read:rel".into()]).unwrap_err();
        assert!(err.starts_with("drop_capabilities:"), "{err}");
        assert!(with(|s| s.user = Some("-rf".into())).is_err());
        assert!(with(|s| s.user = Some("www-data".into())).is_ok());
        assert!(
            with(|s| s.pids_max = Some(0))
                .unwrap_err()
                .starts_with("pids_max")
        );
        assert!(with(|s| s.cpu_weight = Some(10_001)).is_err());
        assert!(
            with(|s| s.memory_max = Some(1024))
                .unwrap_err()
                .starts_with("memory_max")
        );
        assert!(with(|s| s.memory_max = Some(64 << 20)).is_ok());
        assert!(
            with(|s| s.memory_restart = Some(4096))
                .unwrap_err()
                .starts_with("memory_restart")
        );
        assert!(with(|s| s.memory_restart = Some(500 << 20)).is_ok());
    }

    #[test]
    fn memory_restart_is_set_kept_and_cleared_by_updates() {
        let mut s = spec("x");
        apply_update(
            &mut s,
            &UpdateRequest {
                memory_restart: Some(1 << 30),
                ..UpdateRequest::default()
            },
        );
        assert_eq!(s.memory_restart, Some(1 << 30));
        apply_update(&mut s, &UpdateRequest::default());
        assert_eq!(s.memory_restart, Some(1 << 30));
        let clear = UpdateRequest {
            clear_memory_restart: true,
            ..UpdateRequest::default()
        };
        apply_update(&mut s, &clear);
        assert_eq!(s.memory_restart, None);
        let both = UpdateRequest {
            memory_restart: Some(1 << 30),
            ..clear
        };
        assert!(check_update(&both).is_err());
    }

    #[test]
    fn instances_and_sockets_are_checked_naming_the_field() {
        let group = |instances, name: &str| AgentSpec {
            name: name.into(),
            instances: Some(instances),
            ..spec("serve")
        };
        assert!(validate(&group(1000, "web"), true).is_ok());
        assert!(
            validate(&group(0, "web"), true)
                .unwrap_err()
                .contains("instances: 0")
        );
        assert!(
            validate(&group(1001, "web"), true)
                .unwrap_err()
                .contains("1 to 1000")
        );
        let long = "w".repeat(62);
        assert!(validate(&group(10, &long), true).is_ok());
        assert!(
            validate(&group(11, &long), true)
                .unwrap_err()
                .contains("shorter group name")
        );
        let on = |socket: &str| AgentSpec {
            socket: Some(socket.into()),
            ..spec("serve")
        };
        assert!(validate(&on("8080"), true).is_ok());
        assert!(
            validate(&on("443"), true)
                .unwrap_err()
                .contains("below 1024")
        );
        assert_eq!(instance_name("web", 3), "web-3");
    }

    #[test]
    fn update_changes_only_named_fields() {
        let mut s = AgentSpec {
            stop_timeout_ms: Some(5),
            ..spec("a")
        };
        apply_update(
            &mut s,
            &UpdateRequest {
                command: Some("b".into()),
                restart_max: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(
            (s.command.as_str(), s.stop_timeout_ms, s.restart_max),
            ("b", Some(5), Some(2))
        );
        assert_eq!(s.name, "web");
    }

    #[test]
    fn expected_exit_codes_are_exit_codes_and_decide_what_is_clean() {
        let with = |codes: Vec<i32>| AgentSpec {
            expected_exit_codes: codes,
            ..spec("a")
        };
        assert!(validate(&with(vec![0, 2, 255]), true).is_ok());
        let err = validate(&with(vec![0, 256]), true).unwrap_err();
        assert!(err.starts_with("expected_exit_codes: 256"), "{err}");
        assert!(validate(&with(vec![-1]), true).is_err());
        assert!(exit_is_expected(&[], Some(0)));
        assert!(!exit_is_expected(&[], Some(2)));
        assert!(exit_is_expected(&[0, 2], Some(2)));
        assert!(
            !exit_is_expected(&[2], Some(0)),
            "a list without 0 makes 0 unexpected"
        );
        assert!(!exit_is_expected(&[0], None), "a signal is never expected");
    }

    #[test]
    fn a_bad_schedule_is_refused_naming_the_field() {
        let with_cron = |cron: &str| AgentSpec {
            schedule: Some(Box::new(celistra_proto::Schedule {
                cron: cron.into(),
                time_zone: None,
                overlap: celistra_proto::Overlap::Skip,
                missed: celistra_proto::MissedRuns::Skip,
            })),
            ..spec("a")
        };
        assert!(validate(&with_cron("*/5 * * * *"), true).is_ok());
        assert!(
            validate(&with_cron("0 25 * * *"), true)
                .unwrap_err()
                .starts_with("schedule: hour field \"25\"")
        );
        let restart = AgentSpec {
            restart_cron: Some(Box::new(celistra_proto::RestartCron {
                cron: "0 4 * * *".into(),
                time_zone: Some("Europe/Lisbonn".into()),
            })),
            ..spec("a")
        };
        assert!(
            validate(&restart, true)
                .unwrap_err()
                .starts_with("restart_cron: unknown time zone \"Europe/Lisbonn\"")
        );
    }

    #[test]
    fn a_schedule_can_be_cleared_but_not_set_and_cleared_at_once() {
        let mut s = AgentSpec {
            restart_cron: Some(Box::new(celistra_proto::RestartCron {
                cron: "0 4 * * *".into(),
                time_zone: None,
            })),
            ..spec("a")
        };
        let clear = UpdateRequest {
            clear_restart_cron: true,
            ..Default::default()
        };
        assert!(check_update(&clear).is_ok());
        apply_update(&mut s, &clear);
        assert_eq!(s.restart_cron, None);
        let both = UpdateRequest {
            restart_cron: s.restart_cron.as_deref().cloned().or(Some(
                celistra_proto::RestartCron {
                    cron: "0 4 * * *".into(),
                    time_zone: None,
                },
            )),
            clear_restart_cron: true,
            ..Default::default()
        };
        assert!(check_update(&both).unwrap_err().contains("give one"));
    }
}
