//! Nested plugins (`vlan://…{VNL}`, `capture://…{VNL}`): a `Hook` sees every
//! frame crossing an inner transport and may rewrite or drop it. The wrapper
//! keeps the inner transport's batching: a received batch is rewritten in
//! place, a batch to send is rewritten into one scratch batch.

use std::io;
use std::os::fd::RawFd;

use super::{Batch, Link, Recv, SendOutcome, Transport};

/// What a nested plugin does to frames.
pub trait Hook: Send {
    /// Called before each batch (or single frame) goes through the hook:
    /// per-batch work, such as reading the clock once instead of per frame.
    fn begin(&mut self) {}
    /// A frame from the inner network to our user, `len` bytes at the start
    /// of `buf` (which has room to grow). Returns the new length, or None to drop it.
    fn incoming(&mut self, buf: &mut [u8], len: usize) -> Option<usize>;
    /// A frame from our user to the inner network: write what to send into
    /// `out` and return its length, or None to drop it.
    fn outgoing(&mut self, frame: &[u8], out: &mut [u8]) -> Option<usize>;
    /// Called after each batch (a capture file flushes here).
    fn flush(&mut self) {}
    /// Called every few hundred ms (time-based housekeeping: a key file reread).
    fn tick(&mut self) {}
    /// Does `incoming` authenticate frames? Then the inner transport learns
    /// (MACs, members) only from frames it let through.
    fn authenticates(&self) -> bool {
        false
    }
    fn extra_stats(&self) -> Vec<(&'static str, u64)>;
}

/// The clock hooks stamp and check frames with: Unix seconds, low 32 bits
/// (agno's wire carries the C's `time(NULL)` so).
pub fn unix_now() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

pub struct Nested<H: Hook> {
    inner: Box<dyn Transport>,
    hook: H,
    scratch: Batch,
    idx: Vec<usize>,
    /// For each frame of the last received batch, its position in the inner one.
    kept_from: Vec<usize>,
}

impl<H: Hook> Nested<H> {
    pub fn new(mut inner: Box<dyn Transport>, hook: H) -> Self {
        if hook.authenticates() {
            inner.defer_learning();
        }
        let n = crate::fwd::BATCH;
        Nested { inner, hook, scratch: Batch::new(n), idx: Vec::with_capacity(n), kept_from: Vec::with_capacity(n) }
    }
}

impl<H: Hook> Transport for Nested<H> {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        let r = match self.inner.recv(buf)? {
            Recv::Frame(n) => {
                self.hook.begin();
                self.kept_from.clear();
                match self.hook.incoming(buf, n) {
                    Some(m) => {
                        if self.hook.authenticates() {
                            self.inner.authentic(0);
                        }
                        self.kept_from.push(0);
                        Recv::Frame(m)
                    }
                    None => Recv::Skip,
                }
            }
            other => other,
        };
        self.hook.flush();
        Ok(r)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.hook.begin();
        let n = self.hook.outgoing(frame, &mut self.scratch.bufs[0]);
        self.hook.flush();
        match n {
            Some(n) => self.inner.send(&self.scratch.bufs[0][..n]).map(|_| frame.len()),
            None => Err(super::dropped()), // counted in drops_out
        }
    }

    fn data_fd(&self) -> RawFd {
        self.inner.data_fd()
    }
    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        self.inner.poll_fds(out);
    }
    fn ctl_fd(&self) -> Option<RawFd> {
        self.inner.ctl_fd()
    }
    fn exit_status(&mut self) -> Option<i32> {
        self.inner.exit_status()
    }
    fn command(&mut self, line: &str) -> Option<String> {
        self.inner.command(line)
    }
    fn tick(&mut self) {
        self.inner.tick();
        self.hook.tick();
    }
    fn defer_learning(&mut self) {
        self.inner.defer_learning();
    }
    fn authentic(&mut self, i: usize) {
        if let Some(&k) = self.kept_from.get(i) {
            self.inner.authentic(k);
        }
    }
    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.inner.extra_stats();
        v.extend(self.hook.extra_stats());
        v
    }

    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        let open = self.inner.recv_batch(batch)?;
        batch.materialize(); // the hook changes frames in place
        self.hook.begin();
        let mut keep = 0;
        let vouches = self.hook.authenticates();
        self.kept_from.clear();
        for i in 0..batch.count {
            match self.hook.incoming(&mut batch.bufs[i], batch.lens[i]) {
                Some(m) => {
                    if vouches {
                        self.inner.authentic(i);
                    }
                    self.kept_from.push(i);
                    batch.lens[i] = m;
                    if keep != i {
                        batch.bufs.swap(keep, i);
                        batch.lens[keep] = m;
                    }
                    keep += 1;
                }
                None => batch.skipped += 1,
            }
        }
        batch.count = keep;
        self.hook.flush();
        Ok(open)
    }

    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        let mut out = SendOutcome::default();
        self.hook.begin();
        for part in idx.chunks(self.scratch.capacity()) {
            self.idx.clear();
            self.scratch.clear();
            for &i in part {
                let k = self.scratch.count;
                match self.hook.outgoing(batch.frame(i), &mut self.scratch.bufs[k]) {
                    Some(n) => {
                        self.scratch.lens[k] = n;
                        self.idx.push(k);
                        self.scratch.count += 1;
                    }
                    None => out.dropped += 1,
                }
            }
            let r = self.inner.send_batch(&self.scratch, &self.idx);
            out.sent += r.sent;
            out.dropped += r.dropped;
            if r.error.is_some() {
                out.error = r.error;
                break;
            }
        }
        self.hook.flush();
        out
    }
}
