//! Fixed-window rate counting: events per clock window of a given length, with the time passed in.

/// The events counted in one fixed clock window.
///
/// Windows of length `window_secs` begin at the Unix seconds that are
/// multiples of it. A window is known by the second it began, so one counted
/// under another length counts on only if it began at the same second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Window {
    /// Unix second the window began.
    pub start: u64,
    /// Events counted in it.
    pub count: u32,
}

/// A window length of 0 counts as 1 second.
fn length(window_secs: u64) -> u64 {
    window_secs.max(1)
}

impl Window {
    /// The Unix second the window holding `now` begins.
    pub fn start_at(now: u64, window_secs: u64) -> u64 {
        now - now % length(window_secs)
    }

    /// The Unix second this window ends: the first second not in it.
    pub fn ends(&self, window_secs: u64) -> u64 {
        self.start.saturating_add(length(window_secs))
    }

    /// Whether this is the window that holds `now`.
    pub fn holds(&self, now: u64, window_secs: u64) -> bool {
        self.start == Window::start_at(now, window_secs)
    }

    /// Counts one event at `now` (Unix seconds), at most `limit` per window.
    /// Moves to the window holding `now` first, with nothing counted, if this
    /// is another. A refused event is not counted: `Err` holds the seconds
    /// until the window ends (at least 1).
    pub fn hit(&mut self, now: u64, window_secs: u64, limit: u32) -> Result<(), u64> {
        self.hit_n(now, window_secs, 1, limit)
    }

    /// Counts `n` events at once (a push's copies), all or none: refused
    /// if they would take the window past `limit`.
    pub fn hit_n(&mut self, now: u64, window_secs: u64, n: u32, limit: u32) -> Result<(), u64> {
        if !self.holds(now, window_secs) {
            *self = Window {
                start: Window::start_at(now, window_secs),
                count: 0,
            };
        }
        if self.count.saturating_add(n) > limit {
            return Err(self.ends(window_secs).saturating_sub(now).max(1));
        }
        self.count += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_020; // 40 s into a minute

    #[test]
    fn counts_up_to_the_limit_then_refuses_until_the_window_ends() {
        let mut w = Window::default();
        assert_eq!(w.hit(T, 60, 2), Ok(()));
        assert_eq!(
            w,
            Window {
                start: T - 40,
                count: 1
            }
        );
        assert_eq!(w.hit(T + 1, 60, 2), Ok(()));
        assert_eq!(w.hit(T + 5, 60, 2), Err(15));
        assert_eq!(w.count, 2, "a refusal is not counted");
        assert_eq!(w.ends(60), T + 20);
    }

    #[test]
    fn a_new_window_starts_afresh() {
        let mut w = Window::default();
        w.hit(T, 60, 1).unwrap();
        assert_eq!(
            w.hit(T + 19, 60, 1),
            Err(1),
            "the last second of the window"
        );
        assert!(w.holds(T + 19, 60) && !w.holds(T + 20, 60));
        assert_eq!(w.hit(T + 20, 60, 1), Ok(()));
        assert_eq!((w.start, w.count), (T + 20, 1));
        // Not only the next window: any later one.
        assert_eq!(w.hit(T + 3600, 60, 1), Ok(()));
        assert_eq!((w.start, w.count), (T + 3560, 1));
    }

    #[test]
    fn waits_are_the_rest_of_the_window() {
        let start = Window::start_at(T, 60);
        for (now, wait) in [(start, 60), (start + 1, 59), (start + 59, 1)] {
            let mut w = Window::default();
            assert_eq!(w.hit(now, 60, 0), Err(wait));
        }
    }

    #[test]
    fn limit_zero_refuses_everything() {
        let mut w = Window::default();
        assert_eq!(w.hit(100, 10, 0), Err(10));
        assert_eq!(
            w,
            Window {
                start: 100,
                count: 0
            },
            "the window moves even when nothing is counted"
        );
        assert_eq!(w.hit(105, 10, 0), Err(5));
    }

    #[test]
    fn another_length_counts_on_only_from_the_same_start() {
        let mut w = Window::default();
        w.hit(120, 60, 5).unwrap();
        // 120 begins a 120 s window too: the same window, longer.
        assert_eq!(w.hit(130, 120, 5), Ok(()));
        assert_eq!((w.start, w.count, w.ends(120)), (120, 2, 240));
        // 90 s windows begin at 90 and 180: a new one.
        assert_eq!(w.hit(185, 90, 5), Ok(()));
        assert_eq!((w.start, w.count), (180, 1));
    }

    #[test]
    fn length_zero_is_one_second() {
        let mut w = Window::default();
        assert_eq!(w.hit(7, 0, 1), Ok(()));
        assert_eq!(w.hit(7, 0, 1), Err(1));
        assert_eq!(w.hit(8, 0, 1), Ok(()));
        assert_eq!(w.ends(0), 9);
    }

    #[test]
    fn many_events_count_together_or_not_at_all() {
        let mut w = Window::default();
        assert_eq!(w.hit_n(T, 60, 3, 5), Ok(()));
        assert_eq!(w.hit_n(T, 60, 3, 5), Err(20));
        assert_eq!(w.count, 3, "a refused batch is not counted");
        assert_eq!(w.hit_n(T, 60, 2, 5), Ok(()));
        assert_eq!(w.hit_n(T + 20, 60, 5, 5), Ok(()), "a new window");
    }
}
