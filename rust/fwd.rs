//! The forwarding loop behind `vde_plug A B`: one epoll set over both
//! endpoints' data (and control) fds; on each wakeup a bounded batch is read
//! from the ready side, validated, and written to the other side. Buffers are
//! allocated once. The loop returns to its caller every `tick` so Python can
//! run signal handlers (Ctrl-C, SIGTERM) between slices.

use std::io;
use std::time::{Duration, Instant};

use crate::sys::{self, Epoll};
use crate::transport::{Batch, Endpoint, Link};

/// Frames per batch of a transport's own buffers (a libvdeplug ring, a
/// switch's scratch; also the recvmmsg/sendmmsg batch).
pub const BATCH: usize = 64;
/// Frames the forwarding loop moves per wakeup per side: a few TSO
/// super-frames (45 segments each) at once, so that trains are seldom cut
/// at a batch boundary and the far tap gets whole super-frames back.
pub const FORWARD_BATCH: usize = 256;

const DATA: u64 = 0;
const CTL: u64 = 2;

/// Why `run_for` returned.
#[derive(Debug)]
pub enum Exit {
    /// Time slice over or a signal arrived: call again after checking signals.
    Tick,
    /// Side 0 or 1 hung up (EOF, peer gone).
    Closed(usize),
    /// Side 0 or 1 failed hard.
    Failed(usize, io::Error),
}

/// Under sustained load (batches of at least HOT_BATCH frames) the loop
/// polls without sleeping for a while before it blocks again (see `Spin`):
/// the peers then seldom pay for waking us, and idle or light traffic costs
/// nothing.
const HOT_BATCH: usize = 8;

/// How long to busy-poll after a hot batch, adapted much as KVM's halt
/// polling: when a spin runs out and the blocking wait that follows ends
/// within `MIN..MAX`, a longer spin would have caught it: the budget
/// doubles. A longer wait means spinning was wasted; a wait under `MIN`
/// means the data came the moment we let go of the CPU, i.e. our spin kept
/// its producer off a shared CPU (measured: TCP over an overlay on 2 vCPUs,
/// 4 busy tasks, most waits after a 50 µs spin were under 5 µs). Both halve
/// it, down to no spinning (then each hot batch still measures the wait).
/// A small-frame flood keeps spinning; the TSO stream stops burning the CPU
/// its peers need (8 % less CPU per byte in that benchmark).
#[derive(Debug, Clone, Copy)]
struct Spin {
    budget: Duration,
    /// While `Some`, busy-poll until this instant.
    until: Option<Instant>,
    /// The last spin ran out: since when we wait (blocking).
    missed: Option<Instant>,
}

/// A busy-poll budget twice as long (at least `min`, at most `max`).
fn doubled(budget: Duration, min: Duration, max: Duration) -> Duration {
    (budget * 2).max(min).min(max)
}

/// A busy-poll budget half as long; under `min`, no spinning at all.
fn halved(budget: Duration, min: Duration) -> Duration {
    let b = budget / 2;
    if b < min {
        Duration::ZERO
    } else {
        b
    }
}

impl Spin {
    const MAX: Duration = Duration::from_micros(50);
    const MIN: Duration = Duration::from_micros(4);

    fn new() -> Spin {
        Spin { budget: Spin::MAX, until: None, missed: None }
    }

    /// A hot batch was moved at `now`: spin for the budget.
    fn arm(&mut self, now: Instant) {
        self.until = Some(now + self.budget);
    }

    /// The poll timeout at `now` (ms): 0 while spinning, else `block`.
    fn timeout(&mut self, now: Instant, block: i32) -> i32 {
        match self.until {
            Some(t) if now < t => 0,
            Some(_) => {
                self.until = None;
                self.missed = Some(now);
                block
            }
            None => block,
        }
    }

    /// Events arrived at `now`: if we blocked after a spin ran out, adapt.
    fn woke(&mut self, now: Instant) {
        if let Some(since) = self.missed.take() {
            let waited = now.saturating_duration_since(since);
            self.budget = if (Spin::MIN..Spin::MAX).contains(&waited) { doubled(self.budget, Spin::MIN, Spin::MAX) } else { halved(self.budget, Spin::MIN) };
        }
    }
}

/// Busy-poll for the answer to a frame that woke us from a quiet spell
/// (issue 30). At a low rate a round trip is mostly sleeping relays being
/// woken: here (2 vCPUs that halt when idle) a ping through two relays took
/// 270 µs at 100/s but 115 µs at 1000/s. A request relayed one way is
/// usually answered through the same relay within a few hundred µs, so
/// after a wake-up that moved frames, when the last such wake-up is at
/// least `QUIET` ago, the loop polls for up to `budget`, yielding the CPU
/// to any runnable task between polls (a spin that does not yield keeps the
/// very peers it waits for off a shared CPU: 380 µs). One-shot: an event
/// caught ends the spin. An answer is frames from a side the arming frames
/// did not come from (more of the same side, e.g. what a tap read left
/// queued, is pumped but neither ends the spin nor counts). When a spin
/// runs out, the wait for the answer teaches the budget, much as `Spin`:
/// an answer within `max` doubles it (and arms nothing: it is the late
/// answer), a longer wait (one-way traffic) halves it, down to no spinning.
/// Not at higher rates (wake-ups under `QUIET` apart): the CPUs seldom
/// sleep then, and spinning every gap gained nothing at 1000/s.
/// `VDEPLUG_BUSY_POLL=µs` sets `max` (0, or under `MIN`: never).
#[derive(Debug, Clone, Copy)]
struct ReplySpin {
    budget: Duration,
    max: Duration,
    until: Option<Instant>,
    missed: Option<Instant>,
    /// The last wake-up from sleep that moved frames.
    last_cold: Option<Instant>,
    /// The sides an answer would come from (those the arming frames did not).
    expect: [bool; 2],
}

impl ReplySpin {
    /// Default `max`: a round trip through two relays and an idle far host
    /// (p90 at 100/s about 300 µs here).
    const MAX: Duration = Duration::from_micros(400);
    const MIN: Duration = Duration::from_micros(4);
    const QUIET: Duration = Duration::from_millis(2);

    fn new(max: Duration) -> ReplySpin {
        let max = if max < ReplySpin::MIN { Duration::ZERO } else { max };
        ReplySpin { budget: max, max, until: None, missed: None, last_cold: None, expect: [false; 2] }
    }

    fn from_env() -> ReplySpin {
        let Ok(v) = std::env::var("VDEPLUG_BUSY_POLL") else { return ReplySpin::new(ReplySpin::MAX) };
        match v.trim().parse::<u64>() {
            Ok(us) => ReplySpin::new(Duration::from_micros(us.min(1_000_000))),
            Err(_) => {
                log_info(&format!("VDEPLUG_BUSY_POLL={v:?} is not a number of microseconds (0 turns busy-polling off): using {}", ReplySpin::MAX.as_micros()));
                ReplySpin::new(ReplySpin::MAX)
            }
        }
    }

    /// Frames moved at `now` from the sides in `from` after a wake-up
    /// (`slept`: the loop had blocked; `answered`: `woke` said it answers a
    /// spin that ran out).
    fn moved(&mut self, now: Instant, from: [bool; 2], slept: bool, answered: bool) {
        if !slept || answered {
            return;
        }
        let quiet = self.last_cold.is_none_or(|t| now.saturating_duration_since(t) >= ReplySpin::QUIET);
        self.last_cold = Some(now);
        if quiet && !self.max.is_zero() {
            self.until = Some(now + self.budget);
            self.missed = None;
            self.expect = [!from[0], !from[1]];
        }
    }

    /// Is a spin running at `now`? When it has just run out, the wait that
    /// follows is timed.
    fn spinning(&mut self, now: Instant) -> bool {
        match self.until {
            Some(t) if now < t => true,
            Some(_) => {
                self.until = None;
                self.missed = Some(now);
                false
            }
            None => false,
        }
    }

    /// Events from the sides in `ready` arrived at `now`. Returns whether
    /// they answer a spin that ran out (the budget adapts); an answer caught
    /// while spinning ends the spin.
    fn woke(&mut self, now: Instant, ready: [bool; 2]) -> bool {
        let answer = (ready[0] && self.expect[0]) || (ready[1] && self.expect[1]);
        if answer {
            self.until = None;
        }
        let Some(since) = self.missed else { return false };
        if now.saturating_duration_since(since) >= self.max {
            // No answer within `max`, whatever woke us: a longer spin would
            // not have caught one.
            self.missed = None;
            self.budget = halved(self.budget, ReplySpin::MIN);
            return false;
        }
        if !answer {
            return false; // more of the same side, soon: the answer may follow
        }
        self.missed = None;
        self.budget = doubled(self.budget, ReplySpin::MIN, self.max);
        true
    }
}

/// Reusable state of one forwarding job.
pub struct Forwarder {
    poll: Epoll,
    batch: Batch,
    idx: Vec<usize>,
    spin: Spin,
    reply: ReplySpin,
    /// `vde_plug -L`: source addresses seen in frames from side 1.
    pub iplog: Option<IpLog>,
}

/// `vde_plug -L`: each source IPv4/IPv6 address (with its VLAN) seen in
/// frames coming from one side is logged once. Bounded: after `MAX` distinct
/// addresses nothing new is remembered (or logged).
#[derive(Default)]
pub struct IpLog {
    seen: std::collections::HashSet<(std::net::IpAddr, u16)>,
}

impl IpLog {
    const MAX: usize = 65_536;

    /// The source address of an IP frame, if this is the first time it is seen.
    pub fn observe(&mut self, frame: &[u8]) -> Option<(std::net::IpAddr, u16)> {
        use crate::wire::ethernet::{EtherType, Frame};
        let f = Frame::new_checked(frame).ok()?;
        let p = f.payload();
        let ip: std::net::IpAddr = match f.inner_ethertype() {
            EtherType::Ipv4 if p.len() >= 20 && p[0] >> 4 == 4 => <[u8; 4]>::try_from(&p[12..16]).ok()?.into(),
            EtherType::Ipv6 if p.len() >= 40 && p[0] >> 4 == 6 => <[u8; 16]>::try_from(&p[8..24]).ok()?.into(),
            _ => return None,
        };
        let key = (ip, f.vlan_id().unwrap_or(0));
        if self.seen.len() >= Self::MAX || !self.seen.insert(key) {
            return None;
        }
        Some(key)
    }
}

impl Forwarder {
    pub fn new(ends: [&Endpoint; 2]) -> io::Result<Self> {
        let poll = Epoll::new()?;
        let mut fds = Vec::new();
        for (side, ep) in ends.iter().enumerate() {
            // The fds behind each side's data fd, watched here directly.
            fds.clear();
            ep.transport.poll_fds(&mut fds);
            for &fd in &fds {
                poll.add(fd, DATA + side as u64)?;
            }
            if let Some(c) = ep.transport.ctl_fd() {
                poll.add(c, CTL + side as u64)?;
            }
        }
        Ok(Forwarder { poll, batch: Batch::new(FORWARD_BATCH), idx: Vec::with_capacity(FORWARD_BATCH), spin: Spin::new(), reply: ReplySpin::from_env(), iplog: None })
    }

    /// Forward in both directions for up to `tick`.
    pub fn run_for(&mut self, ends: [&mut Endpoint; 2], tick: Duration) -> Exit {
        let [a, b] = ends;
        let mut ends = [a, b];
        for e in ends.iter_mut() {
            e.maybe_tick();
        }
        let deadline = Instant::now() + tick;
        let mut events = sys::empty_events::<8>();
        loop {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Exit::Tick;
            }
            // While replying, `spin` is not consulted: a hot spin that ran
            // out meanwhile times the wait from when the reply spin ends.
            let timeout = if self.reply.spinning(now) {
                sys::yield_cpu();
                0
            } else {
                // Rounded up: a slice ends in one wait, not a 199 ms and a 1 ms one.
                self.spin.timeout(now, left.as_micros().div_ceil(1000) as i32)
            };
            let n = match self.poll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Exit::Tick,
                Err(e) => return Exit::Failed(0, e),
            };
            let slept = timeout > 0;
            // A side is pumped once per wake-up, however many of its fds
            // are ready.
            let (mut ready, mut closed) = ([false; 2], None);
            for ev in &events[..n] {
                let token = ev.u64;
                let side = (token & 1) as usize;
                if token >= CTL {
                    // A control channel is silent after setup: readable means EOF.
                    closed = Some(side);
                } else {
                    ready[side] = true;
                }
            }
            let mut answered = false;
            if n > 0 {
                let now = Instant::now();
                if slept {
                    self.spin.woke(now);
                }
                answered = self.reply.woke(now, ready);
            }
            let mut moved = false;
            for side in (0..2).filter(|&s| ready[s]) {
                let (from, to) = if side == 0 {
                    let (x, y) = ends.split_at_mut(1);
                    (&mut *x[0], &mut *y[0])
                } else {
                    let (x, y) = ends.split_at_mut(1);
                    (&mut *y[0], &mut *x[0])
                };
                if let Some(exit) = self.pump(from, to, side) {
                    return exit;
                }
                moved |= self.batch.count > 0;
            }
            if moved {
                self.reply.moved(Instant::now(), ready, slept, answered);
            }
            if let Some(side) = closed {
                return Exit::Closed(side);
            }
        }
    }

    /// Move one batch from `from` (side `side`) to `to`.
    fn pump(&mut self, from: &mut Endpoint, to: &mut Endpoint, side: usize) -> Option<Exit> {
        self.batch.set_prefix(to.transport.frame_prefix());
        let open = match from.recv_valid(&mut self.batch, &mut self.idx) {
            Ok(link) => link == Link::Open,
            Err(e) => return Some(Exit::Failed(side, e)),
        };
        if side == 1 {
            if let Some(log) = self.iplog.as_mut() {
                for &i in &self.idx {
                    if let Some((ip, vlan)) = log.observe(self.batch.frame(i)) {
                        log_info(&format!("{}: IP {ip} vlan {vlan}", from.name));
                    }
                }
            }
        }
        if self.batch.count + self.batch.skipped >= HOT_BATCH {
            self.spin.arm(Instant::now());
        }
        if !self.idx.is_empty() {
            if let Some(e) = to.send_valid(&self.batch, &self.idx) {
                return Some(if is_hangup(&e) { Exit::Closed(1 - side) } else { Exit::Failed(1 - side, e) });
            }
        }
        if !open {
            return Some(Exit::Closed(side));
        }
        None
    }
}

/// Errors that mean "the other end went away" rather than a fault.
/// Log at LOG_INFO to syslog, or to stderr when no syslog daemon listens
/// (/dev/log, looked for once).
fn log_info(msg: &str) {
    static SYSLOG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *SYSLOG.get_or_init(|| std::path::Path::new("/dev/log").exists()) {
        sys::syslog(libc::LOG_INFO, msg);
    } else {
        eprintln!("vde_plug[{}]: {msg}", std::process::id());
    }
}

pub fn is_hangup(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::WriteZero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{null, stream, Endpoint};
    use std::os::fd::OwnedFd;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = std::io::pipe().unwrap();
        (r.into(), w.into())
    }

    #[test]
    fn stream_to_stream_forwards_and_drops_runts() {
        // a: reads from p1, writes to p2; b: reads from p3, writes to p4.
        let (p1r, p1w) = pipe();
        let (p2r, p2w) = pipe();
        let (p3r, p3w) = pipe();
        let (p4r, p4w) = pipe();
        let mut a = Endpoint::new("a", Box::new(stream::open(p1r, p2w).unwrap()));
        let mut b = Endpoint::new("b", Box::new(stream::open(p3r, p4w).unwrap()));
        let mut input = Vec::new();
        for len in [60usize, 10, 1514] {
            input.extend_from_slice(&(len as u16).to_be_bytes());
            input.extend(std::iter::repeat_n(len as u8, len));
        }
        std::io::Write::write_all(&mut std::fs::File::from(p1w), &input).unwrap(); // closes p1w: EOF after
        let mut fw = Forwarder::new([&a, &b]).unwrap();
        let exit = loop {
            match fw.run_for([&mut a, &mut b], Duration::from_millis(100)) {
                Exit::Tick => continue,
                other => break other,
            }
        };
        assert!(matches!(exit, Exit::Closed(0)), "{exit:?}");
        drop(b);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(p4r), &mut out).unwrap();
        let mut expect = Vec::new();
        for len in [60usize, 1514] {
            expect.extend_from_slice(&(len as u16).to_be_bytes());
            expect.extend(std::iter::repeat_n(len as u8, len));
        }
        assert_eq!(out, expect);
        assert_eq!(a.stats.frames_in, 2);
        assert_eq!(a.stats.drops_in, 1);
        drop((p2r, p3w));
    }

    #[test]
    fn iplog_once_per_address_and_vlan() {
        let mut log = IpLog::default();
        let mut v4 = vec![0xffu8; 6];
        v4.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45]);
        v4.resize(14 + 20, 0);
        v4[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 7]);
        assert_eq!(log.observe(&v4), Some(("10.0.0.7".parse().unwrap(), 0)));
        assert_eq!(log.observe(&v4), None, "once");
        let mut tagged = v4[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&v4[12..]);
        assert_eq!(log.observe(&tagged), Some(("10.0.0.7".parse().unwrap(), 5)), "per vlan");
        let mut v6 = vec![0xffu8; 6];
        v6.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60]);
        v6.resize(14 + 40, 0);
        v6[14 + 8..14 + 24].copy_from_slice(&"fd77::9".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(log.observe(&v6), Some(("fd77::9".parse().unwrap(), 0)));
        let mut arp = v4.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(log.observe(&arp), None, "not IP");
        assert_eq!(log.observe(&v4[..30]), None, "truncated IP header");
    }

    #[test]
    fn spin_budget_adapts_to_the_gaps() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        // Runs out, blocks for `wait`, wakes: the budget after.
        let cycle = |s: &mut Spin, wait: Duration| {
            s.arm(t0);
            if !s.budget.is_zero() {
                assert_eq!(s.timeout(t0, 7), 0, "spinning");
            }
            assert_eq!(s.timeout(t0 + s.budget, 7), 7, "ran out: block");
            s.woke(t0 + s.budget + wait);
            s.budget
        };
        let mut s = Spin::new();
        assert_eq!(s.budget, Spin::MAX);
        // Long gaps: halved down to none.
        let seen: Vec<_> = (0..4).map(|_| cycle(&mut s, us(200))).collect();
        assert_eq!(seen, [us(25), Duration::from_nanos(12_500), Duration::from_nanos(6_250), Duration::ZERO]);
        assert_eq!(cycle(&mut s, us(200)), Duration::ZERO);
        // Data the instant we block: our spin held its producer back; stay off.
        assert_eq!(cycle(&mut s, us(1)), Duration::ZERO);
        // A gap a spin could bridge: grow again, up to MAX.
        assert_eq!(cycle(&mut s, us(20)), Spin::MIN);
        assert_eq!(cycle(&mut s, us(20)), Spin::MIN * 2);
        for _ in 0..10 {
            cycle(&mut s, us(20));
        }
        assert_eq!(s.budget, Spin::MAX);
        assert_eq!(cycle(&mut s, us(2)), Spin::MAX / 2, "under MIN: shrink");
        // Data found while spinning: no wait, nothing learned.
        let mut s = Spin::new();
        s.arm(t0);
        assert_eq!(s.timeout(t0 + us(10), 7), 0);
        s.arm(t0 + us(10));
        s.woke(t0 + us(500));
        assert_eq!(s.budget, Spin::MAX);
        // That spin runs out: the long wait after it halves the budget; a
        // later wait that follows no spin teaches nothing.
        assert_eq!(s.timeout(t0 + us(100), 7), 7);
        s.woke(t0 + us(400));
        assert_eq!(s.timeout(t0 + us(500), 7), 7);
        s.woke(t0 + us(501));
        assert_eq!(s.budget, Spin::MAX / 2);
    }

    #[test]
    fn reply_spin_after_a_quiet_spell_adapts_to_the_answers() {
        let t0 = Instant::now();
        let (us, ms) = (Duration::from_micros, Duration::from_millis);
        const TAP: [bool; 2] = [false, true]; // requests come from side 1
        const NET: [bool; 2] = [true, false]; // their answers from side 0
        let mut r = ReplySpin::new(us(400));
        // A request after a quiet spell: spin for the budget.
        r.moved(t0, TAP, true, false);
        assert!(r.spinning(t0 + us(100)));
        // More from the same side is not the answer: still spinning.
        assert!(!r.woke(t0 + us(110), TAP));
        assert!(r.spinning(t0 + us(120)));
        // The answer, caught while spinning: the spin ends, nothing learned.
        assert!(!r.woke(t0 + us(150), NET));
        r.moved(t0 + us(150), NET, false, false);
        assert!(!r.spinning(t0 + us(151)));
        assert_eq!(r.budget, us(400));
        // One-way traffic at 100/s: each spin runs out, and the next request
        // (10 ms on, no answer between) halves the budget, down to none.
        let mut t = t0;
        let mut seen = Vec::new();
        for _ in 0..8 {
            t += ms(10);
            assert!(!r.woke(t, TAP));
            r.moved(t, TAP, true, false);
            seen.push(r.budget.as_micros());
            while r.spinning(t) {
                t += us(50);
            }
        }
        assert_eq!(seen, [400, 200, 100, 50, 25, 12, 6, 0]);
        // Requests and answers again, each answer 150 µs after its request:
        // a spin that ran out with the answer within max doubles the budget
        // (4, 8, ... µs) and that late answer arms nothing; from 256 µs on
        // the spin catches the answer.
        let mut caught = 0;
        for _ in 0..12 {
            t += ms(10);
            r.woke(t, TAP);
            r.moved(t, TAP, true, false);
            let asked = t;
            while r.spinning(t) && t < asked + us(150) {
                t += us(1);
            }
            let spinning = r.until.is_some();
            t = asked + us(150);
            let answered = r.woke(t, NET);
            assert_eq!(answered, !spinning, "a late answer, or caught");
            caught += usize::from(spinning);
            r.moved(t, NET, !spinning, answered);
            assert!(!r.spinning(t), "the answer arms no spin");
        }
        assert_eq!((r.budget, caught), (us(256), 5));
        // Wake-ups under QUIET apart (1000/s) never spin.
        let mut r = ReplySpin::new(us(400));
        for i in 0..5 {
            let t = t0 + ms(i);
            r.moved(t, TAP, true, false);
            assert_eq!(r.spinning(t), i == 0, "wake-up {i}");
            r.woke(t + us(100), NET);
        }
        // VDEPLUG_BUSY_POLL=0, or under MIN: never (and no panic).
        for max in [Duration::ZERO, us(2)] {
            let mut r = ReplySpin::new(max);
            r.moved(t0, TAP, true, false);
            assert!(!r.spinning(t0));
            assert!(!r.woke(t0 + us(1), NET));
        }
    }

    /// Run `f` on a thread; None if it has not returned within `limit`
    /// (the thread is left behind: a loop that never returns fails, not hangs).
    fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit).ok()
    }

    #[test]
    fn endless_garbage_never_holds_the_loop_or_the_other_side() {
        // Side 0 reads /dev/zero (length-0 records forever), side 1 a pipe
        // with one frame: each slice still ends on time, and the frame
        // crosses to side 0's output while the garbage flows.
        let zero: OwnedFd = std::fs::File::open("/dev/zero").unwrap().into();
        let (outr, outw) = pipe();
        let (inr, inw) = pipe();
        let (_sink_r, sink_w) = pipe();
        let mut a = Endpoint::new("zero", Box::new(stream::open(zero, outw).unwrap()));
        let mut b = Endpoint::new("b", Box::new(stream::open(inr, sink_w).unwrap()));
        let mut msg = 60u16.to_be_bytes().to_vec();
        msg.extend([0xffu8; 60]);
        let mut inw = std::fs::File::from(inw); // kept open: no EOF on side 1
        std::io::Write::write_all(&mut inw, &msg).unwrap();
        let ticks = within(Duration::from_secs(3), move || {
            let mut fw = Forwarder::new([&a, &b]).unwrap();
            let mut slices = Vec::new();
            for _ in 0..3 {
                let t0 = Instant::now();
                let exit = fw.run_for([&mut a, &mut b], Duration::from_millis(50));
                slices.push((format!("{exit:?}"), t0.elapsed()));
            }
            (slices, a.stats, b.stats)
        });
        let (slices, a, b) = ticks.expect("run_for never returned: one endless garbage source starves the loop");
        for (exit, took) in &slices {
            assert_eq!(exit, "Tick");
            assert!(*took < Duration::from_millis(150), "a 50 ms slice took {took:?}");
        }
        assert_eq!((b.frames_in, a.frames_out), (1, 1), "the other direction is served");
        let mut got = [0u8; 62];
        std::io::Read::read_exact(&mut std::fs::File::from(outr), &mut got).unwrap();
        assert_eq!(got[..], msg[..]);
        drop(inw);
    }

    /// A transport whose `data_fd` never wakes: only what it reports in
    /// `poll_fds` can start a pump.
    struct Behind {
        inner: Box<dyn crate::transport::Transport>,
        never: crate::sys::EventFd,
    }

    impl crate::transport::Transport for Behind {
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<crate::transport::Recv> {
            self.inner.recv(buf)
        }
        fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
            self.inner.send(frame)
        }
        fn data_fd(&self) -> std::os::fd::RawFd {
            self.never.raw()
        }
        fn poll_fds(&self, out: &mut Vec<std::os::fd::RawFd>) {
            self.inner.poll_fds(out);
        }
        fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
            self.inner.recv_batch(batch)
        }
    }

    /// The loop watches the fds behind each data fd itself (one epoll
    /// level per wake-up), and a side queued in user space (a UDP_GRO read
    /// larger than a batch) is pumped again until it is empty.
    #[test]
    fn the_loop_watches_the_fds_behind_the_data_fd() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rx.local_addr().unwrap();
        drop(rx);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp = crate::transport::udp::open(port, tx.local_addr().unwrap()).unwrap();
        let mut a = Endpoint::new("a", Box::new(Behind { inner: Box::new(udp), never: crate::sys::EventFd::new().unwrap() }));
        let (outr, outw) = pipe();
        let (_inr, inw) = pipe();
        let mut b = Endpoint::new("b", Box::new(stream::open(_inr, outw).unwrap()));
        let n = FORWARD_BATCH + 44;
        for i in 0..n {
            let mut f = [0u8; 60];
            f[0] = 2; // unicast, locally administered
            f[59] = i as u8;
            tx.send_to(&f, port).unwrap();
        }
        let mut fw = Forwarder::new([&a, &b]).unwrap();
        let t0 = Instant::now();
        while a.stats.frames_in < n as u64 && t0.elapsed() < Duration::from_secs(5) {
            assert!(matches!(fw.run_for([&mut a, &mut b], Duration::from_millis(50)), Exit::Tick));
        }
        assert_eq!((a.stats.frames_in, b.stats.frames_out), (n as u64, n as u64));
        drop((b, inw));
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(outr), &mut out).unwrap();
        assert_eq!(out.len(), n * 62);
        let last: Vec<u8> = out.chunks(62).map(|c| c[61]).collect();
        assert_eq!(last, (0..n).map(|i| i as u8).collect::<Vec<_>>(), "in order");
    }

    #[test]
    fn null_never_wakes() {
        let mut a = Endpoint::new("a", Box::new(null::open().unwrap()));
        let mut b = Endpoint::new("b", Box::new(null::open().unwrap()));
        let mut fw = Forwarder::new([&a, &b]).unwrap();
        assert!(matches!(fw.run_for([&mut a, &mut b], Duration::from_millis(20)), Exit::Tick));
    }
}
