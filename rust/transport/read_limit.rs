//! How much one receive call takes from an fd that cannot say it is
//! drained (issue 30): a tap (reads per `recv_batch`) and a UDP_GRO socket
//! (messages per recvmmsg). Reading until EAGAIN costs a failed call per
//! wake-up, at a low rate one per frame; and each message a recvmmsg asks
//! for costs a header built and checked. The last call predicts this one:
//! when it ran dry after k reads, k (at least 1); when it used its whole
//! allowance and we are back soon (within `BACK`: the fd stayed readable),
//! twice as many, up to the caller's maximum. Stopping early loses nothing:
//! the fd stays readable and the callers' polls are level-triggered.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct ReadLimit {
    want: usize,
    /// When the current (or last) call started.
    started: Option<Instant>,
    /// The last call used its whole allowance.
    full: bool,
}

impl Default for ReadLimit {
    fn default() -> ReadLimit {
        ReadLimit::new()
    }
}

impl ReadLimit {
    const BACK: Duration = Duration::from_micros(500);

    pub fn new() -> ReadLimit {
        ReadLimit { want: 1, started: None, full: false }
    }

    /// Reads allowed for a call starting at `now`, at most `max`.
    pub fn start(&mut self, now: Instant, max: usize) -> usize {
        let back = self.started.is_some_and(|t| now.saturating_duration_since(t) < ReadLimit::BACK);
        if std::mem::take(&mut self.full) && back {
            self.want = self.want.saturating_mul(2);
        }
        self.started = Some(now);
        self.want = self.want.clamp(1, max.max(1));
        self.want
    }

    /// The call made `reads` reads; `dry`: the last one found nothing (so
    /// `reads - 1` brought something).
    pub fn end(&mut self, reads: usize, dry: bool) {
        if dry {
            self.want = reads.saturating_sub(1).max(1);
        } else {
            self.full = reads >= self.want;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_limit_follows_what_the_last_call_found() {
        let us = Duration::from_micros;
        let mut r = ReadLimit::new();
        let mut now = Instant::now();
        // Lone frames, a sleep apart: one read each, never a failed one.
        for _ in 0..3 {
            now += us(10_000);
            assert_eq!(r.start(now, 256), 1);
            r.end(1, false);
        }
        // A burst: the loop comes straight back while the fd stays
        // readable, with twice as many reads each time, up to the batch.
        for want in [2, 4, 8, 16, 32, 64, 128, 256, 256] {
            now += us(30);
            assert_eq!(r.start(now, 256), want);
            r.end(want, false);
        }
        // Three frames, then a read that found nothing: 3 next time, and a
        // smaller batch caps it.
        now += us(30);
        r.start(now, 256);
        r.end(4, true);
        now += us(10_000);
        assert_eq!(r.start(now, 256), 3);
        r.end(3, false);
        now += us(30);
        assert_eq!(r.start(now, 4), 4, "doubled, capped by the batch");
        // One frame then nothing: one read next time (no failed one).
        r.end(2, true);
        now += us(30);
        assert_eq!(r.start(now, 256), 1);
        r.end(1, false);
        now += us(10_000);
        assert_eq!(r.start(now, 256), 1, "back after a sleep: not doubled");
        // From 8, a wake-up whose one read found nothing: one read next.
        r.end(1, false);
        for want in [2, 4, 8] {
            now += us(30);
            assert_eq!(r.start(now, 256), want);
            r.end(want, false);
        }
        now += us(30);
        assert_eq!(r.start(now, 256), 16);
        r.end(1, true);
        now += us(30);
        assert_eq!(r.start(now, 256), 1);
    }
}
