//! The seccomp filter of every sandboxed program: system calls that escape or weaken the sandbox
//! (namespaces, mounts, tracing, kernel keys and modules, typing into a terminal) fail, and without
//! `subprocess` so does creating processes. Compiled and installed by the launcher, logged so
//! that denials become audit records.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use crate::Error;

/// Denied with EPERM whatever the policy; names missing on an architecture are skipped.
const ALWAYS_DENIED: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "fsopen",
    "fsmount",
    "fspick",
    "open_tree",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "setns",
    "unshare",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "iopl",
    "ioperm",
];

/// Denied with EPERM without `subprocess` (aarch64 has neither; there `clone` is all).
const PROCESS_CREATION: &[&str] = &["fork", "vfork"];

const NAMESPACE_FLAGS: [(&str, libc::c_int); 7] = [
    ("CLONE_NEWNS", libc::CLONE_NEWNS),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
    ("CLONE_NEWPID", libc::CLONE_NEWPID),
    ("CLONE_NEWNET", libc::CLONE_NEWNET),
];

/// `ioctl` requests that act on a terminal beyond the caller's own output (the generic numbers,
/// shared by x86_64 and aarch64; libc's type for them differs between glibc and musl).
const DENIED_IOCTLS: [(&str, u64); 2] = [("TIOCSTI", 0x5412), ("TIOCLINUX", 0x541C)];

/// Bit that marks the x32 ABI in a system call number on x86_64 (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const SECCOMP_FILTER_FLAG_LOG: libc::c_ulong = 2;

/// The system calls the filters name, with this architecture's numbers (libc's constants are per
/// target, so one list serves both).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SYSCALLS: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("clone", libc::SYS_clone),
    ("clone3", libc::SYS_clone3),
    ("ioctl", libc::SYS_ioctl),
];

/// Calls only x86_64 has (aarch64 has no port I/O calls and forks through `clone`).
#[cfg(target_arch = "x86_64")]
const ARCH_ONLY_SYSCALLS: &[(&str, i64)] = &[
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("fork", libc::SYS_fork),
    ("vfork", libc::SYS_vfork),
];

#[cfg(not(target_arch = "x86_64"))]
const ARCH_ONLY_SYSCALLS: &[(&str, i64)] = &[];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYSCALLS: &[(&str, i64)] = &[];

/// The architecture filters are compiled for: the one this binary runs on, if seccompiler and our
/// system call table know it.
pub(crate) fn target_arch() -> Result<TargetArch, Error> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(Error::UnsupportedArch {
            arch: std::env::consts::ARCH,
        })
    }
}

fn number(name: &str) -> Option<i64> {
    SYSCALLS
        .iter()
        .chain(ARCH_ONLY_SYSCALLS)
        .find(|(known, _)| *known == name)
        .map(|&(_, nr)| nr)
}

fn present<'a>(names: &'a [&'a str]) -> impl Iterator<Item = &'a str> {
    names.iter().copied().filter(|name| number(name).is_some())
}

/// Human-readable lines, one per kind of denial, for `ctl sandbox explain`.
pub(crate) fn describe(subprocess: bool) -> Vec<String> {
    let join = |names: Vec<&str>| names.join(", ");
    let mut lines = vec![
        format!(
            "EPERM: {}",
            join(present(ALWAYS_DENIED).collect::<Vec<_>>())
        ),
        format!(
            "EPERM: ioctl {} (typing into or controlling a terminal)",
            join(DENIED_IOCTLS.iter().map(|(name, _)| *name).collect())
        ),
        format!(
            "EPERM: clone with any of {} (new namespaces)",
            join(NAMESPACE_FLAGS.iter().map(|(name, _)| *name).collect())
        ),
        "ENOSYS: clone3 (a filter cannot read its flags; libc falls back to clone)".to_owned(),
    ];
    if !subprocess {
        let mut creators: Vec<&str> = present(PROCESS_CREATION).collect();
        creators.push("clone without CLONE_THREAD");
        lines.push(format!(
            "EPERM: {} (no new processes; threads still work)",
            join(creators)
        ));
    }
    if cfg!(target_arch = "x86_64") {
        lines.push("ENOSYS: every x32-ABI system call".to_owned());
    }
    lines.push(format!(
        "system calls of other architectures than {} kill the process",
        std::env::consts::ARCH
    ));
    lines.push(
        "installed with SECCOMP_FILTER_FLAG_LOG: with kernel audit on, each denial is an AUDIT_SECCOMP record"
            .to_owned(),
    );
    lines
}

fn condition(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> SeccompRule {
    SeccompCondition::new(arg, len, op, value)
        .and_then(|c| SeccompRule::new(vec![c]))
        .expect("argument indexes below 6 are valid")
}

/// The compiled filters. seccompiler gives one action per filter, so the ENOSYS answers are filters
/// of their own; the kernel runs all of them and the strictest answer wins.
pub(crate) struct Filters {
    /// What the sandbox refuses (EPERM): installed with `SECCOMP_FILTER_FLAG_LOG`, so each
    /// refusal is an audit record.
    denials: BpfProgram,
    /// ENOSYS for calls libc falls back from (clone3) or that do not exist here (x32): not
    /// logged, since they are compatibility answers, not blocks.
    compatibility: Vec<BpfProgram>,
}

pub(crate) fn compile(subprocess: bool) -> Result<Filters, seccompiler::BackendError> {
    let arch = target_arch().map_err(|_| {
        seccompiler::BackendError::InvalidTargetArch(std::env::consts::ARCH.to_owned())
    })?;
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> = present(ALWAYS_DENIED)
        .filter_map(|name| Some((number(name)?, Vec::new())))
        .collect();
    if let Some(ioctl) = number("ioctl") {
        // The request is an `unsigned int` to the kernel: compare only its low 32 bits, so set
        // high bits cannot slip past.
        let rules = DENIED_IOCTLS
            .iter()
            .map(|&(_, request)| condition(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request))
            .collect();
        denied.insert(ioctl, rules);
    }
    if let Some(clone) = number("clone") {
        // Flags are the first argument of clone on both architectures.
        let mut rules: Vec<SeccompRule> = NAMESPACE_FLAGS
            .iter()
            .map(|&(_, flag)| {
                let flag = flag as u64;
                condition(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
            })
            .collect();
        if !subprocess {
            let thread = libc::CLONE_THREAD as u64;
            rules.push(condition(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(thread),
                0,
            ));
        }
        denied.insert(clone, rules);
    }
    if !subprocess {
        denied
            .extend(present(PROCESS_CREATION).filter_map(|name| Some((number(name)?, Vec::new()))));
    }
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let enosys = SeccompAction::Errno(libc::ENOSYS as u32);
    let denials = BpfProgram::try_from(SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        eperm,
        arch,
    )?)?;
    let mut compatibility = vec![];
    if let Some(clone3) = number("clone3") {
        compatibility.push(BpfProgram::try_from(SeccompFilter::new(
            BTreeMap::from([(clone3, Vec::new())]),
            SeccompAction::Allow,
            enosys.clone(),
            arch,
        )?)?);
    }
    if arch == TargetArch::x86_64 {
        compatibility.push(x32_guard(u32::from(enosys)));
    }
    Ok(Filters {
        denials,
        compatibility,
    })
}

/// x32 system calls reuse the x86_64 architecture value with [`X32_SYSCALL_BIT`] set in the number,
/// so a table of x86_64 numbers never matches them. This filter answers all of them with
/// `answer`. (The first filter already kills other architectures.)
fn x32_guard(answer: u32) -> BpfProgram {
    const LOAD_WORD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JUMP_IF_GE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RETURN: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const SECCOMP_DATA_NR_OFFSET: u32 = 0;
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        op(LOAD_WORD_ABS, 0, 0, SECCOMP_DATA_NR_OFFSET),
        op(JUMP_IF_GE, 0, 1, X32_SYSCALL_BIT),
        op(RETURN, 0, 0, answer),
        op(RETURN, 0, 0, u32::from(SeccompAction::Allow)),
    ]
}

/// `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const sock_filter,
}

/// Sets `no_new_privs` (required for an unprivileged filter, and wanted anyway) and installs the
/// filters on the calling thread, the denials with `SECCOMP_FILTER_FLAG_LOG` (which seccompiler's
/// `apply_filter` does not offer).
pub(crate) fn install(filters: &Filters) -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes only integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let logged = std::iter::once((&filters.denials, SECCOMP_FILTER_FLAG_LOG));
    let quiet = filters.compatibility.iter().map(|program| (program, 0));
    for (program, flags) in logged.chain(quiet) {
        let len = u16::try_from(program.len())
            .map_err(|_| std::io::Error::other("seccomp program longer than 65535 instructions"))?;
        let fprog = SockFprog {
            len,
            filter: program.as_ptr(),
        };
        // SAFETY: `fprog` points at `len` instructions of `program`, both alive for the call; the
        // kernel copies the program and keeps no pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                flags,
                &raw const fprog,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_both_policies() {
        for subprocess in [true, false] {
            let filters = compile(subprocess).unwrap();
            assert_eq!(
                filters.compatibility.len(),
                if cfg!(target_arch = "x86_64") { 2 } else { 1 }
            );
            let all = std::iter::once(&filters.denials).chain(&filters.compatibility);
            assert!(all.into_iter().all(|p| !p.is_empty() && p.len() < 1000));
        }
    }

    /// The errno of a failed call; read at once, before another call changes it.
    fn errno_of(rc: libc::c_long) -> Option<i32> {
        (rc == -1).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
    }

    #[test]
    fn a_filtered_thread_may_start_threads_but_not_processes() {
        // The filter binds only this helper thread and the threads it starts.
        std::thread::spawn(|| {
            install(&compile(false).unwrap()).unwrap();
            assert_eq!(std::thread::spawn(|| 7).join().unwrap(), 7);
            // SAFETY: the filter makes fork fail; were it to succeed, the child exits at once.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: leaves the forked copy without running anything of the test harness.
                unsafe { libc::_exit(0) };
            }
            assert_eq!(errno_of(pid.into()), Some(libc::EPERM));
            // SAFETY: plain system calls on integers and null pointers; each is refused.
            let unshare =
                errno_of(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) });
            assert_eq!(unshare, Some(libc::EPERM));
            // SAFETY: as above.
            let clone3 = errno_of(unsafe {
                libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize)
            });
            assert_eq!(clone3, Some(libc::ENOSYS));
            // TIOCSTI with high bits set, which the kernel would ignore.
            // SAFETY: as above; the byte pointer is valid.
            let tiocsti = errno_of(unsafe {
                libc::syscall(libc::SYS_ioctl, 0, 0x1_0000_5412u64, c"x".as_ptr())
            });
            assert_eq!(tiocsti, Some(libc::EPERM));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn description_names_the_denials() {
        let with = describe(true).join("\n");
        let without = describe(false).join("\n");
        for text in [&with, &without] {
            for name in [
                "ptrace",
                "mount_setattr",
                "TIOCSTI",
                "CLONE_NEWUSER",
                "clone3",
            ] {
                assert!(text.contains(name), "{name} missing in {text}");
            }
        }
        assert!(!with.contains("CLONE_THREAD"));
        assert!(without.contains("clone without CLONE_THREAD"));
    }
}
