//! SHA-256 and the lowercase hex form every hash takes in the log, the API and the docs.

use sha2::{Digest, Sha256};

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// SHA-256 of the concatenation of `parts`, so callers hash framed data without copying it together.
pub(crate) fn sha256(parts: &[&[u8]]) -> Hash {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Lowercase hex, two digits per byte.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Parses exactly 64 lowercase hex digits. Uppercase is refused: the log writes lowercase, and
/// accepting two spellings would let one entry be written two ways.
pub fn hash_from_hex(text: &str) -> Option<Hash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (out, pair) in hash.iter_mut().zip(bytes.chunks_exact(2)) {
        *out = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(hash)
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_other_spellings() {
        let hash = sha256(&[b"abc"]);
        let text = to_hex(&hash);
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash_from_hex(&text), Some(hash));
        assert_eq!(hash_from_hex(&text.to_uppercase()), None);
        assert_eq!(hash_from_hex(&text[1..]), None);
        assert_eq!(hash_from_hex(&format!("{}g", &text[1..])), None);
    }
}
