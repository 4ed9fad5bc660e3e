//! The daemon's and the keeper's own memory: the code pages (the executable's and its shared
//! libraries') that start-up or a burst of work read and an idle process never touches again,
//! and the free memory left inside the heap, given back ([`release_idle_memory`]); and the
//! sandbox init's set-up memory, given back whole.
//!
//! Start-up runs code that never runs again (the route table and the OpenAPI document, TLS,
//! SQLite, restoring agents), and the kernel maps up to 64 KiB around each page it faults in
//! (fault-around), so an idle daemon kept most of its code resident: 11 of 17 MB of text.
//! `MADV_DONTNEED` on a read-only, unmodified file mapping only unmaps those pages:
//! they stay in the page cache, and a page needed again comes back with a minor fault. A mapping
//! holding a modified private page is left alone, since dropping it would lose the change (the
//! relocated `.data.rel.ro`, a debugger's breakpoint).

use std::ffi::c_void;
use std::io;

/// One mapping of `/proc/self/smaps`, as far as this module needs it.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    readable: bool,
    writable: bool,
    executable: bool,
    /// One of the kernel's own (`[vvar]`, `[vdso]`, …), not the heap's or the stack's.
    special: bool,
    /// Copy-on-write (`p`), not shared with other processes (`s`).
    private: bool,
    /// Inode of the mapped file; 0 for anonymous memory and the kernel's own mappings.
    inode: u64,
    rss_kb: u64,
    /// Pages that differ from the file: private copies made by a write. (`Private_Dirty` would
    /// also count page-cache pages not yet written back, e.g. of a binary just linked.)
    modified_kb: u64,
}

impl Mapping {
    /// Private memory a write may have copied or filled: writable data, heap and stack, and
    /// read-only data of a file (relocated at start-up, then made read-only). Not code, nor the
    /// kernel's own mappings.
    fn may_hold_writes(&self) -> bool {
        self.private
            && self.readable
            && !self.executable
            && !self.special
            && (self.writable || self.inode != 0)
    }
}

/// Unmaps the resident pages of every read-only, unmodified file mapping of this process: the
/// executable's code and read-only data, and the shared libraries' (the C library, the loader).
/// Returns how many bytes were resident in the mappings released. A mapping the kernel refuses
/// to unmap (a device's) is left as it is.
fn release_code_pages() -> io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for mapping in parse_smaps(&smaps) {
        let releasable = mapping.inode != 0
            && !mapping.writable
            && mapping.modified_kb == 0
            && mapping.rss_kb > 0;
        if !releasable {
            continue;
        }
        // SAFETY: the range is a whole mapping of a file that no one can write to through it (not
        // writable) and that holds no page differing from the file, so dropping its pages loses
        // nothing: the next access reads the same bytes back from the page cache.
        let unmapped = unsafe {
            rustix::mm::madvise(
                mapping.start as *mut c_void,
                mapping.end - mapping.start,
                rustix::mm::Advice::LinuxDontNeed,
            )
        };
        if unmapped.is_ok() {
            released += mapping.rss_kb * 1024;
        }
    }
    Ok(released)
}

/// Gives the free memory inside the heap back to the kernel (`malloc_trim`): what start-up and
/// a burst of spawns allocated and freed stays mapped otherwise, about 1 MiB of an idle daemon's
/// 7 MiB of anonymous memory (BENCHMARKS.md, issue 18). Does nothing where the C library has no
/// `malloc_trim`.
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: glibc's malloc_trim takes the allocator's locks itself and only releases free
    // chunks; it may run at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What a process that has been quiet for a while no longer needs resident: the heap's free
/// memory ([`release_free_heap`]), then the code pages ([`release_code_pages`]). Returns the
/// bytes of code pages released. The daemon and the keeper call it once quiet after a burst.
pub fn release_idle_memory() -> io::Result<u64> {
    release_free_heap();
    release_code_pages()
}

/// Most mappings [`give_back_private_memory`] gives back: a dynamically linked launcher has about
/// twenty (its own data and read-only data, the C library's and the loader's, heap, stack).
const MOST_MAPPINGS_GIVEN_BACK: usize = 64;

/// Whether this architecture has [`syscall_without_libc`]'s instruction, and so whether a
/// process can give its memory back and still make system calls.
pub(crate) const CAN_GIVE_BACK: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Gives back every private page this process's start-up and set-up wrote: its data and relocated
/// read-only data, heap, TLS and stack, and its libraries'. It keeps the stack from the caller's
/// frame (into which it is inlined) up to a page past `frame` (an address in that frame), and the
/// pages of its command line, which `ps` reads. A page of a file reads as the file again if
/// touched, any other as zeros.
///
/// For the sandbox's init: once the agent is started it only waits for children, and the
/// memory its set-up wrote (decoding the plan, building the root, the C library's start-up and
/// its relocations) is kept for the agent's whole run, in each of a thousand sandboxes.
///
/// # Safety
///
/// The process must have one thread. The caller's frame, which holds `frame` and is smaller than
/// a page, must never return, and afterwards the process may read nothing else it had stored:
/// no allocation, no standard library, no C library (its calls go through relocated tables and
/// `errno` is in its TLS). It makes system calls with [`syscall_without_libc`]. Nothing is given
/// back if `/proc/self` cannot be read.
// Inlined, so that the pages go in the caller's frame: the deeper frames that worked them out
// (reading /proc) are dead by then and go too.
#[inline(always)]
pub(crate) unsafe fn give_back_private_memory(frame: usize) {
    let Ok(pages) = pages_to_give_back(frame, below_this_frame()) else {
        return;
    };
    // From the first range on, this loop calls nothing (`forget` is inlined): a call may go
    // through a relocated table that goes too (even to `max`, in a position-independent build).
    let mut next = 0;
    while next < pages.count {
        let (start, end) = pages.ranges[next];
        // SAFETY: not kept, so the caller vouched that nothing reads it again.
        unsafe { forget(start, end) };
        next += 1;
    }
}

/// Page ranges [`give_back_private_memory`] drops, worked out before the first goes.
#[derive(Clone, Copy)]
struct PagesToGiveBack {
    /// Each mapping holds the kept ranges at most once each: two more pieces than mappings.
    ranges: [(usize, usize); MOST_MAPPINGS_GIVEN_BACK + 2],
    count: usize,
}

/// Room for `/proc/self/maps`, taken before it is read: a heap that grew while it was read would
/// end past what it lists, and the pages that held the text would be kept.
const MAPS_ROOM: usize = 16 * 1024;

/// Every page of the mappings that may hold writes, but the stack from the page of `stack_used`
/// (an address under the frame that drops the pages) to a page past `frame`, and the command
/// line's pages.
#[inline(never)]
fn pages_to_give_back(frame: usize, stack_used: usize) -> io::Result<PagesToGiveBack> {
    use std::io::Read;
    let command_line = command_line_range(&std::fs::read_to_string("/proc/self/stat")?)
        .ok_or_else(|| io::Error::other("/proc/self/stat has no command line range"))?;
    let mut maps = String::with_capacity(MAPS_ROOM);
    std::fs::File::open("/proc/self/maps")?.read_to_string(&mut maps)?;
    let page = rustix::param::page_size();
    let page_of = |address: usize| address / page * page;
    // The frame that drops the pages, up to the caller's (far smaller than a page in a release
    // build). Deeper frames, this one's included, are dead by the time the pages go.
    let mut kept = [
        (page_of(stack_used), page_of(frame) + 2 * page),
        (page_of(command_line.0), page_of(command_line.1) + page),
    ];
    kept.sort_unstable();
    let mut pages = PagesToGiveBack {
        ranges: [(0, 0); MOST_MAPPINGS_GIVEN_BACK + 2],
        count: 0,
    };
    let mut add = |start: usize, end: usize| {
        if start < end && pages.count < pages.ranges.len() {
            pages.ranges[pages.count] = (start, end);
            pages.count += 1;
        }
    };
    let written = maps.lines().filter_map(parse_header);
    for mapping in written
        .filter(Mapping::may_hold_writes)
        .take(MOST_MAPPINGS_GIVEN_BACK)
    {
        let mut from = mapping.start;
        for (kept_start, kept_end) in kept {
            if kept_end <= from || kept_start >= mapping.end {
                continue;
            }
            add(from, kept_start);
            from = from.max(kept_end);
        }
        add(from, mapping.end);
    }
    Ok(pages)
}

/// An address under the caller's frame: this call's own frame is below it, where the caller's
/// next calls go too.
#[inline(never)]
fn below_this_frame() -> usize {
    let marker = 0u8;
    std::hint::black_box(&raw const marker) as usize
}

/// `arg_start` and `arg_end` of `/proc/self/stat`: where the command line's strings are.
fn command_line_range(stat: &str) -> Option<(usize, usize)> {
    // Fields from the third (`state`) on follow the command's name, which may hold spaces.
    let mut fields = stat.rsplit_once(')')?.1.split_ascii_whitespace().skip(45);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// A system call made by its instruction, touching no memory of the C library (no `errno`, no
/// relocated table): what a process calls once it gave its memory back. Its arguments are
/// scalars, so that no call builds them (a compiler may copy an array with `memcpy`). Returns
/// the kernel's answer, a negative errno on failure; where [`CAN_GIVE_BACK`] is false, the C
/// library's `syscall` (-1 on failure).
///
/// # Safety
///
/// As for the system call `number` with these arguments.
#[inline(always)] // No call: in a position-independent build, one may go through a relocated table.
pub(crate) unsafe fn syscall_without_libc(
    number: libc::c_long,
    first: usize,
    second: usize,
    third: usize,
    fourth: usize,
) -> isize {
    let answer: isize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller vouched for the call; `syscall` takes these registers, answers in rax
    // and overwrites rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") number as isize => answer,
            in("rdi") first,
            in("rsi") second,
            in("rdx") third,
            in("r10") fourth,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller vouched for the call; `svc 0` takes the number in x8 and the arguments
    // in x0 to x3, and answers in x0.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") number,
            inlateout("x0") first => answer,
            in("x1") second,
            in("x2") third,
            in("x3") fourth,
            options(nostack),
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // SAFETY: the caller vouched for the call.
        answer = unsafe { libc::syscall(number, first, second, third, fourth) } as isize;
    }
    answer
}

/// `MADV_DONTNEED` on `start..end`, page-aligned and inside one private mapping. By the
/// instruction: once a relocated table is dropped, a call through it (the C library's) would
/// jump to what the file holds there.
///
/// # Safety
///
/// Nothing may read what the range held again: it reads as zeros (or as the mapped file) after.
#[inline(always)] // As `syscall_without_libc`.
unsafe fn forget(start: usize, end: usize) {
    // SAFETY: the caller vouched for the range; dropping the pages of a private mapping cannot
    // affect another process or unmap anything.
    unsafe {
        syscall_without_libc(
            libc::SYS_madvise,
            start,
            end - start,
            libc::MADV_DONTNEED as usize,
            0,
        )
    };
}

/// Most heaps (glibc arenas) the allocator makes. By default glibc makes up to eight per core
/// as threads first allocate, each keeping its own free memory and its own partly used pages. One
/// heap left an idle daemon 0.8 MiB and one with 100 agents 1.5 MiB lighter than the default, and
/// 0.3 MiB lighter than two, while each thread's cache (tcache) still serves most allocations
/// without the heap's lock: `--only throughput` showed no difference (BENCHMARKS.md, issue 18).
const HEAP_ARENAS: libc::c_int = 1;

/// Caps the allocator's heaps at [`HEAP_ARENAS`]. Called first thing in `main`, before any
/// thread exists. Does nothing where the C library is not glibc.
pub fn limit_heap_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; glibc takes its own lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, HEAP_ARENAS);
    }
}

fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut mappings: Vec<Mapping> = vec![];
    for line in text.lines() {
        if let Some(mapping) = parse_header(line) {
            mappings.push(mapping);
            continue;
        }
        let Some(current) = mappings.last_mut() else {
            continue;
        };
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kb = || {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        };
        match key {
            "Rss" => current.rss_kb = kb(),
            "Anonymous" => current.modified_kb = kb(),
            _ => {}
        }
    }
    mappings
}

/// `start-end perms offset major:minor inode [path]`; `None` for the lines that follow it.
fn parse_header(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let _device = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    let path = fields.next().unwrap_or("");
    let perm = |at: usize, letter: u8| perms.as_bytes().get(at) == Some(&letter);
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        readable: perm(0, b'r'),
        writable: perm(1, b'w'),
        executable: perm(2, b'x'),
        special: path.starts_with('[') && path != "[heap]" && path != "[stack]",
        private: perm(3, b'p'),
        inode,
        rss_kb: 0,
        modified_kb: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
558e3dcb4000-558e3e291000 r--p 00000000 fe:00 6155057                    /srv/celistrad
Size:               6004 kB
Rss:                1712 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
558e3f3e5000-558e3f45a000 r--p 0172f000 fe:00 6155057                    /srv/celistrad
Rss:                 468 kB
Private_Dirty:       468 kB
Anonymous:           468 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
Rss:                   8 kB
";

    #[test]
    fn smaps_mappings_carry_their_file_and_their_modified_pages() {
        let mappings = parse_smaps(SMAPS);
        assert_eq!(
            mappings[0],
            Mapping {
                start: 0x558e_3dcb_4000,
                end: 0x558e_3e29_1000,
                readable: true,
                writable: false,
                executable: false,
                special: false,
                private: true,
                inode: 6_155_057,
                rss_kb: 1712,
                modified_kb: 0,
            }
        );
        assert_eq!(mappings[1].modified_kb, 468);
        assert!(mappings[2].writable);
        assert_eq!((mappings[2].inode, mappings[2].rss_kb), (0, 8));
    }

    #[test]
    fn releasing_the_code_pages_shrinks_the_executable_and_the_code_still_runs() {
        use std::os::unix::fs::MetadataExt;
        let resident = || -> u64 {
            let exe = std::fs::metadata("/proc/self/exe").unwrap().ino();
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            parse_smaps(&smaps)
                .iter()
                .filter(|m| m.inode == exe && !m.writable && m.modified_kb == 0)
                .map(|m| m.rss_kb)
                .sum()
        };
        let before = resident();
        assert!(before > 0, "a running test binary has resident code");
        let released = release_code_pages().unwrap();
        assert!(released > 0);
        // This test's own code and the standard library come back as they run.
        let after = resident();
        assert!(
            after < before,
            "{after} kB resident after, {before} kB before"
        );
        assert_eq!(parse_smaps(SMAPS).len(), 3);
    }

    /// KiB resident in the mapping of process `pid` that holds `address`.
    fn resident_kib_around(pid: libc::pid_t, address: usize) -> u64 {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        parse_smaps(&smaps)
            .into_iter()
            .find(|m| m.start <= address && address < m.end)
            .map(|m| m.rss_kb)
            .unwrap()
    }

    /// The mappings of process `pid` holding anonymous pages (its own copies): each one's range,
    /// KiB and smaps header.
    fn anonymous_mappings(pid: libc::pid_t) -> Vec<(usize, usize, u64, String)> {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        let mut listed = vec![];
        let mut current = None;
        for line in smaps.lines() {
            if let Some(mapping) = parse_header(line) {
                current = Some((mapping.start, mapping.end, line));
            } else if let Some(kb) = line.strip_prefix("Anonymous:")
                && let Some((start, end, header)) = current
            {
                let kb: u64 = kb.trim().trim_end_matches(" kB").parse().unwrap();
                if kb > 0 {
                    listed.push((start, end, kb, header.to_owned()));
                }
            }
        }
        listed
    }

    /// The forked child's side: gives its memory back, says so through `to_parent` with its own
    /// frame and system calls alone, and waits to be killed.
    #[inline(never)]
    fn give_back_and_say_so(to_parent: std::os::fd::RawFd) -> ! {
        let said = *b"g";
        // SAFETY: the child has one thread and never returns from here; from now on it reads
        // only this frame (`said`) and makes system calls by their instruction.
        unsafe {
            give_back_private_memory(&raw const said as usize);
            syscall_without_libc(
                libc::SYS_write,
                to_parent as usize,
                &raw const said as usize,
                1,
                0,
            );
            loop {
                syscall_without_libc(libc::SYS_pause, 0, 0, 0, 0);
            }
        }
    }

    #[test]
    fn a_process_that_gives_its_private_memory_back_keeps_its_frame_and_command_line_and_runs() {
        use std::os::fd::AsRawFd;
        if !CAN_GIVE_BACK {
            return;
        }
        // 4 MiB written in small blocks, on a heap a forked child has too.
        let blocks: Vec<Box<[u8; 1024]>> = (0..4096).map(|_| Box::new([1u8; 1024])).collect();
        let address = &raw const *blocks[2048] as usize;
        let (from_child, to_parent) = rustix::pipe::pipe().unwrap();
        // SAFETY: the child has one thread and only runs `give_back_and_say_so`.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork: {}", io::Error::last_os_error());
        if child == 0 {
            give_back_and_say_so(to_parent.as_raw_fd());
        }
        drop(to_parent);
        let mut ready = [rustix::event::PollFd::new(
            &from_child,
            rustix::event::PollFlags::IN,
        )];
        let limit = rustix::event::Timespec {
            tv_sec: 20,
            tv_nsec: 0,
        };
        let mut said = [0u8; 1];
        if rustix::event::poll(&mut ready, Some(&limit)).unwrap() == 1 {
            let _ = rustix::io::read(&from_child, &mut said);
        }
        let in_child = resident_kib_around(child, address);
        let in_parent = resident_kib_around(std::process::id().cast_signed(), address);
        let child_maps = anonymous_mappings(child);
        let command_line = std::fs::read(format!("/proc/{child}/cmdline")).unwrap();
        let own_command_line = std::fs::read("/proc/self/cmdline").unwrap();
        let (command_line_start, _) =
            command_line_range(&std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap())
                .unwrap();
        // SAFETY: signals and reaps this test's own child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        assert_eq!(
            &said, b"g",
            "the child did not run on after giving its memory back"
        );
        assert!(in_parent >= 4096, "{in_parent} KiB resident in the parent");
        assert!(
            in_child <= 8,
            "{in_child} KiB of the blocks' mapping still resident in the child"
        );
        // The child ran on this thread's stack, deeper down.
        let on_this_stack = &raw const said as usize;
        let listed: String = child_maps
            .iter()
            .map(|(_, _, kb, header)| format!("{kb} kB {header}\n"))
            .collect();
        for (start, end, kb, _) in &child_maps {
            let holds = |address: usize| *start <= address && address < *end;
            // Not the heap, the test binary's relocated data and TLS (well over 100 KiB before),
            // nor the pages that held what was read of /proc to work the pages out.
            assert!(
                holds(on_this_stack) || holds(command_line_start),
                "the child kept memory besides its frame and command line:\n{listed}"
            );
            // The dropping frame's page or two (the frames under it went too), and the command
            // line's.
            assert!(*kb <= 12, "the child kept {kb} KiB of a stack:\n{listed}");
        }
        assert_eq!(
            command_line, own_command_line,
            "what `ps` shows of the child"
        );
        drop(blocks);
    }

    #[test]
    fn the_command_line_range_is_read_after_the_name_of_the_command() {
        // Fields 3 to 47, then arg_start (48) and arg_end (49).
        let stat = "7 (a (b) c) S 1 7 7 0 -1 4194560 108 0 0 0 0 0 0 0 20 0 1 0 40 2281472 \
                    123 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 \
                    4210688 4211000 4214784 140723 140799 140799 140800 0";
        assert_eq!(command_line_range(stat), Some((140_723, 140_799)));
        assert_eq!(command_line_range("7 (x) S 1"), None);
    }

    /// Anonymous memory resident in process `pid` (its own pages, copies of a file's too), in KiB.
    fn anonymous_kb(pid: libc::pid_t) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("RssAnon:"))
            .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
            .unwrap()
    }

    #[cfg(target_env = "gnu")]
    #[test]
    fn free_memory_in_the_middle_of_the_heap_is_given_back() {
        // 32 MiB in small blocks (below the mmap threshold, so on the heap), one more block kept
        // above them so that freeing them leaves a hole the heap's top cannot shrink over.
        let blocks: Vec<Box<[u8; 1024]>> = (0..32 * 1024).map(|_| Box::new([1u8; 1024])).collect();
        let top = Box::new([1u8; 1024]);
        // Seen as used, so that an optimised build allocates them at all.
        std::hint::black_box((&blocks, &top));
        drop(blocks);
        let before = anonymous_kb(std::process::id().cast_signed());
        release_free_heap();
        let after = anonymous_kb(std::process::id().cast_signed());
        assert!(
            before.saturating_sub(after) >= 16 * 1024,
            "{before} KiB before, {after} KiB after"
        );
        drop(top);
    }

    /// The heaps (arenas) glibc has made so far: `malloc_info` writes one `<heap nr=…>` each.
    #[cfg(target_env = "gnu")]
    fn heap_arenas() -> usize {
        let mut text: *mut libc::c_char = std::ptr::null_mut();
        let mut len: libc::size_t = 0;
        // SAFETY: open_memstream allocates the buffer it writes into; it is read once the stream
        // is closed and freed with the C library's free, as its manual says.
        unsafe {
            let stream = libc::open_memstream(&raw mut text, &raw mut len);
            assert!(!stream.is_null());
            libc::malloc_info(0, stream);
            libc::fclose(stream);
            let info = std::ffi::CStr::from_ptr(text)
                .to_string_lossy()
                .into_owned();
            libc::free(text.cast());
            info.matches("<heap nr=").count()
        }
    }

    #[cfg(target_env = "gnu")]
    #[test]
    fn threads_that_allocate_together_share_the_capped_heaps() {
        // The test harness's threads may have made heaps of their own already.
        let before = heap_arenas();
        limit_heap_arenas();
        let threads = 8;
        let together = std::sync::Barrier::new(threads);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    // All allocating at once: each would take a heap of its own without the cap.
                    together.wait();
                    let held: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 4096]).collect();
                    together.wait();
                    drop(held);
                });
            }
        });
        let arenas = heap_arenas();
        assert!(
            arenas <= before.max(HEAP_ARENAS as usize),
            "{arenas} heaps for {threads} threads ({before} before)"
        );
    }
}
