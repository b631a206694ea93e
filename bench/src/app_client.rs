//! One-off HTTP/1.1 requests to the application API, each on a connection of its own.

use crate::realtime_ns;
use serde_json::Value;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `host:port` of an `http://` URL, and its address.
pub fn app_addr(url: &str) -> Result<(String, SocketAddr), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--app {url:?}: only http:// URLs"))?;
    let host = rest.split('/').next().unwrap_or("").to_owned();
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("--app {url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--app {url:?}: no address"))?;
    Ok((host, addr))
}

/// The path of a push endpoint URL (`/p/…`).
pub fn path_of(url: &str) -> String {
    let after = url.find("://").map_or(0, |i| i + 3);
    url[after..]
        .find('/')
        .map_or_else(|| "/".into(), |i| url[after + i..].to_owned())
}

/// A response: status, headers, body; when the request was written and
/// when the response was complete (realtime ns).
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer coding undone).
    pub body: Vec<u8>,
    /// Realtime clock (ns) just before the request was written.
    pub send_ns: u64,
    /// Realtime clock (ns) once the response was read whole.
    pub done_ns: u64,
}

impl Resp {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The response if its status is one of `ok`, else an error naming
    /// `what`, with the status and the body.
    pub fn expect(self, ok: &[u16], what: &str) -> Result<Resp, String> {
        if ok.contains(&self.status) {
            Ok(self)
        } else {
            Err(format!(
                "{what}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ))
        }
    }

    /// The path of the `Location` header.
    pub fn location_path(&self, what: &str) -> Result<String, String> {
        let url = self
            .header("location")
            .ok_or_else(|| format!("{what}: no Location"))?;
        Ok(path_of(url))
    }

    /// Milliseconds from the request's write to the whole response.
    pub fn ms(&self) -> f64 {
        (self.done_ns - self.send_ns) as f64 / 1e6
    }
}

/// The application API.
pub struct App {
    /// Its address.
    pub addr: SocketAddr,
    /// Its `Host` header.
    pub host: String,
}

impl App {
    /// The application API at an `http://` URL.
    pub fn new(url: &str) -> Result<App, String> {
        let (host, addr) = app_addr(url)?;
        Ok(App { addr, host })
    }

    /// One request on a new connection (`Connection: close`).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Resp, String> {
        self.try_request(method, path, headers, body)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))
    }

    /// Like [`App::request`], with the transport's error as it is.
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        let mut s = TcpStream::connect(self.addr).await?;
        s.set_nodelay(true)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let send_ns = realtime_ns();
        s.write_all(req.as_bytes()).await?;
        s.write_all(body).await?;
        let mut buf = Vec::with_capacity(8192);
        loop {
            buf.reserve(8192);
            let eof = s.read_buf(&mut buf).await? == 0;
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            let head = match r.parse(&buf).map_err(io::Error::other)? {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial if !eof => continue,
                httparse::Status::Partial => return Err(io::ErrorKind::UnexpectedEof.into()),
            };
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).trim().to_owned(),
                    )
                })
                .collect();
            let status = r.code.unwrap_or(0);
            let len: Option<usize> = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok());
            let chunked = headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
            });
            let complete = |b: &[u8]| match len {
                Some(n) => b.len() >= head + n,
                None if chunked => b[head..].windows(5).any(|w| w == b"0\r\n\r\n"),
                None => false,
            };
            let mut eof = eof;
            while !complete(&buf) && !eof {
                buf.reserve(8192);
                eof = s.read_buf(&mut buf).await? == 0;
            }
            let done_ns = realtime_ns();
            let mut body = buf[head..].to_vec();
            if chunked {
                body = dechunk(&body);
            } else if let Some(n) = len {
                body.truncate(n);
            }
            return Ok(Resp {
                status,
                headers,
                body,
                send_ns,
                done_ns,
            });
        }
    }

    /// A JSON document from a GET.
    pub async fn get_json(&self, path: &str) -> Result<Value, String> {
        let r = self.request("GET", path, &[], b"").await?;
        serde_json::from_slice(&r.body).map_err(|e| format!("GET {path}: status {}: {e}", r.status))
    }
}

/// The body of a chunked transfer coding.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(
            std::str::from_utf8(&b[..eol])
                .unwrap_or("0")
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[(eol + 4 + n).min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(path_of("http://127.0.0.1:8080/p/abc"), "/p/abc");
        assert_eq!(path_of("http://h"), "/");
        let (host, addr) = app_addr("http://127.0.0.1:8080/").unwrap();
        assert_eq!(host, "127.0.0.1:8080");
        assert_eq!(addr.port(), 8080);
        assert!(app_addr("https://x").is_err());
    }

    #[test]
    fn chunks_decode() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }

    #[test]
    fn statuses_checked() {
        let r = |status| Resp {
            status,
            headers: vec![("Location".into(), "http://h:1/m/x".into())],
            body: b"no".to_vec(),
            send_ns: 1_000_000,
            done_ns: 3_500_000,
        };
        assert_eq!(r(201).location_path("push").unwrap(), "/m/x");
        assert_eq!(r(201).ms(), 2.5);
        assert!(r(204).expect(&[200, 204], "PATCH").is_ok());
        assert_eq!(
            r(400).expect(&[201], "list push").err().unwrap(),
            "list push: 400 no"
        );
    }
}
