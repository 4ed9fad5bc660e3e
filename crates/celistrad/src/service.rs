//! `celistrad service install|uninstall|status`: the daemon as a systemd unit, system-wide
//! (/etc/systemd/system, as root) or for one user (`--user`, ~/.config/systemd/user). The unit is
//! written for the keeper design (docs/service.md): a crash of the daemon leaves its keeper and
//! agents running (`KillMode=process`), SIGHUP is the in-place upgrade. systemctl runs through
//! `celistra_sandbox::SystemTool`; without systemd, the unit is still written and the error says
//! how to run the daemon without it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use celistra_sandbox::{Credentials, SystemTool, ToolError};
use clap::{Args, Subcommand};

use crate::HomeArg;

/// The unit's name, in systemd's own directories and in every systemctl command.
const UNIT_NAME: &str = "celistrad.service";
/// Where systemd reads units installed by the administrator.
const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";
/// Where `systemd --user` finds a user's own units, below `$XDG_CONFIG_HOME` (or ~/.config).
const USER_UNIT_SUBDIR: &str = "systemd/user";
/// Longer than the unit's `TimeoutStopSec`, so `disable --now` is not cut short by us.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(150);

#[derive(Debug, Args)]
pub(crate) struct ServiceArgs {
    #[command(subcommand)]
    action: ServiceAction,
}

#[derive(Debug, Subcommand)]
enum ServiceAction {
    /// Write the systemd unit, then `systemctl daemon-reload` and `enable --now` it. System-wide
    /// needs root; `--user` installs it for you alone. Idempotent; a changed unit needs --force.
    Install(InstallArgs),
    /// `systemctl disable --now` the unit, remove its file, `daemon-reload`.
    Uninstall(Scope),
    /// Whether the unit file exists, whether systemd has it enabled and active, and its main pid.
    Status(Scope),
}

#[derive(Debug, Args)]
struct InstallArgs {
    #[command(flatten)]
    scope: Scope,
    /// Print the unit (stdout), where it would go and the systemctl commands (stderr); change
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace an installed unit whose content differs from this version's.
    #[arg(long)]
    force: bool,
}

/// Which unit: the system's or the user's, and (for packagers and tests) where and how.
#[derive(Debug, Args)]
struct Scope {
    /// A user service (`systemctl --user`), started at login; see lingering in the output.
    #[arg(long)]
    user: bool,
    /// For packagers and tests: the unit's directory instead of systemd's (no root check).
    #[arg(long, value_name = "DIR", hide = true)]
    unit_dir: Option<PathBuf>,
    /// For packagers and tests: only write or remove the file; print the systemctl commands.
    #[arg(long, hide = true)]
    no_systemctl: bool,
    /// For tests: the systemctl program to run.
    #[arg(long, value_name = "PROGRAM", default_value = "systemctl", hide = true)]
    systemctl: String,
}

impl Scope {
    fn unit_path(&self) -> anyhow::Result<PathBuf> {
        let dir = match (&self.unit_dir, self.user) {
            (Some(dir), _) => std::path::absolute(dir)?,
            (None, false) => PathBuf::from(SYSTEM_UNIT_DIR),
            (None, true) => user_config_dir()?.join(USER_UNIT_SUBDIR),
        };
        Ok(dir.join(UNIT_NAME))
    }

    /// Why there is no systemd to talk to, in words: no systemctl, PID 1 is not systemd (named),
    /// or its manager cannot be reached (a user's, from outside a login session).
    fn absent_reason(&self, error: &SystemctlError) -> String {
        match error {
            SystemctlError::NotInstalled => "systemctl is not installed here".to_owned(),
            // sd_booted(3): this directory exists only when systemd is PID 1.
            SystemctlError::NotRunning(said) if Path::new("/run/systemd/system").is_dir() => {
                if self.user {
                    format!(
                        "your systemd user manager cannot be reached from here (a login over ssh \
                         or a console has one; `su` and `sudo -u` give none): {said}"
                    )
                } else {
                    format!("systemd cannot be reached: {said}")
                }
            }
            SystemctlError::NotRunning(said) => {
                let pid1 = std::fs::read_to_string("/proc/1/comm")
                    .map(|name| format!("PID 1 is `{}`", name.trim()))
                    .unwrap_or_else(|_| "PID 1 is another init".to_owned());
                format!("systemd is not running here ({pid1}; systemctl: {said})")
            }
            SystemctlError::Failed(said) => said.clone(),
        }
    }

    /// A system unit in systemd's directory is root's to change; say so before trying.
    fn require_root(&self, verb: &str, path: &Path) -> anyhow::Result<()> {
        if self.user || self.unit_dir.is_some() || rustix::process::geteuid().is_root() {
            return Ok(());
        }
        let program = std::env::args()
            .next()
            .unwrap_or_else(|| "celistrad".into());
        bail!(
            "a system service ({}) needs root to {verb}: run `sudo {program} service {verb}`, or \
             `celistrad service {verb} --user` for a service of your own",
            path.display()
        )
    }

    fn systemctl(&self) -> Option<Systemctl> {
        (!self.no_systemctl).then(|| Systemctl::new(&self.systemctl, self.user))
    }

    /// `systemctl [--user] ARGS…`, as a person would type it.
    fn shown(&self, args: &[&str]) -> String {
        let user = if self.user { " --user" } else { "" };
        format!("systemctl{user} {}", args.join(" "))
    }
}

/// `$XDG_CONFIG_HOME` when it is absolute (the spec says to ignore it otherwise), else ~/.config.
fn user_config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from)
        && dir.is_absolute()
    {
        return Ok(dir);
    }
    let home = std::env::var_os("HOME").context("$HOME is not set: cannot find ~/.config")?;
    Ok(PathBuf::from(home).join(".config"))
}

pub(crate) async fn run(args: ServiceArgs, home: &HomeArg) -> anyhow::Result<ExitCode> {
    match args.action {
        ServiceAction::Install(install) => self::install(install, home).await,
        ServiceAction::Uninstall(scope) => uninstall(scope).await,
        ServiceAction::Status(scope) => status(scope).await,
    }
}

const ENABLE: [&str; 3] = ["enable", "--now", UNIT_NAME];
const DISABLE: [&str; 3] = ["disable", "--now", UNIT_NAME];
const RELOAD: [&str; 1] = ["daemon-reload"];

async fn install(args: InstallArgs, home: &HomeArg) -> anyhow::Result<ExitCode> {
    let scope = &args.scope;
    let path = scope.unit_path()?;
    let state_dir = state_dir(home, scope.user)?;
    let binary = running_binary()?;
    // systemd sets no $HOME for a system service; agents and their default workspace use it.
    let home_env = if scope.user { None } else { Some(root_home()?) };
    let unit = unit_text(&UnitSpec {
        binary: &binary,
        state_dir: &state_dir,
        home_env: home_env.as_deref(),
        user: scope.user,
    })?;
    let installed = read_unit(&path)?;
    let replacing = installed.as_deref().is_some_and(|text| text != unit);
    if args.dry_run {
        print!("{unit}");
        eprintln!("state directory: {}", state_dir.display());
        let what = match (&installed, replacing) {
            (None, _) => "would be written to",
            (Some(_), false) => "is already installed, unchanged, at",
            (Some(_), true) if args.force => "would replace the different unit at",
            (Some(_), true) => "differs from the one installed (refused without --force) at",
        };
        eprintln!("this unit {what} {}", path.display());
        eprintln!("then: {}", scope.shown(&RELOAD));
        eprintln!("      {}", scope.shown(&ENABLE));
        if scope.user {
            eprintln!("{}", lingering_advice());
        }
        eprintln!("(dry run: nothing written, nothing run)");
        return Ok(ExitCode::SUCCESS);
    }
    scope.require_root("install", &path)?;
    if replacing && !args.force {
        bail!(
            "{} holds a different unit (edited, or from another version): `celistrad service \
             install --dry-run` shows this version's; --force replaces it",
            path.display()
        );
    }
    println!("state directory: {}", state_dir.display());
    if installed.is_none() || replacing {
        write_unit(&path, &unit)?;
        let verb = if replacing { "replaced" } else { "wrote" };
        println!("{verb} {}", path.display());
    } else {
        println!("{} is already installed and unchanged", path.display());
    }
    let Some(systemctl) = scope.systemctl() else {
        println!("systemctl not run (--no-systemctl); next:");
        println!("  {}\n  {}", scope.shown(&RELOAD), scope.shown(&ENABLE));
        if scope.user {
            println!("{}", lingering_advice());
        }
        return Ok(ExitCode::SUCCESS);
    };
    for command in [&RELOAD[..], &ENABLE[..]] {
        if let Err(error) = systemctl.run(command).await {
            let written = format!("the unit is in place at {}", path.display());
            bail!(match error {
                SystemctlError::Failed(message) => {
                    format!(
                        "{written}, but `{}` failed: {message}",
                        scope.shown(command)
                    )
                }
                absent => format!(
                    "{}; {written}, for when it is.\n{}",
                    scope.absent_reason(&absent),
                    run_without_systemd(&binary, &state_dir)
                ),
            });
        }
        println!("ran {}", scope.shown(command));
    }
    if replacing {
        // `enable --now` leaves a running daemon as it is: the new settings wait for a restart.
        println!(
            "the running daemon keeps the old unit's settings until `{}`",
            scope.shown(&["restart", UNIT_NAME])
        );
    }
    let journal = if scope.user {
        "journalctl --user"
    } else {
        "journalctl"
    };
    println!(
        "celistrad runs as a service: `{}`, logs: `{journal} -u celistrad`",
        scope.shown(&["status", "celistrad"])
    );
    if scope.user {
        println!("{}", lingering_advice());
    }
    Ok(ExitCode::SUCCESS)
}

async fn uninstall(scope: Scope) -> anyhow::Result<ExitCode> {
    let path = scope.unit_path()?;
    if read_unit(&path)?.is_none() {
        let kind = if scope.user { "user" } else { "system" };
        bail!(
            "celistrad is not installed as a {kind} service: there is no {}",
            path.display()
        );
    }
    scope.require_root("uninstall", &path)?;
    let systemctl = scope.systemctl();
    let mut systemd_absent = false;
    if let Some(systemctl) = &systemctl {
        match systemctl.run(&DISABLE).await {
            Ok(()) => println!("ran {}", scope.shown(&DISABLE)),
            // Nothing runs under a systemd that is not there: removing the file is all there is.
            Err(error @ (SystemctlError::NotInstalled | SystemctlError::NotRunning(_))) => {
                println!("{}: no systemctl command run", scope.absent_reason(&error));
                systemd_absent = true;
            }
            Err(SystemctlError::Failed(message)) => bail!(
                "`{}` failed, so {} was left in place: {message}",
                scope.shown(&DISABLE),
                path.display()
            ),
        }
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    println!("removed {}", path.display());
    match (&systemctl, systemd_absent) {
        (Some(systemctl), false) => {
            if let Err(error) = systemctl.run(&RELOAD).await {
                bail!(
                    "the unit was removed, but `{}` failed: {error}",
                    scope.shown(&RELOAD)
                );
            }
            println!("ran {}", scope.shown(&RELOAD));
        }
        (Some(_), true) => {}
        (None, _) => println!(
            "systemctl not run (--no-systemctl); next:\n  {}\n  {}",
            scope.shown(&["disable", UNIT_NAME]),
            scope.shown(&RELOAD)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(scope: Scope) -> anyhow::Result<ExitCode> {
    let path = scope.unit_path()?;
    let file = match read_unit(&path)? {
        Some(_) => "installed",
        None => "not installed",
    };
    println!("unit file: {} ({file})", path.display());
    let Some(systemctl) = scope.systemctl() else {
        return Ok(ExitCode::SUCCESS);
    };
    let questions: [(&str, &[&str]); 3] = [
        ("enabled", &["is-enabled", UNIT_NAME]),
        ("active", &["is-active", UNIT_NAME]),
        (
            "main pid",
            &["show", "--property", "MainPID", "--value", UNIT_NAME],
        ),
    ];
    for (label, question) in questions {
        match systemctl.ask(question).await {
            Ok(answer) if label == "main pid" && answer == "0" => println!("{label}: none"),
            Ok(answer) => println!("{label}: {answer}"),
            Err(error @ (SystemctlError::NotInstalled | SystemctlError::NotRunning(_))) => {
                println!("{}", scope.absent_reason(&error));
                break;
            }
            Err(SystemctlError::Failed(message)) => println!("{label}: unknown ({message})"),
        }
    }
    if scope.user {
        println!("{}", lingering_advice());
    }
    Ok(ExitCode::SUCCESS)
}

/// How to run the daemon where systemd is not: the README's recipe, with this binary and state.
fn run_without_systemd(binary: &Path, state_dir: &Path) -> String {
    let binary = shell_word(&binary.display().to_string());
    let state = shell_word(&state_dir.display().to_string());
    format!(
        "Without systemd, run the daemon in the background yourself (README, \"Without \
         systemd\"):\n  mkdir -p -m 700 {state} && nohup {binary} --home {state} \
         >>{state}/celistrad.log 2>&1 &\nor from your init system (OpenRC, runit, s6); `kill -HUP` \
         its pid upgrades it in place."
    )
}

/// A user service runs only while its user has a session, unless lingering is on.
fn lingering_advice() -> String {
    let user = Credentials::current()
        .map(|me| me.name)
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "$USER".into());
    if Path::new("/var/lib/systemd/linger").join(&user).exists() {
        format!(
            "lingering is on for {user}: the service starts at boot and keeps running after you \
             log out"
        )
    } else {
        format!(
            "lingering is off for {user}: the service stops when your last session ends and \
             starts again at your next login. To keep it running (and start it at boot): \
             `sudo loginctl enable-linger {user}`"
        )
    }
}

/// The state directory the unit passes with `--home`: the one given, else the default of the
/// user the service runs as (root for a system service: systemd gives it no `$HOME`).
fn state_dir(home: &HomeArg, user: bool) -> anyhow::Result<PathBuf> {
    if user || home.home.is_some() {
        return home.resolve();
    }
    Ok(root_home()?.join(".celistra"))
}

fn root_home() -> anyhow::Result<PathBuf> {
    let root = Credentials::lookup("0").context("cannot find root's home directory")?;
    Ok(root.home)
}

/// This executable's absolute path, which the unit runs.
fn running_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe().context("cannot find the path of this executable")?;
    if path.to_string_lossy().ends_with(" (deleted)") {
        bail!(
            "this executable ({}) was deleted or replaced since it started: run the one installed now",
            path.display()
        );
    }
    Ok(path)
}

/// The installed unit's text, `None` when there is none.
fn read_unit(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the unit file atomically (a temporary file in the same directory, then a rename), 0644
/// as systemd's own units are, creating a user's unit directory.
fn write_unit(path: &Path, text: &str) -> anyhow::Result<()> {
    let failed = || format!("cannot write {}", path.display());
    let dir = path.parent().context("a unit path has a directory")?;
    std::fs::create_dir_all(dir).with_context(failed)?;
    // Its name does not end in `.service`, so systemd never loads it half-written.
    let mut file = tempfile::Builder::new()
        .prefix(".celistrad.service.")
        .tempfile_in(dir)
        .with_context(failed)?;
    file.write_all(text.as_bytes()).with_context(failed)?;
    let handle = file.as_file();
    handle
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| handle.sync_all())
        .with_context(failed)?;
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(failed)?;
    Ok(())
}

/// What the unit is made of.
struct UnitSpec<'a> {
    binary: &'a Path,
    state_dir: &'a Path,
    /// The `$HOME` the unit sets (a system service gets none from systemd).
    home_env: Option<&'a Path>,
    /// A user unit (`default.target`) rather than a system one (`multi-user.target`).
    user: bool,
}

/// The unit file. Every line is explained in docs/service.md; keep the two together.
fn unit_text(spec: &UnitSpec<'_>) -> anyhow::Result<String> {
    let binary = unit_word(spec.binary)?;
    let state_dir = unit_word(spec.state_dir)?;
    let environment = match spec.home_env {
        Some(home) => format!(
            "# systemd sets no $HOME for a system service; agents and their default workspace \
             use it.\nEnvironment={}\n",
            unit_word(Path::new(&assignment("HOME=", home)))?
        ),
        None => String::new(),
    };
    let wanted_by = if spec.user {
        "default.target"
    } else {
        "multi-user.target"
    };
    Ok(format!(
        "# Written by `celistrad service install`; docs/service.md explains every line.
[Unit]
Description=Celistra: keeps agents and other long-running processes alive
# Agents reach the network as soon as they start (git remotes, model APIs).
After=network-online.target
Wants=network-online.target

[Service]
# Ready once the binary is executed: a missing or broken binary fails the start itself.
Type=exec
ExecStart={binary} --home {state_dir}
{environment}# SIGHUP is the in-place upgrade: the daemon re-executes its binary, keeping its pid.
ExecReload=/bin/kill -HUP $MAINPID
# Only the daemon is signalled or killed: after a crash its keeper and agents live on and the
# next start adopts them; on stop the daemon stops its agents gracefully itself.
KillMode=process
Restart=on-failure
RestartSec=1s
# Time for the agents' own stop grace periods before systemd kills the daemon.
TimeoutStopSec=120
# The daemon makes a cgroup per agent below its own.
Delegate=yes
# Every agent holds a PTY, pipes, log and database files.
LimitNOFILE=65536

[Install]
WantedBy={wanted_by}
"
    ))
}

/// `NAME=` followed by `value`, byte for byte.
fn assignment(name: &str, value: &Path) -> std::ffi::OsString {
    let mut assignment = std::ffi::OsString::from(name);
    assignment.push(value);
    assignment
}

/// `path` as one word of a unit file: `%` and `$` escaped (specifiers and variables), quoted
/// when it holds anything but plain path characters.
fn unit_word(path: &Path) -> anyhow::Result<String> {
    let text = path.to_str().with_context(|| {
        format!(
            "{} is not valid UTF-8: a unit file cannot name it",
            path.display()
        )
    })?;
    if text.chars().any(char::is_control) {
        bail!("{text:?} holds a control character: a unit file cannot name it");
    }
    let escaped = text.replace('%', "%%").replace('$', "$$");
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@=%$".contains(c);
    if escaped.chars().all(plain) {
        return Ok(escaped);
    }
    Ok(format!(
        "\"{}\"",
        escaped.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// `text` as one word for a POSIX shell, quoted only when it needs to be.
fn shell_word(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@=".contains(c))
    {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Why a systemctl command did not do its work.
#[derive(Debug)]
enum SystemctlError {
    NotInstalled,
    /// PID 1 is not systemd, or the (user) manager cannot be reached; systemctl's words.
    NotRunning(String),
    Failed(String),
}

impl std::fmt::Display for SystemctlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SystemctlError::NotInstalled => f.write_str("systemctl is not installed"),
            SystemctlError::NotRunning(said) | SystemctlError::Failed(said) => f.write_str(said),
        }
    }
}

/// `systemctl` or `systemctl --user`.
struct Systemctl {
    tool: SystemTool,
    user: bool,
}

impl Systemctl {
    fn new(program: &str, user: bool) -> Systemctl {
        let mut tool = SystemTool::new(program, None).with_timeout(SYSTEMCTL_TIMEOUT);
        // `systemctl --user` finds the user's manager through these.
        for name in ["XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"] {
            if let Ok(value) = std::env::var(name) {
                tool = tool.with_env(name, value);
            }
        }
        Systemctl { tool, user }
    }

    fn args<'a>(&self, args: &[&'a str]) -> Vec<&'a str> {
        self.user
            .then_some("--user")
            .into_iter()
            .chain(args.iter().copied())
            .collect()
    }

    /// Runs a command that must succeed.
    async fn run(&self, args: &[&str]) -> Result<(), SystemctlError> {
        match self.tool.run(Path::new("/"), &self.args(args)).await {
            Ok(_) => Ok(()),
            Err(error) => Err(classify(&error)),
        }
    }

    /// Asks a question systemctl answers on stdout whatever its exit status (`is-active`).
    async fn ask(&self, args: &[&str]) -> Result<String, SystemctlError> {
        let output = self
            .tool
            .output(Path::new("/"), &self.args(args))
            .await
            .map_err(|error| classify(&error))?;
        let answer = output.stdout.trim();
        if !answer.is_empty() {
            return Ok(answer.to_owned());
        }
        Err(match output.stderr.lines().find(|line| no_manager(line)) {
            Some(line) => SystemctlError::NotRunning(line.to_owned()),
            None => SystemctlError::Failed(output.stderr.trim().to_owned()),
        })
    }
}

fn classify(error: &ToolError) -> SystemctlError {
    let said = error.message();
    if error.is_not_installed() {
        SystemctlError::NotInstalled
    } else if let Some(line) = said.lines().find(|line| no_manager(line)) {
        SystemctlError::NotRunning(line.to_owned())
    } else {
        SystemctlError::Failed(said)
    }
}

/// systemctl's words when there is no systemd to talk to: PID 1 is something else, or no bus.
fn no_manager(said: &str) -> bool {
    said.contains("has not been booted with systemd") || said.contains("Failed to connect to bus")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_words_escape_specifiers_and_quote_spaces() {
        let word = |path: &str| unit_word(Path::new(path)).unwrap();
        assert_eq!(word("/usr/local/bin/celistrad"), "/usr/local/bin/celistrad");
        assert_eq!(word("/home/a%b/$x"), "/home/a%%b/$$x");
        assert_eq!(word("/home/my \"dir\""), r#""/home/my \"dir\"""#);
        assert!(unit_word(Path::new("/a\nb")).is_err());
    }

    #[test]
    fn system_and_user_units_differ_only_where_they_must() {
        let spec = |user: bool| UnitSpec {
            binary: Path::new("/usr/local/bin/celistrad"),
            state_dir: Path::new("/srv/celistra state"),
            home_env: (!user).then_some(Path::new("/root")),
            user,
        };
        let system = unit_text(&spec(false)).unwrap();
        let user = unit_text(&spec(true)).unwrap();
        assert!(
            system.contains("ExecStart=/usr/local/bin/celistrad --home \"/srv/celistra state\"\n")
        );
        assert!(system.contains("WantedBy=multi-user.target\n"));
        assert!(system.contains("Environment=HOME=/root\n"));
        assert!(user.contains("WantedBy=default.target\n") && !user.contains("Environment="));
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/root/.celistra"), "/root/.celistra");
        assert_eq!(shell_word("/a b/it's"), r"'/a b/it'\''s'");
    }
}
