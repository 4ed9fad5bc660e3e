//! Marks: where each chunk of a segment's bytes came from (stream) and when it arrived, stored as a
//! compact byte string next to the bytes so that every line keeps its own timestamp.
//!
//! Encoding, one entry per chunk: the stream code (1 byte), the chunk's length (LEB128), and its time
//! minus the previous entry's time (zigzag LEB128; the first is relative to the segment's `t_first`).

use celistra_core::logtext::Stream;

/// One chunk: `len` bytes from `stream` that arrived at `time_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub stream: Stream,
    pub len: usize,
    pub time_ms: u64,
}

/// Appends `mark` to `marks`, merging it into the last one when stream and time are the same.
pub(crate) fn push(marks: &mut Vec<Mark>, mark: Mark) {
    if mark.len == 0 {
        return;
    }
    if let Some(last) = marks.last_mut()
        && last.stream == mark.stream
        && last.time_ms == mark.time_ms
    {
        last.len += mark.len;
        return;
    }
    marks.push(mark);
}

/// Splits `marks` at byte offset `at`: the first `at` bytes stay, the rest is returned.
pub(crate) fn split_off(marks: &mut Vec<Mark>, at: usize) -> Vec<Mark> {
    let mut offset = 0;
    for index in 0..marks.len() {
        let end = offset + marks[index].len;
        if end > at {
            let mut rest = marks.split_off(index);
            if at > offset {
                let head = at - offset;
                marks.push(Mark {
                    len: head,
                    ..rest[0]
                });
                rest[0].len -= head;
            }
            return rest;
        }
        offset = end;
    }
    Vec::new()
}

pub(crate) fn encode(marks: &[Mark], t_first: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(marks.len() * 4);
    let mut previous = t_first;
    for mark in marks {
        out.push(mark.stream.code());
        put_varint(&mut out, mark.len as u64);
        let delta = mark.time_ms.wrapping_sub(previous) as i64;
        put_varint(&mut out, ((delta << 1) ^ (delta >> 63)) as u64);
        previous = mark.time_ms;
    }
    out
}

/// Decodes marks; `None` if the encoding is damaged.
pub(crate) fn decode(mut bytes: &[u8], t_first: u64) -> Option<Vec<Mark>> {
    let mut marks = Vec::new();
    let mut previous = t_first;
    while let Some((&code, rest)) = bytes.split_first() {
        let stream = Stream::from_code(code)?;
        let (len, rest) = get_varint(rest)?;
        let (zigzag, rest) = get_varint(rest)?;
        let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        previous = previous.wrapping_add(delta as u64);
        marks.push(Mark {
            stream,
            len: usize::try_from(len).ok()?,
            time_ms: previous,
        });
        bytes = rest;
    }
    Some(marks)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte < 0x80 {
            return Some((value, &bytes[index + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(stream: Stream, len: usize, time_ms: u64) -> Mark {
        Mark {
            stream,
            len,
            time_ms,
        }
    }

    #[test]
    fn round_trips_including_clock_steps_backwards() {
        let marks = vec![
            mark(Stream::Stdout, 5, 1_000),
            mark(Stream::Stderr, 300, 1_200),
            mark(Stream::Stdout, 1, 900),
            mark(Stream::Pty, 70_000, u64::from(u32::MAX) * 4),
        ];
        let encoded = encode(&marks, 1_000);
        assert_eq!(decode(&encoded, 1_000), Some(marks));
        assert_eq!(decode(&[9, 1, 0], 0), None, "unknown stream");
        assert_eq!(decode(&[1, 0x80], 0), None, "truncated varint");
    }

    #[test]
    fn merges_and_splits() {
        let mut marks = vec![];
        push(&mut marks, mark(Stream::Pty, 3, 10));
        push(&mut marks, mark(Stream::Pty, 4, 10));
        push(&mut marks, mark(Stream::Pty, 0, 11));
        push(&mut marks, mark(Stream::Pty, 2, 12));
        assert_eq!(
            marks,
            vec![mark(Stream::Pty, 7, 10), mark(Stream::Pty, 2, 12)]
        );
        let rest = split_off(&mut marks, 5);
        assert_eq!(marks, vec![mark(Stream::Pty, 5, 10)]);
        assert_eq!(
            rest,
            vec![mark(Stream::Pty, 2, 10), mark(Stream::Pty, 2, 12)]
        );
        let mut marks = vec![mark(Stream::Pty, 2, 1), mark(Stream::Pty, 2, 2)];
        assert_eq!(split_off(&mut marks, 2), vec![mark(Stream::Pty, 2, 2)]);
        assert_eq!(split_off(&mut marks, 2), vec![]);
    }
}
