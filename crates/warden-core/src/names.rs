//! Names that come from users: agent and upstream names (DNS labels), human emails, the SPIFFE trust
//! domain. Each is a newtype whose only constructor validates, so holding one is proof it is well formed.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ValidationError;

/// Longest DNS label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest email address we accept (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest SPIFFE trust domain (SPIFFE ID spec §2.1).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Checks the RFC 1123 label rules: 1 to 63 characters of `a-z`, `0-9` and `-`, starting with a letter
/// (so that a name is never mistaken for a number) and not ending with `-`. Upper case is rejected, not
/// folded: a name is an identifier in SPIFFE IDs and policies, and two spellings of one name would be two
/// identities to a reader of the logs.
fn check_label(value: &str, what: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{what} is {} characters long; the limit is {MAX_LABEL_LEN}",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{what} `{}` contains `{}`; use lowercase letters, digits and `-`",
            value.escape_debug(),
            bad.escape_debug()
        ));
    }
    if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("{what} `{value}` must start with a lowercase letter"));
    }
    if value.ends_with('-') {
        return Err(format!("{what} `{value}` must not end with `-`"));
    }
    Ok(())
}

/// Declares a validated string newtype: serde through `String`, `parse`, `as_str`, `Display`, `Debug`
/// (the quoted value), `FromStr`.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, example = $example:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schema(value_type = String, example = $example)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, ValidationError> {
                let check: fn(&str) -> Result<String, ValidationError> = $check;
                check(value).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}
pub(crate) use checked_string;

/// A DNS-label name (agents, upstreams), reported under the API field `$field`.
macro_rules! label_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $field:literal) => {
        checked_string!(
            $(#[$doc])*
            $name,
            example = "billing-bot",
            |value| {
                check_label(value, $what).map_err(|m| ValidationError::new($field, m))?;
                Ok(value.to_owned())
            }
        );
    };
}

label_newtype!(
    /// An agent's name: a DNS label, unique for the life of the deployment (a retired agent's name is
    /// never given to another agent, so its SPIFFE ID keeps meaning one identity in the ledger).
    AgentName,
    "agent name",
    "name"
);

label_newtype!(
    /// An upstream's name: a DNS label, unique among upstreams; it appears in gateway paths (`/mcp/<name>`).
    UpstreamName,
    "upstream name",
    "name"
);

/// A human's email address, the human's identity in Warden. Stored lowercase: mail systems treat the
/// domain case-insensitively and, in practice, the local part too, and one person must be one identity
/// (separation of duties depends on it).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "alice@example.com")]
pub struct Email(String);

impl Email {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let err = |m: String| ValidationError::new("email", m);
        if value.is_empty() {
            return Err(err("email must not be empty".into()));
        }
        if value.len() > MAX_EMAIL_LEN {
            return Err(err(format!(
                "email is {} characters long; the limit is {MAX_EMAIL_LEN}",
                value.len()
            )));
        }
        let shown = value.escape_debug();
        if value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(err(format!(
                "email `{shown}` contains whitespace, a control or a non-ASCII character"
            )));
        }
        let Some((local, domain)) = value.split_once('@') else {
            return Err(err(format!("email `{shown}` has no `@`")));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(err(format!(
                "email `{shown}` needs a local part of 1 to 64 characters"
            )));
        }
        if domain.contains('@') {
            return Err(err(format!("email `{shown}` has more than one `@`")));
        }
        let labels_ok = !domain.is_empty()
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= MAX_LABEL_LEN
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !labels_ok {
            return Err(err(format!(
                "email `{shown}` has an invalid domain `{}`",
                domain.escape_debug()
            )));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(err(format!(
                "email `{shown}` has a misplaced `.` in its local part"
            )));
        }
        if let Some(c) = local.chars().find(|c| "()<>[]\\,;:\"".contains(*c)) {
            return Err(err(format!("email `{shown}` contains `{c}`")));
        }
        Ok(Self(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> String {
        value.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for Email {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-` and `_` (SPIFFE ID spec §2.1).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let err = |m: String| ValidationError::new("trust_domain", m);
        if value.is_empty() || value.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(err(format!(
                "trust domain must be 1 to {MAX_TRUST_DOMAIN_LEN} characters"
            )));
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(*c)))
        {
            return Err(err(format!(
                "trust domain `{}` contains `{}`; use lowercase letters, digits, `.`, `-` and `_`",
                value.escape_debug(),
                c.escape_debug()
            )));
        }
        if value.starts_with('.') || value.ends_with('.') || value.contains("..") {
            return Err(err(format!("trust domain `{value}` has an empty label")));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of an agent in this trust domain: `spiffe://<trust-domain>/agent/<name>`.
    pub fn agent_spiffe_id(&self, name: &AgentName) -> String {
        format!("spiffe://{}/agent/{}", self.0, name)
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        Self("warden.local".to_owned())
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TrustDomain> for String {
    fn from(value: TrustDomain) -> String {
        value.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_name(input: &str, expect: Result<(), &str>) {
        let got = AgentName::parse(input).map(|_| ()).map_err(|e| e.to_string());
        match (got, expect) {
            (Ok(()), Ok(())) => {}
            (Err(got), Err(want)) => assert!(got.contains(want), "{input:?}: `{got}` lacks `{want}`"),
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn agent_names() {
        check_name("billing-bot", Ok(()));
        check_name("a", Ok(()));
        check_name("a1-b2", Ok(()));
        check_name(&"a".repeat(63), Ok(()));
        check_name("", Err("must not be empty"));
        check_name(&"a".repeat(64), Err("the limit is 63"));
        check_name("Billing", Err("contains `B`"));
        check_name("billing_bot", Err("contains `_`"));
        check_name("billing bot", Err("contains ` `"));
        check_name("bot/../admin", Err("contains `/`"));
        check_name("1bot", Err("must start with a lowercase letter"));
        check_name("-bot", Err("must start with a lowercase letter"));
        check_name("bot-", Err("must not end with `-`"));
        check_name("bøt", Err("contains `ø`"));
        check_name("bot\n", Err("contains `\\n`"));
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse("Alice@Example.COM").map(|e| e.to_string()),
            Ok("alice@example.com".into())
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@@example.com",
            "a@b@c.com",
            "alice@exa mple.com",
            "alice@-example.com",
            "alice@example..com",
            ".alice@example.com",
            "al..ice@example.com",
            "alice<x>@example.com",
            "ålice@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn trust_domain_and_spiffe_id() {
        let td = TrustDomain::parse("prod.example.com").expect("valid");
        let name = AgentName::parse("billing-bot").expect("valid");
        assert_eq!(
            td.agent_spiffe_id(&name),
            "spiffe://prod.example.com/agent/billing-bot"
        );
        assert_eq!(TrustDomain::default().as_str(), "warden.local");
        for bad in ["", "Prod.com", "a..b", ".a", "a/b", "a:80"] {
            assert!(TrustDomain::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_reports_the_problem() {
        let err = serde_json::from_str::<AgentName>("\"Bad\"").expect_err("invalid");
        assert!(err.to_string().contains("contains `B`"), "{err}");
    }

    proptest! {
        #[test]
        fn parsed_names_satisfy_the_rules(s in "\\PC{0,80}") {
            if let Ok(name) = AgentName::parse(&s) {
                prop_assert!(name.as_str().len() <= 63);
                prop_assert!(name.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert!(!name.as_str().ends_with('-'));
            }
        }

        #[test]
        fn valid_names_round_trip(s in "[a-z][a-z0-9-]{0,61}[a-z0-9]") {
            let name = AgentName::parse(&s).expect("generated names are valid");
            let json = serde_json::to_string(&name).expect("serializes");
            let back: AgentName = serde_json::from_str(&json).expect("deserializes");
            prop_assert_eq!(back, name);
        }

        #[test]
        fn email_parse_never_panics_and_normalizes(s in "\\PC{0,300}") {
            if let Ok(e) = Email::parse(&s) {
                prop_assert_eq!(e.as_str(), s.to_ascii_lowercase());
                prop_assert!(e.as_str().len() <= MAX_EMAIL_LEN);
            }
        }
    }
}
