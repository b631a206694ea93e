//! The user agent side: Firefox's WebSocket protocol and RFC 8030 over HTTP/2.

pub mod h2;
pub mod ws;
pub mod ws_frame;
pub mod ws_out;
pub mod ws_session;
