//! Receiving UDP with UDP_GRO: a sender's GSO train (up to 64 equal-size
//! datagrams) arrives as one buffer instead of being cut into 64 socket
//! buffers by the kernel. `GroRx` holds what one recvmmsg brought and hands
//! it out datagram by datagram, across as many batches as it takes (the
//! transport keeps its data fd readable meanwhile, see ready.rs).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use super::batch::BufPool;
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

pub fn default_rcvbuf(s: socket2::SockRef<'_>) {
    if sys::set_rcvbuf_force(s.as_raw_fd(), DEFAULT_RCVBUF).is_err() {
        let _ = s.set_recv_buffer_size(DEFAULT_RCVBUF);
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
    pool: BufPool,
    meta: [Meta; MAX_BATCH],
    /// Each message's source, decoded once for all its datagrams.
    from: [Option<SocketAddr>; MAX_BATCH],
    seg: [usize; MAX_BATCH],
    got: usize,
    msg: usize,
    off: usize,
    /// Messages the next recvmmsg asks for: twice what the last one
    /// brought, 4..=64. Each one asked for costs a header built and
    /// checked, so a lone datagram at a low rate costs a small call and a
    /// burst grows it within a few calls.
    want: usize,
    /// The last recvmmsg brought fewer messages than it asked for: the
    /// socket was empty then. `next` answers None once without a system
    /// call (the caller's level-triggered poll reports anything newer).
    drained: bool,
}

/// Fewest messages one GRO recvmmsg asks for.
const MIN_WANT: usize = 4;

impl GroRx {
    pub fn new() -> Box<GroRx> {
        Box::new(GroRx {
            pool: BufPool::new(GRO_BUF * MAX_BATCH, MAX_ARENAS),
            meta: [Meta::default(); MAX_BATCH],
            from: [None; MAX_BATCH],
            seg: [0; MAX_BATCH],
            got: 0,
            msg: 0,
            off: 0,
            want: MIN_WANT,
            drained: false,
        })
    }

    /// The buffer the ranges `next` returns are in.
    pub fn arena(&self) -> &Arc<Box<[u8]>> {
        self.pool.current()
    }

    /// Datagrams received and not handed out yet.
    pub fn queued(&self) -> bool {
        self.msg < self.got
    }

    /// Metadata of message `msg` (as `next` returned it) and its source.
    pub fn meta(&self, msg: usize) -> (&Meta, Option<SocketAddr>) {
        (&self.meta[msg], self.from[msg])
    }

    /// The next datagram: its range in `arena()` and the index of its
    /// message for `meta`; refilled with one recvmmsg when empty. None:
    /// nothing ready (or every buffer still viewed by a batch: try again
    /// once it is sent), or, once, the last recvmmsg found the socket
    /// empty.
    pub fn next(&mut self, fd: RawFd, pktinfo: bool) -> io::Result<Option<(usize, usize, usize)>> {
        if self.msg >= self.got {
            if std::mem::take(&mut self.drained) {
                return Ok(None);
            }
            self.got = 0;
            self.msg = 0;
            self.off = 0;
            // A buffer no batch views any more, else a new one (bounded).
            if !self.pool.pick_free() {
                return Ok(None);
            }
            let Some(data) = self.pool.current_mut() else { return Ok(None) };
            self.got = match sys::recv_batch_gro(fd, data, GRO_BUF, self.want, &mut self.meta, &mut self.seg, pktinfo) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            self.drained = self.got < self.want;
            self.want = (self.got * 2).clamp(MIN_WANT, MAX_BATCH);
            if self.got == 0 {
                return Ok(None);
            }
            for (f, m) in self.from.iter_mut().zip(&self.meta[..self.got]) {
                *f = sys::sockaddr_to_std(&m.from);
            }
        }
        let idx = self.msg;
        let len = self.meta[idx].len.min(GRO_BUF);
        let seg = if self.seg[idx] > 0 { self.seg[idx] } else { len.max(1) };
        let (a, b) = (self.off, (self.off + seg).min(len));
        self.off = b;
        if self.off >= len {
            self.msg += 1;
            self.off = 0;
        }
        Ok(Some((idx * GRO_BUF + a, idx * GRO_BUF + b, idx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn pair() -> (UdpSocket, UdpSocket, Box<GroRx>) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let g = enable(rx.as_raw_fd()).expect("UDP_GRO");
        (rx, tx, g)
    }

    /// Datagrams handed out until `next` says None.
    fn drain(g: &mut GroRx, fd: RawFd) -> usize {
        let mut n = 0;
        while g.next(fd, false).unwrap().is_some() {
            n += 1;
        }
        n
    }

    #[test]
    fn a_short_read_means_empty_and_costs_no_second_call() {
        let (rx, tx, mut g) = pair();
        let fd = rx.as_raw_fd();
        tx.send(&[1; 60]).unwrap();
        assert_eq!(g.next(fd, false).unwrap().map(|(a, b, _)| b - a), Some(60));
        // One asked for more than came: the socket was empty. A datagram
        // arriving now waits for the next round (its fd stays readable).
        tx.send(&[2; 61]).unwrap();
        assert!(g.next(fd, false).unwrap().is_none(), "no second recvmmsg in the round");
        assert_eq!(g.next(fd, false).unwrap().map(|(a, b, _)| b - a), Some(61), "the next round reads it");
        assert!(g.next(fd, false).unwrap().is_none());
        assert!(g.next(fd, false).unwrap().is_none(), "EAGAIN");
    }

    #[test]
    fn the_call_grows_with_a_burst_and_shrinks_when_idle() {
        let (rx, tx, mut g) = pair();
        let fd = rx.as_raw_fd();
        assert_eq!(g.want, MIN_WANT);
        for i in 0..40u8 {
            tx.send(&[i; 60]).unwrap();
        }
        // 4, then 8, then 16, then 12 of 32: drained.
        assert_eq!(drain(&mut g, fd), 40);
        assert_eq!(g.want, 24);
        assert!(g.next(fd, false).unwrap().is_none());
        tx.send(&[9; 60]).unwrap();
        assert_eq!(drain(&mut g, fd), 1);
        assert_eq!(g.want, MIN_WANT, "a lone datagram: back to the smallest call");
    }
}
