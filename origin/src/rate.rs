//! Fixed-window rate limits kept in memory (per subscription, per list),
//! and, in a cluster, the share of other nodes' counts a limit adds.

use crate::tokens::{BuildTokenHasher, Token};
use shared::rate::Window;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

const SHARDS: usize = 16;

/// The window length, seconds.
const MINUTE: u64 = 60;

/// Per key: the minute counted, the events in it here, and (in a
/// cluster) what is known of the other nodes' and told to them.
#[derive(Default)]
struct Entry {
    window: Window,
    /// Events other nodes counted in the window, as last heard.
    others: u32,
    /// Events counted here and not yet told.
    unsent: u32,
    /// Events counted here and told.
    sent: u32,
    /// Whether the key waits in the list of counts to tell.
    queued: bool,
}

type Windows<S> = HashMap<Token, Entry, S>;

/// A key's events counted here since the last time they were told, in the
/// window that began at `start` (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unshared {
    pub key: Token,
    pub start: u64,
    pub events: u32,
}

/// At most `per_minute` events per key in each clock minute.
///
/// Keys drawn by the service (push and list tokens) are hashed as they are
/// ([`crate::tokens::TokenHasher`], the default). Keys a client chooses,
/// such as its VAPID key, need a keyed hash (`RateLimiter<RandomState>`):
/// with the plain one, a client could pick keys that all collide.
///
/// In a cluster ([`RateLimiter::shared`]), a key's events are told to the
/// other nodes once they pass a sixteenth of the limit here (most keys,
/// far below their limit, cost nothing), and the limit then counts what
/// the others told. Between two exchanges a node admits at most what it
/// knew was left, so the limit holds across nodes up to the events of one
/// exchange interval.
pub struct RateLimiter<S = BuildTokenHasher> {
    per_minute: u32,
    shards: Box<[Mutex<Windows<S>>]>,
    shared: std::sync::atomic::AtomicBool,
    to_tell: Mutex<Vec<Token>>,
}

impl<S: BuildHasher + Default> RateLimiter<S> {
    /// A limiter of `per_minute` events per key.
    pub fn new(per_minute: u32) -> RateLimiter<S> {
        RateLimiter {
            per_minute,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Windows::default()))
                .collect(),
            shared: Default::default(),
            to_tell: Default::default(),
        }
    }

    /// Counts with the other nodes of a cluster from now on.
    pub fn shared(&self) {
        self.shared
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn shard(&self, key: &Token) -> std::sync::MutexGuard<'_, Windows<S>> {
        self.shards[key[0] as usize % SHARDS]
            .lock()
            .expect("rate lock")
    }

    /// Counts one event for `key`; `Err(seconds)` to wait if over the limit.
    pub fn check(&self, key: &Token) -> Result<(), u64> {
        self.check_n(key, 1)
    }

    /// Counts `n` events for `key` at once, all or none; `Err(seconds)` to
    /// wait if they would pass the limit.
    pub fn check_n(&self, key: &Token, n: u32) -> Result<(), u64> {
        let now = crate::clock::now();
        let mut shard = self.shard(key);
        let e = shard.entry(*key).or_default();
        if !e.window.holds(now, MINUTE) {
            *e = Entry::default();
        }
        e.window
            .hit_n(now, MINUTE, n, self.per_minute.saturating_sub(e.others))?;
        if self.shared.load(std::sync::atomic::Ordering::Acquire) {
            e.unsent += n;
            if !e.queued && e.window.count >= (self.per_minute / 16).max(1) {
                e.queued = true;
                self.to_tell.lock().expect("rate lock").push(*key);
            }
        }
        Ok(())
    }

    /// Takes back `n` events counted for `key` at `counted` (Unix seconds;
    /// a request refused by another limit after this one counted it);
    /// nothing if that window is over. Events already told to other nodes
    /// stay counted there.
    pub fn refund(&self, key: &Token, n: u32, counted: u64) {
        let start = Window::start_at(counted, MINUTE);
        let mut shard = self.shard(key);
        if let Some(e) = shard.get_mut(key) {
            if e.window.start == start {
                e.window.count = e.window.count.saturating_sub(n);
                e.unsent = e.unsent.saturating_sub(n);
            }
        }
    }

    /// The counts to tell the other nodes (each key's unsent events),
    /// taken as told.
    pub fn take_unshared(&self) -> Vec<Unshared> {
        let keys = std::mem::take(&mut *self.to_tell.lock().expect("rate lock"));
        let now = crate::clock::now();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let mut shard = self.shard(&key);
            let Some(e) = shard.get_mut(&key) else {
                continue;
            };
            if !e.window.holds(now, MINUTE) {
                continue;
            }
            out.push(Unshared {
                key,
                start: e.window.start,
                events: e.unsent,
            });
            e.sent += e.unsent;
            e.unsent = 0;
            e.queued = false;
        }
        out
    }

    /// Every node together counted `total` events for `key` in the window
    /// that began at `start`, this node's told ones included.
    pub fn heard(&self, key: &Token, start: u64, total: u64) {
        let mut shard = self.shard(key);
        if let Some(e) = shard.get_mut(key) {
            if e.window.start == start {
                let total = u32::try_from(total).unwrap_or(u32::MAX);
                e.others = total.saturating_sub(e.sent);
                // Still counting here: told again at the next exchange.
                if e.unsent > 0 && !e.queued {
                    e.queued = true;
                    self.to_tell.lock().expect("rate lock").push(*key);
                }
            }
        }
    }

    /// Forgets windows older than the current minute.
    pub fn prune(&self) {
        let now = crate::clock::now();
        for s in self.shards.iter() {
            s.lock()
                .expect("rate lock")
                .retain(|_, e| e.window.holds(now, MINUTE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits<S: BuildHasher + Default>(r: RateLimiter<S>) {
        assert!(r.check(&[1; 16]).is_ok());
        assert!(r.check(&[1; 16]).is_ok());
        assert!(r.check(&[1; 16]).is_err());
        assert!(r.check(&[2; 16]).is_ok());
        r.prune();
        assert!(r.check(&[1; 16]).is_err(), "this minute's windows stay");
    }

    #[test]
    fn limits_per_key() {
        limits(RateLimiter::<BuildTokenHasher>::new(2));
    }

    #[test]
    fn a_refund_gives_back_what_was_counted_in_its_window() {
        let r = RateLimiter::<BuildTokenHasher>::new(10);
        let k = [3; 16];
        let t = crate::clock::now();
        assert!(r.check_n(&k, 10).is_ok());
        assert!(r.check(&k).is_err());
        r.refund(&k, 4, t);
        assert!(r.check_n(&k, 4).is_ok());
        assert!(r.check(&k).is_err());
        // Another window's refund gives nothing back.
        r.refund(&k, 4, t - 60);
        assert!(r.check(&k).is_err());
    }

    #[test]
    fn a_shared_limiter_counts_what_other_nodes_told() {
        let (a, b) = (
            RateLimiter::<BuildTokenHasher>::new(4),
            RateLimiter::<BuildTokenHasher>::new(4),
        );
        a.shared();
        b.shared();
        let k = [7; 16];
        assert!(a.check(&k).is_ok());
        assert!(a.check(&k).is_ok());
        let told = a.take_unshared();
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].events, 2);
        assert!(a.take_unshared().is_empty(), "told once");
        // The shared counter holds a's 2; b counts one and hears 3.
        assert!(b.check(&k).is_ok());
        let t = b.take_unshared()[0];
        b.heard(&k, t.start, 3);
        assert!(b.check(&k).is_ok(), "the fourth");
        assert!(b.check(&k).is_err(), "no fifth across both");
        a.heard(&k, told[0].start, 4);
        assert!(a.check(&k).is_err());
    }

    #[test]
    fn a_keyed_limiter_limits_alike() {
        limits(RateLimiter::<std::hash::RandomState>::new(2));
    }
}
