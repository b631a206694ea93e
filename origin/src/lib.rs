//! The origin: a complete Web Push service on an embedded store.
//!
//! A push travels: `app::push` (validated by `shared`) → `State::deliver` →
//! the device's queue in `registry` → `device::ws` or `device::h2` writes it;
//! or, when the device is away or busy, `store` keeps it until it returns.

pub mod app;
pub mod burst;
pub mod config;
pub mod device;
pub mod fanout;
pub mod metrics;
pub mod probe;
pub mod rate;
pub mod registration;
pub mod registry;
pub mod server;
pub mod state;
pub mod store;
pub mod stripes;
pub mod tokens;
pub mod urls;
