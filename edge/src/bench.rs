//! The benchmark route's work: the edge's checks of one request, run many
//! times inside one Worker invocation, in parts, so that the CPU time per
//! check can be read from the runtime's coarse clock.
//!
//! Only in Workers built with the `bench` feature (never in production).

use crate::check::{self, Inbound, Verifier};
use crate::config::Config;
use crate::reply::Refusal;
use serde::Serialize;
use shared::mark;
use shared::push::validate_list_push;

/// Largest iteration count one request may ask for.
pub const MAX_ITERATIONS: u32 = 100_000;

/// What one part of the work cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timing {
    /// Milliseconds for all iterations.
    pub total_ms: f64,
    /// Microseconds per iteration.
    pub per_iter_us: f64,
}

/// The benchmark's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Iterations of each part.
    pub iterations: u32,
    /// Body bytes.
    pub body_bytes: usize,
    /// Framing and header rules only (`validate_list_push`).
    pub framing: Timing,
    /// Every check the edge makes (framing, VAPID signature and claims).
    pub check: Timing,
    /// Signing the mark over the body.
    pub mark: Timing,
}

/// Reads `?n=` from a query (default 1000, at most [`MAX_ITERATIONS`]).
pub fn iterations(query: Option<&str>) -> u32 {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("n="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
        .min(MAX_ITERATIONS)
}

/// Times the checks of `req` (a list push, as a real one is checked) `n` times
/// each. `clock` is milliseconds; `settle` lets the runtime advance its clock
/// between parts (workerd only moves it on I/O) and is awaited before each reading.
pub async fn run<C, S, F>(
    req: &Inbound<'_>,
    cfg: &Config,
    verifier: &impl Verifier,
    n: u32,
    clock: C,
    settle: S,
) -> Result<Report, Refusal>
where
    C: Fn() -> f64,
    S: Fn() -> F,
    F: std::future::Future<Output = ()>,
{
    // Once first, so that a bad request is an error, not a timing.
    let key = check::check_all(req, &cfg.limits, verifier).await?;
    let headers = req.fields.as_headers();
    let framing = time(n, &clock, &settle, &mut || {
        std::hint::black_box(validate_list_push(&headers, req.body, &cfg.limits).is_ok());
    })
    .await;
    settle().await;
    let t0 = clock();
    for _ in 0..n {
        std::hint::black_box(check::check_all(req, &cfg.limits, verifier).await.is_ok());
    }
    settle().await;
    let check = Timing::of(clock() - t0, n);
    let mark = time(n, &clock, &settle, &mut || {
        std::hint::black_box(mark::sign(
            &cfg.secret,
            "POST",
            "/l/AAECAwQFBgcICQoLDA0ODw",
            req.now,
            key.as_deref(),
            &mark::fields(|n| (n == "ttl").then_some("60")),
            req.body,
        ));
    })
    .await;
    Ok(Report {
        iterations: n,
        body_bytes: req.body.len(),
        framing,
        check,
        mark,
    })
}

/// Runs `f` `n` times between two readings of the settled clock.
async fn time<C, S, F>(n: u32, clock: &C, settle: &S, f: &mut dyn FnMut()) -> Timing
where
    C: Fn() -> f64,
    S: Fn() -> F,
    F: std::future::Future<Output = ()>,
{
    settle().await;
    let t0 = clock();
    for _ in 0..n {
        f();
    }
    settle().await;
    Timing::of(clock() - t0, n)
}

impl Timing {
    fn of(total_ms: f64, n: u32) -> Timing {
        Timing {
            total_ms,
            per_iter_us: total_ms * 1000.0 / f64::from(n.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::tests::{block_on, compact_template, vapid_header, AUD, NOW};
    use crate::check::{Fields, SharedVerifier};
    use crate::config::tests::config;
    use crate::route::AppRoute;
    use std::cell::Cell;

    #[test]
    fn query() {
        assert_eq!(iterations(None), 1000);
        assert_eq!(iterations(Some("a=1&n=5")), 5);
        assert_eq!(iterations(Some("n=999999999")), MAX_ITERATIONS);
        assert_eq!(iterations(Some("n=x")), 1000);
    }

    #[test]
    fn runs_every_part() {
        let (auth, _) = vapid_header(3, AUD, NOW + 60);
        let fields = Fields {
            ttl: Some("60".into()),
            content_type: Some("application/jose".into()),
            authorization: Some(auth),
            ..Fields::default()
        };
        let body = compact_template(2900);
        let route = AppRoute::PushList {
            // A list token as the service makes them.
            list: "AAECAwQFBgcICQoLDA0ODw".into(),
        };
        let req = Inbound {
            route: &route,
            fields: &fields,
            body: body.as_bytes(),
            audience: AUD,
            now: NOW,
        };
        let ticks = Cell::new(0.0);
        let clock = || {
            ticks.set(ticks.get() + 1.0);
            ticks.get()
        };
        let cfg = config();
        let r = block_on(run(&req, &cfg, &SharedVerifier, 3, clock, || async {})).unwrap();
        assert_eq!(r.iterations, 3);
        assert!(r.body_bytes > 3900);
        assert_eq!(r.check.total_ms, 1.0);
        let bad = Inbound { body: b"x", ..req };
        assert!(block_on(run(&bad, &cfg, &SharedVerifier, 3, || 0.0, || async {})).is_err());
    }
}
