//! The public edge: a Cloudflare Worker in front of the origin (docs/protocol.md §1,
//! §5). It answers application servers, refuses bad requests with the
//! problem+json the origin would give, counts rate limits in a Durable Object
//! and forwards good requests to the origin with the HMAC mark.
//!
//! The logic is plain Rust, built and unit-tested natively: [`route`] (which
//! resource), [`check`] (`shared`'s rules, in the origin's order),
//! [`limiter`] (fixed windows), [`forward`] (the marked request), [`reply`]
//! (answers and errors), [`documents`] (how many list documents at once),
//! [`config`], and `bench` (the benchmark route's work, only in builds with
//! the `bench` feature). `runtime` binds them to the Workers runtime; it
//! exists only on wasm32 (`scripts/build-edge.sh`).

#[cfg(feature = "bench")]
pub mod bench;
pub mod check;
pub mod config;
pub mod documents;
pub mod forward;
pub mod limiter;
pub mod reply;
pub mod route;

#[cfg(target_arch = "wasm32")]
mod runtime;
