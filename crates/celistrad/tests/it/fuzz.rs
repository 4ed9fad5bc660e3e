//! A property-based fuzzer driven by the OpenAPI document: schemathesis (installed by
//! `scripts/setup`) sends generated requests, valid and invalid, to every operation of a real
//! daemon over TCP, as an owner and as each other role, and checks that no answer is a 5xx and that
//! every answer's status, content type and body are the ones the document declares.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{BIN, Daemon};

/// Generated requests per operation in the fuzzing phase: enough to reach odd input, few enough
/// that the four runs take well under a minute on two cores.
const MAX_EXAMPLES: &str = "5";
/// A fixed seed: a failure found here is found again by the next run.
const SEED: &str = "15";
/// Bound of the four schemathesis runs.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The `st` that `scripts/setup` installs next to the build (`<target>/tools/schemathesis-venv`).
/// The test fails without it rather than skip: CI runs setup first.
fn schemathesis() -> PathBuf {
    let target = Path::new(BIN)
        .ancestors()
        .nth(2)
        .expect("the binary is in <target>/<profile>/");
    let st = target.join("tools/schemathesis-venv/bin/st");
    assert!(
        st.exists(),
        "{} is missing: run scripts/setup to install schemathesis",
        st.display()
    );
    st
}

/// Operations left out, and why:
/// - `revoke_token`: as the owner it could revoke the very tokens the other runs use.
/// - `open_terminal`: a WebSocket upgrade, which schemathesis does not speak (and whose ticket
///   refusals are tested in terminal.rs).
/// - `stream_events`, `get_logs`, `tail_audit`: streams that do not end (`follow=true`, a generated
///   value, for the first two; always for the tail), so schemathesis would read each until its
///   request timeout.
/// - `subscribe_push`, `test_notifications`, `join_hub`: they make the daemon send requests to the
///   addresses in their bodies (a push endpoint, a hub) or configured channels; a fuzzer's made-up
///   addresses must never be a target (joining is tested on the test's own network in fleet.rs).
/// - `stream_fleet_events`: a stream that does not end, like `stream_events`.
const EXCLUDED: [&str; 11] = [
    // They stop or re-execute the daemon under test.
    "stop_daemon",
    "upgrade_daemon",
    "revoke_token",
    "open_terminal",
    "stream_events",
    "get_logs",
    "tail_audit",
    "subscribe_push",
    "test_notifications",
    "join_hub",
    "stream_fleet_events",
];

#[tokio::test]
async fn the_api_keeps_to_its_document_under_fuzzing_as_every_role() {
    let st = schemathesis();
    let mut daemon = Daemon::start().await;
    let base = format!("http://{}", daemon.tcp_addr());
    let http = reqwest::Client::builder()
        .timeout(crate::PATIENCE)
        .build()
        .unwrap();
    let mut credentials = vec![("owner", daemon.secret())];
    for role in ["operator", "viewer", "approver"] {
        let created = http
            .post(format!("{base}/v1/tokens"))
            .bearer_auth(daemon.secret())
            .header("content-type", "application/json")
            .body(serde_json::json!({"name": format!("fuzz-{role}"), "role": role}).to_string())
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .await
            .unwrap();
        let created: serde_json::Value = serde_json::from_str(&created).unwrap();
        let token = created["token"].as_str().expect("a token").to_owned();
        credentials.push((role, token));
    }

    // The four runs go at once, as clients of one daemon would: fewer minutes on two cores, and
    // the owner's changes (agents spawned, renamed, removed) race the others' requests, which is
    // how a race in `apply` was found. Each keeps its examples database and reports in its own
    // working directory.
    let started = Instant::now();
    let runs = credentials.iter().map(|(role, credential)| {
        let scratch = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(&st);
        command
            .current_dir(scratch.path())
            .args(["run", &format!("{base}/v1/openapi.json"), "--url", &base])
            .args(["-H", &format!("Authorization: Bearer {credential}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            // The coverage phase's boundary values (two thousand requests) for the owner only:
            // another role is refused with 403 before its input is looked at, on most operations.
            .args([
                "--phases",
                if *role == "owner" {
                    "examples,coverage,fuzzing"
                } else {
                    "examples,fuzzing"
                },
            ])
            .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
            .args(["--request-timeout", "10", "--workers", "1"])
            .args(["--no-color", "--output-truncate", "false"])
            .kill_on_drop(true);
        for operation in EXCLUDED {
            command.args(["--exclude-operation-id", operation]);
        }
        let child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()));
        (role, child, scratch)
    });
    // Every run has started before the first is waited for.
    let runs: Vec<_> = runs.collect();
    for (role, child, _scratch) in runs {
        let left = RUN_LIMIT.saturating_sub(started.elapsed());
        let output = tokio::time::timeout(left, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("schemathesis as {role} took over {RUN_LIMIT:?}"))
            .expect("schemathesis's output");
        assert!(
            output.status.success(),
            "schemathesis as {role} found failures:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    eprintln!("schemathesis ran as 4 roles in {:?}", started.elapsed());

    // The daemon is alive and serving after it all.
    let health = http
        .get(format!("{base}/v1/health"))
        .bearer_auth(daemon.secret())
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let process = daemon.process.as_mut().expect("the daemon process");
    assert!(process.try_wait().unwrap().is_none(), "the daemon exited");
}
