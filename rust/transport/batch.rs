//! `Batch`: the frame buffers one wakeup of the forwarding loop moves.

use std::io;
use std::os::fd::RawFd;

use super::RECV_BUFSIZE;

/// Preallocated frame buffers for one wakeup of the forwarding loop.
/// Frame i is `bufs[i][..lens[i]]`, or, when a receiver handed it over
/// without a copy (a datagram of a UDP GRO train), a view into a shared
/// receive buffer: read frames with `frame(i)`; `materialize` before
/// changing them in place.
pub struct Batch {
    pub bufs: Vec<Box<[u8]>>,
    pub lens: Vec<usize>,
    pub count: usize,
    pub skipped: usize,
    /// Per frame: 0, or 1 + the index in `shared` of the buffer it is in, and its offset there.
    view: Vec<(u8, u32)>,
    shared: Vec<std::sync::Arc<Box<[u8]>>>,
}

impl Batch {
    pub fn new(capacity: usize) -> Self {
        Batch { bufs: (0..capacity).map(|_| vec![0u8; RECV_BUFSIZE].into_boxed_slice()).collect(), lens: vec![0; capacity], count: 0, skipped: 0, view: vec![(0, 0); capacity], shared: Vec::new() }
    }
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }
    pub fn clear(&mut self) {
        if !self.shared.is_empty() {
            self.view[..self.count].fill((0, 0));
            self.shared.clear(); // the receiver may reuse those buffers now
        }
        self.count = 0;
        self.skipped = 0;
    }
    /// Append frame `buf[off..off + len]` without copying it; false when
    /// the batch is full (or holds views of too many buffers).
    pub fn push_view(&mut self, buf: &std::sync::Arc<Box<[u8]>>, off: usize, len: usize) -> bool {
        if self.count >= self.capacity() || off + len > buf.len() {
            return false;
        }
        let k = match self.shared.iter().position(|b| std::sync::Arc::ptr_eq(b, buf)) {
            Some(k) => k,
            None if self.shared.len() < u8::MAX as usize => {
                self.shared.push(buf.clone());
                self.shared.len() - 1
            }
            None => return false,
        };
        self.view[self.count] = (k as u8 + 1, off as u32);
        self.lens[self.count] = len;
        self.count += 1;
        true
    }
    /// Copy viewed frames into their own buffers (truncated to a buffer),
    /// for code that changes frames in place.
    pub fn materialize(&mut self) {
        if self.shared.is_empty() {
            return;
        }
        for i in 0..self.count {
            let (k, off) = self.view[i];
            if k > 0 {
                let src = &self.shared[k as usize - 1][off as usize..off as usize + self.lens[i]];
                let n = src.len().min(self.bufs[i].len());
                self.bufs[i][..n].copy_from_slice(&src[..n]);
                self.lens[i] = n;
                self.view[i] = (0, 0);
            }
        }
        self.shared.clear();
    }
    /// Fill with the datagrams waiting on `fd` (recvmmsg, non-blocking).
    /// Returns true when a 0-byte datagram (vdeplug4's "disconnect") was
    /// among them; those are removed.
    pub fn recv_datagrams(&mut self, fd: RawFd) -> io::Result<bool> {
        self.clear();
        self.count = match crate::sys::recv_batch(fd, &mut self.bufs, &mut self.lens, None) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        let empty = self.lens[..self.count].contains(&0);
        if empty {
            self.compact_empty();
        }
        Ok(empty)
    }

    /// Remove 0-length entries (control datagrams), keeping order.
    pub fn compact_empty(&mut self) {
        self.materialize();
        let mut keep = 0;
        for i in 0..self.count {
            if self.lens[i] == 0 {
                self.skipped += 1;
                continue;
            }
            if keep != i {
                self.bufs.swap(keep, i);
                self.lens[keep] = self.lens[i];
            }
            keep += 1;
        }
        self.count = keep;
    }
    pub fn frame(&self, i: usize) -> &[u8] {
        match self.view[i] {
            (0, _) => &self.bufs[i][..self.lens[i]],
            (k, off) => &self.shared[k as usize - 1][off as usize..off as usize + self.lens[i]],
        }
    }
}
