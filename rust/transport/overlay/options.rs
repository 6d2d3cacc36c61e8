//! The options of vxlan:// and vxvde://: their table (vdeplug4's order),
//! the address part (a group or a list of peers) and the typed `Config`
//! both open from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::plugins::{OpenError, Target};
use crate::transport::flood::{FloodList, HostRule, LocalAddrs, Prefix};

/// Where flooded frames go: a multicast group, or unicast peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Group(IpAddr),
    Peers(Vec<SocketAddr>),
}

/// A host name of the peer list: every address it has in the endpoint's
/// family is a peer, at `port`; `addrs` is the answer at open (capped at
/// `MAX_ANSWER`, in the order the resolver gave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerName {
    pub host: String,
    pub port: u16,
    pub addrs: Vec<SocketAddr>,
}

/// At most this many addresses of one name are peers (more are counted, see dns.rs).
pub const MAX_ANSWER: usize = 1024;

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
    /// The host names of the peer list (their addresses are in `remote` too).
    pub names: Vec<PeerName>,
    /// Seconds between lookups of `names` (0: resolved once, at open).
    pub refresh: u64,
}

impl Config {
    pub fn v6(&self) -> bool {
        match &self.remote {
            Remote::Group(g) => g.is_ipv6(),
            Remote::Peers(p) => p.first().is_some_and(SocketAddr::is_ipv6),
        }
    }

    /// The flood list's fixed part: the group, or the peers except ourselves
    /// (an endpoint at `port` on one of `here`'s addresses), so every host
    /// can be given the same list. Members must be hosts of our family (on
    /// loopback only if some peer is), never a local subnet's broadcast.
    pub fn flood_list(&self, port: u16, here: LocalAddrs) -> FloodList {
        let loopback = matches!(&self.remote, Remote::Peers(p) if p.iter().any(|a| a.ip().is_loopback()));
        let rule = HostRule { v6: self.v6(), loopback, broadcasts: here.broadcasts, local: here.addrs, own_port: port };
        let fixed = match &self.remote {
            Remote::Group(g) => vec![SocketAddr::new(*g, self.port)],
            Remote::Peers(p) => p.iter().copied().filter(|a| !rule.is_self(a)).collect(),
        };
        FloodList::new(fixed, self.port, self.allow.clone(), self.expiretime, rule)
    }
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
            opt("refresh", Kind::Int { lo: 0, hi: 1 << 31 }, OptDefault::Int(30), "with unicast peers: seconds between lookups of peer names, each address a peer (0: once, at open)"),
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
/// address), else the first peer's; a host name gives every address it has
/// in that family (IPv4 when nothing says and it has one).
pub fn remote_of(t: &Target) -> Result<Remote, OpenError> {
    Ok(peers_of(t)?.0)
}

/// `remote_of`, and the host names of a peer list with their addresses.
pub fn peers_of(t: &Target) -> Result<(Remote, Vec<PeerName>), OpenError> {
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
        return Ok((Remote::Group(if want6 == Some(true) { IpAddr::V6(DEFAULT_V6) } else { IpAddr::V4(DEFAULT_V4) }), Vec::new()));
    }
    let listed = text.contains(',');
    let mut peers = Vec::new();
    let mut names = Vec::new();
    for entry in text.split(',') {
        let (host, p) = split_host_port(entry).map_err(|m| t.error(m, entry))?;
        let (ip, more) = match host.parse::<IpAddr>() {
            Ok(ip) => (ip, Vec::new()),
            Err(_) => {
                let all = resolve(host, want6).map_err(|m| t.error(m, entry))?;
                (all[0], all)
            }
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
            return Ok((Remote::Group(ip), Vec::new()));
        }
        if ip.is_unspecified() {
            return Err(t.error(format!("{entry} is not a peer address"), entry));
        }
        let port = p.unwrap_or(port);
        if more.is_empty() {
            peers.push(SocketAddr::new(ip, port));
        } else {
            let addrs: Vec<SocketAddr> = more.into_iter().map(|a| SocketAddr::new(a, port)).collect();
            peers.extend_from_slice(&addrs);
            names.push(PeerName { host: host.to_string(), port, addrs });
        }
    }
    Ok((Remote::Peers(peers), names))
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

/// A host name's addresses of the family asked for (`None`: IPv4 if it
/// has one), at least one, at most `MAX_ANSWER`, without repeats.
fn resolve(host: &str, want6: Option<bool>) -> Result<Vec<IpAddr>, String> {
    let addrs = lookup(host, None, usize::MAX).map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    let v6 = match want6 {
        Some(v6) => v6,
        None => !addrs.iter().any(IpAddr::is_ipv4),
    };
    let mut of: Vec<IpAddr> = Vec::new();
    for a in addrs.into_iter().filter(|a| a.is_ipv6() == v6) {
        if !of.contains(&a) && of.len() < MAX_ANSWER {
            of.push(a);
        }
    }
    match (of.is_empty(), want6) {
        (false, _) => Ok(of),
        (true, Some(v6)) => Err(format!("{host:?} has no IPv{} address", if v6 { 6 } else { 4 })),
        (true, None) => Err(format!("cannot resolve {host:?}: no address")),
    }
}

/// A name's addresses from the system resolver (getaddrinfo: /etc/hosts,
/// DNS …), of one family if `v6` says, at most `cap` of them (the rest of
/// the answer is never copied).
pub fn lookup(host: &str, v6: Option<bool>, cap: usize) -> std::io::Result<Vec<IpAddr>> {
    use std::net::ToSocketAddrs;
    Ok((host, 0).to_socket_addrs()?.map(|a| a.ip()).filter(|a| v6.is_none_or(|v6| a.is_ipv6() == v6)).take(cap).collect())
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
    let refresh = t.num("refresh");
    Ok(Config {
        remote,
        port: port_of(t),
        vni,
        ttl,
        ifname: t.text("if"),
        rcvbuf: t.int("rcvbuf").map(|v| v as usize),
        hashsize: t.num("hashsize") as usize,
        expiretime: t.num("expiretime"),
        allow,
        names: Vec::new(),
        refresh,
    })
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

#[cfg(test)]
mod tests {
    use super::super::testutil::cfg;
    use super::*;

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
    fn names_are_kept_with_their_addresses_and_refresh_defaults_to_30() {
        let target = |v: &str| match crate::plugins::resolve(v.as_bytes()).unwrap() {
            crate::plugins::Resolved::Builtin(_, t) => t,
            crate::plugins::Resolved::Other { .. } => unreachable!(),
        };
        let t = target("vxlan://10.0.0.9,localhost:4790");
        let (r, names) = peers_of(&t).map_err(|e| e.to_string()).unwrap();
        assert_eq!(r, peers(&["10.0.0.9:4789", "127.0.0.1:4790"]).unwrap());
        assert_eq!(names, [PeerName { host: "localhost".into(), port: 4790, addrs: vec!["127.0.0.1:4790".parse().unwrap()] }]);
        assert_eq!(config_of(&t, r, 1).map_err(|e| e.to_string()).unwrap().refresh, 30);
        let t = target("vxvde://localhost/refresh=0");
        assert_eq!(config_of(&t, remote_of(&t).map_err(|e| e.to_string()).unwrap(), 1).map_err(|e| e.to_string()).unwrap().refresh, 0);
        assert_eq!(peers_of(&target("vxlan://10.0.0.9")).map_err(|e| e.to_string()).unwrap().1, [], "no names");
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
        let here = LocalAddrs { addrs: vec!["127.0.0.1".parse().unwrap()], broadcasts: Vec::new() };
        let mut f = c.flood_list(4789, here);
        assert_eq!(f.targets(0), &["127.0.0.1:4790".parse().unwrap(), "192.0.2.1:4789".parse().unwrap()]);
    }
}
