//! null:// — swallows what is sent, never receives (a "host" for switch://).

use std::io;
use std::os::fd::RawFd;

use super::{Recv, Transport};
use crate::sys::EventFd;

pub struct Null {
    never: EventFd,
}

pub fn open() -> io::Result<Null> {
    Ok(Null { never: EventFd::new()? })
}

impl Transport for Null {
    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<Recv> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        Ok(frame.len())
    }
    fn data_fd(&self) -> RawFd {
        self.never.raw()
    }
}

// ---------------------------------------------------------------- VNL

pub const PLUGIN: Builtin = Builtin { scheme: "null", syntax: Syntax::Raw, options: &[], bare: None, nests: false, summary: "discard everything; never receive", open: |_, _| Ok(Box::new(open()?)) };

use crate::plugins::Builtin;
use crate::vnl::Syntax;
