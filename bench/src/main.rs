//! `pushbench`: the load tool of the push service. Devices speak Firefox's
//! WebSocket protocol from worker processes (one socket each, spread so no
//! process nears its open-file limit); pushers post over HTTP/1.1 keep-alive.
//! Each command prints exactly one JSON result line on stdout; progress goes
//! to stderr.

mod app_client;
mod bodies;
mod connect;
mod flood;
mod floor;
mod http;
mod list;
mod list_api;
mod offline;
mod plain;
mod pool;
mod push;
mod served;
mod settled;
mod stats;
mod storm;
mod tally;
mod worker;
mod ws;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The command line.
#[derive(Parser)]
#[command(
    name = "pushbench",
    about = "Load tool of the Web Push origin",
    version
)]
struct Cli {
    /// Adds a "scenario" field with this value to the result line.
    #[arg(long, global = true)]
    scenario: Option<String>,
    /// Stops everything after this many seconds.
    #[arg(long, global = true, default_value_t = 300)]
    timeout_secs: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Opens N devices (hello + register); rate and origin RSS per device.
    Connect(connect::ConnectArgs),
    /// Pushes to N devices; deliveries per second and POST→delivery latency.
    Push(push::PushArgs),
    /// One push to a list of N connected devices against N single pushes.
    List(list::ListArgs),
    /// A list of M offline subscriptions: push latency, then K reconnect.
    OfflineList(offline::OfflineArgs),
    /// Devices in many lists with a long backlog they acknowledged go,
    /// miss one push to each list, and all come back at once.
    Storm(storm::StormArgs),
    /// One VAPID key pushes to its many lists as fast as it can: what its
    /// copy budget lets through.
    Flood(flood::FloodArgs),
    /// The kernel's floor for a list push: bare writes of a copy-sized frame
    /// to N loopback sockets, read (and answered) by bare clients.
    Floor(floor::FloorArgs),
    /// A worker process holding devices (started by the other commands).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
    /// A client process of `floor`.
    #[command(hide = true)]
    FloorClient(floor::FloorClientArgs),
}

/// Realtime clock in ns since the epoch (comparable across processes).
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Writes one line to stdout now; exits if the reader is gone.
pub fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, timeout) = (cli.scenario, cli.timeout_secs);
    let (cmd, result) = match cli.cmd {
        Cmd::Worker(a) => return worker::run(a),
        Cmd::FloorClient(a) => return floor::client(a),
        Cmd::Floor(a) => ("floor", floor::run(a)),
        Cmd::Connect(a) => ("connect", block_on(timeout, connect::run(a, timeout))),
        Cmd::Push(a) => ("push", block_on(timeout, push::run(a, timeout))),
        Cmd::List(a) => ("list", block_on(timeout, list::run_list(a, timeout))),
        Cmd::OfflineList(a) => (
            "offline-list",
            block_on(timeout, offline::run_offline(a, timeout)),
        ),
        Cmd::Storm(a) => ("storm", block_on(timeout, storm::run_storm(a, timeout))),
        Cmd::Flood(a) => ("flood", block_on(timeout, flood::run_flood(a, timeout))),
    };
    let (mut line, code) = match result {
        // A result may carry a correctness verdict apart from its figures.
        Ok(v) if v["correct"] == false => (v, ExitCode::FAILURE),
        Ok(v) => (v, ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("pushbench {cmd}: {e}");
            (json!({"cmd": cmd, "error": e}), ExitCode::FAILURE)
        }
    };
    if let (Some(s), Value::Object(m)) = (name, &mut line) {
        m.insert("scenario".into(), s.into());
    }
    emit(&line.to_string());
    code
}

/// Runs `f` on a new single-threaded runtime for at most `secs` seconds.
fn block_on(
    secs: u64,
    f: impl std::future::Future<Output = Result<Value, String>>,
) -> Result<Value, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bounded(secs, f))
}

/// Runs `f` for at most `secs` seconds.
async fn bounded(
    secs: u64,
    f: impl std::future::Future<Output = Result<Value, String>>,
) -> Result<Value, String> {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {secs} s")))
}
