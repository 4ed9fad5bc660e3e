//! Which daemon `ctl` talks to: the global `--url`/`--token`/`--fingerprint` (and their
//! `CELISTRA_*` variables), saved contexts (`ctl context add|use|ls|rm`, in a 0600
//! `contexts.json`), else the local daemon's Unix socket.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use celistra_client::{Client, Fingerprint};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::{CtlResult, Failure, print_json, table};
use crate::HomeArg;

/// The daemon to reach, for every verb. Flags beat the variables, which beat the current context;
/// with none of them, the local daemon's socket (and its auth.json) is used.
#[derive(Debug, Args)]
pub(crate) struct RemoteArgs {
    /// The daemon's address, e.g. https://host:33120 [env: CELISTRA_URL].
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
    /// The bearer token to present (the daemon's machine secret is an owner token)
    /// [env: CELISTRA_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Trust exactly the certificate with this SHA-256 (64 hex digits, colons allowed), as a
    /// daemon's generated certificate needs [env: CELISTRA_FINGERPRINT].
    #[arg(long, global = true, value_name = "SHA256")]
    fingerprint: Option<String>,
}

impl RemoteArgs {
    /// A flag, else its environment variable (empty counts as unset).
    fn pick(flag: &Option<String>, variable: &str) -> Option<String> {
        flag.clone()
            .or_else(|| std::env::var(variable).ok())
            .filter(|value| !value.is_empty())
    }

    fn url(&self) -> Option<String> {
        Self::pick(&self.url, "CELISTRA_URL")
    }

    fn token(&self) -> Option<String> {
        Self::pick(&self.token, "CELISTRA_TOKEN")
    }

    /// Takes the `--fingerprint` flag away from the connection: `ctl join` means the hub's by it
    /// (the line `ctl pair` prints), not the daemon's. Its variable still pins the daemon.
    pub(crate) fn take_fingerprint_flag(&mut self) -> Option<String> {
        self.fingerprint.take()
    }

    fn fingerprint(&self) -> Result<Option<Fingerprint>, Failure> {
        Self::pick(&self.fingerprint, "CELISTRA_FINGERPRINT")
            .map(|text| text.parse().map_err(|e| Failure::Usage(format!("{e}"))))
            .transpose()
    }
}

/// The client for this invocation. A context's token and fingerprint go only to the context's
/// own URL: a URL from a flag or the environment never receives a saved token.
pub(crate) fn client(remote: &RemoteArgs, home: &HomeArg) -> Result<Client, Failure> {
    let token = remote.token();
    let pin = remote.fingerprint()?;
    let (url, token, pin) = if let Some(url) = remote.url() {
        (url, token, pin)
    } else if let Some((_, saved)) = Contexts::read()?.current() {
        let saved_pin = match &saved.fingerprint {
            Some(text) => Some(
                text.parse()
                    .map_err(|e| Failure::Failed(format!("{}: {e}", Contexts::path().display())))?,
            ),
            None => None,
        };
        (
            saved.url.clone(),
            token.or(Some(saved.token.clone())),
            pin.or(saved_pin),
        )
    } else {
        if pin.is_some() {
            return Err(Failure::Usage(
                "--fingerprint pins a remote daemon's certificate; give its --url too".into(),
            ));
        }
        let home = home
            .resolve()
            .map_err(|e| Failure::Failed(format!("{e:#}")))?;
        let client = Client::for_home(&home, "cli")?;
        return Ok(match token {
            Some(token) => client.with_secret(&token),
            None => client,
        });
    };
    let Some(token) = token else {
        return Err(Failure::Usage(format!(
            "no token for {url}: pass --token, set CELISTRA_TOKEN, or save one with `celistrad ctl context add NAME --url {url} --token TOKEN`"
        )));
    };
    Client::remote(&url, &token, pin, "cli").map_err(|e| Failure::Usage(e.to_string()))
}

#[derive(Debug, Args)]
pub(crate) struct ContextArgs {
    #[command(subcommand)]
    action: ContextAction,
}

#[derive(Debug, Subcommand)]
enum ContextAction {
    /// Save (or replace) a daemon's --url, --token and optional --fingerprint under NAME.
    Add { name: String },
    /// Talk to the daemon of context NAME from now on (or, with --local, to the local socket).
    Use {
        #[arg(required_unless_present = "local", conflicts_with = "local")]
        name: Option<String>,
        /// Forget the current context: talk to the local daemon's socket again.
        #[arg(long)]
        local: bool,
    },
    /// List saved contexts (never their tokens).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Forget a context.
    Rm { name: String },
}

/// `contexts.json`: like kubectl's kubeconfig, tokens in a file only its owner can read.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Contexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, Saved>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    url: String,
    token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
}

/// What `ctl context ls --json` shows of a context: everything but the token.
#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    url: &'a str,
    fingerprint: Option<&'a str>,
    current: bool,
}

impl Contexts {
    /// `$CELISTRA_CONFIG_DIR/contexts.json`, else `~/.config/celistra/contexts.json`.
    fn path() -> PathBuf {
        let dir = std::env::var_os("CELISTRA_CONFIG_DIR")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".config")
                    .join("celistra")
            });
        dir.join("contexts.json")
    }

    /// The saved contexts (none when the file does not exist); refuses a file others can read.
    fn read() -> Result<Contexts, Failure> {
        let path = Self::path();
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contexts::default()),
            Err(e) => return Err(Failure::Failed(format!("{}: {e}", path.display()))),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Failure::Failed(format!(
                "{} has mode {mode:04o}, so other users may read its tokens; run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::Failed(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| Failure::Failed(format!("{}: {e}", path.display())))
    }

    /// Replaces the file atomically, 0600 in a 0700 directory.
    fn write(&self) -> Result<(), Failure> {
        let path = Self::path();
        let failed = |e: std::io::Error| Failure::Failed(format!("{}: {e}", path.display()));
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
        // A new temporary file is 0600, and rename keeps that mode.
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
        let text = serde_json::to_vec_pretty(self).expect("contexts serialise");
        file.write_all(&text)
            .and_then(|()| file.as_file().sync_all())
            .map_err(failed)?;
        file.persist(&path).map_err(|e| failed(e.error))?;
        Ok(())
    }

    fn current(&self) -> Option<(&str, &Saved)> {
        let name = self.current.as_deref()?;
        Some((name, self.contexts.get(name)?))
    }
}

fn unknown(name: &str) -> Failure {
    Failure::Failed(format!(
        "no context {name:?}; `celistrad ctl context ls` lists them"
    ))
}

/// `ctl context …`: works on the file only, never on a daemon.
pub(crate) fn run(args: ContextArgs, remote: &RemoteArgs) -> CtlResult {
    match args.action {
        ContextAction::Add { name } => {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                return Err(Failure::Usage(format!(
                    "context name {name:?}: use 1 to 64 letters, digits, `-`, `_` or `.`"
                )));
            }
            let (Some(url), Some(token)) = (remote.url(), remote.token()) else {
                return Err(Failure::Usage(
                    "context add needs --url and --token (or CELISTRA_URL and CELISTRA_TOKEN)"
                        .into(),
                ));
            };
            let pin = remote.fingerprint()?;
            // Checks the URL and its pairing with the fingerprint; no connection is made.
            Client::remote(&url, &token, pin, "cli").map_err(|e| Failure::Usage(e.to_string()))?;
            let mut contexts = Contexts::read()?;
            contexts.contexts.insert(
                name.clone(),
                Saved {
                    url,
                    token,
                    fingerprint: pin.map(|pin| pin.to_string()),
                },
            );
            contexts.write()?;
            println!("context {name} saved; `celistrad ctl context use {name}` makes it current");
        }
        ContextAction::Use { name, local: _ } => {
            let mut contexts = Contexts::read()?;
            if let Some(name) = &name
                && !contexts.contexts.contains_key(name)
            {
                return Err(unknown(name));
            }
            contexts.current.clone_from(&name);
            contexts.write()?;
            match name {
                Some(name) => println!("now talking to context {name}"),
                None => println!("now talking to the local daemon"),
            }
        }
        ContextAction::Ls { json } => {
            let contexts = Contexts::read()?;
            let listed: Vec<Listed<'_>> = contexts
                .contexts
                .iter()
                .map(|(name, saved)| Listed {
                    name,
                    url: &saved.url,
                    fingerprint: saved.fingerprint.as_deref(),
                    current: contexts.current.as_deref() == Some(name.as_str()),
                })
                .collect();
            if json {
                print_json(&listed);
            } else {
                let rows: Vec<Vec<String>> = listed
                    .iter()
                    .map(|c| {
                        vec![
                            if c.current { "*" } else { "" }.to_owned(),
                            c.name.to_owned(),
                            c.url.to_owned(),
                            c.fingerprint.unwrap_or("-").to_owned(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table::render(&["CURRENT", "NAME", "URL", "FINGERPRINT"], &rows)
                );
            }
        }
        ContextAction::Rm { name } => {
            let mut contexts = Contexts::read()?;
            if contexts.contexts.remove(&name).is_none() {
                return Err(unknown(&name));
            }
            if contexts.current.as_deref() == Some(name.as_str()) {
                contexts.current = None;
            }
            contexts.write()?;
            println!("context {name} removed");
        }
    }
    Ok(())
}
