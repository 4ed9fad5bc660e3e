//! One kernel audit record's text: its `audit(SECS.MILLIS:SERIAL)` stamp and its `key=value`
//! fields, with the kernel's quoting and hex encoding undone. Never panics, whatever the bytes.

use std::str::FromStr;

/// Record types (`include/uapi/linux/audit.h`) the monitor reads.
pub(crate) mod kind {
    pub(crate) const SYSCALL: u16 = 1300;
    pub(crate) const END_OF_EVENT: u16 = 1320;
    pub(crate) const SECCOMP: u16 = 1326;
    pub(crate) const LANDLOCK_ACCESS: u16 = 1423;
    pub(crate) const LANDLOCK_DOMAIN: u16 = 1424;
    pub(crate) const MONITORED: [u16; 5] = [
        SYSCALL,
        END_OF_EVENT,
        SECCOMP,
        LANDLOCK_ACCESS,
        LANDLOCK_DOMAIN,
    ];
}

/// Identifies one audit event: all records of an event carry the same stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Stamp {
    /// Wall-clock time of the event, in milliseconds since the Unix epoch.
    pub(crate) time_ms: u64,
    pub(crate) serial: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) kind: u16,
    pub(crate) stamp: Stamp,
    /// Everything after `audit(…): `.
    pub(crate) body: String,
}

impl Record {
    /// Parses a record's text as the kernel sends it (possibly NUL-terminated). `None` when it has
    /// no valid stamp.
    pub(crate) fn parse(kind: u16, text: &[u8]) -> Option<Record> {
        let text = String::from_utf8_lossy(text);
        let text = text.trim_end_matches(['\0', '\n', ' ']);
        let rest = text.strip_prefix("audit(")?;
        let (stamp, body) = rest.split_once("):")?;
        let (time, serial) = stamp.split_once(':')?;
        let (secs, millis) = time.split_once('.')?;
        let millis = millis.parse::<u64>().ok().filter(|m| *m < 1000)?;
        let time_ms = secs
            .parse::<u64>()
            .ok()?
            .checked_mul(1000)?
            .checked_add(millis)?;
        Some(Record {
            kind,
            stamp: Stamp {
                time_ms,
                serial: serial.parse().ok()?,
            },
            body: body.trim_start_matches(' ').to_owned(),
        })
    }

    /// The first field named `key`.
    pub(crate) fn field(&self, key: &str) -> Option<Value<'_>> {
        Fields { rest: &self.body }.find_map(|(k, value)| (k == key).then_some(value))
    }

    /// A numeric field in decimal.
    pub(crate) fn number<T: FromStr>(&self, key: &str) -> Option<T> {
        self.field(key)?.raw().parse().ok()
    }

    /// A string field the kernel logs as untrusted (paths, `comm`, `exe`), decoded.
    pub(crate) fn text(&self, key: &str) -> Option<String> {
        self.field(key)?.text()
    }
}

/// A field value as written in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// `key="…"`: the kernel quotes strings that need no encoding.
    Quoted(&'a str),
    /// `key=…`: numbers, ids, and untrusted strings the kernel hex-encoded because they contain a
    /// space, a quote, a control or a non-ASCII character.
    Bare(&'a str),
}

impl<'a> Value<'a> {
    pub(crate) fn raw(self) -> &'a str {
        match self {
            Value::Quoted(s) | Value::Bare(s) => s,
        }
    }

    /// The value as text, hex decoded if it was encoded; `None` for the kernel's "no value" markers.
    pub(crate) fn text(self) -> Option<String> {
        match self {
            Value::Quoted(s) => Some(s.to_owned()),
            Value::Bare("(null)" | "?" | "") => None,
            Value::Bare(s) => Some(decode_hex(s).unwrap_or_else(|| s.to_owned())),
        }
    }
}

fn decode_hex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes = s
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(digits, 16).ok()
        })
        .collect::<Option<Vec<u8>>>()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The `key=value` pairs of a record body, in order. Tokens without `=` are skipped.
struct Fields<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.rest = self.rest.trim_start_matches(' ');
            if self.rest.is_empty() {
                return None;
            }
            let key_end = self.rest.find(['=', ' ']).unwrap_or(self.rest.len());
            let key = &self.rest[..key_end];
            let Some(after_key) = self.rest[key_end..].strip_prefix('=') else {
                self.rest = &self.rest[key_end..];
                continue;
            };
            // Quoted values never contain a quote: the kernel hex-encodes strings that do.
            let (value, rest) = match after_key.strip_prefix('"') {
                Some(quoted) => match quoted.split_once('"') {
                    Some((value, rest)) => (Value::Quoted(value), rest),
                    None => (Value::Quoted(quoted), ""),
                },
                None => {
                    let end = after_key.find(' ').unwrap_or(after_key.len());
                    (Value::Bare(&after_key[..end]), &after_key[end..])
                }
            };
            self.rest = rest;
            return Some((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(text: &str) -> Record {
        Record::parse(kind::SYSCALL, text.as_bytes()).expect("a valid record")
    }

    #[test]
    fn stamp_and_fields_of_a_real_syscall_record() {
        let r = record(
            "audit(1795448570.834:78): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c \
             a1=7fff0f30a762 a2=941 a3=1b6 items=0 ppid=31551 pid=31831 auid=4294967295 uid=0 \
             tty=(none) ses=4294967295 comm=746F20756368 exe=2F746D702F746F20756368 key=(null)\0",
        );
        assert_eq!(
            r.stamp,
            Stamp {
                time_ms: 1_795_448_570_834,
                serial: 78
            }
        );
        assert_eq!(r.number::<u32>("pid"), Some(31831));
        assert_eq!(r.number::<u32>("ppid"), Some(31551));
        assert_eq!(r.number::<i64>("exit"), Some(-13));
        assert_eq!(r.text("comm").as_deref(), Some("to uch"));
        assert_eq!(r.text("exe").as_deref(), Some("/tmp/to uch"));
        assert_eq!(r.text("key"), None);
        assert_eq!(r.field("tty"), Some(Value::Bare("(none)")));
        assert_eq!(r.field("missing"), None);
    }

    #[test]
    fn quoted_values_are_taken_literally() {
        let r = record(r#"audit(1.005:2): comm="bash" exe="/usr/bin/bash" path="/etc""#);
        assert_eq!(r.stamp.time_ms, 1005);
        assert_eq!(r.text("comm").as_deref(), Some("bash"));
        assert_eq!(r.text("path").as_deref(), Some("/etc"));
    }

    #[test]
    fn non_utf8_hex_is_decoded_lossily() {
        let r = record("audit(1.000:1): path=2FFF");
        assert_eq!(r.text("path").as_deref(), Some("/\u{FFFD}"));
    }

    #[test]
    fn malformed_records_are_rejected_or_tolerated() {
        for bad in [
            "",
            "audit(",
            "audit():",
            "audit(1:2): x",
            "audit(1.2000:3): x",
            "audit(99999999999999999999.000:1): x",
            "audit(1.000:-1): x",
            "type=1300 msg=audit(1.000:1): x",
        ] {
            assert_eq!(Record::parse(1300, bad.as_bytes()), None, "{bad:?}");
        }
        let odd = record(r#"audit(1.000:1): =x novalue k="unterminated pid= pid==3"#);
        assert_eq!(odd.text("k").as_deref(), Some("unterminated pid= pid==3"));
        assert_eq!(odd.number::<u32>("pid"), None);
        let empty = record("audit(1.000:1): ");
        assert_eq!(empty.field("pid"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(r) = Record::parse(1423, &bytes) {
                let _ = (r.text("path"), r.number::<u16>("dest"), r.field("domain"));
            }
        }

        #[test]
        fn record_like_text_never_panics(body in r#"[a-z0-9=" ,._/()A-F\x00-\x1f]{0,120}"#) {
            let text = format!("audit(1700000000.123:42): {body}");
            let r = Record::parse(1423, text.as_bytes()).expect("the stamp is valid");
            let _ = (r.text("path"), r.text("comm"), r.number::<u32>("pid"), r.field("blockers"));
        }
    }
}
