//! `ctl hooks install claude|codex|gemini`: writes an agent CLI's hook configuration into a
//! workspace's settings so its hooks reach celistrad (`celistrad hook <kind>`, docs/hooks.md),
//! merged with what is there: the user's own hooks and other settings stay, key order included,
//! and a second run changes nothing. It prints what it added; a file it cannot read as JSON
//! (TOML for Codex) is an error and stays untouched.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{CtlResult, Failure};
use crate::HomeArg;

#[derive(Debug, Args)]
pub(crate) struct HooksArgs {
    #[command(subcommand)]
    action: HooksAction,
}

#[derive(Debug, Subcommand)]
enum HooksAction {
    /// Write the hooks of an agent CLI into a workspace's settings (merged; idempotent).
    Install(InstallArgs),
}

#[derive(Debug, Args)]
struct InstallArgs {
    /// The agent CLI: claude (.claude/settings.json), codex (.codex/config.toml) or gemini
    /// (.gemini/settings.json).
    cli: Cli,
    /// The workspace to write into [default: the current directory].
    #[arg(long, value_name = "DIR", conflicts_with = "agent")]
    workspace: Option<PathBuf>,
    /// The workspace (its worktree, for a --worktree agent) of this agent of the local daemon.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Show what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Claude Code: leave out `celistrad ask --hook claude` on PermissionRequest (permission
    /// dialogs then stay in the terminal instead of reaching your phone).
    #[arg(long)]
    no_approvals: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Cli {
    Claude,
    Codex,
    Gemini,
}

/// One hook to have in a settings file: under `event`, a group with `matcher` (if any) running
/// `command`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    event: &'static str,
    matcher: Option<&'static str>,
    command: &'static str,
}

const CLAUDE_HOOK: &str = "celistrad hook claude";
const CLAUDE_ASK: &str = "celistrad ask --hook claude";
const GEMINI_HOOK: &str = "celistrad hook gemini";
/// Codex runs its `notify` program with the JSON of a finished turn as the last argument.
const CODEX_NOTIFY: [&str; 3] = ["celistrad", "hook", "codex"];

/// Claude Code's events celistrad reads (docs/hooks.md says what each means to it).
fn claude_hooks(approvals: bool) -> Vec<Wanted> {
    let plain = |event| Wanted {
        event,
        matcher: None,
        command: CLAUDE_HOOK,
    };
    let tools = |event, command| Wanted {
        event,
        matcher: Some("*"),
        command,
    };
    let mut wanted = vec![
        plain("SessionStart"),
        plain("UserPromptSubmit"),
        tools("PreToolUse", CLAUDE_HOOK),
        tools("PermissionRequest", CLAUDE_HOOK),
    ];
    if approvals {
        wanted.push(tools("PermissionRequest", CLAUDE_ASK));
    }
    wanted.extend([
        plain("Notification"),
        plain("Stop"),
        plain("StopFailure"),
        plain("SessionEnd"),
    ]);
    wanted
}

/// Gemini CLI's events celistrad reads; no matcher: every tool and every lifecycle event.
fn gemini_hooks() -> Vec<Wanted> {
    [
        "SessionStart",
        "BeforeAgent",
        "BeforeTool",
        "AfterTool",
        "AfterAgent",
        "Notification",
        "SessionEnd",
    ]
    .into_iter()
    .map(|event| Wanted {
        event,
        matcher: None,
        command: GEMINI_HOOK,
    })
    .collect()
}

pub(crate) async fn run(
    args: HooksArgs,
    remote: &super::context::RemoteArgs,
    home: &HomeArg,
) -> CtlResult {
    let HooksAction::Install(args) = args.action;
    let workspace = match (&args.workspace, &args.agent) {
        (Some(dir), _) => std::path::absolute(dir)
            .map_err(|e| Failure::Usage(format!("--workspace {}: {e}", dir.display())))?,
        (None, Some(agent)) => {
            let client = super::context::client(remote, home)?;
            let info = client.get_agent(agent).await?;
            PathBuf::from(info.worktree.unwrap_or(info.workspace))
        }
        (None, None) => std::env::current_dir().map_err(|e| {
            Failure::Failed(format!(
                "cannot read the current directory: {e}; pass --workspace"
            ))
        })?,
    };
    if !workspace.is_dir() {
        return Err(Failure::Failed(format!(
            "workspace {} is not a directory",
            workspace.display()
        )));
    }
    let (relative, added) = match args.cli {
        Cli::Claude => (
            ".claude/settings.json",
            install_json(
                &workspace.join(".claude/settings.json"),
                &claude_hooks(!args.no_approvals),
                args.dry_run,
            )?,
        ),
        Cli::Gemini => (
            ".gemini/settings.json",
            install_json(
                &workspace.join(".gemini/settings.json"),
                &gemini_hooks(),
                args.dry_run,
            )?,
        ),
        Cli::Codex => (
            ".codex/config.toml",
            install_codex(&workspace.join(".codex/config.toml"), args.dry_run)?,
        ),
    };
    let file = workspace.join(relative);
    if added.is_empty() {
        println!(
            "{}: nothing to change, celistrad's hooks are already there",
            file.display()
        );
        return Ok(());
    }
    let verb = if args.dry_run { "would add" } else { "added" };
    println!("{}: {verb}", file.display());
    for line in &added {
        println!("  + {line}");
    }
    if args.dry_run {
        println!("(dry run: nothing written)");
    }
    Ok(())
}

/// Reads a settings file (absent or blank: empty), to be written back only if something changes.
fn read_settings(path: &Path) -> Result<Option<String>, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::Failed(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Writes `text` to `path` through a temporary file and a rename, creating its directory.
fn write_settings(path: &Path, text: &str) -> Result<(), Failure> {
    let failed =
        |e: std::io::Error| Failure::Failed(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let temporary = path.with_extension("celistra-new");
    std::fs::write(&temporary, text).map_err(failed)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&temporary, meta.permissions());
    }
    std::fs::rename(&temporary, path).map_err(failed)
}

/// Claude Code and Gemini CLI: merges `wanted` into the JSON settings at `path`.
fn install_json(path: &Path, wanted: &[Wanted], dry_run: bool) -> Result<Vec<String>, Failure> {
    let text = read_settings(path)?;
    let (new_text, added) = merge_json(text.as_deref(), wanted).map_err(|e| {
        Failure::Failed(format!(
            "{}: {e}; the file was left as it is",
            path.display()
        ))
    })?;
    if !added.is_empty() && !dry_run {
        write_settings(path, &new_text)?;
    }
    Ok(added)
}

/// The settings `text` (`None`: no file) with every `wanted` hook present, and what was added.
fn merge_json(text: Option<&str>, wanted: &[Wanted]) -> Result<(String, Vec<String>), String> {
    let mut root = match text {
        Some(text) if !text.trim().is_empty() => serde_json::from_str::<Json>(text)
            .map_err(|e| format!("not valid JSON ({e}); fix it, then run this again"))?,
        _ => Json::Object(vec![]),
    };
    let Json::Object(top) = &mut root else {
        return Err("the settings are not a JSON object".into());
    };
    let hooks = entry(top, "hooks", || Json::Object(vec![]));
    let Json::Object(events) = hooks else {
        return Err("`hooks` is not a JSON object".into());
    };
    let mut added = vec![];
    for hook in wanted {
        let groups = entry(events, hook.event, || Json::Array(vec![]));
        let Json::Array(groups) = groups else {
            return Err(format!("`hooks.{}` is not a JSON array", hook.event));
        };
        if groups.iter().any(|group| runs(group, hook.command)) {
            continue;
        }
        let mut group = vec![];
        if let Some(matcher) = hook.matcher {
            group.push(("matcher".to_owned(), Json::String(matcher.into())));
        }
        group.push((
            "hooks".to_owned(),
            Json::Array(vec![Json::Object(vec![
                ("type".to_owned(), Json::String("command".into())),
                ("command".to_owned(), Json::String(hook.command.into())),
            ])]),
        ));
        groups.push(Json::Object(group));
        added.push(match hook.matcher {
            Some(matcher) => format!("{} (matcher {matcher}): {}", hook.event, hook.command),
            None => format!("{}: {}", hook.event, hook.command),
        });
    }
    let mut text = serde_json::to_string_pretty(&root).expect("JSON values serialise");
    text.push('\n');
    Ok((text, added))
}

/// The value under `key` in an object's members, inserted at the end if missing.
fn entry<'a>(
    members: &'a mut Vec<(String, Json)>,
    key: &str,
    new: impl FnOnce() -> Json,
) -> &'a mut Json {
    let at = match members.iter().position(|(k, _)| k == key) {
        Some(at) => at,
        None => {
            members.push((key.to_owned(), new()));
            members.len() - 1
        }
    };
    &mut members[at].1
}

/// Whether a hook group already runs `command` (whatever its matcher: the user's choice wins).
fn runs(group: &Json, command: &str) -> bool {
    let Some(Json::Array(hooks)) = group.get("hooks") else {
        return false;
    };
    hooks
        .iter()
        .any(|hook| matches!(hook.get("command"), Some(Json::String(c)) if c.trim() == command))
}

/// Codex: `notify = ["celistrad", "hook", "codex"]` at the top of `.codex/config.toml`, edited
/// with `toml_edit`, which keeps the file's comments and layout.
fn install_codex(path: &Path, dry_run: bool) -> Result<Vec<String>, Failure> {
    let text = read_settings(path)?.unwrap_or_default();
    let (new_text, added) = merge_codex(&text).map_err(|e| {
        Failure::Failed(format!(
            "{}: {e}; the file was left as it is",
            path.display()
        ))
    })?;
    if !added.is_empty() && !dry_run {
        write_settings(path, &new_text)?;
    }
    Ok(added)
}

fn merge_codex(text: &str) -> Result<(String, Vec<String>), String> {
    let mut document: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| format!("not valid TOML ({e}); fix it, then run this again"))?;
    let wanted = format!("notify = {CODEX_NOTIFY:?}");
    if let Some(existing) = document.get("notify") {
        let ours = existing.as_array().is_some_and(|array| {
            array.iter().map(|v| v.as_str()).collect::<Vec<_>>() == CODEX_NOTIFY.map(Some).to_vec()
        });
        if ours {
            return Ok((text.to_owned(), vec![]));
        }
        return Err(format!(
            "it already sets `notify = {}`, and Codex runs one notify program; remove that line \
             (or have your program also run `celistrad hook codex \"$1\"`), then run this again",
            existing.to_string().trim()
        ));
    }
    let array: toml_edit::Array = CODEX_NOTIFY.into_iter().collect();
    let mut key = toml_edit::Key::new("notify");
    key.leaf_decor_mut().set_prefix(
        "# celistrad: each finished turn reaches the agent's activity (ctl hooks install codex)\n",
    );
    document.insert_formatted(&key, toml_edit::value(array));
    Ok((document.to_string(), vec![wanted]))
}

/// A JSON value whose objects keep their members in file order (serde_json's own `Value` sorts
/// them without its `preserve_order` feature), so a rewritten settings file differs from the
/// user's only by what was added (and 2-space indentation).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = vec![];
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = vec![];
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_hooks_merge_into_the_users_settings_keeping_their_order_and_hooks() {
        let user = r#"{
  "model": "opus",
  "hooks": {
    "Stop": [{"hooks": [{"type": "command", "command": "say done"}]}],
    "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "celistrad hook claude"}]}]
  },
  "env": {"B": "1", "A": "2"}
}"#;
        let (text, added) = merge_json(Some(user), &claude_hooks(true)).unwrap();
        // PreToolUse already runs the hook (under the user's own matcher): left alone.
        assert!(
            !added.iter().any(|a| a.starts_with("PreToolUse")),
            "{added:?}"
        );
        assert_eq!(added.len(), 8, "{added:?}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["model"], "opus");
        assert_eq!(value["hooks"]["Stop"][0]["hooks"][0]["command"], "say done");
        assert_eq!(
            value["hooks"]["Stop"][1]["hooks"][0]["command"],
            CLAUDE_HOOK
        );
        let permission = &value["hooks"]["PermissionRequest"];
        assert_eq!(permission[0]["matcher"], "*");
        assert_eq!(permission[1]["hooks"][0]["command"], CLAUDE_ASK);
        // Member order is the file's: model, hooks, env; B before A.
        let model = text.find("\"model\"").unwrap();
        let hooks = text.find("\"hooks\"").unwrap();
        let env = text.find("\"env\"").unwrap();
        assert!(model < hooks && hooks < env);
        assert!(text.find("\"B\"").unwrap() < text.find("\"A\"").unwrap());
        // Twice: nothing more.
        let (again, none) = merge_json(Some(&text), &claude_hooks(true)).unwrap();
        assert!(none.is_empty());
        assert_eq!(again, text);
    }

    #[test]
    fn without_approvals_permission_requests_only_report() {
        let (text, added) = merge_json(None, &claude_hooks(false)).unwrap();
        assert_eq!(added.len(), 8);
        assert!(!text.contains(CLAUDE_ASK));
    }

    #[test]
    fn settings_that_are_not_an_object_of_hooks_are_refused() {
        for bad in [
            "{",
            "[1]",
            r#"{"hooks": []}"#,
            r#"{"hooks": {"BeforeTool": {}}}"#,
        ] {
            assert!(merge_json(Some(bad), &gemini_hooks()).is_err(), "{bad}");
        }
        let (_, added) = merge_json(Some("  \n"), &gemini_hooks()).unwrap();
        assert_eq!(added.len(), 7);
    }

    #[test]
    fn codex_notify_is_added_once_and_the_file_keeps_its_comments() {
        let user = "# my settings\nmodel = \"o3\" # fast\n\n[tui]\n# quiet\nnotifications = true\n";
        let (text, added) = merge_codex(user).unwrap();
        assert_eq!(added, [r#"notify = ["celistrad", "hook", "codex"]"#]);
        assert!(
            text.contains("# my settings\nmodel = \"o3\" # fast\n"),
            "{text}"
        );
        assert!(
            text.contains("[tui]\n# quiet\nnotifications = true\n"),
            "{text}"
        );
        let notify = text.find("notify = ").unwrap();
        assert!(notify < text.find("[tui]").unwrap(), "{text}");
        let parsed: toml_edit::DocumentMut = text.parse().unwrap();
        assert_eq!(parsed["tui"]["notifications"].as_bool(), Some(true));
        let (again, none) = merge_codex(&text).unwrap();
        assert!(none.is_empty());
        assert_eq!(again, text);
        let (fresh, _) = merge_codex("").unwrap();
        assert!(
            fresh.contains("notify = [\"celistrad\", \"hook\", \"codex\"]"),
            "{fresh}"
        );
    }

    #[test]
    fn codex_with_another_notify_program_or_bad_toml_is_refused() {
        let other = merge_codex("notify = [\"notify-send\", \"codex\"]\n").unwrap_err();
        assert!(
            other.contains("notify-send") && other.contains("one notify program"),
            "{other}"
        );
        assert!(
            merge_codex("model = \n")
                .unwrap_err()
                .contains("not valid TOML")
        );
    }
}
