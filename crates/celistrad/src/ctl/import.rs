//! `ctl import FILE`: a supervisord or PM2 file made into an apply file, printed or applied. This
//! module does the I/O the pure importers leave out: reading files, resolving supervisord's
//! `[include]` globs, and evaluating a JavaScript ecosystem file with node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use celistra_client::Client;
use celistra_core::import::{Import, Note, NoteKind, pm2, supervisord};
use celistra_proto::{AgentSpec, ApplyReport, ApplyRequest};
use celistra_sandbox::SystemTool;
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::apply::{ApplyFile, print_report};
use super::{CtlResult, Failure, print_json};

#[derive(Debug, Args)]
#[command(
    after_help = "Without --apply the apply file is printed (as with --dry-run): review it, \
    or save it and `ctl apply` it. Keys that are not imported are warnings on stderr (exit 0); \
    --strict makes them an error (exit 1, nothing applied). Details: docs/import.md."
)]
pub(crate) struct ImportArgs {
    /// A supervisord file (.conf, .ini: with its [include] files) or a PM2 ecosystem file
    /// (.json, .yaml, .yml; .js, .cjs, .mjs evaluated with node).
    file: PathBuf,
    /// Create (or update) the agents on the daemon, as `ctl apply` would.
    #[arg(long, conflicts_with = "dry_run")]
    apply: bool,
    /// Print the apply file without applying anything (the default).
    #[arg(long)]
    dry_run: bool,
    /// PM2: merge each app's env_NAME over its env (as `pm2 start FILE --env NAME`).
    #[arg(long, value_name = "NAME")]
    env: Option<String>,
    /// Refuse the import when any key is not imported (exit 1, nothing applied).
    #[arg(long)]
    strict: bool,
    /// Print {"agents", "notes", "applied"} as JSON instead of the apply file and warnings.
    #[arg(long)]
    json: bool,
    /// The file's format, when its name does not tell.
    #[arg(long, value_enum, value_name = "FORMAT")]
    from: Option<Format>,
}

/// Which program's file it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Supervisord,
    Pm2,
}

/// How long node may take to evaluate an ecosystem file.
const NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// Prints what `import(FILE)` evaluates to as JSON: `module.exports` (CommonJS) or the default
/// export (ES module).
const NODE_EVAL: &str = "const {pathToFileURL} = require('url');\
    import(pathToFileURL(process.argv[1]).href)\
    .then((m) => process.stdout.write(JSON.stringify(m.default !== undefined ? m.default : m)))\
    .catch((e) => { process.stderr.write(String((e && e.stack) || e)); process.exit(1); });";

/// The `--json` output.
#[derive(Debug, Serialize)]
struct Report<'a> {
    agents: &'a [AgentSpec],
    notes: &'a [Note],
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<ApplyReport>,
}

pub(crate) async fn run(
    args: ImportArgs,
    connect: impl FnOnce() -> Result<Client, Failure>,
) -> CtlResult {
    let import = read(&args).await?;
    let unsupported = import
        .notes
        .iter()
        .filter(|n| n.kind == NoteKind::Unsupported)
        .count();
    if !args.json {
        for note in &import.notes {
            let level = match note.kind {
                NoteKind::Mapped => "note",
                NoteKind::Unsupported => "warning",
            };
            eprintln!("{level}: {note}");
        }
        if is_javascript(&args.file) && !import.notes.is_empty() {
            eprintln!(
                "note: node evaluated {}, so the notes name each app, not lines",
                args.file.display()
            );
        }
    }
    if args.strict && unsupported > 0 {
        if args.json {
            print_json(&Report {
                agents: &import.agents,
                notes: &import.notes,
                applied: None,
            });
        }
        return Err(Failure::Failed(format!(
            "{unsupported} key(s) of {} are not imported (--strict); nothing was applied",
            args.file.display()
        )));
    }
    let applied = if args.apply {
        let client = connect()?;
        let request = ApplyRequest {
            agents: import.agents.clone(),
            prune: false,
            dry_run: false,
        };
        Some(
            client
                .apply(&request)
                .await
                .map_err(|e| Failure::Failed(format!("{}: {e}", args.file.display())))?,
        )
    } else {
        None
    };
    if args.json {
        print_json(&Report {
            agents: &import.agents,
            notes: &import.notes,
            applied,
        });
        return Ok(());
    }
    match applied {
        Some(report) => print_report(&report),
        None => print_json(&ApplyFile {
            agents: import.agents.clone(),
        }),
    }
    if !args.apply {
        eprintln!(
            "{} agent(s), {unsupported} key(s) not imported; `--apply` creates them",
            import.agents.len()
        );
    }
    Ok(())
}

/// Reads and converts the file in its format.
async fn read(args: &ImportArgs) -> Result<Import, Failure> {
    let format = match args.from {
        Some(format) => format,
        None => format_of(&args.file)?,
    };
    if format == Format::Supervisord && args.env.is_some() {
        return Err(Failure::Usage(
            "--env selects a PM2 app's env_NAME; a supervisord file takes its variables from \
             the environment (%(ENV_X)s)"
                .into(),
        ));
    }
    let shown = args.file.display().to_string();
    let here = directory_of(&args.file)?;
    let failed = |e: celistra_core::import::ImportError| Failure::Failed(e.to_string());
    match format {
        Format::Supervisord => {
            let context = supervisord::Context {
                env: std::env::vars().collect(),
                host_name: std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "localhost".into()),
            };
            let main =
                supervisord::parse(&shown, &here, &read_text(&args.file)?).map_err(failed)?;
            let mut files = vec![];
            let mut missing = vec![];
            for (pattern, line) in supervisord::includes(&main, &context).map_err(failed)? {
                let found = glob(&Path::new(&here).join(&pattern)).map_err(|e| {
                    Failure::Failed(format!("{shown}:{line}: [include] files: {e}"))
                })?;
                if found.is_empty() {
                    missing.push(Note {
                        file: shown.clone(),
                        line: Some(line),
                        within: "[include]".into(),
                        key: "files".into(),
                        kind: NoteKind::Unsupported,
                        message: format!("`{pattern}` matches no file"),
                    });
                }
                for path in found {
                    let name = shown_beside(&shown, &here, &path);
                    let dir = directory_of(&path)?;
                    files
                        .push(supervisord::parse(&name, &dir, &read_text(&path)?).map_err(failed)?);
                }
            }
            files.insert(0, main);
            let mut import = supervisord::convert(&files, &context).map_err(failed)?;
            import.notes.extend(missing);
            Ok(import)
        }
        Format::Pm2 => {
            let options = pm2::Options {
                file: shown.clone(),
                base_dir: here.clone(),
                env_name: args.env.clone(),
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            };
            if is_javascript(&args.file) {
                let value = evaluate(&args.file, &here).await?;
                pm2::from_evaluated(value, &options).map_err(failed)
            } else {
                pm2::from_text(&read_text(&args.file)?, &options).map_err(failed)
            }
        }
    }
}

/// How to name an included file in notes: beside the main file as the user named it
/// (`conf.d/web.conf` for `supervisord.conf`), else in full.
fn shown_beside(main_shown: &str, main_dir: &str, path: &Path) -> String {
    match path.strip_prefix(main_dir) {
        Ok(inside) => Path::new(main_shown)
            .parent()
            .unwrap_or(Path::new(""))
            .join(inside)
            .display()
            .to_string(),
        Err(_) => path.display().to_string(),
    }
}

fn format_of(file: &Path) -> Result<Format, Failure> {
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match extension.as_str() {
        "conf" | "ini" => Ok(Format::Supervisord),
        "json" | "yaml" | "yml" | "js" | "cjs" | "mjs" => Ok(Format::Pm2),
        _ => Err(Failure::Usage(format!(
            "cannot tell the format of {} from its name: pass --from supervisord or --from pm2",
            file.display()
        ))),
    }
}

fn is_javascript(file: &Path) -> bool {
    matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("js" | "cjs" | "mjs")
    )
}

fn read_text(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Failed(format!("cannot read {}: {e}", path.display())))
}

/// The absolute directory of a file.
fn directory_of(file: &Path) -> Result<String, Failure> {
    let absolute = std::path::absolute(file)
        .map_err(|e| Failure::Failed(format!("{}: {e}", file.display())))?;
    Ok(absolute
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string())
}

/// The files a supervisord include pattern names, sorted: wildcards (`*`, `?`) in the file name
/// only, as in `conf.d/*.conf`.
fn glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let has_wildcard = |text: &str| text.contains(['*', '?', '[']);
    let (Some(dir), Some(name)) = (
        pattern.parent(),
        pattern.file_name().and_then(|n| n.to_str()),
    ) else {
        return Err(format!("`{}` names no file", pattern.display()));
    };
    if has_wildcard(&dir.display().to_string()) {
        return Err(format!(
            "`{}`: only the file name may have wildcards; list each directory",
            pattern.display()
        ));
    }
    if !has_wildcard(name) {
        return Ok(if pattern.is_file() {
            vec![pattern.to_path_buf()]
        } else {
            vec![]
        });
    }
    if name.contains('[') {
        return Err(format!(
            "`{name}`: [character classes] are not supported in include patterns; use * and ?"
        ));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| celistra_core::capability::glob_match(name, n))
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    Ok(found)
}

/// Runs node on a JavaScript ecosystem file and reads what it exports.
async fn evaluate(file: &Path, here: &str) -> Result<serde_json::Value, Failure> {
    let absolute = std::path::absolute(file)
        .map_err(|e| Failure::Failed(format!("{}: {e}", file.display())))?;
    let path = absolute.display().to_string();
    // An ecosystem file often reads its environment (`process.env.PORT || 3000`): node gets this
    // command's, as `pm2 start` would have.
    let node = std::env::vars()
        .filter(|(name, _)| !matches!(name.as_str(), "PATH" | "HOME" | "USER" | "LC_ALL"))
        .fold(SystemTool::new("node", None), |node, (name, value)| {
            node.with_env(name, value)
        })
        .with_timeout(NODE_TIMEOUT);
    let output = node
        .run(Path::new(here), &["-e", NODE_EVAL, &path])
        .await
        .map_err(|e| {
            if e.is_not_installed() {
                Failure::Failed(format!(
                    "node is not installed, and {} is JavaScript: install node (e.g. `apt-get \
                     install nodejs`), or convert the file to JSON where node is, with `node -e \
                     'console.log(JSON.stringify(require(process.argv[1]), null, 2))' {path} > \
                     ecosystem.json`, and import that",
                    file.display()
                ))
            } else {
                Failure::Failed(format!(
                    "node could not evaluate {}: {}",
                    file.display(),
                    e.message()
                ))
            }
        })?;
    serde_json::from_str(&output.stdout).map_err(|e| {
        Failure::Failed(format!(
            "{} does not export an ecosystem (module.exports = {{apps: [...]}}): node printed no \
                JSON ({e})",
            file.display()
        ))
    })
}
