//! How a segment's bytes are stored: LZ4 blocks with their size in front. Output logs compress
//! several times over, so the same disk budget keeps several times the history, and far fewer bytes
//! go through SQLite and the WAL while an agent writes hundreds of MiB per second.

/// Largest size a stored block may claim; anything larger is damage, not data.
const MAX_UNPACKED: usize = 16 * 1024 * 1024;

pub(crate) fn pack(bytes: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(bytes)
}

/// The original bytes, or `None` if the stored block is damaged.
pub(crate) fn unpack(stored: &[u8]) -> Option<Vec<u8>> {
    let size = stored.get(..4)?;
    let size = u32::from_le_bytes(size.try_into().ok()?) as usize;
    if size > MAX_UNPACKED {
        return None;
    }
    lz4_flex::block::decompress_size_prepended(stored).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let text = b"2026-11-23 INFO request ok\n".repeat(1000);
        let packed = pack(&text);
        assert!(packed.len() * 10 < text.len());
        assert_eq!(unpack(&packed).as_deref(), Some(&text[..]));
        assert_eq!(unpack(&pack(b"")).as_deref(), Some(&b""[..]));
        assert_eq!(unpack(b"\xff\xff\xff\xffxx"), None, "absurd size");
        let mut broken = packed.clone();
        broken.truncate(packed.len() / 2);
        assert_eq!(unpack(&broken), None, "truncated");
    }
}
