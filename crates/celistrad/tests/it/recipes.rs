//! The recipes of docs/recipes/ end to end: Claude Code, Codex, Gemini CLI and Aider as a user
//! runs them under celistrad, each from `ctl` with the recipe's command line, in a worktree of a
//! test repository, sandboxed with the recipe's capabilities. Each CLI is a stand-in shell script
//! named like it, on the agent's `PATH` in a home directory of its own (outside `/tmp`, which a
//! sandbox replaces), that behaves like the real one: it runs the hooks `ctl hooks install` wrote
//! (read from the installed settings, so the test proves the installed configuration works),
//! keeps its state in its own configuration directory (which only the recipe's `write:` grants
//! make writable), prints the real CLI's error and limit formats, and exits as the real one does.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use celistra_proto::{Activity, AgentInfo, AgentState, ExitClass, SignalTier, TerminalRole};

use crate::Daemon;
use crate::approvals::{pending_of, wait_output};
use crate::worktree::Repo;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A user's home for the CLI: outside `/tmp` (so the sandbox sees it), with the stand-in in
/// `~/.local/bin` and the configuration paths a login would have made.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(config_paths: &[&str]) -> Home {
        let dir = tempfile::Builder::new()
            .prefix("celistra-recipe-home-")
            .tempdir_in("/var/tmp")
            .expect("home");
        std::fs::create_dir_all(dir.path().join(".local/bin")).unwrap();
        for path in config_paths {
            let path = dir.path().join(path);
            if path.extension().is_some() {
                std::fs::write(&path, "{}\n").unwrap();
            } else {
                std::fs::create_dir_all(&path).unwrap();
            }
        }
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn join(&self, path: &str) -> PathBuf {
        self.path().join(path)
    }

    /// Installs `script` as `~/.local/bin/NAME`.
    fn install(&self, name: &str, script: &str) {
        let path = self.join(".local/bin").join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `--env HOME=… --env PATH=~/.local/bin:…`, as a user's login shell would have them.
    fn env_args(&self) -> Vec<String> {
        vec![
            "--env".into(),
            format!("HOME={}", self.path().display()),
            "--env".into(),
            format!(
                "PATH={}:/usr/local/bin:/usr/bin:/bin",
                self.join(".local/bin").display()
            ),
        ]
    }
}

/// `ctl ARGS…`, which must succeed.
fn ctl_ok(daemon: &Daemon, args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = daemon.ctl(&args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `ctl spawn --name NAME --workspace REPO --worktree BRANCH FLAGS… --env HOME… -- COMMAND`, a
/// recipe's command line as its doc gives it, which must succeed.
fn spawn_recipe(
    daemon: &Daemon,
    home: &Home,
    repo: &Repo,
    (name, branch): (&str, &str),
    flags: &[&str],
    command: &str,
) {
    let mut args: Vec<String> = [
        "spawn",
        "--name",
        name,
        "--workspace",
        repo.path().to_str().unwrap(),
        "--worktree",
        branch,
    ]
    .into_iter()
    .chain(flags.iter().copied())
    .map(String::from)
    .collect();
    args.extend(home.env_args());
    args.extend(["--".into(), command.into()]);
    ctl_ok(daemon, &args);
}

/// Installs the hooks of `cli` in the main checkout and commits them, as docs/hooks.md advises:
/// every worktree made from it then has them.
fn install_hooks(daemon: &Daemon, repo: &Repo, cli: &str) -> String {
    let out = ctl_ok(
        daemon,
        &[
            "hooks".into(),
            "install".into(),
            cli.into(),
            "--workspace".into(),
            repo.path().display().to_string(),
        ],
    );
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", &format!("celistrad hooks for {cli}")]);
    out
}

fn set_secret(daemon: &Daemon, name: &str, value: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(crate::BIN)
        .args(["ctl", "--home"])
        .arg(daemon.home())
        .args(["secret", "set", name])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Waits for `activity` with evidence of `tier` whose signal contains `signal`.
async fn wait_activity(
    daemon: &Daemon,
    agent: &str,
    activity: Activity,
    tier: SignalTier,
    signal: &str,
) -> AgentInfo {
    daemon
        .wait_agent(
            agent,
            &format!("{} ({tier:?}, {signal})", activity.as_str()),
            |a| {
                a.activity.as_ref().is_some_and(|c| {
                    c.activity == activity
                        && c.evidence.tier == tier
                        && c.evidence.signal.contains(signal)
                })
            },
        )
        .await
}

/// Lets a stand-in waiting on `.go` in its worktree go on.
fn go(worktree: &Path) {
    std::fs::write(worktree.join(".go"), "").unwrap();
}

/// Shell lines every stand-in shares: `wait_go` (until the test says go on, then forgets it), and
/// `fail` (exit 1 right after the last line, as the CLIs do: the daemon reads a run's output to
/// its end before it classifies the exit).
const WAIT_GO: &str = r#"wait_go() { while [ ! -e .go ]; do sleep 0.05; done; rm -f .go; }
fail() { exit 1; }"#;

/// The stand-in for Claude Code. Interactive: a session whose prompts come from the terminal;
/// `-p PROMPT`: one headless turn. Hooks are run as Claude Code runs them: each command of the
/// event's groups in `.claude/settings.json`, with the hook input JSON on stdin.
const CLAUDE: &str = r#"#!/bin/sh
WAIT_GO
sid="s-$$"
transcript="$HOME/.claude/projects/recipe/$sid.jsonl"
hook() {
  input=$(printf '{"session_id":"%s","transcript_path":"%s","cwd":"%s","permission_mode":"default","hook_event_name":"%s"%s}' "$sid" "$transcript" "$PWD" "$1" "$2")
  jq -r --arg e "$1" '.hooks[$e][]?.hooks[]? | select(.type == "command") | .command' .claude/settings.json |
  while IFS= read -r command; do
    said=$(printf '%s' "$input" | sh -c "$command")
    [ -n "$said" ] && echo "hook $1 said: $said"
  done
}
if [ -z "$ANTHROPIC_API_KEY" ]; then echo 'Invalid API key · Please run /login'; exit 1; fi
# Claude Code keeps its sessions in ~/.claude and its state in ~/.claude.json.
mkdir -p "$HOME/.claude/projects/recipe" && echo '{"type":"summary"}' >> "$transcript" || echo 'cannot write ~/.claude'
printf '{"numStartups":1,"projects":{"%s":{}}}\n' "$PWD" > "$HOME/.claude.json" || echo 'cannot write ~/.claude.json'
touch "$HOME/.stray" 2>/dev/null && echo 'wrote outside its grants'
hook SessionStart ',"source":"startup"'
if [ "$1" = "-p" ]; then
  runs="$HOME/.claude/runs-$CELISTRA_AGENT_NAME"
  n=$(( $(cat "$runs" 2>/dev/null || echo 0) + 1 )); echo $n > "$runs"
  hook UserPromptSubmit ",\"prompt\":\"$2\""
  if [ $n = 1 ]; then
    hook StopFailure ',"error":"overloaded","error_details":"529 Overloaded","last_assistant_message":"API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again in a moment. If it persists, check https://status.claude.com."'
    echo 'API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again in a moment. If it persists, check https://status.claude.com.'
    exit 1
  fi
  hook PreToolUse ',"tool_name":"Bash","tool_input":{"command":"cargo test"},"tool_use_id":"t1"'
  echo "run $n: running the tests"
  exec sleep 600
fi
echo '╭──────────────────────────────────────╮'
echo '│ ✻ Welcome to Claude Code!            │'
echo '╰──────────────────────────────────────╯'
printf '> '
read prompt
hook UserPromptSubmit ",\"prompt\":\"$prompt\""
echo '✻ Pondering… (3s · ↓ 1.2k tokens · esc to interrupt)'
hook PreToolUse ',"tool_name":"Bash","tool_input":{"command":"git push origin fix/login"},"tool_use_id":"t1"'
echo '● Bash(git push origin fix/login)'
hook PermissionRequest ',"tool_name":"Bash","tool_input":{"command":"git push origin fix/login"}'
hook PostToolUse ',"tool_name":"Bash","tool_input":{"command":"git push origin fix/login"},"tool_response":{}'
echo '● Pushed fix/login.'
hook Stop ',"stop_hook_active":false,"last_assistant_message":"Pushed fix/login."'
wait_go
hook Notification ',"notification_type":"idle_prompt","message":"Claude is waiting for your input"'
printf '> '
read prompt
hook UserPromptSubmit ",\"prompt\":\"$prompt\""
reset=$(cat .reset)
echo "Claude AI usage limit reached|$reset"
hook StopFailure ",\"error\":\"rate_limit\",\"last_assistant_message\":\"Claude AI usage limit reached|$reset\""
printf '> '
read prompt
echo "resumed with: $prompt"
hook UserPromptSubmit ",\"prompt\":\"$prompt\""
exec sleep 600
"#;

#[tokio::test]
async fn recipe_claude_code_hooks_approval_limit_and_model_error() {
    let daemon = Daemon::start().await;
    let repo = Repo::new();
    let home = Home::new(&[".claude", ".claude.json"]);
    home.install("claude", &CLAUDE.replace("WAIT_GO", WAIT_GO));
    set_secret(&daemon, "ANTHROPIC_API_KEY", "sk-ant-recipe-test-key");
    let installed = install_hooks(&daemon, &repo, "claude");
    assert!(
        installed.contains("PermissionRequest (matcher *): celistrad ask --hook claude"),
        "{installed}"
    );
    let claude_dir = home.join(".claude").display().to_string();
    let claude_json = home.join(".claude.json").display().to_string();
    // The recipe's interactive command line (docs/recipes/claude-code.md).
    spawn_recipe(
        &daemon,
        &home,
        &repo,
        ("fix-login", "fix/login"),
        &[
            "--secret",
            "ANTHROPIC_API_KEY",
            "--cap",
            &format!("write:{claude_dir}"),
            "--cap",
            &format!("write:{claude_json}"),
            "--limit-input",
            "continue",
            "--notify-on",
            "needs-input:60s",
        ],
        "claude",
    );
    let agent = daemon.wait_state("fix-login", AgentState::Running).await;
    assert_eq!(agent.kind, "claude", "guessed from the command");
    let worktree = repo.worktree("fix/login");
    assert_eq!(agent.worktree.as_deref(), Some(worktree.to_str().unwrap()));
    let sandbox = agent.sandbox.clone().expect("sandbox");
    assert!(sandbox.sandboxed, "{sandbox:?}");
    for grant in [&claude_dir, &claude_json] {
        assert!(
            sandbox.capabilities.contains(&format!("write:{grant}")),
            "{sandbox:?}"
        );
    }
    wait_activity(
        &daemon,
        "fix-login",
        Activity::Idle,
        SignalTier::Hook,
        "SessionStart",
    )
    .await;

    let mut terminal = daemon
        .client
        .attach(&agent.id, TerminalRole::Writer)
        .await
        .expect("attach");
    terminal.send_input("fix the login bug\r").await.unwrap();
    // The PermissionRequest hook: the activity, and the approval the ask hook made.
    wait_activity(
        &daemon,
        "fix-login",
        Activity::WaitingApproval,
        SignalTier::Hook,
        "claude hook PermissionRequest",
    )
    .await;
    let approval = pending_of(&daemon, &agent.id).await;
    assert_eq!(approval.origin, "hook");
    // The ask hook puts the process itself in the approval flow's state, too.
    let asking = daemon.agent("fix-login").await;
    assert_eq!(asking.state, AgentState::WaitingApproval);
    let listed = text(&daemon.ctl(&["ls"]).stdout);
    assert!(
        listed.contains("fix-login  waiting-approval  waiting-approval"),
        "{listed}"
    );
    assert!(
        approval.prompt.contains("git push origin fix/login"),
        "{approval:?}"
    );
    let approved = daemon.ctl(&["approvals", "approve", &approval.id]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    let out = wait_output(&daemon, &agent.id, "Pushed fix/login.").await;
    // What the ask hook printed is what Claude Code reads as the dialog's answer.
    let said = out
        .lines()
        .find_map(|line| line.trim().strip_prefix("hook PermissionRequest said: "))
        .unwrap_or_else(|| panic!("no decision in {out}"));
    let decision: serde_json::Value = serde_json::from_str(said).expect("decision JSON");
    assert_eq!(
        decision["hookSpecificOutput"]["decision"]["behavior"], "allow",
        "{decision}"
    );
    assert_eq!(
        decision["hookSpecificOutput"]["hookEventName"],
        "PermissionRequest"
    );
    wait_activity(
        &daemon,
        "fix-login",
        Activity::Idle,
        SignalTier::Hook,
        "claude hook Stop",
    )
    .await;
    // Its secret reached it; its configuration paths are writable, nothing else of its home.
    assert!(!out.contains("cannot write"), "{out}");
    assert!(!out.contains("wrote outside its grants"), "{out}");
    assert!(!out.contains("Please run /login"), "{out}");
    let transcripts = std::fs::read_dir(home.join(".claude/projects/recipe")).unwrap();
    assert_eq!(transcripts.count(), 1);
    let state = std::fs::read_to_string(home.join(".claude.json")).unwrap();
    assert!(state.contains("numStartups"), "{state}");

    // Idle at its prompt: the Notification hook says it needs input.
    go(&worktree);
    wait_activity(
        &daemon,
        "fix-login",
        Activity::NeedsInput,
        SignalTier::Hook,
        "Notification (idle_prompt)",
    )
    .await;
    // The next prompt runs into the plan's limit: waiting-limit to the second, still running.
    let reset_s = now_ms() / 1000 + 3;
    std::fs::write(worktree.join(".reset"), reset_s.to_string()).unwrap();
    terminal.send_input("now the signup page\r").await.unwrap();
    let waiting = daemon
        .wait_agent("fix-login", "waiting on its limit", |a| {
            a.limit.is_some()
                && a.activity
                    .as_ref()
                    .is_some_and(|c| c.activity == Activity::WaitingLimit)
        })
        .await;
    assert_eq!(waiting.state, AgentState::Running);
    let limit = waiting.limit.clone().unwrap();
    assert_eq!(limit.reset_at_ms, Some(reset_s * 1000), "{limit:?}");
    assert_eq!(limit.action, "input");
    let status = daemon.ctl(&["status", "fix-login"]);
    let shown = text(&status.stdout);
    assert!(shown.contains("activity:     waiting-limit"), "{shown}");
    assert!(shown.contains("usage limit:"), "{shown}");
    // At the reset it is typed `continue`.
    wait_output(&daemon, &agent.id, "resumed with: continue").await;
    assert!(now_ms() >= limit.resume_at_ms);
    // Working again from the moment it was typed to (the prompt hook that follows keeps that
    // evidence: a spell of one activity keeps its first evidence).
    wait_activity(
        &daemon,
        "fix-login",
        Activity::Working,
        SignalTier::Hook,
        "typed limit_input",
    )
    .await;
    let after = daemon.agent("fix-login").await;
    assert_eq!((after.run, after.restarts), (1, 0));

    // The headless loop: `claude -p` overloaded is a model error, restarted outside the crash
    // ceiling (zero here), then it works.
    spawn_recipe(
        &daemon,
        &home,
        &repo,
        ("nightly", "nightly"),
        &[
            "--secret",
            "ANTHROPIC_API_KEY",
            "--cap",
            &format!("write:{claude_dir}"),
            "--cap",
            &format!("write:{claude_json}"),
            "--auto-restart",
            "--restart-max",
            "0",
        ],
        "claude -p 'make the failing tests pass' --permission-mode acceptEdits",
    );
    let failed = daemon
        .wait_agent("nightly", "in model-error backoff", |a| {
            a.state == AgentState::Backoff
        })
        .await;
    let class = failed.exit_class.clone().expect("classified");
    assert_eq!(class.class, ExitClass::ModelOverloaded, "{class:?}");
    assert_eq!(class.source, "hook", "{class:?}");
    assert_eq!(
        failed.activity.as_ref().map(|a| a.activity),
        Some(Activity::ModelError)
    );
    let second = wait_activity(
        &daemon,
        "nightly",
        Activity::Working,
        SignalTier::Hook,
        "UserPromptSubmit",
    )
    .await;
    wait_output(&daemon, &second.id, "run 2: running the tests").await;
    assert_eq!(
        (
            second.run,
            second.restarts,
            second.model_errors,
            second.state
        ),
        (2, 1, 1, AgentState::Running)
    );
}

/// The stand-in for Codex: `codex exec PROMPT` runs one turn and exits (1 on failure). At the end
/// of a turn it runs the `notify` program of `.codex/config.toml` with the JSON as the last
/// argument, as Codex does.
const CODEX: &str = r#"#!/bin/sh
WAIT_GO
notify() {
  program=$(sed -n 's/^notify *= *\[\(.*\)\] *$/\1/p' .codex/config.toml | tr -d '",')
  [ -n "$program" ] && $program "$1"
}
if [ -z "$CODEX_API_KEY" ]; then echo 'ERROR: unexpected status 401 Unauthorized: Missing bearer or basic authentication in header'; exit 1; fi
runs="$HOME/.codex/runs-$CELISTRA_AGENT_NAME"
n=$(( $(cat "$runs" 2>/dev/null || echo 0) + 1 )); echo $n > "$runs" || echo 'cannot write ~/.codex'
touch "$HOME/.stray" 2>/dev/null && echo 'wrote outside its grants'
echo 'OpenAI Codex v0.58.0 (research preview)'
echo '--------'
echo "workdir: $PWD"
echo 'model: gpt-5-codex'
echo 'approval: never'
echo 'sandbox: workspace-write'
echo '--------'
echo "user"
echo "$2"
case $n in
1)
  echo 'thinking'
  echo 'Ran the tests: 3 failing in auth::tests.'
  notify "{\"type\":\"agent-turn-complete\",\"thread-id\":\"th-1\",\"turn-id\":\"1\",\"cwd\":\"$PWD\",\"input-messages\":[\"$2\"],\"last-assistant-message\":\"Ran the tests: 3 failing in auth::tests.\"}"
  wait_go
  echo 'ERROR: exceeded retry limit, last status: 500 Internal Server Error, request id: req_5f1c'
  fail;;
*)
  echo "ERROR: You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing), visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again at $(cat .reset-at)."
  fail;;
esac
"#;

#[tokio::test]
async fn recipe_codex_notify_model_error_and_usage_limit() {
    let daemon = Daemon::start_with_env(&[("TZ", "UTC")]).await;
    let repo = Repo::new();
    let home = Home::new(&[".codex"]);
    home.install("codex", &CODEX.replace("WAIT_GO", WAIT_GO));
    set_secret(&daemon, "OPENAI_API_KEY", "sk-proj-recipe-test-key");
    let installed = install_hooks(&daemon, &repo, "codex");
    assert!(installed.contains("notify"), "{installed}");
    let codex_dir = home.join(".codex").display().to_string();
    spawn_recipe(
        &daemon,
        &home,
        &repo,
        ("codex-tests", "codex/tests"),
        &[
            "--env",
            "CODEX_API_KEY=secret:OPENAI_API_KEY",
            "--cap",
            &format!("write:{codex_dir}"),
            "--auto-restart",
            "--restart-max",
            "0",
        ],
        "codex exec --full-auto 'make the failing tests pass'",
    );
    let worktree = repo.worktree("codex/tests");
    // The notify program: the turn is complete, idle, with its last message.
    let idle = wait_activity(
        &daemon,
        "codex-tests",
        Activity::Idle,
        SignalTier::Hook,
        "codex notify agent-turn-complete",
    )
    .await;
    assert_eq!(idle.kind, "codex");
    assert!(idle.sandbox.as_ref().unwrap().sandboxed);
    assert!(
        idle.activity.unwrap().evidence.said.contains("3 failing"),
        "the last message is the evidence"
    );
    // Then the provider fails: a model error, restarted although the crash ceiling is zero.
    let reset_ms = (now_ms() / 60_000 + 2) * 60_000;
    // The daemon runs with TZ=UTC: Codex names a time of the machine's zone.
    let minutes = reset_ms / 60_000 % (24 * 60);
    let (hour, minute) = (minutes / 60, minutes % 60);
    let twelve = if hour % 12 == 0 { 12 } else { hour % 12 };
    let reset = format!(
        "{twelve}:{minute:02} {}",
        if hour < 12 { "AM" } else { "PM" }
    );
    std::fs::write(worktree.join(".reset-at"), &reset).unwrap();
    go(&worktree);
    let backoff = daemon
        .wait_agent("codex-tests", "in model-error backoff", |a| {
            a.state == AgentState::Backoff && a.run == 1
        })
        .await;
    let class = backoff.exit_class.clone().unwrap();
    assert_eq!(
        (class.class, class.source.as_str()),
        (ExitClass::ServerError, "output"),
        "{class:?}"
    );
    assert_eq!(
        backoff.activity.as_ref().map(|a| a.activity),
        Some(Activity::ModelError)
    );
    // The second run hits the plan's limit: waiting-limit until the time Codex named.
    let waiting = daemon
        .wait_agent("codex-tests", "waiting on its limit", |a| {
            a.run == 2 && a.limit.is_some() && a.state == AgentState::Backoff
        })
        .await;
    assert_eq!(waiting.restarts, 1);
    assert_eq!(
        waiting.limit.as_ref().unwrap().reset_at_ms,
        Some(reset_ms),
        "try again at {reset}: {:?}",
        waiting.limit
    );
    assert_eq!(
        waiting.exit_class.as_ref().map(|c| c.class),
        Some(ExitClass::UsageLimit)
    );
    assert_eq!(
        waiting.activity.as_ref().map(|a| a.activity),
        Some(Activity::WaitingLimit)
    );
    let out = wait_output(&daemon, &waiting.id, "usage limit").await;
    assert!(!out.contains("cannot write"), "{out}");
    assert!(!out.contains("wrote outside its grants"), "{out}");
    // The stand-in's own words without a key; a bare "401" would also match a pid.
    assert!(!out.contains("401 Unauthorized"), "{out}");
    let listed = daemon.ctl(&["ls"]);
    assert!(
        text(&listed.stdout).contains("waiting-limit (resets in"),
        "{}",
        text(&listed.stdout)
    );
}

/// The stand-in for Gemini CLI, headless (`gemini -p PROMPT`): it runs the hooks of
/// `.gemini/settings.json` (stdin JSON) and exits 1 on an API error after its own retries (exit
/// codes of geminicli.com/docs/cli/headless). Headless, a tool that would ask is denied, so there
/// is no approval dialog.
const GEMINI: &str = r#"#!/bin/sh
WAIT_GO
sid="g-$$"
hook() {
  input=$(printf '{"session_id":"%s","transcript_path":"%s","cwd":"%s","hook_event_name":"%s","timestamp":"2026-12-06T12:00:00.000Z"%s}' "$sid" "$HOME/.gemini/tmp/chats/$sid.json" "$PWD" "$1" "$2")
  jq -r --arg e "$1" '.hooks[$e][]?.hooks[]? | select(.type == "command") | .command' .gemini/settings.json |
  while IFS= read -r command; do printf '%s' "$input" | sh -c "$command" >/dev/null; done
}
if [ -z "$GEMINI_API_KEY" ]; then echo 'Please set an Auth method in your /root/.gemini/settings.json or specify one of the following environment variables before running: GEMINI_API_KEY, GOOGLE_GENAI_USE_VERTEXAI, GOOGLE_GENAI_USE_GCA'; exit 41; fi
runs="$HOME/.gemini/runs-$CELISTRA_AGENT_NAME"
n=$(( $(cat "$runs" 2>/dev/null || echo 0) + 1 )); echo $n > "$runs" || echo 'cannot write ~/.gemini'
touch "$HOME/.stray" 2>/dev/null && echo 'wrote outside its grants'
hook SessionStart ',"source":"startup"'
hook BeforeAgent ",\"prompt\":\"$2\""
case $n in
1)
  hook BeforeTool ',"tool_name":"run_shell_command","tool_input":{"command":"npm test"}'
  echo 'I will run the tests first.'
  wait_go
  hook AfterTool ',"tool_name":"run_shell_command","tool_input":{"command":"npm test"},"tool_response":{}'
  echo 'Attempt 1 failed with status 429. Retrying with backoff... GaxiosError: [{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}]'
  echo '[API Error: You exceeded your current quota, please check your plan and billing details. Please retry in 2s. (Status: 429)]'
  fail;;
*)
  echo '[API Error: You exceeded your current quota, please check your plan and billing details. Please retry in 3600s. (Status: 429)]'
  fail;;
esac
"#;

#[tokio::test]
async fn recipe_gemini_cli_hooks_rate_limit_and_quota() {
    let daemon = Daemon::start().await;
    let repo = Repo::new();
    let home = Home::new(&[".gemini"]);
    home.install("gemini", &GEMINI.replace("WAIT_GO", WAIT_GO));
    set_secret(&daemon, "GEMINI_API_KEY", "AIza-recipe-test-key");
    install_hooks(&daemon, &repo, "gemini");
    let gemini_dir = home.join(".gemini").display().to_string();
    spawn_recipe(
        &daemon,
        &home,
        &repo,
        ("gemini-tests", "gemini/tests"),
        &[
            "--secret",
            "GEMINI_API_KEY",
            "--cap",
            &format!("write:{gemini_dir}"),
            "--auto-restart",
            "--restart-max",
            "0",
        ],
        "gemini -p 'make the failing tests pass' --approval-mode auto_edit",
    );
    let worktree = repo.worktree("gemini/tests");
    let working = wait_activity(
        &daemon,
        "gemini-tests",
        Activity::Working,
        SignalTier::Hook,
        "gemini hook BeforeAgent",
    )
    .await;
    assert_eq!(working.kind, "gemini");
    assert!(working.sandbox.as_ref().unwrap().sandboxed);
    // The tool's hook keeps it working, and the screen does not overrule the hooks.
    wait_output(&daemon, &working.id, "I will run the tests first.").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = daemon.agent("gemini-tests").await.activity.unwrap();
    assert_eq!(
        (still.activity, still.evidence.tier),
        (Activity::Working, SignalTier::Hook),
        "{still:?}"
    );
    go(&worktree);
    // A per-minute rate limit: a model error, retried no sooner than `Please retry in 2s`.
    let backoff = daemon
        .wait_agent("gemini-tests", "in model-error backoff", |a| {
            a.state == AgentState::Backoff && a.run == 1
        })
        .await;
    let class = backoff.exit_class.clone().unwrap();
    assert_eq!(class.class, ExitClass::RateLimited, "{class:?}");
    let delay = backoff.next_restart_at_ms.unwrap() - backoff.exited_at_ms.unwrap();
    assert!(delay >= 2_000, "{delay} ms: {backoff:?}");
    // A retry delay over 5 minutes is a quota: waiting-limit until now plus the delay.
    let waiting = daemon
        .wait_agent("gemini-tests", "waiting on its quota", |a| {
            a.run == 2 && a.limit.is_some() && a.state == AgentState::Backoff
        })
        .await;
    let reset = waiting
        .limit
        .as_ref()
        .unwrap()
        .reset_at_ms
        .expect("a reset");
    let expected = waiting.exited_at_ms.unwrap() + 3_600_000;
    assert!(
        reset.abs_diff(expected) < 5_000,
        "{reset} vs {expected}: {:?}",
        waiting.limit
    );
    assert_eq!(
        waiting.activity.as_ref().map(|a| a.activity),
        Some(Activity::WaitingLimit)
    );
    assert_eq!(waiting.restarts, 1);
    let out = wait_output(&daemon, &waiting.id, "3600s").await;
    assert!(!out.contains("cannot write"), "{out}");
    assert!(!out.contains("wrote outside its grants"), "{out}");
}

/// The stand-in for Aider: no hooks. It prints its banner, rings the bell (`--notifications`) when
/// it waits for a prompt, asks `(Y)es/(N)o/(D)on't ask again` to add a file, and on a provider
/// error prints litellm's line, its own message and `Retrying in … seconds...`, then gives up and
/// waits at its prompt again (it does not exit). It keeps caches in `~/.aider` and its history in
/// the git root (the worktree).
const AIDER: &str = r#"#!/bin/sh
bell() { case " $* " in *" --notifications "*) printf '\a';; esac; }
if [ -z "$ANTHROPIC_API_KEY" ]; then echo 'The API provider is not able to authenticate you. Check your API key.'; fi
mkdir -p "$HOME/.aider/caches" && echo '{}' > "$HOME/.aider/caches/versioncheck" || echo 'cannot write ~/.aider'
echo '> fix' >> .aider.input.history || echo 'cannot write the worktree'
touch "$HOME/.stray" 2>/dev/null && echo 'wrote outside its grants'
echo '────────────────────────────────────────────────────────────────────────────────'
echo 'Aider v0.86.1'
echo 'Main model: anthropic/claude-sonnet-4-5-20250929 with diff edit format, infinite output'
echo 'Weak model: anthropic/claude-haiku-4-5-20251001'
echo "Git repo: .git with $(git ls-files | wc -l) files"
echo 'Repo-map: using 4096 tokens, auto refresh'
bell "$@"
printf '> '
read prompt
echo 'README'
printf "Add file to the chat? (Y)es/(N)o/(D)on't ask again [Yes]: "
read answer
echo "answered: $answer"
echo 'litellm.InternalServerError: AnthropicException - Overloaded. Handle with `litellm.InternalServerError`.'
echo "The API provider's servers are down or overloaded."
echo 'Retrying in 0.2 seconds...'
sleep 0.3
echo 'litellm.InternalServerError: AnthropicException - Overloaded. Handle with `litellm.InternalServerError`.'
echo "The API provider's servers are down or overloaded."
while [ ! -e .go ]; do sleep 0.05; done
bell "$@"
printf '> '
read prompt
exec sleep 600
"#;

#[tokio::test]
async fn recipe_aider_screen_rules_bell_and_model_error() {
    let daemon = Daemon::start().await;
    let repo = Repo::new();
    let home = Home::new(&[".aider"]);
    home.install("aider", AIDER);
    let aider_dir = home.join(".aider").display().to_string();
    set_secret(&daemon, "ANTHROPIC_API_KEY", "sk-ant-recipe-test-key");
    spawn_recipe(
        &daemon,
        &home,
        &repo,
        ("aider-fix", "aider/fix"),
        &[
            "--secret",
            "ANTHROPIC_API_KEY",
            "--cap",
            &format!("write:{aider_dir}"),
            "--notify-on",
            "needs-input:60s",
            "--notify-on",
            "waiting-approval:60s",
        ],
        "aider --model sonnet --notifications",
    );
    let worktree = repo.worktree("aider/fix");
    // At its prompt: the bell of --notifications.
    let waiting = wait_activity(
        &daemon,
        "aider-fix",
        Activity::NeedsInput,
        SignalTier::Terminal,
        "BEL",
    )
    .await;
    assert_eq!(waiting.kind, "aider");
    assert!(waiting.sandbox.as_ref().unwrap().sandboxed);
    let mut terminal = daemon
        .client
        .attach(&waiting.id, TerminalRole::Writer)
        .await
        .expect("attach");
    terminal
        .send_input("fix the typo in README\r")
        .await
        .unwrap();
    // It asks to add the file: a screen rule, with the prompt as evidence.
    let asking = wait_activity(
        &daemon,
        "aider-fix",
        Activity::WaitingApproval,
        SignalTier::Screen,
        "aider/confirm",
    )
    .await;
    assert!(
        asking
            .activity
            .unwrap()
            .evidence
            .said
            .contains("(Y)es/(N)o/(D)on't ask again"),
        "the prompt is the evidence"
    );
    terminal.send_input("y\r").await.unwrap();
    let failing = wait_activity(
        &daemon,
        "aider-fix",
        Activity::ModelError,
        SignalTier::Screen,
        "aider/api-error",
    )
    .await;
    assert_eq!(
        failing.state,
        AgentState::Running,
        "Aider stays at its prompt"
    );
    go(&worktree);
    let back = wait_activity(
        &daemon,
        "aider-fix",
        Activity::NeedsInput,
        SignalTier::Terminal,
        "BEL",
    )
    .await;
    assert_eq!((back.run, back.restarts), (1, 0));
    let out = wait_output(&daemon, &back.id, "overloaded").await;
    assert!(!out.contains("wrote outside its grants"), "{out}");
    assert!(!out.contains("cannot write"), "{out}");
    assert!(!out.contains("not able to authenticate"), "{out}");
    assert!(home.join(".aider/caches/versioncheck").is_file());
    assert!(worktree.join(".aider.input.history").is_file());
}

/// The `apply` example of each recipe is accepted as written (with the example's paths made this
/// test's): `ctl apply --dry-run` checks every field, capability and secret reference.
#[tokio::test]
async fn recipe_docs_apply_examples_are_accepted() {
    let daemon = Daemon::start().await;
    let repo = Repo::new();
    let home = Home::new(&[".claude", ".claude.json", ".codex", ".gemini", ".aider"]);
    for name in ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"] {
        set_secret(&daemon, name, "recipe-test-key");
    }
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/recipes");
    for recipe in ["claude-code.md", "codex.md", "gemini-cli.md", "aider.md"] {
        let doc = std::fs::read_to_string(docs.join(recipe)).expect("recipe");
        let (_, after) = doc
            .split_once("## `apply` file\n\n```json\n")
            .unwrap_or_else(|| panic!("{recipe} has no apply example"));
        let (example, _) = after.split_once("\n```").unwrap();
        let example = example
            .replace("/home/me/src/app", repo.path().to_str().unwrap())
            .replace("/home/me", home.path().to_str().unwrap());
        let file = home.join(&format!("{recipe}.json"));
        std::fs::write(&file, &example).unwrap();
        let out = daemon.ctl(&["apply", "--dry-run", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{recipe}: {}{}\n{example}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("would be created"),
            "{recipe}: {}",
            text(&out.stdout)
        );
    }
}

/// Gemini CLI at its daily pro quota switches to its flash model and goes on: that is no wait for
/// a reset (which would restart the working agent an hour later), only a model error until its
/// hooks say it works again.
#[tokio::test]
async fn recipe_gemini_cli_falling_back_to_flash_is_not_a_limit_wait() {
    let daemon = Daemon::start().await;
    let command = r#"echo 'You have reached your daily gemini-2.5-pro quota limit. You will be switched to the gemini-2.5-flash model for the rest of this session. To increase your limits, upgrade to a Gemini Code Assist Standard or Enterprise plan with higher limits at https://goo.gle/set-up-gemini-code-assist'; sleep 1.5; printf '%s' '{"hook_event_name":"BeforeAgent","prompt":"go on"}' | celistrad hook gemini; exec sleep 600"#;
    let agent = daemon
        .spawn(celistra_proto::AgentSpec {
            kind: Some("gemini".into()),
            ..crate::spec("flash", command)
        })
        .await;
    let falling_back = wait_activity(
        &daemon,
        &agent.id,
        Activity::ModelError,
        SignalTier::Screen,
        "gemini/model-fallback",
    )
    .await;
    assert_eq!(falling_back.limit, None);
    let working = wait_activity(
        &daemon,
        &agent.id,
        Activity::Working,
        SignalTier::Hook,
        "gemini hook BeforeAgent",
    )
    .await;
    assert_eq!((working.limit, working.state), (None, AgentState::Running));
}
