//! Several machines on one box, for fleet tests: a [`Lan`] of hosts (network namespaces) on one
//! bridge, whose links a test cuts, makes lossy or slow; and the tests of that harness. Needs root,
//! `ip`, `tc` and `nft` (`scripts/setup`).
//!
//! A `Lan` is named by a prefix `cel<pid>x<n>`: the pid of the test process that made it (alive as
//! long as the `Lan` is) and a counter within that process, so no two live `Lan`s on the machine
//! share a name, and leftovers of a dead process are recognised by their dead pid. It holds:
//! - the switch, namespace `<prefix>-sw`: bridge `br0` and one port `p<i>` per host;
//! - one namespace `<prefix>-<name>` per host: `lo`, and `eth0` (the other end of `p<i>`) with
//!   the address 10.X.Y.(i+1)/24.
//!
//! Nothing is created in the root namespace (each veth is made directly in its two namespaces), so
//! a `Lan` can neither disturb the machine's network nor reach another `Lan`, whatever their
//! addresses; interface names, being local to a namespace, fit IFNAMSIZ however long the prefix;
//! and deleting the namespaces deletes every interface, qdisc and nftables table of the `Lan`.
//!
//! What a test can do to a host's link (this kernel has no netem: no `tc` delay nor loss):
//! - [`Host::link_down`]: the switch's port goes down. Silent: the host keeps its address and
//!   route, but its packets and those to it vanish, so connections on both sides time out.
//! - [`Host::unplug`]: the host's own `eth0` goes down, and its route with it: the host's own
//!   connects fail at once ("Network is unreachable"); connects to it from others time out.
//! - [`Host::set_loss`]: an nftables `bridge` table in the switch drops that share of the frames
//!   to and from the host's port (ARP included).
//! - [`Host::shape`]: `tbf` on both ends of the link caps the rate each way. The only delay it
//!   adds is queueing and serialization (a 1500-byte packet takes 12 ms at 1 Mbit/s).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{Daemon, PATIENCE, output_within};

/// The start of every namespace name a [`Lan`] makes, before the creator's pid.
const TAG: &str = "cel";

/// A switch and its hosts; all of it, and every process inside, is gone when dropped (also when
/// the test panics).
pub(crate) struct Lan {
    prefix: String,
    switch: String,
    hosts: Vec<Host>,
}

/// One machine of a [`Lan`]: a network namespace with one link to the switch.
pub(crate) struct Host {
    name: String,
    netns: String,
    ip: Ipv4Addr,
    /// The switch's namespace, and the port of this host's link there.
    switch: String,
    port: String,
}

impl Lan {
    /// Makes a switch and one host per name (ASCII letters and digits, not `sw`), every link up;
    /// first removes what dead test processes left. Panics, with the failed command and its stderr,
    /// if a step fails (as when not root).
    pub(crate) fn new(names: &[&str]) -> Lan {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{TAG}{pid}x{n}");
        sweep(&prefix);
        // A subnet that differs between concurrent `Lan`s in practice, so traces read clearly;
        // nothing relies on it, as `Lan`s share no namespace.
        let [_, _, x, y] = pid.wrapping_add(n.wrapping_mul(257)).to_be_bytes();
        let mut lan = Lan {
            switch: format!("{prefix}-sw"),
            prefix,
            hosts: vec![],
        };
        // From here on a failure drops `lan`, which removes what was made.
        ip(&["netns", "add", &lan.switch]);
        ip(&["-n", &lan.switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan.switch, "link", "set", "br0", "up"]);
        for (i, &name) in names.iter().enumerate() {
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()) && name != "sw",
                "host name {name:?}: use ASCII letters and digits, and not `sw` (the switch's)"
            );
            assert!(
                lan.hosts.iter().all(|host| host.name != name),
                "two hosts named {name}"
            );
            let last = u8::try_from(i + 1).ok().filter(|&last| last < 255);
            let host = Host {
                name: name.to_owned(),
                netns: format!("{}-{name}", lan.prefix),
                ip: Ipv4Addr::new(10, x, y, last.expect("at most 254 hosts")),
                switch: lan.switch.clone(),
                port: format!("p{i}"),
            };
            ip(&["netns", "add", &host.netns]);
            lan.hosts.push(host);
            let host = lan.hosts.last().expect("just pushed");
            let (switch, port, netns) = (&lan.switch, &host.port, &host.netns);
            ip(&[
                "-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
                netns,
            ]);
            ip(&["-n", switch, "link", "set", port, "master", "br0", "up"]);
            let address = format!("{}/24", host.ip);
            ip(&["-n", netns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", netns, "link", "set", "eth0", "up"]);
            ip(&["-n", netns, "link", "set", "lo", "up"]);
        }
        lan
    }

    /// The host made under `name`.
    pub(crate) fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap_or_else(|| panic!("no host {name} in {}", self.prefix))
    }

    /// The start of every namespace name of this `Lan`.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for Lan {
    #[allow(
        clippy::print_stderr,
        reason = "a cleanup failure during a panic can only be told"
    )]
    fn drop(&mut self) {
        let hosts = self.hosts.iter().map(|host| host.netns.as_str());
        for netns in hosts.chain([self.switch.as_str()]) {
            if let Err(why) = delete_namespace(netns) {
                // A second panic while unwinding would abort the run and hide the first one.
                if std::thread::panicking() {
                    eprintln!("cleaning up {netns}: {why}");
                } else {
                    panic!("cleaning up {netns}: {why}");
                }
            }
        }
    }
}

impl Host {
    /// The network namespace's name, for [`Daemon::start_in_netns`] and `ip -n`.
    pub(crate) fn netns(&self) -> &str {
        &self.netns
    }

    /// The address of `eth0`, the host's only link.
    pub(crate) fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// A command that runs `program` inside this host (`ip netns exec` execs it in its own place,
    /// so the child's pid is the program's).
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns, program]);
        command
    }

    /// Cuts the link at the switch: silent, packets both ways vanish and connections time out.
    pub(crate) fn link_down(&self) {
        ip(&["-n", &self.switch, "link", "set", &self.port, "down"]);
    }

    /// Takes the host's own `eth0` down: its connects fail at once, connects to it time out.
    pub(crate) fn unplug(&self) {
        ip(&["-n", &self.netns, "link", "set", "eth0", "down"]);
    }

    /// Undoes [`Host::link_down`] and [`Host::unplug`]: both ends up, the host's route back.
    pub(crate) fn link_up(&self) {
        ip(&["-n", &self.switch, "link", "set", &self.port, "up"]);
        ip(&["-n", &self.netns, "link", "set", "eth0", "up"]);
    }

    /// Drops `percent` (1 to 100) of the frames to and from this host, at random, in the switch;
    /// replaces an earlier loss.
    pub(crate) fn set_loss(&self, percent: u8) {
        assert!((1..=100).contains(&percent), "loss of {percent}%");
        // nftables takes `mod 100 < N` only for N below 100.
        let verdict = if percent == 100 {
            "drop".to_owned()
        } else {
            format!("numgen random mod 100 < {percent} drop")
        };
        let (table, port) = (self.loss_table(), &self.port);
        // One transaction: declaring the table first lets `delete` succeed when there was none.
        nft(
            &self.switch,
            &format!(
                "table bridge {table}\ndelete table bridge {table}\ntable bridge {table} {{\n\
                 chain forward {{\n\
                 type filter hook forward priority 0; policy accept;\n\
                 iifname \"{port}\" {verdict}\n\
                 oifname \"{port}\" {verdict}\n\
                 }}\n}}\n"
            ),
        );
    }

    /// Ends [`Host::set_loss`] (nothing happens without one).
    pub(crate) fn clear_loss(&self) {
        let table = self.loss_table();
        nft(
            &self.switch,
            &format!("table bridge {table}\ndelete table bridge {table}\n"),
        );
    }

    /// Caps the rate of the link, each way, at `kbit` kbit/s (token bucket, 16 KiB burst); replaces
    /// an earlier cap.
    pub(crate) fn shape(&self, kbit: u32) {
        let rate = format!("{kbit}kbit");
        for (netns, dev) in self.link_ends() {
            let tbf = ["tbf", "rate", &rate, "burst", "16kb", "latency", "400ms"];
            run(
                Command::new("tc")
                    .args(["-n", netns, "qdisc", "replace", "dev", dev, "root"])
                    .args(tbf),
                "",
            );
        }
    }

    /// Ends [`Host::shape`], which must have been called.
    pub(crate) fn clear_shape(&self) {
        for (netns, dev) in self.link_ends() {
            run(
                Command::new("tc").args(["-n", netns, "qdisc", "del", "dev", dev, "root"]),
                "",
            );
        }
    }

    fn loss_table(&self) -> String {
        format!("loss_{}", self.port)
    }

    /// Each end's namespace and device: the switch's port, the host's `eth0`.
    fn link_ends(&self) -> [(&str, &str); 2] {
        [(&self.switch, &self.port), (&self.netns, "eth0")]
    }
}

/// Removes the namespaces that test processes now dead left behind (their names carry their
/// creator's pid), and any under `prefix`, which this process has not used yet, so an earlier
/// process with the same pid left them.
fn sweep(prefix: &str) {
    let ours = format!("{prefix}-");
    for netns in namespaces() {
        let dead_creator =
            creator(&netns).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if (dead_creator || netns.starts_with(&ours))
            && let Err(why) = delete_namespace(&netns)
        {
            panic!("removing the stale namespace {netns}: {why}");
        }
    }
}

/// The pid in a namespace name `cel<pid>x<n>-<host>`.
fn creator(netns: &str) -> Option<u32> {
    let (pid, rest) = netns.strip_prefix(TAG)?.split_once('x')?;
    let (n, _) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// The named network namespaces of the machine.
fn namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Kills every process in `netns` (bounded), then deletes it, which deletes its interfaces. A
/// namespace that disappears meanwhile (another test process swept it) is no error.
fn delete_namespace(netns: &str) -> Result<(), String> {
    let exists = || Path::new("/run/netns").join(netns).exists();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let listed = output_within(Command::new("ip").args(["netns", "pids", netns]), "")?;
        if !listed.status.success() {
            return match exists() {
                true => Err(failure("ip netns pids", &listed)),
                false => Ok(()),
            };
        }
        let pids: Vec<u32> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("processes {pids:?} survived SIGKILL"));
        }
        for pid in pids {
            // Quietly: a process may end between the listing and the signal.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let deleted = output_within(Command::new("ip").args(["netns", "delete", netns]), "")?;
    match deleted.status.success() || !exists() {
        true => Ok(()),
        false => Err(failure("ip netns delete", &deleted)),
    }
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args), "")
}

/// Runs the nftables script `script` in `netns`.
fn nft(netns: &str, script: &str) {
    run(
        Command::new("ip").args(["netns", "exec", netns, "nft", "-f", "-"]),
        script,
    );
}

/// Runs `command`, which must succeed (a broken setup must be loud): its stdout.
fn run(command: &mut Command, stdin: &str) -> String {
    let shown = format!("{command:?}");
    match output_within(command, stdin) {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).into(),
        Ok(output) => panic!("{}", failure(&shown, &output)),
        Err(why) => panic!("{shown}: {why}"),
    }
}

fn failure(shown: &str, output: &Output) -> String {
    format!(
        "{shown}: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim_end()
    )
}

/// `curl` inside `from` of `path` on the daemon's HTTPS listener, as its owner, giving up on
/// connecting after 1 s (a local link answers in microseconds); `extra` curl arguments.
fn curl(from: &Host, daemon: &Daemon, path: &str, extra: &[&str]) -> Output {
    let url = format!("https://{}{path}", daemon.tcp_addr());
    let authorization = format!("Authorization: Bearer {}", daemon.secret());
    let mut command = from.command("curl");
    command
        .args(["-sS", "-k", "--connect-timeout", "1", "--max-time", "15"])
        .args(["-H", &authorization])
        .args(extra)
        .arg(url);
    output_within(&mut command, "").expect("curl")
}

/// Asserts that `from` reaches the daemon: its `/v1/health` answers with the daemon's pid.
fn assert_reaches(from: &Host, daemon: &Daemon) {
    let output = curl(from, daemon, "/v1/health", &[]);
    assert!(output.status.success(), "{}", failure("curl", &output));
    let health: serde_json::Value = serde_json::from_slice(&output.stdout).expect("health json");
    assert_eq!(health["pid"], daemon.pid(), "{health}");
}

/// A daemon inside `host`, serving HTTPS on the host's address.
async fn daemon_in(host: &Host) -> Daemon {
    let listen = format!("{}:0", host.ip());
    Daemon::start_in_netns(host.netns(), &["--listen", &listen, "--tls"]).await
}

#[tokio::test]
async fn a_daemon_in_one_host_is_reached_from_another_and_not_from_the_root_namespace() {
    let lan = Lan::new(&["a", "b"]);
    let (a, b) = (lan.host("a"), lan.host("b"));
    let mut daemon = daemon_in(a).await;
    assert_eq!(daemon.tcp_addr().ip(), a.ip());
    assert_reaches(b, &daemon);
    // The test's own namespace has neither the listener on its loopback nor a route to it.
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], daemon.tcp_addr().port()));
    let refused = std::net::TcpStream::connect_timeout(&loopback, Duration::from_secs(1));
    assert!(
        refused.is_err(),
        "{loopback} answered in the root namespace"
    );
    // The Unix socket, on the shared filesystem, still reaches it; and a restart stays inside.
    assert_eq!(daemon.client.get_health().await.unwrap().pid, daemon.pid());
    daemon.signal_and_wait("TERM");
    daemon.restart_process().await;
    assert_eq!(daemon.tcp_addr().ip(), a.ip());
    assert_reaches(b, &daemon);
}

#[tokio::test]
async fn a_link_down_times_out_an_unplugged_host_fails_at_once_and_link_up_restores_both() {
    let lan = Lan::new(&["a", "b"]);
    let (a, b) = (lan.host("a"), lan.host("b"));
    let daemon = daemon_in(a).await;
    assert_reaches(b, &daemon);

    a.link_down();
    let output = curl(b, &daemon, "/v1/health", &[]);
    // curl's 28: the operation timed out (the connect, after 1 s).
    assert_eq!(
        output.status.code(),
        Some(28),
        "{}",
        failure("curl", &output)
    );
    a.link_up();
    assert_reaches(b, &daemon);

    b.unplug();
    let started = Instant::now();
    let output = curl(b, &daemon, "/v1/health", &[]);
    // curl's 7: could not connect, here at once, for want of a route (curl does not say why).
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        failure("curl", &output)
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    b.link_up();
    assert_reaches(b, &daemon);
}

/// Of `tries` simultaneous TCP connects from `from` to a closed port of `to`, how many got their
/// answer (a reset) within 1 s.
fn answered_connects(from: &Host, to: &Host, tries: u32) -> usize {
    let script = format!(
        "for _ in $(seq {tries}); do \
           (timeout 1 bash -c 'exec 3<>/dev/tcp/{}/9' 2>&1 | grep -q refused && echo answered) & \
         done; wait",
        to.ip()
    );
    let output = output_within(from.command("bash").args(["-c", &script]), "").expect("bash");
    assert!(output.status.success(), "{}", failure("bash", &output));
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[tokio::test]
async fn loss_drops_that_share_of_packets_both_ways_until_cleared() {
    let lan = Lan::new(&["a", "b"]);
    let (a, b) = (lan.host("a"), lan.host("b"));
    assert_eq!(answered_connects(b, a, 40), 40);
    // A connect is answered when its SYN and the reset both pass: a quarter of the time. All 40
    // or none would happen with a chance below 1e-5.
    a.set_loss(50);
    let answered = answered_connects(b, a, 40);
    assert!((1..40).contains(&answered), "{answered} of 40 answered");
    a.set_loss(100);
    assert_eq!(answered_connects(b, a, 40), 0);
    a.clear_loss();
    assert_eq!(answered_connects(b, a, 40), 40);
}

#[tokio::test]
async fn shaping_caps_the_rate_each_way_until_cleared() {
    let lan = Lan::new(&["a", "b"]);
    let (a, b) = (lan.host("a"), lan.host("b"));
    let daemon = daemon_in(a).await;
    // The OpenAPI document, some 120 KB, times a transfer: from its first byte to its last, so
    // that neither the handshake nor the daemon's work (slow on a loaded machine) counts.
    let fetch = || {
        let output = curl(
            b,
            &daemon,
            "/v1/openapi.json",
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{time_starttransfer} %{time_total}",
            ],
        );
        assert!(output.status.success(), "{}", failure("curl", &output));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let numbers: Vec<f64> = text
            .split_whitespace()
            .map(|number| number.parse().expect("curl's numbers"))
            .collect();
        let [size, first, last] = numbers[..] else {
            panic!("curl wrote {text}");
        };
        (size, Duration::from_secs_f64(last - first))
    };
    let kbit = 1000;
    a.shape(kbit);
    let (size, shaped) = fetch();
    assert!(size > 100_000.0, "{size} bytes");
    // Past the 16 KiB burst (and the first byte), bytes leave at the capped rate.
    let floor = Duration::from_secs_f64((size - 16_384.0) * 8.0 / (f64::from(kbit) * 1000.0));
    assert!(
        shaped > floor.mul_f64(0.8),
        "{size} bytes in {shaped:?} at {kbit} kbit/s"
    );
    a.clear_shape();
    let (_, free) = fetch();
    assert!(free < shaped / 4, "unshaped {free:?}, shaped {shaped:?}");
}

#[tokio::test]
async fn dropping_the_lan_removes_its_namespaces_and_processes_and_a_new_one_sweeps_stale_ones() {
    // What a crashed test process leaves: a namespace named with its (dead) pid, a process inside.
    let mut gone = Command::new("true").spawn().expect("run true");
    gone.wait().expect("wait true");
    let stale = format!("{TAG}{}x0-sw", gone.id());
    ip(&["netns", "add", &stale]);
    let marker = crate::marker();
    let mut stale_sleeper = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", &marker])
        .spawn()
        .expect("sleep in the stale namespace");
    // In the namespace before the sweep looks: a sleeper still entering it could slip past.
    let deadline = Instant::now() + PATIENCE;
    while crate::live_processes_exactly(&format!("sleep {marker}")).is_empty() {
        assert!(Instant::now() < deadline, "the stale sleeper never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lan = Lan::new(&["a", "b"]);
    assert!(!namespaces().contains(&stale), "{stale} was not swept");
    crate::wait_no_process_with(&marker).await;
    let _ = stale_sleeper.wait();

    let (a, b) = (lan.host("a"), lan.host("b"));
    let mut daemon = daemon_in(a).await;
    let marker = crate::marker();
    let mut sleepers: Vec<Child> = [a, b]
        .iter()
        .map(|host| host.command("sleep").arg(&marker).spawn().expect("sleep"))
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while crate::live_processes_exactly(&format!("sleep {marker}")).len() < 2 {
        assert!(Instant::now() < deadline, "the sleepers never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (prefix, address) = (lan.prefix().to_owned(), format!("inet {}/", a.ip()));
    drop(lan);

    let left: Vec<String> = namespaces()
        .into_iter()
        .filter(|netns| netns.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let root = ip(&["-o", "address"]) + &ip(&["-o", "link"]);
    assert!(
        !root.contains(&prefix) && !root.contains(&address),
        "{root}"
    );
    // Killed, not waited for by the `Lan`: their parent (this process) reaps them.
    assert!(crate::live_processes_with(&marker).is_empty());
    for child in sleepers.iter_mut().chain(daemon.process.as_mut()) {
        let status = child.try_wait().expect("wait");
        assert!(status.is_some(), "process {} survived the Lan", child.id());
    }
}
