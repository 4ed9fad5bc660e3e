//! Migration from supervisord and PM2: `ctl import` of real-world-shaped files, applied to a real
//! daemon whose agents must then run as the source file said, and the settings the importers map to
//! (`expected_exit_codes`, `no_autostart`).

use std::path::{Path, PathBuf};

use celistra_proto::{AgentSpec, AgentState};

use crate::{Daemon, spec};

#[tokio::test]
async fn an_expected_exit_code_ends_the_agent_and_an_unexpected_one_restarts_it() {
    let daemon = Daemon::start().await;
    // The first run exits 4 (unexpected: restarted), the second 3 (expected: the agent rests).
    let agent = daemon
        .spawn(AgentSpec {
            auto_restart: true,
            expected_exit_codes: vec![0, 3],
            ..spec(
                "worker",
                "if [ -e ran ]; then exit 3; else touch ran; exit 4; fi",
            )
        })
        .await;
    let done = daemon.wait_state(&agent.id, AgentState::Exited).await;
    assert_eq!((done.exit_code, done.restarts, done.run), (Some(3), 1, 2));
    // Without the list, an auto-restarted agent that exits 3 is restarted until it crashes out.
    let plain = daemon
        .spawn(AgentSpec {
            auto_restart: true,
            ..spec("plain", "exit 3")
        })
        .await;
    let out = daemon.wait_state(&plain.id, AgentState::CrashedOut).await;
    assert_eq!(out.exit_code, Some(3));
}

#[tokio::test]
async fn a_no_autostart_agent_is_created_stopped_and_runs_when_started() {
    let daemon = Daemon::start().await;
    let agent = daemon
        .spawn(AgentSpec {
            no_autostart: true,
            ..spec("later", "exec sleep 300")
        })
        .await;
    assert_eq!(
        (agent.state, agent.pid, agent.run),
        (AgentState::Stopped, None, 0)
    );
    daemon.client.start_agent(&agent.id).await.expect("start");
    daemon.wait_state(&agent.id, AgentState::Running).await;
    let work = daemon.work.path().display().to_string();
    let out = daemon.ctl(&[
        "spawn",
        "--name",
        "by-hand",
        "--no-autostart",
        "--workspace",
        &work,
        "sleep 300",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("created stopped"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(daemon.agent("by-hand").await.state, AgentState::Stopped);
}

/// Runs `ctl import ARGS…` against the daemon with extra environment variables; its output.
fn import(daemon: &Daemon, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(crate::BIN);
    command
        .arg("ctl")
        .arg("--home")
        .arg(daemon.home())
        .arg("import")
        .args(args);
    command.envs(env.iter().copied());
    crate::output_within(&mut command, "").expect("ctl import ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test]
async fn a_supervisord_conf_d_with_includes_a_group_and_numprocs_runs_as_configured() {
    let daemon = Daemon::start().await;
    let work = daemon.work.path().display().to_string();
    let etc = tempfile::tempdir().expect("etc");
    let main = write(
        etc.path(),
        "supervisord.conf",
        "[supervisord]
logfile=/var/log/supervisor/supervisord.log

[include]
files = conf.d/*.conf
",
    );
    write(
        etc.path(),
        "conf.d/queue.conf",
        "[group:queue]\nprograms=worker,janitor\n\n\
         [program:worker]\n\
         command=sh -c 'echo \"worker %(process_num)02d of %(group_name)s says $GREETING\"; exec sleep 300'\n\
         process_name=%(program_name)s-%(process_num)02d\nnumprocs=2\n\
         directory=%(ENV_WORK)s\nenvironment=GREETING=\"hello, world\",UNUSED=1\n\
         stopsignal=INT\nstopwaitsecs=3\nstdout_logfile=/var/log/worker.log\n\n\
         [program:janitor]\ncommand=sh -c 'echo janitor ran; exit 3'\ndirectory=%(ENV_WORK)s\n\
         autorestart=unexpected\nexitcodes=0,3\n",
    );
    write(
        etc.path(),
        "conf.d/manual.conf",
        "[program:manual]
command=sleep 300
directory=%(ENV_WORK)s
autostart=false
autorestart=false
",
    );
    let out = import(
        &daemon,
        &[main.to_str().unwrap(), "--apply"],
        &[("WORK", &work)],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("supervisord.conf:1: [supervisord]: not imported"),
        "{stderr}"
    );
    assert!(
        stderr.contains("queue.conf:12: [program:worker] stdout_logfile: not imported"),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("created"),
        "{}",
        text(&out.stdout)
    );
    for (name, number) in [("worker-00", "00"), ("worker-01", "01")] {
        daemon.wait_state(name, AgentState::Running).await;
        let said = format!("worker {number} of queue says hello, world");
        crate::approvals::wait_output(&daemon, name, &said).await;
        let spec = daemon.client.get_agent_spec(name).await.expect("spec");
        assert_eq!(
            (
                spec.stop_signal,
                spec.stop_timeout_ms,
                spec.workspace.as_deref()
            ),
            (
                Some(celistra_proto::Signal::Int),
                Some(3000),
                Some(work.as_str())
            )
        );
    }
    // Exit 3 is expected: the janitor is not restarted.
    let janitor = daemon.wait_state("janitor", AgentState::Exited).await;
    assert_eq!((janitor.exit_code, janitor.restarts), (Some(3), 0));
    crate::approvals::wait_output(&daemon, "janitor", "janitor ran").await;
    let manual = daemon.agent("manual").await;
    assert_eq!((manual.state, manual.run), (AgentState::Stopped, 0));
    // A second import changes nothing.
    let again = import(
        &daemon,
        &[main.to_str().unwrap(), "--apply"],
        &[("WORK", &work)],
    );
    assert!(
        text(&again.stdout).contains("unchanged"),
        "{}",
        text(&again.stdout)
    );
    assert!(!text(&again.stdout).contains("created"));
}

#[tokio::test]
async fn the_seed_migrations_run_their_scraper() {
    let daemon = Daemon::start().await;
    let dir = daemon.work.path();
    write(
        dir,
        "scraper.py",
        "print('scraping', flush=True)\nimport time\ntime.sleep(300)\n",
    );
    write(
        dir,
        "run.py",
        "print('running', flush=True)\nimport time\ntime.sleep(300)\n",
    );
    // The PM2 seed, as its ecosystem.config.js.
    let ecosystem = write(
        dir,
        "ecosystem.config.js",
        "module.exports = {
  apps: [{ name: 'scraper', script: 'scraper.py', interpreter: 'python3' }]
};
",
    );
    let out = import(&daemon, &[ecosystem.to_str().unwrap(), "--apply"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    daemon.wait_state("scraper", AgentState::Running).await;
    crate::approvals::wait_output(&daemon, "scraper", "scraping").await;
    // The supervisord seed, with its paths in this test's workspace.
    let user = text(
        &std::process::Command::new("id")
            .arg("-un")
            .output()
            .expect("id")
            .stdout,
    );
    let conf = write(
        dir,
        "scraper.conf",
        &format!(
            "[program:site-scraper]
command=python3 {}/run.py
autorestart=true
user={}
stdout_logfile=/var/log/scraper.log
directory={}
",
            dir.display(),
            user.trim(),
            dir.display()
        ),
    );
    let out = import(&daemon, &[conf.to_str().unwrap(), "--apply"], &[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("scraper.conf:5: [program:site-scraper] stdout_logfile: not imported"),
        "{stderr}"
    );
    daemon.wait_state("site-scraper", AgentState::Running).await;
    crate::approvals::wait_output(&daemon, "site-scraper", "running").await;
    let spec = daemon
        .client
        .get_agent_spec("site-scraper")
        .await
        .expect("spec");
    assert!(spec.auto_restart && spec.expected_exit_codes.is_empty());
}

#[tokio::test]
async fn a_pm2_ecosystem_js_takes_env_production_and_a_yaml_one_its_settings() {
    let daemon = Daemon::start().await;
    let dir = daemon.work.path();
    write(
        dir,
        "api/server.js",
        "console.log(`api in ${process.env.NODE_ENV} on ${process.env.PORT} with ${process.argv.slice(2).join('|')}`);
setInterval(() => {}, 1000);
",
    );
    let js = write(
        dir,
        "ecosystem.config.js",
        "module.exports = {
  apps: [{
    name: 'api',
    script: 'server.js',
    cwd: 'api',
    args: ['--mode', 'fast lane'],
    env: { NODE_ENV: 'development', PORT: process.env.API_PORT || 3000 },
    env_production: { NODE_ENV: 'production' },
    instances: 2,
    max_memory_restart: '500M',
    out_file: '/var/log/api.log',
  }],
};
",
    );
    let out = import(
        &daemon,
        &[js.to_str().unwrap(), "--env", "production", "--apply"],
        &[("API_PORT", "4321")],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("ecosystem.config.js: apps[0] (api) instances: mapped: instances 2: a group"),
        "{stderr}"
    );
    // Two instances of the group `api`, each its own agent with the app's settings.
    for instance in ["api-0", "api-1"] {
        daemon.wait_state(instance, AgentState::Running).await;
        crate::approvals::wait_output(
            &daemon,
            instance,
            "api in production on 4321 with --mode|fast lane",
        )
        .await;
        let spec = daemon.client.get_agent_spec(instance).await.expect("spec");
        assert_eq!(spec.memory_restart, Some(500 * 1024 * 1024));
    }
    let yaml = write(
        dir,
        "ecosystem.yaml",
        "apps:
  - name: ticker
    script: ./tick.sh
    interpreter: none
    kill_timeout: 4000
    max_restarts: 4
    exp_backoff_restart_delay: 200
    log_date_format: YYYY-MM-DD
",
    );
    let tick = write(dir, "tick.sh", "#!/bin/sh\necho tick\nexec sleep 300\n");
    std::fs::set_permissions(&tick, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = import(&daemon, &[yaml.to_str().unwrap(), "--apply", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["applied"]["created"][0], "ticker");
    let date_format = report["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .find(|n| n["key"] == "log_date_format")
        .expect("a note on log_date_format");
    assert_eq!(
        (&date_format["line"], &date_format["kind"]),
        (&serde_json::json!(8), &serde_json::json!("unsupported"))
    );
    let ticker = daemon.wait_state("ticker", AgentState::Running).await;
    assert_eq!(
        (
            ticker.settings.stop_timeout_ms,
            ticker.settings.restart_max,
            ticker.settings.backoff_initial_ms,
            ticker.settings.stop_signal
        ),
        (4000, 4, 200, celistra_proto::Signal::Int)
    );
    crate::approvals::wait_output(&daemon, "ticker", "tick").await;
}

#[tokio::test]
async fn without_node_a_javascript_file_is_refused_saying_how_to_convert_it() {
    let daemon = Daemon::start().await;
    let js = write(
        daemon.work.path(),
        "ecosystem.config.js",
        "module.exports = { apps: [] };\n",
    );
    let out = import(
        &daemon,
        &[js.to_str().unwrap()],
        &[("PATH", "/nonexistent")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("node is not installed") && stderr.contains("JSON.stringify"),
        "{stderr}"
    );
}

#[tokio::test]
async fn strict_refuses_a_file_with_keys_not_imported_and_applies_nothing() {
    let daemon = Daemon::start().await;
    let conf = write(
        daemon.work.path(),
        "app.conf",
        "[program:app]\ncommand=sleep 300\nstdout_logfile=/tmp/app.log\n",
    );
    let out = import(
        &daemon,
        &[conf.to_str().unwrap(), "--apply", "--strict"],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("app.conf:3: [program:app] stdout_logfile: not imported: Celistra keeps"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was applied"), "{stderr}");
    assert!(daemon.client.list_agents().await.expect("ls").is_empty());
    // Without --apply nothing reaches the daemon either: the apply file is printed.
    let printed = import(&daemon, &[conf.to_str().unwrap()], &[]);
    assert!(printed.status.success());
    let file: serde_json::Value = serde_json::from_slice(&printed.stdout).expect("an apply file");
    assert_eq!(file["agents"][0]["command"], "sleep 300");
    let unknown = import(&daemon, &["/etc/hostname"], &[]);
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "an unknown format is a usage error"
    );
}
