//! Warden's server: the REST API under `/v1`, authentication of humans and their roles, the generated
//! OpenAPI document, `/healthz`, the data directory and the first-start bootstrap.
//!
//! [`run`] is what `warden serve` calls. It resolves the configuration ([`config`]), prepares the data
//! directory (mode 0700, an exclusive lock when SQLite is used, so two servers never share one database
//! file), opens the store, creates the bootstrap admin when the store has no human yet, and serves until
//! SIGINT or SIGTERM, finishing in-flight requests before it exits.
//!
//! INVARIANT (authorization before action): every handler that changes the registry first obtains a
//! [`auth::Permit`] from the authenticated [`auth::Caller`]; the permit is the only source of the
//! `ChangeContext` a store write requires.

pub mod api;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod checkpoint_file;
pub mod config;
pub mod decide;
pub mod error;
pub mod federation;
pub mod gateway;
pub mod json;
pub mod keys;
pub mod ledger;
pub mod notify;
pub mod oauth;
pub mod pipeline;
pub mod policy;
pub mod resource;
pub mod revocations;
mod state;
pub mod tasks;
pub mod tls;

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use chrono::Utc;
use tracing_subscriber::EnvFilter;
use uuid::Uuid;
use warden_core::token::{self, DEFAULT_TOKEN_TTL};
use warden_core::{ChangeContext, DisplayName, NewHuman, Role};
use warden_store::{SqliteStore, Store, TokenRecord};

pub use api::{HttpLimits, router};
pub use config::{Config, ServeOptions};
pub use state::{AppState, Identity, RegistryEvent, TokenSettings};

use config::{DatabaseTarget, LogFormat, Resolved};

/// Name of the bootstrap token file inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(opts: ServeOptions) -> anyhow::Result<()> {
    let config = match &opts.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let env_url = std::env::var("WARDEN_DATABASE_URL").ok();
    let resolved = config.resolve(&opts, env_url)?;
    init_logging(&resolved)?;
    // Before anything is opened: a certificate that cannot serve stops the start here.
    let tls = match &resolved.tls {
        config::TlsMode::Terminate(settings) => Some(tls::Tls::load(settings.clone())?),
        config::TlsMode::Off | config::TlsMode::BehindProxy => None,
    };

    prepare_data_dir(&resolved.data_dir)?;
    // Held until the process exits: the OS releases it even on kill -9.
    let _lock = match &resolved.database {
        DatabaseTarget::EmbeddedSqlite(_) => Some(lock_data_dir(&resolved.data_dir)?),
        DatabaseTarget::Url(_) => None,
    };
    let store = open_store(&resolved.database, &resolved.store_options).await?;
    // Before anything is written: a log cut back below the checkpoint this node kept outside the
    // database must not be extended (its lost sequence numbers would be handed out again).
    let signer = ledger::load_signer(
        &resolved.data_dir,
        resolved.ledger.signing_key_file.as_ref(),
        &ledger::key_name(&resolved.trust_domain, &hostname()),
    )?;
    let checkpoint_path = checkpoint_file::path(&resolved.data_dir);
    let kept = checkpoint_file::check(
        store.as_ref(),
        &checkpoint_path,
        &signer,
        &ledger::origin(&resolved.trust_domain),
    )
    .await?;
    let keeper = checkpoint_file::Keeper::start(checkpoint_path, kept.map_or(0, |c| c.size));
    let mut first_start = Vec::new();
    first_start.extend(bootstrap(store.as_ref(), &resolved).await?);

    let listener = tokio::net::TcpListener::bind(resolved.listen)
        .await
        .with_context(|| format!("cannot listen on {}", resolved.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = match &resolved.public_url {
        Some(u) => u.clone(),
        None => url::Url::parse(&format!("{scheme}://{addr}")).context("cannot make the public URL")?,
    };
    let identity = Arc::new(build_identity(&resolved, &public_url, store.clone()).await?);
    let policy_bootstrap = match &resolved.policy_bootstrap_dir {
        Some(dir) => policy::prepare_bootstrap(store.as_ref(), dir).await?,
        None => None,
    };
    first_start.extend(policy_bootstrap.as_ref().map(|b| b.entry.clone()));
    let ledger = open_ledger(&resolved, store.clone(), &public_url, signer, keeper).await?;
    // What the first start did (the admin, the policy set) is the log's first history. (The admin is
    // recorded after the fact: the ledger's keys live in the data directory the bootstrap prepares.
    // The policy set is recorded before it is activated: its entry binds its text to its hash.)
    if !first_start.is_empty() {
        ledger
            .record_all(first_start)
            .await
            .context("cannot record the first start in the audit ledger")?;
    }
    if let Some(b) = &policy_bootstrap {
        policy::activate_bootstrap(store.as_ref(), b).await?;
    }
    let policies = Arc::new(policy::Policies::load(store.as_ref()).await?);
    spawn_background(store.clone(), identity.clone(), policies.clone());
    let mut state = AppState::new(
        store.clone(),
        resolved.trust_domain.clone(),
        identity,
        policies,
        ledger.clone(),
    );
    // Before the first request: revocations held before a restart are in force at once.
    state.revocations = Arc::new(revocations::Revocations::open_with(
        &resolved.data_dir,
        state.identity.tasks.held.clone(),
    )?);
    revocations::spawn_retry(state.clone(), std::time::Duration::from_secs(1));
    state.store_timeout = resolved.store_options.acquire_timeout;
    state.approvals = (&resolved.approvals).into();
    state.notifier = notify::Notifier::new(&resolved.notify.webhook)?;
    state.gateway = Arc::new(build_gateway(&resolved)?);
    gateway::spawn_event_listener(store.clone(), state.gateway.clone(), ledger.clone());
    gateway::stdio::spawn_reaper(state.clone(), std::time::Duration::from_secs(5));
    approvals::spawn_expiry(state.clone(), std::time::Duration::from_secs(10));
    let gateway = state.gateway.clone();
    let app = router(state, resolved.limits);
    let mutual = tls.as_ref().is_some_and(|t| t.mutual());
    tracing::info!(%addr, %scheme, mutual_tls = mutual, behind_proxy = matches!(resolved.tls, config::TlsMode::BehindProxy),
        store = store.backend().as_str(), trust_domain = %resolved.trust_domain, "warden listening");
    // A plain line as well: scripts and tests wait for it, whatever the log format.
    eprintln!("warden: listening on {scheme}://{addr}");

    match tls {
        // The handshake and the verified client certificate: see `tls`.
        Some(tls) => {
            let listener = tls.listen(listener)?;
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<tls::TlsPeer>(),
            )
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("server error")?;
        }
        None => {
            // TCP_NODELAY on every connection: a streamed answer (an MCP SSE relay) is written in
            // pieces, and with Nagle's algorithm the last piece waited for the client's delayed
            // ACK — 40 ms per call.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
                }
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("server error")?;
        }
    }
    tracing::info!("shutting down: in-flight requests finished");
    gateway.flush_results(&ledger).await;
    ledger.shutdown().await;
    store.close().await;
    Ok(())
}

/// The MCP gateway: its key (file or `WARDEN_GATEWAY_KEY`), settings and secret scanner.
fn build_gateway(r: &Resolved) -> anyhow::Result<gateway::Gateway> {
    let file = r
        .gateway
        .key_file
        .clone()
        .unwrap_or_else(|| r.data_dir.join("gateway.key"));
    let env = std::env::var("WARDEN_GATEWAY_KEY").ok();
    let keys = gateway::GatewayKeys::load(env.as_deref(), &file)?;
    let rules: Vec<warden_gateway::scan::CustomRule> = r
        .gateway
        .scan_rule
        .iter()
        .map(|c| warden_gateway::scan::CustomRule {
            id: c.id.clone(),
            regex: c.regex.clone(),
        })
        .collect();
    let scanner = warden_gateway::scan::Scanner::new(&rules).context("invalid [[gateway.scan_rule]]")?;
    gateway::Gateway::new((&r.gateway).into(), keys, scanner, &r.gateway.stdio)
}

/// The audit ledger's writer, with this node's checkpoint key, the deployment's redaction key and the
/// keeper of `<data-dir>/ledger.checkpoint`.
async fn open_ledger(
    r: &Resolved,
    store: Arc<dyn Store>,
    public_url: &url::Url,
    signer: warden_ledger::NoteSigner,
    keeper: checkpoint_file::Keeper,
) -> anyhow::Result<Arc<ledger::Ledger>> {
    let redactor = ledger::load_redactor(&r.data_dir, r.ledger.redaction_key_file.as_ref())?;
    let node = format!("{}@{}", hostname(), public_url);
    ledger::Ledger::start_keeping(
        store,
        signer,
        ledger::origin(&r.trust_domain),
        redactor,
        (&r.ledger).into(),
        &node,
        Some(keeper),
    )
    .await
}

/// Keys, the task cache and trusted issuers.
async fn build_identity(
    r: &Resolved,
    public_url: &url::Url,
    store: Arc<dyn Store>,
) -> anyhow::Result<Identity> {
    let settings = TokenSettings::new(public_url, &r.tokens);
    let overlap = match r.tokens.key_overlap_secs {
        Some(s) => chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX)),
        None => settings.task_token_ttl + chrono::Duration::seconds(60),
    };
    let node = format!("{}@{}", hostname(), public_url);
    let keys = match &r.tokens.signing_key_file {
        Some(file) => keys::KeyManager::open_pinned(file, node, overlap, store).await?,
        None => keys::KeyManager::open(&r.data_dir, node, overlap, store).await?,
    };
    let federation = federation::Federation::load(r.federation.clone()).await?;
    let ttl = std::time::Duration::from_millis(r.tokens.revocation_cache_ttl_ms);
    Ok(Identity::new(settings, keys, federation, ttl))
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into())
}

/// Applies store events to the caches, refreshes trusted issuers' keys, and forgets expired jtis.
/// `run` starts it; tests that build their own state start it too.
pub fn spawn_background(store: Arc<dyn Store>, identity: Arc<Identity>, policies: Arc<policy::Policies>) {
    let mut events = store.events();
    let id = identity.clone();
    let event_store = store.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    id.tasks.apply(&event);
                    apply_to_policies(&policies, event_store.as_ref(), &event).await;
                    let keys_changed = matches!(
                        event,
                        warden_store::StoreEvent::SigningKeysChanged | warden_store::StoreEvent::Resync
                    );
                    if keys_changed && let Err(e) = id.keys.reload().await {
                        tracing::warn!(error = %format!("{e:#}"), "cannot reload signing keys");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "fell behind on store events; resyncing");
                    id.tasks.apply(&warden_store::StoreEvent::Resync);
                    apply_to_policies(&policies, event_store.as_ref(), &warden_store::StoreEvent::Resync)
                        .await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let federation_identity = identity.clone();
    tokio::spawn(async move {
        // The loop borrows the federation inside the shared identity.
        federation_refresh(federation_identity).await;
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            match store.purge_expired_jtis(Utc::now()).await {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "forgot expired one-time ids"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot purge expired one-time ids"),
            }
        }
    });
}

/// Keeps the policy sets and entities current.
async fn apply_to_policies(
    policies: &Arc<policy::Policies>,
    store: &dyn Store,
    event: &warden_store::StoreEvent,
) {
    use warden_store::StoreEvent;
    let result = match event {
        StoreEvent::PoliciesChanged => policies.reload_policies(store, false).await,
        StoreEvent::RegistryChanged {
            agents,
            upstreams,
            tools,
            ..
        } => match policies.refresh(store, agents, upstreams).await {
            Ok(()) => policies.refresh_tools(store, tools).await,
            Err(e) => Err(e),
        },
        StoreEvent::Resync => policies.resync(store).await,
        StoreEvent::TasksRevoked { .. } | StoreEvent::SigningKeysChanged => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(error = %format!("{e:#}"), "cannot refresh policy data");
    }
}

async fn federation_refresh(identity: Arc<Identity>) {
    identity.federation.refresh().await;
}

fn init_logging(r: &Resolved) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v).context("invalid RUST_LOG filter")?,
        _ => EnvFilter::try_new(&r.log.level).context("invalid log.level filter")?,
    };
    // Colours only on a terminal: log files and shippers get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match r.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // Already initialised (tests running several servers in one process) is fine.
    let _ = result;
    Ok(())
}

/// Creates the data directory with mode 0700, or checks an existing one.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let meta =
            fs::metadata(dir).with_context(|| format!("cannot read data directory {}", dir.display()))?;
        if !meta.is_dir() {
            bail!("data directory {} exists and is not a directory", dir.display());
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "data directory is accessible to other users; chmod 700 it");
        }
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "created data directory");
    Ok(())
}

/// Takes an exclusive lock on `<data-dir>/warden.lock`.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("warden.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "another `warden serve` is using the data directory {}; stop it or use another --data-dir",
            dir.display()
        ),
        Err(fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

async fn open_store(
    target: &DatabaseTarget,
    options: &warden_store::StoreOptions,
) -> anyhow::Result<Arc<dyn Store>> {
    match target {
        DatabaseTarget::EmbeddedSqlite(path) => {
            let store = SqliteStore::open_with_options(path, options)
                .await
                .with_context(|| format!("cannot open the SQLite store at {}", path.display()))?;
            Ok(Arc::new(store))
        }
        // The URL is not put in the context: it may hold a password.
        DatabaseTarget::Url(url) => warden_store::open_with_options(url.expose(), options)
            .await
            .context("cannot open the store"),
    }
}

/// On first start (no human in the store), creates the admin and writes its token to
/// `<data-dir>/admin.token` with mode 0600. The file is written before the database commit and renamed
/// into place after it, so a crash leaves either no admin, or an admin whose token is on disk.
async fn bootstrap(store: &dyn Store, r: &Resolved) -> anyhow::Result<Option<warden_ledger::NewEntry>> {
    let final_path = r.data_dir.join(ADMIN_TOKEN_FILE);
    let tmp_path: PathBuf = r
        .data_dir
        .join(format!(".{ADMIN_TOKEN_FILE}.{}", Uuid::new_v4().simple()));
    let (secret, hash) = token::generate();
    {
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp_path)
            .with_context(|| format!("cannot write {}", tmp_path.display()))?;
        f.write_all(secret.expose().as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp_path.display()))?;
    }
    let now = Utc::now();
    let admin = NewHuman {
        email: r.admin_email.clone(),
        display_name: DisplayName::parse("Bootstrap admin")?,
        roles: vec![Role::Admin],
    };
    let record = TokenRecord {
        id: Uuid::new_v4(),
        human: r.admin_email.clone(),
        label: "bootstrap".into(),
        hash,
        expires_at: now + DEFAULT_TOKEN_TTL,
        // Written to a file on the node: whoever can read the data directory has seen it, so it is
        // not its holder's own until claimed.
        minted_by: None,
        personal: false,
        claims: None,
    };
    let created = store
        .bootstrap_admin(&admin, &record, &ChangeContext::new("system:bootstrap", now))
        .await;
    match created {
        Ok(true) => {
            fs::rename(&tmp_path, &final_path)
                .with_context(|| format!("cannot move the bootstrap token to {}", final_path.display()))?;
            tracing::info!(admin = %r.admin_email, token_id = %record.id, "bootstrap admin created");
            eprintln!(
                "warden: first start: created admin {} and wrote its API token to {} (mode 0600, expires in {} days)",
                r.admin_email,
                final_path.display(),
                DEFAULT_TOKEN_TTL.num_days()
            );
            Ok(Some(
                warden_ledger::NewEntry::new(
                    now,
                    warden_ledger::EntryKind::RegistryChange,
                    "system:bootstrap",
                )
                .subject(r.admin_email.to_string())
                .body(serde_json::json!({
                    "op": "human.bootstrap_admin",
                    "roles": ["admin"],
                    "token_id": record.id,
                    "expires_at": record.expires_at,
                })),
            ))
        }
        Ok(false) => {
            let _ = fs::remove_file(&tmp_path);
            Ok(None)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp_path);
            Err(e).context("cannot bootstrap the admin")
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = term => tracing::info!("received SIGTERM"),
    }
}
