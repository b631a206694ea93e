//! List message sequences taken and not yet committed on this node, so
//! that a look through a member's lists settles only below them.
//!
//! A list push takes its sequence before its commit, so a look can see a
//! later message committed while an earlier one is still on its way. On a
//! store one process owns, settling below the lowest sequence in flight
//! needs no age margin; in a cluster other nodes' pushes are not seen here,
//! and `--list-settle-secs` stays the margin.

use crate::store::Store;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The sequences in flight (each taken once from the store).
#[derive(Default)]
pub struct InFlight(Arc<Mutex<BTreeSet<u64>>>);

/// Holds a sequence in flight until dropped.
pub struct Held {
    seqs: Arc<Mutex<BTreeSet<u64>>>,
    seq: u64,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.0.lock().expect("in-flight lock")
    }

    /// Takes the store's next sequence and holds it in flight, in one step
    /// with respect to [`InFlight::floor`].
    pub fn take(&self, store: &dyn Store) -> Held {
        let mut g = self.lock();
        let seq = store.next_seq();
        g.insert(seq);
        Held {
            seqs: self.0.clone(),
            seq,
        }
    }

    /// A sequence below which every list message taken so far is committed
    /// (or will never be): read it before reading what is committed.
    pub fn floor(&self, store: &dyn Store) -> u64 {
        let g = self.lock();
        let next = store.next_seq();
        g.first().map_or(next, |&s| s.min(next))
    }
}

impl Held {
    /// The sequence held.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.seqs.lock().expect("in-flight lock").remove(&self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_stays_below_what_is_in_flight() {
        let dir = std::env::temp_dir().join(format!("in-flight-{}", std::process::id()));
        let store =
            crate::store::redb::RedbStore::open(&dir, &Default::default(), 1 << 20, 0).unwrap();
        let f = InFlight::default();
        let a = f.take(&store);
        let b = f.take(&store);
        let b_seq = b.seq();
        assert!(a.seq() < b_seq);
        assert_eq!(f.floor(&store), a.seq());
        drop(a);
        assert_eq!(f.floor(&store), b_seq);
        drop(b);
        assert!(f.floor(&store) > b_seq, "none in flight: the next");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
