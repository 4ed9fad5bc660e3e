//! The shared-terminal protocol (docs/terminal-protocol.md): tickets that open a terminal
//! WebSocket, and the JSON control messages that travel next to the binary input and output frames.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{AgentState, IoMode};

/// WebSocket subprotocol of this version; a client offers it in `Sec-WebSocket-Protocol`.
pub const TERMINAL_PROTOCOL: &str = "celistra.terminal.v1";
/// Version number inside `hello`.
pub const TERMINAL_PROTOCOL_VERSION: u32 = 1;

/// How a client takes part in a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TerminalRole {
    /// Sees output, types input, and its resizes set the terminal's size.
    #[default]
    Writer,
    /// Sees output only; its input is refused with an `error` message.
    Viewer,
}

impl TerminalRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalRole::Writer => "writer",
            TerminalRole::Viewer => "viewer",
        }
    }
}

/// Body of `POST /v1/agents/{agent}/terminal/tickets`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    #[serde(default)]
    pub role: TerminalRole,
}

/// A single-use ticket that opens one terminal WebSocket within a few seconds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TerminalTicket {
    pub ticket: String,
    pub agent_id: String,
    pub role: TerminalRole,
    pub expires_at_ms: u64,
    /// Path and query to open with a WebSocket upgrade (ticket included).
    pub path: String,
}

/// Query of the terminal WebSocket, `GET /v1/agents/{agent}/terminal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TerminalQuery {
    /// From `POST /v1/agents/{agent}/terminal/tickets`; single use.
    #[serde(default)]
    pub ticket: String,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

/// A control message from the daemon (a WebSocket text frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalServerMessage {
    /// First message: who the client is attached to and how. The replay follows.
    Hello {
        protocol: u32,
        agent_id: String,
        name: String,
        role: TerminalRole,
        mode: IoMode,
        state: AgentState,
        run: u64,
        size: TermSize,
        title: Option<String>,
    },
    /// The replay of the scrollback (binary frames since `hello` or `resync`) is complete; what
    /// follows is live output, with no gap and no duplicate.
    Replayed { bytes: u64 },
    /// The terminal's size changed (or, to a viewer that asked to resize, what it is).
    Size { cols: u16, rows: u16 },
    /// The program set the window title.
    Title { title: String },
    /// The agent's run ended. The client stays attached: a restart may follow.
    Exit {
        run: u64,
        exit_code: Option<i32>,
        exit_signal: Option<String>,
    },
    /// A new run started; its output follows.
    Restarted { run: u64, pid: u32, mode: IoMode },
    /// The client fell too far behind and `skipped_bytes` of output were not sent to it: it
    /// should reset its terminal; a replay of the scrollback and `replayed` follow.
    Resync { skipped_bytes: u64 },
    /// Something the client sent was refused; the connection stays open.
    Error { code: String, message: String },
}

/// A control message from a client (a WebSocket text frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TerminalClientMessage {
    /// The client's terminal size. A writer's resize sets the terminal's size.
    Resize { cols: u16, rows: u16 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_their_documented_shape() {
        let resize: TerminalClientMessage =
            serde_json::from_str(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap();
        assert_eq!(
            resize,
            TerminalClientMessage::Resize {
                cols: 120,
                rows: 40
            }
        );
        assert!(serde_json::from_str::<TerminalClientMessage>(r#"{"type":"paste"}"#).is_err());
        let exit = TerminalServerMessage::Exit {
            run: 2,
            exit_code: Some(1),
            exit_signal: None,
        };
        assert_eq!(
            serde_json::to_string(&exit).unwrap(),
            r#"{"type":"exit","run":2,"exit_code":1,"exit_signal":null}"#
        );
        let request: TicketRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(request.role, TerminalRole::Writer);
    }
}
