//! Fixed-window rate limits kept in memory (per subscription, per list).

use crate::tokens::{BuildTokenHasher, Token};
use shared::rate::Window;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

const SHARDS: usize = 16;

/// The window length, seconds.
const MINUTE: u64 = 60;

/// Per key: the minute counted and the events in it.
type Windows<S> = HashMap<Token, Window, S>;

/// At most `per_minute` events per key in each clock minute.
///
/// Keys drawn by the service (push and list tokens) are hashed as they are
/// ([`crate::tokens::TokenHasher`], the default). Keys a client chooses,
/// such as its VAPID key, need a keyed hash (`RateLimiter<RandomState>`):
/// with the plain one, a client could pick keys that all collide.
pub struct RateLimiter<S = BuildTokenHasher> {
    per_minute: u32,
    shards: Box<[Mutex<Windows<S>>]>,
}

impl<S: BuildHasher + Default> RateLimiter<S> {
    /// A limiter of `per_minute` events per key.
    pub fn new(per_minute: u32) -> RateLimiter<S> {
        RateLimiter {
            per_minute,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Windows::default()))
                .collect(),
        }
    }

    /// Counts one event for `key`; `Err(seconds)` to wait if over the limit.
    pub fn check(&self, key: &Token) -> Result<(), u64> {
        let now = crate::clock::now();
        let mut shard = self.shards[key[0] as usize % SHARDS]
            .lock()
            .expect("rate lock");
        shard
            .entry(*key)
            .or_default()
            .hit(now, MINUTE, self.per_minute)
    }

    /// Forgets windows older than the current minute.
    pub fn prune(&self) {
        let now = crate::clock::now();
        for s in self.shards.iter() {
            s.lock()
                .expect("rate lock")
                .retain(|_, w| w.holds(now, MINUTE));
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
    fn a_keyed_limiter_limits_alike() {
        limits(RateLimiter::<std::hash::RandomState>::new(2));
    }
}
