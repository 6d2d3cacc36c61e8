//! udp://[src_addr:]src_port->dst_addr:dst_port — raw frames as UDP payloads.
//! As vdeplug4: the socket connects to dst on the first send (from then on
//! only dst is accepted as a sender); a 0-byte datagram disconnects it.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::{ctx, send_datagrams, send_patience, send_patiently, Batch, Recv, SendOutcome, Transport};
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
}

/// The error a connected UDP socket reports after an ICMP unreachable.
fn is_icmp_report(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH))
}

/// Bind `src` and talk to `dst` (both already resolved, same family).
pub fn open(src: SocketAddr, dst: SocketAddr) -> io::Result<Udp> {
    let sock = UdpSocket::bind(src).map_err(|e| ctx(e, format!("udp: bind {src}")))?;
    Ok(Udp { sock, dst, connected: false, gso: true, unreachable: 0 })
}

impl Udp {
    fn ensure_connected(&mut self) -> io::Result<()> {
        if !self.connected {
            self.sock.connect(self.dst).map_err(|e| ctx(e, format!("udp: connect {}", self.dst)))?;
            self.connected = true;
        }
        Ok(())
    }
    fn disconnect(&mut self) {
        let _ = sys::connect_unspec(self.sock.as_raw_fd());
        self.connected = false;
    }
}

impl Transport for Udp {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        let n = match sys::recv(self.sock.as_raw_fd(), buf, libc::MSG_DONTWAIT) {
            Err(e) if is_icmp_report(&e) => {
                self.unreachable += 1;
                return Ok(Recv::Skip);
            }
            r => r?,
        };
        if n == 0 {
            self.disconnect();
            return Ok(Recv::Skip);
        }
        Ok(Recv::Frame(n))
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.ensure_connected()?;
        send_patiently(self.sock.as_raw_fd(), frame)
    }

    fn data_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<bool> {
        match batch.recv_datagrams(self.sock.as_raw_fd()) {
            Ok(true) => self.disconnect(),
            Ok(false) => {}
            Err(e) if is_icmp_report(&e) => {
                self.unreachable += 1; // reading it cleared it: no spin
                batch.skipped += 1;
            }
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        vec![("unreachable", self.unreachable)]
    }

    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        if let Err(e) = self.ensure_connected() {
            return SendOutcome::failed(idx.len(), e);
        }
        // Equal-size frames leave as UDP GSO trains; receivers see plain datagrams.
        send_datagrams(self.sock.as_raw_fd(), &[], idx.len(), &|i| batch.frame(idx[i]), None, &|_, _| true, &mut self.gso, send_patience())
    }
}
