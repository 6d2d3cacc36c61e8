//! What vxlan:// and vxvde:// share: frames carried in UDP behind the
//! 8-byte VXLAN header, a MAC table mapping each remote MAC to the peer
//! address it came from, and the choice of destination for each frame
//! (known unicast → that peer, anything else → the multicast group, or
//! a copy to every peer of the flood list when there is no group).
//! Receive and send are batched (recvmmsg/sendmmsg) with the header
//! scattered/gathered in its own iovec, so frames are never copied.
//!
//! Without multicast, members that join (flood.rs) are probed: a probe
//! carries a cookie, HMAC-SHA256 (ring) of the address it went to and the
//! minute truncated to 64 bits, that only a host receiving our traffic
//! there can echo (compared in constant time, subtle). A send
//! error about one destination drops that destination, never the endpoint.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::flood::{Due, FloodList, HostRule, Prefix};
use super::gro::GroRx;
use super::{ctx, now_secs, send_datagrams, send_patience, Batch, SendOutcome};
use crate::mac_table::MacTable;
use crate::sys::{self, Meta, MAX_BATCH};
use crate::wire::ethernet::{Address, Frame};
use crate::wire::vxlan::{self, Control, Packet, Repr, COOKIE_LEN};
use ring::hmac;
use subtle::ConstantTimeEq;

/// A peer's UDP address as a MAC table value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Default for Peer {
    fn default() -> Self {
        Peer(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
    }
}

/// Where flooded frames go: a multicast group, or unicast peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Group(IpAddr),
    Peers(Vec<SocketAddr>),
}

/// Options common to vxlan:// and vxvde:// (already parsed and typed).
#[derive(Debug, Clone)]
pub struct Config {
    pub remote: Remote,
    pub port: u16,
    pub vni: u32,
    /// The TTL / hop limit to set (see `ttl_of`); None: the system's.
    pub ttl: Option<u32>,
    pub ifname: Option<String>,
    pub rcvbuf: Option<usize>,
    pub hashsize: usize,
    pub expiretime: u64,
    /// Sources that may join the flood list (unicast peers only).
    pub allow: Vec<Prefix>,
}

impl Config {
    pub fn v6(&self) -> bool {
        match &self.remote {
            Remote::Group(g) => g.is_ipv6(),
            Remote::Peers(p) => p.first().is_some_and(SocketAddr::is_ipv6),
        }
    }

    /// The flood list's fixed part: the group, or the peers except ourselves
    /// (an endpoint at `port` on a local address), so every host can be given
    /// the same list. Members must be hosts of our family (on loopback only
    /// if some peer is), never a local subnet's broadcast address; this
    /// host's addresses and broadcasts are read once, here.
    pub fn flood_list(&self, port: u16) -> FloodList {
        let loopback = matches!(&self.remote, Remote::Peers(p) if p.iter().any(|a| a.ip().is_loopback()));
        let (local, broadcasts) = sys::local_addrs_and_broadcasts();
        let rule = HostRule { v6: self.v6(), loopback, broadcasts, local, own_port: port };
        let fixed = match &self.remote {
            Remote::Group(g) => vec![SocketAddr::new(*g, self.port)],
            Remote::Peers(p) => p.iter().copied().filter(|a| !rule.is_self(a)).collect(),
        };
        FloodList::new(fixed, self.port, self.allow.clone(), self.expiretime, rule)
    }
}

/// What a probe's cookie signs: the address it went to and the minute.
fn cookie_input(to: &SocketAddr, epoch: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(27);
    match to.ip() {
        IpAddr::V4(a) => m.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => m.extend_from_slice(&a.octets()),
    }
    m.extend_from_slice(&to.port().to_be_bytes());
    m.extend_from_slice(&epoch.to_be_bytes());
    m
}

/// A receive error that reports an ICMP error about an earlier send (one
/// destination's problem): consumed and skipped, never fatal.
fn is_icmp_report(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN | libc::EPROTO | libc::EMSGSIZE))
}

/// For overlays whose sockets never hear their own datagrams (no multicast loop).
pub fn never_self(_: &SocketAddr, _: &Meta) -> bool {
    false
}

/// Counters specific to overlays (visible from Python).
#[derive(Debug, Default, Clone, Copy)]
pub struct OverlayStats {
    pub unicast_out: u64,
    /// Frames flooded: to the group, or once to every peer of the list.
    pub multicast_out: u64,
    /// Datagrams sent for flooded frames (a copy per peer without multicast).
    pub flood_copies: u64,
    /// Datagrams dropped for a bad header, wrong VNI or a runt payload.
    pub bad_in: u64,
    pub own_echo: u64,
    pub leaves: u64,
    /// Peer lists received from trusted peers, and sent to new members.
    pub peer_lists_in: u64,
    pub peer_lists_out: u64,
    /// Probes sent to unverified members, probes answered, answers that
    /// verified (a right cookie) and answers refused (a wrong one).
    pub probes_out: u64,
    pub probes_answered: u64,
    pub acks_ok: u64,
    pub acks_bad: u64,
    /// Datagrams whose send failed for a reason about their destination
    /// (the destination is dropped from the members and the MAC table).
    pub dest_errors: u64,
}

/// What a received datagram turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rx {
    Frame,
    Drop,
    /// vxvde: a header-only datagram, the sender left.
    Leave,
    /// A control message (our extension, overlays without multicast).
    Control,
}

/// Peer list payload per datagram (fits any path MTU ≥ 1280 with headers).
const PEER_LIST_BYTES: usize = 1200;
/// Seconds a probe's cookie stays valid (its minute and the one before).
const COOKIE_EPOCH: u64 = 60;

pub struct Overlay {
    pub table: MacTable<Peer>,
    pub flood: FloodList,
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
    /// Datagrams to send: (batch index, destination), ≤ MAX_BATCH + flood targets.
    plan: Vec<(usize, SocketAddr)>,
    /// Probe answers owed (to, cookie), sent after the receive.
    acks: Vec<(SocketAddr, [u8; COOKIE_LEN])>,
    /// Signs probe cookies (random per endpoint).
    cookie_key: hmac::Key,
    /// UDP GSO for runs to one peer; off after the kernel refuses it.
    gso: bool,
    /// Per receiving socket (0, 1): trains received with UDP_GRO.
    gro: [Option<Box<GroRx>>; 2],
    /// Where the last source MAC was learned (see `MacTable::unchanged`).
    learned: Option<usize>,
    /// Learning waits for a wrapper's word (`defer_learning`): a frame is
    /// learned from only once `authentic` says it was (seal:// opened it).
    defer: bool,
    /// What the frame at each batch position would teach: (source MAC, peer, datagram bytes).
    pending: Vec<Option<(Address, SocketAddr, usize)>>,
    /// What the last accepted frame would teach, until placed in `pending`.
    accepted: Option<(Address, SocketAddr, usize)>,
}

impl Overlay {
    pub fn new(cfg: &Config, flood: FloodList, strict: bool, force_port: Option<u16>) -> io::Result<Overlay> {
        let cookie_key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new()).map_err(|_| io::Error::other("no random numbers for the probe cookie key"))?;
        Ok(Overlay {
            table: MacTable::new(cfg.hashsize, cfg.expiretime, 0),
            flood,
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
            plan: Vec::with_capacity(2 * MAX_BATCH),
            acks: Vec::new(),
            cookie_key,
            gso: true,
            gro: [None, None],
            learned: None,
            defer: false,
            pending: Vec::new(),
            accepted: None,
        })
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
        let Some((a, b, msg)) = g.next(fd, pktinfo)? else { return Ok(None) };
        let (m, from) = g.meta(msg);
        let Some(from) = from else { return Ok(Some(None)) };
        if is_self(&from, m) {
            self.stats.own_echo += 1;
            return Ok(Some(None));
        }
        let d = &g.arena()[a..b];
        // A fixed-size read (no memcpy call) for every whole header; runts padded.
        let hdr: [u8; vxlan::HEADER_LEN] = d.get(..vxlan::HEADER_LEN).and_then(|x| x.try_into().ok()).unwrap_or_else(|| {
            let mut p = [0u8; vxlan::HEADER_LEN];
            p[..d.len()].copy_from_slice(d);
            p
        });
        let h = d.len().min(vxlan::HEADER_LEN);
        Ok(Some((self.accept(&hdr, &d[h..], d.len(), from, now) == Rx::Frame).then_some((a + h, b))))
    }

    /// Check a received header, learn the source MAC, or spot a leave message.
    pub fn accept(&mut self, header: &[u8; 8], frame: &[u8], total: usize, from: SocketAddr, now: u64) -> Rx {
        if total < vxlan::HEADER_LEN {
            self.stats.bad_in += 1;
            return Rx::Drop;
        }
        if let Some(kind) = vxlan::control_kind(header) {
            return self.accept_control(kind, header, frame, from, now);
        }
        // Our own header (the usual case) passes without parsing.
        let ok = *header == self.header || Packet::new_checked(&header[..]).is_ok_and(|p| Repr::parse(&p, self.vni, self.strict).is_ok());
        if !ok {
            self.stats.bad_in += 1;
            return Rx::Drop;
        }
        if total == vxlan::HEADER_LEN && self.strict {
            if self.defer {
                // Under seal:// a leave is not authenticated: anyone could
                // cut a member off with one. Expiry forgets it instead.
                self.stats.bad_in += 1;
                return Rx::Drop;
            }
            self.stats.leaves += 1;
            let member = self.flood.forget(from);
            self.forget_macs(from, member);
            return Rx::Leave;
        }
        let Ok(eth) = Frame::new_checked(frame) else {
            self.stats.bad_in += 1;
            return Rx::Drop;
        };
        let peer = self.peer_address(from);
        if self.defer {
            self.accepted = Some((eth.src_addr(), peer, total));
            return Rx::Frame;
        }
        self.learn(eth.src_addr(), peer, total, now);
        Rx::Frame
    }

    /// The frame from `peer` (a datagram of `total` bytes) is believed:
    /// learn where its source MAC lives, and count it toward membership.
    fn learn(&mut self, mac: Address, peer: SocketAddr, total: usize, now: u64) {
        // One table for every VLAN (key 1), as vdeplug4: overlays are trunks.
        let at = Peer(peer);
        if !self.learned.is_some_and(|slot| self.table.unchanged(slot, mac, 1, at, now)) {
            self.learned = self.table.learn_at(mac, 1, at, now).1;
        }
        self.flood.heard(peer, total, now);
    }

    /// Learn nothing from received frames until `authentic` vouches for
    /// them: a wrapper that authenticates frames (seal://) asks this, so a
    /// forged or replayed datagram can neither move a MAC nor join.
    pub fn defer_learning(&mut self) {
        self.defer = true;
    }

    /// The frame at batch position `i` of the last receive (0 after a
    /// single one) is authentic: learn from it now.
    pub fn authentic(&mut self, i: usize) {
        if let Some((mac, peer, total)) = self.pending.get_mut(i).and_then(Option::take) {
            self.learn(mac, peer, total, now_secs());
        }
    }

    /// The last accepted frame now sits at batch position `i`.
    fn place(&mut self, i: usize) {
        if self.defer {
            if self.pending.len() <= i {
                self.pending.resize(i + 1, None);
            }
            self.pending[i] = self.accepted.take();
        }
    }

    /// Where `from` is reached: vxlan peers listen on `port=` (or the port
    /// they are listed with), whatever source port they send from.
    fn peer_address(&self, from: SocketAddr) -> SocketAddr {
        let mut peer = from;
        if let Some(p) = self.force_port {
            peer.set_port(self.flood.listed_port(from).unwrap_or(p));
        }
        peer
    }

    /// A control message for our VNI from `from`: a peer list, a probe
    /// (answered if `from` is a fixed peer, a member or allowed: one answer
    /// of the same size), or a probe's answer (verifies a member if the
    /// cookie is the one we sent to that address).
    fn accept_control(&mut self, kind: Control, header: &[u8; 8], payload: &[u8], from: SocketAddr, now: u64) -> Rx {
        let mut h = *header;
        h[7] = 0;
        if !Packet::new_checked(&h[..]).is_ok_and(|p| Repr::parse(&p, self.vni, true).is_ok()) {
            self.stats.bad_in += 1;
            return Rx::Drop;
        }
        let peer = self.peer_address(from);
        match kind {
            Control::PeerList => {
                self.stats.peer_lists_in += 1;
                self.flood.introduced(peer, vxlan::parse_peers(payload), vxlan::HEADER_LEN + payload.len(), now);
            }
            Control::Probe => match <[u8; COOKIE_LEN]>::try_from(payload) {
                Ok(cookie) if self.flood.knows(&peer) && self.acks.len() < super::flood::MAX_DUE => self.acks.push((peer, cookie)),
                Ok(_) => {}
                Err(_) => self.stats.bad_in += 1,
            },
            Control::ProbeAck => {
                let epoch = now / COOKIE_EPOCH;
                let ok = payload.len() == COOKIE_LEN && [epoch, epoch.saturating_sub(1)].iter().any(|&e| bool::from(self.cookie(&peer, e).ct_eq(payload)));
                if ok {
                    self.stats.acks_ok += 1;
                    self.flood.acked(peer, now);
                } else {
                    self.stats.acks_bad += 1;
                }
            }
        }
        Rx::Control
    }

    /// The cookie of a probe to `to` in minute `epoch`.
    fn cookie(&self, to: &SocketAddr, epoch: u64) -> [u8; COOKIE_LEN] {
        let tag = hmac::sign(&self.cookie_key, &cookie_input(to, epoch));
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&tag.as_ref()[..COOKIE_LEN]);
        c
    }

    /// Send what is owed (from `fd`): probe answers, probes to unverified
    /// members (within their budget), peer lists to verified ones.
    pub fn send_control(&mut self, fd: RawFd) {
        self.forget_gone();
        while let Some((to, cookie)) = self.acks.pop() {
            let mut msg = Repr { vni: self.vni }.control_header(Control::ProbeAck).to_vec();
            msg.extend_from_slice(&cookie);
            if self.send_control_to(fd, &msg, to) {
                self.stats.probes_answered += 1;
            }
        }
        while let Some((to, due)) = self.flood.take_due() {
            match due {
                Due::Probe => {
                    let mut msg = Repr { vni: self.vni }.control_header(Control::Probe).to_vec();
                    msg.extend_from_slice(&self.cookie(&to, now_secs() / COOKIE_EPOCH));
                    if self.flood.may_send(to, msg.len()) && self.send_control_to(fd, &msg, to) {
                        self.stats.probes_out += 1;
                    }
                }
                Due::PeerList => self.send_peer_list(fd, to),
            }
        }
    }

    /// Everyone else we flood to, to the verified member `to`.
    fn send_peer_list(&mut self, fd: RawFd, to: SocketAddr) {
        let peers = self.flood.peers_for(to);
        let mut done = 0;
        while done < peers.len() {
            let mut msg = Repr { vni: self.vni }.peer_list_header().to_vec();
            let n = vxlan::emit_peers(&peers[done..], &mut msg, vxlan::HEADER_LEN + PEER_LIST_BYTES);
            if n == 0 {
                break;
            }
            done += n;
            if !self.send_control_to(fd, &msg, to) {
                break;
            }
            self.stats.peer_lists_out += 1;
        }
    }

    /// One control datagram; an error about `to` drops it (see `unreachable`).
    fn send_control_to(&mut self, fd: RawFd, msg: &[u8], to: SocketAddr) -> bool {
        match sys::send_to(fd, msg, &to) {
            Ok(_) => true,
            Err(e) => {
                if super::is_about_destination(&e) {
                    self.unreachable(to);
                }
                false
            }
        }
    }

    /// A send to `to` failed for a reason about `to`: counted, and `to` is
    /// dropped from the members and the MAC table (it comes back with its
    /// next valid datagram, if it is a host).
    pub fn unreachable(&mut self, to: SocketAddr) {
        self.stats.dest_errors += 1;
        let member = self.flood.unreachable(to);
        self.forget_macs(to, member);
    }

    /// Forget the MACs learned at `peer`: through the flood list's removals
    /// when it was a member (so each is scanned for once), else directly.
    fn forget_macs(&mut self, peer: SocketAddr, member: bool) {
        if !member {
            self.table.forget_value(Peer(peer));
            self.learned = None;
        }
        self.forget_gone();
    }

    /// Forget the MACs of every member the flood list removed (left,
    /// evicted, unreachable) since the last call.
    fn forget_gone(&mut self) {
        while let Some(gone) = self.flood.take_gone() {
            self.table.forget_value(Peer(gone));
            self.learned = None;
        }
    }

    /// Where to send `frame`: Some(the learned peer), or None: flood it.
    pub fn destination(&mut self, frame: &[u8], now: u64) -> Option<SocketAddr> {
        let known = Frame::new_checked(frame).ok().and_then(|f| self.table.lookup(f.dst_addr(), 1, now));
        match known {
            Some(Peer(a)) => {
                self.stats.unicast_out += 1;
                Some(a)
            }
            None => {
                self.stats.multicast_out += 1;
                None
            }
        }
    }

    /// Queue the datagrams of `batch[i]`: one, or a copy per flood target
    /// (unverified members only within their budget). False if there is
    /// nowhere to send it.
    fn plan_frame(&mut self, batch: &Batch, i: usize, now: u64) -> bool {
        let bytes = vxlan::HEADER_LEN + batch.lens[i];
        match self.destination(batch.frame(i), now) {
            Some(d) => {
                if !self.flood.may_send(d, bytes) {
                    return false;
                }
                self.plan.push((i, d));
            }
            None => {
                let plan = &mut self.plan;
                let n = self.flood.flood(now, bytes, |d| plan.push((i, d)));
                self.stats.flood_copies += n as u64;
                return n > 0;
            }
        }
        true
    }

    /// Counters, overlay's and the flood list's.
    pub fn stats_pairs(&self) -> Vec<(&'static str, u64)> {
        let (s, m) = (&self.stats, &self.flood.stats);
        vec![
            ("unicast_out", s.unicast_out),
            ("multicast_out", s.multicast_out),
            ("flood_copies", s.flood_copies),
            ("bad_in", s.bad_in),
            ("own_echo", s.own_echo),
            ("leaves", s.leaves),
            ("peer_lists_in", s.peer_lists_in),
            ("peer_lists_out", s.peer_lists_out),
            ("probes_out", s.probes_out),
            ("probes_answered", s.probes_answered),
            ("acks_ok", s.acks_ok),
            ("acks_bad", s.acks_bad),
            ("dest_errors", s.dest_errors),
            ("members", self.flood.members() as u64),
            ("members_unverified", self.flood.unverified() as u64),
            ("members_joined", m.joined),
            ("members_expired", m.expired),
            ("members_refused", m.refused),
            ("members_evicted", m.evicted),
            ("members_verified", m.verified),
            ("members_unreachable", m.unreachable),
            ("unverified_held", m.held),
            ("peer_lists_limited", m.lists_limited),
            ("control_dropped", m.due_dropped),
        ]
    }

    /// Receive a batch on `fd` into `batch` (appending after `batch.count`),
    /// keeping only accepted frames. `is_self` filters our own multicast echo.
    /// New members get their peer list from `fd`.
    pub fn recv_batch(&mut self, fd: RawFd, slot: usize, batch: &mut Batch, pktinfo: bool, is_self: &dyn Fn(&SocketAddr, &Meta) -> bool) -> io::Result<()> {
        if self.defer && batch.count == 0 {
            self.pending.fill(None); // nothing vouched for from an earlier batch
        }
        let r = self.recv_batch_from(fd, slot, batch, pktinfo, is_self);
        self.send_control(fd);
        r
    }

    fn recv_batch_from(&mut self, fd: RawFd, slot: usize, batch: &mut Batch, pktinfo: bool, is_self: &dyn Fn(&SocketAddr, &Meta) -> bool) -> io::Result<()> {
        if let Some(mut g) = self.gro[slot].take() {
            let now = now_secs();
            let mut r = Ok(());
            while !batch.done() {
                match self.take_gro(&mut g, fd, pktinfo, is_self, now) {
                    Ok(None) => break,
                    Ok(Some(None)) => batch.skipped += 1,
                    Ok(Some(Some((a, b)))) => {
                        if batch.push_view(g.arena(), a, b - a) {
                            self.place(batch.count - 1);
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
        let n = match sys::recv_batch_prefixed(fd, &mut self.prefix[..room], &mut batch.bufs[start..], &mut self.meta[..room], pktinfo) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || is_icmp_report(&e) => return Ok(()),
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
            self.place(keep);
            keep += 1;
        }
        batch.count = keep;
        Ok(())
    }

    /// Encapsulate and send `batch[idx]` from `fd`, each to its destination
    /// (flooded frames once per flood target). Consecutive frames of equal
    /// size to the same peer leave as one UDP GSO send (one trip through the
    /// IP stack per run). Counts are of frames: one whose copies were not all
    /// sent counts as dropped.
    pub fn send_batch(&mut self, fd: RawFd, batch: &Batch, idx: &[usize]) -> SendOutcome {
        let mut out = SendOutcome::default();
        let now = now_secs();
        let mut nowhere = 0;
        let mut planned = 0;
        for (n, &i) in idx.iter().enumerate() {
            if !self.plan_frame(batch, i, now) {
                nowhere += 1;
            }
            if self.plan.len() >= MAX_BATCH || n + 1 == idx.len() {
                let frames = n + 1 - planned;
                planned = n + 1;
                let o = self.send_plan(fd, batch);
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

    /// Send and empty the plan. Destinations whose sends failed for a
    /// reason about them are dropped (`unreachable`); the rest go on.
    fn send_plan(&mut self, fd: RawFd, batch: &Batch) -> SendOutcome {
        let mut out = SendOutcome::default();
        let mut bad = Vec::new();
        for chunk in self.plan.chunks(MAX_BATCH) {
            for (k, &(_, d)) in chunk.iter().enumerate() {
                self.addrs[k] = d;
                self.destlen[k] = sys::std_to_sockaddr(&d, &mut self.dest[k]);
            }
            let (dest, destlen, addrs) = (&self.dest, &self.destlen, &self.addrs);
            let o = send_datagrams(fd, &self.header, chunk.len(), &|k| batch.frame_ref(chunk[k].0), Some(&|k| (&dest[k], destlen[k])), &|a, b| addrs[a] == addrs[b], &mut self.gso, send_patience());
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
            self.unreachable(to);
        }
        out
    }

    /// Encapsulate and send one frame (to every flood target if flooded,
    /// unverified members within their budget). An error about one
    /// destination drops that destination (`unreachable`), not the frame's
    /// other copies; only an error about the socket is returned.
    pub fn send_one(&mut self, fd: RawFd, frame: &[u8]) -> io::Result<usize> {
        let now = now_secs();
        let bytes = vxlan::HEADER_LEN + frame.len();
        let mut to = std::mem::take(&mut self.plan);
        match self.destination(frame, now) {
            Some(d) if self.flood.may_send(d, bytes) => to.push((0, d)),
            Some(_) => {}
            None => self.stats.flood_copies += self.flood.flood(now, bytes, |d| to.push((0, d))) as u64,
        }
        let mut sent = false;
        let mut result = Ok(());
        for &(_, d) in &to {
            let mut ss = sys::zeroed_storage();
            let len = sys::std_to_sockaddr(&d, &mut ss);
            let o = send_datagrams(fd, &self.header, 1, &|_| frame.into(), Some(&|_| (&ss, len)), &|_, _| true, &mut false, send_patience());
            if !o.bad_dest.is_empty() {
                self.unreachable(d);
            }
            if let Some(e) = o.error {
                result = Err(e);
                break;
            }
            sent |= o.sent == 1;
        }
        to.clear();
        self.plan = to;
        result?;
        if sent {
            Ok(frame.len())
        } else {
            Err(super::dropped())
        }
    }

    /// Send the vxvde leave message (a header alone) to every flood target.
    pub fn send_leave(&mut self, fd: RawFd) {
        for d in self.flood.targets(now_secs()) {
            let _ = sys::send_to(fd, &self.header, d);
        }
    }

    /// Receive one datagram, its frame into `buf`. Ok(None): consumed, not a frame.
    pub fn recv_one(&mut self, fd: RawFd, slot: usize, buf: &mut [u8], pktinfo: bool, is_self: &dyn Fn(&SocketAddr, &Meta) -> bool) -> io::Result<Option<usize>> {
        let r = self.recv_one_from(fd, slot, buf, pktinfo, is_self);
        self.send_control(fd);
        r
    }

    fn recv_one_from(&mut self, fd: RawFd, slot: usize, buf: &mut [u8], pktinfo: bool, is_self: &dyn Fn(&SocketAddr, &Meta) -> bool) -> io::Result<Option<usize>> {
        if let Some(mut g) = self.gro[slot].take() {
            let r = self.take_gro(&mut g, fd, pktinfo, is_self, now_secs());
            let out = match r {
                Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                Ok(Some(None)) => Ok(None),
                Ok(Some(Some((a, b)))) => {
                    let n = (b - a).min(buf.len());
                    buf[..n].copy_from_slice(&g.arena()[a..a + n]);
                    self.place(0);
                    Ok(Some(n))
                }
                Err(e) if is_icmp_report(&e) => Ok(None),
                Err(e) => Err(e),
            };
            self.gro[slot] = Some(g);
            return out;
        }
        let n = match sys::recv_batch_prefixed(fd, &mut self.prefix[..1], std::slice::from_mut(&mut &mut *buf), &mut self.meta[..1], pktinfo) {
            Err(e) if is_icmp_report(&e) => return Ok(None),
            r => r?,
        };
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
            Rx::Frame => {
                self.place(0);
                Ok(Some(flen))
            }
            _ => Ok(None),
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
            opt("ttl", Kind::Int { lo: 0, hi: 255 }, OptDefault::Int(1), "TTL / hop limit (default 1 for a group, the system's for peers)"),
            opt("rcvbuf", Kind::Size { min: 0 }, OptDefault::Unset, "SO_RCVBUF size (K/M/G suffixes)"),
            opt("v4", Kind::Flag, OptDefault::Bool(false), "use IPv4"),
            opt("v6", Kind::Flag, OptDefault::Bool(false), "use IPv6"),
            opt("hashsize", Kind::Int { lo: 1, hi: 1 << 24 }, OptDefault::Int(1024), "MAC table size"),
            opt("expiretime", Kind::Int { lo: 1, hi: 1 << 40 }, OptDefault::Int(128), "MAC table entry lifetime (s)"),
            opt("if", Kind::Text, OptDefault::Unset, "network interface for multicast"),
            opt("allow", Kind::Text, OptDefault::Unset, "with unicast peers: source prefixes that may join the flood list"),
            $($extra,)*
        ]
    };
}
pub(crate) use overlay_options;

/// Where flooded frames go, from the address part: nothing → the default
/// group of the family (`v6` selects ff05:56de::1); a multicast address →
/// that group; else a comma-separated list of unicast peers, each `ip`,
/// `[ipv6]`, `host`, optionally `:port` (default `port=`). All of one
/// family: `v4`/`v6` if given (unlike vdeplug4 they also check an explicit
/// address), else the first peer's; a host name gives its address of that
/// family (IPv4 first when nothing says).
pub fn remote_of(t: &Target) -> Result<Remote, OpenError> {
    let port = port_of(t);
    if t.flag("v4") && t.flag("v6") {
        return Err(t.error("v4 and v6 together", "v6"));
    }
    let text = t.address_str();
    let mut want6 = if t.flag("v6") {
        Some(true)
    } else if t.flag("v4") {
        Some(false)
    } else {
        None
    };
    if text.is_empty() {
        return Ok(Remote::Group(if want6 == Some(true) { IpAddr::V6(DEFAULT_V6) } else { IpAddr::V4(DEFAULT_V4) }));
    }
    let listed = text.contains(',');
    let mut peers = Vec::new();
    for entry in text.split(',') {
        let (host, p) = split_host_port(entry).map_err(|m| t.error(m, entry))?;
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => resolve(host, want6).map_err(|m| t.error(m, entry))?,
        };
        let family = if ip.is_ipv6() { 6 } else { 4 };
        if want6.is_some_and(|v6| v6 != ip.is_ipv6()) {
            let why = if peers.is_empty() { "as v4/v6 says" } else { "as the first peer" };
            return Err(t.error(format!("{entry} is IPv{family}; every address must be IPv{} ({why})", 10 - family), entry));
        }
        want6 = Some(ip.is_ipv6());
        if ip.is_multicast() {
            if listed || p.is_some() {
                return Err(t.error(format!("{entry}: a multicast group stands alone (port with /port=), not in a list of peers"), entry));
            }
            return Ok(Remote::Group(ip));
        }
        if ip.is_unspecified() {
            return Err(t.error(format!("{entry} is not a peer address"), entry));
        }
        peers.push(SocketAddr::new(ip, p.unwrap_or(port)));
    }
    Ok(Remote::Peers(peers))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
fn split_host_port(entry: &str) -> Result<(&str, Option<u16>), String> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| format!("bad port {p:?} in {entry:?}"));
    if entry.is_empty() {
        return Err("empty peer in the list".into());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(|| format!("unclosed [ in {entry:?}"))?;
        return match tail {
            "" => Ok((host, None)),
            _ => Ok((host, Some(port(tail.strip_prefix(':').ok_or_else(|| format!("expected :port after ] in {entry:?}"))?)?))),
        };
    }
    match entry.split_once(':') {
        Some((host, p)) if !p.contains(':') => Ok((host, Some(port(p)?))),
        _ => Ok((entry, None)),
    }
}

/// A host name's address of the family asked for (`None`: IPv4 if it has one).
fn resolve(host: &str, want6: Option<bool>) -> Result<IpAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<IpAddr> = (host, 0).to_socket_addrs().map_err(|e| format!("cannot resolve {host:?}: {e}"))?.map(|a| a.ip()).collect();
    let pick = |v6: bool| addrs.iter().copied().find(|a| a.is_ipv6() == v6);
    match want6 {
        Some(v6) => pick(v6).ok_or_else(|| format!("{host:?} has no IPv{} address", if v6 { 6 } else { 4 })),
        None => pick(false).or_else(|| pick(true)).ok_or_else(|| format!("cannot resolve {host:?}: no address")),
    }
}

/// `allow=`: comma-separated prefixes, only with unicast peers.
fn allow_of(t: &Target, remote: &Remote) -> Result<Vec<Prefix>, OpenError> {
    let Some(text) = t.text("allow") else { return Ok(Vec::new()) };
    if matches!(remote, Remote::Group(_)) {
        return Err(t.error("allow= is for unicast peers; a multicast group has no flood list", "allow"));
    }
    text.split(',').map(|p| Prefix::parse(p).map_err(|m| t.error(format!("allow: {m} (quote prefixes: allow='10.0.0.0/8')"), p))).collect()
}

/// The typed configuration shared by both (VNI as given; a vxvde `grp=`
/// has already moved the group).
pub fn config_of(t: &Target, remote: Remote, vni: u32) -> Result<Config, OpenError> {
    let allow = allow_of(t, &remote)?;
    let ttl = ttl_of(t, &remote);
    Ok(Config { remote, port: port_of(t), vni, ttl, ifname: t.text("if"), rcvbuf: t.int("rcvbuf").map(|v| v as usize), hashsize: t.num("hashsize") as usize, expiretime: t.num("expiretime"), allow })
}

pub fn port_of(t: &Target) -> u16 {
    t.num("port") as u16
}

/// `ttl=`: a group's TTL is the table's default unless given; unicast
/// peers keep the system's unless given (None).
fn ttl_of(t: &Target, remote: &Remote) -> Option<u32> {
    let given = t.given("ttl") || matches!(remote, Remote::Group(_));
    given.then(|| t.num("ttl") as u32)
}

use crate::plugins::{OpenError, Target};

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let remote = Remote::Group("239.0.0.1".parse().unwrap());
        Config { remote, port: 4789, vni: 5, ttl: None, ifname: None, rcvbuf: None, hashsize: 64, expiretime: 128, allow: Vec::new() }
    }

    fn overlay(strict: bool, force_port: Option<u16>) -> Overlay {
        let c = cfg();
        Overlay::new(&c, c.flood_list(0), strict, force_port).unwrap()
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
    fn learn_then_unicast_else_flood() {
        let mut ov = overlay(false, Some(4789));
        let peer: SocketAddr = "10.0.0.2:51000".parse().unwrap();
        assert_eq!(ov.destination(&eth(A, B), 10), None, "unknown is flooded");
        assert_eq!(ov.flood.targets(10), &["239.0.0.1:4789".parse().unwrap()], "to the group");
        let hdr = Repr { vni: 5 }.to_bytes();
        assert_eq!(ov.accept(&hdr, &eth([0xff; 6], A), 68, peer, 10), Rx::Frame);
        assert_eq!(ov.destination(&eth(A, B), 10), Some("10.0.0.2:4789".parse().unwrap()), "port forced for vxlan");
        assert_eq!(ov.destination(&eth([0xff; 6], B), 10), None, "broadcast flooded");
        assert_eq!(ov.destination(&eth(A, B), 10 + 129), None, "expired");
        assert_eq!((ov.stats.unicast_out, ov.stats.multicast_out), (1, 3));
        assert_eq!(ov.flood.members(), 0, "no flood list membership with a group");
    }

    #[test]
    fn bad_headers_dropped_and_counted() {
        let mut ov = overlay(true, None);
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
        let mut ov = overlay(true, None);
        let from: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let hdr = Repr { vni: 5 }.to_bytes();
        ov.accept(&hdr, &eth([0xff; 6], A), 68, from, 0);
        assert_eq!(ov.destination(&eth(A, B), 0), Some(from));
        assert_eq!(ov.accept(&hdr, &[], 8, from, 0), Rx::Leave);
        assert_eq!(ov.destination(&eth(A, B), 0), None);
    }

    fn remote(vnl: &str) -> Result<Remote, String> {
        let t = match crate::plugins::resolve(vnl.as_bytes()).map_err(|e| e.msg)? {
            crate::plugins::Resolved::Builtin(_, t) => t,
            crate::plugins::Resolved::Other { .. } => unreachable!(),
        };
        remote_of(&t).map_err(|e| match e {
            OpenError::Vnl(v) => format!("{} [{}]", v.msg, v.part),
            other => other.to_string(),
        })
    }

    fn peers(list: &[&str]) -> Result<Remote, String> {
        Ok(Remote::Peers(list.iter().map(|a| a.parse().unwrap()).collect()))
    }

    #[test]
    fn address_part_group_or_peers() {
        assert_eq!(remote("vxlan://"), Ok(Remote::Group("239.0.0.1".parse().unwrap())));
        assert_eq!(remote("vxlan:///v6"), Ok(Remote::Group("ff05:56de::1".parse().unwrap())));
        assert_eq!(remote("vxvde://ff05::7"), Ok(Remote::Group("ff05::7".parse().unwrap())));
        assert_eq!(remote("vxlan://10.0.0.2"), peers(&["10.0.0.2:4789"]));
        assert_eq!(remote("vxlan://10.0.0.2,10.0.0.3:5000/port=4790"), peers(&["10.0.0.2:4790", "10.0.0.3:5000"]));
        assert_eq!(remote("vxvde://fd00::2,[fd00::3]:7,[fd00::4]"), peers(&["[fd00::2]:14789", "[fd00::3]:7", "[fd00::4]:14789"]));
        assert_eq!(remote("vxlan://localhost:4790"), peers(&["127.0.0.1:4790"]), "a name gives IPv4 first");
        assert_eq!(remote("vxlan://127.0.0.1,localhost"), peers(&["127.0.0.1:4789", "127.0.0.1:4789"]));
    }

    #[test]
    fn address_part_errors_name_the_entry() {
        let err = |v: &str| remote(v).unwrap_err();
        assert!(err("vxlan://10.0.0.2,fd00::1").ends_with("[fd00::1]"), "{}", err("vxlan://10.0.0.2,fd00::1"));
        assert!(err("vxlan://10.0.0.2/v6").contains("IPv4; every address must be IPv6"));
        assert!(err("vxlan://239.1.2.3,10.0.0.2").contains("multicast group stands alone"));
        assert!(err("vxlan://239.1.2.3:99").contains("multicast group stands alone"));
        assert!(err("vxlan://10.0.0.2,,10.0.0.3").contains("empty peer"));
        assert!(err("vxlan://10.0.0.2:0").contains("bad port"));
        assert!(err("vxlan://10.0.0.2:99999").ends_with("[10.0.0.2:99999]"));
        assert!(err("vxlan://[fd00::1").contains("unclosed ["));
        assert!(err("vxlan://0.0.0.0").contains("not a peer address"));
        assert!(err("vxlan://no-such-host.invalid").contains("cannot resolve"));
        assert!(err("vxlan:///v4/v6").contains("v4 and v6 together"));
    }

    #[test]
    fn allow_needs_peers_and_good_prefixes() {
        let cfg = |v: &str| -> Result<Config, String> {
            let t = match crate::plugins::resolve(v.as_bytes()).map_err(|e| e.msg)? {
                crate::plugins::Resolved::Builtin(_, t) => t,
                crate::plugins::Resolved::Other { .. } => unreachable!(),
            };
            let r = remote_of(&t).map_err(|e| e.to_string())?;
            config_of(&t, r, 1).map_err(|e| e.to_string())
        };
        assert_eq!(cfg("vxlan://10.0.0.1/allow='10.0.0.0/8,fd00::/16'").unwrap().allow.len(), 2);
        assert_eq!(cfg("vxlan://10.0.0.1/allow=10.0.0.0%2F8").unwrap().allow.len(), 1);
        assert!(cfg("vxlan://239.1.1.1/allow=10.0.0.0").unwrap_err().contains("unicast peers"));
        assert!(cfg("vxlan://10.0.0.1/allow=10.0.0.0/8").unwrap_err().contains("unknown"), "an unquoted / splits options");
        assert!(cfg("vxlan://10.0.0.1/allow='10.0.0.0/40'").unwrap_err().contains("quote prefixes"));
        assert_eq!(cfg("vxlan://10.0.0.1").unwrap().ttl, None, "unicast keeps the system TTL unless given");
        assert_eq!(cfg("vxlan://10.0.0.1/ttl=9").unwrap().ttl, Some(9));
        assert_eq!(cfg("vxlan://").unwrap().ttl, Some(1), "a group's TTL is the table's default");
        assert_eq!(cfg("vxvde:///ttl=3").unwrap().ttl, Some(3));
    }

    #[test]
    fn flood_list_leaves_ourselves_out() {
        let mut c = cfg();
        c.remote = Remote::Peers(vec!["127.0.0.1:4789".parse().unwrap(), "127.0.0.1:4790".parse().unwrap(), "192.0.2.1:4789".parse().unwrap()]);
        let mut f = c.flood_list(4789);
        assert_eq!(f.targets(0), &["127.0.0.1:4790".parse().unwrap(), "192.0.2.1:4789".parse().unwrap()]);
    }

    /// Broadcasts go to every peer, known unicast to one, in one send_batch.
    #[test]
    fn head_end_replication_on_loopback() {
        let rx: Vec<std::net::UdpSocket> = (0..3).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for r in &rx {
            r.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        }
        let mut c = cfg();
        c.remote = Remote::Peers(rx.iter().map(|r| r.local_addr().unwrap()).collect());
        let mut ov = Overlay::new(&c, c.flood_list(0), true, None).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let hdr = Repr { vni: 5 }.to_bytes();
        ov.accept(&hdr, &eth([0xff; 6], A), 68, rx[1].local_addr().unwrap(), now_secs());
        let mut batch = Batch::new(4);
        for (i, f) in [eth([0xff; 6], B), eth(A, B), eth([0xff; 6], B)].iter().enumerate() {
            batch.bufs[i][..f.len()].copy_from_slice(f);
            batch.lens[i] = f.len();
        }
        batch.count = 3;
        let o = ov.send_batch(tx.as_raw_fd(), &batch, &[0, 1, 2]);
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
        assert_eq!((ov.stats.multicast_out, ov.stats.flood_copies, ov.stats.unicast_out), (2, 6, 1));
    }

    /// Not a test: the per-frame cost of the receive side in user space
    /// (header check and learning, then coalescing for the tap), without
    /// syscalls. `cargo test --release --features python -- --ignored --nocapture per_frame`
    #[test]
    #[ignore]
    fn per_frame_cost_of_receiving_a_train() {
        use crate::offload::coalesce;
        use crate::offload::testutil::{frame, payload, Tcp};
        let mut ov = overlay(true, None);
        let hdr = Repr { vni: 5 }.to_bytes();
        let frames: Vec<Vec<u8>> = (0..44u32).map(|k| frame(&Tcp { seq: k * 1448, payload: payload(1448, k as u8), ..Tcp::default() }, false)).collect();
        let from: SocketAddr = "10.0.0.2:4789".parse().unwrap();
        let mut runs = Vec::with_capacity(64);
        let mut hbuf = [0u8; 256];
        let mut payloads: [&[u8]; 64] = [&[]; 64];
        let rounds = 20_000;
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            for f in &frames {
                assert_eq!(ov.accept(&hdr, f, f.len() + 8, from, 1), Rx::Frame);
            }
            coalesce::plan(frames.len(), &|i| &frames[i][..], &mut runs, 64);
            assert_eq!(runs.len(), 1);
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            assert!(coalesce::super_header(&refs, &mut hbuf, &mut payloads).is_some());
        }
        let ns = t.elapsed().as_nanos() as f64 / (rounds * frames.len()) as f64;
        eprintln!("receive side, user space: {ns:.0} ns per 1448-byte segment");
    }

    /// A member is verified only by the cookie of a probe sent to its
    /// address, in this minute or the one before; probes are answered only
    /// for peers, members and allowed addresses.
    #[test]
    fn probes_verify_members_by_their_cookie() {
        let mut c = cfg();
        c.remote = Remote::Peers(vec!["10.0.0.2:4789".parse().unwrap()]);
        c.allow = vec![Prefix::parse("10.0.0.0/24").unwrap()];
        let mut ov = Overlay::new(&c, c.flood_list(4789), true, None).unwrap();
        let (x, y): (SocketAddr, SocketAddr) = ("10.0.0.7:4789".parse().unwrap(), "10.0.0.8:4789".parse().unwrap());
        let r = Repr { vni: 5 };
        assert_eq!(ov.accept(&r.to_bytes(), &eth([0xff; 6], A), 68, x, 600), Rx::Frame);
        assert_eq!((ov.flood.members(), ov.flood.unverified()), (1, 1));
        let ack = r.control_header(Control::ProbeAck);
        assert_eq!(ov.accept(&ack, &ov.cookie(&y, 10), 16, x, 600), Rx::Control, "another address's cookie");
        assert_eq!(ov.accept(&ack, &ov.cookie(&x, 8), 16, x, 600), Rx::Control, "too old");
        assert_eq!(ov.accept(&ack, &ov.cookie(&x, 10)[..7], 15, x, 600), Rx::Control, "short");
        assert_eq!((ov.stats.acks_ok, ov.stats.acks_bad, ov.flood.unverified()), (0, 3, 1));
        assert_eq!(ov.accept(&ack, &ov.cookie(&x, 9), 16, x, 600), Rx::Control, "last minute's");
        assert_eq!((ov.stats.acks_ok, ov.flood.unverified(), ov.flood.stats.verified), (1, 0, 1));
        let probe = r.control_header(Control::Probe);
        for from in ["10.0.0.2:4789", "10.0.0.7:4789", "10.0.0.9:1", "10.0.1.1:4789"] {
            ov.accept(&probe, &[3; 8], 16, from.parse().unwrap(), 600);
        }
        let answered: Vec<SocketAddr> = ov.acks.iter().map(|a| a.0).collect();
        assert_eq!(answered, ["10.0.0.2:4789", "10.0.0.7:4789", "10.0.0.9:1"].map(|a| a.parse().unwrap()), "not 10.0.1.1: a stranger");
        assert!(ov.acks.iter().all(|a| a.1 == [3; 8]), "the cookie echoed");
        let other = Repr { vni: 6 }.control_header(Control::ProbeAck);
        assert_eq!(ov.accept(&other, &ov.cookie(&y, 10), 16, y, 600), Rx::Drop, "another VNI");
    }

    /// Under an authenticating wrapper, a frame teaches nothing (where its
    /// source MAC lives, membership) until it is vouched for.
    #[test]
    fn deferred_learning_waits_for_authentic() {
        let mut c = cfg();
        c.remote = Remote::Peers(vec!["10.0.0.2:4789".parse().unwrap()]);
        c.allow = vec![Prefix::parse("10.0.0.0/24").unwrap()];
        let mut ov = Overlay::new(&c, c.flood_list(4789), true, None).unwrap();
        ov.defer_learning();
        let hdr = Repr { vni: 5 }.to_bytes();
        let (x, y): (SocketAddr, SocketAddr) = ("10.0.0.7:4789".parse().unwrap(), "10.0.0.8:4789".parse().unwrap());
        assert_eq!(ov.accept(&hdr, &eth([0xff; 6], A), 68, x, 10), Rx::Frame);
        ov.place(0);
        assert_eq!(ov.accept(&hdr, &eth([0xff; 6], B), 68, y, 10), Rx::Frame);
        ov.place(1);
        assert_eq!((ov.destination(&eth(A, B), 10), ov.flood.members()), (None, 0), "nothing learned yet");
        ov.authentic(1);
        ov.authentic(1);
        assert_eq!(ov.destination(&eth(B, A), now_secs()), Some(y), "the authentic one");
        assert_eq!(ov.destination(&eth(A, B), now_secs()), None, "not the other");
        assert_eq!(ov.flood.members(), 1);
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
        let mut ov = Overlay::new(&c, c.flood_list(0), true, None).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bcast: SocketAddr = "127.255.255.255:4789".parse().unwrap();
        ov.accept(&Repr { vni: 5 }.to_bytes(), &eth([0xff; 6], A), 68, bcast, now_secs());
        let mut batch = Batch::new(2);
        for (i, f) in [eth(A, B), eth([0xff; 6], B)].iter().enumerate() {
            batch.bufs[i][..f.len()].copy_from_slice(f);
            batch.lens[i] = f.len();
        }
        batch.count = 2;
        let o = ov.send_batch(tx.as_raw_fd(), &batch, &[0, 1]);
        assert!(o.error.is_none());
        assert_eq!((o.sent, o.dropped, ov.stats.dest_errors), (1, 1, 1));
        assert_eq!(ov.destination(&eth(A, B), now_secs()), None, "forgotten");
        let mut buf = [0u8; 128];
        assert_eq!(rx.recv(&mut buf).unwrap(), 68, "the flooded copy went out");
        assert_eq!(ov.send_one(tx.as_raw_fd(), &eth([0xff; 6], B)).unwrap(), 60);
    }

    #[test]
    fn arbitrary_datagrams_never_panic() {
        let mut ov = overlay(true, None);
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
