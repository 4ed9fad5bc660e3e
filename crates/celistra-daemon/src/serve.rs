//! Serving the router on a listener (the Unix socket, the TCP port, over TLS or not), with the
//! request-head limits enforced where they can be answered with the API's JSON errors: a URI or
//! headers too large (414, 431) by [`request_limits`] before routing, and the refusals hyper makes
//! itself, of a head it cannot parse or that exceeds its own higher limits, rewritten by
//! [`JsonRefusals`] (docs/http-limits.md).

use std::fmt::Debug;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use celistra_proto::{ApiError, ErrorCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::wire::failure;

/// Longest request target accepted (path and query; the API's queries are short).
pub(crate) const MAX_URI: usize = 16 * 1024;
/// Most header fields accepted in one request.
pub(crate) const MAX_HEADERS: usize = 100;
/// Largest total size of a request's header fields (each counted as `name: value\r\n`).
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;
/// hyper's own limits, above ours so that a request over ours still reaches [`request_limits`].
/// hyper refuses a URI over 65534 bytes, more header fields than this, or a head larger than its
/// read buffer.
const HYPER_MAX_HEADERS: usize = 256;
const HYPER_MAX_BUF: usize = 256 * 1024;
const HYPER_MAX_URI: usize = u16::MAX as usize - 1;
/// A client that has not finished its TLS handshake by then is dropped, so idle sockets cost
/// nothing.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` (over TLS with `tls`) until `stopping`, then lets open requests
/// finish. Handshakes run in each connection's task, so a slow client holds up no other.
pub(crate) async fn serve<L>(
    mut listener: L,
    tls: Option<TlsAcceptor>,
    router: Router,
    stopping: CancellationToken,
) where
    L: Listener,
    L::Addr: Debug + Sync,
{
    let router = router.layer(middleware::from_fn(request_limits));
    // Every connection task holds a sender; when all are gone, every connection has ended.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping.cancelled() => break,
        };
        let tls = tls.clone();
        let router = router.clone();
        let stopping = stopping.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let _open = open;
            let Some(tls) = tls else {
                return serve_connection(io, router, &stopping, &peer).await;
            };
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(io));
            tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => serve_connection(stream, router, &stopping, &peer).await,
                    Ok(Err(e)) => tracing::debug!(?peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
                },
                () = stopping.cancelled() => {}
            }
        });
    }
    drop(open);
    let _ = all_closed.recv().await;
}

async fn serve_connection<I>(
    io: I,
    router: Router,
    stopping: &CancellationToken,
    peer: &(dyn Debug + Sync),
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // HTTP/1.1 only, as before hyper-util's `http2` feature (the fleet's) was on: the listeners
    // serve browsers and the CLI, and a fleet node serves HTTP/2 only on the connection it dials.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF);
    let connection = builder.serve_connection_with_upgrades(
        TokioIo::new(JsonRefusals::new(io)),
        TowerToHyperService::new(router),
    );
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(?peer, "connection ended: {e}");
            }
            return;
        }
        () = stopping.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// Refuses, before routing and authentication, a request whose URI or headers exceed the limits.
async fn request_limits(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let uri_len = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI {
        return failure(
            ErrorCode::UriTooLong,
            format!(
                "the request's URI is {uri_len} bytes, more than the {MAX_URI} this daemon accepts"
            ),
        )
        .into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return failure(
            ErrorCode::HeadersTooLarge,
            format!(
                "the request has {} header fields of {header_bytes} bytes; this daemon accepts at most {MAX_HEADERS} fields of {MAX_HEADER_BYTES} bytes in all",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Where a connection's first request head is.
#[derive(Debug)]
enum Head {
    /// Not complete yet: the bytes so far.
    Reading(Vec<u8>),
    /// hyper will refuse it: malformed, or over its limits.
    Refused,
    /// Complete and within hyper's limits: it is hyper's to answer, and what follows too.
    Passed,
}

/// A connection's IO that turns hyper's own refusal of the first request head into the API's JSON
/// error. hyper answers a head it cannot parse (400), one whose URI is over 65534 bytes (414) or
/// one larger than its buffer or with too many fields (431) itself, with an empty body, and has no
/// hook to change that answer. It calls no service before a head is complete, so what it writes
/// while the first head is incomplete or refused (by the same parser, httparse, with hyper's
/// settings) is such a refusal; it then closes the connection. Only the first request is watched:
/// scanners and clients speaking another protocol fail there, and watching every head would mean
/// framing every body. A later malformed head on a kept-alive connection gets hyper's empty answer.
struct JsonRefusals<I> {
    inner: I,
    head: Head,
    /// The JSON refusal written instead of hyper's, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<I> JsonRefusals<I> {
    fn new(inner: I) -> Self {
        JsonRefusals {
            inner,
            head: Head::Reading(Vec::new()),
            replacement: None,
        }
    }

    fn observe(&mut self, read: &[u8]) {
        let Head::Reading(bytes) = &mut self.head else {
            return;
        };
        bytes.extend_from_slice(read);
        let mut headers = [httparse::EMPTY_HEADER; HYPER_MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        self.head = match parsed.parse(bytes) {
            Ok(httparse::Status::Complete(_)) => {
                if parsed.path.is_some_and(|path| path.len() > HYPER_MAX_URI) {
                    Head::Refused
                } else {
                    Head::Passed
                }
            }
            Ok(httparse::Status::Partial) if bytes.len() < HYPER_MAX_BUF => return,
            Ok(httparse::Status::Partial) | Err(_) => Head::Refused,
        };
    }
}

/// The JSON answer for hyper's refusal that starts with `written`, if it is one hyper makes.
fn json_refusal(written: &[u8]) -> Option<Vec<u8>> {
    let status = written.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let (code, message) = match status {
        b"400" => (
            ErrorCode::MalformedRequest,
            "the request is not valid HTTP/1.1 (a malformed request line or header field)"
                .to_owned(),
        ),
        b"414" => (
            ErrorCode::UriTooLong,
            format!("the request's URI is longer than the {MAX_URI} bytes this daemon accepts"),
        ),
        b"431" => (
            ErrorCode::HeadersTooLarge,
            format!(
                "the request's header fields are larger than this daemon accepts: at most {MAX_HEADERS} fields of {MAX_HEADER_BYTES} bytes in all"
            ),
        ),
        _ => return None,
    };
    let reason = match code {
        ErrorCode::UriTooLong => "URI Too Long",
        ErrorCode::HeadersTooLarge => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let body = serde_json::to_vec(&ApiError::new(code, message)).ok()?;
    let mut answer = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        code.http_status(),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

impl<I: AsyncWrite + Unpin> JsonRefusals<I> {
    /// Writes what is left of the replacement.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for JsonRefusals<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Head::Reading(_) = this.head {
            this.observe(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if matches!(this.head, Head::Passed) {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if this.replacement.is_none() {
            match json_refusal(buf) {
                Some(answer) => this.replacement = Some((answer, 0)),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // hyper's own bytes are dropped; ours go out here or at its flush.
        if let Poll::Ready(Err(e)) = this.drive(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if matches!(this.head, Head::Passed) {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        Pin::new(this).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drive(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drive(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_refusals_are_rewritten() {
        let answer = json_refusal(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .expect("a refusal");
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.ends_with(r#""code":"malformed_request","message":"the request is not valid HTTP/1.1 (a malformed request line or header field)"}"#), "{text}");
        assert!(json_refusal(b"HTTP/1.1 200 OK\r\n").is_none());
        assert!(json_refusal(b"HTTP/1.1 4").is_none());
    }

    #[test]
    fn the_first_head_is_watched_until_complete() {
        let mut io = JsonRefusals::new(());
        io.observe(b"GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(matches!(io.head, Head::Reading(_)));
        io.observe(b"\r\n");
        assert!(matches!(io.head, Head::Passed));
        let mut io = JsonRefusals::new(());
        io.observe(b"GARBAGE\r\n\r\n");
        assert!(matches!(io.head, Head::Refused));
    }
}
