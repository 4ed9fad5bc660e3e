//! What each agent is doing and why: its activity, read from its hooks, its terminal signals and
//! its screen (trusted in that order), the quiet-and-no-CPU rule, the usage-limit wait of a
//! running agent, and notifications of activities that last.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use celistra_core::agents::classify::{self, Classified};
use celistra_core::agents::clip_said;
use celistra_core::agents::hooks;
use celistra_core::agents::rules::Rules;
use celistra_core::agents::terminal::{TerminalScanner, TerminalSignal};
use celistra_core::logtext::readable_text;
use celistra_core::model_trouble::limit_resume_at;
use celistra_proto::{
    Activity, ActivityInfo, ActivityNotice, ApiError, ErrorCode, EventKind, Evidence,
    ExitClassification, HookReport, LimitWait, SignalTier,
};

use super::agent::AgentHandle;
use crate::now_ms;
use crate::services::Services;

/// Bytes of a run's latest output kept for its screen rules and its exit classification.
const TAIL_BYTES: usize = 16 * 1024;
/// Lines of the screen the rules look at, at most.
const SCREEN_LINES: usize = 40;
/// Least time between two evaluations of an agent's screen rules while output keeps coming.
const SCREEN_EVERY: std::time::Duration = std::time::Duration::from_millis(300);
/// Most `agent_activity` events one agent publishes in a second: an agent that flips (or a
/// hostile one spamming its hooks) cannot flood the event backlog others resume from. A change
/// beyond it is in `AgentInfo` at once and published at the next tick.
const MAX_EVENTS_PER_SECOND: usize = 10;
/// Quiet time before an agent whose kind names none counts as idle (with no CPU use).
const DEFAULT_QUIET_IDLE_SECS: u64 = 30;
/// CPU use below which a quiet agent counts as idle: 2 % of one core.
const IDLE_CPU_SHARE: f64 = 0.02;

/// What has been seen of one agent's current run.
#[derive(Debug, Default)]
pub(crate) struct Tracker(Mutex<Track>);

#[derive(Debug, Default)]
struct Track {
    /// A structured signal came in this run: lower tiers then only report limits and errors.
    hook_spoke: bool,
    terminal: TerminalScanner,
    /// The run's latest output.
    tail: VecDeque<u8>,
    screen_dirty: bool,
    screen_checked: Option<Instant>,
    last_output: Option<Instant>,
    /// The sampler's reading (time in ms since the epoch, CPU time used) the quiet rule last saw.
    cpu_sample: Option<(u64, u64)>,
    /// A failure a hook reported (Claude Code's `StopFailure`), until the agent works again.
    failure: Option<ExitClassification>,
    /// The activity (and its start) already notified.
    notified: Option<(Activity, u64)>,
    /// The reset (and message) of a usage limit the agent went on working past: still on its
    /// screen, it is not a new limit.
    outlived_limit: Option<(Option<u64>, String)>,
    /// When the activity events of the last second were published.
    published: VecDeque<Instant>,
    /// A change of activity was not published (over [`MAX_EVENTS_PER_SECOND`]): the next tick
    /// publishes the activity then.
    held: bool,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Track> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new run starts: nothing of the last one counts.
    pub(crate) fn new_run(&self) {
        *self.lock() = Track::default();
    }

    /// The failure a hook reported in this run, if the agent did not work again after it.
    pub(crate) fn take_failure(&self) -> Option<ExitClassification> {
        self.lock().failure.take()
    }

    /// Whether an activity event may go out now; if not, it is held for the next tick.
    fn may_publish(&self) -> bool {
        let mut track = self.lock();
        while track
            .published
            .front()
            .is_some_and(|at| at.elapsed() >= std::time::Duration::from_secs(1))
        {
            track.published.pop_front();
        }
        if track.published.len() < MAX_EVENTS_PER_SECOND {
            track.published.push_back(Instant::now());
            track.held = false;
            true
        } else {
            track.held = true;
            false
        }
    }

    /// The readable text of the run's latest output.
    pub(crate) fn tail_text(&self) -> String {
        let track = self.lock();
        let (a, b) = track.tail.as_slices();
        readable_text(&[a, b].concat())
    }
}

/// One signal about an agent's activity.
struct Observation {
    tier: SignalTier,
    activity: Activity,
    signal: String,
    said: String,
    /// For `waiting-limit` and `model-error`: the failure, classified.
    failure: Option<Classified>,
}

/// The agent's rules for its kind.
fn kind_rules(handle: &AgentHandle, services: &Services) -> (Arc<Rules>, String) {
    (services.agent_rules.current(), handle.info().kind.clone())
}

/// Output of the agent's current run: terminal signals at once, screen rules at most every
/// 300 ms (the rest is left to [`tick`]).
pub(crate) fn on_output(handle: &AgentHandle, services: &Services, chunk: &[u8]) {
    let mut signals = Vec::new();
    let screen_due = {
        let mut track = handle.activity.lock();
        track.terminal.push(chunk, &mut signals);
        let keep = chunk.len().min(TAIL_BYTES);
        let excess = (track.tail.len() + keep).saturating_sub(TAIL_BYTES);
        track.tail.drain(..excess);
        track.tail.extend(&chunk[chunk.len() - keep..]);
        track.last_output = Some(Instant::now());
        track.screen_dirty = true;
        track
            .screen_checked
            .is_none_or(|at| at.elapsed() >= SCREEN_EVERY)
    };
    // The screen first, then the terminal's signals: a bell rings after the prompt it is for.
    if screen_due {
        check_screen(handle, services);
    }
    if signals.is_empty() {
        return;
    }
    let (rules, kind) = kind_rules(handle, services);
    let rules = rules.kind(&kind);
    for signal in signals {
        let observation = match signal {
            TerminalSignal::Bell => rules.bell.map(|activity| Observation {
                tier: SignalTier::Terminal,
                activity,
                signal: "BEL".into(),
                said: String::new(),
                failure: None,
            }),
            TerminalSignal::Notify(text) => rules.notify.map(|activity| Observation {
                tier: SignalTier::Terminal,
                activity,
                signal: "OSC 9 notification".into(),
                said: clip_said(&text),
                failure: None,
            }),
            TerminalSignal::Title(title) => rules.title(&title).map(|found| Observation {
                tier: SignalTier::Terminal,
                activity: found.activity,
                signal: format!("OSC 0 title, rule {}", found.rule),
                said: clip_said(&found.said),
                failure: None,
            }),
            TerminalSignal::Progress { state, percent } => {
                matches!(state, 1 | 3).then(|| Observation {
                    tier: SignalTier::Terminal,
                    activity: Activity::Working,
                    signal: "OSC 9;4 progress".into(),
                    said: percent.map(|p| format!("{p} %")).unwrap_or_default(),
                    failure: None,
                })
            }
        };
        if let Some(observation) = observation {
            observe(handle, services, observation);
        }
    }
}

/// Evaluates the screen rules of the agent's kind on the latest output.
fn check_screen(handle: &AgentHandle, services: &Services) {
    let text = {
        let mut track = handle.activity.lock();
        track.screen_dirty = false;
        track.screen_checked = Some(Instant::now());
        let (a, b) = track.tail.as_slices();
        readable_text(&[a, b].concat())
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let lines = &lines[lines.len().saturating_sub(SCREEN_LINES)..];
    let (rules, kind) = kind_rules(handle, services);
    let Some(found) = rules.kind(&kind).screen(lines) else {
        return;
    };
    let failure = matches!(
        found.activity,
        Activity::WaitingLimit | Activity::ModelError
    )
    .then(|| classify::classify_line(&found.said, now_ms(), services.zone))
    .flatten();
    observe(
        handle,
        services,
        Observation {
            tier: SignalTier::Screen,
            activity: found.activity,
            signal: format!("screen rule {}", found.rule),
            said: clip_said(&found.said),
            failure,
        },
    );
}

/// A hook's report, from the agent's own socket.
pub(crate) fn on_hook(
    handle: &AgentHandle,
    services: &Services,
    report: &HookReport,
) -> Result<(), ApiError> {
    if !handle.info().state.is_active() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("agent {} is not running; its hooks are ignored", handle.id),
        ));
    }
    let signal = hooks::interpret(&report.kind, &report.payload, now_ms(), services.zone)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
    let Some(activity) = signal.activity else {
        // Recorded as spoken: the agent has hooks, so its screen no longer decides.
        handle.activity.lock().hook_spoke = true;
        return Ok(());
    };
    observe(
        handle,
        services,
        Observation {
            tier: SignalTier::Hook,
            activity,
            signal: signal.signal,
            said: clip_said(&signal.said),
            failure: signal.failure,
        },
    );
    Ok(())
}

/// Applies a signal: a higher tier outranks lower ones for the whole run, except that a usage
/// limit or a model error is believed from any tier. Publishes a change of activity.
fn observe(handle: &AgentHandle, services: &Services, observation: Observation) {
    let now = now_ms();
    let limited_or_failing = matches!(
        observation.activity,
        Activity::WaitingLimit | Activity::ModelError
    );
    let source = match observation.tier {
        SignalTier::Hook => "hook",
        SignalTier::Terminal | SignalTier::Screen => "output",
    };
    let classification = observation
        .failure
        .map(|c| c.into_classification(source, now));
    {
        let mut track = handle.activity.lock();
        match observation.tier {
            SignalTier::Hook => track.hook_spoke = true,
            _ if track.hook_spoke && !limited_or_failing => return,
            _ => {}
        }
        let reset_at_ms = classification.as_ref().and_then(|c| c.reset_at_ms);
        let seen_before = track.outlived_limit.as_ref().is_some_and(|(reset, said)| {
            *reset == reset_at_ms && (reset.is_some() || *said == observation.said)
        });
        if observation.activity == Activity::WaitingLimit
            && observation.tier != SignalTier::Hook
            && seen_before
        {
            return;
        }
        if observation.activity == Activity::Working {
            track.failure = None;
            // Working again before the reset (more usage bought, a person typed): the wait is
            // over, and must not type into or restart the agent at the reset.
            let outlived = handle.info_mut().limit.take();
            if let Some(limit) = outlived {
                handle.resume.set(None);
                track.outlived_limit = Some((limit.reset_at_ms, limit.said));
            }
        } else if observation.tier == SignalTier::Hook
            && let Some(classification) = &classification
        {
            track.failure = Some(classification.clone());
        }
    }
    set_activity(
        handle,
        services,
        observation.activity,
        Evidence {
            tier: observation.tier,
            signal: observation.signal,
            said: observation.said.clone(),
            at_ms: now,
        },
    );
    if observation.activity == Activity::WaitingLimit {
        let reset_at_ms = classification.as_ref().and_then(|c| c.reset_at_ms);
        wait_for_limit(handle, services, reset_at_ms, &observation.said);
    }
}

/// Sets the activity of a running agent (a late signal of a run that ended changes nothing).
fn set_activity(handle: &AgentHandle, services: &Services, activity: Activity, evidence: Evidence) {
    if handle.info().state.is_active() {
        record_activity(handle, services, activity, evidence);
    }
}

/// Sets the agent's activity, and publishes it if it changed.
pub(crate) fn record_activity(
    handle: &AgentHandle,
    services: &Services,
    activity: Activity,
    evidence: Evidence,
) {
    let changed = {
        let mut info = handle.info_mut();
        if info.activity.as_ref().map(|a| a.activity) == Some(activity) {
            None
        } else {
            let now = evidence.at_ms;
            let activity = ActivityInfo {
                activity,
                since_ms: now,
                evidence,
            };
            info.activity = Some(activity.clone());
            Some((info.name.clone(), activity))
        }
    };
    if let Some((name, activity)) = changed
        && handle.activity.may_publish()
    {
        services.events.publish(EventKind::AgentActivity {
            agent_id: handle.id.clone(),
            name,
            activity,
        });
    }
}

/// Publishes the activity whose change was held back by the event budget, once it allows.
fn publish_held(handle: &AgentHandle, services: &Services) {
    let held = handle.activity.lock().held;
    if !held || !handle.activity.may_publish() {
        return;
    }
    let (name, current) = {
        let info = handle.info();
        (info.name.clone(), info.activity.clone())
    };
    if let Some(activity) = current {
        services.events.publish(EventKind::AgentActivity {
            agent_id: handle.id.clone(),
            name,
            activity,
        });
    }
}

/// The agent asked through the daemon's approval flow (`celistrad ask`, its hook or a request
/// line), or its request was decided: `waiting-approval`, then `working` again.
pub(crate) fn note_approval(handle: &AgentHandle, services: &Services, waiting: bool) {
    let (activity, signal) = if waiting {
        (
            Activity::WaitingApproval,
            "approval requested (celistrad ask)",
        )
    } else {
        (Activity::Working, "approval decided")
    };
    record_activity(
        handle,
        services,
        activity,
        Evidence {
            tier: SignalTier::Hook,
            signal: signal.into(),
            said: String::new(),
            at_ms: now_ms(),
        },
    );
}

/// A running agent reported a usage limit: it waits (still running) until the reset plus jitter,
/// then its task types its `limit_input` or restarts it.
fn wait_for_limit(handle: &AgentHandle, services: &Services, reset_at_ms: Option<u64>, said: &str) {
    let now = now_ms();
    let action = if handle.spec().limit_input.is_some() {
        "input"
    } else {
        "restart"
    };
    let limit = {
        let mut info = handle.info_mut();
        if info
            .limit
            .as_ref()
            .is_some_and(|l| l.reset_at_ms == reset_at_ms)
        {
            return;
        }
        let limit = LimitWait {
            reset_at_ms,
            resume_at_ms: limit_resume_at(reset_at_ms, now, super::agent::random_unit()),
            action: action.into(),
            said: clip_said(said),
        };
        info.limit = Some(Box::new(limit.clone()));
        limit
    };
    handle.resume.set(Some(limit.resume_at_ms));
    services.events.publish(EventKind::AgentWaitingLimit {
        agent_id: handle.id.clone(),
        name: handle.info().name.clone(),
        limit,
    });
}

/// Once a second for every agent with a process: the screen rules of output that came since the
/// last look, the quiet-and-no-CPU rule, and notifications of activities that lasted.
pub(crate) fn tick(handle: &AgentHandle, services: &Services) {
    publish_held(handle, services);
    notify_if_due(handle, services);
    let (pid, kind) = {
        let info = handle.info();
        if !info.state.is_active() {
            return;
        }
        (info.pid, info.kind.clone())
    };
    let (dirty, quiet_for, hook_spoke) = {
        let track = handle.activity.lock();
        (
            track.screen_dirty,
            track.last_output.map(|at| at.elapsed()),
            track.hook_spoke,
        )
    };
    if dirty {
        check_screen(handle, services);
    }
    let rules = services.agent_rules.current();
    let quiet_idle_secs = rules
        .kind(&kind)
        .quiet_idle_secs
        .unwrap_or(DEFAULT_QUIET_IDLE_SECS);
    let current = handle.info().activity.as_ref().map(|a| a.activity);
    let may_idle = !hook_spoke && matches!(current, None | Some(Activity::Working));
    if let (true, Some(_), Some(quiet)) = (may_idle, pid, quiet_for)
        && quiet.as_secs() >= quiet_idle_secs
    {
        let used = handle.sampled().clone();
        let idle = used.and_then(|usage| {
            let mut track = handle.activity.lock();
            let previous = track.cpu_sample.replace((usage.time_ms, usage.cpu_usec));
            let (at_ms, cpu_usec) = previous?;
            // Two different readings of the sampler: the CPU share between them.
            let elapsed_usec =
                usage.time_ms.checked_sub(at_ms).filter(|&ms| ms > 0)? as f64 * 1000.0;
            let share = usage.cpu_usec.saturating_sub(cpu_usec) as f64 / elapsed_usec;
            Some(share < IDLE_CPU_SHARE)
        });
        if idle == Some(true) {
            set_activity(
                handle,
                services,
                Activity::Idle,
                Evidence {
                    tier: SignalTier::Screen,
                    signal: format!("quiet {} s, no CPU", quiet.as_secs()),
                    said: String::new(),
                    at_ms: now_ms(),
                },
            );
        }
    } else {
        handle.activity.lock().cpu_sample = None;
    }
}

/// Sends the notification an agent's `notify_activity` asks for, once per spell of an activity.
fn notify_if_due(handle: &AgentHandle, services: &Services) {
    let Some(current) = handle.info().activity.clone() else {
        return;
    };
    let wanted = handle
        .spec()
        .notify_activity
        .iter()
        .find(|n| n.activity == current.activity)
        .map(|n| n.after_secs);
    let Some(after_secs) = wanted else {
        return;
    };
    if now_ms().saturating_sub(current.since_ms) < after_secs * 1000 {
        return;
    }
    let spell = (current.activity, current.since_ms);
    if handle.activity.lock().notified == Some(spell) {
        return;
    }
    // Marked as sent only once there are channels to send on: a config.json that cannot be read
    // is tried again at the next tick.
    let Ok(config) = services.config() else {
        return;
    };
    handle.activity.lock().notified = Some(spell);
    services.notify.announce_activity(
        &config.notifications,
        &ActivityNotice {
            agent_id: handle.id.clone(),
            agent_name: handle.info().name.clone(),
            activity: current,
        },
    );
}
