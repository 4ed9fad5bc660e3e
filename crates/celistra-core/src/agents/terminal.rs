//! Terminal signals in an agent's output bytes: BEL, OSC 9 and OSC 777 notifications, OSC 0 / 2
//! titles and OSC 9;4 progress, found however the stream is cut into chunks.
//!
//! # What counts
//!
//! - A BEL (0x07) in ordinary output is [`TerminalSignal::Bell`]. A BEL that ends an OSC string is
//!   its terminator, not a bell; so is ST (`ESC \`).
//! - `OSC 0;title` and `OSC 2;title` are [`TerminalSignal::Title`] (`OSC 1`, the icon name, is
//!   ignored).
//! - `OSC 9;text` (iTerm2) is [`TerminalSignal::Notify`], except ConEmu's numbered subcommands
//!   (`9;1;…`, `9;9;cwd`, …), of which only `9;4;state;percent` is read, as
//!   [`TerminalSignal::Progress`].
//! - `OSC 777;notify;title;body` (rxvt, Ghostty, WezTerm) is `Notify("title: body")`.
//! - DCS, SOS, PM and APC strings (`ESC P`, `ESC X`, `ESC ^`, `ESC _`) are skipped whole: a BEL
//!   inside them is not a bell. An `ESC` inside any string ends it and starts a new sequence, so
//!   tmux's passthrough (`ESC P tmux; ESC ESC ] 9;… BEL ESC \`) still yields the notification.
//!   CAN and SUB abort a string.
//!
//! Memory is bounded: an OSC payload longer than [`MAX_OSC_BYTES`] is dropped whole, and texts
//! are clipped to 200 characters with control characters removed. C1 controls (0x9d, 0x9c) are
//! not recognised: in UTF-8 output they are continuation bytes.

use super::clip_said;

/// Longest OSC payload kept, in bytes; a longer one is dropped.
pub const MAX_OSC_BYTES: usize = 4 * 1024;

const BEL: u8 = 0x07;
const ESC: u8 = 0x1b;
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;

/// A signal an agent gave through its terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalSignal {
    Bell,
    /// OSC 9 (`9;text`) or OSC 777 (`777;notify;title;body`).
    Notify(String),
    /// OSC 0 or OSC 2.
    Title(String),
    /// OSC 9;4: `state` 0 hidden, 1 normal, 2 error, 3 indeterminate, 4 paused (ConEmu / Windows
    /// Terminal); `percent` 0 to 100 when given.
    Progress {
        state: u8,
        percent: Option<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Ground,
    /// After an ESC.
    Escape,
    /// In an OSC string.
    Osc,
    /// In an OSC string, after an ESC: `\` ends it, anything else aborts it.
    OscEscape,
    /// In a DCS, SOS, PM or APC string.
    Skipped,
    /// In a skipped string, after an ESC.
    SkippedEscape,
}

/// Finds [`TerminalSignal`]s in a byte stream pushed in chunks of any size.
#[derive(Debug, Default)]
pub struct TerminalScanner {
    state: State,
    payload: Vec<u8>,
    /// The current OSC payload went over [`MAX_OSC_BYTES`]: it is dropped when it ends.
    overflowed: bool,
}

impl TerminalScanner {
    pub fn new() -> Self {
        TerminalScanner::default()
    }

    /// Scans `bytes`, appending the signals found to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<TerminalSignal>) {
        while let Some((&byte, rest)) = bytes.split_first() {
            if self.state == State::Ground {
                // Ordinary output, nearly all of it: jump to the next BEL or ESC.
                match memchr::memchr2(BEL, ESC, bytes) {
                    Some(0) => {}
                    Some(at) => {
                        bytes = &bytes[at..];
                        continue;
                    }
                    None => return,
                }
            }
            self.feed(byte, out);
            bytes = rest;
        }
    }

    fn feed(&mut self, byte: u8, out: &mut Vec<TerminalSignal>) {
        match self.state {
            State::Ground => match byte {
                BEL => out.push(TerminalSignal::Bell),
                ESC => self.state = State::Escape,
                _ => {}
            },
            State::Escape => self.escape(byte),
            State::Osc => match byte {
                BEL => self.finish_osc(out),
                ESC => self.state = State::OscEscape,
                CAN | SUB => self.state = State::Ground,
                _ => {
                    if self.payload.len() < MAX_OSC_BYTES {
                        self.payload.push(byte);
                    } else {
                        self.overflowed = true;
                    }
                }
            },
            State::OscEscape => {
                if byte == b'\\' {
                    self.finish_osc(out);
                } else {
                    self.escape(byte);
                }
            }
            State::Skipped => match byte {
                ESC => self.state = State::SkippedEscape,
                CAN | SUB => self.state = State::Ground,
                _ => {}
            },
            State::SkippedEscape => {
                if byte == b'\\' {
                    self.state = State::Ground;
                } else {
                    self.escape(byte);
                }
            }
        }
    }

    /// The byte after an ESC.
    fn escape(&mut self, byte: u8) {
        self.state = match byte {
            b']' => {
                self.payload.clear();
                self.overflowed = false;
                State::Osc
            }
            b'P' | b'X' | b'^' | b'_' => State::Skipped,
            ESC => State::Escape,
            _ => State::Ground,
        };
    }

    fn finish_osc(&mut self, out: &mut Vec<TerminalSignal>) {
        self.state = State::Ground;
        if !self.overflowed {
            out.extend(parse_osc(&String::from_utf8_lossy(&self.payload)));
        }
        self.payload.clear();
        self.overflowed = false;
    }
}

fn parse_osc(payload: &str) -> Option<TerminalSignal> {
    let (code, rest) = payload.split_once(';')?;
    match code {
        "0" | "2" => Some(TerminalSignal::Title(clip_said(rest))),
        "9" => {
            let (first, after) = rest.split_once(';').unwrap_or((rest, ""));
            if !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()) {
                if first != "4" {
                    return None; // a ConEmu subcommand other than progress
                }
                let mut fields = after.split(';');
                let state = fields.next()?.trim().parse::<u8>().ok()?;
                let percent = fields
                    .next()
                    .and_then(|pct| pct.trim().parse::<u8>().ok())
                    .map(|pct| pct.min(100));
                return Some(TerminalSignal::Progress { state, percent });
            }
            let text = clip_said(rest);
            (!text.is_empty()).then_some(TerminalSignal::Notify(text))
        }
        "777" => {
            let mut fields = rest.splitn(3, ';');
            if fields.next()? != "notify" {
                return None;
            }
            let title = fields.next().unwrap_or_default().trim();
            let body = fields.next().unwrap_or_default().trim();
            let text = match (title.is_empty(), body.is_empty()) {
                (false, false) => format!("{title}: {body}"),
                (false, true) => title.to_owned(),
                _ => body.to_owned(),
            };
            let text = clip_said(&text);
            (!text.is_empty()).then_some(TerminalSignal::Notify(text))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TerminalSignal::{Bell, Notify, Progress, Title};
    use proptest::prelude::*;

    fn scan(bytes: &[u8]) -> Vec<TerminalSignal> {
        let mut out = Vec::new();
        TerminalScanner::new().push(bytes, &mut out);
        out
    }

    fn notify(text: &str) -> TerminalSignal {
        Notify(text.to_owned())
    }

    fn title(text: &str) -> TerminalSignal {
        Title(text.to_owned())
    }

    /// Every way of cutting `bytes` in two, and byte by byte, finds the same signals.
    #[track_caller]
    fn same_at_every_split(bytes: &[u8]) -> Vec<TerminalSignal> {
        let whole = scan(bytes);
        for cut in 0..=bytes.len() {
            let mut scanner = TerminalScanner::new();
            let mut out = Vec::new();
            scanner.push(&bytes[..cut], &mut out);
            scanner.push(&bytes[cut..], &mut out);
            assert_eq!(out, whole, "cut at {cut}");
        }
        let mut scanner = TerminalScanner::new();
        let mut out = Vec::new();
        for byte in bytes {
            scanner.push(std::slice::from_ref(byte), &mut out);
        }
        assert_eq!(out, whole, "byte by byte");
        whole
    }

    #[test]
    fn bells_notifications_titles_and_progress() {
        let stream = b"working\x07\x1b]0;\xe2\xa0\x8b fix tests\x07out\x1b]2;plain\x1b\\\x1b]9;Claude needs your permission\x07\x1b]777;notify;Codex;Turn complete\x1b\\\x1b]9;4;1;42\x07\x1b]9;4;0\x07done\x07";
        assert_eq!(
            same_at_every_split(stream),
            vec![
                Bell,
                title("⠋ fix tests"),
                title("plain"),
                notify("Claude needs your permission"),
                notify("Codex: Turn complete"),
                Progress {
                    state: 1,
                    percent: Some(42)
                },
                Progress {
                    state: 0,
                    percent: None
                },
                Bell,
            ]
        );
    }

    #[test]
    fn a_bel_ending_a_string_is_not_a_bell() {
        assert_eq!(same_at_every_split(b"\x1b]0;t\x07"), vec![title("t")]);
        assert_eq!(same_at_every_split(b"\x1bP1$r\x07q\x1b\\\x07"), vec![Bell]);
        assert_eq!(same_at_every_split(b"\x1b_apc \x07 data\x1b\\"), vec![]);
        assert_eq!(same_at_every_split(b"\x1b[31m\x07\x1b[0m"), vec![Bell]);
    }

    #[test]
    fn tmux_passthrough_still_notifies() {
        assert_eq!(
            same_at_every_split(b"\x1bPtmux;\x1b\x1b]9;done\x07\x1b\\"),
            vec![notify("done")]
        );
    }

    #[test]
    fn an_escape_or_cancel_aborts_a_string() {
        assert_eq!(same_at_every_split(b"\x1b]0;lost\x1b[1m\x07"), vec![Bell]);
        assert_eq!(same_at_every_split(b"\x1b]0;lost\x18\x07"), vec![Bell]);
        assert_eq!(
            same_at_every_split(b"\x1b]0;lost\x1b]2;kept\x07"),
            vec![title("kept")]
        );
    }

    #[test]
    fn other_oscs_and_conemu_subcommands_say_nothing() {
        assert_eq!(
            same_at_every_split(b"\x1b]1;icon\x07\x1b]8;;https://x\x1b\\\x1b]9;9;/home\x07\x1b]9;\x07\x1b]777;other;a;b\x07\x1b]52;c;aGk=\x07"),
            vec![]
        );
        assert_eq!(
            scan(b"\x1b]777;notify;;only body\x07"),
            vec![notify("only body")]
        );
        assert_eq!(
            scan(b"\x1b]9;4;2;250\x07"),
            vec![Progress {
                state: 2,
                percent: Some(100)
            }]
        );
    }

    #[test]
    fn an_oversized_payload_is_dropped_whole() {
        let mut stream = b"\x1b]0;".to_vec();
        stream.extend(std::iter::repeat_n(b'a', MAX_OSC_BYTES + 10));
        stream.extend(b"\x07\x1b]0;next\x07");
        assert_eq!(scan(&stream), vec![title("next")]);
        let mut stream = b"\x1b]0;".to_vec();
        stream.extend(std::iter::repeat_n(b'a', MAX_OSC_BYTES - 2));
        stream.push(0x07);
        assert_eq!(scan(&stream).len(), 1);
    }

    #[test]
    fn texts_are_clean_and_clipped() {
        let mut stream = b"\x1b]9;".to_vec();
        stream.extend("é".repeat(300).as_bytes());
        stream.extend(b"\x07\x1b]0;a\x7fb\xffc\x07");
        let signals = scan(&stream);
        let Notify(text) = &signals[0] else {
            panic!("{signals:?}")
        };
        assert_eq!(text.chars().count(), 200);
        assert_eq!(signals[1], title("a b\u{fffd}c"));
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_signals(
            pieces in proptest::collection::vec(
                prop_oneof![
                    Just(b"\x07".to_vec()),
                    Just(b"\x1b".to_vec()),
                    Just(b"\x1b]".to_vec()),
                    Just(b"\x1b\\".to_vec()),
                    Just(b"\x1bP".to_vec()),
                    Just(b"0;".to_vec()),
                    Just(b"9;".to_vec()),
                    Just(b"4;".to_vec()),
                    Just(b"777;notify;".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ],
                0..40,
            ),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let bytes: Vec<u8> = pieces.concat();
            let whole = scan(&bytes);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut scanner = TerminalScanner::new();
            let mut out = Vec::new();
            let mut from = 0;
            for point in points {
                scanner.push(&bytes[from..point], &mut out);
                from = point;
            }
            scanner.push(&bytes[from..], &mut out);
            prop_assert_eq!(out, whole);
        }
    }
}
