//! wirefilter://[OPTIONS]{VNL}: vde2's wirefilter on the cable of one
//! plug (`wirefilter_core` decides; this file moves frames and keeps time).
//!
//! Directions: LR is what our user sends (towards the nested VNL), RL what
//! it receives, as in NotXia's vdeplug_wirefilter (our user is "left").
//!
//! No thread and no sleep: the data fd is an epoll set of the nested VNL's
//! data fd, a timerfd armed at the next held frame's release time, and the
//! management socket with its sessions. It becomes readable when a frame
//! arrives, when a held frame is due (either direction) or when a console
//! line waits; whoever services it (the forwarding loop, `recv`, a C
//! program's poll + vde_recv) releases what is due: LR frames go to the
//! nested VNL, RL frames are returned. A program that only sends still
//! gets its held LR frames out at its next send or receive; frames held
//! when the connection closes are dropped (the cable is cut).
//!
//! Management (`mgmt=PATH`): a unix stream socket, mode 0600 (`mgmtmode=`),
//! never created over an existing path, removed on close only if it is
//! still ours; one console command per line, answered as wirefilter does.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::timerfd::{now_ns, TimerFd};
use super::wirefilter_core::{Command, Offer, Param, Settings, Wire, LR, RL};
use super::{Batch, Link, Recv, SendOutcome, Transport};
use crate::sys::{self, Epoll};

const T_INNER: u64 = 0;
const T_TIMER: u64 = 1;
const T_LISTEN: u64 = 2;
/// Session i of the management socket has token T_SESSION + its fd.
const T_SESSION: u64 = 16;
const MAX_SESSIONS: usize = 8;
/// A console line longer than this ends the session.
const MAX_LINE: usize = 4096;
const PROMPT: &str = "\nVDEwf$ ";

struct Session {
    stream: UnixStream,
    line: Vec<u8>,
}

struct Mgmt {
    listener: UnixListener,
    path: PathBuf,
    /// (dev, ino) of the socket we created: removed on close only if still there.
    id: (u64, u64),
    sessions: Vec<Session>,
}

impl Mgmt {
    /// Bind `path` (refused if anything is there: bind never replaces or
    /// follows an existing name), then set its mode without following a
    /// symlink.
    fn open(path: &Path, mode: u32) -> io::Result<Mgmt> {
        let listener = UnixListener::bind(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(e.kind(), format!("mgmt socket {}: something is already there (not created by us; remove it first)", path.display()))
            } else {
                super::ctx(e, path.display())
            }
        })?;
        listener.set_nonblocking(true)?;
        let dir = sys::open_dir_nofollow(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
        let name = Path::new(path.file_name().unwrap_or_default());
        let st = sys::lstat_at(Some(dir.as_raw_fd()), name)?;
        let m = Mgmt { listener, path: path.to_path_buf(), id: (st.st_dev, st.st_ino), sessions: Vec::new() };
        sys::chmod_at_nofollow(dir.as_raw_fd(), name, mode)?;
        Ok(m)
    }
}

impl Drop for Mgmt {
    fn drop(&mut self) {
        if let Ok(st) = sys::lstat_at(None, &self.path) {
            if (st.st_dev, st.st_ino) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

pub struct Wirefilter {
    inner: Box<dyn Transport>,
    wire: Wire,
    poll: Epoll,
    timer: TimerFd,
    /// The time the timer is armed at (0: disarmed).
    armed: u64,
    inner_fd: RawFd,
    /// The nested fd is in our epoll set (out of it while `speed` holds input).
    inner_polled: bool,
    mgmt: Option<Mgmt>,
    /// `shutdown` was asked: the connection reads as closed.
    shut: bool,
    events: [libc::epoll_event; 16],
    /// LR frames the nested VNL refused (queue full, unreachable).
    send_drops: u64,
}

impl Wirefilter {
    pub fn new(inner: Box<dyn Transport>, settings: Settings, seed: u64, mgmt: Option<(PathBuf, u32)>) -> io::Result<Wirefilter> {
        let poll = Epoll::new()?;
        let timer = TimerFd::new()?;
        let inner_fd = inner.data_fd();
        poll.add(inner_fd, T_INNER)?;
        poll.add(timer.raw(), T_TIMER)?;
        let mgmt = match mgmt {
            Some((path, mode)) => {
                let m = Mgmt::open(&path, mode)?;
                poll.add(m.listener.as_raw_fd(), T_LISTEN)?;
                Some(m)
            }
            None => None,
        };
        Ok(Wirefilter { inner, wire: Wire::new(settings, seed), poll, timer, armed: 0, inner_fd, inner_polled: true, mgmt, shut: false, events: sys::empty_events::<16>(), send_drops: 0 })
    }

    /// Run one console line; the answer (without prompt).
    fn run_command(&mut self, line: &str) -> (Command, String) {
        let mut out = String::new();
        let c = self.wire.command(line, &mut out);
        if c == Command::Shutdown {
            self.shut = true;
        }
        (c, out)
    }

    /// Handle what woke our fd (timer, console), then send the LR frames due.
    fn service(&mut self, now: u64) -> io::Result<()> {
        let n = match self.poll.wait(&mut self.events, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        for i in 0..n {
            match self.events[i].u64 {
                T_INNER => {}
                T_TIMER => {
                    self.timer.clear();
                    self.armed = 0;
                }
                T_LISTEN => self.accept(),
                t => self.session_input((t - T_SESSION) as RawFd),
            }
        }
        self.release_lr(now)
    }

    fn accept(&mut self) {
        let Some(m) = self.mgmt.as_mut() else { return };
        while let Ok((mut s, _)) = m.listener.accept() {
            if m.sessions.len() >= MAX_SESSIONS || s.set_nonblocking(true).is_err() {
                continue; // dropped: closed
            }
            let hello = format!("\nVDE wirefilter V.{} (vdeplug)\n{PROMPT}", env!("CARGO_PKG_VERSION"));
            if s.write_all(hello.as_bytes()).is_err() || self.poll.add(s.as_raw_fd(), T_SESSION + s.as_raw_fd() as u64).is_err() {
                continue;
            }
            m.sessions.push(Session { stream: s, line: Vec::new() });
        }
    }

    /// Read a session's input; answer each complete line.
    fn session_input(&mut self, fd: RawFd) {
        let Some(m) = self.mgmt.as_mut() else { return };
        let Some(i) = m.sessions.iter().position(|s| s.stream.as_raw_fd() == fd) else { return };
        let mut buf = [0u8; 1024];
        let mut end = false;
        loop {
            match m.sessions[i].stream.read(&mut buf) {
                Ok(0) => {
                    end = true;
                    break;
                }
                Ok(n) => m.sessions[i].line.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    end = true;
                    break;
                }
            }
        }
        let mut pending = std::mem::take(&mut m.sessions[i].line);
        while let Some(nl) = pending.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let (c, mut out) = self.run_command(&String::from_utf8_lossy(&line));
            if c == Command::Empty {
                out.clear();
            }
            if c != Command::Logout {
                out.push_str(PROMPT);
            }
            let m = self.mgmt.as_mut().expect("mgmt checked above");
            if m.sessions[i].stream.write_all(out.as_bytes()).is_err() || c == Command::Logout {
                end = true;
                break;
            }
        }
        if pending.len() > MAX_LINE {
            end = true;
        }
        let m = self.mgmt.as_mut().expect("mgmt checked above");
        if end {
            let _ = self.poll.delete(fd);
            m.sessions.swap_remove(i);
        } else {
            m.sessions[i].line = pending;
        }
    }

    /// Send the held LR frames that are due.
    fn release_lr(&mut self, now: u64) -> io::Result<()> {
        while let Some(h) = self.wire.pop_due(LR, now) {
            let r = self.inner.send(&h.data);
            self.wire.recycle(h.data);
            match r {
                Ok(_) => {}
                Err(e) if super::is_transient(&e) => self.send_drops += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Arm the timer for the next release (or the end of `speed`'s hold
    /// on input); take the nested fd out of the set while input is held,
    /// so a waiting frame does not keep us readable.
    fn rearm(&mut self, now: u64) -> io::Result<()> {
        let busy = self.wire.busy_until(RL);
        let hold = busy > now;
        if hold == self.inner_polled {
            if hold {
                self.poll.delete(self.inner_fd)?;
            } else {
                self.poll.add(self.inner_fd, T_INNER)?;
            }
            self.inner_polled = !hold;
        }
        let next = [self.wire.next_due(LR), self.wire.next_due(RL), hold.then_some(busy)].into_iter().flatten().min().unwrap_or(0);
        if next != self.armed {
            self.timer.arm((next != 0).then_some(next))?;
            self.armed = next;
        }
        Ok(())
    }

    /// RL is untouched: no setting, nothing held.
    fn rl_idle(&self) -> bool {
        !self.wire.settings.impaired(RL) && self.wire.next_due(RL).is_none()
    }

    /// One frame for our user at `now` (after `service`).
    fn recv_one(&mut self, now: u64, buf: &mut [u8]) -> io::Result<Recv> {
        if let Some(h) = self.wire.pop_due(RL, now) {
            let n = h.data.len().min(buf.len());
            buf[..n].copy_from_slice(&h.data[..n]);
            self.wire.recycle(h.data);
            return Ok(Recv::Frame(n));
        }
        if self.wire.busy_until(RL) > now {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.inner.recv(buf)? {
            Recv::Frame(n) => match self.wire.offer(RL, now, &buf[..n]) {
                Offer::Pass => Ok(Recv::Frame(n)),
                Offer::Queued => match self.wire.pop_due(RL, now) {
                    Some(h) => {
                        let m = h.data.len().min(buf.len());
                        buf[..m].copy_from_slice(&h.data[..m]);
                        self.wire.recycle(h.data);
                        Ok(Recv::Frame(m))
                    }
                    None => Ok(Recv::Skip),
                },
                Offer::Dropped(_) => Ok(Recv::Skip),
            },
            other => Ok(other),
        }
    }

    fn send_one(&mut self, now: u64, frame: &[u8]) -> io::Result<usize> {
        match self.wire.offer(LR, now, frame) {
            Offer::Pass => self.inner.send(frame),
            Offer::Queued => self.release_lr(now).map(|_| frame.len()),
            // The wire ate it: the sender cannot tell (counted in our stats).
            Offer::Dropped(_) => Ok(frame.len()),
        }
    }

    fn lr_idle(&self) -> bool {
        !self.wire.settings.impaired(LR) && self.wire.next_due(LR).is_none()
    }
}

impl Transport for Wirefilter {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        let now = now_ns();
        self.service(now)?;
        if self.shut {
            return Ok(Recv::Closed);
        }
        let r = self.recv_one(now, buf);
        self.rearm(now)?;
        r
    }

    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        let now = now_ns();
        self.service(now)?;
        if self.shut {
            batch.clear();
            return Ok(Link::Closed);
        }
        let r = if self.rl_idle() {
            self.inner.recv_batch(batch)
        } else {
            batch.clear();
            let mut link = Ok(Link::Open);
            while !batch.done() {
                let i = batch.count;
                match self.recv_one(now, &mut batch.bufs[i]) {
                    Ok(Recv::Frame(n)) => {
                        batch.lens[i] = n;
                        batch.count += 1;
                    }
                    Ok(Recv::Skip) => batch.skipped += 1,
                    Ok(Recv::Closed) => {
                        link = Ok(Link::Closed);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        link = Err(e);
                        break;
                    }
                }
            }
            link
        };
        self.rearm(now)?;
        r
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        let now = now_ns();
        self.release_lr(now)?;
        let r = self.send_one(now, frame);
        self.rearm(now)?;
        r
    }

    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        let now = now_ns();
        if let Err(e) = self.release_lr(now) {
            return SendOutcome { error: Some(e), ..SendOutcome::default() };
        }
        let mut out = if self.lr_idle() {
            self.inner.send_batch(batch, idx)
        } else {
            let mut out = SendOutcome::default();
            for &i in idx {
                match self.send_one(now, batch.frame(i)) {
                    Ok(_) => out.sent += 1,
                    Err(e) if super::is_transient(&e) => out.dropped += 1,
                    Err(e) => {
                        out.error = Some(e);
                        break;
                    }
                }
            }
            out
        };
        if let Err(e) = self.rearm(now) {
            out.error.get_or_insert(e);
        }
        out
    }

    fn data_fd(&self) -> RawFd {
        self.poll.raw()
    }
    fn ctl_fd(&self) -> Option<RawFd> {
        self.inner.ctl_fd()
    }
    fn exit_status(&mut self) -> Option<i32> {
        self.inner.exit_status()
    }
    fn tick(&mut self) {
        self.inner.tick();
        let now = now_ns();
        let _ = self.service(now).and_then(|_| self.rearm(now));
    }
    fn command(&mut self, line: &str) -> Option<String> {
        let (_, out) = self.run_command(line);
        let now = now_ns();
        let _ = self.rearm(now);
        Some(out)
    }
    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.inner.extra_stats();
        let [lr, rl] = self.wire.counters;
        v.extend([
            ("wf_lr_lost", lr.dropped_loss),
            ("wf_lr_mtu", lr.dropped_mtu),
            ("wf_lr_queue", lr.dropped_queue + lr.dropped_rate),
            ("wf_lr_dup", lr.duplicated),
            ("wf_lr_noise_bits", lr.noise_bits),
            ("wf_lr_held", self.wire.held(LR).0 as u64),
            ("wf_rl_lost", rl.dropped_loss),
            ("wf_rl_mtu", rl.dropped_mtu),
            ("wf_rl_queue", rl.dropped_queue + rl.dropped_rate),
            ("wf_rl_dup", rl.duplicated),
            ("wf_rl_noise_bits", rl.noise_bits),
            ("wf_rl_held", self.wire.held(RL).0 as u64),
            ("wf_send_drops", self.send_drops),
        ]);
        v
    }
}

// ---------------------------------------------------------------- VNL

const WIRE: Kind = Kind::Text;
pub const OPTIONS: &[Opt] = &[
    opt("loss", WIRE, OptDefault::Unset, "loss %: 5, LR5, 5+2 (per direction: LR5,RL1)"),
    opt("lostburst", WIRE, OptDefault::Unset, "mean length of loss bursts (Gilbert-Elliott)"),
    opt("delay", WIRE, OptDefault::Unset, "extra delay ms: 20, 20+5 (uniform), 20+15N (normal, sigma 5)"),
    opt("dup", WIRE, OptDefault::Unset, "duplication %"),
    opt("bandwidth", WIRE, OptDefault::Unset, "channel bandwidth, bytes/s (K/M/G: 1024^n); queued, tail drop past bufsize"),
    opt("speed", WIRE, OptDefault::Unset, "interface speed, bytes/s: input is held for each frame's transmission time"),
    opt("bufsize", WIRE, OptDefault::Unset, "bytes held per direction before tail drop (default 16M)"),
    opt("chanbufsize", WIRE, OptDefault::Unset, "same as bufsize (wirefilter's name)"),
    opt("capacity", WIRE, OptDefault::Unset, "same as bufsize"),
    opt("noise", WIRE, OptDefault::Unset, "bit errors per MiB"),
    opt("mtu", WIRE, OptDefault::Unset, "longest frame passed (bytes, Ethernet header included)"),
    opt("nofifo", Kind::Flag, OptDefault::Bool(false), "let jitter reorder frames"),
    opt("mgmt", Kind::Text, OptDefault::Unset, "management socket path (wirefilter's console commands)"),
    opt("mgmtmode", Kind::Octal, OptDefault::Int(0o600), "management socket mode"),
    opt("seed", Kind::Int { lo: 0, hi: u64::MAX }, OptDefault::Unset, "random seed (a run repeats with the same seed)"),
    opt("rc", Kind::Text, OptDefault::Unset, "file of console commands run at open"),
];

/// The settings a VNL asks for (every error names its option).
fn settings_of(t: &Target) -> Result<Settings, OpenError> {
    let mut s = Settings::default();
    if let Some(path) = t.text("rc") {
        let text = std::fs::read_to_string(&path).map_err(|e| OpenError::Io(super::ctx(e, &path)))?;
        let mut w = Wire::new(s, 0);
        for (n, line) in text.lines().enumerate() {
            let mut out = String::new();
            if let Command::Failed(_) = w.command(line, &mut out) {
                return Err(t.error(format!("rc file {path}, line {}: {:?}: {}", n + 1, line.trim(), out.trim()), path.as_bytes()));
            }
        }
        s = w.settings.clone();
    }
    for p in Param::ALL {
        let names: &[&str] = if p == Param::BufSize { &["bufsize", "chanbufsize", "capacity"] } else { &[p.name()] };
        for &name in names {
            if let Some(text) = t.text(name).filter(|_| t.given(name)) {
                s.set(p, &text).map_err(|why| t.error(format!("bad value {text:?} for option {name:?}: {why}"), format!("{name}={text}")))?;
            }
        }
    }
    if t.flag("nofifo") {
        s.fifo = false;
    }
    Ok(s)
}

fn open_vnl(t: &Target, args: &OpenArgs) -> OpenResult {
    if !t.address.is_empty() {
        return Err(t.error("wirefilter:// takes options in [...] and a nested VNL: wirefilter://[delay=20]{VNL}", &t.address));
    }
    let settings = settings_of(t)?;
    let seed = t.int("seed").unwrap_or_else(|| now_ns() ^ (u64::from(std::process::id()) << 32));
    let mgmt = t.text("mgmt").map(|p| (std::path::absolute(&p).unwrap_or_else(|_| PathBuf::from(&p)), t.int("mgmtmode").unwrap_or(0o600) as u32));
    let inner = open_nested(t, args)?;
    Ok(Box::new(Wirefilter::new(inner, settings, seed, mgmt)?))
}

pub const PLUGIN: Builtin = Builtin {
    scheme: "wirefilter",
    syntax: Syntax::Path,
    options: OPTIONS,
    bare: None,
    nests: true,
    summary: "link emulation (loss, delay, bandwidth...) around a VNL: wirefilter://[delay=20+5/loss=1]{VNL}",
    open: open_vnl,
};

use crate::plugins::{open_nested, opt, Builtin, Kind, OpenArgs, OpenError, OpenResult, Opt, OptDefault, Target};
use crate::vnl::Syntax;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::open_transport;
    use std::time::{Duration, Instant};

    fn frame(id: u32) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.extend_from_slice(&id.to_be_bytes());
        f.resize(60, 0);
        f
    }

    /// Wait (poll on the data fd, no spinning) for a frame, up to `limit`.
    fn recv_within(t: &mut dyn Transport, limit: Duration) -> Option<(Vec<u8>, Instant)> {
        let end = Instant::now() + limit;
        let mut buf = vec![0u8; 9300];
        let mut wakeups = 0;
        loop {
            match t.recv(&mut buf) {
                Ok(Recv::Frame(n)) => return Some((buf[..n].to_vec(), Instant::now())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            sys::poll_in(t.data_fd(), left.as_millis().max(1) as i32).unwrap();
            wakeups += 1;
            assert!(wakeups < 50, "busy: the fd stays readable with nothing to read");
        }
    }

    fn pair(vnl_a: &str, vnl_b: &str) -> (Box<dyn Transport>, Box<dyn Transport>) {
        let a = open_transport(vnl_a.as_bytes(), &OpenArgs::default()).unwrap();
        let b = open_transport(vnl_b.as_bytes(), &OpenArgs::default()).unwrap();
        (a, b)
    }

    fn udp_pair(opts: &str) -> (Box<dyn Transport>, Box<dyn Transport>) {
        let s1 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let s2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (p1, p2) = (s1.local_addr().unwrap().port(), s2.local_addr().unwrap().port());
        drop((s1, s2));
        pair(&format!("wirefilter://[{opts}]{{udp://127.0.0.1:{p1}->127.0.0.1:{p2}}}"), &format!("udp://127.0.0.1:{p2}->127.0.0.1:{p1}"))
    }

    #[test]
    fn rl_delay_wakes_the_reader_without_spinning() {
        let (mut wf, mut peer) = udp_pair("delay=RL80");
        let t0 = Instant::now();
        peer.send(&frame(1)).unwrap();
        let (f, at) = recv_within(wf.as_mut(), Duration::from_secs(2)).expect("delayed frame arrives");
        assert_eq!(f, frame(1));
        let took = at - t0;
        assert!(took >= Duration::from_millis(80) && took < Duration::from_millis(200), "{took:?}");
    }

    #[test]
    fn lr_delay_released_through_the_fd() {
        let (mut wf, mut peer) = udp_pair("delay=LR60");
        let t0 = Instant::now();
        wf.send(&frame(2)).unwrap();
        // The peer sees nothing until our fd is serviced at the due time.
        assert!(sys::poll_in(wf.data_fd(), 1000).unwrap(), "our fd wakes for the LR release");
        assert!(t0.elapsed() >= Duration::from_millis(55), "{:?}", t0.elapsed());
        let mut buf = vec![0u8; 9300];
        let _ = wf.recv(&mut buf);
        let (f, at) = recv_within(peer.as_mut(), Duration::from_secs(1)).expect("released");
        assert_eq!(f, frame(2));
        assert!(at - t0 >= Duration::from_millis(60));
    }

    #[test]
    fn console_changes_apply_to_the_next_frame() {
        let (mut wf, mut peer) = udp_pair("");
        assert!(wf.command("loss RL100").unwrap().ends_with("1000 Success\n"));
        peer.send(&frame(3)).unwrap();
        assert!(recv_within(wf.as_mut(), Duration::from_millis(150)).is_none(), "lost");
        assert!(wf.command("loss 0").is_some());
        peer.send(&frame(4)).unwrap();
        assert_eq!(recv_within(wf.as_mut(), Duration::from_secs(1)).unwrap().0, frame(4));
        assert_eq!(wf.extra_stats().iter().find(|s| s.0 == "wf_rl_lost").unwrap().1, 1);
    }

    #[test]
    fn mgmt_socket_private_and_not_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vdeplug-wf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mgmt");
        let vnl = format!("wirefilter://[mgmt=\"{}\"]{{null://}}", path.display());
        let wf = open_transport(vnl.as_bytes(), &OpenArgs::default()).unwrap();
        assert_eq!(std::fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let Err(e) = open_transport(vnl.as_bytes(), &OpenArgs::default()) else { panic!("a second one bound the same path") };
        assert!(e.to_string().contains("already there"), "{e}");
        drop(wf);
        assert!(!path.exists(), "removed on close");
        std::os::unix::fs::symlink("/nonexistent-target", &path).unwrap();
        assert!(open_transport(vnl.as_bytes(), &OpenArgs::default()).is_err(), "a symlink is not followed or replaced");
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn speed_holds_input_without_spinning() {
        // 6000 B/s: a 60-byte frame takes 10 ms on the interface; input is
        // held meanwhile (the nested fd leaves our set), frames keep order.
        let (mut wf, mut peer) = udp_pair("speed=RL6000");
        let t0 = Instant::now();
        for i in 0..5 {
            peer.send(&frame(10 + i)).unwrap();
        }
        for i in 0..5 {
            let (f, _) = recv_within(wf.as_mut(), Duration::from_secs(1)).expect("paced, not lost");
            assert_eq!(f, frame(10 + i));
        }
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(45) && took < Duration::from_millis(300), "{took:?}");
    }

    #[test]
    fn rc_file_and_shutdown() {
        let rc = std::env::temp_dir().join(format!("vdeplug-wf-rc-{}", std::process::id()));
        std::fs::write(&rc, "# a comment\ndelay RL30\nloss LR2\n").unwrap();
        let vnl = format!("wirefilter://[rc=\"{}\"]{{null://}}", rc.display());
        let mut wf = open_transport(vnl.as_bytes(), &OpenArgs::default()).unwrap();
        let info = wf.command("showinfo").unwrap();
        assert!(info.contains("Delay  L->R 0+0U   R->L 30+0U") && info.contains("Loss   L->R 2+0U"), "{info}");
        assert_eq!(wf.command("shutdown").unwrap(), "1000 Success\n");
        assert_eq!(wf.recv(&mut [0u8; 100]).unwrap(), Recv::Closed);
        std::fs::write(&rc, "delay 5\nbogus\n").unwrap();
        let Err(e) = open_transport(vnl.as_bytes(), &OpenArgs::default()) else { panic!("a bad rc line opened") };
        assert!(e.to_string().contains("line 2"), "{e}");
        std::fs::remove_file(&rc).unwrap();
    }

    #[test]
    fn bad_values_name_the_option() {
        for (vnl, part) in [("wirefilter://[delay=abc]{null://}", "\"delay\""), ("wirefilter://[loss=150]{null://}", "\"loss\""), ("wirefilter://[band=-3]{null://}", "\"bandwidth\"")] {
            let Err(e) = open_transport(vnl.as_bytes(), &OpenArgs::default()) else { panic!("{vnl} opened") };
            assert!(e.to_string().contains(part), "{vnl}: {e}");
        }
    }
}
