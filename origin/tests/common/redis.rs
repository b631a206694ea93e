//! Real `redis-server` processes for tests: one server, or a Redis Cluster
//! of masters and replicas on loopback, stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server` process.
pub struct Server {
    pub port: u16,
    child: Child,
    pub dir: PathBuf,
    args: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that is free, and whose cluster bus port (+10000) is too.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

/// Sends one inline command and reads what comes back within a moment.
pub fn command(port: u16, line: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "waited 30 s for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts redis-server with `args` on `port`; `None` if another process
/// answers there (the port was taken between its choice and the start).
fn try_spawn(args: &[String], port: u16) -> Option<Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("redis-server");
    // SAFETY: prctl is async-signal-safe; it only sets this child's parent
    // death signal, so that no server outlives the thread that started it.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is not installed: run scripts/setup.sh");
    let mine = format!("process_id:{}\r\n", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if let Some(info) = command(port, "INFO server") {
            if info.contains(&mine) {
                return Some(child);
            }
            if info.contains("process_id:") {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
        assert!(Instant::now() < deadline, "waited 30 s for redis-server");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`try_spawn`] on a port that must be this server's (a restart).
fn spawn(args: &[String], port: u16) -> Child {
    try_spawn(args, port).unwrap_or_else(|| panic!("port {port} was taken meanwhile"))
}

impl Server {
    /// Starts a server with an append-only file fsynced on every write, as
    /// the service requires of Redis; `extra` adds settings.
    pub fn start(extra: &[&str]) -> Server {
        loop {
            if let Some(s) = Server::try_start(extra) {
                return s;
            }
        }
    }

    /// [`Server::start`] on a free port, or `None` if the port was taken
    /// before the server could bind it.
    fn try_start(extra: &[&str]) -> Option<Server> {
        let port = free_port();
        let dir = super::temp_dir(&format!("redis-{port}"));
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            dir.to_str().unwrap(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = try_spawn(&args, port)?;
        Some(Server {
            port,
            child,
            dir,
            args,
        })
    }

    /// Kills it at once (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and files.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.args, self.port);
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// A Redis Cluster: masters, each with replicas.
pub struct Cluster {
    pub servers: Vec<Server>,
}

impl Cluster {
    /// Starts `masters` × (1 + `replicas`) servers and joins them.
    pub fn start(masters: usize, replicas: usize) -> Cluster {
        let servers: Vec<Server> = (0..masters * (1 + replicas))
            .map(|_| Server::start(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]))
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for s in &servers {
            create.arg(format!("127.0.0.1:{}", s.port));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is not installed: run scripts/setup.sh");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for s in &servers {
            wait_for("the cluster to be ok", || {
                command(s.port, "CLUSTER INFO").is_some_and(|r| r.contains("cluster_state:ok"))
            });
        }
        // Writes that wait for a replica need the replicas in sync.
        for s in &servers {
            wait_for("the replicas to be in sync", || {
                command(s.port, "INFO replication").is_some_and(|r| {
                    r.contains("role:slave") || r.matches("state=online").count() >= replicas
                })
            });
        }
        Cluster { servers }
    }

    /// Which servers are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.servers.len())
            .filter(|&i| {
                command(self.servers[i].port, "ROLE").is_some_and(|r| r.contains("master"))
            })
            .collect()
    }

    /// Its URL for the origin's `--store`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }
}
