//! File watching's pure part: what a `Watch` may hold, and which changed paths its ignore globs
//! leave out.

use std::path::Path;

use celistra_proto::{AgentState, Watch};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Most paths, and most ignore globs, one agent may watch with.
pub const MAX_ENTRIES: usize = 64;
/// Longest quiet time, in milliseconds (an hour).
pub const MAX_DELAY_MS: u64 = 3_600_000;

/// Checks a watch: some paths, each usable, and globs that parse.
pub fn check(watch: &Watch) -> Result<(), String> {
    if watch.paths.is_empty() {
        return Err("watch: give at least one path to watch".into());
    }
    if watch.paths.len() > MAX_ENTRIES {
        return Err(format!(
            "watch: {} paths; at most {MAX_ENTRIES} are allowed (watch a directory above them)",
            watch.paths.len()
        ));
    }
    if let Some(path) = watch
        .paths
        .iter()
        .find(|p| p.is_empty() || p.len() > 4096 || p.contains('\0'))
    {
        return Err(format!(
            "watch: path `{path}` is not usable; give a file or directory, at most 4096 bytes, without NUL"
        ));
    }
    if let Some(ignore) = &watch.ignore
        && ignore.len() > MAX_ENTRIES
    {
        return Err(format!(
            "watch.ignore: {} globs; at most {MAX_ENTRIES} are allowed",
            ignore.len()
        ));
    }
    if watch.delay_ms.is_some_and(|ms| ms > MAX_DELAY_MS) {
        return Err(format!(
            "watch.delay_ms: at most {MAX_DELAY_MS} (an hour) is allowed"
        ));
    }
    IgnoreMatcher::new(&watch.ignore_globs()).map(|_| ())
}

/// What watched files changing does to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// It runs (or waits to restart): restart it.
    Restart,
    /// It failed or crashed out: start it, as a fix to its code may bring it back (PM2 does).
    Start,
}

impl Reaction {
    /// The reaction to changes in `state`; none when an operator stopped the agent, it finished
    /// its work (exited 0), or it waits for its dependencies.
    pub fn to_changes_in(state: AgentState) -> Option<Reaction> {
        match state {
            AgentState::Starting
            | AgentState::Running
            | AgentState::WaitingApproval
            | AgentState::Backoff => Some(Reaction::Restart),
            AgentState::Failed | AgentState::CrashedOut => Some(Reaction::Start),
            // One waiting for its dependencies starts with the changed files anyway.
            AgentState::Waiting
            | AgentState::Stopping
            | AgentState::Stopped
            | AgentState::Exited => None,
        }
    }

    /// The `action` of its event.
    pub fn as_str(self) -> &'static str {
        match self {
            Reaction::Restart => "restarted",
            Reaction::Start => "started",
        }
    }
}

/// The ignore globs of one watch, compiled. A glob without `/` is matched against each component
/// of a changed path (like `.gitignore`), one with `/` against the whole path relative to the
/// watched directory; `*` never crosses a `/`, `**` does.
#[derive(Debug, Clone)]
pub struct IgnoreMatcher {
    components: GlobSet,
    paths: GlobSet,
}

impl IgnoreMatcher {
    pub fn new(globs: &[String]) -> Result<IgnoreMatcher, String> {
        let mut components = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for text in globs {
            let glob = GlobBuilder::new(text.trim_start_matches('/'))
                .literal_separator(true)
                .build()
                .map_err(|e| format!("watch.ignore: `{text}` is not a glob: {e}"))?;
            if text.contains('/') {
                paths.add(glob);
            } else {
                components.add(glob);
            }
        }
        let build = |set: GlobSetBuilder| {
            set.build()
                .map_err(|e| format!("watch.ignore: the globs do not compile: {e}"))
        };
        Ok(IgnoreMatcher {
            components: build(components)?,
            paths: build(paths)?,
        })
    }

    /// Whether a change at `relative` (to the watched directory) is ignored.
    pub fn is_ignored(&self, relative: &Path) -> bool {
        self.paths.is_match(relative)
            || relative
                .components()
                .any(|c| self.components.is_match(c.as_os_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(globs: &[&str]) -> IgnoreMatcher {
        IgnoreMatcher::new(&globs.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn watch(paths: &[&str]) -> Watch {
        Watch {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            ..Watch::default()
        }
    }

    #[test]
    fn the_default_ignores_hidden_paths_and_node_modules_anywhere() {
        let default = IgnoreMatcher::new(&watch(&["."]).ignore_globs()).unwrap();
        assert!(default.is_ignored(Path::new(".git/index")));
        assert!(default.is_ignored(Path::new("src/.app.js.swp")));
        assert!(default.is_ignored(Path::new("web/node_modules/x/index.js")));
        assert!(!default.is_ignored(Path::new("src/app.js")));
        assert!(!default.is_ignored(Path::new("")));
    }

    #[test]
    fn globs_with_a_slash_match_the_whole_relative_path() {
        let ignore = matcher(&["logs/**", "*.log", "/build/*.o"]);
        assert!(ignore.is_ignored(Path::new("logs/today/app.txt")));
        assert!(ignore.is_ignored(Path::new("src/deep/trace.log")));
        assert!(ignore.is_ignored(Path::new("build/main.o")));
        assert!(!ignore.is_ignored(Path::new("build/sub/main.o")));
        assert!(!ignore.is_ignored(Path::new("src/logs/app.txt")));
        assert!(!ignore.is_ignored(Path::new("src/app.rs")));
    }

    #[test]
    fn an_empty_list_ignores_nothing() {
        let nothing = IgnoreMatcher::new(&[]).unwrap();
        assert!(!nothing.is_ignored(Path::new(".git/index")));
    }

    #[test]
    fn only_agents_that_run_or_failed_react_to_changes() {
        use AgentState::*;
        let reactions = [
            Starting,
            Running,
            WaitingApproval,
            Backoff,
            Failed,
            CrashedOut,
            Stopping,
            Stopped,
            Exited,
        ]
        .map(Reaction::to_changes_in);
        let restart = Some(Reaction::Restart);
        let start = Some(Reaction::Start);
        assert_eq!(
            reactions,
            [
                restart, restart, restart, restart, start, start, None, None, None
            ]
        );
    }

    #[test]
    fn bad_watches_are_refused_naming_what_is_wrong() {
        assert!(
            check(&watch(&[]))
                .unwrap_err()
                .contains("at least one path")
        );
        assert!(check(&watch(&["a\0b"])).unwrap_err().contains("not usable"));
        let bad_glob = Watch {
            ignore: Some(vec!["src/[".into()]),
            ..watch(&["src"])
        };
        assert!(
            check(&bad_glob)
                .unwrap_err()
                .contains("`src/[` is not a glob")
        );
        let slow = Watch {
            delay_ms: Some(MAX_DELAY_MS + 1),
            ..watch(&["src"])
        };
        assert!(check(&slow).unwrap_err().contains("delay_ms"));
        let many = vec!["p"; MAX_ENTRIES + 1];
        assert!(check(&watch(&many)).unwrap_err().contains("65 paths"));
        assert_eq!(check(&watch(&["src", "/etc/app.conf"])), Ok(()));
    }
}
