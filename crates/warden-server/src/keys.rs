//! Warden's signing keys: the private half on this node, the public halves of every node in the store.
//!
//! On start the node loads its key files from `<data-dir>/keys/` (0700 directory, 0600 files), generates
//! one if there is none, and publishes the public halves to the store. Private keys never leave the node:
//! with several nodes, each signs with its own key and every node verifies every node's tokens through
//! the published public keys, which are also the JWKS (`/.well-known/jwks.json`).
//!
//! Rotation: a new key becomes active at once; the previous one is retired after an overlap window (the
//! task-token lifetime plus a minute), during which tokens it signed still verify. The verification set
//! is refreshed when the store announces a key change, and on an unknown `kid` (at most once a second,
//! so a flood of forged kids cannot turn into a flood of store queries).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use warden_identity::{KeyLookup, PublicKey, SigningKey};
use warden_store::{SigningKeyRecord, Store};

/// The minimum time between two store reloads triggered by unknown kids.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
struct Verifier {
    key: PublicKey,
    retire_after: Option<DateTime<Utc>>,
}

/// This node's active signing key and the set of keys it verifies with.
pub struct KeyManager {
    dir: PathBuf,
    node: String,
    overlap: chrono::Duration,
    active: RwLock<Arc<SigningKey>>,
    /// The active key comes from a configured file: rotation is the file owner's job.
    pinned: bool,
    verifiers: RwLock<HashMap<String, Verifier>>,
    last_reload: Mutex<Option<Instant>>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager")
            .field("dir", &self.dir)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl KeyManager {
    /// Uses the key in `file` (never generates or rotates) and publishes it.
    pub async fn open_pinned(
        file: &Path,
        node: String,
        overlap: chrono::Duration,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Self> {
        let key = SigningKey::load(file)
            .with_context(|| format!("cannot load the signing key {}", file.display()))?;
        store
            .publish_signing_key(&record(&key, &node))
            .await
            .context("cannot publish the signing key")?;
        let manager = Self {
            dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            node,
            overlap,
            active: RwLock::new(Arc::new(key)),
            pinned: true,
            verifiers: RwLock::new(HashMap::new()),
            last_reload: Mutex::new(None),
            store,
        };
        manager.reload().await?;
        Ok(manager)
    }

    /// Loads (or creates) this node's key and publishes it.
    pub async fn open(
        data_dir: &Path,
        node: String,
        overlap: chrono::Duration,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Self> {
        let dir = data_dir.join("keys");
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create key directory {}", dir.display()))?;
        }
        let mut keys = load_keys(&dir)?;
        if keys.is_empty() {
            let key = SigningKey::generate(Utc::now());
            key.save(&key_path(&dir, &key))
                .context("cannot save the new signing key")?;
            tracing::info!(kid = key.kid(), "generated a signing key");
            keys.push(key);
        }
        keys.sort_by_key(SigningKey::created_at);
        let published = store
            .signing_keys()
            .await
            .context("cannot read published signing keys")?;
        let now = Utc::now();
        // The newest key that has not been retired is the active one.
        let retired = |k: &SigningKey| {
            published
                .iter()
                .any(|p| p.kid == k.kid() && p.retire_after.is_some_and(|r| r <= now))
        };
        let active = match keys.iter().rposition(|k| !retired(k)) {
            Some(i) => keys.swap_remove(i),
            None => {
                let key = SigningKey::generate(now);
                key.save(&key_path(&dir, &key))
                    .context("cannot save the new signing key")?;
                key
            }
        };
        store
            .publish_signing_key(&record(&active, &node))
            .await
            .context("cannot publish the signing key")?;
        let manager = Self {
            dir,
            node,
            overlap,
            active: RwLock::new(Arc::new(active)),
            pinned: false,
            verifiers: RwLock::new(HashMap::new()),
            last_reload: Mutex::new(None),
            store,
        };
        manager.reload().await?;
        Ok(manager)
    }

    /// Whether the active key is pinned by configuration (no rotation here).
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The key new tokens are signed with.
    pub fn active(&self) -> Arc<SigningKey> {
        match self.active.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the published keys from the store.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let records = self
            .store
            .signing_keys()
            .await
            .context("cannot read published signing keys")?;
        let mut map = HashMap::new();
        for r in records {
            match PublicKey::from_x_b64(Some(&r.kid), &r.public_x) {
                Ok(key) => {
                    map.insert(
                        r.kid.clone(),
                        Verifier {
                            key,
                            retire_after: r.retire_after,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(kid = %r.kid, error = %e, "ignoring an unreadable published signing key")
                }
            }
        }
        if let Ok(mut v) = self.verifiers.write() {
            *v = map;
        }
        if let Ok(mut t) = self.last_reload.lock() {
            *t = Some(Instant::now());
        }
        Ok(())
    }

    /// Reloads if an unknown kid was presented and the last reload is old enough.
    pub async fn reload_for_unknown_kid(&self) {
        let due = self
            .last_reload
            .lock()
            .map(|t| t.is_none_or(|t| t.elapsed() >= RELOAD_INTERVAL))
            .unwrap_or(true);
        if !due {
            return;
        }
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "cannot reload signing keys");
        }
    }

    /// Makes a new key active and retires the old one after the overlap window.
    pub async fn rotate(&self) -> anyhow::Result<(String, String)> {
        if self.pinned {
            anyhow::bail!(
                "this node signs with the key file set in tokens.signing_key_file; rotate by replacing that file and restarting"
            );
        }
        let old = self.active();
        let new = SigningKey::generate(Utc::now());
        new.save(&key_path(&self.dir, &new))
            .context("cannot save the new signing key")?;
        self.store
            .publish_signing_key(&record(&new, &self.node))
            .await
            .context("cannot publish the new key")?;
        self.store
            .retire_signing_key(old.kid(), Utc::now() + self.overlap)
            .await
            .context("cannot schedule the old key's retirement")?;
        let ids = (old.kid().to_owned(), new.kid().to_owned());
        if let Ok(mut a) = self.active.write() {
            *a = Arc::new(new);
        }
        self.reload().await?;
        tracing::info!(old = %ids.0, new = %ids.1, overlap_secs = self.overlap.num_seconds(), "signing key rotated");
        Ok(ids)
    }

    /// The JWKS: every published key not yet retired.
    pub fn jwks(&self, now: DateTime<Utc>) -> serde_json::Value {
        let keys: Vec<_> = match self.verifiers.read() {
            Ok(v) => {
                let mut live: Vec<_> = v
                    .values()
                    .filter(|k| k.retire_after.is_none_or(|r| now < r))
                    .collect();
                live.sort_by(|a, b| a.key.kid().cmp(b.key.kid()));
                live.iter().map(|k| k.key.to_jwk()).collect()
            }
            Err(_) => Vec::new(),
        };
        serde_json::json!({ "keys": keys })
    }

    /// A key lookup for verification at `now`: retired keys are not found.
    pub fn lookup(&self, now: DateTime<Utc>) -> impl KeyLookup + '_ {
        LiveKeys { manager: self, now }
    }
}

struct LiveKeys<'a> {
    manager: &'a KeyManager,
    now: DateTime<Utc>,
}

impl KeyLookup for LiveKeys<'_> {
    fn public_key(&self, kid: &str) -> Option<PublicKey> {
        let v = self.manager.verifiers.read().ok()?;
        let k = v.get(kid)?;
        k.retire_after.is_none_or(|r| self.now < r).then(|| k.key.clone())
    }
}

fn record(key: &SigningKey, node: &str) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: key.kid().to_owned(),
        public_x: key.public().x_b64(),
        node: node.to_owned(),
        created_at: key.created_at(),
        retire_after: None,
    }
}

fn key_path(dir: &Path, key: &SigningKey) -> PathBuf {
    dir.join(format!(
        "signing-{}-{}.json",
        key.created_at().timestamp(),
        &key.kid()[..key.kid().len().min(16)]
    ))
}

fn load_keys(dir: &Path) -> anyhow::Result<Vec<SigningKey>> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        let is_key = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("signing-") && n.ends_with(".json"));
        if is_key {
            keys.push(
                SigningKey::load(&path)
                    .with_context(|| format!("cannot load signing key {}", path.display()))?,
            );
        }
    }
    Ok(keys)
}
