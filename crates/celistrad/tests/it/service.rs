//! `celistrad service install|uninstall|status`: the unit's settings and binary path, the file's
//! mode, content and idempotence, `--force`, the systemctl commands (a stand-in `systemctl` that
//! logs them), a machine without systemd, and `systemd-analyze verify`. Units go to a temporary
//! directory (`--unit-dir`); nothing here touches /etc or the real systemd.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{BIN, output_within};

/// A temporary place for units, a home and a stand-in `systemctl`; removed on drop.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        let place = Place {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for dir in [place.units(), place.home(), place.config()] {
            std::fs::create_dir_all(dir).expect("create dir");
        }
        place
    }

    fn units(&self) -> PathBuf {
        self.dir.path().join("units")
    }

    fn unit(&self) -> PathBuf {
        self.units().join("celistrad.service")
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("systemctl.log")
    }

    /// A `systemctl` that appends its arguments to [`Place::log`], then runs `body` (sh).
    fn systemctl(&self, body: &str) -> String {
        let path = self.dir.path().join("systemctl");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\n{body}\n",
            self.log().display()
        );
        std::fs::write(&path, script).expect("write systemctl");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.display().to_string()
    }

    /// What the stand-in systemctl was asked, a line a command.
    fn asked(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `celistrad service ARGS…` with this place's home and config directory, bounded in time.
    fn service(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        output_within(&mut command, "").expect("celistrad service")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("service")
            .args(args)
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.config())
            .env_remove("CELISTRA_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
        command
    }

    /// `args` (the verb first), then `--unit-dir UNITS`.
    fn in_units<'a>(&'a self, units: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        [args, &["--unit-dir", units][..]].concat()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `said` (a command's stdout or stderr) holds every one of `parts`.
fn assert_says(said: &[u8], parts: &[&str]) {
    let said = text(said);
    for part in parts {
        assert!(said.contains(part), "no `{part}` in:\n{said}");
    }
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// The binary the unit must run: this test's celistrad, as the kernel names it.
fn real_binary() -> String {
    std::fs::canonicalize(BIN)
        .expect("celistrad binary")
        .display()
        .to_string()
}

#[test]
fn a_dry_run_prints_the_unit_with_every_setting_and_the_running_binary_and_writes_nothing() {
    let place = Place::new();
    let units = place.units().display().to_string();
    let out = place.service(&["install", "--dry-run", "--unit-dir", &units]);
    assert_exit(&out, 0);
    let unit = text(&out.stdout);
    let root_home = "/root"; // this container's passwd; the unit asks passwd, not $HOME
    for line in [
        "[Unit]",
        "After=network-online.target",
        "Wants=network-online.target",
        "[Service]",
        "Type=exec",
        &format!("ExecStart={} --home {root_home}/.celistra", real_binary()),
        &format!("Environment=HOME={root_home}"),
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=process",
        "Restart=on-failure",
        "RestartSec=1s",
        "TimeoutStopSec=120",
        "Delegate=yes",
        "LimitNOFILE=65536",
        "[Install]",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in:\n{unit}");
    }
    // Every setting but the obvious ones comes with its one-line why.
    for setting in [
        "KillMode=",
        "ExecReload=",
        "Delegate=",
        "TimeoutStopSec=",
        "Type=",
    ] {
        let at = unit.lines().position(|l| l.starts_with(setting)).unwrap();
        assert!(
            unit.lines().nth(at - 1).unwrap().starts_with('#'),
            "{setting} has no comment"
        );
    }
    assert_says(
        &out.stderr,
        &[
            &format!("{units}/celistrad.service"),
            "systemctl daemon-reload",
            "systemctl enable --now celistrad.service",
            "state directory: /root/.celistra",
        ],
    );
    assert_eq!(std::fs::read_dir(place.units()).unwrap().count(), 0);

    // A user unit: default.target, the user's state directory, $XDG_CONFIG_HOME, lingering.
    let out = place.service(&["install", "--user", "--dry-run"]);
    assert_exit(&out, 0);
    let home = place.home().display().to_string();
    assert_says(
        &out.stdout,
        &[
            &format!("ExecStart={} --home {home}/.celistra\n", real_binary()),
            "WantedBy=default.target\n",
        ],
    );
    assert!(!text(&out.stdout).contains("Environment=HOME"));
    let user_unit = place.config().join("systemd/user/celistrad.service");
    assert_says(
        &out.stderr,
        &[
            &user_unit.display().to_string(),
            "systemctl --user enable --now celistrad.service",
            "lingering is",
            "loginctl enable-linger",
        ],
    );
    assert!(!place.config().join("systemd").exists());

    // --home names the state directory, made absolute.
    let out = place.service(&["install", "--dry-run", "--home", "relative/state"]);
    let cwd = std::env::current_dir().unwrap().display().to_string();
    assert_says(&out.stdout, &[&format!("--home {cwd}/relative/state\n")]);
    // Usage errors are clap's: 2.
    assert_exit(&place.service(&["install", "--no-such-flag"]), 2);
}

#[test]
fn install_writes_the_dry_run_unit_0644_is_idempotent_refuses_a_changed_unit_without_force_and_uninstall_removes_it()
 {
    let place = Place::new();
    let units = place.units().display().to_string();
    let offline = |args: &[&str]| {
        let mut args = place.in_units(&units, args);
        args.push("--no-systemctl");
        place.service(&args)
    };
    let dry = place.service(&place.in_units(&units, &["install", "--dry-run"]));
    let expected = text(&dry.stdout);

    let out = offline(&["install"]);
    assert_exit(&out, 0);
    assert_says(&out.stdout, &["systemctl daemon-reload"]);
    let written = std::fs::read_to_string(place.unit()).unwrap();
    assert_eq!(written, expected);
    let mode = std::fs::metadata(place.unit())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "{mode:o}");

    // Again: nothing changes, no temporary file is left behind.
    let out = offline(&["install"]);
    assert_exit(&out, 0);
    assert_says(&out.stdout, &["unchanged"]);
    assert_eq!(std::fs::read_to_string(place.unit()).unwrap(), expected);
    let names: Vec<_> = std::fs::read_dir(place.units())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["celistrad.service"]);

    // An edited unit is refused, and left as it is, until --force.
    let edited = format!("{expected}# local change\n");
    std::fs::write(place.unit(), &edited).unwrap();
    let out = offline(&["install"]);
    assert_exit(&out, 1);
    assert_says(&out.stderr, &["--force"]);
    assert_eq!(std::fs::read_to_string(place.unit()).unwrap(), edited);
    let dry = place.service(&place.in_units(&units, &["install", "--dry-run"]));
    assert_says(&dry.stderr, &["refused without --force"]);
    assert_exit(&offline(&["install", "--force"]), 0);
    assert_eq!(std::fs::read_to_string(place.unit()).unwrap(), expected);

    let out = offline(&["status"]);
    assert_exit(&out, 0);
    assert_says(&out.stdout, &["(installed)"]);

    assert_exit(&offline(&["uninstall"]), 0);
    assert!(!place.unit().exists());
    let out = offline(&["uninstall"]);
    assert_exit(&out, 1);
    assert_says(&out.stderr, &["not installed"]);
    let out = offline(&["status"]);
    assert_says(&out.stdout, &["(not installed)"]);

    // A user unit goes below $XDG_CONFIG_HOME, its directory created.
    let out = place.service(&["install", "--user", "--no-systemctl"]);
    assert_exit(&out, 0);
    let user_unit = place.config().join("systemd/user/celistrad.service");
    assert!(
        std::fs::read_to_string(user_unit)
            .unwrap()
            .contains("WantedBy=default.target")
    );
}

#[test]
fn install_reloads_then_enables_status_asks_systemd_and_uninstall_disables_then_reloads() {
    let place = Place::new();
    let units = place.units().display().to_string();
    let systemctl = place.systemctl(
        "case \"$*\" in\n\
         *is-enabled*) echo enabled ;;\n\
         *is-active*) echo active ;;\n\
         *MainPID*) echo 4242 ;;\n\
         esac",
    );
    let run = |args: &[&str]| {
        let mut args = place.in_units(&units, args);
        args.extend(["--systemctl", &systemctl]);
        place.service(&args)
    };
    assert_exit(&run(&["install"]), 0);
    assert_eq!(
        place.asked(),
        ["daemon-reload", "enable --now celistrad.service"]
    );
    let out = run(&["status"]);
    assert_exit(&out, 0);
    let status = text(&out.stdout);
    for line in ["enabled: enabled", "active: active", "main pid: 4242"] {
        assert!(
            status.lines().any(|l| l == line),
            "no `{line}` in:\n{status}"
        );
    }
    std::fs::remove_file(place.log()).unwrap();
    assert_exit(&run(&["uninstall"]), 0);
    assert_eq!(
        place.asked(),
        ["disable --now celistrad.service", "daemon-reload"]
    );
    assert!(!place.unit().exists());

    // A user service talks to the user's manager.
    std::fs::remove_file(place.log()).unwrap();
    assert_exit(&run(&["install", "--user"]), 0);
    assert_eq!(
        place.asked(),
        [
            "--user daemon-reload",
            "--user enable --now celistrad.service"
        ]
    );
}

#[test]
fn without_systemd_install_keeps_the_unit_and_says_how_to_run_the_daemon_without_it() {
    let place = Place::new();
    let units = place.units().display().to_string();
    let not_booted = place.systemctl(
        "echo \"System has not been booted with systemd as init system (PID 1). Can't operate.\" >&2\n\
         echo 'Failed to connect to bus: Host is down' >&2\nexit 1",
    );
    let run = |systemctl: &str, args: &[&str]| {
        let mut args = place.in_units(&units, args);
        args.extend(["--systemctl", systemctl]);
        place.service(&args)
    };
    for systemctl in [not_booted.as_str(), "/nonexistent/systemctl"] {
        let out = run(systemctl, &["install"]);
        assert_exit(&out, 1);
        assert_says(
            &out.stderr,
            &[
                &format!("{units}/celistrad.service"),
                "nohup",
                &format!("{} --home /root/.celistra", real_binary()),
                "kill -HUP",
            ],
        );
        assert!(place.unit().exists());
    }
    let missing = run("/nonexistent/systemctl", &["install"]);
    assert_says(&missing.stderr, &["systemctl is not installed"]);
    let not_running = run(&not_booted, &["install"]);
    assert_says(&not_running.stderr, &["has not been booted with systemd"]);

    let out = run(&not_booted, &["status"]);
    assert_exit(&out, 0);
    assert_says(
        &out.stdout,
        &["(installed)", "has not been booted with systemd"],
    );
    // Nothing can run under a systemd that is not there: removing the file is the whole job.
    let out = run(&not_booted, &["uninstall"]);
    assert_exit(&out, 0);
    assert!(!place.unit().exists());
}

#[test]
fn a_system_install_needs_root_and_says_so() {
    let place = Place::new();
    let mut command = place.command(&["install"]);
    // As root, run it as `nobody`, who can neither write /etc nor be mistaken for root.
    if rustix::process::geteuid().is_root() {
        command.uid(65534).gid(65534);
    }
    let out = output_within(&mut command, "").expect("celistrad service install");
    assert_exit(&out, 1);
    assert_says(&out.stderr, &["needs root to install", "sudo", "--user"]);
}

/// `systemd-analyze`, where installed.
fn systemd_analyze() -> Option<&'static Path> {
    let path = Path::new("/usr/bin/systemd-analyze");
    path.exists().then_some(path)
}

#[test]
fn the_system_and_user_units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        println!("skipped: /usr/bin/systemd-analyze is not installed");
        return;
    };
    let place = Place::new();
    let runtime = place.dir.path().join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    for user in [false, true] {
        let mut args = vec!["install", "--dry-run"];
        args.extend(user.then_some("--user"));
        let out = place.service(&args);
        assert_exit(&out, 0);
        let unit = place.unit();
        std::fs::write(&unit, &out.stdout).unwrap();
        let mut verify = Command::new(analyze);
        if user {
            // The user manager's checks want a runtime directory, as a login session has.
            verify.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
        }
        verify.arg("verify").arg(&unit);
        let verified = output_within(&mut verify, "").expect("systemd-analyze verify");
        assert!(
            verified.status.success() && verified.stderr.is_empty(),
            "user {user}: {}\n{}",
            text(&verified.stderr),
            text(&out.stdout)
        );
    }
}
