//! Filters for listing the log: the query a caller sends and the page it gets back.

use serde::{Deserialize, Serialize};

use crate::entry::Entry;

/// The page size when a query asks for 0 entries.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page a query gets, whatever it asks for.
pub const MAX_LIMIT: usize = 10_000;

/// Which entries to list. Results are newest first; every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Query {
    /// Entries at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Entries before this time.
    pub until_ms: Option<u64>,
    /// Exactly this actor.
    pub actor: Option<String>,
    /// Exactly this action.
    pub action: Option<String>,
    /// Exactly this target (e.g. an agent id).
    pub target: Option<String>,
    /// Case-insensitive substring of the actor, action, target or the body's JSON text.
    pub text: Option<String>,
    /// Paging cursor: continue after this seq in listing order, i.e. with entries whose seq is
    /// smaller. Pass the previous page's `next`.
    pub after_seq: Option<u64>,
    /// Entries per page: 0 means [`DEFAULT_LIMIT`]; at most [`MAX_LIMIT`].
    pub limit: usize,
}

/// One page of results, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// The `after_seq` of the next page; `None` when there are no older entries to look at (a
    /// full page may be followed by an empty one).
    pub next: Option<u64>,
}

impl Query {
    pub(crate) fn page_size(&self) -> usize {
        match self.limit {
            0 => DEFAULT_LIMIT,
            limit => limit.min(MAX_LIMIT),
        }
    }

    /// Whether an entry this old ends a newest-first scan: times never decrease along the log.
    pub(crate) fn is_before_range(&self, entry: &Entry) -> bool {
        self.since_ms.is_some_and(|since| entry.time_ms < since)
    }

    pub(crate) fn matches(&self, entry: &Entry, lowercase_text: Option<&str>) -> bool {
        let equal = |wanted: &Option<String>, value: &str| {
            wanted.as_deref().is_none_or(|wanted| wanted == value)
        };
        !self.is_before_range(entry)
            && self.until_ms.is_none_or(|until| entry.time_ms < until)
            && equal(&self.actor, &entry.actor)
            && equal(&self.action, &entry.action)
            && equal(&self.target, &entry.target)
            && lowercase_text.is_none_or(|needle| {
                [
                    &entry.actor,
                    &entry.action,
                    &entry.target,
                    &entry.body.to_string(),
                ]
                .iter()
                .any(|field| field.to_lowercase().contains(needle))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(
        time_ms: u64,
        actor: &str,
        action: &str,
        target: &str,
        body: serde_json::Value,
    ) -> Entry {
        Entry {
            seq: 0,
            time_ms,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            body,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn every_set_filter_must_match() {
        let spawn = entry(
            100,
            "ops",
            "agent_spawn",
            "ag-1",
            json!({"command": "Deploy.sh"}),
        );
        let query =
            |q: Query| q.matches(&spawn, q.text.as_ref().map(|t| t.to_lowercase()).as_deref());
        assert!(query(Query::default()));
        assert!(query(Query {
            since_ms: Some(100),
            until_ms: Some(101),
            ..Query::default()
        }));
        assert!(!query(Query {
            until_ms: Some(100),
            ..Query::default()
        }));
        assert!(!query(Query {
            since_ms: Some(101),
            ..Query::default()
        }));
        assert!(query(Query {
            actor: Some("ops".into()),
            action: Some("agent_spawn".into()),
            target: Some("ag-1".into()),
            ..Query::default()
        }));
        assert!(!query(Query {
            target: Some("ag-2".into()),
            ..Query::default()
        }));
        assert!(query(Query {
            text: Some("DEPLOY".into()),
            ..Query::default()
        }));
        assert!(!query(Query {
            text: Some("rollback".into()),
            ..Query::default()
        }));
        assert_eq!(Query::default().page_size(), DEFAULT_LIMIT);
        assert_eq!(
            Query {
                limit: usize::MAX,
                ..Query::default()
            }
            .page_size(),
            MAX_LIMIT
        );
    }
}
