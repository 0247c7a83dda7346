//! Server-Sent Events framing: bytes in, events out (pure).

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `id:` field, if the event had one (`gap` has none).
    pub(crate) id: Option<String>,
    /// The `event:` field, `message` when absent.
    pub(crate) kind: String,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: String,
}

/// Incremental parser: feed chunks as they arrive, in any split.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    pending: Vec<u8>,
    id: Option<String>,
    kind: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Appends `chunk` and returns the events it completed.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut consumed = 0;
        while let Some(offset) = self.pending[consumed..]
            .iter()
            .position(|byte| *byte == b'\n')
        {
            let mut line = &self.pending[consumed..consumed + offset];
            consumed += offset + 1;
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.pending.drain(..consumed);
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take();
            let kind = self.kind.take();
            let id = self.id.take();
            // An event without data is not dispatched (SSE rules).
            return data.map(|data| SseEvent {
                id,
                kind: kind.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(':') {
            // A comment (`:keep-alive`): activity only.
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.kind = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_comments_and_gaps_in_any_split() {
        let text = "id: 1-0\nevent: set\ndata: {\"key\":\"file:h/t\",\"ts\":\"1\"}\n\n:keep-alive\n\nevent: gap\r\ndata: {\"reason\":\"retention\"}\r\n\r\ndata: x\n\n";
        for split in 1..text.len() {
            let mut parser = SseParser::default();
            let mut events = parser.push(&text.as_bytes()[..split]);
            events.extend(parser.push(&text.as_bytes()[split..]));
            assert_eq!(
                events,
                [
                    SseEvent {
                        id: Some("1-0".into()),
                        kind: "set".into(),
                        data: "{\"key\":\"file:h/t\",\"ts\":\"1\"}".into()
                    },
                    SseEvent {
                        id: None,
                        kind: "gap".into(),
                        data: "{\"reason\":\"retention\"}".into()
                    },
                    SseEvent {
                        id: None,
                        kind: "message".into(),
                        data: "x".into()
                    },
                ],
                "split at {split}"
            );
        }
    }
}
