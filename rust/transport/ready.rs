//! A data fd for transports that hold frames in user space: readable while
//! the underlying fd is, or while frames are queued here (an epoll of that
//! fd and an eventfd set exactly while something is queued), so whoever
//! polls `data_fd` never misses a frame already read.

use std::io;
use std::os::fd::RawFd;

use crate::sys::{Epoll, EventFd};

pub struct ReadyFd {
    poll: Epoll,
    flag: QueuedFlag,
}

/// An eventfd readable exactly while something is queued; written only
/// when that changes. ReadyFd's, and the switch's for host frames (whose
/// eventfd sits in the switch's own epoll).
pub struct QueuedFlag {
    fd: EventFd,
    set: bool,
}

impl QueuedFlag {
    pub fn new() -> io::Result<QueuedFlag> {
        Ok(QueuedFlag { fd: EventFd::new()?, set: false })
    }

    /// Say whether something is queued (a system call only on a change).
    pub fn queued(&mut self, queued: bool) {
        if queued != self.set {
            if queued {
                self.fd.set()
            } else {
                self.fd.clear()
            }
            self.set = queued;
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.raw()
    }
}

impl ReadyFd {
    /// Readable while any of `sources` is, or while frames are queued.
    pub fn new(sources: &[RawFd]) -> io::Result<ReadyFd> {
        let poll = Epoll::new()?;
        let flag = QueuedFlag::new()?;
        for (i, &fd) in sources.iter().enumerate() {
            poll.add(fd, i as u64 + 1)?;
        }
        poll.add(flag.raw(), 0)?;
        Ok(ReadyFd { poll, flag })
    }

    /// Say whether frames are queued (a system call only on a change).
    pub fn queued(&mut self, queued: bool) {
        self.flag.queued(queued);
    }

    pub fn raw(&self) -> RawFd {
        self.poll.raw()
    }
}
