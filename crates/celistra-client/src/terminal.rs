//! Shared terminals (docs/terminal-protocol.md): getting a ticket, opening the WebSocket over the
//! daemon's Unix socket, TCP or TLS (`wss`), and reading and writing its frames.

use bytes::Bytes;
use celistra_proto::{
    ApiError, TERMINAL_PROTOCOL, TerminalClientMessage, TerminalRole, TerminalServerMessage,
    TicketRequest,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::{Client, ClientError, Endpoint, Io};

type Socket = WebSocketStream<Box<dyn Io>>;

/// What arrives from the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum TerminalEvent {
    /// Terminal bytes: the agent's output or a replay of it.
    Output(Bytes),
    Control(TerminalServerMessage),
    /// The connection ended: the close code (1006 when it broke without one) and its reason.
    Closed {
        code: u16,
        reason: String,
    },
}

/// An open terminal WebSocket.
pub struct Terminal {
    socket: Socket,
}

/// The receiving half of a split [`Terminal`].
pub struct TerminalOutput {
    stream: SplitStream<Socket>,
}

/// The sending half of a split [`Terminal`].
pub struct TerminalInput {
    sink: SplitSink<Socket, Message>,
}

impl Client {
    /// Gets a ticket and opens the terminal of `agent`.
    pub async fn attach(&self, agent: &str, role: TerminalRole) -> Result<Terminal, ClientError> {
        let ticket = self
            .issue_terminal_ticket(agent, &TicketRequest { role })
            .await?;
        self.open_terminal(&ticket.path, None).await
    }

    /// Opens a terminal WebSocket at `path` (a ticket's), sending `origin` as a browser would.
    pub async fn open_terminal(
        &self,
        path: &str,
        origin: Option<&str>,
    ) -> Result<Terminal, ClientError> {
        let scheme = match &self.endpoint {
            Endpoint::Net(net) if net.tls.is_some() => "wss",
            _ => "ws",
        };
        // A ticket's path is the node's own: through a hub it is the machine's, like any route.
        let path = self.request_path(path);
        let mut request = format!("{scheme}://{}{path}", self.host_header())
            .into_client_request()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let headers = request.headers_mut();
        headers.insert(
            "sec-websocket-protocol",
            TERMINAL_PROTOCOL.parse().expect("a valid header value"),
        );
        if let Some(origin) = origin {
            headers.insert(
                "origin",
                origin
                    .parse()
                    .map_err(|_| ClientError::Transport(format!("bad origin {origin:?}")))?,
            );
        }
        let stream = self.connect().await?;
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(Terminal { socket }),
            Err(WsError::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                Err(match serde_json::from_slice::<ApiError>(&body) {
                    Ok(error) => ClientError::Api(error),
                    Err(_) => ClientError::Transport(format!(
                        "terminal refused with status {}",
                        response.status()
                    )),
                })
            }
            Err(e) => Err(ClientError::Transport(format!(
                "cannot open the terminal: {e}"
            ))),
        }
    }
}

impl Terminal {
    /// The next event; ping and pong frames are handled underneath.
    pub async fn next(&mut self) -> TerminalEvent {
        next_event(&mut self.socket).await
    }

    pub async fn send_input(&mut self, bytes: impl Into<Bytes>) -> Result<(), ClientError> {
        send(&mut self.socket, Message::Binary(bytes.into())).await
    }

    pub async fn send_control(
        &mut self,
        message: &TerminalClientMessage,
    ) -> Result<(), ClientError> {
        send(&mut self.socket, control(message)).await
    }

    /// Sends a raw text frame (to test how the daemon takes bad messages).
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        send(&mut self.socket, Message::Text(text.into())).await
    }

    /// Closes the connection normally (1000).
    pub async fn close(mut self) -> Result<(), ClientError> {
        close(&mut self.socket).await
    }

    /// Splits into halves that can be used from two tasks.
    pub fn split(self) -> (TerminalInput, TerminalOutput) {
        let (sink, stream) = self.socket.split();
        (TerminalInput { sink }, TerminalOutput { stream })
    }
}

impl TerminalOutput {
    pub async fn next(&mut self) -> TerminalEvent {
        next_event(&mut self.stream).await
    }
}

impl TerminalInput {
    pub async fn send_input(&mut self, bytes: impl Into<Bytes>) -> Result<(), ClientError> {
        send(&mut self.sink, Message::Binary(bytes.into())).await
    }

    pub async fn send_control(
        &mut self,
        message: &TerminalClientMessage,
    ) -> Result<(), ClientError> {
        send(&mut self.sink, control(message)).await
    }

    /// Closes the connection normally (1000).
    pub async fn close(mut self) -> Result<(), ClientError> {
        close(&mut self.sink).await
    }
}

fn control(message: &TerminalClientMessage) -> Message {
    Message::Text(
        serde_json::to_string(message)
            .expect("control messages serialise")
            .into(),
    )
}

async fn next_event<S>(stream: &mut S) -> TerminalEvent
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        let message = match stream.next().await {
            None => return broken("the connection ended without a close frame"),
            Some(Err(e)) => return broken(&e.to_string()),
            Some(Ok(message)) => message,
        };
        match message {
            Message::Binary(bytes) => return TerminalEvent::Output(bytes),
            Message::Text(text) => {
                return match serde_json::from_str(&text) {
                    Ok(control) => TerminalEvent::Control(control),
                    // A newer daemon's message this client does not know: an error to show.
                    Err(e) => TerminalEvent::Control(TerminalServerMessage::Error {
                        code: "unknown_message".into(),
                        message: format!("unknown control message ({e}): {text}"),
                    }),
                };
            }
            Message::Close(frame) => {
                return match frame {
                    Some(frame) => TerminalEvent::Closed {
                        code: frame.code.into(),
                        reason: frame.reason.to_string(),
                    },
                    None => TerminalEvent::Closed {
                        code: CloseCode::Status.into(),
                        reason: String::new(),
                    },
                };
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

fn broken(reason: &str) -> TerminalEvent {
    TerminalEvent::Closed {
        code: CloseCode::Abnormal.into(),
        reason: reason.to_owned(),
    }
}

async fn send<S>(sink: &mut S, message: Message) -> Result<(), ClientError>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    sink.send(message)
        .await
        .map_err(|e| ClientError::Transport(format!("terminal connection: {e}")))
}

async fn close<S>(sink: &mut S) -> Result<(), ClientError>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "detached".into(),
    };
    send(sink, Message::Close(Some(frame))).await
}
