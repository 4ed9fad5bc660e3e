//! The machine's name (`--machine-name`): its default from the host name, kept in the state
//! directory across starts, shown in `/v1/health`, and refused with a clear error when invalid.

use std::process::Command;

use crate::{BIN, Daemon};

#[tokio::test]
async fn the_machine_name_defaults_to_the_host_name_is_kept_and_can_be_chosen() {
    let mut daemon = Daemon::start().await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let expected = celistra_core::names::machine_name_from_host(host.trim());
    let health = daemon.client.get_health().await.unwrap();
    assert_eq!(health.machine_name, expected);
    let kept = std::fs::read_to_string(daemon.home().join("machine-name")).unwrap();
    assert_eq!(kept.trim(), expected);

    // Chosen once, it is kept for the next start without the flag.
    daemon.signal_and_wait("TERM");
    daemon.launch.args = vec!["--machine-name".into(), "build-1".into()];
    daemon.restart_process().await;
    assert_eq!(
        daemon.client.get_health().await.unwrap().machine_name,
        "build-1"
    );
    daemon.signal_and_wait("TERM");
    daemon.launch.args.clear();
    daemon.restart_process().await;
    assert_eq!(
        daemon.client.get_health().await.unwrap().machine_name,
        "build-1"
    );
}

#[test]
fn an_invalid_machine_name_refuses_the_start_and_says_why() {
    let home = tempfile::tempdir().unwrap();
    let refused = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--machine-name",
            "Build/1",
            "--home",
        ])
        .arg(home.path())
        .output()
        .expect("run celistrad");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--machine-name") && stderr.contains("lower-case"),
        "{stderr}"
    );
    // A damaged kept name is refused too, naming the file.
    std::fs::write(home.path().join("machine-name"), "no way\n").unwrap();
    let refused = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--home"])
        .arg(home.path())
        .output()
        .expect("run celistrad");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("machine-name"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
