//! The floor of the MCP gateway benchmark: a proxy that does nothing but relay. Each `POST /mcp`
//! body is sent as it came to the upstream (with the MCP headers and session id passed both ways)
//! and the answer's body is returned as it came — no authentication, no policy, no ledger, no
//! parsing, no scanning. Built from the same parts as Warden's gateway (tokio, axum, hyper through
//! reqwest with pooled keep-alive connections), so the difference between it and Warden is what
//! governing a call costs, and the difference between it and a direct call is what one HTTP hop
//! costs on this machine.
//!
//! ```sh
//! cargo run --release -p warden-server --example mcp_passthrough -- --upstream http://127.0.0.1:PORT/mcp
//! ```
//!
//! It listens on 127.0.0.1 (a free port unless `--port`) and prints its endpoint URL
//! (`http://127.0.0.1:PORT/mcp`) as the first line on stdout. Only for benchmarks: it forwards
//! whatever it is sent.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

const USAGE: &str = "usage: mcp_passthrough --upstream URL [--port N]";
/// The headers that cross, both ways.
const PASSED: [&str; 4] = ["accept", "content-type", "mcp-session-id", "mcp-protocol-version"];

#[derive(Clone)]
struct Relay {
    http: reqwest::Client,
    upstream: reqwest::Url,
}

async fn relay(State(r): State<Relay>, headers: HeaderMap, body: Bytes) -> Response {
    let mut req = r.http.post(r.upstream.clone()).body(body);
    for name in PASSED {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v.clone());
        }
    }
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.without_url().to_string()).into_response(),
    };
    let status = resp.status();
    let mut out = HeaderMap::new();
    for name in PASSED {
        if let Some(v) = resp.headers().get(name) {
            out.insert(HeaderName::from_static(name), v.clone());
        }
    }
    match resp.bytes().await {
        Ok(b) => (status, out, b).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.without_url().to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut upstream = None;
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--upstream" => upstream = Some(args.next().context(USAGE)?),
            "--port" => port = args.next().context(USAGE)?.parse().context("--port")?,
            _ => bail!("{USAGE}"),
        }
    }
    let upstream = reqwest::Url::parse(&upstream.context(USAGE)?).context("--upstream")?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let app = Router::new()
        .route("/mcp", post(relay))
        .with_state(Relay { http, upstream });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    println!("http://{}/mcp", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
