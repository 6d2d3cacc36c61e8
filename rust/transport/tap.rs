//! tap://name — a Linux tap device (IFF_TAP | IFF_NO_PI): frames as the
//! kernel sees them. The device is created if it does not exist (needs
//! CAP_NET_ADMIN) and disappears when closed unless it was made persistent.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{ctx, Recv, Transport};
use crate::sys;

pub struct Tap {
    fd: OwnedFd,
    pub name: String,
}

pub fn open(name: &str) -> io::Result<Tap> {
    let (fd, name) = sys::open_tap(name).map_err(|e| ctx(e, format!("tap://{name}")))?;
    Ok(Tap { fd, name })
}

impl Transport for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        Ok(Recv::Frame(sys::read(self.fd.as_raw_fd(), buf)?))
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        // EIO while the interface is down: a transient drop, as for a cable unplugged.
        sys::write(self.fd.as_raw_fd(), frame).map_err(|e| {
            if e.raw_os_error() == Some(libc::EIO) {
                io::ErrorKind::WouldBlock.into()
            } else {
                e
            }
        })
    }
    fn data_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

// ---------------------------------------------------------------- VNL

fn open_vnl(t: &Target, _args: &OpenArgs) -> OpenResult {
    if t.address.len() > 15 {
        return Err(t.error("interface name longer than 15 bytes", &t.address));
    }
    if t.address.contains(&b'/') {
        return Err(t.error("interface name with '/'", &t.address));
    }
    Ok(Box::new(open(&t.address_str())?))
}

pub const PLUGIN: Builtin = Builtin {
    scheme: "tap",
    syntax: Syntax::Raw,
    options: &[],
    bare: None,
    nests: false,
    summary: "Linux tap interface: tap://t0",
    open: open_vnl,
};

use crate::plugins::{Builtin, OpenArgs, OpenResult, Target};
use crate::vnl::Syntax;
