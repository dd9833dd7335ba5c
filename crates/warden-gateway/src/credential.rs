//! Scrubbing an upstream's own credential out of its answers, on decoded JSON values.
//!
//! The gateway injects an upstream's real credential (an API key, a bearer token) into each request
//! it forwards. A tool server that echoes it — in an error message, a debug dump, a log line it
//! returns — would hand it to the agent. Searching the raw answer bytes for a couple of spellings is
//! not enough: JSON allows many spellings of one string (`\/`, `\u0026`, `\u0073\u006b…` for every
//! character), and a credential can sit inside JSON text inside a JSON string, or be base64- or
//! percent-encoded. A [`Scrubber`] therefore works on the *decoded* [`serde_json::Value`] the server
//! forwards, and on decoded views of its strings.
//!
//! # What is caught
//!
//! For each credential value of at least [`MIN_CREDENTIAL_LEN`] bytes, these *forms* are searched:
//! the raw bytes; base64 (standard and URL-safe alphabets, padded or not) at each of the three byte
//! alignments the value can have inside a longer encoded blob (the part of the encoding that
//! depends on the value alone, so the two or three characters at each end that also depend on the
//! neighbouring bytes stay); hex in lower and upper case; percent-encoding of every byte outside the
//! RFC 3986 unreserved set, with upper- and lower-case hex digits (and `+` for a space, if the value
//! has one). Each occurrence of a form is replaced by [`REDACTED_CREDENTIAL`]. The forms are searched:
//!
//! * in every string value and every object member name (a name holding a form is renamed; a name
//!   that then collides with another gets `#2`, `#3`, … appended, so no member is lost);
//! * across consecutive string values in document order (numbers, booleans, nulls and member names
//!   in between are skipped): a value split into `["sk/live&ke", "y+abc123/xyz"]`, or over two
//!   members of one object, has the covered part of each string replaced;
//! * inside a string that is itself JSON text (starting, after JSON whitespace, with `{`, `[` or `"`,
//!   at most [`MAX_JSON_TEXT_BYTES`] long and nested at most [`MAX_JSON_TEXT_DEPTH`] deep): it is
//!   parsed and scrubbed the same way (member names, values, splits inside it, and JSON text inside
//!   that, down to [`MAX_NESTED_JSON`] levels), and replaced by its re-serialization only if something
//!   changed;
//! * in decoded *views* of a string that contains JSON escapes (`\uXXXX` including surrogate pairs,
//!   `\/`, `\"`, `\\`, `\n`, …) or percent-escapes (`%XX`), and of views of those, up to
//!   [`MAX_VIEW_DEPTH`] decodings stacked (a log line `… "key":"sk\/live\u0026key" …`, a URL with a
//!   mixed-case `%2f%2F` query, text escaped twice); a match in a view replaces the original span it
//!   was decoded from.
//!
//! Scrubbing never changes the structure of the value: types, nesting and array lengths stay, only the
//! contents of strings (and member names) change.
//!
//! # What is not caught
//!
//! A value transformed any other way: encrypted, hashed, compressed, reversed, case-changed, base32,
//! base64 broken into lines or of an already escaped form, escaped in a way other than JSON and
//! percent-escapes (HTML entities, `\x` escapes); split with other characters in between, split over
//! member names, or split across strings of JSON text that is not valid JSON or is nested in a
//! non-JSON string; a value in a number (types are kept); a part of a value only, and anything shorter
//! than [`MIN_CREDENTIAL_LEN`] bytes. The base64 forms leave up to three characters at each end of the
//! encoding, i.e. a few bits of the value.
//!
//! # Cost
//!
//! [`Scrubber::scrub`] first *detects* without allocating: one automaton (Aho-Corasick over all forms
//! of all values) streams over the string values in document order, carrying its state from one
//! string to the next (long strings are searched with the automaton's prefilter and only their ends
//! are stepped byte by byte); strings holding `\`, `%` or JSON text are also streamed through
//! decoders (a view is searched only if some escape in it decodes to a byte that occurs in a form). Only when that finds something is the value rewritten, and the result detected again
//! (a few passes at most; should a form survive them, every string that still holds one is replaced as
//! a whole).

use std::fmt;

use aho_corasick::automaton::{Automaton, OverlappingState, StateID};
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, Input, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// What each occurrence of a credential form is replaced with.
pub const REDACTED_CREDENTIAL: &str = "[REDACTED:upstream-credential]";
/// The shortest credential value accepted: a shorter one would redact ordinary text everywhere.
pub const MIN_CREDENTIAL_LEN: usize = 8;
/// The longest credential value accepted (bounds the automaton).
pub const MAX_CREDENTIAL_LEN: usize = 4096;
/// A string longer than this is not parsed as JSON text (its views are still searched).
pub const MAX_JSON_TEXT_BYTES: usize = 1 << 20;
/// JSON text nested deeper than this is not parsed (its views are still searched).
pub const MAX_JSON_TEXT_DEPTH: usize = 32;
/// Levels of JSON text inside JSON strings that are parsed (the answer itself is level 0).
pub const MAX_NESTED_JSON: usize = 4;
/// Decodings (JSON unescaping, percent-decoding) stacked on one string.
pub const MAX_VIEW_DEPTH: usize = 3;
/// Rewrite passes before strings that still hold a form are replaced whole.
const MAX_PASSES: usize = 3;
/// Longest decoder chain: one JSON unescaping per nesting level, then the views.
const MAX_CHAIN: usize = MAX_NESTED_JSON + MAX_VIEW_DEPTH;

/// Why a credential set is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("credential {index} is {len} bytes, shorter than the minimum of {min}")]
    TooShort { index: usize, len: usize, min: usize },
    #[error("credential {index} is {len} bytes, longer than the maximum of {max}")]
    TooLong { index: usize, len: usize, max: usize },
    #[error("credential {index} occurs in the redaction marker, so it could never be scrubbed")]
    InMarker { index: usize },
    #[error("the credential forms do not build a search automaton: {reason}")]
    Automaton { reason: String },
}

/// The outcome of [`Scrubber::scrub`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrubReport {
    /// Markers written (one per replaced span, or per string replaced whole).
    pub replacements: usize,
    /// The value was changed.
    pub changed: bool,
}

/// Finds and redacts the forms of a set of credential values in JSON values. Build once per
/// credential set and share; [`Scrubber::scrub`] takes `&self`.
pub struct Scrubber {
    inner: Option<Inner>,
}

struct Inner {
    /// Every form of every value (the automaton's tables are derived from these and are not zeroed
    /// by aho-corasick; the forms themselves are).
    forms: Vec<Zeroizing<Vec<u8>>>,
    values: usize,
    /// Standard (overlapping) match semantics, so the state after each byte tells whether any form
    /// ends there.
    /// A contiguous NFA rather than a DFA: a few times cheaper to build and much smaller, for a
    /// step cost measured at about 1.3 times the DFA's on a 4 KB answer.
    nfa: NFA,
    start: StateID,
    /// Bytes that occur in some form: a decoded escape yielding none of them cannot be part of a
    /// match.
    in_forms: [bool; 256],
    max_len: usize,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (values, forms) = self.inner.as_ref().map_or((0, 0), |i| (i.values, i.forms.len()));
        f.debug_struct("Scrubber")
            .field("credentials", &values)
            .field("forms", &forms)
            .finish()
    }
}

type Span = (usize, usize);

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The forms of one credential value (see the module documentation), deduplicated.
fn forms_of(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut forms: Vec<Zeroizing<Vec<u8>>> = vec![Zeroizing::new(value.to_vec())];
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for pad in 0..3usize {
            let mut padded = Zeroizing::new(vec![0u8; pad]);
            padded.extend_from_slice(value);
            let encoded = Zeroizing::new(engine.encode(&*padded));
            // Character k covers bits 6k..6k+6 of the padded input; keep those within the value's bits.
            let from = (8 * pad).div_ceil(6);
            let to = (8 * (pad + value.len())) / 6;
            if let Some(core) = encoded.as_bytes().get(from..to) {
                forms.push(Zeroizing::new(core.to_vec()));
            }
        }
    }
    forms.push(Zeroizing::new(hex::encode(value).into_bytes()));
    forms.push(Zeroizing::new(hex::encode_upper(value).into_bytes()));
    for (digits, plus) in [
        (b"0123456789ABCDEF", false),
        (b"0123456789abcdef", false),
        (b"0123456789ABCDEF", true),
    ] {
        if plus && !value.contains(&b' ') {
            continue;
        }
        let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 3));
        for &b in value {
            if is_unreserved(b) {
                out.push(b);
            } else if plus && b == b' ' {
                out.push(b'+');
            } else {
                out.extend_from_slice(&[b'%', digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]);
            }
        }
        forms.push(out);
    }
    let mut unique: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(forms.len());
    for f in forms {
        if f.len() >= MIN_CREDENTIAL_LEN && !unique.iter().any(|u| **u == *f) {
            unique.push(f);
        }
    }
    unique
}

impl Default for Scrubber {
    /// No credentials: scrubbing is a no-op.
    fn default() -> Self {
        Self::empty()
    }
}

impl Scrubber {
    /// A scrubber with no credentials: [`Scrubber::scrub`] does nothing.
    pub fn empty() -> Scrubber {
        Scrubber { inner: None }
    }

    /// A scrubber for `values` (each [`MIN_CREDENTIAL_LEN`] to [`MAX_CREDENTIAL_LEN`] bytes). An empty
    /// set gives [`Scrubber::empty`].
    pub fn new(values: &[&[u8]]) -> Result<Scrubber, CredentialError> {
        if values.is_empty() {
            return Ok(Scrubber::empty());
        }
        let mut forms: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        // Two markers side by side are what fully redacted neighbours leave behind.
        let doubled = REDACTED_CREDENTIAL.repeat(2);
        for (index, value) in values.iter().enumerate() {
            let len = value.len();
            if len < MIN_CREDENTIAL_LEN {
                return Err(CredentialError::TooShort {
                    index,
                    len,
                    min: MIN_CREDENTIAL_LEN,
                });
            }
            if len > MAX_CREDENTIAL_LEN {
                return Err(CredentialError::TooLong {
                    index,
                    len,
                    max: MAX_CREDENTIAL_LEN,
                });
            }
            for form in forms_of(value) {
                if memchr::memmem::find(doubled.as_bytes(), &form).is_some() {
                    return Err(CredentialError::InMarker { index });
                }
                if !forms.iter().any(|f| **f == *form) {
                    forms.push(form);
                }
            }
        }
        let mut in_forms = [false; 256];
        for f in &forms {
            for &b in f.iter() {
                in_forms[usize::from(b)] = true;
            }
        }
        let nfa = NFA::builder()
            .match_kind(MatchKind::Standard)
            .build(forms.iter().map(|f| f.as_slice()))
            .map_err(|e| CredentialError::Automaton {
                reason: e.to_string(),
            })?;
        let start = nfa
            .start_state(Anchored::No)
            .map_err(|e| CredentialError::Automaton {
                reason: e.to_string(),
            })?;
        let max_len = nfa.max_pattern_len();
        Ok(Scrubber {
            inner: Some(Inner {
                forms,
                values: values.len(),
                nfa,
                start,
                in_forms,
                max_len,
            }),
        })
    }

    /// Whether this scrubber has no credentials.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// Whether `value` holds any form that [`Scrubber::scrub`] would look for (never allocates).
    pub fn detects(&self, value: &Value) -> bool {
        self.inner.as_ref().is_some_and(|i| i.detect(value))
    }

    /// Replaces every form of the credentials in `value` (see the module documentation), in place.
    pub fn scrub(&self, value: &mut Value) -> ScrubReport {
        let Some(inner) = &self.inner else {
            return ScrubReport::default();
        };
        if !inner.detect(value) {
            return ScrubReport::default();
        }
        let mut replacements = 0;
        for _ in 0..MAX_PASSES {
            let n = inner.rewrite_value(value, 0);
            replacements += n;
            if n == 0 || !inner.detect(value) {
                break;
            }
        }
        if inner.detect(value) {
            replacements += inner.replace_whole(value);
        }
        ScrubReport {
            replacements,
            changed: replacements > 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoders: JSON unescaping and percent-decoding, streaming, each output byte carrying the span of
// the original string it was decoded from.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    Json,
    Percent,
}

/// A decoder chain (applied first to last), fixed-size so that detection does not allocate.
#[derive(Debug, Clone, Copy)]
struct Chain {
    steps: [Decode; MAX_CHAIN],
    len: usize,
}

impl Chain {
    const EMPTY: Chain = Chain {
        steps: [Decode::Json; MAX_CHAIN],
        len: 0,
    };

    fn with(self, step: Decode) -> Option<Chain> {
        let mut next = self;
        *next.steps.get_mut(self.len)? = step;
        next.len += 1;
        Some(next)
    }

    fn as_slice(&self) -> &[Decode] {
        &self.steps[..self.len]
    }
}

/// What a decoded text holds, to decide which further views are worth streaming.
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    backslash: bool,
    percent: bool,
    /// The first byte that is not JSON whitespace is `{`, `[` or `"`.
    json: bool,
    seen_non_ws: bool,
}

impl Flags {
    fn of(bytes: &[u8]) -> Flags {
        let mut f = Flags::default();
        if let Some(&b) = bytes.iter().find(|b| !is_json_ws(**b)) {
            f.note(b);
        }
        f.backslash = memchr::memchr(b'\\', bytes).is_some();
        f.percent = memchr::memchr(b'%', bytes).is_some();
        f
    }

    fn note(&mut self, b: u8) {
        match b {
            b'\\' => self.backslash = true,
            b'%' => self.percent = true,
            _ => {}
        }
        if !self.seen_non_ws && !is_json_ws(b) {
            self.seen_non_ws = true;
            self.json = matches!(b, b'{' | b'[' | b'"');
        }
    }

    fn wants(&self, d: Decode) -> bool {
        match d {
            Decode::Json => self.backslash,
            Decode::Percent => self.percent,
        }
    }
}

fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn hex_val(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

type Out<'a> = &'a mut dyn FnMut(u8, Span);

struct Decoder<'t> {
    kind: Decode,
    pending: [(u8, Span); 12],
    n: usize,
    /// Some escape was decoded (the output is shorter than the input).
    decoded: bool,
    /// Some escape decoded to a byte in this set.
    relevant: Option<&'t [bool; 256]>,
    decoded_relevant: bool,
}

enum Step {
    More,
    Done([u8; 4], usize),
    Invalid,
}

impl<'t> Decoder<'t> {
    fn new(kind: Decode, relevant: Option<&'t [bool; 256]>) -> Decoder<'t> {
        Decoder {
            kind,
            pending: [(0, (0, 0)); 12],
            n: 0,
            decoded: false,
            relevant,
            decoded_relevant: false,
        }
    }

    fn trigger(&self) -> u8 {
        match self.kind {
            Decode::Json => b'\\',
            Decode::Percent => b'%',
        }
    }

    fn push(&mut self, b: u8, span: Span, out: Out<'_>) {
        if self.n == 0 {
            if b == self.trigger() {
                self.pending[0] = (b, span);
                self.n = 1;
            } else {
                out(b, span);
            }
            return;
        }
        self.pending[self.n] = (b, span);
        self.n += 1;
        let p = &self.pending[..self.n];
        let step = match self.kind {
            Decode::Json => json_step(p),
            Decode::Percent => percent_step(p),
        };
        match step {
            Step::More => {}
            Step::Done(bytes, len) => {
                let span = (p[0].1.0, p[self.n - 1].1.1);
                self.n = 0;
                self.decoded = true;
                for &b in &bytes[..len] {
                    if let Some(set) = self.relevant {
                        self.decoded_relevant |= set[usize::from(b)];
                    }
                    out(b, span);
                }
            }
            Step::Invalid => {
                // The first byte stands for itself; the rest is read again (it may start an escape).
                let items = self.pending;
                let n = self.n;
                self.n = 0;
                out(items[0].0, items[0].1);
                for &(b, span) in &items[1..n] {
                    self.push(b, span, out);
                }
            }
        }
    }

    fn finish(&mut self, out: Out<'_>) {
        let n = self.n;
        self.n = 0;
        for &(b, span) in &self.pending[..n] {
            out(b, span);
        }
    }
}

fn utf8(c: char) -> Step {
    let mut buf = [0u8; 4];
    let len = c.encode_utf8(&mut buf).len();
    Step::Done(buf, len)
}

/// `p` starts with `\`.
fn json_step(p: &[(u8, Span)]) -> Step {
    let byte = |i: usize| p.get(i).map_or(0, |x| x.0);
    let simple = match byte(1) {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        b'/' => Some(b'/'),
        b'b' => Some(8),
        b'f' => Some(12),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'u' => None,
        _ => return Step::Invalid,
    };
    if let Some(b) = simple {
        return Step::Done([b, 0, 0, 0], 1);
    }
    let unit = |from: usize| (from..from + 4).try_fold(0u32, |acc, i| hex_val(byte(i)).map(|d| acc * 16 + d));
    let n = p.len();
    // Every hex digit so far must be one.
    let hex_ok = |range: std::ops::Range<usize>| range.clone().all(|i| i >= n || hex_val(byte(i)).is_some());
    if !hex_ok(2..6) {
        return Step::Invalid;
    }
    if n < 6 {
        return Step::More;
    }
    let Some(high) = unit(2) else {
        return Step::Invalid;
    };
    if !(0xD800..0xE000).contains(&high) {
        return char::from_u32(high).map_or(Step::Invalid, utf8);
    }
    if high >= 0xDC00 {
        return Step::Invalid;
    }
    if n == 6 {
        return Step::More;
    }
    if byte(6) != b'\\' || (n > 7 && byte(7) != b'u') || !hex_ok(8..12) {
        return Step::Invalid;
    }
    if n < 12 {
        return Step::More;
    }
    match unit(8) {
        Some(low) if (0xDC00..0xE000).contains(&low) => {
            char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)).map_or(Step::Invalid, utf8)
        }
        _ => Step::Invalid,
    }
}

/// `p` starts with `%`.
fn percent_step(p: &[(u8, Span)]) -> Step {
    match p {
        [_, (a, _)] => {
            if hex_val(*a).is_some() {
                Step::More
            } else {
                Step::Invalid
            }
        }
        [_, (a, _), (b, _)] => match (hex_val(*a), hex_val(*b)) {
            (Some(h), Some(l)) => Step::Done([(h * 16 + l) as u8, 0, 0, 0], 1),
            _ => Step::Invalid,
        },
        _ => Step::Invalid,
    }
}

/// What the last decoder of a chain did.
#[derive(Debug, Clone, Copy, Default)]
struct Decoded {
    /// It decoded some escape (its output differs from its input).
    any: bool,
    /// It decoded some escape to a byte in the `relevant` set.
    relevant: bool,
}

/// Streams `s[range]` decoded by `chain` into `out`.
fn stream(s: &[u8], range: Span, chain: &[Decode], relevant: Option<&[bool; 256]>, out: Out<'_>) -> Decoded {
    match chain.split_last() {
        None => {
            for (i, &b) in s.iter().enumerate().take(range.1).skip(range.0) {
                out(b, (i, i + 1));
            }
            Decoded::default()
        }
        Some((&last, rest)) => {
            let mut dec = Decoder::new(last, relevant);
            if rest.is_empty() {
                let trigger = dec.trigger();
                for (i, &b) in s.iter().enumerate().take(range.1).skip(range.0) {
                    if dec.n == 0 && b != trigger {
                        out(b, (i, i + 1));
                    } else {
                        dec.push(b, (i, i + 1), out);
                    }
                }
            } else {
                stream(s, range, rest, None, &mut |b, span| dec.push(b, span, out));
            }
            dec.finish(out);
            Decoded {
                any: dec.decoded,
                relevant: dec.decoded_relevant,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Detection: no allocation.

fn for_each_leaf<'a>(value: &'a Value, f: &mut dyn FnMut(&'a str, bool) -> bool) -> bool {
    match value {
        Value::String(s) => f(s, false),
        Value::Array(items) => items.iter().any(|v| for_each_leaf(v, f)),
        Value::Object(map) => map.iter().any(|(k, v)| f(k, true) || for_each_leaf(v, f)),
        _ => false,
    }
}

impl Inner {
    fn step(&self, sid: StateID, b: u8) -> StateID {
        self.nfa.next_state(Anchored::No, sid, b)
    }

    fn hit(&self, sid: StateID) -> bool {
        self.nfa.is_match(sid)
    }

    fn contains(&self, bytes: &[u8]) -> bool {
        matches!(self.nfa.try_find(&Input::new(bytes)), Ok(Some(_)))
    }

    /// Continues the search from `sid` over `bytes`: the state afterwards, and whether a form ends
    /// in `bytes` (possibly having started before it).
    fn step_over(&self, mut sid: StateID, bytes: &[u8]) -> (StateID, bool) {
        let m = self.max_len;
        if bytes.len() <= 2 * m {
            let mut hit = false;
            for &b in bytes {
                sid = self.step(sid, b);
                hit |= self.hit(sid);
            }
            return (sid, hit);
        }
        // A form that started before `bytes` ends within its first m - 1 bytes; the rest is found by
        // the prefiltered search; and the state after `bytes` depends only on its last m bytes.
        for &b in &bytes[..m] {
            sid = self.step(sid, b);
            if self.hit(sid) {
                return (sid, true);
            }
        }
        if self.contains(bytes) {
            return (sid, true);
        }
        let mut sid = self.start;
        for &b in &bytes[bytes.len() - m..] {
            sid = self.step(sid, b);
        }
        (sid, false)
    }

    fn detect(&self, value: &Value) -> bool {
        let mut sid = self.start;
        for_each_leaf(value, &mut |s, is_key| {
            let bytes = s.as_bytes();
            let found = if is_key {
                self.contains(bytes)
            } else {
                let (next, found) = self.step_over(sid, bytes);
                sid = next;
                found
            };
            found || self.detect_text(bytes, (0, bytes.len()), Chain::EMPTY, 0, Flags::of(bytes))
        })
    }

    /// Whether the views of the text `chain(s[range])` (whose content is described by `flags`), or
    /// the JSON text it holds, contain a form. Direct matches are the caller's.
    fn detect_text(&self, s: &[u8], range: Span, chain: Chain, level: usize, flags: Flags) -> bool {
        (flags.backslash || flags.percent) && self.detect_views(s, range, chain, 0, flags)
            || flags.json && level < MAX_NESTED_JSON && self.detect_nested(s, range, chain, level)
    }

    fn detect_views(&self, s: &[u8], range: Span, chain: Chain, depth: usize, flags: Flags) -> bool {
        if depth >= MAX_VIEW_DEPTH {
            return false;
        }
        for d in [Decode::Json, Decode::Percent] {
            if !flags.wants(d) {
                continue;
            }
            let Some(view) = chain.with(d) else { continue };
            // First only decode: a match in this view that is not one in the text it decodes must
            // take a byte from a decoded escape, so unless one decodes to a byte of some form there
            // is nothing new to find.
            let mut out = Flags::default();
            let decoded = stream(s, range, view.as_slice(), Some(&self.in_forms), &mut |b, _| {
                out.note(b)
            });
            if decoded.relevant {
                let mut sid = self.start;
                let mut hit = false;
                stream(s, range, view.as_slice(), None, &mut |b, _| {
                    sid = self.step(sid, b);
                    hit |= self.hit(sid);
                });
                if hit {
                    return true;
                }
            }
            if decoded.any && self.detect_views(s, range, view, depth + 1, out) {
                return true;
            }
        }
        false
    }

    /// Lexes the JSON text `chain(s[range])`: member names are searched each on its own, string
    /// values as one concatenation in document order, and each string's views and JSON text in turn.
    fn detect_nested(&self, s: &[u8], range: Span, chain: Chain, level: usize) -> bool {
        let Some(inner_chain) = chain.with(Decode::Json) else {
            return false;
        };
        let mut hit = false;
        let mut values_sid = self.start;
        // Containers open: bit i set = object at depth i.
        let mut objects: u64 = 0;
        let mut depth = 0usize;
        // After `{` or `,` in an object, the next string is a member name.
        let mut expect_key = false;
        let mut in_string = false;
        let mut is_key = false;
        let mut key_sid = self.start;
        let mut content = Flags::default();
        let mut start = 0usize;
        let mut dec = Decoder::new(Decode::Json, None);
        let mut lex = |b: u8, span: Span| {
            if hit || depth > MAX_JSON_TEXT_DEPTH {
                return;
            }
            if in_string {
                if dec.n == 0 && b == b'"' {
                    in_string = false;
                    if (content.backslash || content.percent || content.json)
                        && self.detect_text(s, (start, span.0), inner_chain, level + 1, content)
                    {
                        hit = true;
                    }
                    return;
                }
                let sid = if is_key { &mut key_sid } else { &mut values_sid };
                if dec.n == 0 && b != b'\\' {
                    *sid = self.step(*sid, b);
                    hit |= self.hit(*sid);
                    content.note(b);
                    return;
                }
                dec.push(b, span, &mut |c, _| {
                    *sid = self.step(*sid, c);
                    hit |= self.hit(*sid);
                    content.note(c);
                });
                return;
            }
            match b {
                b'"' => {
                    in_string = true;
                    is_key = expect_key;
                    expect_key = false;
                    key_sid = self.start;
                    content = Flags::default();
                    start = span.1;
                }
                b'{' | b'[' => {
                    depth += 1;
                    if b == b'{' {
                        objects |= 1u64 << depth.min(63);
                    } else {
                        objects &= !(1u64 << depth.min(63));
                    }
                    expect_key = b == b'{';
                }
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    expect_key = false;
                }
                b',' => expect_key = objects & (1u64 << depth.min(63)) != 0,
                b':' => expect_key = false,
                _ => {}
            }
        };
        if chain.len == 0 {
            for (i, &b) in s.iter().enumerate().take(range.1).skip(range.0) {
                lex(b, (i, i + 1));
            }
        } else {
            stream(s, range, chain.as_slice(), None, &mut lex);
        }
        hit
    }
}

// ---------------------------------------------------------------------------------------------
// Rewriting: allocates, runs only when detection found something.

/// Replaces the (char-boundary-widened, merged) `spans` of `s` by the marker; returns the count.
fn replace_spans(s: &str, spans: &mut [Span]) -> (String, usize) {
    for sp in spans.iter_mut() {
        while sp.0 > 0 && !s.is_char_boundary(sp.0) {
            sp.0 -= 1;
        }
        while sp.1 < s.len() && !s.is_char_boundary(sp.1) {
            sp.1 += 1;
        }
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut count = 0;
    let mut i = 0;
    while i < spans.len() {
        let (from, mut to) = spans[i];
        i += 1;
        while i < spans.len() && spans[i].0 < to {
            to = to.max(spans[i].1);
            i += 1;
        }
        out.push_str(&s[last..from]);
        out.push_str(REDACTED_CREDENTIAL);
        last = to;
        count += 1;
    }
    out.push_str(&s[last..]);
    (out, count)
}

/// Renames the members of `map` per `rename` (called once per member, in order), keeping every
/// member: a new name that collides gets `#2`, `#3`, … appended.
fn rename_keys(map: &mut Map<String, Value>, rename: &mut dyn FnMut(&str) -> Option<String>) -> usize {
    let mut renamed: Vec<(usize, String)> = Vec::new();
    for (i, k) in map.keys().enumerate() {
        if let Some(new) = rename(k) {
            renamed.push((i, new));
        }
    }
    if renamed.is_empty() {
        return 0;
    }
    let count = renamed.len();
    let old = std::mem::take(map);
    let mut renamed = renamed.into_iter().peekable();
    for (i, (k, v)) in old.into_iter().enumerate() {
        let name = match renamed.next_if(|(at, _)| *at == i) {
            Some((_, new)) => new,
            None => k,
        };
        let mut candidate = name.clone();
        let mut n = 2;
        while map.contains_key(&candidate) {
            candidate = format!("{name}#{n}");
            n += 1;
        }
        map.insert(candidate, v);
    }
    count
}

fn for_each_value_mut(value: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter_mut().for_each(|v| for_each_value_mut(v, f)),
        Value::Object(map) => map.values_mut().for_each(|v| for_each_value_mut(v, f)),
        _ => {}
    }
}

fn for_each_map_mut(value: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| for_each_map_mut(v, f)),
        Value::Object(map) => {
            f(map);
            map.values_mut().for_each(|v| for_each_map_mut(v, f));
        }
        _ => {}
    }
}

/// Whether the nesting of JSON text `bytes` stays within `max` (the parser's own check).
fn depth_within(bytes: &[u8], max: usize) -> bool {
    crate::jsonrpc::depth_within(bytes, max)
}

impl Inner {
    /// Every match of a form in `bytes`, overlapping ones included.
    fn matches(&self, bytes: &[u8], found: &mut dyn FnMut(usize, usize)) {
        let input = Input::new(bytes);
        let mut state = OverlappingState::start();
        loop {
            if self.nfa.try_find_overlapping(&input, &mut state).is_err() {
                return;
            }
            match state.get_match() {
                Some(m) => found(m.start(), m.end()),
                None => return,
            }
        }
    }

    /// One rewrite of `value` (at JSON-text nesting `level`); returns the markers written.
    fn rewrite_value(&self, value: &mut Value, level: usize) -> usize {
        let mut count = 0;
        for_each_map_mut(value, &mut |map| {
            rename_keys(map, &mut |k| {
                let (new, n) = self.rewrite_text(k, level)?;
                count += n;
                Some(new)
            });
        });
        for_each_value_mut(value, &mut |s| {
            if let Some((new, n)) = self.rewrite_text(s, level) {
                *s = new;
                count += n;
            }
        });
        count + self.rewrite_splits(value)
    }

    /// `s` rewritten (JSON text in it, forms in it and in its views), with the markers written, or
    /// `None` if nothing was found.
    fn rewrite_text(&self, s: &str, level: usize) -> Option<(String, usize)> {
        let mut text = std::borrow::Cow::Borrowed(s);
        let mut count = 0;
        let flags = Flags::of(s.as_bytes());
        if flags.json
            && level < MAX_NESTED_JSON
            && s.len() <= MAX_JSON_TEXT_BYTES
            && depth_within(s.as_bytes(), MAX_JSON_TEXT_DEPTH)
            && let Ok(mut parsed) = serde_json::from_str::<Value>(s)
        {
            let n = self.rewrite_value(&mut parsed, level + 1);
            if n > 0 {
                text = std::borrow::Cow::Owned(parsed.to_string());
                count += n;
            }
        }
        let bytes = text.as_bytes();
        let mut spans = Vec::new();
        self.matches(bytes, &mut |a, b| spans.push((a, b)));
        let flags = Flags::of(bytes);
        if flags.backslash || flags.percent {
            self.view_spans(bytes, Chain::EMPTY, 0, flags, &mut spans);
        }
        if !spans.is_empty() {
            let (new, n) = replace_spans(&text, &mut spans);
            text = std::borrow::Cow::Owned(new);
            count += n;
        }
        (count > 0).then(|| (text.into_owned(), count))
    }

    /// The spans of `s` whose decoding (by `chain` and further views) holds a form.
    fn view_spans(&self, s: &[u8], chain: Chain, depth: usize, flags: Flags, spans: &mut Vec<Span>) {
        if depth >= MAX_VIEW_DEPTH {
            return;
        }
        for d in [Decode::Json, Decode::Percent] {
            if !flags.wants(d) {
                continue;
            }
            let Some(view) = chain.with(d) else { continue };
            let mut bytes = Vec::with_capacity(s.len());
            let mut origin = Vec::with_capacity(s.len());
            let decoded = stream(s, (0, s.len()), view.as_slice(), None, &mut |b, span| {
                bytes.push(b);
                origin.push(span);
            });
            self.matches(&bytes, &mut |a, b| spans.push((origin[a].0, origin[b - 1].1)));
            if decoded.any {
                self.view_spans(s, view, depth + 1, Flags::of(&bytes), spans);
            }
        }
    }

    /// Forms split over consecutive string values (document order): the covered part of each
    /// string is replaced. Returns the markers written.
    fn rewrite_splits(&self, value: &mut Value) -> usize {
        let mut all = Vec::new();
        let mut starts = Vec::new();
        for_each_leaf(value, &mut |s, is_key| {
            if !is_key {
                starts.push(all.len());
                all.extend_from_slice(s.as_bytes());
            }
            false
        });
        if starts.len() < 2 {
            return 0;
        }
        let leaf_of = |at: usize| starts.partition_point(|&s| s <= at).saturating_sub(1);
        // (leaf, span within it)
        let mut cover: Vec<(usize, Span)> = Vec::new();
        let mut count = 0;
        self.matches(&all, &mut |a, b| {
            let (first, last) = (leaf_of(a), leaf_of(b - 1));
            if first == last {
                return;
            }
            count += 1;
            for leaf in first..=last {
                let from = starts[leaf];
                let to = starts.get(leaf + 1).copied().unwrap_or(all.len());
                cover.push((leaf, (a.max(from) - from, b.min(to) - from)));
            }
        });
        if cover.is_empty() {
            return 0;
        }
        cover.sort_unstable();
        let mut leaf = 0;
        let mut at = 0;
        for_each_value_mut(value, &mut |s| {
            let mut spans = Vec::new();
            while at < cover.len() && cover[at].0 == leaf {
                if cover[at].1.0 < cover[at].1.1 {
                    spans.push(cover[at].1);
                }
                at += 1;
            }
            if !spans.is_empty() {
                *s = replace_spans(s, &mut spans).0;
            }
            leaf += 1;
        });
        count
    }

    /// The last resort: every string (and member name) that, on its own, still holds a form is
    /// replaced whole; if forms still span strings, every string is.
    fn replace_whole(&self, value: &mut Value) -> usize {
        let holds = |s: &str| {
            let b = s.as_bytes();
            self.contains(b) || self.detect_text(b, (0, b.len()), Chain::EMPTY, 0, Flags::of(b))
        };
        let mut count = 0;
        for_each_map_mut(value, &mut |map| {
            count += rename_keys(map, &mut |k| holds(k).then(|| REDACTED_CREDENTIAL.to_owned()));
        });
        for_each_value_mut(value, &mut |s| {
            if holds(s) {
                *s = REDACTED_CREDENTIAL.to_owned();
                count += 1;
            }
        });
        if self.detect(value) {
            for_each_value_mut(value, &mut |s| {
                if s != REDACTED_CREDENTIAL {
                    *s = REDACTED_CREDENTIAL.to_owned();
                    count += 1;
                }
            });
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const CRED: &str = "sk/live&key+abc123/xyz";
    const M: &str = REDACTED_CREDENTIAL;

    fn scrubber() -> Scrubber {
        Scrubber::new(&[CRED.as_bytes(), b"second-token-42"]).unwrap()
    }

    /// Scrubs `input` and compares with `expect`; `expect == input` means "left alone".
    fn check(input: Value, expect: Value) {
        let sc = scrubber();
        let mut v = input.clone();
        let report = sc.scrub(&mut v);
        assert_eq!(v, expect, "input: {input}");
        assert_eq!(report.changed, input != expect, "input: {input}");
        assert_eq!(report.changed, report.replacements > 0);
        assert!(!sc.detects(&v), "still detected: {v}");
    }

    fn b64_core(pad: usize, url: bool) -> String {
        let mut p = vec![0xAAu8; pad];
        p.extend_from_slice(CRED.as_bytes());
        let e = if url { &URL_SAFE_NO_PAD } else { &STANDARD_NO_PAD };
        let enc = e.encode(&p);
        enc[(8 * pad).div_ceil(6)..(8 * (pad + CRED.len())) / 6].to_owned()
    }

    #[test]
    fn strings_keys_and_encodings() {
        let pct = "sk%2Flive%26key%2Babc123%2fxyz";
        let all_u: String = CRED.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
        let cases = [
            (json!("x sk/live&key+abc123/xyz y"), json!(format!("x {M} y"))),
            (
                json!(["sk/live&key+abc123/xyz", "second-token-42"]),
                json!([M, M]),
            ),
            (json!({"sk/live&key+abc123/xyz": 1}), json!({M: 1})),
            // The member already named like the marker comes first in both map orders (sorted,
            // and insertion order when serde_json's `preserve_order` is on in the workspace).
            (
                json!({M: 2, "sk/live&key+abc123/xyz": 1}),
                json!({M: 2, format!("{M}#2"): 1}),
            ),
            (
                json!({"text": "{\"k\":\"sk\\/live\\u0026key+abc123\\/xyz\",\"n\":1}"}),
                json!({"text": format!("{{\"k\":\"{M}\",\"n\":1}}")}),
            ),
            (
                json!(r#"log: "key":"sk\/live\u0026key+abc123\/xyz" end"#),
                json!(format!(r#"log: "key":"{M}" end"#)),
            ),
            (json!(format!("log {all_u} end")), json!(format!("log {M} end"))),
            (
                json!(format!("https://x/?k={pct}&a=1")),
                json!(format!("https://x/?k={M}&a=1")),
            ),
            (
                json!(format!("hex {}", hex::encode(CRED))),
                json!(format!("hex {M}")),
            ),
            (
                json!(format!("HEX {}.", hex::encode_upper(CRED))),
                json!(format!("HEX {M}.")),
            ),
            (
                json!(["abc sk/live", "&key+abc123/xyz def"]),
                json!([format!("abc {M}"), format!("{M} def")]),
            ),
            (
                json!({"a": "sk/live&ke", "n": 5, "b": "y+abc123/xyz"}),
                json!({"a": M, "n": 5, "b": M}),
            ),
            (
                json!(["s", "k", "/live&key+abc123/xyz!"]),
                json!([M, M, format!("{M}!")]),
            ),
            // JSON text twice nested.
            (
                json!(json!({"outer": json!({"inner": CRED}).to_string()}).to_string()),
                json!(json!({"outer": json!({"inner": M}).to_string()}).to_string()),
            ),
            // Doubly escaped in a log line, and an emoji surrogate pair before it.
            (
                json!(r#"x \ud83d\ude00 "{\"k\":\"sk\\/live&key+abc123\\/xyz\"}"#),
                json!(format!(r#"x \ud83d\ude00 "{{\"k\":\"{M}\"}}"#)),
            ),
            // Left alone: no form, JSON text kept byte for byte, numbers, near misses.
            (
                json!({"a": "{ \"x\" : 1 }", "n": 12345678901u64}),
                json!({"a": "{ \"x\" : 1 }", "n": 12345678901u64}),
            ),
            (
                json!(["sk/live&key+abc123/xy", "C:\\new\\table %zz %2"]),
                json!(["sk/live&key+abc123/xy", "C:\\new\\table %zz %2"]),
            ),
        ];
        for (input, expect) in cases {
            check(input, expect);
        }
        for pad in 0..3 {
            for url in [false, true] {
                let core = b64_core(pad, url);
                let mut v = json!({"data": format!("AA{core}==")});
                assert!(scrubber().scrub(&mut v).changed);
                let s = v["data"].as_str().unwrap();
                assert!(!s.contains(&core) && s.contains(M), "{s}");
            }
        }
    }

    #[test]
    fn refusals_and_debug() {
        assert_eq!(
            Scrubber::new(&[b"short"]).unwrap_err(),
            CredentialError::TooShort {
                index: 0,
                len: 5,
                min: 8
            }
        );
        assert_eq!(
            Scrubber::new(&[b"long-enough", b"upstream-credential"]).unwrap_err(),
            CredentialError::InMarker { index: 1 }
        );
        let dbg = format!("{:?}", scrubber());
        assert!(!dbg.contains("sk/") && dbg.contains("credentials: 2"), "{dbg}");
        let empty = Scrubber::new(&[]).unwrap();
        assert!(empty.is_empty());
        let mut v = json!({CRED: CRED});
        assert_eq!(empty.scrub(&mut v), ScrubReport::default());
        assert_eq!(v, json!({CRED: CRED}));
    }

    #[test]
    fn decoders() {
        let decode = |chain: &[Decode], s: &str| {
            let mut out = Vec::new();
            stream(s.as_bytes(), (0, s.len()), chain, None, &mut |b, _| out.push(b));
            String::from_utf8_lossy(&out).into_owned()
        };
        let j = [Decode::Json];
        assert_eq!(
            decode(&j, r#"a\/b\u0026\"\\\n\ud83d\ude00\u00e9"#),
            "a/b&\"\\\n😀é"
        );
        assert_eq!(
            decode(&j, r#"\x \u12 \ud83d \udc00 \"#),
            r#"\x \u12 \ud83d \udc00 \"#
        );
        assert_eq!(decode(&j, r#"\ud83d\u0041"#), r#"\ud83dA"#);
        assert_eq!(decode(&[Decode::Percent], "%2F%2f%zz%4"), "//%zz%4");
        assert_eq!(decode(&[Decode::Percent, Decode::Json], "%5C%2F"), "/");
    }

    // ---- property tests ----

    /// A small deterministic generator for the choices a case makes beyond its proptest inputs.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn coin(&mut self) -> bool {
            self.next() & 1 == 1
        }
    }

    /// JSON string literal for `s`, escaping a random subset of characters (`\uXXXX` in random
    /// case, `\/`) besides the required ones.
    fn escape(s: &str, rng: &mut Rng) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            let must = c == '"' || c == '\\' || (c as u32) < 0x20;
            if must || rng.below(3) == 0 {
                if c == '/' && rng.coin() {
                    out.push_str("\\/");
                } else if c == '"' && rng.coin() {
                    out.push_str("\\\"");
                } else {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        let h = format!("\\u{unit:04x}");
                        out.push_str(&if rng.coin() {
                            h.to_uppercase().replace("\\U", "\\u")
                        } else {
                            h
                        });
                    }
                }
            } else {
                out.push(c);
            }
        }
        out.push('"');
        out
    }

    /// `v` serialized with random escaping.
    fn serialize(v: &Value, rng: &mut Rng) -> String {
        match v {
            Value::String(s) => escape(s, rng),
            Value::Array(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| serialize(i, rng))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Value::Object(m) => format!(
                "{{{}}}",
                m.iter()
                    .map(|(k, v)| format!("{}:{}", escape(k, rng), serialize(v, rng)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            other => other.to_string(),
        }
    }

    fn all_forms(cred: &str) -> Vec<Vec<u8>> {
        forms_of(cred.as_bytes())
            .into_iter()
            .map(|f| f.to_vec())
            .collect()
    }

    /// Every string in `v`, with JSON text in strings parsed and its strings included too.
    fn all_strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => {
                out.push(s.clone());
                if let Ok(inner) = serde_json::from_str::<Value>(s) {
                    all_strings(&inner, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| all_strings(i, out)),
            Value::Object(m) => m.iter().for_each(|(k, v)| {
                out.push(k.clone());
                all_strings(v, out);
            }),
            _ => {}
        }
    }

    fn concat_values(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => out.push_str(s),
            Value::Array(items) => items.iter().for_each(|i| concat_values(i, out)),
            Value::Object(m) => m.values().for_each(|v| concat_values(v, out)),
            _ => {}
        }
    }

    fn shape(v: &Value) -> Value {
        match v {
            Value::String(_) => json!("S"),
            Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
            Value::Object(m) => {
                let mut shapes: Vec<String> = m.values().map(|v| shape(v).to_string()).collect();
                shapes.sort();
                json!({"object": shapes})
            }
            other => other.clone(),
        }
    }

    fn arb_filler() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            r#"[a-z0-9 {}\[\]\\%":,/]{0,20}"#.prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The credential placed into a carrier value, per `kind`.
    fn carrier(cred: &str, kind: u64, rng: &mut Rng) -> Value {
        let pre = ["", "x ", "id=", "{", "\\"][rng.below(5) as usize];
        let post = ["", " y", "&n=1", "\"", "}"][rng.below(5) as usize];
        let text = format!("{pre}{cred}{post}");
        match kind {
            0 => json!(text),
            1 => json!({ text: 1 }),
            2 => json!(serialize(&json!({"k": text, "n": 1}), rng)),
            3 => {
                let inner = serialize(&json!([1, {"k": text}]), rng);
                json!(serialize(&json!({"t": inner}), rng))
            }
            4 => {
                let i = 1 + rng.below(cred.len() as u64 - 1) as usize;
                let (a, b) = (format!("{pre}{}", &cred[..i]), format!("{}{post}", &cred[i..]));
                match rng.below(3) {
                    0 => json!([a, b]),
                    1 => json!({"a": a, "b": b}),
                    _ => json!({"a": [a], "m": null, "n": {"z": b}}),
                }
            }
            5 => {
                let mut bytes: Vec<u8> = (0..rng.below(3)).map(|_| rng.next() as u8).collect();
                bytes.extend_from_slice(cred.as_bytes());
                let mut s = if rng.coin() {
                    STANDARD_NO_PAD.encode(&bytes)
                } else {
                    URL_SAFE_NO_PAD.encode(&bytes)
                };
                if rng.coin() {
                    while s.len() % 4 != 0 {
                        s.push('=');
                    }
                }
                json!(format!("data:{s}"))
            }
            6 => json!(format!(
                "{pre}{}",
                if rng.coin() {
                    hex::encode(cred)
                } else {
                    hex::encode_upper(cred)
                }
            )),
            7 => {
                let mut s = String::new();
                for b in cred.bytes() {
                    if is_unreserved(b) && rng.coin() {
                        s.push(char::from(b));
                    } else {
                        let h = format!("%{b:02X}");
                        s.push_str(&if rng.coin() { h.to_lowercase() } else { h });
                    }
                }
                json!(format!("https://h/p?k={s}"))
            }
            _ => {
                let esc = escape(cred, rng);
                json!(format!("2024-01-01 INFO sent {{\"key\":{esc}, broken"))
            }
        }
    }

    /// Puts `carrier` somewhere inside `filler`.
    fn place(filler: Value, carrier: Value, rng: &mut Rng) -> Value {
        match filler {
            Value::Array(mut items) if rng.coin() || items.is_empty() => {
                let at = rng.below(items.len() as u64 + 1) as usize;
                items.insert(at, carrier);
                Value::Array(items)
            }
            Value::Array(mut items) => {
                let at = rng.below(items.len() as u64) as usize;
                let inner = std::mem::take(&mut items[at]);
                items[at] = place(inner, carrier, rng);
                Value::Array(items)
            }
            Value::Object(mut m) if !m.is_empty() && rng.coin() => {
                let keys: Vec<String> = m.keys().cloned().collect();
                let k = &keys[rng.below(keys.len() as u64) as usize];
                let inner = m.remove(k).unwrap_or(Value::Null);
                m.insert(k.clone(), place(inner, carrier, rng));
                Value::Object(m)
            }
            Value::Object(mut m) => {
                m.insert("content".into(), carrier);
                Value::Object(m)
            }
            other => json!({"result": other, "content": [carrier]}),
        }
    }

    proptest! {
        #[test]
        fn no_placement_survives(
            cred in "[!-~]{8,64}",
            filler in arb_filler(),
            kind in 0u64..9,
            seed in 1u64..,
        ) {
            let Ok(sc) = Scrubber::new(&[cred.as_bytes()]) else {
                return Ok(());
            };
            let mut rng = Rng(seed);
            let c = carrier(&cred, kind, &mut rng);
            let doc = place(filler, c, &mut rng);
            let wire = serialize(&doc, &mut rng);
            let mut v: Value = serde_json::from_str(&wire).unwrap();
            prop_assert_eq!(&v, &doc);
            prop_assert!(sc.detects(&v), "not detected: {}", wire);
            let report = sc.scrub(&mut v);
            prop_assert!(report.changed);
            prop_assert_eq!(shape(&v), shape(&doc));
            let out = v.to_string();
            prop_assert!(!out.contains(&cred), "{} -> {}", wire, out);
            let mut strings = Vec::new();
            all_strings(&v, &mut strings);
            let mut concat = String::new();
            concat_values(&v, &mut concat);
            strings.push(concat);
            for form in all_forms(&cred) {
                for s in &strings {
                    prop_assert!(memchr::memmem::find(s.as_bytes(), &form).is_none(), "{} -> {}: {:?}", wire, out, s);
                }
            }
            prop_assert!(!sc.detects(&v), "{} -> {}", wire, out);
        }

        #[test]
        fn values_without_forms_are_untouched(
            cred in "[A-Z]{4,30}[!-~]{4,30}",
            v in arb_filler(),
        ) {
            let sc = Scrubber::new(&[cred.as_bytes()]).unwrap();
            prop_assert!(!sc.detects(&v));
            let mut copy = v.clone();
            prop_assert_eq!(sc.scrub(&mut copy), ScrubReport::default());
            prop_assert_eq!(copy.to_string(), v.to_string());
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "(?s).{0,80}", raw in r#"[\\u0-9a-fA-F%"{}\[\]:,dD8]{0,80}"#) {
            let sc = scrubber();
            let mut v = json!({ s.clone(): [s, raw.clone(), format!("{{\"a\":\"{raw}\"}}")] });
            let _ = sc.scrub(&mut v);
            prop_assert!(!sc.detects(&v));
        }
    }
}
