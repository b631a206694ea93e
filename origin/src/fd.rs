//! File descriptors: the open-file limit, raised to its hard limit at
//! start, and the device connections' share of it, so that devices that
//! fill the process still leave descriptors to the application API,
//! `/health`, the store and Redis.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The open-file limit now: (soft, hard); `None` if it cannot be read.
pub fn nofile() -> Option<(u64, u64)> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is a valid rlimit for the call to fill.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    (r == 0).then_some((l.rlim_cur, l.rlim_max))
}

/// Raises the soft open-file limit to the hard one: (soft before, soft
/// after, hard), or the error of `setrlimit`.
pub fn raise_nofile() -> std::io::Result<(u64, u64, u64)> {
    let (soft, hard) = nofile().ok_or_else(std::io::Error::last_os_error)?;
    if soft < hard {
        let l = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: `l` is a valid rlimit; raising the soft limit up to the
        // hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let (now, _) = nofile().unwrap_or((soft, hard));
    Ok((soft, now, hard))
}

/// The device connections a process may hold: `configured` if set (not 0),
/// else the soft open-file limit less `reserve`.
pub fn device_connections_max(configured: u64, reserve: u64) -> usize {
    if configured > 0 {
        return usize::try_from(configured).unwrap_or(usize::MAX);
    }
    match nofile() {
        Some((soft, _)) if soft != libc::RLIM_INFINITY => {
            usize::try_from(soft.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
        }
        _ => usize::MAX,
    }
}

/// Device connections open now, at most a set number.
#[derive(Debug)]
pub struct DeviceSlots {
    open: AtomicUsize,
    max: usize,
}

/// One device connection's place, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<DeviceSlots>);

impl DeviceSlots {
    /// Room for `max` device connections.
    pub fn new(max: usize) -> Arc<DeviceSlots> {
        Arc::new(DeviceSlots {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A place for one more connection, if there is room.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// The most connections it holds.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let s = DeviceSlots::new(2);
        let a = s.take().unwrap();
        let _b = s.take().unwrap();
        assert!(s.take().is_none());
        drop(a);
        let _c = s.take().expect("a place given back");
        assert!(s.take().is_none());
    }

    #[test]
    fn the_limit_is_read_and_raised() {
        let (soft, hard) = nofile().unwrap();
        assert!(soft <= hard);
        let (_, after, hard2) = raise_nofile().unwrap();
        assert_eq!((after, hard2), (hard, hard));
        assert_eq!(device_connections_max(7, 100), 7);
        let derived = device_connections_max(0, 100) as u64;
        assert!(hard == libc::RLIM_INFINITY || derived == hard.saturating_sub(100).max(1));
    }
}
