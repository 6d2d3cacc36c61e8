//! The overlay's socket side: batched receives (UDP GRO trains handed out
//! datagram by datagram, or recvmmsg with the VXLAN header scattered into
//! its own iovec, so frames are never copied), every datagram through one
//! path to the protocol core (protocol.rs); sends batched with UDP GSO for
//! runs to one peer; the control messages the core owes, sent after each
//! receive; and socket setup. A send error about one destination drops
//! that destination, never the endpoint.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol as IpProtocol, Socket, Type};

use super::dns::Resolver;
use super::options::Config;
use super::protocol::{by_destination, Peer, Protocol, Rx, MAX_PLAN};
use crate::sys::{self, Meta, MAX_BATCH};
use crate::transport::flood::{FloodList, LocalAddrs};
use crate::transport::gro::{self, GroRx};
use crate::transport::{ctx, now_secs, send_datagrams, send_patience, Batch, FrameRef, SendOutcome};
use crate::wire::vxlan;

/// A receive error that reports an ICMP error about an earlier send (one
/// destination's problem): consumed and skipped, never fatal.
fn is_icmp_report(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN | libc::EPROTO | libc::EMSGSIZE))
}

/// For overlays whose sockets never hear their own datagrams (no multicast loop).
pub fn never_self(_: &SocketAddr, _: &Meta) -> bool {
    false
}

/// Which of our datagrams a socket hears back: `is_self(source, metadata)`.
pub type IsSelf<'a> = &'a dyn Fn(&SocketAddr, &Meta) -> bool;

/// This host's addresses, read from its interfaces (once per endpoint).
pub fn local_addrs() -> LocalAddrs {
    LocalAddrs::new(&sys::interface_addrs())
}

/// One received datagram (its first 8 bytes, the rest, its size, its
/// source) on its way to the core: our own echo is counted and skipped.
/// True: a frame for us.
#[allow(clippy::too_many_arguments)]
fn datagram(core: &mut Protocol, hdr: &[u8; vxlan::HEADER_LEN], rest: &[u8], total: usize, from: Option<SocketAddr>, m: &Meta, is_self: IsSelf, now: u64) -> bool {
    let Some(from) = from else { return false };
    if is_self(&from, m) {
        core.stats.own_echo += 1;
        return false;
    }
    core.accept(hdr, rest, total, from, now) == Rx::Frame
}

/// The next datagram of a GRO buffer.
enum Got {
    /// Nothing ready.
    Nothing,
    /// Consumed, not a frame for us.
    Skip,
    /// A frame for us at `arena()[a..b]`.
    Frame(usize, usize),
}

/// The next datagram from a GRO buffer, through `datagram`.
fn take_gro(core: &mut Protocol, g: &mut GroRx, fd: RawFd, pktinfo: bool, is_self: IsSelf, now: u64) -> io::Result<Got> {
    let Some((a, b, msg)) = g.next(fd, pktinfo)? else { return Ok(Got::Nothing) };
    let (m, from) = g.meta(msg);
    let d = &g.arena()[a..b];
    // A fixed-size read (no memcpy call) for every whole header; runts padded.
    let hdr: [u8; vxlan::HEADER_LEN] = d.get(..vxlan::HEADER_LEN).and_then(|x| x.try_into().ok()).unwrap_or_else(|| {
        let mut p = [0u8; vxlan::HEADER_LEN];
        p[..d.len()].copy_from_slice(d);
        p
    });
    let h = d.len().min(vxlan::HEADER_LEN);
    Ok(if datagram(core, &hdr, &d[h..], d.len(), from, m, is_self, now) { Got::Frame(a + h, b) } else { Got::Skip })
}

pub struct Overlay {
    pub core: Protocol,
    // Preallocated per-batch scratch.
    prefix: Box<[[u8; 8]; MAX_BATCH]>,
    meta: Box<[Meta; MAX_BATCH]>,
    dest: Box<[libc::sockaddr_storage; MAX_BATCH]>,
    destlen: [libc::socklen_t; MAX_BATCH],
    addrs: [SocketAddr; MAX_BATCH],
    /// Datagrams to send: (batch index, destination), ≤ MAX_PLAN + flood targets.
    plan: Vec<(usize, SocketAddr)>,
    /// UDP GSO for runs to one peer; off after the kernel refuses it.
    gso: bool,
    /// Per receiving socket (0, 1): trains received with UDP_GRO.
    gro: [Option<Box<GroRx>>; 2],
    /// `recv_one`'s batch of one: a single receive takes the batch path.
    one: Batch,
    /// The control message being sent (reused).
    msg: Vec<u8>,
    /// Looks the peer names up again every `refresh=` (None: no names, or refresh=0).
    resolver: Option<Resolver>,
    /// What the log lines start with.
    scheme: &'static str,
}

impl Overlay {
    /// With peer names and `refresh=` above 0, a thread looks them up again
    /// every `refresh=` seconds (dns.rs); `tick` takes its answers.
    pub fn new(cfg: &Config, flood: FloodList, strict: bool, force_port: Option<u16>) -> io::Result<Overlay> {
        let core = Protocol::new(cfg, flood, strict, force_port).ok_or_else(|| io::Error::other("no random numbers for the probe cookie key"))?;
        let resolver = match &core.names {
            Some(n) if cfg.refresh > 0 => Some(Resolver::spawn(n.hosts(), cfg.v6(), Duration::from_secs(cfg.refresh)).map_err(|e| ctx(e, "cannot start the thread that looks peer names up"))?),
            _ => None,
        };
        Ok(Overlay {
            core,
            prefix: Box::new([[0u8; 8]; MAX_BATCH]),
            meta: Box::new([Meta::default(); MAX_BATCH]),
            dest: Box::new([sys::zeroed_storage(); MAX_BATCH]),
            destlen: [0; MAX_BATCH],
            addrs: [Peer::default().0; MAX_BATCH],
            plan: Vec::with_capacity(MAX_PLAN),
            gso: true,
            gro: [None, None],
            one: Batch::new(1),
            msg: Vec::new(),
            resolver,
            scheme: if strict { "vxvde" } else { "vxlan" },
        })
    }

    /// Housekeeping (the loop's `tick`): apply the peer names' new answers.
    pub fn tick(&mut self) {
        let Some(r) = &self.resolver else { return };
        while let Some((i, answer)) = r.poll() {
            if let Some(note) = self.core.dns_answer(i, answer) {
                eprintln!("{}: {note}", self.scheme);
            }
        }
    }

    /// The VXLAN header in front of every frame we send.
    pub fn header(&self) -> &[u8] {
        &self.core.header
    }

    /// Receive on `fd` (socket `slot`, 0 or 1) with UDP_GRO when the kernel
    /// has it: a sender's GSO train then arrives as one buffer.
    pub fn enable_gro(&mut self, slot: usize, fd: RawFd) {
        self.gro[slot] = gro::enable(fd);
    }

    /// Frames already received and not handed out (the data fd must stay readable).
    pub fn queued(&self) -> bool {
        self.gro.iter().flatten().any(|g| g.queued())
    }

    pub fn defer_learning(&mut self) {
        self.core.defer_learning();
    }

    pub fn authentic(&mut self, i: usize) {
        self.core.authentic(i, now_secs());
    }

    pub fn stats_pairs(&self) -> Vec<(&'static str, u64)> {
        self.core.stats_pairs()
    }

    /// Receive a batch on `fd` into `batch` (appending after `batch.count`),
    /// keeping only accepted frames. `is_self` filters our own multicast echo.
    /// What the core owes (probe answers, probes, peer lists) leaves from `fd`.
    pub fn recv_batch(&mut self, sock: &UdpSocket, slot: usize, batch: &mut Batch, pktinfo: bool, is_self: IsSelf) -> io::Result<()> {
        if self.core.deferred() && batch.count == 0 {
            self.core.forget_pending();
        }
        let r = self.receive(sock, slot, batch, pktinfo, is_self);
        self.send_control(sock);
        r
    }

    /// Receive one datagram, its frame into `buf` (truncated to it), by the
    /// batch path with a batch of one. Ok(None): consumed, not a frame.
    pub fn recv_one(&mut self, sock: &UdpSocket, slot: usize, buf: &mut [u8], pktinfo: bool, is_self: IsSelf) -> io::Result<Option<usize>> {
        let mut one = std::mem::replace(&mut self.one, Batch::new(0));
        one.clear();
        let r = self.recv_batch(sock, slot, &mut one, pktinfo, is_self).and_then(|()| match (one.count, one.skipped) {
            (1, _) => {
                let f = one.frame(0);
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok(Some(n))
            }
            (_, 0) => Err(io::ErrorKind::WouldBlock.into()),
            _ => Ok(None),
        });
        one.clear(); // gives a GRO buffer back
        self.one = one;
        r
    }

    /// Every datagram, from a GRO buffer or a recvmmsg, goes through `datagram`.
    fn receive(&mut self, sock: &UdpSocket, slot: usize, batch: &mut Batch, pktinfo: bool, is_self: IsSelf) -> io::Result<()> {
        let now = now_secs();
        if let Some(mut g) = self.gro[slot].take() {
            let mut r = Ok(());
            while !batch.done() {
                match take_gro(&mut self.core, &mut g, sock.as_raw_fd(), pktinfo, is_self, now) {
                    Ok(Got::Nothing) => break,
                    Ok(Got::Skip) => batch.skipped += 1,
                    Ok(Got::Frame(a, b)) => {
                        if batch.push_view(g.arena(), a, b - a) {
                            self.core.place(batch.count - 1);
                        }
                    }
                    Err(e) if is_icmp_report(&e) => batch.skipped += 1,
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
        let n = match sys::recv_batch_prefixed(sock.as_raw_fd(), &mut self.prefix[..room], &mut batch.bufs[start..], &mut self.meta[..room], pktinfo) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if is_icmp_report(&e) => {
                batch.skipped += 1;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut keep = start;
        for i in 0..n {
            let m = &self.meta[i];
            let total = m.len;
            let flen = total.saturating_sub(vxlan::HEADER_LEN);
            let buf = &batch.bufs[start + i];
            if !datagram(&mut self.core, &self.prefix[i], &buf[..flen.min(buf.len())], total, sys::sockaddr_to_std(&m.from), m, is_self, now) {
                batch.skipped += 1;
                continue;
            }
            if keep != start + i {
                batch.bufs.swap(keep, start + i);
            }
            batch.lens[keep] = flen;
            self.core.place(keep);
            keep += 1;
        }
        batch.count = keep;
        Ok(())
    }

    /// Send what the core owes, from `fd`; an error about a destination
    /// drops it (`Protocol::unreachable`).
    fn send_control(&mut self, sock: &UdpSocket) {
        let now = now_secs();
        let mut msg = std::mem::take(&mut self.msg);
        while let Some((to, what)) = self.core.poll_control(now, &mut msg) {
            let sent = match sock.send_to(&msg, to) {
                Ok(_) => true,
                Err(e) => {
                    if crate::transport::is_about_destination(&e) {
                        self.core.unreachable(to);
                    }
                    false
                }
            };
            self.core.control_sent(to, what, sent);
        }
        self.msg = msg;
    }

    /// Encapsulate and send `batch[idx]` from `fd`, each to its destination
    /// (flooded frames once per flood target). The batch's datagrams (up to
    /// MAX_PLAN) are grouped by destination, and the frames of equal size
    /// to one peer leave as one UDP GSO send (one trip through the IP stack
    /// per run, also for a burst of floods). Counts are of frames: one whose
    /// copies were not all sent counts as dropped.
    pub fn send_batch(&mut self, sock: &UdpSocket, batch: &Batch, idx: &[usize]) -> SendOutcome {
        let mut out = SendOutcome::default();
        let now = now_secs();
        let mut nowhere = 0;
        let mut planned = 0;
        for (n, &i) in idx.iter().enumerate() {
            let plan = &mut self.plan;
            if !self.core.route(batch.frame(i), now, |d| plan.push((i, d))) {
                nowhere += 1;
            }
            if self.plan.len() >= MAX_PLAN || n + 1 == idx.len() {
                let frames = n + 1 - planned;
                planned = n + 1;
                by_destination(&mut self.plan);
                let o = self.send_plan(sock, &|i| batch.frame_ref(i));
                let dropped = (o.dropped + nowhere).min(frames);
                nowhere = 0;
                out.sent += frames - dropped;
                out.dropped += dropped;
                if o.error.is_some() {
                    out.dropped += idx.len() - planned;
                    out.error = o.error;
                    break;
                }
            }
        }
        out
    }

    /// Encapsulate and send one frame (to every flood target if flooded,
    /// unverified members within their budget). An error about one
    /// destination drops that destination (`unreachable`), not the frame's
    /// other copies; only an error about the socket is returned.
    pub fn send_one(&mut self, sock: &UdpSocket, frame: &[u8]) -> io::Result<usize> {
        let plan = &mut self.plan;
        self.core.route(frame, now_secs(), |d| plan.push((0, d)));
        let o = self.send_plan(sock, &|_| frame.into());
        match o.error {
            Some(e) => Err(e),
            None if o.sent > 0 => Ok(frame.len()),
            None => Err(crate::transport::dropped()),
        }
    }

    /// Send and empty the plan (`frame(i)`: the frame at batch index i).
    /// Destinations whose sends failed for a reason about them are dropped
    /// (`unreachable`); the rest go on.
    fn send_plan<'a>(&mut self, sock: &UdpSocket, frame: &dyn Fn(usize) -> FrameRef<'a>) -> SendOutcome {
        let mut out = SendOutcome::default();
        let mut bad = Vec::new();
        for chunk in self.plan.chunks(MAX_BATCH) {
            for (k, &(_, d)) in chunk.iter().enumerate() {
                self.addrs[k] = d;
                self.destlen[k] = sys::std_to_sockaddr(&d, &mut self.dest[k]);
            }
            let (dest, destlen, addrs) = (&self.dest, &self.destlen, &self.addrs);
            let o = send_datagrams(
                sock.as_raw_fd(),
                &self.core.header,
                chunk.len(),
                &|k| frame(chunk[k].0),
                Some(&|k| (&dest[k], destlen[k])),
                &|a, b| addrs[a] == addrs[b],
                &mut self.gso,
                send_patience(),
            );
            out.sent += o.sent;
            out.dropped += o.dropped;
            bad.extend(o.bad_dest.iter().map(|&(k, _)| chunk[k].1));
            if o.error.is_some() {
                out.error = o.error;
                break;
            }
        }
        self.plan.clear();
        for to in bad {
            self.core.unreachable(to);
        }
        out
    }

    /// Send the vxvde leave message (a header alone) to every flood target.
    pub fn send_leave(&mut self, sock: &UdpSocket) {
        let core = &mut self.core;
        for d in core.flood.targets(now_secs()) {
            let _ = sock.send_to(&core.header, d);
        }
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
    let s = Socket::new(if v6 { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM.cloexec(), Some(IpProtocol::UDP))?;
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

/// Outgoing TTL/hops for unicast peers, when `ttl=` is given.
pub fn unicast_out(s: &Socket, v6: bool, ttl: Option<u32>) -> io::Result<()> {
    match ttl {
        Some(t) if v6 => s.set_unicast_hops_v6(t),
        Some(t) => s.set_ttl_v4(t),
        None => Ok(()),
    }
}

/// Outgoing multicast: interface, TTL/hops (None: the system's), loopback.
pub fn multicast_out(s: &Socket, v6: bool, ifindex: u32, ttl: Option<u32>, looped: bool) -> io::Result<()> {
    if let Some(ttl) = ttl {
        if v6 {
            s.set_multicast_hops_v6(ttl)?;
            s.set_unicast_hops_v6(ttl)?;
        } else {
            s.set_multicast_ttl_v4(ttl)?;
            s.set_ttl_v4(ttl)?;
        }
    }
    if v6 {
        s.set_multicast_loop_v6(looped)?;
        if ifindex != 0 {
            s.set_multicast_if_v6(ifindex)?;
        }
    } else {
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
        None => gro::default_rcvbuf(s.into()),
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

#[cfg(test)]
mod tests {
    use super::super::testutil::{cfg, eth, A, B};
    use super::super::Remote;
    use super::*;
    use crate::wire::vxlan::Repr;

    /// Broadcasts go to every peer, known unicast to one, in one send_batch.
    #[test]
    fn head_end_replication_on_loopback() {
        let rx: Vec<std::net::UdpSocket> = (0..3).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for r in &rx {
            r.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        }
        let mut c = cfg();
        c.remote = Remote::Peers(rx.iter().map(|r| r.local_addr().unwrap()).collect());
        let mut ov = Overlay::new(&c, c.flood_list(0, local_addrs()), true, None).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let hdr = Repr { vni: 5 }.to_bytes();
        ov.core.accept(&hdr, &eth([0xff; 6], A), 68, rx[1].local_addr().unwrap(), now_secs());
        let mut batch = Batch::new(4);
        for (i, f) in [eth([0xff; 6], B), eth(A, B), eth([0xff; 6], B)].iter().enumerate() {
            batch.bufs[i][..f.len()].copy_from_slice(f);
            batch.lens[i] = f.len();
        }
        batch.count = 3;
        let o = ov.send_batch(&tx, &batch, &[0, 1, 2]);
        assert_eq!((o.sent, o.dropped), (3, 0));
        let mut buf = [0u8; 128];
        for (k, r) in rx.iter().enumerate() {
            let want = if k == 1 { 3 } else { 2 };
            for _ in 0..want {
                let n = r.recv(&mut buf).unwrap();
                assert_eq!((n, &buf[..8]), (68, &hdr[..]));
            }
            r.set_nonblocking(true).unwrap();
            assert!(r.recv(&mut buf).is_err(), "peer {k}: no extra copies");
        }
        assert_eq!((ov.core.stats.multicast_out, ov.core.stats.peer_floods_out, ov.core.stats.flood_copies, ov.core.stats.unicast_out), (0, 2, 6, 1));
    }

    /// A destination that fails for a reason about itself (a member of the
    /// other family slipped in, a broadcast) is dropped; the frame's other
    /// copies and the endpoint go on.
    #[test]
    fn a_bad_destination_is_dropped_not_fatal() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut c = cfg();
        c.remote = Remote::Peers(vec![rx.local_addr().unwrap()]);
        let mut ov = Overlay::new(&c, c.flood_list(0, local_addrs()), true, None).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bcast: SocketAddr = "127.255.255.255:4789".parse().unwrap();
        ov.core.accept(&Repr { vni: 5 }.to_bytes(), &eth([0xff; 6], A), 68, bcast, now_secs());
        let mut batch = Batch::new(2);
        for (i, f) in [eth(A, B), eth([0xff; 6], B)].iter().enumerate() {
            batch.bufs[i][..f.len()].copy_from_slice(f);
            batch.lens[i] = f.len();
        }
        batch.count = 2;
        let o = ov.send_batch(&tx, &batch, &[0, 1]);
        assert!(o.error.is_none());
        assert_eq!((o.sent, o.dropped, ov.core.stats.dest_errors), (1, 1, 1));
        assert_eq!(ov.core.destination(&eth(A, B), now_secs()), None, "forgotten");
        let mut buf = [0u8; 128];
        assert_eq!(rx.recv(&mut buf).unwrap(), 68, "the flooded copy went out");
        assert_eq!(ov.send_one(&tx, &eth([0xff; 6], B)).unwrap(), 60);
    }

    /// A single receive takes the batch path: a frame, then garbage
    /// (consumed, skipped), then nothing; our own echo is skipped too.
    #[test]
    fn recv_one_takes_the_batch_path() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut c = cfg();
        c.remote = Remote::Peers(vec![tx.local_addr().unwrap()]);
        let mut ov = Overlay::new(&c, c.flood_list(0, local_addrs()), true, None).unwrap();
        let mut dgram = Repr { vni: 5 }.to_bytes().to_vec();
        dgram.extend_from_slice(&eth(A, B));
        let echo = tx.local_addr().unwrap();
        let is_echo = move |f: &SocketAddr, _: &Meta| *f == echo;
        for (payload, is_self) in [(&dgram[..], false), (&[1u8, 2, 3][..], false), (&dgram[..], true)] {
            tx.send_to(payload, rx.local_addr().unwrap()).unwrap();
            let mut buf = [0u8; 64];
            let mut got = Err(io::ErrorKind::WouldBlock.into());
            for _ in 0..200 {
                got = ov.recv_one(&rx, 0, &mut buf, false, if is_self { &is_echo } else { &never_self });
                if !matches!(&got, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let want = if payload.len() == 68 && !is_self { Some(60) } else { None };
            assert_eq!(got.unwrap(), want);
            if want.is_some() {
                assert_eq!(&buf[..60], &eth(A, B)[..], "the frame, without its header");
            }
        }
        let e = ov.recv_one(&rx, 0, &mut [0u8; 64], false, &never_self).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!((ov.core.stats.bad_in, ov.core.stats.own_echo), (1, 1));
    }
}
