//! Acknowledged list copies by member, in memory, for a store one process owns.
//!
//! A `hello` after a busy connected period asks whether its member answered
//! each unsettled list message; on file that is one random B-tree lookup
//! each, and an index on file would cost each acknowledgement a write at a
//! random place. In memory it costs neither. The index holds the latest
//! answers in two generations: when the newer holds half the cap, the older
//! is dropped, and the index is then complete only for list messages
//! created after the newer one began; answers to older ones are looked up
//! in the file. (A look reads only the messages after a member's settled
//! record, so answers to settled ones are never asked for again, and wait
//! for their generation to go.)

use crate::tokens::{BuildTokenHasher, Token, TokenMap};
use std::collections::HashSet;
use std::sync::Mutex;

/// A member's answers: list message ids, drawn by the service.
type Ids = HashSet<Token, BuildTokenHasher>;

/// The index.
pub struct Answers {
    /// Answers a generation holds before it is the older one.
    per_generation: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Generation {
    /// Unix seconds it began.
    began: u64,
    by_push: TokenMap<Ids>,
    entries: usize,
}

struct Inner {
    newer: Generation,
    /// When it began (Unix seconds), every answer to a list message
    /// created after it is in one of the two generations.
    older: Generation,
}

impl Generation {
    fn new(began: u64) -> Generation {
        Generation {
            began,
            ..Default::default()
        }
    }
}

impl Answers {
    /// An index of at most `kept` answers, complete from now on.
    pub fn new(kept: usize) -> Answers {
        let now = crate::clock::now();
        Answers {
            per_generation: (kept / 2).max(1),
            inner: Mutex::new(Inner {
                newer: Generation::new(now),
                older: Generation::new(now),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("answers lock")
    }

    /// Members answered their copies, (push, list message) each: noted
    /// before the answers are committed, so that a look in between does
    /// not send them again.
    pub fn answered<'a>(&self, answers: impl IntoIterator<Item = (&'a Token, &'a Token)>) {
        let mut g = self.lock();
        for (push, list_message) in answers {
            if g.newer.entries >= self.per_generation {
                // Complete from when the newer generation began.
                let now = crate::clock::now().max(g.newer.began);
                g.older = std::mem::replace(&mut g.newer, Generation::new(now));
            }
            if g.newer
                .by_push
                .entry(*push)
                .or_default()
                .insert(*list_message)
            {
                g.newer.entries += 1;
            }
        }
    }

    /// Of `owed` (list message, created), those the member answered by the
    /// index, and those the index cannot tell (created when it was not yet
    /// complete), to be looked up in the store.
    pub fn of(&self, push: &Token, owed: &[(Token, u64)]) -> (HashSet<Token>, Vec<Token>) {
        let g = self.lock();
        let (newer, older) = (g.newer.by_push.get(push), g.older.by_push.get(push));
        let mut answered = HashSet::new();
        let mut unknown = Vec::new();
        for (id, created) in owed {
            if newer.is_some_and(|s| s.contains(id)) || older.is_some_and(|s| s.contains(id)) {
                answered.insert(*id);
            } else if *created <= g.older.began {
                unknown.push(*id);
            }
        }
        (answered, unknown)
    }

    /// How many answers are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.newer.entries + g.older.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_found_and_older_messages_asked_of_the_store() {
        let a = Answers::new(100);
        let (p, q) = ([1; 16], [2; 16]);
        let (m1, m2, m3) = ([11; 16], [12; 16], [13; 16]);
        let new = crate::clock::now() + 10;
        a.answered([(&p, &m1), (&p, &m2)]);
        assert_eq!(a.len(), 2);
        let (yes, unknown) = a.of(&p, &[(m1, new), (m2, new), (m3, new)]);
        assert_eq!(yes, HashSet::from([m1, m2]));
        assert!(unknown.is_empty(), "complete for messages after it began");
        // Older messages: not answered here, so the store is asked.
        let (yes, unknown) = a.of(&q, &[(m1, 1)]);
        assert!(yes.is_empty());
        assert_eq!(unknown, vec![m1]);
        a.answered([(&q, &m3)]);
        assert_eq!(a.of(&q, &[(m3, new)]).0, HashSet::from([m3]));
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn a_full_generation_drops_the_older_and_the_store_answers_for_it() {
        let a = Answers::new(4);
        let (p, q) = ([1; 16], [2; 16]);
        let ids: Vec<Token> = (0..5u8).map(|i| [i + 10; 16]).collect();
        let t = crate::clock::now();
        a.answered([(&p, &ids[0]), (&p, &ids[1])]);
        // The first generation is full: it becomes the older; both answer.
        a.answered([(&q, &ids[2])]);
        assert_eq!(a.of(&p, &[(ids[0], t + 5)]).0.len(), 1);
        a.answered([(&q, &ids[3])]);
        // Full again: the first generation goes, and messages created up
        // to when the second began are asked of the store.
        a.answered([(&q, &ids[4])]);
        assert_eq!(a.len(), 3);
        let (yes, unknown) = a.of(&p, &[(ids[0], t), (ids[1], t + 5)]);
        assert!(yes.is_empty());
        assert_eq!(
            unknown,
            vec![ids[0]],
            "created before the index was complete"
        );
        let (yes, _) = a.of(&q, &[(ids[2], t), (ids[3], t), (ids[4], t)]);
        assert_eq!(yes.len(), 3);
    }
}
