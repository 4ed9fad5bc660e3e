//! The daemon's own memory: the code pages (its executable's and its shared libraries') that
//! start-up read and an idle daemon never touches again, and the free memory left inside its
//! heap, given back; and the sandbox init's set-up memory, given back whole.
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
    writable: bool,
    /// Copy-on-write (`p`), not shared with other processes (`s`).
    private: bool,
    /// Inode of the mapped file; 0 for anonymous memory and the kernel's own mappings.
    inode: u64,
    rss_kb: u64,
    /// Pages that differ from the file: private copies made by a write. (`Private_Dirty` would
    /// also count page-cache pages not yet written back, e.g. of a binary just linked.)
    modified_kb: u64,
}

/// Unmaps the resident pages of every read-only, unmodified file mapping of this process: the
/// executable's code and read-only data, and the shared libraries' (the C library, the loader).
/// Returns how many bytes were resident in the mappings released. A mapping the kernel refuses
/// to unmap (a device's) is left as it is.
pub fn release_code_pages() -> io::Result<u64> {
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
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: glibc's malloc_trim takes the allocator's locks itself and only releases free
    // chunks; it may run at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Most private writable mappings [`give_back_private_memory`] handles: a dynamically linked
/// launcher has about ten (its own data, the C library's and the loader's, heap, stack).
const MOST_WRITABLE_MAPPINGS: usize = 32;

/// Gives back every page of this process's private writable memory (its data, heap and stack,
/// its libraries' data) except the pages holding the addresses in `keep` and the stack from just
/// below this call's frame up (the caller's frame and those above it). A page of a file's data
/// reads as the file again if touched, any other as zeros.
///
/// For the sandbox's init: once the agent is started it only waits for children, and the
/// memory its set-up dirtied (decoding the plan, building the root, the C library's start-up)
/// is 17 private pages, kept for the agent's whole run, in each of a thousand sandboxes.
///
/// # Safety
///
/// The process must have one thread, and afterwards must read nothing it had stored outside the
/// kept pages and the stack above this call: no allocation, no standard library, no C library
/// function that keeps state (`syscall` keeps only `errno`, in its thread's TLS, which `keep`
/// should hold; `_exit` keeps nothing).
pub(crate) unsafe fn give_back_private_memory<const N: usize>(keep: [usize; N]) -> io::Result<()> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    // On this frame's stack, which stays: the heap is among what goes.
    let mut writable = [(0usize, 0usize); MOST_WRITABLE_MAPPINGS];
    let mut count = 0;
    for mapping in maps.lines().filter_map(parse_header) {
        if mapping.writable && mapping.private && count < writable.len() {
            writable[count] = (mapping.start, mapping.end);
            count += 1;
        }
    }
    drop(maps);
    let page = rustix::param::page_size();
    // This frame is far smaller than a page, so everything a page under its array is unused.
    let stack_kept_from = (&raw const writable as usize / page - 1) * page;
    let mut kept = keep.map(|address| (address / page * page, address / page * page + page));
    kept.sort_unstable();
    for &(start, end) in &writable[..count] {
        if start >= stack_kept_from {
            continue;
        }
        let end = end.min(stack_kept_from);
        let mut from = start;
        for &(kept_start, kept_end) in &kept {
            if kept_end <= from || kept_start >= end {
                continue;
            }
            if kept_start > from {
                // SAFETY: neither kept nor the stack in use, so the caller vouched for it.
                unsafe { forget(from, kept_start) };
            }
            from = from.max(kept_end);
        }
        if from < end {
            // SAFETY: as above.
            unsafe { forget(from, end) };
        }
    }
    Ok(())
}

/// `MADV_DONTNEED` on `start..end`, page-aligned and inside one private mapping.
///
/// # Safety
///
/// Nothing may read what the range held again: it reads as zeros (or as the mapped file) after.
unsafe fn forget(start: usize, end: usize) {
    // SAFETY: the caller vouched for the range; dropping the pages of a private mapping cannot
    // affect another process or unmap anything.
    let _ = unsafe {
        rustix::mm::madvise(
            start as *mut c_void,
            end - start,
            rustix::mm::Advice::LinuxDontNeed,
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
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        writable: perms.as_bytes().get(1) == Some(&b'w'),
        private: perms.as_bytes().get(3) == Some(&b'p'),
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
                writable: false,
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

    #[test]
    fn a_process_that_gives_its_private_memory_back_keeps_its_stack_and_still_runs() {
        use std::os::fd::AsRawFd;
        // 4 MiB written in small blocks, on a heap a forked child has too.
        let blocks: Vec<Box<[u8; 1024]>> = (0..4096).map(|_| Box::new([1u8; 1024])).collect();
        let address = &raw const *blocks[2048] as usize;
        let (from_child, to_parent) = rustix::pipe::pipe().unwrap();
        let to_parent_fd = to_parent.as_raw_fd();
        // SAFETY: the child has one thread and, once it gave its memory back, only makes system
        // calls with what is on this frame, until the parent kills it.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork: {}", io::Error::last_os_error());
        if child == 0 {
            // SAFETY: as above.
            unsafe {
                let _ = give_back_private_memory([
                    libc::__errno_location() as usize,
                    libc::pthread_self() as usize,
                ]);
                libc::syscall(libc::SYS_write, to_parent_fd, b"g".as_ptr(), 1usize);
                loop {
                    libc::syscall(libc::SYS_pause);
                }
            }
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
        drop(blocks);
    }

    /// Anonymous memory resident in this process, in KiB.
    fn anonymous_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
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
        drop(blocks);
        let before = anonymous_kb();
        release_free_heap();
        let after = anonymous_kb();
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
