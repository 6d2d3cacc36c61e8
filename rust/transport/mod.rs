//! Transports: one file per plugin, all behind the `Transport` trait. The
//! Python side parses URLs into typed parameters and calls the matching
//! `open` here; Rust never sees a raw URL.

use std::io;
use std::os::fd::RawFd;

use crate::wire::{self, ETH_BUFSIZE};

pub mod capture;
pub mod cmd;
pub mod flood;
pub mod gro;
pub mod nested;
pub mod netnode;
pub mod null;
pub mod overlay;
pub mod ptp;
pub mod ready;
pub mod seqpacket;
pub mod stream;
pub mod tap;
pub mod udp;
pub mod vde;
pub mod vlan;
pub mod vxlan;
pub mod vxvde;

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

/// A way to move Ethernet frames. Every method is non-blocking except `send`,
/// which may block where the C plugin blocks (flow control on streams and
/// point-to-point links); `recv` returns `WouldBlock` when nothing is ready.
pub trait Transport: Send {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv>;
    fn send(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// The fd to poll for readability.
    fn data_fd(&self) -> RawFd;
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
    /// Receive up to `batch.capacity()` frames. Default: repeated `recv`.
    /// Returns `Ok(false)` once the peer closed (frames already read are kept).
    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<bool> {
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
pub fn recv_each<T: Transport + ?Sized>(t: &mut T, batch: &mut Batch) -> io::Result<bool> {
    batch.clear();
    while batch.count < batch.capacity() {
        let i = batch.count;
        match t.recv(&mut batch.bufs[i]) {
            Ok(Recv::Frame(n)) => {
                batch.lens[i] = n;
                batch.count += 1;
            }
            Ok(Recv::Skip) => batch.skipped += 1,
            Ok(Recv::Closed) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if batch.skipped > batch.capacity() {
            break;
        }
    }
    Ok(true)
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

#[derive(Debug, Default)]
pub struct SendOutcome {
    pub sent: usize,
    pub dropped: usize,
    /// A hard error (the peer is gone): the caller decides whether it is fatal.
    pub error: Option<io::Error>,
}

impl SendOutcome {
    /// Nothing of `n` frames went out because of `e`.
    pub fn failed(n: usize, e: io::Error) -> Self {
        let error = if is_transient(&e) { None } else { Some(e) };
        SendOutcome { sent: 0, dropped: n, error }
    }
}

/// How long a datagram send waits for room at a full peer before the frame
/// is dropped. Bounded, so two plugs sending to each other cannot deadlock
/// (unix datagram queues hold only ~10 frames), yet a briefly busy peer
/// still gets backpressure instead of losses.
pub const SEND_PATIENCE_MS: i32 = 10;

static PATIENCE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(SEND_PATIENCE_MS);

/// Change the send patience (ms) of this process; 0 drops at once. A traffic
/// generator that must keep reading while it sends uses 0.
pub fn set_send_patience(ms: i32) {
    PATIENCE.store(ms.max(0), std::sync::atomic::Ordering::Relaxed);
}

pub fn send_patience() -> i32 {
    PATIENCE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Send one datagram on a connected unix socket opened with
/// `bound_sends`: one system call that waits for room at most
/// SEND_PATIENCE_MS (the socket's SO_SNDTIMEO), as vdeplug4's blocking send
/// but bounded; with patience 0, not at all.
pub fn send_bounded(fd: RawFd, frame: &[u8]) -> io::Result<usize> {
    if send_patience() == 0 {
        return crate::sys::send(fd, frame, libc::MSG_DONTWAIT);
    }
    crate::sys::send(fd, frame, 0)
}

/// Give a (blocking) socket the send timeout `send_bounded` relies on.
pub fn bound_sends(sock: &std::os::unix::net::UnixDatagram) -> io::Result<()> {
    sock.set_write_timeout(Some(std::time::Duration::from_millis(SEND_PATIENCE_MS as u64)))
}

/// Send one datagram on a connected socket without blocking for long.
pub fn send_patiently(fd: RawFd, frame: &[u8]) -> io::Result<usize> {
    match crate::sys::send(fd, frame, libc::MSG_DONTWAIT) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && crate::sys::poll_out(fd, send_patience())? => crate::sys::send(fd, frame, libc::MSG_DONTWAIT),
        r => r,
    }
}

type DestFn<'d> = &'d dyn Fn(usize) -> (*const libc::sockaddr_storage, libc::socklen_t);

/// The one batched datagram sender (udp, ptp, vde, vxlan, vxvde): frames
/// `0..n` (each `prefix` + `frame(i)`, to `dest(i)` or the connected peer)
/// go out with sendmmsg; with `gso`, consecutive equal-size frames to one
/// destination leave as a single UDP GSO send. A train the kernel refuses
/// (segment above the path MTU, no GSO here) is resent as single datagrams.
/// A full peer gets `patience_ms` (usually `send_patience()`), then the
/// rest is dropped.
#[allow(clippy::too_many_arguments)]
pub fn send_datagrams<'a>(
    fd: RawFd,
    prefix: &[u8],
    n: usize,
    frame: &dyn Fn(usize) -> &'a [u8],
    dest: Option<DestFn<'_>>,
    same_dest: &dyn Fn(usize, usize) -> bool,
    gso: &mut bool,
    patience_ms: i32,
) -> SendOutcome {
    use crate::sys::{plan_gso_runs, send_gso, GsoRun, GSO_MAX_SEGS, MAX_BATCH};
    let mut out = SendOutcome::default();
    let mut start = 0;
    while start < n {
        let chunk = (n - start).min(MAX_BATCH);
        let mut runs = [GsoRun::default(); MAX_BATCH];
        let max_segs = if *gso { GSO_MAX_SEGS } else { 1 };
        let nr = plan_gso_runs(chunk, prefix.len(), |i| frame(start + i).len(), |a, b| same_dest(start + a, start + b), &mut runs, max_segs);
        let at = |i: usize| frame(start + i);
        let dest_at = dest.map(|d| move |i: usize| d(start + i));
        let dest_ref = dest_at.as_ref().map(|d| d as &dyn Fn(usize) -> (*const libc::sockaddr_storage, libc::socklen_t));
        let mut done = 0;
        while done < nr {
            match send_gso(fd, prefix, &runs[done..nr], at, dest_ref) {
                Ok(0) => break,
                Ok(k) => {
                    out.sent += runs[done..done + k].iter().map(|r| r.count).sum::<usize>();
                    done += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if patience_ms == 0 || !crate::sys::poll_out(fd, patience_ms).unwrap_or(false) {
                        break;
                    }
                }
                Err(e) if runs[done].count > 1 && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EMSGSIZE | libc::EIO | libc::EOPNOTSUPP | libc::ENOPROTOOPT)) => {
                    if matches!(e.raw_os_error(), Some(libc::EIO | libc::EOPNOTSUPP | libc::ENOPROTOOPT)) {
                        *gso = false; // no GSO on this socket or path
                    }
                    let r = runs[done];
                    let first = start + r.first;
                    let sub_dest = dest.map(|d| move |i: usize| d(first + i));
                    let sub_ref = sub_dest.as_ref().map(|d| d as &dyn Fn(usize) -> (*const libc::sockaddr_storage, libc::socklen_t));
                    let sub = send_datagrams(fd, prefix, r.count, &|i| frame(first + i), sub_ref, &|_, _| true, &mut false, patience_ms);
                    out.sent += sub.sent;
                    out.dropped += sub.dropped;
                    if sub.error.is_some() {
                        out.error = sub.error;
                        return out;
                    }
                    done += 1;
                }
                Err(e) if is_transient(&e) => {
                    out.dropped += runs[done].count;
                    done += 1;
                }
                Err(e) => {
                    out.dropped += runs[done..nr].iter().map(|r| r.count).sum::<usize>();
                    out.error = Some(e);
                    return out;
                }
            }
        }
        out.dropped += runs[done..nr].iter().map(|r| r.count).sum::<usize>();
        start += chunk;
    }
    out
}

/// Batched send on a connected unix datagram socket (ptp, vde): no GSO.
pub fn send_connected(fd: RawFd, batch: &Batch, idx: &[usize]) -> SendOutcome {
    send_datagrams(fd, &[], idx.len(), &|i| batch.frame(idx[i]), None, &|_, _| true, &mut false, send_patience())
}

/// Errors after which the link is still usable: the frame is just dropped.
/// (EPERM: a unix datagram peer still bound to a previous partner, or a
/// firewall rule.)
pub fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOBUFS | libc::EMSGSIZE | libc::ECONNREFUSED | libc::ENOTCONN | libc::EDESTADDRREQ | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EINVAL | libc::EPERM)
        )
}

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

/// Per-endpoint counters, visible from Python.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    /// Received frames dropped as malformed (runt, oversized).
    pub drops_in: u64,
    /// Frames we could not send (queue full, peer unreachable, malformed).
    pub drops_out: u64,
}

/// vdeplug4 drops anything shorter than an Ethernet header; we also drop
/// anything larger than the largest frame (jumbo MTU + header + tag).
pub fn frame_ok(frame: &[u8]) -> bool {
    wire::ethernet::Frame::new_checked(frame).is_ok()
}

/// A transport with its counters and name: what Python holds and the
/// forwarding loop drives.
pub struct Endpoint {
    pub transport: Box<dyn Transport>,
    pub stats: Stats,
    pub name: String,
    last_tick: std::time::Instant,
}

/// How often `Transport::tick` runs while an endpoint is driven.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(200);

impl Endpoint {
    pub fn new(name: impl Into<String>, transport: Box<dyn Transport>) -> Self {
        Endpoint { transport, stats: Stats::default(), name: name.into(), last_tick: std::time::Instant::now() }
    }

    /// Run the transport's housekeeping if a `TICK` has passed since the last time.
    pub fn maybe_tick(&mut self) {
        if self.last_tick.elapsed() >= TICK {
            self.last_tick = std::time::Instant::now();
            self.transport.tick();
        }
    }

    /// The next valid frame's length, skipping what is not a frame for us
    /// (malformed frames are counted); `None` once the peer closed;
    /// `WouldBlock` when nothing is ready.
    pub fn recv_frame(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.transport.recv(buf)? {
                Recv::Frame(n) if frame_ok(&buf[..n]) => {
                    self.stats.frames_in += 1;
                    self.stats.bytes_in += n as u64;
                    return Ok(Some(n));
                }
                Recv::Frame(_) => self.stats.drops_in += 1,
                Recv::Skip => {}
                Recv::Closed => return Ok(None),
            }
        }
    }

    /// Receive a batch (`batch`), keep the valid frames' indices in `idx`,
    /// count everything. `Ok(false)` once the peer closed.
    pub fn recv_valid(&mut self, batch: &mut Batch, idx: &mut Vec<usize>) -> io::Result<bool> {
        let open = self.transport.recv_batch(batch)?;
        idx.clear();
        for i in 0..batch.count {
            let f = batch.frame(i);
            if frame_ok(f) {
                self.stats.frames_in += 1;
                self.stats.bytes_in += f.len() as u64;
                idx.push(i);
            } else {
                self.stats.drops_in += 1;
            }
        }
        Ok(open)
    }

    /// Send `batch[i]` for i in `idx` (already valid), counting what went
    /// out and what was dropped; returns the hard error, if one ended it.
    pub fn send_valid(&mut self, batch: &Batch, idx: &[usize]) -> Option<io::Error> {
        let out = self.transport.send_batch(batch, idx);
        self.stats.frames_out += out.sent as u64;
        self.stats.bytes_out += idx[..out.sent.min(idx.len())].iter().map(|&i| batch.lens[i] as u64).sum::<u64>();
        self.stats.drops_out += out.dropped as u64;
        out.error
    }

    /// Send one frame; a malformed frame is counted and dropped (returns 0).
    pub fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        if !frame_ok(frame) {
            self.stats.drops_out += 1;
            return Ok(0);
        }
        match self.transport.send(frame) {
            Ok(n) => {
                self.stats.frames_out += 1;
                self.stats.bytes_out += frame.len() as u64;
                Ok(n)
            }
            Err(e) if is_transient(&e) => {
                self.stats.drops_out += 1;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }
}

/// Current time in whole seconds (monotonic), for MAC table ages.
pub fn now_secs() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    // Offset so that "0" (never seen) is always older than any real time.
    START.get_or_init(Instant::now).elapsed().as_secs() + 1_000_000
}

/// An io::Error with a message, for setup failures.
pub fn err(kind: io::ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

/// An io::Error message with the errno it came from, so Python can raise
/// the right `OSError` subclass (FileNotFoundError, PermissionError...).
#[derive(Debug)]
pub struct Context {
    pub errno: Option<i32>,
    pub msg: String,
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Context {}

/// Prefix an io::Error with context, keeping its kind and errno.
pub fn ctx(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    let errno = e.raw_os_error().or_else(|| errno_of(&e));
    io::Error::new(e.kind(), Context { errno, msg: format!("{what}: {}", describe(&e)) })
}

/// An io::Error's message without std's " (os error N)" suffix.
pub fn describe(e: &io::Error) -> String {
    match e.get_ref().and_then(|r| r.downcast_ref::<Context>()) {
        Some(c) => c.msg.clone(),
        None => {
            let t = e.to_string();
            match t.rfind(" (os error ") {
                Some(i) => t[..i].to_string(),
                None => t,
            }
        }
    }
}

/// The errno behind an io::Error, looking through `Context`.
pub fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| e.get_ref().and_then(|r| r.downcast_ref::<Context>()).and_then(|c| c.errno))
}
