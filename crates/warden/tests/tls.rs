//! TLS end to end (issue 15): the real `warden serve` terminating TLS with certificates this test
//! generates (a CA, server leaves for 127.0.0.1/localhost, client leaves with SPIFFE IDs), the CLI
//! verifying it, reloads, refusals at start, and mutual TLS with the SPIFFE binding of task tokens.
//! TLS is transport only, so these run on SQLite.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Server, Spawn};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A certificate authority of the test's own.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).expect("CA certificate");
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server leaf for 127.0.0.1 and localhost; `serial` tells reloads apart.
    fn server_leaf(&self, serial: u64) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut p =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
        p.serial_number = Some(serial.into());
        p.distinguished_name
            .push(DnType::CommonName, "warden test server");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("server leaf");
        Leaf { cert, key }
    }

    /// A client leaf, with `spiffe_id` as its URI SAN when given (an X.509-SVID).
    fn client_leaf(&self, spiffe_id: Option<&str>) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name
            .push(DnType::CommonName, "warden test client");
        if let Some(id) = spiffe_id {
            p.subject_alt_names = vec![SanType::URI(id.try_into().expect("an IA5 URI"))];
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("client leaf");
        Leaf { cert, key }
    }
}

struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Leaf {
    fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// Certificate and key as one PEM (what `reqwest::Identity::from_pem` takes).
    fn identity(&self) -> reqwest::Identity {
        let pem = format!("{}{}", self.cert.pem(), self.key.serialize_pem());
        reqwest::Identity::from_pem(pem.as_bytes()).expect("client identity")
    }
}

/// The files of a TLS server: `cert.pem`, `key.pem`, `ca.pem` (and `client-ca.pem`) in `dir`.
struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn new(ca: &Ca, leaf: &Leaf) -> Self {
        let files = Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        std::fs::write(files.path("ca.pem"), ca.pem()).expect("ca.pem");
        files.install(leaf);
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the key and the certificate (each written aside and renamed into place).
    fn install(&self, leaf: &Leaf) {
        replace(&self.path("key.pem"), &leaf.key.serialize_pem());
        replace(&self.path("cert.pem"), &leaf.cert.pem());
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\nreload_interval_ms = 200\n{extra}",
            self.path("cert.pem"),
            self.path("key.pem"),
        )
    }
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("writing a TLS file");
    std::fs::rename(&tmp, path).expect("renaming a TLS file into place");
}

async fn tls_server(files: &TlsFiles, extra: &str) -> Server {
    let server = Server::spawn(
        Backend::Sqlite,
        Spawn {
            config: Some(files.config(extra)),
            ca_file: Some(files.path("ca.pem")),
            ..Default::default()
        },
    )
    .await;
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    server
}

/// The certificate the server presents to a new connection (read with a rustls client that trusts
/// `ca`).
async fn peer_certificate(url: &str, ca: &Ca) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).expect("CA root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = url.trim_start_matches("https://").trim_end_matches('/');
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name.to_owned(), tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// An HTTPS client trusting `ca`, with an optional client certificate.
fn https_client(ca: &Ca, identity: Option<reqwest::Identity>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA"))
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().expect("HTTP client")
}

#[tokio::test]
async fn cli_verifies_the_server_certificate() {
    let ca = Ca::new("warden test CA");
    let files = TlsFiles::new(&ca, &ca.server_leaf(1));
    let server = tls_server(&files, "").await;

    // With --ca-file (the test harness passes it), an authenticated call works.
    let me = server.json(&["whoami"]).await;
    assert_eq!(me["human"]["email"], "admin@warden.local", "{me}");

    // With WARDEN_CA_FILE instead.
    let mut cmd = tokio::process::Command::new(common::WARDEN);
    for var in common::WARDEN_ENV {
        cmd.env_remove(var);
    }
    let out = cmd
        .env("WARDEN_CA_FILE", files.path("ca.pem"))
        .env("WARDEN_SERVER", &server.url)
        .args([
            "--token-file",
            server.admin_token_file.to_str().expect("UTF-8"),
            "whoami",
        ])
        .current_dir(server.cwd())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running warden");
    assert!(
        out.status.success(),
        "WARDEN_CA_FILE: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the CA: a clear verification error, exit 1, never a panic.
    let admin = server.admin_token_file.to_str().expect("UTF-8").to_owned();
    let out = run_bare(&server, &["--token-file", &admin, "whoami"]).await;
    assert_eq!(out.0, 1, "{}", out.1);
    assert!(
        out.1.starts_with("error: ")
            && out
                .1
                .contains("presented a TLS certificate this client does not trust")
            && out.1.contains("--ca-file FILE (or WARDEN_CA_FILE)"),
        "{}",
        out.1
    );
    assert!(!out.1.contains("panicked"), "{}", out.1);

    // A CA file that holds no certificate is an error, not a fall back to the public roots.
    let bad_ca = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(bad_ca.path(), "not a certificate\n").expect("write");
    let out = run_bare(
        &server,
        &[
            "--ca-file",
            bad_ca.path().to_str().expect("UTF-8"),
            "--token-file",
            &admin,
            "whoami",
        ],
    )
    .await;
    assert_eq!(out.0, 1, "{}", out.1);
    assert!(out.1.contains("holds no certificate"), "{}", out.1);

    // Tokens are issued for the https:// URL clients use.
    let meta: serde_json::Value = https_client(&ca, None)
        .get(server.endpoint("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        meta["issuer"].as_str(),
        Some(server.url.trim_end_matches('/')),
        "{meta}"
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails() {
    let ca = Ca::new("warden test CA");
    let files = TlsFiles::new(&ca, &ca.server_leaf(1));
    let server = tls_server(&files, "").await;
    let addr = server
        .url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("HTTP/1.1 200"), "plain HTTP was served: {text}");
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // And the TLS side answers.
    let ok = https_client(&ca, None)
        .get(server.endpoint("/healthz"))
        .send()
        .await
        .expect("healthz over TLS");
    assert!(ok.status().is_success());
}

#[tokio::test]
async fn certificates_reload_and_a_bad_replacement_keeps_the_old_one() {
    let ca = Ca::new("warden test CA");
    let first = ca.server_leaf(1);
    let files = TlsFiles::new(&ca, &first);
    let server = tls_server(&files, "").await;
    assert_eq!(peer_certificate(&server.url, &ca).await, first.der());

    let second = ca.server_leaf(2);
    files.install(&second);
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_certificate(&server.url, &ca).await != second.der() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An unparsable certificate: the server keeps serving the second one, and says why.
    replace(
        &files.path("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("keeping the current certificate") {
        assert!(
            Instant::now() < deadline,
            "no reload error logged:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peer_certificate(&server.url, &ca).await, second.der());
    assert!(server.log().contains("tls.cert_file"), "{}", server.log());

    // A certificate that does not match the key: the same.
    let third = ca.server_leaf(3);
    replace(&files.path("cert.pem"), &third.cert.pem());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("does not match the certificate") {
        assert!(Instant::now() < deadline, "no mismatch logged:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peer_certificate(&server.url, &ca).await, second.der());
    assert!(
        !server.log().contains("PRIVATE KEY"),
        "key material in the log:\n{}",
        server.log()
    );
    // Still serving requests.
    server.json(&["whoami"]).await;
}

/// Starts `warden serve` with `config` on `listen` and waits until it listens (returns `Ok` with the
/// output) or exits (`Err` with the exit code and output).
fn serve_outcome(config: &str, listen: &str) -> Result<String, (Option<i32>, String)> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, config).expect("config");
    let mut cmd = std::process::Command::new(common::WARDEN);
    let mut child = common::clean_env(&mut cmd)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", listen])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning warden serve");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    let deadline = Instant::now() + common::READY_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                out.push_str(&line);
                out.push('\n');
                if line.contains(common::READY_LINE) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(out);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("waiting");
                return Err((status.code(), out));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        assert!(Instant::now() < deadline, "neither listened nor exited:\n{out}");
    }
}

#[track_caller]
fn refused(config: &str, listen: &str, want: &[&str]) -> String {
    let (code, out) = serve_outcome(config, listen).expect_err("must not start");
    assert_eq!(code, Some(1), "{out}");
    assert!(!out.contains("panicked"), "{out}");
    for w in want {
        assert!(out.contains(w), "want `{w}` in:\n{out}");
    }
    out
}

#[tokio::test]
async fn no_bearer_token_in_clear_on_a_network() {
    let policy = format!("[policy]\nbootstrap_dir = {:?}\n", common::default_policies_dir());
    refused(
        &policy,
        "0.0.0.0:0",
        &[
            "error: refusing to listen on 0.0.0.0:0 without TLS",
            "[tls] cert_file and key_file",
            "[tls] behind_proxy = true",
        ],
    );
    let behind = format!("public_url = \"https://warden.example.com\"\n{policy}[tls]\nbehind_proxy = true\n");
    let out = serve_outcome(&behind, "0.0.0.0:0").expect("starts behind a proxy");
    assert!(out.contains("listening on http://0.0.0.0:"), "{out}");
    // With TLS, any address.
    let ca = Ca::new("warden test CA");
    let files = TlsFiles::new(&ca, &ca.server_leaf(1));
    let out = serve_outcome(&format!("{policy}{}", files.config("")), "0.0.0.0:0").expect("starts with TLS");
    assert!(out.contains("listening on https://0.0.0.0:"), "{out}");
}

#[tokio::test]
async fn bad_certificate_files_stop_the_start() {
    let ca = Ca::new("warden test CA");
    let leaf = ca.server_leaf(1);
    let files = TlsFiles::new(&ca, &leaf);
    let key_pem = leaf.key.serialize_pem();
    let cert = files.path("cert.pem").display().to_string();
    let key = files.path("key.pem").display().to_string();

    let missing = files.config("").replace("cert.pem", "missing.pem");
    refused(
        &missing,
        "127.0.0.1:0",
        &["cannot read tls.cert_file", "missing.pem"],
    );

    std::fs::write(files.path("garbage.pem"), "hello\n").expect("write");
    let garbage = files.config("").replace("cert.pem", "garbage.pem");
    refused(
        &garbage,
        "127.0.0.1:0",
        &["tls.cert_file", "garbage.pem", "holds no certificate"],
    );

    let no_key = files.config("").replace("key.pem", "cert.pem");
    refused(&no_key, "127.0.0.1:0", &["tls.key_file", "holds no private key"]);

    let other = ca.server_leaf(2);
    std::fs::write(files.path("other-key.pem"), other.key.serialize_pem()).expect("write");
    let mismatch = files.config("").replace("key.pem", "other-key.pem");
    let out = refused(
        &mismatch,
        "127.0.0.1:0",
        &[
            "does not match the certificate in tls.cert_file",
            &cert,
            "other-key.pem",
        ],
    );
    assert!(
        !out.contains(key_pem.lines().nth(1).expect("a base64 line")),
        "{out}"
    );

    let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = p.signed_by(&leaf.key, &ca.cert, &ca.key).expect("expired leaf");
    std::fs::write(files.path("expired.pem"), expired.pem()).expect("write");
    let config = files.config("").replace("cert.pem", "expired.pem");
    refused(
        &config,
        "127.0.0.1:0",
        &["expired.pem", "the certificate expired at 2021-01-01"],
    );

    let config = files.config("client_ca_file = \"/nonexistent/ca.pem\"\n");
    refused(
        &config,
        "127.0.0.1:0",
        &["cannot read tls.client_ca_file /nonexistent/ca.pem"],
    );
    assert!(Path::new(&key).exists());
}

#[tokio::test]
async fn mutual_tls_is_optional_verified_and_binds_task_tokens() {
    let ca = Ca::new("warden test CA");
    let clients = Ca::new("warden test client CA");
    let stranger = Ca::new("someone else's CA");
    let files = TlsFiles::new(&ca, &ca.server_leaf(1));
    std::fs::write(files.path("client-ca.pem"), clients.pem()).expect("client-ca.pem");
    let extra = format!("client_ca_file = {:?}\n", files.path("client-ca.pem"));
    let server = tls_server(&files, &extra).await;
    let healthz = server.endpoint("/healthz");

    // No client certificate: the CLI and its bearer token work as before.
    server.json(&["whoami"]).await;

    // A client certificate from the configured CA is accepted.
    let ok = https_client(&ca, Some(clients.client_leaf(None).identity()))
        .get(&healthz)
        .send()
        .await
        .expect("accepted client certificate");
    assert!(ok.status().is_success());

    // One from another CA is refused at the handshake.
    let refused = https_client(&ca, Some(stranger.client_leaf(None).identity()))
        .get(&healthz)
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a stranger's certificate was accepted: {refused:?}"
    );

    // A task token of `bot`, presented over `other`'s connection, is refused; over `bot`'s, or
    // without a client certificate, it works.
    server.add_owner().await;
    server
        .add_mcp_upstream("crm", "https://crm.example.com/mcp")
        .await;
    let key = server.active_agent("bot", &["crm"]).await;
    let (_, token) = server.start_task("bot", &key, "crm", &[], &[]).await;
    let task_url = server.endpoint("/v1/task");
    let get = |identity: Option<reqwest::Identity>| {
        let client = https_client(&ca, identity);
        let req = client.get(&task_url).bearer_auth(&token);
        async move { req.send().await.expect("an answer") }
    };
    let bot = "spiffe://warden.local/agent/bot";
    let other = "spiffe://warden.local/agent/other";
    let answer = get(Some(clients.client_leaf(Some(other)).identity())).await;
    assert_eq!(answer.status(), reqwest::StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = answer.json().await.expect("JSON");
    let why = body["error_description"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!(
            "agent `{bot}`'s, but this connection's TLS client certificate is `{other}`'s"
        )),
        "{body}"
    );
    let answer = get(Some(clients.client_leaf(Some(bot)).identity())).await;
    assert!(answer.status().is_success(), "{:?}", answer.text().await);
    let answer = get(None).await;
    assert!(answer.status().is_success(), "{:?}", answer.text().await);
    // A client certificate without a SPIFFE ID binds nothing.
    let answer = get(Some(clients.client_leaf(None).identity())).await;
    assert!(answer.status().is_success(), "{:?}", answer.text().await);

    // The CLI as the agent (--client-cert/--client-key): the token endpoint takes only the agent the
    // certificate names.
    let pem_pair = |name: &str, leaf: &Leaf| {
        let cert = files.path(&format!("{name}.crt"));
        let key = files.path(&format!("{name}.key"));
        std::fs::write(&cert, leaf.cert.pem()).expect("cert");
        std::fs::write(&key, leaf.key.serialize_pem()).expect("key");
        (cert.display().to_string(), key.display().to_string())
    };
    let (other_cert, other_key) = pem_pair("other", &clients.client_leaf(Some(other)));
    let (bot_cert, bot_key) = pem_pair("bot", &clients.client_leaf(Some(bot)));
    let key_s = key.to_str().expect("UTF-8");
    let start = |cert: String, key: String| {
        let args: Vec<String> = [
            "--client-cert",
            &cert,
            "--client-key",
            &key,
            "task",
            "start",
            "--key",
            key_s,
            "--agent-id",
            "bot",
            "--purpose",
            "bound",
            "--type",
            "tls",
            "--upstream",
            "crm",
            "-o",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = &server;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            server.agent(&args).await
        }
    };
    let err = start(other_cert, other_key).await.fails(1);
    assert!(
        err.contains(&format!(
            "this connection's TLS client certificate is `{other}`'s"
        )),
        "{err}"
    );
    let started = start(bot_cert, bot_key).await.ok().json();
    assert!(started["task_id"].is_string(), "{started}");
}

/// `warden <args>` against `server` with `--server` only (no `--ca-file`): (exit code, stderr).
async fn run_bare(server: &Server, args: &[&str]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(common::WARDEN);
    for var in common::WARDEN_ENV {
        cmd.env_remove(var);
    }
    let out = cmd
        .args(["--server", &server.url])
        .args(args)
        .current_dir(server.cwd())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running warden");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
