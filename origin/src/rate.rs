//! Fixed-window rate limits kept in memory (per subscription, per list).

use crate::tokens::{Token, TokenMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const SHARDS: usize = 16;

/// Per key: the minute counted and the events in it.
type Windows = TokenMap<(u64, u32)>;

/// At most `per_minute` events per key in each clock minute.
pub struct RateLimiter {
    per_minute: u32,
    shards: Box<[Mutex<Windows>]>,
}

impl RateLimiter {
    /// A limiter of `per_minute` events per key.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Windows::default()))
                .collect(),
        }
    }

    /// Counts one event for `key`; `Err(seconds)` to wait if over the limit.
    pub fn check(&self, key: &Token) -> Result<(), u64> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let minute = secs / 60;
        let mut shard = self.shards[key[0] as usize % SHARDS]
            .lock()
            .expect("rate lock");
        let e = shard.entry(*key).or_insert((minute, 0));
        if e.0 != minute {
            *e = (minute, 0);
        }
        if e.1 >= self.per_minute {
            return Err(60 - secs % 60);
        }
        e.1 += 1;
        Ok(())
    }

    /// Forgets windows older than the current minute.
    pub fn prune(&self) {
        let minute = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 60);
        for s in self.shards.iter() {
            s.lock()
                .expect("rate lock")
                .retain(|_, (m, _)| *m == minute);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key() {
        let r = RateLimiter::new(2);
        assert!(r.check(&[1; 16]).is_ok());
        assert!(r.check(&[1; 16]).is_ok());
        assert!(r.check(&[1; 16]).is_err());
        assert!(r.check(&[2; 16]).is_ok());
    }
}
