//! Server-Sent Events (WHATWG HTML, "Server-sent events", the event stream interpretation), parsed
//! incrementally and encoded.
//!
//! MCP's streamable HTTP transport answers a POST either with one JSON body or with an SSE stream
//! whose events carry JSON-RPC messages, and the GET stream is SSE too. The gateway must read each
//! event of an upstream's stream (to decide and record the responses and server-to-client requests in
//! it) and re-emit it to the agent, without ever buffering without bound. So:
//!
//! * [`SseParser::push`] takes the body chunk by chunk, wherever the network split it — inside a
//!   CRLF pair, inside a UTF-8 sequence, inside the leading byte order mark — and returns the events
//!   completed by that chunk;
//! * a line longer than [`SseLimits::max_line_bytes`] or an event whose data grows past
//!   [`SseLimits::max_event_bytes`] is an error, after which the parser stays failed (the stream must
//!   be dropped: resynchronising mid-event could splice two messages together);
//! * [`encode`] writes an event so that this parser (or any conforming one) reads it back.
//!
//! Parsing follows the specification: lines end in CRLF, LF or CR; one leading BOM is dropped; lines
//! starting with `:` are comments; `event`, `data` (lines joined with `\n`), `id` (ignored if it
//! contains NUL) and `retry` (ASCII digits only) are the fields, anything else is ignored; a blank line
//! dispatches the event, unless no `data` line was seen. Bytes are decoded as UTF-8 with invalid
//! sequences replaced by U+FFFD, as the specification's decoder does.
//!
//! One deliberate difference in what an event reports: [`SseEvent::id`] and [`SseEvent::retry`] are the
//! `id` and `retry` fields *of that event's block*, so that re-encoding the events reproduces the
//! stream. The specification's persistent "last event ID" (what a client sends back as
//! `Last-Event-ID` when it reconnects) and reconnection time are [`SseParser::last_event_id`] and
//! [`SseParser::retry`].

use std::borrow::Cow;

/// Bounds on what the parser buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseLimits {
    /// Longest line, in bytes, without its line end. MCP servers put a whole JSON-RPC message on one
    /// `data` line, so this is about the largest message. Default 4 MiB.
    pub max_line_bytes: usize,
    /// Largest event, counted as the bytes of its joined data. Default 4 MiB.
    pub max_event_bytes: usize,
}

impl Default for SseLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: 4 * 1024 * 1024,
            max_event_bytes: 4 * 1024 * 1024,
        }
    }
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The event type; `None` when the block had no non-empty `event` field (the type is `message`).
    pub event: Option<String>,
    /// The data lines joined with `\n`.
    pub data: String,
    /// The `id` field of this block, if it had one (an empty id resets the last event ID).
    pub id: Option<String>,
    /// The `retry` field of this block, if it had a valid one (milliseconds).
    pub retry: Option<u64>,
}

/// Why a stream was abandoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event stream line is longer than the limit of {max} bytes")]
    LineTooLong { max: usize },
    #[error("an event's data is larger than the limit of {max} bytes")]
    EventTooLarge { max: usize },
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An incremental event-stream parser. See the module documentation.
#[derive(Debug)]
pub struct SseParser {
    limits: SseLimits,
    /// Bytes seen before we know whether the stream starts with a BOM; `None` once we know.
    start: Option<Vec<u8>>,
    /// The current, unfinished line.
    line: Vec<u8>,
    /// The last chunk ended in CR: a LF starting the next chunk belongs to the same line end.
    pending_cr: bool,
    event: String,
    data: String,
    /// The `id` and `retry` fields of the current block.
    block_id: Option<String>,
    block_retry: Option<u64>,
    /// The specification's persistent last event ID and reconnection time.
    last_event_id: String,
    retry: Option<u64>,
    failed: Option<SseError>,
}

impl SseParser {
    pub fn new(limits: SseLimits) -> Self {
        Self {
            limits,
            start: Some(Vec::new()),
            line: Vec::new(),
            pending_cr: false,
            event: String::new(),
            data: String::new(),
            block_id: None,
            block_retry: None,
            last_event_id: String::new(),
            retry: None,
            failed: None,
        }
    }

    /// The specification's last event ID: the value of the latest `id` field seen (persisting across
    /// events). What a reconnecting client sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time from the latest valid `retry` field, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Feeds the next chunk of the body; returns the events it completed, in order. After an error
    /// every later call returns the same error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut events = Vec::new();
        let result = match self.start.take() {
            None => self.feed(chunk, &mut events),
            Some(mut start) => {
                start.extend_from_slice(chunk);
                if start.len() < BOM.len() && BOM.starts_with(&start) {
                    self.start = Some(start);
                    return Ok(events);
                }
                let body = start.strip_prefix(BOM).unwrap_or(&start);
                self.feed(body, &mut events)
            }
        };
        match result {
            Ok(()) => Ok(events),
            Err(e) => {
                self.failed = Some(e.clone());
                self.line = Vec::new();
                self.data = String::new();
                Err(e)
            }
        }
    }

    fn feed(&mut self, mut rest: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.pending_cr && !rest.is_empty() {
            self.pending_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while !rest.is_empty() {
            let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                self.append_line(rest)?;
                break;
            };
            self.append_line(&rest[..i])?;
            let cr = rest[i] == b'\r';
            rest = &rest[i + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, events)?;
            // Keep the allocation for the next line unless it was a huge one.
            if line.capacity() <= 64 * 1024 {
                self.line = line;
                self.line.clear();
            }
        }
        Ok(())
    }

    fn append_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.limits.max_line_bytes {
            return Err(SseError::LineTooLong {
                max: self.limits.max_line_bytes,
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line: Cow<'_, str> = String::from_utf8_lossy(line);
        let (field, value) = match line.find(':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            "data" => {
                if self.data.len() + value.len() + 1 > self.limits.max_event_bytes {
                    return Err(SseError::EventTooLarge {
                        max: self.limits.max_event_bytes,
                    });
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                self.block_id = Some(value.to_owned());
                value.clone_into(&mut self.last_event_id);
            }
            // Digits only; all digits but too large for u64 is ignored, like any unusable value.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.block_retry = Some(ms);
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        let id = self.block_id.take();
        let retry = self.block_retry.take();
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the trailing '\n'
        events.push(SseEvent {
            event: (!event.is_empty()).then_some(event),
            data,
            id,
            retry,
        });
    }
}

/// Encodes one event. Data is split into `data` lines on CRLF, CR and LF (so CR and CRLF in data come
/// back as LF). Line breaks in `event` and `id` are removed (they would otherwise start new fields: an
/// upstream must not be able to inject fields through them); an empty `event` is omitted.
pub fn encode(event: &SseEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.data.len() + 32);
    let clean = |s: &str| -> String { s.chars().filter(|c| *c != '\r' && *c != '\n').collect() };
    if let Some(ev) = &event.event {
        let ev = clean(ev);
        if !ev.is_empty() {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(ev.as_bytes());
            out.push(b'\n');
        }
    }
    if let Some(id) = &event.id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(clean(id).as_bytes());
        out.push(b'\n');
    }
    if let Some(retry) = event.retry {
        out.extend_from_slice(format!("retry: {retry}\n").as_bytes());
    }
    let mut rest = event.data.as_str();
    loop {
        out.extend_from_slice(b"data: ");
        match rest.find(['\r', '\n']) {
            None => {
                out.extend_from_slice(rest.as_bytes());
                out.push(b'\n');
                break;
            }
            Some(i) => {
                out.extend_from_slice(&rest.as_bytes()[..i]);
                out.push(b'\n');
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
        }
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new(SseLimits::default());
        p.push(input).unwrap()
    }

    fn ev(event: Option<&str>, data: &str, id: Option<&str>, retry: Option<u64>) -> SseEvent {
        SseEvent {
            event: event.map(Into::into),
            data: data.into(),
            id: id.map(Into::into),
            retry,
        }
    }

    #[test]
    fn spec_examples() {
        // WHATWG: "data: YHOO\ndata: +2\ndata: 10\n\n" is one event with three lines.
        assert_eq!(
            parse_all(b"data: YHOO\ndata: +2\ndata: 10\n\n"),
            [ev(None, "YHOO\n+2\n10", None, None)]
        );
        // Comments, ids, an event without data is not dispatched, and the last block without a blank
        // line is never dispatched.
        let input =
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n";
        assert_eq!(
            parse_all(input),
            [
                ev(None, "first event", Some("1"), None),
                ev(None, "second event", Some(""), None)
            ]
        );
        // "data" with no colon is an empty data line; two of them make one "\n".
        assert_eq!(
            parse_all(b"data\n\ndata\ndata\n\ndata:\n"),
            [ev(None, "", None, None), ev(None, "\n", None, None)]
        );
        // The space after the colon is dropped once.
        assert_eq!(
            parse_all(b"data:test\n\ndata: test\n\n"),
            [ev(None, "test", None, None), ev(None, "test", None, None)]
        );
    }

    #[test]
    fn fields() {
        let mut p = SseParser::new(SseLimits::default());
        let out = p
            .push(b"event: add\nevent: update\nretry: 15\nretry: 1x\nid: a\0b\nid: 7\nfoo: bar\ndata: x\n\nretry: 99999999999999999999999\ndata: y\n\n")
            .unwrap();
        assert_eq!(
            out,
            [
                ev(Some("update"), "x", Some("7"), Some(15)),
                ev(None, "y", None, None)
            ]
        );
        assert_eq!(p.last_event_id(), "7");
        assert_eq!(p.retry(), Some(15));
        // A block without data dispatches nothing but still updates the last event ID, and clears
        // the event type.
        assert_eq!(
            p.push(b"id: 8\nevent: e\n\ndata: z\n\n").unwrap(),
            [ev(None, "z", None, None)]
        );
        assert_eq!(p.last_event_id(), "8");
    }

    #[test]
    fn line_ends_bom_and_split_points() {
        let input = "\u{feff}data: a\r\ndata: é\r\rdata: b\n\nevent: x\rdata: c\r\n\r\n".as_bytes();
        let want = [
            ev(None, "a\né", None, None),
            ev(None, "b", None, None),
            ev(Some("x"), "c", None, None),
        ];
        assert_eq!(parse_all(input), want);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let mut p = SseParser::new(SseLimits::default());
                let mut out = p.push(&input[..i]).unwrap();
                out.extend(p.push(&input[i..j]).unwrap());
                out.extend(p.push(&input[j..]).unwrap());
                assert_eq!(out, want, "split at {i}, {j}");
            }
        }
        // Only one BOM is dropped, and only at the start.
        assert_eq!(parse_all("\u{feff}\u{feff}data: a\n\n".as_bytes()), []);
        assert_eq!(
            parse_all("\u{feff}data: \u{feff}a\n\n".as_bytes()),
            [ev(None, "\u{feff}a", None, None)]
        );
        // A stream starting with part of a BOM that is not one: those bytes stay (as U+FFFD), so the
        // first line is an unknown field.
        assert_eq!(
            parse_all(b"\xEF\xBBdata: a\n\ndata: b\n\n"),
            [ev(None, "b", None, None)]
        );
        assert_eq!(parse_all(b"\xEF"), []);
        // Invalid UTF-8 becomes U+FFFD.
        assert_eq!(
            parse_all(b"data: \xff\xc3\n\n"),
            [ev(None, "\u{fffd}\u{fffd}", None, None)]
        );
    }

    #[test]
    fn limits_fail_the_stream() {
        let limits = SseLimits {
            max_line_bytes: 8,
            max_event_bytes: 10,
        };
        let mut p = SseParser::new(limits);
        assert_eq!(p.push(b"data: 12").unwrap(), []);
        assert_eq!(p.push(b"3"), Err(SseError::LineTooLong { max: 8 }));
        assert_eq!(p.push(b"\n\n"), Err(SseError::LineTooLong { max: 8 }));
        let mut p = SseParser::new(SseLimits {
            max_line_bytes: 16,
            max_event_bytes: 10,
        });
        assert_eq!(
            p.push(b"data: 1234\ndata: 12345\n"),
            Err(SseError::EventTooLarge { max: 10 })
        );
        // Comments count against the line limit too: no unbounded buffering of any line.
        let mut p = SseParser::new(limits);
        assert!(p.push(b":1234567890").is_err());
    }

    #[test]
    fn encode_writes_fields_and_splits_data() {
        let e = ev(Some("message"), "a\nb\r\nc\rd", Some("4"), Some(10));
        assert_eq!(
            String::from_utf8(encode(&e)).unwrap(),
            "event: message\nid: 4\nretry: 10\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(encode(&ev(None, "", None, None)), b"data: \n\n");
        // Line breaks cannot inject fields.
        let e = ev(Some("x\ndata: evil"), "ok", Some("1\r\nevent: y"), None);
        assert_eq!(
            parse_all(&encode(&e)),
            [ev(Some("xdata: evil"), "ok", Some("1event: y"), None)]
        );
    }

    fn arb_event() -> impl Strategy<Value = SseEvent> {
        (
            prop::option::of("[^\r\n]{1,10}"),
            "(?s).{0,40}",
            prop::option::of("[^\r\n\u{0}]{0,10}"),
            prop::option::of(any::<u64>()),
        )
            .prop_map(|(event, data, id, retry)| SseEvent {
                event,
                data,
                id,
                retry,
            })
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(
            events in prop::collection::vec(arb_event(), 0..5),
            bom in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut bytes = if bom { BOM.to_vec() } else { Vec::new() };
            for e in &events {
                bytes.extend(encode(e));
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut p = SseParser::new(SseLimits::default());
            let mut out = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                out.extend(p.push(&bytes[from..c]).unwrap());
                from = c;
            }
            let want: Vec<SseEvent> = events
                .into_iter()
                .map(|mut e| {
                    e.data = e.data.replace("\r\n", "\n").replace('\r', "\n");
                    e
                })
                .collect();
            prop_assert_eq!(out, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
            line in 1usize..32,
            event in 1usize..64,
        ) {
            let mut p = SseParser::new(SseLimits { max_line_bytes: line, max_event_bytes: event });
            for c in chunks {
                if let Ok(events) = p.push(&c) {
                    for e in events {
                        prop_assert!(e.data.len() < event);
                    }
                }
            }
        }

        #[test]
        fn field_like_bytes_never_panic(s in "[a-z:\r\n \u{feff}é]{0,200}") {
            let mut p = SseParser::new(SseLimits::default());
            let _ = p.push(s.as_bytes());
        }
    }
}
