//! Figures: percentiles, and what `/proc` says about a process.

/// The nearest-rank `p` percentile (0–100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A process's resident set size in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    stat_secs(&format!("/proc/{pid}/stat"))
}

/// CPU time of a process's threads so far, in seconds, by thread id (with
/// its name).
pub fn thread_cpu_secs(pid: u32) -> std::collections::BTreeMap<u32, (String, f64)> {
    let mut by_tid = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_tid;
    };
    for t in dir.flatten() {
        let path = t.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(c) = stat_secs(&format!("/proc/{pid}/task/{tid}/stat")) {
            by_tid.insert(tid, (name.trim().to_owned(), c));
        }
    }
    by_tid
}

/// CPU seconds per thread name between two [`thread_cpu_secs`] readings:
/// a thread that began meanwhile counts whole, one that ended meanwhile
/// is not counted (its last reading is gone), so no sum is negative.
pub fn thread_cpu_between(
    before: &std::collections::BTreeMap<u32, (String, f64)>,
    after: &std::collections::BTreeMap<u32, (String, f64)>,
) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    for (tid, (name, secs)) in after {
        let was = match before.get(tid) {
            Some((n, s)) if n == name => *s,
            _ => 0.0,
        };
        *by_name.entry(name.clone()).or_insert(0.0) += (secs - was).max(0.0);
    }
    by_name
}

/// CPU time the whole machine spent busy so far (all cores), in seconds:
/// (everything, of which in softirq — loopback TCP is mostly there).
pub fn machine_busy_secs() -> Option<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    let softirq = f.get(6).copied().unwrap_or(0);
    Some((busy as f64 / clock_ticks(), softirq as f64 / clock_ticks()))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

fn stat_secs(path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start at `state`.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

/// Sums [`cpu_secs`] over processes (the missing count as 0).
pub fn cpu_secs_all(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| cpu_secs(*p)).sum()
}

/// CPU use over a window: the origin's (by thread), the load tool's, and
/// the rest of the machine's (other programs competing for the cores).
pub struct CpuWindow {
    origin: Option<u32>,
    tool: Vec<u32>,
    origin0: Option<f64>,
    threads0: std::collections::BTreeMap<u32, (String, f64)>,
    tool0: f64,
    machine0: Option<(f64, f64)>,
    start: std::time::Instant,
}

impl CpuWindow {
    /// Starts the window.
    pub fn start(origin: Option<u32>, tool: Vec<u32>) -> CpuWindow {
        CpuWindow {
            origin0: origin.and_then(cpu_secs),
            threads0: origin.map(thread_cpu_secs).unwrap_or_default(),
            tool0: cpu_secs_all(&tool),
            machine0: machine_busy_secs(),
            origin,
            tool,
            start: std::time::Instant::now(),
        }
    }

    /// Ends the window: `window_s`, `cores`, `origin_cpu_s`,
    /// `origin_threads_cpu_s`, `tool_cpu_s`, `softirq_cpu_s` (the kernel's
    /// network work, whoever it served) and `other_cpu_s` (other programs).
    pub fn finish(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let window = self.start.elapsed().as_secs_f64();
        let origin = self
            .origin
            .and_then(cpu_secs)
            .zip(self.origin0)
            .map(|(b, a)| b - a);
        let threads: std::collections::BTreeMap<String, f64> = thread_cpu_between(
            &self.threads0,
            &self.origin.map(thread_cpu_secs).unwrap_or_default(),
        )
        .into_iter()
        .map(|(k, v)| (k, r3(v)))
        .collect();
        let tool = cpu_secs_all(&self.tool) - self.tool0;
        let machine = machine_busy_secs()
            .zip(self.machine0)
            .map(|(b, a)| (b.0 - a.0, b.1 - a.1));
        let softirq = machine.map(|m| m.1);
        let other = machine.map(|m| (m.0 - m.1 - tool - origin.unwrap_or(0.0)).max(0.0));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut m = serde_json::Map::new();
        m.insert("window_s".into(), json!(r3(window)));
        m.insert("cores".into(), json!(cores));
        m.insert("origin_cpu_s".into(), json!(origin.map(r3)));
        m.insert("origin_threads_cpu_s".into(), json!(threads));
        m.insert("tool_cpu_s".into(), json!(r3(tool)));
        m.insert("softirq_cpu_s".into(), json!(softirq.map(r3)));
        m.insert("other_cpu_s".into(), json!(other.map(r3)));
        m
    }
}

/// Rounds to 3 decimals for the result line.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn own_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(cpu_secs(me).is_some());
        assert!(!thread_cpu_secs(me).is_empty());
        // A thread that ended between the readings does not make a sum
        // negative; one that began counts whole.
        let before = [(1, ("w".to_owned(), 5.0)), (2, ("w".to_owned(), 1.0))].into();
        let after = [(2, ("w".to_owned(), 1.5)), (3, ("w".to_owned(), 0.25))].into();
        assert_eq!(thread_cpu_between(&before, &after)["w"], 0.75);
        assert!(machine_busy_secs().is_some());
    }
}
