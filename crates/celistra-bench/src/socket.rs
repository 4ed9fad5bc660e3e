//! Shared socket phase: request throughput through one listening socket (`--socket`) served by a
//! group of 1 and then 2 instances (`--instances`, `ctl scale`), each request on a fresh connection
//! to a small Python HTTP server that does a few milliseconds of CPU work per request, so that a
//! second core matters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use celistra_proto::{AgentSpec, ScaleRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Daemon, Report, ms, phase};

/// How long each measurement lasts.
const DURATION: Duration = Duration::from_secs(10);
/// Client tasks sending requests at once, each one connection at a time.
const CLIENTS: usize = 8;

/// The server: its instance number in every answer, after about 3 ms of CPU work in CPython.
const SERVER: &str = r#"
import os, socket
me = os.environ["CELISTRA_INSTANCE"].encode()
listener = socket.socket(fileno=3)
while True:
    conn, _ = listener.accept()
    conn.recv(65536)
    sum(i * i for i in range(30000))
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(me), me))
    conn.close()
"#;

pub(crate) async fn phases(binary: &std::path::Path, report: &mut Report) -> Vec<Result<()>> {
    vec![phase("shared socket", throughput(binary, report)).await]
}

/// What the clients saw in one measurement.
struct Measured {
    requests_per_sec: f64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

async fn throughput(binary: &std::path::Path, report: &mut Report) -> Result<()> {
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .context("the shared socket phase needs python3 in /usr/bin or /usr/local/bin")?;
    let daemon = Daemon::start(binary, None).await?;
    std::fs::write(daemon.work().join("server.py"), SERVER)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    daemon
        .client()
        .spawn_agent(&AgentSpec {
            name: "web".into(),
            command: format!("{python} server.py"),
            workspace: Some(daemon.work().display().to_string()),
            instances: Some(1),
            socket: Some(port.to_string()),
            ..AgentSpec::default()
        })
        .await?;
    wait_instances(port, 1).await?;
    let one = measure(port).await;
    daemon
        .client()
        .scale_group("web", &ScaleRequest { instances: 2 })
        .await?;
    wait_instances(port, 2).await?;
    let two = measure(port).await;
    for (instances, m) in [(1, &one), (2, &two)] {
        report.add(
            &format!(
                "shared socket, {instances} instance(s), {CLIENTS} clients, fresh connections"
            ),
            "-",
            format!(
                "{:.0} requests/s, p50 {:.1} ms, p99 {:.1} ms, {} failed",
                m.requests_per_sec,
                ms(m.p50),
                ms(m.p99),
                m.failed
            ),
            Some(m.failed == 0),
        );
    }
    let speedup = two.requests_per_sec / one.requests_per_sec;
    report.add(
        "shared socket: throughput of 2 instances over 1",
        "> 1.5 on 2 cores",
        format!("{speedup:.2}x"),
        Some(speedup > 1.5),
    );
    Ok(())
}

/// Waits until `count` different instances have answered (bounded).
async fn wait_instances(port: u16, count: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < count {
        if Instant::now() > deadline {
            bail!(
                "only {} of {count} instances answered on port {port}",
                seen.len()
            );
        }
        match request(port).await {
            Ok(instance) => {
                seen.insert(instance);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    Ok(())
}

/// One request on a fresh connection; the answer's body.
async fn request(port: u16) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .context("not an HTTP answer")
}

/// [`CLIENTS`] tasks sending requests for [`DURATION`].
async fn measure(port: u16) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (vec![], 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(10), request(port)).await {
                        Ok(Ok(_)) => latencies.push(started.elapsed()),
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(DURATION).await;
    stop.store(true, Ordering::Relaxed);
    let (mut latencies, mut failed) = (vec![], 0);
    for task in tasks {
        if let Ok((mine, mine_failed)) = task.await {
            latencies.extend(mine);
            failed += mine_failed;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: usize| {
        latencies
            .get((latencies.len() * q).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    Measured {
        requests_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(50),
        p99: at(99),
        failed,
    }
}
