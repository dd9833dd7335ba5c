//! The MCP gateway's domain types: tool classes and states (the tool catalogue), and the names and
//! injection targets of upstream secrets (the credential broker).
//!
//! A tool's class comes from its MCP annotations (`readOnlyHint`, `destructiveHint`) unless an admin
//! overrides it; its state says whether agents may see and call it. A tool whose definition changed
//! since it was approved is `quarantined` until an admin approves the new definition.
//!
//! An upstream secret is injected into requests to its upstream, either as an HTTP header (for
//! streamable-HTTP servers) or as an environment variable (for stdio servers Warden spawns). The
//! header names that would let a secret break the gateway's own framing or session handling
//! (`host`, `content-length`, `mcp-session-id`, …) are refused.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ValidationError;
use crate::model::wire_enum;
use crate::names::checked_string;

wire_enum!(
    /// What calling a tool can do, as policies see it (the Cedar actions of the same names).
    ToolClass, "tool class" {
        /// Reads only (MCP `readOnlyHint: true`).
        Read = "read",
        /// Changes something, additively (the MCP default, or `destructiveHint: false`).
        Write = "write",
        /// May destroy or overwrite (MCP `destructiveHint: true`, the default for a non-read-only tool).
        Destructive = "destructive",
        /// Administers the upstream itself; only an admin's classification says so.
        Admin = "admin",
    }
);

wire_enum!(
    /// Whether a catalogued tool may be listed and called.
    ToolState, "tool state" {
        /// Its current definition is the approved one (or was trusted on first use).
        Active = "active",
        /// Hidden and denied: its definition is new or changed and waits for an admin's approval.
        Quarantined = "quarantined",
    }
);

wire_enum!(
    /// Why a catalogued tool is quarantined.
    QuarantineCause, "quarantine cause" {
        /// A new tool, held because `[gateway] new_tools` holds every new tool for an admin.
        FirstSeen = "first_seen",
        /// Its definition differs from the approved one.
        DefinitionChanged = "definition_changed",
        /// A new name with the definition of a catalogued tool (`resembles`): a rename, or a copy.
        Renamed = "renamed",
        /// A new tool whose description is (nearly) an approved tool's (`resembles`).
        Shadows = "shadows",
    }
);

impl QuarantineCause {
    /// The reason as `warden tool show`, the gateway's denial and the ledger say it; `resembles`
    /// is the tool a rename or a shadow resembles.
    pub fn reason(self, resembles: Option<&str>) -> String {
        let other = resembles.unwrap_or("?");
        match self {
            QuarantineCause::FirstSeen => "first seen; new tools wait for an admin's approval".into(),
            QuarantineCause::DefinitionChanged => "its definition changed".into(),
            QuarantineCause::Renamed => format!("renamed from `{other}` (its definition under a new name)"),
            QuarantineCause::Shadows => format!("shadows `{other}` (its description under a new name)"),
        }
    }
}

/// Longest tool name we catalogue. The MCP specification (2025-11-25) asks servers for 1 to 128
/// characters; the gateway hides tools whose names break these rules instead of cataloguing them.
pub const MAX_TOOL_NAME_LEN: usize = 128;
/// Longest definition digest we store (`sha256:` and 64 hex digits fit with room to spare).
pub const MAX_DIGEST_LEN: usize = 128;

/// Checks a tool name an upstream reported: 1 to [`MAX_TOOL_NAME_LEN`] bytes, no whitespace or control
/// characters (they would forge log lines and make two names look alike).
pub fn check_tool_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let err = |m: String| ValidationError::new(field, m);
    if name.is_empty() {
        return Err(err("tool name must not be empty".into()));
    }
    if name.len() > MAX_TOOL_NAME_LEN {
        return Err(err(format!(
            "tool name is {} bytes long; the limit is {MAX_TOOL_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(format!(
            "tool name `{}` contains `{}`; whitespace and control characters are not allowed",
            name.escape_debug(),
            c.escape_debug()
        )));
    }
    Ok(())
}

/// Checks a definition digest: 1 to [`MAX_DIGEST_LEN`] visible ASCII characters (e.g.
/// `sha256:9f86d0…`). The store compares digests as strings; it never computes them.
pub fn check_digest(field: &str, digest: &str) -> Result<(), ValidationError> {
    let err = |m: String| ValidationError::new(field, m);
    if digest.is_empty() {
        return Err(err("digest must not be empty".into()));
    }
    if digest.len() > MAX_DIGEST_LEN {
        return Err(err(format!(
            "digest is {} bytes long; the limit is {MAX_DIGEST_LEN}",
            digest.len()
        )));
    }
    if let Some(c) = digest.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(err(format!(
            "digest contains `{}`; use visible ASCII characters",
            c.escape_debug()
        )));
    }
    Ok(())
}

/// Longest secret name.
pub const MAX_SECRET_NAME_LEN: usize = 64;
/// Longest header name a secret may be injected as.
pub const MAX_HEADER_NAME_LEN: usize = 128;
/// Longest header value prefix (`Bearer `, `Token `, …).
pub const MAX_HEADER_PREFIX_LEN: usize = 64;
/// Longest environment variable name a secret may be injected as.
pub const MAX_ENV_VAR_LEN: usize = 128;

/// Headers a secret may never be injected as: they frame the message or carry the connection
/// (RFC 9110 §7.6.1 hop-by-hop headers, `host`, `content-length`, `trailer`), or they carry the MCP
/// session the gateway itself manages.
pub const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "mcp-session-id",
    "mcp-protocol-version",
];

fn check_secret_name(value: &str) -> Result<String, ValidationError> {
    let err = |m: String| ValidationError::new("name", m);
    if value.is_empty() {
        return Err(err("secret name must not be empty".into()));
    }
    if value.len() > MAX_SECRET_NAME_LEN {
        return Err(err(format!(
            "secret name is {} characters long; the limit is {MAX_SECRET_NAME_LEN}",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(*c)))
    {
        return Err(err(format!(
            "secret name `{}` contains `{}`; use lowercase letters, digits, `.`, `_` and `-`",
            value.escape_debug(),
            c.escape_debug()
        )));
    }
    if !value.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(err(format!(
            "secret name `{value}` must start with a lowercase letter or a digit"
        )));
    }
    Ok(value.to_owned())
}

/// An RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn check_header_name(value: &str) -> Result<String, ValidationError> {
    let err = |m: String| ValidationError::new("header", m);
    if value.is_empty() {
        return Err(err("header name must not be empty".into()));
    }
    if value.len() > MAX_HEADER_NAME_LEN {
        return Err(err(format!(
            "header name is {} characters long; the limit is {MAX_HEADER_NAME_LEN}",
            value.len()
        )));
    }
    if let Some(c) = value.chars().find(|c| !is_tchar(*c)) {
        return Err(err(format!(
            "header name `{}` contains `{}`; a header name is an HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
            value.escape_debug(),
            c.escape_debug()
        )));
    }
    // Header names are case-insensitive: stored lowercase, so `Host` is `host` and two spellings of
    // one header are one header.
    let lower = value.to_ascii_lowercase();
    if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
        return Err(err(format!(
            "header `{lower}` frames the request or carries the connection or MCP session; a secret cannot be injected as it"
        )));
    }
    Ok(lower)
}

fn check_header_prefix(value: &str) -> Result<String, ValidationError> {
    let err = |m: String| ValidationError::new("prefix", m);
    if value.len() > MAX_HEADER_PREFIX_LEN {
        return Err(err(format!(
            "prefix is {} characters long; the limit is {MAX_HEADER_PREFIX_LEN}",
            value.len()
        )));
    }
    if let Some(c) = value.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(err(format!(
            "prefix contains `{}`; use printable ASCII characters",
            c.escape_debug()
        )));
    }
    Ok(value.to_owned())
}

fn check_env_var(value: &str) -> Result<String, ValidationError> {
    let err = |m: String| ValidationError::new("var", m);
    if value.is_empty() {
        return Err(err("environment variable name must not be empty".into()));
    }
    if value.len() > MAX_ENV_VAR_LEN {
        return Err(err(format!(
            "environment variable name is {} characters long; the limit is {MAX_ENV_VAR_LEN}",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(err(format!(
            "environment variable `{}` contains `{}`; use uppercase letters, digits and `_`",
            value.escape_debug(),
            c.escape_debug()
        )));
    }
    if value.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(err(format!(
            "environment variable `{value}` must start with an uppercase letter or `_`"
        )));
    }
    // A secret in these would change which program or library the spawned server runs.
    if value == "PATH" || value.starts_with("LD_") || value.starts_with("DYLD_") {
        return Err(err(format!(
            "environment variable `{value}` controls how the server program is loaded; a secret cannot be injected as it"
        )));
    }
    Ok(value.to_owned())
}

/// Environment variables that make a program load, run or fetch code other than its own — or
/// change which program runs: a secret injected as one of them is code execution on the Warden host
/// for whoever holds an admin token (`NODE_OPTIONS=--require /tmp/x.js`). Exact names.
pub const CODE_LOADING_ENV: &[&str] = &[
    // The process itself, the shell and the user's configuration.
    "PATH",
    "HOME",
    "USERPROFILE",
    "SHELL",
    "ENV",
    "BASH_ENV",
    "ZDOTDIR",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "IFS",
    "CDPATH",
    "COMSPEC",
    "PATHEXT",
    // glibc: modules and tunables the loader or iconv read.
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    // Programs other programs run.
    "EDITOR",
    "VISUAL",
    "PAGER",
    "BROWSER",
    "LESSOPEN",
    "LESSCLOSE",
    "MANPAGER",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    // Java, Go, PHP, Tcl, R, build tools.
    "CLASSPATH",
    "GOFLAGS",
    "GOPATH",
    "GOROOT",
    "GOPROXY",
    "GOTOOLCHAIN",
    "GOENV",
    "GOINSECURE",
    "GONOSUMDB",
    "GONOSUMCHECK",
    "GOSUMDB",
    "GOEXPERIMENT",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "TCLLIBPATH",
    "CC",
    "CXX",
    "CPP",
    "LD",
    "AR",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "VIRTUAL_ENV",
    "GEM_HOME",
    "GEM_PATH",
    "GTK_MODULES",
    "GTK_PATH",
    "QT_PLUGIN_PATH",
    "GIO_EXTRA_MODULES",
    "GST_PLUGIN_PATH",
    "SASL_PATH",
    "PKG_CONFIG_PATH",
];

/// Prefixes of environment variables that load code (see [`CODE_LOADING_ENV`]): the dynamic
/// loaders, shells' exported functions, and interpreters' and package managers' settings.
pub const CODE_LOADING_ENV_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "BASH_",
    "NODE_",
    "NPM_CONFIG_",
    "YARN_",
    "COREPACK_",
    "TS_NODE_",
    "DENO_",
    "BUN_",
    "ELECTRON_",
    "PYTHON",
    "PIP_",
    "UV_",
    "CONDA_",
    "PERL",
    "RUBY",
    "BUNDLE_",
    "JAVA_",
    "_JAVA_",
    "JDK_",
    "DOTNET_",
    "CORECLR_",
    "COR_",
    "COMPLUS_",
    "LUA_",
    "R_PROFILE",
    "R_ENVIRON",
    "R_LIBS",
    "ERL_",
    "GIT_",
    "OPENSSL_",
    "CARGO_",
    "RUSTUP_",
    "XDG_",
];

/// Suffixes of environment variables that pass options to an interpreter or a tool's runtime
/// (`MAVEN_OPTS`, `GRADLE_OPTS`, `SBT_OPTS`, …).
pub const CODE_LOADING_ENV_SUFFIXES: &[&str] = &["_OPTS", "_OPTIONS"];

/// Whether a secret injected as environment variable `name` could make a stdio server load or
/// run code of the secret's choosing (see [`CODE_LOADING_ENV`]). Such a name reaches a server only
/// when its `[[gateway.stdio]]` entry lists it in `allow_code_loading_env`.
pub fn env_var_loads_code(name: &str) -> bool {
    CODE_LOADING_ENV.contains(&name)
        || CODE_LOADING_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
        || CODE_LOADING_ENV_SUFFIXES.iter().any(|s| name.ends_with(s))
}

checked_string!(
    /// The name of an upstream secret: 1 to 64 characters of `[a-z0-9._-]`, starting with a letter or a
    /// digit. Unique across upstreams.
    SecretName,
    example = "crm-api-key",
    check_secret_name
);

checked_string!(
    /// The HTTP header a secret is injected as: an RFC 9110 token, stored lowercase, never one of
    /// [`FORBIDDEN_HEADERS`].
    SecretHeaderName,
    example = "authorization",
    check_header_name
);

checked_string!(
    /// What precedes the secret in the header value (`Bearer `): at most 64 printable ASCII
    /// characters, possibly none (the default).
    #[derive(Default)]
    SecretHeaderPrefix,
    example = "Bearer ",
    check_header_prefix
);

checked_string!(
    /// The environment variable a secret is injected as, for stdio servers: `[A-Z_][A-Z0-9_]*`, never
    /// `PATH`, `LD_*` or `DYLD_*`.
    SecretEnvVar,
    example = "CRM_API_KEY",
    check_env_var
);

/// How a secret reaches its upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Injection {
    /// As an HTTP header on every request to a streamable-HTTP upstream: `<name>: <prefix><secret>`.
    Header {
        name: SecretHeaderName,
        #[serde(default)]
        prefix: SecretHeaderPrefix,
    },
    /// As an environment variable of a stdio server Warden spawns.
    Env { var: SecretEnvVar },
}

impl Injection {
    /// `header` or `env`: the stored kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Injection::Header { .. } => "header",
            Injection::Env { .. } => "env",
        }
    }

    /// Where the secret goes, for messages: `header `authorization`` or `environment variable `X``.
    pub fn target(&self) -> String {
        match self {
            Injection::Header { name, .. } => format!("header `{name}`"),
            Injection::Env { var } => format!("environment variable `{var}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_states() {
        for c in ToolClass::ALL {
            assert_eq!(c.as_str().parse::<ToolClass>(), Ok(*c));
        }
        assert_eq!(
            "delete".parse::<ToolClass>().expect_err("unknown").to_string(),
            "tool class: unknown tool class `delete`; expected one of `read`, `write`, `destructive`, `admin`"
        );
        assert_eq!(
            serde_json::to_string(&ToolState::Quarantined).expect("ser"),
            "\"quarantined\""
        );
        assert!("paused".parse::<ToolState>().is_err());
    }

    #[test]
    fn tool_names_and_digests() {
        assert!(check_tool_name("name", "get_weather").is_ok());
        assert!(check_tool_name("name", "files.read-v2").is_ok());
        assert!(check_tool_name("name", &"t".repeat(128)).is_ok());
        for (bad, want) in [
            ("", "must not be empty"),
            ("two words", "contains ` `"),
            ("tab\t", "contains `\\t`"),
        ] {
            let e = check_tool_name("seen[0].name", bad).expect_err(bad);
            assert_eq!(e.field, "seen[0].name");
            assert!(e.message.contains(want), "{bad:?}: {e}");
        }
        assert!(
            check_tool_name("name", &"t".repeat(129))
                .expect_err("long")
                .message
                .contains("the limit is 128")
        );
        assert!(check_digest("digest", "sha256:abc").is_ok());
        assert!(check_digest("digest", "").is_err());
        assert!(check_digest("digest", "sha256 abc").is_err());
        assert!(check_digest("digest", &"a".repeat(129)).is_err());
    }

    #[test]
    fn secret_names() {
        for ok in ["crm-api-key", "a", "0day", "svc.token_2", &"a".repeat(64)] {
            assert!(SecretName::parse(ok).is_ok(), "{ok:?} refused");
        }
        for (bad, want) in [
            ("", "must not be empty"),
            ("Crm", "contains `C`"),
            ("crm key", "contains ` `"),
            ("crm/key", "contains `/`"),
            ("-crm", "must start with a lowercase letter or a digit"),
            (".crm", "must start with"),
            ("_crm", "must start with"),
        ] {
            let e = SecretName::parse(bad).expect_err(bad);
            assert_eq!(e.field, "name");
            assert!(e.message.contains(want), "{bad:?}: {e}");
        }
        assert!(
            SecretName::parse(&"a".repeat(65))
                .expect_err("long")
                .message
                .contains("the limit is 64")
        );
    }

    #[test]
    fn header_names_are_tokens_and_never_framing_headers() {
        assert_eq!(
            SecretHeaderName::parse("X-Api-Key").expect("valid").as_str(),
            "x-api-key"
        );
        assert!(SecretHeaderName::parse("Authorization").is_ok());
        for bad in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "connection",
            "TE",
            "upgrade",
            "Mcp-Session-Id",
            "mcp-protocol-version",
            "keep-alive",
        ] {
            let e = SecretHeaderName::parse(bad).expect_err(bad);
            assert_eq!(e.field, "header");
            assert!(e.message.contains("cannot be injected"), "{bad}: {e}");
        }
        for (bad, want) in [
            ("", "must not be empty"),
            ("x api", "contains ` `"),
            ("x:api", "contains `:`"),
            ("x\napi", "contains `\\n`"),
            ("clé", "contains `é`"),
        ] {
            let e = SecretHeaderName::parse(bad).expect_err(bad);
            assert!(e.message.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn prefixes_and_env_vars() {
        assert_eq!(
            SecretHeaderPrefix::parse("Bearer ").expect("valid").as_str(),
            "Bearer "
        );
        assert_eq!(SecretHeaderPrefix::default().as_str(), "");
        assert!(SecretHeaderPrefix::parse(&"p".repeat(64)).is_ok());
        let e = SecretHeaderPrefix::parse(&"p".repeat(65)).expect_err("long");
        assert_eq!(e.field, "prefix");
        assert!(SecretHeaderPrefix::parse("Bearer\r\n").is_err());
        assert!(SecretHeaderPrefix::parse("Bearer\u{e9}").is_err());

        for ok in ["CRM_API_KEY", "_X", "A1"] {
            assert!(SecretEnvVar::parse(ok).is_ok(), "{ok} refused");
        }
        for (bad, want) in [
            ("", "must not be empty"),
            ("crm_key", "contains `c`"),
            ("1KEY", "must start with"),
            ("A-B", "contains `-`"),
            ("PATH", "how the server program is loaded"),
            ("LD_PRELOAD", "how the server program is loaded"),
            ("DYLD_INSERT_LIBRARIES", "how the server program is loaded"),
        ] {
            let e = SecretEnvVar::parse(bad).expect_err(bad);
            assert_eq!(e.field, "var");
            assert!(e.message.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn code_loading_env_vars() {
        for bad in [
            "NODE_OPTIONS",
            "NODE_PATH",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PYTHONHOME",
            "PERL5LIB",
            "PERL5OPT",
            "RUBYOPT",
            "RUBYLIB",
            "JAVA_TOOL_OPTIONS",
            "_JAVA_OPTIONS",
            "JDK_JAVA_OPTIONS",
            "LD_PRELOAD",
            "DYLD_INSERT_LIBRARIES",
            "BASH_ENV",
            "ENV",
            "PATH",
            "HOME",
            "GCONV_PATH",
            "GIT_SSH_COMMAND",
            "MAVEN_OPTS",
            "OPENSSL_CONF",
            "DOTNET_STARTUP_HOOKS",
            "LUA_INIT",
            "XDG_CONFIG_HOME",
            "NPM_CONFIG_NODE_OPTIONS",
            "GLIBC_TUNABLES",
            "LESSOPEN",
        ] {
            assert!(env_var_loads_code(bad), "{bad} is not flagged");
        }
        for ok in [
            "API_TOKEN",
            "CRM_API_KEY",
            "GITHUB_TOKEN",
            "GOOGLE_API_KEY",
            "OPENAI_API_KEY",
            "LANG",
        ] {
            assert!(!env_var_loads_code(ok), "{ok} is flagged");
        }
    }

    #[test]
    fn injection_wire_format() {
        let h: Injection =
            serde_json::from_str(r#"{"kind":"header","name":"Authorization","prefix":"Bearer "}"#)
                .expect("header");
        assert_eq!(
            h,
            Injection::Header {
                name: SecretHeaderName::parse("authorization").expect("valid"),
                prefix: SecretHeaderPrefix::parse("Bearer ").expect("valid"),
            }
        );
        assert_eq!(h.kind(), "header");
        assert_eq!(h.target(), "header `authorization`");
        let h: Injection =
            serde_json::from_str(r#"{"kind":"header","name":"x-api-key"}"#).expect("no prefix");
        assert!(matches!(h, Injection::Header { prefix, .. } if prefix.as_str().is_empty()));
        let e: Injection = serde_json::from_str(r#"{"kind":"env","var":"CRM_KEY"}"#).expect("env");
        assert_eq!(e.kind(), "env");
        assert_eq!(
            serde_json::to_value(&e).expect("ser"),
            serde_json::json!({"kind": "env", "var": "CRM_KEY"})
        );
        for (bad, want) in [
            (r#"{"kind":"header","name":"host"}"#, "cannot be injected"),
            (r#"{"kind":"env","var":"lower"}"#, "contains `l`"),
            (r#"{"kind":"env","var":"X","name":"y"}"#, "unknown field"),
            (r#"{"kind":"file","path":"/x"}"#, "unknown variant"),
        ] {
            let err = serde_json::from_str::<Injection>(bad).expect_err(bad).to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
