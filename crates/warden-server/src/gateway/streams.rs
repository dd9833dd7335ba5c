//! Streams: SSE answers to a `POST`, the server's `GET` stream, resumed streams and stdio sessions'
//! streams — every event through the outbound filter, every event id sealed.
//!
//! Resumability: the upstream's event ids never reach the agent. Each event id handed out is
//! sealed (`GatewayKeys::seal_event`) with the task, the upstream and the request the stream
//! answers; a `GET` with `Last-Event-ID` is accepted only with an id Warden sealed for this task and
//! upstream, and the replay is filtered with the request from inside the seal — exactly as the
//! original stream was. A resume Warden cannot filter (any other id) is refused.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use warden_gateway::credential::Scrubber;
use warden_gateway::sse::SseEvent;

use warden_gateway::jsonrpc;

use super::clearance::After;
use super::outbound::{Out, Outbound};
use super::upstream::{AnswerLimits, UpstreamError};
use crate::AppState;

/// Relays an SSE answer event by event through the filter, with sealed event ids, and ends it
/// when the task stops being live. A stream that answers a request is held to the answer's time
/// limits (idle, whole answer) until the answer came: when one fires, the agent gets the JSON-RPC
/// error -32014 naming it as the stream's last event, the result is recorded, and the upstream
/// connection is closed. A stream that ends without the answer and without event ids to resume
/// from is answered the same way.
pub(super) fn sse_relay(resp: reqwest::Response, filter: Outbound) -> Response {
    use futures_util::StreamExt as _;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(async move {
        let state = filter.state.clone();
        let task = filter.caller.task.id;
        let upstream = filter.upstream.name.to_string();
        let mut parser = warden_gateway::sse::SseParser::new(Default::default());
        let mut stream = resp.bytes_stream();
        let ended = task_ended(state.clone(), task);
        tokio::pin!(ended);
        // A `subscriptions/listen` stream has no answer to wait for: like the `GET` stream, it
        // lasts while the task is live.
        let listen = filter.post.as_ref().is_some_and(|p| p.after == After::Listen);
        let times = filter
            .post
            .as_ref()
            .filter(|_| !listen)
            .map(|p| AnswerLimits::new(&state.gateway.settings, tokio::time::Instant::from_std(p.sent)));
        let mut answered = false;
        let mut resumable = false;
        let failure = loop {
            let next = async {
                match times.as_ref().filter(|_| !answered) {
                    Some(t) => t.within(&upstream, stream.next()).await,
                    None => Ok(stream.next().await),
                }
            };
            tokio::select! {
                chunk = next => {
                    let chunk = match chunk {
                        Err(e) => break Some(e),
                        Ok(Some(Ok(chunk))) => chunk,
                        Ok(_) if answered || resumable || listen || filter.post.is_none() => break None,
                        Ok(_) => break Some(UpstreamError::Protocol(format!(
                            "upstream `{upstream}` ended its event stream without an answer"
                        ))),
                    };
                    let events = match parser.push(&chunk) {
                        Ok(ev) => ev,
                        Err(e) => {
                            tracing::warn!(%upstream, error = %e, "the upstream's event stream is malformed; closed");
                            break (!answered && filter.post.is_some()).then(|| UpstreamError::Protocol(format!(
                                "upstream `{upstream}` sent a malformed event stream: {e}"
                            )));
                        }
                    };
                    for ev in events {
                        resumable |= ev.id.as_deref().is_some_and(|id| !id.is_empty());
                        let Some((ev, answer)) = filter_event(&filter, ev).await else { continue };
                        answered |= answer;
                        if tx.send(bytes::Bytes::from(warden_gateway::sse::encode(&ev))).await.is_err() {
                            return;
                        }
                    }
                }
                () = &mut ended => {
                    tracing::info!(%task, %upstream, "task no longer live; MCP stream closed");
                    return;
                }
            }
        };
        // Dropping the stream closes the upstream connection.
        drop(stream);
        if let (Some(e), Some(p)) = (failure, &filter.post) {
            tracing::warn!(error = %e, "upstream MCP server failed");
            filter.result(&e.result_status(), &[]);
            let error =
                jsonrpc::error_response(Some(&p.id), jsonrpc::UPSTREAM_UNAVAILABLE, &e.to_string(), None);
            let ev = SseEvent {
                event: Some("message".into()),
                data: error.to_string(),
                id: None,
                retry: None,
            };
            let _ = tx
                .send(bytes::Bytes::from(warden_gateway::sse::encode(&ev)))
                .await;
        }
    });
    sse_response(rx)
}

/// One upstream event as the agent gets it: its data through the filter (dropped when the filter
/// drops it), its id sealed; and whether it is the answer to the request the stream carries.
async fn filter_event(filter: &Outbound, mut ev: SseEvent) -> Option<(SseEvent, bool)> {
    let mut answer = false;
    if !ev.data.is_empty() {
        match filter.bytes(ev.data.as_bytes()).await {
            Out::Send(v) => {
                answer = filter
                    .post
                    .as_ref()
                    .is_some_and(|p| super::relay::is_answer_to(&v, &p.id));
                ev.data = v.to_string();
            }
            Out::Drop(why) => {
                tracing::warn!(upstream = %filter.upstream.name, %why, "an upstream event was dropped by the outbound filter");
                return None;
            }
        }
    }
    ev.event = ev.event.filter(|e| e == "message");
    ev.id = ev.id.map(|id| {
        filter.state.gateway.keys.seal_event(
            &id,
            filter.caller.task.id,
            filter.upstream.name.as_str(),
            filter.post.as_ref(),
        )
    });
    Some((ev, answer))
}

/// A stdio session's server-initiated messages as an event stream, through the filter, while the
/// task is live.
pub(super) fn stdio_stream(
    mut events: tokio::sync::broadcast::Receiver<serde_json::Value>,
    filter: Outbound,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(async move {
        let ended = task_ended(filter.state.clone(), filter.caller.task.id);
        tokio::pin!(ended);
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let value = match ev {
                        Ok(v) => v,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(upstream = %filter.upstream.name, missed = n, "a slow MCP client missed server messages");
                            continue;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    let data = match serde_json::to_vec(&value) {
                        Ok(d) => d,
                        Err(_) => continue,
                    };
                    let data = match filter.bytes(&data).await {
                        Out::Send(v) => v.to_string(),
                        Out::Drop(why) => {
                            tracing::warn!(upstream = %filter.upstream.name, %why, "a stdio server message was dropped by the outbound filter");
                            continue;
                        }
                    };
                    let ev = SseEvent { event: Some("message".into()), data, id: None, retry: None };
                    if tx.send(bytes::Bytes::from(warden_gateway::sse::encode(&ev))).await.is_err() {
                        return;
                    }
                }
                () = &mut ended => return,
            }
        }
    });
    sse_response(rx)
}

/// The scrubber of a stdio session's process secrets.
pub(super) fn stdio_scrubber(state: &AppState, key: &str) -> Arc<Scrubber> {
    state
        .gateway
        .stdio
        .secrets(key)
        .map(|s| s.scrubber().clone())
        .unwrap_or_else(|| Arc::new(Scrubber::empty()))
}

/// How often a stream checks that its task is still live.
const LIVENESS_CHECK: Duration = Duration::from_millis(500);

/// Resolves once the task's credentials stop working (ended, revoked, expired): every stream held
/// for it ends then, on every node (the task cache follows the store's revocation events).
pub(super) async fn task_ended(state: AppState, task: uuid::Uuid) {
    let mut tick = tokio::time::interval(LIVENESS_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state
            .identity
            .tasks
            .live_task(state.store.as_ref(), task, Utc::now())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The response that streams what the relay task sends.
fn sse_response(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Response {
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
