//! Probes without the I/O: what makes one valid, its timing with defaults resolved, the HTTP
//! target it names, the output-line matcher, and the counter that turns check results into
//! readiness changes and liveness restarts.

use celistra_proto::{Probe, ProbeStatus};

use crate::logtext::{Line, LineAssembler, Stream};

/// Default time between checks.
pub const DEFAULT_INTERVAL_MS: u64 = 5_000;
/// Default time a check may take.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// Default failures in a row that count.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Until a run is first ready, its readiness is checked at least this often.
pub const STARTUP_INTERVAL_MS: u64 = 500;

/// One probe's check, read from its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Exec(String),
    Http(HttpTarget),
    Tcp(String),
    Line(String),
}

/// Which probe of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Readiness,
    Liveness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Readiness => "readiness",
            ProbeKind::Liveness => "liveness",
        }
    }
}

/// A probe's timing, defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub failure_threshold: u32,
    pub initial_delay_ms: u64,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        Timing {
            interval_ms: probe.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS),
            timeout_ms: probe.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            failure_threshold: probe.failure_threshold.unwrap_or(DEFAULT_FAILURE_THRESHOLD),
            initial_delay_ms: probe.initial_delay_ms.unwrap_or(0),
        }
    }
}

/// An `http://` URL split into what a GET needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` to connect to.
    pub address: String,
    /// The `Host` header: the URL's authority as written.
    pub host: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl HttpTarget {
    pub fn parse(url: &str) -> Result<HttpTarget, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "`{url}` is not an http:// URL; probes speak plain HTTP (for a TLS port, probe it \
                 with tcp)"
            )
        })?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "`{url}` has no host (or has credentials); write http://HOST[:PORT]/PATH"
            ));
        }
        let has_port = match authority.rsplit_once(':') {
            // `[::1]` alone ends with `]`; `[::1]:80` has its port after the last colon.
            Some((_, port)) => !port.ends_with(']'),
            None => false,
        };
        let address = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        check_address(&address).map_err(|e| format!("`{url}`: {e}"))?;
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!(
                "`{url}`: the path has spaces or control characters; percent-encode them"
            ));
        }
        Ok(HttpTarget {
            address,
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// `host:port` with a port number.
fn check_address(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{address}` is not HOST:PORT"))?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{address}` has no usable host; write e.g. 127.0.0.1:8080"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "`{address}`: the port `{port}` is not a number from 1 to 65535"
        )),
    }
}

/// Checks a probe; `kind` names it in messages. Returns its check.
pub fn check(probe: &Probe, kind: ProbeKind) -> Result<Check, String> {
    let field = kind.as_str();
    let given: Vec<&str> = [
        ("exec", &probe.exec),
        ("http", &probe.http),
        ("tcp", &probe.tcp),
        ("line", &probe.line),
    ]
    .into_iter()
    .filter(|(_, value)| value.is_some())
    .map(|(name, _)| name)
    .collect();
    let check = match (given.as_slice(), probe) {
        (
            ["exec"],
            Probe {
                exec: Some(command),
                ..
            },
        ) => {
            if command.trim().is_empty() || command.len() > 4096 || command.contains('\0') {
                return Err(format!(
                    "{field}: exec must be a command line of 1 to 4096 bytes, without NUL"
                ));
            }
            Check::Exec(command.clone())
        }
        (
            ["http"],
            Probe {
                http: Some(url), ..
            },
        ) => Check::Http(HttpTarget::parse(url).map_err(|e| format!("{field}: {e}"))?),
        (
            ["tcp"],
            Probe {
                tcp: Some(addr), ..
            },
        ) => {
            check_address(addr).map_err(|e| format!("{field}: {e}"))?;
            Check::Tcp(addr.clone())
        }
        (
            ["line"],
            Probe {
                line: Some(pattern),
                ..
            },
        ) => {
            if kind == ProbeKind::Liveness {
                return Err(
                    "liveness: a line probe can only decide readiness; check liveness with \
                     exec, http or tcp"
                        .into(),
                );
            }
            LineMatcher::new(pattern).map_err(|e| format!("{field}: {e}"))?;
            Check::Line(pattern.clone())
        }
        _ => {
            return Err(format!(
                "{field}: give exactly one of exec, http, tcp or line (got {})",
                if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.join(", ")
                }
            ));
        }
    };
    let within = |name: &str, value: Option<u64>, min: u64, max: u64| match value {
        Some(v) if v < min || v > max => Err(format!(
            "{field}.{name}: {v} is out of range; use {min} to {max}"
        )),
        _ => Ok(()),
    };
    within("interval_ms", probe.interval_ms, 100, 86_400_000)?;
    within("timeout_ms", probe.timeout_ms, 10, 600_000)?;
    within(
        "failure_threshold",
        probe.failure_threshold.map(u64::from),
        1,
        1000,
    )?;
    within("initial_delay_ms", probe.initial_delay_ms, 0, 86_400_000)?;
    Ok(check)
}

/// What an output line must contain: plain text (case-sensitive), or `/REGEX/`.
#[derive(Debug, Clone)]
pub enum LineMatcher {
    Text(String),
    Regex(regex::Regex),
}

impl LineMatcher {
    pub fn new(pattern: &str) -> Result<LineMatcher, String> {
        if pattern.is_empty() {
            return Err("line: the pattern is empty; give the text a ready agent prints".into());
        }
        match pattern.strip_prefix('/').and_then(|p| p.strip_suffix('/')) {
            Some(expression) if !expression.is_empty() => regex::RegexBuilder::new(expression)
                .size_limit(1 << 20)
                .build()
                .map(LineMatcher::Regex)
                .map_err(|e| format!("line: `{pattern}` is not a valid regex: {e}")),
            _ => Ok(LineMatcher::Text(pattern.to_owned())),
        }
    }

    pub fn matches(&self, line: &str) -> bool {
        match self {
            LineMatcher::Text(text) => line.contains(text.as_str()),
            LineMatcher::Regex(regex) => regex.is_match(line),
        }
    }
}

/// Watches a run's output for its readiness line: readable lines (escape sequences and redraws
/// resolved, across chunk boundaries) until one matches; then it is done and costs nothing more.
pub struct LineWatch {
    matcher: LineMatcher,
    lines: LineAssembler,
    found: Vec<Line>,
    matched: Option<String>,
}

impl LineWatch {
    pub fn new(matcher: LineMatcher) -> LineWatch {
        LineWatch {
            matcher,
            lines: LineAssembler::new(),
            found: Vec::new(),
            matched: None,
        }
    }

    /// The line that matched, once one did (then output is no longer looked at).
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    /// Feeds a chunk; returns the matching line the first time one completes.
    pub fn push(&mut self, stream: Stream, bytes: &[u8]) -> Option<String> {
        if self.matched.is_some() {
            return None;
        }
        self.found.clear();
        self.lines.push(stream, 0, bytes, &mut self.found);
        let hit = self
            .found
            .iter()
            .find(|line| self.matcher.matches(&line.text))
            .map(|line| line.text.clone());
        self.matched.clone_from(&hit);
        self.found.clear();
        hit
    }
}

/// What a probe result changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to tell.
    Same,
    /// Readiness: the agent became ready (`true`) or not ready (`false`).
    Ready(bool),
    /// Liveness: the threshold was reached; the agent must be restarted.
    Restart,
}

/// One probe's state in one run: consecutive failures and, for readiness, whether it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    kind: ProbeKind,
    threshold: u32,
    failures: u32,
    ready: bool,
    last: Option<ProbeStatus>,
}

impl Counter {
    pub fn new(kind: ProbeKind, threshold: u32) -> Counter {
        Counter {
            kind,
            threshold: threshold.max(1),
            failures: 0,
            ready: false,
            last: None,
        }
    }

    /// Whether readiness passed (and has not failed `threshold` times since).
    pub fn ready(&self) -> bool {
        self.ready
    }

    pub fn last(&self) -> Option<&ProbeStatus> {
        self.last.as_ref()
    }

    /// Records a check's result and says what it changes. Readiness turns true on the first
    /// success and false after `threshold` failures in a row; liveness asks for a restart at the
    /// `threshold`-th failure in a row (then counts again from zero).
    pub fn record(&mut self, ok: bool, message: String, at_ms: u64) -> Verdict {
        self.failures = if ok { 0 } else { self.failures + 1 };
        self.last = Some(ProbeStatus {
            ok,
            at_ms,
            message,
            failures: self.failures,
        });
        match self.kind {
            ProbeKind::Readiness if ok && !self.ready => {
                self.ready = true;
                Verdict::Ready(true)
            }
            ProbeKind::Readiness if !ok && self.ready && self.failures >= self.threshold => {
                self.ready = false;
                Verdict::Ready(false)
            }
            ProbeKind::Liveness if self.failures >= self.threshold => {
                self.failures = 0;
                Verdict::Restart
            }
            _ => Verdict::Same,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(f: impl FnOnce(&mut Probe)) -> Probe {
        let mut p = Probe::default();
        f(&mut p);
        p
    }

    #[test]
    fn a_probe_names_exactly_one_check() {
        let none = check(&Probe::default(), ProbeKind::Readiness).unwrap_err();
        assert!(
            none.contains("exactly one of exec, http, tcp or line (got none)"),
            "{none}"
        );
        let two = check(
            &probe(|p| {
                p.http = Some("http://x/".into());
                p.tcp = Some("x:1".into());
            }),
            ProbeKind::Liveness,
        )
        .unwrap_err();
        assert!(
            two.starts_with("liveness:") && two.contains("got http, tcp"),
            "{two}"
        );
        assert_eq!(
            check(
                &probe(|p| p.tcp = Some("127.0.0.1:80".into())),
                ProbeKind::Liveness
            ),
            Ok(Check::Tcp("127.0.0.1:80".into()))
        );
        let port = check(
            &probe(|p| p.tcp = Some("db:99999".into())),
            ProbeKind::Readiness,
        )
        .unwrap_err();
        assert!(port.contains("port `99999`"), "{port}");
    }

    #[test]
    fn a_line_probe_is_for_readiness_only_and_its_regex_must_compile() {
        let live = check(&probe(|p| p.line = Some("up".into())), ProbeKind::Liveness);
        assert!(live.unwrap_err().contains("only decide readiness"));
        let bad = check(
            &probe(|p| p.line = Some("/(/".into())),
            ProbeKind::Readiness,
        );
        assert!(bad.unwrap_err().contains("not a valid regex"));
        let timing = check(
            &probe(|p| {
                p.line = Some("up".into());
                p.interval_ms = Some(5);
            }),
            ProbeKind::Readiness,
        );
        assert!(timing.unwrap_err().starts_with("readiness.interval_ms: 5"));
    }

    #[test]
    fn http_urls_split_into_address_host_and_path() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!(
            (t.address.as_str(), t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080", "/health?x=1")
        );
        let t = HttpTarget::parse("http://localhost").unwrap();
        assert_eq!((t.address.as_str(), t.path.as_str()), ("localhost:80", "/"));
        let t = HttpTarget::parse("http://[::1]/").unwrap();
        assert_eq!(t.address, "[::1]:80");
        assert!(
            HttpTarget::parse("https://x/")
                .unwrap_err()
                .contains("plain HTTP")
        );
        assert!(HttpTarget::parse("http:///x").is_err());
    }

    #[test]
    fn the_line_watch_matches_across_chunks_and_escapes_then_stops_looking() {
        let mut watch = LineWatch::new(LineMatcher::new("listening on").unwrap());
        assert_eq!(watch.push(Stream::Pty, b"boot\r\n\x1b[32mlisten"), None);
        assert_eq!(
            watch.push(Stream::Pty, b"ing on 8080\x1b[0m\r\n"),
            Some("listening on 8080".into())
        );
        assert_eq!(watch.matched(), Some("listening on 8080"));
        assert_eq!(watch.push(Stream::Pty, b"listening on again\n"), None);
        let mut regex = LineWatch::new(LineMatcher::new("/port \\d+ open/").unwrap());
        assert_eq!(regex.push(Stream::Stdout, b"port x open\n"), None);
        assert!(regex.push(Stream::Stdout, b"port 80 open\n").is_some());
    }

    #[test]
    fn readiness_turns_on_at_once_and_off_after_the_threshold() {
        let mut c = Counter::new(ProbeKind::Readiness, 2);
        assert_eq!(c.record(false, "refused".into(), 1), Verdict::Same);
        assert_eq!(c.record(true, "HTTP 200".into(), 2), Verdict::Ready(true));
        assert_eq!(c.record(true, "HTTP 200".into(), 3), Verdict::Same);
        assert_eq!(c.record(false, "HTTP 500".into(), 4), Verdict::Same);
        assert_eq!(c.record(false, "HTTP 500".into(), 5), Verdict::Ready(false));
        assert_eq!(c.last().unwrap().failures, 2);
        assert_eq!(c.record(false, "HTTP 500".into(), 6), Verdict::Same);
        assert_eq!(c.record(true, "HTTP 200".into(), 7), Verdict::Ready(true));
    }

    #[test]
    fn liveness_asks_for_a_restart_at_each_threshold() {
        let mut c = Counter::new(ProbeKind::Liveness, 3);
        for _ in 0..2 {
            assert_eq!(c.record(false, "refused".into(), 1), Verdict::Same);
        }
        assert_eq!(c.record(false, "refused".into(), 1), Verdict::Restart);
        assert_eq!(c.record(false, "refused".into(), 1), Verdict::Same);
        assert_eq!(c.record(true, "ok".into(), 1), Verdict::Same);
        assert_eq!(c.last().unwrap().failures, 0);
    }
}
