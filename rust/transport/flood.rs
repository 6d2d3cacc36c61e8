//! Where an overlay floods broadcast, multicast and unknown-unicast frames:
//! its multicast group, or, without multicast, every peer of a list (the
//! kernel vxlan's head-end replication). The list holds the peers named in
//! the address (fixed) and, with `allow=`, members that joined by sending
//! us valid traffic from an allowed prefix; a member is dropped after
//! `expiretime` of silence, when it leaves, or when a send to it fails.
//!
//! A source address can be spoofed, so a member starts *unverified*: until
//! it answers a probe (a cookie only a receiver of our traffic can echo,
//! wire/vxlan.rs) it is sent at most `AMPLIFICATION` times the bytes it
//! sent us, the rule QUIC uses before address validation, and it is the
//! first to go when the table is full. A verified member gets a peer list
//! of everyone we flood to (at most one per address every `LIST_INTERVAL`),
//! so a host that names one member reaches them all. Only plain unicast
//! hosts of our family are ever destinations (`HostRule`). No I/O here;
//! every table is bounded because any host in an allowed prefix can grow it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::wire::vxlan::PROBE_LEN;

/// At most this many joined members (fixed peers are not counted).
pub const MAX_MEMBERS: usize = 1024;
/// An unverified member is sent at most this many times the bytes it sent.
pub const AMPLIFICATION: u64 = 3;
/// Seconds between probes to a member that keeps talking unverified.
pub const PROBE_INTERVAL: u64 = 2;
/// Seconds between two peer lists to the same address.
pub const LIST_INTERVAL: u64 = 10;
/// Addresses remembered as recently sent a peer list.
const MAX_LISTED: usize = 4 * MAX_MEMBERS;
/// Control messages waiting to be sent by the socket side.
pub const MAX_DUE: usize = 256;

/// An address prefix of `allow=`: `10.0.0.0/8`, `fd00::/64`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    net: IpAddr,
    len: u8,
}

impl Prefix {
    pub fn parse(text: &str) -> Result<Prefix, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let net: IpAddr = addr.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| format!("not an address prefix: {text:?}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l.parse::<u8>().ok().filter(|&l| l <= max).ok_or_else(|| format!("bad prefix length in {text:?} (0..{max})"))?,
        };
        Ok(Prefix { net, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            }
        };
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v)) => match v.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(_)) => return false,
            _ => ip,
        };
        // IPv4 sits in the top 32 bits, so a prefix is always the top `len` bits.
        let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len)) };
        bits(ip) & mask == bits(self.net) & mask
    }
}

/// Which addresses may be flood destinations: plain unicast hosts of the
/// endpoint's family. A send to anything else fails (EAFNOSUPPORT for the
/// other family, EACCES for a broadcast) or reaches many hosts at once.
#[derive(Debug, Clone, Default)]
pub struct HostRule {
    pub v6: bool,
    /// Loopback addresses count as hosts only when the endpoint is on loopback.
    pub loopback: bool,
    /// The broadcast address of each local IPv4 subnet.
    pub broadcasts: Vec<Ipv4Addr>,
    /// This host's addresses: our own port at one of them is us.
    pub local: Vec<IpAddr>,
    pub own_port: u16,
}

impl HostRule {
    /// Is `a` a unicast host we may send to (not a group, a broadcast, the
    /// other family in disguise, or a link-local address without a scope)?
    pub fn admits(&self, a: &SocketAddr) -> bool {
        if a.port() == 0 {
            return false;
        }
        match a {
            SocketAddr::V4(s) => {
                let ip = *s.ip();
                let bad = ip.is_unspecified() || ip.octets()[0] == 0 || ip.is_broadcast() || ip.is_multicast() || self.broadcasts.contains(&ip);
                !self.v6 && !bad && (self.loopback || !ip.is_loopback())
            }
            SocketAddr::V6(s) => {
                let ip = *s.ip();
                let seg = ip.segments();
                let mapped = ip.to_ipv4_mapped().is_some();
                let compatible = seg[..6] == [0; 6] && !ip.is_loopback();
                let unscoped_link_local = seg[0] & 0xffc0 == 0xfe80 && s.scope_id() == 0;
                let bad = ip.is_unspecified() || ip.is_multicast() || mapped || compatible || unscoped_link_local;
                self.v6 && !bad && (self.loopback || !ip.is_loopback())
            }
        }
    }

    /// Is `a` this endpoint: our port at one of this host's addresses?
    pub fn is_self(&self, a: &SocketAddr) -> bool {
        a.port() == self.own_port && (a.ip().is_unspecified() || self.local.contains(&a.ip()))
    }
}

/// This host's addresses (read from its interfaces by the caller), and the
/// broadcast address of each local IPv4 subnet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    pub addrs: Vec<IpAddr>,
    pub broadcasts: Vec<Ipv4Addr>,
}

impl LocalAddrs {
    /// From (address, netmask) pairs: a subnet's broadcast is address |
    /// !netmask, for IPv4 prefixes up to /30 (/31 and /32 have none).
    pub fn new(interfaces: &[(IpAddr, Option<IpAddr>)]) -> LocalAddrs {
        let mut broadcasts = Vec::new();
        for &(a, mask) in interfaces {
            if let (IpAddr::V4(a), Some(IpAddr::V4(m))) = (a, mask) {
                let m = u32::from(m);
                if m.leading_ones() <= 30 && m.count_ones() == m.leading_ones() {
                    let b = Ipv4Addr::from(u32::from(a) | !m);
                    if !broadcasts.contains(&b) {
                        broadcasts.push(b);
                    }
                }
            }
        }
        LocalAddrs { addrs: interfaces.iter().map(|&(a, _)| a).collect(), broadcasts }
    }
}

/// Counters of membership changes (visible in the overlay's stats).
#[derive(Debug, Default, Clone, Copy)]
pub struct MemberStats {
    pub joined: u64,
    pub expired: u64,
    /// Allowed sources not added because the table was full of verified members.
    pub refused: u64,
    /// Unverified members pushed out by a newcomer when the table was full.
    pub evicted: u64,
    /// Members that answered a probe.
    pub verified: u64,
    /// Members dropped because a send to them failed (see `unreachable`).
    pub unreachable: u64,
    /// Datagrams not sent to unverified members (over their budget).
    pub held: u64,
    /// Peer lists not sent: one went to that address less than LIST_INTERVAL ago.
    pub lists_limited: u64,
    /// Control messages not queued (MAX_DUE waiting already).
    pub due_dropped: u64,
}

/// A control message the socket side owes an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Ask it to echo a cookie (proves it receives what we send there).
    Probe,
    /// Everyone else we flood to.
    PeerList,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    /// When last heard (seconds).
    heard: u64,
    /// It echoed a probe's cookie: it receives what we send to its address.
    verified: bool,
    /// While unverified: bytes received from it, bytes granted up front
    /// (a probe, for members introduced by a peer list), bytes sent to it.
    received: u64,
    grant: u64,
    sent: u64,
    /// When it was last probed.
    probed: u64,
    /// Its place in the join order (see `FloodList::joins`).
    seq: u64,
}

impl Member {
    fn new(now: u64, verified: bool, seq: u64) -> Member {
        Member { heard: now, verified, received: 0, grant: 0, sent: 0, probed: now, seq }
    }

    /// Bytes it may still be sent before it proves it receives them.
    fn budget(&self) -> u64 {
        (AMPLIFICATION * self.received + self.grant).saturating_sub(self.sent)
    }
}

#[derive(Debug)]
pub struct FloodList {
    fixed: Vec<SocketAddr>,
    /// The usual port of peers (`port=`).
    port: u16,
    allow: Vec<Prefix>,
    rule: HostRule,
    members: HashMap<SocketAddr, Member>,
    /// How many members are unverified (0: no budget to check on the fast path).
    unverified: usize,
    /// Unverified members in the order they joined, (address, seq); entries
    /// of members since gone or verified are skipped and compacted away.
    joins: VecDeque<(SocketAddr, u64)>,
    next_seq: u64,
    expire: u64,
    /// fixed + members, the order datagrams go out in (rebuilt lazily).
    targets: Vec<SocketAddr>,
    targets_stale: bool,
    swept: u64,
    /// The last (fixed peer or verified member, second) refreshed: skips the lookup for a burst.
    last: Option<(SocketAddr, u64)>,
    /// The last destination found a fixed peer or verified member (`may_send`'s fast path).
    last_sent: Option<SocketAddr>,
    /// The usual port, if some fixed peer has another (see `listed_port`).
    odd_ports: Option<u16>,
    /// Addresses sent a peer list → when.
    listed: HashMap<SocketAddr, u64>,
    /// Control messages owed, drained by the socket side (`take_due`).
    due: Vec<(SocketAddr, Due)>,
    /// Members removed (left, evicted, unreachable) whose MACs the overlay
    /// should forget (`take_gone`); bounded by what is removed between drains.
    gone: Vec<SocketAddr>,
    pub stats: MemberStats,
}

impl FloodList {
    /// Flood to `fixed` (a group, or peers, usually at `port`); with a
    /// non-empty `allow`, sources in those prefixes that `rule` admits join
    /// until `expire` seconds of silence.
    pub fn new(fixed: Vec<SocketAddr>, port: u16, allow: Vec<Prefix>, expire: u64, rule: HostRule) -> FloodList {
        let targets = fixed.clone();
        let odd_ports = fixed.iter().any(|a| a.port() != port).then_some(port);
        FloodList {
            fixed,
            port,
            allow,
            rule,
            members: HashMap::new(),
            unverified: 0,
            joins: VecDeque::new(),
            next_seq: 0,
            expire,
            targets,
            targets_stale: false,
            swept: 0,
            last: None,
            last_sent: None,
            odd_ports,
            listed: HashMap::new(),
            due: Vec::new(),
            gone: Vec::new(),
            stats: MemberStats::default(),
        }
    }

    /// Every destination of a flooded frame at `now`, unverified members
    /// included (see `flood` for the copies that may really go out).
    pub fn targets(&mut self, now: u64) -> &[SocketAddr] {
        self.sweep(now);
        self.refresh();
        &self.targets
    }

    /// Call `send` for each destination of a flooded datagram of `bytes`
    /// at `now`, leaving out unverified members over their budget (and
    /// charging the others). Returns how many copies go out.
    pub fn flood(&mut self, now: u64, bytes: usize, mut send: impl FnMut(SocketAddr)) -> usize {
        self.sweep(now);
        self.refresh();
        let mut n = 0;
        for k in 0..self.targets.len() {
            let to = self.targets[k];
            if self.may_send(to, bytes) {
                send(to);
                n += 1;
            }
        }
        n
    }

    /// May a datagram of `bytes` go to `to`? Always, but to an unverified
    /// member over its budget; charges that budget.
    /// With `allow=`, only fixed peers and members are destinations: a
    /// source outside them (or one evicted) gets nothing, whatever MAC it
    /// taught the table.
    pub fn may_send(&mut self, to: SocketAddr, bytes: usize) -> bool {
        if self.allow.is_empty() || (self.unverified == 0 && self.last_sent == Some(to)) {
            return true;
        }
        match self.members.get_mut(&to) {
            Some(m) if !m.verified => {
                if m.budget() < bytes as u64 {
                    self.stats.held += 1;
                    return false;
                }
                m.sent += bytes as u64;
                true
            }
            Some(_) => {
                self.last_sent = Some(to);
                true
            }
            None if self.fixed.contains(&to) => {
                self.last_sent = Some(to);
                true
            }
            None => {
                self.stats.held += 1;
                false
            }
        }
    }

    fn sweep(&mut self, now: u64) {
        if now == self.swept {
            return;
        }
        self.swept = now;
        if !self.members.is_empty() {
            let (before, expire) = (self.members.len(), self.expire);
            self.members.retain(|_, m| now.saturating_sub(m.heard) <= expire);
            if self.members.len() != before {
                self.stats.expired += (before - self.members.len()) as u64;
                self.unverified = self.members.values().filter(|m| !m.verified).count();
                self.last = None;
                self.last_sent = None;
                self.rebuild();
            }
        }
        if !self.listed.is_empty() {
            self.listed.retain(|_, at| now.saturating_sub(*at) < LIST_INTERVAL);
        }
    }

    /// A valid datagram of `bytes` for our VNI came from `from`: refresh it,
    /// credit its budget, or add it as an unverified member. A member that
    /// is not verified is owed a probe (again every PROBE_INTERVAL while it talks).
    pub fn heard(&mut self, from: SocketAddr, bytes: usize, now: u64) {
        if self.allow.is_empty() || self.last == Some((from, now)) {
            return;
        }
        if let Some(m) = self.members.get_mut(&from) {
            m.heard = now;
            if m.verified {
                self.last = Some((from, now));
                return;
            }
            m.received += bytes as u64;
            if now.saturating_sub(m.probed) >= PROBE_INTERVAL {
                m.probed = now;
                self.owe(from, Due::Probe);
            }
            return;
        }
        if self.fixed.contains(&from) {
            self.last = Some((from, now));
            return;
        }
        if self.join(from, now, false) {
            if let Some(m) = self.members.get_mut(&from) {
                m.received = bytes as u64;
            }
            self.owe(from, Due::Probe);
        }
    }

    /// `from` echoed a probe's cookie (already checked): it receives what we
    /// send there. A member becomes verified, an allowed newcomer joins
    /// verified; either is owed a peer list. Returns true when it changed.
    pub fn acked(&mut self, from: SocketAddr, now: u64) -> bool {
        if self.allow.is_empty() || self.fixed.contains(&from) || self.rule.is_self(&from) {
            return false;
        }
        match self.members.get_mut(&from) {
            Some(m) if m.verified => return false,
            Some(m) => {
                m.verified = true;
                m.heard = now;
                self.unverified -= 1;
            }
            None => {
                if !self.join(from, now, true) {
                    return false;
                }
            }
        }
        self.stats.verified += 1;
        self.owe_list(from, now);
        true
    }

    /// A peer list of `bytes` came from `from`. It is believed only from a
    /// fixed peer or a verified member, and only for admitted, allowed
    /// addresses that are not us. Each newcomer joins unverified with a
    /// grant of one probe, owed at once; what a list can make us send is
    /// those probes, at most AMPLIFICATION × its size. Returns how many joined.
    pub fn introduced(&mut self, from: SocketAddr, peers: impl Iterator<Item = SocketAddr>, bytes: usize, now: u64) -> usize {
        let trusted = self.fixed.contains(&from) || self.members.get(&from).is_some_and(|m| m.verified);
        if self.allow.is_empty() || !trusted {
            return 0;
        }
        let mut joined = 0;
        let room = (AMPLIFICATION as usize * bytes / PROBE_LEN).min(MAX_MEMBERS);
        for p in peers {
            if joined == room {
                break;
            }
            if self.due.len() >= MAX_DUE {
                self.stats.due_dropped += 1;
                break;
            }
            if !self.members.contains_key(&p) && !self.rule.is_self(&p) && self.join(p, now, false) {
                if let Some(m) = self.members.get_mut(&p) {
                    m.grant = PROBE_LEN as u64;
                }
                self.owe(p, Due::Probe);
                joined += 1;
            }
        }
        joined
    }

    /// Everyone we flood to but `to` and unverified members: what `to` is told.
    pub fn peers_for(&self, to: SocketAddr) -> Vec<SocketAddr> {
        let verified = self.members.iter().filter(|(_, m)| m.verified).map(|(a, _)| a);
        self.fixed.iter().chain(verified).copied().filter(|&a| a != to).collect()
    }

    /// A member removed since the last call, if any (its MACs should go).
    pub fn take_gone(&mut self) -> Option<SocketAddr> {
        self.gone.pop()
    }

    /// The next control message owed, if any.
    pub fn take_due(&mut self) -> Option<(SocketAddr, Due)> {
        self.due.pop()
    }

    fn owe(&mut self, to: SocketAddr, what: Due) {
        if self.due.len() < MAX_DUE {
            self.due.push((to, what));
        } else {
            self.stats.due_dropped += 1;
        }
    }

    fn owe_list(&mut self, to: SocketAddr, now: u64) {
        if self.listed.get(&to).is_some_and(|&at| now.saturating_sub(at) < LIST_INTERVAL) || self.listed.len() >= MAX_LISTED {
            self.stats.lists_limited += 1;
            return;
        }
        self.listed.insert(to, now);
        self.owe(to, Due::PeerList);
    }

    fn join(&mut self, from: SocketAddr, now: u64, verified: bool) -> bool {
        if !self.allowed(&from) || self.rule.is_self(&from) || self.fixed.contains(&from) {
            return false;
        }
        if self.members.len() >= MAX_MEMBERS && !self.evict_unverified() {
            self.stats.refused += 1;
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.members.insert(from, Member::new(now, verified, seq));
        if !verified {
            self.unverified += 1;
            self.joins.push_back((from, seq));
            if self.joins.len() > 2 * MAX_MEMBERS {
                let members = &self.members;
                self.joins.retain(|(a, q)| members.get(a).is_some_and(|m| m.seq == *q && !m.verified));
            }
        }
        self.stats.joined += 1;
        self.rebuild();
        true
    }

    /// Make room: drop the unverified member that joined first (amortized
    /// O(1), so a flood of spoofed sources costs little per datagram).
    fn evict_unverified(&mut self) -> bool {
        while let Some((a, q)) = self.joins.pop_front() {
            if self.members.get(&a).is_some_and(|m| m.seq == q && !m.verified) {
                self.remove(a);
                self.stats.evicted += 1;
                return true;
            }
        }
        false
    }

    fn remove(&mut self, a: SocketAddr) -> bool {
        let Some(m) = self.members.remove(&a) else { return false };
        self.unverified -= usize::from(!m.verified);
        self.last = None;
        self.last_sent = None;
        if self.gone.len() < MAX_DUE {
            self.gone.push(a); // else its MACs just expire
        }
        self.rebuild();
        true
    }

    /// The fixed peers are now `fixed` (peer names answered anew, dns.rs):
    /// a new one that was a member is one no more; returns the ones that
    /// went, whose MACs the overlay forgets.
    pub fn set_fixed(&mut self, fixed: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let now: HashSet<SocketAddr> = fixed.iter().copied().collect();
        let before: HashSet<SocketAddr> = self.fixed.iter().copied().collect();
        let gone = self.fixed.iter().copied().filter(|a| !now.contains(a)).collect();
        for a in fixed.iter().filter(|a| !before.contains(a)) {
            if let Some(m) = self.members.remove(a) {
                self.unverified -= usize::from(!m.verified);
            }
        }
        self.odd_ports = fixed.iter().any(|a| a.port() != self.port).then_some(self.port);
        self.fixed = fixed;
        self.last = None;
        self.last_sent = None;
        self.rebuild();
        gone
    }

    /// Which addresses may be destinations.
    pub fn rule(&self) -> &HostRule {
        &self.rule
    }

    /// `from` left (vxvde's header-only datagram). True if it was a member.
    pub fn forget(&mut self, from: SocketAddr) -> bool {
        self.remove(from)
    }

    /// A send to `to` failed for a reason about `to` (no route, a broadcast,
    /// the wrong family …): a member is dropped. True if it was one.
    pub fn unreachable(&mut self, to: SocketAddr) -> bool {
        let gone = self.remove(to);
        self.stats.unreachable += u64::from(gone);
        gone
    }

    /// The port a vxlan datagram from `from` is answered on, if not the
    /// usual one: vxlan peers listen on `port=` whatever port they send
    /// from, except peers listed as ip:port (`from` itself, else the one
    /// listed at its address).
    pub fn listed_port(&self, from: SocketAddr) -> Option<u16> {
        let usual = self.odd_ports?;
        if self.fixed.contains(&from) {
            return Some(from.port());
        }
        self.fixed.iter().find(|a| a.ip() == from.ip() && a.port() != usual).map(SocketAddr::port)
    }

    /// Is `a` a fixed peer, a member, or an allowed address (whose probes we answer)?
    pub fn knows(&self, a: &SocketAddr) -> bool {
        self.fixed.contains(a) || self.members.contains_key(a) || self.allowed(a)
    }

    /// Could `a` be a member: a host `HostRule` admits, in an allowed prefix?
    fn allowed(&self, a: &SocketAddr) -> bool {
        self.rule.admits(a) && self.allow.iter().any(|p| p.contains(a.ip()))
    }

    pub fn members(&self) -> usize {
        self.members.len()
    }

    pub fn unverified(&self) -> usize {
        self.unverified
    }

    /// The members changed: `targets` is rebuilt when next needed (a flood
    /// of spoofed joins and evictions costs no O(members) work each).
    fn rebuild(&mut self) {
        self.targets_stale = true;
    }

    fn refresh(&mut self) {
        if self.targets_stale {
            self.targets_stale = false;
            self.targets.clear();
            self.targets.extend_from_slice(&self.fixed);
            self.targets.extend(self.members.keys());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn local_broadcasts_from_netmasks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let l = LocalAddrs::new(&[
            (ip("10.1.2.3"), Some(ip("255.255.255.0"))),
            (ip("10.1.2.4"), Some(ip("255.255.255.0"))),
            (ip("192.0.2.1"), Some(ip("255.255.255.254"))),
            (ip("192.0.2.9"), Some(ip("255.0.255.0"))),
            (ip("fd00::1"), Some(ip("ffff:ffff::"))),
            (ip("172.16.0.1"), None),
        ]);
        assert_eq!(l.broadcasts, ["10.1.2.255".parse::<Ipv4Addr>().unwrap()], "one per subnet; none for /31, odd masks, IPv6");
        assert_eq!(l.addrs.len(), 6);
    }

    #[test]
    fn prefixes() {
        let p = Prefix::parse("10.1.0.0/16").unwrap();
        assert!(p.contains("10.1.200.3".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:10.1.0.9".parse().unwrap()), "v4-mapped");
        assert!(!p.contains("fd00::1".parse().unwrap()));
        let one = Prefix::parse("192.168.1.7").unwrap();
        assert!(one.contains("192.168.1.7".parse().unwrap()) && !one.contains("192.168.1.8".parse().unwrap()));
        let all = Prefix::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let v6 = Prefix::parse("[fd00:1::]/32").unwrap();
        assert!(v6.contains("fd00:1:ffff::2".parse().unwrap()) && !v6.contains("fd00:2::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Prefix::parse("::/0").unwrap().contains("2001:db8::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fd00::/129", "host/8", "10.0.0.0/x", ""] {
            assert!(Prefix::parse(bad).is_err(), "{bad}");
        }
    }

    /// A rule for IPv4 hosts off loopback, with 10.0.0.255 a local broadcast
    /// and 10.0.0.9 our address.
    fn rule() -> HostRule {
        HostRule { v6: false, loopback: false, broadcasts: vec!["10.0.0.255".parse().unwrap()], local: vec!["10.0.0.9".parse().unwrap()], own_port: 4789 }
    }

    fn list(fixed: &[&str], allow: &str) -> FloodList {
        let allow = if allow.is_empty() { vec![] } else { vec![Prefix::parse(allow).unwrap()] };
        FloodList::new(fixed.iter().map(|a| sa(a)).collect(), 4789, allow, 10, rule())
    }

    /// Join by talking, then verify (as the overlay does on a right cookie).
    fn verified(f: &mut FloodList, a: &str, now: u64) {
        f.heard(sa(a), 100, now);
        assert!(f.acked(sa(a), now), "{a}");
    }

    #[test]
    fn fixed_only_never_changes() {
        let mut f = FloodList::new(vec![sa("10.0.0.2:4789"), sa("10.0.0.3:4790")], 4789, vec![], 10, rule());
        f.heard(sa("10.0.0.7:4789"), 100, 1);
        assert!(!f.acked(sa("10.0.0.7:4789"), 1));
        assert_eq!(f.targets(1000), &[sa("10.0.0.2:4789"), sa("10.0.0.3:4790")]);
        assert_eq!(f.members(), 0);
        assert_eq!((f.listed_port(sa("10.0.0.3:999")), f.listed_port(sa("10.0.0.2:999"))), (Some(4790), None));
    }

    #[test]
    fn allowed_sources_join_and_expire() {
        let mut f = list(&["10.0.0.2:4789"], "10.0.0.0/24");
        f.heard(sa("10.0.0.2:4789"), 100, 0); // a fixed peer is not a member
        f.heard(sa("10.0.1.5:4789"), 100, 0); // outside the prefix
        f.heard(sa("10.0.0.5:4789"), 100, 0);
        assert_eq!(f.targets(0), &[sa("10.0.0.2:4789"), sa("10.0.0.5:4789")]);
        f.heard(sa("10.0.0.5:4789"), 100, 8); // refreshed
        assert_eq!(f.targets(15).len(), 2);
        assert_eq!(f.targets(19).len(), 1, "silent for more than expiretime");
        assert_eq!((f.stats.joined, f.stats.expired), (1, 1));
        f.heard(sa("10.0.0.5:4789"), 100, 20);
        f.forget(sa("10.0.0.5:4789"));
        assert_eq!(f.targets(20), &[sa("10.0.0.2:4789")], "left");
        f.heard(sa("10.0.0.5:4789"), 100, 20);
        assert_eq!(f.targets(20).len(), 2, "rejoins after leaving, even in the same second");
        assert_eq!(f.unverified(), 1);
    }

    #[test]
    fn only_plain_unicast_hosts_of_our_family_are_admitted() {
        let r = rule();
        for bad in ["10.0.0.255:4789", "255.255.255.255:4789", "239.1.1.1:4789", "0.0.0.0:4789", "0.1.2.3:4789", "127.0.0.1:4789", "10.0.0.5:0", "[fd00::1]:4789"] {
            assert!(!r.admits(&sa(bad)), "{bad}");
        }
        assert!(r.admits(&sa("10.0.0.5:4789")) && r.admits(&sa("10.0.0.254:4789")));
        assert!(HostRule { loopback: true, ..rule() }.admits(&sa("127.0.0.5:4789")), "loopback, when we are on it");
        let r6 = HostRule { v6: true, ..rule() };
        for bad in ["[::ffff:10.9.1.4]:4789", "[::10.9.1.4]:4789", "[::]:4789", "[::1]:4789", "[ff02::1]:4789", "[fe80::1]:4789", "10.0.0.5:4789"] {
            assert!(!r6.admits(&sa(bad)), "{bad}");
        }
        assert!(r6.admits(&sa("[fd00::1]:4789")) && r6.admits(&sa("[fe80::1%2]:4789")), "a scoped link-local address is a host");
    }

    #[test]
    fn peer_lists_only_from_trusted_peers_and_for_admitted_addresses() {
        let mut f = list(&["10.0.0.2:4789"], "10.0.0.0/24");
        let offered = [sa("10.0.0.5:4789"), sa("10.9.0.1:4789"), sa("10.0.0.9:4789"), sa("10.0.0.2:4789"), sa("10.0.0.8:0"), sa("10.0.0.255:4789")];
        assert_eq!(f.introduced(sa("10.0.0.7:4789"), offered.into_iter(), 1208, 0), 0, "from a stranger");
        f.heard(sa("10.0.0.7:4789"), 100, 0);
        assert_eq!(f.introduced(sa("10.0.0.7:4789"), offered.into_iter(), 1208, 0), 0, "from an unverified member");
        assert_eq!(f.introduced(sa("10.0.0.2:4789"), offered.into_iter(), 1208, 0), 1, "outside allow, ourselves, fixed, port 0 and the broadcast are left out");
        assert_eq!(f.members(), 2);
        assert!(f.targets(0).contains(&sa("10.0.0.5:4789")));
        assert_eq!(f.peers_for(sa("10.0.0.9:1")), vec![sa("10.0.0.2:4789")], "unverified members are not listed");
        let mut open = FloodList::new(vec![sa("10.0.0.2:4789")], 4789, vec![Prefix::parse("0.0.0.0/0").unwrap()], 10, rule());
        let bad = [sa("239.1.1.1:4789"), sa("255.255.255.255:4789"), sa("0.0.0.0:4789")];
        assert_eq!(open.introduced(sa("10.0.0.2:4789"), bad.into_iter(), 1208, 0), 0, "only hosts can be members");
        let mut closed = FloodList::new(vec![sa("10.0.0.2:4789")], 4789, vec![], 10, rule());
        assert_eq!(closed.introduced(sa("10.0.0.2:4789"), offered.into_iter(), 1208, 0), 0, "no allow=: fixed list only");
    }

    #[test]
    fn probes_are_owed_and_verification_earns_one_peer_list_per_interval() {
        let mut f = list(&["10.0.0.2:4789"], "10.0.0.0/24");
        let a = sa("10.0.0.6:4789");
        f.heard(a, 100, 1);
        assert_eq!(f.take_due(), Some((a, Due::Probe)), "a newcomer is probed");
        f.heard(a, 100, 2);
        assert_eq!(f.take_due(), None, "not again at once");
        f.heard(a, 100, 1 + PROBE_INTERVAL);
        assert_eq!(f.take_due(), Some((a, Due::Probe)), "again while it talks unverified");
        assert!(f.acked(a, 4));
        assert_eq!(f.take_due(), Some((a, Due::PeerList)));
        assert!(!f.acked(a, 4), "only once");
        f.forget(a);
        verified(&mut f, "10.0.0.6:4789", 5);
        assert_eq!(f.take_due(), Some((a, Due::Probe)), "the rejoin's probe; no second list within LIST_INTERVAL");
        assert_eq!(f.take_due(), None);
        assert_eq!(f.stats.lists_limited, 1);
        f.forget(a);
        verified(&mut f, "10.0.0.6:4789", 5 + LIST_INTERVAL);
        assert_eq!((f.take_due(), f.take_due()), (Some((a, Due::PeerList)), Some((a, Due::Probe))), "a list again after the interval");
        let fixed = sa("10.0.0.2:4789");
        assert!(!f.acked(fixed, 30) && f.take_due().is_none(), "fixed peers need no verification");
    }

    /// Unverified: at most AMPLIFICATION × the bytes received, plus a grant;
    /// verified or fixed: no limit.
    #[test]
    fn unverified_members_get_at_most_three_times_what_they_sent() {
        let mut f = list(&["10.0.0.2:4789"], "10.0.0.0/24");
        let (a, b) = (sa("10.0.0.5:4789"), sa("10.0.0.6:4789"));
        f.heard(a, 100, 0);
        verified(&mut f, "10.0.0.6:4789", 0);
        let mut got = HashMap::new();
        for _ in 0..10 {
            f.flood(0, 70, |to| *got.entry(to).or_insert(0) += 70);
        }
        assert_eq!((got[&sa("10.0.0.2:4789")], got[&b], got[&a]), (700, 700, 280), "300 bytes for a: four copies of 70");
        assert_eq!(f.stats.held, 6);
        assert!(!f.may_send(a, 21) && f.may_send(a, 20), "unicast shares the budget");
        f.heard(a, 10, 0);
        assert!(f.may_send(a, 30) && !f.may_send(a, 1), "new bytes, new budget");
        assert!(f.acked(a, 0));
        assert!(f.may_send(a, 100_000), "verified");
        f.introduced(sa("10.0.0.2:4789"), [sa("10.0.0.7:4789")].into_iter(), 1208, 0);
        assert!(f.may_send(sa("10.0.0.7:4789"), PROBE_LEN) && !f.may_send(sa("10.0.0.7:4789"), 1), "introduced: one probe's grant");
    }

    #[test]
    fn members_are_bounded_and_unverified_ones_go_first() {
        let mut f = FloodList::new(vec![], 4789, vec![Prefix::parse("10.0.0.0/8").unwrap()], 100_000, rule());
        let addr = |i: u32| SocketAddr::new(IpAddr::V4((0x0a01_0000 + i).into()), 4789);
        for i in 0..(MAX_MEMBERS as u32 + 50) {
            f.heard(addr(i), 100, 1 + u64::from(i));
        }
        assert_eq!(f.members(), MAX_MEMBERS);
        assert_eq!((f.stats.refused, f.stats.evicted), (0, 50));
        assert!(!f.members.contains_key(&addr(0)) && f.members.contains_key(&addr(50)), "the first to join went first");
        let real = sa("10.0.0.1:4789");
        f.heard(real, 100, 2000);
        assert!(f.acked(real, 2000), "a real host gets in");
        for i in 2000..4000 {
            f.heard(addr(i), 100, 2001);
        }
        assert!(f.members.get(&real).is_some_and(|m| m.verified), "and is never pushed out by unverified newcomers");
        assert!(f.acked(addr(5000), 2002), "an answer alone makes room");
        for i in 0..(MAX_MEMBERS as u32) {
            f.acked(addr(i + 10_000), 2003);
        }
        assert_eq!(f.members(), MAX_MEMBERS);
        assert_eq!(f.unverified(), 0);
        f.heard(addr(20_000), 100, 2003);
        assert!(f.stats.refused > 0, "only a table of verified members refuses");
        assert_eq!(f.targets(2003).len(), MAX_MEMBERS);
    }

    /// With allow=, unicast goes only to fixed peers and members; removed
    /// members are reported so their MACs go too; we never join ourselves.
    #[test]
    fn with_allow_only_peers_and_members_are_destinations() {
        let mut f = list(&["10.0.0.2:4789"], "10.0.0.0/24");
        assert!(f.may_send(sa("10.0.0.2:4789"), 1000) && f.may_send(sa("10.0.0.2:4789"), 1000));
        assert!(!f.may_send(sa("10.9.9.9:4789"), 60), "a source outside allow gets nothing");
        verified(&mut f, "10.0.0.5:4789", 0);
        assert!(f.may_send(sa("10.0.0.5:4789"), 100_000));
        f.forget(sa("10.0.0.5:4789"));
        assert!(!f.may_send(sa("10.0.0.5:4789"), 60), "gone: nothing more");
        assert_eq!((f.take_gone(), f.take_gone()), (Some(sa("10.0.0.5:4789")), None));
        f.heard(sa("10.0.0.9:4789"), 100, 1);
        assert!(!f.acked(sa("10.0.0.9:4789"), 1) && f.members() == 0, "ourselves (our address, our port) never joins");
        f.heard(sa("10.0.0.9:4790"), 100, 1);
        assert_eq!(f.members(), 1, "our address at another port is another endpoint");
    }

    #[test]
    fn fixed_peers_change_with_a_new_answer() {
        let mut f = list(&["10.0.0.2:4789", "10.0.0.3:4789"], "10.0.0.0/24");
        verified(&mut f, "10.0.0.5:4789", 0);
        assert!(f.may_send(sa("10.0.0.3:4789"), 60), "the last destination is cached");
        let gone = f.set_fixed(vec![sa("10.0.0.2:4789"), sa("10.0.0.5:4789"), sa("10.0.0.6:4790")]);
        assert_eq!(gone, [sa("10.0.0.3:4789")]);
        assert_eq!(f.targets(0), &[sa("10.0.0.2:4789"), sa("10.0.0.5:4789"), sa("10.0.0.6:4790")], "a member now fixed is listed once");
        assert_eq!(f.members(), 0);
        assert!(!f.may_send(sa("10.0.0.3:4789"), 60), "gone: nothing more, cache or not");
        assert_eq!(f.listed_port(sa("10.0.0.6:1")), Some(4790));
    }

    #[test]
    fn an_unreachable_member_is_dropped_and_the_due_queue_is_bounded() {
        let mut f = list(&["10.0.0.2:4789"], "10.0.0.0/24");
        verified(&mut f, "10.0.0.5:4789", 0);
        assert!(f.unreachable(sa("10.0.0.5:4789")));
        assert!(!f.unreachable(sa("10.0.0.2:4789")), "a fixed peer stays");
        assert_eq!((f.targets(0).len(), f.stats.unreachable), (1, 1));
        let mut big = FloodList::new(vec![sa("10.0.0.2:4789")], 4789, vec![Prefix::parse("10.0.0.0/8").unwrap()], 100, rule());
        let many: Vec<SocketAddr> = (0..2000u32).map(|i| SocketAddr::new(IpAddr::V4((0x0a02_0000 + i).into()), 4789)).collect();
        for chunk in many.chunks(60) {
            big.introduced(sa("10.0.0.2:4789"), chunk.iter().copied(), 1208, 0);
        }
        assert_eq!(big.due.len(), MAX_DUE, "no more owed than the queue holds");
        assert_eq!(big.members(), MAX_DUE);
        let mut small = FloodList::new(vec![sa("10.0.0.2:4789")], 4789, vec![Prefix::parse("10.0.0.0/8").unwrap()], 100, rule());
        assert_eq!(small.introduced(sa("10.0.0.2:4789"), many.iter().copied(), 50, 0), 150 / PROBE_LEN, "probes for at most 3x the list's bytes");
    }
}
