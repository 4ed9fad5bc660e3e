//! What the kernel blocked, read from the records of one audit event: Landlock denials
//! (`LANDLOCK_ACCESS`, with the acting process from the event's `SYSCALL` record), seccomp
//! denials (`SECCOMP`), and the lifecycle of Landlock domains (`LANDLOCK_DOMAIN`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::record::{Record, kind};
use super::syscalls::syscall_name;

/// One action the kernel denied to a sandboxed process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelBlock {
    /// When the kernel denied it, in milliseconds since the Unix epoch (the audit event's time).
    pub time_ms: u64,
    /// The process that was denied; 0 when the kernel logged no process for the event.
    pub pid: u32,
    pub exe: Option<String>,
    pub comm: Option<String>,
    /// The Landlock domain that denied it (a hexadecimal id); `None` for seccomp.
    pub domain: Option<String>,
    /// The process's audit session (`ses=`), when one was set: the daemon starts one per run, so it
    /// names the run even after the process is gone.
    pub session: Option<u32>,
    pub what: Blocked,
}

/// The denied action. Its `Display` is a one-line description such as `write_file /etc/x`,
/// `connect_tcp port 80` or `syscall ptrace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blocked {
    /// Landlock filesystem rights, e.g. `write_file`, `make_reg`; the path is the file or, for
    /// creations, the directory.
    Filesystem {
        access: Vec<String>,
        path: Option<String>,
    },
    /// A Landlock TCP right (`connect_tcp`, `bind_tcp`) and the port asked for.
    Network { access: String, port: u16 },
    /// A Landlock scope (`signal`, `abstract_unix_socket`) or `ptrace` restriction, and whom the
    /// process tried to reach: `pid 1 (init)` or an abstract socket `@name`.
    Scope {
        access: String,
        target: Option<String>,
    },
    /// A syscall a seccomp filter refused (errno, trap or kill).
    Syscall { number: i64, name: Option<String> },
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocked::Filesystem { access, path } => {
                f.write_str(&access.join(","))?;
                path.iter().try_for_each(|path| write!(f, " {path}"))
            }
            Blocked::Network { access, port } => write!(f, "{access} port {port}"),
            Blocked::Scope { access, target } => {
                f.write_str(access)?;
                target.iter().try_for_each(|target| write!(f, " {target}"))
            }
            Blocked::Syscall {
                name: Some(name), ..
            } => write!(f, "syscall {name}"),
            Blocked::Syscall { number, name: None } => write!(f, "syscall {number}"),
        }
    }
}

/// What one audit event says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EventFacts {
    pub(crate) blocks: Vec<KernelBlock>,
    /// Landlock domains logged for the first time, with the pid that created each.
    pub(crate) domains_created: Vec<(String, u32)>,
    /// Landlock domains the kernel freed: no later record names them.
    pub(crate) domains_freed: Vec<String>,
}

/// Reads the records of one event (all with the same stamp).
pub(crate) fn read_event(records: &[Record]) -> EventFacts {
    let mut facts = EventFacts::default();
    let actor = records.iter().find(|r| r.kind == kind::SYSCALL);
    for record in records {
        match record.kind {
            kind::LANDLOCK_ACCESS => facts.blocks.extend(landlock_block(record, actor)),
            kind::SECCOMP => facts.blocks.extend(seccomp_block(record)),
            kind::LANDLOCK_DOMAIN => {
                let Some(domain) = record.field("domain").map(|v| v.raw().to_owned()) else {
                    continue;
                };
                match record.field("status").map(|v| v.raw()) {
                    Some("allocated") => {
                        if let Some(creator) = record.number("pid") {
                            facts.domains_created.push((domain, creator));
                        }
                    }
                    Some("deallocated") => facts.domains_freed.push(domain),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    facts
}

/// A `LANDLOCK_ACCESS` record, e.g. `domain=186baf5e4 blockers=fs.make_reg path="/etc" dev="vda"
/// ino=19`. The acting process comes from the event's `SYSCALL` record, when there is one.
fn landlock_block(record: &Record, actor: Option<&Record>) -> Option<KernelBlock> {
    let blockers = record.field("blockers")?.raw();
    let first = blockers.split(',').find(|b| !b.is_empty())?;
    let what = if first.starts_with("fs.") {
        Blocked::Filesystem {
            access: blockers
                .split(',')
                .filter_map(|b| b.strip_prefix("fs."))
                .map(str::to_owned)
                .collect(),
            path: record.text("path"),
        }
    } else if let Some(access) = first.strip_prefix("net.") {
        // Landlock logs a bind's port as the source, a connect's as the destination; port 0 (an
        // ephemeral bind) is not logged at all.
        let port_field = if access.starts_with("bind") {
            "src"
        } else {
            "dest"
        };
        Blocked::Network {
            access: access.to_owned(),
            port: record.number(port_field).unwrap_or(0),
        }
    } else if let Some(access) = first
        .strip_prefix("scope.")
        .or((first == "ptrace").then_some(first))
    {
        Blocked::Scope {
            access: access.to_owned(),
            target: scope_target(record),
        }
    } else {
        tracing::debug!(blockers, "Landlock denial of an unknown kind ignored");
        return None;
    };
    Some(KernelBlock {
        time_ms: record.stamp.time_ms,
        pid: actor.and_then(|a| a.number("pid")).unwrap_or(0),
        exe: actor.and_then(|a| a.text("exe")),
        comm: actor.and_then(|a| a.text("comm")),
        domain: record.field("domain").map(|v| v.raw().to_owned()),
        session: actor.and_then(audit_session),
        what,
    })
}

/// A record's audit session; `4294967295` (-1) means none was ever set.
fn audit_session(record: &Record) -> Option<u32> {
    record.number::<u32>("ses").filter(|ses| *ses != u32::MAX)
}

/// Whom a scoped action aimed at: a process (`opid`, `ocomm`) or an abstract unix socket (`path`,
/// whose leading NUL is written `@` as `ss` does).
fn scope_target(record: &Record) -> Option<String> {
    if let Some(pid) = record.number::<u32>("opid") {
        return Some(match record.text("ocomm") {
            Some(comm) => format!("pid {pid} ({comm})"),
            None => format!("pid {pid}"),
        });
    }
    let path = record.text("path")?;
    Some(match path.strip_prefix('\0') {
        Some(abstract_name) => format!("@{abstract_name}"),
        None => path,
    })
}

/// `SECCOMP_RET_ACTION_FULL` and the actions that deny the syscall. `LOG`, `TRACE` and
/// `USER_NOTIF` are logged too, but may let the syscall run.
const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
const SECCOMP_DENYING_ACTIONS: [u32; 4] = [
    0x8000_0000, // KILL_PROCESS
    0x0000_0000, // KILL_THREAD
    0x0003_0000, // TRAP
    0x0005_0000, // ERRNO
];

/// A `SECCOMP` record, e.g. `pid=29428 comm="unshare" exe="/usr/bin/unshare" sig=0 arch=c000003e
/// syscall=272 compat=0 ip=0x7f550b99e0f7 code=0x50000`.
fn seccomp_block(record: &Record) -> Option<KernelBlock> {
    let code = record.field("code")?.raw();
    let code = u32::from_str_radix(code.strip_prefix("0x").unwrap_or(code), 16).ok()?;
    if !SECCOMP_DENYING_ACTIONS.contains(&(code & SECCOMP_RET_ACTION_FULL)) {
        return None;
    }
    let number = record.number("syscall")?;
    let arch = record
        .field("arch")
        .and_then(|v| u32::from_str_radix(v.raw(), 16).ok());
    Some(KernelBlock {
        time_ms: record.stamp.time_ms,
        pid: record.number("pid").unwrap_or(0),
        exe: record.text("exe"),
        comm: record.text("comm"),
        domain: None,
        session: audit_session(record),
        what: Blocked::Syscall {
            number,
            name: arch
                .and_then(|arch| syscall_name(arch, number))
                .map(str::to_owned),
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Records captured on the project's machine (kernel 6.18, audit enabled, no auditd), as
    /// `(type, text)`.
    pub(crate) const WRITE_DENIED: &[(u16, &str)] = &[
        (
            1423,
            r#"audit(1795448479.102:3): domain=186baf5e4 blockers=fs.write_file path="/dev/tty" dev="devtmpfs" ino=9"#,
        ),
        (
            1424,
            r#"audit(1795448479.102:3): domain=186baf5e4 status=allocated mode=enforcing pid=29368 uid=0 exe="/tmp/audit-scratch/target/debug/audit-scratch" comm="audit-scratch""#,
        ),
        (
            1300,
            r#"audit(1795448479.102:3): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c a1=55e916de63c2 a2=802 a3=0 items=0 ppid=28855 pid=29368 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="bash" exe="/usr/bin/bash" key=(null)"#,
        ),
        (
            1327,
            "audit(1795448479.102:3): proctitle=2F62696E2F62617368002D63006563686F203E202F6574632F63656C69737472612D736372617463682D64656E696564",
        ),
        (1320, "audit(1795448479.102:3): "),
    ];
    /// The next event of the same process: creating a file in `/etc`.
    pub(crate) const MAKE_REG_DENIED: &[(u16, &str)] = &[
        (
            1423,
            r#"audit(1795448479.102:4): domain=186baf5e4 blockers=fs.make_reg path="/etc" dev="vda" ino=19"#,
        ),
        (
            1300,
            r#"audit(1795448479.102:4): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c a1=55e93d044ab0 a2=241 a3=1b6 items=0 ppid=28855 pid=29368 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="bash" exe="/usr/bin/bash" key=(null)"#,
        ),
        (
            1327,
            "audit(1795448479.102:4): proctitle=2F62696E2F62617368002D63006563686F203E202F6574632F63656C69737472612D736372617463682D64656E696564",
        ),
        (1320, "audit(1795448479.102:4): "),
    ];
    pub(crate) const CONNECT_DENIED: &[(u16, &str)] = &[
        (
            1423,
            "audit(1795448480.446:10): domain=186baf5ec blockers=net.connect_tcp daddr=127.0.0.1 dest=38573",
        ),
        (
            1300,
            r#"audit(1795448480.446:10): arch=c000003e syscall=42 success=no exit=-13 a0=3 a1=55886ab1fbc0 a2=10 a3=7f15bb415ac0 items=0 ppid=28855 pid=29420 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="bash" exe="/usr/bin/bash" key=(null)"#,
        ),
        (1320, "audit(1795448480.446:10): "),
    ];
    pub(crate) const SECCOMP_DENIED: (u16, &str) = (
        1326,
        r#"audit(1795448481.762:15): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=29428 comm="unshare" exe="/usr/bin/unshare" sig=0 arch=c000003e syscall=272 compat=0 ip=0x7f550b99e0f7 code=0x50000"#,
    );
    pub(crate) const DOMAIN_FREED: (u16, &str) = (
        1424,
        "audit(1795448479.170:5): domain=186baf5e4 status=deallocated denials=2",
    );

    pub(crate) fn records(texts: &[(u16, &str)]) -> Vec<Record> {
        texts
            .iter()
            .map(|(kind, text)| Record::parse(*kind, text.as_bytes()).expect("a valid record"))
            .collect()
    }

    fn only_block(texts: &[(u16, &str)]) -> KernelBlock {
        let facts = read_event(&records(texts));
        assert_eq!(facts.blocks.len(), 1, "{facts:?}");
        facts.blocks.into_iter().next().expect("one block")
    }

    fn single_landlock(access_record: &str) -> Blocked {
        only_block(&[(1423, access_record)]).what
    }

    #[test]
    fn a_filesystem_denial_with_its_process_and_domain() {
        let facts = read_event(&records(WRITE_DENIED));
        assert_eq!(
            facts.blocks,
            vec![KernelBlock {
                time_ms: 1_795_448_479_102,
                pid: 29368,
                exe: Some("/usr/bin/bash".into()),
                comm: Some("bash".into()),
                domain: Some("186baf5e4".into()),
                session: None,
                what: Blocked::Filesystem {
                    access: vec!["write_file".into()],
                    path: Some("/dev/tty".into()),
                },
            }]
        );
        assert_eq!(facts.domains_created, [("186baf5e4".to_owned(), 29368)]);
        assert_eq!(facts.blocks[0].what.to_string(), "write_file /dev/tty");
        let created = only_block(MAKE_REG_DENIED);
        assert_eq!(created.what.to_string(), "make_reg /etc");
    }

    #[test]
    fn a_connect_denial() {
        let block = only_block(CONNECT_DENIED);
        assert_eq!(block.pid, 29420);
        assert_eq!(
            block.what,
            Blocked::Network {
                access: "connect_tcp".into(),
                port: 38573
            }
        );
        assert_eq!(block.what.to_string(), "connect_tcp port 38573");
    }

    #[test]
    fn a_bind_denial_reads_the_source_port() {
        let what = single_landlock(
            "audit(1795448567.650:52): domain=186baf60f blockers=net.bind_tcp saddr=127.0.0.1 src=8081",
        );
        assert_eq!(
            what,
            Blocked::Network {
                access: "bind_tcp".into(),
                port: 8081
            }
        );
        let ephemeral =
            single_landlock("audit(1.000:1): domain=1 blockers=net.bind_tcp saddr=127.0.0.1");
        assert_eq!(ephemeral.to_string(), "bind_tcp port 0");
    }

    #[test]
    fn hex_encoded_paths_are_decoded() {
        let what = single_landlock(
            r#"audit(1795448566.814:32): domain=186baf60c blockers=fs.write_file path=2F7661722F746D702F63656C20736372617463682F612062 dev="vda" ino=820289"#,
        );
        assert_eq!(what.to_string(), "write_file /var/tmp/cel scratch/a b");
        let unicode = single_landlock(
            r#"audit(1795448566.814:33): domain=186baf60c blockers=fs.write_file path=2F7661722F746D702F63656C20736372617463682FC3BC dev="vda" ino=820290"#,
        );
        assert_eq!(unicode.to_string(), "write_file /var/tmp/cel scratch/ü");
    }

    #[test]
    fn several_filesystem_rights_and_none_with_a_path() {
        let what = single_landlock(
            r#"audit(1.000:1): domain=1 blockers=fs.write_file,fs.truncate path="/etc/passwd""#,
        );
        assert_eq!(what.to_string(), "write_file,truncate /etc/passwd");
        let topology = single_landlock("audit(1.000:1): domain=1 blockers=fs.change_topology");
        assert_eq!(
            topology,
            Blocked::Filesystem {
                access: vec!["change_topology".into()],
                path: None
            }
        );
    }

    #[test]
    fn scope_denials_name_their_target() {
        let signal = single_landlock(
            r#"audit(1795448566.150:29): domain=186baf60b blockers=scope.signal opid=1 ocomm="process_api""#,
        );
        assert_eq!(signal.to_string(), "signal pid 1 (process_api)");
        let socket = single_landlock(
            "audit(1795448568.514:71): domain=186baf61f blockers=scope.abstract_unix_socket path=0063656C69737472612D616273",
        );
        assert_eq!(
            socket,
            Blocked::Scope {
                access: "abstract_unix_socket".into(),
                target: Some("@celistra-abs".into())
            }
        );
        let ptrace = single_landlock(
            "audit(1.000:1): domain=1 blockers=ptrace opid=7 ocomm=746F7020736563726574",
        );
        assert_eq!(ptrace.to_string(), "ptrace pid 7 (top secret)");
    }

    #[test]
    fn a_seccomp_errno_is_a_named_syscall_block() {
        let block = only_block(&[SECCOMP_DENIED]);
        assert_eq!(block.pid, 29428);
        assert_eq!(block.comm.as_deref(), Some("unshare"));
        assert_eq!(block.domain, None);
        assert_eq!(
            block.what,
            Blocked::Syscall {
                number: 272,
                name: Some("unshare".into())
            }
        );
        assert_eq!(block.what.to_string(), "syscall unshare");
    }

    #[test]
    fn denying_seccomp_actions_match_the_kernel_headers() {
        assert_eq!(SECCOMP_RET_ACTION_FULL, libc::SECCOMP_RET_ACTION_FULL);
        assert_eq!(
            SECCOMP_DENYING_ACTIONS,
            [
                libc::SECCOMP_RET_KILL_PROCESS,
                libc::SECCOMP_RET_KILL_THREAD,
                libc::SECCOMP_RET_TRAP,
                libc::SECCOMP_RET_ERRNO
            ]
        );
    }

    #[test]
    fn seccomp_records_that_do_not_deny_are_not_blocks() {
        for code in ["0x7ffc0000", "0x7fc00000", "0x7ff00000", "garbage", ""] {
            let text = format!("audit(1.000:1): pid=5 arch=c000003e syscall=101 code={code}");
            let facts = read_event(&records(&[(1326, &text)]));
            assert!(facts.blocks.is_empty(), "{code}");
        }
        let killed = only_block(&[(
            1326,
            "audit(1.000:1): pid=5 arch=c00000b7 syscall=999 code=0x80000000",
        )]);
        assert_eq!(killed.what.to_string(), "syscall 999");
    }

    #[test]
    fn without_a_syscall_record_the_process_is_unknown() {
        let block = only_block(&WRITE_DENIED[..1]);
        assert_eq!((block.pid, block.comm), (0, None));
    }

    #[test]
    fn domain_lifecycle() {
        let freed = read_event(&records(&[DOMAIN_FREED]));
        assert_eq!(freed.domains_freed, ["186baf5e4"]);
        assert!(freed.blocks.is_empty() && freed.domains_created.is_empty());
    }

    #[test]
    fn unknown_and_incomplete_records_are_skipped() {
        let facts = read_event(&records(&[
            (1423, "audit(1.000:1): domain=1 blockers=quantum.entangle"),
            (1423, "audit(1.000:1): domain=1"),
            (1423, "audit(1.000:1): domain=1 blockers="),
            (1424, "audit(1.000:1): status=allocated pid=3"),
            (1424, "audit(1.000:1): domain=2 status=allocated"),
            (1326, "audit(1.000:1): pid=5 code=0x50000"),
            (9999, "audit(1.000:1): anything=at all"),
        ]));
        assert_eq!(facts, EventFacts::default());
    }
}
