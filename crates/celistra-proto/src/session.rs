//! Dashboard sessions: one-time login codes, the sessions they open, and what a session's page
//! learns about itself. A session is a browser's credential (an HttpOnly cookie); the machine
//! secret never reaches a browser.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "celistra_session";

/// Header a cookie-authenticated request that changes state must carry, with the session's
/// `csrf_token`.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Answer of `POST /v1/sessions/login-codes`: a single-use code and the link that uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoginLink {
    /// 64 hex digits; good for one login, until `expires_at_ms`.
    pub code: String,
    /// `http://<daemon>/login#<code>`: the fragment never reaches a server or a log.
    pub url: String,
    pub expires_at_ms: u64,
}

/// Query of `POST /v1/sessions/login-codes`.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams,
)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LoginCodeQuery {
    /// The role of the session the link opens (default owner).
    #[serde(default)]
    pub role: Option<crate::Role>,
}

/// Body of `POST /v1/sessions/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub code: String,
}

/// A session, as `ctl sessions` and `GET /v1/sessions` show it. Its token is never shown, only
/// this id (derived from the token's hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// `se-` and 12 hex digits.
    pub id: String,
    /// The actor its requests are recorded as: `session:<id>`.
    pub actor: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub last_seen_ms: u64,
    /// The browser's `User-Agent` at login (at most 200 characters).
    pub user_agent: String,
    /// Who made the login code: the credential that asked for it.
    pub created_by: String,
    /// What the session may do: the role its login link was made with.
    pub role: crate::Role,
    /// Whether this is the session making the request.
    #[serde(default)]
    pub current: bool,
}

/// Answer of `POST /v1/sessions/login` and `GET /v1/session`: the session and the token its
/// state-changing requests must send in `X-CSRF-Token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionState {
    pub session: SessionInfo,
    pub csrf_token: String,
}
