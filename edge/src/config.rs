//! The edge's configuration, read from the Worker's environment (wrangler.toml
//! `[vars]`, `--var`, secrets).

use shared::Limits;

/// Names of the Worker's bindings and variables (see wrangler.toml).
pub mod vars {
    /// Base URL of the origin's application API (`scheme://host[:port]`),
    /// or of several origin nodes, separated by commas.
    pub const ORIGIN_URL: &str = "ORIGIN_URL";
    /// The protocol limits, a JSON object of `shared::Limits` fields.
    pub const LIMITS: &str = "LIMITS";
    /// The HMAC key of the mark on forwarded requests (a secret).
    pub const EDGE_HMAC_SECRET: &str = "EDGE_HMAC_SECRET";
    /// Seconds per rate-limit window (default 60; the `*_per_minute` limits count per window).
    pub const RATE_WINDOW_SECS: &str = "RATE_WINDOW_SECS";
    /// List documents and patches one isolate reads at once (default 1, 1 to 64).
    pub const MAX_LIST_DOCUMENTS: &str = "MAX_LIST_DOCUMENTS";
    /// The Durable Object namespace that keeps the rate-limit windows.
    pub const RATE_LIMITER: &str = "RATE_LIMITER";
}

/// Why the environment does not make a usable configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `LIMITS` is not a JSON object of known limits.
    #[error("LIMITS: {0}")]
    Limits(String),
    /// `ORIGIN_URL` is missing, or one of its URLs is not `http(s)://host[:port]`.
    #[error("ORIGIN_URL must be http(s)://host[:port] (several separated by commas), not {0:?}")]
    OriginUrl(String),
    /// No `EDGE_HMAC_SECRET`.
    #[error("EDGE_HMAC_SECRET is not set (wrangler secret put EDGE_HMAC_SECRET, or --var for local runs)")]
    MissingSecret,
    /// `RATE_WINDOW_SECS` is not a positive whole number.
    #[error("RATE_WINDOW_SECS must be a whole number of seconds above 0, not {0:?}")]
    RateWindow(String),
    /// `MAX_LIST_DOCUMENTS` is not a whole number from 1 to 64.
    #[error("MAX_LIST_DOCUMENTS must be a whole number from 1 to 64, not {0:?}")]
    MaxListDocuments(String),
}

/// Everything the edge reads from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where validated requests go: the origin nodes' URLs, without a
    /// trailing slash. Requests are spread over them, and one that a node
    /// refuses to connect goes to the next.
    pub origins: Vec<String>,
    /// The key of the mark (docs/protocol.md §5).
    pub secret: Vec<u8>,
    /// The protocol limits; the origin must run with the same.
    pub limits: Limits,
    /// Length of a rate-limit window in seconds.
    pub rate_window_secs: u64,
    /// List documents and patches one isolate reads at once: each may hold
    /// its body and its inflated form in the isolate's memory.
    pub max_list_documents: usize,
}

impl Config {
    /// Builds the configuration from a variable lookup.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let limits = match get(vars::LIMITS).as_deref().map(str::trim) {
            None | Some("") => Limits::default(),
            Some(s) => serde_json::from_str(s).map_err(|e| ConfigError::Limits(e.to_string()))?,
        };
        let given = get(vars::ORIGIN_URL).unwrap_or_default();
        let mut origins = Vec::new();
        for url in given.split(',') {
            let url = url.trim().trim_end_matches('/').to_owned();
            let authority = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if !authority.is_some_and(|a| !a.is_empty() && !a.contains(['/', '?', '#'])) {
                return Err(ConfigError::OriginUrl(url));
            }
            origins.push(url);
        }
        let secret = get(vars::EDGE_HMAC_SECRET)
            .filter(|s| !s.is_empty())
            .ok_or(ConfigError::MissingSecret)?
            .into_bytes();
        let rate_window_secs = whole(&get, vars::RATE_WINDOW_SECS, 60, 1..=u64::MAX)
            .map_err(ConfigError::RateWindow)?;
        let max_list_documents = whole(&get, vars::MAX_LIST_DOCUMENTS, 1, 1..=64)
            .map_err(ConfigError::MaxListDocuments)? as usize;
        Ok(Config {
            origins,
            secret,
            limits,
            rate_window_secs,
            max_list_documents,
        })
    }
}

/// Variable `name` as a whole number within `range`, `default` when unset
/// or empty; the text given when it is not one.
fn whole(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, String> {
    match get(name).as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| s.to_owned()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A configuration as the tests use it.
    pub(crate) fn config() -> Config {
        Config::from_env(env(&[])).unwrap()
    }

    pub(crate) fn env(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut vars: Vec<(String, String)> = vec![
            ("ORIGIN_URL".into(), "http://127.0.0.1:8080/".into()),
            ("EDGE_HMAC_SECRET".into(), "s3cret".into()),
        ];
        for (k, v) in extra {
            vars.retain(|(n, _)| n != k);
            vars.push((k.to_string(), v.to_string()));
        }
        move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults() {
        let c = config();
        assert_eq!(c.origins, ["http://127.0.0.1:8080"]);
        assert_eq!(c.secret, b"s3cret");
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.rate_window_secs, 60);
        assert_eq!(c.max_list_documents, 1);
    }

    #[test]
    fn values() {
        let c = Config::from_env(env(&[
            ("LIMITS", r#"{"max_ttl_secs": 100}"#),
            ("RATE_WINDOW_SECS", "5"),
            ("MAX_LIST_DOCUMENTS", "3"),
        ]))
        .unwrap();
        assert_eq!(c.max_list_documents, 3);
        assert_eq!(c.limits.max_ttl_secs, 100);
        assert_eq!(c.rate_window_secs, 5);
        let c = Config::from_env(env(&[("ORIGIN_URL", "http://a:1, https://b/")])).unwrap();
        assert_eq!(c.origins, ["http://a:1", "https://b"]);
    }

    #[test]
    fn errors() {
        let bad = |k: &str, v: &str| Config::from_env(env(&[(k, v)])).unwrap_err();
        assert!(matches!(
            bad("LIMITS", r#"{"max_ttl": 1}"#),
            ConfigError::Limits(_)
        ));
        assert!(matches!(bad("LIMITS", "nope"), ConfigError::Limits(_)));
        assert!(matches!(
            bad("ORIGIN_URL", "ftp://x"),
            ConfigError::OriginUrl(_)
        ));
        assert!(matches!(
            bad("ORIGIN_URL", "http://x/base"),
            ConfigError::OriginUrl(_)
        ));
        assert!(matches!(
            bad("ORIGIN_URL", "http://x,"),
            ConfigError::OriginUrl(_)
        ));
        assert_eq!(bad("EDGE_HMAC_SECRET", ""), ConfigError::MissingSecret);
        assert!(matches!(
            bad("RATE_WINDOW_SECS", "0"),
            ConfigError::RateWindow(_)
        ));
        for v in ["0", "65", "two"] {
            assert!(matches!(
                bad("MAX_LIST_DOCUMENTS", v),
                ConfigError::MaxListDocuments(_)
            ));
        }
    }
}
