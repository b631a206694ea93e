//! The pushers: a fixed number of HTTP/1.1 keep-alive connections to the
//! application API, one request in flight on each, closed loop or paced to a
//! fixed rate (open loop).

use crate::realtime_ns;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest response head or body read.
const MAX_RESPONSE: usize = 64 * 1024;
/// Reconnections one pusher makes before it gives up.
const MAX_RECONNECTS: u32 = 100;

/// What to push, and how.
pub struct Plan {
    /// The application API's addresses (nodes): pusher `k` sends to
    /// `addrs[k % len]`, so that requests spread evenly over them.
    pub addrs: Vec<SocketAddr>,
    /// Its `Host` header.
    pub host: String,
    /// Push resource paths (`/p/…`); push `i` goes to `paths[i % len]`.
    pub paths: Vec<String>,
    /// The request body (empty, or an aes128gcm body).
    pub body: Vec<u8>,
    /// Number of pushes.
    pub pushes: usize,
    /// Connections.
    pub concurrency: usize,
    /// Pushes per second, or as fast as possible.
    pub rate: Option<f64>,
    /// Each push made as an application server makes it, instead of `body`.
    pub app_side: Option<AppSide>,
}

/// An application server's own work for each push, as a Web Push library
/// (npm `web-push`, say) does it: the plaintext encrypted for the
/// subscription (RFC 8291: a fresh ECDH key and salt), and a freshly signed
/// VAPID JWT (RFC 8292). The devices here share one key pair; the work is
/// the same as for a key of their own.
pub struct AppSide {
    vapid: pushclient::vapid::Vapid,
    ua_public: p256::PublicKey,
    auth: [u8; 16],
    plaintext: Vec<u8>,
    audience: String,
}

impl AppSide {
    /// Work for pushes to `app` whose encrypted bodies are `body_bytes` long.
    pub fn new(app: &str, body_bytes: usize) -> Result<AppSide, String> {
        let plaintext_len = body_bytes
            .checked_sub(crate::bodies::AES128GCM_OVERHEAD)
            .ok_or("--single-body-bytes too small for an encrypted body")?;
        Ok(AppSide {
            vapid: pushclient::vapid::Vapid::new(
                &pushclient::keys::generate(),
                Some("mailto:bench@example.com".into()),
            ),
            ua_public: pushclient::keys::generate().public_key(),
            auth: pushclient::keys::random(),
            plaintext: vec![b'x'; plaintext_len],
            audience: app.trim_end_matches('/').to_owned(),
        })
    }

    /// One push's body and `Authorization` header.
    fn make(&self) -> Result<(Vec<u8>, String), String> {
        let body = pushclient::ece::encrypt(&self.plaintext, &self.ua_public, &self.auth)
            .map_err(|e| format!("encrypt: {e}"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok((body, self.vapid.authorization(&self.audience, now)))
    }
}

/// One push, as sent and answered.
pub struct Sent {
    /// Realtime clock (ns) just before the request was written.
    pub send_ns: u64,
    /// Realtime clock (ns) once the response was read.
    pub done_ns: u64,
    /// Response status, 0 for a transport error.
    pub status: u16,
    /// The message id from `Location` (the notification's `version`).
    pub version: Option<String>,
    /// How late the request was written against its schedule (open loop), ns.
    pub lag_ns: u64,
}

/// What all pushers did.
#[derive(Default)]
pub struct Outcome {
    /// Every push attempted.
    pub sent: Vec<Sent>,
    /// Transport errors (connect, write, read, malformed response).
    pub io_errors: u64,
    /// The first of them.
    pub first_error: Option<String>,
}

/// Runs every push of the plan; returns when all are answered.
pub async fn run(plan: Arc<Plan>) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..plan.concurrency.max(1))
        .map(|k| tokio::spawn(pusher(plan.clone(), k, next.clone(), t0)))
        .collect();
    let mut all = Outcome {
        sent: Vec::with_capacity(plan.pushes),
        ..Default::default()
    };
    for t in tasks {
        match t.await {
            Ok(o) => {
                all.sent.extend(o.sent);
                all.io_errors += o.io_errors;
                if all.first_error.is_none() {
                    all.first_error = o.first_error;
                }
            }
            Err(e) => {
                all.io_errors += 1;
                all.first_error
                    .get_or_insert_with(|| format!("pusher: {e}"));
            }
        }
    }
    all
}

/// One connection's loop: takes the next push until there is none.
async fn pusher(plan: Arc<Plan>, k: usize, next: Arc<AtomicUsize>, t0: Instant) -> Outcome {
    let addr = plan.addrs[k % plan.addrs.len().max(1)];
    let mut out = Outcome::default();
    let mut stream: Option<TcpStream> = None;
    let mut reconnects = 0;
    let mut req = Vec::with_capacity(512 + plan.body.len());
    let mut buf = Vec::with_capacity(4096);
    let encoding = if plan.body.is_empty() {
        ""
    } else {
        "Content-Encoding: aes128gcm\r\n"
    };
    let fail = |out: &mut Outcome, e: String| {
        out.io_errors += 1;
        out.first_error.get_or_insert(e);
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.pushes {
            break;
        }
        let mut lag_ns = 0;
        if let Some(rate) = plan.rate {
            let due = t0 + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due).await;
            lag_ns = Instant::now().saturating_duration_since(due).as_nanos() as u64;
        }
        if stream.is_none() {
            if reconnects > MAX_RECONNECTS {
                fail(&mut out, "too many reconnections".into());
                out.sent.push(failed(lag_ns));
                continue;
            }
            reconnects += 1;
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(e) => {
                    fail(&mut out, format!("connect {addr}: {e}"));
                    out.sent.push(failed(lag_ns));
                    continue;
                }
            }
        }
        let s = stream.as_mut().expect("connected");
        // The application's own work counts from when it starts on a push.
        let start_ns = realtime_ns();
        let made = match plan.app_side.as_ref().map(AppSide::make).transpose() {
            Ok(m) => m,
            Err(e) => {
                fail(&mut out, e);
                out.sent.push(failed(lag_ns));
                continue;
            }
        };
        let body = made.as_ref().map_or(&plan.body[..], |(b, _)| &b[..]);
        req.clear();
        req.extend_from_slice(b"POST ");
        req.extend_from_slice(plan.paths[i % plan.paths.len()].as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        req.extend_from_slice(plan.host.as_bytes());
        req.extend_from_slice(b"\r\nTTL: 60\r\n");
        req.extend_from_slice(encoding.as_bytes());
        if let Some((_, authorization)) = &made {
            req.extend_from_slice(format!("Authorization: {authorization}\r\n").as_bytes());
        }
        req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        req.extend_from_slice(body);
        let send_ns = if made.is_some() {
            start_ns
        } else {
            realtime_ns()
        };
        match exchange(s, &req, &mut buf).await {
            Ok((status, version, keep)) => {
                out.sent.push(Sent {
                    send_ns,
                    done_ns: realtime_ns(),
                    status,
                    version,
                    lag_ns,
                });
                if !keep {
                    stream = None;
                }
            }
            Err(e) => {
                fail(&mut out, format!("exchange: {e}"));
                out.sent.push(failed(lag_ns));
                stream = None;
            }
        }
    }
    out
}

fn failed(lag_ns: u64) -> Sent {
    let now = realtime_ns();
    Sent {
        send_ns: now,
        done_ns: now,
        status: 0,
        version: None,
        lag_ns,
    }
}

/// Writes a request and reads its response: (status, message id from
/// `Location`, whether the connection stays open).
async fn exchange(
    s: &mut TcpStream,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> io::Result<(u16, Option<String>, bool)> {
    s.write_all(req).await?;
    buf.clear();
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if s.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(buf).map_err(io::Error::other)? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial if buf.len() < MAX_RESPONSE => continue,
            httparse::Status::Partial => return Err(io::Error::other("response head too large")),
        };
        let status = resp.code.unwrap_or(0);
        let mut len = 0usize;
        let mut chunked = false;
        let mut keep = resp.version == Some(1);
        let mut version = None;
        for h in resp.headers.iter() {
            let v = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                len = v
                    .parse()
                    .map_err(|_| io::Error::other("bad content-length"))?;
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.eq_ignore_ascii_case("chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                keep = !v.eq_ignore_ascii_case("close");
            } else if h.name.eq_ignore_ascii_case("location") {
                version = v.rsplit('/').next().map(str::to_owned);
            }
        }
        if chunked {
            // Error bodies only: read to the last chunk and ignore trailers.
            while !buf[head..].windows(5).any(|w| w == b"0\r\n\r\n") {
                if buf.len() > head + MAX_RESPONSE {
                    return Err(io::Error::other("response body too large"));
                }
                buf.reserve(4096);
                if s.read_buf(buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        } else {
            if len > MAX_RESPONSE {
                return Err(io::Error::other("response body too large"));
            }
            while buf.len() < head + len {
                buf.reserve(head + len - buf.len());
                if s.read_buf(buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        return Ok((status, version, keep));
    }
}
