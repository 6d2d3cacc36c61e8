//! Transports: one file per plugin, all behind the `Transport` trait. The
//! Python side parses URLs into typed parameters and calls the matching
//! `open` here; Rust never sees a raw URL.

use std::io;
use std::os::fd::RawFd;

use crate::wire::{self, ETH_BUFSIZE};

mod batch;
mod endpoint;
mod error;
mod send;

pub use batch::{Batch, FrameRef, MAX_PREFIX};
pub use endpoint::{frame_ok, Endpoint, Stats, TICK};
pub use error::{ctx, describe, err, errno_of, Context};
pub use send::*;

pub mod agno;
pub mod capture;
pub mod cmd;
pub mod flood;
pub mod gro;
pub mod gso_runs;
pub mod macvtap;
pub mod nested;
pub mod netnode;
pub mod node_dir;
pub mod null;
pub mod overlay;
pub mod owner;
pub mod ptp;
pub mod read_limit;
pub mod ready;
pub mod replay;
pub mod restart;
pub mod seal;
pub mod seqpacket;
pub mod stream;
pub mod switch_core;
pub mod tap;
pub mod timerfd;
pub mod udp;
pub mod vde;
pub mod vlan;
pub mod vxlan;
pub mod vxvde;
pub mod wirefilter;
pub mod wirefilter_core;

/// Buffer size for one received frame: one byte more than the largest valid
/// frame, so an oversized datagram is seen as such instead of truncated.
pub const RECV_BUFSIZE: usize = ETH_BUFSIZE + 1;

/// Outcome of one non-blocking receive. "Nothing there" is `Err(WouldBlock)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// A frame of this many bytes is in the buffer (not yet validated).
    Frame(usize),
    /// Something was consumed that is not a frame for us (a control event,
    /// our own multicast echo, a packet for another VNI...).
    Skip,
    /// The peer went away; the transport cannot carry more frames.
    Closed,
}

/// Whether a link still carries frames after a batched receive (the
/// batch counterpart of `Recv::Closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Open,
    /// The peer went away (frames already read are kept).
    Closed,
}

/// A way to move Ethernet frames. Every method is non-blocking except `send`,
/// which may block where the C plugin blocks (flow control on streams and
/// point-to-point links); `recv` returns `WouldBlock` when nothing is ready.
pub trait Transport: Send {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv>;
    fn send(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// The fd to poll for readability.
    fn data_fd(&self) -> RawFd;
    /// The fds whose readiness `data_fd` sums up, for a poller that watches
    /// them itself (the forwarding loop: every wake-up then crosses one
    /// epoll, not two). Readable while any is, exactly as `data_fd`.
    /// Default: `data_fd` alone.
    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        out.push(self.data_fd());
    }
    /// An fd that becomes readable (EOF) when the peer hangs up, if any.
    fn ctl_fd(&self) -> Option<RawFd> {
        None
    }
    /// Transport-specific counters (name, value), merged into `stats`.
    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Called every few hundred ms by whoever drives the transport (the
    /// forwarding loop, a waiting `recv`): time-based housekeeping.
    fn tick(&mut self) {}
    /// For transports that run a command: its exit code once it ended.
    fn exit_status(&mut self) -> Option<i32> {
        None
    }
    /// A run-time console command (wirefilter's `delay 20`): the answer,
    /// or None when this transport takes none.
    fn command(&mut self, _line: &str) -> Option<String> {
        None
    }
    /// The bytes `send_batch` puts in front of every frame (a VXLAN header;
    /// none for plain datagrams). A receiver that cuts frames itself lays
    /// them out back to back behind a copy of these (`Batch::prefix`), so
    /// a run goes to the kernel as one buffer.
    fn frame_prefix(&self) -> &[u8] {
        &[]
    }
    /// Learn nothing from received frames (MAC locations, members) until
    /// `authentic` vouches for each: asked by a wrapper that authenticates
    /// frames (seal://), so a forged frame teaches nothing. Default: nothing
    /// to learn.
    fn defer_learning(&mut self) {}
    /// Frame `i` of the last `recv_batch` (0 after `recv`) proved authentic.
    fn authentic(&mut self, _i: usize) {}
    /// Receive up to `batch.capacity()` frames. Default: repeated `recv`.
    /// Returns `Link::Closed` once the peer closed (frames already read are kept).
    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        recv_each(self, batch)
    }
    /// Send frames `batch[i]` for i in `idx`. Default: repeated `send`.
    /// Returns how many were sent; failures are counted by the caller.
    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        send_each(self, batch, idx)
    }
}

/// `recv_batch` frame by frame, with `recv` (the trait's default; also for
/// transports whose batched path does not apply at the moment).
pub fn recv_each<T: Transport + ?Sized>(t: &mut T, batch: &mut Batch) -> io::Result<Link> {
    recv_upto(t, batch, usize::MAX).map(|(link, _, _)| link)
}

/// `recv_each` with at most `max` calls of `recv` (EINTR not counted):
/// the link, the calls made, and whether the last found nothing.
pub fn recv_upto<T: Transport + ?Sized>(t: &mut T, batch: &mut Batch, max: usize) -> io::Result<(Link, usize, bool)> {
    batch.clear();
    let mut calls = 0;
    while !batch.done() && calls < max {
        let i = batch.count;
        calls += 1;
        match t.recv(&mut batch.bufs[i]) {
            Ok(Recv::Frame(n)) => {
                batch.lens[i] = n;
                batch.count += 1;
            }
            Ok(Recv::Skip) => batch.skipped += 1,
            Ok(Recv::Closed) => return Ok((Link::Closed, calls, false)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((Link::Open, calls, true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => calls -= 1,
            Err(e) => return Err(e),
        }
    }
    Ok((Link::Open, calls, false))
}

/// `send_batch` frame by frame, with `send` (the trait's default).
pub fn send_each<T: Transport + ?Sized>(t: &mut T, batch: &Batch, idx: &[usize]) -> SendOutcome {
    let mut out = SendOutcome::default();
    for &i in idx {
        match t.send(batch.frame(i)) {
            Ok(_) => out.sent += 1,
            Err(e) if is_transient(&e) => out.dropped += 1,
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out
}

/// Current time in whole seconds (monotonic), for MAC table ages.
pub fn now_secs() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    // Offset so that "0" (never seen) is always older than any real time.
    START.get_or_init(Instant::now).elapsed().as_secs() + 1_000_000
}
