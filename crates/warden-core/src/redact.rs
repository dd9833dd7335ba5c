//! Cutting values that look like credentials out of text Warden echoes or records: an error message
//! that repeats what the client sent ("agent `…` not found"), a request path in a ledger entry. A
//! token pasted where an id or a name goes must not be echoed back or stored in the append-only ledger.
//!
//! What counts as credential-like: a run of token characters (`A-Z a-z 0-9 - _ . ~ + / =`) of at
//! least [`MIN_LEN`] bytes that is either a known credential shape (Warden's `wdn_` tokens, a JWT /
//! JWS `eyJ….….…`, a PEM header, GitHub `gh?_`, Slack `xox?-`, AWS `AKIA`/`ASIA` key ids, Stripe
//! `sk_live_`…) or mixes at least three of lower case, upper case, digits and symbols (random-looking).
//! UUIDs, SPIFFE IDs, e-mail addresses, agent names and paths (lower case, digits, `-`, `/`) are kept:
//! they are what errors are about.

/// Shortest run treated as a possible credential.
pub const MIN_LEN: usize = 20;

/// What replaces a credential-like run.
pub const REDACTED: &str = "[redacted]";

const PREFIXES: &[&str] = &[
    "wdn_",
    "eyJ",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxs-",
    "AKIA",
    "ASIA",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "glpat-",
    "AIza",
];

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=')
}

/// Whether `run` (token characters, no `/`) looks like a credential: long enough, and a known
/// credential shape or random-looking (three of: lower case, upper case, digits, `_+=~`).
fn credential_like(run: &str, min_len: usize) -> bool {
    if run.len() < min_len {
        return false;
    }
    if PREFIXES.iter().any(|p| run.starts_with(p)) || run.contains("PRIVATE") {
        return true;
    }
    let classes = [
        run.bytes().any(|b| b.is_ascii_lowercase()),
        run.bytes().any(|b| b.is_ascii_uppercase()),
        run.bytes().any(|b| b.is_ascii_digit()),
        run.bytes().any(|b| matches!(b, b'_' | b'+' | b'=' | b'~')),
    ];
    classes.iter().filter(|c| **c).count() >= 3
}

/// Appends `run` to `out`, redacted where it looks like a credential. A path or URL (a run that
/// starts with `/` or holds `://`) is judged segment by segment, so `/v1/agents/<token>` keeps its
/// route; anything else as a whole, so a base64 secret with `/` in it is cut whole.
fn push_run(out: &mut String, run: &str) {
    if run.starts_with('/') || run.contains("://") {
        for (i, seg) in run.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(if credential_like(seg, MIN_SEGMENT_LEN) {
                REDACTED
            } else {
                seg
            });
        }
    } else if credential_like(run, MIN_LEN) {
        out.push_str(REDACTED);
    } else {
        out.push_str(run);
    }
}

/// Shortest path segment treated as a possible credential.
const MIN_SEGMENT_LEN: usize = 16;

/// `text` with every credential-like run replaced by [`REDACTED`]. Returns the input unchanged (no
/// allocation worth mentioning) when there is nothing to cut.
pub fn credentials_redacted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run_start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if is_token_char(c) || c == ':' && run_start.is_some() {
            run_start.get_or_insert(i);
        } else {
            if let Some(s) = run_start.take() {
                push_run(&mut out, &text[s..i]);
            }
            out.push(c);
        }
    }
    if let Some(s) = run_start {
        push_run(&mut out, &text[s..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_pasted_into_names_are_cut() {
        for (input, want) in [
            (
                "agent `wdn_at_4lhs85nN4f9VKdSOGvMAAUhOJxWzzdFREobqZDM8CL8` not found",
                "agent `[redacted]` not found",
            ),
            (
                "/v1/agents/eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",
                "/v1/agents/[redacted]",
            ),
            ("key AKIAIOSFODNN7EXAMPLE here", "key [redacted] here"),
            (
                "secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY x",
                "secret [redacted] x",
            ),
        ] {
            assert_eq!(credentials_redacted(input), want, "{input}");
        }
    }

    #[test]
    fn ids_names_and_paths_are_kept() {
        for input in [
            "task `6f1c3a52-8d7e-4b0a-9c1d-2e3f4a5b6c7d` not found",
            "agent `billing-bot-production-eu-west-1` not found",
            "spiffe://warden.local/agent/billing-bot-production",
            "/v1/tasks/6f1c3a52-8d7e-4b0a-9c1d-2e3f4a5b6c7d/end",
            "owner alice.smith@example.com is not a human",
            "the request body must be `application/json`",
            "version 909a86360eda84a1f5d4c69fc2df0e975a3729bd0a6a327d3a98ba787ad2bc9e",
        ] {
            assert_eq!(credentials_redacted(input), input);
        }
    }
}
