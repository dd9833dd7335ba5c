//! Shared helpers of the router tests: an [`Api`] over a real store, and the macro that runs a test
//! body on SQLite and on PostgreSQL.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod agents;
pub mod hostile;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::{Duration, Utc};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use uuid::Uuid;
use warden_core::token;
use warden_core::{ChangeContext, DisplayName, Email, NewHuman, Role, TrustDomain};
use warden_server::config::TokenConfig;
use warden_server::federation::Federation;
use warden_server::keys::KeyManager;
use warden_server::{AppState, HttpLimits, Identity, TokenSettings, router};
use warden_store::{Store, TokenRecord};

/// The default pack's files (name → text), to activate as they are or changed.
#[allow(dead_code, reason = "not every test binary activates policies")]
pub fn default_pack() -> std::collections::BTreeMap<String, String> {
    let mut files = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(default_policies()).expect("policies dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "cedar") {
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            files.insert(name, std::fs::read_to_string(&path).expect("read"));
        }
    }
    files
}

/// The repository's default policy pack (what the quickstart activates).
pub fn default_policies() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default")
}

/// The public URL the router tests pretend to be served at.
pub const ISSUER: &str = "http://warden.test";

pub async fn identity(store: Arc<dyn Store>, dir: &std::path::Path, tokens: &TokenConfig) -> Arc<Identity> {
    let url = url::Url::parse(ISSUER).expect("url");
    let settings = TokenSettings::new(&url, tokens);
    let keys = KeyManager::open(dir, "test-node".into(), Duration::minutes(6), store)
        .await
        .expect("keys");
    Arc::new(Identity::new(
        settings,
        keys,
        Federation::default(),
        std::time::Duration::from_millis(tokens.revocation_cache_ttl_ms),
    ))
}

/// A ledger writer like the server's, with keys in `dir`.
pub async fn test_ledger(store: Arc<dyn Store>, dir: &std::path::Path) -> Arc<warden_server::ledger::Ledger> {
    let td = TrustDomain::default();
    let signer =
        warden_server::ledger::load_signer(dir, None, &warden_server::ledger::key_name(&td, "test-node"))
            .expect("ledger key");
    let redactor = warden_server::ledger::load_redactor(dir, None).expect("redaction key");
    warden_server::ledger::Ledger::start(
        store,
        signer,
        warden_server::ledger::origin(&td),
        redactor,
        (&warden_server::config::LedgerConfig::default()).into(),
        "test-node",
    )
    .await
    .expect("ledger")
}

pub struct Api {
    pub app: Router,
    pub state: AppState,
    pub store: Arc<dyn Store>,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

impl Api {
    pub async fn new(store: Arc<dyn Store>, dir: tempfile::TempDir) -> Self {
        Self::with_tokens(store, dir, &TokenConfig::default()).await
    }

    pub async fn with_tokens(store: Arc<dyn Store>, dir: tempfile::TempDir, tokens: &TokenConfig) -> Self {
        let admin = mint(&store, "admin@example.com", &[Role::Admin], Duration::hours(1)).await;
        let identity = identity(store.clone(), dir.path(), tokens).await;
        warden_server::policy::bootstrap(store.as_ref(), &default_policies())
            .await
            .expect("default policies");
        let policies = Arc::new(
            warden_server::policy::Policies::load(store.as_ref())
                .await
                .expect("policies"),
        );
        warden_server::spawn_background(store.clone(), identity.clone(), policies.clone());
        let ledger = test_ledger(store.clone(), dir.path()).await;
        let state = AppState::new(store.clone(), TrustDomain::default(), identity, policies, ledger);
        let app = router(state.clone(), HttpLimits::default());
        Api {
            app,
            state,
            store,
            admin,
            dir,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.raw(req.body(body).expect("request")).await
    }

    pub async fn raw(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let www = resp.headers().get(header::WWW_AUTHENTICATE).cloned();
        let _ = &www;
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == StatusCode::UNAUTHORIZED {
            assert!(www.is_some(), "401 without WWW-Authenticate");
        }
        (status, value)
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(&self.admin.clone()), body).await
    }

    pub async fn agent_count(&self) -> usize {
        self.store
            .list_agents(&Default::default())
            .await
            .expect("list")
            .len()
    }

    /// An owner and an upstream, so agents can be registered.
    pub async fn seed(&self) {
        let (s, _) = self
            .admin(
                Method::POST,
                "/v1/humans",
                Some(json!({"email": "owner@example.com", "display_name": "Owner", "roles": ["owner"]})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, b) = self
            .admin(
                Method::POST,
                "/v1/upstreams",
                Some(json!({"name": "crm", "kind": "mcp", "url": "https://crm.example.com/mcp", "environment": "production",
                            "owner": "owner@example.com", "sensitivity": "confidential"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
}

/// Every ledger entry so far, as (kind, body), read straight from the store.
#[allow(dead_code, reason = "not every test binary reads the ledger")]
pub async fn ledger_entries(api: &Api) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    loop {
        let page = api
            .store
            .ledger_records(out.len() as u64, 500, &Default::default())
            .await
            .expect("ledger page");
        if page.is_empty() {
            return out;
        }
        for r in page {
            let e = warden_ledger::EncodedEntry::decode(r.bytes).expect("entry decodes");
            out.push((e.entry().kind.to_string(), e.entry().body.clone()));
        }
    }
}

/// Creates a human (if needed) and an API token for them directly in the store.
pub async fn mint(store: &Arc<dyn Store>, email: &str, roles: &[Role], ttl: Duration) -> String {
    let email = Email::parse(email).expect("valid");
    let ctx = ChangeContext::new("test", Utc::now());
    if store.get_human(&email).await.expect("get").is_none() {
        let new = NewHuman {
            email: email.clone(),
            display_name: DisplayName::parse("T").expect("valid"),
            roles: roles.to_vec(),
        };
        store.create_human(&new, &ctx).await.expect("human");
    }
    let (secret, hash) = token::generate();
    let rec = TokenRecord {
        id: Uuid::new_v4(),
        human: email,
        label: "t".into(),
        hash,
        expires_at: Utc::now() + ttl,
        minted_by: None,
        // The human's own token (as if claimed): these tests vote with it.
        personal: true,
        claims: None,
    };
    store.create_api_token(&rec, &ctx).await.expect("token");
    secret.expose().clone()
}

pub fn agent_body(name: &str) -> Value {
    json!({"name": name, "owners": ["owner@example.com"], "environment": "staging",
           "model": "anthropic/claude-sonnet@4.5", "allowed_upstreams": ["crm"]})
}

/// Runs each listed `async fn(Api)` twice: `sqlite::<name>` and `postgres::<name>`.
#[macro_export]
macro_rules! api_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let store = warden_store::SqliteStore::open(&dir.path().join("w.db")).await.expect("sqlite");
                    super::$name(super::common::Api::new(std::sync::Arc::new(store), dir).await).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let url = warden_store::testing::fresh_postgres_url().await;
                    let store = warden_store::open(&url).await.expect("postgres");
                    super::$name(super::common::Api::new(store, dir).await).await;
                }
            )+
        }
    };
}

impl Api {
    /// A form POST (the token endpoint), with optional extra headers.
    pub async fn form(
        &self,
        path: &str,
        pairs: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.raw(req.body(Body::from(body)).expect("request")).await
    }

    /// A request with arbitrary headers and an optional JSON body.
    pub async fn with_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.raw(req.body(body).expect("request")).await
    }
}
