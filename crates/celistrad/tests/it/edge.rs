//! The HTTP edge, in raw bytes: request heads over the limits and malformed ones get JSON errors
//! on the Unix socket, plain TCP and TLS alike, and the `Authorization` scheme is case-insensitive.

use std::sync::Arc;

use celistra_proto::{ApiError, ErrorCode};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Daemon, PATIENCE};

/// Writes `request` and reads one response: its status, headers and body. The response must say
/// its length, as every answer of the daemon to these requests does.
pub(crate) async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    request: &[u8],
) -> (u16, String, String) {
    stream.write_all(request).await.expect("write the request");
    let mut answer = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.expect("read the answer");
            assert!(
                n > 0,
                "closed before a whole answer: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().expect("a length"))
                    })
                    .unwrap_or_else(|| panic!("an answer without a length: {head}"));
                if body.len() >= length {
                    return (
                        head[9..12].parse().unwrap(),
                        head.to_owned(),
                        body.to_owned(),
                    );
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("an answer in time")
}

/// Asserts a JSON error with `status` and `code`.
fn assert_json_error(answer: &(u16, String, String), status: u16, code: ErrorCode) {
    let (got, head, body) = answer;
    assert_eq!(*got, status, "{head}\n\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let error: ApiError = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(error.code, code, "{body}");
    assert!(!error.message.is_empty());
}

/// The three bad heads of the brief: a 20 KiB URI, 100 KiB of headers, a garbage request line.
fn bad_heads() -> [(Vec<u8>, u16, ErrorCode); 3] {
    let long_uri = format!(
        "GET /v1/health?pad={} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let mut big_headers =
        "GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".to_owned();
    for n in 0..50 {
        big_headers.push_str(&format!("X-Pad-{n}: {}\r\n", "b".repeat(2048)));
    }
    big_headers.push_str("\r\n");
    [
        (long_uri.into_bytes(), 414, ErrorCode::UriTooLong),
        (big_headers.into_bytes(), 431, ErrorCode::HeadersTooLarge),
        (
            b"GARBAGE\r\n\r\n".to_vec(),
            400,
            ErrorCode::MalformedRequest,
        ),
    ]
}

#[tokio::test]
async fn bad_request_heads_get_json_errors_over_tcp_and_the_socket() {
    let daemon = Daemon::start().await;
    for (request, status, code) in bad_heads() {
        let tcp = tokio::net::TcpStream::connect(daemon.tcp_addr())
            .await
            .unwrap();
        assert_json_error(&exchange(tcp, &request).await, status, code);
        let unix = tokio::net::UnixStream::connect(daemon.home().join("celistrad.sock"))
            .await
            .unwrap();
        assert_json_error(&exchange(unix, &request).await, status, code);
    }
    // Past hyper's own limits (a URI over 64 KiB, more than 256 header fields) hyper refuses the
    // head itself; that answer is JSON too. Between ours and hyper's, ours answers.
    let huge_uri = format!(
        "GET /v1/health?pad={} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let fields = |count: usize| {
        let mut head =
            "GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".to_owned();
        for n in 0..count {
            head.push_str(&format!("X-Field-{n}: x\r\n"));
        }
        head + "\r\n"
    };
    for (request, status, code) in [
        (huge_uri, 414, ErrorCode::UriTooLong),
        (fields(150), 431, ErrorCode::HeadersTooLarge),
        (fields(300), 431, ErrorCode::HeadersTooLarge),
        (
            "GET /v1/health HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n".to_owned(),
            400,
            ErrorCode::MalformedRequest,
        ),
    ] {
        let tcp = tokio::net::TcpStream::connect(daemon.tcp_addr())
            .await
            .unwrap();
        assert_json_error(&exchange(tcp, request.as_bytes()).await, status, code);
    }
    // Refused before authentication: no credential was sent, and the answer is not a 401. And a
    // request within the limits is still answered.
    let health = daemon.client.get_health().await.unwrap();
    assert_eq!(health.status, "ok");
}

#[tokio::test]
async fn bad_request_heads_get_json_errors_over_tls() {
    let daemon = Daemon::start_with_args(&["--tls"]).await;
    let cert = std::fs::read(daemon.home().join("tls-cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(&cert) {
        roots.add(der.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    for (request, status, code) in bad_heads() {
        let tcp = tokio::net::TcpStream::connect(daemon.tcp_addr())
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        assert_json_error(&exchange(tls, &request).await, status, code);
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let daemon = Daemon::start().await;
    let secret = daemon.secret();
    let health = |authorization: String| {
        format!(
            "GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: {authorization}\r\n\r\n"
        )
    };
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let tcp = tokio::net::TcpStream::connect(daemon.tcp_addr())
            .await
            .unwrap();
        let (status, head, body) =
            exchange(tcp, health(format!("{scheme} {secret}")).as_bytes()).await;
        assert_eq!(status, 200, "{scheme}: {head}\n\n{body}");
    }
    let tcp = tokio::net::TcpStream::connect(daemon.tcp_addr())
        .await
        .unwrap();
    let answer = exchange(tcp, health(format!("Basic {secret}")).as_bytes()).await;
    assert_json_error(&answer, 401, ErrorCode::Unauthorized);
}
