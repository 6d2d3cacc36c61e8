//! What vxlan:// and vxvde:// share: frames carried in UDP behind the
//! 8-byte VXLAN header, a MAC table mapping each remote MAC to the peer
//! address it came from, and the choice of destination for each frame
//! (known unicast → that peer, anything else → the multicast group).
//! Receive and send are batched (recvmmsg/sendmmsg) with the header
//! scattered/gathered in its own iovec, so frames are never copied.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::gro::GroRx;
use super::{ctx, now_secs, send_datagrams, send_patience, Batch, SendOutcome};
use crate::mac_table::MacTable;
use crate::sys::{self, Meta, MAX_BATCH};
use crate::wire::ethernet::Frame;
use crate::wire::vxlan::{self, Packet, Repr};

/// A peer's UDP address as a MAC table value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Default for Peer {
    fn default() -> Self {
        Peer(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
    }
}

/// Options common to vxlan:// and vxvde:// (already parsed and typed).
#[derive(Debug, Clone)]
pub struct Config {
    pub group: IpAddr,
    pub port: u16,
    pub vni: u32,
    pub ttl: u32,
    pub ifname: Option<String>,
    pub rcvbuf: Option<usize>,
    pub hashsize: usize,
    pub expiretime: u64,
}

/// Counters specific to overlays (visible from Python).
#[derive(Debug, Default, Clone, Copy)]
pub struct OverlayStats {
    pub unicast_out: u64,
    pub multicast_out: u64,
    /// Datagrams dropped for a bad header, wrong VNI or a runt payload.
    pub bad_in: u64,
    pub own_echo: u64,
    pub leaves: u64,
}

/// What a received datagram turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rx {
    Frame,
    Drop,
    /// vxvde: a header-only datagram, the sender left.
    Leave,
}

pub struct Overlay {
    pub table: MacTable<Peer>,
    pub group: SocketAddr,
    pub header: [u8; vxlan::HEADER_LEN],
    vni: u32,
    /// vxvde checks all 64 header bits; vxlan only the I flag and VNI.
    strict: bool,
    /// vxlan: learned peers are reached on the configured port, whatever
    /// source port they used (the kernel picks random source ports).
    force_port: Option<u16>,
    pub stats: OverlayStats,
    // Preallocated per-batch scratch.
    prefix: Box<[[u8; 8]; MAX_BATCH]>,
    meta: Box<[Meta; MAX_BATCH]>,
    dest: Box<[libc::sockaddr_storage; MAX_BATCH]>,
    destlen: [libc::socklen_t; MAX_BATCH],
    addrs: [SocketAddr; MAX_BATCH],
    /// UDP GSO for runs to one peer; off after the kernel refuses it.
    gso: bool,
    /// Per receiving socket (0, 1): trains received with UDP_GRO.
    gro: [Option<Box<GroRx>>; 2],
}

impl Overlay {
    pub fn new(cfg: &Config, strict: bool, force_port: Option<u16>) -> Overlay {
        Overlay {
            table: MacTable::new(cfg.hashsize, cfg.expiretime, 0),
            group: SocketAddr::new(cfg.group, cfg.port),
            header: Repr { vni: cfg.vni }.to_bytes(),
            vni: cfg.vni,
            strict,
            force_port,
            stats: OverlayStats::default(),
            prefix: Box::new([[0u8; 8]; MAX_BATCH]),
            meta: Box::new([Meta::default(); MAX_BATCH]),
            dest: Box::new([sys::zeroed_storage(); MAX_BATCH]),
            destlen: [0; MAX_BATCH],
            addrs: [Peer::default().0; MAX_BATCH],
            gso: true,
            gro: [None, None],
        }
    }

    /// Receive on `fd` (socket `slot`, 0 or 1) with UDP_GRO when the kernel
    /// has it: a sender's GSO train then arrives as one buffer.
    pub fn enable_gro(&mut self, slot: usize, fd: RawFd) {
        self.gro[slot] = super::gro::enable(fd);
    }

    /// Frames already received and not handed out (the data fd must stay readable).
    pub fn queued(&self) -> bool {
        self.gro.iter().flatten().any(|g| g.queued())
    }

    /// One datagram from a GRO buffer through `accept`: Some(frame range) when it is a frame for us.
    fn take_gro(&mut self, g: &mut GroRx, fd: RawFd, pktinfo: bool, is_self: &dyn Fn(&SocketAddr, &Meta) -> bool, now: u64) -> io::Result<Option<Option<(usize, usize)>>> {
        let Some((a, b, m)) = g.next(fd, pktinfo)? else { return Ok(None) };
        let Some(from) = sys::sockaddr_to_std(&m.from) else { return Ok(Some(None)) };
        if is_self(&from, &m) {
            self.stats.own_echo += 1;
            return Ok(Some(None));
        }
        let d = &g.arena()[a..b];
        let mut hdr = [0u8; vxlan::HEADER_LEN];
        let h = d.len().min(vxlan::HEADER_LEN);
        hdr[..h].copy_from_slice(&d[..h]);
        Ok(Some((self.accept(&hdr, &d[h..], d.len(), from, now) == Rx::Frame).then_some((a + h, b))))
    }

    /// Check a received header, learn the source MAC, or spot a leave message.
    pub fn accept(&mut self, header: &[u8; 8], frame: &[u8], total: usize, from: SocketAddr, now: u64) -> Rx {
        if total < vxlan::HEADER_LEN {
            self.stats.bad_in += 1;
            return Rx::Drop;
        }
        let ok = Packet::new_checked(&header[..]).is_ok_and(|p| Repr::parse(&p, self.vni, self.strict).is_ok());
        if !ok {
            self.stats.bad_in += 1;
            return Rx::Drop;
        }
        if total == vxlan::HEADER_LEN && self.strict {
            self.stats.leaves += 1;
            self.table.forget_value(Peer(from));
            return Rx::Leave;
        }
        let Ok(eth) = Frame::new_checked(frame) else {
            self.stats.bad_in += 1;
            return Rx::Drop;
        };
        let mut peer = from;
        if let Some(p) = self.force_port {
            peer.set_port(p);
        }
        self.table.learn(eth.src_addr(), 1, Peer(peer), now);
        Rx::Frame
    }

    /// Where to send `frame`: the learned peer, or the group.
    pub fn destination(&mut self, frame: &[u8], now: u64) -> SocketAddr {
        let known = Frame::new_checked(frame).ok().and_then(|f| self.table.lookup(f.dst_addr(), 1, now));
        match known {
            Some(Peer(a)) => {
                self.stats.unicast_out += 1;
                a
            }
            None => {
                self.stats.multicast_out += 1;
                self.group
            }
        }
    }

    /// Receive a batch on `fd` into `batch` (appending after `batch.count`),
    /// keeping only accepted frames. `is_self` filters our own multicast echo.
    pub fn recv_batch(&mut self, fd: RawFd, slot: usize, batch: &mut Batch, pktinfo: bool, is_self: &dyn Fn(&SocketAddr, &Meta) -> bool) -> io::Result<()> {
        if let Some(mut g) = self.gro[slot].take() {
            let now = now_secs();
            let mut r = Ok(());
            while batch.count < batch.capacity() {
                match self.take_gro(&mut g, fd, pktinfo, is_self, now) {
                    Ok(None) => break,
                    Ok(Some(None)) => batch.skipped += 1,
                    Ok(Some(Some((a, b)))) => {
                        batch.push_view(g.arena(), a, b - a);
                    }
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
            self.gro[slot] = Some(g);
            return r;
        }
        let start = batch.count;
        let room = batch.capacity() - start;
        if room == 0 {
            return Ok(());
        }
        let n = match sys::recv_batch_prefixed(fd, &mut self.prefix[..room], &mut batch.bufs[start..], &mut self.meta[..room], pktinfo) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        let now = now_secs();
        let mut keep = start;
        for i in 0..n {
            let m = self.meta[i];
            let Some(from) = sys::sockaddr_to_std(&m.from) else { continue };
            if is_self(&from, &m) {
                self.stats.own_echo += 1;
                batch.skipped += 1;
                continue;
            }
            let total = m.len;
            let flen = total.saturating_sub(vxlan::HEADER_LEN);
            let hdr = self.prefix[i];
            let rx = self.accept(&hdr, &batch.bufs[start + i][..flen.min(batch.bufs[start + i].len())], total, from, now);
            if rx != Rx::Frame {
                batch.skipped += 1;
                continue;
            }
            if keep != start + i {
                batch.bufs.swap(keep, start + i);
            }
            batch.lens[keep] = flen;
            keep += 1;
        }
        batch.count = keep;
        Ok(())
    }

    /// Encapsulate and send `batch[idx]` from `fd`, each to its destination.
    /// Consecutive frames of equal size to the same peer leave as one UDP
    /// GSO send (one trip through the IP stack per run).
    pub fn send_batch(&mut self, fd: RawFd, batch: &Batch, idx: &[usize]) -> SendOutcome {
        let mut out = SendOutcome::default();
        let now = now_secs();
        for chunk in idx.chunks(MAX_BATCH) {
            for (k, &i) in chunk.iter().enumerate() {
                let d = self.destination(batch.frame(i), now);
                self.addrs[k] = d;
                self.destlen[k] = sys::std_to_sockaddr(&d, &mut self.dest[k]);
            }
            let (dest, destlen, addrs) = (&self.dest, &self.destlen, &self.addrs);
            let o = send_datagrams(
                fd,
                &self.header,
                chunk.len(),
                &|k| batch.frame(chunk[k]),
                Some(&|k| (&dest[k] as *const libc::sockaddr_storage, destlen[k])),
                &|a, b| addrs[a] == addrs[b],
                &mut self.gso,
                send_patience(),
            );
            out.sent += o.sent;
            out.dropped += o.dropped;
            if o.error.is_some() {
                out.error = o.error;
                break;
            }
        }
        out
    }

    /// Encapsulate and send one frame.
    pub fn send_one(&mut self, fd: RawFd, frame: &[u8]) -> io::Result<usize> {
        let d = self.destination(frame, now_secs());
        let mut ss = sys::zeroed_storage();
        let len = sys::std_to_sockaddr(&d, &mut ss);
        let o = send_datagrams(fd, &self.header, 1, &|_| frame, Some(&|_| (&ss as *const libc::sockaddr_storage, len)), &|_, _| true, &mut false, send_patience());
        match o.error {
            Some(e) => Err(e),
            None if o.sent == 1 => Ok(frame.len()),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Receive one datagram, its frame into `buf`. Ok(None): consumed, not a frame.
    pub fn recv_one(&mut self, fd: RawFd, slot: usize, buf: &mut [u8], pktinfo: bool, is_self: &dyn Fn(&SocketAddr, &Meta) -> bool) -> io::Result<Option<usize>> {
        if let Some(mut g) = self.gro[slot].take() {
            let r = self.take_gro(&mut g, fd, pktinfo, is_self, now_secs());
            let out = match r {
                Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                Ok(Some(None)) => Ok(None),
                Ok(Some(Some((a, b)))) => {
                    let n = (b - a).min(buf.len());
                    buf[..n].copy_from_slice(&g.arena()[a..a + n]);
                    Ok(Some(n))
                }
                Err(e) => Err(e),
            };
            self.gro[slot] = Some(g);
            return out;
        }
        let n = sys::recv_batch_prefixed(fd, &mut self.prefix[..1], std::slice::from_mut(&mut &mut *buf), &mut self.meta[..1], pktinfo)?;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let (m, hdr) = (self.meta[0], self.prefix[0]);
        let Some(from) = sys::sockaddr_to_std(&m.from) else { return Ok(None) };
        if is_self(&from, &m) {
            self.stats.own_echo += 1;
            return Ok(None);
        }
        let flen = m.len.saturating_sub(vxlan::HEADER_LEN).min(buf.len());
        match self.accept(&hdr, &buf[..flen], m.len, from, now_secs()) {
            Rx::Frame => Ok(Some(flen)),
            _ => Ok(None),
        }
    }
}

impl OverlayStats {
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        vec![("unicast_out", self.unicast_out), ("multicast_out", self.multicast_out), ("bad_in", self.bad_in), ("own_echo", self.own_echo), ("leaves", self.leaves)]
    }
}

// ---------------------------------------------------------------- socket setup

/// The index of `if=` (0: let the routing table choose).
pub fn ifindex(cfg: &Config) -> io::Result<u32> {
    match &cfg.ifname {
        Some(n) if !n.is_empty() => sys::if_index(n),
        _ => Ok(0),
    }
}

pub fn udp_socket(v6: bool) -> io::Result<Socket> {
    let s = Socket::new(if v6 { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if v6 {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

/// Join the group on `ifindex` (0: by route).
pub fn join_group(s: &Socket, group: IpAddr, ifindex: u32) -> io::Result<()> {
    match group {
        IpAddr::V4(g) => s.join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(ifindex)),
        IpAddr::V6(g) => s.join_multicast_v6(&g, ifindex),
    }
    .map_err(|e| ctx(e, format!("cannot join multicast group {group} (add a multicast route or use /if=)")))
}

/// Outgoing multicast: interface, TTL/hops, loopback.
pub fn multicast_out(s: &Socket, v6: bool, ifindex: u32, ttl: u32, looped: bool) -> io::Result<()> {
    if v6 {
        s.set_multicast_hops_v6(ttl)?;
        s.set_unicast_hops_v6(ttl)?;
        s.set_multicast_loop_v6(looped)?;
        if ifindex != 0 {
            s.set_multicast_if_v6(ifindex)?;
        }
    } else {
        s.set_multicast_ttl_v4(ttl)?;
        s.set_ttl_v4(ttl)?;
        s.set_multicast_loop_v4(looped)?;
        if ifindex != 0 {
            sys::set_multicast_if_v4_index(s.as_raw_fd(), ifindex)?;
        }
    }
    Ok(())
}

/// `rcvbuf=`, else gro::DEFAULT_RCVBUF.
pub fn set_rcvbuf(s: &Socket, cfg: &Config) -> io::Result<()> {
    match cfg.rcvbuf {
        Some(n) => s.set_recv_buffer_size(n)?,
        None => super::gro::default_rcvbuf(s.as_raw_fd()),
    }
    Ok(())
}

pub fn any(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

pub fn bind(s: &Socket, addr: SocketAddr) -> io::Result<()> {
    s.bind(&addr.into()).map_err(|e| ctx(e, format!("cannot bind {addr}")))
}

// ---------------------------------------------------------------- VNL

pub const DEFAULT_V4: Ipv4Addr = Ipv4Addr::new(239, 0, 0, 1);
pub const DEFAULT_V6: Ipv6Addr = Ipv6Addr::new(0xff05, 0x56de, 0, 0, 0, 0, 0, 1);

/// Options of vxlan:// and vxvde:// in vdeplug4's table order, with
/// `port`'s default and vxvde's extras (`grp` after `vni`, `bind` last).
macro_rules! overlay_options {
    ($port:expr, $vni:expr $(, $grp:expr)? ; $($extra:expr),*) => {
        &[
            opt("port", Kind::Int { lo: 1, hi: 65535 }, OptDefault::Int($port), "UDP port"),
            opt("vni", $vni, OptDefault::Int(1), "VXLAN network identifier"),
            $($grp,)?
            opt("ttl", Kind::Int { lo: 0, hi: 255 }, OptDefault::Int(1), "multicast TTL / hop limit"),
            opt("rcvbuf", Kind::Size { min: 0 }, OptDefault::Unset, "SO_RCVBUF size (K/M/G suffixes)"),
            opt("v4", Kind::Flag, OptDefault::Bool(false), "use IPv4"),
            opt("v6", Kind::Flag, OptDefault::Bool(false), "use IPv6"),
            opt("hashsize", Kind::Int { lo: 1, hi: 1 << 24 }, OptDefault::Int(1024), "MAC table size"),
            opt("expiretime", Kind::Int { lo: 1, hi: 1 << 40 }, OptDefault::Int(128), "MAC table entry lifetime (s)"),
            opt("if", Kind::Text, OptDefault::Unset, "network interface for multicast"),
            $($extra,)*
        ]
    };
}
pub(crate) use overlay_options;

/// The multicast group: the address part, else the default of the family
/// (`v6` selects ff05:56de::1; unlike vdeplug4, `v4`/`v6` also check an
/// explicit address).
pub fn group_address(t: &Target) -> Result<IpAddr, OpenError> {
    if t.flag("v4") && t.flag("v6") {
        return Err(t.error("v4 and v6 together", "v6"));
    }
    let text = t.address_str();
    let addr = text.trim_start_matches('[').trim_end_matches(']');
    if addr.is_empty() {
        return Ok(if t.flag("v6") { IpAddr::V6(DEFAULT_V6) } else { IpAddr::V4(DEFAULT_V4) });
    }
    let ip: IpAddr = addr.parse().map_err(|_| t.error(format!("not an IP multicast address: {addr:?}"), &t.address))?;
    if !ip.is_multicast() {
        return Err(t.error(format!("{addr} is not a multicast address"), &t.address));
    }
    if (t.flag("v6") && ip.is_ipv4()) || (t.flag("v4") && ip.is_ipv6()) {
        return Err(t.error(format!("{addr} is not an IPv{} address", if t.flag("v6") { 6 } else { 4 }), &t.address));
    }
    Ok(ip)
}

/// The typed configuration shared by both (group and VNI as given).
pub fn config_of(t: &Target, group: IpAddr, vni: u32) -> Config {
    Config {
        group,
        port: t.int("port").unwrap_or(4789) as u16,
        vni,
        ttl: t.int("ttl").unwrap_or(1) as u32,
        ifname: t.text("if"),
        rcvbuf: t.int("rcvbuf").map(|v| v as usize),
        hashsize: t.int("hashsize").unwrap_or(1024) as usize,
        expiretime: t.int("expiretime").unwrap_or(128),
    }
}

use crate::plugins::{OpenError, Target};

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config { group: "239.0.0.1".parse().unwrap(), port: 4789, vni: 5, ttl: 1, ifname: None, rcvbuf: None, hashsize: 64, expiretime: 128 }
    }

    fn eth(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0xab);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn learn_then_unicast_else_group() {
        let mut ov = Overlay::new(&cfg(), false, Some(4789));
        let peer: SocketAddr = "10.0.0.2:51000".parse().unwrap();
        assert_eq!(ov.destination(&eth(A, B), 10), ov.group, "unknown goes to the group");
        let hdr = Repr { vni: 5 }.to_bytes();
        assert_eq!(ov.accept(&hdr, &eth([0xff; 6], A), 68, peer, 10), Rx::Frame);
        assert_eq!(ov.destination(&eth(A, B), 10), "10.0.0.2:4789".parse().unwrap(), "port forced for vxlan");
        assert_eq!(ov.destination(&eth([0xff; 6], B), 10), ov.group, "broadcast to the group");
        assert_eq!(ov.destination(&eth(A, B), 10 + 129), ov.group, "expired");
        assert_eq!((ov.stats.unicast_out, ov.stats.multicast_out), (1, 3));
    }

    #[test]
    fn bad_headers_dropped_and_counted() {
        let mut ov = Overlay::new(&cfg(), true, None);
        let from: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let f = eth([0xff; 6], A);
        assert_eq!(ov.accept(&Repr { vni: 6 }.to_bytes(), &f, 68, from, 0), Rx::Drop, "wrong vni");
        assert_eq!(ov.accept(&[0, 0, 0, 0, 0, 0, 5, 0], &f, 68, from, 0), Rx::Drop, "no I flag");
        assert_eq!(ov.accept(&[8, 0, 0, 1, 0, 0, 5, 0], &f, 68, from, 0), Rx::Drop, "strict: reserved bits");
        assert_eq!(ov.accept(&Repr { vni: 5 }.to_bytes(), &f[..10], 18, from, 0), Rx::Drop, "runt frame");
        assert_eq!(ov.accept(&Repr { vni: 5 }.to_bytes(), &[], 5, from, 0), Rx::Drop, "short header");
        assert_eq!(ov.stats.bad_in, 5);
        assert!(ov.table.is_empty(0));
    }

    #[test]
    fn leave_forgets_the_peer() {
        let mut ov = Overlay::new(&cfg(), true, None);
        let from: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let hdr = Repr { vni: 5 }.to_bytes();
        ov.accept(&hdr, &eth([0xff; 6], A), 68, from, 0);
        assert_eq!(ov.destination(&eth(A, B), 0), from);
        assert_eq!(ov.accept(&hdr, &[], 8, from, 0), Rx::Leave);
        assert_eq!(ov.destination(&eth(A, B), 0), ov.group);
    }

    #[test]
    fn arbitrary_datagrams_never_panic() {
        let mut ov = Overlay::new(&cfg(), true, None);
        let from: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let mut x: u32 = 12345;
        for total in 0..200usize {
            let mut data = vec![0u8; total];
            for b in data.iter_mut() {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                *b = (x >> 16) as u8;
            }
            if total >= 8 && total % 3 == 0 {
                data[..8].copy_from_slice(&Repr { vni: 5 }.to_bytes());
            }
            let mut hdr = [0u8; 8];
            let h = total.min(8);
            hdr[..h].copy_from_slice(&data[..h]);
            let _ = ov.accept(&hdr, &data[h..], total, from, 0);
        }
    }
}
