//! The vdeplug4 byte stream (2-byte big-endian length + frame) over a pair
//! of fds: stdin/stdout in `vde_plug URL`, a child's pipes in cmd://.
//!
//! Several frames may arrive in one read, so `data_fd` is an epoll set of the
//! input fd and an eventfd that stays readable while decoded frames are still
//! buffered: `select`/`asyncio` on `fileno()` never miss a frame.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::ready::ReadyFd;
use super::{Batch, Recv, SendOutcome, Transport};
use crate::sys;
use crate::wire::stream::{encode_len, Decoder, Next, LEN_PREFIX, MAX_STREAM_FRAME};

/// How long a send waits for a stalled reader before the frames are
/// dropped (counted): a reader that stops reading never stalls us, our
/// signal handling or the other direction for longer than this.
pub const STREAM_PATIENCE: Duration = Duration::from_millis(200);

pub struct Stream {
    input: OwnedFd,
    output: Output,
    /// The unwritten rest of a frame the output took only in part: it goes
    /// out before anything else, so the framing survives a stalled reader.
    tail: Vec<u8>,
    decoder: Decoder,
    /// The data fd: the input, or frames already decoded.
    ready: ReadyFd,
    eof: bool,
    /// A regular file or /dev/null as input: epoll refuses it (EPERM), and
    /// it never blocks, so it counts as readable until EOF (a recorded
    /// stream is replayed; /dev/null is an immediate EOF).
    always_ready: bool,
}

pub fn open(input: OwnedFd, output: OwnedFd) -> io::Result<Stream> {
    let (ready, always_ready) = match ReadyFd::new(&[input.as_raw_fd()]) {
        Ok(r) => (r, false),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => (ReadyFd::new(&[])?, true),
        Err(e) => return Err(e),
    };
    let output = Output::new(output)?;
    let mut s = Stream { input, output, tail: Vec::with_capacity(MAX_STREAM_FRAME + LEN_PREFIX), decoder: Decoder::new(), ready, eof: false, always_ready };
    s.update_pending();
    Ok(s)
}
/// An output fd we may write to without ever blocking, whatever the fd we
/// were given: a socket is written with MSG_DONTWAIT; a pipe, FIFO or tty is
/// reopened through /proc/self/fd as a new, non-blocking open file (the
/// caller's stdout keeps its own flags); anything else is set O_NONBLOCK.
struct Output {
    fd: OwnedFd,
    socket: bool,
}

impl Output {
    fn new(fd: OwnedFd) -> io::Result<Output> {
        use std::os::unix::fs::OpenOptionsExt;
        let st = sys::fstat(fd.as_raw_fd())?;
        if sys::is_socket(&st) {
            return Ok(Output { fd, socket: true });
        }
        let reopened = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(sys::proc_path(fd.as_raw_fd()));
        if let Ok(f) = reopened {
            let same = sys::fstat(f.as_raw_fd()).is_ok_and(|n| n.st_ino == st.st_ino && n.st_dev == st.st_dev);
            if same {
                return Ok(Output { fd: f.into(), socket: false });
            }
        }
        sys::set_nonblocking(fd.as_raw_fd())?;
        Ok(Output { fd, socket: false })
    }

    /// One non-blocking writev (sendmsg for sockets); WouldBlock when full.
    fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.socket {
            socket2::SockRef::from(&self.fd).send_vectored_with_flags(bufs, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        } else {
            sys::writev(self.fd.as_raw_fd(), bufs)
        }
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A stream over this process's stdin/stdout (duplicated, so closing ours
/// leaves the originals alone).
pub fn open_stdio() -> io::Result<Stream> {
    open(sys::dup_fd(0)?, sys::dup_fd(1)?)
}

impl Stream {
    fn update_pending(&mut self) {
        let has = self.decoder.has_frame() || (self.always_ready && !self.eof);
        self.ready.queued(has);
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

    /// Wait until the output has room, at most until `deadline`. False:
    /// time is up, or a signal arrived (the caller gives up for now).
    fn wait_room(&self, deadline: Instant) -> io::Result<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        match sys::poll_out(self.output.raw(), left.as_millis().max(1) as i32) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            r => r,
        }
    }

    /// Write the bytes of `bufs` until done or `deadline`; returns how many
    /// bytes went out (never blocks past the deadline).
    fn write_until(&self, mut bufs: &mut [IoSlice<'_>], deadline: Instant) -> io::Result<usize> {
        let mut total = 0;
        while !bufs.is_empty() {
            let n = bufs.len().min(1024);
            match self.output.writev(&bufs[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => {
                    total += w;
                    IoSlice::advance_slices(&mut bufs, w);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait_room(deadline)? {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Finish a partly written frame first. False: it is still not out.
    fn flush_tail(&mut self, deadline: Instant) -> io::Result<bool> {
        if !self.tail.is_empty() {
            let w = self.write_until(&mut [IoSlice::new(&self.tail)], deadline)?;
            self.tail.drain(..w);
        }
        Ok(self.tail.is_empty())
    }

    /// Write frames (their lengths from `len(k)`, bytes from `frame(k)`),
    /// waiting at most STREAM_PATIENCE for room. Returns how many frames
    /// went out whole or will (a partly written one is finished later);
    /// the rest are not sent.
    fn write_frames<'a>(&mut self, n: usize, frame: impl Fn(usize) -> &'a [u8]) -> io::Result<usize> {
        const CHUNK: usize = 64;
        let deadline = Instant::now() + STREAM_PATIENCE;
        if !self.flush_tail(deadline)? {
            return Ok(0);
        }
        let mut sent = 0;
        while sent < n {
            let k = (n - sent).min(CHUNK);
            let mut lens = [[0u8; 2]; CHUNK];
            let mut slices = [IoSlice::new(&[]); 2 * CHUNK];
            let mut bytes = 0;
            for (j, len) in lens[..k].iter_mut().enumerate() {
                let f = frame(sent + j);
                *len = encode_len(f.len());
                bytes += LEN_PREFIX + f.len();
            }
            for (j, len) in lens[..k].iter().enumerate() {
                slices[2 * j] = IoSlice::new(len);
                slices[2 * j + 1] = IoSlice::new(frame(sent + j));
            }
            let w = self.write_until(&mut slices[..2 * k], deadline)?;
            if w == bytes {
                sent += k;
                continue;
            }
            // Stalled: frames wholly written count as sent; a frame written
            // in part keeps its rest in `tail`; the others are dropped.
            let mut at = 0;
            for (j, len) in lens[..k].iter().enumerate() {
                let f = frame(sent + j);
                let end = at + LEN_PREFIX + f.len();
                if end <= w {
                    at = end;
                    continue;
                }
                if w > at {
                    let mut whole = Vec::with_capacity(LEN_PREFIX + f.len());
                    whole.extend_from_slice(len);
                    whole.extend_from_slice(f);
                    self.tail.extend_from_slice(&whole[w - at..]);
                    return Ok(sent + j + 1);
                }
                return Ok(sent + j);
            }
            return Ok(sent + k);
        }
        Ok(sent)
    }
}

impl Transport for Stream {
    /// At most one read per call: bytes that decode to no frame yet (a
    /// frame's head, length-0 records, the skipped rest of an oversized
    /// frame) come back as `Skip`, so a caller's bound on skips also bounds
    /// what endless garbage (`</dev/zero`) costs per wakeup.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        let mut read = false;
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
            if read {
                self.update_pending();
                return Ok(Recv::Skip);
            }
            read = true;
            if !self.fill()? {
                self.update_pending();
                return if self.eof { Ok(Recv::Closed) } else { Err(io::ErrorKind::WouldBlock.into()) };
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        match self.write_frames(1, |_| frame)? {
            0 => Err(io::ErrorKind::WouldBlock.into()), // stalled reader: dropped
            _ => Ok(frame.len()),
        }
    }

    fn data_fd(&self) -> RawFd {
        self.ready.raw()
    }

    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        // One writev per 64 frames (two iovecs each), built on the stack.
        match self.write_frames(idx.len(), |k| batch.frame(idx[k])) {
            Ok(sent) => SendOutcome { sent, dropped: idx.len() - sent, ..Default::default() },
            Err(e) => SendOutcome { sent: 0, dropped: idx.len(), error: Some(e), ..Default::default() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (std::fs::File, OwnedFd) {
        let (r, w) = std::io::pipe().unwrap();
        (std::fs::File::from(OwnedFd::from(r)), w.into())
    }

    #[test]
    fn stalled_reader_costs_frames_never_the_framing_or_more_than_the_patience() {
        let (mut out_r, out_w) = pipe();
        let (in_r, _in_w) = pipe();
        let mut s = open(in_r.into(), out_w).unwrap();
        let mut batch = Batch::new(64);
        for i in 0..64 {
            batch.bufs[i][..1500].fill(i as u8);
            batch.lens[i] = 1500;
        }
        batch.count = 64;
        let idx: Vec<usize> = (0..64).collect();
        let mut sent = 0;
        for round in 0..3 {
            let t0 = Instant::now();
            let o = s.send_batch(&batch, &idx);
            assert!(o.error.is_none());
            assert_eq!(o.sent + o.dropped, 64);
            assert!(t0.elapsed() < STREAM_PATIENCE + Duration::from_millis(150), "round {round}: {:?}", t0.elapsed());
            sent += o.sent;
        }
        assert!(sent < 3 * 64, "the pipe holds less than 192 frames");
        // The reader comes back: everything written decodes as whole frames,
        // the partly written one finished by the next send.
        let mut got = Vec::new();
        let reader = std::thread::spawn(move || {
            out_r.read_to_end(&mut got).unwrap();
            got
        });
        let o = s.send_batch(&batch, &idx[..1]);
        assert_eq!(o.sent, 1);
        drop(s);
        let got = reader.join().unwrap();
        let mut d = crate::wire::stream::Decoder::new();
        let mut frames = 0;
        for chunk in got.chunks(1000) {
            d.space()[..chunk.len()].copy_from_slice(chunk);
            d.filled(chunk.len());
            while let Next::Frame(f) = d.next_frame() {
                assert_eq!(f.len(), 1500);
                assert!(f.iter().all(|&b| b == f[0]), "frame intact");
                frames += 1;
            }
        }
        assert_eq!(frames, sent + 1, "every frame counted as sent arrived whole");
    }
}
