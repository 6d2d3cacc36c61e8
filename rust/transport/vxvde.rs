//! vxvde://[group][/options] — vdeplug4's distributed switch: every
//! endpoint is a leaf that learns where MACs live and sends known unicast
//! straight to that endpoint, everything else to the multicast group.
//!
//! Two sockets, as in vdeplug4, so any number of endpoints can share a host:
//! `multi` is bound to group:port with SO_REUSEADDR (every endpoint gets a
//! copy of group traffic), `uni` is bound to an ephemeral port and carries
//! all our sends, so peers learn it as our address. Our own multicast echo
//! is recognised by source port = our `uni` port and source address = the
//! local address it was delivered to (IPv4 pktinfo) or one of our
//! addresses (IPv6). Closing sends a header-only "leave" to the group.
//!
//! Without multicast (`vxvde://peer,peer…`, our extension: C vxvde has no
//! unicast mode) there is one socket, bound to `port=`: peers flood to it,
//! and it carries all our sends, so learning works the same way. Flooded
//! frames and the leave go to every peer of the flood list.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::overlay::{self, Config, Overlay, Remote};
use super::ready::ReadyFd;
use super::{Batch, Link, Recv, SendOutcome, Transport};
use crate::sys::{self, Meta};

pub struct Vxvde {
    /// Group traffic (None with unicast peers).
    multi: Option<UdpSocket>,
    /// All our sends, and what peers send to us.
    uni: UdpSocket,
    uni_port: u16,
    v6: bool,
    local6: Vec<std::net::Ipv6Addr>,
    ov: Overlay,
    /// Readable while either socket is, or GRO trains are half handed out.
    ready: ReadyFd,
    /// Which socket `recv_batch` reads first, alternating: garbage flooding
    /// one socket never starves the other.
    uni_first: bool,
}

pub fn open(cfg: &Config, bind: Option<IpAddr>) -> io::Result<Vxvde> {
    let v6 = cfg.v6();
    let u = overlay::udp_socket(v6)?;
    let multi = match &cfg.remote {
        Remote::Group(group) => {
            let ifindex = overlay::ifindex(cfg)?;
            let m = overlay::udp_socket(v6)?;
            m.set_reuse_address(true)?;
            overlay::bind(&m, SocketAddr::new(*group, cfg.port))?;
            overlay::join_group(&m, *group, ifindex)?;
            if !v6 {
                sys::set_pktinfo(m.as_raw_fd(), false)?;
            }
            overlay::set_rcvbuf(&m, cfg)?;
            overlay::bind(&u, SocketAddr::new(bind.unwrap_or(overlay::any(v6)), 0))?;
            overlay::multicast_out(&u, v6, ifindex, cfg.ttl, true)?;
            Some(UdpSocket::from(m))
        }
        Remote::Peers(_) => {
            overlay::bind(&u, SocketAddr::new(bind.unwrap_or(overlay::any(v6)), cfg.port))?;
            overlay::unicast_out(&u, v6, cfg.ttl)?;
            None
        }
    };
    overlay::set_rcvbuf(&u, cfg)?;
    let uni: UdpSocket = u.into();
    let uni_port = uni.local_addr()?.port();

    let fds: Vec<RawFd> = multi.iter().chain([&uni]).map(AsRawFd::as_raw_fd).collect();
    let ready = ReadyFd::new(&fds)?;
    let here = overlay::local_addrs();
    let local6 = if v6 { here.addrs.iter().filter_map(|a| if let IpAddr::V6(a) = a { Some(*a) } else { None }).collect() } else { Vec::new() };
    let mut ov = Overlay::new(cfg, cfg.flood_list(uni_port, here), true, None)?;
    if let Some(m) = &multi {
        ov.enable_gro(0, m.as_raw_fd());
    }
    ov.enable_gro(1, uni.as_raw_fd());
    Ok(Vxvde { multi, uni, uni_port, v6, local6, ov, ready, uni_first: false })
}

/// Is this datagram our own multicast coming back?
fn own_echo(uni_port: u16, local6: &[std::net::Ipv6Addr], from: &SocketAddr, m: &Meta) -> bool {
    if from.port() != uni_port {
        return false;
    }
    match from.ip() {
        IpAddr::V4(a) => m.spec_dst == Some(a),
        IpAddr::V6(a) => local6.contains(&a),
    }
}

impl Transport for Vxvde {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        let (port, local6) = (self.uni_port, &self.local6);
        let is_self = |f: &SocketAddr, m: &Meta| own_echo(port, local6, f, m);
        // Alternate which socket goes first, as recv_batch does.
        self.uni_first = !self.uni_first;
        let (first, second) = if self.uni_first { (1, 0) } else { (0, 1) };
        let mut got = Err(io::ErrorKind::WouldBlock.into());
        for slot in [first, second] {
            got = match (slot, &self.multi) {
                (0, Some(m)) => self.ov.recv_one(m, 0, buf, !self.v6, &is_self),
                (0, None) => continue,
                _ => self.ov.recv_one(&self.uni, 1, buf, false, &overlay::never_self),
            };
            if !matches!(&got, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                break;
            }
        }
        self.ready.queued(self.ov.queued());
        Ok(got?.map_or(Recv::Skip, Recv::Frame))
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.ov.send_one(&self.uni, frame)
    }
    fn data_fd(&self) -> RawFd {
        self.ready.raw()
    }
    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        self.ready.fds(out);
    }
    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        batch.clear();
        let (port, local6) = (self.uni_port, &self.local6);
        let is_self = |f: &SocketAddr, m: &Meta| own_echo(port, local6, f, m);
        self.uni_first = !self.uni_first;
        // The second socket is read only when the first gave nothing: the
        // caller's poll sees it readable and comes back (at a low rate this
        // saves a call that finds it empty for every frame).
        let got = |b: &Batch| b.count + b.skipped > 0;
        let r = match &self.multi {
            Some(m) if self.uni_first => {
                self.ov.recv_batch(&self.uni, 1, batch, false, &overlay::never_self).and_then(|()| if got(batch) { Ok(()) } else { self.ov.recv_batch(m, 0, batch, !self.v6, &is_self) })
            }
            Some(m) => self.ov.recv_batch(m, 0, batch, !self.v6, &is_self).and_then(|()| if got(batch) { Ok(()) } else { self.ov.recv_batch(&self.uni, 1, batch, false, &overlay::never_self) }),
            None => self.ov.recv_batch(&self.uni, 1, batch, false, &overlay::never_self),
        };
        self.ready.queued(self.ov.queued());
        r.map(|()| Link::Open)
    }
    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        self.ov.send_batch(&self.uni, batch, idx)
    }
    fn frame_prefix(&self) -> &[u8] {
        self.ov.header()
    }
    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        self.ov.stats_pairs()
    }
    fn defer_learning(&mut self) {
        self.ov.defer_learning();
    }
    fn authentic(&mut self, i: usize) {
        self.ov.authentic(i);
    }
    fn tick(&mut self) {
        self.ov.tick();
    }
}

impl Drop for Vxvde {
    fn drop(&mut self) {
        // Header only: peers forget the MACs they learned at our address.
        self.ov.send_leave(&self.uni);
    }
}

// ---------------------------------------------------------------- VNL

/// Write the gid's low 24 bits into the last 3 bytes of the group.
pub fn with_gid(group: IpAddr, gid: u32) -> IpAddr {
    let g = (gid & 0xFF_FFFF).to_be_bytes();
    match group {
        IpAddr::V4(a) => {
            let o = a.octets();
            IpAddr::V4([o[0], g[1], g[2], g[3]].into())
        }
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[13..].copy_from_slice(&g[1..]);
            IpAddr::V6(o.into())
        }
    }
}

fn open_vnl(t: &Target, _args: &OpenArgs) -> OpenResult {
    let (mut remote, names) = overlay::peers_of(t)?;
    let mut vni = t.num("vni") as u32;
    if let Some(gid) = t.int("grp") {
        if let Remote::Group(g) = remote {
            remote = Remote::Group(with_gid(g, gid as u32));
        }
        if !t.given("vni") {
            vni = gid as u32 & 0xFF_FFFF;
        }
    }
    let bind = match t.text("bind") {
        Some(b) => Some(b.parse::<IpAddr>().map_err(|_| t.error(format!("bad bind address {b:?}"), &b))?),
        None => None,
    };
    Ok(Box::new(open(&Config { names, ..overlay::config_of(t, remote, vni)? }, bind)?))
}

pub const PLUGIN: Builtin = Builtin {
    scheme: "vxvde",
    syntax: Syntax::Net,
    options: overlay::overlay_options!(14789, Kind::VniOrGid, opt("grp", Kind::Gid, OptDefault::Unset, "group: sets VNI and the group's last 3 bytes"); opt("bind", Kind::Text, OptDefault::Unset, "local address of the unicast socket")),
    bare: None,
    nests: false,
    summary: "distributed switch: vxvde://239.1.2.3, vxvde://peer1,peer2",
    open: open_vnl,
};

use crate::plugins::{opt, Builtin, Kind, OpenArgs, OpenResult, OptDefault, Target};
use crate::vnl::Syntax;

#[cfg(test)]
mod vnl_tests {
    #[test]
    fn grp_sets_the_last_three_bytes() {
        assert_eq!(super::with_gid("239.0.0.1".parse().unwrap(), 0x123456), "239.18.52.86".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(super::with_gid("ff05:56de::1".parse().unwrap(), 1000), "ff05:56de::3e8".parse::<std::net::IpAddr>().unwrap());
    }
}
