//! Running a system tool (`git`, `systemctl`, …): one program with its arguments in a directory,
//! as a given user, with a timeout that kills its process group, its output captured and a
//! failure turned into a typed error carrying the tool's own message. No shell is involved:
//! arguments reach the program as they are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{Credentials, ExitInfo, SpawnSpec, signal_group, spawn_with_pipes};

/// Output kept per stream; the rest is read and dropped so the tool never blocks on a full pipe.
const OUTPUT_LIMIT: usize = 4 * 1024 * 1024;

/// Runs one program as one user with one environment.
#[derive(Debug, Clone)]
pub struct SystemTool {
    program: String,
    credentials: Option<Credentials>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

/// What a tool printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub stdout: String,
    pub stderr: String,
    pub status: ExitInfo,
}

/// Why a tool did not succeed. `command` is the program and its arguments, as shown to people.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program could not be started (not installed, the directory is missing, no permission).
    #[error("cannot run `{command}` in {dir}: {source}")]
    Start {
        command: String,
        dir: String,
        source: crate::Error,
    },
    /// The program ran and failed; `message` is what it said on stderr (else stdout).
    #[error("`{command}` in {dir} failed: {message}")]
    Failed {
        command: String,
        dir: String,
        code: Option<i32>,
        message: String,
    },
    /// The program did not finish in time and was killed with its process group.
    #[error("`{command}` in {dir} did not finish within {} s and was stopped", .limit.as_secs())]
    TimedOut {
        command: String,
        dir: String,
        limit: Duration,
    },
    #[error("`{command}` in {dir}: {source}")]
    Io {
        command: String,
        dir: String,
        source: std::io::Error,
    },
}

impl ToolError {
    /// The tool's own words (or the error's text when it never ran).
    pub fn message(&self) -> String {
        match self {
            ToolError::Failed { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The program is not installed (not found in `PATH`).
    pub fn is_not_installed(&self) -> bool {
        matches!(
            self,
            ToolError::Start { source: crate::Error::Spawn { source, .. }, .. }
                if source.kind() == std::io::ErrorKind::NotFound
        )
    }
}

impl SystemTool {
    /// `program` as `credentials` (`None`: this process's own user), with that user's `HOME`,
    /// `USER` and this process's `PATH`, messages in English (`LC_ALL=C`), and a 60 s timeout.
    /// Nothing else of this process's environment is passed on (see [`SystemTool::with_env`]).
    pub fn new(program: impl Into<String>, credentials: Option<Credentials>) -> SystemTool {
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
        ];
        SystemTool {
            program: program.into(),
            credentials,
            env,
            timeout: Duration::from_secs(60),
        }
    }

    /// The same tool with one more environment variable.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> SystemTool {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The same tool with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> SystemTool {
        self.timeout = timeout;
        self
    }

    /// The user the tool runs as, when it is not this process's own.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Runs `program ARGS…` in `dir`. Succeeds when it exits 0.
    pub async fn run(&self, dir: &Path, args: &[&str]) -> Result<ToolOutput, ToolError> {
        let output = self.output(dir, args).await?;
        if output.status.code == Some(0) {
            return Ok(output);
        }
        let said = if output.stderr.trim().is_empty() {
            output.stdout.trim()
        } else {
            output.stderr.trim()
        };
        Err(ToolError::Failed {
            command: self.shown(args),
            dir: dir.display().to_string(),
            code: output.status.code,
            message: match (said.is_empty(), output.status.signal) {
                (false, _) => said.to_owned(),
                (true, Some(signal)) => format!("killed by signal {signal}"),
                (true, None) => format!("exit status {}", output.status.code.unwrap_or(-1)),
            },
        })
    }

    /// Runs `program ARGS…` in `dir` to its end, whatever its exit status: for tools that answer
    /// with it (`systemctl is-active`).
    pub async fn output(&self, dir: &Path, args: &[&str]) -> Result<ToolOutput, ToolError> {
        let command = self.shown(args);
        let place = dir.display().to_string();
        let spawn = SpawnSpec {
            program: self.program.clone(),
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
            cwd: PathBuf::from(dir),
            env: self.env.clone(),
            cgroup: None,
            sandbox: None,
            credentials: self.credentials.as_ref(),
            limits: None,
            audit_login_uid: None,
        };
        let spawned = spawn_with_pipes(&spawn).map_err(|source| ToolError::Start {
            command: command.clone(),
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
                // The tool leads its own session (spawn_with_pipes), so its children go with it.
                let _ = signal_group(pid, libc::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                return Err(ToolError::TimedOut {
                    command,
                    dir: place,
                    limit: self.timeout,
                });
            }
        };
        let io = |source| ToolError::Io {
            command: command.clone(),
            dir: place.clone(),
            source,
        };
        Ok(ToolOutput {
            stdout: stdout.map_err(io)?,
            stderr: stderr.map_err(io)?,
            status: status.map_err(io)?,
        })
    }

    fn shown(&self, args: &[&str]) -> String {
        std::iter::once(self.program.as_str())
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
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
    async fn output_keeps_a_failing_tools_words_and_code_and_run_turns_them_into_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let sh = SystemTool::new("sh", None).with_env("GREETING", "hello");
        let args = ["-c", "echo \"$GREETING\"; echo said >&2; exit 3"];
        let output = sh.output(dir.path(), &args).await.unwrap();
        assert_eq!(
            output,
            ToolOutput {
                stdout: "hello\n".into(),
                stderr: "said\n".into(),
                status: ExitInfo {
                    code: Some(3),
                    signal: None
                },
            }
        );
        let error = sh.run(dir.path(), &args).await.unwrap_err();
        assert!(
            matches!(&error, ToolError::Failed { code: Some(3), message, .. } if message == "said"),
            "{error}"
        );
        assert!(!error.is_not_installed());
    }

    #[tokio::test]
    async fn a_missing_program_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let error = SystemTool::new("celistra-no-such-tool", None)
            .run(dir.path(), &["--version"])
            .await
            .unwrap_err();
        assert!(error.is_not_installed(), "{error}");
        assert!(
            error
                .to_string()
                .contains("celistra-no-such-tool --version")
        );
    }
}
