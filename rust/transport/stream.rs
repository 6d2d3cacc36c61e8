//! The vdeplug4 byte stream (2-byte big-endian length + frame) over a pair
//! of fds: stdin/stdout in `vde_plug URL`, a child's pipes in cmd://.
//!
//! Several frames may arrive in one read, so `data_fd` is an epoll set of the
//! input fd and an eventfd that stays readable while decoded frames are still
//! buffered: `select`/`asyncio` on `fileno()` never miss a frame.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{Batch, Recv, SendOutcome, Transport};
use crate::sys::{self, Epoll, EventFd};
use crate::wire::stream::{encode_len, Decoder, Next};

pub struct Stream {
    input: OwnedFd,
    output: OwnedFd,
    decoder: Decoder,
    poll: Epoll,
    pending: EventFd,
    pending_set: bool,
    eof: bool,
}

pub fn open(input: OwnedFd, output: OwnedFd) -> io::Result<Stream> {
    let poll = Epoll::new()?;
    let pending = EventFd::new()?;
    poll.add(input.as_raw_fd(), 0)?;
    poll.add(pending.raw(), 1)?;
    Ok(Stream { input, output, decoder: Decoder::new(), poll, pending, pending_set: false, eof: false })
}

/// A stream over this process's stdin/stdout (duplicated, so closing ours
/// leaves the originals alone).
pub fn open_stdio() -> io::Result<Stream> {
    open(sys::dup_fd(0)?, sys::dup_fd(1)?)
}

impl Stream {
    fn update_pending(&mut self) {
        let has = self.decoder.has_frame();
        if has != self.pending_set {
            if has { self.pending.set() } else { self.pending.clear() }
            self.pending_set = has;
        }
    }

    /// Read more bytes if the input has any. Ok(false): nothing now.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof || !sys::poll_in(self.input.as_raw_fd(), 0)? {
            return Ok(false);
        }
        match sys::read(self.input.as_raw_fd(), self.decoder.space()) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(n) => {
                self.decoder.filled(n);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Write all of `bufs`, waiting for room when the output is full.
    fn write_all(&self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let fd = self.output.as_raw_fd();
        while !bufs.is_empty() {
            let n = bufs.len().min(1024);
            // SAFETY-free: IoSlice is ABI-compatible with iovec; sys does the call.
            match sys::writev(fd, &bufs[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => IoSlice::advance_slices(&mut bufs, w),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sys::poll_out(fd, -1)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Transport for Stream {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        loop {
            let res = match self.decoder.next_frame() {
                Next::Frame(f) if f.len() <= buf.len() => {
                    buf[..f.len()].copy_from_slice(f);
                    Some(Recv::Frame(f.len()))
                }
                // Too big for the caller's buffer: report it as oversized.
                Next::Frame(_) | Next::Oversized(_) => Some(Recv::Frame(buf.len())),
                Next::NeedMore => None,
            };
            if let Some(r) = res {
                self.update_pending();
                return Ok(r);
            }
            if !self.fill()? {
                self.update_pending();
                return if self.eof { Ok(Recv::Closed) } else { Err(io::ErrorKind::WouldBlock.into()) };
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        let len = encode_len(frame.len());
        self.write_all(&mut [IoSlice::new(&len), IoSlice::new(frame)])?;
        Ok(frame.len())
    }

    fn data_fd(&self) -> RawFd {
        self.poll.raw()
    }

    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        // One writev per 64 frames (two iovecs each), built on the stack.
        const CHUNK: usize = 64;
        let mut out = SendOutcome::default();
        for chunk in idx.chunks(CHUNK) {
            let mut lens = [[0u8; 2]; CHUNK];
            for (k, &i) in chunk.iter().enumerate() {
                lens[k] = encode_len(batch.lens[i]);
            }
            let mut slices = [IoSlice::new(&[]); 2 * CHUNK];
            for (k, &i) in chunk.iter().enumerate() {
                slices[2 * k] = IoSlice::new(&lens[k]);
                slices[2 * k + 1] = IoSlice::new(batch.frame(i));
            }
            if let Err(e) = self.write_all(&mut slices[..2 * chunk.len()]) {
                out.dropped = idx.len() - out.sent;
                out.error = Some(e);
                break;
            }
            out.sent += chunk.len();
        }
        out
    }
}
