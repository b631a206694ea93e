//! Rate limits at the edge (docs/protocol.md §4, amplification): pushes per list
//! and list creations per VAPID key, counted in fixed clock windows (a
//! minute, as at the origin) by a Durable Object per limited thing, so that
//! every isolate of the edge counts in one place.
//!
//! This module is the message format between the Worker and the object and
//! the window the object stores, counted by `shared::rate`'s arithmetic; the
//! object itself (runtime.rs) only stores a [`Window`].

use serde::{Deserialize, Serialize};
use shared::rate;
use shared::Limits;

/// What a request counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// Pushes to one list (`list_pushes_per_minute`), by the list's token
    /// and the request's verified VAPID key: requests the origin will refuse
    /// (an owned list pushed without its owner's key) cannot use up the
    /// owner's window. The origin counts per list, whatever the key.
    ListPush {
        /// The list's token.
        list: String,
        /// The verified VAPID key, if any.
        key: Option<String>,
    },
    /// Lists created by one VAPID key (`list_creations_per_minute`), by the key.
    ListCreation(String),
}

impl RateKey {
    /// The name of the Durable Object that counts for this key.
    pub fn object_name(&self) -> String {
        match self {
            RateKey::ListPush { list, key } => {
                format!("list-push:{list}:{}", key.as_deref().unwrap_or("-"))
            }
            RateKey::ListCreation(key) => format!("list-create:{key}"),
        }
    }

    /// Events allowed per window.
    pub fn limit(&self, limits: &Limits) -> u32 {
        match self {
            RateKey::ListPush { .. } => limits.list_pushes_per_minute,
            RateKey::ListCreation(_) => limits.list_creations_per_minute,
        }
    }

    /// What is limited, in the origin's words for its 429.
    pub fn what(&self) -> &'static str {
        match self {
            RateKey::ListPush { .. } => "pushes to this list",
            RateKey::ListCreation(_) => "list creations by this VAPID key",
        }
    }

    /// The request to the counting object.
    pub fn hit(&self, limits: &Limits, window_secs: u64) -> Hit {
        Hit {
            limit: self.limit(limits),
            window_secs,
        }
    }
}

/// A request to count one event (the body the Worker sends the object).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// Events allowed per window.
    pub limit: u32,
    /// Window length, seconds.
    pub window_secs: u64,
}

/// The object's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Counted; go on.
    Allowed,
    /// Over the limit until the window ends.
    Limited {
        /// Seconds until then (`Retry-After`).
        retry_after: u64,
    },
}

/// The events counted in one window, as the object stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Unix second the window began.
    pub start: u64,
    /// Unix second it ends (and the object may forget it).
    pub ends: u64,
    /// Events counted.
    pub count: u32,
}

/// Counts one event at `now` (Unix seconds) against the stored window, by
/// `shared`'s fixed-window rule. Returns the window to store, if it changed,
/// and the verdict. A refused event is not counted, as at the origin. A
/// window stored under another length counts on if it began at the same
/// second, and then ends by the current length.
pub fn count(stored: Option<Window>, now: u64, hit: Hit) -> (Option<Window>, Verdict) {
    let mut current = stored.map_or_else(rate::Window::default, |s| rate::Window {
        start: s.start,
        count: s.count,
    });
    let verdict = match current.hit(now, hit.window_secs, hit.limit) {
        Ok(()) => Verdict::Allowed,
        Err(retry_after) => Verdict::Limited { retry_after },
    };
    let next = Window {
        start: current.start,
        ends: current.ends(hit.window_secs),
        count: current.count,
    };
    ((Some(next) != stored).then_some(next), verdict)
}

/// Whether a stored window is over at `now`, so the object can drop its storage.
pub fn expired(stored: Option<Window>, now: u64) -> bool {
    stored.is_none_or(|s| now >= s.ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIT: Hit = Hit {
        limit: 2,
        window_secs: 60,
    };

    #[test]
    fn fixed_windows() {
        let t = 1_700_000_020; // 40 s into a minute
        let (w, v) = count(None, t, HIT);
        assert_eq!(v, Verdict::Allowed);
        let w = w.unwrap();
        assert_eq!((w.start, w.ends, w.count), (t - 40, t + 20, 1));
        let (w2, v) = count(Some(w), t + 1, HIT);
        assert_eq!(v, Verdict::Allowed);
        let (w3, v) = count(w2, t + 5, HIT);
        assert_eq!(v, Verdict::Limited { retry_after: 15 });
        assert_eq!(w3, None, "a refusal stores nothing");
        // The next window starts afresh.
        let (w4, v) = count(w2, t + 20, HIT);
        assert_eq!(v, Verdict::Allowed);
        assert_eq!(w4.unwrap().count, 1);
        assert!(!expired(w2, t + 19));
        assert!(expired(w2, t + 20));
        assert!(expired(None, t));
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let (w, v) = count(
            None,
            100,
            Hit {
                limit: 0,
                window_secs: 10,
            },
        );
        assert_eq!(v, Verdict::Limited { retry_after: 10 });
        assert!(w.is_some());
    }

    #[test]
    fn a_changed_length_counts_on_from_the_same_start() {
        let stored = Window {
            start: 120,
            ends: 180,
            count: 2,
        };
        let longer = Hit {
            limit: 2,
            window_secs: 120,
        };
        let (w, v) = count(Some(stored), 130, longer);
        assert_eq!(v, Verdict::Limited { retry_after: 110 });
        assert_eq!(
            w,
            Some(Window {
                ends: 240,
                ..stored
            })
        );
        let other = Hit {
            limit: 2,
            window_secs: 90,
        };
        let (w, v) = count(Some(stored), 185, other);
        assert_eq!(v, Verdict::Allowed);
        assert_eq!(
            w,
            Some(Window {
                start: 180,
                ends: 270,
                count: 1
            })
        );
    }

    #[test]
    fn keys_and_wire_format() {
        let l = Limits {
            list_pushes_per_minute: 3,
            list_creations_per_minute: 4,
            ..Limits::default()
        };
        let p = RateKey::ListPush {
            list: "abc".into(),
            key: None,
        };
        let signed = RateKey::ListPush {
            list: "abc".into(),
            key: Some("KEY".into()),
        };
        assert_ne!(p.object_name(), signed.object_name());
        let c = RateKey::ListCreation("KEY".into());
        assert_ne!(p.object_name(), c.object_name());
        assert_eq!(p.hit(&l, 60).limit, 3);
        assert_eq!(c.hit(&l, 60).limit, 4);
        let v: Verdict = serde_json::from_str(
            &serde_json::to_string(&Verdict::Limited { retry_after: 3 }).unwrap(),
        )
        .unwrap();
        assert_eq!(v, Verdict::Limited { retry_after: 3 });
        assert_eq!(
            serde_json::to_string(&Verdict::Allowed).unwrap(),
            "\"allowed\""
        );
    }
}
