//! Terminals through the fleet hub: the hub opens a node's terminal as a WebSocket over HTTP/2
//! extended CONNECT (RFC 8441) on the connection the node dialed, answers the browser's HTTP/1.1
//! WebSocket handshake itself, and splices the two byte streams, frames untouched.
//!
//! Splicing bytes is valid because both legs frame alike: a client's frames are masked and a
//! server's are not on either leg, and no extension is in force on either. The hub offers the node
//! no `Sec-WebSocket-Extensions`, refuses an answer that names one, and answers the browser with
//! none, so a browser's permessage-deflate offer is declined on both legs.

use std::error::Error as StdError;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use axum::response::IntoResponse;
use bytes::Bytes;
use celistra_proto::{ApiError, ErrorCode};
use hyper::client::conn::http2::SendRequest;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;

use crate::wire::{Failure, failure};

/// The hub's receive window per stream: what a node may send ahead on one terminal the hub has not
/// passed on yet (a stalled browser holds at most this much).
pub(crate) const STREAM_WINDOW: u32 = 256 * 1024;
/// The hub's receive window for a node's whole connection: room for 64 stalled terminals before
/// the node's other streams (API answers, other terminals) wait.
pub(crate) const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest refusal body passed on from a node (its JSON errors are a few hundred bytes).
const MAX_REFUSAL: usize = 64 * 1024;
/// How long a node may take to send the body of its refusal after its head.
const REFUSAL_LIMIT: Duration = Duration::from_secs(10);

/// Why a terminal could not be spliced; as a response, what the browser gets instead of a 101.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpliceError {
    /// The browser's request is not an HTTP/1.1 WebSocket handshake.
    #[error("not a WebSocket upgrade: {0}")]
    NotWebSocket(&'static str),
    /// A browser page of another origin than the hub's (the rule a daemon applies to its own).
    #[error("{}", .0.message)]
    Origin(ApiError),
    /// The node answered the CONNECT with an error: its status, its error's message, and its body
    /// as it sent it, for the browser.
    #[error("the node refused the terminal ({status}): {message}")]
    Refused {
        status: StatusCode,
        message: String,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    /// The terminal's path is not a valid request target.
    #[error("bad terminal path: {0}")]
    BadPath(#[from] axum::http::Error),
    /// The node accepted with an answer the hub cannot splice.
    #[error("the node's answer cannot be spliced: {0}")]
    BadAnswer(String),
    /// The node's connection failed, or the stream was reset.
    #[error("the node's connection failed: {0}")]
    Connection(#[from] hyper::Error),
}

impl IntoResponse for SpliceError {
    fn into_response(self) -> axum::response::Response {
        match self {
            SpliceError::NotWebSocket(_) => {
                failure(ErrorCode::InvalidRequest, self.to_string()).into_response()
            }
            SpliceError::Origin(error) => Failure(error).into_response(),
            SpliceError::Refused {
                status,
                content_type,
                body,
                ..
            } => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = status;
                if let Some(content_type) = content_type {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, content_type);
                }
                response
            }
            // The API has no code for a failed upstream yet; the message says which it was.
            SpliceError::BadPath(_) | SpliceError::BadAnswer(_) | SpliceError::Connection(_) => {
                failure(ErrorCode::Internal, self.to_string()).into_response()
            }
        }
    }
}

/// A node's terminal, opened: the WebSocket's byte stream and the subprotocol the node chose.
pub(crate) struct NodeTerminal {
    pub io: Upgraded,
    pub protocol: Option<HeaderValue>,
}

/// The HTTP/2 server a node runs on the connection it dialed: extended CONNECT on, so that its
/// terminal route accepts WebSockets over HTTP/2.
pub(crate) fn node_server() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.enable_connect_protocol();
    builder
}

/// The HTTP/2 client the hub runs on a node's connection, with the receive windows that keep one
/// stalled terminal from holding up the others.
pub(crate) fn hub_client() -> hyper::client::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    builder
}

/// Opens the terminal at `path_and_query` (`/v1/agents/{agent}/terminal?ticket=…`) on a node: an
/// extended CONNECT offering `protocols` (the browser's `Sec-WebSocket-Protocol` values). A
/// refusal comes back as [`SpliceError::Refused`] with the node's status and body.
pub(crate) async fn open_terminal<'a, B>(
    node: &mut SendRequest<B>,
    path_and_query: &str,
    protocols: impl IntoIterator<Item = &'a HeaderValue>,
) -> Result<NodeTerminal, SpliceError>
where
    B: hyper::body::Body + Default + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    // A path alone, and the builder's default version: h2 then sends `:scheme http` and no
    // `:authority` (marking the request HTTP/2 would make it refuse a URI without them).
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(path_and_query)
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .body(B::default())?;
    for protocol in protocols {
        request
            .headers_mut()
            .append(header::SEC_WEBSOCKET_PROTOCOL, protocol.clone());
    }
    node.ready().await?;
    let mut response = node.send_request(request).await?;
    let status = response.status();
    // hyper makes a CONNECT's stream upgradable only on a 200 (RFC 9113 allows any 2xx; axum
    // answers 200).
    if status != StatusCode::OK {
        return Err(refusal(response).await);
    }
    if let Some(extensions) = response.headers().get(header::SEC_WEBSOCKET_EXTENSIONS) {
        return Err(SpliceError::BadAnswer(format!(
            "the node named extensions {extensions:?} the hub did not offer"
        )));
    }
    let protocol = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .cloned();
    let io = hyper::upgrade::on(&mut response).await?;
    Ok(NodeTerminal { io, protocol })
}

/// The node's refusal, with its body (a JSON [`ApiError`] from a node).
async fn refusal(response: Response<hyper::body::Incoming>) -> SpliceError {
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let read = axum::body::to_bytes(Body::new(response.into_body()), MAX_REFUSAL);
    let body = match tokio::time::timeout(REFUSAL_LIMIT, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return SpliceError::BadAnswer(format!(
                "the node's {status} answer is unreadable: {e}"
            ));
        }
        Err(_) => {
            return SpliceError::BadAnswer(format!("the node's {status} answer did not finish"));
        }
    };
    let message = serde_json::from_slice::<ApiError>(&body).map_or_else(
        |_| String::from_utf8_lossy(&body).into_owned(),
        |error| error.message,
    );
    SpliceError::Refused {
        status,
        message,
        content_type,
        body,
    }
}

/// Answers a browser's WebSocket handshake for a node's terminal: checks it and its origin, opens
/// the terminal on the node (`path_and_query`, whose ticket the node checks), then answers 101 and
/// splices the browser and the node until both have closed or `cut` fires. A refusal is the
/// browser's answer instead of the 101.
pub(crate) async fn splice_terminal<R, B>(
    mut request: Request<R>,
    node: &mut SendRequest<B>,
    path_and_query: &str,
    cut: CancellationToken,
) -> axum::response::Response
where
    B: hyper::body::Body + Default + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let accept = match browser_handshake(&request) {
        Ok(accept) => accept,
        Err(refused) => return refused.into_response(),
    };
    // A browser's Origin is checked here, against the hub's own host: the hub forwards none, so
    // the node's check (which needs the Host its browser saw) passes for the hub.
    if let Err(Failure(error)) = crate::wire::check_origin(request.headers()) {
        return SpliceError::Origin(error).into_response();
    }
    let protocols: Vec<HeaderValue> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .cloned()
        .collect();
    let terminal = match open_terminal(node, path_and_query, &protocols).await {
        Ok(terminal) => terminal,
        Err(refused) => {
            tracing::debug!(path_and_query, "terminal not spliced: {refused}");
            return refused.into_response();
        }
    };
    let browser = hyper::upgrade::on(&mut request);
    let node_io = terminal.io;
    tokio::spawn(async move {
        match browser.await {
            Ok(browser) => splice(browser, node_io, cut).await,
            // Dropping the node's stream resets it, which ends the node's session.
            Err(e) => tracing::debug!("the browser's upgrade failed: {e}"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(protocol) = terminal.protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// Checks a browser's HTTP/1.1 WebSocket handshake (RFC 6455 section 4.2.1); its
/// `Sec-WebSocket-Accept`.
fn browser_handshake<R>(request: &Request<R>) -> Result<HeaderValue, SpliceError> {
    let headers = request.headers();
    if request.version() != Version::HTTP_11 {
        return Err(SpliceError::NotWebSocket(
            "the hub takes terminals over HTTP/1.1",
        ));
    }
    if request.method() != Method::GET {
        return Err(SpliceError::NotWebSocket("the method is not GET"));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(SpliceError::NotWebSocket("no `Connection: upgrade`"));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(SpliceError::NotWebSocket("no `Upgrade: websocket`"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(SpliceError::NotWebSocket(
            "`Sec-WebSocket-Version` is not 13",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(SpliceError::NotWebSocket("no `Sec-WebSocket-Key`"))?;
    HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| SpliceError::NotWebSocket("a bad `Sec-WebSocket-Key`"))
}

/// Whether the comma-separated header `name` has `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Copies bytes both ways until both ends have closed (each end's close is passed on as a
/// shutdown of the other's writing half), or until `cut`, which drops both at once.
async fn splice(browser: Upgraded, node: Upgraded, cut: CancellationToken) {
    let mut browser = TokioIo::new(browser);
    let mut node = TokioIo::new(node);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut browser, &mut node) => match copied {
            Ok((up, down)) => tracing::debug!(up, down, "terminal splice ended"),
            Err(e) => tracing::debug!("terminal splice broke: {e}"),
        },
        () = cut.cancelled() => tracing::debug!("terminal splice cut"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
    use axum::extract::{Path, Query, State};
    use axum::routing::any;
    use celistra_proto::TERMINAL_PROTOCOL;
    use futures_util::{SinkExt, StreamExt};
    use hyper_util::service::TowerToHyperService;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::{self, Message};

    use super::*;

    /// What any step of a test may take; far above what it needs, so only a hang trips it.
    const LIMIT: Duration = Duration::from_secs(10);
    /// What the flooding terminal would send if nothing stopped it: more than every buffer on the
    /// way (TCP on loopback included) holds.
    const FLOOD: usize = 128 * 1024 * 1024;
    const FLOOD_FRAME: usize = 64 * 1024;

    /// The node's side, as the tests see it.
    #[derive(Clone)]
    struct Node {
        /// How each echo session ended: the close frame it received, if any.
        endings: mpsc::UnboundedSender<Option<(u16, String)>>,
        /// Bytes the flooding terminal has sent.
        flooded: Arc<AtomicUsize>,
    }

    /// A node's WebSocket route, like its terminal route: a ticket, then one of three sessions.
    async fn node_terminal(
        State(node): State<Node>,
        Path(kind): Path<String>,
        Query(query): Query<std::collections::HashMap<String, String>>,
        upgrade: WebSocketUpgrade,
    ) -> axum::response::Response {
        if query.get("ticket").map(String::as_str) != Some("good") {
            return failure(ErrorCode::Unauthorized, "unknown ticket").into_response();
        }
        upgrade
            .protocols([TERMINAL_PROTOCOL])
            .on_upgrade(move |socket| async move {
                match kind.as_str() {
                    "echo" => echo(socket, node.endings).await,
                    "greet" => greet(socket).await,
                    _ => flood(socket, node.flooded).await,
                }
            })
    }

    async fn echo(mut socket: WebSocket, endings: mpsc::UnboundedSender<Option<(u16, String)>>) {
        let mut ending = None;
        while let Some(Ok(message)) = socket.recv().await {
            match message {
                ws::Message::Close(frame) => {
                    ending = frame.map(|f| (f.code, f.reason.to_string()));
                }
                ws::Message::Text(_) | ws::Message::Binary(_) => {
                    if socket.send(message).await.is_err() {
                        break;
                    }
                }
                ws::Message::Ping(_) | ws::Message::Pong(_) => {}
            }
        }
        let _ = endings.send(ending);
    }

    /// Speaks first, echoes one message, then closes from the node's side.
    async fn greet(mut socket: WebSocket) {
        let _ = socket.send(ws::Message::text("hello")).await;
        if let Some(Ok(message)) = socket.recv().await {
            let _ = socket.send(message).await;
        }
        let close = ws::CloseFrame {
            code: 4008,
            reason: "done".into(),
        };
        let _ = socket.send(ws::Message::Close(Some(close))).await;
        while let Some(Ok(_)) = socket.recv().await {}
    }

    /// Sends frames of `FLOOD_FRAME` bytes, each filled with its index, counting what went out.
    async fn flood(mut socket: WebSocket, flooded: Arc<AtomicUsize>) {
        let mut index = 0u8;
        while flooded.load(Ordering::SeqCst) < FLOOD {
            let frame = Bytes::from(vec![index; FLOOD_FRAME]);
            if socket.send(ws::Message::Binary(frame)).await.is_err() {
                return;
            }
            flooded.fetch_add(FLOOD_FRAME, Ordering::SeqCst);
            index = index.wrapping_add(1);
        }
    }

    #[derive(Clone)]
    struct Hub {
        node: SendRequest<Body>,
        cut: CancellationToken,
    }

    /// The hub's handler: every path is a terminal of the one node, passed on as it is.
    async fn hub_terminal(
        State(hub): State<Hub>,
        request: axum::extract::Request,
    ) -> axum::response::Response {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut node = hub.node.clone();
        splice_terminal(request, &mut node, &path, hub.cut).await
    }

    struct Fleet {
        /// The hub's HTTP/1.1 address, where browsers connect.
        hub: SocketAddr,
        endings: mpsc::UnboundedReceiver<Option<(u16, String)>>,
        flooded: Arc<AtomicUsize>,
        cut: CancellationToken,
    }

    /// A node serving HTTP/2 on an in-memory connection to the hub (as on the connection it
    /// dials), and the hub serving browsers over HTTP/1.1 on a loopback port.
    async fn fleet() -> Fleet {
        let (hub_end, node_end) = tokio::io::duplex(64 * 1024);
        let (endings_tx, endings) = mpsc::unbounded_channel();
        let flooded = Arc::new(AtomicUsize::new(0));
        let node = Router::new()
            .route("/{kind}", any(node_terminal))
            .with_state(Node {
                endings: endings_tx,
                flooded: Arc::clone(&flooded),
            });
        tokio::spawn(async move {
            let served = node_server()
                .serve_connection(TokioIo::new(node_end), TowerToHyperService::new(node))
                .await;
            tracing::debug!(?served, "the node's connection ended");
        });
        let (send, connection) = hub_client()
            .handshake::<_, Body>(TokioIo::new(hub_end))
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(connection);
        let cut = CancellationToken::new();
        let hub = Router::new().fallback(hub_terminal).with_state(Hub {
            node: send,
            cut: cut.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, hub).await });
        Fleet {
            hub: addr,
            endings,
            flooded,
            cut,
        }
    }

    type Browser = WebSocketStream<TcpStream>;

    /// A browser's WebSocket to the hub, offering the terminal subprotocol.
    async fn browser(
        hub: SocketAddr,
        path: &str,
        origin: Option<&str>,
    ) -> Result<Browser, tungstenite::Error> {
        let mut request = format!("ws://{hub}{path}").into_client_request()?;
        let headers = request.headers_mut();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(TERMINAL_PROTOCOL),
        );
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        let stream = TcpStream::connect(hub).await?;
        let (socket, response) =
            tokio::time::timeout(LIMIT, tokio_tungstenite::client_async(request, stream))
                .await
                .expect("handshake in time")?;
        assert_eq!(
            response.headers().get(header::SEC_WEBSOCKET_PROTOCOL),
            Some(&HeaderValue::from_static(TERMINAL_PROTOCOL)),
            "the node's subprotocol reaches the browser"
        );
        Ok(socket)
    }

    async fn next(socket: &mut Browser) -> Option<Result<Message, tungstenite::Error>> {
        tokio::time::timeout(LIMIT, socket.next())
            .await
            .expect("a message or the end in time")
    }

    /// The end of a browser's stream: nothing more, or the end of a closed connection.
    async fn assert_ended(socket: &mut Browser) {
        match next(socket).await {
            None
            | Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) =>
                {}
            Some(Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ))) => {}
            other => panic!("expected the end, got {other:?}"),
        }
    }

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        let request = Request::builder()
            .uri("/t")
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            browser_handshake(&request).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let plain = Request::builder().uri("/t").body(()).unwrap();
        assert!(matches!(
            browser_handshake(&plain),
            Err(SpliceError::NotWebSocket(_))
        ));
    }

    #[tokio::test]
    async fn text_binary_and_a_browsers_close_pass_through_both_hops() {
        let mut fleet = fleet().await;
        let mut socket = browser(fleet.hub, "/echo?ticket=good", None)
            .await
            .expect("the terminal opens");
        socket.send(Message::text("ls -l\r")).await.unwrap();
        assert_eq!(
            next(&mut socket).await.unwrap().unwrap(),
            Message::text("ls -l\r")
        );
        // Larger than a frame buffer and every byte value, so that any re-framing would show.
        let binary: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        socket.send(Message::binary(binary.clone())).await.unwrap();
        assert_eq!(
            next(&mut socket).await.unwrap().unwrap(),
            Message::binary(binary)
        );
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        socket.send(Message::Close(Some(close))).await.unwrap();
        match next(&mut socket).await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected the node's close, got {other:?}"),
        }
        assert_ended(&mut socket).await;
        let ending = tokio::time::timeout(LIMIT, fleet.endings.recv()).await;
        assert_eq!(
            ending.expect("the node's session ends"),
            Some(Some((1000, "bye".to_owned())))
        );
    }

    #[tokio::test]
    async fn a_node_that_speaks_first_and_closes_reaches_the_browser() {
        let fleet = fleet().await;
        let mut socket = browser(fleet.hub, "/greet?ticket=good", None)
            .await
            .expect("the terminal opens");
        assert_eq!(
            next(&mut socket).await.unwrap().unwrap(),
            Message::text("hello")
        );
        socket.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            next(&mut socket).await.unwrap().unwrap(),
            Message::binary(vec![1, 2, 3])
        );
        match next(&mut socket).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::from(4008));
                assert_eq!(frame.reason.as_str(), "done");
            }
            other => panic!("expected the node's close, got {other:?}"),
        }
        assert_ended(&mut socket).await;
    }

    #[tokio::test]
    async fn a_refused_ticket_reaches_the_browser_as_the_nodes_answer() {
        let fleet = fleet().await;
        let refused = browser(fleet.hub, "/echo?ticket=wrong", None).await;
        let Err(tungstenite::Error::Http(response)) = refused else {
            panic!("expected an HTTP refusal, got {refused:?}");
        };
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let error: ApiError =
            serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
        assert_eq!(
            error,
            ApiError::new(ErrorCode::Unauthorized, "unknown ticket")
        );
    }

    #[tokio::test]
    async fn a_browser_of_another_origin_is_refused_by_the_hub() {
        let fleet = fleet().await;
        let refused = browser(
            fleet.hub,
            "/echo?ticket=good",
            Some("https://elsewhere.example"),
        )
        .await;
        let Err(tungstenite::Error::Http(response)) = refused else {
            panic!("expected an HTTP refusal, got {refused:?}");
        };
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let hub = fleet.hub;
        browser(hub, "/echo?ticket=good", Some(&format!("http://{hub}")))
            .await
            .expect("the hub's own origin is let through");
    }

    #[tokio::test]
    async fn cutting_a_splice_ends_both_legs() {
        let mut fleet = fleet().await;
        let mut socket = browser(fleet.hub, "/echo?ticket=good", None)
            .await
            .expect("the terminal opens");
        socket.send(Message::text("x")).await.unwrap();
        assert_eq!(
            next(&mut socket).await.unwrap().unwrap(),
            Message::text("x")
        );
        fleet.cut.cancel();
        assert_ended(&mut socket).await;
        let ending = tokio::time::timeout(LIMIT, fleet.endings.recv()).await;
        assert_eq!(
            ending.expect("the node's session ends"),
            Some(None),
            "the node's session ends without a close frame"
        );
    }

    /// One browser reads nothing while its terminal floods; another terminal on the same HTTP/2
    /// connection keeps flowing, more than a stream window each way, because the stalled stream
    /// holds only its own window of the connection's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_terminal_does_not_block_another_on_the_same_connection() {
        let fleet = fleet().await;
        let mut stalled = browser(fleet.hub, "/flood?ticket=good", None)
            .await
            .expect("the flooding terminal opens");
        // The flood stops when every buffer on its way is full: the node can send no more.
        let stalled_at = tokio::time::timeout(Duration::from_secs(30), async {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let now = fleet.flooded.load(Ordering::SeqCst);
                if now == last && now > 0 {
                    return now;
                }
                last = now;
            }
        })
        .await
        .expect("the flood stalls");
        assert!(stalled_at < FLOOD, "flow control never held the node back");

        let mut flowing = browser(fleet.hub, "/echo?ticket=good", None)
            .await
            .expect("another terminal opens beside the stalled one");
        let rounds = 4 * STREAM_WINDOW as usize / FLOOD_FRAME;
        tokio::time::timeout(LIMIT, async {
            for round in 0..rounds {
                let payload = vec![round as u8; FLOOD_FRAME];
                flowing
                    .send(Message::binary(payload.clone()))
                    .await
                    .unwrap();
                let echoed = flowing.next().await.expect("an echo").expect("an echo");
                assert_eq!(echoed.into_data(), payload);
            }
        })
        .await
        .expect("the other terminal is not blocked by the stalled one");
        assert_eq!(
            fleet.flooded.load(Ordering::SeqCst),
            stalled_at,
            "the stalled terminal stayed stalled meanwhile"
        );

        // Once read, the stalled terminal resumes, in order: what was held on the way arrives,
        // and the node sends more.
        tokio::time::timeout(LIMIT, async {
            let mut index = 0usize;
            while index * FLOOD_FRAME <= stalled_at {
                let frame = stalled.next().await.expect("a frame").expect("a frame");
                let data = frame.into_data();
                assert_eq!(data.len(), FLOOD_FRAME);
                assert!(data.iter().all(|b| *b == index as u8), "frame {index}");
                index += 1;
            }
        })
        .await
        .expect("the stalled terminal resumes");
        assert!(fleet.flooded.load(Ordering::SeqCst) > stalled_at);
    }
}
