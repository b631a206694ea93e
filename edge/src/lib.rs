//! The public edge: a Cloudflare Worker that answers application servers,
//! rejects bad requests early and (later) forwards good ones to the origin.
//!
//! The logic lives in [`route`], plain Rust that builds and is tested natively.
//! The Workers binding below exists only on wasm32 (`scripts/build-edge.sh`
//! builds it with worker-build; `wrangler dev` runs it).

pub mod route;

#[cfg(target_arch = "wasm32")]
mod worker_entry {
    use crate::route::{self, Config, Reply, RequestHead};
    use worker::{event, Context, Env, Headers, Request, Response, Result};

    /// Names of the Worker's environment bindings (see wrangler.toml).
    const VAR_LIMITS: &str = "LIMITS";

    #[event(fetch)]
    async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
        let limits = env.var(VAR_LIMITS).ok().map(|v| v.to_string());
        let cfg = match Config::from_vars(limits.as_deref()) {
            Ok(cfg) => cfg,
            Err(e) => {
                worker::console_error!("edge misconfigured: {e}");
                return Response::error("edge misconfigured", 500);
            }
        };

        // worker::Method maps methods it does not know to GET; take the raw one.
        let method = req.inner().method();
        let path = req.path();
        let headers = req.headers();
        let lookup = |name: &str| headers.get(name).ok().flatten();
        let reply = route::route(
            &RequestHead {
                method: &method,
                path: &path,
                header: &lookup,
            },
            &cfg,
        );
        to_response(reply)
    }

    fn to_response(reply: Reply) -> Result<Response> {
        let headers = Headers::new();
        headers.set("Content-Type", reply.content_type)?;
        for (name, value) in &reply.headers {
            headers.append(name, value)?;
        }
        Ok(Response::builder()
            .with_status(reply.status)
            .with_headers(headers)
            .fixed(reply.body.into_bytes()))
    }
}
