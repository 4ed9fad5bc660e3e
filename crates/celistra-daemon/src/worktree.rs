//! A git worktree per agent (`--worktree BRANCH`, docs/worktrees.md): made (or found again) before
//! each run, where the run starts; what removing it would lose; and removing it.
//!
//! # Where
//!
//! The worktree of branch `B` of the repository whose main checkout is `/src/app` is
//! `/src/app.worktrees/B` (a branch `feat/x` is the directory `feat/x` there). Beside the
//! repository rather than inside it, so nothing that walks up from the worktree (Cargo and npm
//! looking for a workspace or `node_modules`, `.editorconfig`, ESLint configs, an `.envrc`) finds
//! the main checkout's files, and nothing that walks down the main checkout (an indexer, `find`,
//! a test runner's glob) sees every agent's copy. Branch names map to paths one to one: git
//! forbids `..`, leading dots and a branch `a` next to `a/b`.
//!
//! # What would be lost
//!
//! Removing a worktree removes its directory, never its branch: commits stay on the branch
//! whatever happens. What the directory alone holds is work that would be lost: changes to
//! tracked files (staged or not) and untracked files that are not ignored. Ignored files (build
//! output, `node_modules`) go with the worktree.
//!
//! Git runs as the user the agent runs as (a root daemon: the workspace's owner or `--user`), so
//! the worktree's files are the agent's, not root's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use celistra_proto::{AgentSpec, ApiError, ErrorCode, RemoveQuery};
use celistra_sandbox::{Git, GitError};

use crate::services::Services;

/// `git worktree add` checks out a whole tree: it may take a while on a large repository.
const ADD_TIMEOUT: Duration = Duration::from_secs(300);

/// An agent's worktree, ready for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Worktree {
    /// The worktree's top directory.
    pub path: PathBuf,
    /// Where the run starts: the workspace's own subdirectory inside the worktree (the worktree's
    /// top when the workspace is the repository's, or when the subdirectory is not in the branch).
    pub cwd: PathBuf,
    /// The repository's common git directory (`git rev-parse --git-common-dir`): a commit in the
    /// worktree writes its objects and refs there, so a sandboxed agent may write it.
    pub common_dir: PathBuf,
}

/// The repository a workspace is in.
struct Repo {
    /// The checkout the workspace is in (its top directory).
    top: PathBuf,
    /// The workspace's path inside that checkout (`sub/dir/` or empty).
    prefix: String,
    common_dir: PathBuf,
}

impl Repo {
    /// Where the worktree of `branch` goes: `<main checkout>.worktrees/<branch>`.
    fn location(&self, branch: &str) -> PathBuf {
        // The main checkout holds the common git directory as `.git`; a repository with its git
        // directory elsewhere (`--separate-git-dir`, a submodule) is named by the checkout used.
        let main = match self.common_dir.file_name() {
            Some(name) if name == ".git" => self.common_dir.parent().unwrap_or(&self.top),
            _ => &self.top,
        };
        let name = main
            .file_name()
            .map_or_else(|| "repository".into(), |n| n.to_string_lossy().into_owned());
        let parent = main.parent().unwrap_or(Path::new("/"));
        parent.join(format!("{name}.worktrees")).join(branch)
    }
}

/// The runner of git for `spec`'s agent: as the user its runs execute as.
pub(crate) fn git_for(services: &Services, spec: &AgentSpec) -> Result<Git, ApiError> {
    let workspace = workspace_of(services, spec);
    let user = services.sandbox.run_as(spec, &workspace)?;
    Ok(Git::new(user))
}

fn workspace_of(services: &Services, spec: &AgentSpec) -> PathBuf {
    PathBuf::from(
        spec.workspace
            .clone()
            .unwrap_or_else(|| services.default_workspace.clone()),
    )
}

/// The worktree a run of `spec` starts in, made if it is missing; `None` without `--worktree`.
pub(crate) async fn for_run(
    services: &Services,
    spec: &AgentSpec,
) -> Result<Option<Worktree>, ApiError> {
    let Some(branch) = &spec.worktree else {
        return Ok(None);
    };
    let git = git_for(services, spec)?;
    ensure(&git, &workspace_of(services, spec), branch)
        .await
        .map(Some)
}

/// `spec`'s worktree as its next run would use it, if it exists; nothing is made (for an agent
/// that has not run in this daemon, and for `sandbox explain`).
pub(crate) async fn existing(services: &Services, spec: &AgentSpec) -> Option<Worktree> {
    let branch = spec.worktree.as_ref()?;
    let git = git_for(services, spec).ok()?;
    let repo = repo_of(&git, &workspace_of(services, spec)).await.ok()?;
    let path = repo.location(branch);
    path.is_dir().then(|| Worktree {
        cwd: cwd_in(&path, &repo.prefix),
        path,
        common_dir: repo.common_dir,
    })
}

/// Where `spec`'s worktree is, if it exists.
pub(crate) async fn locate(services: &Services, spec: &AgentSpec) -> Option<PathBuf> {
    existing(services, spec).await.map(|worktree| worktree.path)
}

/// The workspace's counterpart in the worktree at `path`: the same subdirectory (`prefix`) when
/// the branch has it, else the worktree's top.
fn cwd_in(path: &Path, prefix: &str) -> PathBuf {
    let cwd = path.join(prefix);
    if prefix.is_empty() || !cwd.is_dir() {
        path.to_owned()
    } else {
        cwd
    }
}

/// Refuses a branch name git would not take (or that could pass for an option).
fn check_branch(branch: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("--worktree `{branch}` is not a branch name git accepts: {why}"),
        )
    };
    if branch.is_empty() {
        return Err(invalid("it is empty"));
    }
    if branch.starts_with('-') {
        return Err(invalid("it starts with `-`"));
    }
    if branch.len() > 200 {
        return Err(invalid("it is longer than 200 bytes"));
    }
    Ok(())
}

/// Finds the repository `workspace` is in; a workspace outside any is a 400 saying so.
async fn repo_of(git: &Git, workspace: &Path) -> Result<Repo, ApiError> {
    let out = git
        .run(
            workspace,
            &[
                "rev-parse",
                "--path-format=absolute",
                "--git-common-dir",
                "--show-toplevel",
                "--show-prefix",
            ],
        )
        .await
        .map_err(|e| match &e {
            GitError::Failed { message, .. } if message.contains("not a git repository") => {
                ApiError::new(
                    ErrorCode::WorkspaceInvalid,
                    format!(
                        "--worktree needs a workspace inside a git repository, and {} is not in \
                         one; run `git init` there, or pass --workspace a repository's directory",
                        workspace.display()
                    ),
                )
            }
            GitError::Failed { message, .. } if message.contains("must be run in a work tree") => {
                ApiError::new(
                    ErrorCode::WorkspaceInvalid,
                    format!(
                        "--worktree needs a checkout, and {} is a bare repository; pass a \
                         checkout's directory as --workspace",
                        workspace.display()
                    ),
                )
            }
            _ => git_failed("cannot read the workspace's repository", &e),
        })?;
    let mut lines = out.stdout.lines();
    let (Some(common_dir), Some(top)) = (lines.next(), lines.next()) else {
        return Err(ApiError::new(
            ErrorCode::Internal,
            format!("unexpected answer of git rev-parse: {:?}", out.stdout),
        ));
    };
    let canonical = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p));
    Ok(Repo {
        top: canonical(top),
        prefix: lines.next().unwrap_or("").to_owned(),
        common_dir: canonical(common_dir),
    })
}

fn git_failed(what: &str, error: &GitError) -> ApiError {
    ApiError::new(ErrorCode::SpawnFailed, format!("{what}: {error}"))
}

/// One entry of `git worktree list --porcelain`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Entry {
    path: PathBuf,
    /// `refs/heads/…`, or `None` when detached or bare.
    branch: Option<String>,
    prunable: bool,
}

fn parse_worktree_list(text: &str) -> Vec<Entry> {
    let mut entries = vec![];
    let mut current: Option<Entry> = None;
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("worktree ") {
            entries.extend(current.take());
            current = Some(Entry {
                path: PathBuf::from(path),
                ..Entry::default()
            });
        } else if let Some(entry) = current.as_mut() {
            if let Some(branch) = line.strip_prefix("branch ") {
                entry.branch = Some(branch.to_owned());
            } else if line == "prunable" || line.starts_with("prunable ") {
                entry.prunable = true;
            }
        }
    }
    entries.extend(current);
    entries
}

fn same_path(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    canonical(a) == canonical(b)
}

/// Makes (or finds) the worktree of `branch` for the repository `workspace` is in: an existing
/// branch is checked out there, a new one is made from `HEAD` (or tracks the one remote branch
/// of that name). A branch checked out elsewhere is a 409: git keeps a branch in one worktree.
pub(crate) async fn ensure(
    git: &Git,
    workspace: &Path,
    branch: &str,
) -> Result<Worktree, ApiError> {
    check_branch(branch)?;
    let repo = repo_of(git, workspace).await?;
    match git
        .run(&repo.top, &["check-ref-format", "--branch", branch])
        .await
    {
        // `--branch` expands shorthands such as `@{-1}`: only a plain name is taken as it is.
        Ok(out) if out.stdout.trim() == branch => {}
        Ok(out) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "--worktree `{branch}` is a shorthand (for `{}`); give the branch's name",
                    out.stdout.trim()
                ),
            ));
        }
        Err(e) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "--worktree `{branch}` is not a branch name git accepts ({}); see `git help \
                     check-ref-format`",
                    e.message()
                ),
            ));
        }
    }
    let path = repo.location(branch);
    let full_ref = format!("refs/heads/{branch}");
    let listed = git
        .run(&repo.top, &["worktree", "list", "--porcelain"])
        .await
        .map_err(|e| git_failed("cannot list the repository's worktrees", &e))?;
    let entries = parse_worktree_list(&listed.stdout);
    let mut found = false;
    let mut prune = false;
    for entry in &entries {
        let here = same_path(&entry.path, &path);
        let ours = entry.branch.as_deref() == Some(full_ref.as_str());
        if entry.prunable {
            prune |= here || ours;
        } else if here && ours {
            found = true;
        } else if ours {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "branch `{branch}` is already checked out at {}, and git keeps a branch in one \
                     worktree only; give the agent another branch, or switch that checkout to \
                     another branch first",
                    entry.path.display()
                ),
            ));
        } else if here {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{} is already a worktree, on {}, not on `{branch}`; remove it (`git worktree \
                     remove {}`) or give the agent that branch",
                    path.display(),
                    entry.branch.as_deref().map_or_else(
                        || "a detached HEAD".to_owned(),
                        |b| format!("branch `{}`", b.trim_start_matches("refs/heads/"))
                    ),
                    path.display()
                ),
            ));
        }
    }
    if !found {
        if prune {
            git.run(&repo.top, &["worktree", "prune"])
                .await
                .map_err(|e| git_failed("cannot prune stale worktrees", &e))?;
        }
        if path.exists() && std::fs::read_dir(&path).map_or(true, |mut dir| dir.next().is_some()) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{} exists and is not a worktree of this repository; move it away, or give \
                     the agent another branch",
                    path.display()
                ),
            ));
        }
        add(git, &repo, branch, &path).await?;
    }
    Ok(Worktree {
        cwd: cwd_in(&path, &repo.prefix),
        path,
        common_dir: repo.common_dir,
    })
}

/// `git worktree add` for `branch` at `path`.
async fn add(git: &Git, repo: &Repo, branch: &str, path: &Path) -> Result<(), ApiError> {
    let full_ref = format!("refs/heads/{branch}");
    let local = git
        .run(&repo.top, &["rev-parse", "--verify", "--quiet", &full_ref])
        .await
        .is_ok();
    let path_text = path.display().to_string();
    let mut args: Vec<String> = vec!["worktree".into(), "add".into()];
    if local {
        args.extend(["--".into(), path_text, branch.into()]);
    } else {
        let remotes = git
            .run(
                &repo.top,
                &["for-each-ref", "--format=%(refname)", "refs/remotes"],
            )
            .await
            .map_err(|e| git_failed("cannot list remote branches", &e))?;
        let tracking: Vec<&str> = remotes
            .stdout
            .lines()
            .filter_map(|r| r.strip_prefix("refs/remotes/"))
            .filter(|r| {
                r.strip_suffix(branch)
                    .and_then(|remote| remote.strip_suffix('/'))
                    .is_some_and(|remote| !remote.is_empty() && !remote.contains('/'))
            })
            .collect();
        match tracking.as_slice() {
            [remote_branch] => args.extend([
                "--track".into(),
                "-b".into(),
                branch.into(),
                "--".into(),
                path_text,
                (*remote_branch).to_owned(),
            ]),
            _ => args.extend(["-b".into(), branch.into(), "--".into(), path_text]),
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    git.clone()
        .with_timeout(ADD_TIMEOUT)
        .run(&repo.top, &args)
        .await
        .map_err(|e| {
            let code = match &e {
                GitError::Failed { message, .. }
                    if message.contains("already checked out")
                        || message.contains("already used by worktree")
                        || message.contains("already exists") =>
                {
                    ErrorCode::Conflict
                }
                _ => ErrorCode::SpawnFailed,
            };
            ApiError::new(
                code,
                format!(
                    "cannot make the worktree of `{branch}` at {}: {}",
                    path.display(),
                    e.message()
                ),
            )
        })?;
    Ok(())
}

/// What removing the worktree at `path` would lose, one line per file (`modified: src/a.rs`,
/// `untracked: notes.txt`); empty when it is clean.
async fn unsaved_work(git: &Git, path: &Path) -> Result<Vec<String>, ApiError> {
    let status = git
        .run(
            path,
            &[
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=all",
                "--ignore-submodules=none",
            ],
        )
        .await
        .map_err(|e| git_failed("cannot read the worktree's status", &e))?;
    Ok(describe_status(&status.stdout))
}

/// Turns `git status --porcelain=v1 -z` into lines for people.
fn describe_status(porcelain: &str) -> Vec<String> {
    let mut lines = vec![];
    let mut fields = porcelain.split('\0').filter(|f| !f.is_empty());
    while let Some(field) = fields.next() {
        let (Some(code), Some(file)) = (field.get(..2), field.get(3..)) else {
            continue;
        };
        let (x, y) = (code.as_bytes()[0], code.as_bytes()[1]);
        if x == b'R' || x == b'C' {
            // The source path of a rename or copy follows as its own field.
            fields.next();
        }
        let what = match (x, y) {
            (b'?', b'?') => "untracked",
            (b'!', b'!') => continue,
            (b'D', _) | (_, b'D') => "deleted",
            (b'A', _) => "added",
            (b'R', _) => "renamed",
            (b'U', _) | (_, b'U') => "unmerged",
            (_, b' ') => "staged",
            _ => "modified",
        };
        lines.push(format!("{what}: {file}"));
    }
    lines
}

/// What `rm` will do with an agent's worktree, decided before the agent is stopped.
#[derive(Debug)]
pub(crate) struct Removal {
    git: Git,
    path: PathBuf,
    force: bool,
}

/// Checks an agent's worktree before `rm`: `None` when there is nothing to remove (no worktree,
/// or `keep_worktree`); a 409 listing the files when it holds work that would be lost and
/// `discard_worktree` was not given.
pub(crate) async fn plan_removal(
    services: &Services,
    spec: &AgentSpec,
    known: Option<&str>,
    query: &RemoveQuery,
    name: &str,
) -> Result<Option<Removal>, ApiError> {
    if query.keep_worktree && query.discard_worktree {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "--keep-worktree and --discard-worktree contradict each other; give one",
        ));
    }
    if spec.worktree.is_none() || query.keep_worktree {
        return Ok(None);
    }
    let path = match known {
        Some(path) => PathBuf::from(path),
        None => match locate(services, spec).await {
            Some(path) => path,
            None => return Ok(None),
        },
    };
    if !path.is_dir() {
        return Ok(None);
    }
    let git = git_for(services, spec)?;
    if !query.discard_worktree {
        let lost = unsaved_work(&git, &path).await?;
        if !lost.is_empty() {
            const SHOWN: usize = 20;
            let mut list = lost
                .iter()
                .take(SHOWN)
                .map(|line| format!("  {line}"))
                .collect::<Vec<_>>()
                .join("\n");
            if lost.len() > SHOWN {
                list.push_str(&format!("\n  … and {} more", lost.len() - SHOWN));
            }
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "agent `{name}`'s worktree {} has work that removing it would lose ({} \
                     file{}):\n{list}\nCommit it there, or run `celistrad ctl rm {name} \
                     --keep-worktree` (removes the agent, keeps the worktree and its branch) or \
                     `--discard-worktree` (removes the worktree and those changes; the branch and \
                     its commits stay)",
                    path.display(),
                    lost.len(),
                    if lost.len() == 1 { "" } else { "s" },
                ),
            ));
        }
    }
    Ok(Some(Removal {
        git,
        path,
        force: query.discard_worktree,
    }))
}

impl Removal {
    /// Removes the worktree (its branch stays), then the directories left empty above it up to
    /// `<repo>.worktrees`. Without `force`, git itself refuses a worktree that changed since the
    /// check (the agent wrote before it stopped): then it stays, and the error says so.
    pub(crate) async fn execute(self) -> Result<(), ApiError> {
        let parent = self.path.parent().unwrap_or(Path::new("/")).to_owned();
        let path = self.path.display().to_string();
        let mut args = vec!["worktree", "remove"];
        if self.force {
            args.push("--force");
        }
        args.extend(["--", path.as_str()]);
        // Run from the main checkout (or the git directory itself), outside the worktree.
        let common = self
            .git
            .run(
                &self.path,
                &["rev-parse", "--path-format=absolute", "--git-common-dir"],
            )
            .await
            .map_err(|e| git_failed("cannot find the worktree's repository", &e))?;
        let common_dir = PathBuf::from(common.stdout.trim());
        let main = match common_dir.file_name() {
            Some(name) if name == ".git" => common_dir.parent().unwrap_or(&common_dir),
            _ => &common_dir,
        };
        self.git.run(main, &args).await.map_err(|e| {
            ApiError::new(
                ErrorCode::Conflict,
                format!("the worktree {path} was kept: {}", e.message()),
            )
        })?;
        let mut dir = parent;
        while dir
            .file_name()
            .is_some_and(|name| !name.to_string_lossy().ends_with(".worktrees"))
            && std::fs::remove_dir(&dir).is_ok()
        {
            dir = dir.parent().unwrap_or(Path::new("/")).to_owned();
        }
        if dir.to_string_lossy().ends_with(".worktrees") {
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worktrees_go_beside_the_main_checkout_one_directory_per_branch() {
        let repo = Repo {
            top: "/src/app/sub".into(),
            prefix: String::new(),
            common_dir: "/src/app/.git".into(),
        };
        assert_eq!(
            repo.location("fix"),
            PathBuf::from("/src/app.worktrees/fix")
        );
        assert_eq!(
            repo.location("feat/login"),
            PathBuf::from("/src/app.worktrees/feat/login")
        );
        let separate = Repo {
            top: "/src/lib".into(),
            prefix: String::new(),
            common_dir: "/git/lib.git".into(),
        };
        assert_eq!(
            separate.location("b"),
            PathBuf::from("/src/lib.worktrees/b")
        );
    }

    #[test]
    fn the_worktree_list_is_read_with_branches_and_stale_entries() {
        let text = "worktree /src/app\nHEAD 1111\nbranch refs/heads/main\n\n\
                    worktree /src/app.worktrees/fix\nHEAD 2222\nbranch refs/heads/fix\nprunable gitdir file points to non-existent location\n\n\
                    worktree /tmp/x\nHEAD 3333\ndetached\n";
        let entries = parse_worktree_list(text);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].branch.as_deref(), Some("refs/heads/main"));
        assert!(entries[1].prunable && !entries[0].prunable);
        assert_eq!(entries[2].branch, None);
    }

    #[test]
    fn status_lines_say_what_would_be_lost() {
        let porcelain =
            " M src/a.rs\0?? notes.txt\0A  new.rs\0R  b.rs\0a.rs\0 D gone.rs\0M  staged.rs\0";
        assert_eq!(
            describe_status(porcelain),
            [
                "modified: src/a.rs",
                "untracked: notes.txt",
                "added: new.rs",
                "renamed: b.rs",
                "deleted: gone.rs",
                "staged: staged.rs",
            ]
        );
        assert!(describe_status("").is_empty());
    }

    #[test]
    fn branch_names_that_could_be_options_are_refused() {
        assert!(check_branch("-b").is_err());
        assert!(check_branch("").is_err());
        assert!(check_branch("feat/x").is_ok());
    }
}
