//! `/v1/audit/*`: the ledger for auditors and monitors — the latest signed checkpoint, RFC 9162
//! inclusion and consistency proofs (so anyone holding a checkpoint can check an entry or that the
//! log only grew), and the entries themselves, with long polling for `warden audit tail`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warden_core::Permission;
use warden_ledger::{EncodedEntry, Hash};
use warden_store::LedgerFilter;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::json::ApiQuery;

/// Most entries one `GET /v1/audit/entries` returns.
pub const MAX_ENTRIES_PAGE: u32 = 1000;
/// Longest `wait` of a long poll, seconds (below the default 30 s request timeout).
pub const MAX_WAIT_SECS: u64 = 25;

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointInfo {
    /// The log's origin (first line of the checkpoint).
    pub origin: String,
    pub size: u64,
    /// Root hash of the tree of `size` entries (hex).
    pub root: String,
    /// The checkpoint as a C2SP signed note.
    pub note: String,
    /// Verifier keys (C2SP vkey strings) of the nodes that sign this log's checkpoints.
    pub keys: Vec<String>,
}

/// The quality a request's `Accept` gives `ty/sub`: that of the most specific range that matches it
/// (`ty/sub`, then `ty/*`, then `*/*`; RFC 9110 §12.5.1), 0 when none does. Ranges whose `q` does not
/// parse are ignored.
fn accept_quality(accept: &str, ty: &str, sub: &str) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let Some((t, s)) = range.split_once('/') else {
            continue;
        };
        let specificity = match (t, s) {
            (t, s) if t == ty && s == sub => 2,
            (t, "*") if t == ty => 1,
            ("*", "*") => 0,
            _ => continue,
        };
        let mut q = Some(1.0f32);
        for p in parts {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = v.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q));
            }
        }
        let Some(q) = q else { continue };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// Does the request prefer the raw signed note (`text/plain`) to JSON? Ties keep JSON, the default.
fn prefers_text(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    accept_quality(accept, "text", "plain") > accept_quality(accept, "application", "json")
}

#[utoipa::path(
    get, path = "/v1/audit/checkpoint", tag = "audit",
    responses(
        (status = 200, description = "The latest signed checkpoint: JSON by default; the raw C2SP signed note (what `warden audit verify --checkpoint` and witnesses take) when `Accept` prefers `text/plain`",
            content((CheckpointInfo = "application/json"), (String = "text/plain"))),
        (status = 404, description = "No checkpoint yet", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn checkpoint(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let cp = state
        .store
        .latest_ledger_checkpoint()
        .await?
        .ok_or_else(|| ApiError::NotFound("the ledger has no checkpoint yet".into()))?;
    let vary = (header::VARY, HeaderValue::from_static("accept"));
    if prefers_text(&headers) {
        let text = (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Ok(([text, vary], cp.note).into_response());
    }
    let parsed = warden_ledger::bundle::peek_checkpoint(&cp.note)
        .ok_or_else(|| ApiError::Internal(format!("stored checkpoint at size {} does not parse", cp.size)))?;
    let keys = state
        .store
        .ledger_keys()
        .await?
        .into_iter()
        .map(|k| k.vkey)
        .collect();
    Ok((
        [vary],
        Json(CheckpointInfo {
            origin: parsed.origin,
            size: cp.size,
            root: parsed.root.to_hex(),
            note: cp.note,
            keys,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The entry's sequence number.
    pub index: u64,
    /// Tree size to prove against (default: the latest checkpoint's).
    pub size: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub leaf_hash: String,
    /// RFC 9162 §2.1.3 audit path, hex, leaf to root.
    pub proof: Vec<String>,
}

/// The largest size a proof may be asked for: the latest checkpoint (only signed trees are proven).
async fn signed_size(state: &AppState) -> Result<u64, ApiError> {
    Ok(state
        .store
        .latest_ledger_checkpoint()
        .await?
        .map(|c| c.size)
        .unwrap_or(0))
}

fn hexes(v: Vec<Hash>) -> Vec<String> {
    v.iter().map(Hash::to_hex).collect()
}

fn proof_error(e: warden_store::ProofError) -> ApiError {
    match e {
        warden_store::ProofError::Request(m) => ApiError::bad_request(m.to_string()),
        warden_store::ProofError::Store(s) => s.into(),
    }
}

#[utoipa::path(
    get, path = "/v1/audit/proof/inclusion", tag = "audit", params(InclusionQuery),
    responses((status = 200, body = InclusionProof), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn inclusion(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let signed = signed_size(&state).await?;
    let size = q.size.unwrap_or(signed);
    if size > signed {
        return Err(ApiError::BadRequest {
            message: format!("size {size} is beyond the latest checkpoint ({signed})"),
            field: Some("size".into()),
        });
    }
    if q.index >= size {
        return Err(ApiError::BadRequest {
            message: format!("index {} is not in a tree of {size} entries", q.index),
            field: Some("index".into()),
        });
    }
    let leaf = state
        .store
        .ledger_nodes(&[warden_ledger::NodeId::leaf(q.index)])
        .await?;
    let proof = warden_store::inclusion_proof(state.store.as_ref(), q.index, size)
        .await
        .map_err(proof_error)?;
    Ok(Json(InclusionProof {
        index: q.index,
        size,
        leaf_hash: leaf.first().map(Hash::to_hex).unwrap_or_default(),
        proof: hexes(proof),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    pub first: u64,
    /// Default: the latest checkpoint's size.
    pub second: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyProof {
    pub first: u64,
    pub second: u64,
    /// RFC 9162 §2.1.4 consistency proof, hex.
    pub proof: Vec<String>,
}

#[utoipa::path(
    get, path = "/v1/audit/proof/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn consistency(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let signed = signed_size(&state).await?;
    let second = q.second.unwrap_or(signed);
    if second > signed {
        return Err(ApiError::BadRequest {
            message: format!("second {second} is beyond the latest checkpoint ({signed})"),
            field: Some("second".into()),
        });
    }
    if q.first == 0 || q.first > second {
        return Err(ApiError::BadRequest {
            message: format!("first must be between 1 and second ({second})"),
            field: Some("first".into()),
        });
    }
    let proof = warden_store::consistency_proof(state.store.as_ref(), q.first, second)
        .await
        .map_err(proof_error)?;
    Ok(Json(ConsistencyProof {
        first: q.first,
        second,
        proof: hexes(proof),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// Entries with a sequence number at or after this (default 0).
    pub from: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only entries about this agent.
    pub agent: Option<String>,
    /// When nothing matches yet, wait up to this many seconds for new entries (at most 25).
    pub wait: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub leaf_hash: String,
    /// The exact bytes hashed into the tree (base64).
    pub canonical: String,
    /// The entry, decoded.
    #[schema(value_type = Object)]
    pub entry: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntries {
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts (`from` of the next call).
    pub next: u64,
    /// Entries in the log when the page was read.
    pub size: u64,
}

#[utoipa::path(
    get, path = "/v1/audit/entries", tag = "audit", params(EntriesQuery),
    responses((status = 200, body = AuditEntries), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn entries(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EntriesQuery>,
) -> Result<Json<AuditEntries>, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_ENTRIES_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest {
            message: format!("limit must be between 1 and {MAX_ENTRIES_PAGE}"),
            field: Some("limit".into()),
        });
    }
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::BadRequest {
            message: format!("wait must be at most {MAX_WAIT_SECS} seconds"),
            field: Some("wait".into()),
        });
    }
    if let Some(a) = &q.agent {
        warden_core::AgentName::parse(a)?;
    }
    let from = q.from.unwrap_or(0);
    let filter = LedgerFilter {
        agent: q.agent.clone(),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let records = loop {
        let records = state.store.ledger_records(from, limit, &filter).await?;
        if !records.is_empty() || tokio::time::Instant::now() >= deadline {
            break records;
        }
        // Entries commit in batches every few milliseconds under load; polling the store keeps this
        // correct across nodes (another node's commits are as visible as this node's).
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let next = records.last().map_or(from, |r| r.seq + 1);
    // Read after the entries, so it covers them.
    let size = state.store.ledger_head().await?.size();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let encoded = EncodedEntry::decode(r.bytes.clone())
            .map_err(|e| ApiError::Internal(format!("ledger entry {} does not decode: {e}", r.seq)))?;
        out.push(AuditEntry {
            seq: r.seq,
            leaf_hash: encoded.leaf_hash().to_hex(),
            canonical: base64::engine::general_purpose::STANDARD.encode(&r.bytes),
            entry: encoded
                .entry()
                .to_value()
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        });
    }
    Ok(Json(AuditEntries {
        entries: out,
        next,
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_most_specific_range() {
        let text = |a: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(a).expect("header"));
            prefers_text(&h)
        };
        assert!(text("text/plain"));
        assert!(text("TEXT/Plain; charset=utf-8"));
        assert!(text("text/*"));
        assert!(text("application/json;q=0.5, text/plain"));
        assert!(text("*/*;q=0.1, text/plain"));
        assert!(!text("*/*"));
        assert!(!text("application/json"));
        assert!(!text("text/plain, application/json"), "a tie keeps JSON");
        assert!(!text("text/plain;q=0, */*"));
        assert!(!text("text/plain;q=0.4, application/json"));
        assert!(!text("image/png"));
        assert!(
            !text("text/plain;q=oops"),
            "a range whose q does not parse is ignored"
        );
        assert!(!text("garbage, ,;;,"));
        assert!(!prefers_text(&HeaderMap::new()));
    }
}
