//! The request the edge sends the origin (docs/protocol.md §5): the same method,
//! path and query on an origin node's URL, the application server's header
//! fields, the exact body bytes, and the mark over all of that (not over the
//! node: any node of a cluster takes it).

use crate::config::Config;
use shared::mark;

/// Header fields not forwarded: hop-by-hop fields (RFC 9110 §7.6.1), those
/// the runtime sets itself, any mark the client sent (the edge's replaces it).
const DROPPED: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    mark::HEADER,
];

/// Whether a header field goes on to the origin.
pub fn forwards(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    // cf-* fields are the platform's own (cf-connecting-ip, cf-ray, …).
    !DROPPED.contains(&name.as_str()) && !name.starts_with("cf-")
}

/// A request for the origin, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The request's path and query.
    pub path_and_query: String,
    /// Header fields, the mark among them.
    pub headers: Vec<(String, String)>,
}

impl Outgoing {
    /// The URL on each origin node, in the order to try them: starting
    /// with node `first` (mod their number), so that requests spread.
    pub fn urls<'c>(&'c self, cfg: &'c Config, first: usize) -> impl Iterator<Item = String> + 'c {
        let n = cfg.origins.len();
        (0..n).map(move |i| format!("{}{}", cfg.origins[(first + i) % n], self.path_and_query))
    }
}

/// Builds the forwarded request. `path_and_query` is the request's, as the
/// origin will see it; `body` is exactly what will be sent; `vapid_key` is
/// the key whose token the edge verified, if any.
pub fn prepare<'h>(
    cfg: &Config,
    method: &str,
    path_and_query: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    body: &[u8],
    vapid_key: Option<&str>,
    now: u64,
) -> Outgoing {
    let mut out: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(k, _)| forwards(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    // The platform joins a repeated field into one value, as the origin reads it.
    let fields = mark::fields(|n| {
        out.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    });
    let value = mark::sign(
        &cfg.secret,
        method,
        path_and_query,
        now,
        vapid_key,
        &fields,
        body,
    );
    out.push((mark::HEADER.to_owned(), value));
    Outgoing {
        path_and_query: path_and_query.to_owned(),
        headers: out,
    }
}

/// The path and query of an absolute URL (`/` if it has no path).
pub fn path_and_query(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let rest = rest.split('#').next().unwrap_or("");
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => &rest[i..],
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;

    #[test]
    fn marks_what_it_forwards() {
        let cfg = config();
        let out = prepare(
            &cfg,
            "POST",
            "/p/abc?x=1",
            [
                ("Host", "edge.example"),
                ("TTL", "60"),
                ("cf-connecting-ip", "1.2.3.4"),
                ("Push-Edge-Mark", "forged"),
                ("content-length", "4"),
                ("authorization", "vapid t=a, k=b"),
            ],
            b"body",
            Some("KEY"),
            1000,
        );
        let urls: Vec<String> = out.urls(&cfg, 7).collect();
        assert_eq!(urls, ["http://127.0.0.1:8080/p/abc?x=1"]);
        let three = Config {
            origins: vec!["http://a".into(), "http://b".into(), "http://c".into()],
            ..cfg.clone()
        };
        let urls: Vec<String> = out.urls(&three, 4).collect();
        assert_eq!(
            urls,
            [
                "http://b/p/abc?x=1",
                "http://c/p/abc?x=1",
                "http://a/p/abc?x=1"
            ]
        );
        let names: Vec<&str> = out.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["TTL", "authorization", mark::HEADER]);
        let fields = mark::fields(|n| match n {
            "ttl" => Some("60"),
            "authorization" => Some("vapid t=a, k=b"),
            _ => None,
        });
        let m = mark::verify(
            b"s3cret",
            Some(&out.headers[2].1),
            "POST",
            "/p/abc?x=1",
            &fields,
            b"body",
            1001,
        )
        .unwrap();
        assert_eq!(m.vapid_key.as_deref(), Some("KEY"));
        // A field changed on the way: the mark no longer holds.
        let changed = mark::fields(|n| match n {
            "ttl" => Some("2419200"),
            "authorization" => Some("vapid t=a, k=b"),
            _ => None,
        });
        let v = &out.headers[2].1;
        let r = mark::verify(
            b"s3cret",
            Some(v),
            "POST",
            "/p/abc?x=1",
            &changed,
            b"body",
            1001,
        );
        assert_eq!(r, Err(mark::MarkError::Forged));
    }

    #[test]
    fn paths() {
        assert_eq!(path_and_query("http://h:1/p/x?y=2#f"), "/p/x?y=2");
        assert_eq!(path_and_query("https://h"), "/");
        assert_eq!(path_and_query("https://h/"), "/");
        assert_eq!(path_and_query("https://h?q"), "/");
    }
}
