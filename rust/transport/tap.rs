//! tap://name — a Linux tap device (IFF_TAP | IFF_NO_PI): frames as the
//! kernel sees them. The device is created if it does not exist (needs
//! CAP_NET_ADMIN) and disappears when closed unless it was made persistent.
//!
//! Offloads (on unless VDEPLUG_TAP_OFFLOAD=0): the tap is opened with a
//! virtio-net header and told we take partial checksums and TCP/UDP
//! super-frames (TUNSETOFFLOAD), so the kernel's TCP hands us 64 KB at a
//! time. We cut those into MTU-sized frames (offload::segment) and, the
//! other way, join in-order segments of one TCP flow into super-frames
//! (offload::coalesce): the network still sees one ≤ MTU frame per
//! datagram. A kernel that refuses offloads gets plain frames.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::batch::BufPool;
use super::ready::ReadyFd;
use super::{ctx, Batch, Link, Recv, SendOutcome, Transport, MAX_PREFIX, RECV_BUFSIZE};
use crate::offload::{coalesce, segment};
use crate::sys;
use crate::wire::virtio_net::{self as vnet, Header};

pub struct Tap {
    fd: OwnedFd,
    pub name: String,
    off: Option<Box<Offload>>,
    reads: ReadLimit,
}

/// How many reads one `recv_batch` makes (issue 30). A tap cannot say it
/// is drained, so reading until EAGAIN costs a failed read per wake-up: at
/// a low rate, one per frame. The last call predicts this one: when it ran
/// dry after k reads, k (at least 1); when it used its whole allowance and
/// we are back soon (within `BACK`: the fd stayed readable), twice as many,
/// up to the batch. Stopping early loses nothing: the fd stays readable and
/// the callers' polls are level-triggered.
#[derive(Debug, Clone, Copy)]
struct ReadLimit {
    want: usize,
    /// When the current (or last) call started.
    started: Option<Instant>,
    /// The last call used its whole allowance.
    full: bool,
}

impl ReadLimit {
    const BACK: Duration = Duration::from_micros(500);

    fn new() -> ReadLimit {
        ReadLimit { want: 1, started: None, full: false }
    }

    /// Reads allowed for a call starting at `now`, at most `max`.
    fn start(&mut self, now: Instant, max: usize) -> usize {
        let back = self.started.is_some_and(|t| now.saturating_duration_since(t) < ReadLimit::BACK);
        if std::mem::take(&mut self.full) && back {
            self.want = self.want.saturating_mul(2);
        }
        self.started = Some(now);
        self.want = self.want.clamp(1, max.max(1));
        self.want
    }

    /// The call made `reads` reads; `dry`: the last one found nothing (so
    /// `reads - 1` brought something).
    fn end(&mut self, reads: usize, dry: bool) {
        if dry {
            self.want = reads.saturating_sub(1).max(1);
        } else {
            self.full = reads >= self.want;
        }
    }
}

/// Bytes a read may bring: the virtio-net header and a 64 KB IP packet
/// behind Ethernet and one VLAN tag.
const SUPER_MAX: usize = vnet::LEN + 18 + 65_535;
/// Coalesced segments per write (and segments one super-frame may hold in
/// a batch before the rest waits for the next call).
const MAX_SEGS: usize = 64;
const NO_OFFLOAD: [u8; vnet::LEN] = [0; vnet::LEN];
/// Segments of one batch are cut into a shared buffer of this size (about
/// four 64 KB super-frames with 1500-byte segments), at most 3 in flight.
const CUT_BUF: usize = 256 << 10;

/// Offload state: the super-frame being segmented, scratch, counters.
struct Offload {
    ready: ReadyFd,
    /// What the last read brought, when it did not fit a batch slot: the
    /// frame starts at `RECV_BUFSIZE` - its head is copied in front.
    rd: Box<[u8]>,
    /// The super-frame being cut (rd[start..end]) and how far.
    seg: Option<(segment::Segmenter, usize, usize)>,
    runs: Vec<(usize, usize)>,
    /// Segments are cut back to back into these, each behind the
    /// destination's prefix (`Batch::prefix`), so a UDP sender can send a
    /// run of them as one buffer.
    cut: BufPool,
    /// (batch index, offset in the cut buffer) of this batch's segments.
    views: Vec<(usize, usize)>,
    hdr: [u8; 256],
    stats: OffloadStats,
}

#[derive(Debug, Default, Clone, Copy)]
struct OffloadStats {
    superframes_in: u64,
    segments_in: u64,
    superframes_out: u64,
    coalesced_out: u64,
    offload_errors: u64,
}

/// Offloads wanted (VDEPLUG_TAP_OFFLOAD is not "0"): open with a virtio-net header.
pub fn offload_wanted() -> bool {
    std::env::var("VDEPLUG_TAP_OFFLOAD").map_or(true, |v| v != "0")
}

pub fn open(name: &str) -> io::Result<Tap> {
    let want = offload_wanted();
    let (fd, name) = sys::open_tap(name, want).map_err(|e| ctx(explain(e, name), format!("tap://{name}")))?;
    with_fd(fd, name, want)
}

/// A tap (or macvtap) fd already set up, with a virtio-net header when
/// `vnet_hdr`: offloads are negotiated as for tap://.
pub fn with_fd(fd: OwnedFd, name: String, vnet_hdr: bool) -> io::Result<Tap> {
    let want = vnet_hdr;
    if !want {
        return Ok(Tap { fd, name, off: None, reads: ReadLimit::new() });
    }
    // We finish partial checksums and take TCP (v4/v6, with ECN) and UDP
    // (v4/v6) super-frames.
    let all = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // USO needs Linux 6.2; without it, TCP offloads alone; without those, none.
    let ok = [all | libc::TUN_F_USO4 | libc::TUN_F_USO6, all, 0].into_iter().any(|f| sys::tap_set_offload(fd.as_raw_fd(), f).is_ok());
    if !ok {
        return Err(ctx(io::Error::last_os_error(), format!("{name}: TUNSETOFFLOAD")));
    }
    let off = Offload {
        ready: ReadyFd::new(&[fd.as_raw_fd()])?,
        rd: vec![0u8; RECV_BUFSIZE + SUPER_MAX].into_boxed_slice(),
        seg: None,
        runs: Vec::with_capacity(MAX_SEGS),
        cut: BufPool::new(CUT_BUF, 3),
        views: Vec::with_capacity(crate::fwd::FORWARD_BATCH),
        hdr: [0; 256],
        stats: OffloadStats::default(),
    };
    Ok(Tap { fd, name, off: Some(Box::new(off)), reads: ReadLimit::new() })
}

/// A failed tap open, with what to do about it: the device file itself
/// refused, or NAME taken by an interface that is not a tap.
fn explain(e: io::Error, name: &str) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::ENOENT | libc::ENXIO | libc::ENODEV) => match std::fs::OpenOptions::new().read(true).write(true).open(TUN) {
            Err(d) if d.kind() == io::ErrorKind::NotFound => format!("no {TUN}: load the tun module (`modprobe tun`); in a container, pass the device in"),
            Err(d) if d.kind() == io::ErrorKind::PermissionDenied => {
                format!("cannot open {TUN} (Permission denied): most distributions make it mode 0666 (as root: `chmod 0666 {TUN}`); tap:// then needs CAP_NET_ADMIN or an interface made for your user (`ip tuntap add NAME mode tap user $USER`)")
            }
            _ => return e,
        },
        Some(libc::EINVAL) if !name.is_empty() && std::path::Path::new("/sys/class/net").join(name).exists() => {
            let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/tun_flags")).ok().map(|f| i64::from_str_radix(f.trim().trim_start_matches("0x"), 16).unwrap_or(0));
            let kind = match flags {
                None => "an interface that is not a tap",
                Some(f) if f & i64::from(libc::IFF_TUN) != 0 => "a tun (layer 3) interface, not a tap",
                Some(f) if f & i64::from(libc::IFF_MULTI_QUEUE) != 0 => "a multi-queue tap (tap:// opens one queue)",
                Some(_) => return e,
            };
            format!("{name} exists and is {kind}: choose another name, or remove it (`ip link del {name}`)")
        }
        Some(libc::EBUSY) => format!("{name} is a tap another process holds open (a tap has one reader): stop it, or choose another name"),
        _ => return e,
    };
    io::Error::new(e.kind(), why)
}

const TUN: &str = "/dev/net/tun";

/// EIO while the interface is down: a transient drop, as for a cable unplugged.
fn down_is_transient(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::EIO) {
        io::ErrorKind::WouldBlock.into()
    } else {
        e
    }
}

/// The next segment of the super-frame being cut (`seg`, in `rd`) into
/// `out`; when it is refused (`out` too small) the rest is dropped.
fn take_segment(seg: &mut Option<(segment::Segmenter, usize, usize)>, rd: &[u8], stats: &mut OffloadStats, out: &mut [u8]) -> Option<usize> {
    let (s, start, end) = seg.as_mut()?;
    let Some(n) = s.next_into(&rd[*start..*end], out) else {
        *seg = None;
        return None;
    };
    stats.segments_in += 1;
    if s.remaining() == 0 {
        *seg = None;
    }
    Some(n)
}

impl Offload {
    /// Take the next segment of the super-frame being cut, if any.
    fn next_segment(&mut self, out: &mut [u8]) -> Option<usize> {
        take_segment(&mut self.seg, &self.rd, &mut self.stats, out)
    }

    /// Cut the next segment into the current cut buffer at `at`, behind
    /// `prefix`: its length, or None when it does not fit (or no segment
    /// is left).
    fn cut_segment(&mut self, at: usize, prefix: &[u8]) -> Option<usize> {
        let max = self.seg.as_ref()?.0.max_len();
        let buf = self.cut.current_mut()?;
        let body = at + prefix.len();
        if body + max > buf.len() {
            return None;
        }
        buf[at..body].copy_from_slice(prefix);
        let n = take_segment(&mut self.seg, &self.rd, &mut self.stats, &mut buf[body..]);
        if n.is_none() {
            self.stats.offload_errors += 1; // not expected: it fits, and segments were left
        }
        n
    }

    /// One read from the tap: a plain frame lands in `slot` (its length
    /// returned); a super-frame is kept for `next_segment` (Some(0)).
    /// None: nothing usable was read (a malformed request, counted).
    fn read(&mut self, fd: RawFd, slot: &mut [u8]) -> io::Result<Option<usize>> {
        let mut vh = [0u8; vnet::LEN];
        let room = slot.len().min(RECV_BUFSIZE);
        let n = {
            let (head, rest) = (&mut slot[..room], &mut self.rd[RECV_BUFSIZE..]);
            sys::readv(fd, &mut [IoSliceMut::new(&mut vh), IoSliceMut::new(head), IoSliceMut::new(rest)])?
        };
        let Ok(h) = Header::parse(&vh[..n.min(vnet::LEN)]) else {
            self.stats.offload_errors += 1;
            return Ok(None);
        };
        let len = n - vnet::LEN;
        if h.gso() == vnet::GSO_NONE {
            if len > room {
                self.stats.offload_errors += 1; // larger than any frame: never one
                return Ok(None);
            }
            if h.flags & vnet::F_NEEDS_CSUM != 0 && segment::finish_checksum(&h, &mut slot[..len]).is_err() {
                self.stats.offload_errors += 1;
                return Ok(None);
            }
            return Ok(Some(len));
        }
        // A super-frame: make it contiguous in rd (its head came into slot).
        let head = len.min(room);
        let start = RECV_BUFSIZE - head;
        self.rd[start..RECV_BUFSIZE].copy_from_slice(&slot[..head]);
        let end = start + len;
        match segment::Segmenter::new(&h, &self.rd[start..end]) {
            Ok(s) => {
                self.stats.superframes_in += 1;
                self.seg = Some((s, start, end));
                Ok(Some(0))
            }
            Err(_) => {
                self.stats.offload_errors += 1;
                Ok(None)
            }
        }
    }

    fn refresh(&mut self) {
        let queued = self.seg.is_some();
        self.ready.queued(queued);
    }
}

impl Transport for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        let fd = self.fd.as_raw_fd();
        let Some(off) = self.off.as_mut() else {
            return Ok(Recv::Frame(sys::read(fd, buf)?));
        };
        let r = (|| loop {
            if let Some(n) = off.next_segment(buf) {
                return Ok(Recv::Frame(n));
            }
            match off.read(fd, buf)? {
                Some(0) => continue,
                Some(n) => return Ok(Recv::Frame(n)),
                None => return Ok(Recv::Skip),
            }
        })();
        off.refresh();
        r
    }

    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        batch.clear();
        let fd = self.fd.as_raw_fd();
        let allowed = self.reads.start(Instant::now(), batch.capacity());
        let Some(off) = self.off.as_mut() else {
            let (link, reads, dry) = super::recv_upto(self, batch, allowed)?;
            self.reads.end(reads, dry);
            return Ok(link);
        };
        let (mut reads, mut dry) = (0, false);
        let mut result = Ok(Link::Open);
        let mut prefix = [0u8; MAX_PREFIX];
        let p = batch.prefix().len();
        prefix[..p].copy_from_slice(batch.prefix());
        // Segments go back to back into a cut buffer (handed out as views
        // below); into the batch's own buffers when every cut buffer is
        // still viewed by a batch not sent yet.
        let pooled = off.cut.pick_free();
        let mut at = 0;
        off.views.clear();
        'fill: while !batch.done() {
            while off.seg.is_some() {
                let n = if pooled {
                    let Some(n) = off.cut_segment(at, &prefix[..p]) else { break 'fill }; // the cut buffer is full
                    off.views.push((batch.count, at + p));
                    at += p + n;
                    n
                } else {
                    let Some(n) = off.next_segment(&mut batch.bufs[batch.count]) else { break };
                    n
                };
                batch.lens[batch.count] = n;
                batch.count += 1;
                if batch.count == batch.capacity() {
                    break 'fill;
                }
            }
            if reads == allowed {
                break;
            }
            reads += 1;
            match off.read(fd, &mut batch.bufs[batch.count]) {
                Ok(Some(0)) => {}
                Ok(Some(n)) => {
                    batch.lens[batch.count] = n;
                    batch.count += 1;
                }
                Ok(None) => batch.skipped += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dry = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => reads -= 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        for &(i, at) in &off.views {
            if !batch.set_view(i, off.cut.current(), at) {
                let n = batch.lens[i];
                batch.bufs[i][..n].copy_from_slice(&off.cut.current()[at..at + n]);
            }
        }
        off.refresh();
        self.reads.end(reads, dry);
        result
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        let r = if self.off.is_some() { sys::writev(fd, &[IoSlice::new(&NO_OFFLOAD), IoSlice::new(frame)]).map(|n| n - vnet::LEN) } else { sys::write(fd, frame) };
        r.map_err(down_is_transient)
    }

    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        let fd = self.fd.as_raw_fd();
        let Some(off) = self.off.as_mut() else {
            return super::send_each(self, batch, idx);
        };
        let mut out = SendOutcome::default();
        let frame = |k: usize| batch.frame(idx[k]);
        coalesce::plan(idx.len(), &frame, &mut off.runs, MAX_SEGS);
        for &(first, count) in &off.runs {
            let r = if count == 1 {
                sys::writev(fd, &[IoSlice::new(&NO_OFFLOAD), IoSlice::new(frame(first))])
            } else {
                let mut refs: [&[u8]; MAX_SEGS] = [&[]; MAX_SEGS];
                for (k, r) in refs[..count].iter_mut().enumerate() {
                    *r = frame(first + k);
                }
                let mut payloads: [&[u8]; MAX_SEGS] = [&[]; MAX_SEGS];
                match coalesce::super_header(&refs[..count], &mut off.hdr, &mut payloads) {
                    Some((vh, h)) => {
                        let vb = vh.to_bytes();
                        let mut iov: [IoSlice<'_>; MAX_SEGS + 2] = [IoSlice::new(&[]); MAX_SEGS + 2];
                        iov[0] = IoSlice::new(&vb);
                        iov[1] = IoSlice::new(&off.hdr[..h]);
                        for (k, p) in payloads[..count].iter().enumerate() {
                            iov[2 + k] = IoSlice::new(p);
                        }
                        let r = sys::writev(fd, &iov[..count + 2]);
                        if r.is_ok() {
                            off.stats.superframes_out += 1;
                            off.stats.coalesced_out += count as u64;
                        }
                        r
                    }
                    None => Err(io::ErrorKind::InvalidData.into()),
                }
            };
            match r.map_err(down_is_transient) {
                Ok(_) => out.sent += count,
                Err(e) if super::is_transient(&e) || e.kind() == io::ErrorKind::InvalidData => out.dropped += count,
                Err(e) => {
                    out.error = Some(e);
                    break;
                }
            }
        }
        out
    }

    fn data_fd(&self) -> RawFd {
        match &self.off {
            Some(off) => off.ready.raw(),
            None => self.fd.as_raw_fd(),
        }
    }

    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        match &self.off {
            Some(off) => off.ready.fds(out),
            None => out.push(self.fd.as_raw_fd()),
        }
    }

    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        match &self.off {
            Some(off) => {
                let s = off.stats;
                vec![
                    ("superframes_in", s.superframes_in),
                    ("segments_in", s.segments_in),
                    ("superframes_out", s.superframes_out),
                    ("coalesced_out", s.coalesced_out),
                    ("offload_errors", s.offload_errors),
                ]
            }
            None => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- VNL

/// The interface name of a tap:// or macvtap:// VNL: at most 15 bytes, no '/'.
pub fn interface_name(t: &Target) -> Result<String, OpenError> {
    if t.address.len() > 15 {
        return Err(t.error("interface name longer than 15 bytes", &t.address));
    }
    if t.address.contains(&b'/') {
        return Err(t.error("interface name with '/'", &t.address));
    }
    Ok(t.address_str())
}

fn open_vnl(t: &Target, _args: &OpenArgs) -> OpenResult {
    Ok(Box::new(open(&interface_name(t)?)?))
}

pub const PLUGIN: Builtin = Builtin { scheme: "tap", syntax: Syntax::Raw, options: &[], bare: None, nests: false, summary: "Linux tap interface: tap://t0", open: open_vnl };

use crate::plugins::{Builtin, OpenArgs, OpenError, OpenResult, Target};
use crate::vnl::Syntax;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_limit_follows_what_the_last_call_found() {
        let us = Duration::from_micros;
        let mut r = ReadLimit::new();
        let mut now = Instant::now();
        // Lone frames, a sleep apart: one read each, never a failed one.
        for _ in 0..3 {
            now += us(10_000);
            assert_eq!(r.start(now, 256), 1);
            r.end(1, false);
        }
        // A burst: the loop comes straight back while the fd stays
        // readable, with twice as many reads each time, up to the batch.
        for want in [2, 4, 8, 16, 32, 64, 128, 256, 256] {
            now += us(30);
            assert_eq!(r.start(now, 256), want);
            r.end(want, false);
        }
        // Three frames, then a read that found nothing: 3 next time, and a
        // smaller batch caps it.
        now += us(30);
        r.start(now, 256);
        r.end(4, true);
        now += us(10_000);
        assert_eq!(r.start(now, 256), 3);
        r.end(3, false);
        now += us(30);
        assert_eq!(r.start(now, 4), 4, "doubled, capped by the batch");
        // One frame then nothing: one read next time (no failed one).
        r.end(2, true);
        now += us(30);
        assert_eq!(r.start(now, 256), 1);
        r.end(1, false);
        now += us(10_000);
        assert_eq!(r.start(now, 256), 1, "back after a sleep: not doubled");
        // From 8, a wake-up whose one read found nothing: one read next.
        r.end(1, false);
        for want in [2, 4, 8] {
            now += us(30);
            assert_eq!(r.start(now, 256), want);
            r.end(want, false);
        }
        now += us(30);
        assert_eq!(r.start(now, 256), 16);
        r.end(1, true);
        now += us(30);
        assert_eq!(r.start(now, 256), 1);
    }
}
