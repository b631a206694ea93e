//! `pushbench offline-list`: a push to a list of offline devices that reconnect, or a crash test.

use crate::app_client::App;
use crate::bodies::{copy_len, list_jwe};
use crate::list_api::{adds_up, build_list, poll_status, push_list, ListOpts};
use crate::pool::{self, Pool};
use crate::realtime_ns;
use crate::stats::{r3, CpuWindow};
use crate::tally::{self, connect, device_errors, dump, ms, ready, spread, tally, tool_pids};
use serde_json::{json, Value};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options of `offline-list`.
#[derive(Debug, Clone, clap::Args)]
pub struct OfflineArgs {
    /// Subscriptions made (each by a device that registers and disconnects).
    #[arg(long)]
    pub members: usize,
    /// Devices that reconnect after the push (hello with their uaid).
    #[arg(long, default_value_t = 15_000)]
    pub reconnect: usize,
    /// Worker processes making the subscriptions.
    #[arg(long, default_value_t = 4)]
    pub create_workers: usize,
    /// Crash test: right after the push's `201`, while its fan-out runs,
    /// kill the origin (`--origin-pid`) with SIGKILL, run this shell command
    /// to start it again on the same addresses and data, then reconnect
    /// every member, `--reconnect` at a time: each must get its copy.
    #[arg(long)]
    pub crash_restart: Option<String>,
    /// How long the restarted origin may take to be ready, in seconds.
    #[arg(long, default_value_t = 600)]
    pub restart_timeout_secs: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub list: ListOpts,
}

/// A member: its device index and uaid.
pub type Member = (usize, String);

/// `pushbench offline-list`.
pub async fn run_offline(a: OfflineArgs, timeout_secs: u64) -> Result<Value, String> {
    let app = App::new(&a.list.app)?;
    let jwe = list_jwe(a.list.body_bytes)?;
    let copy_bytes = copy_len(&jwe);

    // 1. Subscriptions: devices that register and disconnect.
    let mut create = a.list.dev.clone();
    create.workers = a.create_workers.max(1);
    create.per_worker = a.members.div_ceil(create.workers).max(1);
    let mut pool = ready(Pool::spawn_with(
        &create,
        a.members,
        0,
        true,
        timeout_secs,
        |_| vec!["--ephemeral".into()],
    )?)
    .await?;
    let cpu = CpuWindow::start(a.list.origin_pid, pool.pids());
    let (t0, mut setup) =
        connect(&mut pool, &format!("making {} subscriptions", a.members)).await?;
    let create_s = setup.finished_ns.saturating_sub(t0) as f64 / 1e9;
    let create_cpu = cpu.finish();
    drop(pool);
    let made = setup.connected;
    let phases = setup.phase_figures();
    eprintln!("pushbench: {made} subscriptions in {create_s:.1} s; building the list");
    if setup.endpoints.is_empty() || setup.uaids.len() != setup.endpoints.len() {
        return Err(format!(
            "subscriptions: {} endpoints, {} uaids: {}",
            setup.endpoints.len(),
            setup.uaids.len(),
            setup.first_error.unwrap_or_default()
        ));
    }
    let mut creation = json!({
        "made": made,
        "failed": setup.failed,
        "elapsed_s": r3(create_s),
        "per_s": r3(made as f64 / create_s.max(1e-9)),
        "phases": phases,
        "first_error": setup.first_error,
    });
    creation.as_object_mut().expect("object").extend(create_cpu);

    // 2. The list.
    let (list, build) = build_list(&app, &setup.endpoints, a.list.chunk).await?;
    eprintln!("pushbench: list built: {build}");

    // 3. One push.
    let (resp, status_path) = push_list(&app, &list, &jwe).await?;
    let push_201_ms = ms(resp.send_ns, resp.done_ns);
    eprintln!("pushbench: list push answered in {push_201_ms} ms");

    // 4. A crash during the fan-out, and a restart.
    let mut crash = match &a.crash_restart {
        Some(cmd) => kill_and_restart(&a, &app, &status_path, cmd).await?,
        None => Value::Null,
    };
    let (after_push, fanout_ns) =
        poll_status(&app, &status_path, 60.0, |s| s["fanout_finished"] == true).await?;

    // 5. Devices come back: some of them, or after a crash all, in waves.
    let waves = waves(&setup.uaids, a.reconnect, a.crash_restart.is_some());
    let origin_pid = a
        .crash_restart
        .is_none()
        .then_some(a.list.origin_pid)
        .flatten();
    let mut reconnect = Vec::new();
    let (mut n, mut distinct, mut total_dups, mut reconnect_ms) = (0u64, 0u64, 0u64, 0f64);
    for (w, back) in waves.iter().enumerate() {
        let r = reconnect_wave(&a, back, w, copy_bytes, origin_pid, timeout_secs).await?;
        n += back.len() as u64;
        distinct += r["devices_with_copy"].as_u64().unwrap_or(0);
        total_dups += r["duplicates"].as_u64().unwrap_or(0);
        reconnect_ms = reconnect_ms.max(r["start_to_last_copy_ms"].as_f64().unwrap_or(f64::MAX));
        if waves.len() > 1 {
            eprintln!("pushbench: wave {}/{}: {r}", w + 1, waves.len());
        }
        reconnect.push(r);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (final_status, _) = poll_status(&app, &status_path, 5.0, |s| {
        s["delivered"].as_u64() >= Some(distinct) && adds_up(s)
    })
    .await?;
    let reconnect = if reconnect.len() == 1 {
        reconnect.pop().expect("one wave")
    } else {
        json!({
            "devices": n,
            "waves": reconnect.len(),
            "devices_with_copy": distinct,
            "duplicates": total_dups,
            "missing": n.saturating_sub(distinct),
            "slowest_wave_ms": reconnect_ms,
            "per_wave": reconnect,
        })
    };
    let mut problems = Vec::new();
    if distinct != n || total_dups > 0 || !adds_up(&final_status) {
        problems.push(format!(
            "{distinct} of {n} reconnecting devices got their copy, {total_dups} duplicates, status {final_status}"
        ));
    }
    if !crash.is_null() {
        let everyone = distinct == setup.uaids.len() as u64;
        crash["every_member_got_it"] = everyone.into();
        // Only the restarted origin can have finished a fan-out killed midway.
        crash["fanout_finished_after_restart"] = after_push["fanout_finished"].clone();
        if !everyone
            || crash["killed_during_fanout"] != true
            || after_push["fanout_finished"] != true
        {
            problems.push(format!("crash: {crash}"));
        }
    }
    Ok(json!({
        "cmd": "offline-list",
        "correct": problems.is_empty(),
        "problems": problems,
        "members": a.members,
        "jwe_bytes": jwe.as_str().len(),
        "creation": creation,
        "build": build,
        "push_201_ms": push_201_ms,
        "push_201_ok": push_201_ms <= 50.0,
        "fanout_finished_after_ms": ms(resp.send_ns, fanout_ns),
        "status_after_push": after_push,
        "reconnect": reconnect,
        "reconnect_ok": reconnect_ms <= 3000.0 && distinct == n,
        "crash": crash,
        "status_final": final_status,
        "status_adds_up": adds_up(&final_status),
    }))
}

/// Kills the origin with SIGKILL, waits until it is gone, runs `cmd` to
/// start it again and waits until it is ready: the crash's figures.
async fn kill_and_restart(
    a: &OfflineArgs,
    app: &App,
    status_path: &str,
    cmd: &str,
) -> Result<Value, String> {
    let pid = a
        .list
        .origin_pid
        .ok_or("--crash-restart needs --origin-pid")?;
    let at_kill = app.get_json(status_path).await?;
    // SAFETY: kill(2) with a pid and a signal number has no memory effects.
    let killed = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let k0 = realtime_ns();
    if killed != 0 {
        return Err(format!("kill -KILL {pid}: {}", io::Error::last_os_error()));
    }
    // Its file lock goes only once the process is gone (or a zombie).
    let dead = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
            st.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    };
    while !dead() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("pushbench: origin killed during fan-out: {at_kill}; restarting");
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !st.success() {
        return Err(format!("{cmd}: {st}"));
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(a.restart_timeout_secs);
    while !matches!(app.try_request("GET", "/ready", &[], b"").await, Ok(r) if r.status == 200) {
        if tokio::time::Instant::now() >= until {
            return Err("the origin did not come back after the kill".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(json!({
        "status_at_kill": at_kill,
        "killed_during_fanout": at_kill["fanout_finished"] == false,
        "back_after_ms": ms(k0, realtime_ns()),
    }))
}

/// The members that reconnect, wave by wave: after a crash all of them,
/// `per_wave` at a time; else `per_wave` of them spread over the list.
fn waves(everyone: &[Member], per_wave: usize, all: bool) -> Vec<Vec<&Member>> {
    if all {
        everyone
            .chunks(per_wave.max(1))
            .map(|w| w.iter().collect())
            .collect()
    } else {
        let n = per_wave.min(everyone.len());
        let step = everyone.len() as f64 / n.max(1) as f64;
        vec![(0..n)
            .map(|j| &everyone[((j as f64 * step) as usize).min(everyone.len() - 1)])
            .collect()]
    }
}

/// Devices that say `hello` again with their uaids and wait for their list
/// copy: when the last arrived, and whether each got exactly one.
async fn reconnect_wave(
    a: &OfflineArgs,
    back: &[&Member],
    wave: usize,
    copy_bytes: usize,
    origin_pid: Option<u32>,
    timeout_secs: u64,
) -> Result<Value, String> {
    let n = back.len();
    let mut dev = a.list.dev.clone();
    dev.src_base = a.list.dev.src_base.saturating_add(a.create_workers as u8);
    dev.workers = n.div_ceil(dev.per_worker.max(1)).max(dev.workers).max(1);
    let dir = std::env::temp_dir().join(format!("pushbench-uaids-{}-{wave}", std::process::id()));
    let files = write_uaid_files(&dir, back, dev.workers)?;
    let mut pool = ready(Pool::spawn_with(
        &dev,
        n,
        copy_bytes,
        false,
        timeout_secs,
        |k| vec![format!("--uaids={}", files[k].display())],
    )?)
    .await?;
    let cpu = CpuWindow::start(origin_pid, tool_pids(&pool));
    let (r0, back_setup) = connect(&mut pool, &format!("reconnecting {n} devices")).await?;
    let until = tokio::time::Instant::now() + Duration::from_secs(a.list.drain_secs);
    let (records, ends) = loop {
        let (records, ends) = dump(&mut pool).await?;
        let got: usize = records.iter().map(Vec::len).sum();
        if got >= n || tokio::time::Instant::now() >= until {
            break (records, ends);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reconnect_cpu = cpu.finish();
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
    let (copies, distinct, dups, last) = tally(records.iter().flatten());
    let mut r = json!({
        "devices": n,
        "resumed": back_setup.connected,
        "failed": back_setup.failed,
        "all_connected_ms": ms(r0, back_setup.finished_ns),
        "start_to_last_copy_ms": ms(r0, last),
        "copies": copies,
        "devices_with_copy": distinct,
        "duplicates": dups,
        "missing": (n as u64).saturating_sub(distinct),
        "arrivals_after_start": spread(r0, records.iter().flatten()),
        "bad_payload": tally::sum(&ends, "bad_payload"),
        "device_errors": device_errors(&ends),
        "first_error": back_setup.first_error,
    });
    r.as_object_mut().expect("object").extend(reconnect_cpu);
    Ok(r)
}

/// Writes one file of `<device index> <uaid>` lines per worker into `dir`,
/// the members shared out as the pool shares out devices.
pub fn write_uaid_files(
    dir: &Path,
    back: &[&Member],
    workers: usize,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut first = 0;
    let mut files = Vec::new();
    for (k, share) in pool::shares(back.len(), workers).into_iter().enumerate() {
        let path = dir.join(format!("w{k}"));
        let text: String = back[first..first + share]
            .iter()
            .map(|(i, u)| format!("{i} {u}\n"))
            .collect();
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(path);
        first += share;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Member> {
        (0..n).map(|i| (i, format!("uaid{i}"))).collect()
    }

    #[test]
    fn waves_of_everyone_after_a_crash() {
        let m = members(7);
        let w = waves(&m, 3, true);
        assert_eq!(w.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!(w[2][0].0, 6);
    }

    #[test]
    fn one_wave_spread_over_the_list() {
        let m = members(10);
        let w = waves(&m, 4, false);
        assert_eq!(w.len(), 1);
        let idx: Vec<usize> = w[0].iter().map(|m| m.0).collect();
        assert_eq!(idx, [0, 2, 5, 7]);
        assert_eq!(waves(&m, 50, false)[0].len(), 10);
    }

    #[test]
    fn uaid_files_share_out_the_members() {
        let m = members(5);
        let back: Vec<&Member> = m.iter().collect();
        let dir = std::env::temp_dir().join(format!("pushbench-test-{}", std::process::id()));
        let files = write_uaid_files(&dir, &back, 2).unwrap();
        let texts: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(texts, ["0 uaid0\n1 uaid1\n2 uaid2\n", "3 uaid3\n4 uaid4\n"]);
    }
}
