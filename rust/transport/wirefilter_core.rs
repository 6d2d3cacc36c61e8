//! The link emulator behind `wirefilter://`, without I/O: per-direction
//! settings (vde2's wirefilter: loss, lostburst, delay, dup, bandwidth,
//! speed, bufsize, noise, mtu), a seeded generator, and the queue of held
//! frames ordered by release time. Time is passed in (nanoseconds on any
//! monotonic clock); nothing here reads a clock or an fd.
//!
//! A frame `offer`ed in a direction goes, in wirefilter's order: MTU (longer
//! frames dropped), loss (Bernoulli, or the Gilbert–Elliott chain when
//! `lostburst` is set), duplication (each extra copy with probability dup),
//! then per copy: the byte bound of the queue (tail drop), speed and
//! bandwidth (serialization: a copy leaves when the link is free plus its
//! own transmission time), delay (+ jitter). Noise flips bits of the held
//! copy. With `fifo` (the default, as wirefilter) a copy never leaves before
//! one offered earlier in its direction, so jitter alone never reorders
//! (wirefilter's `-N`, here `nofifo`, lets it).

use std::collections::BinaryHeap;
use std::fmt::Write as _;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Left to right: frames our user sends (towards the nested VNL).
pub const LR: usize = 0;
/// Right to left: frames our user receives (from the nested VNL).
pub const RL: usize = 1;
const DIRS: [&str; 2] = ["LR", "RL"];

/// Held bytes per direction when `bufsize` is not set: wirefilter has no
/// bound then; we keep one so a sender at line rate into a slow, long link
/// cannot grow memory without end.
pub const DEFAULT_BUFSIZE: f64 = (16 << 20) as f64;
/// At most this many copies of one frame (dup near 100 % would loop forever).
const MAX_COPIES: usize = 64;
/// Spare frame buffers kept for reuse.
const POOL: usize = 256;

/// How a value's variation is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// value ± plus, uniformly.
    Uniform,
    /// Normal around value with sigma = plus / 3 (wirefilter: "more than 98 % inside").
    Normal,
}

/// A setting: `value+plus` with a distribution (`20+5N`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Value {
    pub value: f64,
    pub plus: f64,
    pub alg: Alg,
}

impl Value {
    pub const ZERO: Value = Value { value: 0.0, plus: 0.0, alg: Alg::Uniform };
    fn max(&self) -> f64 {
        self.value + self.plus
    }
    fn min(&self) -> f64 {
        self.value - self.plus
    }
    fn on(&self) -> bool {
        self.max() > 0.0
    }
}

/// The settings, in wirefilter's order (`showinfo`'s rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Loss,
    LostBurst,
    Delay,
    Dup,
    Bandwidth,
    Speed,
    Noise,
    Mtu,
    BufSize,
}

impl Param {
    pub const ALL: [Param; 9] = [Param::Loss, Param::LostBurst, Param::Delay, Param::Dup, Param::Bandwidth, Param::Speed, Param::Noise, Param::Mtu, Param::BufSize];

    /// The VNL option's name.
    pub fn name(self) -> &'static str {
        match self {
            Param::Loss => "loss",
            Param::LostBurst => "lostburst",
            Param::Delay => "delay",
            Param::Dup => "dup",
            Param::Bandwidth => "bandwidth",
            Param::Speed => "speed",
            Param::Noise => "noise",
            Param::Mtu => "mtu",
            Param::BufSize => "bufsize",
        }
    }

    /// The console command (and its aliases) that sets it.
    fn commands(self) -> &'static [&'static str] {
        match self {
            Param::Bandwidth => &["bandwidth", "band"],
            Param::BufSize => &["chanbufsize", "capacity", "bufsize"],
            p => match p {
                Param::Loss => &["loss"],
                Param::LostBurst => &["lostburst"],
                Param::Delay => &["delay"],
                Param::Dup => &["dup"],
                Param::Speed => &["speed"],
                Param::Noise => &["noise"],
                _ => &["mtu"],
            },
        }
    }

    /// `showinfo`'s row label.
    fn label(self) -> &'static str {
        ["Loss  ", "Lburst", "Delay ", "Dup   ", "Bandw ", "Speed ", "Noise ", "MTU   ", "Cap.  "][self as usize]
    }

    /// The largest value that makes sense (percentages).
    fn limit(self) -> f64 {
        match self {
            Param::Loss => 100.0,
            Param::Dup => 99.0,
            _ => f64::INFINITY,
        }
    }
}

/// Why a frame (or one copy of it) was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Longer than `mtu`.
    Mtu,
    /// `loss` / `lostburst`.
    Loss,
    /// The queue would pass `bufsize` bytes (tail drop).
    Queue,
    /// `bandwidth` or `speed` drew a value ≤ 0 (a link that carries nothing).
    Rate,
}

/// What became of an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Deliver it now, unchanged, once (nothing held it): no copy was made.
    Pass,
    /// Copies were queued (some may already be due); `pop_due` hands them out.
    Queued,
    Dropped(Reason),
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub offered: u64,
    pub delivered: u64,
    pub dropped_mtu: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    pub dropped_rate: u64,
    /// Extra copies made by `dup`.
    pub duplicated: u64,
    pub noise_bits: u64,
}

/// A frame held until `when`.
#[derive(Debug)]
pub struct Held {
    pub when: u64,
    seq: u64,
    pub data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.when, self.seq) == (o.when, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    /// Reversed: the earliest (then the first offered) is the heap's top.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.when, o.seq).cmp(&(self.when, self.seq))
    }
}

#[derive(Debug, Default)]
struct DirState {
    queue: BinaryHeap<Held>,
    bytes: usize,
    /// When the link (bandwidth) and the interface (speed) are free again.
    next_band: u64,
    next_speed: u64,
    /// Gilbert–Elliott: in the lossy state.
    faulty: bool,
    /// The latest release time given out (fifo keeps to it).
    last_when: u64,
    seq: u64,
}

/// The console's settings, both directions.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    vals: [[Value; 2]; 9],
    /// Copies leave in the order they came (wirefilter's default).
    pub fifo: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { vals: [[Value::ZERO; 2]; 9], fifo: true }
    }
}

impl Settings {
    pub fn get(&self, p: Param, dir: usize) -> Value {
        self.vals[p as usize][dir]
    }

    /// Is anything set in `dir` (else frames pass untouched)?
    pub fn impaired(&self, dir: usize) -> bool {
        self.vals.iter().any(|v| v[dir].on())
    }

    /// Apply wirefilter's value syntax (`LR20+5N`, `128K`, or a comma
    /// list: `LR20,RL50`) to `p`.
    pub fn set(&mut self, p: Param, text: &str) -> Result<(), String> {
        let parsed = parse_values(text, p.limit())?;
        for (dir, v) in parsed {
            match dir {
                Some(d) => self.vals[p as usize][d] = v,
                None => self.vals[p as usize] = [v; 2],
            }
        }
        Ok(())
    }
}

/// `[LR|RL]NUM[+NUM][K|M|G][U|N]`, comma separated; K/M/G are powers of
/// 1024 (wirefilter). Negative numbers and values over `limit` are refused.
pub fn parse_values(text: &str, limit: f64) -> Result<Vec<(Option<usize>, Value)>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim) {
        let (dir, rest) = match item.get(..2).map(|s| s.to_ascii_uppercase()) {
            Some(s) if s == "LR" => (Some(LR), &item[2..]),
            Some(s) if s == "RL" => (Some(RL), &item[2..]),
            _ => (None, item),
        };
        let mut s = rest.trim();
        let alg = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
            Some('U') => Alg::Uniform,
            Some('N') => Alg::Normal,
            _ => Alg::Uniform,
        };
        if s.ends_with(['u', 'U', 'n', 'N']) {
            s = &s[..s.len() - 1];
        }
        let mult = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
            Some('K') => 1024.0,
            Some('M') => 1024.0 * 1024.0,
            Some('G') => 1024.0 * 1024.0 * 1024.0,
            _ => 1.0,
        };
        if mult > 1.0 {
            s = &s[..s.len() - 1];
        }
        let (v, plus) = s.split_once('+').unwrap_or((s, "0"));
        let num = |t: &str| -> Result<f64, String> {
            let t = t.trim();
            match t.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 && !t.starts_with(['+', '-']) => Ok(x * mult),
                _ => Err(format!("{item:?} is not [LR|RL]NUMBER[+NUMBER][K|M|G][U|N]")),
            }
        };
        let value = Value { value: num(v)?, plus: num(plus)?, alg };
        if value.max() > limit {
            return Err(format!("{item:?}: at most {limit}"));
        }
        out.push((dir, value));
    }
    Ok(out)
}

/// The emulated wire: settings, state and held frames of both directions.
pub struct Wire {
    pub settings: Settings,
    rng: Xoshiro256PlusPlus,
    dirs: [DirState; 2],
    pub counters: [Counters; 2],
    pool: Vec<Vec<u8>>,
}

impl Wire {
    pub fn new(settings: Settings, seed: u64) -> Wire {
        Wire { settings, rng: Xoshiro256PlusPlus::seed_from_u64(seed), dirs: Default::default(), counters: Default::default(), pool: Vec::new() }
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Marsaglia's polar method).
    fn gauss(&mut self) -> f64 {
        loop {
            let x = 2.0 * self.uniform() - 1.0;
            let y = 2.0 * self.uniform() - 1.0;
            let r2 = x * x + y * y;
            if r2 > 0.0 && r2 < 1.0 {
                return x * (-2.0 * r2.ln() / r2).sqrt();
            }
        }
    }

    /// One draw of setting `p` in `dir`.
    fn draw(&mut self, p: Param, dir: usize) -> f64 {
        let v = self.settings.get(p, dir);
        if v.plus == 0.0 {
            return v.value;
        }
        match v.alg {
            Alg::Uniform => v.value + v.plus * (2.0 * self.uniform() - 1.0),
            Alg::Normal => v.value + v.plus / 3.0 * self.gauss(),
        }
    }

    /// Poisson-distributed count with mean `mean` (bit errors in a frame).
    fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean > 30.0 {
            return (mean + mean.sqrt() * self.gauss()).round().max(0.0) as u64;
        }
        let limit = (-mean).exp();
        let mut k = 0;
        let mut p = self.uniform();
        while p > limit {
            k += 1;
            p *= self.uniform();
        }
        k
    }

    /// Is the frame lost? (wirefilter's loss, or its Gilbert–Elliott chain:
    /// into the lossy state with p/(b(1-p)), out with 1/b, so the mean loss
    /// is p and the mean burst b.)
    fn lost(&mut self, dir: usize) -> bool {
        let s = &self.settings;
        if s.get(Param::Loss, dir).min() >= 100.0 {
            return true;
        }
        if s.get(Param::LostBurst, dir).on() {
            let p = (self.draw(Param::Loss, dir) / 100.0).clamp(0.0, 1.0);
            let b = self.draw(Param::LostBurst, dir).max(1.0);
            let st = &mut self.dirs[dir];
            let u = (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            if st.faulty {
                st.faulty = u >= 1.0 / b;
            } else {
                st.faulty = p >= 1.0 || u < p / (b * (1.0 - p));
            }
            return st.faulty;
        }
        self.dirs[dir].faulty = false;
        s.get(Param::Loss, dir).on() && self.uniform() < self.draw(Param::Loss, dir) / 100.0
    }

    /// Decide what becomes of `frame`, offered in `dir` at `now` (ns).
    pub fn offer(&mut self, dir: usize, now: u64, frame: &[u8]) -> Offer {
        self.counters[dir].offered += 1;
        if !self.settings.impaired(dir) && self.dirs[dir].queue.is_empty() {
            self.counters[dir].delivered += 1;
            return Offer::Pass;
        }
        let len = frame.len();
        let mtu = self.settings.get(Param::Mtu, dir).min();
        if mtu > 0.0 && len as f64 > mtu {
            self.counters[dir].dropped_mtu += 1;
            return Offer::Dropped(Reason::Mtu);
        }
        if self.lost(dir) {
            self.counters[dir].dropped_loss += 1;
            return Offer::Dropped(Reason::Loss);
        }
        let mut copies = 1;
        if self.settings.get(Param::Dup, dir).on() {
            let d = self.draw(Param::Dup, dir) / 100.0;
            while copies < MAX_COPIES && self.uniform() < d {
                copies += 1;
            }
        }
        let mut queued = 0;
        let mut last = None;
        for _ in 0..copies {
            match self.place(dir, now, frame, copies == 1) {
                Ok(pass) => {
                    queued += 1;
                    last = Some(pass);
                }
                Err(r) => {
                    // wirefilter: a copy that does not fit ends the frame.
                    self.count_drop(dir, r);
                    if queued == 0 {
                        return Offer::Dropped(r);
                    }
                    break;
                }
            }
        }
        self.counters[dir].duplicated += queued - 1;
        match last {
            Some(true) => {
                self.counters[dir].delivered += 1;
                Offer::Pass
            }
            _ => Offer::Queued,
        }
    }

    fn count_drop(&mut self, dir: usize, r: Reason) {
        let c = &mut self.counters[dir];
        match r {
            Reason::Mtu => c.dropped_mtu += 1,
            Reason::Loss => c.dropped_loss += 1,
            Reason::Queue => c.dropped_queue += 1,
            Reason::Rate => c.dropped_rate += 1,
        }
    }

    /// Queue one copy; Ok(true) when it may go now, unchanged, without a
    /// copy (`alone`: the only copy; no noise, no delay, nothing queued).
    fn place(&mut self, dir: usize, now: u64, frame: &[u8], alone: bool) -> Result<bool, Reason> {
        let len = frame.len();
        let cap = if self.settings.get(Param::BufSize, dir).on() { self.draw(Param::BufSize, dir) } else { DEFAULT_BUFSIZE };
        if (self.dirs[dir].bytes + len) as f64 > cap {
            return Err(Reason::Queue);
        }
        let mut wait = 0u64;
        for (p, speed) in [(Param::Speed, true), (Param::Bandwidth, false)] {
            if !self.settings.get(p, dir).on() {
                continue;
            }
            let rate = self.draw(p, dir);
            if rate <= 0.0 {
                return Err(Reason::Rate);
            }
            let tx = (len as f64 * 1e9 / rate) as u64;
            let st = &mut self.dirs[dir];
            let free = if speed { &mut st.next_speed } else { &mut st.next_band };
            *free = (*free).max(now) + tx;
            wait = wait.max(*free - now);
        }
        let delay = if self.settings.get(Param::Delay, dir).on() { (self.draw(Param::Delay, dir).max(0.0) * 1e6) as u64 } else { 0 };
        let mut when = now + wait + delay;
        let st = &mut self.dirs[dir];
        if self.settings.fifo {
            when = when.max(st.last_when);
        }
        st.last_when = st.last_when.max(when);
        let bits = if self.settings.get(Param::Noise, dir).on() {
            let per_mib = self.draw(Param::Noise, dir);
            self.poisson(len as f64 * per_mib / (1 << 20) as f64)
        } else {
            0
        };
        if alone && when <= now && bits == 0 && self.dirs[dir].queue.is_empty() {
            return Ok(true);
        }
        let mut data = self.pool.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(frame);
        for _ in 0..bits {
            let bit = (self.rng.next_u64() % (len as u64 * 8).max(1)) as usize;
            if let Some(b) = data.get_mut(bit / 8) {
                *b ^= 1 << (bit % 8);
            }
        }
        self.counters[dir].noise_bits += bits;
        let st = &mut self.dirs[dir];
        st.seq += 1;
        st.bytes += len;
        st.queue.push(Held { when, seq: st.seq, data });
        Ok(false)
    }

    /// The next frame of `dir` due at `now`, in release order.
    pub fn pop_due(&mut self, dir: usize, now: u64) -> Option<Held> {
        let st = &mut self.dirs[dir];
        if st.queue.peek()?.when > now {
            return None;
        }
        let h = st.queue.pop()?;
        st.bytes -= h.data.len();
        self.counters[dir].delivered += 1;
        Some(h)
    }

    /// Give a frame buffer back for reuse.
    pub fn recycle(&mut self, data: Vec<u8>) {
        if self.pool.len() < POOL {
            self.pool.push(data);
        }
    }

    /// When the next held frame of `dir` is due.
    pub fn next_due(&self, dir: usize) -> Option<u64> {
        self.dirs[dir].queue.peek().map(|h| h.when)
    }

    /// `speed` holds input in `dir` until then (the interface is busy).
    pub fn busy_until(&self, dir: usize) -> u64 {
        if self.settings.get(Param::Speed, dir).on() {
            self.dirs[dir].next_speed
        } else {
            0
        }
    }

    pub fn held(&self, dir: usize) -> (usize, usize) {
        (self.dirs[dir].queue.len(), self.dirs[dir].bytes)
    }

    /// Run one console command (vde2 wirefilter's, one line) and write the
    /// answer as wirefilter does: data commands between "0000 DATA END
    /// WITH '.'" and ".", then "1000 Success" or "1<errno> <message>".
    pub fn command(&mut self, line: &str, out: &mut String) -> Command {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Command::Empty;
        }
        let (cmd, arg) = line.split_once([' ', '\t']).map_or((line, ""), |(c, a)| (c, a.trim()));
        let data = matches!(cmd, "help" | "showinfo");
        if data {
            out.push_str("0000 DATA END WITH '.'\n");
        }
        let mut outcome = Command::Done;
        let rv = match cmd {
            "help" => {
                self.help(out);
                Ok(())
            }
            "showinfo" if arg.is_empty() || arg == "0" => {
                self.showinfo(out);
                Ok(())
            }
            "showinfo" => Err(libc::EINVAL),
            "fifo" => match arg.parse::<i64>() {
                Ok(n) => {
                    self.settings.fifo = n != 0;
                    Ok(())
                }
                Err(_) => Err(libc::EINVAL),
            },
            "logout" => {
                outcome = Command::Logout;
                Ok(())
            }
            "shutdown" => {
                outcome = Command::Shutdown;
                Ok(())
            }
            _ => match Param::ALL.iter().find(|p| p.commands().contains(&cmd)) {
                Some(&p) => self.settings.set(p, arg).map_err(|_| libc::EINVAL),
                None => Err(libc::ENOSYS),
            },
        };
        if data {
            out.push_str(".\n");
        }
        match rv {
            Ok(()) => out.push_str("1000 Success\n"),
            Err(e) => {
                let _ = writeln!(out, "1{e:03} {}", strerror(e));
                outcome = Command::Failed(e);
            }
        }
        outcome
    }

    fn help(&self, out: &mut String) {
        for (c, h) in [
            ("help", "print a summary of mgmt commands"),
            ("showinfo", "show status and parameter values"),
            ("loss", "set loss percentage"),
            ("lostburst", "mean length of lost packet bursts"),
            ("delay", "set delay ms"),
            ("dup", "set dup packet percentage"),
            ("bandwidth", "set channel bandwidth bytes/sec"),
            ("speed", "set interface speed bytes/sec"),
            ("noise", "set noise factor bits/Mbyte"),
            ("mtu", "set channel MTU (bytes)"),
            ("chanbufsize", "set channel buffer size (bytes)"),
            ("fifo", "set channel fifoness"),
            ("shutdown", "shut the channel down"),
            ("logout", "log out from this mgmt session"),
        ] {
            let _ = writeln!(out, "{c:<12} {h}");
        }
    }

    fn showinfo(&self, out: &mut String) {
        out.push_str("WireFilter: bidirectional\n");
        for p in Param::ALL {
            let [lr, rl] = [self.settings.get(p, LR), self.settings.get(p, RL)];
            let alg = |v: Value| if v.alg == Alg::Normal { 'N' } else { 'U' };
            if p == Param::Mtu {
                let _ = writeln!(out, "{} L->R {}     R->L {}   ", p.label(), g(lr.min()), g(rl.min()));
            } else {
                let _ = writeln!(out, "{} L->R {}+{}{}   R->L {}+{}{}", p.label(), g(lr.value), g(lr.plus), alg(lr), g(rl.value), g(rl.plus), alg(rl));
            }
        }
        let _ = writeln!(out, "Current Delay Queue size:   L->R {}      R->L {}   ", self.dirs[LR].bytes, self.dirs[RL].bytes);
        let _ = writeln!(out, "Fifoness {}", if self.settings.fifo { "TRUE" } else { "FALSE" });
        let _ = writeln!(out, "Waiting packets in delay queues {}", self.dirs[LR].queue.len() + self.dirs[RL].queue.len());
        for (d, c) in self.counters.iter().enumerate() {
            let _ = writeln!(
                out,
                "Counters {}: offered {} delivered {} dup {} lost {} mtu {} queue {} rate {} noise-bits {}",
                DIRS[d], c.offered, c.delivered, c.duplicated, c.dropped_loss, c.dropped_mtu, c.dropped_queue, c.dropped_rate, c.noise_bits
            );
        }
    }
}

/// What a console command asks of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A blank line or a comment: no answer.
    Empty,
    Done,
    /// Answered with this errno.
    Failed(i32),
    /// Close this management session.
    Logout,
    /// Close the connection (the cable is cut).
    Shutdown,
}

fn strerror(e: i32) -> &'static str {
    match e {
        libc::EINVAL => "Invalid argument",
        libc::ENOSYS => "Function not implemented",
        _ => "Error",
    }
}

/// C's `%g`: 6 significant digits, no trailing zeros.
pub fn g(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let exp = x.abs().log10().floor() as i32;
    if !(-4..6).contains(&exp) {
        let s = format!("{x:.5e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let s = format!("{:.*}", (5 - exp).max(0) as usize, x);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn wire(cmds: &[&str], seed: u64) -> Wire {
        let mut w = Wire::new(Settings::default(), seed);
        for c in cmds {
            let mut out = String::new();
            assert_eq!(w.command(c, &mut out), Command::Done, "{c}: {out}");
        }
        w
    }

    fn mean_std(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (m, (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt())
    }

    /// Offer one frame every `gap` ns; the delay of each delivered copy (ms).
    fn delays(w: &mut Wire, dir: usize, n: usize, gap: u64, len: usize) -> Vec<f64> {
        let f = vec![0u8; len];
        let mut out = Vec::new();
        let mut sent = std::collections::HashMap::new();
        let mut frame = f.clone();
        for i in 0..n as u64 {
            let now = i * gap;
            frame[..8].copy_from_slice(&i.to_be_bytes());
            sent.insert(i, now);
            if w.offer(dir, now, &frame) == Offer::Pass {
                out.push(0.0);
            }
            while let Some(h) = w.pop_due(dir, now) {
                let id = u64::from_be_bytes(h.data[..8].try_into().unwrap());
                out.push((h.when - sent[&id]) as f64 / MS as f64);
            }
        }
        while let Some(h) = w.pop_due(dir, u64::MAX) {
            let id = u64::from_be_bytes(h.data[..8].try_into().unwrap());
            out.push((h.when - sent[&id]) as f64 / MS as f64);
        }
        out
    }

    #[test]
    fn idle_passes_without_copies() {
        let mut w = wire(&[], 1);
        assert_eq!(w.offer(LR, 0, &[1; 60]), Offer::Pass);
        assert_eq!(w.held(LR), (0, 0));
        let mut w = wire(&["loss RL10"], 1);
        assert_eq!(w.offer(LR, 0, &[1; 60]), Offer::Pass, "RL settings leave LR alone");
        assert_eq!(w.offer(RL, 0, &[1; 60]), Offer::Pass, "loss only: no copy");
    }

    #[test]
    fn uniform_and_normal_jitter() {
        // Uniform 20±5: mean 20, std 5/sqrt(3).
        let mut w = wire(&["delay 20+5", "fifo 0"], 7);
        let (m, s) = mean_std(&delays(&mut w, LR, 20_000, MS, 100));
        assert!((m - 20.0).abs() < 0.1 && (s - 5.0 / 3f64.sqrt()).abs() < 0.05, "{m} {s}");
        // Normal 50+15N: sigma 5.
        let mut w = wire(&["delay 50+15N", "fifo 0"], 8);
        let (m, s) = mean_std(&delays(&mut w, RL, 20_000, MS, 100));
        assert!((m - 50.0).abs() < 0.1 && (s - 5.0).abs() < 0.1, "{m} {s}");
    }

    #[test]
    fn fifo_never_reorders_nofifo_does() {
        let order = |fifo: &str| {
            let mut w = wire(&["delay 20+10", fifo], 3);
            let mut ids = Vec::new();
            for i in 0..2000u64 {
                let mut f = vec![0u8; 60];
                f[..8].copy_from_slice(&i.to_be_bytes());
                w.offer(LR, i * MS / 10, &f);
                while let Some(h) = w.pop_due(LR, i * MS / 10) {
                    ids.push(u64::from_be_bytes(h.data[..8].try_into().unwrap()));
                }
            }
            while let Some(h) = w.pop_due(LR, u64::MAX) {
                ids.push(u64::from_be_bytes(h.data[..8].try_into().unwrap()));
            }
            assert_eq!(ids.len(), 2000);
            ids.windows(2).filter(|p| p[1] < p[0]).count()
        };
        assert_eq!(order("fifo 1"), 0);
        assert!(order("fifo 0") > 100);
    }

    #[test]
    fn loss_rate_and_bursts() {
        let run = |cmds: &[&str]| {
            let mut w = wire(cmds, 11);
            let mut bursts = Vec::new();
            let mut run = 0;
            for i in 0..200_000 {
                if w.offer(LR, i, &[0; 60]) == Offer::Dropped(Reason::Loss) {
                    run += 1;
                } else if run > 0 {
                    bursts.push(run as f64);
                    run = 0;
                }
            }
            (w.counters[LR].dropped_loss as f64 / 200_000.0, mean_std(&bursts).0)
        };
        let (rate, burst) = run(&["loss 5"]);
        assert!((rate - 0.05).abs() < 0.002 && (burst - 1.0 / 0.95).abs() < 0.02, "{rate} {burst}");
        let (rate, burst) = run(&["loss 5", "lostburst 4"]);
        assert!((rate - 0.05).abs() < 0.004 && (burst - 4.0).abs() < 0.2, "{rate} {burst}");
        let (rate, _) = run(&["loss 100"]);
        assert_eq!(rate, 1.0);
    }

    #[test]
    fn duplication_rate() {
        let mut w = wire(&["dup 10"], 5);
        let d = delays(&mut w, RL, 100_000, 1000, 60);
        // Copies per frame: geometric, mean 1/(1-p).
        let per = d.len() as f64 / 100_000.0;
        assert!((per - 1.0 / 0.9).abs() < 0.005, "{per}");
        assert_eq!(w.counters[RL].duplicated as usize, d.len() - 100_000);
    }

    #[test]
    fn bandwidth_throughput_and_tail_drop() {
        // 125 000 B/s, offered at twice that: deliveries pace at the rate,
        // the queue stays under bufsize, the excess is tail-dropped.
        let mut w = wire(&["bandwidth 125000", "chanbufsize 30000"], 1);
        let (len, gap) = (1000usize, 4 * MS);
        let mut last = 0;
        let mut bytes = 0;
        for i in 0..5000u64 {
            let now = i * gap;
            w.offer(LR, now, &vec![0; len]);
            assert!(w.held(LR).1 <= 30_000);
            while let Some(h) = w.pop_due(LR, now) {
                bytes += h.data.len();
                last = h.when;
            }
        }
        let rate = bytes as f64 / (last as f64 / 1e9);
        assert!((rate - 125_000.0).abs() < 125_000.0 * 0.01, "{rate}");
        let c = w.counters[LR];
        assert!((c.dropped_queue as f64 / 5000.0 - 0.5).abs() < 0.02, "{c:?}");
        // A slow, long link under a flood: memory stays bounded by default.
        let mut w = wire(&["bandwidth 125000", "delay 2000"], 1);
        for i in 0..200_000u64 {
            w.offer(RL, i * 1000, &[0; 1500]);
        }
        assert!(w.held(RL).1 as f64 <= DEFAULT_BUFSIZE);
        assert!(w.counters[RL].dropped_queue > 0);
    }

    #[test]
    fn speed_serializes_and_mtu_drops() {
        let mut w = wire(&["speed 1M", "mtu 1000"], 1);
        assert_eq!(w.offer(LR, 0, &[0; 1001]), Offer::Dropped(Reason::Mtu));
        assert_eq!(w.offer(LR, 0, &[0; 1000]), Offer::Queued);
        assert_eq!(w.busy_until(LR), 1000 * 1_000_000_000 / (1 << 20));
        assert_eq!(w.next_due(LR), Some(w.busy_until(LR)));
    }

    #[test]
    fn noise_flips_bits_per_megabyte() {
        let mut w = wire(&["noise 100"], 9);
        let mut flipped = 0u64;
        let n = 20_000;
        for i in 0..n {
            w.offer(LR, i, &[0; 1024]);
            while let Some(h) = w.pop_due(LR, i) {
                flipped += h.data.iter().map(|b| b.count_ones() as u64).sum::<u64>();
            }
        }
        // 20 000 KiB = 19.5 MiB at 100 bits per MiB (a bit hit twice counts 0).
        let expect = n as f64 * 1024.0 / (1 << 20) as f64 * 100.0;
        assert!((flipped as f64 - expect).abs() < expect * 0.05, "{flipped} vs {expect}");
        assert_eq!(w.counters[LR].noise_bits, flipped);
    }

    #[test]
    fn same_seed_same_run() {
        let a = delays(&mut wire(&["delay 10+5N", "loss 10", "dup 5"], 42), LR, 5000, MS, 60);
        let b = delays(&mut wire(&["delay 10+5N", "loss 10", "dup 5"], 42), LR, 5000, MS, 60);
        let c = delays(&mut wire(&["delay 10+5N", "loss 10", "dup 5"], 43), LR, 5000, MS, 60);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn console_answers_like_wirefilter() {
        let mut w = wire(&[], 1);
        let mut out = String::new();
        assert_eq!(w.command("delay LR20+5N", &mut out), Command::Done);
        assert_eq!(out, "1000 Success\n");
        out.clear();
        assert_eq!(w.command("bogus 1", &mut out), Command::Failed(libc::ENOSYS));
        assert_eq!(out, "1038 Function not implemented\n");
        out.clear();
        assert_eq!(w.command("loss 120", &mut out), Command::Failed(libc::EINVAL));
        assert_eq!(out, "1022 Invalid argument\n");
        out.clear();
        w.command("band RL128K", &mut out);
        out.clear();
        w.command("showinfo", &mut out);
        assert!(out.starts_with("0000 DATA END WITH '.'\nWireFilter: bidirectional\n"), "{out}");
        assert!(out.contains("Delay  L->R 20+5N   R->L 0+0U\n"), "{out}");
        assert!(out.contains("Bandw  L->R 0+0U   R->L 131072+0U\n"), "{out}");
        assert!(out.ends_with(".\n1000 Success\n"), "{out}");
        assert_eq!(w.command("# comment", &mut out), Command::Empty);
        assert_eq!(w.command("logout", &mut String::new()), Command::Logout);
    }

    #[test]
    fn value_syntax() {
        let v = parse_values("LR20+5N,RL1.5K", f64::INFINITY).unwrap();
        assert_eq!(v[0], (Some(LR), Value { value: 20.0, plus: 5.0, alg: Alg::Normal }));
        assert_eq!(v[1], (Some(RL), Value { value: 1536.0, plus: 0.0, alg: Alg::Uniform }));
        for bad in ["", "x", "-5", "5+", "LR", "1e999", "+5"] {
            assert!(parse_values(bad, 100.0).is_err(), "{bad:?}");
        }
        assert!(parse_values("101", 100.0).is_err());
        assert_eq!(g(131072.0), "131072");
        assert_eq!(g(1234567.0), "1.23457e+06");
        assert_eq!(g(0.5), "0.5");
        assert_eq!(g(20.0), "20");
    }
}
