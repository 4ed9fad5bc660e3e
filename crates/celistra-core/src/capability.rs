//! Capability tokens, the grants file, and how an agent's effective capability set is worked out
//! from the default set, the agent's own `--cap`/`--drop-cap` and every grant that matches it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::json::{self, JsonError};

/// One capability. The token form (`workspace_rw`, `read:/data`, …) is what users write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Read and write inside the agent's workspace.
    WorkspaceRw,
    /// Read the whole (visible) filesystem.
    ReadAnywhere,
    /// Use the host's network.
    Network,
    /// Fork and exec freely.
    Subprocess,
    /// Run unsandboxed.
    Privileged,
    /// macOS Screen Recording (TCC); recorded elsewhere.
    ScreenCapture,
    /// macOS Accessibility (TCC); recorded elsewhere.
    Accessibility,
    /// macOS Full Disk Access (TCC); recorded elsewhere.
    FullDiskAccess,
    /// Read an extra path.
    Read(String),
    /// Write an extra path.
    Write(String),
    /// Execute a path when `subprocess` is absent.
    Exec(String),
    /// Connect to this TCP port when `network` is absent (the network is then limited to such ports).
    Connect(u16),
    /// Listen on this TCP port when `network` is absent.
    Bind(u16),
}

/// The set every agent starts from: read your code, hit the network, run git/npm/cargo, write only
/// inside the workspace.
pub const DEFAULT_SET: [Capability; 4] = [
    Capability::WorkspaceRw,
    Capability::ReadAnywhere,
    Capability::Network,
    Capability::Subprocess,
];

const PLAIN: [(&str, Capability); 8] = [
    ("workspace_rw", Capability::WorkspaceRw),
    ("read_anywhere", Capability::ReadAnywhere),
    ("network", Capability::Network),
    ("subprocess", Capability::Subprocess),
    ("privileged", Capability::Privileged),
    ("screen_capture", Capability::ScreenCapture),
    ("accessibility", Capability::Accessibility),
    ("full_disk_access", Capability::FullDiskAccess),
];

/// Every token form, for error messages and help.
pub const TOKEN_FORMS: &str = "workspace_rw, read_anywhere, network, subprocess, privileged, \
     screen_capture, accessibility, full_disk_access, read:<path>, write:<path>, exec:<path>, \
     connect:<port>, bind:<port>";

impl FromStr for Capability {
    type Err = String;

    fn from_str(token: &str) -> Result<Capability, String> {
        if let Some((_, capability)) = PLAIN.iter().find(|(name, _)| *name == token) {
            return Ok(capability.clone());
        }
        let unknown = || format!("unknown capability `{token}`; known tokens: {TOKEN_FORMS}");
        let (kind, value) = token.split_once(':').ok_or_else(unknown)?;
        match kind {
            "read" | "write" | "exec" => {
                let path = absolute_path(kind, value)?;
                Ok(match kind {
                    "read" => Capability::Read(path),
                    "write" => Capability::Write(path),
                    _ => Capability::Exec(path),
                })
            }
            "connect" | "bind" => {
                let port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|port| *port != 0)
                    .ok_or_else(|| {
                        format!("`{token}`: `{value}` is not a TCP port; use 1 to 65535")
                    })?;
                Ok(if kind == "connect" {
                    Capability::Connect(port)
                } else {
                    Capability::Bind(port)
                })
            }
            _ => Err(unknown()),
        }
    }
}

/// Checks the path of a `read:`/`write:`/`exec:` token and normalises it: absolute, no `.` or `..`
/// parts (they would make the rule mean something other than it says), no trailing slash.
fn absolute_path(kind: &str, value: &str) -> Result<String, String> {
    if !value.starts_with('/') {
        return Err(format!(
            "`{kind}:{value}`: the path must be absolute, e.g. `{kind}:/srv/data`"
        ));
    }
    if value.contains('\0') {
        return Err(format!("`{kind}:`: the path contains a NUL byte"));
    }
    let parts: Vec<&str> = value.split('/').filter(|part| !part.is_empty()).collect();
    if parts.iter().any(|part| *part == "." || *part == "..") {
        return Err(format!(
            "`{kind}:{value}`: the path must not contain `.` or `..` parts"
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((name, _)) = PLAIN.iter().find(|(_, capability)| capability == self) {
            return f.write_str(name);
        }
        match self {
            Capability::Read(path) => write!(f, "read:{path}"),
            Capability::Write(path) => write!(f, "write:{path}"),
            Capability::Exec(path) => write!(f, "exec:{path}"),
            Capability::Connect(port) => write!(f, "connect:{port}"),
            Capability::Bind(port) => write!(f, "bind:{port}"),
            _ => unreachable!("plain capabilities are in PLAIN"),
        }
    }
}

/// Parses a list of tokens; the error names the first bad one.
pub fn parse_tokens<'a>(
    tokens: impl IntoIterator<Item = &'a String>,
) -> Result<BTreeSet<Capability>, String> {
    tokens.into_iter().map(|token| token.parse()).collect()
}

/// Surfaces an agent can be spawned from, as grants match them.
pub const SOURCES: [&str; 5] = ["cli", "api", "dashboard", "config", "schedule"];

/// `capabilities.json` in the state directory: grants that add capabilities to matching agents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsFile {
    /// Format version; only 1 exists.
    pub version: u32,
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// Capabilities added to every agent its `match` block fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(rename = "match", default)]
    pub matcher: GrantMatch,
    pub capabilities: Vec<String>,
}

/// All given fields must match; an absent field matches anything. `name` and `command` are globs
/// (`*` any run of characters, `?` one character, `\` escapes the next).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// Version of `capabilities.json` this build reads.
pub const GRANTS_VERSION: u32 = 1;

impl GrantsFile {
    /// Parses and checks a grants file. Any fault refuses the whole file: a half-read policy could
    /// silently widen or narrow what agents may do.
    pub fn parse(text: &str, origin: &str) -> Result<GrantsFile, JsonError> {
        let file: GrantsFile = json::parse(text, origin)?;
        let fault = |path: String, message: String| JsonError {
            origin: origin.to_owned(),
            line: 1,
            column: 1,
            path,
            message,
        };
        if file.version != GRANTS_VERSION {
            return Err(fault(
                "version".into(),
                format!(
                    "version {} is not supported; this daemon reads version {GRANTS_VERSION}",
                    file.version
                ),
            ));
        }
        for (i, grant) in file.grants.iter().enumerate() {
            if let Some(source) = &grant.matcher.source
                && !SOURCES.contains(&source.as_str())
            {
                return Err(fault(
                    format!("grants[{i}].match.source"),
                    format!(
                        "unknown source `{source}`; use one of {}",
                        SOURCES.join(", ")
                    ),
                ));
            }
            for (field, glob) in [
                ("name", &grant.matcher.name),
                ("command", &grant.matcher.command),
            ] {
                if glob.as_deref() == Some("") {
                    return Err(fault(
                        format!("grants[{i}].match.{field}"),
                        "an empty pattern matches nothing; leave the field out to match anything"
                            .into(),
                    ));
                }
            }
            for (j, token) in grant.capabilities.iter().enumerate() {
                token
                    .parse::<Capability>()
                    .map_err(|message| fault(format!("grants[{i}].capabilities[{j}]"), message))?;
            }
        }
        Ok(file)
    }
}

/// What a grant is matched against.
#[derive(Debug, Clone, Copy)]
pub struct SpawnContext<'a> {
    pub name: &'a str,
    pub source: &'a str,
    pub command: &'a str,
}

impl GrantMatch {
    pub fn matches(&self, spawn: &SpawnContext<'_>) -> bool {
        self.name
            .as_deref()
            .is_none_or(|glob| glob_match(glob, spawn.name))
            && self
                .source
                .as_deref()
                .is_none_or(|source| source == spawn.source)
            && self
                .command
                .as_deref()
                .is_none_or(|glob| glob_match(glob, spawn.command))
    }
}

/// Where some of an agent's capabilities came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// `default`, `agent` (its own `--cap`), `grant N` (index in `capabilities.json`) or `dropped`
    /// (its own `--drop-cap`, which wins over everything else).
    pub origin: String,
    pub capabilities: Vec<String>,
}

/// An agent's effective capabilities and how they came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub effective: BTreeSet<Capability>,
    pub contributions: Vec<Contribution>,
}

impl Resolution {
    pub fn has(&self, capability: &Capability) -> bool {
        self.effective.contains(capability)
    }

    pub fn tokens(&self) -> Vec<String> {
        self.effective.iter().map(ToString::to_string).collect()
    }
}

/// Works out an agent's capabilities: the default set, plus its own `add` tokens, plus those of every
/// matching grant, minus its own `drop` tokens (an explicit narrowing wins over any widening).
pub fn resolve(
    add: &[String],
    drop: &[String],
    grants: &GrantsFile,
    spawn: &SpawnContext<'_>,
) -> Result<Resolution, String> {
    let add = parse_tokens(add)?;
    let drop = parse_tokens(drop)?;
    let tokens = |set: &BTreeSet<Capability>| set.iter().map(ToString::to_string).collect();
    let mut effective: BTreeSet<Capability> = DEFAULT_SET.into_iter().collect();
    let mut contributions = vec![Contribution {
        origin: "default".into(),
        capabilities: tokens(&effective),
    }];
    if !add.is_empty() {
        contributions.push(Contribution {
            origin: "agent".into(),
            capabilities: tokens(&add),
        });
        effective.extend(add);
    }
    for (i, grant) in grants.grants.iter().enumerate() {
        if grant.matcher.matches(spawn) {
            let granted = parse_tokens(&grant.capabilities)?;
            contributions.push(Contribution {
                origin: format!("grant {i}"),
                capabilities: tokens(&granted),
            });
            effective.extend(granted);
        }
    }
    if !drop.is_empty() {
        contributions.push(Contribution {
            origin: "dropped".into(),
            capabilities: tokens(&drop),
        });
        effective.retain(|capability| !drop.contains(capability));
    }
    Ok(Resolution {
        effective,
        contributions,
    })
}

/// Shell-style glob: `*` matches any run of characters (`/` included), `?` one character, `\`
/// makes the next character literal. Linear in practice: one backtrack point, the last `*`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some('?') => {
                p += 1;
                t += 1;
                continue;
            }
            Some('\\') if pattern.get(p + 1) == Some(&text[t]) => {
                p += 2;
                t += 1;
                continue;
            }
            Some(c) if *c != '\\' && *c == text[t] => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((after_star, matched_from)) => {
                p = after_star;
                t = matched_from + 1;
                star = Some((after_star, matched_from + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|t| (*t).to_owned()).collect()
    }

    const SPAWN: SpawnContext<'static> = SpawnContext {
        name: "browser-1",
        source: "dashboard",
        command: "playwright test",
    };

    #[test]
    fn tokens_round_trip_and_unknown_ones_are_named() {
        for token in [
            "workspace_rw",
            "privileged",
            "full_disk_access",
            "read:/srv/data",
            "write:/tmp/out",
            "exec:/usr/bin/git",
            "connect:443",
            "bind:8080",
        ] {
            assert_eq!(token.parse::<Capability>().unwrap().to_string(), token);
        }
        let err = "netwrk".parse::<Capability>().unwrap_err();
        assert!(
            err.contains("`netwrk`") && err.contains("read:<path>"),
            "{err}"
        );
        assert!(
            "read:data"
                .parse::<Capability>()
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            "write:/a/../etc"
                .parse::<Capability>()
                .unwrap_err()
                .contains("..")
        );
        assert!("connect:0".parse::<Capability>().is_err());
        assert!("bind:70000".parse::<Capability>().is_err());
        assert_eq!(
            "read:/srv//data/".parse::<Capability>().unwrap(),
            Capability::Read("/srv/data".into())
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("browser-*", "browser-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("ag-??", "ag-12"));
        assert!(!glob_match("ag-??", "ag-123"));
        assert!(glob_match("python3 *.py", "python3 /srv/run.py"));
        assert!(glob_match(r"literal\*", "literal*"));
        assert!(!glob_match(r"literal\*", "literalx"));
        assert!(!glob_match("web", "web2"));
        assert!(glob_match(
            "*a*a*a*a*b",
            &"a".repeat(30).replace("aaa", "aab")
        ));
    }

    #[test]
    fn default_set_then_additions_grants_and_drops() {
        let grants = GrantsFile::parse(
            r#"{"version": 1, "grants": [
                {"match": {"name": "browser-*", "source": "dashboard", "command": "playwright*"},
                 "capabilities": ["screen_capture", "write:/srv/downloads"]},
                {"match": {"name": "browser-*", "source": "cli"}, "capabilities": ["privileged"]},
                {"match": {}, "capabilities": ["connect:443"]}
            ]}"#,
            "capabilities.json",
        )
        .unwrap();
        let resolution = resolve(
            &strings(&["read:/srv/data"]),
            &strings(&["network"]),
            &grants,
            &SPAWN,
        )
        .unwrap();
        assert_eq!(
            resolution.tokens(),
            strings(&[
                "workspace_rw",
                "read_anywhere",
                "subprocess",
                "screen_capture",
                "read:/srv/data",
                "write:/srv/downloads",
                "connect:443",
            ])
        );
        let origins: Vec<&str> = resolution
            .contributions
            .iter()
            .map(|c| c.origin.as_str())
            .collect();
        assert_eq!(
            origins,
            ["default", "agent", "grant 0", "grant 2", "dropped"]
        );
        assert!(
            !resolution.has(&Capability::Privileged),
            "grant 1 needs source cli"
        );
    }

    #[test]
    fn unknown_tokens_fail_resolution_naming_them() {
        let err =
            resolve(&strings(&["teleport"]), &[], &GrantsFile::default(), &SPAWN).unwrap_err();
        assert!(err.contains("`teleport`"), "{err}");
    }

    #[test]
    fn malformed_grants_files_are_refused_with_the_field() {
        let err = GrantsFile::parse(
            r#"{"version": 1, "grants": [{"capabilities": ["network", "nope"]}]}"#,
            "capabilities.json",
        )
        .unwrap_err();
        assert_eq!(err.path, "grants[0].capabilities[1]");
        assert!(err.message.contains("`nope`"));
        let err = GrantsFile::parse(r#"{"version": 2}"#, "c.json").unwrap_err();
        assert!(
            err.to_string().contains("version 2 is not supported"),
            "{err}"
        );
        let err = GrantsFile::parse(
            r#"{"version": 1, "grants": [{"match": {"source": "phone"}, "capabilities": []}]}"#,
            "c.json",
        )
        .unwrap_err();
        assert_eq!(err.path, "grants[0].match.source");
        let err = GrantsFile::parse(
            r#"{"version": 1, "grants": [{"match": {"nmae": "x"}, "capabilities": []}]}"#,
            "c.json",
        )
        .unwrap_err();
        assert!(err.message.contains("nmae"), "{err}");
        assert!(GrantsFile::parse("{", "c.json").is_err());
    }
}
