//! The screen rules of agent kinds in force: the built-in ones with the state directory's
//! `agent-rules.json` over them, read again when the file changes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use celistra_core::agents::rules::Rules;

/// The screen rules in force: the built-in ones with `agent-rules.json` of the state directory
/// over them, read again whenever the file changes.
#[derive(Debug)]
pub(crate) struct AgentRules {
    path: PathBuf,
    loaded: Mutex<LoadedRules>,
}

#[derive(Debug)]
struct LoadedRules {
    /// Modification time and length of the file the rules were read from (`None`: no file).
    stamp: Option<(SystemTime, u64)>,
    /// When the file was last looked at: at most once a second, however many agents ask.
    checked: Option<Instant>,
    rules: Arc<Rules>,
}

/// How often the rules file is looked at for changes.
const RULES_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl AgentRules {
    pub(crate) fn new(path: PathBuf) -> AgentRules {
        let rules = AgentRules {
            path,
            loaded: Mutex::new(LoadedRules {
                stamp: None,
                checked: None,
                rules: Arc::new(Rules::builtin()),
            }),
        };
        let _ = rules.current();
        rules
    }

    /// The rules, re-read if the file changed. A file that does not parse is reported in the log
    /// and the rules before it stay in force: a typo never blinds the daemon.
    pub(crate) fn current(&self) -> Arc<Rules> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded
            .checked
            .is_some_and(|at| at.elapsed() < RULES_CHECK_EVERY)
        {
            return Arc::clone(&loaded.rules);
        }
        loaded.checked = Some(Instant::now());
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if loaded.stamp != stamp {
            loaded.stamp = stamp;
            match self.read() {
                Ok(rules) => loaded.rules = Arc::new(rules),
                Err(e) => tracing::warn!("{e}; the rules read before stay in force"),
            }
        }
        Arc::clone(&loaded.rules)
    }

    fn read(&self) -> Result<Rules, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Rules::builtin()),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        Rules::with_overrides(&text, &self.path.display().to_string())
    }
}
