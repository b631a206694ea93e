//! The push protocol, sans I/O: every type, parser and validation rule that the
//! edge and the origin share, so that they can never disagree.
//!
//! Nothing here performs I/O or needs an async runtime; the crate builds for
//! `wasm32-unknown-unknown` as well as natively. Callers pass the current time
//! in (`now` as Unix seconds) where a rule depends on it.

pub mod b64;
pub mod ece;
pub mod headers;
pub mod jwe;
pub mod limits;
pub mod links;
pub mod list;
pub mod mark;
pub mod problem;
pub mod push;
pub mod rate;
pub mod route;
pub mod vapid;
pub mod webpush_ws;

pub use limits::Limits;
pub use problem::{Problem, ProblemSource};
