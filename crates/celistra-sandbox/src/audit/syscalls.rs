//! Names of the syscalls a sandbox typically blocks, by the audit architecture a seccomp record
//! names (the record's `arch=`, so a 64-bit daemon also names what an aarch64 record reports).

/// `AUDIT_ARCH_X86_64` and `AUDIT_ARCH_AARCH64` (`include/uapi/linux/audit.h`).
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

/// (name, number on x86_64, number on aarch64); `None` where the architecture lacks the syscall.
type Entry = (&'static str, Option<i64>, Option<i64>);

const SYSCALLS: &[Entry] = &[
    ("ioctl", Some(16), Some(29)),
    ("clone", Some(56), Some(220)),
    ("fork", Some(57), None),
    ("vfork", Some(58), None),
    ("execve", Some(59), Some(221)),
    ("ptrace", Some(101), Some(117)),
    ("syslog", Some(103), Some(116)),
    ("personality", Some(135), Some(92)),
    ("pivot_root", Some(155), Some(41)),
    ("chroot", Some(161), Some(51)),
    ("acct", Some(163), Some(89)),
    ("settimeofday", Some(164), Some(170)),
    ("mount", Some(165), Some(40)),
    ("umount2", Some(166), Some(39)),
    ("swapon", Some(167), Some(224)),
    ("swapoff", Some(168), Some(225)),
    ("reboot", Some(169), Some(142)),
    ("iopl", Some(172), None),
    ("ioperm", Some(173), None),
    ("init_module", Some(175), Some(105)),
    ("delete_module", Some(176), Some(106)),
    ("quotactl", Some(179), Some(60)),
    ("clock_settime", Some(227), Some(112)),
    ("kexec_load", Some(246), Some(104)),
    ("add_key", Some(248), Some(217)),
    ("request_key", Some(249), Some(218)),
    ("keyctl", Some(250), Some(219)),
    ("unshare", Some(272), Some(97)),
    ("perf_event_open", Some(298), Some(241)),
    ("name_to_handle_at", Some(303), Some(264)),
    ("open_by_handle_at", Some(304), Some(265)),
    ("setns", Some(308), Some(268)),
    ("process_vm_readv", Some(310), Some(270)),
    ("process_vm_writev", Some(311), Some(271)),
    ("kcmp", Some(312), Some(272)),
    ("finit_module", Some(313), Some(273)),
    ("seccomp", Some(317), Some(277)),
    ("kexec_file_load", Some(320), Some(294)),
    ("bpf", Some(321), Some(280)),
    ("execveat", Some(322), Some(281)),
    ("userfaultfd", Some(323), Some(282)),
    ("io_uring_setup", Some(425), Some(425)),
    ("io_uring_enter", Some(426), Some(426)),
    ("io_uring_register", Some(427), Some(427)),
    ("open_tree", Some(428), Some(428)),
    ("move_mount", Some(429), Some(429)),
    ("fsopen", Some(430), Some(430)),
    ("fsconfig", Some(431), Some(431)),
    ("fsmount", Some(432), Some(432)),
    ("fspick", Some(433), Some(433)),
    ("clone3", Some(435), Some(435)),
    ("mount_setattr", Some(442), Some(442)),
];

/// The name of syscall `number` on audit architecture `arch`, if it is in the table.
pub(crate) fn syscall_name(arch: u32, number: i64) -> Option<&'static str> {
    let number_of = numbering(arch)?;
    SYSCALLS
        .iter()
        .find(|entry| number_of(entry) == Some(number))
        .map(|entry| entry.0)
}

/// Which column of the table holds `arch`'s numbers.
fn numbering(arch: u32) -> Option<fn(&Entry) -> Option<i64>> {
    match arch {
        AUDIT_ARCH_X86_64 => Some(|entry| entry.1),
        AUDIT_ARCH_AARCH64 => Some(|entry| entry.2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_architecture() {
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 101), Some("ptrace"));
        assert_eq!(syscall_name(AUDIT_ARCH_AARCH64, 117), Some("ptrace"));
        assert_eq!(syscall_name(AUDIT_ARCH_AARCH64, 57), None);
        assert_eq!(syscall_name(0x4000_0003, 26), None, "i386 is not tabled");
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, -1), None);
    }

    /// The table against the C library's numbers for the architecture the tests run on.
    #[test]
    fn numbers_match_libc_on_this_architecture() {
        let arch = if cfg!(target_arch = "x86_64") {
            AUDIT_ARCH_X86_64
        } else if cfg!(target_arch = "aarch64") {
            AUDIT_ARCH_AARCH64
        } else {
            return;
        };
        let number_of = numbering(arch).expect("a tabled architecture");
        let libc_numbers: &[(&str, libc::c_long)] = &[
            ("ioctl", libc::SYS_ioctl),
            ("clone", libc::SYS_clone),
            ("execve", libc::SYS_execve),
            ("ptrace", libc::SYS_ptrace),
            ("mount", libc::SYS_mount),
            ("umount2", libc::SYS_umount2),
            ("pivot_root", libc::SYS_pivot_root),
            ("reboot", libc::SYS_reboot),
            ("init_module", libc::SYS_init_module),
            ("finit_module", libc::SYS_finit_module),
            ("kexec_load", libc::SYS_kexec_load),
            ("keyctl", libc::SYS_keyctl),
            ("unshare", libc::SYS_unshare),
            ("setns", libc::SYS_setns),
            ("perf_event_open", libc::SYS_perf_event_open),
            ("process_vm_readv", libc::SYS_process_vm_readv),
            ("bpf", libc::SYS_bpf),
            ("userfaultfd", libc::SYS_userfaultfd),
            ("clone3", libc::SYS_clone3),
            ("open_by_handle_at", libc::SYS_open_by_handle_at),
            ("mount_setattr", libc::SYS_mount_setattr),
        ];
        for (name, number) in libc_numbers {
            assert_eq!(syscall_name(arch, *number), Some(*name));
        }
        for entry in SYSCALLS {
            if let Some(number) = number_of(entry) {
                assert_eq!(
                    syscall_name(arch, number),
                    Some(entry.0),
                    "duplicate number"
                );
            }
        }
    }
}
