//! The user agent side: Firefox's WebSocket protocol and RFC 8030 over HTTP/2.

pub mod h2;
pub mod ws;
pub mod ws_frame;
pub mod ws_out;
pub mod ws_session;

use crate::config::Config;
use crate::tokens::Token;
use std::collections::VecDeque;

/// The stored messages a connection had acknowledged lately. A message is
/// handed to its connection as its commit runs; if the connection also
/// fetched it from the store, wrote it and had it acknowledged while the
/// handed copy still waited in its queue, that copy is not written again.
/// Holds at most `--queue-depth` + `--max-unacked` ids: a handed copy
/// waits behind at most the queue's depth, and the connection writes at
/// most `max_unacked` fetched messages meanwhile. Empty, it holds nothing.
#[derive(Default)]
pub struct RecentAcks(VecDeque<Token>);

impl RecentAcks {
    /// Remembers that stored message `id` was acknowledged.
    pub fn note(&mut self, id: Token, config: &Config) {
        if self.0.len() >= config.queue_depth + config.max_unacked {
            self.0.pop_front();
        }
        self.0.push_back(id);
    }

    /// Whether stored message `id` was acknowledged lately.
    pub fn contains(&self, id: &Token) -> bool {
        self.0.contains(id)
    }

    /// Forgets them all (and frees their room).
    pub fn clear(&mut self) {
        self.0 = VecDeque::new();
    }
}
