//! Receiving UDP with UDP_GRO: a sender's GSO train (up to 64 equal-size
//! datagrams) arrives as one buffer instead of being cut into 64 socket
//! buffers by the kernel. `GroRx` holds what one recvmmsg brought and hands
//! it out datagram by datagram, across as many batches as it takes (the
//! transport keeps its data fd readable meanwhile, see ready.rs).

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::sys::{self, Meta, MAX_BATCH};

/// Enable UDP_GRO on `fd`; the receive state when the kernel has it.
pub fn enable(fd: RawFd) -> Option<Box<GroRx>> {
    sys::set_udp_gro(fd).ok().map(|()| GroRx::new())
}

/// Receive buffer for datagram sockets of the data plane when the user set
/// none: room for a few dozen 64-frame GSO trains, so a burst from a TSO
/// sender is not dropped while we are busy (the kernel default, ~200 KB,
/// holds two). Above net.core.rmem_max only with CAP_NET_ADMIN; else the
/// most allowed.
pub const DEFAULT_RCVBUF: usize = 4 << 20;

pub fn default_rcvbuf(fd: RawFd) {
    if sys::set_rcvbuf_force(fd, DEFAULT_RCVBUF).is_err() {
        let _ = sys::set_rcvbuf(fd, DEFAULT_RCVBUF);
    }
}

/// Room for one UDP_GRO message: a train is at most one 64 KB IP packet.
const GRO_BUF: usize = 65_536;
/// Receive buffers one socket may have in flight: the one being handed
/// out, and one still viewed by a batch that is not sent yet.
const MAX_ARENAS: usize = 3;

/// Datagrams received with UDP_GRO and not handed out yet: one recvmmsg may
/// bring more frames than a batch takes. Frames are handed out as views
/// (`Batch::push_view`) into a shared buffer; a buffer is received into
/// again only when no batch views it any more. Buffers are allocated once
/// and only touched as trains arrive (the kernel maps zero pages lazily).
pub struct GroRx {
    arenas: Vec<Arc<Box<[u8]>>>,
    cur: usize,
    meta: [Meta; MAX_BATCH],
    seg: [usize; MAX_BATCH],
    got: usize,
    msg: usize,
    off: usize,
}

impl GroRx {
    pub fn new() -> Box<GroRx> {
        Box::new(GroRx { arenas: vec![arena()], cur: 0, meta: [Meta::default(); MAX_BATCH], seg: [0; MAX_BATCH], got: 0, msg: 0, off: 0 })
    }

    /// The buffer the ranges `next` returns are in.
    pub fn arena(&self) -> &Arc<Box<[u8]>> {
        &self.arenas[self.cur]
    }

    /// Datagrams received and not handed out yet.
    pub fn queued(&self) -> bool {
        self.msg < self.got
    }

    /// The next datagram: its range in `arena()` and its metadata;
    /// refilled with one recvmmsg when empty. None: nothing ready (or every
    /// buffer still viewed by a batch: try again once it is sent).
    pub fn next(&mut self, fd: RawFd, pktinfo: bool) -> io::Result<Option<(usize, usize, Meta)>> {
        if self.msg >= self.got {
            self.got = 0;
            self.msg = 0;
            self.off = 0;
            // A buffer no batch views any more, else a new one (bounded).
            let free = (0..self.arenas.len()).map(|k| (self.cur + k) % self.arenas.len()).find(|&k| Arc::strong_count(&self.arenas[k]) == 1);
            self.cur = match free {
                Some(k) => k,
                None if self.arenas.len() < MAX_ARENAS => {
                    self.arenas.push(arena());
                    self.arenas.len() - 1
                }
                None => return Ok(None),
            };
            let Some(data) = Arc::get_mut(&mut self.arenas[self.cur]) else { return Ok(None) };
            let mut chunks = data.chunks_mut(GRO_BUF);
            let mut bufs: [&mut [u8]; MAX_BATCH] = std::array::from_fn(|_| chunks.next().unwrap_or_default());
            self.got = match sys::recv_batch_gro(fd, &mut bufs, &mut self.meta, &mut self.seg, pktinfo) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            if self.got == 0 {
                return Ok(None);
            }
        }
        let idx = self.msg;
        let m = self.meta[idx];
        let len = m.len.min(GRO_BUF);
        let seg = if self.seg[idx] > 0 { self.seg[idx] } else { len.max(1) };
        let (a, b) = (self.off, (self.off + seg).min(len));
        self.off = b;
        if self.off >= len {
            self.msg += 1;
            self.off = 0;
        }
        Ok(Some((idx * GRO_BUF + a, idx * GRO_BUF + b, m)))
    }
}

fn arena() -> Arc<Box<[u8]>> {
    Arc::new(vec![0u8; GRO_BUF * MAX_BATCH].into_boxed_slice())
}
