//! The gateway's key and the upstream credentials it injects.
//!
//! One 32-byte key per deployment (`gateway.key_file`, default `<data dir>/gateway.key`, created 0600
//! on first start; or `WARDEN_GATEWAY_KEY`, hex or base64) seals two things with XChaCha20-Poly1305:
//! upstream credentials at rest (the database holds only ciphertext; the key never enters it) and
//! Warden's MCP session ids. Every node of a deployment needs the same key.
//!
//! Opened credentials are cached per upstream for a few seconds (and dropped at once when a secret
//! of that upstream changes) as ready-made header values marked sensitive, so they never appear in
//! `Debug` output or logs. Anything an upstream sends back is scrubbed of its own credentials
//! ([`Credentials::scrub`]) before an agent sees it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::http::{HeaderName, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use uuid::Uuid;
use warden_core::{Injection, UpstreamName};
use warden_gateway::secretbox::{Sealed, SealingKey};
use warden_store::Store;

use super::upstream::UpstreamError;

/// How long opened credentials are reused before the store is asked again.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Associated data of sealed session ids.
const SESSION_AAD: &[u8] = b"warden mcp session v1";
/// Prefix of Warden's session ids.
const SESSION_PREFIX: &str = "wdn1.";

/// The deployment's gateway key.
pub struct GatewayKeys {
    key: SealingKey,
}

impl std::fmt::Debug for GatewayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayKeys")
            .field("key_id", &self.key.key_id())
            .finish()
    }
}

/// What a secret's ciphertext is bound to: its name and upstream (a row copied onto another secret
/// does not open).
pub fn secret_aad(name: &str, upstream: &str) -> Vec<u8> {
    format!("warden upstream secret v1\n{name}\n{upstream}").into_bytes()
}

impl GatewayKeys {
    /// A fresh random key (tests, and states built without a data directory).
    pub fn generate() -> Self {
        Self {
            key: SealingKey::generate(),
        }
    }

    /// From `WARDEN_GATEWAY_KEY` when set, else the key file, created (0600, never overwritten) when
    /// missing.
    pub fn load(env: Option<&str>, file: &Path) -> anyhow::Result<Self> {
        if let Some(v) = env.filter(|v| !v.trim().is_empty()) {
            let key = SealingKey::from_file_bytes(v.trim().as_bytes())
                .context("WARDEN_GATEWAY_KEY is not a 32-byte key (64 hex characters or base64)")?;
            return Ok(Self { key });
        }
        match std::fs::read(file) {
            Ok(bytes) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    let mode = std::fs::metadata(file)?.permissions().mode();
                    if mode & 0o077 != 0 {
                        anyhow::bail!(
                            "gateway key file {} is readable by group or others (mode {:o}); chmod 600 it",
                            file.display(),
                            mode & 0o777
                        );
                    }
                }
                let key = SealingKey::from_file_bytes(&bytes)
                    .with_context(|| format!("gateway key file {} holds no valid key", file.display()))?;
                Ok(Self { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let key = SealingKey::generate();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(file)
                    .with_context(|| format!("cannot create gateway key file {}", file.display()))?;
                f.write_all(key.to_file_contents().as_bytes())
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("cannot write gateway key file {}", file.display()))?;
                tracing::info!(file = %file.display(), key_id = %key.key_id(), "created the gateway key (seals upstream secrets and MCP sessions; every node needs it)");
                Ok(Self { key })
            }
            Err(e) => Err(e).with_context(|| format!("cannot read gateway key file {}", file.display())),
        }
    }

    pub fn key_id(&self) -> &str {
        self.key.key_id()
    }

    /// Seals a secret's value for the store.
    pub fn seal_secret(&self, name: &str, upstream: &str, value: &[u8]) -> anyhow::Result<Sealed> {
        Ok(self.key.seal(value, &secret_aad(name, upstream))?)
    }

    /// Warden's session id for an upstream session of `task` at `upstream`.
    pub fn seal_session(&self, upstream_session: &str, task: Uuid, upstream: &str) -> String {
        let plain = serde_json::json!({ "s": upstream_session, "t": task, "u": upstream }).to_string();
        // Sealing fails only past XChaCha20-Poly1305's 256 GiB message limit.
        let Ok(sealed) = self.key.seal(plain.as_bytes(), SESSION_AAD) else {
            return String::new();
        };
        format!(
            "{SESSION_PREFIX}{}.{}",
            B64.encode(&sealed.nonce),
            B64.encode(&sealed.ciphertext)
        )
    }

    /// The upstream session behind `raw`, if `raw` is Warden's, unaltered, and for this task and
    /// upstream.
    pub fn open_session(&self, raw: &str, task: Uuid, upstream: &str) -> Option<String> {
        if raw.len() > 2048 {
            return None;
        }
        let rest = raw.strip_prefix(SESSION_PREFIX)?;
        let (nonce, ct) = rest.split_once('.')?;
        let sealed = Sealed {
            key_id: self.key.key_id().to_owned(),
            nonce: B64.decode(nonce).ok()?,
            ciphertext: B64.decode(ct).ok()?,
        };
        let plain = self.key.open(&sealed, SESSION_AAD).ok()?;
        let v: serde_json::Value = serde_json::from_slice(plain.expose()).ok()?;
        let same_task = v["t"].as_str() == Some(task.to_string().as_str());
        let same_upstream = v["u"].as_str() == Some(upstream);
        if same_task && same_upstream {
            v["s"].as_str().map(str::to_owned)
        } else {
            None
        }
    }

    /// Opens a stored secret (bound to its name and upstream).
    pub fn open_secret(&self, s: &warden_store::SealedSecret) -> Result<Vec<u8>, String> {
        let sealed = Sealed {
            key_id: s.key_id.clone(),
            nonce: s.nonce.clone(),
            ciphertext: s.ciphertext.clone(),
        };
        self.key
            .open(&sealed, &secret_aad(s.name.as_str(), s.upstream.as_str()))
            .map(|p| p.expose().to_vec())
            .map_err(|e| e.to_string())
    }
}

/// The opened credentials of one upstream.
#[derive(Default)]
pub struct Injected {
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The values as they may appear in an answer (raw, and JSON-escaped when that differs), for
    /// scrubbing.
    values: Vec<CredentialForm>,
}

impl std::fmt::Debug for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injected")
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Injected {
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }
}

/// Opened credentials per upstream, briefly cached.
#[derive(Debug)]
pub struct Credentials {
    keys: Arc<GatewayKeys>,
    cache: RwLock<HashMap<String, (Instant, Arc<Injected>)>>,
    /// Values this node injected that are no longer an upstream's current credentials (rotated or
    /// deleted), still scrubbed for [`RETIRED_TTL`]: an answer or an open event stream may echo the
    /// old value after the rotation.
    retired: RwLock<HashMap<String, Vec<Retired>>>,
}

/// A value no longer injected, and since when.
type Retired = (Instant, CredentialForm);

/// How long a rotated-out credential value is still scrubbed from answers.
pub const RETIRED_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most retired values kept per upstream (the oldest go first).
const MAX_RETIRED: usize = 64;

impl Credentials {
    pub fn new(keys: Arc<GatewayKeys>) -> Self {
        Self {
            keys,
            cache: RwLock::new(HashMap::new()),
            retired: RwLock::new(HashMap::new()),
        }
    }

    /// Drops an upstream's cached credentials (a secret changed). Their values stay scrubbed for
    /// [`RETIRED_TTL`].
    pub fn invalidate(&self, upstream: &str) {
        let old = self.cache.write().ok().and_then(|mut c| c.remove(upstream));
        if let Some((_, old)) = old {
            self.retire(upstream, &old.values);
        }
    }

    /// Drops every cached credential (their values stay scrubbed, as for [`Credentials::invalidate`]).
    pub fn invalidate_all(&self) {
        let old: Vec<_> = self
            .cache
            .write()
            .map(|mut c| c.drain().collect())
            .unwrap_or_default();
        for (upstream, (_, injected)) in old {
            self.retire(&upstream, &injected.values);
        }
    }

    /// Keeps `values` to scrub from `upstream`'s answers after they stop being injected.
    fn retire(&self, upstream: &str, values: &[CredentialForm]) {
        if values.is_empty() {
            return;
        }
        let Ok(mut r) = self.retired.write() else { return };
        let list = r.entry(upstream.to_owned()).or_default();
        let now = Instant::now();
        list.retain(|(at, v)| at.elapsed() < RETIRED_TTL && !values.contains(v));
        list.extend(values.iter().map(|v| (now, v.clone())));
        let excess = list.len().saturating_sub(MAX_RETIRED);
        list.drain(..excess);
    }

    /// The headers to inject into requests to `upstream`. Fails closed: a secret that does not open
    /// (wrong key, tampered row) stops the request rather than sending it without credentials.
    pub async fn for_upstream(
        &self,
        store: &dyn Store,
        upstream: &UpstreamName,
    ) -> Result<Arc<Injected>, UpstreamError> {
        if let Some((at, i)) = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.get(upstream.as_str()).cloned())
            && at.elapsed() < CACHE_TTL
        {
            return Ok(i);
        }
        let sealed = store.upstream_secrets(upstream).await.map_err(|e| {
            tracing::warn!(upstream = %upstream, error = %e, "upstream secrets cannot be read");
            UpstreamError::Credentials(upstream.to_string())
        })?;
        let mut injected = Injected::default();
        for s in &sealed {
            let Injection::Header { name, prefix } = &s.injection else {
                continue;
            };
            let value = self.keys.open_secret(s).map_err(|e| {
                tracing::error!(upstream = %upstream, secret = %s.name, key_id = %s.key_id, error = %e, "an upstream secret does not open with this node's gateway key");
                UpstreamError::Credentials(upstream.to_string())
            })?;
            let mut full = prefix.as_str().as_bytes().to_vec();
            full.extend_from_slice(&value);
            let header = HeaderName::from_bytes(name.as_str().as_bytes())
                .map_err(|_| UpstreamError::Credentials(upstream.to_string()))?;
            let mut hv = HeaderValue::from_bytes(&full).map_err(|_| {
                tracing::error!(upstream = %upstream, secret = %s.name, "an upstream secret is not a valid header value");
                UpstreamError::Credentials(upstream.to_string())
            })?;
            hv.set_sensitive(true);
            injected.headers.push((header, hv));
            if !value.is_empty() {
                injected.values.extend(scrub_forms(&value));
            }
        }
        let injected = Arc::new(injected);
        let previous = self
            .cache
            .write()
            .ok()
            .and_then(|mut c| c.insert(upstream.to_string(), (Instant::now(), injected.clone())));
        if let Some((_, previous)) = previous {
            let gone: Vec<CredentialForm> = previous
                .values
                .iter()
                .filter(|v| !injected.values.contains(v))
                .cloned()
                .collect();
            self.retire(upstream.as_str(), &gone);
        }
        Ok(injected)
    }

    /// `bytes` with every credential value of `upstream` replaced by [`REDACTED_CREDENTIAL`]: the
    /// values injected into the request this answers (`injected`, whatever the cache holds now),
    /// and the values rotated out within [`RETIRED_TTL`]. Borrowed unchanged when none occurs (the
    /// common case: no copy).
    pub fn scrub<'a>(
        &self,
        upstream: &str,
        injected: &Injected,
        bytes: &'a [u8],
    ) -> std::borrow::Cow<'a, [u8]> {
        let out = scrub_all(std::borrow::Cow::Borrowed(bytes), &injected.values);
        match self.retired.read() {
            Ok(r) => match r.get(upstream) {
                Some(list) => scrub_all(
                    out,
                    list.iter()
                        .filter(|(at, _)| at.elapsed() < RETIRED_TTL)
                        .map(|(_, v)| v),
                ),
                None => out,
            },
            Err(_) => out,
        }
    }
}

/// One form of a credential value, kept to scrub answers: zeroed when dropped, and never printed
/// (`Debug` shows a placeholder, so no `Debug` of a struct holding one can leak it).
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialForm(zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for CredentialForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[credential]")
    }
}

impl std::ops::Deref for CredentialForm {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// The forms a credential takes in an answer: as sent, and inside a JSON string (where `"` and `\`
/// are escaped).
pub fn scrub_forms(value: &[u8]) -> Vec<CredentialForm> {
    let mut forms = vec![CredentialForm(zeroize::Zeroizing::new(value.to_vec()))];
    if let Ok(text) = std::str::from_utf8(value) {
        let escaped = zeroize::Zeroizing::new(serde_json::Value::from(text).to_string());
        let inner = &escaped.as_bytes()[1..escaped.len() - 1];
        if inner != value {
            forms.push(CredentialForm(zeroize::Zeroizing::new(inner.to_vec())));
        }
    }
    forms
}

/// `hay` with every form in `forms` replaced by [`REDACTED_CREDENTIAL`]; borrowed unchanged when
/// none occurs.
pub fn scrub_all<'a, 'f>(
    hay: std::borrow::Cow<'a, [u8]>,
    forms: impl IntoIterator<Item = &'f CredentialForm>,
) -> std::borrow::Cow<'a, [u8]> {
    let mut out = hay;
    for form in forms {
        if let Some(replaced) = replace_all(&out, form, REDACTED_CREDENTIAL) {
            out = std::borrow::Cow::Owned(replaced);
        }
    }
    out
}

/// What an upstream's credential is replaced with in anything it sends back.
pub const REDACTED_CREDENTIAL: &[u8] = b"[REDACTED:upstream-credential]";

/// `hay` with every occurrence of `needle` replaced by `with`, or `None` when there is none
/// (`memchr`'s substring search: linear, and no copy when nothing matches).
pub fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    if needle.is_empty() {
        return None;
    }
    let mut found = memchr::memmem::find_iter(hay, needle).peekable();
    found.peek()?;
    let mut out = Vec::with_capacity(hay.len());
    let mut last = 0;
    for at in found {
        // Matches do not overlap a replaced one.
        if at < last {
            continue;
        }
        out.extend_from_slice(&hay[last..at]);
        out.extend_from_slice(with);
        last = at + needle.len();
    }
    out.extend_from_slice(&hay[last..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injected(values: &[&str]) -> Arc<Injected> {
        Arc::new(Injected {
            headers: Vec::new(),
            values: values.iter().flat_map(|v| scrub_forms(v.as_bytes())).collect(),
        })
    }

    #[test]
    fn answers_are_scrubbed_of_the_injected_and_the_rotated_out_values() {
        let c = Credentials::new(Arc::new(GatewayKeys::generate()));
        let old = injected(&["old-key-1"]);
        c.cache
            .write()
            .expect("lock")
            .insert("crm".into(), (Instant::now(), old.clone()));
        // The answer to a request sent with the old key, scrubbed after the cache moved on.
        c.invalidate("crm");
        let new = injected(&["new-key-2"]);
        let answer = br#"{"echo":"old-key-1 new-key-2 other"}"#;
        let out = c.scrub("crm", &new, answer);
        let text = String::from_utf8(out.into_owned()).expect("utf-8");
        assert!(
            !text.contains("old-key-1") && !text.contains("new-key-2"),
            "{text}"
        );
        assert!(text.contains("other"), "{text}");
        // Another upstream's answers are not touched by crm's values.
        let none = injected(&[]);
        assert!(matches!(
            c.scrub("billing", &none, b"old-key-1"),
            std::borrow::Cow::Borrowed(_)
        ));
        // Neither the cached nor the retired values show in `Debug` output.
        c.cache
            .write()
            .expect("lock")
            .insert("crm".into(), (Instant::now(), new.clone()));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("old-key-1") && !shown.contains("new-key-2") && !shown.contains("111, 108, 100"),
            "{shown}"
        );
        // The request's own values are scrubbed even with nothing cached at all.
        let fresh = Credentials::new(Arc::new(GatewayKeys::generate()));
        let out = fresh.scrub("crm", &new, b"x new-key-2 y");
        assert_eq!(&*out, b"x [REDACTED:upstream-credential] y");
    }

    #[test]
    fn sessions_are_bound_to_task_and_upstream() {
        let k = GatewayKeys::generate();
        let task = Uuid::new_v4();
        let s = k.seal_session("abc-123", task, "crm");
        assert!(s.starts_with(SESSION_PREFIX) && !s.contains("abc-123"), "{s}");
        assert!(
            s.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "visible ASCII only"
        );
        assert_eq!(k.open_session(&s, task, "crm").as_deref(), Some("abc-123"));
        assert_eq!(k.open_session(&s, Uuid::new_v4(), "crm"), None, "another task");
        assert_eq!(k.open_session(&s, task, "erp"), None, "another upstream");
        let other = GatewayKeys::generate();
        assert_eq!(
            other.open_session(&s, task, "crm"),
            None,
            "another deployment's key"
        );
        let mut bad = s.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            k.open_session(&String::from_utf8(bad).unwrap(), task, "crm"),
            None,
            "tampered"
        );
        assert_eq!(k.open_session("abc-123", task, "crm"), None, "not Warden's");
    }

    #[test]
    fn scrubbing_replaces_every_occurrence() {
        assert_eq!(
            replace_all(b"a KEY b KEYKEY", b"KEY", b"*"),
            Some(b"a * b **".to_vec())
        );
        assert_eq!(
            replace_all(b"aaaa", b"aa", b"*"),
            Some(b"**".to_vec()),
            "no overlapping matches"
        );
        assert_eq!(replace_all(b"short", b"longer needle", b"*"), None);
        assert_eq!(replace_all(b"nothing here", b"KEY", b"*"), None);
        assert_eq!(
            scrub_forms(br#"pa"ss\w"#)
                .iter()
                .map(|f| f.to_vec())
                .collect::<Vec<_>>(),
            vec![br#"pa"ss\w"#.to_vec(), br#"pa\"ss\\w"#.to_vec()],
            "the JSON-escaped form is scrubbed too"
        );
    }
}
