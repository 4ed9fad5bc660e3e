//! A standby: the sandbox of an agent's next run, set up ahead and waiting to be woken, so that a
//! restart lets a program into a ready sandbox instead of building one first (namespaces, mounts,
//! Landlock and seccomp: most of a sandboxed restart's time). An agent gets one once it was
//! restarted automatically (the agent that crashed is the one likely to crash again; agents that
//! just run pay nothing), [`AFTER_START`] into its new run. It shares the agent's cgroup, and a
//! restart uses it only if it would launch exactly what the standby was set up with; otherwise,
//! and whenever the agent stops, the standby is killed. The keeper ends every standby when the
//! daemon goes.

use std::os::fd::{AsFd, OwnedFd};

use celistra_proto::AgentSpec;
use celistra_sandbox::keeper::{Keeper, KeeperError, SpawnedRun};
use celistra_sandbox::{Launch, PtySize};

/// How long after a restart the next standby is set up: the new run starts first, without the
/// standby's set-up (some milliseconds of CPU) competing with it.
pub(super) const AFTER_START: std::time::Duration = std::time::Duration::from_millis(50);

pub(super) struct Standby {
    /// What it was set up to run, and whether on a terminal (else on pipes).
    launch: Launch,
    on_pty: bool,
    /// Taken when it is woken: from then on it is a run.
    run: Option<SpawnedRun>,
    /// Its launcher, the init of its PID namespace: killing it ends the whole standby, with no
    /// race against the keeper reaping it and its pid being reused.
    pidfd: OwnedFd,
}

/// Whether an agent of `spec` may have a standby: not one that shares a listening socket, works
/// in a git worktree (made per run) or has a process limit (a standby's two processes count).
pub(super) fn may_have_one(spec: &AgentSpec) -> bool {
    spec.socket.is_none() && spec.worktree.is_none() && spec.pids_max.is_none()
}

impl Standby {
    /// Has the keeper set up a sandbox for `launch` that waits to be woken.
    pub(super) async fn start(
        keeper: &Keeper,
        agent_id: &str,
        launch: Launch,
        pty: Option<PtySize>,
    ) -> Option<Box<Standby>> {
        let spawned = keeper
            .spawn(
                agent_id,
                0,
                launch.clone(),
                pty,
                None,
                serde_json::Value::Null,
                true,
            )
            .await;
        let run = match spawned {
            Ok(run) => run,
            Err(e) => {
                tracing::debug!(agent = agent_id, "no standby: {e}");
                return None;
            }
        };
        let pid = i32::try_from(run.child.pid())
            .ok()
            .and_then(rustix::process::Pid::from_raw)?;
        // If it already ended, there is nothing to keep (the keeper forgets it).
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
        Some(Box::new(Standby {
            launch,
            on_pty: pty.is_some(),
            run: Some(run),
            pidfd,
        }))
    }

    /// Starts its program as run `run_id` (with `note`), in a terminal of `pty`.
    pub(super) async fn wake(
        mut self: Box<Self>,
        keeper: &Keeper,
        run_id: u64,
        note: serde_json::Value,
        pty: Option<PtySize>,
    ) -> Result<SpawnedRun, KeeperError> {
        let Some(run) = self.run.take() else {
            return Err(KeeperError::Spawn("the standby was woken already".into()));
        };
        // Its terminal was made at the size of the time; a viewer may have resized it since.
        if let (Some(size), Some(master)) = (pty, run.fds.first()) {
            let winsize = rustix::termios::Winsize {
                ws_row: size.rows,
                ws_col: size.cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            if let Err(e) = rustix::termios::tcsetwinsize(master.as_fd(), winsize) {
                tracing::debug!("cannot size the standby's terminal: {e}");
            }
        }
        keeper.wake(run.child.pid(), run_id, note).await?;
        Ok(run)
    }
}

/// `standby` if it still waits and was set up for exactly `launch`, on a terminal if `pty` is;
/// otherwise it is ended here.
pub(super) fn take_fitting(
    standby: Option<Box<Standby>>,
    launch: &Launch,
    pty: Option<PtySize>,
) -> Option<Box<Standby>> {
    let mut standby = standby?;
    let waiting = standby
        .run
        .as_mut()
        .is_some_and(|run| !run.child.has_ended());
    (waiting && standby.on_pty == pty.is_some() && standby.launch == *launch).then_some(standby)
}

impl Drop for Standby {
    fn drop(&mut self) {
        if self.run.is_some() {
            // Never woken: its agent process never ran anything.
            let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
        }
    }
}
