//! File watching (`--watch`): the paths whose changes restart an agent, like PM2's `watch`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Restart the agent when files under these paths change. Changes are gathered until none has
/// come for `delay_ms`, then the agent restarts once: a running agent is restarted, one that
/// failed or crashed out is started; one that was stopped, or exited 0, is left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// Files or directories (watched with everything below them); relative paths are relative
    /// to the workspace. Each must exist when the agent is spawned or changed.
    #[schema(min_items = 1, max_items = 64)]
    pub paths: Vec<String>,
    /// Globs of paths whose changes are ignored. A glob without `/` is matched against every
    /// component of the changed path (`node_modules`, `*.log`); one with `/` against the path
    /// relative to the watched directory (`logs/**`). Absent: `.*` and `node_modules`, PM2's
    /// default; an empty list ignores nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 64)]
    pub ignore: Option<Vec<String>>,
    /// Quiet time after the last change before the restart, in milliseconds (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 3_600_000)]
    pub delay_ms: Option<u64>,
}

impl Watch {
    /// The quiet time when the spec gives none.
    pub const DEFAULT_DELAY_MS: u64 = 1000;
    /// The ignore globs when the spec gives none: hidden files and directories, and
    /// `node_modules`, as PM2 ignores them.
    pub const DEFAULT_IGNORE: [&'static str; 2] = [".*", "node_modules"];

    pub fn delay_ms(&self) -> u64 {
        self.delay_ms.unwrap_or(Self::DEFAULT_DELAY_MS)
    }

    /// The ignore globs in force.
    pub fn ignore_globs(&self) -> Vec<String> {
        match &self.ignore {
            Some(globs) => globs.clone(),
            None => Self::DEFAULT_IGNORE.map(str::to_owned).to_vec(),
        }
    }
}
