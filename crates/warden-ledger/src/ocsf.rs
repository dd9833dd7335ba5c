//! OCSF export for SIEMs: one OCSF event (JSON) per ledger entry, schema version pinned to
//! [`OCSF_VERSION`].
//!
//! | entry kind | OCSF class | activity | status |
//! |---|---|---|---|
//! | `decision` | 6003 API Activity (category 6, Application Activity) | from the body's `action`: `read` 2 Read, `write` 3 Update, `destructive` 4 Delete, `create` 1 Create, else 99 Other | allow 1 Success; deny, needs_approval 2 Failure |
//! | `token_issued`, `token_renewed` | 3003 Authorize Session (category 3, Identity & Access Management) | 1 Assign Privileges | 1 Success |
//! | `enrollment`, `approval_requested`, `grant_issued` | 6003 API Activity | 1 Create | 1 Success |
//! | `task_ended`, `token_revoked` | 6003 API Activity | 4 Delete | 1 Success |
//! | `approval_vote`, `approval_denied`, `approval_expired`, `approval_granted` (legacy), `action_result`, `registry_change`, `policy_change`, `key_change`, `emergency_stop` | 6003 API Activity | 3 Update (or the body's `operation`: create/update/delete) | 1 Success |
//! | `approval_vote_refused`, `change_failed` | 6003 API Activity | 3 Update | 2 Failure, `status_detail` the reason |
//! | `secret_withheld` | 6003 API Activity | 99 Other | 2 Failure |
//! | unknown (newer) kinds | 6003 API Activity | 99 Other | 1 Success |
//!
//! The match in `classify` names every kind, so a kind added without a mapping does not compile.
//!
//! `type_uid = class_uid × 100 + activity_id`. A decision's outcome and reasons go into
//! `actor.authorizations` (OCSF Authorization Result objects: `decision`, `policy.uid`/`name`/
//! `version`), its policy set version into each `policy.version`. `status_id` is 1 Success for allow
//! and for non-decision events, 2 Failure for deny and needs_approval (with `status_detail`).
//!
//! Tamper evidence survives the trip: `metadata.sequence` is the entry's sequence number,
//! `metadata.uid` its leaf hash, and `unmapped.warden` keeps sequence, leaf hash, kind, subject and the
//! whole body, so a SIEM rule can alert on a gap in `metadata.sequence` (a deleted event) and an
//! auditor can match any event back to a proof.

use serde_json::{Map, Value, json};

use crate::entry::{EncodedEntry, EntryKind};

/// The OCSF schema version this mapping targets.
pub const OCSF_VERSION: &str = "1.3.0";

/// Product details for `metadata.product` and the log name.
#[derive(Clone, Debug)]
pub struct OcsfOptions {
    pub product_name: String,
    pub vendor_name: String,
    pub product_version: String,
    /// `metadata.log_name`: the log's origin.
    pub log_name: Option<String>,
}

impl Default for OcsfOptions {
    fn default() -> Self {
        Self {
            product_name: "Warden".into(),
            vendor_name: "Warden".into(),
            product_version: env!("CARGO_PKG_VERSION").into(),
            log_name: None,
        }
    }
}

fn s<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

/// The OCSF event of one entry.
pub fn to_ocsf(encoded: &EncodedEntry, options: &OcsfOptions) -> Value {
    let e = encoded.entry();
    let body = &e.body;
    let time_ms = e.at.timestamp_millis();

    let mut event = Map::new();
    let (category_uid, category_name, class_uid, class_name, activity_id, activity_name) =
        classify(&e.kind, body);
    event.insert("category_uid".into(), json!(category_uid));
    event.insert("category_name".into(), json!(category_name));
    event.insert("class_uid".into(), json!(class_uid));
    event.insert("class_name".into(), json!(class_name));
    event.insert("activity_id".into(), json!(activity_id));
    event.insert("activity_name".into(), json!(activity_name));
    event.insert("type_uid".into(), json!(class_uid * 100 + activity_id));
    event.insert(
        "type_name".into(),
        json!(format!("{class_name}: {activity_name}")),
    );
    event.insert("time".into(), json!(time_ms));
    event.insert("severity_id".into(), json!(1));
    event.insert("severity".into(), json!("Informational"));

    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": options.product_name,
            "vendor_name": options.vendor_name,
            "version": options.product_version,
        },
        "uid": encoded.leaf_hash().to_hex(),
        "sequence": e.seq,
        "event_code": e.kind.as_str(),
        "original_time": e.at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    });
    if let Some(log) = &options.log_name {
        metadata["log_name"] = json!(log);
    }
    if let Some(task) = s(body, "task") {
        metadata["correlation_uid"] = json!(task);
    }
    event.insert("metadata".into(), metadata);

    let mut actor = json!({ "user": { "uid": e.actor, "name": e.actor } });
    if let Some(task) = s(body, "task") {
        actor["session"] = json!({ "uid": task });
    }

    let outcome = s(body, "outcome");
    let (status_id, status) = match (&e.kind, outcome) {
        (EntryKind::Decision, Some("allow")) | (EntryKind::Decision, None) => (1, "Success"),
        (EntryKind::Decision, Some(_)) => (2, "Failure"),
        (EntryKind::ApprovalVoteRefused | EntryKind::ChangeFailed | EntryKind::SecretWithheld, _) => {
            if let Some(why) = s(body, "reason").or(s(body, "error")) {
                event.insert("status_detail".into(), json!(why));
            }
            (2, "Failure")
        }
        // Legacy failure markers: the change's own kind with `outcome: failed`.
        (_, Some("failed")) => (2, "Failure"),
        _ => (1, "Success"),
    };
    event.insert("status_id".into(), json!(status_id));
    event.insert("status".into(), json!(status));

    match class_uid {
        3003 => {
            let user = e.subject.as_deref().or(s(body, "agent")).unwrap_or(&e.actor);
            event.insert("user".into(), json!({ "uid": user, "name": user }));
            let privileges: Vec<String> = match body.get("privileges").or(body.get("scope")) {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Some(Value::String(scope)) => scope.split_whitespace().map(str::to_owned).collect(),
                _ => Vec::new(),
            };
            let privileges = if privileges.is_empty() {
                vec![format!("task:{}", s(body, "task").unwrap_or("unknown"))]
            } else {
                privileges
            };
            event.insert("privileges".into(), json!(privileges));
            if let Some(task) = s(body, "task") {
                event.insert("session".into(), json!({ "uid": task }));
            }
        }
        _ => {
            let operation = s(body, "resource")
                .or(s(body, "operation"))
                .or(s(body, "action"))
                .unwrap_or(e.kind.as_str());
            let mut api = json!({ "operation": operation });
            if let Some(up) = s(body, "upstream") {
                api["service"] = json!({ "name": up });
            }
            if let Some(req) = s(body, "request_id") {
                api["request"] = json!({ "uid": req });
            }
            event.insert("api".into(), api);
            let src = match s(body, "client_ip") {
                Some(ip) => json!({ "ip": ip }),
                None => json!({ "name": e.actor }),
            };
            event.insert("src_endpoint".into(), src);
            let resource = s(body, "resource").or(e.subject.as_deref());
            if let Some(r) = resource {
                let mut res = json!({ "uid": r, "name": r });
                if let Some(up) = s(body, "upstream") {
                    res["group"] = json!({ "name": up });
                }
                event.insert("resources".into(), json!([res]));
            }
        }
    }

    if e.kind == EntryKind::Decision {
        let decision = match outcome {
            Some("allow") => "allowed",
            Some("deny") => "denied",
            Some("needs_approval") => "needs_approval",
            _ => "unknown",
        };
        if decision != "allowed" {
            event.insert("status_detail".into(), json!(decision));
        }
        let version = s(body, "policy_version");
        let reasons: Vec<&str> = body
            .get("reasons")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let policy = |uid: Option<&str>| {
            let mut p = Map::new();
            if let Some(uid) = uid {
                p.insert("uid".into(), json!(uid));
                p.insert("name".into(), json!(uid));
            }
            if let Some(v) = version {
                p.insert("version".into(), json!(v));
            }
            Value::Object(p)
        };
        let authorizations: Vec<Value> = if reasons.is_empty() {
            vec![json!({ "decision": decision, "policy": policy(None) })]
        } else {
            reasons
                .iter()
                .map(|r| json!({ "decision": decision, "policy": policy(Some(r)) }))
                .collect()
        };
        actor["authorizations"] = Value::Array(authorizations);
        let message = format!(
            "{} {} {}{}",
            e.actor,
            decision,
            s(body, "action").unwrap_or("action"),
            s(body, "resource")
                .map(|r| format!(" on {r}"))
                .unwrap_or_default()
        );
        event.insert("message".into(), json!(message));
    } else {
        let message = match &e.subject {
            Some(sub) => format!("{} by {} on {}", e.kind, e.actor, sub),
            None => format!("{} by {}", e.kind, e.actor),
        };
        event.insert("message".into(), json!(message));
    }
    event.insert("actor".into(), actor);

    let mut warden = json!({
        "seq": e.seq,
        "leaf_hash": encoded.leaf_hash().to_hex(),
        "kind": e.kind.as_str(),
        "body": body,
    });
    if let Some(sub) = &e.subject {
        warden["subject"] = json!(sub);
    }
    event.insert("unmapped".into(), json!({ "warden": warden }));
    Value::Object(event)
}

fn classify(kind: &EntryKind, body: &Value) -> (u32, &'static str, u32, &'static str, u32, &'static str) {
    const API: (u32, &str, u32, &str) = (6, "Application Activity", 6003, "API Activity");
    let crud = |id: u32| -> (u32, &'static str) {
        match id {
            1 => (1, "Create"),
            2 => (2, "Read"),
            3 => (3, "Update"),
            4 => (4, "Delete"),
            _ => (99, "Other"),
        }
    };
    let (a, name) = match kind {
        EntryKind::TokenIssued | EntryKind::TokenRenewed => {
            return (
                3,
                "Identity & Access Management",
                3003,
                "Authorize Session",
                1,
                "Assign Privileges",
            );
        }
        EntryKind::Decision => crud(match s(body, "action") {
            Some("create") => 1,
            Some("read") => 2,
            Some("write") => 3,
            Some("destructive") => 4,
            _ => 99,
        }),
        // Every kind by name: a new kind must be placed here to compile.
        EntryKind::ApprovalVoteRefused | EntryKind::ChangeFailed => crud(3),
        EntryKind::SecretWithheld | EntryKind::Other(_) => crud(99),
        EntryKind::Enrollment | EntryKind::ApprovalRequested | EntryKind::GrantIssued => crud(1),
        EntryKind::TaskEnded | EntryKind::TokenRevoked => crud(4),
        EntryKind::ApprovalVote
        | EntryKind::ApprovalDenied
        | EntryKind::ApprovalExpired
        | EntryKind::ApprovalGrantedLegacy
        | EntryKind::ActionResult
        | EntryKind::RegistryChange
        | EntryKind::PolicyChange
        | EntryKind::KeyChange
        | EntryKind::EmergencyStop => crud(match s(body, "operation") {
            Some("create") => 1,
            Some("delete") => 4,
            _ => 3,
        }),
    };
    (API.0, API.1, API.2, API.3, a, name)
}

/// Writes one OCSF event per entry, one JSON object per line.
pub fn write_ocsf_lines<'a, W: std::io::Write>(
    mut out: W,
    entries: impl IntoIterator<Item = &'a EncodedEntry>,
    options: &OcsfOptions,
) -> std::io::Result<W> {
    for e in entries {
        serde_json::to_writer(&mut out, &to_ocsf(e, options))?;
        out.write_all(b"\n")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{DecisionRecord, NewEntry, Outcome};
    use chrono::{TimeZone, Utc};

    fn at() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn decision_maps_to_api_activity_with_authorizations() {
        let body = DecisionRecord {
            outcome: Outcome::Deny,
            reasons: vec!["forbid-prod-writes".into(), "no-approval".into()],
            policy_version: "sha256:feed".into(),
            action: "write".into(),
            upstream: Some("crm".into()),
            resource: Some("update_contact".into()),
            task: Some("task-1".into()),
            request_id: Some("req-9".into()),
            arguments: None,
            errors: vec![],
            latency_us: 17,
        }
        .to_body();
        let e = NewEntry::new(at(), EntryKind::Decision, "spiffe://acme/agent/bot")
            .body(body)
            .at_seq(7)
            .encode()
            .unwrap();
        let v = to_ocsf(
            &e,
            &OcsfOptions {
                log_name: Some("acme/ledger".into()),
                ..Default::default()
            },
        );
        assert_eq!(v["class_uid"], 6003);
        assert_eq!(v["category_uid"], 6);
        assert_eq!(v["activity_id"], 3);
        assert_eq!(v["type_uid"], 600303);
        assert_eq!(v["metadata"]["version"], OCSF_VERSION);
        assert_eq!(v["metadata"]["sequence"], 7);
        assert_eq!(v["metadata"]["uid"], e.leaf_hash().to_hex());
        assert_eq!(v["metadata"]["log_name"], "acme/ledger");
        assert_eq!(v["metadata"]["correlation_uid"], "task-1");
        assert_eq!(v["time"], at().timestamp_millis());
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status_detail"], "denied");
        assert_eq!(v["api"]["operation"], "update_contact");
        assert_eq!(v["api"]["service"]["name"], "crm");
        assert_eq!(v["resources"][0]["name"], "update_contact");
        let auth = v["actor"]["authorizations"].as_array().unwrap();
        assert_eq!(auth.len(), 2);
        assert_eq!(auth[0]["decision"], "denied");
        assert_eq!(auth[0]["policy"]["uid"], "forbid-prod-writes");
        assert_eq!(auth[0]["policy"]["version"], "sha256:feed");
        assert_eq!(v["unmapped"]["warden"]["seq"], 7);
        assert_eq!(v["unmapped"]["warden"]["body"]["latency_us"], 17);
    }

    #[test]
    fn token_issuance_maps_to_authorize_session() {
        let e = NewEntry::new(at(), EntryKind::TokenIssued, "warden")
            .subject("spiffe://acme/agent/bot")
            .body(json!({"task": "t1", "scope": "crm:read crm:write"}))
            .at_seq(0)
            .encode()
            .unwrap();
        let v = to_ocsf(&e, &OcsfOptions::default());
        assert_eq!(v["class_uid"], 3003);
        assert_eq!(v["type_uid"], 300301);
        assert_eq!(v["user"]["uid"], "spiffe://acme/agent/bot");
        assert_eq!(v["privileges"], json!(["crm:read", "crm:write"]));
        assert_eq!(v["session"]["uid"], "t1");
    }

    #[test]
    fn every_known_kind_has_a_variant_and_an_ocsf_class() {
        for name in EntryKind::KNOWN {
            let kind = EntryKind::parse(name).unwrap();
            assert!(
                !matches!(kind, EntryKind::Other(_)),
                "`{name}` is known but parses as Other"
            );
            let e = NewEntry::new(at(), kind.clone(), "admin@acme.test")
                .subject("x")
                .at_seq(0)
                .encode()
                .unwrap();
            let v = to_ocsf(&e, &OcsfOptions::default());
            let class = v["class_uid"].as_u64().unwrap();
            assert!([6003, 3003].contains(&class), "`{name}` maps to class {class}");
            let activity = v["activity_id"].as_u64().unwrap();
            // A decision's activity comes from its action (none here); only withheld secrets are Other.
            assert!(
                activity != 99 || matches!(kind, EntryKind::SecretWithheld | EntryKind::Decision),
                "`{name}` maps to Other"
            );
            assert_eq!(v["type_uid"].as_u64().unwrap(), class * 100 + activity);
            assert_eq!(v["metadata"]["event_code"], *name);
        }
    }

    #[test]
    fn refused_votes_and_failed_changes_are_failures() {
        for (kind, body) in [
            (
                EntryKind::ApprovalVoteRefused,
                json!({"reason": "separation of duties"}),
            ),
            (
                EntryKind::ChangeFailed,
                json!({"error": "conflict", "recorded_as": 3}),
            ),
            (EntryKind::RegistryChange, json!({"outcome": "failed"})),
        ] {
            let e = NewEntry::new(at(), kind, "a@acme.test")
                .body(body)
                .at_seq(4)
                .encode()
                .unwrap();
            let v = to_ocsf(&e, &OcsfOptions::default());
            assert_eq!(v["status_id"], 2, "{v}");
        }
        let e = NewEntry::new(at(), EntryKind::ApprovalVote, "a@acme.test")
            .body(json!({"verdict": "approve", "votes": 1, "required": 2}))
            .at_seq(5)
            .encode()
            .unwrap();
        let v = to_ocsf(&e, &OcsfOptions::default());
        assert_eq!(
            (v["status_id"].as_u64(), v["activity_id"].as_u64()),
            (Some(1), Some(3))
        );
    }

    #[test]
    fn admin_changes_and_lines() {
        let entries: Vec<EncodedEntry> = [
            (EntryKind::Enrollment, 1),
            (EntryKind::TaskEnded, 4),
            (EntryKind::PolicyChange, 3),
            (EntryKind::Other("grant_used".into()), 99),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (k, _))| {
            NewEntry::new(at(), k, "admin@acme.test")
                .subject("x")
                .at_seq(i as u64)
                .encode()
                .unwrap()
        })
        .collect();
        let out = write_ocsf_lines(Vec::new(), &entries, &OcsfOptions::default()).unwrap();
        let lines: Vec<Value> = std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<u64> = lines.iter().map(|v| v["activity_id"].as_u64().unwrap()).collect();
        assert_eq!(ids, vec![1, 4, 3, 99]);
        for (i, v) in lines.iter().enumerate() {
            assert_eq!(v["metadata"]["sequence"], i as u64);
            assert_eq!(v["type_uid"], 6003 * 100 + v["activity_id"].as_u64().unwrap());
            assert!(v["src_endpoint"].is_object());
        }
    }
}
