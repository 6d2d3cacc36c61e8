//! The overlay's protocol, without I/O (boringtun's `Tunn`, our
//! switch_core.rs): what a received datagram is (`accept`), where a frame
//! goes (`destination`, `route`), and the control messages owed (probe
//! answers, probes, peer lists), drained by the caller with
//! `poll_control`. Time is passed in; the socket side (socket.rs) does the
//! sends and receives.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ring::hmac;
use subtle::ConstantTimeEq;

use super::dns::Names;
use super::options::{Config, Remote};
use crate::mac_table::MacTable;
use crate::transport::flood::{self, Due, FloodList};
use crate::wire::ethernet::{Address, Frame};
use crate::wire::vxlan::{self, Control, Packet, Repr, COOKIE_LEN};

/// A peer's UDP address as a MAC table value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Default for Peer {
    fn default() -> Self {
        Peer(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
    }
}

/// Counters specific to overlays (visible from Python).
#[derive(Debug, Default, Clone, Copy)]
pub struct OverlayStats {
    pub unicast_out: u64,
    /// Frames flooded to the multicast group (members too, if any).
    pub multicast_out: u64,
    /// Frames flooded without multicast: a copy to every peer of the list.
    pub peer_floods_out: u64,
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

/// A control message owed (see `poll_control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// The answer to a probe: its cookie echoed.
    ProbeAck,
    /// A probe to an unverified member.
    Probe,
    /// One datagram of a peer list to a verified member.
    PeerList,
}

/// Peer list payload per datagram (fits any path MTU ≥ 1280 with headers).
const PEER_LIST_BYTES: usize = 1200;
/// Seconds a probe's cookie stays valid (its minute and the one before).
const COOKIE_EPOCH: u64 = 60;

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

/// What the frame at a batch position would teach: (source MAC, peer, datagram bytes).
type Lesson = (Address, SocketAddr, usize);

pub struct Protocol {
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
    /// Probe answers owed (to, cookie).
    acks: Vec<(SocketAddr, [u8; COOKIE_LEN])>,
    /// The peer list being sent: (to, peers, how many went out).
    list: Option<(SocketAddr, Vec<SocketAddr>, usize)>,
    /// Signs probe cookies (random per endpoint).
    cookie_key: hmac::Key,
    /// Where the last source MAC was learned (see `MacTable::unchanged`).
    learned: Option<usize>,
    /// Learning waits for a wrapper's word (`defer_learning`): a frame is
    /// learned from only once `authentic` says it was (seal:// opened it).
    defer: bool,
    /// What the frame at each batch position would teach.
    pending: Vec<Option<Lesson>>,
    /// What the last accepted frame would teach, until placed in `pending`.
    accepted: Option<Lesson>,
    /// The peer list's host names, with their last good answers (None: no names).
    pub names: Option<Names>,
    /// Peers whose MACs were forgotten without a scan: address → the second
    /// they went. An entry at such a peer last seen then or before is stale.
    left: HashMap<SocketAddr, u64>,
    /// When `left` was last cleared of entries older than `expire`.
    left_swept: u64,
    /// The MAC table's expiretime (seconds).
    expire: u64,
    /// The latest time passed in (for removals that come without one).
    clock: u64,
}

/// At most this many peers forgotten lazily (`Protocol::left`); one more
/// costs one scan of the MAC table for all of them.
const MAX_LEFT: usize = 1024;

/// Was an entry last seen at `seen` (seconds, truncated to 32 bits) at or before `t`?
fn seen_by(seen: u32, t: u64) -> bool {
    (t as u32).wrapping_sub(seen) < 1 << 31
}

impl Protocol {
    /// The cookie key is random: None without random numbers.
    /// With host names in the peer list, the fixed peers are those the
    /// names give (see dns.rs), through the flood list's `HostRule`.
    pub fn new(cfg: &Config, flood: FloodList, strict: bool, force_port: Option<u16>) -> Option<Protocol> {
        let cookie_key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new()).ok()?;
        let names = match &cfg.remote {
            Remote::Peers(all) if !cfg.names.is_empty() => Some(Names::new(all, &cfg.names, cfg.v6(), flood.rule())),
            _ => None,
        };
        let mut p = Protocol {
            table: MacTable::new(cfg.hashsize, cfg.expiretime, 0),
            flood,
            header: Repr { vni: cfg.vni }.to_bytes(),
            vni: cfg.vni,
            strict,
            force_port,
            stats: OverlayStats::default(),
            acks: Vec::new(),
            list: None,
            cookie_key,
            learned: None,
            defer: false,
            pending: Vec::new(),
            accepted: None,
            names,
            left: HashMap::new(),
            left_swept: 0,
            expire: cfg.expiretime,
            clock: 0,
        };
        if let Some(n) = &p.names {
            let peers = n.peers(p.flood.rule());
            p.flood.set_fixed(peers);
        }
        Some(p)
    }

    /// The answer to a lookup of peer name `i` (dns.rs's `Resolver`): peers
    /// that appeared are flooded to from now on, those that went are not
    /// and their MACs are forgotten. Returns a line to log, if any.
    pub fn dns_answer(&mut self, i: usize, answer: Result<Vec<IpAddr>, String>) -> Option<String> {
        let names = self.names.as_mut()?;
        let change = names.answer(i, answer, self.flood.rule());
        if !change.added.is_empty() || !change.removed.is_empty() {
            let peers = names.peers(self.flood.rule());
            for gone in self.flood.set_fixed(peers) {
                self.forget_peer(gone);
            }
            self.learned = None;
        }
        change.note
    }

    /// Check a received header, learn the source MAC, or spot a leave message.
    pub fn accept(&mut self, header: &[u8; 8], frame: &[u8], total: usize, from: SocketAddr, now: u64) -> Rx {
        self.clock = self.clock.max(now);
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

    /// Whether learning waits for `authentic`.
    pub fn deferred(&self) -> bool {
        self.defer
    }

    /// A new batch: nothing vouched for from an earlier one.
    pub fn forget_pending(&mut self) {
        self.pending.fill(None);
    }

    /// The frame at batch position `i` of the last receive (0 after a
    /// single one) is authentic: learn from it now.
    pub fn authentic(&mut self, i: usize, now: u64) {
        if let Some((mac, peer, total)) = self.pending.get_mut(i).and_then(Option::take) {
            self.learn(mac, peer, total, now);
        }
    }

    /// The last accepted frame now sits at batch position `i`.
    pub fn place(&mut self, i: usize) {
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
                Ok(cookie) if self.flood.knows(&peer) && self.acks.len() < flood::MAX_DUE => self.acks.push((peer, cookie)),
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
    pub(super) fn cookie(&self, to: &SocketAddr, epoch: u64) -> [u8; COOKIE_LEN] {
        let tag = hmac::sign(&self.cookie_key, &cookie_input(to, epoch));
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&tag.as_ref()[..COOKIE_LEN]);
        c
    }

    /// The next control message owed, written into `msg` (cleared first):
    /// probe answers, then probes to unverified members (within their
    /// budget) and peer lists to verified ones, in the order they fell due.
    /// Report each send with `control_sent`. None: nothing more is owed.
    pub fn poll_control(&mut self, now: u64, msg: &mut Vec<u8>) -> Option<(SocketAddr, Outgoing)> {
        self.clock = self.clock.max(now);
        if !self.left.is_empty() && now != self.left_swept {
            self.left_swept = now;
            self.expire_left(now);
        }
        self.forget_gone();
        msg.clear();
        let r = Repr { vni: self.vni };
        if let Some((to, cookie)) = self.acks.pop() {
            msg.extend_from_slice(&r.control_header(Control::ProbeAck));
            msg.extend_from_slice(&cookie);
            return Some((to, Outgoing::ProbeAck));
        }
        loop {
            if let Some((to, peers, done)) = &mut self.list {
                msg.extend_from_slice(&r.peer_list_header());
                let n = vxlan::emit_peers(&peers[*done..], msg, vxlan::HEADER_LEN + PEER_LIST_BYTES);
                if n > 0 {
                    *done += n;
                    return Some((*to, Outgoing::PeerList));
                }
                msg.clear();
                self.list = None;
            }
            let (to, due) = self.flood.take_due()?;
            match due {
                Due::Probe => {
                    msg.extend_from_slice(&r.control_header(Control::Probe));
                    msg.extend_from_slice(&self.cookie(&to, now / COOKIE_EPOCH));
                    if self.flood.may_send(to, msg.len()) {
                        return Some((to, Outgoing::Probe));
                    }
                    msg.clear();
                }
                Due::PeerList => self.list = Some((to, self.flood.peers_for(to), 0)),
            }
        }
    }

    /// Whether the message `poll_control` gave for `to` went out. A peer
    /// list that failed is not continued. A failure about `to` itself is
    /// the caller's to report (`unreachable`).
    pub fn control_sent(&mut self, to: SocketAddr, what: Outgoing, sent: bool) {
        match (what, sent) {
            (Outgoing::ProbeAck, true) => self.stats.probes_answered += 1,
            (Outgoing::Probe, true) => self.stats.probes_out += 1,
            (Outgoing::PeerList, true) => self.stats.peer_lists_out += 1,
            (Outgoing::PeerList, false) if self.list.as_ref().is_some_and(|l| l.0 == to) => self.list = None,
            (_, false) => {}
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
            self.forget_peer(peer);
        }
        self.forget_gone();
    }

    /// Forget the MACs learned at `peer` without scanning the table: its
    /// entries last seen until now are stale from now on (`destination`).
    /// A scan costs the table's size (up to 2^24 slots) and a leave is one
    /// datagram from anyone, so only every MAX_LEFT peers does one scan
    /// forget the stale entries of them all.
    fn forget_peer(&mut self, peer: SocketAddr) {
        let now = self.clock;
        self.learned = None;
        if self.left.len() >= MAX_LEFT {
            self.expire_left(now);
        }
        if self.left.len() >= MAX_LEFT {
            let left = std::mem::take(&mut self.left);
            self.table.forget_if(|Peer(a), seen| left.get(a).is_some_and(|&t| seen_by(seen, t)));
        }
        self.left.insert(peer, now);
    }

    /// Peers that went more than `expire` ago: every entry learned at them
    /// before has expired.
    fn expire_left(&mut self, now: u64) {
        let expire = self.expire;
        self.left.retain(|_, t| now.saturating_sub(*t) <= expire);
    }

    /// Forget the MACs of every member the flood list removed (left,
    /// evicted, unreachable) since the last call.
    fn forget_gone(&mut self) {
        while let Some(gone) = self.flood.take_gone() {
            self.forget_peer(gone);
        }
    }

    /// Where `frame` goes: Some(the learned peer), or None: flooded. A
    /// query: nothing is counted (`route` counts).
    pub fn destination(&self, frame: &[u8], now: u64) -> Option<SocketAddr> {
        let f = Frame::new_checked(frame).ok()?;
        let (Peer(a), seen) = self.table.lookup_seen(f.dst_addr(), 1, now)?;
        if !self.left.is_empty() && self.left.get(&a).is_some_and(|&t| seen_by(seen, t)) {
            return None; // learned before its peer went
        }
        Some(a)
    }

    /// Send `frame`: each datagram's destination goes to `to` (the learned
    /// peer, or a copy per flood target; unverified members only within
    /// their budget), and the frame is counted. False if it goes nowhere.
    pub fn route(&mut self, frame: &[u8], now: u64, mut to: impl FnMut(SocketAddr)) -> bool {
        self.clock = self.clock.max(now);
        let bytes = vxlan::HEADER_LEN + frame.len();
        match self.destination(frame, now) {
            Some(d) => {
                self.stats.unicast_out += 1;
                if !self.flood.may_send(d, bytes) {
                    return false;
                }
                to(d);
                true
            }
            None => {
                let mut group = false;
                let n = self.flood.flood(now, bytes, |a| {
                    group |= a.ip().is_multicast();
                    to(a)
                });
                *if group { &mut self.stats.multicast_out } else { &mut self.stats.peer_floods_out } += 1;
                self.stats.flood_copies += n as u64;
                n > 0
            }
        }
    }

    /// Counters, overlay's and the flood list's.
    pub fn stats_pairs(&self) -> Vec<(&'static str, u64)> {
        let (s, m) = (&self.stats, &self.flood.stats);
        let mut pairs = vec![
            ("unicast_out", s.unicast_out),
            ("multicast_out", s.multicast_out),
            ("peer_floods_out", s.peer_floods_out),
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
        ];
        if let Some(n) = &self.names {
            let d = n.stats;
            pairs.extend([
                ("dns_peers", n.named_peers() as u64),
                ("dns_lookups", d.lookups),
                ("dns_failures", d.failures),
                ("dns_capped", d.capped),
                ("dns_refused", d.refused),
                ("dns_added", d.added),
                ("dns_removed", d.removed),
            ]);
        }
        pairs
    }
}

/// Most datagrams planned before a send: a batch's copies up to this many
/// are ordered by destination together (see `by_destination`).
pub const MAX_PLAN: usize = 4096;

/// Order a send plan, (frame index, destination) in frame order, so that
/// each destination's datagrams are contiguous, each in its frame order:
/// a batch of floods to N peers then leaves as N runs (one UDP GSO send
/// each, when the frames are of one size) rather than one datagram per
/// frame and peer. Only the order between different destinations changes,
/// which no receiver can see.
pub fn by_destination(plan: &mut [(usize, SocketAddr)]) {
    if plan.windows(2).all(|w| w[0].1 == w[1].1) {
        return; // one destination (unicast to one peer): nothing to order
    }
    // A stable sort: the equal keys (one destination) keep their order.
    plan.sort_by_key(|&(_, d)| d);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{cfg, eth, A, B};
    use super::super::Remote;
    use super::*;
    use crate::transport::flood::{LocalAddrs, Prefix};

    fn overlay(strict: bool, force_port: Option<u16>) -> Protocol {
        let c = cfg();
        Protocol::new(&c, c.flood_list(0, LocalAddrs::default()), strict, force_port).unwrap()
    }

    /// A peer name's new answer: the new address is flooded to, the one
    /// gone is not and its MACs are forgotten; a failure changes nothing.
    #[test]
    fn peer_names_answer_anew() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mut c = cfg();
        c.remote = Remote::Peers(vec![sa("10.0.0.1:4789"), sa("10.0.0.2:4789"), sa("10.0.0.3:4789")]);
        c.names = vec![super::super::PeerName { host: "pods".into(), port: 4789, addrs: vec![sa("10.0.0.2:4789"), sa("10.0.0.3:4789")] }];
        let mut ov = Protocol::new(&c, c.flood_list(4789, LocalAddrs::default()), false, Some(4789)).unwrap();
        let hdr = Repr { vni: 5 }.to_bytes();
        assert_eq!(ov.accept(&hdr, &eth([0xff; 6], A), 68, sa("10.0.0.3:50000"), 10), Rx::Frame);
        assert_eq!(ov.destination(&eth(A, B), 10), Some(sa("10.0.0.3:4789")));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ov.dns_answer(0, Ok(vec![ip("10.0.0.2"), ip("10.0.0.4")])), None);
        assert_eq!(ov.flood.targets(10), &[sa("10.0.0.1:4789"), sa("10.0.0.2:4789"), sa("10.0.0.4:4789")]);
        assert_eq!(ov.destination(&eth(A, B), 10), None, "its MACs are forgotten");
        assert!(ov.dns_answer(0, Err("timed out".into())).is_some_and(|n| n.contains("keeping its 2 addresses")));
        assert_eq!(ov.flood.targets(10).len(), 3, "the last good list is kept");
        let stats: std::collections::HashMap<_, _> = ov.stats_pairs().into_iter().collect();
        assert_eq!((stats["dns_peers"], stats["dns_failures"], stats["dns_added"], stats["dns_removed"]), (2, 1, 1, 1));
    }

    /// A batch of floods, with unicast between: every destination's
    /// datagrams end contiguous and in frame order.
    #[test]
    fn a_plan_is_grouped_by_destination_keeping_each_ones_order() {
        let p = |i: u8| SocketAddr::from(([10, 0, 0, i], 4789));
        let mut plan = Vec::new();
        for f in 0..4 {
            for peer in [3, 1, 2] {
                plan.push((f, p(peer)));
            }
            if f == 1 {
                plan.push((f, p(2))); // a unicast frame between the floods
            }
        }
        let before = plan.clone();
        by_destination(&mut plan);
        let mut runs: Vec<SocketAddr> = plan.iter().map(|&(_, d)| d).collect();
        runs.dedup();
        assert_eq!(runs.len(), 3, "one run per destination: {plan:?}");
        for peer in [1, 2, 3] {
            let of = |v: &[(usize, SocketAddr)]| v.iter().filter(|&&(_, d)| d == p(peer)).map(|&(f, _)| f).collect::<Vec<_>>();
            assert_eq!(of(&plan), of(&before), "peer {peer}: same frames, same order");
        }
    }

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
        assert_eq!((ov.stats.unicast_out, ov.stats.multicast_out), (0, 0), "a query counts nothing");
        let mut to = Vec::new();
        for (f, now) in [(eth(A, B), 10), (eth([0xff; 6], B), 10), (eth(A, B), 10 + 129)] {
            assert!(ov.route(&f, now, |d| to.push(d)));
        }
        assert_eq!(to, ["10.0.0.2:4789", "239.0.0.1:4789", "239.0.0.1:4789"].map(|a| a.parse::<SocketAddr>().unwrap()));
        assert_eq!((ov.stats.unicast_out, ov.stats.multicast_out, ov.stats.flood_copies), (1, 2, 2));
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

    /// A leave is one datagram from anyone: it must not cost a scan of the
    /// whole MAC table (up to 2^24 slots). Peers that went are remembered;
    /// their entries are stale until learned again after the leave, and one
    /// scan per MAX_LEFT peers clears them.
    #[test]
    fn leaves_forget_without_scanning_the_table() {
        let mut c = cfg();
        c.hashsize = 1 << 16;
        let mut ov = Protocol::new(&c, c.flood_list(0, LocalAddrs::default()), true, None).unwrap();
        let hdr = Repr { vni: 5 }.to_bytes();
        let (p, q): (SocketAddr, SocketAddr) = ("10.0.0.2:40000".parse().unwrap(), "10.0.0.3:40000".parse().unwrap());
        ov.accept(&hdr, &eth([0xff; 6], A), 68, p, 10);
        ov.accept(&hdr, &eth([0xff; 6], B), 68, q, 10);
        assert_eq!(ov.accept(&hdr, &[], 8, p, 11), Rx::Leave);
        assert_eq!((ov.destination(&eth(A, B), 11), ov.destination(&eth(B, A), 11)), (None, Some(q)), "only p's MACs go");
        ov.accept(&hdr, &eth([0xff; 6], A), 68, p, 12);
        assert_eq!(ov.destination(&eth(A, B), 12), Some(p), "learned again after it came back");
        let stranger = |i: u32| SocketAddr::new(IpAddr::V4((0x0a01_0000 + i).into()), 4789);
        for i in 0..5000 {
            assert_eq!(ov.accept(&hdr, &[], 8, stranger(i), 13), Rx::Leave);
        }
        assert!(ov.table.scans() <= 5000 / MAX_LEFT as u64, "{} scans for 5000 leaves", ov.table.scans());
        assert_eq!((ov.destination(&eth(A, B), 13), ov.destination(&eth(B, A), 13)), (Some(p), Some(q)), "the others' leaves forget nothing of theirs");
        assert_eq!(ov.accept(&hdr, &[], 8, q, 14), Rx::Leave);
        assert_eq!(ov.destination(&eth(B, A), 14), None);
        let mut msg = Vec::new();
        let _ = ov.poll_control(14 + c.expiretime + 1, &mut msg);
        assert!(ov.left.is_empty(), "forgotten peers are dropped once their entries expired");
    }

    #[test]
    fn probes_verify_members_by_their_cookie() {
        let mut c = cfg();
        c.remote = Remote::Peers(vec!["10.0.0.2:4789".parse().unwrap()]);
        c.allow = vec![Prefix::parse("10.0.0.0/24").unwrap()];
        let mut ov = Protocol::new(&c, c.flood_list(4789, LocalAddrs::default()), true, None).unwrap();
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
        let mut ov = Protocol::new(&c, c.flood_list(4789, LocalAddrs::default()), true, None).unwrap();
        ov.defer_learning();
        let hdr = Repr { vni: 5 }.to_bytes();
        let (x, y): (SocketAddr, SocketAddr) = ("10.0.0.7:4789".parse().unwrap(), "10.0.0.8:4789".parse().unwrap());
        assert_eq!(ov.accept(&hdr, &eth([0xff; 6], A), 68, x, 10), Rx::Frame);
        ov.place(0);
        assert_eq!(ov.accept(&hdr, &eth([0xff; 6], B), 68, y, 10), Rx::Frame);
        ov.place(1);
        assert_eq!((ov.destination(&eth(A, B), 10), ov.flood.members()), (None, 0), "nothing learned yet");
        ov.authentic(1, 10);
        ov.authentic(1, 10);
        assert_eq!(ov.destination(&eth(B, A), 10), Some(y), "the authentic one");
        assert_eq!(ov.destination(&eth(A, B), 10), None, "not the other");
        assert_eq!(ov.flood.members(), 1);
    }

    /// What the core owes is drained by the caller: a probe to a member
    /// that joined unverified, a peer list once it answered; a probe's
    /// answer first; a peer list that failed is not continued.
    #[test]
    fn control_messages_are_drained_by_the_caller() {
        let mut c = cfg();
        c.remote = Remote::Peers(vec!["10.0.0.2:4789".parse().unwrap(), "10.0.0.3:4789".parse().unwrap()]);
        c.allow = vec![Prefix::parse("10.0.0.0/24").unwrap()];
        let mut ov = Protocol::new(&c, c.flood_list(4789, LocalAddrs::default()), true, None).unwrap();
        let r = Repr { vni: 5 };
        let x: SocketAddr = "10.0.0.7:4789".parse().unwrap();
        let mut msg = Vec::new();
        assert_eq!(ov.poll_control(600, &mut msg), None, "nothing owed");
        ov.accept(&r.to_bytes(), &eth([0xff; 6], A), 68, x, 600);
        assert_eq!(ov.poll_control(600, &mut msg), Some((x, Outgoing::Probe)));
        assert_eq!((&msg[..8], &msg[8..]), (&r.control_header(Control::Probe)[..], &ov.cookie(&x, 10)[..]));
        ov.control_sent(x, Outgoing::Probe, true);
        assert_eq!(ov.poll_control(600, &mut msg), None);
        let peer: SocketAddr = "10.0.0.2:4789".parse().unwrap();
        ov.accept(&r.control_header(Control::Probe), &[9; 8], 16, peer, 600);
        ov.accept(&r.control_header(Control::ProbeAck), &ov.cookie(&x, 10), 16, x, 600);
        assert_eq!(ov.poll_control(600, &mut msg), Some((peer, Outgoing::ProbeAck)), "the answer first");
        assert_eq!(msg, [&r.control_header(Control::ProbeAck)[..], &[9; 8]].concat());
        ov.control_sent(peer, Outgoing::ProbeAck, true);
        assert_eq!(ov.poll_control(600, &mut msg), Some((x, Outgoing::PeerList)));
        assert_eq!(&msg[..8], &r.peer_list_header()[..]);
        let listed: Vec<SocketAddr> = vxlan::parse_peers(&msg[8..]).collect();
        assert_eq!(listed, ["10.0.0.2:4789", "10.0.0.3:4789"].map(|a| a.parse().unwrap()), "everyone else we flood to");
        ov.control_sent(x, Outgoing::PeerList, true);
        assert_eq!(ov.poll_control(600, &mut msg), None, "one datagram holds it");
        assert_eq!((ov.stats.probes_out, ov.stats.probes_answered, ov.stats.peer_lists_out), (1, 1, 1));
    }

    /// A peer list longer than one datagram goes out in pieces, and stops
    /// at the first piece that could not be sent.
    #[test]
    fn a_failed_peer_list_is_not_continued() {
        let mut c = cfg();
        c.remote = Remote::Peers((0..600u32).map(|k| SocketAddr::new([10, 0, 1 + (k / 200) as u8, 1 + (k % 200) as u8].into(), 4789)).collect());
        c.allow = vec![Prefix::parse("10.0.0.0/24").unwrap()];
        let mut ov = Protocol::new(&c, c.flood_list(4789, LocalAddrs::default()), true, None).unwrap();
        let r = Repr { vni: 5 };
        let x: SocketAddr = "10.0.0.7:4789".parse().unwrap();
        let mut msg = Vec::new();
        ov.accept(&r.to_bytes(), &eth([0xff; 6], A), 68, x, 600);
        assert_eq!(ov.poll_control(600, &mut msg).map(|m| m.1), Some(Outgoing::Probe));
        ov.accept(&r.control_header(Control::ProbeAck), &ov.cookie(&x, 10), 16, x, 600);
        let mut pieces = 0;
        while let Some((to, what)) = ov.poll_control(600, &mut msg) {
            assert_eq!((to, what), (x, Outgoing::PeerList));
            assert!(msg.len() <= 8 + PEER_LIST_BYTES);
            pieces += 1;
            ov.control_sent(to, what, pieces < 2);
        }
        assert_eq!((pieces, ov.stats.peer_lists_out), (2, 1), "600 peers need more than 2 pieces; the second failed");
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
}
