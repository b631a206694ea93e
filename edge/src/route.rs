//! The edge's routing and validation, as plain functions.
//!
//! Nothing here touches the Workers runtime: a request comes in as a
//! [`RequestHead`] (method, path, a header lookup) and leaves as a [`Reply`]
//! (status, headers, body). `lib.rs` adapts both to `worker`'s types on wasm32;
//! natively this module is built and unit-tested with the rest of the workspace.

use shared::headers::Ttl;
use shared::problem::{Problem, ProblemSource, CONTENT_TYPE as PROBLEM_JSON};
use shared::Limits;
use std::fmt;

/// `application/json`.
pub const JSON: &str = "application/json";

/// What the edge needs to know about a request to route it.
pub struct RequestHead<'a> {
    /// The method, upper case as sent (`GET`, `POST`, …).
    pub method: &'a str,
    /// The URL path, without query.
    pub path: &'a str,
    /// Looks a header up by name (case-insensitive, as HTTP headers are).
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

/// The edge's answer, ready to be turned into a runtime response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Header fields besides `Content-Type`.
    pub headers: Vec<(&'static str, String)>,
    /// The `Content-Type` of `body`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type: JSON,
            body: value.to_string(),
        }
    }

    /// The problem+json reply for `err` (with `Retry-After` where it has one).
    pub fn problem<E: ProblemSource + ?Sized>(err: &E) -> Reply {
        let p = Problem::from_error(err);
        let mut headers = Vec::new();
        if let Some(secs) = p.retry_after {
            headers.push(("Retry-After", secs.to_string()));
        }
        Reply {
            status: p.status,
            headers,
            content_type: PROBLEM_JSON,
            body: p.to_json(),
        }
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// Errors of the edge's own making (the protocol's errors come from `shared`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdgeError {
    /// No resource at this path.
    NotFound,
    /// The resource exists but does not take this method.
    MethodNotAllowed {
        /// The methods it takes, for `Allow`.
        allow: &'static str,
    },
}

impl fmt::Display for EdgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeError::NotFound => f.write_str("there is no resource at this URL"),
            EdgeError::MethodNotAllowed { allow } => {
                write!(f, "this resource only takes {allow}")
            }
        }
    }
}

impl ProblemSource for EdgeError {
    fn status(&self) -> u16 {
        match self {
            EdgeError::NotFound => 404,
            EdgeError::MethodNotAllowed { .. } => 405,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            EdgeError::NotFound => "not-found",
            EdgeError::MethodNotAllowed { .. } => "method-not-allowed",
        }
    }
    fn title(&self) -> &'static str {
        match self {
            EdgeError::NotFound => "Not found",
            EdgeError::MethodNotAllowed { .. } => "Method not allowed",
        }
    }
}

/// The edge's configuration, from the Worker's environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The protocol limits (wrangler var `LIMITS`, JSON; defaults where absent).
    pub limits: Limits,
}

impl Config {
    /// Reads the `LIMITS` var: absent or blank means the defaults; anything
    /// else must be a JSON object of [`Limits`] fields.
    pub fn from_vars(limits_json: Option<&str>) -> Result<Config, String> {
        let limits = match limits_json.map(str::trim) {
            None | Some("") => Limits::default(),
            Some(s) => serde_json::from_str(s).map_err(|e| format!("LIMITS: {e}"))?,
        };
        Ok(Config { limits })
    }
}

/// Routes one request.
pub fn route(req: &RequestHead<'_>, cfg: &Config) -> Reply {
    match req.path {
        "/health" => match req.method {
            "GET" | "HEAD" => Reply::json(200, &serde_json::json!({ "status": "ok" })),
            _ => method_not_allowed("GET, HEAD"),
        },
        "/validate/ttl" => match req.method {
            "POST" => validate_ttl(req, cfg),
            _ => method_not_allowed("POST"),
        },
        _ => Reply::problem(&EdgeError::NotFound),
    }
}

fn method_not_allowed(allow: &'static str) -> Reply {
    Reply::problem(&EdgeError::MethodNotAllowed { allow }).with_header("Allow", allow)
}

/// Smoke route: runs the shared `TTL` rule and echoes the value used.
fn validate_ttl(req: &RequestHead<'_>, cfg: &Config) -> Reply {
    let raw = (req.header)("TTL");
    match Ttl::parse(raw.as_deref(), cfg.limits.max_ttl_secs) {
        Ok(Ttl(secs)) => Reply::json(200, &serde_json::json!({ "ttl": secs }))
            .with_header("TTL", secs.to_string()),
        Err(e) => Reply::problem(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn call(method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        call_with(method, path, headers, &Config::default())
    }

    fn call_with(method: &str, path: &str, headers: &[(&str, &str)], cfg: &Config) -> Reply {
        let owned: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| {
            owned
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        route(
            &RequestHead {
                method,
                path,
                header: &lookup,
            },
            cfg,
        )
    }

    fn body(r: &Reply) -> Value {
        serde_json::from_str(&r.body).expect("JSON body")
    }

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn health() {
        let r = call("GET", "/health", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, JSON);
        assert_eq!(body(&r), serde_json::json!({ "status": "ok" }));
    }

    #[test]
    fn ttl_is_echoed() {
        let r = call("POST", "/validate/ttl", &[("ttl", "60")]);
        assert_eq!(r.status, 200);
        assert_eq!(body(&r), serde_json::json!({ "ttl": 60 }));
        assert_eq!(header(&r, "TTL"), Some("60"));
    }

    #[test]
    fn ttl_is_lowered_to_the_configured_maximum() {
        let r = call("POST", "/validate/ttl", &[("TTL", "99999999999")]);
        assert_eq!(body(&r)["ttl"], Limits::default().max_ttl_secs);

        let cfg = Config::from_vars(Some(r#"{"max_ttl_secs": 100}"#)).unwrap();
        let r = call_with("POST", "/validate/ttl", &[("TTL", "3600")], &cfg);
        assert_eq!(body(&r)["ttl"], 100);
        assert_eq!(header(&r, "TTL"), Some("100"));
    }

    #[test]
    fn missing_ttl_is_a_400_problem() {
        let r = call("POST", "/validate/ttl", &[]);
        assert_eq!(r.status, 400);
        assert_eq!(r.content_type, PROBLEM_JSON);
        let b = body(&r);
        assert_eq!(b["status"], 400);
        assert_eq!(b["type"], "/problems/missing-ttl");
        assert_eq!(b["errno"], 111);
    }

    #[test]
    fn garbage_ttl_is_a_400_problem() {
        for bad in ["soon", "-1", "1.5", "", "0x10"] {
            let r = call("POST", "/validate/ttl", &[("TTL", bad)]);
            assert_eq!(r.status, 400, "TTL {bad:?}");
            assert_eq!(r.content_type, PROBLEM_JSON);
            assert_eq!(body(&r)["type"], "/problems/invalid-ttl", "TTL {bad:?}");
        }
    }

    #[test]
    fn unknown_path_is_a_404_problem() {
        let r = call("GET", "/nope", &[]);
        assert_eq!(r.status, 404);
        assert_eq!(r.content_type, PROBLEM_JSON);
        assert_eq!(body(&r)["status"], 404);
    }

    #[test]
    fn wrong_method_is_a_405_problem_with_allow() {
        let r = call("GET", "/validate/ttl", &[]);
        assert_eq!(r.status, 405);
        assert_eq!(header(&r, "Allow"), Some("POST"));
        assert_eq!(body(&r)["status"], 405);
    }

    #[test]
    fn config_defaults_and_errors() {
        assert_eq!(Config::from_vars(None).unwrap(), Config::default());
        assert_eq!(Config::from_vars(Some(" ")).unwrap(), Config::default());
        assert!(Config::from_vars(Some("{\"max_ttl\": 1}")).is_err());
        assert!(Config::from_vars(Some("not json")).is_err());
    }
}
