//! An incremental Server-Sent Events parser (the WHATWG event-stream format), fed raw chunks.

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseFrame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Accumulates bytes and yields complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseFrame,
    has_data: bool,
}

impl SseParser {
    /// Feeds a chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseFrame> {
        self.buffer.extend_from_slice(chunk);
        let mut frames = vec![];
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    frames.push(std::mem::take(&mut self.current));
                }
                self.current = SseFrame::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_chunks_comments_and_multiline_data() {
        let mut parser = SseParser::default();
        assert!(
            parser
                .feed(b": keep-alive\n\nid: 4\nevent: agent_st")
                .is_empty()
        );
        let frames = parser.feed(b"ate\ndata: {\"a\":\ndata: 1}\n\n");
        assert_eq!(
            frames,
            [SseFrame {
                id: Some("4".into()),
                event: Some("agent_state".into()),
                data: "{\"a\":\n1}".into()
            }]
        );
        assert_eq!(parser.feed(b"data:x\r\n\r\n")[0].data, "x");
    }
}
