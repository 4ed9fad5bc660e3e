//! What the daemon counts for `GET /metrics` that is kept nowhere else (API request latency per
//! route template and method, the time from an approval request to its decision, dropped output
//! and memory restarts per agent), and the Prometheus text exposition format (0.0.4) it is served
//! in. The rest of the metrics are read where they live when scraped (`api/metrics.rs`).

use std::collections::HashMap;
use std::fmt::{Display, Write as _};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use celistra_proto::{ApprovalStatus, Event, EventKind};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// Upper bounds of the API latency buckets, in seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the approval latency buckets, in seconds: people answer in seconds to hours.
const APPROVAL_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0,
];

/// The route label of a request no route matched (so unknown paths add no label value).
const UNMATCHED: &str = "unmatched";

/// A histogram with fixed buckets, as Prometheus exposes it.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// Observations at most each bound (not cumulative; summed when written).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        if let Some(bucket) = self.bounds.iter().position(|&bound| seconds <= bound) {
            self.counts[bucket] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// The daemon's own counters, shared by the API layer, the event listener and the scrape.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// By route template, then method.
    requests: Mutex<HashMap<String, HashMap<&'static str, Histogram>>>,
    /// By decision (`approved`, `denied`).
    approvals: Mutex<HashMap<&'static str, Histogram>>,
    per_agent: Mutex<HashMap<String, AgentCounters>>,
    /// How many requests were answered, for whoever waits for the API to go quiet
    /// (`code_pages.rs`).
    answered: tokio::sync::watch::Sender<u64>,
}

/// What is counted per agent from events.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AgentCounters {
    pub dropped_bytes: u64,
    pub memory_restarts: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    pub(crate) fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            requests: Mutex::new(HashMap::new()),
            approvals: Mutex::new(HashMap::new()),
            per_agent: Mutex::new(HashMap::new()),
            answered: tokio::sync::watch::channel(0).0,
        })
    }

    /// The count of answered requests, as it changes.
    pub(crate) fn requests_answered(&self) -> tokio::sync::watch::Receiver<u64> {
        self.answered.subscribe()
    }

    fn observe_request(&self, route: &str, method: &'static str, took: Duration) {
        self.answered.send_modify(|n| *n += 1);
        let mut requests = lock(&self.requests);
        let by_method = match requests.get_mut(route) {
            Some(by_method) => by_method,
            None => requests.entry(route.to_owned()).or_default(),
        };
        by_method
            .entry(method)
            .or_insert_with(|| Histogram::new(REQUEST_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// Counts what events tell: decisions (with their latency), dropped output, memory restarts.
    /// Runs until the bus closes; a lag loses only the events it skipped.
    pub(crate) async fn follow(self: Arc<Self>, mut live: broadcast::Receiver<Arc<Event>>) {
        loop {
            match live.recv().await {
                Ok(event) => self.count(&event.kind),
                Err(RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "metrics missed events");
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn count(&self, kind: &EventKind) {
        match kind {
            EventKind::ApprovalDecided { approval } => {
                let decision = match approval.status {
                    ApprovalStatus::Approved => "approved",
                    ApprovalStatus::Denied => "denied",
                    ApprovalStatus::Pending | ApprovalStatus::Expired => return,
                };
                let Some(decided_at) = approval.decided_at_ms else {
                    return;
                };
                let waited = decided_at.saturating_sub(approval.created_at_ms) as f64 / 1000.0;
                lock(&self.approvals)
                    .entry(decision)
                    .or_insert_with(|| Histogram::new(APPROVAL_BUCKETS))
                    .observe(waited);
            }
            EventKind::LogsDropped {
                agent_id, bytes, ..
            } => {
                lock(&self.per_agent)
                    .entry(agent_id.clone())
                    .or_default()
                    .dropped_bytes += bytes;
            }
            EventKind::AgentMemoryRestart { agent_id, .. } => {
                lock(&self.per_agent)
                    .entry(agent_id.clone())
                    .or_default()
                    .memory_restarts += 1;
            }
            EventKind::AgentRemoved { agent_id, .. } => {
                lock(&self.per_agent).remove(agent_id);
            }
            _ => {}
        }
    }

    /// What events counted for an agent.
    pub(crate) fn agent(&self, agent_id: &str) -> AgentCounters {
        lock(&self.per_agent)
            .get(agent_id)
            .copied()
            .unwrap_or_default()
    }

    /// Writes the API and approval latency histograms.
    pub(crate) fn write_latencies(&self, out: &mut Exposition) {
        out.family(
            "celistra_api_request_duration_seconds",
            "histogram",
            "Time from an API request to its response head, by route template and method.",
        );
        let requests = lock(&self.requests);
        let mut routes: Vec<_> = requests.iter().collect();
        routes.sort_by(|a, b| a.0.cmp(b.0));
        for (route, by_method) in routes {
            let mut methods: Vec<_> = by_method.iter().collect();
            methods.sort_by_key(|(method, _)| **method);
            for (method, histogram) in methods {
                out.histogram(
                    "celistra_api_request_duration_seconds",
                    &[("route", route), ("method", method)],
                    histogram,
                );
            }
        }
        drop(requests);
        out.family(
            "celistra_approval_decision_seconds",
            "histogram",
            "Time from an approval request to a person's decision, by decision.",
        );
        let approvals = lock(&self.approvals);
        for decision in ["approved", "denied"] {
            let empty = Histogram::new(APPROVAL_BUCKETS);
            let histogram = approvals.get(decision).unwrap_or(&empty);
            out.histogram(
                "celistra_approval_decision_seconds",
                &[("decision", decision)],
                histogram,
            );
        }
    }
}

/// Times every request by the route template it matched (the path as the route table writes
/// it, so ids in paths add no label values) and its method.
pub(crate) async fn time_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics.observe_request(&route, method, started.elapsed());
    response
}

/// The method as a label: the standard ones, else `other` (a client cannot add label values).
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [&str; 8] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT",
    ];
    STANDARD
        .into_iter()
        .find(|standard| *standard == method.as_str())
        .unwrap_or("other")
}

/// A Prometheus text exposition (format 0.0.4) being written.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    text: String,
}

/// The media type of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    /// Starts a metric family: its help and type lines.
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// The samples of one histogram: cumulative buckets, `+Inf`, sum and count.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            cumulative += count;
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, histogram.count);
        self.sample(&format!("{name}_sum"), labels, histogram.sum);
        self.sample(&format!("{name}_count"), labels, histogram.count);
    }

    pub(crate) fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_written_cumulative_with_escaped_labels() {
        let mut histogram = Histogram::new(&[0.1, 1.0]);
        for seconds in [0.05, 0.5, 0.7, 3.0] {
            histogram.observe(seconds);
        }
        let mut out = Exposition::default();
        out.family("x_seconds", "histogram", "Help with a \\ and\na line.");
        out.histogram("x_seconds", &[("route", "/a\"b")], &histogram);
        assert_eq!(
            out.into_text(),
            "# HELP x_seconds Help with a \\\\ and\\na line.\n\
             # TYPE x_seconds histogram\n\
             x_seconds_bucket{route=\"/a\\\"b\",le=\"0.1\"} 1\n\
             x_seconds_bucket{route=\"/a\\\"b\",le=\"1\"} 3\n\
             x_seconds_bucket{route=\"/a\\\"b\",le=\"+Inf\"} 4\n\
             x_seconds_sum{route=\"/a\\\"b\"} 4.25\n\
             x_seconds_count{route=\"/a\\\"b\"} 4\n"
        );
    }

    #[test]
    fn unknown_methods_are_one_label_value() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").expect("a method")),
            "other"
        );
    }
}
