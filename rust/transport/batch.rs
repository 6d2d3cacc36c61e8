//! `Batch`: the frame buffers one wakeup of the forwarding loop moves.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

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
    shared: Vec<Arc<Box<[u8]>>>,
    /// What the destination of these frames sends in front of every frame
    /// (`Transport::frame_prefix`): a receiver that lays frames out with
    /// these bytes in front lets it send a run of them as one buffer.
    prefix: ([u8; MAX_PREFIX], u8),
}

/// Longest `Transport::frame_prefix` (a VXLAN header is 8).
pub const MAX_PREFIX: usize = 16;

/// A frame and the bytes in front of it in its buffer.
#[derive(Clone, Copy)]
pub struct FrameRef<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> FrameRef<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        &self.buf[self.at..]
    }
    pub fn len(&self) -> usize {
        self.buf.len() - self.at
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `prefix` + the frame as one slice, when the bytes in front of it are `prefix`.
    pub fn prefixed(&self, prefix: &[u8]) -> Option<&'a [u8]> {
        let start = self.at.checked_sub(prefix.len())?;
        (self.buf[start..self.at] == *prefix).then(|| &self.buf[start..])
    }
}

impl<'a> From<&'a [u8]> for FrameRef<'a> {
    fn from(buf: &'a [u8]) -> Self {
        FrameRef { buf, at: 0 }
    }
}

impl Batch {
    pub fn new(capacity: usize) -> Self {
        Batch {
            bufs: (0..capacity).map(|_| vec![0u8; RECV_BUFSIZE].into_boxed_slice()).collect(),
            lens: vec![0; capacity],
            count: 0,
            skipped: 0,
            view: vec![(0, 0); capacity],
            shared: Vec::new(),
            prefix: ([0; MAX_PREFIX], 0),
        }
    }
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }
    /// A receiver filling this batch stops here: it is full, or as many
    /// non-frames (garbage, echoes, control events) were consumed as it
    /// holds frames. A source of endless garbage then costs one bounded
    /// batch per wakeup, never the loop's signals or its other side.
    pub fn done(&self) -> bool {
        self.count >= self.capacity() || self.skipped >= self.capacity()
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
    pub fn push_view(&mut self, buf: &Arc<Box<[u8]>>, off: usize, len: usize) -> bool {
        if self.count >= self.capacity() {
            return false;
        }
        self.lens[self.count] = len;
        self.count += 1;
        if !self.set_view(self.count - 1, buf, off) {
            self.count -= 1;
            return false;
        }
        true
    }
    /// Make frame `i` (< `count`, its length in `lens[i]`) the view
    /// `buf[off..off + lens[i]]`: for receivers that fill a buffer first and
    /// hand it out after. False (nothing changed) as `push_view`.
    pub fn set_view(&mut self, i: usize, buf: &Arc<Box<[u8]>>, off: usize) -> bool {
        if i >= self.count || off + self.lens[i] > buf.len() {
            return false;
        }
        let k = match self.shared.iter().position(|b| Arc::ptr_eq(b, buf)) {
            Some(k) => k,
            None if self.shared.len() < u8::MAX as usize => {
                self.shared.push(buf.clone());
                self.shared.len() - 1
            }
            None => return false,
        };
        self.view[i] = (k as u8 + 1, off as u32);
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
    /// Set what the frames' destination sends in front of each (at most
    /// `MAX_PREFIX` bytes; longer ones are not recorded).
    pub fn set_prefix(&mut self, prefix: &[u8]) {
        if prefix.len() <= MAX_PREFIX {
            self.prefix.0[..prefix.len()].copy_from_slice(prefix);
            self.prefix.1 = prefix.len() as u8;
        } else {
            self.prefix.1 = 0;
        }
    }
    pub fn prefix(&self) -> &[u8] {
        &self.prefix.0[..self.prefix.1 as usize]
    }
    /// Frame i with what precedes it in its buffer (a view: up to
    /// `MAX_PREFIX` bytes of its shared buffer; an own buffer: nothing).
    pub fn frame_ref(&self, i: usize) -> FrameRef<'_> {
        match self.view[i] {
            (0, _) => FrameRef { buf: &self.bufs[i][..self.lens[i]], at: 0 },
            (k, off) => {
                let (off, room) = (off as usize, (off as usize).min(MAX_PREFIX));
                FrameRef { buf: &self.shared[k as usize - 1][off - room..off + self.lens[i]], at: room }
            }
        }
    }
    pub fn frame(&self, i: usize) -> &[u8] {
        self.frame_ref(i).bytes()
    }
}

/// Receive buffers whose frames are handed out as views
/// (`Batch::push_view`, `Batch::set_view`): a buffer is written again only
/// when no batch views it any more. At most `max` buffers of `size` bytes,
/// each allocated on first need (the kernel maps its pages as they are
/// touched).
pub struct BufPool {
    bufs: Vec<Arc<Box<[u8]>>>,
    size: usize,
    max: usize,
    cur: usize,
}

impl BufPool {
    pub fn new(size: usize, max: usize) -> BufPool {
        BufPool { bufs: vec![Arc::new(vec![0u8; size].into_boxed_slice())], size, max: max.max(1), cur: 0 }
    }
    /// Make a buffer no batch views the current one: the current one when
    /// it is free (its memory is still in the cache), else the next free
    /// one, else a new one; false when every buffer is viewed and the pool
    /// is full.
    pub fn pick_free(&mut self) -> bool {
        let n = self.bufs.len();
        match (0..n).map(|k| (self.cur + k) % n).find(|&k| Arc::strong_count(&self.bufs[k]) == 1) {
            Some(k) => self.cur = k,
            None if n < self.max => {
                self.bufs.push(Arc::new(vec![0u8; self.size].into_boxed_slice()));
                self.cur = n;
            }
            None => return false,
        }
        true
    }
    /// The current buffer, to fill; None while a batch still views it.
    pub fn current_mut(&mut self) -> Option<&mut [u8]> {
        Arc::get_mut(&mut self.bufs[self.cur]).map(|b| &mut b[..])
    }
    /// The current buffer, to hand out views of.
    pub fn current(&self) -> &Arc<Box<[u8]>> {
        &self.bufs[self.cur]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_behind_the_prefix_comes_with_it() {
        let mut pool = BufPool::new(64, 2);
        assert!(pool.pick_free());
        let buf = pool.current_mut().unwrap();
        buf[..4].copy_from_slice(b"HDR:");
        buf[4..10].copy_from_slice(b"frame1");
        buf[10..14].copy_from_slice(b"HDX:");
        buf[14..20].copy_from_slice(b"frame2");
        let mut b = Batch::new(4);
        b.bufs[0][..5].copy_from_slice(b"owned");
        b.lens[0] = 5;
        b.count = 1;
        assert!(b.push_view(pool.current(), 4, 6));
        b.lens[2] = 6;
        b.count = 3;
        assert!(b.set_view(2, pool.current(), 14));
        assert_eq!((b.frame(1), b.frame(2)), (&b"frame1"[..], &b"frame2"[..]));
        assert_eq!(b.frame_ref(1).prefixed(b"HDR:"), Some(&b"HDR:frame1"[..]));
        assert_eq!(b.frame_ref(2).prefixed(b"HDR:"), None, "other bytes in front");
        assert_eq!(b.frame_ref(0).prefixed(b"HDR:"), None, "an own buffer has nothing in front");
        assert_eq!(b.frame_ref(0).prefixed(b""), Some(&b"owned"[..]));
        assert_eq!(b.frame_ref(1).prefixed(b"LONGER-THAN-4"), None);
        assert!(!b.set_view(3, pool.current(), 0), "beyond count");
        assert!(!b.push_view(pool.current(), 60, 10), "beyond the buffer");
        // Viewed: a writer must take another buffer; once the batch lets go, the same one again.
        assert!(pool.current_mut().is_none());
        assert!(pool.pick_free());
        assert!(pool.current_mut().is_some());
        let second = Arc::as_ptr(pool.current());
        assert!(b.push_view(pool.current(), 0, 4));
        assert!(!pool.pick_free(), "both viewed and the pool is full");
        b.clear();
        assert!(pool.pick_free());
        assert_eq!(Arc::as_ptr(pool.current()), second, "the current buffer is reused while free");
    }

    #[test]
    fn prefixes_longer_than_max_are_not_recorded() {
        let mut b = Batch::new(1);
        b.set_prefix(&[1; 8]);
        assert_eq!(b.prefix(), &[1; 8]);
        b.set_prefix(&[2; MAX_PREFIX + 1]);
        assert_eq!(b.prefix(), &[] as &[u8]);
    }
}
