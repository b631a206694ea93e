//! A small HTTP/1.1 client on hyper: one connection per request, plain
//! `http://` only, whole bodies.

use crate::error::{Error, ServiceError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long one request may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A response, read whole.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The target of the first `Link` with relation `rel`.
    pub fn link(&self, rel: &str) -> Option<String> {
        shared::links::find(
            self.headers
                .get_all(http::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok()),
            rel,
        )
    }

    /// The response if its status is 2xx, else the service's problem.
    pub fn success(self) -> Result<Response, Error> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(Error::Service(ServiceError::from_response(
                self.status,
                self.header("retry-after"),
                &self.body,
            )))
        }
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Protocol(format!("a {} response is not JSON: {e}", self.status)))
    }
}

/// The parts of an `http://` URL that a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port`, to connect to.
    pub addr: String,
    /// The `Host` header.
    pub authority: String,
    /// Path and query.
    pub path: String,
}

/// Splits a URL of one of the `allowed` schemes into what a request needs.
pub fn target(url: &str, allowed: &[&str]) -> Result<Target, Error> {
    let bad = |why| Error::Url {
        url: url.to_owned(),
        why,
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let scheme = uri.scheme_str().ok_or(bad("not an absolute URL"))?;
    if !allowed.contains(&scheme) {
        return Err(Error::Scheme(scheme.to_owned()));
    }
    let authority = uri.authority().ok_or(bad("no host"))?;
    let port = authority.port_u16().unwrap_or(80);
    Ok(Target {
        addr: format!("{}:{port}", authority.host()),
        authority: authority.as_str().to_owned(),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
    })
}

/// Opens a TCP connection.
pub async fn connect(addr: &str) -> Result<TcpStream, Error> {
    TcpStream::connect(addr)
        .await
        .map_err(|source| Error::Connect {
            addr: addr.to_owned(),
            source,
        })
}

/// Sends one request and reads the whole response.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Response, Error> {
    tokio::time::timeout(TIMEOUT, request_inner(method, url, headers, body))
        .await
        .map_err(|_| Error::Timeout(TIMEOUT.as_secs()))?
}

async fn request_inner(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Response, Error> {
    let t = target(url, &["http"])?;
    let stream = connect(&t.addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(&t.path)
        .header(http::header::HOST, &t.authority);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::Protocol(format!("building the request: {e}")))?;
    let resp = send.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = target("http://127.0.0.1:8080/p/x?y=1", &["http"]).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080");
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/p/x?y=1");
        assert_eq!(target("http://[::1]/", &["http"]).unwrap().addr, "[::1]:80");
        assert!(matches!(
            target("https://push.example/p", &["http"]),
            Err(Error::Scheme(s)) if s == "https"
        ));
        assert!(matches!(target("/p/x", &["http"]), Err(Error::Url { .. })));
    }
}
