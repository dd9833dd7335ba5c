//! `warden`: the Warden server (`warden serve`) and the command-line client of its REST API (`agent`,
//! `upstream`, `human`, `task`, `keys`, `policy`, `whoami`), including the agent side (`agent enroll`,
//! `task start|renew|delegate|current|end`, `authorize`, and `connect`, the stdio bridge for desktop and
//! IDE MCP clients), which authenticates with the agent's own key or
//! task token instead of an API token. `policy validate` and `policy test` work on local files only;
//! `audit verify` and `audit export` read the ledger from the server's database (or a bundle) directly.
//!
//! Exit codes: 0 success; 1 error (the server refused the request with any 4xx or 5xx, could not be
//! reached, or a local file could not be read; a policy set that does not compile; a failed policy
//! test; a ledger or bundle that fails verification); 2 usage error (clap's own, and flag values this
//! client refuses before sending anything); `warden authorize` only: 3 the decision is deny, 4 it is needs_approval. Errors are printed as
//! `error: <message>` on stderr.

mod agent;
mod approvals;
mod audit;
mod cli;
mod client;
mod commands;
mod connect;
mod gateway;
mod output;
mod policy;
mod request;
mod secret_file;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc instead of glibc's malloc: the gateway allocates per message on every worker thread, and
/// under load glibc's allocator (arena locking, `malloc_consolidate`) took about 15% of the server's
/// CPU in `perf` (BENCHMARKS.md, the gateway section).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::request::UsageError;

fn main() -> ExitCode {
    // Usage errors exit here with code 2, `--help` and `--version` with 0.
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
