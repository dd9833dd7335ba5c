//! An MCP upstream (streamable HTTP, written on raw TCP so that it can misbehave at any byte) whose
//! tools fail the ways real servers and networks do, and which reports what happened to each
//! connection — in particular whether, and when, Warden closed it.
//!
//! Every request is answered properly (JSON, keep-alive) except a `tools/call` of one of the
//! [`Fault`] tools; `ok` answers `fine`. `tools/list` lists them all (read-only hints, an
//! `inputSchema` with an integer `n`). Each call's `arguments.n` identifies it in [`Faulty::conns`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// How a tool fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads the request and sends nothing, ever (the first-byte limit).
    Silent,
    /// Sends event-stream headers, then nothing (the idle limit).
    SseHang,
    /// Starts a JSON body (`Content-Length` promises more), then nothing (the idle limit).
    BodyHang,
    /// Keeps an event stream alive with comments every 100 ms and never answers (the answer limit).
    Trickle,
    /// Resets the connection (TCP RST) after reading the request, before any answer.
    Reset,
    /// Starts a JSON body, then resets the connection.
    ResetMidBody,
    /// Answers HTTP 500.
    Http500,
    /// Answers `application/json` that is not JSON.
    Garbage,
    /// Answers JSON that is not a JSON-RPC message.
    NotJsonRpc,
    /// Announces (`Content-Length`) a body larger than `gateway.max_message_bytes`.
    Oversize,
    /// Streams a chunked JSON body that never ends (larger than any limit).
    Endless,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::Silent,
        Fault::SseHang,
        Fault::BodyHang,
        Fault::Trickle,
        Fault::Reset,
        Fault::ResetMidBody,
        Fault::Http500,
        Fault::Garbage,
        Fault::NotJsonRpc,
        Fault::Oversize,
        Fault::Endless,
    ];

    /// The tool that fails this way.
    pub fn tool(self) -> &'static str {
        match self {
            Fault::Silent => "silent",
            Fault::SseHang => "sse_hang",
            Fault::BodyHang => "body_hang",
            Fault::Trickle => "trickle",
            Fault::Reset => "reset",
            Fault::ResetMidBody => "reset_mid_body",
            Fault::Http500 => "http500",
            Fault::Garbage => "garbage",
            Fault::NotJsonRpc => "not_jsonrpc",
            Fault::Oversize => "oversize",
            Fault::Endless => "endless",
        }
    }

    fn from_tool(tool: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.tool() == tool)
    }

    /// Whether the failed answer is complete HTTP (status, headers and a body of the announced
    /// length), so that the connection may serve another request; every other fault leaves the
    /// connection in the middle of an answer (or reset).
    pub fn answer_complete(self) -> bool {
        matches!(self, Fault::Http500 | Fault::Garbage | Fault::NotJsonRpc)
    }
}

/// Every tool the upstream lists.
pub fn tools() -> Vec<&'static str> {
    let mut t = vec!["ok"];
    t.extend(Fault::ALL.iter().map(|f| f.tool()));
    t
}

/// What happened on one connection.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// Requests read on it: the JSON-RPC method, and the tool and `n` of calls.
    pub requests: Vec<String>,
    /// The calls that failed on it: fault and `n`, and when the failure began.
    pub faults: Vec<(Fault, u64, Instant)>,
    /// When Warden closed it (the upstream read EOF or a reset).
    pub closed_by_warden: Option<Instant>,
    /// The upstream reset it itself.
    pub reset_by_upstream: bool,
}

impl Conn {
    pub fn open(&self) -> bool {
        self.closed_by_warden.is_none() && !self.reset_by_upstream
    }
}

/// The running upstream.
pub struct Faulty {
    /// `http://127.0.0.1:<port>/mcp`
    pub url: String,
    conns: Arc<Mutex<Vec<Conn>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Faulty {
    /// Starts it; `max_bytes` is the size [`Fault::Oversize`] exceeds.
    pub async fn start(max_bytes: usize) -> Faulty {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the upstream");
        let url = format!("http://{}/mcp", listener.local_addr().expect("local address"));
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let at = {
                    let mut all = c.lock().unwrap();
                    all.push(Conn::default());
                    all.len() - 1
                };
                tokio::spawn(serve(stream, c.clone(), at, max_bytes));
            }
        });
        Faulty { url, conns, accept }
    }

    /// Every connection so far.
    pub fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }

    /// The connection call `n` of `fault` failed on, once it has.
    pub fn fault_conn(&self, fault: Fault, n: u64) -> Option<Conn> {
        self.conns()
            .into_iter()
            .find(|c| c.faults.iter().any(|(f, m, _)| *f == fault && *m == n))
    }

    /// Connections still open (neither side closed them).
    pub fn open_conns(&self) -> usize {
        self.conns().iter().filter(|c| c.open()).count()
    }
}

/// One HTTP request: method, and the body.
struct Request {
    method: String,
    body: Vec<u8>,
}

/// Reads one request; `None` at EOF (or a reset) between requests.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let method = head.split(' ').next().unwrap_or("").to_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(Request { method, body })
}

fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn json_answer(id: &Value, result: Value) -> Vec<u8> {
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    response("200 OK", "application/json", body.as_bytes())
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

/// One chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

async fn serve(mut stream: TcpStream, conns: Arc<Mutex<Vec<Conn>>>, at: usize, max_bytes: usize) {
    let log = |f: &mut dyn FnMut(&mut Conn)| {
        if let Some(c) = conns.lock().unwrap().get_mut(at) {
            f(c);
        }
    };
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut stream, &mut buf).await else {
            log(&mut |c| c.closed_by_warden = Some(Instant::now()));
            return;
        };
        if req.method != "POST" {
            // No server stream, no sessions to end.
            let r = response("405 Method Not Allowed", "text/plain", b"");
            if stream.write_all(&r).await.is_err() {
                return;
            }
            continue;
        }
        let msg: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let id = msg["id"].clone();
        let method = msg["method"].as_str().unwrap_or("").to_owned();
        let tool = msg["params"]["name"].as_str().unwrap_or("").to_owned();
        let n = msg["params"]["arguments"]["n"].as_u64().unwrap_or(0);
        log(&mut |c| {
            c.requests.push(if method == "tools/call" {
                format!("tools/call {tool} {n}")
            } else {
                method.clone()
            })
        });
        let fault = (method == "tools/call")
            .then(|| Fault::from_tool(&tool))
            .flatten();
        let Some(fault) = fault else {
            let answer = match method.as_str() {
                _ if id.is_null() => response("202 Accepted", "application/json", b""),
                "initialize" => json_answer(
                    &id,
                    json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                           "serverInfo": {"name": "faulty", "version": "1"}}),
                ),
                "tools/list" => json_answer(
                    &id,
                    json!({"tools": tools().iter().map(|t| json!({
                        "name": t,
                        "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}},
                        "annotations": {"readOnlyHint": true},
                    })).collect::<Vec<_>>()}),
                ),
                "tools/call" => json_answer(&id, json!({"content": [{"type": "text", "text": "fine"}]})),
                _ => json_answer(&id, json!({})),
            };
            if stream.write_all(&answer).await.is_err() {
                return;
            }
            continue;
        };
        log(&mut |c| c.faults.push((fault, n, Instant::now())));
        let partial = b"{\"jsonrpc\":\"2.0\",";
        match fault {
            Fault::Silent => {}
            Fault::SseHang => {
                let _ = stream.write_all(SSE_HEAD).await;
            }
            Fault::BodyHang => {
                let mut r =
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n"
                        .to_vec();
                r.extend_from_slice(partial);
                let _ = stream.write_all(&r).await;
            }
            Fault::Trickle | Fault::Endless => {
                let (head, data): (&[u8], Vec<u8>) = if fault == Fault::Trickle {
                    (SSE_HEAD, b": still working\n\n".to_vec())
                } else {
                    (
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                        vec![b' '; 8192],
                    )
                };
                let pause = if fault == Fault::Trickle { 100 } else { 1 };
                if stream.write_all(head).await.is_ok() {
                    // Until Warden goes away: a read sees its EOF (it never sends more).
                    let mut one = [0u8; 1];
                    loop {
                        tokio::select! {
                            r = stream.read(&mut one) => {
                                if matches!(r, Ok(0) | Err(_)) {
                                    break;
                                }
                            }
                            () = tokio::time::sleep(Duration::from_millis(pause)) => {
                                if stream.write_all(&chunk(&data)).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
                log(&mut |c| c.closed_by_warden = Some(Instant::now()));
                return;
            }
            Fault::Reset | Fault::ResetMidBody => {
                if fault == Fault::ResetMidBody {
                    let mut r =
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n"
                            .to_vec();
                    r.extend_from_slice(partial);
                    let _ = stream.write_all(&r).await;
                    let _ = stream.flush().await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = stream.set_zero_linger();
                drop(stream);
                log(&mut |c| c.reset_by_upstream = true);
                return;
            }
            Fault::Http500 => {
                let _ = stream
                    .write_all(&response(
                        "500 Internal Server Error",
                        "text/plain",
                        b"upstream broke",
                    ))
                    .await;
            }
            Fault::Garbage => {
                let _ = stream
                    .write_all(&response(
                        "200 OK",
                        "application/json",
                        b"\x00\x01 this is {not json",
                    ))
                    .await;
            }
            Fault::NotJsonRpc => {
                let _ = stream
                    .write_all(&response("200 OK", "application/json", br#"{"hello":"world"}"#))
                    .await;
            }
            Fault::Oversize => {
                let filler = "a".repeat(max_bytes + 1);
                let body = json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": filler}]}})
                    .to_string();
                let _ = stream
                    .write_all(&response("200 OK", "application/json", body.as_bytes()))
                    .await;
            }
        }
        // A failed answer leaves nothing to read but Warden's next request on this connection, or
        // its EOF: the loop sees which.
    }
}
