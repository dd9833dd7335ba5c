//! The audit ledger through the real router, on SQLite and PostgreSQL: every decision, credential
//! and change becomes an entry before it takes effect; refusals are recorded; the log verifies and
//! proves; and when the ledger cannot write, actions are denied (revocations still go through) and
//! nothing acknowledged is lost.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use warden_core::Role;
use warden_ledger::{CheckpointVerifier, EncodedEntry, LogRecord, VerifyOptions};
use warden_store::{LedgerFilter, Store};

use common::agents::*;
use common::{Api, mint};

/// Direct SQL on the test's database (to make the ledger fail the way a full disk would).
enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Db {
    async fn exec(&self, statements: &[&str]) {
        use sqlx::Connection as _;
        match self {
            Db::Sqlite(path) => {
                let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
                    .await
                    .unwrap();
                for s in statements {
                    sqlx::query(s).execute(&mut c).await.unwrap();
                }
            }
            Db::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                for s in statements {
                    sqlx::query(s).execute(&mut c).await.unwrap();
                }
            }
        }
    }

    /// From now on every write of the ledger's head fails (as on a full disk): no append commits.
    async fn break_ledger(&self) {
        match self {
            Db::Sqlite(_) => {
                self.exec(&["CREATE TRIGGER ledger_fail BEFORE UPDATE ON ledger_head \
                             BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END"])
                    .await
            }
            Db::Postgres(_) => {
                self.exec(&[
                    "CREATE FUNCTION ledger_fail() RETURNS trigger AS $$ BEGIN \
                     RAISE EXCEPTION 'simulated: could not extend file: No space left on device'; END $$ LANGUAGE plpgsql",
                    "CREATE TRIGGER ledger_fail BEFORE UPDATE ON ledger_head FOR EACH ROW EXECUTE FUNCTION ledger_fail()",
                ])
                .await
            }
        }
    }

    async fn repair_ledger(&self) {
        self.exec(&["DROP TRIGGER ledger_fail ON ledger_head"].map(|s| match self {
            Db::Sqlite(_) => "DROP TRIGGER ledger_fail",
            Db::Postgres(_) => s,
        }))
        .await
    }
}

macro_rules! ledger_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let path = dir.path().join("w.db");
                    let store = warden_store::SqliteStore::open(&path).await.expect("sqlite");
                    let api = super::common::Api::new(std::sync::Arc::new(store), dir).await;
                    super::$name(api, super::Db::Sqlite(path)).await;
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
                    let api = super::common::Api::new(store, dir).await;
                    super::$name(api, super::Db::Postgres(url)).await;
                }
            )+
        }
    };
}

ledger_tests!(
    decisions_credentials_and_changes_are_recorded,
    refusals_are_recorded_with_their_actor,
    audit_api_serves_checkpoints_proofs_and_entries,
    a_ledger_that_cannot_write_denies_and_recovers,
    mcp_messages_are_not_sent_when_their_decision_cannot_be_recorded,
);

/// A request with headers; returns status, headers and JSON body.
async fn send(
    api: &Api,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
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
    let resp = api.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn authorize(api: &Api, token: &str, body: Value) -> (StatusCode, axum::http::HeaderMap, Value) {
    send(
        api,
        Method::POST,
        "/v1/authorize",
        &[("authorization", &format!("Bearer {token}"))],
        Some(body),
    )
    .await
}

/// Every stored entry, decoded, in order.
async fn all_entries(store: &dyn Store) -> Vec<EncodedEntry> {
    let mut out: Vec<EncodedEntry> = Vec::new();
    loop {
        let page = store
            .ledger_records(out.len() as u64, 500, &LedgerFilter::default())
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page.into_iter().map(|r| EncodedEntry::decode(r.bytes).unwrap()));
    }
}

/// Verifies the whole stored log with the ledger's key, as `warden audit verify` does.
async fn verify(api: &Api) -> warden_ledger::VerifyReport {
    let store = api.store.as_ref();
    let notes: Vec<String> = store
        .ledger_checkpoints(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.note)
        .collect();
    let keys = store
        .ledger_keys()
        .await
        .unwrap()
        .iter()
        .map(|k| warden_ledger::VerifierKey::parse(&k.vkey).unwrap())
        .collect();
    let verifier = CheckpointVerifier::new(api.state.ledger.origin(), keys).unwrap();
    let mut records = Vec::new();
    loop {
        let page = store
            .ledger_records(records.len() as u64, 500, &LedgerFilter::default())
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        records.extend(page);
    }
    warden_ledger::verify_log(
        records.into_iter().map(Ok::<LogRecord, std::convert::Infallible>),
        &notes,
        &verifier,
        VerifyOptions {
            decode_entries: true,
            progress_every: 0,
        },
        |_| {},
    )
    .unwrap()
}

fn kinds(entries: &[EncodedEntry]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in entries {
        *m.entry(e.entry().kind.to_string()).or_default() += 1;
    }
    m
}

fn seq_header(h: &axum::http::HeaderMap) -> u64 {
    h.get("warden-ledger-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("warden-ledger-seq header")
}

async fn decisions_credentials_and_changes_are_recorded(api: Api, _db: Db) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, task) = started(&api, &bot, &["crm"]).await;
    let secret_value = "hunter2-do-not-log";
    let (s, h, d) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "crm"},
               "args": {"query": "open invoices", "password": secret_value}, "sensitive": ["/password"]}),
    )
    .await;
    assert_eq!((s, d["outcome"].as_str()), (StatusCode::OK, Some("allow")), "{d}");
    let read_seq = seq_header(&h);
    let (_, h, d) = authorize(
        &api,
        &token,
        json!({"action": "write", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(d["outcome"], "needs_approval");
    let write_seq = seq_header(&h);
    let (s, h, d) = send(
        &api,
        Method::POST,
        "/v1/authorize/batch",
        &[("authorization", &format!("Bearer {token}"))],
        Some(json!({"requests": [
            {"action": "read", "resource": {"upstream": "db"}},
            {"action": "admin", "resource": {"upstream": "crm"}},
        ]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let batch_seq = seq_header(&h);
    let (s, _) = api
        .admin(
            Method::POST,
            &format!("/v1/tasks/{task}/end"),
            Some(json!({"reason": "done"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let entries = all_entries(api.store.as_ref()).await;
    let k = kinds(&entries);
    // seed: owner + two upstreams; bot: register, enrollment, activate; the task: its decision and
    // credential; four decisions on actions; the end.
    assert_eq!(k["registry_change"], 5, "{k:?}");
    assert_eq!(k["enrollment"], 1, "{k:?}");
    assert_eq!(k["token_issued"], 1, "{k:?}");
    assert_eq!(k["task_ended"], 1, "{k:?}");
    assert_eq!(
        k["decision"], 5,
        "task.start + read + write + two in the batch: {k:?}"
    );

    // The header names the entry of that very decision; its arguments are recorded, the sensitive
    // one only as an HMAC.
    let read = entries[read_seq as usize].entry();
    assert_eq!(read.body["outcome"], "allow");
    assert_eq!(read.body["action"], "read");
    assert_eq!(read.body["agent"], "bot");
    assert_eq!(read.body["task"], task.as_str());
    assert_eq!(read.body["arguments"]["query"], "open invoices");
    let hidden = read.body["arguments"]["password"].as_str().unwrap();
    assert!(hidden.starts_with("hmac-sha256:"), "{hidden}");
    assert!(api.state.ledger.redactor().matches(hidden, &json!(secret_value)));
    assert_eq!(read.body["policy_version"].as_str().map(str::len), Some(64));
    assert_eq!(read.actor, bot.spiffe);
    let write = entries[write_seq as usize].entry();
    assert_eq!(
        (write.body["outcome"].as_str(), write.body["quorum"].as_u64()),
        (Some("needs_approval"), Some(1))
    );
    assert!(
        write.body["reasons"]
            .to_string()
            .contains("production-writes-need-approval")
    );
    let batch: Vec<_> = entries[batch_seq as usize..batch_seq as usize + 2]
        .iter()
        .map(|e| {
            (
                e.entry().body["action"].clone(),
                e.entry().body["outcome"].clone(),
            )
        })
        .collect();
    assert_eq!(
        batch,
        vec![(json!("read"), json!("deny")), (json!("admin"), json!("deny"))]
    );
    // The task's credential was recorded after its decision, before it existed.
    let start = entries
        .iter()
        .position(|e| e.entry().body["action"] == "task.start")
        .unwrap();
    assert_eq!(entries[start + 1].entry().kind.as_str(), "token_issued");
    assert_eq!(entries[start + 1].entry().subject.as_deref(), Some(task.as_str()));
    // Changes name the human who made them.
    let activate = entries
        .iter()
        .find(|e| e.entry().body["op"] == "agent.activate")
        .unwrap();
    assert_eq!(activate.entry().actor, "admin@example.com");

    // No secret ever reaches the ledger: not the sensitive argument, not a task token, not the admin's
    // API token.
    for e in &entries {
        let text = String::from_utf8_lossy(e.bytes());
        assert!(!text.contains(secret_value), "{text}");
        assert!(!text.contains(&token), "{text}");
        assert!(!text.contains(&api.admin), "{text}");
        assert!(!text.contains("wdn_jt_"), "join token in {text}");
    }

    api.state.ledger.shutdown().await;
    let report = verify(&api).await;
    assert_eq!(report.entries, entries.len() as u64);
    assert_eq!(report.unsigned_tail, 0, "shutdown signs the final head");
}

async fn refusals_are_recorded_with_their_actor(api: Api, _db: Db) {
    seed(&api).await;
    let auditor = mint(
        &api.store,
        "audit@example.com",
        &[Role::Auditor],
        chrono::Duration::hours(1),
    )
    .await;
    // 401: no credentials.
    let (s, _) = api.call(Method::GET, "/v1/agents", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // 403: an auditor may not change the registry; nothing is changed, and the refusal names them.
    let before = api.agent_count().await;
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/agents",
            Some(&auditor),
            Some(common::agent_body("nope")),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(api.agent_count().await, before);
    // 400: a malformed body.
    let (s, _) = api
        .admin(Method::POST, "/v1/upstreams", Some(json!({"name": "x"})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A bad task token at the decision point.
    let (s, _, _) = authorize(
        &api,
        "not-a-token",
        json!({"action": "read", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A change that is allowed but then fails (a duplicate) is recorded, then marked failed.
    let (s, _) = api
        .admin(
            Method::POST,
            "/v1/humans",
            Some(json!({"email": "owner@example.com", "display_name": "Again", "roles": ["owner"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    let entries = all_entries(api.store.as_ref()).await;
    let denials: Vec<_> = entries
        .iter()
        .map(|e| e.entry())
        .filter(|e| e.kind.as_str() == "decision" && e.body["policy_version"] == "builtin:request-checks")
        .collect();
    let find = |status: u64, path: &str| {
        denials
            .iter()
            .find(|e| e.body["status"] == status && e.body["resource"] == path)
            .unwrap_or_else(|| panic!("no {status} refusal of {path} in {denials:#?}"))
    };
    assert_eq!(find(401, "/v1/agents").actor, "anonymous");
    let forbidden = find(403, "/v1/agents");
    assert_eq!(forbidden.actor, "audit@example.com");
    assert_eq!(forbidden.body["outcome"], "deny");
    assert!(
        forbidden.body["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("forbidden:")
    );
    assert_eq!(find(400, "/v1/upstreams").actor, "admin@example.com");
    assert!(
        find(401, "/v1/authorize").body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("invalid_token")
    );
    let intent = entries
        .iter()
        .position(|e| {
            e.entry().body["op"] == "human.add"
                && e.entry().subject.as_deref() == Some("owner@example.com")
                && e.entry().body["display_name"] == "Again"
        })
        .expect("the duplicate was recorded before it was tried");
    let failed = entries[intent + 1..]
        .iter()
        .find(|e| e.entry().body["outcome"] == "failed")
        .expect("and then marked failed");
    assert_eq!(failed.entry().body["recorded_as"], intent as u64);
    assert_eq!(failed.entry().body["status"], 409);
    verify(&api).await;
}

async fn audit_api_serves_checkpoints_proofs_and_entries(api: Api, _db: Db) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    for _ in 0..5 {
        authorize(
            &api,
            &token,
            json!({"action": "read", "resource": {"upstream": "crm"}}),
        )
        .await;
    }
    let (s, first) = api.admin(Method::GET, "/v1/audit/checkpoint", None).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let first_size = first["size"].as_u64().unwrap();
    assert!(first_size >= 1);
    // More entries, then the final checkpoint.
    for _ in 0..7 {
        authorize(
            &api,
            &token,
            json!({"action": "write", "resource": {"upstream": "crm"}}),
        )
        .await;
    }
    api.state.ledger.shutdown().await;
    let auditor = mint(
        &api.store,
        "audit@example.com",
        &[Role::Auditor],
        chrono::Duration::hours(1),
    )
    .await;
    let (s, cp) = api
        .call(Method::GET, "/v1/audit/checkpoint", Some(&auditor), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{cp}");
    let size = cp["size"].as_u64().unwrap();
    let entries = all_entries(api.store.as_ref()).await;
    assert_eq!(size, entries.len() as u64);
    // The note verifies with the published keys and commits to the root it reports.
    let keys: Vec<_> = cp["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| warden_ledger::VerifierKey::parse(k.as_str().unwrap()).unwrap())
        .collect();
    let checkpoint = CheckpointVerifier::new(cp["origin"].as_str().unwrap(), keys)
        .unwrap()
        .verify(cp["note"].as_str().unwrap())
        .unwrap();
    assert_eq!(checkpoint.size, size);
    let root = warden_ledger::Hash::from_hex(cp["root"].as_str().unwrap()).unwrap();
    assert_eq!(checkpoint.root, root);
    for index in [0, size / 2, size - 1] {
        let (s, p) = api
            .call(
                Method::GET,
                &format!("/v1/audit/proof/inclusion?index={index}"),
                Some(&auditor),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{p}");
        let proof: Vec<_> = p["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| warden_ledger::Hash::from_hex(h.as_str().unwrap()).unwrap())
            .collect();
        let leaf = entries[index as usize].leaf_hash();
        assert_eq!(p["leaf_hash"], leaf.to_hex());
        warden_ledger::verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
    }
    let (s, p) = api
        .call(
            Method::GET,
            &format!("/v1/audit/proof/consistency?first={first_size}"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let proof: Vec<_> = p["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| warden_ledger::Hash::from_hex(h.as_str().unwrap()).unwrap())
        .collect();
    warden_ledger::verify_consistency(
        first_size,
        size,
        &warden_ledger::Hash::from_hex(first["root"].as_str().unwrap()).unwrap(),
        &root,
        &proof,
    )
    .unwrap();
    // Bad proof requests are 400s naming the field.
    let (s, e) = api
        .call(
            Method::GET,
            &format!("/v1/audit/proof/inclusion?index={size}"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("index")),
        "{e}"
    );
    let (s, e) = api
        .call(
            Method::GET,
            &format!("/v1/audit/proof/consistency?first=1&second={}", size + 5),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(
        (s, e["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("second")),
        "{e}"
    );
    // Entries page by sequence number and filter by agent.
    let (s, page) = api
        .call(
            Method::GET,
            "/v1/audit/entries?from=2&limit=3",
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let seqs: Vec<_> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!((seqs, page["next"].as_u64()), (vec![2, 3, 4], Some(5)));
    let (_, bots) = api
        .call(
            Method::GET,
            "/v1/audit/entries?agent=bot&limit=1000",
            Some(&auditor),
            None,
        )
        .await;
    let bots = bots["entries"].as_array().unwrap();
    assert!(bots.len() >= 14, "{}", bots.len());
    assert!(bots.iter().all(|e| e["entry"]["body"]["agent"] == "bot"));
    // An owner may not read the ledger.
    let owner = mint(
        &api.store,
        "o2@example.com",
        &[Role::Owner],
        chrono::Duration::hours(1),
    )
    .await;
    let (s, _) = api
        .call(Method::GET, "/v1/audit/entries", Some(&owner), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn a_ledger_that_cannot_write_denies_and_recovers(api: Api, db: Db) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, task) = started(&api, &bot, &["crm"]).await;
    let mut acknowledged = Vec::new();
    let (_, h, _) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "crm"}}),
    )
    .await;
    acknowledged.push(seq_header(&h));
    let size_before = api.store.ledger_head().await.unwrap().size();

    db.break_ledger().await;
    // A decision is not answered without its entry: 503, and the reason.
    let (s, _, e) = authorize(
        &api,
        &token,
        json!({"action": "read", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("ledger_unavailable")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("audit ledger"), "{e}");
    let (s, health) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["ledger"]["status"], "failing", "{health}");
    // No credential is issued, and no change is made.
    let (s, t) = start(&api, &bot, &intent(&["crm"], &[]), None).await;
    assert_eq!(
        (s, t["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("temporarily_unavailable")),
        "{t}"
    );
    let tasks_before = api.store.list_tasks(&Default::default()).await.unwrap().len();
    let agents_before = api.agent_count().await;
    let (s, _) = api
        .admin(Method::POST, "/v1/agents", Some(common::agent_body("later")))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.agent_count().await, agents_before);
    assert_eq!(
        api.store.list_tasks(&Default::default()).await.unwrap().len(),
        tasks_before
    );
    // Taking privileges away still works: refusing a revocation would fail open.
    let (s, b) = api
        .admin(
            Method::POST,
            &format!("/v1/tasks/{task}/end"),
            Some(json!({"reason": "incident"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        api.store.ledger_head().await.unwrap().size(),
        size_before,
        "nothing was written"
    );

    db.repair_ledger().await;
    // The writer notices on its own (its idle probe), then actions work again.
    let mut healthy = false;
    for _ in 0..50 {
        let (s, _) = api.call(Method::GET, "/healthz", None, None).await;
        if s == StatusCode::OK {
            healthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(healthy, "the ledger recovers by itself");
    let (token2, _) = started(&api, &bot, &["crm"]).await;
    let (s, h, _) = authorize(
        &api,
        &token2,
        json!({"action": "read", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    acknowledged.push(seq_header(&h));
    api.state.ledger.shutdown().await;
    let report = verify(&api).await;
    let entries = all_entries(api.store.as_ref()).await;
    for seq in acknowledged {
        assert!(seq < report.entries);
        assert_eq!(entries[seq as usize].entry().body["action"], "read");
    }
    let _ = Arc::clone(&api.store);
}

/// The gateway under a ledger that cannot write: a request gets JSON-RPC -32015 in a 200 answer (MCP
/// clients read a request's errors there), a stream is refused with 503; the clearance that would
/// let either reach the upstream is never made (`pipeline::commit`).
async fn mcp_messages_are_not_sent_when_their_decision_cannot_be_recorded(api: Api, db: Db) {
    seed(&api).await;
    let bot = enrolled(&api, "bot", &["crm"]).await;
    let (token, _) = started(&api, &bot, &["crm"]).await;
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("accept", "application/json, text/event-stream"),
    ];
    db.break_ledger().await;
    let (s, _, v) = send(
        &api,
        Method::POST,
        "/mcp/crm",
        &headers,
        Some(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_i64()),
        (StatusCode::OK, Some(-32015)),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was forwarded"),
        "{v}"
    );
    let (s, _, v) = send(&api, Method::GET, "/mcp/crm", &headers, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_i64()),
        (StatusCode::SERVICE_UNAVAILABLE, Some(-32015)),
        "{v}"
    );
    db.repair_ledger().await;
}
