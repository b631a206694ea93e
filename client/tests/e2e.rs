//! End to end: the `pushctl` binary against a running `origin` binary on
//! free loopback ports with a fresh data directory. Keys; two devices (one
//! over WebSocket, one over RFC 8030 HTTP/2 restricted to the VAPID key)
//! subscribe and listen; a message to one; a list created, pushed to,
//! amended (remove, add), its key rotated, pushed to again, and watched.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

const PUSHCTL: &str = env!("CARGO_BIN_EXE_pushctl");
const WAIT: Duration = Duration::from_secs(20);

/// The origin binary: `$ORIGIN_BIN`, else built (or found fresh) in this target dir.
fn origin_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ORIGIN_BIN") {
        return p.into();
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "origin", "--bin", "origin"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo");
    assert!(status.success(), "building the origin binary");
    Path::new(PUSHCTL).with_file_name("origin")
}

/// A running origin, stopped on drop.
struct Origin {
    child: Child,
    ws: String,
    h2: String,
}

impl Origin {
    fn start(dir: &Path) -> Origin {
        let mut child = Command::new(origin_bin())
            .args(["--app-listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"])
            .args([
                "--h2-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("ORIGIN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("origin binary");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // origin ready app=127.0.0.1:P ws=127.0.0.1:P h2=127.0.0.1:P
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_owned()
        };
        Origin {
            ws: format!("ws://{}", field("ws=")),
            h2: format!("http://{}", field("h2=")),
            child,
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pushctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(PUSHCTL)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs pushctl, expects success, returns its standard output.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = pushctl(dir, args);
    assert!(
        out.status.success(),
        "pushctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value after `prefix` on the line that starts with it.
fn line_value(text: &str, prefix: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {text:?}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A `pushctl listen --json` process and its output lines.
struct Listener {
    child: Child,
    lines: Receiver<String>,
}

impl Listener {
    fn start(dir: &Path, state: &str, count: u32) -> Listener {
        let mut child = Command::new(PUSHCTL)
            .args(["listen", "--json", "--state", state, "--timeout", "60"])
            .args(["--count", &count.to_string()])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Listener { child, lines }
    }

    /// The next message as `kind: text`.
    fn next(&self) -> String {
        let l = self.lines.recv_timeout(WAIT).expect("a message in time");
        let v: Value = serde_json::from_str(&l).unwrap();
        format!(
            "{}: {}",
            v["kind"].as_str().unwrap(),
            v["text"].as_str().unwrap()
        )
    }

    fn finish(mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "listen ends with 0 after --count");
    }
}

#[test]
fn keys_devices_send_and_lists() {
    let dir = std::env::temp_dir().join(format!("pushctl-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();
    let origin = Origin::start(d);

    // Keys.
    let public = ok(d, &["keys", "--out", "app.pem"]);
    assert_eq!(shared::b64::decode(public.trim()).unwrap().len(), 65);
    assert!(std::fs::read_to_string(d.join("app.pem"))
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(ok(d, &["keys", "--show", "app.pem"]), public);
    assert!(!pushctl(d, &["keys", "--out", "app.pem"]).status.success());

    // Two devices: Alice over WebSocket, Bob over HTTP/2 restricted to the key.
    let alice_sub = ok(d, &["subscribe", &origin.ws, "--state", "alice.json"]);
    let bob_sub = ok(
        d,
        &[
            "subscribe",
            &origin.h2,
            "--state",
            "bob.json",
            "--vapid",
            "app.pem",
        ],
    );
    for s in [&alice_sub, &bob_sub] {
        let v: Value = serde_json::from_str(s).unwrap();
        assert!(v["endpoint"].as_str().unwrap().contains("/p/"));
        assert_eq!(v["keys"]["auth"].as_str().unwrap().len(), 22);
    }
    std::fs::write(d.join("alice.sub"), &alice_sub).unwrap();
    std::fs::write(d.join("both.subs"), format!("{alice_sub}{bob_sub}")).unwrap();
    let alice_endpoint = serde_json::from_str::<Value>(&alice_sub).unwrap()["endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice = Listener::start(d, "alice.json", 4);
    let bob = Listener::start(d, "bob.json", 4);

    // One message to one subscription.
    let sent = ok(
        d,
        &[
            "send",
            "--to",
            "alice.sub",
            "--vapid",
            "app.pem",
            "--ttl",
            "600",
            "hello alice",
        ],
    );
    assert_eq!(alice.next(), "aes128gcm: hello alice");
    let service = line_value(&sent, "list service: ");
    // Bob's subscription takes only messages signed by app.pem.
    let refused = pushctl(d, &["send", "--to", "bob.json", "unsigned"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    // A list of both, owned by the key; a push reaches each.
    let created = ok(
        d,
        &[
            "list",
            "create",
            "--service",
            &service,
            "--subscriptions",
            "both.subs",
            "--out",
            "group.json",
            "--vapid",
            "app.pem",
        ],
    );
    assert!(created.contains("2 member(s)"), "{created}");
    ok(d, &["list", "push", "--list", "group.json", "to everyone"]);
    assert_eq!(alice.next(), "jwe: to everyone");
    assert_eq!(bob.next(), "jwe: to everyone");

    // Remove Alice: only Bob gets the next one.
    let removed = ok(
        d,
        &["list", "remove", "--list", "group.json", &alice_endpoint],
    );
    assert!(removed.contains("1 member(s)"), "{removed}");
    ok(d, &["list", "push", "--list", "group.json", "only bob"]);
    assert_eq!(bob.next(), "jwe: only bob");

    // Add her back; an empty message reaches both (and Alice's next is this one).
    let added = ok(
        d,
        &[
            "list",
            "add",
            "--list",
            "group.json",
            "--subscriptions",
            "alice.sub",
        ],
    );
    assert!(added.contains("2 member(s)"), "{added}");
    ok(d, &["list", "push", "--list", "group.json", "--empty"]);
    assert_eq!(alice.next(), "empty: ");
    assert_eq!(bob.next(), "empty: ");

    // A new group key, wrapped again for both; the next push reads with it.
    let old_key: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("group.json")).unwrap()).unwrap();
    ok(d, &["list", "rotate-key", "--list", "group.json"]);
    let new_key: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("group.json")).unwrap()).unwrap();
    assert_ne!(old_key["group_key"], new_key["group_key"]);
    let pushed = ok(
        d,
        &["list", "push", "--list", "group.json", "after rotation"],
    );
    assert_eq!(alice.next(), "jwe: after rotation");
    assert_eq!(bob.next(), "jwe: after rotation");

    // Watch the last one: both copies acknowledged, the plain-text form.
    let url = line_value(&pushed, "list message: ");
    let watched = ok(
        d,
        &[
            "list",
            "watch",
            &url,
            "--list",
            "group.json",
            "--timeout",
            "20",
        ],
    );
    assert!(
        watched
            .trim_end()
            .ends_with("2/2 delivered, 0 stored, 0 expired, 0 failed"),
        "{watched}"
    );
    let members = ok(d, &["list", "members", "--list", "group.json"]);
    assert!(members.contains("2 member(s)"), "{members}");

    alice.finish();
    bob.finish();
    drop(origin);
    let _ = std::fs::remove_dir_all(&dir);
}
