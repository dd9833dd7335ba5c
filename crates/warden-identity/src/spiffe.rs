//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`), parsed by the rules of the SPIFFE ID specification
//! §2: agents' assertions name themselves by SPIFFE ID, and a JWT-SVID from a federated trust domain is
//! accepted only when its `sub` is a SPIFFE ID in that domain. Parsing is strict on purpose — two
//! spellings of one ID (case, `..`, a trailing `/`) would be two identities to a reader of the ledger.

use std::fmt;

use warden_core::{AgentName, TrustDomain, ValidationError};

/// Longest SPIFFE ID (SPIFFE ID spec §2.3: 2048 bytes).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

const SCHEME: &str = "spiffe://";

/// A well-formed SPIFFE ID.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    id: String,
    /// Byte length of the trust domain, which starts right after the scheme.
    trust_domain_len: usize,
}

impl SpiffeId {
    /// Parses a SPIFFE ID: scheme `spiffe://` (lowercase), a trust domain of `a-z 0-9 . - _`, and an
    /// optional path of non-empty segments of `A-Z a-z 0-9 . - _` that are not `.` or `..`, without a
    /// trailing `/`; no port, user info, query or fragment.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let err = |m: String| ValidationError::new("spiffe_id", m);
        let shown = || crate::jws::shorten(value);
        if value.len() > MAX_SPIFFE_ID_LEN {
            return Err(err(format!(
                "SPIFFE ID is {} bytes long; the limit is {MAX_SPIFFE_ID_LEN}",
                value.len()
            )));
        }
        let Some(rest) = value.strip_prefix(SCHEME) else {
            return Err(err(format!(
                "`{}` is not a SPIFFE ID: it must start with `{SCHEME}`",
                shown()
            )));
        };
        let (domain, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        TrustDomain::parse(domain).map_err(|e| {
            err(format!(
                "`{}` has an invalid trust domain: {}",
                shown(),
                e.message
            ))
        })?;
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return Err(err(format!("`{}` has an empty path segment", shown())));
                }
                if segment == "." || segment == ".." {
                    return Err(err(format!("`{}` has a `.` or `..` path segment", shown())));
                }
                if let Some(c) = segment
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || ".-_".contains(*c)))
                {
                    return Err(err(format!(
                        "`{}` contains `{}` in its path; use letters, digits, `.`, `-` and `_`",
                        shown(),
                        c.escape_debug()
                    )));
                }
            }
        }
        Ok(Self {
            id: value.to_owned(),
            trust_domain_len: domain.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain, e.g. `prod.example.com`.
    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME.len()..SCHEME.len() + self.trust_domain_len]
    }

    /// The path, e.g. `/agent/billing-bot`; empty for the ID of a trust domain itself.
    pub fn path(&self) -> &str {
        &self.id[SCHEME.len() + self.trust_domain_len..]
    }

    /// The agent name, if this is a Warden agent's ID (`spiffe://<td>/agent/<name>`, see
    /// `TrustDomain::agent_spiffe_id`) with a valid name.
    pub fn agent_name(&self) -> Option<AgentName> {
        AgentName::parse(self.path().strip_prefix("/agent/")?).ok()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.id, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        let id = SpiffeId::parse("spiffe://prod.example.com/agent/billing-bot").expect("valid");
        assert_eq!(id.trust_domain(), "prod.example.com");
        assert_eq!(id.path(), "/agent/billing-bot");
        assert_eq!(id.agent_name().map(|n| n.to_string()), Some("billing-bot".into()));
        let id = SpiffeId::parse("spiffe://td").expect("valid");
        assert_eq!((id.trust_domain(), id.path(), id.agent_name()), ("td", "", None));
        let id = SpiffeId::parse("spiffe://td/ns/Default/sa/A_b.c-d").expect("valid");
        assert_eq!(id.agent_name(), None);
        assert_eq!(
            SpiffeId::parse("spiffe://td/agent/Bad")
                .expect("valid")
                .agent_name(),
            None
        );
    }

    #[test]
    fn invalid_ids() {
        for bad in [
            "",
            "spiffe:/td/x",
            "SPIFFE://td/x",
            "https://td/x",
            "spiffe://",
            "spiffe:///x",
            "spiffe://TD/x",
            "spiffe://td:443/x",
            "spiffe://user@td/x",
            "spiffe://td/",
            "spiffe://td//x",
            "spiffe://td/x/",
            "spiffe://td/./x",
            "spiffe://td/x/..",
            "spiffe://td/x?y",
            "spiffe://td/x#y",
            "spiffe://td/x%20y",
            "spiffe://td/x y",
            "spiffe://td/é",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        assert!(SpiffeId::parse(&long).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_parts_add_up(s in "(spiffe://)?\\PC{0,60}") {
            if let Ok(id) = SpiffeId::parse(&s) {
                proptest::prop_assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), s);
            }
        }
    }
}
