//! A worktree per agent (`--worktree BRANCH`): made beside the repository, the agent runs and
//! commits there from its sandbox, `rm` removes a clean one and refuses to lose work, and the
//! refusals (no git repository, a branch already taken).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use celistra_proto::{AgentSpec, AgentState, ErrorCode, RemoveQuery};

use crate::{Daemon, PATIENCE, marker, spec, wait_no_process_with};

/// A repository `app` with one commit on `main`, in a temporary directory that also receives its
/// worktrees (`app.worktrees/`).
pub(crate) struct Repo {
    pub(crate) dir: tempfile::TempDir,
}

impl Repo {
    pub(crate) fn new() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("celistra-git-")
            .tempdir()
            .expect("temp dir");
        let repo = Repo { dir };
        std::fs::create_dir(repo.path()).expect("mkdir app");
        repo.git(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.path().join("README"), "hello\n").expect("write README");
        repo.git(&["add", "README"]);
        repo.git(&["commit", "-qm", "first"]);
        repo
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    pub(crate) fn worktree(&self, branch: &str) -> PathBuf {
        self.dir.path().join("app.worktrees").join(branch)
    }

    pub(crate) fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
            // A repository given to another user (below) is still the test's to read.
            .args(["-c", "safe.directory=*"])
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn agent(&self, name: &str, branch: &str, command: &str) -> AgentSpec {
        AgentSpec {
            workspace: Some(self.path().display().to_string()),
            worktree: Some(branch.into()),
            ..spec(name, command)
        }
    }
}

async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_worktree_agent_runs_and_commits_in_its_own_worktree_from_its_sandbox() {
    let daemon = Daemon::start().await;
    let repo = Repo::new();
    let mark = marker();
    let command = format!(
        "pwd > where.txt && git add where.txt && git -c user.name=agent -c user.email=a@b \
         commit -qm 'from the agent' && echo done > ../committed-{mark}; sleep {mark}"
    );
    let agent = daemon.spawn(repo.agent("feat", "feat/one", &command)).await;
    let worktree = repo.worktree("feat/one");
    assert_eq!(agent.worktree.as_deref(), Some(worktree.to_str().unwrap()));
    assert_eq!(agent.workspace, repo.path().display().to_string());
    let running = daemon.wait_state(&agent.id, AgentState::Running).await;
    let sandbox = running.sandbox.expect("run sandbox");
    assert!(sandbox.sandboxed, "{sandbox:?}");
    // The implicit grant that lets it commit: the repository's common git directory.
    let git_dir = std::fs::canonicalize(repo.path().join(".git")).unwrap();
    let grant = format!("write:{}", git_dir.display());
    assert!(sandbox.capabilities.contains(&grant), "{sandbox:?}");
    // `sandbox explain` shows the same: the grant and where it came from.
    let explained = daemon
        .client
        .explain_sandbox(&celistra_proto::ExplainRequest {
            agent: Some("feat".into()),
            spec: None,
        })
        .await
        .expect("explain");
    assert!(explained.run.capabilities.contains(&grant), "{explained:?}");
    assert!(
        explained
            .sources
            .iter()
            .any(|s| s.origin == "worktree" && s.capabilities.contains(&grant)),
        "{:?}",
        explained.sources
    );
    let log_of_branch = || {
        Command::new("git")
            .args(["log", "--format=%s", "feat/one"])
            .current_dir(repo.path())
            .output()
            .map(|out| text(&out.stdout))
            .unwrap_or_default()
    };
    wait_for("the agent's commit", || {
        log_of_branch().contains("from the agent")
    })
    .await;
    // It ran in the worktree, which the main checkout does not see.
    let pwd = std::fs::read_to_string(worktree.join("where.txt")).expect("where.txt");
    assert_eq!(
        Path::new(pwd.trim()),
        std::fs::canonicalize(&worktree).unwrap()
    );
    assert!(!repo.path().join("where.txt").exists());
    assert!(repo.git(&["status", "--porcelain"]).is_empty());
    // Clean: `rm` removes the worktree (and the empty directories above it), not the branch.
    let rm = daemon.ctl(&["rm", "feat"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    wait_no_process_with(&mark).await;
    assert!(!worktree.exists());
    assert!(!repo.dir.path().join("app.worktrees").exists());
    assert!(log_of_branch().contains("from the agent"));
    assert!(!repo.git(&["worktree", "list"]).contains("feat/one"));
}

#[tokio::test]
async fn a_root_daemon_makes_the_worktree_as_the_workspaces_owner_whose_agent_commits() {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = crate::sandbox::test_user();
    let daemon = Daemon::start().await;
    let repo = Repo::new();
    let chown = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(repo.dir.path())
        .status()
        .expect("chown");
    assert!(chown.success());
    let mark = marker();
    let command = format!(
        "echo mine > owned.txt && git add owned.txt && git -c user.name=agent -c user.email=a@b \
         commit -qm owned; sleep {mark}"
    );
    let agent = daemon.spawn(repo.agent("owned", "owned", &command)).await;
    assert_eq!(agent.last_error, None);
    let worktree = repo.worktree("owned");
    assert_eq!(
        std::fs::metadata(worktree.join("README")).unwrap().uid(),
        uid
    );
    wait_for("the agent's commit", || {
        repo.git(&["log", "--format=%s", "owned"]).contains("owned")
    })
    .await;
    assert_eq!(
        std::fs::metadata(worktree.join("owned.txt")).unwrap().uid(),
        uid
    );
    let info = daemon.agent("owned").await;
    assert!(info.sandbox.unwrap().user.starts_with("celistra-test"));
    let rm = daemon.ctl(&["rm", "owned"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    wait_no_process_with(&mark).await;
    assert!(!worktree.exists());
}

#[tokio::test]
async fn rm_refuses_to_lose_work_and_keeps_or_discards_the_worktree_as_asked() {
    let daemon = Daemon::start().await;
    let repo = Repo::new();
    let mark = marker();
    let command = format!("echo note > notes.txt; echo more >> README; sleep {mark}");
    daemon.spawn(repo.agent("dirty", "wip", &command)).await;
    let worktree = repo.worktree("wip");
    wait_for("the agent's files", || worktree.join("notes.txt").exists()).await;
    daemon.wait_state("dirty", AgentState::Running).await;

    let refused = daemon.ctl(&["rm", "dirty"]);
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    for expected in [
        "untracked: notes.txt",
        "modified: README",
        "--keep-worktree",
        "--discard-worktree",
    ] {
        assert!(said.contains(expected), "`{expected}` missing in: {said}");
    }
    // Refused before anything happened: the agent still runs, its files are there.
    assert_eq!(daemon.agent("dirty").await.state, AgentState::Running);
    assert!(worktree.join("notes.txt").exists());

    // --keep-worktree: the agent goes, the worktree and branch stay.
    let kept = daemon.ctl(&["rm", "dirty", "--keep-worktree"]);
    assert!(kept.status.success(), "{}", text(&kept.stderr));
    wait_no_process_with(&mark).await;
    assert!(worktree.join("notes.txt").exists());
    assert!(repo.git(&["branch", "--list", "wip"]).contains("wip"));

    // A new agent on that branch takes up the kept worktree, work included.
    let again = marker();
    let agent = daemon
        .spawn(repo.agent("again", "wip", &format!("cat notes.txt; sleep {again}")))
        .await;
    assert_eq!(agent.worktree.as_deref(), Some(worktree.to_str().unwrap()));
    daemon.wait_state("again", AgentState::Running).await;

    // Through the API too: refused without a choice, both choices at once are a usage error.
    let refused = daemon
        .client
        .remove_agent("again", &RemoveQuery::default())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("notes.txt"), "{refused}");
    let both = RemoveQuery {
        keep_worktree: true,
        discard_worktree: true,
    };
    let contradiction = daemon
        .client
        .remove_agent("again", &both)
        .await
        .unwrap_err();
    assert!(
        matches!(&contradiction, celistra_client::ClientError::Api(e) if e.code == ErrorCode::InvalidRequest),
        "{contradiction}"
    );

    // --discard-worktree: the worktree goes with its changes; the branch stays.
    let discarded = daemon.ctl(&["rm", "again", "--discard-worktree"]);
    assert!(discarded.status.success(), "{}", text(&discarded.stderr));
    wait_no_process_with(&again).await;
    assert!(!worktree.exists());
    assert!(repo.git(&["branch", "--list", "wip"]).contains("wip"));
}

#[tokio::test]
async fn a_worktree_needs_a_git_workspace_and_a_branch_no_other_agent_has() {
    let daemon = Daemon::start().await;
    let repo = Repo::new();

    // Not a repository: 400, saying so.
    let plain = AgentSpec {
        workspace: Some(daemon.work.path().display().to_string()),
        worktree: Some("x".into()),
        ..spec("plain", "true")
    };
    let error = daemon.client.spawn_agent(&plain).await.unwrap_err();
    match &error {
        celistra_client::ClientError::Api(e) => {
            assert_eq!(e.code, ErrorCode::WorkspaceInvalid);
            assert!(e.message.contains("git repository"), "{}", e.message);
        }
        other => panic!("{other}"),
    }
    assert!(daemon.client.get_agent("plain").await.is_err());

    // A name git refuses: 400.
    let bad = daemon
        .client
        .spawn_agent(&repo.agent("bad", "a..b", "true"))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("branch name"), "{bad}");

    // The branch of the main checkout: git keeps a branch in one worktree.
    let main = daemon
        .client
        .spawn_agent(&repo.agent("main", "main", "true"))
        .await
        .unwrap_err();
    assert!(main.to_string().contains("already checked out"), "{main}");

    // Two agents on one branch: the second is refused and names the first.
    let mark = marker();
    daemon
        .spawn(repo.agent("first", "shared", &format!("sleep {mark}")))
        .await;
    let second = daemon
        .client
        .spawn_agent(&repo.agent("second", "shared", "true"))
        .await
        .unwrap_err();
    match &second {
        celistra_client::ClientError::Api(e) => {
            assert_eq!(e.code, ErrorCode::Conflict);
            assert!(e.message.contains("`first`"), "{}", e.message);
        }
        other => panic!("{other}"),
    }
    // A name that is taken makes no worktree.
    let taken = daemon
        .client
        .spawn_agent(&repo.agent("first", "other", "true"))
        .await
        .unwrap_err();
    assert!(taken.to_string().contains("already exists"), "{taken}");
    assert!(!repo.worktree("other").exists());
    // From the command line too, with `spawn --worktree`.
    let cli = daemon.ctl(&[
        "spawn",
        "--name",
        "third",
        "--workspace",
        repo.path().to_str().unwrap(),
        "--worktree",
        "shared",
        "true",
    ]);
    assert!(!cli.status.success());
    assert!(text(&cli.stderr).contains("already works on branch"));
    let rm = daemon.ctl(&["rm", "first"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    wait_no_process_with(&mark).await;
}

#[tokio::test]
async fn a_restarted_daemon_knows_a_stopped_agents_worktree_and_keeps_its_branch_to_it() {
    let mut daemon = Daemon::start().await;
    let repo = Repo::new();
    let mark = marker();
    daemon
        .spawn(repo.agent("keeper", "kept", &format!("sleep {mark}")))
        .await;
    daemon.wait_state("keeper", AgentState::Running).await;
    let stop = daemon.ctl(&["stop", "keeper"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    wait_no_process_with(&mark).await;
    daemon.signal_and_wait("TERM");
    daemon.restart_process().await;
    let agent = daemon.agent("keeper").await;
    assert_eq!(agent.state, AgentState::Stopped);
    let worktree = repo.worktree("kept");
    assert_eq!(agent.worktree.as_deref(), Some(worktree.to_str().unwrap()));
    let second = daemon
        .client
        .spawn_agent(&repo.agent("second", "kept", "true"))
        .await
        .unwrap_err();
    assert!(second.to_string().contains("`keeper`"), "{second}");
    let rm = daemon.ctl(&["rm", "keeper"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    assert!(!worktree.exists());
}
