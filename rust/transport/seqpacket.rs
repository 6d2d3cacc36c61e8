//! seqpacket://<fd> — frames as packets on an inherited SOCK_SEQPACKET fd
//! (how vdeplug4's static libvdeplug.a talks to a forked vde_plug).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{Recv, Transport};
use crate::sys;

pub struct SeqPacket {
    fd: OwnedFd,
}

/// Use the caller's fd `fd` through a duplicate: the caller keeps (and
/// closes) its own, as with any fd passed by number.
pub fn open(fd: RawFd) -> io::Result<SeqPacket> {
    Ok(SeqPacket { fd: sys::dup_fd(fd)? })
}

impl Transport for SeqPacket {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        match sys::recv(self.fd.as_raw_fd(), buf, libc::MSG_DONTWAIT)? {
            0 => Ok(Recv::Closed),
            n => Ok(Recv::Frame(n)),
        }
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        sys::send(self.fd.as_raw_fd(), frame, 0)
    }
    fn data_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

// ---------------------------------------------------------------- VNL

fn open_vnl(t: &Target, _args: &OpenArgs) -> OpenResult {
    let fd = t.address_str().parse::<RawFd>().ok().filter(|_| t.address.iter().all(u8::is_ascii_digit)).ok_or_else(|| t.error("seqpacket:// needs a file descriptor number", &t.address))?;
    Ok(Box::new(open(fd)?))
}

pub const PLUGIN: Builtin = Builtin { scheme: "seqpacket", syntax: Syntax::Raw, options: &[], bare: None, nests: false, summary: "inherited SOCK_SEQPACKET fd", open: open_vnl };

use crate::plugins::{Builtin, OpenArgs, OpenResult, Target};
use crate::vnl::Syntax;
