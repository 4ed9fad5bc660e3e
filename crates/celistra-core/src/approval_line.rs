//! The compatibility path for approvals: a permission request printed by an agent as one JSON line on
//! its terminal, found in the output stream and hidden from viewers, and the line that answers it.
//!
//! A request line is `{"celistra":"permission_request","prompt":"…"}` plus the optional `id`,
//! `detail`, `ttl` and `on_timeout`, alone on its line (docs/approvals.md). [`LineScanner`] splits
//! an output stream into what viewers and history see and the requests found; [`response_line`]
//! is what the daemon writes to the agent's stdin once the request is decided.

use celistra_proto::AskRequest;
pub use celistra_proto::TimeoutDefault;
use memchr::memchr;
use serde::{Deserialize, Serialize};

/// Longest prompt accepted, in bytes: the thing being approved is shown whole or not at all.
pub const MAX_PROMPT_BYTES: usize = 4 * 1024;
/// Longest detail kept, in bytes; longer details are cut by [`clip_detail`].
pub const MAX_DETAIL_BYTES: usize = 4 * 1024;
/// Longest request id accepted, in bytes. It comes back in the response line, which must fit in one
/// canonical-mode terminal line (4095 bytes) when it is typed into a PTY.
pub const MAX_ID_BYTES: usize = 128;
/// Longest TTL accepted, in seconds (a day), as the broker allows.
pub const MAX_TTL_SECS: u64 = 86_400;
/// Most bytes held back while a line might still become a request line (without its `\n`).
/// A longer line is released as output, so a request line is at most this long.
pub const MAX_HELD_LINE_BYTES: usize = 64 * 1024;

const REQUEST_MARKER: &str = "permission_request";
const RESPONSE_MARKER: &str = "permission_response";

/// How a request ended, as every surface reports it (`approved`, `denied`, `expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Denied,
    /// Nobody decided before the TTL ran out; what the agent then does is its `on_timeout`.
    Expired,
}

impl Decision {
    /// The word used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Denied => "denied",
            Decision::Expired => "expired",
        }
    }
}

/// A permission request found in an agent's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRequest {
    /// The agent's own id for the request, echoed in the response line.
    pub id: Option<String>,
    pub prompt: String,
    pub detail: Option<String>,
    pub ttl_secs: Option<u64>,
    pub on_timeout: TimeoutDefault,
}

/// What the broker is asked; the line's `id` is the agent's own `key` for the request.
impl From<LineRequest> for AskRequest {
    fn from(request: LineRequest) -> Self {
        AskRequest {
            prompt: request.prompt,
            detail: request.detail,
            ttl_secs: request.ttl_secs,
            on_timeout: request.on_timeout,
            key: request.id,
        }
    }
}

/// The request line as printed; parsed strictly (unknown or repeated fields make it ordinary output).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    celistra: String,
    id: Option<String>,
    prompt: String,
    detail: Option<String>,
    ttl: Option<u64>,
    on_timeout: Option<TimeoutDefault>,
}

impl WireRequest {
    fn into_request(self) -> Option<LineRequest> {
        if self.celistra != REQUEST_MARKER || check_prompt(&self.prompt).is_err() {
            return None;
        }
        if self.id.as_deref().is_some_and(|id| !is_valid_id(id)) {
            return None;
        }
        if self.ttl.is_some_and(|ttl| check_ttl(ttl).is_err()) {
            return None;
        }
        Some(LineRequest {
            id: self.id,
            prompt: self.prompt,
            detail: self.detail.as_deref().map(clip_detail),
            ttl_secs: self.ttl,
            on_timeout: self.on_timeout.unwrap_or_default(),
        })
    }
}

/// Checks a prompt: one line of text, not blank, no control characters, at most
/// [`MAX_PROMPT_BYTES`]. Shared by every way of asking.
pub fn check_prompt(prompt: &str) -> Result<(), String> {
    if prompt.trim().is_empty() {
        return Err(
            "the prompt is empty: say what the agent wants to do, e.g. \"git push origin main\""
                .into(),
        );
    }
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(format!(
            "the prompt is {} bytes long; at most {MAX_PROMPT_BYTES} are allowed: put the rest in the detail",
            prompt.len()
        ));
    }
    if prompt.chars().any(char::is_control) {
        return Err(
            "the prompt contains control characters (a newline, tab or escape): keep it to one line and put the rest in the detail"
                .into(),
        );
    }
    Ok(())
}

/// Checks a TTL: 1 to [`MAX_TTL_SECS`] seconds.
pub fn check_ttl(ttl_secs: u64) -> Result<(), String> {
    if (1..=MAX_TTL_SECS).contains(&ttl_secs) {
        Ok(())
    } else {
        Err(format!(
            "ttl {ttl_secs} s is out of range: give 1 to {MAX_TTL_SECS} seconds, or leave it out for the default (300)"
        ))
    }
}

/// 1 to [`MAX_ID_BYTES`] bytes without control characters.
fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control)
}

/// A detail fit for a phone or a terminal: control characters other than newline and tab become
/// U+FFFD, and text beyond [`MAX_DETAIL_BYTES`] is cut at a character boundary with a note saying
/// how long it was. The result is never longer than [`MAX_DETAIL_BYTES`].
pub fn clip_detail(detail: &str) -> String {
    let clean: String = detail
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect();
    if clean.len() <= MAX_DETAIL_BYTES {
        return clean;
    }
    let note = format!("\n… (cut: {} bytes in all)", clean.len());
    let mut end = MAX_DETAIL_BYTES - note.len();
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let mut clipped = clean[..end].to_owned();
    clipped.push_str(&note);
    clipped
}

/// The line written to the agent's stdin once its request is decided, ending in `\n`:
/// `{"celistra":"permission_response","id":"…","decision":"approved"}`. `id` is the request's own
/// id, or the daemon's id for it when the request carried none.
pub fn response_line(id: &str, decision: Decision) -> String {
    // A `Value::String` displays as a quoted, escaped JSON string, so no serialisation can fail.
    let quoted_id = serde_json::Value::from(id);
    format!(
        "{{\"celistra\":\"{RESPONSE_MARKER}\",\"id\":{quoted_id},\"decision\":\"{}\"}}\n",
        decision.as_str()
    )
}

/// Finds request lines in an output stream (PTY output, or stdout/stderr in pipe mode), holding
/// back only a line that could still become one, and passes every other byte through unchanged.
/// How the stream is cut into chunks never changes the result.
#[derive(Debug, Default)]
pub struct LineScanner {
    state: ScanState,
    /// The start of the current line while it could still be a request line.
    held: Vec<u8>,
    /// The request in `held`, once its object has closed; it counts when its line ends.
    pending: Option<Box<LineRequest>>,
}

/// How every request line begins: the marker first, without spaces. Only such lines are held.
const REQUEST_START: &[u8] = br#"{"celistra":"permission_request""#;

#[derive(Debug, Default, Clone, Copy)]
enum ScanState {
    /// At the start of a line (also the start of the stream).
    #[default]
    LineStart,
    /// Inside a line that cannot be a request line: bytes pass until the next `\n`.
    Ordinary,
    /// Holding the `\r` that began the line.
    LeadingCr,
    /// Holding the line's object, not closed yet.
    InObject(ObjectLexer),
    /// Holding a valid request object (in `pending`) until its line ends; one `\r` may come first.
    AfterObject { saw_cr: bool },
}

impl LineScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans `bytes`, appending to `out` every byte that is not part of a request line, and returns
    /// the requests whose lines ended in these bytes.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Vec<LineRequest> {
        let mut found = Vec::new();
        let mut rest = bytes;
        while let Some(&byte) = rest.first() {
            let consumed = match self.state {
                ScanState::Ordinary => pass_ordinary(rest, out, &mut self.state),
                ScanState::InObject(lexer) => self.scan_object(lexer, rest, out),
                ScanState::LineStart => {
                    match byte {
                        b'{' => self.hold(byte, ScanState::InObject(ObjectLexer::default())),
                        b'\r' => self.hold(byte, ScanState::LeadingCr),
                        _ => self.release_with(byte, out),
                    }
                    1
                }
                ScanState::LeadingCr => {
                    if byte == b'{' {
                        self.hold(byte, ScanState::InObject(ObjectLexer::default()));
                    } else {
                        self.release_with(byte, out);
                    }
                    1
                }
                ScanState::AfterObject { saw_cr } => {
                    if byte == b'\n' {
                        self.held.clear();
                        found.extend(self.pending.take().map(|request| *request));
                        self.state = ScanState::LineStart;
                    } else if byte == b'\r' && !saw_cr && self.held.len() < MAX_HELD_LINE_BYTES {
                        self.hold(byte, ScanState::AfterObject { saw_cr: true });
                    } else {
                        self.release_with(byte, out);
                    }
                    1
                }
            };
            rest = &rest[consumed..];
        }
        found
    }

    /// Releases whatever is held (an unfinished line is not a request) and starts over at a line
    /// start, as at the end of a run.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
        self.pending = None;
        self.state = ScanState::LineStart;
    }

    /// Holds the object's bytes while they may still form a request; returns how many of `rest`
    /// it used (at least one).
    fn scan_object(&mut self, mut lexer: ObjectLexer, rest: &[u8], out: &mut Vec<u8>) -> usize {
        let room = MAX_HELD_LINE_BYTES.saturating_sub(self.held.len());
        // Where in REQUEST_START the next byte is: a JSON log line is ruled out within a few bytes,
        // before any lexing or parsing.
        let start = self.held.len() - usize::from(self.held.first() == Some(&b'\r'));
        let mut open = 0;
        let mut stop = None;
        for (at, &byte) in (start..).zip(rest.iter().take(room)) {
            if REQUEST_START
                .get(at)
                .is_some_and(|&expected| expected != byte)
            {
                stop = Some(LexStep::Impossible);
                break;
            }
            match lexer.feed(byte) {
                LexStep::Open => open += 1,
                step => {
                    stop = Some(step);
                    break;
                }
            }
        }
        self.held.extend_from_slice(&rest[..open]);
        self.state = ScanState::InObject(lexer);
        let Some(&byte) = rest.get(open) else {
            return open;
        };
        match stop {
            Some(LexStep::Closed) => {
                self.held.push(byte);
                match self.parse_held() {
                    Some(request) => {
                        self.pending = Some(Box::new(request));
                        self.state = ScanState::AfterObject { saw_cr: false };
                    }
                    None => {
                        out.append(&mut self.held);
                        self.state = ScanState::Ordinary;
                    }
                }
            }
            // Ruled out by the lexer, or the line is longer than may be held.
            _ => self.release_with(byte, out),
        }
        open + 1
    }

    fn hold(&mut self, byte: u8, next: ScanState) {
        self.held.push(byte);
        self.state = next;
    }

    /// The held line cannot be a request line: it and `byte` become output.
    fn release_with(&mut self, byte: u8, out: &mut Vec<u8>) {
        out.append(&mut self.held);
        out.push(byte);
        self.pending = None;
        self.state = if byte == b'\n' {
            ScanState::LineStart
        } else {
            ScanState::Ordinary
        };
    }

    fn parse_held(&self) -> Option<LineRequest> {
        let object = self.held.strip_prefix(b"\r").unwrap_or(&self.held);
        serde_json::from_slice::<WireRequest>(object)
            .ok()?
            .into_request()
    }
}

/// Passes bytes of a line that cannot be a request line through to its end; returns how many of
/// `rest` it used.
fn pass_ordinary(rest: &[u8], out: &mut Vec<u8>, state: &mut ScanState) -> usize {
    match memchr(b'\n', rest) {
        Some(newline) => {
            out.extend_from_slice(&rest[..=newline]);
            *state = ScanState::LineStart;
            newline + 1
        }
        None => {
            out.extend_from_slice(rest);
            rest.len()
        }
    }
}

/// Just enough of a JSON lexer to stop holding a line as soon as it cannot be a request: a request
/// is one flat object (string, number and null values), so a nested `{` or `[`, a raw control
/// character in a string or a byte no JSON token outside strings uses rules it out. The strict
/// parse at the closing brace decides the rest.
#[derive(Debug, Default, Clone, Copy)]
struct ObjectLexer {
    in_string: bool,
    escaped: bool,
}

enum LexStep {
    Open,
    Closed,
    Impossible,
}

impl ObjectLexer {
    fn feed(&mut self, byte: u8) -> LexStep {
        if self.in_string {
            if byte < 0x20 {
                return LexStep::Impossible;
            }
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
            }
            return LexStep::Open;
        }
        match byte {
            b'"' => {
                self.in_string = true;
                LexStep::Open
            }
            b'}' => LexStep::Closed,
            b' '
            | b'\t'
            | b'\r'
            | b':'
            | b','
            | b'0'..=b'9'
            | b'-'
            | b'+'
            | b'.'
            | b'e'
            | b'E'
            | b'a'
            | b'f'
            | b'l'
            | b'n'
            | b'r'
            | b's'
            | b't'
            | b'u' => LexStep::Open,
            _ => LexStep::Impossible,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PUSH: &str = r#"{"celistra":"permission_request","id":"req-1","prompt":"git push origin main","detail":"3 commits","ttl":300,"on_timeout":"deny"}"#;

    fn scan(input: &[u8]) -> (Vec<u8>, Vec<LineRequest>) {
        scan_chunks(&[input])
    }

    fn scan_chunks(chunks: &[&[u8]]) -> (Vec<u8>, Vec<LineRequest>) {
        let mut scanner = LineScanner::new();
        let mut out = Vec::new();
        let mut found = Vec::new();
        for chunk in chunks {
            found.extend(scanner.push(chunk, &mut out));
        }
        scanner.finish(&mut out);
        (out, found)
    }

    fn request(prompt: &str) -> LineRequest {
        LineRequest {
            id: None,
            prompt: prompt.into(),
            detail: None,
            ttl_secs: None,
            on_timeout: TimeoutDefault::Deny,
        }
    }

    #[test]
    fn a_request_line_is_taken_out_of_the_output() {
        let input = format!("building\n{PUSH}\ndone\n");
        let (out, found) = scan(input.as_bytes());
        assert_eq!(out, b"building\ndone\n");
        assert_eq!(
            found,
            vec![LineRequest {
                id: Some("req-1".into()),
                prompt: "git push origin main".into(),
                detail: Some("3 commits".into()),
                ttl_secs: Some(300),
                on_timeout: TimeoutDefault::Deny,
            }]
        );
    }

    #[test]
    fn optional_fields_default_and_on_timeout_can_approve() {
        let (out, found) = scan(
            br#"{"celistra":"permission_request","prompt":"deploy"}
{"celistra":"permission_request","on_timeout":"approve","prompt":"restart db"}
"#,
        );
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        assert_eq!(found[0], request("deploy"));
        assert_eq!(found[1].on_timeout, TimeoutDefault::Approve);
    }

    #[test]
    fn terminal_line_endings_and_a_leading_carriage_return_are_tolerated() {
        let input = format!("a\r\n{PUSH}\r\n\r{PUSH}\r\nb\r\n");
        let (out, found) = scan(input.as_bytes());
        assert_eq!(out, b"a\r\nb\r\n");
        assert_eq!(found.len(), 2);
        // At the very start of the stream, too.
        let (out, found) = scan(format!("\r{PUSH}\n").as_bytes());
        assert!(out.is_empty() && found.len() == 1);
    }

    #[test]
    fn lines_that_only_mention_the_marker_pass_through_byte_for_byte() {
        let cases: Vec<String> = vec![
            format!("log: {PUSH}\n"),
            format!(" {PUSH}\n"),
            format!("{PUSH} \n"),
            format!("{PUSH}{PUSH}\n"),
            format!("{PUSH}\r\r\n"),
            format!("\r\r{PUSH}\n"),
            format!("x\r{PUSH}\n"),
            r#"{"celistra":"permission_request","prompt":""}"#.to_owned() + "\n",
            r#"{"celistra":"permission_request","prompt":"   "}"#.to_owned() + "\n",
            r#"{"celistra":"permission_request","prompt":"a\nb"}"#.to_owned() + "\n",
            r#"{"celistra":"permission_request"}"#.to_owned() + "\n",
            r#"{"celistra":"permission_response","prompt":"x"}"#.to_owned() + "\n",
            r#"{"celistra":"permission_request","prompt":"x","extra":1}"#.to_owned() + "\n",
            r#"{"celistra":"permission_request","prompt":"x","prompt":"y"}"#.to_owned() + "\n",
            r#"{"celistra":"permission_request","prompt":"x","ttl":0}"#.to_owned() + "\n",
            r#"{"celistra":"permission_request","prompt":"x","ttl":86401}"#.to_owned() + "\n",
            r#"{"celistra":"permission_request","prompt":"x","ttl":-5}"#.to_owned() + "\n",
            r#"{"celistra":"permission_request","prompt":"x","id":""}"#.to_owned() + "\n",
            r#"{"celistra":"permission_request","prompt":"x","on_timeout":"maybe"}"#.to_owned()
                + "\n",
            r#"{"celistra":"permission_request","prompt":"x","detail":{"a":1}}"#.to_owned() + "\n",
            r#"{'celistra':'permission_request','prompt':'x'}"#.to_owned() + "\n",
            format!(
                r#"{{"celistra":"permission_request","prompt":"{}"}}"#,
                "p".repeat(MAX_PROMPT_BYTES + 1)
            ) + "\n",
            format!(
                r#"{{"celistra":"permission_request","prompt":"x","id":"{}"}}"#,
                "i".repeat(MAX_ID_BYTES + 1)
            ) + "\n",
            format!("{}\n", &PUSH[..PUSH.len() - 1]),
        ];
        for case in cases {
            let (out, found) = scan(case.as_bytes());
            assert!(found.is_empty(), "recognised {case:?}");
            assert_eq!(out, case.as_bytes());
        }
    }

    #[test]
    fn a_line_that_is_not_valid_utf8_passes_through() {
        let mut input = br#"{"celistra":"permission_request","prompt":"x"#.to_vec();
        input.extend_from_slice(&[0xff, 0xfe]);
        input.extend_from_slice(b"\"}\n");
        let (out, found) = scan(&input);
        assert!(found.is_empty());
        assert_eq!(out, input);
    }

    #[test]
    fn a_prompt_of_exactly_the_limit_counts() {
        let prompt = "é".repeat(MAX_PROMPT_BYTES / 2);
        let line = format!(r#"{{"celistra":"permission_request","prompt":"{prompt}"}}"#) + "\n";
        let (out, found) = scan(line.as_bytes());
        assert!(out.is_empty());
        assert_eq!(found, vec![request(&prompt)]);
    }

    #[test]
    fn escapes_in_strings_are_understood() {
        let line =
            r#"{"celistra":"permission_request","prompt":"say \"hi\" \\ \u00e9 }{","id":"a\"b"}"#;
        let (out, found) = scan(format!("{line}\n").as_bytes());
        assert!(out.is_empty());
        assert_eq!(found[0].prompt, r#"say "hi" \ é }{"#);
        assert_eq!(found[0].id.as_deref(), Some("a\"b"));
    }

    #[test]
    fn long_details_are_clipped_and_control_characters_replaced() {
        let detail = "d".repeat(10_000);
        let line = format!(
            r#"{{"celistra":"permission_request","prompt":"x","detail":"a\u001b[2Jb\n{detail}"}}"#
        );
        let (_, found) = scan(format!("{line}\n").as_bytes());
        let clipped = found[0].detail.as_deref().unwrap();
        assert!(clipped.len() <= MAX_DETAIL_BYTES);
        assert!(clipped.starts_with("a\u{fffd}[2Jb\nddd"));
        assert!(clipped.ends_with("bytes in all)"), "{clipped}");
    }

    #[test]
    fn only_a_possible_request_line_is_held_back() {
        let mut scanner = LineScanner::new();
        let mut out = Vec::new();
        // Ordinary text without a newline (a shell prompt) is not held.
        scanner.push(b"$ ", &mut out);
        assert_eq!(out, b"$ ");
        // A line starting with `{` that may still become a request is held...
        out.clear();
        scanner.push(b"\n{\"celistra\":\"perm", &mut out);
        assert_eq!(out, b"\n");
        // ...and released at the first byte that rules it out.
        scanner.push(b"ission_request\",[", &mut out);
        assert_eq!(out, b"\n{\"celistra\":\"permission_request\",[");
        // A line whose marker is not its first field (or has spaces) is never held.
        out.clear();
        scanner.push(
            b"\n{\"prompt\":\"x\",\"celistra\":\"permission_request\"}",
            &mut out,
        );
        assert_eq!(
            out,
            b"\n{\"prompt\":\"x\",\"celistra\":\"permission_request\"}"
        );
        out.clear();
        scanner.push(b"\n{\"celistra\": \"permission_request\"", &mut out);
        assert_eq!(out, b"\n{\"celistra\": \"permission_request\"");
        // A brace prompt is released as soon as it cannot be JSON.
        out.clear();
        scanner.push(b"\n{foo} > ", &mut out);
        assert_eq!(out, b"\n{foo} > ");
        // A closed object that is not a request is released without waiting for its newline.
        out.clear();
        scanner.push(b"\n{\"level\":\"info\"}", &mut out);
        assert_eq!(out, b"\n{\"level\":\"info\"}");
        // A valid request waits for its line to end; `finish` releases it unrecognised.
        out.clear();
        let found = scanner.push(format!("\n{PUSH}").as_bytes(), &mut out);
        assert!(found.is_empty());
        assert_eq!(out, b"\n");
        scanner.finish(&mut out);
        assert_eq!(out, format!("\n{PUSH}").as_bytes());
        // After `finish`, the scanner is at a line start again.
        out.clear();
        let found = scanner.push(format!("{PUSH}\n").as_bytes(), &mut out);
        assert!(out.is_empty() && found.len() == 1);
    }

    #[test]
    fn at_most_64_kib_is_held() {
        let mut scanner = LineScanner::new();
        let mut out = Vec::new();
        let mut line = br#"{"celistra":"permission_request","prompt":"x","detail":""#.to_vec();
        line.resize(MAX_HELD_LINE_BYTES, b'd');
        scanner.push(&line, &mut out);
        assert!(out.is_empty(), "up to the limit is held");
        scanner.push(b"d", &mut out);
        assert_eq!(
            out.len(),
            MAX_HELD_LINE_BYTES + 1,
            "one more byte releases it"
        );
        // The rest of that line passes straight through, even a closing brace and newline.
        scanner.push(b"\"}\n", &mut out);
        assert_eq!(out.len(), MAX_HELD_LINE_BYTES + 4);
    }

    #[test]
    fn a_request_line_longer_than_the_hold_limit_is_ordinary_output() {
        let detail = "d".repeat(MAX_HELD_LINE_BYTES);
        let line =
            format!(r#"{{"celistra":"permission_request","prompt":"x","detail":"{detail}"}}"#)
                + "\n";
        let (out, found) = scan(line.as_bytes());
        assert!(found.is_empty());
        assert_eq!(out, line.as_bytes());
    }

    #[test]
    fn a_request_of_exactly_the_hold_limit_counts() {
        let head = r#"{"celistra":"permission_request","prompt":"x","detail":""#;
        let tail = "\"}\r";
        let detail = "d".repeat(MAX_HELD_LINE_BYTES - head.len() - tail.len());
        let line = format!("{head}{detail}{tail}\n");
        let (out, found) = scan(line.as_bytes());
        assert!(out.is_empty());
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn response_lines_are_one_json_line() {
        assert_eq!(
            response_line("req-1", Decision::Approved),
            "{\"celistra\":\"permission_response\",\"id\":\"req-1\",\"decision\":\"approved\"}\n"
        );
        let line = response_line("a\"b\n\\", Decision::Expired);
        assert_eq!(line.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["id"], "a\"b\n\\");
        assert_eq!(value["decision"], "expired");
        assert_eq!(value["celistra"], "permission_response");
        // A response line is never mistaken for a request.
        let (out, found) = scan(response_line("x", Decision::Denied).as_bytes());
        assert!(found.is_empty());
        assert_eq!(out, response_line("x", Decision::Denied).as_bytes());
    }

    #[test]
    fn decisions_have_their_words() {
        for (decision, word) in [
            (Decision::Approved, "approved"),
            (Decision::Denied, "denied"),
            (Decision::Expired, "expired"),
        ] {
            assert_eq!(decision.as_str(), word);
            assert_eq!(serde_json::to_value(decision).unwrap(), word);
        }
    }

    #[test]
    fn a_line_request_becomes_the_brokers_ask_with_its_id_as_key() {
        let found = scan(format!("{PUSH}\n").as_bytes()).1;
        assert_eq!(
            AskRequest::from(found[0].clone()),
            AskRequest {
                prompt: "git push origin main".into(),
                detail: Some("3 commits".into()),
                ttl_secs: Some(300),
                on_timeout: TimeoutDefault::Deny,
                key: Some("req-1".into()),
            }
        );
    }

    #[test]
    fn ttls_are_checked_with_reasons() {
        assert!(check_ttl(1).is_ok() && check_ttl(MAX_TTL_SECS).is_ok());
        assert!(check_ttl(0).unwrap_err().contains("1 to 86400"));
        assert!(check_ttl(MAX_TTL_SECS + 1).is_err());
    }

    #[test]
    fn prompts_are_checked_with_reasons() {
        assert!(check_prompt("git push origin main").is_ok());
        assert!(check_prompt(" \t").unwrap_err().contains("empty"));
        assert!(check_prompt("a\nb").unwrap_err().contains("one line"));
        assert!(
            check_prompt(&"x".repeat(MAX_PROMPT_BYTES + 1))
                .unwrap_err()
                .contains("at most 4096")
        );
    }

    #[test]
    fn requests_round_trip_through_serde() {
        let found = scan(format!("{PUSH}\n").as_bytes()).1;
        let text = serde_json::to_string(&found[0]).unwrap();
        assert_eq!(
            serde_json::from_str::<LineRequest>(&text).unwrap(),
            found[0]
        );
    }

    /// One line of a generated stream and whether it should be recognised.
    fn line_strategy() -> impl Strategy<Value = (Vec<u8>, Option<LineRequest>)> {
        let valid = (
            "[a-z ]{1,20}",
            proptest::option::of("[a-z0-9-]{1,10}"),
            proptest::option::of(1u64..1000),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_filter("prompt must not be blank", |(prompt, ..)| {
                !prompt.trim().is_empty()
            })
            .prop_map(|(prompt, id, ttl, approve, crlf)| {
                let mut object = serde_json::json!({
                    "celistra": "permission_request",
                    "prompt": prompt,
                });
                if let Some(id) = &id {
                    object["id"] = id.clone().into();
                }
                if let Some(ttl) = ttl {
                    object["ttl"] = ttl.into();
                }
                if approve {
                    object["on_timeout"] = "approve".into();
                }
                let end = if crlf { "\r\n" } else { "\n" };
                let request = LineRequest {
                    id,
                    prompt,
                    detail: None,
                    ttl_secs: ttl,
                    on_timeout: if approve {
                        TimeoutDefault::Approve
                    } else {
                        TimeoutDefault::Deny
                    },
                };
                (format!("{object}{end}").into_bytes(), Some(request))
            });
        // Ordinary lines built from the bytes that matter to the scanner; never a request.
        let ordinary = proptest::collection::vec(
            prop_oneof![
                Just(b'{'),
                Just(b'}'),
                Just(b'"'),
                Just(b'\r'),
                Just(b'\\'),
                Just(b'a'),
                Just(b' '),
                any::<u8>(),
            ],
            0..40,
        )
        .prop_map(|mut bytes| {
            bytes.retain(|&b| b != b'\n');
            bytes.push(b'\n');
            (bytes, None)
        });
        let mention = Just((format!("note {PUSH}\n").into_bytes(), None));
        prop_oneof![3 => valid, 4 => ordinary, 1 => mention]
    }

    fn split_at_points(input: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
        points.iter_mut().for_each(|p| *p %= input.len() + 1);
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for point in points {
            chunks.push(&input[start..point]);
            start = point;
        }
        chunks.push(&input[start..]);
        chunks
    }

    proptest! {
        #[test]
        fn chunk_boundaries_do_not_change_the_result(
            lines in proptest::collection::vec(line_strategy(), 0..12),
            tail in proptest::collection::vec(any::<u8>(), 0..20),
            points in proptest::collection::vec(any::<usize>(), 0..30),
        ) {
            let mut input = Vec::new();
            let mut expected_out = Vec::new();
            let mut expected_found = Vec::new();
            for (bytes, request) in &lines {
                input.extend_from_slice(bytes);
                match request {
                    Some(request) => expected_found.push(request.clone()),
                    None => expected_out.extend_from_slice(bytes),
                }
            }
            input.extend_from_slice(&tail);
            expected_out.extend_from_slice(&tail);

            let whole = scan(&input);
            prop_assert_eq!(&whole.0, &expected_out);
            prop_assert_eq!(&whole.1, &expected_found);
            let split = scan_chunks(&split_at_points(&input, points));
            prop_assert_eq!(split, whole);
        }

        #[test]
        fn garbage_never_panics_and_splits_agree(
            input in proptest::collection::vec(
                prop_oneof![Just(b'{'), Just(b'}'), Just(b'"'), Just(b'\n'), Just(b'\r'), any::<u8>()],
                0..400,
            ),
            points in proptest::collection::vec(any::<usize>(), 0..30),
        ) {
            let whole = scan(&input);
            prop_assert!(whole.1.is_empty());
            prop_assert_eq!(&whole.0, &input);
            prop_assert_eq!(scan_chunks(&split_at_points(&input, points)), whole);
        }

        #[test]
        fn byte_at_a_time_equals_all_at_once(
            lines in proptest::collection::vec(line_strategy(), 0..6),
        ) {
            let input: Vec<u8> = lines.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            prop_assert_eq!(scan_chunks(&bytes), scan(&input));
        }

        #[test]
        fn clipped_details_fit_and_keep_their_start(text in "\\PC{0,3000}", repeat in 1usize..4) {
            let detail = text.repeat(repeat);
            let clipped = clip_detail(&detail);
            prop_assert!(clipped.len() <= MAX_DETAIL_BYTES);
            if detail.len() <= MAX_DETAIL_BYTES {
                prop_assert_eq!(clipped, detail);
            } else {
                let kept = clipped.split("\n… (cut:").next().unwrap();
                prop_assert!(detail.starts_with(kept));
            }
        }
    }
}
