//! Where an overlay floods broadcast, multicast and unknown-unicast frames:
//! its multicast group, or, without multicast, every peer of a list (the
//! kernel vxlan's head-end replication). The list holds the peers named in
//! the address (fixed) and, with `allow=`, members that joined by sending
//! us valid traffic from an allowed prefix; a member is dropped after
//! `expiretime` of silence or when it leaves. A new member is sent a peer
//! list (wire/vxlan.rs) of everyone we flood to, so a host that names one
//! member reaches them all. No I/O here; the member table is bounded
//! because any host in an allowed prefix can grow it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// At most this many joined members (fixed peers are not counted).
pub const MAX_MEMBERS: usize = 1024;

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

/// Only a host can be a member (a peer list could name a group or a broadcast address).
fn is_unicast(ip: IpAddr) -> bool {
    let v4_broadcast = matches!(ip, IpAddr::V4(v) if v.is_broadcast());
    !(ip.is_multicast() || ip.is_unspecified() || v4_broadcast)
}

/// Counters of membership changes (visible in the overlay's stats).
#[derive(Debug, Default, Clone, Copy)]
pub struct MemberStats {
    pub joined: u64,
    pub expired: u64,
    /// Allowed sources not added because the table was full.
    pub refused: u64,
}

#[derive(Debug)]
pub struct FloodList {
    fixed: Vec<SocketAddr>,
    allow: Vec<Prefix>,
    /// Joined members → when last heard (seconds).
    members: HashMap<SocketAddr, u64>,
    expire: u64,
    /// fixed + members, the order datagrams go out in.
    targets: Vec<SocketAddr>,
    swept: u64,
    /// The last (source, second) refreshed: skips the lookup for a burst.
    last: Option<(SocketAddr, u64)>,
    /// The usual port, if some fixed peer has another (see `listed_port`).
    odd_ports: Option<u16>,
    /// Our own port (a peer at it on a local address is us).
    pub own_port: u16,
    pub stats: MemberStats,
}

impl FloodList {
    /// Flood to `fixed` (a group, or peers, usually at `port`); with a
    /// non-empty `allow`, sources in those prefixes join until `expire`
    /// seconds of silence. `own_port` is ours (peer lists never add us).
    pub fn new(fixed: Vec<SocketAddr>, port: u16, allow: Vec<Prefix>, expire: u64, own_port: u16) -> FloodList {
        let targets = fixed.clone();
        let odd_ports = fixed.iter().any(|a| a.port() != port).then_some(port);
        FloodList { fixed, allow, members: HashMap::new(), expire, targets, swept: 0, last: None, odd_ports, own_port, stats: MemberStats::default() }
    }

    /// Every destination of a flooded frame at `now`.
    pub fn targets(&mut self, now: u64) -> &[SocketAddr] {
        if now != self.swept && !self.members.is_empty() {
            self.swept = now;
            let (before, expire) = (self.members.len(), self.expire);
            self.members.retain(|_, heard| now.saturating_sub(*heard) <= expire);
            if self.members.len() != before {
                self.stats.expired += (before - self.members.len()) as u64;
                self.rebuild();
            }
        }
        &self.targets
    }

    /// Valid traffic for our VNI came from `from`: refresh or add it as a
    /// member. True when it just joined (it is owed a peer list).
    pub fn heard(&mut self, from: SocketAddr, now: u64) -> bool {
        if self.allow.is_empty() || self.last == Some((from, now)) {
            return false;
        }
        self.last = Some((from, now));
        if let Some(t) = self.members.get_mut(&from) {
            *t = now;
            return false;
        }
        self.join(from, now)
    }

    /// A peer list came from `from`. It is believed only from a fixed peer
    /// or a member (someone we flood to anyway), and only for allowed
    /// addresses; `is_self` tells our own address. Returns how many joined.
    pub fn introduced(&mut self, from: SocketAddr, peers: impl Iterator<Item = SocketAddr>, is_self: impl Fn(&SocketAddr) -> bool, now: u64) -> usize {
        if self.allow.is_empty() || !(self.fixed.contains(&from) || self.members.contains_key(&from)) {
            return 0;
        }
        let mut joined = 0;
        for p in peers.take(MAX_MEMBERS) {
            if !self.members.contains_key(&p) && !is_self(&p) && self.join(p, now) {
                joined += 1;
            }
        }
        joined
    }

    /// Everyone we flood to but `to`: what a new member `to` is told.
    pub fn peers_for(&self, to: SocketAddr) -> Vec<SocketAddr> {
        self.targets.iter().copied().filter(|&a| a != to).collect()
    }

    fn join(&mut self, from: SocketAddr, now: u64) -> bool {
        if !is_unicast(from.ip()) || from.port() == 0 || self.fixed.contains(&from) || !self.allow.iter().any(|p| p.contains(from.ip())) {
            return false;
        }
        if self.members.len() >= MAX_MEMBERS {
            self.stats.refused += 1;
            return false;
        }
        self.members.insert(from, now);
        self.stats.joined += 1;
        self.rebuild();
        true
    }

    /// `from` left (vxvde's header-only datagram).
    pub fn forget(&mut self, from: SocketAddr) {
        if self.members.remove(&from).is_some() {
            self.last = None;
            self.rebuild();
        }
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

    pub fn members(&self) -> usize {
        self.members.len()
    }

    fn rebuild(&mut self) {
        self.targets.clear();
        self.targets.extend_from_slice(&self.fixed);
        self.targets.extend(self.members.keys());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
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

    #[test]
    fn fixed_only_never_changes() {
        let mut f = FloodList::new(vec![sa("10.0.0.2:4789"), sa("10.0.0.3:4790")], 4789, vec![], 10, 0);
        f.heard(sa("10.0.0.9:4789"), 1);
        assert_eq!(f.targets(1000), &[sa("10.0.0.2:4789"), sa("10.0.0.3:4790")]);
        assert_eq!(f.members(), 0);
        assert_eq!((f.listed_port(sa("10.0.0.3:999")), f.listed_port(sa("10.0.0.2:999"))), (Some(4790), None));
    }

    #[test]
    fn allowed_sources_join_and_expire() {
        let mut f = FloodList::new(vec![sa("10.0.0.2:4789")], 4789, vec![Prefix::parse("10.0.0.0/24").unwrap()], 10, 0);
        f.heard(sa("10.0.0.2:4789"), 0); // a fixed peer is not a member
        f.heard(sa("10.0.1.5:4789"), 0); // outside the prefix
        f.heard(sa("10.0.0.5:4789"), 0);
        assert_eq!(f.targets(0), &[sa("10.0.0.2:4789"), sa("10.0.0.5:4789")]);
        f.heard(sa("10.0.0.5:4789"), 8); // refreshed
        assert_eq!(f.targets(15).len(), 2);
        assert_eq!(f.targets(19).len(), 1, "silent for more than expiretime");
        assert_eq!((f.stats.joined, f.stats.expired), (1, 1));
        f.heard(sa("10.0.0.5:4789"), 20);
        f.forget(sa("10.0.0.5:4789"));
        assert_eq!(f.targets(20), &[sa("10.0.0.2:4789")], "left");
        f.heard(sa("10.0.0.5:4789"), 20);
        assert_eq!(f.targets(20).len(), 2, "rejoins after leaving, even in the same second");
    }

    #[test]
    fn peer_lists_only_from_trusted_peers_and_for_allowed_addresses() {
        let mut f = FloodList::new(vec![sa("10.0.0.2:4789")], 4789, vec![Prefix::parse("10.0.0.0/24").unwrap()], 10, 0);
        let offered = [sa("10.0.0.5:4789"), sa("10.9.0.1:4789"), sa("10.0.0.9:4789"), sa("10.0.0.2:4789"), sa("10.0.0.255:0")];
        assert_eq!(f.introduced(sa("10.0.0.7:4789"), offered.into_iter(), |_| false, 0), 0, "from a stranger");
        assert_eq!(f.introduced(sa("10.0.0.2:4789"), offered.into_iter(), |a| *a == sa("10.0.0.9:4789"), 0), 1, "outside allow, ourselves and fixed are left out");
        assert_eq!(f.targets(0), &[sa("10.0.0.2:4789"), sa("10.0.0.5:4789")]);
        assert_eq!(f.peers_for(sa("10.0.0.5:4789")), vec![sa("10.0.0.2:4789")]);
        assert!(f.heard(sa("10.0.0.6:4789"), 1), "a newcomer is owed a list");
        assert!(!f.heard(sa("10.0.0.6:4789"), 2), "only once");
        let mut open = FloodList::new(vec![sa("10.0.0.2:4789")], 4789, vec![Prefix::parse("0.0.0.0/0").unwrap()], 10, 0);
        let bad = [sa("239.1.1.1:4789"), sa("255.255.255.255:4789"), sa("0.0.0.0:4789")];
        assert_eq!(open.introduced(sa("10.0.0.2:4789"), bad.into_iter(), |_| false, 0), 0, "only hosts can be members");
        let mut closed = FloodList::new(vec![sa("10.0.0.2:4789")], 4789, vec![], 10, 0);
        assert_eq!(closed.introduced(sa("10.0.0.2:4789"), offered.into_iter(), |_| false, 0), 0, "no allow=: fixed list only");
    }

    #[test]
    fn members_are_bounded() {
        let mut f = FloodList::new(vec![], 4789, vec![Prefix::parse("10.0.0.0/8").unwrap()], 100, 0);
        for i in 0..(MAX_MEMBERS as u32 + 50) {
            f.heard(SocketAddr::new(IpAddr::V4((0x0a00_0000 + i).into()), 4789), 1);
        }
        assert_eq!(f.members(), MAX_MEMBERS);
        assert_eq!(f.stats.refused, 50);
        assert_eq!(f.targets(1).len(), MAX_MEMBERS);
    }
}
