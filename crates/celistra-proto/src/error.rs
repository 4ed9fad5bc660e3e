//! The JSON error body and its stable machine-readable codes.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable machine-readable error code. New codes may be added; existing ones never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing or wrong bearer secret.
    Unauthorized,
    /// No such route or no such agent.
    NotFound,
    /// The method is not allowed on this route.
    MethodNotAllowed,
    /// The body is not valid JSON or does not match the expected shape.
    InvalidJson,
    /// The body is larger than the server accepts.
    PayloadTooLarge,
    /// A field has a value that is not allowed (bad name, bad env key, …).
    InvalidRequest,
    /// Another agent already has that name.
    NameTaken,
    /// The workspace does not exist or is not a directory.
    WorkspaceInvalid,
    /// The signal is not one of HUP, INT, TERM, QUIT, KILL.
    InvalidSignal,
    /// The request conflicts with the agent's current state.
    Conflict,
    /// The daemon's `config.json` is malformed.
    ConfigInvalid,
    /// The process could not be spawned.
    SpawnFailed,
    /// The daemon is shutting down.
    ShuttingDown,
    /// A bug or an I/O failure inside the daemon.
    Internal,
    /// A browser's `Origin` is not the daemon's own.
    OriginNotAllowed,
    /// The agent has as many terminal clients as it accepts.
    TooManyClients,
    /// A credential that was not issued by this daemon (a forged decision link).
    Forbidden,
    /// Something that was valid once and no longer is (an expired decision link).
    Gone,
    /// A dashboard session's state-changing request without its CSRF token (`X-CSRF-Token`).
    CsrfFailed,
    /// The credential is valid but its role may not do this; `required_role` says which may.
    RoleRequired,
    /// A request body that is not sent as `Content-Type: application/json`.
    UnsupportedMediaType,
    /// A request that is not valid HTTP/1.1 (a malformed request line or header field).
    MalformedRequest,
    /// A request URI longer than the daemon accepts.
    UriTooLong,
    /// Request header fields larger, or more, than the daemon accepts.
    HeadersTooLarge,
    /// A fleet machine that is known but whose link to the hub is down, or did not answer.
    MachineOffline,
    /// Too many failed attempts (pairing codes); the message says when to try again.
    TooManyAttempts,
    /// A pairing code that is wrong, used or expired; the message says which.
    PairingRefused,
}

impl ErrorCode {
    /// The HTTP status this code is sent with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::NameTaken | ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::WorkspaceInvalid
            | ErrorCode::InvalidSignal
            | ErrorCode::MalformedRequest => 400,
            ErrorCode::UriTooLong => 414,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::ConfigInvalid | ErrorCode::SpawnFailed | ErrorCode::Internal => 500,
            ErrorCode::ShuttingDown | ErrorCode::MachineOffline => 503,
            ErrorCode::OriginNotAllowed
            | ErrorCode::Forbidden
            | ErrorCode::CsrfFailed
            | ErrorCode::RoleRequired
            | ErrorCode::PairingRefused => 403,
            ErrorCode::Gone => 410,
            ErrorCode::TooManyClients | ErrorCode::TooManyAttempts => 429,
        }
    }
}

/// Every error response has this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub code: ErrorCode,
    /// What was wrong and what to do about it, for a person.
    pub message: String,
    /// With `role_required`: the least role that may do what was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_role: Option<crate::Role>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            required_role: None,
        }
    }

    /// A refusal of a credential whose role may not do what it asked.
    pub fn role_required(required: crate::Role, have: crate::Role, what: &str) -> Self {
        ApiError {
            code: ErrorCode::RoleRequired,
            message: format!(
                "{what} needs the {required} role (or one above it); this credential is a {have}; ask an owner for a token with that role (`celistrad ctl token create --role {required}`)"
            ),
            required_role: Some(required),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}
