//! The HTTP side of the client: finding the API token, sending requests to the REST API, and turning the
//! server's JSON errors into messages a human can act on.
//!
//! The token is held in a [`Secret`] from the moment it is read: it appears in no error, no debug output,
//! and only in the `Authorization` header (marked sensitive). Errors say where the token came from (e.g.
//! `token from ./warden-data/admin.token`), never what it is.
//!
//! TLS: an `https://` server's certificate is always verified — against the built-in webpki roots and
//! the CA certificates of `--ca-file` / `WARDEN_CA_FILE` ([`Server::ca_file`]). There is no switch to
//! skip verification. A certificate that does not verify is an error saying so and what to do.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;
use warden_core::Secret;

use crate::cli::DEFAULT_TOKEN_FILE;

/// Where the token sent with a request came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Flag(PathBuf),
    Env,
    EnvFile(PathBuf),
    DefaultFile(PathBuf),
    /// An agent's task token, from `--task-token-file`.
    TaskTokenFile(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Flag(p) => write!(f, "token from --token-file {}", p.display()),
            TokenSource::Env => f.write_str("token from WARDEN_TOKEN"),
            TokenSource::EnvFile(p) => write!(f, "token from WARDEN_TOKEN_FILE {}", p.display()),
            TokenSource::DefaultFile(p) => write!(f, "token from {}", p.display()),
            TokenSource::TaskTokenFile(p) => write!(f, "task token from {}", p.display()),
        }
    }
}

/// Finds the API token: `--token-file`, then `WARDEN_TOKEN`, then `WARDEN_TOKEN_FILE`, then
/// `./warden-data/admin.token` if it exists. `env` reads an environment variable (injected for tests).
pub fn find_token(
    token_file_flag: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<(Secret<String>, TokenSource)> {
    if let Some(path) = token_file_flag {
        return Ok((read_token_file(path)?, TokenSource::Flag(path.to_owned())));
    }
    if let Some(token) = env("WARDEN_TOKEN") {
        let token = Secret::new(token.trim().to_owned());
        if token.expose().is_empty() {
            bail!("WARDEN_TOKEN is set but empty");
        }
        return Ok((token, TokenSource::Env));
    }
    if let Some(path) = env("WARDEN_TOKEN_FILE") {
        if path.is_empty() {
            bail!("WARDEN_TOKEN_FILE is set but empty");
        }
        let path = PathBuf::from(path);
        return Ok((read_token_file(&path)?, TokenSource::EnvFile(path)));
    }
    let default = Path::new(".").join(DEFAULT_TOKEN_FILE);
    if default.exists() {
        return Ok((read_token_file(&default)?, TokenSource::DefaultFile(default)));
    }
    bail!(
        "no API token: set WARDEN_TOKEN to a token, or pass --token-file FILE (or set WARDEN_TOKEN_FILE); \
         {} does not exist in this directory",
        default.display()
    )
}

/// Reads a token file, trimming surrounding whitespace. Errors name the file, never its content.
fn read_token_file(path: &Path) -> anyhow::Result<Secret<String>> {
    read_secret_file(path, "token file")
}

/// Reads a file holding one secret (`what`, e.g. `task token file`), trimming surrounding whitespace.
/// Errors name the file, never its content.
pub fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<Secret<String>> {
    let raw = Secret::new(
        std::fs::read_to_string(path).with_context(|| format!("reading the {what} {}", path.display()))?,
    );
    let token = Secret::new(raw.expose().trim().to_owned());
    if token.expose().is_empty() {
        bail!("the {what} {} is empty", path.display());
    }
    Ok(token)
}

/// An error the API returned, and its HTTP status: `{"error": code, "message": ..., "field": ...}` from
/// the REST API, or `{"error": code, "error_description": ...}` (OAuth style) from the token endpoint
/// and the agent-side endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    /// Where the token came from; shown on 401 so the user knows which token was refused.
    pub token_source: Option<String>,
    /// Located problems (`file:line:column: message`), from an error body's `errors` list (a policy
    /// set that does not compile).
    pub located: Vec<String>,
}

/// One located problem in an error body (`POST /v1/policies/*`).
#[derive(Deserialize)]
struct LocatedBody {
    #[serde(default)]
    file: String,
    #[serde(default)]
    line: usize,
    #[serde(default)]
    column: usize,
    #[serde(default)]
    policy_id: Option<String>,
    message: String,
}

impl LocatedBody {
    fn render(&self) -> String {
        let mut out = String::new();
        if !self.file.is_empty() {
            out.push_str(&format!("{}:{}:{}: ", self.file, self.line, self.column));
        }
        if let Some(id) = &self.policy_id {
            out.push_str(&format!("policy `{id}`: "));
        }
        out.push_str(&self.message);
        printable(&out)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    field: Option<String>,
    /// Kept loose: an unexpected shape here must not hide the error's message.
    #[serde(default)]
    errors: Vec<Value>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable(&self.message))?;
        if let Some(field) = &self.field {
            write!(f, " (field: {})", printable(field))?;
        }
        write!(f, " (HTTP {} {}", self.status.as_u16(), printable(&self.code))?;
        if let Some(source) = &self.token_source {
            write!(f, "; {source}")?;
        }
        f.write_str(")")?;
        for l in &self.located {
            write!(f, "\n{l}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Text from the server, made safe for a terminal: control characters are escaped.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An `Authorization` header value (`<scheme> <token>`), marked sensitive so that it is never logged.
pub fn authorization(
    scheme: &str,
    token: &Secret<String>,
    token_source: &TokenSource,
) -> anyhow::Result<HeaderValue> {
    let mut auth = HeaderValue::from_str(&format!("{scheme} {}", token.expose())).map_err(|_| {
        anyhow!("the token ({token_source}) contains characters that cannot be sent in an HTTP header")
    })?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// Which server to talk to, and which CAs to trust for its certificate.
#[derive(Clone, Debug)]
pub struct Server {
    /// `--server` / `WARDEN_SERVER`.
    pub url: Url,
    /// `--ca-file` / `WARDEN_CA_FILE`: CA certificates (PEM) trusted besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// `--client-cert` and `--client-key`: the client certificate presented for mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// The client certificate and its key as reqwest takes them; errors name the files, never the key.
fn read_identity(cert: &Path, key: &Path) -> anyhow::Result<reqwest::Identity> {
    let mut pem =
        std::fs::read(cert).with_context(|| format!("reading the client certificate {}", cert.display()))?;
    let key_pem = Secret::new(
        std::fs::read(key)
            .with_context(|| format!("reading the client certificate's key {}", key.display()))?,
    );
    pem.push(b'\n');
    pem.extend_from_slice(key_pem.expose());
    let pem = Secret::new(pem);
    reqwest::Identity::from_pem(pem.expose()).map_err(|e| {
        anyhow!(
            "the client certificate {} and key {} cannot be used: {}",
            cert.display(),
            key.display(),
            root_cause(&e)
        )
    })
}

/// Largest CA file read.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// The certificates of a `--ca-file`; errors name the file and what is wrong with it.
pub fn read_ca_file(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let what = || format!("the CA file {} (--ca-file / WARDEN_CA_FILE)", path.display());
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", what()))?;
    if meta.len() > MAX_CA_FILE_BYTES {
        bail!("{} is larger than {MAX_CA_FILE_BYTES} bytes", what());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", what()))?;
    let ders = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{} is not valid PEM: {e}", what()))?;
    if ders.is_empty() {
        bail!(
            "{} holds no certificate (no `-----BEGIN CERTIFICATE-----` block)",
            what()
        );
    }
    ders.iter()
        .enumerate()
        .map(|(i, der)| {
            reqwest::Certificate::from_der(der)
                .map_err(|e| anyhow!("{}: certificate #{} is not usable: {e}", what(), i + 1))
        })
        .collect()
}

/// An HTTP client builder for `server`: its CA file and client certificate, `https` only for an
/// `https://` server, a 10 s connect timeout, no redirects (one could carry a token elsewhere), and
/// no total timeout (the caller sets one, or bounds its reads itself, as `warden connect` does for
/// event streams).
pub fn http_builder(server: &Server) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = &server.ca_file {
        for cert in read_ca_file(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some((cert, key)) = &server.client_identity {
        builder = builder.identity(read_identity(cert, key)?);
    }
    Ok(builder
        .https_only(server.url.scheme() == "https")
        .user_agent(concat!("warden-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none()))
}

/// A client of one Warden server: authenticated with one API token ([`Client::new`]), or without one
/// ([`Client::anonymous`], for the agent-side endpoints, which take credentials per request).
#[derive(Debug)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
    token_source: Option<TokenSource>,
}

impl Client {
    pub fn new(server: &Server, token: &Secret<String>, token_source: TokenSource) -> anyhow::Result<Self> {
        let auth = authorization("Bearer", token, &token_source)?;
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        Self::build(server, headers, Some(token_source))
    }

    /// A client that sends no `Authorization` header of its own.
    pub fn anonymous(server: &Server) -> anyhow::Result<Self> {
        Self::build(server, HeaderMap::new(), None)
    }

    fn build(server: &Server, headers: HeaderMap, token_source: Option<TokenSource>) -> anyhow::Result<Self> {
        let base = server.url.clone();
        let http = http_builder(server)?
            .default_headers(headers)
            .timeout(Duration::from_secs(60))
            .build()
            .context("setting up the HTTP client")?;
        Ok(Self {
            base,
            http,
            token_source,
        })
    }

    /// The URL of an API path, each segment percent-encoded, below the base URL's own path.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> anyhow::Result<Url> {
        endpoint(&self.base, segments, query)
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> anyhow::Result<Value> {
        self.send(Method::GET, segments, query, None::<&()>).await
    }

    pub async fn post<B: Serialize + ?Sized>(&self, segments: &[&str], body: &B) -> anyhow::Result<Value> {
        self.send(Method::POST, segments, &[], Some(body)).await
    }

    pub async fn patch<B: Serialize + ?Sized>(&self, segments: &[&str], body: &B) -> anyhow::Result<Value> {
        self.send(Method::PATCH, segments, &[], Some(body)).await
    }

    pub async fn put<B: Serialize + ?Sized>(&self, segments: &[&str], body: &B) -> anyhow::Result<Value> {
        self.send(Method::PUT, segments, &[], Some(body)).await
    }

    pub async fn delete(&self, segments: &[&str]) -> anyhow::Result<Value> {
        self.send(Method::DELETE, segments, &[], None::<&()>).await
    }

    /// `DELETE` with a JSON body (e.g. a comment for the history).
    pub async fn delete_with<B: Serialize + ?Sized>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> anyhow::Result<Value> {
        self.send(Method::DELETE, segments, &[], Some(body)).await
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> anyhow::Result<Value> {
        let url = self.url(segments, query)?;
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        self.execute(&method, &url, request, self.token_source.as_ref())
            .await
    }

    /// Starts a request to an API path, for callers that add their own headers and body.
    pub fn request(
        &self,
        method: Method,
        segments: &[&str],
    ) -> anyhow::Result<(reqwest::RequestBuilder, Url)> {
        let url = self.url(segments, &[])?;
        Ok((self.http.request(method, url.clone()), url))
    }

    /// Sends a request and reads the answer: the JSON body on success, else an error built from the
    /// server's error body. `token_source` is named in the error on a 401.
    pub async fn execute(
        &self,
        method: &Method,
        url: &Url,
        request: reqwest::RequestBuilder,
        token_source: Option<&TokenSource>,
    ) -> anyhow::Result<Value> {
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the server's response to {method} {}", url.path()))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .with_context(|| format!("the server's response to {method} {} is not JSON", url.path()));
        }
        Err(api_error(status, &bytes, token_source))
    }

    #[cfg(test)]
    fn api_error(&self, status: StatusCode, body: &[u8]) -> anyhow::Error {
        api_error(status, body, self.token_source.as_ref())
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let cause = root_cause(e);
        if let Some(tls) = tls_error(e) {
            return match tls {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                    ..
                }) => anyhow!(
                    "the Warden server at {} presented a TLS certificate that is not valid for this host name ({tls}); \
                     use a name or address the certificate was issued for in --server",
                    self.base
                ),
                rustls::Error::InvalidCertificate(_) => anyhow!(
                    "the Warden server at {} presented a TLS certificate this client does not trust ({tls}); \
                     if your own CA issued it, pass that CA's certificate with --ca-file FILE (or WARDEN_CA_FILE)",
                    self.base
                ),
                other => anyhow!(
                    "the TLS handshake with the Warden server at {} failed: {other}",
                    self.base
                ),
            };
        }
        if e.is_connect() {
            anyhow!(
                "cannot connect to the Warden server at {}: {cause}; is it running? (start one with `warden serve`, \
                 or point --server or WARDEN_SERVER at it)",
                self.base
            )
        } else if e.is_timeout() {
            anyhow!("the Warden server at {} did not answer in time", self.base)
        } else {
            anyhow!("talking to the Warden server at {}: {cause}", self.base)
        }
    }
}

/// The error for a non-success answer: the server's own error body when it has one (REST or OAuth
/// style), else the status and an escaped excerpt of the body.
fn api_error(status: StatusCode, body: &[u8], token_source: Option<&TokenSource>) -> anyhow::Error {
    let token_source = token_source
        .filter(|_| status == StatusCode::UNAUTHORIZED)
        .map(ToString::to_string);
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ApiError {
            status,
            message: b
                .message
                .or(b.error_description)
                .unwrap_or_else(|| b.error.clone()),
            code: b.error,
            field: b.field,
            token_source,
            located: b
                .errors
                .into_iter()
                .filter_map(|e| serde_json::from_value::<LocatedBody>(e).ok())
                .map(|e| e.render())
                .collect(),
        }
        .into(),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let excerpt: String = text.trim().chars().take(200).collect();
            let reason = status.canonical_reason().unwrap_or("error");
            if excerpt.is_empty() {
                anyhow!("the server answered HTTP {} {reason}", status.as_u16())
            } else {
                anyhow!(
                    "the server answered HTTP {} {reason}: {}",
                    status.as_u16(),
                    printable(&excerpt)
                )
            }
        }
    }
}

/// The TLS error behind a transport error, if one is (rustls reports through an `io::Error`, whose
/// `source` skips the error it wraps).
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// The innermost error of a chain: for a refused connection, `Connection refused (os error 111)`.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// `base` + `segments` (each percent-encoded as one path segment) + `query`.
pub fn endpoint(base: &Url, segments: &[&str], query: &[(&str, &str)]) -> anyhow::Result<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| anyhow!("the server URL {base} cannot have a path"))?
        .pop_if_empty()
        .extend(segments);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(url: Url) -> Server {
        Server {
            url,
            ca_file: None,
            client_identity: None,
        }
    }

    #[test]
    fn endpoints_encode_segments_and_keep_the_base_path() {
        let base = Url::parse("http://127.0.0.1:8700").unwrap();
        assert_eq!(
            endpoint(&base, &["v1", "agents"], &[]).unwrap().as_str(),
            "http://127.0.0.1:8700/v1/agents"
        );
        let url = endpoint(
            &base,
            &["v1", "agents"],
            &[("state", "active"), ("owner", "a+b@x.io")],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8700/v1/agents?state=active&owner=a%2Bb%40x.io"
        );
        let url = endpoint(&base, &["v1", "humans", "a/b?c@x.io"], &[]).unwrap();
        assert_eq!(url.path(), "/v1/humans/a%2Fb%3Fc@x.io");
        let prefixed = Url::parse("https://gw.example.com/warden/").unwrap();
        assert_eq!(
            endpoint(&prefixed, &["healthz"], &[]).unwrap().as_str(),
            "https://gw.example.com/warden/healthz"
        );
    }

    #[test]
    fn token_lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "  wdn_at_from_file \n").unwrap();
        let no_env = |_: &str| None;

        let (t, src) = find_token(Some(&file), |_| Some("wdn_at_env".into())).unwrap();
        assert_eq!(
            (t.expose().as_str(), src),
            ("wdn_at_from_file", TokenSource::Flag(file.clone()))
        );

        let env_file = file.display().to_string();
        let env = |k: &str| match k {
            "WARDEN_TOKEN" => Some("wdn_at_env\n".to_string()),
            "WARDEN_TOKEN_FILE" => Some(env_file.clone()),
            _ => None,
        };
        let (t, src) = find_token(None, env).unwrap();
        assert_eq!((t.expose().as_str(), src), ("wdn_at_env", TokenSource::Env));

        let env = |k: &str| (k == "WARDEN_TOKEN_FILE").then(|| env_file.clone());
        let (t, src) = find_token(None, env).unwrap();
        assert_eq!(
            (t.expose().as_str(), src),
            ("wdn_at_from_file", TokenSource::EnvFile(file.clone()))
        );

        // Set but empty is an error, never a silent fall back to the bootstrap admin token.
        for var in ["WARDEN_TOKEN", "WARDEN_TOKEN_FILE"] {
            let e = find_token(None, |k: &str| (k == var).then(String::new)).unwrap_err();
            assert_eq!(e.to_string(), format!("{var} is set but empty"));
        }

        let missing = dir.path().join("missing");
        let e = find_token(Some(&missing), no_env).unwrap_err();
        assert!(format!("{e:#}").contains("reading the token file"), "{e:#}");

        std::fs::write(&file, " \n").unwrap();
        let e = find_token(Some(&file), no_env).unwrap_err();
        assert!(format!("{e:#}").contains("is empty"), "{e:#}");
    }

    #[test]
    fn errors_never_show_the_token() {
        let secret = Secret::new("wdn_at_secret\nvalue".to_string());
        let url = Url::parse("http://127.0.0.1:1").unwrap();
        let e = Client::new(&at(url), &secret, TokenSource::Env).unwrap_err();
        let shown = format!("{e:#} {e:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("WARDEN_TOKEN"), "{shown}");

        let ok = Client::new(
            &at(Url::parse("http://127.0.0.1:1").unwrap()),
            &Secret::new("wdn_at_x".into()),
            TokenSource::Env,
        )
        .unwrap();
        assert!(!format!("{ok:?}").contains("wdn_at_x"));
    }

    #[test]
    fn api_errors_read_like_sentences() {
        let client = Client::new(
            &at(Url::parse("http://127.0.0.1:1").unwrap()),
            &Secret::new("t".into()),
            TokenSource::Env,
        )
        .unwrap();
        let body = br#"{"error":"invalid_request","message":"unknown owner `x@y.io`","field":"owners[0]"}"#;
        let e = client.api_error(StatusCode::BAD_REQUEST, body);
        assert_eq!(
            e.to_string(),
            "unknown owner `x@y.io` (field: owners[0]) (HTTP 400 invalid_request)"
        );

        let body = br#"{"error":"unauthorized","message":"the token has been revoked"}"#;
        let e = client.api_error(StatusCode::UNAUTHORIZED, body);
        assert_eq!(
            e.to_string(),
            "the token has been revoked (HTTP 401 unauthorized; token from WARDEN_TOKEN)"
        );

        // OAuth-style errors (token endpoint, task-token endpoints) read the same way.
        let body = br#"{"error":"invalid_token","error_description":"task `1` is ended"}"#;
        let source = TokenSource::TaskTokenFile("bot.tt".into());
        let e = api_error(StatusCode::UNAUTHORIZED, body, Some(&source));
        assert_eq!(
            e.to_string(),
            "task `1` is ended (HTTP 401 invalid_token; task token from bot.tt)"
        );
        let body = br#"{"error":"access_denied","error_description":"agent `bot` is suspended"}"#;
        let e = api_error(StatusCode::FORBIDDEN, body, Some(&source));
        assert_eq!(e.to_string(), "agent `bot` is suspended (HTTP 403 access_denied)");

        // A policy set that does not compile: every located problem, one per line.
        let body = br#"{"error":"invalid_request","message":"the policy set does not compile: a.cedar:3:7: x (and 1 more)",
            "errors":[{"file":"a.cedar","line":3,"column":7,"message":"x"},
                      {"file":"b.cedar","line":1,"column":1,"policy_id":"p","message":"y\u001b"}]}"#;
        let e = client.api_error(StatusCode::BAD_REQUEST, body);
        assert_eq!(
            e.to_string(),
            "the policy set does not compile: a.cedar:3:7: x (and 1 more) (HTTP 400 invalid_request)\n\
             a.cedar:3:7: x\nb.cedar:1:1: policy `p`: y\\u{1b}"
        );

        let e = client.api_error(StatusCode::BAD_GATEWAY, b"<html>\x1b[31mbad</html>");
        assert_eq!(
            e.to_string(),
            "the server answered HTTP 502 Bad Gateway: <html>\\u{1b}[31mbad</html>"
        );
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = format!("{:#}", read_ca_file(&missing).unwrap_err());
        assert!(e.contains("missing.pem (--ca-file / WARDEN_CA_FILE)"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let e = format!("{:#}", read_ca_file(&empty).unwrap_err());
        assert!(e.contains("holds no certificate"), "{e}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let e = format!("{:#}", read_ca_file(&broken).unwrap_err());
        assert!(e.contains("broken.pem") && e.contains("is not valid PEM"), "{e}");
        let server = Server {
            url: Url::parse("https://127.0.0.1:1").unwrap(),
            ca_file: Some(empty),
            client_identity: None,
        };
        assert!(
            Client::anonymous(&server).is_err(),
            "a bad CA file is an error, never ignored"
        );
    }

    #[tokio::test]
    async fn connection_refused_names_the_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let client = Client::new(&at(url), &Secret::new("t".into()), TokenSource::Env).unwrap();
        let e = client.get(&["v1", "whoami"], &[]).await.unwrap_err();
        let shown = format!("{e:#}");
        assert!(
            shown.contains(&format!(
                "cannot connect to the Warden server at http://127.0.0.1:{port}/"
            )),
            "{shown}"
        );
    }
}
