//! HTTPS on the TCP port: the generated certificate (0600, kept across restarts, its fingerprint in
//! `/v1/health`), real clients (reqwest with rustls, curl), plain HTTP refused, HSTS, `Secure`
//! session cookies, the operator's certificate files reloaded when replaced (and a broken pair
//! keeping the old one), and plain HTTP beyond loopback refused without `--insecure-http`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use celistra_proto::{Health, LoginLink, TlsHealth};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{BIN, Daemon, PATIENCE};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn sha256_hex(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// The daemon's TLS status, read over its (plain) Unix socket.
pub(crate) async fn tls_health(daemon: &Daemon) -> TlsHealth {
    let health: Health = daemon.client.get_health().await.expect("health");
    health.tls.expect("the daemon serves TLS")
}

/// A reqwest client trusting exactly `cert_pem`, reporting the peer's certificate.
fn https_client(cert_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem).expect("certificate pem")])
        .tls_info(true)
        .timeout(PATIENCE)
        .build()
        .expect("reqwest client")
}

/// `GET https://127.0.0.1:port{path}` with the machine secret; returns the response and the
/// fingerprint of the certificate the server presented.
async fn get(daemon: &Daemon, client: &reqwest::Client, path: &str) -> (reqwest::Response, String) {
    let response = client
        .get(format!(
            "https://127.0.0.1:{}{path}",
            daemon.tcp_addr().port()
        ))
        .bearer_auth(daemon.secret())
        .send()
        .await
        .expect("https request");
    let served = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(sha256_hex)
        .expect("peer certificate");
    (response, served)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// `curl` with `args` against the daemon; returns stdout (status code, headers, body as asked).
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn a_generated_certificate_is_private_pinned_in_health_served_to_real_clients_and_kept() {
    let mut daemon = Daemon::start_with_args(&["--tls"]).await;
    let cert_path = daemon.home().join("tls-cert.pem");
    let key_path = daemon.home().join("tls-key.pem");
    assert_eq!(mode(&cert_path), 0o600);
    assert_eq!(mode(&key_path), 0o600);
    let tls = tls_health(&daemon).await;
    assert_eq!(tls.source, "generated");
    assert_eq!(tls.fingerprint_sha256.len(), 64);

    // reqwest trusting only this certificate: names and chain check out, and what is served is
    // what health reports.
    let cert_pem = std::fs::read(&cert_path).unwrap();
    let client = https_client(&cert_pem);
    let (response, served) = get(&daemon, &client, "/v1/health").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let over_https: Health = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(served, tls.fingerprint_sha256);
    assert_eq!(
        over_https.tls.expect("tls").fingerprint_sha256,
        tls.fingerprint_sha256
    );
    // HSTS is on every response: refusals, unknown routes, the dashboard's files.
    for path in ["/v1/agents", "/no/such/route", "/"] {
        let response = client
            .get(format!(
                "https://127.0.0.1:{}{path}",
                daemon.tcp_addr().port()
            ))
            .send()
            .await
            .expect("https request");
        assert!(
            response.headers().contains_key("strict-transport-security"),
            "{path}: {:?}",
            response.headers()
        );
    }

    // curl, trusting the certificate file, and with -k.
    let url = format!("https://127.0.0.1:{}/v1/health", daemon.tcp_addr().port());
    let bearer = format!("Authorization: Bearer {}", daemon.secret());
    let cacert = cert_path.display().to_string();
    for trust in [["--cacert", cacert.as_str()], ["-k", "--no-progress-meter"]] {
        let out = curl(&[
            trust[0],
            trust[1],
            "-H",
            &bearer,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ]);
        assert_eq!(out, "200", "curl {trust:?}");
    }
    // Without trusting it, curl refuses the self-signed certificate.
    assert_eq!(
        curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]),
        "000"
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(daemon.tcp_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the daemon closes a plain HTTP connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let plain = reqwest::Client::new()
        .get(format!("http://{}/v1/health", daemon.tcp_addr()))
        .bearer_auth(daemon.secret())
        .timeout(PATIENCE)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP got {plain:?}");

    // The same certificate after a restart.
    assert!(daemon.signal_and_wait("TERM").success());
    daemon.restart_process().await;
    assert_eq!(tls_health(&daemon).await, tls);
    let (_, served) = get(&daemon, &client, "/v1/health").await;
    assert_eq!(served, tls.fingerprint_sha256);
}

#[tokio::test]
async fn a_dashboard_login_over_tls_sets_a_secure_cookie() {
    let daemon = Daemon::start_with_args(&["--tls"]).await;
    let link: LoginLink = daemon
        .client
        .issue_login_code(None)
        .await
        .expect("login code");
    let port = daemon.tcp_addr().port();
    assert!(
        link.url
            .starts_with(&format!("https://127.0.0.1:{port}/login#")),
        "{}",
        link.url
    );
    let client = https_client(&std::fs::read(daemon.home().join("tls-cert.pem")).unwrap());
    let response = client
        .post(format!("https://127.0.0.1:{port}/v1/sessions/login"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"code":"{}"}}"#, link.code))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"Secure"), "{cookie}");
    assert!(attributes.contains(&"HttpOnly"), "{cookie}");
}

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM, SHA-256).
pub(crate) fn make_certificate(name: &str) -> (String, String, String) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    (cert.pem(), key.serialize_pem(), sha256_hex(cert.der()))
}

/// Replaces `path` as an ACME client would: a new file renamed over the old one.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls the daemon's TLS status until `done` holds (bounded).
async fn wait_tls(daemon: &Daemon, what: &str, done: impl Fn(&TlsHealth) -> bool) -> TlsHealth {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let tls = tls_health(daemon).await;
        if done(&tls) {
            return tls;
        }
        assert!(Instant::now() < deadline, "never {what}: {tls:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn operator_certificate_files_are_reloaded_when_replaced_and_a_broken_pair_keeps_the_old() {
    let files = tempfile::tempdir().unwrap();
    let cert_path = files.path().join("fullchain.pem");
    let key_path = files.path().join("privkey.pem");
    let (cert_a, key_a, fingerprint_a) = make_certificate("first");
    std::fs::write(&cert_path, &cert_a).unwrap();
    std::fs::write(&key_path, &key_a).unwrap();
    let daemon = Daemon::start_with_args(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ])
    .await;
    let tls = tls_health(&daemon).await;
    assert_eq!(tls.source, "files");
    assert_eq!(tls.fingerprint_sha256, fingerprint_a);
    assert!(!daemon.home().join("tls-cert.pem").exists());
    let (_, served) = get(&daemon, &https_client(cert_a.as_bytes()), "/v1/health").await;
    assert_eq!(served, fingerprint_a);

    // Renewed: key, then certificate (a moment with a mismatched pair is tolerated).
    let (cert_b, key_b, fingerprint_b) = make_certificate("second");
    replace(&key_path, &key_b);
    replace(&cert_path, &cert_b);
    wait_tls(&daemon, "reloaded", |tls| {
        tls.fingerprint_sha256 == fingerprint_b && tls.reload_error.is_none()
    })
    .await;
    let client_b = https_client(cert_b.as_bytes());
    let (response, served) = get(&daemon, &client_b, "/v1/health").await;
    assert_eq!(response.status(), 200);
    assert_eq!(served, fingerprint_b);

    // A certificate whose key is not the one on disk: refused, reported, the old pair served.
    let (cert_c, _, _) = make_certificate("third");
    replace(&cert_path, &cert_c);
    let tls = wait_tls(&daemon, "the broken pair reported", |tls| {
        tls.reload_error.is_some()
    })
    .await;
    assert_eq!(tls.fingerprint_sha256, fingerprint_b);
    assert!(
        tls.reload_error
            .as_deref()
            .is_some_and(|e| e.contains("fullchain.pem") && e.contains(&fingerprint_b)),
        "{tls:?}"
    );
    let (response, served) = get(&daemon, &client_b, "/v1/health").await;
    assert_eq!(response.status(), 200);
    assert_eq!(served, fingerprint_b);
    // Garbage is refused the same way.
    replace(&cert_path, "not a certificate");
    replace(&key_path, "not a key");
    wait_tls(&daemon, "garbage reported", |tls| {
        tls.reload_error
            .as_deref()
            .is_some_and(|e| e.contains("no certificate") || e.contains("PEM"))
    })
    .await;
    let (_, served) = get(&daemon, &client_b, "/v1/health").await;
    assert_eq!(served, fingerprint_b);
}

#[tokio::test]
async fn broken_operator_files_refuse_the_start() {
    let files = tempfile::tempdir().unwrap();
    let cert_path = files.path().join("cert.pem");
    let key_path = files.path().join("key.pem");
    let (cert, _, _) = make_certificate("one");
    let (_, other_key, _) = make_certificate("two");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, other_key).unwrap();
    let home = tempfile::tempdir().unwrap();
    let (code, stderr) = run_to_exit(&[
        "--home",
        home.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cert.pem"), "{stderr}");
}

/// Runs the daemon binary expecting it to exit by itself (bounded); returns its code and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("CELISTRA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start celistrad");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("celistrad {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[tokio::test]
async fn plain_http_beyond_loopback_is_refused_unless_insecure_http_is_given() {
    let home = tempfile::tempdir().unwrap();
    let (code, stderr) = run_to_exit(&[
        "--home",
        home.path().to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    for needed in ["0.0.0.0:0", "--tls", "--insecure-http"] {
        assert!(stderr.contains(needed), "{needed} missing from {stderr}");
    }
    assert!(!home.path().join("http.addr").exists());

    let daemon = Daemon::start_with_args(&["--listen", "0.0.0.0:0", "--insecure-http"]).await;
    let addr = daemon.tcp_addr();
    assert!(addr.ip().is_unspecified(), "{addr}");
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()));
    let health: Health = daemon
        .client
        .clone()
        .over_tcp(loopback)
        .get_health()
        .await
        .expect("plain HTTP health");
    assert!(health.tls.is_none());

    let tls = Daemon::start_with_args(&["--listen", "0.0.0.0:0", "--tls"]).await;
    assert_eq!(tls_health(&tls).await.source, "generated");
}
