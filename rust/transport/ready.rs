//! A data fd for transports that hold frames in user space: readable while
//! the underlying fd is, or while frames are queued here (an epoll of that
//! fd and an eventfd set exactly while something is queued), so whoever
//! polls `data_fd` never misses a frame already read. `FrameQueue` holds
//! such frames itself (the switch's frames for its host).

use std::io;
use std::os::fd::RawFd;

use super::Batch;
use crate::sys::{Epoll, EventFd};

pub struct ReadyFd {
    poll: Epoll,
    flag: QueuedFlag,
    sources: Vec<RawFd>,
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
        Ok(ReadyFd { poll, flag, sources: sources.to_vec() })
    }

    /// The fds this one sums up: the sources and the queued flag
    /// (`Transport::poll_fds`).
    pub fn fds(&self, out: &mut Vec<RawFd>) {
        out.extend_from_slice(&self.sources);
        out.push(self.flag.raw());
    }

    /// Say whether frames are queued (a system call only on a change).
    pub fn queued(&mut self, queued: bool) {
        self.flag.queued(queued);
    }

    pub fn raw(&self) -> RawFd {
        self.poll.raw()
    }
}

/// Frames waiting for a reader, oldest first, in preallocated buffers,
/// with a `QueuedFlag` that `refresh` keeps readable exactly while any wait.
pub struct FrameQueue {
    ring: Batch,
    head: usize,
    flag: QueuedFlag,
}

impl FrameQueue {
    pub fn new(capacity: usize) -> io::Result<FrameQueue> {
        Ok(FrameQueue { ring: Batch::new(capacity), head: 0, flag: QueuedFlag::new()? })
    }

    /// The flag's fd (for an epoll set).
    pub fn raw(&self) -> RawFd {
        self.flag.raw()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.count == 0
    }

    /// Queue a copy of `frame` (at most a buffer); false: full, dropped.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        let q = &mut self.ring;
        if q.count == q.capacity() {
            return false;
        }
        let slot = (self.head + q.count) % q.capacity();
        let n = frame.len().min(q.bufs[slot].len());
        q.bufs[slot][..n].copy_from_slice(&frame[..n]);
        q.lens[slot] = n;
        q.count += 1;
        true
    }

    /// Take the oldest frame into `buf` (truncated to it).
    pub fn pop(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.ring.count == 0 {
            return None;
        }
        let h = self.head;
        let len = self.ring.lens[h].min(buf.len());
        buf[..len].copy_from_slice(&self.ring.bufs[h][..len]);
        self.head = (h + 1) % self.ring.capacity();
        self.ring.count -= 1;
        Some(len)
    }

    /// Move frames into `out`, as many as fit, then `refresh`.
    pub fn drain_into(&mut self, out: &mut Batch) {
        while out.count < out.capacity() {
            let Some(n) = self.pop(&mut out.bufs[out.count]) else { break };
            out.lens[out.count] = n;
            out.count += 1;
        }
        self.refresh();
    }

    /// Make the flag say whether frames wait (a system call only on a change).
    pub fn refresh(&mut self) {
        let queued = self.ring.count > 0;
        self.flag.queued(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::poll_in;

    #[test]
    fn frame_queue_is_a_bounded_fifo_with_a_flag() {
        let mut q = FrameQueue::new(2).unwrap();
        assert!(q.push(&[1; 60]) && q.push(&[2; 70]));
        assert!(!q.push(&[3; 80]), "full: dropped");
        assert!(!poll_in(q.raw(), 0).unwrap(), "the flag moves only on refresh");
        q.refresh();
        assert!(poll_in(q.raw(), 0).unwrap());
        let mut buf = [0u8; 64];
        assert_eq!(q.pop(&mut buf), Some(60), "oldest first");
        assert_eq!(buf[0], 1);
        assert!(q.push(&[4; 50]), "room again, past the end of the ring");
        let mut out = Batch::new(4);
        q.drain_into(&mut out);
        assert_eq!((out.count, out.frame(0), out.frame(1)), (2, &[2u8; 70][..], &[4u8; 50][..]));
        assert!(q.is_empty() && !poll_in(q.raw(), 0).unwrap(), "empty: the flag is down");
    }
}
