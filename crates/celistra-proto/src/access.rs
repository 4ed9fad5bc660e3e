//! Who may do what: the roles a credential has, what each route requires, and the API tokens that
//! carry a role (`/v1/tokens`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The role of a credential. The machine secret is an owner credential; tokens and dashboard
/// sessions have the role they were made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Owner,
    /// Runs agents (spawn, stop, start, restart, kill, set, rename, rm, apply, write to terminals)
    /// and reads what that needs; not tokens, secrets, environment values, the sandbox switch or
    /// notification channels.
    Operator,
    /// Reads: lists, status, logs, history, events, audit, read-only terminals.
    Viewer,
    /// Sees and decides approval requests, with what a request says about the asking agent.
    Approver,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Operator, Role::Viewer, Role::Approver];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Approver => "approver",
        }
    }

    /// Whether a credential with this role may call a route that requires `required`. An owner
    /// may do everything, an operator what viewers and approvers may too; viewers and approvers
    /// only their own.
    pub fn satisfies(self, required: Role) -> bool {
        match self {
            Role::Owner => true,
            Role::Operator => required != Role::Owner,
            Role::Viewer | Role::Approver => self == required,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                format!("unknown role `{text}`; use owner, operator, viewer or approver")
            })
    }
}

/// What a route requires of its caller; in the OpenAPI document as each operation's
/// `x-celistra-role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// No credential: the route checks something else (a ticket, a one-time code, a signed link)
    /// or serves nothing secret.
    Public,
    /// Any valid credential, whatever its role (the caller's own session, health, the document).
    Any,
    /// A credential whose role satisfies this one (see [`Role::satisfies`]).
    Role(Role),
}

impl Access {
    /// The value of `x-celistra-role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Any => "any",
            Access::Role(role) => role.as_str(),
        }
    }

    /// Whether a caller with `role` (`None`: no credential) may call the route.
    pub fn allows(self, role: Option<Role>) -> bool {
        match (self, role) {
            (Access::Public, _) => true,
            (Access::Any, role) => role.is_some(),
            (Access::Role(required), Some(role)) => role.satisfies(required),
            (Access::Role(_), None) => false,
        }
    }
}

impl FromStr for Access {
    type Err = String;

    fn from_str(text: &str) -> Result<Access, String> {
        match text {
            "public" => Ok(Access::Public),
            "any" => Ok(Access::Any),
            role => role.parse().map(Access::Role),
        }
    }
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// 1 to 64 of `a-z`, `0-9`, `-`, `_`, `.`; unique among live tokens.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9][a-z0-9._-]*$")]
    pub name: String,
    pub role: Role,
    /// Seconds until the token stops working; none: it works until revoked.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub expires_in_secs: Option<u64>,
}

/// A token as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    /// The actor its requests are recorded as: `token:<name>`.
    pub actor: String,
    pub created_at_ms: u64,
    /// The credential that created it.
    pub created_by: String,
    pub expires_at_ms: Option<u64>,
    /// When it last authenticated a request (to the minute), if ever.
    pub last_used_ms: Option<u64>,
}

/// Answer of `POST /v1/tokens`: the token's value, shown this once and never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// `cel_` and 64 hex digits (256 random bits). Send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub info: TokenInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_satisfy_exactly_the_documented_requirements() {
        use Role::*;
        let allowed: Vec<(Role, Role)> = Role::ALL
            .into_iter()
            .flat_map(|have| Role::ALL.into_iter().map(move |need| (have, need)))
            .filter(|(have, need)| have.satisfies(*need))
            .collect();
        assert_eq!(
            allowed,
            [
                (Owner, Owner),
                (Owner, Operator),
                (Owner, Viewer),
                (Owner, Approver),
                (Operator, Operator),
                (Operator, Viewer),
                (Operator, Approver),
                (Viewer, Viewer),
                (Approver, Approver),
            ]
        );
    }

    #[test]
    fn access_names_round_trip() {
        for access in [Access::Public, Access::Any]
            .into_iter()
            .chain(Role::ALL.map(Access::Role))
        {
            assert_eq!(access.as_str().parse::<Access>(), Ok(access));
        }
        assert!("root".parse::<Access>().is_err());
        assert!(!Access::Any.allows(None));
        assert!(Access::Public.allows(None));
        assert!(!Access::Role(Role::Viewer).allows(Some(Role::Approver)));
    }
}
