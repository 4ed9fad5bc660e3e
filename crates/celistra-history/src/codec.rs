//! How a segment's bytes are stored: an LZ4 block with its size in front, or, for output that does
//! not compress or that came during a burst, the bytes as they are behind a marker. Output logs
//! compress several times over, so the same disk budget keeps several times the history; during a
//! burst the writer stores first and compresses in idle time, so compression never slows an agent.

/// Largest size a stored block may claim; anything larger is damage, not data.
const MAX_UNPACKED: usize = 16 * 1024 * 1024;
/// Stands where an LZ4 block's size would be (never above `MAX_UNPACKED`): the bytes follow as-is.
const AS_IS: [u8; 4] = u32::MAX.to_le_bytes();

/// The stored form of `bytes`: compressed, unless compressing does not make them smaller.
pub(crate) fn pack(bytes: &[u8]) -> Vec<u8> {
    let packed = lz4_flex::block::compress_prepend_size(bytes);
    if packed.len() < bytes.len() + AS_IS.len() {
        packed
    } else {
        store_as_is(bytes)
    }
}

/// The stored form of `bytes` without compressing them.
pub(crate) fn store_as_is(bytes: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(AS_IS.len() + bytes.len());
    stored.extend_from_slice(&AS_IS);
    stored.extend_from_slice(bytes);
    stored
}

/// The original bytes, or `None` if the stored block is damaged.
pub(crate) fn unpack(stored: &[u8]) -> Option<Vec<u8>> {
    let size = stored.get(..4)?;
    if size == AS_IS {
        return Some(stored[AS_IS.len()..].to_vec());
    }
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
        assert_eq!(unpack(b"\xff\xff\xff\x7fxx"), None, "absurd size");
        let mut broken = packed.clone();
        broken.truncate(packed.len() / 2);
        assert_eq!(unpack(&broken), None, "truncated");
    }

    #[test]
    fn stores_as_is_what_does_not_compress() {
        let text = b"2026-11-23 INFO request ok\n".repeat(10);
        let stored = store_as_is(&text);
        assert_eq!(stored.len(), text.len() + 4);
        assert_eq!(unpack(&stored).as_deref(), Some(&text[..]));
        // Bytes without repeats: LZ4 would only add to them.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let stored = pack(&noise);
        assert_eq!(stored.len(), noise.len() + 4);
        assert_eq!(unpack(&stored).as_deref(), Some(&noise[..]));
    }
}
