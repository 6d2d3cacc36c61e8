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

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::batch::BufPool;
use super::read_limit::ReadLimit;
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
    /// Where every read lands, header first: one contiguous read costs
    /// less than a readv into the header, the batch slot and the rest
    /// (0.2 µs here, issue 30). A plain frame is copied to its slot, a
    /// super-frame cut from here.
    rd: Box<[u8]>,
    /// A lone frame to write, behind its header: a contiguous write costs
    /// less than a writev of the two (0.3 µs here).
    wr: Box<[u8]>,
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
        rd: vec![0u8; SUPER_MAX].into_boxed_slice(),
        wr: vec![0u8; vnet::LEN + RECV_BUFSIZE].into_boxed_slice(),
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

/// Write one plain frame (no offload asked of the kernel) behind its
/// header, through `wr` (see `Offload::wr`).
fn write_plain(wr: &mut [u8], fd: RawFd, frame: &[u8]) -> io::Result<usize> {
    let end = vnet::LEN + frame.len();
    let n = match wr.get_mut(..end) {
        Some(buf) => {
            buf[..vnet::LEN].copy_from_slice(&NO_OFFLOAD);
            buf[vnet::LEN..].copy_from_slice(frame);
            sys::write(fd, buf)?
        }
        None => sys::writev(fd, &[IoSlice::new(&NO_OFFLOAD), IoSlice::new(frame)])?,
    };
    Ok(n.saturating_sub(vnet::LEN))
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
        let n = sys::read(fd, &mut self.rd)?;
        let Ok(h) = Header::parse(&self.rd[..n.min(vnet::LEN)]) else {
            self.stats.offload_errors += 1;
            return Ok(None);
        };
        let frame = vnet::LEN..n;
        if h.gso() == vnet::GSO_NONE {
            let len = frame.len();
            if len > slot.len().min(RECV_BUFSIZE) {
                self.stats.offload_errors += 1; // larger than any frame: never one
                return Ok(None);
            }
            slot[..len].copy_from_slice(&self.rd[frame]);
            if h.flags & vnet::F_NEEDS_CSUM != 0 && segment::finish_checksum(&h, &mut slot[..len]).is_err() {
                self.stats.offload_errors += 1;
                return Ok(None);
            }
            return Ok(Some(len));
        }
        match segment::Segmenter::new(&h, &self.rd[frame.clone()]) {
            Ok(s) => {
                self.stats.superframes_in += 1;
                self.seg = Some((s, frame.start, frame.end));
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
        let r = match self.off.as_mut() {
            Some(off) => write_plain(&mut off.wr, fd, frame),
            None => sys::write(fd, frame),
        };
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
                write_plain(&mut off.wr, fd, frame(first))
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
