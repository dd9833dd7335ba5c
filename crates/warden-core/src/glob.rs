//! URI glob patterns, as a task declares the MCP resources it needs (`file:///tmp/*`,
//! `ui://widgets/*`, `*`): `*` matches any run of characters (none included, `/` included); every
//! other character matches itself. There is no escape: a pattern cannot match a literal `*` other
//! than through `*`.
//!
//! One function shared by the policy engine (an MCP resource's `declared` attribute) and task
//! delegation (a child's patterns must lie within the parent's), so both agree. It never builds a
//! regular expression and runs in time linear in the pattern and the text: the pattern's literal
//! pieces between stars are found left to right, each at its leftmost occurrence (leftmost is
//! always a safe choice, since a later star can absorb whatever an earlier choice skipped), with
//! `str::find`'s linear-time substring search.

/// Whether `text` matches the glob `pattern` (`*` matches any run of characters).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let Some((head, tail)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(head) else {
        return false;
    };
    // `tail` is what follows the first star: pieces separated by stars, the last one anchored at
    // the end of the text.
    let (middle, last) = tail.rsplit_once('*').unwrap_or(("", tail));
    for piece in middle.split('*').filter(|p| !p.is_empty()) {
        match rest.find(piece) {
            Some(at) => rest = rest.get(at + piece.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        for (pattern, text, want) in [
            ("*", "", true),
            ("*", "file:///etc/shadow", true),
            ("file:///tmp/*", "file:///tmp/a/b.txt", true),
            ("file:///tmp/*", "file:///tmp/", true),
            ("file:///tmp/*", "file:///tmp", false),
            ("file:///tmp/*", "file:///etc/shadow", false),
            ("ui://widgets/*", "ui://widgets/clock", true),
            ("file:///a.txt", "file:///a.txt", true),
            ("file:///a.txt", "file:///a.txt2", false),
            ("", "", true),
            ("", "x", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("*.md", "notes.md", true),
            ("*.md", "notes.md.txt", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyybzc", true),
            ("a*b*c", "acb", false),
            ("**", "anything", true),
            ("a**b", "ab", true),
            ("é*ü", "éaü", true),
            ("*ab*ab*", "xabyab", true),
            ("*ab*ab*", "xaby", false),
            ("*aab", "aaab", true),
        ] {
            assert_eq!(glob_matches(pattern, text), want, "`{pattern}` on `{text}`");
        }
    }

    #[test]
    fn long_inputs_stay_fast() {
        // Many stars and a long text that almost matches: still linear.
        let pattern = format!("{}b", "*a".repeat(250));
        let text = "a".repeat(64 * 1024);
        let started = std::time::Instant::now();
        assert!(!glob_matches(&pattern, &text));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    /// The textbook definition, by recursion over both strings (exponential in the worst case;
    /// fine for the short strings of the property test).
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_definition(pattern in "[ab*é/]{0,8}", text in "[abé/]{0,12}") {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = text.chars().collect();
            prop_assert_eq!(glob_matches(&pattern, &text), reference(&p, &t));
        }

        #[test]
        fn a_pattern_without_stars_matches_itself_only(text in "\\PC{0,20}", other in "\\PC{0,20}") {
            let lit = text.replace('*', "");
            prop_assert!(glob_matches(&lit, &lit));
            prop_assert_eq!(glob_matches(&lit, &other), lit == other);
            prop_assert!(glob_matches("*", &other));
        }
    }
}
