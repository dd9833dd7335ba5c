//! TLS termination for `warden serve` (`[tls]`): the certificate and key files, checked at start and
//! reloaded when they change, optional client certificates (mutual TLS) and the verified identity of
//! the peer.
//!
//! Why a listener of our own ([`TlsListener`], an `axum::serve::Listener`) rather than a separate TLS
//! server crate: `axum::serve` already gives Warden its graceful shutdown, HTTP/1.1 with upgrades and
//! per-connection services; the listener adds exactly what TLS needs — the handshake, done off the
//! accept loop (a slow or silent client holds up no one, and is dropped after
//! [`HANDSHAKE_TIMEOUT`]), and the peer's verified client certificate as the connection's
//! [`ConnectInfo<TlsPeer>`], which only the handshake can set (no header can). rustls with the `ring`
//! provider: no C toolchain, the same rustls the HTTP clients use.
//!
//! Reload: every `[tls] reload_interval_ms` the files are read; when their contents changed they are
//! parsed and checked exactly as at start, and only a complete, consistent set replaces the
//! configuration new connections are accepted with. A set that fails keeps the current one and logs
//! why (once per content). The server is never without a certificate.
//!
//! Private key material appears in no error, log line or `Debug` output: errors name the file and
//! what is wrong with it, never its content.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use arc_swap::ArcSwap;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::pem::{PemObject as _, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use warden_identity::SpiffeId;
use x509_cert::der::Decode as _;
use x509_cert::der::oid::AssociatedOid as _;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use zeroize::Zeroizing;

use crate::config::TlsSettings;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once; connections beyond it are closed at once.
const MAX_HANDSHAKES: usize = 1024;
/// Largest certificate, key or CA file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The peer of a TLS connection, as the handshake verified it: the request extension
/// `ConnectInfo<TlsPeer>` on every request that came over TLS.
#[derive(Clone, Debug)]
pub struct TlsPeer {
    pub remote: SocketAddr,
    /// The client presented a certificate that chains to `[tls] client_ca_file`.
    pub client_certificate: bool,
    /// The SPIFFE ID of that certificate (its one `spiffe://` URI SAN, as in an X.509-SVID).
    pub spiffe_id: Option<SpiffeId>,
}

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The SPIFFE ID of the verified client certificate of the connection a request came over, if any.
pub fn peer_spiffe_id(extensions: &axum::http::Extensions) -> Option<&SpiffeId> {
    extensions
        .get::<ConnectInfo<TlsPeer>>()
        .and_then(|c| c.0.spiffe_id.as_ref())
}

/// The SPIFFE ID the connection's verified client certificate carries, as an extractor (never fails;
/// `spiffe_id` is `None` on plain HTTP, without a client certificate, or without a SPIFFE ID in it).
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity {
    pub spiffe_id: Option<SpiffeId>,
}

impl PeerIdentity {
    /// See [`check_peer_binding`].
    pub fn check(&self, agent_spiffe_id: &str) -> Result<(), String> {
        binding(self.spiffe_id.as_ref(), agent_spiffe_id)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerIdentity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            spiffe_id: peer_spiffe_id(&parts.extensions).cloned(),
        })
    }
}

/// The binding of an agent credential to the connection: a credential of agent `agent_spiffe_id`
/// presented over a connection whose client certificate names another SPIFFE ID is refused (the
/// message says why). Connections without a client certificate, or with one that carries no SPIFFE
/// ID, bind nothing.
pub fn check_peer_binding(extensions: &axum::http::Extensions, agent_spiffe_id: &str) -> Result<(), String> {
    binding(peer_spiffe_id(extensions), agent_spiffe_id)
}

fn binding(peer: Option<&SpiffeId>, agent_spiffe_id: &str) -> Result<(), String> {
    match peer {
        Some(peer) if peer.as_str() != agent_spiffe_id => Err(format!(
            "the credential is agent `{agent_spiffe_id}`'s, but this connection's TLS client certificate is `{peer}`'s; \
             an agent's credentials are accepted only over its own connection"
        )),
        _ => Ok(()),
    }
}

/// The contents of the `[tls]` files, as read once (key bytes zeroed on drop).
struct Files {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn read(s: &TlsSettings) -> anyhow::Result<Self> {
        Ok(Self {
            cert: read_pem_file(&s.cert_file, "tls.cert_file")?,
            key: Zeroizing::new(read_pem_file(&s.key_file, "tls.key_file")?),
            client_ca: s
                .client_ca_file
                .as_deref()
                .map(|p| read_pem_file(p, "tls.client_ca_file"))
                .transpose()?,
        })
    }

    /// What a change is detected by.
    fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            &self.cert[..],
            &self.key[..],
            self.client_ca.as_deref().unwrap_or(b""),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

fn read_pem_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a file", path.display());
    }
    if meta.len() > MAX_PEM_BYTES {
        bail!("{what} {} is larger than {MAX_PEM_BYTES} bytes", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// What is wrong with a PEM file, without any of its content.
fn pem_problem(e: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a PEM block has no END line",
        Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        Error::Base64Decode(_) => "a PEM block's base64 does not decode",
        Error::NoItemsFound => "it holds no PEM block",
        Error::SectionTooLarge => "a PEM block is too large",
        _ => "it is not valid PEM",
    }
}

/// The PEM blocks of a file, each with its kind.
fn pem_sections(bytes: &[u8], path: &Path, what: &str) -> anyhow::Result<Vec<(SectionKind, Vec<u8>)>> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{what} {}: {}", path.display(), pem_problem(&e)))
}

/// The certificates of a PEM file, in order; each must be an X.509 certificate.
fn certificates(bytes: &[u8], path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    for (kind, der) in pem_sections(bytes, path, what)? {
        if kind != SectionKind::Certificate {
            continue;
        }
        if let Err(e) = x509_cert::Certificate::from_der(&der) {
            bail!(
                "{what} {}: certificate #{} is not a valid X.509 certificate ({e})",
                path.display(),
                out.len() + 1
            );
        }
        out.push(CertificateDer::from(der));
    }
    if out.is_empty() {
        bail!(
            "{what} {} holds no certificate (no `-----BEGIN CERTIFICATE-----` block)",
            path.display()
        );
    }
    Ok(out)
}

/// The one private key of the key file.
fn private_key(bytes: &[u8], path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let mut keys = Vec::new();
    for (kind, der) in pem_sections(bytes, path, "tls.key_file")? {
        let der = Zeroizing::new(der);
        let key = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(der.to_vec().into()),
            SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.to_vec().into()),
            SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(der.to_vec().into()),
            _ => continue,
        };
        keys.push(key);
    }
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => bail!(
            "tls.key_file {} holds no private key (a `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` PEM block)",
            path.display()
        ),
        n => bail!(
            "tls.key_file {} holds {n} private keys; it must hold exactly the certificate's one",
            path.display()
        ),
    }
}

/// Refuses a leaf that has expired; warns about one not valid yet (a clock apart).
fn check_validity(leaf: &CertificateDer<'_>, path: &Path) -> anyhow::Result<()> {
    let cert = x509_cert::Certificate::from_der(leaf).map_err(|e| {
        anyhow!(
            "tls.cert_file {}: the first certificate does not parse ({e})",
            path.display()
        )
    })?;
    let validity = &cert.tbs_certificate.validity;
    let now = chrono::Utc::now().timestamp();
    let at = |t: &x509_cert::time::Time| {
        let secs = i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
        (
            secs,
            chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
                .map_or_else(|| secs.to_string(), |d| d.to_rfc3339()),
        )
    };
    let (not_after, shown) = at(&validity.not_after);
    if not_after < now {
        bail!(
            "tls.cert_file {}: the certificate expired at {shown}",
            path.display()
        );
    }
    let (not_before, shown) = at(&validity.not_before);
    if not_before > now {
        tracing::warn!(file = %path.display(), not_before = %shown,
            "the TLS certificate is not valid yet; clients will refuse it until then");
    }
    Ok(())
}

/// Parses and checks a set of files into the configuration connections are accepted with.
fn build(s: &TlsSettings, files: &Files) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert, &s.cert_file, "tls.cert_file")?;
    check_validity(&chain[0], &s.cert_file)?;
    let key = private_key(&files.key, &s.key_file)?;
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        anyhow!(
            "tls.key_file {}: not a usable private key ({e}); RSA, ECDSA P-256/P-384 and Ed25519 keys are",
            s.key_file.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => bail!(
            "tls.key_file {} does not match the certificate in tls.cert_file {}: the first certificate of the \
             chain must be the server's own (the leaf), issued for this key",
            s.key_file.display(),
            s.cert_file.display()
        ),
        Err(e) => bail!(
            "cannot check that tls.key_file {} matches tls.cert_file {}: {e}",
            s.key_file.display(),
            s.cert_file.display()
        ),
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?;
    let builder = match (&s.client_ca_file, &files.client_ca) {
        (Some(path), Some(bytes)) => {
            let verifier = client_verifier(path, bytes, &provider)?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // What `axum::serve` speaks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client certificates are requested and, when presented, must chain to these CAs; a client without
/// one is let through to authenticate with its bearer token.
fn client_verifier(
    path: &Path,
    bytes: &[u8],
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(bytes, path, "tls.client_ca_file")?
        .into_iter()
        .enumerate()
    {
        roots.add(cert).map_err(|e| {
            anyhow!(
                "tls.client_ca_file {}: certificate #{} is not a usable CA certificate ({e})",
                path.display(),
                i + 1
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| anyhow!("tls.client_ca_file {}: {e}", path.display()))
}

/// The configuration new connections are accepted with, and what it was built from.
pub struct Tls {
    settings: TlsSettings,
    current: ArcSwap<ServerConfig>,
}

/// The settings only: the configuration holds the private key.
impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the files: any problem is an error naming the file and what is wrong.
    pub fn load(settings: TlsSettings) -> anyhow::Result<Arc<Self>> {
        let files = Files::read(&settings)?;
        let config = build(&settings, &files)?;
        let mode = std::fs::metadata(&settings.key_file)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            tracing::warn!(file = %settings.key_file.display(), mode = format!("{mode:o}"),
                "the TLS private key is readable by other users; chmod 600 it");
        }
        let tls = Arc::new(Self {
            settings,
            current: ArcSwap::new(config),
        });
        tls.clone().spawn_reloader(files.fingerprint());
        Ok(tls)
    }

    /// Whether client certificates are requested.
    pub fn mutual(&self) -> bool {
        self.settings.client_ca_file.is_some()
    }

    fn spawn_reloader(self: Arc<Self>, mut seen: [u8; 32]) {
        let tls = Arc::downgrade(&self);
        let interval = self.settings.reload_interval;
        drop(self);
        tokio::spawn(async move {
            let mut unreadable: Option<String> = None;
            loop {
                tokio::time::sleep(interval).await;
                let Some(tls) = tls.upgrade() else { return };
                let settings = tls.settings.clone();
                let read = tokio::task::spawn_blocking(move || Files::read(&settings)).await;
                let files = match read {
                    Ok(Ok(f)) => f,
                    Ok(Err(e)) => {
                        let e = format!("{e:#}");
                        if unreadable.as_ref() != Some(&e) {
                            tracing::error!(error = %e, "cannot reload the TLS certificate; keeping the current one");
                            unreadable = Some(e);
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the TLS reload task failed; keeping the current certificate");
                        continue;
                    }
                };
                unreadable = None;
                let fingerprint = files.fingerprint();
                if fingerprint == seen {
                    continue;
                }
                seen = fingerprint;
                match build(&tls.settings, &files) {
                    Ok(config) => {
                        tls.current.store(config);
                        tracing::info!(cert_file = %tls.settings.cert_file.display(),
                            "reloaded the TLS certificate; new connections use it");
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"),
                        "the changed TLS files were not loaded; keeping the current certificate"),
                }
            }
        });
    }

    /// Starts accepting TLS connections on `listener`.
    pub fn listen(self: &Arc<Self>, listener: TcpListener) -> anyhow::Result<TlsListener> {
        let local = listener
            .local_addr()
            .context("cannot read the listening address")?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(accept_loop(listener, self.clone(), tx));
        Ok(TlsListener { rx, local, task })
    }
}

/// A listener whose connections have completed the TLS handshake.
#[derive(Debug)]
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, TlsPeer)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop ended (it only does when aborted): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(TlsPeer {
            remote: self.local,
            client_certificate: false,
            spiffe_id: None,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<Tls>,
    tx: tokio::sync::mpsc::Sender<(TlsStream<TcpStream>, TlsPeer)>,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::error!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "too many TLS handshakes in progress; connection closed");
            continue;
        };
        // TCP_NODELAY: see `run` (streamed answers are written in pieces).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current.load_full());
        let tx = tx.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            drop(permit);
            let peer = match peer_of(remote, stream.get_ref().1) {
                Ok(p) => p,
                Err(e) => {
                    tracing::info!(%remote, error = %e, "client certificate refused; connection closed");
                    return;
                }
            };
            let _ = tx.send((stream, peer)).await;
        });
    }
}

fn peer_of(remote: SocketAddr, conn: &rustls::ServerConnection) -> Result<TlsPeer, String> {
    let leaf = conn.peer_certificates().and_then(<[_]>::first);
    let spiffe_id = match leaf {
        Some(der) => spiffe_id_of(der)?,
        None => None,
    };
    Ok(TlsPeer {
        remote,
        client_certificate: leaf.is_some(),
        spiffe_id,
    })
}

/// The SPIFFE ID of a certificate: its one `spiffe://` URI SAN. More than one, or one that is not a
/// SPIFFE ID, is an error (the X.509-SVID rules); none is `None`.
pub fn spiffe_id_of(der: &[u8]) -> Result<Option<SpiffeId>, String> {
    let cert =
        x509_cert::Certificate::from_der(der).map_err(|e| format!("the certificate does not parse: {e}"))?;
    let mut found = Vec::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id != SubjectAltName::OID {
            continue;
        }
        let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
            .map_err(|e| format!("the subject alternative names do not parse: {e}"))?;
        for name in san.0 {
            if let GeneralName::UniformResourceIdentifier(uri) = name {
                let uri = uri.as_str();
                if uri.len() >= 9 && uri[..9].eq_ignore_ascii_case("spiffe://") {
                    found.push(uri.to_owned());
                }
            }
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => SpiffeId::parse(&found[0]).map(Some).map_err(|e| {
            format!(
                "the certificate's URI SAN `{}` is not a SPIFFE ID: {e}",
                found[0].escape_debug()
            )
        }),
        n => Err(format!(
            "the certificate has {n} SPIFFE IDs; an X.509-SVID has exactly one"
        )),
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    fn leaf(sans: Vec<SanType>) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        p.subject_alt_names.extend(sans);
        (p.self_signed(&key).expect("certificate"), key)
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().expect("IA5"))
    }

    #[test]
    fn spiffe_ids_follow_the_x509_svid_rules() {
        let (c, _) = leaf(vec![uri("spiffe://warden.local/agent/bot")]);
        let id = spiffe_id_of(c.der()).expect("one SPIFFE ID").expect("some");
        assert_eq!(id.as_str(), "spiffe://warden.local/agent/bot");
        let (c, _) = leaf(vec![uri("https://example.com/x")]);
        assert!(spiffe_id_of(c.der()).expect("no SPIFFE ID").is_none());
        let (c, _) = leaf(vec![
            uri("spiffe://warden.local/agent/a"),
            uri("spiffe://warden.local/agent/b"),
        ]);
        let e = spiffe_id_of(c.der()).expect_err("two");
        assert!(e.contains("2 SPIFFE IDs"), "{e}");
        let (c, _) = leaf(vec![uri("spiffe://Bad Domain/agent/a")]);
        let e = spiffe_id_of(c.der()).expect_err("not a SPIFFE ID");
        assert!(e.contains("is not a SPIFFE ID"), "{e}");
    }

    #[test]
    fn binding_refuses_another_agents_connection() {
        let bot = SpiffeId::parse("spiffe://warden.local/agent/bot").expect("id");
        let none = PeerIdentity::default();
        assert!(none.check("spiffe://warden.local/agent/other").is_ok());
        let peer = PeerIdentity { spiffe_id: Some(bot) };
        assert!(peer.check("spiffe://warden.local/agent/bot").is_ok());
        let e = peer
            .check("spiffe://warden.local/agent/other")
            .expect_err("bound");
        assert!(
            e.contains("TLS client certificate is `spiffe://warden.local/agent/bot`'s"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn files_are_checked_and_keys_never_shown() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = leaf(Vec::new());
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        std::fs::write(&cert_file, cert.pem()).expect("cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("key");
        let settings = TlsSettings {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            client_ca_file: None,
            reload_interval: Duration::from_secs(1),
        };
        let tls = Tls::load(settings.clone()).expect("loads");
        assert!(!tls.mutual());
        let shown = format!("{tls:?}");
        assert!(!shown.contains("PRIVATE") && shown.contains("key.pem"), "{shown}");

        // Two keys in the key file.
        std::fs::write(
            &key_file,
            format!("{}{}", key.serialize_pem(), key.serialize_pem()),
        )
        .expect("key");
        let e = format!("{:#}", Tls::load(settings.clone()).expect_err("two keys"));
        assert!(e.contains("holds 2 private keys"), "{e}");
        // A truncated key: what is wrong, never the content.
        let pem = key.serialize_pem();
        let cut = &pem[..pem.len() - 30];
        std::fs::write(&key_file, cut).expect("key");
        let e = format!("{:#}", Tls::load(settings.clone()).expect_err("truncated"));
        assert!(e.contains("tls.key_file") && e.contains("no END line"), "{e}");
        let body = pem.lines().nth(1).expect("a base64 line");
        assert!(!e.contains(body), "{e}");
        // Another leaf's key.
        let (_, other) = leaf(Vec::new());
        std::fs::write(&key_file, other.serialize_pem()).expect("key");
        let e = format!("{:#}", Tls::load(settings.clone()).expect_err("mismatch"));
        assert!(e.contains("does not match the certificate"), "{e}");
        // A client CA file that holds no certificate.
        std::fs::write(&key_file, key.serialize_pem()).expect("key");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, key.serialize_pem()).expect("ca");
        let e = format!(
            "{:#}",
            Tls::load(TlsSettings {
                client_ca_file: Some(ca_file),
                ..settings
            })
            .expect_err("no CA")
        );
        assert!(
            e.contains("tls.client_ca_file") && e.contains("holds no certificate"),
            "{e}"
        );
    }
}
