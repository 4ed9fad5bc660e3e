//! Running `git` for the daemon (worktrees): one `git` process with its arguments in a directory,
//! as a given user, with a timeout, its output captured and a failure turned into a typed error
//! carrying git's own message. No shell is involved: arguments reach git as they are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{Credentials, SpawnSpec, signal_group, spawn_with_pipes};

/// Output kept per stream; the rest is read and dropped so git never blocks on a full pipe.
const OUTPUT_LIMIT: usize = 4 * 1024 * 1024;

/// Runs git as one user with one environment.
#[derive(Debug, Clone)]
pub struct Git {
    credentials: Option<Credentials>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

/// What a successful `git` printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Why a `git` command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git could not be started (not installed, the directory is missing, no permission).
    #[error("cannot run `git {args}` in {dir}: {source}")]
    Start {
        args: String,
        dir: String,
        source: crate::Error,
    },
    /// git ran and failed; `message` is what it said on stderr (else stdout).
    #[error("`git {args}` in {dir} failed: {message}")]
    Failed {
        args: String,
        dir: String,
        code: Option<i32>,
        message: String,
    },
    /// git did not finish in time and was killed with its process group.
    #[error("`git {args}` in {dir} did not finish within {} s and was stopped", .limit.as_secs())]
    TimedOut {
        args: String,
        dir: String,
        limit: Duration,
    },
    #[error("`git {args}` in {dir}: {source}")]
    Io {
        args: String,
        dir: String,
        source: std::io::Error,
    },
}

impl GitError {
    /// git's own words (or the error's text when git never ran).
    pub fn message(&self) -> String {
        match self {
            GitError::Failed { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

impl Git {
    /// Git as `credentials` (`None`: the daemon's own user), with that user's `HOME`, `USER` and
    /// the daemon's `PATH`, messages in English (`LC_ALL=C`), never prompting, and a 60 s timeout.
    pub fn new(credentials: Option<Credentials>) -> Git {
        let (home, user) = match &credentials {
            Some(user) => (user.home.display().to_string(), user.name.clone()),
            None => match Credentials::current() {
                Ok(own) => (
                    std::env::var("HOME").unwrap_or_else(|_| own.home.display().to_string()),
                    own.name,
                ),
                Err(_) => ("/".into(), String::new()),
            },
        };
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let env = vec![
            ("PATH".into(), path),
            ("HOME".into(), home),
            ("USER".into(), user),
            ("LC_ALL".into(), "C".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ];
        Git {
            credentials,
            env,
            timeout: Duration::from_secs(60),
        }
    }

    /// The same runner with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Git {
        self.timeout = timeout;
        self
    }

    /// The user git runs as, when it is not the daemon's own.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Runs `git ARGS…` in `dir`. Succeeds when git exits 0.
    pub async fn run(&self, dir: &Path, args: &[&str]) -> Result<GitOutput, GitError> {
        let shown = args.join(" ");
        let place = dir.display().to_string();
        let spawn = SpawnSpec {
            program: "git".into(),
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
            cwd: PathBuf::from(dir),
            env: self.env.clone(),
            cgroup: None,
            sandbox: None,
            credentials: self.credentials.as_ref(),
            limits: None,
            audit_login_uid: None,
        };
        let spawned = spawn_with_pipes(&spawn).map_err(|source| GitError::Start {
            args: shown.clone(),
            dir: place.clone(),
            source,
        })?;
        drop(spawned.stdin);
        let mut child = spawned.child;
        let pid = child.pid();
        let finished = async {
            let (stdout, stderr) =
                tokio::join!(read_capped(spawned.stdout), read_capped(spawned.stderr));
            let status = child.wait().await;
            (stdout, stderr, status)
        };
        let (stdout, stderr, status) = match tokio::time::timeout(self.timeout, finished).await {
            Ok(done) => done,
            Err(_) => {
                // git leads its own session (spawn_with_pipes), so its hooks go with it.
                let _ = signal_group(pid, libc::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                return Err(GitError::TimedOut {
                    args: shown,
                    dir: place,
                    limit: self.timeout,
                });
            }
        };
        let io = |source| GitError::Io {
            args: shown.clone(),
            dir: place.clone(),
            source,
        };
        let (stdout, stderr, status) = (
            stdout.map_err(io)?,
            stderr.map_err(io)?,
            status.map_err(io)?,
        );
        if status.code == Some(0) {
            return Ok(GitOutput { stdout, stderr });
        }
        let said = if stderr.trim().is_empty() {
            stdout.trim()
        } else {
            stderr.trim()
        };
        Err(GitError::Failed {
            args: shown,
            dir: place,
            code: status.code,
            message: match (said.is_empty(), status.signal) {
                (false, _) => said.to_owned(),
                (true, Some(signal)) => format!("killed by signal {signal}"),
                (true, None) => format!("exit status {}", status.code.unwrap_or(-1)),
            },
        })
    }
}

/// Reads a stream to its end, keeping at most [`OUTPUT_LIMIT`] bytes (lossy UTF-8).
async fn read_capped(mut stream: impl AsyncRead + Unpin) -> std::io::Result<String> {
    let mut kept = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        let room = OUTPUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..n.min(room)]);
    }
    Ok(String::from_utf8_lossy(&kept).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn git_output_and_failures_carry_gits_words() {
        let dir = tempfile::tempdir().unwrap();
        let git = Git::new(None);
        let version = git.run(dir.path(), &["--version"]).await.unwrap();
        assert!(version.stdout.starts_with("git version"), "{version:?}");
        let error = git
            .run(dir.path(), &["rev-parse", "--show-toplevel"])
            .await
            .unwrap_err();
        assert!(error.message().contains("not a git repository"), "{error}");
        assert!(matches!(
            error,
            GitError::Failed {
                code: Some(128),
                ..
            }
        ));
        // Arguments are not a shell's: `;` is just a character.
        let weird = git.run(dir.path(), &["init", "-q", "a; touch b"]).await;
        assert!(weird.is_ok());
        assert!(dir.path().join("a; touch b").is_dir() && !dir.path().join("b").exists());
    }

    #[tokio::test]
    async fn a_git_that_hangs_is_stopped_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let git = Git::new(None).with_timeout(Duration::from_millis(300));
        // An alias that runs a shell command which never ends on its own.
        let started = std::time::Instant::now();
        let error = git
            .run(dir.path(), &["-c", "alias.hang=!sleep 30", "hang"])
            .await
            .unwrap_err();
        assert!(matches!(error, GitError::TimedOut { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
