//! `origin --health-probe`: a health check for container runtimes that
//! needs no other program. It reads the same configuration as the service
//! (flags, `ORIGIN_*`, the TOML file), asks `GET /health` of its application
//! listener and says whether the answer was `200`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long the probe waits for each step.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the service listening on `listen` answers `GET /health` with `200`.
/// A wildcard listen address is probed on loopback.
pub fn health(listen: SocketAddr) -> Result<(), String> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(s, "GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    match line.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!(
            "{addr}: {}",
            line.lines().next().unwrap_or("no answer")
        )),
    }
}
