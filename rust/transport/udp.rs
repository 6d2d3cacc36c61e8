//! udp://[src_addr:]src_port->dst_addr:dst_port — raw frames as UDP payloads.
//! Only the configured peer is heard: the socket is connected to dst at
//! open, so the kernel filters other senders (vdeplug4 connects on the first
//! send and disconnects on a 0-byte datagram, accepting anyone in between;
//! we keep the wire and drop that window). If dst cannot be connected yet
//! (no route), senders are filtered here until it can.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::gro::GroRx;
use super::ready::ReadyFd;
use super::{ctx, send_datagrams, send_patience, send_patiently, Batch, Link, Recv, SendOutcome, Transport};
use crate::sys;

pub struct Udp {
    sock: UdpSocket,
    dst: SocketAddr,
    connected: bool,
    /// UDP GSO for runs of equal-size frames; off after the kernel refuses it.
    gso: bool,
    /// ICMP "port unreachable" reports for earlier sends (the peer is not
    /// there, maybe not yet): counted, never fatal.
    unreachable: u64,
    /// Datagrams from anyone but dst (only while not connected), dropped.
    foreign: u64,
    addrs: Vec<libc::sockaddr_storage>,
    /// UDP_GRO receive state (None: the kernel has no UDP_GRO).
    gro: Option<Box<GroRx>>,
    /// Readable while the socket is, or a GRO train is half handed out.
    ready: ReadyFd,
}

/// The error a connected UDP socket reports after an ICMP unreachable.
fn is_icmp_report(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH))
}

/// Bind `src` and talk to `dst` (both already resolved, same family).
pub fn open(src: SocketAddr, dst: SocketAddr) -> io::Result<Udp> {
    let sock = UdpSocket::bind(src).map_err(|e| ctx(e, format!("udp: bind {src}")))?;
    sock.set_nonblocking(true)?; // every call here is non-blocking anyway
    let fd = sock.as_raw_fd();
    super::gro::default_rcvbuf((&sock).into());
    let (gro, ready) = (super::gro::enable(fd), ReadyFd::new(&[fd])?);
    let mut u = Udp { sock, dst, connected: false, gso: true, unreachable: 0, foreign: 0, addrs: vec![sys::zeroed_storage(); sys::MAX_BATCH], gro, ready };
    let _ = u.ensure_connected();
    Ok(u)
}

impl Udp {
    fn ensure_connected(&mut self) -> io::Result<()> {
        if !self.connected {
            self.sock.connect(self.dst).map_err(|e| ctx(e, format!("udp: connect {}", self.dst)))?;
            self.connected = true;
        }
        Ok(())
    }

    fn is_peer(&self, ss: &libc::sockaddr_storage) -> bool {
        sys::sockaddr_to_std(ss) == Some(self.dst)
    }
}

impl Udp {
    /// The next datagram of a GRO train (refilled when empty), filtered as
    /// `recv_batch` filters: Some(Some(range)) a frame, Some(None) consumed.
    fn next_gro(&mut self) -> io::Result<Option<Option<(usize, usize)>>> {
        let Some(g) = self.gro.as_mut() else { return Ok(None) };
        match g.next(self.sock.as_raw_fd(), false) {
            Ok(None) => Ok(None),
            Ok(Some((a, b, msg))) => {
                if !self.connected && g.meta(msg).1 != Some(self.dst) {
                    self.foreign += 1;
                    return Ok(Some(None));
                }
                Ok(Some((a < b).then_some((a, b)))) // 0 bytes: vdeplug4's "disconnect"
            }
            Err(e) if is_icmp_report(&e) => {
                self.unreachable += 1;
                Ok(Some(None))
            }
            Err(e) => Err(e),
        }
    }

    fn refresh(&mut self) {
        let queued = self.gro.as_ref().is_some_and(|g| g.queued());
        self.ready.queued(queued);
    }
}

impl Transport for Udp {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        if self.gro.is_some() {
            let r = self.next_gro();
            self.refresh();
            return match r? {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(None) => Ok(Recv::Skip),
                Some(Some((a, b))) => {
                    let d = &self.gro.as_ref().map_or(&[][..], |g| &g.arena()[..])[a..b];
                    let n = d.len().min(buf.len());
                    buf[..n].copy_from_slice(&d[..n]);
                    Ok(Recv::Frame(n))
                }
            };
        }
        let res = if self.connected {
            sys::recv(self.sock.as_raw_fd(), buf, libc::MSG_DONTWAIT)
        } else {
            match self.sock.recv_from(buf) {
                Ok((_, from)) if from != self.dst => {
                    self.foreign += 1;
                    return Ok(Recv::Skip);
                }
                r => r.map(|(n, _)| n),
            }
        };
        match res {
            Err(e) if is_icmp_report(&e) => {
                self.unreachable += 1;
                Ok(Recv::Skip)
            }
            // A 0-byte datagram (vdeplug4's "disconnect"): nothing to deliver.
            Ok(0) => Ok(Recv::Skip),
            r => Ok(Recv::Frame(r?)),
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.ensure_connected()?;
        send_patiently(self.sock.as_raw_fd(), frame)
    }

    fn data_fd(&self) -> RawFd {
        self.ready.raw()
    }
    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        self.ready.fds(out);
    }

    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        batch.clear();
        if self.gro.is_some() {
            let mut r = Ok(Link::Open);
            while !batch.done() {
                match self.next_gro() {
                    Ok(None) => break,
                    Ok(Some(None)) => batch.skipped += 1,
                    Ok(Some(Some((a, b)))) => {
                        if let Some(g) = self.gro.as_ref() {
                            batch.push_view(g.arena(), a, b - a);
                        }
                    }
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
            self.refresh();
            return r;
        }
        let fd = self.sock.as_raw_fd();
        let got = if self.connected { sys::recv_batch(fd, &mut batch.bufs, &mut batch.lens, None) } else { sys::recv_batch(fd, &mut batch.bufs, &mut batch.lens, Some(&mut self.addrs)) };
        match got {
            Ok(n) => batch.count = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if is_icmp_report(&e) => {
                self.unreachable += 1; // reading it cleared it: no spin
                batch.skipped += 1;
            }
            Err(e) => return Err(e),
        }
        if !self.connected {
            for i in 0..batch.count {
                if !self.is_peer(&self.addrs[i]) {
                    batch.lens[i] = 0; // removed below
                    self.foreign += 1;
                }
            }
        }
        batch.compact_empty();
        Ok(Link::Open)
    }

    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        vec![("unreachable", self.unreachable), ("foreign", self.foreign)]
    }

    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        if let Err(e) = self.ensure_connected() {
            return SendOutcome::failed(idx.len(), e);
        }
        // Equal-size frames leave as UDP GSO trains; receivers see plain datagrams.
        send_datagrams(self.sock.as_raw_fd(), &[], idx.len(), &|i| batch.frame_ref(idx[i]), None, &|_, _| true, &mut self.gso, send_patience())
    }
}

// ---------------------------------------------------------------- VNL

/// `host:port` (the last ':' separates; `[v6]:port` too) → (host, port).
fn host_port<'a>(t: &Target, text: &'a str, need_host: bool) -> Result<(&'a str, u16), OpenError> {
    let (host, port) = text.rsplit_once(':').unwrap_or(("", text));
    if need_host && host.is_empty() {
        return Err(t.error("destination needs host:port", text));
    }
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = port.parse::<u16>().ok().filter(|_| port.bytes().all(|c| c.is_ascii_digit())).ok_or_else(|| t.error(format!("bad port {port:?}"), text))?;
    Ok((host, port))
}

/// getaddrinfo: the first address of `host` (of `family` when given).
fn resolve(t: &Target, host: &str, port: u16, v6: Option<bool>) -> Result<SocketAddr, OpenError> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
    if host.is_empty() {
        let any = if v6 == Some(true) { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        return Ok(SocketAddr::new(any, port));
    }
    let found = (host, port).to_socket_addrs().map_err(|e| t.error(format!("cannot resolve {host:?}: {}", super::describe(&e)), host))?;
    found.into_iter().find(|a| v6.is_none_or(|v| a.is_ipv6() == v)).ok_or_else(|| t.error(format!("cannot resolve {host:?} for this address family"), host))
}

fn open_vnl(t: &Target, _args: &OpenArgs) -> OpenResult {
    let text = t.address_str();
    let Some((src, dst)) = text.split_once("->") else {
        if text.ends_with('-') {
            // `vde_plug udp://5000->host:5001`: the shell redirected to a file "host:5001".
            let msg = format!("udp://{text} ends at '-': a shell took the '>' of '->' as a redirection (and made a file named after the destination); quote the URL: 'udp://{text}>HOST:PORT'");
            return Err(t.error(msg, &t.address));
        }
        return Err(t.error("udp:// needs [src_addr:]src_port->dst_addr:dst_port", &t.address));
    };
    let (sh, sp) = host_port(t, src, false)?;
    let (dh, dp) = host_port(t, dst, true)?;
    let dst = resolve(t, dh, dp, None)?;
    let src = resolve(t, sh, sp, Some(dst.is_ipv6()))?;
    Ok(Box::new(open(src, dst)?))
}

pub const PLUGIN: Builtin =
    Builtin { scheme: "udp", syntax: Syntax::Raw, options: &[], bare: None, nests: false, summary: "UDP tunnel: udp://\"[src_addr:]src_port->dst_addr:dst_port\"", open: open_vnl };

use crate::plugins::{Builtin, OpenArgs, OpenError, OpenResult, Target};
use crate::vnl::Syntax;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_empty_datagrams_costs_one_bounded_batch_per_call() {
        // Thousands of 0-byte datagrams from the peer (nothing to deliver):
        // one recv_batch consumes at most a batch's worth, never the queue.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut u = open("127.0.0.1:0".parse().unwrap(), peer.local_addr().unwrap()).unwrap();
        let me = u.sock.local_addr().unwrap();
        for _ in 0..2000 {
            peer.send_to(&[], me).unwrap();
        }
        let mut batch = Batch::new(64);
        let mut seen = 0;
        for _ in 0..4 {
            u.recv_batch(&mut batch).unwrap();
            assert_eq!(batch.count, 0);
            assert!(batch.skipped <= 64, "{} empty datagrams in one call", batch.skipped);
            seen += batch.skipped;
        }
        assert!(seen > 0 && sys::poll_in(u.data_fd(), 0).unwrap(), "more left for the next wakeups");
    }
}
