//! `pushbench flood`: one VAPID key pushes to its many lists as fast as it can; what its copy budget let through.

use crate::app_client::App;
use crate::bodies::list_document;
use crate::pool::{DeviceOpts, Pool};
use crate::realtime_ns;
use crate::stats::r3;
use crate::tally::{connect, ready};
use serde_json::{json, Value};
use shared::list::CONTENT_TYPE;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `flood`.
#[derive(Debug, Clone, clap::Args)]
pub struct FloodArgs {
    /// The application API's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub app: String,
    /// Lists the key owns.
    #[arg(long, default_value_t = 100)]
    pub lists: usize,
    /// Offline subscriptions, each a member of every list.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// How long to push, in seconds (after the lists are made).
    #[arg(long, default_value_t = 30)]
    pub secs: u64,
    /// Pushes in flight at once (each on a connection of its own).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// The origin's `owner_copies_per_minute`, to hold the result against.
    #[arg(long)]
    pub budget: u64,
    /// Worker processes making the subscriptions.
    #[arg(long, default_value_t = 2)]
    pub create_workers: usize,
    /// The origin's process id (unused; every command takes it).
    #[arg(long)]
    pub origin_pid: Option<u32>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dev: DeviceOpts,
}

/// What the pushes were answered.
#[derive(Default)]
struct Answers {
    /// By status code.
    statuses: BTreeMap<u16, u64>,
    /// `429`s by problem type.
    refused: BTreeMap<String, u64>,
    /// `Retry-After` values of the `429`s: lowest, highest.
    retry_after: Option<(u64, u64)>,
    /// Copies accepted (members of each `201`) by the clock minute its
    /// request was sent and answered in.
    copies_by_minute: BTreeMap<u64, u64>,
    /// Copies of `201`s sent in one clock minute and answered in the next
    /// (counted by the service in either).
    copies_straddling: u64,
    /// Transport errors.
    errors: u64,
}

/// `pushbench flood`.
pub async fn run_flood(a: FloodArgs, timeout_secs: u64) -> Result<Value, String> {
    let app = Arc::new(App::new(&a.app)?);
    let endpoints =
        offline_subscriptions(&a.dev, a.members, a.create_workers, timeout_secs).await?;
    let vapid = pushclient::vapid::Vapid::new(
        &pushclient::keys::generate(),
        Some("mailto:flood@example.com".into()),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let auth = Arc::new(vapid.authorization(&a.app, now));
    let doc = list_document(&endpoints);
    let mut lists = Vec::with_capacity(a.lists);
    for i in 0..a.lists {
        let r = app
            .request(
                "POST",
                "/lists/0",
                &[("Content-Type", CONTENT_TYPE), ("Authorization", &auth)],
                doc.as_bytes(),
            )
            .await?
            .expect(&[201], &format!("list {i} create"))?;
        lists.push(r.location_path("list create")?);
    }
    let lists = Arc::new(lists);
    eprintln!(
        "pushbench: flooding: {} lists of {} members, {} at once for {} s",
        a.lists, a.members, a.concurrency, a.secs
    );
    let answers = Arc::new(Mutex::new(Answers::default()));
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(a.secs);
    let members = endpoints.len() as u64;
    let mut tasks = Vec::new();
    for w in 0..a.concurrency.max(1) {
        let (app, lists, auth, answers) =
            (app.clone(), lists.clone(), auth.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < until {
                let list = &lists[i % lists.len()];
                i += 1;
                let r = app
                    .try_request(
                        "POST",
                        list,
                        &[("TTL", "60"), ("Authorization", &auth)],
                        b"",
                    )
                    .await;
                let mut an = answers.lock().expect("answers");
                let r = match r {
                    Ok(r) => r,
                    Err(_) => {
                        an.errors += 1;
                        continue;
                    }
                };
                *an.statuses.entry(r.status).or_default() += 1;
                match r.status {
                    201 => {
                        let minute = |ns: u64| ns / 60_000_000_000;
                        if minute(r.send_ns) == minute(r.done_ns) {
                            *an.copies_by_minute.entry(minute(r.send_ns)).or_default() += members;
                        } else {
                            an.copies_straddling += members;
                        }
                    }
                    429 => {
                        let kind = serde_json::from_slice::<Value>(&r.body)
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        *an.refused.entry(kind).or_default() += 1;
                        if let Some(s) = r.header("retry-after").and_then(|v| v.parse().ok()) {
                            let (lo, hi) = an.retry_after.unwrap_or((s, s));
                            an.retry_after = Some((lo.min(s), hi.max(s)));
                        }
                    }
                    _ => {}
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let an = answers.lock().expect("answers");
    let pushes: u64 = an.statuses.values().sum();
    let accepted = an.statuses.get(&201).copied().unwrap_or(0);
    let most = an.copies_by_minute.values().copied().max().unwrap_or(0);
    let statuses: HashMap<String, u64> = an
        .statuses
        .iter()
        .map(|(s, n)| (s.to_string(), *n))
        .collect();
    Ok(json!({
        "lists": a.lists,
        "members": members,
        "secs": r3(secs),
        "pushes": pushes,
        "pushes_per_s": r3(pushes as f64 / secs.max(1e-9)),
        "accepted": accepted,
        "statuses": statuses,
        "refused": an.refused,
        "retry_after_s": an.retry_after.map(|(lo, hi)| json!([lo, hi])),
        "transport_errors": an.errors,
        "copies_accepted": accepted * members,
        "copies_by_clock_minute": an.copies_by_minute.values().collect::<Vec<_>>(),
        "copies_straddling_minutes": an.copies_straddling,
        "most_copies_in_a_minute": most,
        "budget_per_minute": a.budget,
        "held_to_budget": most <= a.budget,
        "finished_ns": realtime_ns(),
    }))
}

/// Makes `n` subscriptions by devices that register and disconnect: their
/// device indexes and push endpoints.
pub async fn offline_subscriptions(
    dev: &DeviceOpts,
    n: usize,
    workers: usize,
    timeout_secs: u64,
) -> Result<Vec<(usize, String)>, String> {
    let mut create = dev.clone();
    create.workers = workers.max(1);
    create.per_worker = n.div_ceil(create.workers).max(1);
    let mut pool = ready(Pool::spawn_with(&create, n, 0, true, timeout_secs, |_| {
        vec!["--ephemeral".into()]
    })?)
    .await?;
    let (_, setup) = connect(&mut pool, &format!("making {n} subscriptions")).await?;
    drop(pool);
    if setup.endpoints.len() != n {
        return Err(format!(
            "subscriptions: {} of {n}: {}",
            setup.endpoints.len(),
            setup.first_error.unwrap_or_default()
        ));
    }
    Ok(setup.endpoints)
}
