//! The list API as both list scenarios use it: options, list building, pushes, status polls.

use crate::app_client::{App, Resp};
use crate::bodies::list_document;
use crate::pool::DeviceOpts;
use crate::realtime_ns;
use crate::stats::r3;
use serde_json::{json, Value};
use shared::jwe::{CompactTemplate, CONTENT_TYPE_COMPACT};
use shared::list::{CONTENT_TYPE, MERGE_PATCH_CONTENT_TYPE};
use std::time::Duration;

/// Options both list commands share: the list, and the devices.
#[derive(Debug, Clone, clap::Args)]
pub struct ListOpts {
    /// The application API's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub app: String,
    /// Size of the compact JWE pushed to the list, in bytes.
    #[arg(long, default_value_t = 2048)]
    pub body_bytes: usize,
    /// Members per request when building the list (create, then PATCHes).
    #[arg(long, default_value_t = 50_000)]
    pub chunk: usize,
    /// The origin's process id, to report its CPU time.
    #[arg(long)]
    pub origin_pid: Option<u32>,
    /// The origin's operator URL (its `/metrics`), e.g.
    /// http://127.0.0.1:9464: without it the whole push is not measured.
    #[arg(long)]
    pub metrics: Option<String>,
    /// How long to wait for deliveries, in seconds.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub dev: DeviceOpts,
}

/// Builds one list of `endpoints` (create, then PATCHes of `chunk`
/// members): its path, and figures.
pub async fn build_list(
    app: &App,
    endpoints: &[(usize, String)],
    chunk: usize,
) -> Result<(String, Value), String> {
    let t0 = realtime_ns();
    let mut chunks = endpoints.chunks(chunk.max(1));
    let first = chunks.next().unwrap_or(&[]);
    let r = app
        .request(
            "POST",
            "/lists/0",
            &[("Content-Type", CONTENT_TYPE)],
            list_document(first).as_bytes(),
        )
        .await?;
    let create_ms = r.ms();
    let r = r.expect(&[201], "list create")?;
    let list = r.location_path("list create")?;
    let mut patch_ms = Vec::new();
    let mut rejected = 0u64;
    for part in chunks {
        let r = app
            .request(
                "PATCH",
                &list,
                &[("Content-Type", MERGE_PATCH_CONTENT_TYPE)],
                list_document(part).as_bytes(),
            )
            .await?
            .expect(&[200, 204], "list PATCH")?;
        if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
            rejected += count_rejected(&v);
        }
        patch_ms.push(r.ms());
        eprintln!(
            "pushbench: list: {} members added",
            first.len() + patch_ms.len() * chunk
        );
    }
    let secs = (realtime_ns() - t0) as f64 / 1e9;
    let max_patch = patch_ms.iter().copied().fold(0.0, f64::max);
    let figures = json!({
        "members": endpoints.len(),
        "build_s": r3(secs),
        "members_per_s": r3(endpoints.len() as f64 / secs.max(1e-9)),
        "create_ms": r3(create_ms),
        "patches": patch_ms.len(),
        "max_patch_ms": r3(max_patch),
        "rejected": rejected,
    });
    Ok((list, figures))
}

/// Rejected members in a PATCH response (whatever its shape: the entries of
/// a `rejected` object or array).
fn count_rejected(v: &Value) -> u64 {
    match &v["rejected"] {
        Value::Object(m) => m.len() as u64,
        Value::Array(a) => a.len() as u64,
        _ => 0,
    }
}

/// Pushes the JWE to the list (TTL 600 s): (response, status path).
pub async fn push_list(
    app: &App,
    list: &str,
    jwe: &CompactTemplate,
) -> Result<(Resp, String), String> {
    push_list_ttl(app, list, jwe, 600).await
}

/// Like [`push_list`], with a TTL of `ttl` seconds.
pub async fn push_list_ttl(
    app: &App,
    list: &str,
    jwe: &CompactTemplate,
    ttl: u32,
) -> Result<(Resp, String), String> {
    let ttl = ttl.to_string();
    let r = app
        .request(
            "POST",
            list,
            &[("TTL", &ttl), ("Content-Type", CONTENT_TYPE_COMPACT)],
            jwe.as_str().as_bytes(),
        )
        .await?
        .expect(&[201], "list push")?;
    let status = r.location_path("list push")?;
    Ok((r, status))
}

/// Polls the list message's status until `done(status)` or `secs` pass:
/// the last status, and when it was read (realtime ns).
pub async fn poll_status(
    app: &App,
    path: &str,
    secs: f64,
    done: impl Fn(&Value) -> bool,
) -> Result<(Value, u64), String> {
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    loop {
        let v = app.get_json(path).await?;
        let now = realtime_ns();
        if done(&v) || tokio::time::Instant::now() >= until {
            return Ok((v, now));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a list message's fan-out is finished, its counts add up, and
/// `connected` devices acknowledged it.
pub fn delivered_to_all(s: &Value, connected: u64) -> bool {
    s["fanout_finished"] == true && adds_up(s) && s["delivered"].as_u64() == Some(connected)
}

/// Whether the status counts add up to the members.
pub fn adds_up(s: &Value) -> bool {
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let answered = n("delivered") + n("undecryptable") + n("rejected");
    answered + n("stored") + n("expired") + n("dropped") + n("failed") == n("members")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let s = json!({"members": 5, "delivered": 3, "stored": 1, "expired": 0, "failed": 1,
            "fanout_finished": true});
        assert!(adds_up(&s));
        assert!(delivered_to_all(&s, 3));
        assert!(!delivered_to_all(&s, 4));
        assert!(!adds_up(&json!({"members": 2, "delivered": 1})));
        assert!(!delivered_to_all(
            &json!({"members": 0, "fanout_finished": false}),
            0
        ));
    }

    #[test]
    fn rejections_counted() {
        assert_eq!(
            count_rejected(&json!({"rejected": [{"uri": "a"}, {"uri": "b"}]})),
            2
        );
        assert_eq!(count_rejected(&json!({"rejected": {"a": "x"}})), 1);
        assert_eq!(count_rejected(&json!({"applied": 3})), 0);
    }
}
