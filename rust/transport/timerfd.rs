//! A CLOCK_MONOTONIC timerfd armed at absolute times, and that clock in
//! nanoseconds (wirefilter://'s release timer: one fd to poll, no thread).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::sys;

/// CLOCK_MONOTONIC in nanoseconds (the timerfd's clock).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A non-blocking CLOCK_MONOTONIC timerfd, armed at absolute times.
pub struct TimerFd(OwnedFd);

impl TimerFd {
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: no pointers; a fresh fd is returned and owned below.
        let fd = sys::cvt(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) })?;
        // SAFETY: fd was just created and is owned by nobody else.
        Ok(TimerFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Fire at `at` (ns, CLOCK_MONOTONIC), or never (None). Re-arming also
    /// clears an expiry not yet read.
    pub fn arm(&self, at: Option<u64>) -> io::Result<()> {
        let at = at.map_or(0, |t| t.max(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: (at / 1_000_000_000) as libc::time_t, tv_nsec: (at % 1_000_000_000) as libc::c_long },
        };
        // SAFETY: spec is a valid itimerspec; the old value is not asked for.
        sys::cvt(unsafe { libc::timerfd_settime(self.0.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) })?;
        Ok(())
    }

    /// Consume an expiry (the fd stops being readable).
    pub fn clear(&self) {
        let mut b = [0u8; 8];
        let _ = sys::read(self.0.as_raw_fd(), &mut b);
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
