//! A sliding anti-replay window (as IPsec's RFC 6479 and WireGuard): a
//! counter is accepted once, if it is newer than the highest seen minus
//! `WINDOW`. Fixed size: a sender costs the same memory however it sends.
//! No I/O; the caller checks a counter only after the frame authenticated.

/// Counters this far behind the highest seen are still accepted (once).
pub const WINDOW: u64 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// The highest counter accepted + 1 (0: none yet).
    next: u64,
    /// Bit `c % WINDOW` is set when counter `c` (within the window) was seen.
    bits: [u64; WORDS],
}

/// Why a counter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Already accepted once.
    Seen,
    /// Older than the window.
    TooOld,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { next: 0, bits: [0; WORDS] }
    }
}

impl ReplayWindow {
    /// Would `c` be accepted (without recording it)? u64::MAX never is
    /// (senders start a new session before it).
    pub fn check(&self, c: u64) -> Result<(), Replay> {
        if c == u64::MAX {
            return Err(Replay::TooOld);
        }
        if c >= self.next {
            return Ok(());
        }
        if self.next - c > WINDOW {
            return Err(Replay::TooOld);
        }
        if self.bit(c) {
            Err(Replay::Seen)
        } else {
            Ok(())
        }
    }

    /// Accept `c` if it is new, recording it.
    pub fn accept(&mut self, c: u64) -> Result<(), Replay> {
        self.check(c)?;
        if c >= self.next {
            // Clear the bits of the counters skipped over (and of `c`).
            let ahead = c - self.next + 1;
            if ahead >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for k in self.next..=c {
                    self.set(k, false);
                }
            }
            self.next = c + 1;
        }
        self.set(c, true);
        Ok(())
    }

    fn bit(&self, c: u64) -> bool {
        let i = (c % WINDOW) as usize;
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, c: u64, on: bool) {
        let i = (c % WINDOW) as usize;
        if on {
            self.bits[i / 64] |= 1 << (i % 64);
        } else {
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_out_of_order_replayed_and_too_old() {
        let mut w = ReplayWindow::default();
        for c in 0..10 {
            assert_eq!(w.accept(c), Ok(()));
        }
        assert_eq!(w.accept(5), Err(Replay::Seen));
        assert_eq!(w.accept(100), Ok(()), "a jump ahead");
        assert_eq!(w.accept(50), Ok(()), "late, inside the window");
        assert_eq!(w.accept(50), Err(Replay::Seen));
        assert_eq!(w.accept(9), Err(Replay::Seen), "still remembered");
        assert_eq!(w.accept(5000), Ok(()));
        assert_eq!(w.accept(5001 - WINDOW), Ok(()), "the oldest still inside");
        assert_eq!(w.accept(5000 - WINDOW), Err(Replay::TooOld));
        assert_eq!(w.accept(4999), Ok(()));
        assert_eq!(w.accept(u64::MAX - 1), Ok(()));
        assert_eq!(w.accept(u64::MAX - 1), Err(Replay::Seen), "even at the very end");
        assert_eq!(w.accept(u64::MAX), Err(Replay::TooOld), "never a valid counter");
    }

    /// Against a set of everything accepted: a counter passes exactly when
    /// it is new and within WINDOW of the highest.
    #[test]
    fn agrees_with_a_model() {
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::HashSet::new();
        let mut hi: Option<u64> = None;
        let mut x: u64 = 7;
        for _ in 0..200_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let base = hi.unwrap_or(0);
            let c = (base + (x >> 33) % 64).saturating_sub((x >> 20) % (WINDOW + 200));
            let fresh = !seen.contains(&c) && hi.is_none_or(|h| c + WINDOW > h);
            assert_eq!(w.accept(c).is_ok(), fresh, "counter {c}, highest {hi:?}");
            if fresh {
                seen.insert(c);
                hi = Some(hi.map_or(c, |h| h.max(c)));
            }
        }
    }
}
