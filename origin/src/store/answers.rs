//! Acknowledged list copies by member, in memory, for a store one process owns.
//!
//! A `hello` after a busy connected period asks whether its member answered
//! each unsettled list message; on file that is one random B-tree lookup
//! each, and an index on file would cost each acknowledgement a write at a
//! random place. In memory it costs neither. The index holds two
//! generations: when the newer holds half the cap, the older is dropped,
//! and the index is then complete only for list messages created after the
//! newer one began; answers to older ones are looked up in the file.

use crate::tokens::Token;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

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
    by_push: HashMap<Token, Vec<Token>>,
    entries: usize,
}

struct Inner {
    /// Unix seconds: every answer to a list message created after it is
    /// in one of the two generations until its message is settled.
    since: u64,
    newer: Generation,
    older: Generation,
}

impl Generation {
    fn new(began: u64) -> Generation {
        Generation {
            began,
            ..Default::default()
        }
    }

    fn remove(&mut self, push: &Token, ids: &HashSet<&Token>) {
        if let Some(v) = self.by_push.get_mut(push) {
            let before = v.len();
            v.retain(|id| !ids.contains(id));
            self.entries -= before - v.len();
            if v.is_empty() {
                self.by_push.remove(push);
            }
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
                since: now,
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
                let newer = std::mem::replace(&mut g.newer, Generation::new(now));
                g.since = g.since.max(newer.began);
                g.older = newer;
            }
            g.newer
                .by_push
                .entry(*push)
                .or_default()
                .push(*list_message);
            g.newer.entries += 1;
        }
    }

    /// The member's answers to `settled` need no longer be kept apart (the
    /// settled record that covers them is committed).
    pub fn settled(&self, push: &Token, settled: &[Token]) {
        let ids: HashSet<&Token> = settled.iter().collect();
        let mut g = self.lock();
        g.newer.remove(push, &ids);
        g.older.remove(push, &ids);
    }

    /// A subscription ended: its answers go.
    pub fn forget(&self, push: &Token) {
        let g = &mut *self.lock();
        for gen in [&mut g.newer, &mut g.older] {
            if let Some(v) = gen.by_push.remove(push) {
                gen.entries -= v.len();
            }
        }
    }

    /// Of `owed` (list message, created), those the member answered by the
    /// index, and those the index cannot tell (created when it was not yet
    /// complete), to be looked up in the store.
    pub fn of(&self, push: &Token, owed: &[(Token, u64)]) -> (HashSet<Token>, Vec<Token>) {
        let asked: HashSet<&Token> = owed.iter().map(|(id, _)| id).collect();
        let g = self.lock();
        // One pass over the member's answers, however many lists ask.
        let answered: HashSet<Token> = [&g.newer, &g.older]
            .into_iter()
            .filter_map(|gen| gen.by_push.get(push))
            .flatten()
            .filter(|id| asked.contains(id))
            .copied()
            .collect();
        let unknown = owed
            .iter()
            .filter(|(id, created)| *created <= g.since && !answered.contains(id))
            .map(|(id, _)| *id)
            .collect();
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
    fn answers_are_found_settled_and_forgotten() {
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
        a.settled(&p, &[m1, m3]);
        assert_eq!(a.len(), 1);
        a.answered([(&q, &m3)]);
        a.forget(&q);
        assert_eq!(a.len(), 1);
        assert!(a.of(&q, &[(m3, new)]).0.is_empty());
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
