//! PM2 ecosystem files (`{apps: [...]}` or a bare list of apps; JSON, YAML, or what node made of a
//! JavaScript file) into agent specs, with PM2's defaults where they differ from Celistra's.

use std::collections::BTreeMap;

use celistra_proto::{AgentSpec, RestartCron, Signal};

use super::tree::{Node, Value};
use super::{Import, ImportError, KEEPS_HISTORY, Note, NoteKind, Place};

/// PM2 waits this long after its stop signal before SIGKILL (`kill_timeout`), in milliseconds.
const PM2_KILL_TIMEOUT_MS: u64 = 1600;
/// PM2's cap of `exp_backoff_restart_delay`, in milliseconds.
const PM2_BACKOFF_CAP_MS: u64 = 15_000;
/// Uptime after which PM2 resets its exponential backoff, in seconds.
const PM2_BACKOFF_RESET_SECS: u64 = 30;

/// Where the file is and which `env_<name>` to use.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// As the user named it, for notes and errors.
    pub file: String,
    /// The file's directory, absolute: where a relative `cwd` (and, without one, the app) runs.
    pub base_dir: String,
    /// `--env NAME`: `env_NAME` is merged over `env`.
    pub env_name: Option<String>,
    /// The machine's CPUs, for `instances: max` (and `-1`, one fewer).
    pub cpus: u32,
}

/// Imports a JSON or YAML file (YAML 1.2 reads both, keeping the line of every key).
pub fn from_text(text: &str, options: &Options) -> Result<Import, ImportError> {
    let root = Node::from_yaml(text).map_err(|(line, message)| ImportError {
        file: options.file.clone(),
        line,
        message: format!("does not parse: {message}"),
    })?;
    convert(root, options)
}

/// Imports what node printed for a JavaScript file (`module.exports` as JSON): no lines.
pub fn from_evaluated(value: serde_json::Value, options: &Options) -> Result<Import, ImportError> {
    convert(Node::from_json(value), options)
}

fn convert(root: Node, options: &Options) -> Result<Import, ImportError> {
    let mut import = Import::default();
    let top = Place {
        file: &options.file,
        line: root.line,
        within: "file",
        key: "",
    };
    let apps = match root.value {
        Value::List(apps) => apps,
        Value::Map(entries) => {
            let mut apps = None;
            for (key, line, value) in entries {
                let place = Place {
                    line,
                    key: &key,
                    ..top.clone()
                };
                match (key.as_str(), value.value) {
                    ("apps", Value::List(list)) => apps = Some(list),
                    ("apps", _) => return Err(place.error("is not a list of apps")),
                    ("deploy", _) => import.notes.push(place.note(
                        NoteKind::Unsupported,
                        "PM2's deployment (git pull over SSH, then a reload) has no counterpart: \
                            deploy as you do, then `ctl restart` the agents",
                    )),
                    _ => import
                        .notes
                        .push(place.note(NoteKind::Unsupported, "not a key of an ecosystem file")),
                }
            }
            apps.ok_or_else(|| {
                top.error("has no `apps` list; an ecosystem file is {apps: [{name, script, …}, …]}")
            })?
        }
        _ => return Err(top.error("is neither {apps: [...]} nor a list of apps")),
    };
    let mut selected_somewhere = false;
    for (index, node) in apps.into_iter().enumerate() {
        let line = node.line;
        let (spec, selected) = app(index, node, options, &mut import.notes)?;
        selected_somewhere |= selected;
        if let Some(first) = import.agents.iter().position(|a| a.name == spec.name) {
            return Err(ImportError {
                file: options.file.clone(),
                line,
                message: format!(
                    "apps[{first}] and apps[{index}] are both named `{}`; rename one",
                    spec.name
                ),
            });
        }
        import.agents.push(spec);
    }
    if let Some(env_name) = &options.env_name
        && !selected_somewhere
    {
        return Err(top.error(format!(
            "no app has env_{env_name}, which --env {env_name} selects; check the name"
        )));
    }
    Ok(import)
}

/// One app; also whether it had the selected `env_<name>`.
fn app(
    index: usize,
    node: Node,
    options: &Options,
    notes: &mut Vec<Note>,
) -> Result<(AgentSpec, bool), ImportError> {
    let line = node.line;
    let Value::Map(entries) = node.value else {
        return Err(ImportError {
            file: options.file.clone(),
            line,
            message: format!("apps[{index}] is {}, not an app object", node.kind()),
        });
    };
    let text_of = |key: &str| {
        entries
            .iter()
            .find(|(k, _, _)| k == key)
            .and_then(|(_, _, v)| v.scalar_text())
    };
    let script = text_of("script");
    let name = text_of("name").or_else(|| {
        script.as_deref().map(|s| {
            let file = s.rsplit('/').next().unwrap_or(s);
            file.split_once('.')
                .map_or(file, |(stem, _)| stem)
                .to_owned()
        })
    });
    let within = match &name {
        Some(name) => format!("apps[{index}] ({name})"),
        None => format!("apps[{index}]"),
    };
    let app_place = Place {
        file: &options.file,
        line,
        within: &within,
        key: "",
    };
    let Some(script) = script else {
        return Err(app_place.error("has no script; every app needs one"));
    };
    let mut spec = AgentSpec {
        name: name.unwrap_or_default(),
        // PM2 gives apps pipes, restarts every exit, and stops them with SIGINT, then SIGKILL
        // after 1.6 s.
        no_pty: true,
        auto_restart: true,
        stop_signal: Some(Signal::Int),
        stop_timeout_ms: Some(PM2_KILL_TIMEOUT_MS),
        workspace: Some(options.base_dir.clone()),
        ..AgentSpec::default()
    };
    let mut command = Command {
        script,
        ..Command::default()
    };
    let mut env = BTreeMap::new();
    let mut selected_env = None;
    let mut listen_timeout_ms = None;
    let mut wait_ready = None;
    let mut restart_delay = None;
    let mut exp_backoff = false;
    let mut watch = None;
    let mut watch_ignore = None;
    let mut watch_delay_ms = None;
    for (key, key_line, value) in &entries {
        let place = Place {
            line: *key_line,
            key,
            ..app_place.clone()
        };
        let fail = |m: String| place.error(m);
        match key.as_str() {
            "name" | "script" => {}
            "args" => command.args = Some(words(value).map_err(fail)?),
            "interpreter" => command.interpreter = Some(text(value).map_err(fail)?),
            "interpreter_args" | "node_args" => {
                command.interpreter_args = Some(words(value).map_err(fail)?)
            }
            "cwd" => {
                let cwd = text(value).map_err(fail)?;
                spec.workspace = Some(if cwd.starts_with('/') {
                    cwd
                } else {
                    let inside = cwd.trim_start_matches("./").trim_end_matches('/');
                    match inside {
                        "" | "." => options.base_dir.clone(),
                        _ => format!("{}/{inside}", options.base_dir.trim_end_matches('/')),
                    }
                });
            }
            "env" => env.extend(environment(value).map_err(fail)?),
            key if key.starts_with("env_") => {
                let env_name = &key["env_".len()..];
                if options.env_name.as_deref() == Some(env_name) {
                    selected_env = Some(environment(value).map_err(fail)?);
                } else {
                    notes.push(place.note(
                        NoteKind::Mapped,
                        format!("not selected: `--env {env_name}` merges it over env"),
                    ));
                }
            }
            "instances" => {
                let count = match &value.value {
                    Value::Int(n) if *n >= 1 => u32::try_from(*n).unwrap_or(u32::MAX),
                    Value::Int(0) => options.cpus,
                    Value::Int(-1) => options.cpus.saturating_sub(1).max(1),
                    Value::Text(t) if t == "max" => options.cpus,
                    Value::Text(t) if t.parse::<u32>().is_ok_and(|n| n >= 1) => {
                        t.parse().unwrap_or(1)
                    }
                    _ => {
                        return Err(fail(format!(
                            "{} is not a number of instances; use a number, \
                        max or -1",
                            value.kind()
                        )));
                    }
                };
                if count > 1 {
                    spec.instances = Some(count.min(crate::spec::MAX_INSTANCES));
                    notes.push(place.note(
                        NoteKind::Mapped,
                        format!(
                            "instances {count}: a group of agents NAME-0 … NAME-{}, each with \
                            CELISTRA_INSTANCE (PM2's NODE_APP_INSTANCE)",
                            count - 1
                        ),
                    ));
                }
            }
            "exec_mode" => match text(value).map_err(fail)?.as_str() {
                "fork" | "fork_mode" => {}
                "cluster" | "cluster_mode" => notes.push(place.note(
                    NoteKind::Unsupported,
                    "cluster mode shares the port a Node app listens on through Node's cluster \
                    module; Celistra shares one socket between the instances of any program: \
                    give the group `--socket PORT` (`socket` in the spec) and have the app \
                    accept on fd 3 (LISTEN_FDS, systemd socket activation)",
                )),
                other => return Err(fail(format!("`{other}` is not fork or cluster"))),
            },
            "autorestart" => spec.auto_restart = boolean(value).map_err(fail)?,
            "autostart" => spec.no_autostart = !boolean(value).map_err(fail)?,
            "max_restarts" => {
                let max = u32::try_from(whole(value).map_err(fail)?)
                    .map_err(|_| fail("is negative".into()))?
                    .min(10_000);
                spec.restart_max = Some(max);
                notes.push(place.note(
                    NoteKind::Mapped,
                    format!(
                        "restart_max {max}: PM2 counts unstable restarts (shorter than \
                        min_uptime), Celistra every restart in a rolling window \
                        (restart_window_secs, 60 s by default); then the agent is crashed-out \
                        until started"
                    ),
                ));
            }
            "min_uptime" => {
                let ms = millis(value).map_err(fail)?;
                spec.start_secs = Some(ms.div_ceil(1000)).filter(|secs| *secs > 0);
                notes.push(place.note(
                    NoteKind::Mapped,
                    "start_secs, in whole seconds: a run that ends sooner is a failed start",
                ));
            }
            "restart_delay" => restart_delay = Some((millis(value).map_err(fail)?, place.clone())),
            "exp_backoff_restart_delay" => {
                let ms = millis(value).map_err(fail)?;
                exp_backoff = true;
                spec.backoff_initial_ms = Some(ms);
                spec.backoff_max_ms = Some(PM2_BACKOFF_CAP_MS.max(ms));
                spec.backoff_reset_secs = Some(PM2_BACKOFF_RESET_SECS);
                notes.push(place.note(
                    NoteKind::Mapped,
                    format!(
                        "backoff from {ms} ms, capped at 15 s, reset after 30 s up, as PM2; \
                        Celistra doubles the delay (PM2: ×1.5) and restarts at once after a \
                        healthy run"
                    ),
                ));
            }
            "max_memory_restart" => {
                let bytes = match &value.value {
                    Value::Int(n) => u64::try_from(*n).map_err(|_| fail("is negative".into()))?,
                    Value::Text(t) => crate::duration::parse_bytes(t).map_err(fail)?,
                    _ => {
                        return Err(fail(format!(
                            "{} is not a size; use e.g. 500M",
                            value.kind()
                        )));
                    }
                };
                spec.memory_restart = Some(bytes.max(crate::spec::MIN_MEMORY_RESTART));
                notes.push(place.note(
                    NoteKind::Mapped,
                    "memory_restart: checked every 2 s, restarted after two samples in a row \
                    above it (PM2 checks every 30 s)",
                ));
            }
            "cron_restart" => {
                let cron = text(value).map_err(fail)?;
                if cron.split_whitespace().count() == 6 {
                    notes.push(place.note(
                        NoteKind::Unsupported,
                        format!(
                            "`{cron}` has a seconds field; Celistra's cron has five fields \
                            (minute to weekday): drop the first"
                        ),
                    ));
                } else {
                    let restart_cron = RestartCron {
                        cron,
                        time_zone: None,
                    };
                    crate::schedule::check_restart_cron(&restart_cron).map_err(fail)?;
                    spec.restart_cron = Some(Box::new(restart_cron));
                }
            }
            "watch" => match &value.value {
                Value::Bool(false) => {}
                // The app's directory, known once every key is read.
                Value::Bool(true) => watch = Some((None, place.clone())),
                _ => watch = Some((Some(strings(value).map_err(fail)?), place.clone())),
            },
            "ignore_watch" => watch_ignore = Some(strings(value).map_err(fail)?),
            "watch_delay" => watch_delay_ms = Some(millis(value).map_err(fail)?),
            "kill_timeout" => spec.stop_timeout_ms = Some(millis(value).map_err(fail)?),
            "wait_ready" => wait_ready = Some((boolean(value).map_err(fail)?, place.clone())),
            "listen_timeout" => {
                listen_timeout_ms = Some((millis(value).map_err(fail)?, place.clone()))
            }
            "stop_exit_codes" => {
                spec.expected_exit_codes = match &value.value {
                    Value::List(items) => items
                        .iter()
                        .map(exit_code)
                        .collect::<Result<_, _>>()
                        .map_err(fail)?,
                    _ => vec![exit_code(value).map_err(fail)?],
                };
            }
            "uid" | "user" => spec.user = Some(text(value).map_err(fail)?),
            "treekill" if boolean(value).unwrap_or(true) => notes.push(place.note(
                NoteKind::Mapped,
                "Celistra always stops the whole process tree",
            )),
            "treekill" => notes.push(place.note(
                NoteKind::Unsupported,
                "Celistra always stops the \
                whole process tree; it cannot leave children behind",
            )),
            key => notes.push(place.note(
                NoteKind::Unsupported,
                advice(key).unwrap_or("not a PM2 app key Celistra knows"),
            )),
        }
    }
    if let Some((ms, place)) = restart_delay {
        if exp_backoff {
            notes.push(place.note(
                NoteKind::Unsupported,
                "exp_backoff_restart_delay is set too, and wins (as in PM2)",
            ));
        } else {
            spec.backoff_initial_ms = Some(ms);
            spec.backoff_max_ms = Some(ms);
            notes.push(place.note(
                NoteKind::Mapped,
                format!(
                    "a fixed {ms} ms backoff; Celistra restarts at once after a healthy run \
                    (up backoff_reset_secs, 10 s by default)"
                ),
            ));
        }
    }
    if let Some((true, place)) = wait_ready {
        notes.push(place.note(NoteKind::Unsupported, WAIT_READY));
    }
    if let Some((ms, place)) = listen_timeout_ms {
        notes.push(place.note(
            NoteKind::Unsupported,
            format!("{WAIT_READY}; give the probe a {ms} ms timeout (`--probe-timeout`)"),
        ));
    }
    if let Some((paths, place)) = watch {
        // `watch: true` watches the app's directory.
        let paths = paths.unwrap_or_else(|| vec![".".to_owned()]);
        spec.watch = Some(Box::new(celistra_proto::Watch {
            paths,
            ignore: watch_ignore,
            delay_ms: watch_delay_ms,
        }));
        notes.push(place.note(
            NoteKind::Mapped,
            "watch: a change restarts the agent once changes have been quiet for watch_delay \
            (1 s by default); without ignore_watch, hidden paths and node_modules are ignored, \
            as in PM2",
        ));
    }
    let selected = selected_env.is_some();
    env.extend(selected_env.unwrap_or_default());
    spec.env = env;
    spec.command = command.line(notes, &app_place);
    crate::spec::validate(&spec, true)
        .map_err(|m| app_place.error(format!("agent `{}`: {m}", spec.name)))?;
    Ok((spec, selected))
}

/// Why `wait_ready` (and `listen_timeout`) do not map: the app tells PM2 over Node's IPC channel.
const WAIT_READY: &str = "PM2 waits for the app's process.send('ready'), a Node IPC message \
    Celistra does not receive; give the agent a readiness probe instead: a line it prints \
    (`--ready-line listening`), a TCP connect (`--ready-tcp 127.0.0.1:3000`) or an HTTP GET";

/// App keys that map to no setting, with what to do instead.
const ADVICE: &[(&[&str], &str)] = &[
    (
        &[
            "log_file",
            "log",
            "out_file",
            "output",
            "error_file",
            "err_file",
            "error",
            "merge_logs",
            "combine_logs",
            "log_type",
            "disable_logs",
            "pid_file",
            "pid",
        ],
        KEEPS_HISTORY,
    ),
    (
        &["time", "log_date_format"],
        "Celistra stamps every line of output as it arrives: `ctl logs NAME -t` shows the times",
    ),
    (
        &["watch_options"],
        "chokidar's options have no equivalent: Celistra watches with inotify; use \
        ignore_watch globs and watch_delay",
    ),
    (
        &["increment_var", "instance_var"],
        "each instance gets CELISTRA_INSTANCE (0, 1, …); derive the variable from it in the \
        command, e.g. `PORT=$((8000 + CELISTRA_INSTANCE)) node app.js`",
    ),
    (
        &["gid"],
        "Celistra runs an agent with its user's own groups; choose the user (`uid`)",
    ),
    (
        &["namespace"],
        "Celistra has no namespaces: give the names a common prefix and act on them together",
    ),
    (
        &["shutdown_with_message"],
        "Celistra stops with a signal (`stop_signal`), never with an IPC message",
    ),
    (
        &["source_map_support", "disable_source_map_support"],
        "Node-specific: pass --enable-source-maps in node_args",
    ),
    (
        &["vizion", "post_update", "force"],
        "PM2's own bookkeeping; nothing to run",
    ),
];

fn advice(key: &str) -> Option<&'static str> {
    ADVICE
        .iter()
        .find(|(keys, _)| keys.contains(&key))
        .map(|(_, advice)| *advice)
}

/// The parts of an app's command line.
#[derive(Debug, Default)]
struct Command {
    script: String,
    args: Option<Words>,
    interpreter: Option<String>,
    interpreter_args: Option<Words>,
}

/// Arguments as PM2 takes them: one string (already a command line) or a list of words.
#[derive(Debug, Clone)]
enum Words {
    Line(String),
    List(Vec<String>),
}

impl Words {
    fn render(&self) -> String {
        match self {
            Words::Line(line) => line.clone(),
            Words::List(words) => crate::shell::join(words.iter().map(String::as_str)),
        }
    }
}

impl Command {
    /// `[interpreter [interpreter_args]] script [args]`, quoted for `/bin/sh -c`. Without an
    /// interpreter PM2 picks one by the script's extension, else runs the script itself.
    fn line(self, notes: &mut Vec<Note>, place: &Place<'_>) -> String {
        let extension = self
            .script
            .rsplit_once('.')
            .map(|(_, ext)| ext)
            .unwrap_or("");
        let interpreter = match self.interpreter.as_deref() {
            Some("none") => None,
            Some(interpreter) => Some(interpreter.to_owned()),
            None => match extension {
                "js" | "cjs" | "mjs" => Some("node".to_owned()),
                "py" => {
                    notes.push(place.note(
                        NoteKind::Mapped,
                        "PM2 runs a .py script with `python`; \
                        the import uses python3 (set interpreter to choose)",
                    ));
                    Some("python3".to_owned())
                }
                "sh" => Some("bash".to_owned()),
                "rb" => Some("ruby".to_owned()),
                "php" => Some("php".to_owned()),
                "pl" => Some("perl".to_owned()),
                _ => None,
            },
        };
        let mut parts = vec![];
        if let Some(interpreter) = interpreter {
            parts.push(crate::shell::quote(&interpreter));
            parts.extend(self.interpreter_args.map(|w| w.render()));
        } else if self.interpreter_args.is_some() {
            notes.push(place.note(
                NoteKind::Unsupported,
                "interpreter_args without an \
                interpreter: the script runs by itself, so they have nothing to go to",
            ));
        }
        parts.push(crate::shell::quote(&self.script));
        parts.extend(self.args.map(|w| w.render()));
        parts.retain(|p| !p.is_empty());
        parts.join(" ")
    }
}

fn text(node: &Node) -> Result<String, String> {
    node.scalar_text()
        .ok_or_else(|| format!("is {}, not a string", node.kind()))
}

fn words(node: &Node) -> Result<Words, String> {
    match &node.value {
        Value::List(items) => items
            .iter()
            .map(text)
            .collect::<Result<_, _>>()
            .map(Words::List),
        _ => text(node).map(Words::Line),
    }
}

/// One string or a list of them (paths, globs).
fn strings(node: &Node) -> Result<Vec<String>, String> {
    match &node.value {
        Value::List(items) => items.iter().map(text).collect(),
        _ => text(node).map(|one| vec![one]),
    }
}

fn boolean(node: &Node) -> Result<bool, String> {
    match &node.value {
        Value::Bool(b) => Ok(*b),
        Value::Text(t) if t == "true" || t == "false" => Ok(t == "true"),
        _ => Err(format!("is {}, not true or false", node.kind())),
    }
}

fn whole(node: &Node) -> Result<i64, String> {
    match &node.value {
        Value::Int(n) => Ok(*n),
        Value::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| format!("`{t}` is not a whole number")),
        _ => Err(format!("is {}, not a whole number", node.kind())),
    }
}

fn exit_code(node: &Node) -> Result<i32, String> {
    i32::try_from(whole(node)?).map_err(|_| "is not an exit code".to_owned())
}

/// PM2's durations: a number of milliseconds, or a string such as `10s` (a bare number in a string
/// is milliseconds too).
fn millis(node: &Node) -> Result<u64, String> {
    match &node.value {
        Value::Int(n) => u64::try_from(*n).map_err(|_| "is negative".to_owned()),
        Value::Text(t) if t.trim().bytes().all(|b| b.is_ascii_digit()) => t
            .trim()
            .parse()
            .map_err(|_| format!("`{t}` is not a duration")),
        Value::Text(t) => crate::duration::parse_millis(t),
        _ => Err(format!("is {}, not milliseconds", node.kind())),
    }
}

fn environment(node: &Node) -> Result<BTreeMap<String, String>, String> {
    let Value::Map(entries) = &node.value else {
        return Err(format!("is {}, not an object of variables", node.kind()));
    };
    let mut env = BTreeMap::new();
    for (key, _, value) in entries {
        if value.value == Value::Null {
            continue;
        }
        let value = value
            .scalar_text()
            .ok_or_else(|| format!("variable {key} is {}, not a string", value.kind()))?;
        env.insert(key.clone(), value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(env_name: Option<&str>) -> Options {
        Options {
            file: "ecosystem.config.yaml".into(),
            base_dir: "/srv/app".into(),
            env_name: env_name.map(Into::into),
            cpus: 4,
        }
    }

    fn import(text: &str) -> Import {
        from_text(text, &options(None)).unwrap()
    }

    fn note<'a>(import: &'a Import, key: &str) -> &'a Note {
        import
            .notes
            .iter()
            .find(|n| n.key == key)
            .unwrap_or_else(|| panic!("no note on {key}: {:?}", import.notes))
    }

    #[test]
    fn the_seed_app_runs_its_script_with_its_interpreter_and_pm2_defaults() {
        let got = from_evaluated(
            serde_json::json!({"apps": [
                {"name": "scraper", "script": "scraper.py", "interpreter": "python3"}
            ]}),
            &Options {
                file: "ecosystem.config.js".into(),
                ..options(None)
            },
        )
        .unwrap();
        let spec = &got.agents[0];
        assert_eq!(
            (spec.name.as_str(), spec.command.as_str()),
            ("scraper", "python3 scraper.py")
        );
        assert_eq!(spec.workspace.as_deref(), Some("/srv/app"));
        assert!(spec.auto_restart && spec.no_pty);
        assert_eq!(
            (spec.stop_signal, spec.stop_timeout_ms),
            (Some(Signal::Int), Some(1600))
        );
        assert!(got.notes.is_empty(), "{:?}", got.notes);
    }

    #[test]
    fn commands_quote_paths_and_list_arguments_and_pick_interpreters() {
        let got = import(
            "- script: server.js\n  node_args: --max-old-space-size=512\n  args: [--port, '8080', \
                it's here]\n- name: tool\n  script: ./bin/my tool\n  interpreter: none\n  args: \
                -v --level 2\n- script: job.py\n- script: npm\n  args: start\n- script: s.sh\n  \
                interpreter: /usr/local/bin/bash 5\n",
        );
        let commands: Vec<&str> = got.agents.iter().map(|a| a.command.as_str()).collect();
        assert_eq!(
            commands,
            [
                "node --max-old-space-size=512 server.js --port 8080 'it'\\''s here'",
                "'./bin/my tool' -v --level 2",
                "python3 job.py",
                "npm start",
                "'/usr/local/bin/bash 5' s.sh",
            ]
        );
        assert_eq!(got.agents[0].name, "server");
        assert_eq!(
            got.notes[0].kind,
            NoteKind::Mapped,
            "python3 for .py is said"
        );
    }

    #[test]
    fn env_name_selects_its_block_over_env_and_others_are_noted() {
        let text = "apps:
  - name: api
    script: app.js
    cwd: api
    env:
      PORT: 3000
      NODE_ENV: development
    env_production:
      NODE_ENV: production
    env_staging:
      NODE_ENV: staging
";
        let got = from_text(text, &options(Some("production"))).unwrap();
        let spec = &got.agents[0];
        assert_eq!(spec.env["PORT"], "3000");
        assert_eq!(spec.env["NODE_ENV"], "production");
        assert_eq!(spec.workspace.as_deref(), Some("/srv/app/api"));
        let staging = note(&got, "env_staging");
        assert_eq!((staging.kind, staging.line), (NoteKind::Mapped, Some(10)));
        let plain = import(text);
        assert_eq!(plain.agents[0].env["NODE_ENV"], "development");
        let err = from_text(text, &options(Some("prod")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no app has env_prod"), "{err}");
    }

    #[test]
    fn restart_settings_map_with_their_differences_said() {
        let got = import(
            "apps:
- name: a
  script: a.js
  autorestart: false
  max_restarts: 3
  kill_timeout: 5000
  restart_delay: 2000
  autostart: false
  stop_exit_codes: [0, 2]
  cron_restart: '0 4 * * *'
  uid: www-data
  treekill: true
",
        );
        let spec = &got.agents[0];
        assert_eq!(
            (
                spec.auto_restart,
                spec.restart_max,
                spec.stop_timeout_ms,
                spec.backoff_initial_ms,
                spec.backoff_max_ms,
                spec.no_autostart
            ),
            (false, Some(3), Some(5000), Some(2000), Some(2000), true)
        );
        assert_eq!(spec.expected_exit_codes, [0, 2]);
        assert_eq!(
            spec.restart_cron.as_ref().map(|c| c.cron.as_str()),
            Some("0 4 * * *")
        );
        assert_eq!(spec.user.as_deref(), Some("www-data"));
        for key in ["max_restarts", "restart_delay", "treekill"] {
            assert_eq!(note(&got, key).kind, NoteKind::Mapped, "{key}");
        }
        assert_eq!(note(&got, "max_restarts").line, Some(5));
        let exp =
            import("apps:\n- script: a.js\n  exp_backoff_restart_delay: 100\n  restart_delay: 5\n");
        let spec = &exp.agents[0];
        assert_eq!(
            (
                spec.backoff_initial_ms,
                spec.backoff_max_ms,
                spec.backoff_reset_secs
            ),
            (Some(100), Some(15_000), Some(30))
        );
        assert_eq!(note(&exp, "restart_delay").kind, NoteKind::Unsupported);
        let seconds = import("apps:\n- script: a.js\n  cron_restart: '0 0 4 * * *'\n");
        assert!(seconds.agents[0].restart_cron.is_none());
        assert!(
            note(&seconds, "cron_restart")
                .message
                .contains("seconds field")
        );
        assert!(
            from_text(
                "apps:\n- script: a.js\n  cron_restart: 'nope'\n",
                &options(None)
            )
            .is_err()
        );
    }

    #[test]
    fn replicas_memory_start_window_and_watch_are_mapped_and_ipc_readiness_is_not() {
        let got = import(
            "apps:
- script: a.js
  instances: max
  exec_mode: cluster
  max_memory_restart: 300K
  min_uptime: 5s
  watch: [src]
  ignore_watch: [node_modules, '*.log']
  watch_delay: 500
  wait_ready: true
  listen_timeout: 8000
  increment_var: PORT
",
        );
        let spec = &got.agents[0];
        assert_eq!(spec.instances, Some(4), "max: the CPUs");
        assert_eq!(spec.memory_restart, Some(crate::spec::MIN_MEMORY_RESTART));
        assert_eq!(spec.start_secs, Some(5));
        assert_eq!(
            spec.watch.as_deref(),
            Some(&celistra_proto::Watch {
                paths: vec!["src".into()],
                ignore: Some(vec!["node_modules".into(), "*.log".into()]),
                delay_ms: Some(500),
            })
        );
        for key in ["instances", "max_memory_restart", "min_uptime", "watch"] {
            assert_eq!(note(&got, key).kind, NoteKind::Mapped, "{key}");
        }
        for key in ["exec_mode", "wait_ready", "listen_timeout", "increment_var"] {
            let n = note(&got, key);
            assert_eq!(n.kind, NoteKind::Unsupported, "{key}");
            assert!(!n.message.contains("not supported yet"), "{n}");
        }
        assert!(note(&got, "exec_mode").message.contains("--socket"));
        assert!(note(&got, "wait_ready").message.contains("--ready-line"));
        assert!(note(&got, "listen_timeout").message.contains("8000 ms"));
        let whole_dir = import("apps:\n- script: a.js\n  watch: true\n  instances: -1\n");
        let spec = &whole_dir.agents[0];
        assert_eq!(spec.watch.as_ref().unwrap().paths, ["."]);
        assert_eq!(spec.watch.as_ref().unwrap().ignore, None);
        assert_eq!(spec.instances, Some(3), "-1: one fewer than the CPUs");
        let trivial = "apps:\n- script: a.js\n  instances: 1\n  exec_mode: fork\n  watch: false\n";
        assert!(import(trivial).notes.is_empty());
        assert!(from_text("apps:\n- script: a.js\n  instances: lots\n", &options(None)).is_err());
        assert!(
            from_text(
                "apps:\n- script: a.js\n  max_memory_restart: 5X\n",
                &options(None)
            )
            .is_err()
        );
    }

    #[test]
    fn log_and_other_keys_are_reported_with_their_lines() {
        let got = import(
            "apps:
- name: web
  script: a.js
  out_file: /tmp/o.log
  error_file: /tmp/e.log
  merge_logs: true
  time: true
  namespace: shop
  gid: web
  frobnicate: 1
deploy:
  production: {}
",
        );
        let lines: Vec<(&str, Option<usize>, NoteKind)> = got
            .notes
            .iter()
            .map(|n| (n.key.as_str(), n.line, n.kind))
            .collect();
        assert_eq!(
            lines,
            [
                ("deploy", Some(11), NoteKind::Unsupported),
                ("out_file", Some(4), NoteKind::Unsupported),
                ("error_file", Some(5), NoteKind::Unsupported),
                ("merge_logs", Some(6), NoteKind::Unsupported),
                ("time", Some(7), NoteKind::Unsupported),
                ("namespace", Some(8), NoteKind::Unsupported),
                ("gid", Some(9), NoteKind::Unsupported),
                ("frobnicate", Some(10), NoteKind::Unsupported),
            ]
        );
        assert_eq!(
            got.notes[1].to_string(),
            format!(
                "ecosystem.config.yaml:4: apps[0] (web) out_file: not imported: {KEEPS_HISTORY}"
            )
        );
    }

    #[test]
    fn json_keeps_lines_and_javascript_has_none() {
        let json = "{
  \"apps\": [{
    \"name\": \"api\",
    \"script\": \"app.js\",
    \"log_file\": \"x\"
  }]
}
";
        let got = from_text(json, &options(None)).unwrap();
        assert_eq!(got.notes[0].line, Some(5));
        let js = from_evaluated(
            serde_json::json!([{"name": "api", "script": "app.js", "log_file": "x"}]),
            &options(None),
        )
        .unwrap();
        assert_eq!(js.notes[0].line, None);
        assert_eq!(js.notes[0].within, "apps[0] (api)");
    }

    #[test]
    fn malformed_files_and_apps_are_refused_saying_where() {
        let err = |text: &str| from_text(text, &options(None)).unwrap_err().to_string();
        assert!(err("apps:\n  - name: [x\n").contains("does not parse"));
        assert!(err("name: x\n").contains("has no `apps` list"));
        assert!(
            err("apps:\n- name: x\n")
                .contains("ecosystem.config.yaml:2: apps[0] (x): has no script")
        );
        assert!(
            err("apps:\n- script: a.js\n  env: [1]\n")
                .contains("ecosystem.config.yaml:3: apps[0] (a) env: is a list")
        );
        assert!(err("apps:\n- name: 'bad name'\n  script: a.js\n").contains("agent `bad name`"));
        assert!(err("apps:\n- script: a.js\n  exec_mode: turbo\n").contains("not fork or cluster"));
        assert!(
            err("- script: a.js\n- script: b/a.js\n")
                .contains("apps[0] and apps[1] are both named `a`")
        );
    }
}
