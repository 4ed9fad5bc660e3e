//! Running `git` for the daemon (worktrees): a [`SystemTool`] for `git`, as a given user, that
//! never prompts; a failure is a typed error carrying git's own message.

use std::path::Path;
use std::time::Duration;

use crate::{Credentials, SystemTool, ToolError, ToolOutput};

/// What a successful `git` printed.
pub type GitOutput = ToolOutput;

/// Why a `git` command did not succeed; `Failed` carries git's own message.
pub type GitError = ToolError;

/// Runs git as one user with one environment.
#[derive(Debug, Clone)]
pub struct Git {
    tool: SystemTool,
}

impl Git {
    /// Git as `credentials` (`None`: the daemon's own user), with that user's `HOME`, `USER` and
    /// the daemon's `PATH`, messages in English (`LC_ALL=C`), never prompting, and a 60 s timeout.
    pub fn new(credentials: Option<Credentials>) -> Git {
        Git {
            tool: SystemTool::new("git", credentials).with_env("GIT_TERMINAL_PROMPT", "0"),
        }
    }

    /// The same runner with another timeout.
    pub fn with_timeout(self, timeout: Duration) -> Git {
        Git {
            tool: self.tool.with_timeout(timeout),
        }
    }

    /// The user git runs as, when it is not the daemon's own.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.tool.credentials()
    }

    /// Runs `git ARGS…` in `dir`. Succeeds when git exits 0.
    pub async fn run(&self, dir: &Path, args: &[&str]) -> Result<GitOutput, GitError> {
        self.tool.run(dir, args).await
    }
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
