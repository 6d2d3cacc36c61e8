//! restart://[SECONDS]{VNL} — a nested VNL that is reopened when it fails,
//! as upstream's libvdeplug_restart (virtualsquare/vdeplug_restart, 2026):
//! SECONDS (default 20, strtol syntax: decimal, 0x hex, 0 octal; clamped to
//! 1 s .. one week) is the pace of reconnection. The first open must
//! succeed (a wrong VNL fails at once); afterwards the plug never ends
//! because of the nested VNL.
//!
//! A failure is EOF or hang-up of the nested VNL (its recv says closed, its
//! control fd is readable) or a hard error from its recv or send. The
//! nested VNL is then closed and reopened right away if its last open is
//! at least SECONDS old, else SECONDS after that open; a reopen that fails
//! is retried every SECONDS (by whichever comes first: a receive, a send,
//! a tick). While it is down, frames sent are dropped and
//! counted (drops_out, `restart_dropped`); `restarts` counts reopens that
//! succeeded, `restart_failures` failures seen, `restart_errors` reopens
//! that failed, `restart_down` is 1 while down.
//!
//! Unlike upstream, which notices a failure only by a 1-byte probe frame
//! sent to the nested VNL each SECONDS without traffic, a failure is
//! noticed when it happens, and no probe goes on the wire.
//!
//! The data fd is our own epoll (the nested data and control fds, and a
//! timerfd for the next reopen), so it stays the same across reopens.

use std::io;
use std::os::fd::RawFd;

use super::timerfd::{now_ns, TimerFd};
use super::{describe, is_transient, Batch, Link, Recv, SendOutcome, Transport};
use crate::plugins::{self, OpenArgs};
use crate::sys::{self, Epoll};

pub const DEFAULT_SECONDS: u64 = 20;
pub const MAX_SECONDS: u64 = 7 * 24 * 60 * 60;

pub struct Restart {
    vnl: Vec<u8>,
    args: OpenArgs,
    period_ns: u64,
    inner: Option<Box<dyn Transport>>,
    /// The nested fds registered in `poll` (data, control).
    fds: [Option<RawFd>; 2],
    poll: Epoll,
    timer: TimerFd,
    /// When the last open was attempted (CLOCK_MONOTONIC ns).
    last_open: u64,
    /// A reopen is due at this time (while down).
    due: Option<u64>,
    defer_learning: bool,
    stats: RestartStats,
}

#[derive(Debug, Default, Clone, Copy)]
struct RestartStats {
    restarts: u64,
    failures: u64,
    errors: u64,
    dropped: u64,
}

impl Restart {
    /// Open `vnl` (which must succeed) and keep it open, reopening it
    /// `seconds` apart at most.
    pub fn open(vnl: &[u8], args: &OpenArgs, seconds: u64) -> Result<Restart, plugins::OpenError> {
        let inner = plugins::open_transport(vnl, args)?;
        let mut r = Restart {
            vnl: vnl.to_vec(),
            args: args.clone(),
            period_ns: seconds.clamp(1, MAX_SECONDS) * 1_000_000_000,
            inner: None,
            fds: [None, None],
            poll: Epoll::new()?,
            timer: TimerFd::new()?,
            last_open: now_ns(),
            due: None,
            defer_learning: false,
            stats: RestartStats::default(),
        };
        r.poll.add(r.timer.raw(), 0)?;
        r.attach(inner)?;
        Ok(r)
    }

    fn attach(&mut self, mut inner: Box<dyn Transport>) -> io::Result<()> {
        if self.defer_learning {
            inner.defer_learning();
        }
        let fds = [Some(inner.data_fd()), inner.ctl_fd()];
        for (i, fd) in fds.iter().enumerate() {
            if let Some(fd) = *fd {
                self.poll.add(fd, i as u64 + 1)?;
            }
        }
        self.fds = fds;
        self.inner = Some(inner);
        Ok(())
    }

    /// The nested VNL failed: close it, schedule the reopen.
    fn fail(&mut self, why: &str) {
        for fd in self.fds.iter_mut().filter_map(Option::take) {
            let _ = self.poll.delete(fd);
        }
        self.inner = None;
        self.stats.failures += 1;
        let due = (self.last_open + self.period_ns).max(now_ns());
        self.schedule(due);
        eprintln!("restart: {} failed ({why}): reopening in {:.0} s", String::from_utf8_lossy(&self.vnl), due.saturating_sub(now_ns()) as f64 / 1e9);
    }

    fn schedule(&mut self, at: u64) {
        self.due = Some(at);
        if let Err(e) = self.timer.arm(Some(at)) {
            eprintln!("restart: cannot arm the reopen timer: {}", describe(&e));
        }
    }

    /// While down and the reopen is due: try it.
    fn service(&mut self) {
        let Some(due) = self.due else { return };
        let now = now_ns();
        if now < due {
            return;
        }
        self.timer.clear();
        self.due = None;
        self.last_open = now;
        let opened = plugins::open_transport(&self.vnl, &self.args).map_err(|e| e.to_string()).and_then(|t| self.attach(t).map_err(|e| describe(&e)));
        match opened {
            Ok(()) => {
                self.stats.restarts += 1;
                eprintln!("restart: {} reopened", String::from_utf8_lossy(&self.vnl));
            }
            Err(e) => {
                self.stats.errors += 1;
                self.schedule(now + self.period_ns);
                eprintln!("restart: reopening {} failed ({e}): next try in {} s", String::from_utf8_lossy(&self.vnl), self.period_ns / 1_000_000_000);
            }
        }
    }

    /// Has the nested control fd hung up (readable means EOF)?
    fn hung_up(&self) -> bool {
        self.fds[1].is_some_and(|fd| sys::poll_in(fd, 0).unwrap_or(true))
    }

    /// A nested receive error: only the transient ones pass through.
    fn recv_error(&mut self, e: io::Error) -> io::Result<()> {
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
            return Err(e);
        }
        self.fail(&describe(&e));
        Ok(())
    }
}

impl Transport for Restart {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        self.service();
        let Some(inner) = self.inner.as_mut() else { return Err(io::ErrorKind::WouldBlock.into()) };
        match inner.recv(buf) {
            Ok(Recv::Closed) => self.fail("closed"),
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.hung_up() => self.fail("hung up"),
            Err(e) => self.recv_error(e)?,
        }
        Ok(Recv::Skip)
    }

    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        self.service();
        let Some(inner) = self.inner.as_mut() else {
            batch.clear();
            return Ok(Link::Open);
        };
        match inner.recv_batch(batch) {
            Ok(Link::Closed) => self.fail("closed"),
            Ok(Link::Open) if !batch.done() && self.hung_up() => self.fail("hung up"),
            Ok(Link::Open) => {}
            Err(e) => {
                batch.clear();
                self.recv_error(e)?;
            }
        }
        Ok(Link::Open)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        if self.inner.is_none() {
            self.service();
        }
        let Some(inner) = self.inner.as_mut() else {
            self.stats.dropped += 1;
            return Err(super::dropped());
        };
        match inner.send(frame) {
            Err(e) if !is_transient(&e) => {
                self.fail(&describe(&e));
                self.stats.dropped += 1;
                Err(super::dropped())
            }
            r => r,
        }
    }

    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        if self.inner.is_none() {
            self.service();
        }
        let Some(inner) = self.inner.as_mut() else {
            self.stats.dropped += idx.len() as u64;
            return SendOutcome { dropped: idx.len(), ..SendOutcome::default() };
        };
        let mut out = inner.send_batch(batch, idx);
        if let Some(e) = out.error.take() {
            let lost = idx.len().saturating_sub(out.sent + out.dropped);
            out.dropped += lost;
            self.stats.dropped += lost as u64;
            self.fail(&describe(&e));
        }
        out
    }

    fn data_fd(&self) -> RawFd {
        self.poll.raw()
    }

    fn tick(&mut self) {
        self.service();
        if let Some(inner) = self.inner.as_mut() {
            inner.tick();
        }
    }

    fn command(&mut self, line: &str) -> Option<String> {
        self.inner.as_mut()?.command(line)
    }

    fn frame_prefix(&self) -> &[u8] {
        self.inner.as_ref().map_or(&[], |i| i.frame_prefix())
    }

    fn defer_learning(&mut self) {
        self.defer_learning = true;
        if let Some(inner) = self.inner.as_mut() {
            inner.defer_learning();
        }
    }

    fn authentic(&mut self, i: usize) {
        if let Some(inner) = self.inner.as_mut() {
            inner.authentic(i);
        }
    }

    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.inner.as_ref().map(|i| i.extra_stats()).unwrap_or_default();
        let s = self.stats;
        v.extend([("restarts", s.restarts), ("restart_failures", s.failures), ("restart_errors", s.errors), ("restart_dropped", s.dropped), ("restart_down", u64::from(self.inner.is_none()))]);
        v
    }
}

// ---------------------------------------------------------------- VNL

/// The head of `restart://[SECONDS]{VNL}`: empty is the default; a number
/// as strtol reads it (0x hex, leading-0 octal), clamped to 1..=MAX_SECONDS.
pub fn seconds(head: &str) -> Option<u64> {
    let t = head.trim();
    if t.is_empty() {
        return Some(DEFAULT_SECONDS);
    }
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (digits, radix) = match t.get(..2) {
        Some("0x" | "0X") => (&t[2..], 16),
        _ if t.len() > 1 && t.starts_with('0') => (&t[1..], 8),
        _ => (t, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = u64::from_str_radix(digits, radix).unwrap_or(u64::MAX);
    Some(if neg { 1 } else { v.clamp(1, MAX_SECONDS) })
}

fn open_vnl(t: &Target, args: &OpenArgs) -> OpenResult {
    let head = t.address_str();
    let Some(secs) = seconds(&head) else {
        return Err(t.error(format!("invalid polling period {head:?}: seconds (default {DEFAULT_SECONDS})"), &t.address));
    };
    Ok(Box::new(Restart::open(t.nested.as_deref().unwrap_or_default(), args, secs)?))
}

pub const PLUGIN: Builtin = Builtin {
    scheme: "restart",
    syntax: Syntax::Raw,
    options: &[],
    bare: None,
    nests: true,
    summary: "reopen a nested VNL that fails, every SECONDS (20): restart://5{vde:///tmp/sw}",
    open: open_vnl,
};

use crate::plugins::{Builtin, OpenResult, Target};
use crate::vnl::Syntax;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Endpoint;

    #[test]
    fn seconds_as_upstream_reads_them() {
        assert_eq!(seconds(""), Some(20));
        assert_eq!(seconds("3"), Some(3));
        assert_eq!(seconds("0x10"), Some(16));
        assert_eq!(seconds("010"), Some(8));
        assert_eq!(seconds("0"), Some(1), "clamped up");
        assert_eq!(seconds("-5"), Some(1));
        assert_eq!(seconds("99999999999999999999"), Some(MAX_SECONDS), "clamped down");
        assert_eq!(seconds("3s"), None);
        assert_eq!(seconds("x"), None);
        assert!(matches!(plugins::open_transport(b"restart://3s{null://}", &OpenArgs::default()), Err(plugins::OpenError::Vnl(e)) if e.part == "3s"));
    }

    #[test]
    fn first_open_must_succeed() {
        assert!(plugins::open_transport(b"restart://1{vde:///nonexistent/restart-sw}", &OpenArgs::default()).is_err());
    }

    #[test]
    fn down_until_the_reopen_is_due_then_up() {
        // null:// never fails: a failure is simulated through fail().
        let mut r = Restart::open(b"null://", &OpenArgs::default(), 1).unwrap();
        r.fail("test");
        assert!(r.inner.is_none() && r.due.is_some_and(|d| d > now_ns()), "opened just now: the reopen waits a period");
        let frame = [0xffu8; 60];
        assert!(r.send(&frame).is_err_and(|e| is_transient(&e)), "dropped while down");
        assert!(!sys::poll_in(r.data_fd(), 0).unwrap(), "nothing to do before the reopen is due");
        r.schedule(now_ns()); // as if the period passed
        assert!(sys::poll_in(r.data_fd(), 1000).unwrap(), "the reopen is due: the data fd says so");
        let mut buf = [0u8; 100];
        assert!(r.recv(&mut buf).is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock));
        let s = r.stats;
        assert_eq!((s.restarts, s.failures, s.dropped, r.inner.is_some()), (1, 1, 1, true));
        assert_eq!(r.send(&frame).unwrap(), 60, "up again");
    }

    fn stats(ep: &Endpoint) -> std::collections::HashMap<&'static str, u64> {
        ep.transport.extra_stats().into_iter().collect()
    }

    #[test]
    fn a_command_that_ends_is_run_again_a_period_later() {
        let t = plugins::open_transport(b"restart://1{cmd://true}", &OpenArgs::default()).unwrap();
        let mut ep = Endpoint::new("r", t);
        let mut buf = [0u8; 100];
        let start = std::time::Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < std::time::Duration::from_secs(5) && stats(&ep)["restarts"] < 1 {
            let _ = sys::poll_in(ep.transport.data_fd(), 100);
            assert!(ep.recv_frame(&mut buf).is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock), "the plug never ends");
            seen.push(stats(&ep)["restart_down"]);
        }
        let s = stats(&ep);
        assert!(s["restarts"] >= 1 && s["restart_failures"] >= 1, "{s:?}");
        assert!(seen.contains(&1), "down between the failure and the reopen");
        assert!(start.elapsed() >= std::time::Duration::from_millis(900), "no reopen before a period from the last open");
    }
}
