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
