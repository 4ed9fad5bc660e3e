//! Screen rules as data: the rules file that says, per agent kind, which phrases on the screen
//! and which terminal titles mean which activity, with built-in defaults (`rules.json` next to
//! this file) that a user's file overrides or extends.
//!
//! # The file
//!
//! ```json
//! {"kinds": {
//!   "claude": {
//!     "quiet_idle_secs": 30,
//!     "bell": "needs-input",
//!     "notify": "needs-input",
//!     "rules": [
//!       {"name": "permission-prompt", "activity": "waiting-approval",
//!        "pattern": "Do you want to .+\\?", "lines": 12}
//!     ],
//!     "title_rules": [
//!       {"name": "spinner", "activity": "working", "pattern": "^[\\x{2800}-\\x{28FF}]"}
//!     ]
//!   }
//! }}
//! ```
//!
//! - `kinds`: one entry per agent kind (`claude`, `codex`, `gemini`, `aider`, `generic`, or a new
//!   name of 1 to 32 letters, digits, `-` or `_`). An agent of a kind without an entry uses
//!   `generic`.
//! - `quiet_idle_secs`: the agent is `idle` after this long with no output while alive and not
//!   using the CPU; `null` turns it off.
//! - `bell`, `notify`: the activity a BEL or an OSC 9 / 777 notification means; `null`: nothing.
//! - `rules`: screen rules in priority order; the first that matches wins. Each looks at the last
//!   `lines` (1 to 200, default 10) non-blank lines of the screen and matches `pattern` (a
//!   [`regex`](https://docs.rs/regex/latest/regex/#syntax) pattern, line by line; `(?i)` for any
//!   case) against each; `name` (1 to 64 characters) names it in the evidence as
//!   `<kind>/<name>`. `activity` is one of `working`, `needs-input`, `waiting-approval`,
//!   `waiting-limit`, `model-error`, `idle`; for `waiting-limit` and `model-error` the daemon
//!   classifies the matched line to learn the reset or the class.
//! - `title_rules`: the same without `lines`, matched against an OSC 0 / 2 title.
//!
//! # A user's file
//!
//! In a user's file a kind's `rules` and `title_rules` come before the built-in ones of that kind,
//! so they win; a user rule with the same name as a built-in one replaces it; `"replace": true`
//! drops every built-in setting and rule of that kind; `quiet_idle_secs`, `bell` and `notify`
//! override the built-in values when present; new kinds are added. Errors name the file, line,
//! column and field, and a bad pattern says what is wrong with it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{LazyLock, OnceLock};

use celistra_proto::{Activity, Evidence, SignalTier};
use regex::Regex;
use serde::{Deserialize, Deserializer};

use super::clip_said;
use crate::json;

/// The built-in rules file.
pub const BUILTIN_RULES: &str = include_str!("rules.json");

/// Lines a screen rule looks at when its `lines` is not given.
pub const DEFAULT_LINES: usize = 10;
/// Most lines a screen rule may look at.
pub const MAX_LINES: usize = 200;

/// The screen rules of every agent kind.
#[derive(Debug, Clone)]
pub struct Rules {
    kinds: BTreeMap<String, KindRules>,
    /// For a lookup when even `generic` is missing (it never is: the built-in file has it).
    empty: KindRules,
}

/// One kind's settings and rules.
#[derive(Debug, Clone, Default)]
pub struct KindRules {
    pub kind: String,
    /// Idle after this many seconds of no output while alive and not using the CPU.
    pub quiet_idle_secs: Option<u64>,
    /// What a BEL means.
    pub bell: Option<Activity>,
    /// What an OSC 9 / 777 notification means.
    pub notify: Option<Activity>,
    /// Screen rules, in priority order.
    pub rules: Vec<Rule>,
    /// Title rules, in priority order.
    pub title_rules: Vec<Rule>,
}

/// A screen or title rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub activity: Activity,
    pub pattern: RulePattern,
    /// How many of the last non-blank lines it looks at (1 for a title rule).
    pub lines: usize,
}

/// A rule's pattern, compiled the first time the rule is tried: the daemon holds the rules of
/// every kind from start, and most kinds never run on a given machine (compiled, the built-in
/// rules took about 0.8 MiB of an idle daemon's heap).
#[derive(Debug, Clone)]
pub struct RulePattern {
    source: String,
    compiled: OnceLock<Option<Regex>>,
}

impl RulePattern {
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `text` matches. The pattern compiled when the rules were read, so it compiles
    /// again here; if it ever did not, the rule would match nothing.
    pub fn is_match(&self, text: &str) -> bool {
        self.compiled
            .get_or_init(|| Regex::new(&self.source).ok())
            .as_ref()
            .is_some_and(|regex| regex.is_match(text))
    }

    #[cfg(test)]
    fn is_compiled(&self) -> bool {
        self.compiled.get().is_some()
    }
}

/// A rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenMatch {
    pub activity: Activity,
    /// `<kind>/<rule name>`.
    pub rule: String,
    /// The matching line or title, clipped to 200 characters.
    pub said: String,
}

static BUILTIN: LazyLock<Rules> = LazyLock::new(|| {
    let file: RulesFile = json::parse(BUILTIN_RULES, "built-in rules.json")
        .unwrap_or_else(|err| panic!("the built-in rules file is valid: {err}"));
    let mut rules = Rules {
        kinds: BTreeMap::new(),
        empty: KindRules::default(),
    };
    rules
        .merge(file, "built-in rules.json")
        .unwrap_or_else(|err| panic!("the built-in rules file is valid: {err}"));
    rules
});

impl Rules {
    /// The built-in rules (`rules.json`).
    pub fn builtin() -> Rules {
        BUILTIN.clone()
    }

    /// The built-in rules with a user's rules file applied; `origin` names the file in errors.
    pub fn with_overrides(user_json: &str, origin: &str) -> Result<Rules, String> {
        let file: RulesFile = json::parse(user_json, origin).map_err(|err| err.to_string())?;
        let mut rules = Rules::builtin();
        rules.merge(file, origin)?;
        Ok(rules)
    }

    /// The rules of `kind`; an unknown kind gets the `generic` ones.
    pub fn kind(&self, kind: &str) -> &KindRules {
        self.kinds
            .get(kind)
            .or_else(|| self.kinds.get("generic"))
            .unwrap_or(&self.empty)
    }

    /// The kinds with an entry.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    fn merge(&mut self, file: RulesFile, origin: &str) -> Result<(), String> {
        for (KindName(kind), user) in file.kinds {
            let entry = self.kinds.entry(kind.clone()).or_insert_with(|| KindRules {
                kind: kind.clone(),
                ..KindRules::default()
            });
            if user.replace {
                *entry = KindRules {
                    kind: kind.clone(),
                    ..KindRules::default()
                };
            }
            if let Some(quiet) = user.quiet_idle_secs {
                entry.quiet_idle_secs = quiet;
            }
            if let Some(bell) = user.bell {
                entry.bell = bell;
            }
            if let Some(notify) = user.notify {
                entry.notify = notify;
            }
            let rules = user
                .rules
                .into_iter()
                .map(|rule| Rule {
                    name: rule.name.0,
                    activity: rule.activity,
                    pattern: rule.pattern.0,
                    lines: rule.lines.map_or(DEFAULT_LINES, |lines| lines.0),
                })
                .collect();
            entry.rules = put_first(rules, &entry.rules, origin, &kind, "rules")?;
            let title_rules = user
                .title_rules
                .into_iter()
                .map(|rule| Rule {
                    name: rule.name.0,
                    activity: rule.activity,
                    pattern: rule.pattern.0,
                    lines: 1,
                })
                .collect();
            entry.title_rules = put_first(
                title_rules,
                &entry.title_rules,
                origin,
                &kind,
                "title_rules",
            )?;
        }
        Ok(())
    }
}

/// `first`, then those of `then` not named in `first`.
fn put_first(
    first: Vec<Rule>,
    then: &[Rule],
    origin: &str,
    kind: &str,
    field: &str,
) -> Result<Vec<Rule>, String> {
    for (at, rule) in first.iter().enumerate() {
        if first[..at].iter().any(|earlier| earlier.name == rule.name) {
            return Err(format!(
                "{origin}: field `kinds.{kind}.{field}[{at}].name`: another rule of `{kind}` is already named `{}`",
                rule.name
            ));
        }
    }
    let mut merged = first;
    let named: Vec<String> = merged.iter().map(|rule| rule.name.clone()).collect();
    merged.extend(
        then.iter()
            .filter(|rule| !named.contains(&rule.name))
            .cloned(),
    );
    Ok(merged)
}

impl KindRules {
    /// The first screen rule, in priority order, that matches one of its last `lines` non-blank
    /// lines of `lines` (the screen's last readable lines, oldest first); the newest matching line
    /// is what it said.
    pub fn screen(&self, lines: &[&str]) -> Option<ScreenMatch> {
        let lines: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|line| !line.trim().is_empty())
            .collect();
        self.rules.iter().find_map(|rule| {
            let window = &lines[lines.len().saturating_sub(rule.lines)..];
            let line = window
                .iter()
                .rev()
                .find(|line| rule.pattern.is_match(line))?;
            Some(self.matched(rule, line))
        })
    }

    /// The first title rule that matches an OSC 0 / 2 title.
    pub fn title(&self, title: &str) -> Option<ScreenMatch> {
        self.title_rules
            .iter()
            .find(|rule| rule.pattern.is_match(title))
            .map(|rule| self.matched(rule, title))
    }

    fn matched(&self, rule: &Rule, said: &str) -> ScreenMatch {
        ScreenMatch {
            activity: rule.activity,
            rule: format!("{}/{}", self.kind, rule.name),
            said: clip_said(said),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    kinds: BTreeMap<KindName, KindFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KindFile {
    /// Absent: keep; `null`: off.
    #[serde(default, deserialize_with = "present")]
    quiet_idle_secs: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    bell: Option<Option<Activity>>,
    #[serde(default, deserialize_with = "present")]
    notify: Option<Option<Activity>>,
    #[serde(default)]
    replace: bool,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    title_rules: Vec<TitleRuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: RuleName,
    activity: Activity,
    pattern: Pattern,
    lines: Option<Lines>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TitleRuleFile {
    name: RuleName,
    activity: Activity,
    pattern: Pattern,
}

/// A field that is present, possibly `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Implements `Deserialize` for a newtype over a checked value.
macro_rules! checked {
    ($name:ident($inner:ty) from $raw:ty, $check:expr) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <$raw>::deserialize(d)?;
                let check: fn($raw) -> Result<$inner, String> = $check;
                check(raw).map($name).map_err(serde::de::Error::custom)
            }
        }
    };
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct KindName(String);
checked!(KindName(String) from String, |name| {
    if (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(name)
    } else {
        Err(format!("kind `{name}`: a kind is 1 to 32 letters, digits, `-` or `_`"))
    }
});

struct RuleName(String);
checked!(RuleName(String) from String, |name| {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        Err(format!("rule name `{name}`: give 1 to 64 characters without control characters"))
    } else {
        Ok(name)
    }
});

struct Lines(usize);
checked!(Lines(usize) from usize, |lines| {
    if (1..=MAX_LINES).contains(&lines) {
        Ok(lines)
    } else {
        Err(format!("lines {lines} is out of range: give 1 to {MAX_LINES}"))
    }
});

/// Checked by compiling it, which is then dropped: the rule compiles it again when first tried.
struct Pattern(RulePattern);
checked!(Pattern(RulePattern) from String, |pattern| {
    match Regex::new(&pattern) {
        Ok(_) => Ok(RulePattern {
            source: pattern,
            compiled: OnceLock::new(),
        }),
        Err(err) => Err(format!("bad regex `{pattern}`: {}", regex_reason(&err))),
    }
});

/// The one-line reason of a regex error (its display spans several lines with a caret).
fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .map_or_else(|| text.replace('\n', " "), str::to_owned)
}

impl ScreenMatch {
    /// The evidence for a screen rule's activity (tier `screen`, signal `screen rule <kind>/<name>`).
    pub fn screen_evidence(&self, at_ms: u64) -> Evidence {
        self.evidence(
            format!("screen rule {}", self.rule),
            SignalTier::Screen,
            at_ms,
        )
    }

    /// The evidence for a title rule's activity (tier `terminal`, signal `OSC title <kind>/<name>`).
    pub fn title_evidence(&self, at_ms: u64) -> Evidence {
        self.evidence(
            format!("OSC title {}", self.rule),
            SignalTier::Terminal,
            at_ms,
        )
    }

    fn evidence(&self, signal: String, tier: SignalTier, at_ms: u64) -> Evidence {
        Evidence {
            tier,
            signal,
            said: self.said.clone(),
            at_ms,
        }
    }
}

impl fmt::Display for ScreenMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "screen rule {}: {}", self.rule, self.said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_compiles_when_its_rule_is_first_tried() {
        let rules = Rules::builtin();
        let claude = rules.kind("claude");
        assert!(!claude.rules.is_empty() && !claude.title_rules.is_empty());
        let compiled = |rules: &[Rule]| rules.iter().filter(|r| r.pattern.is_compiled()).count();
        assert_eq!(compiled(&claude.rules) + compiled(&claude.title_rules), 0);
        assert_eq!(claude.title("no rule matches this title"), None);
        assert_eq!(compiled(&claude.title_rules), claude.title_rules.len());
        assert_eq!(compiled(&claude.rules), 0);
    }
    use Activity::{Idle, ModelError, NeedsInput, WaitingApproval, WaitingLimit, Working};

    fn screen(kind: &str, text: &str) -> Option<(Activity, String)> {
        let lines: Vec<&str> = text.lines().collect();
        Rules::builtin()
            .kind(kind)
            .screen(&lines)
            .map(|m| (m.activity, m.rule))
    }

    #[test]
    fn the_builtin_file_parses_and_every_pattern_compiles() {
        let file: serde_json::Value = serde_json::from_str(BUILTIN_RULES).unwrap();
        let rules = Rules::builtin();
        assert_eq!(
            rules.kinds().collect::<Vec<_>>(),
            ["aider", "claude", "codex", "gemini", "generic"]
        );
        for kind in super::super::KINDS {
            let declared = file["kinds"][kind]["rules"].as_array().unwrap();
            let built = rules.kind(kind);
            assert_eq!(built.kind, kind);
            assert_eq!(built.rules.len(), declared.len(), "{kind}");
            for (rule, raw) in built.rules.iter().zip(declared) {
                assert_eq!(rule.pattern.as_str(), raw["pattern"].as_str().unwrap());
                assert!((1..=MAX_LINES).contains(&rule.lines));
            }
            assert!(built.quiet_idle_secs.is_some(), "{kind}");
        }
    }

    #[test]
    fn claude_screens() {
        let permission = "⏺ Bash(git push origin main)\n╭──────╮\n│ Bash command │\n│ git push origin main │\nDo you want to proceed?\n❯ 1. Yes\n  2. Yes, and don't ask again for git push commands\n  3. No, and tell Claude what to do differently (esc)\n╰──────╯\n";
        assert_eq!(
            screen("claude", permission),
            Some((WaitingApproval, "claude/permission-prompt".into()))
        );
        let busy = "⏺ Reading files\n\n✽ Tempering… (12s · ↓ 3.2k tokens · esc to interrupt)\n\n╭──╮\n│ > │\n╰──╯\n  ⏵⏵ bypass permissions on\n";
        assert_eq!(
            screen("claude", busy),
            Some((Working, "claude/busy".into()))
        );
        let background = "✻ Running agents… (ctrl+b to run in background)\n";
        assert_eq!(screen("claude", background).map(|m| m.0), Some(Working));
        let retrying = "✻ 529 Overloaded · Retrying in 4s · attempt 6/10\n╭──╮\n│ > │\n╰──╯\n";
        assert_eq!(
            screen("claude", retrying),
            Some((ModelError, "claude/retrying".into()))
        );
        let limit = "You've hit your session limit · resets 12:50am (America/Los_Angeles)\n/usage-credits to request more usage from your admin.\n╭──╮\n│ > │\n╰──╯\n";
        assert_eq!(
            screen("claude", limit),
            Some((WaitingLimit, "claude/usage-limit".into()))
        );
        let done =
            "⏺ All tests pass.\n\n✻ Worked for 2m 5s\n\n╭──╮\n│ > │\n╰──╯\n  ? for shortcuts\n";
        assert_eq!(screen("claude", done), Some((Idle, "claude/done".into())));
        assert_eq!(
            screen("claude", "✻ Crunched for 0s\n").map(|m| m.0),
            Some(Idle)
        );
        let failed = "⎿  API Error: 500 Internal server error. This is a server-side issue\n╭──╮\n│ > │\n╰──╯\n";
        assert_eq!(
            screen("claude", failed),
            Some((ModelError, "claude/api-error".into()))
        );
        let question = "Which database should I use?\n❯ Postgres\n  SQLite\nEnter to select · ↑/↓ to navigate · Esc to cancel\n";
        assert_eq!(screen("claude", question).map(|m| m.0), Some(NeedsInput));
        assert_eq!(
            screen("claude", "Approaching 5-hour limit\n╭──╮\n│ > │\n╰──╯\n"),
            None
        );
        // A question in the assistant's reply is not a permission prompt.
        assert_eq!(
            screen(
                "claude",
                "⏺ Done. Do you want to add tests as well?\n╭──╮\n│ > │\n╰──╯\n"
            ),
            None
        );
        // A tool's own retry counter is not a model error.
        let tool = "⏺ Bash(cargo test)\n  ⎿  flaky: attempt 2/3\n✽ Running… (8s · ↑ 1.1k tokens · esc to interrupt)\n";
        assert_eq!(screen("claude", tool).map(|m| m.0), Some(Working));
        // Once a turn has finished after an error, the screen says idle.
        let recovered = "⎿  API Error: 500 Internal server error.\n⏺ Retried by hand: all good.\n✻ Worked for 12s\n╭──╮\n│ > │\n╰──╯\n";
        assert_eq!(screen("claude", recovered).map(|m| m.0), Some(Idle));
    }

    #[test]
    fn other_kinds_screens() {
        assert_eq!(
            screen("codex", "• Working (12s • esc to interrupt)\n").map(|m| m.0),
            Some(Working)
        );
        assert_eq!(
            screen(
                "codex",
                "Allow command?\n  git push\npress enter to confirm or esc to cancel\n"
            )
            .map(|m| m.0),
            Some(WaitingApproval)
        );
        assert_eq!(
            screen(
                "codex",
                "■ You've hit your usage limit. Try again at 4:05 PM.\n› \n"
            )
            .map(|m| m.0),
            Some(WaitingLimit)
        );
        assert_eq!(
            screen("codex", "─ Worked for 2m 5s ─\n› \n").map(|m| m.0),
            Some(Idle)
        );
        assert_eq!(
            screen("gemini", "│ Apply this change?\n│ ● 1. Yes, allow once\n").map(|m| m.0),
            Some(WaitingApproval)
        );
        assert_eq!(
            screen("gemini", "⠏ Thinking... (esc to cancel, 5s)\n").map(|m| m.0),
            Some(Working)
        );
        assert_eq!(
            screen(
                "gemini",
                "Select Auth Method\n(Use Enter to select, Esc to cancel)\n"
            ),
            None
        );
        assert_eq!(
            screen(
                "gemini",
                "You have exhausted your daily quota on this model.\n"
            )
            .map(|m| m.0),
            Some(WaitingLimit)
        );
        // Gemini CLI going on with its flash model after the pro quota: no wait for a reset.
        assert_eq!(
            screen(
                "gemini",
                "You have reached your daily gemini-2.5-pro quota limit. You will be switched to the gemini-2.5-flash model for the rest of this session. To increase your limits, upgrade to a Gemini Code Assist Standard or Enterprise plan with higher limits at https://goo.gle/set-up-gemini-code-assist\n"
            ),
            Some((ModelError, "gemini/model-fallback".into()))
        );
        assert_eq!(
            screen("gemini", "You have reached your daily quota limit.\n").map(|m| m.0),
            Some(WaitingLimit)
        );
        assert_eq!(
            screen(
                "aider",
                "Add src/main.rs to the chat? (Y)es/(N)o/(D)on't ask again [Yes]:\n"
            ),
            Some((WaitingApproval, "aider/confirm".into()))
        );
        assert_eq!(
            screen(
                "aider",
                "The API provider's servers are down or overloaded.\nRetrying in 0.5 seconds...\n"
            )
            .map(|m| m.0),
            Some(ModelError)
        );
        assert_eq!(
            screen("generic", "Overwrite config? [y/N] ").map(|m| m.0),
            Some(NeedsInput)
        );
        assert_eq!(
            screen("some-new-cli", "Continue? (y/n)"),
            Some((NeedsInput, "generic/confirm".into()))
        );
        assert_eq!(screen("generic", "compiling...\nok\n"), None);
    }

    #[test]
    fn a_rule_only_looks_at_its_last_lines_and_blank_lines_do_not_count() {
        let mut text = "(Y)es/(N)o/(D)on't ask again\n".to_owned();
        text.push_str("\n\n\none\ntwo\nthree\n\n");
        assert!(screen("aider", &text).is_some());
        text.push_str("four\n");
        assert_eq!(screen("aider", &text), None);
    }

    #[test]
    fn matches_become_evidence() {
        let rules = Rules::builtin();
        let found = rules
            .kind("aider")
            .screen(&["Add x.rs to the chat? (Y)es/(N)o/(D)on't ask again [Yes]:"])
            .unwrap();
        let evidence = found.screen_evidence(7);
        assert_eq!(
            (evidence.tier, evidence.signal.as_str(), evidence.at_ms),
            (SignalTier::Screen, "screen rule aider/confirm", 7)
        );
        assert_eq!(
            evidence.said,
            "Add x.rs to the chat? (Y)es/(N)o/(D)on't ask again [Yes]:"
        );
        let title = rules
            .kind("codex")
            .title("⠙ codex")
            .unwrap()
            .title_evidence(8);
        assert_eq!(
            (title.tier, title.signal.as_str()),
            (SignalTier::Terminal, "OSC title codex/spinner")
        );
    }

    #[test]
    fn titles() {
        let rules = Rules::builtin();
        let claude = rules.kind("claude");
        let working = claude.title("⠐ Fix the flaky test").unwrap();
        assert_eq!(
            (working.activity, working.rule.as_str()),
            (Working, "claude/spinner")
        );
        assert_eq!(
            claude.title("✳ Claude Code").map(|m| m.activity),
            Some(Idle)
        );
        assert_eq!(claude.title("zsh"), None);
        assert_eq!(rules.kind("generic").title("⠋ build"), None);
    }

    #[test]
    fn a_user_file_extends_overrides_and_adds_kinds() {
        let user = r#"{"kinds": {
            "claude": {
                "quiet_idle_secs": 90,
                "bell": null,
                "rules": [
                    {"name": "my-prompt", "activity": "needs-input", "pattern": "Do you want to proceed\\?", "lines": 12},
                    {"name": "busy", "activity": "working", "pattern": "Thinking hard", "lines": 3}
                ]
            },
            "opencode": {"rules": [{"name": "busy", "activity": "working", "pattern": "working…"}]}
        }}"#;
        let rules = Rules::with_overrides(user, "rules.json").unwrap();
        let claude = rules.kind("claude");
        assert_eq!(
            (claude.quiet_idle_secs, claude.bell, claude.notify),
            (Some(90), None, Some(NeedsInput))
        );
        let names: Vec<&str> = claude.rules.iter().map(|rule| rule.name.as_str()).collect();
        assert_eq!(names[..3], ["my-prompt", "busy", "permission-prompt"]);
        assert_eq!(names.iter().filter(|name| **name == "busy").count(), 1);
        assert_eq!(names.len(), Rules::builtin().kind("claude").rules.len() + 1);
        // The user's rule comes first, so it wins over the built-in permission prompt.
        let found = claude
            .screen(&["Do you want to proceed?", "❯ 1. Yes"])
            .unwrap();
        assert_eq!(
            (found.activity, found.rule.as_str()),
            (NeedsInput, "claude/my-prompt")
        );
        // The replaced busy rule no longer knows `esc to interrupt`.
        assert_eq!(claude.screen(&["✽ Tempering… (esc to interrupt)"]), None);
        let opencode = rules.kind("opencode");
        assert_eq!(
            opencode.screen(&["working…"]).unwrap().rule,
            "opencode/busy"
        );
        assert_eq!(opencode.rules[0].lines, DEFAULT_LINES);
        assert_eq!(opencode.quiet_idle_secs, None);
        // Untouched kinds keep their built-ins.
        assert_eq!(
            rules.kind("codex").rules.len(),
            Rules::builtin().kind("codex").rules.len()
        );
    }

    #[test]
    fn replace_drops_the_builtins_of_that_kind() {
        let user = r#"{"kinds": {"codex": {"replace": true, "title_rules": [{"name": "t", "activity": "idle", "pattern": "^done"}]}}}"#;
        let rules = Rules::with_overrides(user, "rules.json").unwrap();
        let codex = rules.kind("codex");
        assert!(codex.rules.is_empty());
        assert_eq!((codex.quiet_idle_secs, codex.bell), (None, None));
        assert_eq!(codex.title("done").unwrap().rule, "codex/t");
        assert_eq!(codex.screen(&["• Working (12s • esc to interrupt)"]), None);
    }

    #[test]
    fn errors_name_the_file_position_field_and_the_bad_regex() {
        let user = "{\"kinds\": {\n  \"claude\": {\n    \"rules\": [\n      {\"name\": \"x\", \"activity\": \"working\", \"pattern\": \"(unclosed\"}\n    ]\n  }\n}}";
        let err = Rules::with_overrides(user, "/home/me/.config/celistra/rules.json").unwrap_err();
        assert!(
            err.starts_with("/home/me/.config/celistra/rules.json:4:"),
            "{err}"
        );
        assert!(
            err.contains("field `kinds.claude.rules[0].pattern`"),
            "{err}"
        );
        assert!(
            err.contains("bad regex `(unclosed`: unclosed group"),
            "{err}"
        );
        let err = Rules::with_overrides(
            r#"{"kinds": {"gemini": {"rules": [{"name": "x", "activity": "busy", "pattern": "x"}]}}}"#,
            "r.json",
        )
        .unwrap_err();
        assert!(
            err.contains("kinds.gemini.rules[0].activity")
                && err.contains("unknown variant `busy`"),
            "{err}"
        );
        let err = Rules::with_overrides(
            r#"{"kinds": {"aider": {"rules": [{"name": "x", "activity": "idle", "pattern": "x", "lines": 0}]}}}"#,
            "r.json",
        )
        .unwrap_err();
        assert!(err.contains("lines 0 is out of range"), "{err}");
        let err =
            Rules::with_overrides(r#"{"kinds": {"aider": {"rulez": []}}}"#, "r.json").unwrap_err();
        assert!(err.contains("unknown field `rulez`"), "{err}");
        let err = Rules::with_overrides(r#"{"kinds": {"bad kind": {}}}"#, "r.json").unwrap_err();
        assert!(err.contains("kind `bad kind`"), "{err}");
        let err = Rules::with_overrides(
            r#"{"kinds": {"aider": {"rules": [{"name": "x", "activity": "idle", "pattern": "a"}, {"name": "x", "activity": "idle", "pattern": "b"}]}}}"#,
            "r.json",
        )
        .unwrap_err();
        assert!(
            err.contains("kinds.aider.rules[1].name") && err.contains("already named `x`"),
            "{err}"
        );
        assert!(
            Rules::with_overrides("", "r.json")
                .unwrap_err()
                .starts_with("r.json:1:")
        );
    }
}
