//! Secrets as the API shows them: names and times in lists, a value only in the body that sets it.
//! No answer of the API ever carries a secret's value.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A secret as listed by `GET /v1/secrets`: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    /// Like an environment variable: `[A-Z_][A-Z0-9_]*`, at most 64 bytes.
    pub name: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// Body of `PUT /v1/secrets/{name}`: the value to keep, encrypted, for agents that refer to it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    /// 4 bytes to 64 KiB, no NUL byte (shorter values are too short to mask in output).
    #[schema(min_length = 4, max_length = 65536)]
    pub value: String,
}

/// Never shows the value, so that a request logged by mistake does not leak it.
impl fmt::Debug for SecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRequest")
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_secret_request_never_shows_its_value_when_debugged() {
        let request = super::SecretRequest {
            value: "hunter2-value".into(),
        };
        let shown = format!("{request:?} {request:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("13 bytes"), "{shown}");
    }
}
