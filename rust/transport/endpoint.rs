//! `Endpoint`: a transport with its name and counters, as Python holds it
//! and the forwarding loop drives it. Malformed frames are counted and
//! dropped here, for every transport.

use std::io;

use super::{is_transient, wire, Batch, Link, Recv, Transport};

/// Per-endpoint counters, visible from Python.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    /// Received frames dropped as malformed (runt, oversized).
    pub drops_in: u64,
    /// Frames we could not send (queue full, peer unreachable, malformed).
    pub drops_out: u64,
}

/// vdeplug4 drops anything shorter than an Ethernet header; we also drop
/// anything larger than the largest frame (jumbo MTU + header + tag).
pub fn frame_ok(frame: &[u8]) -> bool {
    wire::ethernet::Frame::new_checked(frame).is_ok()
}

/// A transport with its counters and name: what Python holds and the
/// forwarding loop drives.
pub struct Endpoint {
    pub transport: Box<dyn Transport>,
    pub stats: Stats,
    pub name: String,
    last_tick: std::time::Instant,
}

/// Non-frames `recv_frame` consumes before it gives up for now.
const MAX_SKIPS: usize = 256;

/// How often `Transport::tick` runs while an endpoint is driven.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(200);

impl Endpoint {
    pub fn new(name: impl Into<String>, transport: Box<dyn Transport>) -> Self {
        Endpoint { transport, stats: Stats::default(), name: name.into(), last_tick: std::time::Instant::now() }
    }

    /// Run the transport's housekeeping if a `TICK` has passed since the last time.
    pub fn maybe_tick(&mut self) {
        if self.last_tick.elapsed() >= TICK {
            self.last_tick = std::time::Instant::now();
            self.transport.tick();
        }
    }

    /// The next valid frame's length, skipping what is not a frame for us
    /// (malformed frames are counted); `None` once the peer closed;
    /// `WouldBlock` when nothing is ready, or when `MAX_SKIPS` non-frames
    /// in a row were consumed (a garbage source never holds the caller).
    pub fn recv_frame(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        for _ in 0..MAX_SKIPS {
            match self.transport.recv(buf)? {
                Recv::Frame(n) if frame_ok(&buf[..n]) => {
                    self.stats.frames_in += 1;
                    self.stats.bytes_in += n as u64;
                    return Ok(Some(n));
                }
                Recv::Frame(_) => self.stats.drops_in += 1,
                Recv::Skip => {}
                Recv::Closed => return Ok(None),
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Receive a batch (`batch`), keep the valid frames' indices in `idx`,
    /// count everything. `Link::Closed` once the peer closed.
    pub fn recv_valid(&mut self, batch: &mut Batch, idx: &mut Vec<usize>) -> io::Result<Link> {
        let open = self.transport.recv_batch(batch)?;
        idx.clear();
        for i in 0..batch.count {
            let f = batch.frame(i);
            if frame_ok(f) {
                self.stats.frames_in += 1;
                self.stats.bytes_in += f.len() as u64;
                idx.push(i);
            } else {
                self.stats.drops_in += 1;
            }
        }
        Ok(open)
    }

    /// Send `batch[i]` for i in `idx` (already valid), counting what went
    /// out and what was dropped; returns the hard error, if one ended it.
    pub fn send_valid(&mut self, batch: &Batch, idx: &[usize]) -> Option<io::Error> {
        let out = self.transport.send_batch(batch, idx);
        self.stats.frames_out += out.sent as u64;
        self.stats.bytes_out += idx[..out.sent.min(idx.len())].iter().map(|&i| batch.lens[i] as u64).sum::<u64>();
        self.stats.drops_out += out.dropped as u64;
        out.error
    }

    /// Send one frame; a malformed frame is counted and dropped (returns 0).
    pub fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        if !frame_ok(frame) {
            self.stats.drops_out += 1;
            return Ok(0);
        }
        match self.transport.send(frame) {
            Ok(n) => {
                self.stats.frames_out += 1;
                self.stats.bytes_out += frame.len() as u64;
                Ok(n)
            }
            Err(e) if is_transient(&e) => {
                self.stats.drops_out += 1;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }
}
