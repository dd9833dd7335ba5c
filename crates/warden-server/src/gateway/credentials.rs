//! The gateway's key and the upstream credentials it injects.
//!
//! One 32-byte key per deployment (`gateway.key_file`, default `<data dir>/gateway.key`, created 0600
//! on first start; or `WARDEN_GATEWAY_KEY`, hex or base64) seals two things with XChaCha20-Poly1305:
//! upstream credentials at rest (the database holds only ciphertext; the key never enters it) and
//! Warden's MCP session ids. Every node of a deployment needs the same key.
//!
//! Opened credentials are cached per upstream for a few seconds (and dropped at once when a secret
//! of that upstream changes) as ready-made header values marked sensitive, so they never appear in
//! `Debug` output or logs. Anything an upstream sends back is scrubbed of its own credentials (the
//! [`Scrubber`] of [`Injected`], and [`Credentials::retired_scrubber`]) by the outbound filter
//! before an agent sees it.
//!
//! The key also seals the `requestState` of Warden's own `InputRequiredResult`s (approval inside the
//! protocol, `input_required.rs`) and the ids Warden hands agents in place of the upstream's: session ids
//! (with what the client declared at `initialize` that Warden acts on), SSE
//! event ids (with the request the stream answers, so a resumed stream is filtered as the original)
//! and the ids of the upstream's own requests (so an agent can answer only a request that was
//! really sent, in its own session).

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

use warden_gateway::credential::Scrubber;
use warden_gateway::jsonrpc::Id;

use super::clearance::Post;
use super::upstream::UpstreamError;

/// How long opened credentials are reused before the store is asked again.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Associated data of sealed session ids.
const SESSION_AAD: &[u8] = b"warden mcp session v1";
/// Prefix of Warden's session ids.
const SESSION_PREFIX: &str = "wdn1.";
/// Associated data and prefix of the SSE event ids Warden hands out.
const EVENT_AAD: &[u8] = b"warden mcp event v1";
const EVENT_PREFIX: &str = "wdne1.";
/// Associated data and prefix of the ids of the upstream's requests as the agent sees them.
const REQUEST_AAD: &[u8] = b"warden mcp server request v1";
const REQUEST_PREFIX: &str = "wdnr1.";
/// Associated data and prefix of the `requestState` of Warden's own `InputRequiredResult`s (MCP
/// 2026-07-28 multi-round-trip requests; see `input_required.rs`). A purpose of its own: a sealed
/// session, event or request id does not open as a request state, nor the reverse.
const STATE_AAD: &[u8] = b"warden mcp request state v1";
pub(super) const STATE_PREFIX: &str = "wdnq1.";
/// Longest sealed token opened (ids, event ids and session ids are short).
const MAX_SEALED_LEN: usize = 4096;

/// The deployment's gateway key.
pub struct GatewayKeys {
    key: SealingKey,
    /// Session ids opened recently (an agent sends its session id with every message; opening it —
    /// an AEAD open and a JSON parse — each time showed in the gateway's profile). Keyed by the
    /// exact sealed text, which only this key could have produced.
    opened: RwLock<HashMap<String, OpenedSession>>,
}

/// What a sealed session id says: the upstream's session, for which task and upstream, and what the
/// client declared at `initialize` that Warden needs later (URL-mode elicitation).
#[derive(Clone, Debug)]
struct OpenedSession {
    session: String,
    task: Uuid,
    upstream: String,
    caps: SessionCaps,
}

/// What a 2025-06-18 / 2025-11-25 client declared in `initialize` that Warden itself acts on; kept
/// inside the sealed session id (the client sends nothing else with every request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCaps {
    /// `capabilities.elicitation.url`: the client takes URL-mode elicitation.
    pub url_elicitation: bool,
}

/// Most opened session ids remembered (then the memory starts over).
const MAX_OPENED_SESSIONS: usize = 10_000;

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
            opened: RwLock::default(),
        }
    }

    /// From `WARDEN_GATEWAY_KEY` when set, else the key file, created (0600, never overwritten) when
    /// missing.
    pub fn load(env: Option<&str>, file: &Path) -> anyhow::Result<Self> {
        if let Some(v) = env.filter(|v| !v.trim().is_empty()) {
            let key = SealingKey::from_file_bytes(v.trim().as_bytes())
                .context("WARDEN_GATEWAY_KEY is not a 32-byte key (64 hex characters or base64)")?;
            return Ok(Self {
                key,
                opened: RwLock::default(),
            });
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
                Ok(Self {
                    key,
                    opened: RwLock::default(),
                })
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
                Ok(Self {
                    key,
                    opened: RwLock::default(),
                })
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

    /// Seals `value` (bound to `aad`) into an opaque token of visible ASCII: `prefix` + nonce + `.`
    /// + ciphertext, base64url.
    fn seal_json(&self, prefix: &str, aad: &[u8], value: &serde_json::Value) -> String {
        let plain = value.to_string();
        // Sealing fails only past XChaCha20-Poly1305's 256 GiB message limit.
        let Ok(sealed) = self.key.seal(plain.as_bytes(), aad) else {
            return String::new();
        };
        format!(
            "{prefix}{}.{}",
            B64.encode(&sealed.nonce),
            B64.encode(&sealed.ciphertext)
        )
    }

    /// Opens a token of [`GatewayKeys::seal_json`]: `None` unless it is Warden's, unaltered, and
    /// sealed with this `aad`.
    fn open_json(&self, prefix: &str, aad: &[u8], raw: &str) -> Option<serde_json::Value> {
        if raw.len() > MAX_SEALED_LEN {
            return None;
        }
        let rest = raw.strip_prefix(prefix)?;
        let (nonce, ct) = rest.split_once('.')?;
        let sealed = Sealed {
            key_id: self.key.key_id().to_owned(),
            nonce: B64.decode(nonce).ok()?,
            ciphertext: B64.decode(ct).ok()?,
        };
        let plain = self.key.open(&sealed, aad).ok()?;
        serde_json::from_slice(plain.expose()).ok()
    }

    /// Warden's session id for an upstream session of `task` at `upstream`.
    pub fn seal_session(&self, upstream_session: &str, task: Uuid, upstream: &str) -> String {
        self.seal_session_with(upstream_session, task, upstream, SessionCaps::default())
    }

    /// [`GatewayKeys::seal_session`], keeping what the client declared at `initialize`.
    pub fn seal_session_with(
        &self,
        upstream_session: &str,
        task: Uuid,
        upstream: &str,
        caps: SessionCaps,
    ) -> String {
        let mut v = serde_json::json!({ "s": upstream_session, "t": task, "u": upstream });
        if caps.url_elicitation {
            v["c"] = serde_json::json!({ "eu": true });
        }
        self.seal_json(SESSION_PREFIX, SESSION_AAD, &v)
    }

    /// What the client declared at `initialize`, kept in the session id `raw` (nothing when `raw`
    /// is not Warden's session for this task and upstream).
    pub fn session_caps(&self, raw: &str, task: Uuid, upstream: &str) -> SessionCaps {
        self.opened_session(raw)
            .filter(|o| o.task == task && o.upstream == upstream)
            .map(|o| o.caps)
            .unwrap_or_default()
    }

    /// Seals a request state (see `input_required.rs`) into an opaque token.
    pub fn seal_request_state(&self, claims: &serde_json::Value) -> String {
        self.seal_json(STATE_PREFIX, STATE_AAD, claims)
    }

    /// The claims of a request state Warden sealed, unaltered; `None` for anything else.
    pub fn open_request_state(&self, raw: &str) -> Option<serde_json::Value> {
        self.open_json(STATE_PREFIX, STATE_AAD, raw)
    }

    /// The upstream session behind `raw`, if `raw` is Warden's, unaltered, and for this task and
    /// upstream.
    pub fn open_session(&self, raw: &str, task: Uuid, upstream: &str) -> Option<String> {
        self.opened_session(raw)
            .filter(|o| o.task == task && o.upstream == upstream)
            .map(|o| o.session)
    }

    /// What the session id `raw` says, if it is Warden's and unaltered (remembered once opened).
    fn opened_session(&self, raw: &str) -> Option<OpenedSession> {
        if let Some(o) = self.opened.read().ok().and_then(|m| m.get(raw).cloned()) {
            return Some(o);
        }
        let v = self.open_json(SESSION_PREFIX, SESSION_AAD, raw)?;
        let opened = OpenedSession {
            session: v["s"].as_str()?.to_owned(),
            task: v["t"].as_str()?.parse().ok()?,
            upstream: v["u"].as_str()?.to_owned(),
            caps: SessionCaps {
                url_elicitation: v["c"]["eu"].as_bool() == Some(true),
            },
        };
        if let Ok(mut m) = self.opened.write() {
            if m.len() >= MAX_OPENED_SESSIONS {
                m.clear();
            }
            m.insert(raw.to_owned(), opened.clone());
        }
        Some(opened)
    }

    /// The SSE event id handed to the agent for the upstream's event `event_id`: bound to the task
    /// and upstream, and carrying what the outbound filter needs to filter a replay of the stream
    /// exactly as the original (the request the stream answers).
    pub fn seal_event(&self, event_id: &str, task: Uuid, upstream: &str, post: Option<&Post>) -> String {
        let v = serde_json::json!({ "e": event_id, "t": task, "u": upstream, "p": post });
        self.seal_json(EVENT_PREFIX, EVENT_AAD, &v)
    }

    /// The upstream's event id and the request its stream answered, if `raw` is an event id Warden
    /// handed out for this task and upstream.
    pub fn open_event(&self, raw: &str, task: Uuid, upstream: &str) -> Option<(String, Option<Post>)> {
        let v = self.open_json(EVENT_PREFIX, EVENT_AAD, raw)?;
        if v["t"].as_str() != Some(task.to_string().as_str()) || v["u"].as_str() != Some(upstream) {
            return None;
        }
        let event = v["e"].as_str()?.to_owned();
        let post = match &v["p"] {
            serde_json::Value::Null => None,
            p => Some(serde_json::from_value(p.clone()).ok()?),
        };
        Some((event, post))
    }

    /// The id the agent sees for a request the upstream sent it (sampling, elicitation, roots,
    /// ping): the upstream's id and method sealed with the task, upstream and session, so the
    /// agent's answer can go only to the session that asked, only once, and only as an answer to
    /// that request.
    pub fn seal_server_request(
        &self,
        id: &Id,
        method: &str,
        task: Uuid,
        upstream: &str,
        session: Option<&str>,
    ) -> String {
        let v = serde_json::json!({ "i": id, "m": method, "t": task, "u": upstream, "s": session });
        self.seal_json(REQUEST_PREFIX, REQUEST_AAD, &v)
    }

    /// The upstream's request id and method behind an agent's answer, if `raw` is an id Warden
    /// handed out for a request of this task's session at this upstream.
    pub fn open_server_request(
        &self,
        raw: &str,
        task: Uuid,
        upstream: &str,
        session: Option<&str>,
    ) -> Option<(Id, String)> {
        let v = self.open_json(REQUEST_PREFIX, REQUEST_AAD, raw)?;
        if v["t"].as_str() != Some(task.to_string().as_str())
            || v["u"].as_str() != Some(upstream)
            || v["s"].as_str() != session
        {
            return None;
        }
        let id: Id = serde_json::from_value(v["i"].clone()).ok()?;
        Some((id, v["m"].as_str()?.to_owned()))
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
    /// The raw values (to retire them when they stop being injected).
    values: Vec<CredentialForm>,
    /// Finds the values in answers, in every encoding it knows (see `warden_gateway::credential`).
    scrubber: Arc<Scrubber>,
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

    /// Credentials given to a process (a stdio server's environment secrets): nothing to inject
    /// as headers, everything to scrub. Fails on a value Warden cannot scrub safely (shorter than
    /// [`warden_gateway::credential::MIN_CREDENTIAL_LEN`]).
    pub fn for_values(values: &[&[u8]]) -> Result<Self, warden_gateway::credential::CredentialError> {
        Ok(Self {
            headers: Vec::new(),
            values: values.iter().map(|v| CredentialForm::new(v)).collect(),
            scrubber: Arc::new(Scrubber::new(values)?),
        })
    }

    pub fn scrubber(&self) -> &Arc<Scrubber> {
        &self.scrubber
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
    retired: RwLock<HashMap<String, RetiredValues>>,
    /// The scrubber of no values, shared.
    empty: Arc<Scrubber>,
}

/// An upstream's retired values, and the scrubber that finds them.
#[derive(Debug, Default)]
struct RetiredValues {
    values: Vec<(Instant, CredentialForm)>,
    scrubber: Arc<Scrubber>,
}

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
            empty: Arc::new(Scrubber::empty()),
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
        let entry = r.entry(upstream.to_owned()).or_default();
        let now = Instant::now();
        let list = &mut entry.values;
        list.retain(|(at, v)| at.elapsed() < RETIRED_TTL && !values.contains(v));
        list.extend(values.iter().map(|v| (now, v.clone())));
        let excess = list.len().saturating_sub(MAX_RETIRED);
        list.drain(..excess);
        let raw: Vec<&[u8]> = list.iter().map(|(_, v)| &**v).collect();
        match Scrubber::new(&raw) {
            Ok(s) => entry.scrubber = Arc::new(s),
            // Values too short to scrub were never injected (see `for_upstream`).
            Err(e) => tracing::error!(upstream, error = %e, "retired credentials cannot be scrubbed"),
        }
    }

    /// The scrubber of `upstream`'s values rotated out within [`RETIRED_TTL`] (an empty one when
    /// there are none).
    pub fn retired_scrubber(&self, upstream: &str) -> Arc<Scrubber> {
        let Ok(r) = self.retired.read() else {
            return self.empty.clone();
        };
        match r.get(upstream) {
            Some(e) if e.values.iter().any(|(at, _)| at.elapsed() < RETIRED_TTL) => e.scrubber.clone(),
            _ => self.empty.clone(),
        }
    }

    /// The headers to inject into requests to `upstream`. Fails closed: a secret that does not open
    /// (wrong key, tampered row), or one too short to be scrubbed from answers, stops the request
    /// rather than sending it without credentials or risking its echo.
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
            let value = zeroize::Zeroizing::new(self.keys.open_secret(s).map_err(|e| {
                tracing::error!(upstream = %upstream, secret = %s.name, key_id = %s.key_id, error = %e, "an upstream secret does not open with this node's gateway key");
                UpstreamError::Credentials(upstream.to_string())
            })?);
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
            injected.values.push(CredentialForm::new(&value));
        }
        let raw: Vec<&[u8]> = injected.values.iter().map(|v| &**v).collect();
        injected.scrubber = Arc::new(Scrubber::new(&raw).map_err(|e| {
            tracing::error!(upstream = %upstream, error = %e, "an upstream secret is too short to be scrubbed from answers; set a longer one (`warden secret rotate`)");
            UpstreamError::Credentials(upstream.to_string())
        })?);
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
}

/// A credential value kept to scrub answers: zeroed when dropped, and never printed (`Debug` shows
/// a placeholder, so no `Debug` of a struct holding one can leak it).
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialForm(zeroize::Zeroizing<Vec<u8>>);

impl CredentialForm {
    pub fn new(value: &[u8]) -> Self {
        Self(zeroize::Zeroizing::new(value.to_vec()))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn injected(values: &[&str]) -> Arc<Injected> {
        let raw: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        Arc::new(Injected::for_values(&raw).expect("long enough"))
    }

    fn scrubbed(s: &Scrubber, text: &str) -> String {
        let mut v = serde_json::json!({ "echo": text });
        s.scrub(&mut v);
        v["echo"].as_str().expect("string").to_owned()
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
        let text = "old-key-1 new-key-2 other";
        let out = scrubbed(&c.retired_scrubber("crm"), &scrubbed(new.scrubber(), text));
        assert!(!out.contains("old-key-1") && !out.contains("new-key-2"), "{out}");
        assert!(out.contains("other"), "{out}");
        // Another upstream's answers are not touched by crm's values.
        assert!(c.retired_scrubber("billing").is_empty());
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
    }

    #[test]
    fn a_credential_too_short_to_scrub_is_refused() {
        assert!(Injected::for_values(&[b"1234567"]).is_err());
        assert!(Injected::for_values(&[b"12345678"]).is_ok());
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
    fn event_and_server_request_ids_are_bound_to_task_upstream_and_session() {
        let k = GatewayKeys::generate();
        let task = Uuid::new_v4();
        let post = Post {
            id: Id::Number(3),
            method: "tools/call".into(),
            after: super::super::clearance::After::Result,
            tool: Some("echo".into()),
            sent: Instant::now(),
            to_modern: false,
        };
        let e = k.seal_event("ev-1", task, "crm", Some(&post));
        let (ev, p) = k.open_event(&e, task, "crm").expect("opens");
        assert_eq!(ev, "ev-1");
        assert_eq!(p.expect("post").id, Id::Number(3));
        assert!(k.open_event(&e, Uuid::new_v4(), "crm").is_none(), "another task");
        assert!(k.open_event(&e, task, "erp").is_none(), "another upstream");
        assert!(k.open_event("ev-1", task, "crm").is_none(), "not Warden's");
        let r = k.seal_server_request(&Id::Number(7), "sampling/createMessage", task, "crm", Some("s1"));
        assert_eq!(
            k.open_server_request(&r, task, "crm", Some("s1")),
            Some((Id::Number(7), "sampling/createMessage".to_owned()))
        );
        assert!(
            k.open_server_request(&r, task, "crm", Some("s2")).is_none(),
            "another session"
        );
        assert!(
            k.open_server_request(&r, task, "crm", None).is_none(),
            "no session"
        );
        assert!(
            k.open_event(&r, task, "crm").is_none(),
            "a request id is not an event id"
        );
    }
}
