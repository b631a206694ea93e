//! Striped locks that make a request's check and its commit one step
//! against other requests on the same list, owner or user agent: a `PATCH`
//! checks the member count and merges into members as they are, a creation
//! counts its owner's lists, a new subscription its user agent's. One
//! origin process owns its store, so in-process locks suffice.

use tokio::sync::{Mutex, MutexGuard};

/// Stripes of the default set: held by this many keys' requests at once, at most.
const STRIPES: usize = 64;

/// A fixed set of async locks, one chosen per key.
pub struct Stripes(Box<[Mutex<()>]>);

impl Default for Stripes {
    fn default() -> Self {
        Stripes::new(STRIPES)
    }
}

impl Stripes {
    /// A set of `n` stripes (at least one).
    pub fn new(n: usize) -> Stripes {
        Stripes((0..n.max(1)).map(|_| Mutex::new(())).collect())
    }

    /// Waits for the lock of `key`'s stripe. Keys are random tokens or key
    /// coordinates, so their first bytes spread them evenly.
    pub async fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        let mut b = [0u8; 8];
        let n = key.len().min(8);
        b[..n].copy_from_slice(&key[..n]);
        let i = (u64::from_le_bytes(b) % self.0.len() as u64) as usize;
        self.0[i].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_key_waits_for_its_stripe_and_others_do_not() {
        let s = Stripes::default();
        let held = s.lock(&[7; 16]).await;
        let same = tokio::time::timeout(Duration::from_millis(50), s.lock(&[7; 16])).await;
        assert!(same.is_err(), "the same key waits");
        let other = tokio::time::timeout(Duration::from_millis(50), s.lock(&[8; 16])).await;
        assert!(other.is_ok(), "another stripe does not");
        drop(other);
        drop(held);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), s.lock(&[7; 16]))
                .await
                .is_ok()
        );
    }
}
