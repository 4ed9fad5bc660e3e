//! What authentication and role checks cost per request: a daemon runs in this process
//! (`celistra_daemon::run` on a temporary state directory) and its router is called directly
//! (tower `oneshot`, no socket), so a request costs microseconds and differences of a fraction of
//! one show. Each kind of request is timed in batches, the kinds interleaved round after round;
//! an added cost is the median over rounds of the difference between two kinds' batch means in
//! the same round.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use celistra_proto::{LoginLink, Role, SESSION_COOKIE, TokenCreated, TokenRequest};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{Report, phase_within};

/// Requests per timed batch.
const BATCH: u32 = 200;
/// Rounds of batches, every kind once per round.
const ROUNDS: usize = 31;
/// What an added cost may be.
const TARGET: Duration = Duration::from_micros(5);

pub(crate) async fn phases(report: &mut Report) -> Vec<Result<()>> {
    vec![phase_within(Duration::from_secs(300), "auth", measure(report)).await]
}

/// One kind of request: how to make it and the status it must get.
struct Kind {
    name: &'static str,
    method: Method,
    path: &'static str,
    /// A header that carries the credential.
    credential: Option<(header::HeaderName, String)>,
    status: StatusCode,
}

impl Kind {
    fn request(&self) -> Request<Body> {
        let mut request = Request::builder().method(&self.method).uri(self.path);
        if let Some((name, value)) = &self.credential {
            request = request.header(name, value);
        }
        request.body(Body::empty()).expect("a valid request")
    }
}

fn bearer(credential: &str) -> Option<(header::HeaderName, String)> {
    Some((header::AUTHORIZATION, format!("Bearer {credential}")))
}

/// An authenticated route that no handler serves: authentication, then the 404 fallback.
const NO_ROUTE: &str = "/v1/bench-no-such-route";

/// The baseline: a public route whose handler refuses at once (a login without a body: 400),
/// answering a JSON error as the fallback does.
fn public() -> Kind {
    Kind {
        name: "public",
        method: Method::POST,
        path: "/v1/sessions/login",
        credential: None,
        status: StatusCode::BAD_REQUEST,
    }
}

fn unrouted(name: &'static str, credential: Option<(header::HeaderName, String)>) -> Kind {
    Kind {
        name,
        method: Method::GET,
        path: NO_ROUTE,
        credential,
        status: StatusCode::NOT_FOUND,
    }
}

async fn call(router: &Router, request: Request<Body>) -> Result<(StatusCode, axum::body::Bytes)> {
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    Ok((status, body))
}

/// Mean time per request of `BATCH` requests of `kind`.
async fn batch(router: &Router, kind: &Kind) -> Result<Duration> {
    let started = Instant::now();
    for _ in 0..BATCH {
        let (status, body) = call(router, kind.request()).await?;
        if status != kind.status {
            bail!(
                "{} {} ({}): {status}, expected {}: {}",
                kind.method,
                kind.path,
                kind.name,
                kind.status,
                String::from_utf8_lossy(&body)
            );
        }
    }
    Ok(started.elapsed() / BATCH)
}

/// Batch means of each kind over `ROUNDS` rounds, the kinds interleaved (the order rotates).
async fn rounds(router: &Router, kinds: &[Kind]) -> Result<Vec<Vec<Duration>>> {
    // Warm-up: caches, allocator, and the first use of a token or session (which is written).
    for kind in kinds {
        batch(router, kind).await?;
    }
    let mut means = vec![Vec::with_capacity(ROUNDS); kinds.len()];
    for round in 0..ROUNDS {
        for offset in 0..kinds.len() {
            let index = (round + offset) % kinds.len();
            means[index].push(batch(router, &kinds[index]).await?);
        }
    }
    Ok(means)
}

/// Median, 10th and 90th percentile (nearest rank) of signed microseconds.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |p: usize| values[(values.len() * p).div_ceil(100).max(1) - 1];
    (at(50), at(10), at(90))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The per-round difference `a − b` in µs: median and p10–p90.
fn added(means: &[Vec<Duration>], a: usize, b: usize) -> (f64, f64, f64) {
    spread(
        means[a]
            .iter()
            .zip(&means[b])
            .map(|(a, b)| micros(*a) - micros(*b))
            .collect(),
    )
}

fn report_added(report: &mut Report, name: &str, (median, p10, p90): (f64, f64, f64)) {
    report.add(
        name,
        "<= 5 µs (median)",
        format!("{median:.2} µs (p10–p90 of {ROUNDS} rounds: {p10:.2} to {p90:.2})"),
        Some(median <= micros(TARGET)),
    );
}

fn report_absolute(report: &mut Report, kinds: &[Kind], means: &[Vec<Duration>], stage: &str) {
    let figures: Vec<String> = kinds
        .iter()
        .zip(means)
        .map(|(kind, means)| {
            let (median, p10, p90) = spread(means.iter().map(|d| micros(*d)).collect());
            format!("{} {median:.2} ({p10:.2}–{p90:.2})", kind.name)
        })
        .collect();
    report.add(
        &format!("auth: µs per in-process request, {stage} (median, p10–p90)"),
        "none",
        figures.join("; "),
        None,
    );
}

/// Makes `count` more viewer tokens; returns the value of the first.
async fn make_tokens(router: &Router, secret: &str, first: usize, count: usize) -> Result<String> {
    let mut value = None;
    for i in first..first + count {
        let body = serde_json::to_vec(&TokenRequest {
            name: format!("bench-{i:03}"),
            role: Role::Viewer,
            expires_in_secs: None,
        })?;
        let request = Request::post("/v1/tokens")
            .header(header::AUTHORIZATION, format!("Bearer {secret}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))?;
        let (status, body) = call(router, request).await?;
        if status != StatusCode::OK && status != StatusCode::CREATED {
            bail!(
                "creating a token: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let created: TokenCreated = serde_json::from_slice(&body)?;
        value.get_or_insert(created.token);
    }
    value.context("no token made")
}

/// Logs in a viewer dashboard session; returns its cookie value.
async fn login(router: &Router, secret: &str) -> Result<String> {
    let request = Request::post("/v1/sessions/login-codes?role=viewer")
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .body(Body::empty())?;
    let (status, body) = call(router, request).await?;
    if !status.is_success() {
        bail!(
            "issuing a login code: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let link: LoginLink = serde_json::from_slice(&body)?;
    let request = Request::post("/v1/sessions/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({ "code": link.code }).to_string(),
        ))?;
    let response = router.clone().oneshot(request).await?;
    if !response.status().is_success() {
        bail!("logging in: {}", response.status());
    }
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .context("login set no cookie")?
        .to_str()?;
    let value = cookie
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix(&format!("{SESSION_COOKIE}=")))
        .context("login set another cookie")?;
    Ok(value.to_owned())
}

async fn measure(report: &mut Report) -> Result<()> {
    let home = tempfile::Builder::new()
        .prefix("celistra-bench-auth-")
        .tempdir()?;
    let (ready, mut started) = tokio::sync::mpsc::unbounded_channel();
    let options = celistra_daemon::Options {
        home: home.path().to_owned(),
        listen: "127.0.0.1:0".parse()?,
        scrollback_kb: None,
        subreaper: false,
        launcher: None,
        leaving: None,
        tls: None,
        insecure_http: false,
        machine_name: None,
        hub_listen: None,
        ready: Some(ready),
    };
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(celistra_daemon::run(options, shutdown.clone()));
    let router = started
        .recv()
        .await
        .context("the in-process daemon did not start")?
        .router;
    let result = stages(&router, home.path(), report).await;
    shutdown.cancel();
    daemon.await??;
    result
}

async fn stages(router: &Router, home: &std::path::Path, report: &mut Report) -> Result<()> {
    let auth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("auth.json"))?)?;
    let secret = auth["secret"]
        .as_str()
        .context("no secret in auth.json")?
        .to_owned();
    let token = make_tokens(router, &secret, 0, 1).await?;
    let session = login(router, &secret).await?;

    // One token stored: every credential, and the role check (the same kind of refusal by the
    // handler of a route open to any role, and of one that requires the viewer role).
    let kinds = [
        public(),
        unrouted("secret", bearer(&secret)),
        unrouted("token", bearer(&token)),
        unrouted(
            "cookie",
            Some((header::COOKIE, format!("{SESSION_COOKIE}={session}"))),
        ),
        Kind {
            name: "any-role route",
            method: Method::GET,
            path: "/v1/session",
            credential: bearer(&secret),
            status: StatusCode::BAD_REQUEST,
        },
        Kind {
            name: "viewer route",
            method: Method::GET,
            path: "/v1/audit?limit=x",
            credential: bearer(&secret),
            status: StatusCode::BAD_REQUEST,
        },
    ];
    let means = rounds(router, &kinds).await?;
    report_absolute(report, &kinds, &means, "1 token stored");
    report_added(report, "auth: machine secret, added", added(&means, 1, 0));
    report_added(
        report,
        "auth: API token (1 stored), added",
        added(&means, 2, 0),
    );
    report_added(report, "auth: session cookie, added", added(&means, 3, 0));
    report_added(
        report,
        "auth: role check (viewer route vs any-role route)",
        added(&means, 5, 4),
    );

    // More tokens stored: a token's lookup against the machine secret's and the baseline.
    for (stored, made) in [(10, 1), (256, 10)] {
        make_tokens(router, &secret, made, stored - made).await?;
        let kinds = [
            public(),
            unrouted("secret", bearer(&secret)),
            unrouted("token", bearer(&token)),
        ];
        let means = rounds(router, &kinds).await?;
        report_absolute(report, &kinds, &means, &format!("{stored} tokens stored"));
        report_added(
            report,
            &format!("auth: API token ({stored} stored), added"),
            added(&means, 2, 0),
        );
    }
    Ok(())
}
