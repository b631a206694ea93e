//! The origin: a complete Web Push service on an embedded store.
//!
//! A push travels: `app::push` (validated by `shared`) → `State::deliver` →
//! the device's queue in `registry` → `device::ws` or `device::h2` writes it;
//! or, when the device is away or busy, `store` keeps it until it returns.
//!
//! # Layout
//!
//! From the top down (docs/architecture.md; `tests/layers.rs` fails on any
//! module cycle):
//! - `server`: the listeners, shutdown, the expiry sweeper;
//! - `app`: the application API, one module per resource; `device`: the
//!   user agent protocols (`ws*` for Firefox's WebSocket protocol, `h2` for
//!   RFC 8030 over HTTP/2);
//! - `fanout` (list push → copies), `registration` (making a subscription),
//!   `state` (the shared state and `State::deliver`);
//! - `registry` (connected user agents), `copy` (a list message's copies and
//!   the outlet the fan-out writes them to), `awaiting` (messages whose
//!   store write an acknowledgement may yet spare);
//! - `store` (the `Store` trait, redb, group commit) and the leaves:
//!   `config`, `clock`, `tokens`, `urls`, `metrics`, `rate`, `stripes`, `burst`,
//!   `probe`, `fd`.

pub mod app;
pub mod awaiting;
pub mod burst;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod copy;
pub mod device;
pub mod fanout;
pub mod fd;
pub mod in_flight;
pub mod metrics;
pub mod probe;
pub mod rate;
pub mod registration;
pub mod registry;
pub mod server;
pub mod state;
pub mod status;
pub mod store;
pub mod stripes;
pub mod tokens;
pub mod urls;
