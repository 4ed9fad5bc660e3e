//! Readable text from raw terminal output, and `--grep` patterns with the FTS5 queries that find
//! their candidate lines.
//!
//! # Readable text
//!
//! Bytes are parsed with [`vte`], the way a terminal would, and turned into lines:
//!
//! - escape sequences (CSI, OSC, DCS, ...) produce no text; the one whose effect is kept is
//!   erase in line (`ESC[K` / `ESC[0K` erases from the cursor to the end, `ESC[2K` the whole
//!   line), because progress output redraws with `\r` plus an erase, and without it a shorter
//!   redraw would keep the tail of the longer old text;
//! - `\n` ends a line; `\r\n` (what PTYs send) is just the line end;
//! - a lone `\r` moves the cursor to column 0, so later text overwrites the line from its start
//!   (`progress 10%\rprogress 100%\n` reads `progress 100%`, `abcdef\rXY\n` reads `XYcdef`);
//! - backspace moves the cursor left one column, not below 0; every char counts as one column;
//! - tab is kept as `\t`; other C0 and C1 controls are dropped;
//! - invalid UTF-8 becomes U+FFFD; trailing whitespace of a line is kept as is;
//! - a line longer than 64 KiB of text is cut there and continues as a new line, so output that
//!   never ends a line needs bounded memory.
//!
//! A line's time is the time of the chunk that carried its first byte; a chunk that only
//! completes a line does not change it. Each stream has its own parser and line, and a chunk
//! boundary anywhere (inside an escape sequence or a UTF-8 char) gives the same lines as the
//! unsplit bytes.
//!
//! # Grep patterns
//!
//! A pattern matches a line if the line, lowercased, contains the pattern, lowercased, starting at
//! a line char before which, when the pattern starts with an alphanumeric char, there is no
//! alphanumeric char or combining accent (the match starts a word or the line): `err` matches
//! `Error: x`, `an error` and `x-error` but not `terror`; `-> x` matches anywhere. Both are
//! lowercased char by char ([`char::to_lowercase`]); alphanumeric means
//! [`char::is_alphanumeric`], a combining accent is U+0300..=U+036F.
//!
//! [`GrepPattern::fts_query`] over-approximates this for an index built with
//! `tokenize='unicode61 remove_diacritics 0'`, so the index does not hide matches and
//! [`GrepPattern::matches`] filters its candidates. unicode61 does not split text exactly where
//! `char::is_alphanumeric` does (it follows Unicode 6.1 categories, splits at spacing marks, keeps
//! combining diacritics and private-use chars inside tokens), so the query only uses the parts of
//! the pattern whose tokenization is certain, and a term never holds two index tokens (which an
//! index with `detail=none` rejects). Left over: a match right after a line char that unicode61
//! joins to the word but that is neither alphanumeric nor a combining accent (a private-use char,
//! a rarer combining mark, a char newer than Unicode 6.1 such as a recent emoji) is hidden.

use vte::{Params, Parser, Perform};

/// Longest line kept, in bytes of text.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Which output stream bytes came from. PTY agents have one stream; pipe-mode agents two. The
/// daemon adds its own notes about an agent (what its sandbox blocked) as a stream of their own, so
/// they sit in the agent's history next to its output without ever mixing into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Pty,
    Stdout,
    Stderr,
    Sandbox,
}

impl Stream {
    const ALL: [Stream; 4] = [Stream::Pty, Stream::Stdout, Stream::Stderr, Stream::Sandbox];

    /// The stored code: 0 for PTY, 1 for stdout, 2 for stderr, 3 for sandbox notes.
    pub fn code(self) -> u8 {
        match self {
            Stream::Pty => 0,
            Stream::Stdout => 1,
            Stream::Stderr => 2,
            Stream::Sandbox => 3,
        }
    }

    /// Whether the agent itself wrote these bytes (its terminal or standard streams).
    pub fn is_output(self) -> bool {
        self != Stream::Sandbox
    }

    /// The stream with a stored code, if the code is known.
    pub fn from_code(code: u8) -> Option<Stream> {
        Stream::ALL.get(usize::from(code)).copied()
    }

    /// `pty`, `stdout`, `stderr` or `sandbox`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Pty => "pty",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Sandbox => "sandbox",
        }
    }

    /// The stream named `name` (as [`Stream::as_str`] spells it).
    pub fn from_name(name: &str) -> Option<Stream> {
        Stream::ALL
            .into_iter()
            .find(|stream| stream.as_str() == name)
    }
}

impl From<celistra_proto::LogStream> for Stream {
    fn from(stream: celistra_proto::LogStream) -> Stream {
        match stream {
            celistra_proto::LogStream::Pty => Stream::Pty,
            celistra_proto::LogStream::Stdout => Stream::Stdout,
            celistra_proto::LogStream::Stderr => Stream::Stderr,
            celistra_proto::LogStream::Sandbox => Stream::Sandbox,
        }
    }
}

/// One readable line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub stream: Stream,
    /// Time of the chunk that carried the line's first byte.
    pub time_ms: u64,
    pub text: String,
}

/// Turns raw terminal bytes into readable lines, one independent state per stream.
#[derive(Default)]
pub struct LineAssembler {
    streams: [StreamState; 4],
}

impl LineAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk that arrived at `time_ms` on `stream`; completed lines are appended to `out`.
    pub fn push(&mut self, stream: Stream, time_ms: u64, bytes: &[u8], out: &mut Vec<Line>) {
        self.streams[usize::from(stream.code())].feed(time_ms, bytes, &mut |time_ms, text| {
            out.push(Line {
                stream,
                time_ms,
                text: text.to_owned(),
            });
        });
    }

    /// Emits every partial (unterminated) line that has visible text (a char that is not white
    /// space), e.g. at the end of a run or of a query, oldest first. Every stream then starts afresh, parser included, so a sequence
    /// cut off by the end of a run cannot swallow the start of the next one.
    pub fn finish(&mut self, out: &mut Vec<Line>) {
        let first = out.len();
        for (stream, state) in Stream::ALL.into_iter().zip(&mut self.streams) {
            state.finish(&mut |time_ms, text| {
                out.push(Line {
                    stream,
                    time_ms,
                    text: text.to_owned(),
                });
            });
        }
        out[first..].sort_by_key(|line| line.time_ms);
    }
}

/// The readable text of a byte run with all streams treated as one, lines joined by '\n' (for the
/// search index). A final partial line is included when it has visible text.
pub fn readable_text(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    let mut emit = |_: u64, line: &str| {
        text.push_str(line);
        text.push('\n');
    };
    let mut state = StreamState::default();
    state.feed(0, bytes, &mut emit);
    state.finish(&mut emit);
    // Every line was followed by '\n'; the last one is a terminator, not a separator.
    text.pop();
    text
}

/// Parser and current line of one stream.
#[derive(Default)]
struct StreamState {
    parser: Parser,
    line: LineBuf,
}

impl StreamState {
    fn feed(&mut self, time_ms: u64, bytes: &[u8], emit: &mut impl FnMut(u64, &str)) {
        let mut performer = Performer {
            line: &mut self.line,
            time_ms,
            emit,
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            // One line's bytes at a time, so that a line whose first byte follows a '\n' in this
            // chunk gets this chunk's time even if that byte only starts an escape sequence.
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1);
            if !performer.line.open {
                performer.line.open = true;
                performer.line.start_ms = time_ms;
            }
            self.parser.advance(&mut performer, &rest[..end]);
            rest = &rest[end..];
        }
    }

    fn finish(&mut self, emit: &mut impl FnMut(u64, &str)) {
        if self.line.text.chars().any(|c| !c.is_whitespace()) {
            emit(self.line.start_ms, &self.line.text);
        }
        *self = Self::default();
    }
}

/// The line being assembled.
#[derive(Default)]
struct LineBuf {
    text: String,
    /// Byte offset where the next char goes, always on a char boundary. It is past the end of
    /// `text` only after an erase; the gap reads as spaces once something is written after it.
    cursor: usize,
    /// Whether a byte of this line has arrived; `start_ms` is then the line's time.
    open: bool,
    start_ms: u64,
}

impl LineBuf {
    /// Length of the char under the cursor, 0 at or past the end.
    fn len_under_cursor(&self) -> usize {
        self.text
            .get(self.cursor..)
            .and_then(|rest| rest.chars().next())
            .map_or(0, char::len_utf8)
    }
}

struct Performer<'a, E> {
    line: &'a mut LineBuf,
    time_ms: u64,
    emit: &'a mut E,
}

impl<E: FnMut(u64, &str)> Performer<'_, E> {
    fn emit_line(&mut self) {
        (self.emit)(self.line.start_ms, &self.line.text);
        self.line.text.clear();
        self.line.cursor = 0;
    }

    /// `print` away from the end of the line, or at the length cap.
    #[inline(never)]
    fn print_slow(&mut self, c: char) {
        let width = c.len_utf8();
        let under = self.line.len_under_cursor();
        let new_len = self.line.text.len().max(self.line.cursor) - under + width;
        if new_len > MAX_LINE_BYTES {
            // The rest continues as a new line that starts in this chunk.
            self.emit_line();
            self.line.start_ms = self.time_ms;
        }
        let line = &mut *self.line;
        if line.cursor >= line.text.len() {
            let gap = line.cursor - line.text.len();
            line.text.extend(std::iter::repeat_n(' ', gap));
            line.text.push(c);
            line.cursor = line.text.len();
        } else {
            // No split happened (that leaves the cursor at the end), so `under` still holds.
            line.text
                .replace_range(line.cursor..line.cursor + under, c.encode_utf8(&mut [0; 4]));
            line.cursor += width;
        }
    }
}

impl<E: FnMut(u64, &str)> Perform for Performer<'_, E> {
    #[inline]
    fn print(&mut self, c: char) {
        // The common case, small enough to inline into the parser's loop: appending to a line
        // that still has room.
        let line = &mut *self.line;
        if line.cursor == line.text.len() && line.cursor + c.len_utf8() <= MAX_LINE_BYTES {
            line.text.push(c);
            line.cursor = line.text.len();
        } else {
            self.print_slow(c);
        }
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => {
                self.emit_line();
                self.line.open = false;
            }
            b'\r' => self.line.cursor = 0,
            0x08 => {
                let line = &mut *self.line;
                line.cursor = match line.text.get(..line.cursor) {
                    Some(before) => {
                        line.cursor - before.chars().next_back().map_or(0, char::len_utf8)
                    }
                    None => line.cursor - 1,
                };
            }
            b'\t' => self.print('\t'),
            _ => {}
        }
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], _ignore: bool, action: char) {
        if action != 'K' || !intermediates.is_empty() {
            return;
        }
        let line = &mut *self.line;
        match params.iter().next().map_or(0, |param| param[0]) {
            0 => line.text.truncate(line.cursor.min(line.text.len())),
            2 => line.text.clear(),
            _ => {}
        }
    }
}

/// A `--grep` pattern: case-insensitive, matched at a word start, usable against an FTS5 index.
#[derive(Debug, Clone)]
pub struct GrepPattern {
    pattern: String,
    lower: String,
    /// Whether the pattern starts with an alphanumeric char, so a match must start a word.
    word_start: bool,
}

impl GrepPattern {
    pub fn new(pattern: &str) -> Result<GrepPattern, String> {
        if pattern.trim().is_empty() {
            return Err(
                "empty grep pattern; give the text to look for, e.g. error or \"connection refused\""
                    .to_owned(),
            );
        }
        Ok(GrepPattern {
            pattern: pattern.to_owned(),
            lower: pattern.chars().flat_map(char::to_lowercase).collect(),
            word_start: pattern.starts_with(char::is_alphanumeric),
        })
    }

    /// An FTS5 MATCH expression that every matching line's text satisfies (an over-approximation,
    /// for the index built with tokenize='unicode61 remove_diacritics 0'), or None when the
    /// pattern has no usable word (e.g. "->"), so the caller must scan.
    ///
    /// Each run of token chars is a term if the index token surely starts with it: it starts the
    /// pattern (a match starts a word) or follows a separator. Followed by a separator it is a
    /// whole index token, `"tok"`; otherwise (the pattern ends, or a char of uncertain kind
    /// follows) the index token may go on, `"tok"*`. Terms are joined with ` AND `. ASCII letters
    /// are lowercased; the index folds the rest of the case itself, the same way as the text.
    pub fn fts_query(&self) -> Option<String> {
        let chars: Vec<char> = self.pattern.chars().collect();
        let mut terms = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            let start = at;
            while at < chars.len() && surely_token_char(chars[at]) {
                at += 1;
            }
            if at == start {
                at += 1;
                continue;
            }
            if start > 0 && !surely_separator(chars[start - 1]) {
                continue;
            }
            let token: String = chars[start..at]
                .iter()
                .map(char::to_ascii_lowercase)
                .collect();
            let whole = chars.get(at).is_some_and(|&c| surely_separator(c));
            terms.push(format!("\"{token}\"{}", if whole { "" } else { "*" }));
        }
        (!terms.is_empty()).then(|| terms.join(" AND "))
    }

    /// Whether a readable line matches.
    pub fn matches(&self, line: &str) -> bool {
        if line.is_ascii() {
            // An ASCII line lowercases to ASCII, so compare bytes in place instead of allocating.
            let (hay, needle) = (line.as_bytes(), self.lower.as_bytes());
            return needle.is_ascii()
                && hay.windows(needle.len()).enumerate().any(|(at, window)| {
                    window.eq_ignore_ascii_case(needle)
                        && self.starts_word_after(at.checked_sub(1).map(|i| char::from(hay[i])))
                });
        }
        // Char by char over the original line, so the char before a match is the line's own
        // (lowercasing `İ` gives two chars, the second not alphanumeric).
        let mut before = None;
        for (at, c) in line.char_indices() {
            if self.starts_word_after(before) {
                let mut rest = line[at..].chars().flat_map(char::to_lowercase);
                if self.lower.chars().all(|p| rest.next() == Some(p)) {
                    return true;
                }
            }
            before = Some(c);
        }
        false
    }

    fn starts_word_after(&self, before: Option<char>) -> bool {
        // A combining accent belongs to the letter before it (decomposed text, as in macOS file
        // names), so it does not end a word either.
        !self.word_start
            || before.is_none_or(|c| !c.is_alphanumeric() && !('\u{300}'..='\u{36f}').contains(&c))
    }
}

/// Whether unicode61 surely keeps `c` in a token, as one char of it: ASCII alphanumerics,
/// numbers, cased letters, and the main CJK, kana and Hangul letters. Other alphabetic chars may
/// be marks, which unicode61 splits at or keeps with the previous token.
fn surely_token_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    // Cased chars are letters, but for a combining mark and some symbols.
    let letter = (c.is_lowercase() || c.is_uppercase())
        && !matches!(c, '\u{345}' | '\u{24b6}'..='\u{24e9}' | '\u{1f130}'..='\u{1f189}');
    let cjk = matches!(
        c,
        '\u{3041}'..='\u{3096}' // hiragana
            | '\u{30a1}'..='\u{30fa}' | '\u{30fc}'..='\u{30ff}' // katakana
            | '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}' // ideographs
            | '\u{ac00}'..='\u{d7a3}' // hangul syllables
    );
    c.is_numeric() || letter || cjk
}

/// Whether unicode61 surely splits at `c`: ASCII punctuation and controls, and white space.
fn surely_separator(c: char) -> bool {
    c.is_ascii() && !c.is_ascii_alphanumeric() || c.is_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(bytes: &[u8]) -> Vec<String> {
        let mut assembler = LineAssembler::new();
        let mut out = Vec::new();
        assembler.push(Stream::Pty, 0, bytes, &mut out);
        assembler.finish(&mut out);
        out.into_iter().map(|line| line.text).collect()
    }

    #[test]
    fn stream_codes_round_trip() {
        for stream in Stream::ALL {
            assert_eq!(Stream::from_code(stream.code()), Some(stream));
            assert_eq!(Stream::from_name(stream.as_str()), Some(stream));
        }
        assert_eq!(Stream::from_code(4), None);
        assert_eq!(Stream::from_name("stdin"), None);
        assert_eq!(Stream::Stderr.as_str(), "stderr");
    }

    #[test]
    fn removes_escape_sequences() {
        assert_eq!(texts(b"\x1b[31mred\x1b[0m plain\n"), ["red plain"]);
        assert_eq!(texts(b"\x1b]0;title\x07after\n"), ["after"]);
        assert_eq!(
            texts(b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\n"),
            ["link"]
        );
        assert_eq!(texts(b"a\x1b[2;5Hb\x1b[3Ac\x1b[?25l\n"), ["abc"]);
        assert_eq!(texts(b"\x1bP1$r0m\x1b\\dcs gone\n"), ["dcs gone"]);
        assert_eq!(
            texts(b"bell\x07 nul\x00 esc=\x1b7saved\n"),
            ["bell nul esc=saved"]
        );
    }

    #[test]
    fn applies_carriage_return_backspace_and_erase() {
        assert_eq!(texts(b"progress 10%\rprogress 100%\n"), ["progress 100%"]);
        assert_eq!(texts(b"abcdef\rXY\n"), ["XYcdef"]);
        assert_eq!(texts(b"one\r\ntwo\r\n"), ["one", "two"]);
        assert_eq!(texts(b"abc\x08\x08X\n"), ["aXc"]);
        assert_eq!(texts(b"\x08\x08ab\n"), ["ab"]);
        assert_eq!(texts("h\u{e9}\u{e9}\x08\x08e\n".as_bytes()), ["he\u{e9}"]);
        assert_eq!(texts("\u{e9}\u{e9}\rab\n".as_bytes()), ["ab"]);
        assert_eq!(texts(b"a\tb  \n"), ["a\tb  "]);
        assert_eq!(texts(b"downloading 100%\r\x1b[Kdone\n"), ["done"]);
        assert_eq!(texts(b"downloading\x1b[2K\rdone\n"), ["done"]);
        // After erasing the whole line the cursor stays put, so text there follows blanks.
        assert_eq!(texts(b"abc\x1b[2Kd\n"), ["   d"]);
        assert_eq!(texts(b"abc\x08\x1b[K\n"), ["ab"]);
        assert_eq!(texts(b"bad \xff\xfe utf8\n"), ["bad \u{fffd}\u{fffd} utf8"]);
    }

    #[test]
    fn any_split_gives_the_same_lines() {
        // é and 😀 spelled as their UTF-8 bytes, so that splits fall inside them.
        let bytes = b"a\x1b[1;31mb\xc3\xa9\xf0\x9f\x98\x80c\x1b[0m\r\n\x1b]0;t\x07xy\rz\x08\x08w\r\n\xffend\n";
        let whole = texts(bytes);
        assert_eq!(whole, ["ab\u{e9}\u{1f600}c", "wy", "\u{fffd}end"]);
        for at in 0..=bytes.len() {
            let mut assembler = LineAssembler::new();
            let mut out = Vec::new();
            assembler.push(Stream::Pty, 0, &bytes[..at], &mut out);
            assembler.push(Stream::Pty, 0, &bytes[at..], &mut out);
            assembler.finish(&mut out);
            let split: Vec<String> = out.into_iter().map(|line| line.text).collect();
            assert_eq!(split, whole, "split at {at}");
        }
        let mut assembler = LineAssembler::new();
        let mut out = Vec::new();
        for byte in bytes {
            assembler.push(Stream::Pty, 0, std::slice::from_ref(byte), &mut out);
        }
        let bytewise: Vec<String> = out.into_iter().map(|line| line.text).collect();
        assert_eq!(bytewise, whole);
    }

    #[test]
    fn streams_are_independent() {
        let mut assembler = LineAssembler::new();
        let mut out = Vec::new();
        assembler.push(Stream::Stdout, 1, b"hello \x1b[3", &mut out);
        assembler.push(Stream::Stderr, 2, b"oops\n", &mut out);
        assembler.push(Stream::Stdout, 3, b"1mworld\n", &mut out);
        let line = |stream, time_ms, text: &str| Line {
            stream,
            time_ms,
            text: text.to_owned(),
        };
        assert_eq!(
            out,
            [
                line(Stream::Stderr, 2, "oops"),
                line(Stream::Stdout, 1, "hello world"),
            ]
        );
    }

    #[test]
    fn lines_take_the_time_of_their_first_byte() {
        let mut assembler = LineAssembler::new();
        let mut out = Vec::new();
        assembler.push(Stream::Pty, 10, b"one\ntw", &mut out);
        assembler.push(Stream::Pty, 20, b"o\n", &mut out);
        assembler.push(Stream::Pty, 30, b"three\n\x1b[", &mut out);
        assembler.push(Stream::Pty, 40, b"0mfour\n\n", &mut out);
        assembler.push(Stream::Pty, 50, b"five", &mut out);
        assembler.push(Stream::Pty, 60, b"!", &mut out);
        assembler.finish(&mut out);
        let got: Vec<(u64, &str)> = out.iter().map(|l| (l.time_ms, l.text.as_str())).collect();
        assert_eq!(
            got,
            [
                (10, "one"),
                (10, "two"),
                (30, "three"),
                (30, "four"),
                (40, ""),
                (50, "five!"),
            ]
        );
    }

    #[test]
    fn caps_long_lines() {
        let mut assembler = LineAssembler::new();
        let mut out = Vec::new();
        let long = "x".repeat(MAX_LINE_BYTES * 2 + 5);
        assembler.push(Stream::Pty, 1, long.as_bytes(), &mut out);
        assembler.push(Stream::Pty, 2, "\u{e9}\n".as_bytes(), &mut out);
        let lens: Vec<(u64, usize)> = out.iter().map(|l| (l.time_ms, l.text.len())).collect();
        assert_eq!(lens, [(1, MAX_LINE_BYTES), (1, MAX_LINE_BYTES), (1, 7)]);
        // A char that would cross the cap starts the next line instead of being cut.
        let mut out = Vec::new();
        let almost = format!("{}\u{e9}\n", "x".repeat(MAX_LINE_BYTES - 1));
        assembler.push(Stream::Pty, 3, almost.as_bytes(), &mut out);
        let lens: Vec<usize> = out.iter().map(|l| l.text.len()).collect();
        assert_eq!(lens, [MAX_LINE_BYTES - 1, 2]);
    }

    #[test]
    fn finish_flushes_visible_partial_lines() {
        let mut assembler = LineAssembler::new();
        let mut out = Vec::new();
        assembler.push(Stream::Stderr, 5, b"err tail", &mut out);
        assembler.push(Stream::Stdout, 7, b"out tail", &mut out);
        assembler.push(Stream::Pty, 9, b"  \x1b[0m", &mut out);
        assert!(out.is_empty());
        assembler.finish(&mut out);
        let got: Vec<(Stream, u64, &str)> = out
            .iter()
            .map(|l| (l.stream, l.time_ms, l.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Stream::Stderr, 5, "err tail"),
                (Stream::Stdout, 7, "out tail")
            ]
        );
        // Nothing is left over, and a cut-off sequence does not reach into what comes next.
        out.clear();
        assembler.push(Stream::Pty, 11, b"\x1b]0;unterminated", &mut out);
        assembler.finish(&mut out);
        assembler.push(Stream::Pty, 12, b"next\n", &mut out);
        assembler.finish(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].time_ms, out[0].text.as_str()), (12, "next"));
    }

    #[test]
    fn readable_text_joins_lines() {
        assert_eq!(readable_text(b""), "");
        assert_eq!(readable_text(b"a\r\n\x1b[1mb\x1b[0m\n"), "a\nb");
        assert_eq!(readable_text(b"a\n\nb"), "a\n\nb");
        assert_eq!(readable_text(b"a\n  "), "a");
    }

    #[test]
    fn grep_matches_at_word_starts() {
        let err = GrepPattern::new("err").unwrap();
        for line in ["Error: x", "an error", "x-error", "ERR", "caf\u{e9} err"] {
            assert!(err.matches(line), "{line}");
        }
        for line in ["terror", "", "er", "caf\u{e9}err"] {
            assert!(!err.matches(line), "{line}");
        }
        let refused = GrepPattern::new("connection refused").unwrap();
        assert!(refused.matches("Connection refused (111)"));
        assert!(!refused.matches("connection  refused"));
        let arrow = GrepPattern::new("-> x").unwrap();
        assert!(arrow.matches("a -> x"));
        assert!(arrow.matches("a-> xy"));
        let overlapping = GrepPattern::new("a-a").unwrap();
        assert!(overlapping.matches("xa-a-a"));
        assert!(overlapping.matches("xa-a-a\u{e9}"));
        let accented = GrepPattern::new("\u{c9}t\u{c9}").unwrap();
        assert!(accented.matches("en \u{e9}t\u{e9}"));
        assert!(!accented.matches("en \u{e9}te"));
        // `İ` lowercases to `i` plus a combining dot, yet the `b` after it is inside a word.
        assert!(!GrepPattern::new("b").unwrap().matches("\u{130}b"));
        assert!(!GrepPattern::new("s").unwrap().matches("cafe\u{301}s"));
        for empty in ["", "  \t"] {
            assert!(GrepPattern::new(empty).is_err());
        }
    }

    #[test]
    fn grep_fts_queries() {
        let query = |pattern: &str| GrepPattern::new(pattern).unwrap().fts_query();
        assert_eq!(query("err").as_deref(), Some("\"err\"*"));
        assert_eq!(
            query("Connection refused").as_deref(),
            Some("\"connection\" AND \"refused\"*")
        );
        assert_eq!(query("-> x").as_deref(), Some("\"x\"*"));
        assert_eq!(query("error: ").as_deref(), Some("\"error\""));
        assert_eq!(
            query(" a_b-c").as_deref(),
            Some("\"a\" AND \"b\" AND \"c\"*")
        );
        assert_eq!(query("->"), None);
        // Non-ASCII letters keep their case (the index folds it) and stay whole.
        assert_eq!(
            query("\u{130}stanbul \u{41e}\u{448}\u{438}\u{431}\u{43a}\u{430}").as_deref(),
            Some("\"\u{130}stanbul\" AND \"\u{41e}\u{448}\u{438}\u{431}\u{43a}\u{430}\"*")
        );
        assert_eq!(
            query("\u{30b5}\u{30fc}\u{30d0}\u{30fc}: \u{9519}").as_deref(),
            Some("\"\u{30b5}\u{30fc}\u{30d0}\u{30fc}\" AND \"\u{9519}\"*")
        );
        // Where unicode61 might split or join differently, terms only keep what is certain: a
        // combining accent may join `b` to `a`, a spacing mark splits Devanagari words, and `…`
        // might belong to the index token before it.
        assert_eq!(query("a\u{301}b c").as_deref(), Some("\"a\"* AND \"c\"*"));
        assert_eq!(query("\u{915}\u{93f}\u{92f}\u{93e}"), None);
        assert_eq!(query("x\u{2026} y").as_deref(), Some("\"x\"* AND \"y\"*"));
        assert_eq!(query("\u{e000}x"), None);
    }

    /// The line's index tokens as unicode61 makes them from the test alphabet.
    fn index_tokens(line: &str) -> Vec<String> {
        line.to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|token| !token.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Whether the index tokens satisfy the query, folding the query's case as the index does.
    fn satisfies(query: &str, tokens: &[String]) -> bool {
        query.split(" AND ").all(|term| {
            let term = term.to_lowercase();
            let term = term.strip_prefix('"').expect("terms are quoted");
            match term.strip_suffix("\"*") {
                Some(prefix) => tokens.iter().any(|token| token.starts_with(prefix)),
                None => {
                    let exact = term.strip_suffix('"').expect("terms are quoted");
                    tokens.iter().any(|token| token == exact)
                }
            }
        })
    }

    proptest! {
        #[test]
        fn index_never_hides_a_match(line in "[abA\u{e9}\u{c9} ,-]{0,16}", pattern in "[abA\u{e9}\u{c9} ,-]{1,6}") {
            prop_assume!(!pattern.trim().is_empty());
            let grep = GrepPattern::new(&pattern).unwrap();
            if grep.matches(&line) && let Some(query) = grep.fts_query() {
                prop_assert!(satisfies(&query, &index_tokens(&line)), "{query}");
            }
        }

        #[test]
        fn matches_agrees_with_the_definition(line in "[abA\u{e9}\u{c9} ,-]{0,16}", pattern in "[abA\u{e9} ,-]{1,6}") {
            prop_assume!(!pattern.trim().is_empty());
            let grep = GrepPattern::new(&pattern).unwrap();
            let chars: Vec<char> = line.chars().collect();
            let pattern_lower = pattern.to_lowercase();
            let needs_word_start = pattern.starts_with(char::is_alphanumeric);
            let expected = (0..chars.len()).any(|at| {
                chars[at..].iter().collect::<String>().to_lowercase().starts_with(&pattern_lower)
                    && (!needs_word_start || at == 0 || !chars[at - 1].is_alphanumeric())
            });
            prop_assert_eq!(grep.matches(&line), expected);
            // The ASCII fast path agrees with the general one (a trailing snowman changes nothing).
            let ascii_line = line.replace(['\u{e9}', '\u{c9}'], "b");
            prop_assert_eq!(grep.matches(&ascii_line), grep.matches(&format!("{ascii_line}\u{2603}")));
        }
    }
}
