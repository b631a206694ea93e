//! Acknowledged list copies indexed by member, in memory, for a store that
//! one process owns: a `hello` after a busy connected period finds its
//! answers here instead of one file lookup per list message (the
//! reconnect-storm goal of docs/performance.md, scenario r). On file, the
//! same index would cost every acknowledgement a write at a random place
//! of a large B-tree, a third of a fan-out's throughput when measured.

use crate::tokens::Token;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Most answers kept for one member: beyond them, its older ones are
/// looked up in the file (a subscription in 10 lists of the default
/// backlog of 100 has at most 1,000 unsettled).
const PER_MEMBER: usize = 4096;

/// The index: complete for the list messages created after `since`.
pub struct Answers {
    kept: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Unix seconds: every answer to a list message created after it is
    /// here (unless its member's own `since` is later) until that message
    /// is settled for its member.
    since: u64,
    by_push: HashMap<Token, Member>,
    entries: usize,
}

/// One member's answers (a few, searched in order: 16 bytes each).
struct Member {
    since: u64,
    ids: Vec<Token>,
}

impl Inner {
    /// Lets go of at least `room` answers, whole members at a time, each
    /// then complete only from `now` on.
    fn make_room(&mut self, room: usize, now: u64) {
        let mut freed = 0;
        for m in self.by_push.values_mut() {
            if freed >= room {
                break;
            }
            if !m.ids.is_empty() {
                freed += m.ids.len();
                m.ids = Vec::new();
                m.since = now;
            }
        }
        self.entries -= freed;
    }
}

impl Answers {
    /// An index of at most `kept` answers, complete from now on.
    pub fn new(kept: usize) -> Answers {
        Answers {
            kept,
            inner: Mutex::new(Inner {
                since: crate::clock::now(),
                by_push: HashMap::new(),
                entries: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A member answered its copy of `list_message` (noted before the
    /// answer is committed: a look in between must not send it again).
    /// A member past [`PER_MEMBER`] starts afresh, complete from now on;
    /// at the cap, an eighth of the answers go so, a member at a time
    /// (and if members alone fill it, the whole index starts afresh).
    pub fn answered(&self, push: &Token, list_message: &Token) {
        let mut g = self.lock();
        let now = crate::clock::now();
        if g.entries >= self.kept {
            g.make_room(self.kept / 8 + 1, now);
        }
        if g.by_push.len() >= self.kept {
            g.by_push = HashMap::new();
            g.entries = 0;
            g.since = now;
        }
        let since = g.since;
        let m = g.by_push.entry(*push).or_insert(Member {
            since,
            ids: Vec::new(),
        });
        if m.ids.contains(list_message) {
            return;
        }
        let mut gone = 0;
        if m.ids.len() >= PER_MEMBER {
            gone = m.ids.len();
            m.ids = Vec::new();
            m.since = now;
        }
        m.ids.push(*list_message);
        g.entries = g.entries + 1 - gone;
    }

    /// The member's answers to `settled` no longer need keeping (their
    /// settled record is committed).
    pub fn settled(&self, push: &Token, settled: &[Token]) {
        let mut g = self.lock();
        let start = g.since;
        let Some(m) = g.by_push.get_mut(push) else {
            return;
        };
        let before = m.ids.len();
        m.ids.retain(|id| !settled.contains(id));
        let gone = before - m.ids.len();
        if m.ids.is_empty() && m.since <= start {
            g.by_push.remove(push);
        }
        g.entries -= gone;
    }

    /// A subscription ended: its answers go.
    pub fn forget(&self, push: &Token) {
        let mut g = self.lock();
        if let Some(m) = g.by_push.remove(push) {
            g.entries -= m.ids.len();
        }
    }

    /// Of `owed` (list message, created), those the member answered by the
    /// index, and those the index cannot tell (created before it was
    /// complete for the member), to be looked up in the store.
    pub fn of(&self, push: &Token, owed: &[(Token, u64)]) -> (HashSet<Token>, Vec<Token>) {
        let g = self.lock();
        let m = g.by_push.get(push);
        let since = m.map_or(g.since, |m| m.since);
        let mut answered = HashSet::new();
        let mut unknown = Vec::new();
        for (id, created) in owed {
            if m.is_some_and(|m| m.ids.contains(id)) {
                answered.insert(*id);
            } else if *created <= since {
                unknown.push(*id);
            }
        }
        (answered, unknown)
    }

    /// How many answers are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_found_settled_and_start_afresh_past_the_cap() {
        let a = Answers::new(3);
        let (p, q) = ([1; 16], [2; 16]);
        let (m1, m2, m3) = ([11; 16], [12; 16], [13; 16]);
        let new = crate::clock::now() + 10;
        a.answered(&p, &m1);
        a.answered(&p, &m1);
        a.answered(&p, &m2);
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
        a.answered(&q, &m3);
        a.forget(&q);
        assert_eq!(a.len(), 1);
        a.answered(&q, &m1);
        a.answered(&q, &m2);
        // Full: members let go of theirs, whose answers are then asked of
        // the store.
        a.answered(&q, &m3);
        assert!(a.len() < 3);
        let t = crate::clock::now();
        let (yes_p, unknown_p) = a.of(&p, &[(m2, t)]);
        let (yes_q, unknown_q) = a.of(&q, &[(m1, t), (m3, t)]);
        // m3 of q was noted after the room was made.
        assert!(yes_q.contains(&m3));
        assert_eq!(
            yes_p.len() + unknown_p.len() + yes_q.len() + unknown_q.len(),
            3,
            "each answer known or asked of the store"
        );
    }

    #[test]
    fn a_member_with_too_many_answers_starts_afresh_alone() {
        let a = Answers::new(1 << 20);
        let (p, q) = ([1; 16], [2; 16]);
        a.answered(&q, &[0; 16]);
        for i in 0..=PER_MEMBER {
            let mut id = [0; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            a.answered(&p, &id);
        }
        assert_eq!(a.len(), 2);
        let (yes, unknown) = a.of(&p, &[([0; 16], crate::clock::now())]);
        assert!(yes.is_empty());
        assert_eq!(unknown, vec![[0; 16]], "looked up in the store");
        let (yes, _) = a.of(&q, &[([0; 16], 1)]);
        assert_eq!(yes.len(), 1, "other members keep theirs");
    }
}
