//! Delivery before bookkeeping. While a fan-out's copies wait in connection
//! queues, WebSocket connections leave what their devices send unread
//! (mostly acknowledgements), so that both cores write copies; the reads
//! follow once every queued copy is written, or after the configured pause.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Copies queued and not yet written, running fan-outs, and the
/// connections waiting for both to end.
pub struct Burst {
    /// Queued copies plus running fan-outs.
    outstanding: AtomicI64,
    /// When the current pause ends at the latest, ms after `base`.
    deadline_ms: AtomicU64,
    /// When reads will have had a pause's length since the current one.
    rested_ms: AtomicU64,
    base: Instant,
    /// The longest pause; zero turns pausing off.
    pause: Duration,
    resumed: Notify,
}

/// Held by a running fan-out: reads stay paused until it is dropped.
pub struct Hold(Arc<Burst>);

/// Carried by a queued copy: counted until it is dropped (written, or
/// dropped with its connection's queue).
#[derive(Debug)]
pub struct Queued(Arc<Burst>);

impl std::fmt::Debug for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Burst")
            .field("outstanding", &self.outstanding.load(Ordering::Relaxed))
            .finish()
    }
}

impl Burst {
    /// A burst tracker whose pauses last at most `pause`.
    pub fn new(pause: Duration) -> Arc<Burst> {
        Arc::new(Burst {
            outstanding: AtomicI64::new(0),
            deadline_ms: AtomicU64::new(0),
            rested_ms: AtomicU64::new(0),
            base: Instant::now(),
            pause,
            resumed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Holds reads paused for a fan-out. A pause starts with a burst (when
    /// nothing was outstanding) and lasts at most `pause` however many
    /// fan-outs join the burst; while copies stay queued past it (a stream
    /// of fan-outs, or a stalled connection's queue), the next pause starts
    /// no sooner than `pause` after it ended, so reads always get at least
    /// half the time. Must be called within the tokio runtime, which wakes
    /// paused connections when the pause runs out.
    pub fn hold(self: &Arc<Self>) -> Hold {
        let before = self.outstanding.fetch_add(1, Ordering::AcqRel);
        let (now, pause_ms) = (self.now_ms(), self.pause.as_millis() as u64);
        let rested = now >= self.rested_ms.load(Ordering::Acquire);
        if (before == 0 || rested) && pause_ms > 0 {
            self.deadline_ms.store(now + pause_ms, Ordering::Release);
            self.rested_ms.store(now + 2 * pause_ms, Ordering::Release);
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(me.pause + Duration::from_millis(1)).await;
                me.resumed.notify_waiters();
            });
        }
        Hold(self.clone())
    }

    /// Counts one queued copy.
    pub fn queued(self: &Arc<Self>) -> Queued {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        Queued(self.clone())
    }

    fn done(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.resumed.notify_waiters();
        }
    }

    /// Whether connections should leave their reads for now.
    pub fn reads_paused(&self) -> bool {
        !self.pause.is_zero()
            && self.outstanding.load(Ordering::Acquire) > 0
            && self.now_ms() < self.deadline_ms.load(Ordering::Acquire)
    }

    /// Returns once reads are no longer paused.
    pub async fn resumed(&self) {
        loop {
            let n = self.resumed.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if !self.reads_paused() {
                return;
            }
            n.await;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.done();
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_until_the_last_copy_is_written() {
        let b = Burst::new(Duration::from_secs(10));
        assert!(!b.reads_paused());
        let hold = b.hold();
        let copies: Vec<Queued> = (0..3).map(|_| b.queued()).collect();
        drop(hold);
        assert!(b.reads_paused());
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.resumed().await }
        });
        drop(copies);
        assert!(!b.reads_paused());
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }

    #[tokio::test]
    async fn a_pause_ends_at_its_deadline() {
        let b = Burst::new(Duration::from_millis(50));
        let _hold = b.hold();
        let _copy = b.queued();
        assert!(b.reads_paused());
        tokio::time::timeout(Duration::from_secs(2), b.resumed())
            .await
            .expect("resumed by the deadline");
        assert!(!b.reads_paused());
    }

    #[tokio::test]
    async fn later_fan_outs_do_not_extend_a_pause() {
        let b = Burst::new(Duration::from_millis(2000));
        let first = b.hold();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let second = b.hold();
        assert!(b.reads_paused(), "the burst's pause runs");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(!b.reads_paused(), "over at the first fan-out's deadline");
        drop((first, second));
        let _third = b.hold();
        assert!(b.reads_paused(), "a new burst pauses again");
    }

    #[tokio::test]
    async fn copies_stuck_past_a_pause_do_not_stop_the_next() {
        let b = Burst::new(Duration::from_millis(300));
        let _stuck = b.queued();
        drop(b.hold());
        assert!(b.reads_paused());
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!b.reads_paused(), "the pause ran out");
        let _next = b.hold();
        assert!(b.reads_paused(), "a later burst pauses again");
    }

    #[tokio::test]
    async fn zero_turns_pausing_off() {
        let b = Burst::new(Duration::ZERO);
        let _hold = b.hold();
        assert!(!b.reads_paused());
        b.resumed().await;
    }
}
