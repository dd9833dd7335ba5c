//! Test support: brand-new, empty PostgreSQL databases on a throwaway server.
//!
//! The storage suite and the integration tests run every PostgreSQL test against a real server, never a
//! mock, and never skip when there is none: a test that silently passes without a database proves
//! nothing. [`fresh_postgres_url`] gives each test its own database (`warden_test_<uuid>`), so tests are
//! isolated from each other and can run in parallel.
//!
//! Where the server comes from:
//!
//! - If `WARDEN_TEST_PG_URL` is set, it is the URL of an admin database (e.g. `postgres`) on a server
//!   that is already running; the databases are created there. `scripts/test` starts one server for the
//!   whole run and sets it, so the test binaries share it.
//! - Otherwise the first call in the process starts a server of its own in a temporary directory
//!   (`initdb`, then `pg_ctl start`): trust authentication, a unix socket in that directory and no TCP
//!   listener, durability off (`fsync`, `synchronous_commit`, `full_page_writes`), the `C` locale (byte
//!   order, like SQLite's). PostgreSQL refuses to run as root, so when the tests run as root the server
//!   runs as the `postgres` system user (`runuser`), which then owns the directory. Statics are never
//!   dropped, so a detached watchdog shell waits for the test process to exit (however it exits) and
//!   then stops the server and deletes the directory.
//!
//! If PostgreSQL is not installed, the first call panics and says how to install it.
//!
//! [`PrivateServer`] is a server of one test's own, for fault tests that stop PostgreSQL under load
//! (as a crash would) and start it again: never the shared one of `WARDEN_TEST_PG_URL`, which other
//! tests are using.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};
use tokio::process::Command;
use tokio::sync::OnceCell;
use url::Url;

/// The environment variable naming an admin database on an already running server.
const PG_URL_ENV: &str = "WARDEN_TEST_PG_URL";

/// The port of the self-started server. It listens on no TCP port; the number only names the socket
/// file (`.s.PGSQL.<port>`) in the server's own directory, so it cannot collide with anything.
const PORT: u16 = 54329;

/// How long to keep trying to connect before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The server that this process started itself (only when `WARDEN_TEST_PG_URL` is not set).
/// A failure is kept too, so that the tests after the first fail at once instead of trying again.
static SERVER: OnceCell<Result<Server, String>> = OnceCell::const_new();

#[derive(Debug)]
struct Server {
    /// URL of the `postgres` database on it.
    admin_url: String,
    /// Its temporary directory: data directory, socket and log.
    dir: PathBuf,
}

/// A URL of a brand-new, empty PostgreSQL database on the shared throwaway test server.
/// Each call creates a new database (name `warden_test_<uuid simple>`), so tests are isolated.
///
/// # Panics
///
/// If no server can be used: `WARDEN_TEST_PG_URL` is set but its server cannot be reached, or it is not
/// set and PostgreSQL is not installed or fails to start. The message says why.
pub async fn fresh_postgres_url() -> String {
    let (admin_url, log) = match std::env::var(PG_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => (url.trim().to_owned(), None),
        _ => match SERVER.get_or_init(start_server).await {
            Ok(server) => (server.admin_url.clone(), Some(server.dir.join("server.log"))),
            Err(msg) => panic!("{msg}"),
        },
    };

    let name = format!("warden_test_{}", uuid::Uuid::new_v4().simple());
    let url = with_database(&admin_url, &name);
    let mut conn = match connect(&admin_url, log.as_deref()).await {
        Ok(conn) => conn,
        Err(msg) => panic!("{msg}"),
    };
    if let Err(err) = conn.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await {
        panic!(
            "creating test database {name} on {admin_url} failed: {err}{}",
            log_tail(log.as_deref())
        );
    }
    // Closing politely only saves the server some work; a failure here changes nothing.
    let _ = conn.close().await;

    url
}

/// Whether the PostgreSQL server binaries (`initdb`, `pg_ctl`) are installed, on `PATH` or in
/// `/usr/lib/postgresql/<version>/bin`. [`fresh_postgres_url`] needs them unless `WARDEN_TEST_PG_URL`
/// is set.
pub fn postgres_installed() -> bool {
    find_bin_dir().is_some()
}

/// `admin_url` with its database (the URL path) replaced by `database`; everything else, the query
/// string (`?host=/socket/dir&port=…`) included, stays.
fn with_database(admin_url: &str, database: &str) -> String {
    let mut url = match Url::parse(admin_url) {
        Ok(url) => url,
        Err(err) => panic!("{PG_URL_ENV} is not a valid URL ({err}): {admin_url}"),
    };
    url.set_path(&format!("/{database}"));
    url.into()
}

/// Connects, retrying for up to [`CONNECT_TIMEOUT`] while the failure may pass (the server may still
/// be starting or, with many tests at once, briefly out of connections).
async fn connect(url: &str, log: Option<&Path>) -> Result<PgConnection, String> {
    let start = Instant::now();
    loop {
        match PgConnection::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(err) if is_transient(&err) && start.elapsed() < CONNECT_TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => {
                return Err(format!(
                    "could not connect to the test PostgreSQL server at {url} (tried for {}s): {err}{}",
                    start.elapsed().as_secs(),
                    log_tail(log)
                ));
            }
        }
    }
}

/// Whether a failed connection attempt is worth repeating: no server listening (yet), or the server
/// starting up (57P03) or out of connections (53300). A bad URL or an unknown database is not.
fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("57P03" | "53300")),
        _ => false,
    }
}

/// Starts this process's own server; see the module documentation. The error is a complete panic
/// message.
async fn start_server() -> Result<Server, String> {
    // Durability off: the shared server only ever holds throwaway databases, and no test crashes it.
    let cluster = Cluster::create(
        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
        "a throwaway test server",
    )
    .await?;
    cluster.start().await?;
    // pg_ctl -w has waited for "ready"; this proves that sqlx gets in too.
    let conn = connect(&cluster.admin_url, Some(&cluster.log)).await?;
    let _ = conn.close().await;
    tracing::info!(dir = %cluster.dir.display(), "started a throwaway PostgreSQL server for the tests");
    Ok(Server {
        admin_url: cluster.admin_url,
        dir: cluster.dir,
    })
}

/// A PostgreSQL cluster in a temporary directory of its own (`initdb` done, not necessarily running),
/// and how to run its tools.
#[derive(Debug)]
struct Cluster {
    bin: PathBuf,
    /// `runuser`, when the tests run as root and PostgreSQL therefore runs as `postgres`.
    as_postgres: Option<PathBuf>,
    /// The temporary directory: data directory, socket and log. Deleted by the watchdog.
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// URL of the `postgres` database on it.
    admin_url: String,
}

impl Cluster {
    /// `initdb` in a new temporary directory, with a unix socket there (no TCP listener) and
    /// `settings` (lines of `postgresql.conf`) added; `what` names the server in its config file.
    async fn create(settings: &str, what: &str) -> Result<Self, String> {
        let Some(bin) = find_bin_dir() else {
            return Err(format!(
                "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in \
                 /usr/lib/postgresql/*/bin: install them with `apt-get install -y postgresql`, \
                 or run ./scripts/test, which does (or set {PG_URL_ENV} to the URL of an admin database \
                 on a running server)"
            ));
        };
        // When running as root: the `runuser` that runs PostgreSQL as the `postgres` user.
        let as_postgres = if running_as_root().await {
            Some(find_runuser().ok_or(
                "the tests run as root, and PostgreSQL refuses to run as root, so its server must run as the \
                 `postgres` system user, but `runuser` (util-linux) was found neither on PATH nor in \
                 /usr/sbin or /sbin",
            )?)
        } else {
            None
        };

        // A short base path: a unix socket path must fit in about 100 bytes, and when running as root the
        // `postgres` user must be able to reach the directory (it cannot enter e.g. /root/tmp).
        let base = if Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir_in(&base)
            .map_err(|err| format!("cannot create a temporary directory in {}: {err}", base.display()))?
            // Deleted by the watchdog (the shared server is a static, never dropped) or by
            // `PrivateServer`'s drop, not by `TempDir`'s.
            .keep();
        let data = dir.join("data");
        let log = dir.join("server.log");

        // The watchdog first, so that the directory goes away whatever happens below.
        spawn_watchdog(&bin, &dir, &data, as_postgres.as_deref())?;

        if as_postgres.is_some() {
            let out = run(Command::new("chown").arg("postgres:").arg(&dir), "chown").await?;
            if !out.status.success() {
                return Err(format!(
                    "the tests run as root, and PostgreSQL refuses to run as root, so its server runs as \
                     the `postgres` system user; but `chown postgres: {}` failed (does the user exist? \
                     installing the `postgresql` package creates it):\n{}",
                    dir.display(),
                    output_text(&out)
                ));
            }
        }

        let mut initdb = pg_command(&bin, "initdb", as_postgres.as_deref(), &dir);
        initdb.arg("-D").arg(&data).args([
            "--auth=trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        let out = run(&mut initdb, "initdb").await?;
        if !out.status.success() {
            return Err(format!("initdb failed ({}):\n{}", out.status, output_text(&out)));
        }

        // Settings go into postgresql.conf rather than through `pg_ctl -o`, which a shell would re-parse.
        let settings = format!(
            "\n# Added by warden_store::testing: {what}.\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{dir}'\n\
             port = {PORT}\n\
             max_connections = 300\n\
             {settings}",
            dir = dir.display()
        );
        let conf = data.join("postgresql.conf");
        append(&conf, &settings)
            .await
            .map_err(|err| format!("cannot write {}: {err}", conf.display()))?;

        let mut url = Url::parse("postgres://postgres@localhost/postgres")
            .map_err(|err| format!("BUG: constant URL does not parse: {err}"))?;
        url.query_pairs_mut()
            .append_pair("host", &dir.to_string_lossy())
            .append_pair("port", &PORT.to_string());
        Ok(Self {
            bin,
            as_postgres,
            dir,
            data,
            log,
            admin_url: String::from(url),
        })
    }

    /// `pg_ctl start`, waiting until the server accepts connections (crash recovery included).
    async fn start(&self) -> Result<(), String> {
        let mut pg_ctl = self.pg("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"]);
        let out = run(&mut pg_ctl, "pg_ctl start").await?;
        if !out.status.success() {
            return Err(format!(
                "starting the test PostgreSQL server failed ({}):\n{}{}",
                out.status,
                output_text(&out),
                log_tail(Some(&self.log))
            ));
        }
        Ok(())
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, without a checkpoint, as in a
    /// crash; the next start recovers from the WAL.
    async fn stop_immediate(&self) -> Result<(), String> {
        let mut pg_ctl = self.pg("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        let out = run(&mut pg_ctl, "pg_ctl stop").await?;
        if !out.status.success() {
            return Err(format!(
                "stopping the test PostgreSQL server failed ({}):\n{}{}",
                out.status,
                output_text(&out),
                log_tail(Some(&self.log))
            ));
        }
        Ok(())
    }

    fn pg(&self, program: &str) -> Command {
        pg_command(&self.bin, program, self.as_postgres.as_deref(), &self.dir)
    }
}

/// A PostgreSQL server of one test's own, which the test may crash (`pg_ctl stop -m immediate`: every
/// server process quits at once, no checkpoint) and start again (crash recovery from the WAL). Unlike
/// the shared server, commits are durable across such a crash: `synchronous_commit` is on (the
/// default), so a commit returns only once its WAL is written. `fsync` stays off — the processes die,
/// not the machine, so what was written survives in the page cache — to keep the tests fast.
///
/// Stopped and deleted when dropped (and by a watchdog when the test process dies without dropping
/// it). Never the server of `WARDEN_TEST_PG_URL`: crashing that one would break the other tests.
#[derive(Debug)]
pub struct PrivateServer {
    cluster: Cluster,
}

impl PrivateServer {
    /// Creates and starts a new server.
    ///
    /// # Panics
    ///
    /// If PostgreSQL is not installed or does not start; the message says why.
    pub async fn start() -> Self {
        let cluster = match Cluster::create(
            "fsync = off\nfull_page_writes = off\n",
            "a test's private server, crashed on purpose",
        )
        .await
        {
            Ok(c) => c,
            Err(msg) => panic!("{msg}"),
        };
        if let Err(msg) = cluster.start().await {
            panic!("{msg}");
        }
        if let Err(msg) = connect(&cluster.admin_url, Some(&cluster.log)).await.map(drop) {
            panic!("{msg}");
        }
        Self { cluster }
    }

    /// The URL of a new, empty database on this server.
    pub async fn fresh_database(&self) -> String {
        let name = format!("warden_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = match connect(&self.cluster.admin_url, Some(&self.cluster.log)).await {
            Ok(conn) => conn,
            Err(msg) => panic!("{msg}"),
        };
        if let Err(err) = conn.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await {
            panic!(
                "creating test database {name} failed: {err}{}",
                log_tail(Some(&self.cluster.log))
            );
        }
        let _ = conn.close().await;
        with_database(&self.cluster.admin_url, &name)
    }

    /// Crashes the server: `pg_ctl stop -m immediate`, returning once no server process is left.
    ///
    /// # Panics
    ///
    /// If `pg_ctl` fails.
    pub async fn crash(&self) {
        if let Err(msg) = self.cluster.stop_immediate().await {
            panic!("{msg}");
        }
    }

    /// Starts the server again after [`PrivateServer::crash`], returning once it accepts
    /// connections (crash recovery done).
    ///
    /// # Panics
    ///
    /// If it does not start.
    pub async fn restart(&self) {
        if let Err(msg) = self.cluster.start().await {
            panic!("{msg}");
        }
    }

    /// Hangs the server: every one of its processes is stopped (`SIGSTOP`), so connections are
    /// accepted by the kernel but nothing ever answers — a database host that froze, or a network
    /// that drops everything. Returns how many processes were stopped.
    ///
    /// # Panics
    ///
    /// If the server is not running.
    pub fn freeze(&self) -> usize {
        let pids = self.cluster.pids();
        assert!(!pids.is_empty(), "the PostgreSQL server is not running");
        // The postmaster first, so that it starts no new process meanwhile.
        signal("STOP", &pids);
        pids.len()
    }

    /// Lets a [`PrivateServer::freeze`]d server run again (`SIGCONT`).
    pub fn thaw(&self) {
        signal("CONT", &self.cluster.pids());
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(Some(&self.cluster.log))
    }
}

/// Sends `SIGname` to `pids`, in order (the shell's `kill`: no procps needed).
fn signal(name: &str, pids: &[u32]) {
    for pid in pids {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{name} {pid}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Cluster {
    /// The postmaster's pid (first line of `postmaster.pid`) and its children's (from `/proc`),
    /// postmaster first; empty when it is not running.
    fn pids(&self) -> Vec<u32> {
        let Some(postmaster) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // `pid (comm) state ppid ...`: the fields after the last `)`.
            let ppid = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                });
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        // Synchronously (no runtime in drop): let it run if it was frozen, stop it if it runs, then
        // delete the directory.
        let c = &self.cluster;
        signal("CONT", &c.pids());
        if c.data.join("postmaster.pid").exists() {
            let program = c.bin.join("pg_ctl");
            let mut cmd = match &c.as_postgres {
                Some(runuser) => {
                    let mut cmd = std::process::Command::new(runuser);
                    cmd.args(["-u", "postgres", "--"]).arg(program);
                    cmd
                }
                None => std::process::Command::new(program),
            };
            let _ = cmd
                .arg("-D")
                .arg(&c.data)
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .current_dir(&c.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

/// A command for one of the PostgreSQL binaries in `bin`, run as the `postgres` user with the
/// `runuser` at `as_postgres` if given, from `cwd` (PostgreSQL tools fail when they cannot read their working directory,
/// e.g. the postgres user in a checkout under /root).
fn pg_command(bin: &Path, program: &str, as_postgres: Option<&Path>, cwd: &Path) -> Command {
    let program = bin.join(program);
    let mut cmd = if let Some(runuser) = as_postgres {
        let mut cmd = Command::new(runuser);
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.current_dir(cwd);
    cmd
}

/// Runs `cmd` to completion, capturing its output; fails only if it cannot be started at all.
async fn run(cmd: &mut Command, what: &str) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .output()
        .await
        .map_err(|err| format!("cannot run {what} ({:?}): {err}", cmd.as_std().get_program()))
}

/// A detached shell that waits until this process has exited, then stops the server (if it ever
/// started) and deletes its directory. It gets a process group of its own so that a Ctrl-C in the
/// terminal, which signals the test process's group, does not kill it too.
fn spawn_watchdog(bin: &Path, dir: &Path, data: &Path, as_postgres: Option<&Path>) -> Result<(), String> {
    use std::os::unix::process::CommandExt;

    const SCRIPT: &str = r#"
        pid=$1 dir=$2 data=$3 pg_ctl=$4 runuser=$5
        while kill -0 "$pid" 2>/dev/null; do sleep 1; done
        if [ -f "$data/postmaster.pid" ]; then
            # A frozen server (PrivateServer::freeze) must run to stop; its postmaster kills the
            # children that stay frozen.
            kill -CONT "$(head -n 1 "$data/postmaster.pid")" 2>/dev/null
            if [ -n "$runuser" ]; then
                "$runuser" -u postgres -- "$pg_ctl" stop -D "$data" -m immediate -w -t 30
            else
                "$pg_ctl" stop -D "$data" -m immediate -w -t 30
            fi
        fi
        rm -rf -- "$dir"
    "#;
    std::process::Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("warden-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(data)
        .arg(bin.join("pg_ctl"))
        .arg(as_postgres.unwrap_or(Path::new("")))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        // Never waited for: it outlives this process, and is then reaped by init.
        .map(drop)
        .map_err(|err| format!("cannot start the watchdog that stops the test PostgreSQL server (sh): {err}"))
}

/// `runuser`, on `PATH` or in the sbin directories that a non-root `PATH` often lacks.
fn find_runuser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("runuser"))
        .find(|runuser| runuser.is_file())
}

/// Whether this process's effective user is root, from /proc/self/status or else `id -u`.
async fn running_as_root() -> bool {
    if let Ok(status) = tokio::fs::read_to_string("/proc/self/status").await
        && let Some(uids) = status.lines().find_map(|line| line.strip_prefix("Uid:"))
    {
        // Real, effective, saved set, filesystem.
        return uids.split_whitespace().nth(1) == Some("0");
    }
    match Command::new("id").arg("-u").stdin(Stdio::null()).output().await {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim() == "0",
        _ => false,
    }
}

/// The directory holding `initdb` and `pg_ctl`: the first `PATH` entry that has both, else
/// `/usr/lib/postgresql/<highest version>/bin` (Debian and Ubuntu install there, off `PATH`).
fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(dir) = on_path.into_iter().find(|dir| has_both(dir)) {
        return Some(dir);
    }

    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = version_key(&entry.file_name())?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// "15" -> [15], "9.6" -> [9, 6]; `None` for anything else.
fn version_key(name: &OsStr) -> Option<Vec<u32>> {
    name.to_str()?.split('.').map(|part| part.parse().ok()).collect()
}

async fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;

    let mut file = tokio::fs::OpenOptions::new().append(true).open(path).await?;
    file.write_all(text.as_bytes()).await?;
    file.flush().await
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The last lines of the server log, for panic messages; empty without a log.
fn log_tail(log: Option<&Path>) -> String {
    let Some(log) = log else { return String::new() };
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            format!("\n--- last lines of the server log {} ---\n{tail}", log.display())
        }
        Err(err) => format!("\n(server log {} unreadable: {err})", log.display()),
    }
}
