//! What the devices saw: connecting them, their delivery counts, records and copies tallied.

use crate::pool::{DeviceOpts, Pool, Setup};
use crate::realtime_ns;
use crate::stats::{percentile, r3};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// One copy received: its version, and when it arrived (realtime ns).
pub type Record = (String, u64);

/// Waits until every worker of a newly spawned pool is ready.
pub async fn ready(mut pool: Pool) -> Result<Pool, String> {
    pool.gather("ready", |_, _| {}).await?;
    Ok(pool)
}

/// The processes of the load tool: the workers and this one.
pub fn tool_pids(pool: &Pool) -> Vec<u32> {
    let mut pids = pool.pids();
    pids.push(std::process::id());
    pids
}

/// Has every worker set up its devices, saying `pushbench: {what} over
/// {workers} workers` first: when the command went out (realtime ns), and
/// what the workers report.
pub async fn connect(pool: &mut Pool, what: &str) -> Result<(u64, Setup), String> {
    eprintln!("pushbench: {what} over {} workers", pool.len());
    let t0 = realtime_ns();
    pool.send_all("connect")?;
    let setup = pool.setup().await?;
    Ok((t0, setup))
}

/// Starts workers for `devices` devices and connects them all, each
/// reporting its push endpoint; an error if none registered.
pub async fn connect_with_endpoints(
    dev: &DeviceOpts,
    devices: usize,
    body_bytes: usize,
    timeout_secs: u64,
) -> Result<(Pool, Setup), String> {
    let mut pool = ready(Pool::spawn(dev, devices, body_bytes, true, timeout_secs)?).await?;
    let (_, setup) = connect(&mut pool, &format!("connecting {devices} devices")).await?;
    if setup.endpoints.is_empty() {
        let e = setup.first_error.unwrap_or_default();
        return Err(format!("no device registered: {e}"));
    }
    Ok((pool, setup))
}

/// Takes a worker's `D <count>` line.
pub fn count(delivered: &mut [u64], k: usize, line: &str) {
    if let Some(n) = line.strip_prefix("D ").and_then(|n| n.parse().ok()) {
        delivered[k] = n;
    }
}

/// Waits until the workers report `target` notifications or `until`.
pub async fn wait_delivered(
    pool: &mut Pool,
    delivered: &mut [u64],
    target: u64,
    until: tokio::time::Instant,
) -> Result<(), String> {
    while delivered.iter().sum::<u64>() < target {
        match tokio::time::timeout_at(until, pool.next()).await {
            Ok(l) => {
                let (k, line) = l?;
                count(delivered, k, &line);
            }
            Err(_) => break,
        }
    }
    Ok(())
}

/// Waits until the workers report `more` notifications beyond the first
/// `seen` of each, or `drain` passes.
pub async fn wait_more(
    pool: &mut Pool,
    delivered: &mut [u64],
    seen: &[usize],
    more: u64,
    drain: Duration,
) -> Result<(), String> {
    let before: u64 = seen.iter().map(|&n| n as u64).sum();
    let until = tokio::time::Instant::now() + drain;
    wait_delivered(pool, delivered, before + more, until).await
}

/// Asks every worker for its records (`R` lines), handing each to `each`
/// (worker, version, receive ns) as it comes; the workers' counters.
pub async fn dump_each(
    pool: &mut Pool,
    mut each: impl FnMut(usize, &str, u64),
) -> Result<Vec<Value>, String> {
    pool.send_all("dump")?;
    pool.gather_json("end", |k, line| {
        if let Some((v, ns)) = line.strip_prefix("R ").and_then(|r| r.split_once(' ')) {
            if let Ok(ns) = ns.parse() {
                each(k, v, ns);
            }
        }
    })
    .await
}

/// Every record of every worker, by worker, and the counters.
pub async fn dump(pool: &mut Pool) -> Result<(Vec<Vec<Record>>, Vec<Value>), String> {
    let mut records = vec![Vec::new(); pool.len()];
    let ends = dump_each(pool, |k, v, ns| records[k].push((v.to_owned(), ns))).await?;
    Ok((records, ends))
}

/// Records per worker, to tell a later round's records from these.
pub fn seen(records: &[Vec<Record>]) -> Vec<usize> {
    records.iter().map(Vec::len).collect()
}

/// The records (per worker) after the first `seen` of each worker's.
pub fn records_after<'a>(
    records: &'a [Vec<Record>],
    seen: &'a [usize],
) -> impl Iterator<Item = &'a Record> {
    records
        .iter()
        .zip(seen)
        .flat_map(|(r, n)| r[(*n).min(r.len())..].iter())
}

/// A counter summed over the workers' `end` lines.
pub fn sum(ends: &[Value], key: &str) -> u64 {
    ends.iter().filter_map(|e| e[key].as_u64()).sum()
}

/// Errors and unexpected messages the devices met, over all workers.
pub fn device_errors(ends: &[Value]) -> u64 {
    sum(ends, "errors") + sum(ends, "unexpected")
}

/// Copies received: (copies, distinct versions, duplicates, last receive ns).
pub fn tally<'a>(records: impl Iterator<Item = &'a Record>) -> (u64, u64, u64, u64) {
    let mut seen = HashSet::new();
    let (mut copies, mut dups, mut last) = (0, 0, 0);
    for (v, ns) in records {
        copies += 1;
        if !seen.insert(v.as_str()) {
            dups += 1;
        }
        last = last.max(*ns);
    }
    (copies, seen.len() as u64, dups, last)
}

/// When the first, median and 99th-percentile copies arrived, in ms after `t0`.
pub fn spread<'a>(t0: u64, records: impl Iterator<Item = &'a Record>) -> Value {
    let mut v: Vec<f64> = records.map(|(_, ns)| ms(t0, *ns)).collect();
    v.sort_by(f64::total_cmp);
    let p = |x| percentile(&v, x);
    json!({"first_ms": v.first(), "p50_ms": p(50.0), "p99_ms": p(99.0)})
}

/// Milliseconds from realtime ns `a` to `b`, rounded for the result line.
pub fn ms(a: u64, b: u64) -> f64 {
    r3((b as f64 - a as f64) / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(v: &[(&str, u64)]) -> Vec<Record> {
        v.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
    }

    #[test]
    fn counts_lines() {
        let mut d = vec![0; 2];
        count(&mut d, 1, "D 12");
        count(&mut d, 0, "R 1 2");
        count(&mut d, 0, "D x");
        assert_eq!(d, [0, 12]);
    }

    #[test]
    fn tallies_copies() {
        let records = vec![
            recs(&[("a", 5_000_000), ("b", 9_000_000)]),
            recs(&[("a", 7_000_000), ("c", 6_000_000)]),
        ];
        let all = tally(records.iter().flatten());
        assert_eq!(all, (4, 3, 1, 9_000_000));
        let later: Vec<&Record> = records_after(&records, &[1, 5]).collect();
        assert_eq!(later, [&("b".to_owned(), 9_000_000)]);
        assert_eq!(seen(&records), [2, 2]);
        let s = spread(1_000_000, records.iter().flatten());
        assert_eq!(s["first_ms"], 4.0);
        assert_eq!(s["p99_ms"], 8.0);
        assert_eq!(ms(1_000_000, 3_123_456), 2.123);
    }

    #[test]
    fn sums_counters() {
        let ends = [
            json!({"errors": 1, "unexpected": 2, "bad_payload": 0}),
            json!({"errors": 3}),
        ];
        assert_eq!(sum(&ends, "errors"), 4);
        assert_eq!(device_errors(&ends), 6);
        assert_eq!(sum(&ends, "closed"), 0);
    }
}
