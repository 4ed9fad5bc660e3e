//! File-watching flags of `spawn` and `set` (`--watch`, `--watch-ignore`, `--watch-delay`, and
//! `set`'s `--no-watch`), and how `status` shows a watch.

use celistra_core::duration::parse_millis;
use celistra_proto::{AgentInfo, UpdateRequest, Watch};
use clap::Args;

use super::Failure;

/// `--watch` and its companions, shared by `spawn` and `set`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Restart the agent when files under this path change (repeatable; relative to the
    /// workspace), like PM2's watch. On `set`, replaces the whole watch.
    #[arg(long = "watch", value_name = "PATH")]
    paths: Vec<String>,
    /// Ignore changes to paths matching this glob (repeatable): `node_modules` or `*.log` match
    /// any part of a path, `logs/**` the path below the watched directory [default: `.*` and
    /// `node_modules`].
    #[arg(long = "watch-ignore", value_name = "GLOB")]
    ignore: Vec<String>,
    /// Ignore nothing, not even the default `.*` and `node_modules`.
    #[arg(long, conflicts_with = "ignore")]
    watch_ignore_nothing: bool,
    /// Restart once changes have been quiet this long, e.g. 500ms [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
    watch_delay: Option<u64>,
}

/// `set`'s flag that removes a watch.
#[derive(Debug, Args)]
pub(crate) struct ClearWatchArgs {
    /// Stop watching files.
    #[arg(long, conflicts_with = "paths")]
    no_watch: bool,
}

impl WatchArgs {
    /// Puts the flags given into `update`.
    pub(crate) fn fill(&self, update: &mut UpdateRequest) -> Result<(), Failure> {
        if self.paths.is_empty() {
            let needs = [
                ("--watch-ignore", !self.ignore.is_empty()),
                ("--watch-ignore-nothing", self.watch_ignore_nothing),
                ("--watch-delay", self.watch_delay.is_some()),
            ];
            if let Some((flag, _)) = needs.iter().find(|(_, given)| *given) {
                return Err(Failure::Usage(format!(
                    "{flag} belongs to a watch; give --watch PATH with it (it replaces the whole watch)"
                )));
            }
            return Ok(());
        }
        update.watch = Some(Watch {
            paths: self.paths.clone(),
            ignore: (!self.ignore.is_empty() || self.watch_ignore_nothing)
                .then(|| self.ignore.clone()),
            delay_ms: self.watch_delay,
        });
        Ok(())
    }
}

impl ClearWatchArgs {
    pub(crate) fn fill(&self, update: &mut UpdateRequest) {
        update.clear_watch = self.no_watch;
    }
}

/// `status`'s watch line (none for an agent without one).
pub(crate) fn status_lines(agent: &AgentInfo) -> Vec<(&'static str, String)> {
    let Some(watch) = &agent.watch else {
        return vec![];
    };
    let ignore = watch.ignore_globs();
    vec![(
        "watch",
        format!(
            "{} (ignoring {}; restart after {} ms quiet)",
            watch.paths.join(", "),
            if ignore.is_empty() {
                "nothing".to_owned()
            } else {
                ignore.join(", ")
            },
            watch.delay_ms()
        ),
    )]
}
