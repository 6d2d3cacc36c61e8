//! vxlan://[group|peer,peer…][/options] — a VXLAN segment (RFC 7348),
//! interoperable with the Linux kernel's vxlan devices, over a multicast
//! group or, without multicast, a list of unicast peers (the kernel's flood
//! list). One UDP socket bound to ANY:port (so one process per host and
//! port, as vdeplug4's man page says), multicast loopback off. Unlike vdeplug4 4.0.1, replies to learned MACs
//! really go out unicast (the C plugin fails them with EDESTADDRREQ).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::overlay::{self, Config, Overlay, Remote};
use super::ready::ReadyFd;
use super::{Batch, Link, Recv, SendOutcome, Transport};

pub struct Vxlan {
    sock: UdpSocket,
    ov: Overlay,
    /// Readable while the socket is or GRO trains are half handed out.
    ready: ReadyFd,
}

pub fn open(cfg: &Config) -> io::Result<Vxlan> {
    let v6 = cfg.v6();
    let s = overlay::udp_socket(v6)?;
    s.set_reuse_address(true)?;
    overlay::bind(&s, SocketAddr::new(overlay::any(v6), cfg.port))?;
    match &cfg.remote {
        Remote::Group(g) => {
            let ifindex = overlay::ifindex(cfg)?;
            overlay::join_group(&s, *g, ifindex)?;
            overlay::multicast_out(&s, v6, ifindex, cfg.ttl, false)?;
        }
        Remote::Peers(_) => overlay::unicast_out(&s, v6, cfg.ttl)?,
    }
    overlay::set_rcvbuf(&s, cfg)?;
    let sock: UdpSocket = s.into();
    let mut ov = Overlay::new(cfg, cfg.flood_list(cfg.port, overlay::local_addrs()), false, Some(cfg.port))?;
    ov.enable_gro(0, sock.as_raw_fd());
    let ready = ReadyFd::new(&[sock.as_raw_fd()])?;
    Ok(Vxlan { sock, ov, ready })
}

impl Transport for Vxlan {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        let r = self.ov.recv_one(&self.sock, 0, buf, false, &overlay::never_self);
        self.ready.queued(self.ov.queued());
        Ok(r?.map_or(Recv::Skip, Recv::Frame))
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.ov.send_one(&self.sock, frame)
    }
    fn data_fd(&self) -> RawFd {
        self.ready.raw()
    }
    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        self.ready.fds(out);
    }
    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        batch.clear();
        let r = self.ov.recv_batch(&self.sock, 0, batch, false, &overlay::never_self);
        self.ready.queued(self.ov.queued());
        r.map(|()| Link::Open)
    }
    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        self.ov.send_batch(&self.sock, batch, idx)
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

// ---------------------------------------------------------------- VNL

fn open_vnl(t: &Target, _args: &OpenArgs) -> OpenResult {
    let (remote, names) = overlay::peers_of(t)?;
    let cfg = Config { names, ..overlay::config_of(t, remote, t.num("vni") as u32)? };
    Ok(Box::new(open(&cfg)?))
}

pub const PLUGIN: Builtin = Builtin {
    scheme: "vxlan",
    syntax: Syntax::Net,
    options: overlay::overlay_options!(4789, Kind::Int { lo: 0, hi: 0xFF_FFFF };),
    bare: None,
    nests: false,
    summary: "VXLAN segment: vxlan://239.0.0.1/vni=5, vxlan://peer1,peer2",
    open: open_vnl,
};

use crate::plugins::{opt, Builtin, Kind, OpenArgs, OpenResult, OptDefault, Target};
use crate::vnl::Syntax;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_garbage_datagrams_costs_one_bounded_batch_per_call() {
        // Thousands of datagrams that are not VXLAN (runts) from a listed
        // peer: one recv_batch consumes at most a batch's worth of them.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = Config {
            remote: Remote::Peers(vec![peer.local_addr().unwrap()]),
            port,
            vni: 5,
            ttl: None,
            ifname: None,
            rcvbuf: None,
            hashsize: 64,
            expiretime: 128,
            allow: Vec::new(),
            names: Vec::new(),
            refresh: 0,
        };
        let mut v = open(&cfg).unwrap();
        for _ in 0..2000 {
            peer.send_to(&[1, 2, 3], ("127.0.0.1", port)).unwrap();
        }
        let mut batch = Batch::new(64);
        for _ in 0..4 {
            v.recv_batch(&mut batch).unwrap();
            assert_eq!(batch.count, 0);
            assert!(batch.skipped <= 64, "{} garbage datagrams in one call", batch.skipped);
        }
        assert!(crate::sys::poll_in(v.data_fd(), 0).unwrap(), "more left for the next wakeups");
    }
}
