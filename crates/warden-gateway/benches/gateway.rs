//! Gateway core benchmarks: the per-message work the MCP gateway adds before forwarding a call —
//! parsing a typical `tools/call` message, scanning (and redacting) a 4 KB argument object, digesting
//! a tool definition, reading a JSON-RPC message out of an SSE stream, and scrubbing the upstream's
//! credentials out of a 4 KB `tools/call` result. Run with
//! `cargo bench -p warden-gateway`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use warden_gateway::credential::Scrubber;
use warden_gateway::jsonrpc::{self, Limits, Message};
use warden_gateway::scan::Scanner;
use warden_gateway::sse::{self, SseEvent, SseLimits, SseParser};
use warden_gateway::tools::{ToolDefinition, ToolsLimits, hint_class};

/// A typical `tools/call`: 350 bytes.
fn tools_call() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "id": 42,
        "method": "tools/call",
        "params": {
            "name": "search_contacts",
            "arguments": {"query": "acme corp", "limit": 25, "fields": ["name", "email", "phone"], "include_archived": false},
            "_meta": {"progressToken": "c0ffee-17"}
        }
    }))
    .unwrap()
}

/// A 4 KB argument object of ordinary text, identifiers, numbers and nested records (no secrets:
/// the common case, where every string is examined in full).
fn arguments_4k() -> Value {
    let records: Vec<Value> = (0..20)
        .map(|i| {
            json!({
                "id": format!("550e8400-e29b-41d4-a716-4466554400{i:02}"),
                "name": format!("Customer number {i} of the Northwind account"),
                "path": format!("/srv/data/exports/2024/Q{}/report_{i}.csv", i % 4 + 1),
                "amount": i * 1000 + 17,
                "tags": ["priority", "emea", "renewal"],
            })
        })
        .collect();
    let v = json!({"query": "SELECT name, email FROM customers WHERE region = 'EMEA'", "records": records});
    assert!(
        (3800..4600).contains(&serde_json::to_vec(&v).unwrap().len()),
        "{}",
        serde_json::to_vec(&v).unwrap().len()
    );
    v
}

/// A 4 KB `tools/call` result as MCP servers send it: the records as JSON text in a text content
/// item, and again as `structuredContent`.
fn tools_call_result_4k() -> Value {
    let records: Vec<Value> = (0..10)
        .map(|i| {
            json!({
                "id": format!("550e8400-e29b-41d4-a716-4466554400{i:02}"),
                "name": format!("Customer {i} of Northwind"),
                "url": format!("https://crm.example.com/api/v2/customers/{i}?fields=name%2Cemail"),
                "amount": i * 1000 + 17,
                "tags": ["priority", "emea"],
            })
        })
        .collect();
    let structured = json!({"records": records});
    let v = json!({
        "content": [{"type": "text", "text": structured.to_string()}],
        "structuredContent": structured,
        "isError": false
    });
    assert!(
        (3800..4600).contains(&serde_json::to_vec(&v).unwrap().len()),
        "{}",
        serde_json::to_vec(&v).unwrap().len()
    );
    v
}

/// A tool definition like server-everything's: 700 bytes.
fn tool() -> Value {
    json!({
        "name": "get_weather_forecast",
        "title": "Weather forecast",
        "description": "Get the weather forecast for a city for the next days. Returns temperature, precipitation and wind for each day.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Berlin"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14, "default": 3},
                "units": {"type": "string", "enum": ["metric", "imperial"]}
            },
            "required": ["city"]
        },
        "outputSchema": {"type": "object", "properties": {"days": {"type": "array", "items": {"type": "object"}}}},
        "annotations": {"readOnlyHint": true, "openWorldHint": true},
        "_meta": {"generatedAt": "2025-06-01T00:00:00Z"}
    })
}

fn benches(c: &mut Criterion) {
    let limits = Limits::default();
    let msg = tools_call();
    c.bench_function("jsonrpc/parse_tools_call_350B", |b| {
        b.iter(|| {
            let m = jsonrpc::parse(black_box(&msg), &limits).unwrap();
            let Message::Request(r) = &m else { unreachable!() };
            black_box(r.tool_call().unwrap().name.len());
            m
        })
    });

    let scanner = Scanner::new(&[]).unwrap();
    let args = arguments_4k();
    c.bench_function("scan/scan_args_4KB", |b| {
        b.iter(|| scanner.scan(black_box(&args)))
    });
    let mut with_secret = args.clone();
    with_secret["records"][7]["note"] = json!("use AKIAIOSFODNN7EXAMPLE for the upload");
    c.bench_function("scan/scan_args_4KB_one_secret", |b| {
        b.iter(|| scanner.scan(black_box(&with_secret)))
    });
    // The same secret hex-encoded: found only in a decoded view (issue 15 item 10).
    let mut with_hex_secret = args.clone();
    with_hex_secret["records"][7]["note"] =
        json!(format!("upload key {}", hex::encode("AKIAIOSFODNN7EXAMPLE")));
    c.bench_function("scan/scan_args_4KB_one_hex_secret", |b| {
        b.iter(|| scanner.scan(black_box(&with_hex_secret)))
    });
    c.bench_function("scan/redact_args_4KB_one_secret", |b| {
        b.iter_batched(
            || with_secret.clone(),
            |mut v| scanner.redact(&mut v),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("scan/new_scanner", |b| b.iter(|| Scanner::new(&[]).unwrap()));

    let key: &[u8] = b"sk/live&key+abc123/xyz";
    let token: &[u8] = b"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";
    let scrubber = Scrubber::new(&[key, token]).unwrap();
    let result = tools_call_result_4k();
    c.bench_function("credential/scrub_result_4KB_clean", |b| {
        b.iter_batched_ref(
            || result.clone(),
            |v| scrubber.scrub(black_box(v)),
            BatchSize::SmallInput,
        )
    });
    let mut leaky = result.clone();
    leaky["structuredContent"]["records"][3]["name"] =
        json!("debug: sent Authorization sk/live&key+abc123/xyz");
    leaky["content"][0]["text"] = json!(leaky["content"][0]["text"].as_str().unwrap().replacen(
        "Customer 5",
        "Customer 5 (key sk\\/live\\u0026key+abc123\\/xyz)",
        1
    ));
    let mut check = leaky.clone();
    assert_eq!(scrubber.scrub(&mut check).replacements, 2);
    c.bench_function("credential/scrub_result_4KB_two_occurrences", |b| {
        b.iter_batched_ref(
            || leaky.clone(),
            |v| scrubber.scrub(black_box(v)),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("credential/new_scrubber_2_credentials", |b| {
        b.iter(|| Scrubber::new(black_box(&[key, token])).unwrap())
    });

    let tool = tool();
    let tl = ToolsLimits::default();
    c.bench_function("tools/definition_and_digest_700B", |b| {
        b.iter_batched(
            || tool.clone(),
            |t| {
                let d = ToolDefinition::new(t, &tl).unwrap();
                black_box(hint_class(&d));
                d
            },
            BatchSize::SmallInput,
        )
    });

    let event = sse::encode(&SseEvent {
        event: Some("message".into()),
        data: String::from_utf8(tools_call()).unwrap(),
        id: Some("17".into()),
        retry: None,
    });
    c.bench_function("sse/parse_one_message_event", |b| {
        b.iter(|| {
            let mut p = SseParser::new(SseLimits::default());
            p.push(black_box(&event)).unwrap()
        })
    });
}

criterion_group!(gateway, benches);
criterion_main!(gateway);
