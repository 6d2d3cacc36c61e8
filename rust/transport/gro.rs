//! Receiving UDP with UDP_GRO: a sender's GSO train (up to 64 equal-size
//! datagrams) arrives as one buffer instead of being cut into 64 socket
//! buffers by the kernel. `GroRx` holds what one recvmmsg brought and hands
//! it out datagram by datagram, across as many batches as it takes (the
//! transport keeps its data fd readable meanwhile, see ready.rs).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use super::batch::BufPool;
use super::read_limit::ReadLimit;
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
    /// Messages the next recvmmsg asks for (1..=64, see `ReadLimit`): a
    /// lone datagram at a low rate costs a recvmsg, 0.5 µs less than a
    /// recvmmsg of 4 here, and a burst grows it within a few calls.
    limit: ReadLimit,
    /// The last recvmmsg brought fewer messages than it asked for (the
    /// socket was empty then), or the one it asked for: `next` answers
    /// None once without a system call (the caller's level-triggered poll
    /// reports anything newer or left).
    drained: bool,
}

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
            limit: ReadLimit::new(),
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
            let want = self.limit.start(Instant::now(), MAX_BATCH);
            self.got = match sys::recv_batch_gro(fd, data, GRO_BUF, want, &mut self.meta, &mut self.seg, pktinfo) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.limit.end(1, true);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let short = self.got < want;
            self.limit.end(if short { self.got + 1 } else { self.got }, short);
            // A lone datagram asked for and got ends the round too: another
            // call would mostly find the socket empty.
            self.drained = short || want == 1;
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
    fn a_lone_read_ends_the_round_and_costs_no_second_call() {
        let (rx, tx, mut g) = pair();
        let fd = rx.as_raw_fd();
        tx.send(&[1; 60]).unwrap();
        assert_eq!(g.next(fd, false).unwrap().map(|(a, b, _)| b - a), Some(60));
        // One asked for and one came: the round ends there. A datagram
        // arriving now waits for the next round (its fd stays readable).
        tx.send(&[2; 61]).unwrap();
        assert!(g.next(fd, false).unwrap().is_none(), "no second call in the round");
        assert_eq!(g.next(fd, false).unwrap().map(|(a, b, _)| b - a), Some(61), "the next round reads it");
        assert!(g.next(fd, false).unwrap().is_none());
        assert!(g.next(fd, false).unwrap().is_none(), "EAGAIN");
    }

    #[test]
    fn a_burst_is_read_in_growing_calls_and_a_lone_datagram_in_one() {
        let (rx, tx, mut g) = pair();
        let fd = rx.as_raw_fd();
        for i in 0..40u8 {
            tx.send(&[i; 60]).unwrap();
        }
        // A first round of one (nothing says more are queued), then rounds
        // that ask for more (how many depends on how soon they follow:
        // read_limit.rs); every datagram once, in order.
        let mut rounds = vec![];
        let mut seen = vec![];
        while seen.len() < 40 && rounds.len() < 100 {
            let mut n = 0;
            while let Some((a, _, _)) = g.next(fd, false).unwrap() {
                seen.push(g.arena()[a]);
                n += 1;
            }
            rounds.push(n);
        }
        assert_eq!(rounds[0], 1, "{rounds:?}");
        assert_eq!(seen, (0..40).collect::<Vec<u8>>());
        assert!(g.next(fd, false).unwrap().is_none(), "empty");
        // After the burst, a lone datagram is again one call, one round.
        tx.send(&[9; 60]).unwrap();
        tx.send(&[10; 60]).unwrap();
        assert_eq!(drain(&mut g, fd), 1, "the call asked for what the last one found (none): one");
        assert_eq!(drain(&mut g, fd), 1);
    }
}
