//! Secret detection and redaction in JSON values: tool-call arguments on the way to an upstream and
//! results on the way back.
//!
//! An agent that pastes a cloud key into a tool's arguments leaks it to the tool server (and to its
//! logs); a tool result that carries a credential hands it to the model. The gateway scans both: policy
//! decides what happens (by default a secret in arguments is denied with
//! [`crate::jsonrpc::SECRET_IN_ARGUMENTS`], and results are redacted and recorded).
//!
//! What is detected (rule ids in backticks; earlier rules win where matches overlap):
//!
//! | rule | what |
//! |---|---|
//! | `private-key` | PEM / OpenSSH / PGP private key blocks (`-----BEGIN … PRIVATE KEY-----` to the matching end line, or to the end of the string) |
//! | `aws-access-key-id` | `AKIA` / `ASIA` + 16 of `[A-Z0-9]` |
//! | `aws-secret-access-key` | 40 base64 characters assigned to `aws_secret_access_key` (and spellings) in text, or the value of such a JSON member |
//! | `jwt` | three base64url segments whose first decodes to a JSON object with a string `alg` |
//! | `github-token` | `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` + 36 or more, `github_pat_` + 22 or more |
//! | `slack-token` | `xoxb-`, `xoxa-`, `xoxp-`, `xoxr-`, `xoxs-` + 10 or more |
//! | `stripe-live-key` | `sk_live_`, `rk_live_` + 20 or more |
//! | `google-api-key` | `AIza` + 35 |
//! | `anthropic-api-key` | `sk-ant-` + 32 or more |
//! | `openai-api-key` | `sk-` + 32 or more (`sk-proj-…` included) |
//! | `url-credentials` | the password of a URL with credentials, `scheme://user:password@host` (any scheme: `postgres`, `mysql`, `redis://:password@…`, `amqp`, `https`, …); not `user@host` without a password, nor a placeholder password (`${…}`, `<…>`, `{…}`, `%(…)`, `***`) |
//! | `high-entropy` | a run of 24 to 512 base64 / base64url characters with upper case, lower case *and* digits, Shannon entropy ≥ 3.5 bits per character and frequent switches between those classes (≥ 45% of adjacent pairs), unless it is base64 of an image, archive or PDF (a small inline image) |
//! | custom rules | `{ id, regex }` from the configuration |
//! | `sensitive-key` | any non-empty string that is the value of a member named like a credential: the name, lower-cased without `_`, `-`, `.` and spaces, ends in `password`, `passwd`, `passphrase`, `passcode`, `secret`, `secretkey`, `apikey`, `accesskey`, `signingkey`, `encryptionkey`, `token`, `privatekey`, `credential(s)` or is `authorization`; or whose last word (split at `_ - .`, spaces and lower-to-upper case changes) is `pass`, or `pwd` after another word (`db_pass`, `DB-PASS`, `userPwd`; not `bypass`, nor `pwd` alone, a working directory) — except pagination tokens (`pagetoken`, `nexttoken`, `continuationtoken`, `synctoken`) |
//!
//! The generic `high-entropy` rule is a heuristic tuned so that hex digests (no upper case), UUIDs
//! (no mixed case), ordinary words, identifiers and paths (long same-class runs) do not trigger it, and
//! random base64 tokens of 24+ characters do (about 95% at 24 characters, 98% at 40, by simulation).
//! Runs longer than 512 characters are taken to be data (images, files), not credentials.
//!
//! The encodings a leak takes. Each string is also matched in its *views*, and a rule that matches in a
//! view is reported at the string's pointer like any other:
//!
//! - normalised: zero-width and invisible formatting characters (U+00AD, U+034F, U+180E,
//!   U+200B–U+200F, U+202A–U+202E, U+2060–U+2064, U+FEFF) removed, full-width forms
//!   (U+FF01–U+FF5E, U+3000) as ASCII;
//! - `%XX`-decoded; backslash-unescaped (`\uXXXX`, `\xXX`, …) when it has a `\u` or `\x` escape;
//! - each run of 24 to 16 Ki hex digits (even length), and each run of 16 to 16 Ki base64 / base64url
//!   characters, decoded, when the result is text (UTF-8 without control characters): a digest, an
//!   image or random bytes decode to nothing scanned;
//! - views of views, two layers deep (hex inside base64, base64 of full-width text, …).
//!
//! And each array's or object's string members (not those under credential names) are matched
//! concatenated, with their views, by the specific rules (not `high-entropy`, which would join
//! ordinary identifiers into a random-looking run): a secret split across members (`{"a": "AKIA",
//! "b": "IOSFODNN7EXAMPLE"}`, a key's lines in an array) is reported at the container's pointer, if
//! no member holds that rule's match alone. Redaction replaces a string whose views hold a secret,
//! and every string member of a container whose concatenation does, whole. Not decoded: secrets in
//! member names' views, reversed or otherwise deliberately scrambled text, base64 broken into lines
//! inside one string, other homoglyphs (Cyrillic, mathematical alphanumerics).
//!
//! Bounds: the `regex` crate matches in linear time; custom rules are compiled with a size limit;
//! scanning stops after [`ScanLimits::max_bytes`] bytes of strings (and below
//! [`ScanLimits::max_depth`]) and then says so ([`ScanReport::incomplete`]) so the caller can fail
//! closed — in [`Scanner::redact`], strings past the budget are left as they are. Views have a
//! budget of their own of the same size (every view's bytes count, at every layer), past which the
//! scan is incomplete too; no view is longer than the text it comes from, and a concatenation holds
//! each string once (its container's), so a scan examines at most about three times `max_bytes`
//! (strings, concatenations, views): linear in the input, never quadratic.
//!
//! A report names rules and RFC 6901 pointers, never the secret; an object member whose *name* holds a
//! secret is reported (and renamed by [`redact`]) under its redacted name, so pointers never carry
//! secrets either. Redaction replaces each match with `[REDACTED:<rule>]` (the whole value for
//! `sensitive-key` and keyed AWS secrets); text already in that form is never matched again, so
//! redacting is idempotent and scanning a redacted value finds nothing.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The rule id of values under credential-like member names.
pub const SENSITIVE_KEY: &str = "sensitive-key";
const AWS_SECRET_RULE: &str = "aws-secret-access-key";

const BUILT_IN: &[(&str, &str, Check)] = &[
    (
        "private-key",
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----(?s:.*?)(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----|\z)",
        Check::None,
    ),
    (
        "aws-access-key-id",
        r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)",
        Check::None,
    ),
    (
        "aws-secret-access-key",
        r#"(?i:aws_?secret_?(?:access_?)?key)["']?\s*[:=]\s*["']?(?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|\z)"#,
        Check::None,
    ),
    (
        "jwt",
        r"(?-u:\b)ey[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        Check::Jwt,
    ),
    (
        "github-token",
        r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
        Check::None,
    ),
    (
        "slack-token",
        r"(?-u:\b)xox[baprs]-[A-Za-z0-9-]{10,250}",
        Check::None,
    ),
    (
        "stripe-live-key",
        r"(?-u:\b)[sr]k_live_[A-Za-z0-9]{20,247}",
        Check::None,
    ),
    ("google-api-key", r"(?-u:\b)AIza[0-9A-Za-z_-]{35}", Check::None),
    (
        "anthropic-api-key",
        r"(?-u:\b)sk-ant-[A-Za-z0-9_-]{32,}",
        Check::None,
    ),
    ("openai-api-key", r"(?-u:\b)sk-[A-Za-z0-9_-]{32,}", Check::None),
    (
        "url-credentials",
        r"(?-u:\b)[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/?#@\[\]]*:(?P<secret>[^\s/?#]+)@[A-Za-z0-9\[]",
        Check::UrlPassword,
    ),
    ("high-entropy", r"[A-Za-z0-9+/=_-]{24,}", Check::Entropy),
];

/// Literals (or near-literals) that each specific built-in rule's matches contain, in rule order.
const PREFILTER: &str = r"-----BEGIN|AKIA|ASIA|(?i:aws_?secret)|ey[A-Za-z0-9_-]{6,}\.|gh[pousr]_|github_pat_|xox[baprs]-|k_live_|AIza|sk-|://";

/// Priority of custom rules: after every specific built-in rule, before `high-entropy`.
const CUSTOM_AT: usize = BUILT_IN.len() - 1;

const SENSITIVE_SUFFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "secretkey",
    "apikey",
    "token",
    "privatekey",
    "accesskey",
    "signingkey",
    "encryptionkey",
    "credential",
    "credentials",
    "passcode",
];
/// Credential names that are too short or too common inside other words to match as suffixes: they
/// count only as the last word of a name (`db_pass`, `DB-PASS`, `dbPass`; not `bypass`, `compass`),
/// and `pwd` only after another word (alone, `pwd` is usually a working directory).
const SENSITIVE_LAST_WORDS: &[&str] = &["pass", "pwd"];
const NOT_SENSITIVE_SUFFIXES: &[&str] = &["pagetoken", "nexttoken", "continuationtoken", "synctoken"];
const AWS_SECRET_KEYS: &[&str] = &["awssecretaccesskey", "secretaccesskey", "awssecretkey"];

const MAX_CUSTOM_REGEX_CHARS: usize = 4096;
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const SET_SIZE_LIMIT: usize = 16 << 20;
/// Redaction passes over one string before the whole string is replaced (see `redact_str`).
const MAX_PASSES: usize = 4;
/// Hex and base64 runs longer than this are data (files, images), not encoded credentials: not decoded.
const MAX_DECODE_RUN: usize = 16 * 1024;
/// Shortest hex run decoded (12 bytes: shorter than any built-in rule's match).
const MIN_HEX_RUN: usize = 24;
/// Shortest base64 run decoded (12 bytes).
const MIN_BASE64_RUN: usize = 16;
/// Decoding layers examined below a string (e.g. hex inside base64, or base64 after full-width
/// characters were normalised).
const MAX_VIEW_DEPTH: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Jwt,
    Entropy,
    UrlPassword,
}

/// A configured detection rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomRule {
    /// 1 to 64 of `[a-z0-9-]`, starting with a letter or digit; unique, and not a built-in rule's id.
    pub id: String,
    /// A `regex` crate pattern. The whole match is the secret, unless the pattern has a group named
    /// `secret` (then only that group is).
    pub regex: String,
}

/// Why a custom rule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule id `{id}` is invalid: use 1 to 64 of a-z, 0-9 and -, starting with a letter or digit")]
    InvalidId { id: String },
    #[error("rule id `{id}` is used twice or is a built-in rule's id")]
    DuplicateId { id: String },
    #[error("rule `{id}`: the regex is {len} characters, more than the limit of {max}")]
    RegexTooLong { id: String, len: usize, max: usize },
    #[error("rule `{id}`: the regex does not compile: {reason}")]
    Regex { id: String, reason: String },
    #[error("rule `{id}`: the regex matches the empty string, so it would match everywhere")]
    MatchesEmpty { id: String },
    #[error("the rules together compile to more than the size limit: {reason}")]
    TooLarge { reason: String },
}

/// Bounds on one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Most bytes of strings (member names and values) examined. Default 1 MiB.
    pub max_bytes: usize,
    /// Deepest nesting examined. Default 128.
    pub max_depth: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_depth: 128,
        }
    }
}

/// One detected secret: which rule, and where (RFC 6901 JSON pointer). Never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Finding {
    pub rule: String,
    pub pointer: String,
}

/// The outcome of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScanReport {
    /// Each (rule, pointer) once, in document order.
    pub findings: Vec<Finding>,
    /// The scan stopped at a limit: parts of the value were not examined. Fail closed.
    pub incomplete: bool,
}

impl ScanReport {
    /// Nothing found and everything examined.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && !self.incomplete
    }
}

#[derive(Debug)]
struct Rule {
    id: String,
    regex: Regex,
    check: Check,
    /// Index of the `secret` capture group, if the pattern has one.
    group: Option<usize>,
    min_len: usize,
}

/// Compiled detection rules. Build once (per configuration), share freely.
#[derive(Debug)]
pub struct Scanner {
    rules: Vec<Rule>,
    /// Must match wherever any specific built-in rule matches: literals every one of them needs.
    /// Most strings contain none, and then the built-in set never runs.
    prefilter: Regex,
    /// The specific built-in rules (indices `0..CUSTOM_AT` of `rules`).
    builtin_set: RegexSet,
    /// The custom rules (indices from `CUSTOM_AT`), if any.
    custom_set: Option<RegexSet>,
    marker: Regex,
    limits: ScanLimits,
    /// No rule matches a string shorter than this (a cheap pre-filter: most strings are short).
    min_len: usize,
}

#[derive(Debug, Clone, Copy)]
struct Match {
    start: usize,
    end: usize,
    rule: usize,
}

fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn compile(id: &str, pattern: &str) -> Result<Rule, RuleError> {
    let regex = RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| RuleError::Regex {
            id: id.to_owned(),
            reason: e.to_string(),
        })?;
    let group = regex.capture_names().position(|n| n == Some("secret"));
    // The shortest text the rule can match; `None` = matches nothing. Parsing cannot fail where
    // compiling succeeded, but if it did, 0 only disables the pre-filter.
    let min_len = regex_syntax::parse(pattern)
        .map(|hir| hir.properties().minimum_len().unwrap_or(usize::MAX))
        .unwrap_or(0);
    Ok(Rule {
        min_len,
        id: id.to_owned(),
        regex,
        check: Check::None,
        group,
    })
}

impl Scanner {
    /// The limits past which a scan is incomplete.
    pub fn limits(&self) -> ScanLimits {
        self.limits
    }

    /// The built-in rules plus `custom_rules` (validated), with default limits.
    pub fn new(custom_rules: &[CustomRule]) -> Result<Scanner, RuleError> {
        let mut rules = Vec::with_capacity(BUILT_IN.len() + custom_rules.len());
        for (id, pattern, check) in BUILT_IN {
            let mut rule = compile(id, pattern)?;
            rule.check = *check;
            rules.push(rule);
        }
        let mut ids: HashSet<&str> = BUILT_IN.iter().map(|r| r.0).collect();
        ids.insert(SENSITIVE_KEY);
        let mut custom = Vec::with_capacity(custom_rules.len());
        for c in custom_rules {
            if !valid_id(&c.id) {
                return Err(RuleError::InvalidId {
                    id: c.id.chars().take(64).collect(),
                });
            }
            if !ids.insert(&c.id) {
                return Err(RuleError::DuplicateId { id: c.id.clone() });
            }
            let len = c.regex.chars().count();
            if len > MAX_CUSTOM_REGEX_CHARS {
                return Err(RuleError::RegexTooLong {
                    id: c.id.clone(),
                    len,
                    max: MAX_CUSTOM_REGEX_CHARS,
                });
            }
            let rule = compile(&c.id, &c.regex)?;
            if rule.regex.is_match("") {
                return Err(RuleError::MatchesEmpty { id: c.id.clone() });
            }
            custom.push(rule);
        }
        // Custom rules go before the generic entropy rule, after every specific one.
        let n_custom = custom.len();
        let build_set = |rules: &[Rule]| {
            RegexSetBuilder::new(rules.iter().map(|r| r.regex.as_str()))
                .size_limit(SET_SIZE_LIMIT)
                .dfa_size_limit(SET_SIZE_LIMIT)
                .build()
                .map_err(|e| RuleError::TooLarge {
                    reason: e.to_string(),
                })
        };
        let builtin_set = build_set(&rules[..CUSTOM_AT])?;
        let custom_set = if custom.is_empty() {
            None
        } else {
            Some(build_set(&custom)?)
        };
        let tail = rules.split_off(CUSTOM_AT);
        rules.extend(custom);
        rules.extend(tail);
        debug_assert_eq!(rules.len(), BUILT_IN.len() + n_custom);
        let prefilter = compile("prefilter", PREFILTER)?.regex;
        let marker = compile("marker", r"\[REDACTED:[a-z0-9-]{1,64}\]")?.regex;
        let min_len = rules.iter().map(|r| r.min_len).min().unwrap_or(0);
        Ok(Scanner {
            rules,
            prefilter,
            builtin_set,
            custom_set,
            marker,
            limits: ScanLimits::default(),
            min_len,
        })
    }

    /// The same rules with other limits.
    pub fn with_limits(mut self, limits: ScanLimits) -> Scanner {
        self.limits = limits;
        self
    }

    /// The ids of every rule, in priority order (then `sensitive-key`).
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str()).chain([SENSITIVE_KEY])
    }

    /// Scans a value without changing it.
    pub fn scan(&self, value: &Value) -> ScanReport {
        let mut walk = Walk::new(self);
        walk.scan_value(value, 0);
        walk.report()
    }

    /// Scans a value and replaces every secret with `[REDACTED:<rule>]`. Returns what was replaced.
    pub fn redact(&self, value: &mut Value) -> ScanReport {
        let mut walk = Walk::new(self);
        walk.redact_value(value, 0);
        walk.report()
    }

    /// Non-overlapping matches in `s`, by start. Where matches overlap, the earlier rule wins.
    fn matches(&self, s: &str) -> Vec<Match> {
        self.matches_in(s, true)
    }

    /// [`Self::matches`], with the generic entropy rule or without it (`entropy`).
    fn matches_in(&self, s: &str, entropy: bool) -> Vec<Match> {
        if s.len() < self.min_len {
            return Vec::new();
        }
        let mut hits: Vec<usize> = Vec::new();
        if self.prefilter.is_match(s) {
            hits.extend(self.builtin_set.matches(s).iter());
        }
        if let Some(set) = &self.custom_set {
            hits.extend(set.matches(s).iter().map(|i| CUSTOM_AT + i));
        }
        let entropy_rule = self.rules.len() - 1;
        let runs = if entropy { token_runs(s) } else { Vec::new() };
        if !runs.is_empty() {
            hits.push(entropy_rule);
        }
        if hits.is_empty() {
            return Vec::new();
        }
        let markers: Vec<(usize, usize)> = if s.contains("[REDACTED:") {
            self.marker.find_iter(s).map(|m| (m.start(), m.end())).collect()
        } else {
            Vec::new()
        };
        let in_marker = |start: usize, end: usize| markers.iter().any(|&(ms, me)| start < me && ms < end);
        // Accepted spans, start → end; rules in priority order, so an earlier rule claims first.
        let mut taken: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for idx in hits {
            let rule = &self.rules[idx];
            let mut consider = |start: usize, end: usize| {
                if start == end || in_marker(start, end) || !passes(rule.check, &s[start..end]) {
                    return;
                }
                let before = taken
                    .range(..=start)
                    .next_back()
                    .is_some_and(|(_, &(e, _))| e > start);
                let after = taken.range(start..).next().is_some_and(|(&st, _)| st < end);
                if !before && !after {
                    taken.insert(start, (end, idx));
                }
            };
            match rule.group {
                // The generic rule's candidates are maximal runs of token characters, found without
                // a regex (what `[A-Za-z0-9+/=_-]{24,}` would find, faster).
                _ if idx == entropy_rule => {
                    for &(start, end) in &runs {
                        consider(start, end);
                    }
                }
                Some(g) => {
                    for caps in rule.regex.captures_iter(s) {
                        if let Some(m) = caps.get(g) {
                            consider(m.start(), m.end());
                        }
                    }
                }
                None => {
                    for m in rule.regex.find_iter(s) {
                        consider(m.start(), m.end());
                    }
                }
            }
        }
        taken
            .into_iter()
            .map(|(start, (end, rule))| Match { start, end, rule })
            .collect()
    }

    /// Redacts `s` in place; returns the rules that matched (possibly with repeats). Replacing a match
    /// can expose text that a lower-priority overlapping match had covered, so this repeats up to
    /// `MAX_PASSES` times; if text still matches then, the whole string is replaced.
    fn redact_str(&self, s: &mut String) -> Vec<usize> {
        let mut rules = Vec::new();
        for _ in 0..MAX_PASSES {
            let found = self.matches(s);
            if found.is_empty() {
                return rules;
            }
            let mut out = String::with_capacity(s.len());
            let mut at = 0;
            for m in &found {
                out.push_str(&s[at..m.start]);
                push_marker(&mut out, &self.rules[m.rule].id);
                at = m.end;
                rules.push(m.rule);
            }
            out.push_str(&s[at..]);
            *s = out;
        }
        if let Some(m) = self.matches(s).first() {
            rules.push(m.rule);
            let mut whole = String::new();
            push_marker(&mut whole, &self.rules[m.rule].id);
            *s = whole;
        }
        rules
    }

    /// Rules that match in the decoded and normalised views of `s` (up to [`MAX_VIEW_DEPTH`] layers
    /// deep), not counting `s` itself; redaction markers in `s` are blanked first. Each view's bytes are
    /// taken from `budget`; `None` when it ran out (the scan is then incomplete).
    fn view_rules(&self, s: &str, entropy: bool, budget: &mut usize) -> Option<Vec<usize>> {
        let mut found: Vec<usize> = Vec::new();
        let mut pending: Vec<(String, usize)> = Vec::new();
        let mut fresh = Vec::new();
        let blanked;
        let s = if s.contains("[REDACTED:") {
            blanked = self.marker.replace_all(s, " ");
            &*blanked
        } else {
            s
        };
        views_of(s, &mut fresh);
        pending.extend(fresh.drain(..).map(|v| (v, 1)));
        while let Some((view, depth)) = pending.pop() {
            if view.len() > *budget {
                *budget = 0;
                return None;
            }
            *budget -= view.len();
            for m in self.matches_in(&view, entropy) {
                if !found.contains(&m.rule) {
                    found.push(m.rule);
                }
            }
            if depth < MAX_VIEW_DEPTH {
                views_of(&view, &mut fresh);
                pending.extend(fresh.drain(..).map(|v| (v, depth + 1)));
            }
        }
        found.sort_unstable();
        Some(found)
    }

    fn is_marker(&self, s: &str) -> bool {
        self.marker
            .find(s)
            .is_some_and(|m| m.start() == 0 && m.end() == s.len())
    }
}

fn push_marker(out: &mut String, rule: &str) {
    out.push_str("[REDACTED:");
    out.push_str(rule);
    out.push(']');
}

fn passes(check: Check, text: &str) -> bool {
    match check {
        Check::None => true,
        Check::Jwt => is_jwt(text),
        Check::Entropy => is_high_entropy(text) && !is_base64_media(text),
        Check::UrlPassword => !is_placeholder(text),
    }
}

fn is_jwt(text: &str) -> bool {
    let Some(header) = text.split('.').next() else {
        return false;
    };
    if header.len() > 4096 {
        return false;
    }
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v.get("alg").is_some_and(Value::is_string))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-')
}

/// Maximal runs of 24 or more base64 / base64url characters.
fn token_runs(s: &str) -> Vec<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_token_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_token_byte(bytes[i]) {
            i += 1;
        }
        if i - start >= 24 {
            runs.push((start, i));
        }
    }
    runs
}

/// The generic token heuristic (see the module documentation).
fn is_high_entropy(text: &str) -> bool {
    let t = text.trim_end_matches('=').as_bytes();
    if t.len() < 24 || t.len() > 512 {
        return false;
    }
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Upper,
        Lower,
        Digit,
    }
    let class = |b: u8| match b {
        b'A'..=b'Z' => Some(Class::Upper),
        b'a'..=b'z' => Some(Class::Lower),
        b'0'..=b'9' => Some(Class::Digit),
        _ => None,
    };
    let (mut upper, mut lower, mut digit) = (false, false, false);
    let (mut pairs, mut switches) = (0usize, 0usize);
    let mut prev = None;
    for &b in t {
        let Some(c) = class(b) else { continue };
        match c {
            Class::Upper => upper = true,
            Class::Lower => lower = true,
            Class::Digit => digit = true,
        }
        if let Some(p) = prev {
            pairs += 1;
            if p != c {
                switches += 1;
            }
        }
        prev = Some(c);
    }
    if !(upper && lower && digit) || pairs == 0 || switches * 100 < pairs * 45 {
        return false;
    }
    let mut counts = [0u32; 128];
    for &b in t {
        counts[usize::from(b & 0x7f)] += 1; // token bytes are ASCII
    }
    let n = t.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy >= 3.5
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Plain,
    Sensitive,
    AwsSecret,
}

fn key_kind(key: &str) -> KeyKind {
    // The shortest name that matters is "pass"; names are normalized (lower case, without `_`, `-`,
    // `.` and spaces) into a stack buffer: this runs for every member of every scanned object.
    if key.len() < 4 || key.len() > 128 {
        return KeyKind::Plain;
    }
    let mut buf = [0u8; 128];
    let mut n = 0;
    for c in key.chars() {
        if matches!(c, '_' | '-' | '.' | ' ') {
            continue;
        }
        for l in c.to_lowercase() {
            let mut tmp = [0u8; 4];
            let enc = l.encode_utf8(&mut tmp).as_bytes();
            if n + enc.len() > buf.len() {
                return KeyKind::Plain;
            }
            buf[n..n + enc.len()].copy_from_slice(enc);
            n += enc.len();
        }
    }
    let k = &buf[..n];
    if AWS_SECRET_KEYS.iter().any(|s| k == s.as_bytes()) {
        return KeyKind::AwsSecret;
    }
    if NOT_SENSITIVE_SUFFIXES.iter().any(|s| k.ends_with(s.as_bytes())) {
        return KeyKind::Plain;
    }
    if k == b"authorization"
        || SENSITIVE_SUFFIXES.iter().any(|s| k.ends_with(s.as_bytes()))
        || last_word_is_credential(key)
    {
        KeyKind::Sensitive
    } else {
        KeyKind::Plain
    }
}

/// Whether the last word of `key` (words split at `_`, `-`, `.`, spaces and lower-to-upper case
/// changes) is one of [`SENSITIVE_LAST_WORDS`]; `pwd` needs a word before it.
fn last_word_is_credential(key: &str) -> bool {
    let mut start = 0;
    let mut prev_lower = false;
    for (i, c) in key.char_indices() {
        if matches!(c, '_' | '-' | '.' | ' ') {
            start = i + 1;
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            start = i;
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
    }
    let word = &key[start..];
    let before = key[..start].chars().any(char::is_alphanumeric);
    SENSITIVE_LAST_WORDS
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w) && (*w != "pwd" || before))
}

fn is_aws_secret(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+')
}

/// A URL's password that is a placeholder, not a credential: `${DB_PASSWORD}`, `<password>`,
/// `{{pass}}`, `%(password)s`, `***`.
fn is_placeholder(password: &str) -> bool {
    password.starts_with('$')
        || password.starts_with('<')
        || password.starts_with('{')
        || password.starts_with("%(")
        || password.bytes().all(|b| b == b'*')
}

/// Base64 that decodes to an image, archive or document (a small inline image, a data URL): data, not
/// a credential, even when short enough for the entropy rule.
fn is_base64_media(text: &str) -> bool {
    const MAGIC: &[&[u8]] = &[
        b"\x89PNG",
        b"\xff\xd8\xff",
        b"GIF8",
        b"%PDF",
        b"PK\x03\x04",
        b"\x1f\x8b",
        b"RIFF",
        b"\x00\x00\x01\x00",
    ];
    let Some(head) = text.get(..16) else { return false };
    let Some(bytes) = decode_base64(head) else {
        return false;
    };
    MAGIC.iter().any(|m| bytes.starts_with(m))
}

fn decode_base64(run: &str) -> Option<Vec<u8>> {
    use base64::alphabet;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    let run = run.trim_end_matches('=');
    let url = run.bytes().any(|b| b == b'-' || b == b'_');
    if url && run.bytes().any(|b| b == b'+' || b == b'/') {
        return None;
    }
    if url {
        URL_SAFE.decode(run)
    } else {
        STANDARD.decode(run)
    }
    .ok()
}

/// Decoded bytes that are text (UTF-8 without control characters other than tab, CR, LF): random or
/// binary bytes almost never are, so decoding a digest or an image yields nothing to scan.
fn printable(bytes: Vec<u8>) -> Option<String> {
    let text = String::from_utf8(bytes).ok()?;
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        .then_some(text)
}

/// Zero-width and other invisible formatting characters, stripped before matching.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FEFF}'
    )
}

fn is_full_width(c: char) -> bool {
    matches!(c, '\u{FF01}'..='\u{FF5E}' | '\u{3000}')
}

/// `s` without invisible characters and with full-width forms as ASCII, if that changes anything.
fn normalise(s: &str) -> Option<String> {
    if s.is_ascii() || !s.chars().any(|c| is_invisible(c) || is_full_width(c)) {
        return None;
    }
    Some(
        s.chars()
            .filter(|&c| !is_invisible(c))
            .map(|c| match c {
                '\u{3000}' => ' ',
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
                c => c,
            })
            .collect(),
    )
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_at(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let digits = b.get(at..at + n)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &d| Some(acc * 16 + u32::from(hex_digit(d)?)))
}

/// `s` with `%XX` escapes decoded (invalid UTF-8 replaced), if it has any.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if !memchr::memchr_iter(b'%', b).any(|i| hex_at(b, i + 1, 2).is_some()) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match hex_at(b, i + 1, 2) {
            Some(v) if b[i] == b'%' => {
                out.push(v as u8);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// `s` with backslash escapes (`\uXXXX` with surrogate pairs, `\xXX`, `\n`, `\t`, `\r`, `\\`, `\/`,
/// `\"`) decoded, if it has a `\u` or `\x` escape: a value pasted from JSON, JavaScript or Python source.
fn unescape(s: &str) -> Option<String> {
    if memchr::memchr(b'\\', s.as_bytes()).is_none() || !(s.contains("\\u") || s.contains("\\x")) {
        return None;
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let (mut i, mut last) = (0, 0);
    while let Some(off) = memchr::memchr(b'\\', &b[i..]) {
        let at = i + off;
        out.push_str(&s[last..at]);
        let (c, len) = match b.get(at + 1) {
            Some(b'u') => match hex_at(b, at + 2, 4) {
                Some(hi @ 0xD800..=0xDBFF) => match (b.get(at + 6..at + 8), hex_at(b, at + 8, 4)) {
                    (Some(b"\\u"), Some(lo @ 0xDC00..=0xDFFF)) => (
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)),
                        12,
                    ),
                    _ => (Some('\u{FFFD}'), 6),
                },
                Some(v) => (Some(char::from_u32(v).unwrap_or('\u{FFFD}')), 6),
                None => (None, 1),
            },
            Some(b'x') => match hex_at(b, at + 2, 2) {
                Some(v) => (char::from_u32(v), 4),
                None => (None, 1),
            },
            Some(b'n') => (Some('\n'), 2),
            Some(b't') => (Some('\t'), 2),
            Some(b'r') => (Some('\r'), 2),
            Some(b'\\') => (Some('\\'), 2),
            Some(b'/') => (Some('/'), 2),
            Some(b'"') => (Some('"'), 2),
            _ => (None, 1),
        };
        out.push(c.unwrap_or('\\'));
        i = at + len;
        last = i;
    }
    out.push_str(&s[last..]);
    Some(out)
}

/// Maximal runs of bytes satisfying `class`, `min` or more long.
fn runs_of(s: &str, class: fn(u8) -> bool, min: usize) -> Vec<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !class(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && class(bytes[i]) {
            i += 1;
        }
        if i - start >= min {
            runs.push((start, i));
        }
    }
    runs
}

fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-')
}

/// The decoded and normalised forms of `s` a leak takes (see the module documentation), each at most
/// as long as `s` (normalised, unescaped, percent-decoded) or shorter (hex, base64 runs).
fn views_of(s: &str, out: &mut Vec<String>) {
    if !s.is_ascii() {
        out.extend(normalise(s));
    }
    out.extend(percent_decode(s));
    out.extend(unescape(s));
    if s.len() < MIN_BASE64_RUN {
        return;
    }
    // Hex runs lie inside base64 runs: one pass finds the base64 runs, and only those with enough hex
    // digits in them are searched for hex runs.
    for (a, b) in runs_of(s, is_base64_byte, MIN_BASE64_RUN) {
        let run = &s[a..b];
        if b - a > MAX_DECODE_RUN {
            continue;
        }
        let hex_digits = run.bytes().filter(u8::is_ascii_hexdigit).count();
        if hex_digits == run.len() {
            if run.len() >= MIN_HEX_RUN && run.len().is_multiple_of(2) {
                out.extend(hex::decode(run).ok().and_then(printable));
            }
            continue;
        }
        if hex_digits >= MIN_HEX_RUN {
            for (ha, hb) in runs_of(run, |b| b.is_ascii_hexdigit(), MIN_HEX_RUN) {
                if (hb - ha).is_multiple_of(2) {
                    out.extend(hex::decode(&run[ha..hb]).ok().and_then(printable));
                }
            }
        }
        out.extend(decode_base64(run).and_then(printable));
    }
}

struct Walk<'a> {
    scanner: &'a Scanner,
    budget: usize,
    /// Bytes of decoded and normalised views still to examine (the same size as `budget`).
    view_budget: usize,
    incomplete: bool,
    /// The current RFC 6901 pointer, and where each of its segments starts.
    path: String,
    marks: Vec<usize>,
    findings: Vec<Finding>,
    seen: HashSet<(String, String)>,
}

impl<'a> Walk<'a> {
    fn new(scanner: &'a Scanner) -> Self {
        Walk {
            scanner,
            budget: scanner.limits.max_bytes,
            view_budget: scanner.limits.max_bytes,
            incomplete: false,
            path: String::new(),
            marks: Vec::new(),
            findings: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn report(self) -> ScanReport {
        ScanReport {
            findings: self.findings,
            incomplete: self.incomplete,
        }
    }

    /// Takes `len` bytes from the budget; false (and incomplete) when they are not there.
    fn spend(&mut self, len: usize) -> bool {
        if len > self.budget {
            self.incomplete = true;
            self.budget = 0;
            return false;
        }
        self.budget -= len;
        true
    }

    fn push_key(&mut self, key: &str) {
        self.marks.push(self.path.len());
        self.path.push('/');
        for c in key.chars() {
            match c {
                '~' => self.path.push_str("~0"),
                '/' => self.path.push_str("~1"),
                c => self.path.push(c),
            }
        }
    }

    fn push_index(&mut self, i: usize) {
        self.marks.push(self.path.len());
        let _ = write!(self.path, "/{i}");
    }

    fn pop(&mut self) {
        if let Some(at) = self.marks.pop() {
            self.path.truncate(at);
        }
    }

    /// Records a finding of rule `id` at the current pointer (once).
    fn record(&mut self, id: &str) {
        if self.seen.insert((id.to_owned(), self.path.clone())) {
            self.findings.push(Finding {
                rule: id.to_owned(),
                pointer: self.path.clone(),
            });
        }
    }

    fn record_rules(&mut self, rules: &[usize]) {
        for &r in rules {
            let scanner = self.scanner;
            self.record(&scanner.rules[r].id);
        }
    }

    /// Scans a member name: `Some((redacted name, rules))` if it holds a secret.
    fn scan_key(&mut self, key: &str) -> Option<(String, Vec<usize>)> {
        if !self.spend(key.len()) || key.len() < self.scanner.min_len {
            return None;
        }
        let mut shown = key.to_owned();
        let rules = self.scanner.redact_str(&mut shown);
        (!rules.is_empty()).then_some((shown, rules))
    }

    /// Enters an object member: scans its name, pushes it onto the pointer, records findings in it.
    /// Returns the redacted name if the name held a secret.
    fn enter_member(&mut self, key: &str) -> Option<String> {
        match self.scan_key(key) {
            Some((shown, rules)) => {
                self.push_key(&shown);
                self.record_rules(&rules);
                Some(shown)
            }
            None => {
                self.push_key(key);
                None
            }
        }
    }

    /// Rules that match in the views of `s` (see [`Scanner::view_rules`]); marks the scan incomplete
    /// when the view budget runs out.
    fn view_rules(&mut self, s: &str, entropy: bool) -> Vec<usize> {
        match self.scanner.view_rules(s, entropy, &mut self.view_budget) {
            Some(rules) => rules,
            None => {
                self.incomplete = true;
                Vec::new()
            }
        }
    }

    /// Rules that match in the concatenation of a container's string members (specific rules only:
    /// the entropy rule would join ordinary identifiers into a random-looking run).
    fn join_rules(&mut self, join: &str) -> Vec<usize> {
        let mut rules: Vec<usize> = self
            .scanner
            .matches_in(join, false)
            .iter()
            .map(|m| m.rule)
            .collect();
        rules.extend(self.view_rules(join, false));
        rules.sort_unstable();
        rules.dedup();
        rules
    }

    /// Appends a string member to its container's concatenation (a redaction marker as a space).
    fn join_push(&self, join: &mut String, s: &str) {
        if self.scanner.is_marker(s) {
            join.push(' ');
        } else {
            join.push_str(s);
        }
    }

    // ---- scanning (read only) ----

    /// Scans a value; returns the rules found in it if it is a string.
    fn scan_value(&mut self, value: &Value, depth: usize) -> Vec<usize> {
        match value {
            Value::String(s) => {
                if !self.spend(s.len()) {
                    return Vec::new();
                }
                let mut rules: Vec<usize> = self.scanner.matches(s).iter().map(|m| m.rule).collect();
                rules.extend(self.view_rules(s, true));
                self.record_rules(&rules);
                return rules;
            }
            Value::Array(items) => {
                if depth >= self.scanner.limits.max_depth {
                    self.incomplete = true;
                    return Vec::new();
                }
                let (mut join, mut strings, mut found) = (String::new(), 0, Vec::new());
                for (i, item) in items.iter().enumerate() {
                    self.push_index(i);
                    found.extend(self.scan_value(item, depth + 1));
                    self.pop();
                    if let Value::String(s) = item {
                        self.join_push(&mut join, s);
                        strings += 1;
                    }
                }
                self.scan_join(&join, strings, &found);
            }
            Value::Object(members) => {
                if depth >= self.scanner.limits.max_depth {
                    self.incomplete = true;
                    return Vec::new();
                }
                let (mut join, mut strings, mut found) = (String::new(), 0, Vec::new());
                for (key, item) in members {
                    self.enter_member(key);
                    match (key_kind(key), item) {
                        (KeyKind::AwsSecret, Value::String(s)) if is_aws_secret(s) => {
                            if self.spend(s.len()) {
                                self.record(AWS_SECRET_RULE);
                            }
                        }
                        (KeyKind::Sensitive | KeyKind::AwsSecret, Value::String(s)) if !s.is_empty() => {
                            if self.spend(s.len()) && !self.scanner.is_marker(s) {
                                self.record(SENSITIVE_KEY);
                            }
                        }
                        _ => {
                            found.extend(self.scan_value(item, depth + 1));
                            if let Value::String(s) = item {
                                self.join_push(&mut join, s);
                                strings += 1;
                            }
                        }
                    }
                    self.pop();
                }
                self.scan_join(&join, strings, &found);
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
        Vec::new()
    }

    /// Records what the concatenation of a container's string members holds that none of them holds
    /// alone: a secret split across members, reported at the container's pointer.
    fn scan_join(&mut self, join: &str, strings: usize, found: &[usize]) {
        if strings < 2 {
            return;
        }
        let rules: Vec<usize> = self
            .join_rules(join)
            .into_iter()
            .filter(|r| !found.contains(r))
            .collect();
        self.record_rules(&rules);
    }

    // ---- redaction ----

    /// Redacts a string in place: matches are replaced; if a decoded or normalised view of what is
    /// left still holds a secret, the whole string is.
    fn redact_string(&mut self, s: &mut String) {
        if !self.spend(s.len()) {
            return;
        }
        let mut rules = self.scanner.redact_str(s);
        let hidden = self.view_rules(s, true);
        if let Some(&first) = hidden.first() {
            s.clear();
            push_marker(s, &self.scanner.rules[first].id);
            rules.extend(hidden);
        }
        self.record_rules(&rules);
    }

    /// If a container's string members together hold a secret, records it at the container and
    /// replaces each of them (redaction markers aside) with a marker.
    fn redact_join(&mut self, strings: Vec<&mut String>) {
        if strings.len() < 2 {
            return;
        }
        let mut join = String::new();
        for s in &strings {
            self.join_push(&mut join, s);
        }
        let rules = self.join_rules(&join);
        let Some(&first) = rules.first() else { return };
        self.record_rules(&rules);
        for s in strings {
            if !self.scanner.is_marker(s) {
                s.clear();
                push_marker(s, &self.scanner.rules[first].id);
            }
        }
    }

    fn redact_value(&mut self, value: &mut Value, depth: usize) {
        match value {
            Value::String(s) => self.redact_string(s),
            Value::Array(items) => {
                if depth >= self.scanner.limits.max_depth {
                    self.incomplete = true;
                    return;
                }
                for (i, item) in items.iter_mut().enumerate() {
                    self.push_index(i);
                    self.redact_value(item, depth + 1);
                    self.pop();
                }
                let strings = items
                    .iter_mut()
                    .filter_map(|v| match v {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                self.redact_join(strings);
            }
            Value::Object(members) => {
                if depth >= self.scanner.limits.max_depth {
                    self.incomplete = true;
                    return;
                }
                let mut renames = Vec::new();
                for (key, item) in members.iter_mut() {
                    if let Some(shown) = self.enter_member(key) {
                        renames.push((key.clone(), shown));
                    }
                    match (key_kind(key), &mut *item) {
                        (KeyKind::AwsSecret, Value::String(s)) if is_aws_secret(s) => {
                            if self.spend(s.len()) {
                                self.record(AWS_SECRET_RULE);
                                s.clear();
                                push_marker(s, AWS_SECRET_RULE);
                            }
                        }
                        (KeyKind::Sensitive | KeyKind::AwsSecret, Value::String(s)) if !s.is_empty() => {
                            if self.spend(s.len()) && !self.scanner.is_marker(s) {
                                self.record(SENSITIVE_KEY);
                                s.clear();
                                push_marker(s, SENSITIVE_KEY);
                            }
                        }
                        (_, item) => self.redact_value(item, depth + 1),
                    }
                    self.pop();
                }
                let strings = members
                    .iter_mut()
                    .filter_map(|(key, v)| match v {
                        // As in `scan_value`: members scanned as values, not as credentials.
                        Value::String(s) if key_kind(key) == KeyKind::Plain || s.is_empty() => Some(s),
                        _ => None,
                    })
                    .collect();
                self.redact_join(strings);
                rename_keys(members, renames);
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// Renames members whose names held secrets. A redacted name that collides with an existing member
/// gets a `#2`, `#3`… suffix, so no member is lost.
fn rename_keys(members: &mut Map<String, Value>, renames: Vec<(String, String)>) {
    for (old, new) in renames {
        let Some(v) = members.remove(&old) else { continue };
        let mut name = new.clone();
        let mut n = 2;
        while members.contains_key(&name) {
            name = format!("{new}#{n}");
            n += 1;
        }
        members.insert(name, v);
    }
}

/// Redacts `value` in place with `scanner` (same as [`Scanner::redact`]).
pub fn redact(value: &mut Value, scanner: &Scanner) -> ScanReport {
    scanner.redact(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    static SCANNER: std::sync::LazyLock<Scanner> = std::sync::LazyLock::new(|| Scanner::new(&[]).unwrap());

    fn scanner() -> &'static Scanner {
        &SCANNER
    }

    fn rules_in(s: &str) -> Vec<String> {
        scanner()
            .scan(&json!(s))
            .findings
            .into_iter()
            .map(|f| f.rule)
            .collect()
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[test]
    fn built_in_rules_detect() {
        let cases = [
            ("key AKIAIOSFODNN7EXAMPLE here", "aws-access-key-id"),
            ("ASIAY34FZKBOKMUTVV7A", "aws-access-key-id"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws-secret-access-key",
            ),
            (
                "export AWS_SECRET_ACCESS_KEY=\"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
                "aws-secret-access-key",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
                "private-key",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
                "private-key",
            ),
            ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF", "private-key"),
            ("-----BEGIN ENCRYPTED PRIVATE KEY-----", "private-key"),
            (JWT, "jwt"),
            ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "jwt"),
            ("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", "github-token"),
            ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "github-token"),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
                "github-token",
            ),
            ("xoxb-2637-12345678901-abcdEFGHijkl", "slack-token"),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe-live-key"),
            ("rk_live_51H8abcdefghijklmnopqrstu", "stripe-live-key"),
            ("AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "google-api-key"),
            (
                "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEF",
                "anthropic-api-key",
            ),
            (
                "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
                "openai-api-key",
            ),
            (
                "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL",
                "openai-api-key",
            ),
            ("token: Zx9Qm2Lr7Tp4Wv8Ys1Nb6Kd3Hf5Jc0Ga", "high-entropy"),
            ("dGhpcyBpcyBhIHNlY3JldCB2YWx1ZTEyMw==", "high-entropy"),
        ];
        for (text, rule) in cases {
            assert_eq!(rules_in(text), [rule], "{text}");
            assert!(
                scanner().prefilter.is_match(text) || rule == "high-entropy",
                "{text}"
            );
        }
        // Two different secrets in one string: both rules, one finding each.
        assert_eq!(
            rules_in(&format!("{JWT} AKIAIOSFODNN7EXAMPLE")),
            ["jwt", "aws-access-key-id"]
        );
    }

    #[test]
    fn ordinary_values_do_not_trigger() {
        for text in [
            // hex digests (SHA-256, SHA-1, MD5)
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "d41d8cd98f00b204e9800998ecf8427e",
            // UUIDs
            "550e8400-e29b-41d4-a716-446655440000",
            "550E8400-E29B-41D4-A716-446655440000",
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            // words, identifiers, paths, URLs
            "The quick brown fox jumps over the lazy dog, repeatedly and at considerable length.",
            "ConfigurationManager2024Impl",
            "ThisIsMyPassword1234567890",
            "my-very-long-kebab-case-identifier-2024-Final",
            "/home/user/Documents/Report2024Final.pdf",
            "src/main/java/com/Example/App1.java",
            "s3://my-bucket/Data/2024/Q1/Report_v2",
            "https://github.com/User123/MyRepo/blob/main/src/Lib2.rs",
            "ListObjectsV2_Request_Params_Filter",
            "2024-06-01T12:34:56.789Z",
            "SELECT id, name FROM users WHERE created_at > '2024-01-01'",
            "AKIA-not-a-key",
            "AKIAIOSFODNN7EXAMPL",
            "task-abcdefghijklmnopqrstuvwxyz0123456789ABCDEF",
            "www.example.com.evil.org",
            "[REDACTED:jwt]",
            "",
        ] {
            assert_eq!(rules_in(text), Vec::<String>::new(), "{text}");
        }
        // Three base64url segments without an `alg` header are not a JWT (the 24-character first
        // segment is still random-looking base64, which the generic rule may flag).
        assert!(!rules_in("eyJub3QiOiJhIGhlYWRlciJ9.eyJzdWIiOiJ4In0.c2ln").contains(&"jwt".to_owned()));
        // A long base64 blob is data (an image), not a credential.
        let blob =
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg"
                .repeat(8);
        assert_eq!(rules_in(&blob), Vec::<String>::new());
    }

    #[test]
    fn sensitive_keys_and_pointers() {
        let v = json!({
            "password": "hunter2",
            "db": {"Client_Secret": "abc", "api-key": "", "token": 5, "nextPageToken": "CAUQAA", "max_tokens": "100"},
            "headers": {"Authorization": "Bearer x"},
            "aws": {"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "secretAccessKey": "short"},
            "list": ["ok", "AKIAIOSFODNN7EXAMPLE"],
            "a/b~c": {"x": "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"},
        });
        let report = scanner().scan(&v);
        // (Member order depends on serde_json's `preserve_order` feature, so compare sorted.)
        let mut got: Vec<(&str, &str)> = report
            .findings
            .iter()
            .map(|f| (f.pointer.as_str(), f.rule.as_str()))
            .collect();
        got.sort_unstable();
        let mut want = vec![
            ("/password", "sensitive-key"),
            ("/db/Client_Secret", "sensitive-key"),
            ("/headers/Authorization", "sensitive-key"),
            ("/aws/aws_secret_access_key", "aws-secret-access-key"),
            ("/aws/secretAccessKey", "sensitive-key"),
            ("/list/1", "aws-access-key-id"),
            ("/a~1b~0c/x", "github-token"),
        ];
        want.sort_unstable();
        assert_eq!(got, want);
        assert!(!report.incomplete);
        assert!(!report.is_clean());
        // The report never contains a secret, Debug included.
        let debug = format!("{report:?}{}", serde_json::to_string(&report).unwrap());
        for secret in [
            "hunter2",
            "wJalrXUtn",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_wWPw5k4a",
            "Bearer x",
        ] {
            assert!(!debug.contains(secret), "{secret}");
        }
    }

    #[test]
    fn secrets_in_member_names_are_reported_and_renamed_redacted() {
        let mut v = json!({"AKIAIOSFODNN7EXAMPLE": {"note": "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"}, "[REDACTED:aws-access-key-id]": 1});
        let report = scanner().redact(&mut v);
        assert_eq!(
            report.findings,
            [
                Finding {
                    rule: "aws-access-key-id".into(),
                    pointer: "/[REDACTED:aws-access-key-id]".into()
                },
                Finding {
                    rule: "github-token".into(),
                    pointer: "/[REDACTED:aws-access-key-id]/note".into()
                },
            ]
        );
        assert_eq!(
            v,
            json!({"[REDACTED:aws-access-key-id]": 1, "[REDACTED:aws-access-key-id]#2": {"note": "[REDACTED:github-token]"}})
        );
        assert!(scanner().scan(&v).is_clean());
    }

    #[test]
    fn redaction_replaces_only_the_secret() {
        let mut v = json!({
            "cmd": "curl -H 'x-api-key: AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe' https://example.com",
            "env": "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY rest",
            "pem": "before\n-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\nafter",
            "password": "hunter2",
            "n": 42,
        });
        let report = redact(&mut v, scanner());
        assert_eq!(report.findings.len(), 4);
        assert_eq!(
            v,
            json!({
                "cmd": "curl -H 'x-api-key: [REDACTED:google-api-key]' https://example.com",
                "env": "AWS_SECRET_ACCESS_KEY=[REDACTED:aws-secret-access-key] rest",
                "pem": "before\n[REDACTED:private-key]\nafter",
                "password": "[REDACTED:sensitive-key]",
                "n": 42,
            })
        );
        let again = v.clone();
        assert!(scanner().redact(&mut v).is_clean());
        assert_eq!(v, again);
    }

    #[test]
    fn custom_rules() {
        let rule = |id: &str, regex: &str| CustomRule {
            id: id.into(),
            regex: regex.into(),
        };
        let s = Scanner::new(&[
            rule("acme-key", r"acme_[0-9a-f]{8}"),
            rule("pin", r"pin=(?P<secret>\d{4})"),
        ])
        .unwrap();
        let mut v = json!(["use acme_deadbeef now", "pin=1234;", "AKIAIOSFODNN7EXAMPLE"]);
        let report = s.redact(&mut v);
        assert_eq!(
            report
                .findings
                .iter()
                .map(|f| f.rule.as_str())
                .collect::<Vec<_>>(),
            ["acme-key", "pin", "aws-access-key-id"]
        );
        assert_eq!(
            v,
            json!([
                "use [REDACTED:acme-key] now",
                "pin=[REDACTED:pin];",
                "[REDACTED:aws-access-key-id]"
            ])
        );
        assert!(s.rule_ids().any(|id| id == "acme-key"));

        let err = |rules: &[CustomRule]| Scanner::new(rules).unwrap_err().to_string();
        assert!(err(&[rule("Bad", "x")]).starts_with("rule id `Bad` is invalid"));
        assert!(err(&[rule("", "x")]).starts_with("rule id `` is invalid"));
        assert!(err(&[rule("-x", "x")]).starts_with("rule id `-x` is invalid"));
        assert_eq!(
            err(&[rule("jwt", "x")]),
            "rule id `jwt` is used twice or is a built-in rule's id"
        );
        assert_eq!(
            err(&[rule("a", "x"), rule("a", "y")]),
            "rule id `a` is used twice or is a built-in rule's id"
        );
        assert!(err(&[rule("a", "(")]).starts_with("rule `a`: the regex does not compile"));
        assert!(err(&[rule("a", r"\w{1000}{1000}")]).starts_with("rule `a`: the regex does not compile"));
        assert_eq!(
            err(&[rule("a", "x*")]),
            "rule `a`: the regex matches the empty string, so it would match everywhere"
        );
        assert!(err(&[rule("a", &"x".repeat(5000))]).starts_with("rule `a`: the regex is 5000 characters"));
        let r: CustomRule = serde_json::from_value(json!({"id": "x", "regex": "y"})).unwrap();
        assert_eq!(r, rule("x", "y"));
    }

    #[test]
    fn budget_and_depth_make_the_report_incomplete() {
        let s = Scanner::new(&[]).unwrap().with_limits(ScanLimits {
            max_bytes: 30,
            max_depth: 3,
        });
        let report = s.scan(&json!(["AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLF"]));
        assert_eq!(report.findings.len(), 1);
        assert!(report.incomplete);
        assert!(!report.is_clean());
        let mut deep = json!([[[["AKIAIOSFODNN7EXAMPLE"]]]]);
        let report = s.redact(&mut deep);
        assert!(report.incomplete && report.findings.is_empty());
        assert!(s.scan(&json!([[["x"]]])).is_clean());
    }

    #[test]
    fn overlapping_rules_resolve_and_redaction_reaches_a_fixpoint() {
        // A GitHub token inside a longer base64-ish run: the specific rule wins, the rest of the run is
        // then examined on its own.
        let mut v = json!("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+/Zx9Qm2Lr7Tp4Wv8Ys1Nb6Kd3Hf5Jc0Ga");
        let report = scanner().redact(&mut v);
        assert_eq!(report.findings.len(), 2, "{report:?}");
        assert_eq!(v, json!("[REDACTED:github-token][REDACTED:high-entropy]"));
        assert!(scanner().scan(&v).is_clean());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let piece = prop_oneof![
            Just("AKIAIOSFODNN7EXAMPLE".to_owned()),
            Just(JWT.to_owned()),
            Just("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".to_owned()),
            Just("-----BEGIN EC PRIVATE KEY-----\nabc".to_owned()),
            Just("aws_secret_access_key=".to_owned()),
            Just("[REDACTED:".to_owned()),
            Just("]".to_owned()),
            // Encoded and split forms (issue 15 item 10).
            Just("414b4941494f53464f444e4e374558414d504c45".to_owned()),
            Just("QUtJQUlPU0ZPRE5ON0VYQU1QTEU=".to_owned()),
            Just("\u{200B}".to_owned()),
            Just("ＡＫＩＡ".to_owned()),
            Just("AKIA".to_owned()),
            Just("IOSFODNN7EXAMPLE".to_owned()),
            Just("%41%4B".to_owned()),
            Just("\\u0041".to_owned()),
            Just("redis://u:p@h".to_owned()),
            "[A-Za-z0-9+/=_-]{0,40}",
            ".{0,12}",
        ];
        let string = prop::collection::vec(piece, 0..4).prop_map(|p| p.concat());
        let key = prop_oneof![
            Just("password".to_owned()),
            Just("aws_secret_access_key".to_owned()),
            string.clone()
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            string.prop_map(Value::from)
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Bytes of member names and string values in `v`.
    fn strings_len(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(strings_len).sum(),
            Value::Object(m) => m.iter().map(|(k, v)| k.len() + strings_len(v)).sum(),
            _ => 0,
        }
    }

    fn arb_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("AKIAIOSFODNN7EXAMPLE".to_owned()),
            Just(JWT.to_owned()),
            Just("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".to_owned()),
            Just("-----BEGIN EC PRIVATE KEY-----\nabc".to_owned()),
            Just("AWS_Secret_Key: ".to_owned()),
            Just("sk-ant-".to_owned()),
            Just("xoxp-".to_owned()),
            "[A-Za-z0-9+/=_-]{0,40}",
            "(?s).{0,12}",
        ];
        prop::collection::vec(piece, 0..5).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn prefilter_and_token_runs_never_miss(s in arb_text()) {
            let sc = scanner();
            if sc.builtin_set.is_match(&s) {
                prop_assert!(sc.prefilter.is_match(&s), "{:?}", s);
            }
            let re = Regex::new(r"[A-Za-z0-9+/=_-]{24,}").unwrap();
            let want: Vec<(usize, usize)> = re.find_iter(&s).map(|m| (m.start(), m.end())).collect();
            prop_assert_eq!(token_runs(&s), want);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "(?s).{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let sc = scanner();
            let _ = sc.scan(&json!(s));
            let lossy = String::from_utf8_lossy(&bytes).into_owned();
            let mut v = json!({ lossy.clone(): lossy });
            let _ = sc.redact(&mut v);
        }

        #[test]
        fn redacted_values_scan_clean(v in arb_json()) {
            let sc = scanner();
            let mut redacted = v.clone();
            let report = sc.redact(&mut redacted);
            prop_assert!(!report.incomplete);
            prop_assert_eq!(sc.scan(&v).findings.is_empty(), report.findings.is_empty());
            let again = sc.scan(&redacted);
            prop_assert!(again.is_clean(), "{:?} -> {:?}: {:?}", v, redacted, again);
            let mut twice = redacted.clone();
            prop_assert!(sc.redact(&mut twice).is_clean());
            prop_assert_eq!(twice, redacted);
        }

        #[test]
        fn scanning_stays_within_its_budget(v in arb_json(), max_bytes in 0usize..400) {
            // Never panics; a value whose strings exceed the budget is reported incomplete, and the
            // decoded views never take more than a second budget of the same size.
            let sc = Scanner::new(&[]).unwrap().with_limits(ScanLimits { max_bytes, max_depth: 128 });
            let mut walk = Walk::new(&sc);
            walk.scan_value(&v, 0);
            prop_assert!(walk.view_budget <= max_bytes && walk.budget <= max_bytes);
            let total = strings_len(&v);
            prop_assert_eq!(walk.report().incomplete || total <= max_bytes, true);
            if total > max_bytes {
                prop_assert!(sc.scan(&v).incomplete);
            }
        }

        #[test]
        fn values_without_findings_are_unchanged(v in arb_json()) {
            let sc = scanner();
            if sc.scan(&v).findings.is_empty() {
                let mut copy = v.clone();
                prop_assert!(sc.redact(&mut copy).findings.is_empty());
                prop_assert_eq!(copy, v);
            }
        }
    }
}
