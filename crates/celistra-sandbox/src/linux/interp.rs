//! Which files the kernel opens for execution besides a program itself: its `#!` interpreter and
//! the ELF dynamic loader named in `PT_INTERP`. Landlock checks EXECUTE on each of them, so a
//! sandbox that may exec only a few programs must allow these too.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The kernel follows at most this many `#!` levels (`BINPRM_MAX_RECURSION`).
const MAX_DEPTH: usize = 4;
const PT_INTERP: u32 = 3;
/// Longest interpreter path read from a `#!` line or `PT_INTERP`.
const MAX_INTERP_LEN: usize = 4096;

/// The canonical paths of the interpreters and loaders that exec'ing `program` opens, nearest
/// first. A file that cannot be read contributes nothing (exec fails on it anyway).
pub(crate) fn interpreters(program: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut current = program.to_path_buf();
    for _ in 0..MAX_DEPTH {
        // A relative `#!` interpreter is resolved against the caller's directory: nothing to plan.
        let Some(next) = interpreter_of(&current).filter(|p| p.is_absolute()) else {
            break;
        };
        let next = next.canonicalize().unwrap_or(next);
        if found.contains(&next) {
            break;
        }
        found.push(next.clone());
        current = next;
    }
    found
}

fn interpreter_of(path: &Path) -> Option<PathBuf> {
    let file = File::open(path).ok()?;
    // Enough for a `#!` line of any interpreter path and for an ELF header.
    let mut head = vec![0u8; MAX_INTERP_LEN];
    let len = file.read_at(&mut head, 0).ok()?;
    head.truncate(len);
    match head.strip_prefix(b"#!") {
        Some(line) => shebang_interpreter(line),
        None => elf_interpreter(&file, &head),
    }
}

/// The first word of a `#!` line.
fn shebang_interpreter(line: &[u8]) -> Option<PathBuf> {
    let line = line.split(|&b| b == b'\n').next()?;
    let word = line
        .split(|b| b.is_ascii_whitespace())
        .find(|w| !w.is_empty())?;
    Some(PathBuf::from(std::str::from_utf8(word).ok()?))
}

/// `PT_INTERP` of a 64-bit little-endian ELF file (the layouts of x86_64 and aarch64).
fn elf_interpreter(file: &File, header: &[u8]) -> Option<PathBuf> {
    if header.len() < 64 || !header.starts_with(b"\x7fELF\x02\x01") {
        return None;
    }
    let phoff = u64::from_le_bytes(header[0x20..0x28].try_into().ok()?);
    let phentsize = u64::from(u16::from_le_bytes(header[0x36..0x38].try_into().ok()?));
    let phnum = u16::from_le_bytes(header[0x38..0x3a].try_into().ok()?);
    for index in 0..u64::from(phnum) {
        let mut ph = [0u8; 56];
        file.read_exact_at(&mut ph, phoff + index * phentsize)
            .ok()?;
        if u32::from_le_bytes(ph[0..4].try_into().ok()?) != PT_INTERP {
            continue;
        }
        let offset = u64::from_le_bytes(ph[8..16].try_into().ok()?);
        let size = usize::try_from(u64::from_le_bytes(ph[32..40].try_into().ok()?)).ok()?;
        let mut name = vec![0u8; size.min(MAX_INTERP_LEN)];
        file.read_exact_at(&mut name, offset).ok()?;
        let name = name.split(|&b| b == 0).next()?;
        return Some(PathBuf::from(std::str::from_utf8(name).ok()?));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_needs_the_dynamic_loader() {
        let shell = Path::new("/bin/sh").canonicalize().unwrap();
        let found = interpreters(&shell);
        assert_eq!(found.len(), 1, "{found:?}");
        let loader = found[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(loader.starts_with("ld-linux"), "{loader}");
        assert!(found[0].is_absolute() && found[0].is_file());
    }

    #[test]
    fn a_script_needs_its_interpreter_and_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!  /bin/sh -e\necho hi\n").unwrap();
        let found = interpreters(&script);
        assert_eq!(found[0], Path::new("/bin/sh").canonicalize().unwrap());
        assert_eq!(found.len(), 2, "{found:?}");
        let text = dir.path().join("text");
        std::fs::write(&text, "plain").unwrap();
        assert!(interpreters(&text).is_empty());
    }
}
