//! Decision links (`/d/{token}`): the page a phone opens from a notification, where a
//! press-and-hold approves, and the `POST` that ntfy buttons and that page send. The signed token
//! is the credential, so these routes take no bearer secret; a link decides one request, once,
//! before it expires.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use celistra_notify::links::{Link, LinkError};
use celistra_proto::{
    ApiError, Approval, ApprovalStatus, ErrorCode, LinkDecision, TimeoutDefault, Verdict,
};

use super::responses::BadBody;
use super::{Failure, JsonBody, source_of};
use crate::supervisor::Supervisor;

/// How long the approve button must be held.
const HOLD_MS: u32 = 1000;

/// The link's request if the link is good and the request still waits for a decision.
fn pending(
    supervisor: &Supervisor,
    token: &str,
    method: &str,
) -> Result<(Link, Approval), ApiError> {
    let services = &supervisor.services;
    let link = services.notify.open_link(token).map_err(|e| {
        if e != LinkError::Expired {
            services
                .audit
                .record_auth_failure(method, "/d/…", &e.to_string());
        }
        match e {
            LinkError::Malformed => ApiError::new(ErrorCode::NotFound, e.to_string()),
            LinkError::Forged => ApiError::new(ErrorCode::Forbidden, e.to_string()),
            LinkError::Expired => ApiError::new(
                ErrorCode::Gone,
                "this decision link has expired, and so has its request",
            ),
        }
    })?;
    let approval = services.approvals.get(&link.approval_id)?;
    if approval.status != ApprovalStatus::Pending {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "this link was already used or the request was decided elsewhere: {}",
                approval.outcome()
            ),
        ));
    }
    Ok((link, approval))
}

/// Decides the link's request: `{"verdict": "approve" | "deny"}`.
#[utoipa::path(
    post,
    path = "/d/{token}",
    operation_id = "decide_by_link",
    tag = "approvals",
    security(()),
    params(("token" = String, Path, description = "The signed decision link token")),
    request_body = LinkDecision,
    responses((status = 200, body = Approval), BadBody, (status = 403, description = "`forbidden`: a forged link", body = ApiError), (status = 404, description = "`not_found`: a malformed link or an unknown request", body = ApiError), (status = 409, description = "`conflict`: the request was already decided", body = ApiError), (status = 410, description = "`gone`: the link has expired, and so has its request", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn decide(
    State(supervisor): State<Arc<Supervisor>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    JsonBody(decision): JsonBody<LinkDecision>,
) -> Result<Json<Approval>, Failure> {
    let (link, approval) = pending(&supervisor, &token, "POST")?;
    let status = match decision.verdict {
        Verdict::Approve => ApprovalStatus::Approved,
        Verdict::Deny => ApprovalStatus::Denied,
    };
    let via = match source_of(&headers).as_str() {
        "api" => "link".to_owned(),
        source => source.to_owned(),
    };
    // A decision link lets its holder decide this one request: an approver's power, no more.
    let actor = crate::actor::Actor::credential(
        format!("link:{}", link.via),
        celistra_proto::Role::Approver,
    );
    let decided = supervisor.approvals.decide(
        &approval.id,
        crate::approvals::Verdict {
            status,
            actor,
            via: &via,
            reason: None,
        },
    )?;
    supervisor.sync().await?;
    Ok(Json(decided))
}

/// The page a notification opens.
#[utoipa::path(
    get,
    path = "/d/{token}",
    operation_id = "get_decision_page",
    tag = "approvals",
    security(()),
    params(("token" = String, Path, description = "The signed decision link token")),
    responses((status = 200, description = "The press-and-hold decision page", content_type = "text/html", body = String), (status = 403, description = "A forged link: a page saying so", content_type = "text/html", body = String), (status = 404, description = "A malformed link or an unknown request: a page saying so", content_type = "text/html", body = String), (status = 409, description = "The request was already decided: a page saying by whom", content_type = "text/html", body = String), (status = 410, description = "The link has expired: a page saying so", content_type = "text/html", body = String))
)]
pub(crate) async fn page(
    State(supervisor): State<Arc<Supervisor>>,
    Path(token): Path<String>,
) -> Response {
    let nonce = crate::home::random_hex(16).unwrap_or_default();
    let (status, body) = match pending(&supervisor, &token, "GET") {
        Ok((_, approval)) => (StatusCode::OK, decision_page(&approval, &nonce)),
        Err(error) => (
            StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::NOT_FOUND),
            message_page(&error.message, &nonce),
        ),
    };
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
:root{color-scheme:light dark;font-family:system-ui,sans-serif}
body{margin:0;padding:1.25rem;max-width:36rem;margin-inline:auto;line-height:1.4}
h1{font-size:1.25rem;margin:0 0 .75rem}
.prompt{font-size:1.15rem;font-weight:600;word-break:break-word}
pre{white-space:pre-wrap;word-break:break-word;background:rgba(127,127,127,.15);padding:.75rem;border-radius:.5rem;max-height:40vh;overflow:auto}
button{display:block;width:100%;font-size:1.1rem;padding:1rem;margin:.75rem 0;border-radius:.75rem;border:2px solid currentColor;background:none;color:inherit;
  user-select:none;-webkit-user-select:none;-webkit-touch-callout:none;touch-action:none;position:relative;overflow:hidden}
button:focus-visible{outline:3px solid #2a7de1;outline-offset:2px}
#approve{color:#1a7f37;font-weight:700}
#approve .fill{position:absolute;inset:0;width:0;background:rgba(26,127,55,.25);pointer-events:none}
#deny{color:#cf222e}
button:disabled{opacity:.4}
.note{opacity:.75;font-size:.9rem}
";

fn decision_page(approval: &Approval, nonce: &str) -> String {
    let detail = approval
        .detail
        .as_deref()
        .map(|d| format!("<pre>{}</pre>", escape(d)))
        .unwrap_or_default();
    let timeout = match approval.on_timeout {
        TimeoutDefault::Deny => "denied",
        TimeoutDefault::Approve => "approved",
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer">
<title>Approve? — {agent}</title><style nonce="{nonce}">{STYLE}</style></head><body><main>
<h1>{agent} asks for approval</h1>
<p class="prompt">{prompt}</p>{detail}
<p class="note" id="status" role="status" aria-live="polite" data-expires="{expires}">If nobody decides, it is {timeout} <span id="left"></span>.</p>
<button id="approve" type="button" aria-describedby="hint"><span class="fill" id="fill"></span>Hold to approve</button>
<p class="note" id="hint">Press and hold for one second (or hold Space) to approve.</p>
<button id="deny" type="button">Deny</button>
</main><script nonce="{nonce}">{SCRIPT}</script></body></html>"#,
        agent = escape(&approval.agent_name),
        prompt = escape(&approval.prompt),
        expires = approval.expires_at_ms,
        SCRIPT = script(),
    )
}

fn script() -> String {
    format!(
        r#"
const HOLD = {HOLD_MS};
const approve = document.getElementById('approve'), deny = document.getElementById('deny');
const fill = document.getElementById('fill'), status = document.getElementById('status');
const left = document.getElementById('left'), expires = Number(status.dataset.expires);
let timer = null, finished = false;
function finish(text) {{
  finished = true; approve.disabled = true; deny.disabled = true;
  clearInterval(clock); status.textContent = text;
}}
async function send(verdict) {{
  if (finished) return;
  finished = true;
  try {{
    const r = await fetch(location.href, {{method: 'POST',
      headers: {{'Content-Type': 'application/json', 'X-Celistra-Source': 'decision-page'}},
      body: JSON.stringify({{verdict}})}});
    const body = await r.json().catch(() => ({{}}));
    finish(r.ok ? (verdict === 'approve' ? 'Approved.' : 'Denied.') : (body.message || ('Error ' + r.status)));
  }} catch (e) {{ finished = false; status.textContent = 'Cannot reach the daemon: ' + e.message; }}
}}
function press(e) {{
  if (finished || timer) return;
  if (e.type === 'keydown' && e.key !== ' ' && e.key !== 'Enter') return;
  e.preventDefault();
  fill.style.transition = 'width ' + HOLD + 'ms linear'; fill.style.width = '100%';
  timer = setTimeout(() => {{ timer = null; if (navigator.vibrate) navigator.vibrate(60); send('approve'); }}, HOLD);
}}
function release() {{
  if (!timer) return;
  clearTimeout(timer); timer = null;
  fill.style.transition = 'none'; fill.style.width = '0';
}}
approve.addEventListener('pointerdown', press);
approve.addEventListener('keydown', press);
for (const type of ['pointerup', 'pointerleave', 'pointercancel', 'keyup', 'blur']) approve.addEventListener(type, release);
approve.addEventListener('contextmenu', e => e.preventDefault());
deny.addEventListener('click', () => send('deny'));
function tick() {{
  const s = Math.max(0, Math.round((expires - Date.now()) / 1000));
  left.textContent = 'in ' + (s >= 60 ? Math.floor(s / 60) + ' min ' : '') + (s % 60) + ' s';
  if (s === 0) finish('This request has expired.');
}}
const clock = setInterval(tick, 1000); tick();
"#
    )
}

fn message_page(message: &str, nonce: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer">
<title>celistra</title><style nonce="{nonce}">{STYLE}</style></head><body><main>
<h1>Nothing to decide here</h1><p class="prompt" role="alert">{}</p></main></body></html>"#,
        escape(message)
    )
}
