//! Durable agent records in `agents.json` (0600), written with group commit: any number of changes
//! made while a write is in flight share the next write, and callers that must not answer before
//! their change is on disk wait for it with [`Store::sync`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use celistra_proto::{AgentSpec, AgentState};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{Notify, watch};

use crate::home::write_atomic_private;

/// What survives a daemon restart of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredAgent {
    pub id: String,
    pub spec: AgentSpec,
    pub source: String,
    pub created_at_ms: u64,
    /// `running` means "should be running": it is started again when the daemon starts.
    pub state: AgentState,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub exit_signal: Option<String>,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub run: u64,
    /// When its schedule last fell due (before the first time: when the schedule was set), so
    /// runs missed while the daemon was down are found at the next start (`scheduler.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fire_ms: Option<u64>,
    /// The usage limit its last run ended on, while it waits for the reset: a daemon restart
    /// meanwhile goes on waiting instead of starting it into the limit again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<celistra_proto::LimitWait>,
}

/// What survives a daemon restart of a group of instances (`instances` in a spec): its template,
/// from which `scale` makes new instances. The instances themselves are agents of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredGroup {
    /// The group's name; its instances are `NAME-0` … (see `celistra_core::spec::instance_name`).
    pub name: String,
    /// The spec it was created with, `instances` being how many it has now.
    pub spec: AgentSpec,
    pub source: String,
    pub created_at_ms: u64,
}

impl StoredGroup {
    pub(crate) fn instances(&self) -> u32 {
        self.spec.instances.unwrap_or(1)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    /// High-water mark of event ids, so ids keep increasing across daemon restarts.
    #[serde(default)]
    event_seq: u64,
    agents: Vec<StoredAgent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<StoredGroup>,
}

/// [`StoreFile`] as it is written: each agent's JSON is made when the agent changes, not again
/// for every write, so a write of many agents costs a copy of the unchanged ones (a thousand
/// agents starting together made serialising every agent at every write a quarter of the
/// daemon's work: BENCHMARKS.md, issue 18).
#[derive(Serialize)]
struct StoreFileOut<'a> {
    version: u32,
    event_seq: u64,
    agents: Vec<&'a RawValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<&'a StoredGroup>,
}

/// One agent's record: changed since the last write, or, once written, only its JSON. A thousand
/// agents' records would otherwise be kept twice, parsed and as text (about 2 KiB each).
#[derive(Debug)]
enum Record {
    Changed(Box<StoredAgent>),
    Written(Box<RawValue>),
}

impl Record {
    /// The record as it is written.
    fn written(agent: &StoredAgent) -> Record {
        let json = serde_json::to_string_pretty(agent)
            .and_then(RawValue::from_string)
            .expect("agent records serialise");
        Record::Written(json)
    }

    /// The record to change: parsed again from its JSON if it was written.
    fn agent_mut(&mut self) -> &mut StoredAgent {
        if let Record::Written(json) = self {
            let agent =
                serde_json::from_str(json.get()).expect("a record this store wrote parses again");
            *self = Record::Changed(Box::new(agent));
        }
        match self {
            Record::Changed(agent) => agent,
            Record::Written(_) => unreachable!("parsed just above"),
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    agents: BTreeMap<String, Record>,
    groups: BTreeMap<String, StoredGroup>,
    event_seq: u64,
    generation: u64,
}

/// Outcome of the latest write: its generation, and the error if it failed.
type Written = (u64, Option<String>);

#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    pending: Mutex<Pending>,
    wake: Notify,
    written: watch::Sender<Written>,
}

impl Store {
    /// Loads the file (absent means empty). A file that does not parse is moved aside, not lost.
    pub(crate) fn load(path: PathBuf) -> (Arc<Store>, Vec<StoredAgent>, u64) {
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => {
                match celistra_core::json::parse::<StoreFile>(&text, &path.display().to_string()) {
                    Ok(file) => file,
                    Err(e) => {
                        let aside =
                            path.with_extension(format!("json.corrupt-{}", crate::now_ms()));
                        let _ = std::fs::rename(&path, &aside);
                        tracing::error!(
                            "{e}; moved it to {} and starting with no agents",
                            aside.display()
                        );
                        StoreFile::default()
                    }
                }
            }
            Err(_) => StoreFile::default(),
        };
        let pending = Pending {
            agents: file
                .agents
                .iter()
                .map(|a| (a.id.clone(), Record::written(a)))
                .collect(),
            groups: file
                .groups
                .iter()
                .map(|g| (g.name.clone(), g.clone()))
                .collect(),
            event_seq: file.event_seq,
            generation: 0,
        };
        let store = Arc::new(Store {
            path,
            pending: Mutex::new(pending),
            wake: Notify::new(),
            written: watch::channel((0, None)).0,
        });
        (store, file.agents, file.event_seq)
    }

    /// Runs the writer until `stop` is cancelled, then writes once more.
    pub(crate) async fn write_loop(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            let stopping = tokio::select! {
                () = self.wake.notified() => false,
                () = stop.cancelled() => true,
            };
            self.write_now().await;
            if stopping {
                return;
            }
        }
    }

    async fn write_now(&self) {
        let (generation, text) = {
            let mut pending = self.lock();
            if pending.generation == self.written.borrow().0 {
                return;
            }
            for record in pending.agents.values_mut() {
                if let Record::Changed(agent) = record {
                    *record = Record::written(agent);
                }
            }
            let file = StoreFileOut {
                version: 1,
                event_seq: pending.event_seq,
                agents: pending
                    .agents
                    .values()
                    .filter_map(|record| match record {
                        Record::Written(json) => Some(&**json),
                        Record::Changed(_) => None,
                    })
                    .collect(),
                groups: pending.groups.values().collect(),
            };
            (
                pending.generation,
                serde_json::to_vec_pretty(&file).expect("agent records serialise"),
            )
        };
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || write_atomic_private(&path, &text))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("cannot write {}: {e}", self.path.display())));
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        self.written.send_replace((generation, result.err()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self, pending: &mut Pending) {
        pending.generation += 1;
        self.wake.notify_one();
    }

    pub(crate) fn put(&self, agent: StoredAgent) {
        let mut pending = self.lock();
        pending
            .agents
            .insert(agent.id.clone(), Record::Changed(Box::new(agent)));
        self.changed(&mut pending);
    }

    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut StoredAgent)) {
        let mut pending = self.lock();
        if let Some(record) = pending.agents.get_mut(id) {
            change(record.agent_mut());
            self.changed(&mut pending);
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        let mut pending = self.lock();
        if pending.agents.remove(id).is_some() {
            self.changed(&mut pending);
        }
    }

    /// Every group, as loaded and changed since.
    pub(crate) fn groups(&self) -> Vec<StoredGroup> {
        self.lock().groups.values().cloned().collect()
    }

    pub(crate) fn put_group(&self, group: StoredGroup) {
        let mut pending = self.lock();
        pending.groups.insert(group.name.clone(), group);
        self.changed(&mut pending);
    }

    pub(crate) fn remove_group(&self, name: &str) {
        let mut pending = self.lock();
        if pending.groups.remove(name).is_some() {
            self.changed(&mut pending);
        }
    }

    /// Records the event id high-water mark (written with the next change).
    pub(crate) fn note_event_seq(&self, seq: u64) {
        self.lock().event_seq = seq;
    }

    /// Waits until every change made before this call is on disk.
    pub(crate) async fn sync(&self) -> Result<(), String> {
        let target = self.lock().generation;
        let mut written = self.written.subscribe();
        let outcome = written
            .wait_for(|(generation, _)| *generation >= target)
            .await;
        match outcome {
            Ok(state) => state.1.clone().map_or(Ok(()), Err),
            Err(_) => Err("the agent store writer has stopped".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> StoredAgent {
        StoredAgent {
            id: id.into(),
            spec: AgentSpec {
                name: format!("n-{id}"),
                command: "true".into(),
                ..AgentSpec::default()
            },
            source: "cli".into(),
            created_at_ms: 1,
            state: AgentState::Running,
            exit_code: None,
            exit_signal: None,
            restarts: 0,
            run: 1,
            last_fire_ms: None,
            limit: None,
        }
    }

    #[tokio::test]
    async fn synced_changes_are_on_disk_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.json");
        let (store, loaded, _) = Store::load(path.clone());
        assert!(loaded.is_empty());
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn(Arc::clone(&store).write_loop(stop.clone()));
        store.put(agent("ag-aaaa"));
        store.put(agent("ag-bbbb"));
        store.update("ag-aaaa", |a| a.state = AgentState::Stopped);
        store.remove("ag-bbbb");
        store.note_event_seq(42);
        store.update("ag-aaaa", |a| a.restarts = 3);
        store.sync().await.unwrap();
        let (_, reloaded, seq) = Store::load(path.clone());
        assert_eq!(reloaded.len(), 1);
        assert_eq!(
            (reloaded[0].state, reloaded[0].restarts, seq),
            (AgentState::Stopped, 3, 42)
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        stop.cancel();
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn each_write_has_every_change_since_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.json");
        let (store, _, _) = Store::load(path.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn(Arc::clone(&store).write_loop(stop.clone()));
        let reloaded = || {
            let (_, agents, _) = Store::load(path.clone());
            agents
        };
        store.put(agent("ag-aaaa"));
        store.put(agent("ag-bbbb"));
        store.put(agent("ag-cccc"));
        store.sync().await.unwrap();
        assert_eq!(
            reloaded(),
            [agent("ag-aaaa"), agent("ag-bbbb"), agent("ag-cccc")]
        );
        // Each kind of change, after a write that had the agents' JSON made once already.
        store.update("ag-aaaa", |a| a.restarts = 5);
        store.put(StoredAgent {
            run: 7,
            ..agent("ag-bbbb")
        });
        store.remove("ag-cccc");
        store.sync().await.unwrap();
        let agents = reloaded();
        assert_eq!(
            agents
                .iter()
                .map(|a| (&*a.id, a.restarts, a.run))
                .collect::<Vec<_>>(),
            [("ag-aaaa", 5, 1), ("ag-bbbb", 0, 7)]
        );
        stop.cancel();
        writer.await.unwrap();
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.json");
        std::fs::write(&path, "{\"version\": 1, \"agents\": [tr").unwrap();
        let (_, loaded, _) = Store::load(path.clone());
        assert!(loaded.is_empty());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("agents.json.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(
            std::fs::read_to_string(aside[0].path()).unwrap(),
            "{\"version\": 1, \"agents\": [tr"
        );
    }
}
