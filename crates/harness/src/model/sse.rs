//! An incremental Server-Sent Events parser for model streams: bytes in,
//! complete `(event, data)` pairs out. Both providers stream this way.

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; empty when absent.
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// Parser state: the unfinished line and event.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: String,
    data: Vec<String>,
    /// Bytes held for one event, to bound memory against a stream that never ends an event.
    held: usize,
}

/// An event larger than this is an error (a model's chunk is a few KiB).
pub const MAX_EVENT: usize = 4 << 20;

impl SseParser {
    /// Feeds `bytes`; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                self.held += 1;
                if self.held > MAX_EVENT {
                    return Err(format!("a stream event is larger than {MAX_EVENT} bytes"));
                }
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    out.push(SseEvent { event: std::mem::take(&mut self.event), data: self.data.join("\n") });
                    self.data.clear();
                }
                self.held = 0;
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.event = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {} // comments (`: keep-alive`), id, retry
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let text = "event: a\r\ndata: {\"x\":1}\r\n\r\n: ping\n\ndata: one\ndata: two\n\n";
        let want = vec![
            SseEvent { event: "a".into(), data: "{\"x\":1}".into() },
            SseEvent { event: String::new(), data: "one\ntwo".into() },
        ];
        for cut in 0..text.len() {
            let mut p = SseParser::default();
            let mut got = p.feed(&text.as_bytes()[..cut]).expect("feed");
            got.extend(p.feed(&text.as_bytes()[cut..]).expect("feed"));
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_give_events_or_an_error(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut p = SseParser::default();
            for c in &chunks {
                let _ = p.feed(c);
            }
        }
    }
}
