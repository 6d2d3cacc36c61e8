//! switch://, hub://, multi://, bonding:// — a switch living inside the
//! process that opens it (vdeplug4's "netnode" modules). It serves the
//! vde_switch control protocol in a vde2-compatible directory, so qemu,
//! C `vde_plug vde://…` and our vde:// client plug in. The opening process
//! is the "host" port: what it sends enters the switch, what the switch
//! delivers to it comes out of recv.
//!
//! This file is the socket server: control handshakes and port sockets.
//! Where each frame goes (per kind) is decided by switch_core.rs, which
//! does no I/O; the directory is node_dir.rs; frames for the host wait in
//! a `FrameQueue` (ready.rs).
//!
//! Writes to ports are non-blocking: a slow port loses frames, it never
//! stalls the switch.
//!
//! Hardening (another local user is assumed hostile): the directory's
//! rules are node_dir.rs's; handshakes have a deadline and requested ports
//! a bound.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::node_dir::{connect_client, NodeDir};
use super::ready::FrameQueue;
pub use super::switch_core::Kind;
use super::switch_core::{Decision, PortId, SwitchCore, HOST};
use super::{err, now_secs, send_datagrams, Batch, Link, Recv, SendOutcome, Transport};
use crate::sys::{self, Epoll};
use crate::wire::vde_ctl::{self, Request, REQ_NEW_CONTROL};

#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    pub path: PathBuf,
    pub mode: u32,
    pub dirmode: Option<u32>,
    pub gid: Option<u32>,
    pub hashsize: usize,
    pub expiretime: u64,
    pub hashseed: u64,
}

struct Port {
    ctl: UnixStream,
    data: UnixDatagram,
    /// Name of the data socket in the switch directory.
    data_name: PathBuf,
}

enum Slot {
    Free,
    /// Connected to ctl, request not read yet (since when).
    Pending(UnixStream, Instant),
    Port(Port),
}

const TOKEN_LISTEN: u64 = u64::MAX;
const TOKEN_HOSTQ: u64 = u64::MAX - 1;
const TAG_CTL: u64 = 1;
const TAG_DATA: u64 = 2;
/// Frames queued for the host while it is not reading.
const HOST_QUEUE: usize = 256;

#[derive(Debug, Default, Clone, Copy)]
struct NodeStats {
    port_drops: u64,
    host_drops: u64,
    joins: u64,
    leaves: u64,
    rejected: u64,
    /// Bytes a joined client wrote on its (silent) control stream.
    ctl_garbage: u64,
}

/// Ports (and connections still in their handshake) a switch serves at most:
/// each takes file descriptors, so a flood of clients is refused instead of
/// exhausting them.
pub const MAX_PORTS: usize = 512;
const MAX_PENDING: usize = 32;
/// A client must send its request this soon after connecting.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(3);

pub struct NetNode {
    core: SwitchCore,
    dir: NodeDir,
    listener: UnixListener,
    slots: Vec<Slot>,
    /// Ids of the joined ports, so flooding costs what is joined, not the
    /// highest port number.
    active: Vec<PortId>,
    poll: Epoll,
    hostq: FrameQueue,
    scratch: Batch,
    /// One-frame batch for `send`.
    single: Batch,
    /// Per destination port: indexes of the frames to send it (reused).
    out: Vec<Vec<usize>>,
    touched: Vec<PortId>,
    stats: NodeStats,
    /// False while accept() fails for lack of fds (the listener is then out
    /// of the poll set, so it cannot spin); back in when a port closes.
    listening: bool,
}

pub fn open(o: &Options) -> io::Result<NetNode> {
    let (dir, listener) = NodeDir::open(&o.path, o.mode, o.dirmode, o.gid)?;
    let poll = Epoll::new()?;
    poll.add(listener.as_raw_fd(), TOKEN_LISTEN)?;
    let hostq = FrameQueue::new(HOST_QUEUE)?;
    poll.add(hostq.raw(), TOKEN_HOSTQ)?;
    Ok(NetNode {
        dir,
        listener,
        slots: vec![Slot::Free], // slot 0 is the host
        active: Vec::new(),
        core: SwitchCore::new(o.kind, o.hashsize, o.expiretime, o.hashseed),
        poll,
        hostq,
        scratch: Batch::new(crate::fwd::BATCH),
        single: Batch::new(1),
        out: Vec::new(),
        touched: Vec::new(),
        stats: NodeStats::default(),
        listening: true,
    })
}

fn token(id: PortId, tag: u64) -> u64 {
    (u64::from(id) << 2) | tag
}

impl NetNode {
    /// A free slot: `wanted` if given and free, else the lowest free one.
    /// The caller has checked `wanted` is within 1..=MAX_PORTS.
    fn free_slot(&mut self, wanted: Option<usize>) -> PortId {
        if let Some(w) = wanted {
            if self.slots.len() <= w {
                self.slots.resize_with(w + 1, || Slot::Free);
            }
            if matches!(self.slots[w], Slot::Free) {
                return w as PortId;
            }
        }
        match self.slots.iter().skip(1).position(|s| matches!(s, Slot::Free)) {
            Some(i) => (i + 1) as PortId,
            None => {
                self.slots.push(Slot::Free);
                (self.slots.len() - 1) as PortId
            }
        }
    }

    fn pending_count(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s, Slot::Pending(..))).count()
    }

    /// Close the pending handshake that has waited longest (`older_than`:
    /// only if it has waited at least that long). Returns whether one was.
    fn evict_pending(&mut self, older_than: Option<Duration>) -> bool {
        let oldest = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Pending(_, t) => Some((i, *t)),
                _ => None,
            })
            .min_by_key(|&(_, t)| t);
        match oldest {
            Some((i, t)) if older_than.is_none_or(|d| t.elapsed() >= d) => {
                self.close_port(i as PortId);
                self.stats.rejected += 1;
                true
            }
            _ => false,
        }
    }

    fn accept(&mut self) {
        loop {
            let conn = match self.listener.accept() {
                Ok((conn, _)) => conn,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // No fd to accept with: stop polling the listener until a port closes.
                    if self.poll.delete(self.listener.as_raw_fd()).is_ok() {
                        self.listening = false;
                    }
                    return;
                }
                Err(_) => return,
            };
            if self.port_count() >= MAX_PORTS {
                self.stats.rejected += 1;
                continue; // dropping conn closes it: the client sees EOF
            }
            if self.pending_count() >= MAX_PENDING {
                // Silent clients cannot lock others out: the oldest one goes.
                self.evict_pending(None);
            }
            let _ = socket2::SockRef::from(&conn).set_cloexec(true);
            if conn.set_nonblocking(true).is_err() {
                continue;
            }
            let id = self.free_slot(None);
            if self.poll.add(conn.as_raw_fd(), token(id, TAG_CTL)).is_ok() {
                self.slots[id as usize] = Slot::Pending(conn, Instant::now());
            }
        }
    }

    /// A pending connection sent its request: make its port, or refuse it.
    fn handshake(&mut self, id: PortId) {
        let Slot::Pending(mut conn, since) = std::mem::replace(&mut self.slots[id as usize], Slot::Free) else { return };
        let mut buf = [0u8; 256];
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.slots[id as usize] = Slot::Pending(conn, since);
                return;
            }
            Err(_) => 0,
        };
        let _ = self.poll.delete(conn.as_raw_fd());
        let req = match Request::parse(&buf[..n]) {
            // vdeplug4's netnode accepts new-port requests only (not port 0).
            Ok(r) if r.kind & 0xff == REQ_NEW_CONTROL => r,
            _ => {
                self.stats.rejected += 1;
                return; // dropping conn closes it: the client sees EOF
            }
        };
        // Honour a requested port number when it is free; one beyond the
        // bound is refused (as vde_switch refuses ports past -n).
        let id = match req.port() {
            p if p <= 0 => id,
            p if p as usize > MAX_PORTS => {
                self.stats.rejected += 1;
                return;
            }
            p if p as PortId == id => id,
            p => self.free_slot(Some(p as usize)),
        };
        match self.make_port(id, conn, &req) {
            Ok(port) => {
                let ok = self.poll.add(port.ctl.as_raw_fd(), token(id, TAG_CTL)).is_ok() && self.poll.add(port.data.as_raw_fd(), token(id, TAG_DATA)).is_ok();
                if ok {
                    self.slots[id as usize] = Slot::Port(port);
                    self.active.push(id);
                    self.stats.joins += 1;
                } else {
                    self.dir.remove(&port.data_name);
                }
            }
            Err(_) => self.stats.rejected += 1,
        }
    }

    fn make_port(&self, id: PortId, mut conn: UnixStream, req: &Request) -> io::Result<Port> {
        let data_name = PathBuf::from(format!("{id:03}.{}", conn.as_raw_fd()));
        let data = self.dir.bind(&data_name)?;
        let mut setup = || -> io::Result<()> {
            socket2::SockRef::from(&data).set_cloexec(true)?;
            data.set_nonblocking(true)?;
            connect_client(&data, &conn, &req.sock_path)?;
            self.dir.publish(&data_name)?;
            let public = self.dir.public(&data_name);
            let reply = vde_ctl::encode_sockaddr_un(public.as_os_str().as_bytes()).map_err(|e| err(io::ErrorKind::InvalidInput, e.to_string()))?;
            // The reply (110 bytes) fits an empty socket buffer: never blocks.
            conn.write_all(&reply)
        };
        if let Err(e) = setup() {
            self.dir.remove(&data_name);
            return Err(e);
        }
        Ok(Port { ctl: conn, data, data_name })
    }

    fn close_port(&mut self, id: PortId) {
        match std::mem::replace(&mut self.slots[id as usize], Slot::Free) {
            Slot::Port(p) => {
                let _ = self.poll.delete(p.ctl.as_raw_fd());
                let _ = self.poll.delete(p.data.as_raw_fd());
                self.dir.remove(&p.data_name);
                self.active.retain(|&a| a != id);
                self.core.port_closed(id);
                self.stats.leaves += 1;
            }
            Slot::Pending(c, _) => {
                let _ = self.poll.delete(c.as_raw_fd());
            }
            Slot::Free => {}
        }
        self.resume_listening();
    }

    fn resume_listening(&mut self) {
        if !self.listening && self.poll.add(self.listener.as_raw_fd(), TOKEN_LISTEN).is_ok() {
            self.listening = true;
        }
    }

    /// The control stream is silent after the handshake: EOF closes the port.
    fn ctl_event(&mut self, id: PortId) {
        match &mut self.slots[id as usize] {
            Slot::Pending(..) => self.handshake(id),
            Slot::Port(p) => {
                let mut junk = [0u8; 256];
                match p.ctl.read(&mut junk) {
                    Ok(0) => self.close_port(id),
                    Ok(n) => self.stats.ctl_garbage += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => self.close_port(id),
                }
            }
            Slot::Free => {}
        }
    }

    fn queue(&mut self, port: PortId, i: usize) {
        let list = &mut self.out[port as usize];
        if list.is_empty() {
            self.touched.push(port);
        }
        list.push(i);
    }

    /// Forward frames `idx` of `frames`, which entered at `src`: decide
    /// every frame, then one non-blocking sendmmsg per destination port
    /// (per-port order is kept). A slow port loses frames, never stalls us.
    fn forward_batch(&mut self, src: PortId, frames: &Batch, idx: &[usize]) {
        if self.out.len() < self.slots.len() {
            self.out.resize_with(self.slots.len(), || Vec::with_capacity(crate::fwd::BATCH));
        }
        let now = now_secs();
        for &i in idx {
            let f = frames.frame(i);
            let slots = &self.slots;
            match self.core.decide(src, f, now, &self.active, |d| matches!(slots.get(d as usize), Some(Slot::Port(_)))) {
                Decision::Drop => {}
                Decision::Host => self.deliver_to_host(f),
                Decision::Port(p) => self.queue(p, i),
                Decision::Flood => {
                    for k in 0..self.active.len() {
                        let p = self.active[k];
                        if p != src {
                            self.queue(p, i);
                        }
                    }
                    if src != HOST {
                        self.deliver_to_host(f);
                    }
                }
            }
        }
        let mut touched = std::mem::take(&mut self.touched);
        for &p in &touched {
            let list = std::mem::take(&mut self.out[p as usize]);
            if let Some(Slot::Port(port)) = self.slots.get(p as usize) {
                let o = send_datagrams(port.data.as_raw_fd(), &[], list.len(), &|k| frames.frame_ref(list[k]), None, &|_, _| true, &mut false, 0);
                self.stats.port_drops += o.dropped as u64;
            }
            let mut list = list;
            list.clear();
            self.out[p as usize] = list;
        }
        touched.clear();
        self.touched = touched;
    }

    fn deliver_to_host(&mut self, frame: &[u8]) {
        if !self.hostq.push(frame) {
            self.stats.host_drops += 1;
        }
    }

    /// Frames waiting on a port's data socket; returns how many were read.
    fn data_event(&mut self, id: PortId) -> usize {
        let fd = match self.slots.get(id as usize) {
            Some(Slot::Port(p)) => p.data.as_raw_fd(),
            _ => return 0,
        };
        let mut scratch = std::mem::replace(&mut self.scratch, Batch::new(0));
        if scratch.recv_datagrams(fd).is_err() {
            scratch.clear();
        }
        let n = scratch.count;
        let idx: [usize; crate::fwd::BATCH] = std::array::from_fn(|i| i);
        self.forward_batch(id, &scratch, &idx[..n]);
        self.scratch = scratch;
        n
    }

    /// Handle whatever is ready, without waiting. Returns the work done that
    /// never reaches the host: frames moved between ports, control events.
    fn service(&mut self) -> io::Result<usize> {
        let mut events = sys::empty_events::<32>();
        let n = match self.poll.wait(&mut events, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        // Control work (joins, handshakes, leaves) counts as consumed too:
        // a reader woken by it must not then wait as if nothing happened.
        let mut moved = 0;
        for ev in &events[..n] {
            let t = ev.u64;
            match t {
                TOKEN_LISTEN => {
                    self.accept();
                    moved += 1;
                }
                TOKEN_HOSTQ => {}
                t if t & 3 == TAG_CTL => {
                    self.ctl_event((t >> 2) as PortId);
                    moved += 1;
                }
                t if t & 3 == TAG_DATA => moved += self.data_event((t >> 2) as PortId),
                _ => {}
            }
        }
        Ok(moved)
    }

    pub fn port_count(&self) -> usize {
        self.active.len()
    }
}

impl Transport for NetNode {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        if self.hostq.is_empty() {
            self.service()?;
        }
        let got = self.hostq.pop(buf);
        self.hostq.refresh();
        got.map(Recv::Frame).ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        let mut one = std::mem::replace(&mut self.single, Batch::new(0));
        one.bufs[0][..frame.len()].copy_from_slice(frame);
        one.lens[0] = frame.len();
        one.count = 1;
        self.forward_batch(HOST, &one, &[0]);
        self.single = one;
        Ok(frame.len())
    }
    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        self.forward_batch(HOST, batch, idx);
        SendOutcome { sent: idx.len(), ..Default::default() }
    }
    fn data_fd(&self) -> RawFd {
        self.poll.raw()
    }
    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        batch.clear();
        self.hostq.drain_into(batch);
        if batch.count < batch.capacity() {
            // Port-to-port traffic counts as consumed work (keeps the loop hot).
            batch.skipped += self.service()?;
            self.hostq.drain_into(batch);
        }
        Ok(Link::Open)
    }
    /// Handshakes past their deadline are closed; a listener parked for
    /// lack of fds is retried.
    fn tick(&mut self) {
        while self.evict_pending(Some(HANDSHAKE_DEADLINE)) {}
        self.resume_listening();
    }
    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("ports", self.port_count() as u64),
            ("pending", self.pending_count() as u64),
            ("port_drops", self.stats.port_drops),
            ("host_drops", self.stats.host_drops),
            ("joins", self.stats.joins),
            ("leaves", self.stats.leaves),
            ("rejected", self.stats.rejected),
            ("ctl_garbage", self.stats.ctl_garbage),
        ]
    }
}

impl Drop for NetNode {
    /// The ports' sockets go; `ctl` and the directory go with `dir`.
    fn drop(&mut self) {
        if !self.dir.ours() {
            return; // a forked child's copy: the files are the parent's
        }
        for id in 1..self.slots.len() as PortId {
            self.close_port(id);
        }
    }
}

// ---------------------------------------------------------------- VNL

const NODE_OPTIONS: &[Opt] = &[
    opt("mode", OptKind::Octal, OptDefault::Int(0o600), "permissions of the switch sockets"),
    opt("dirmode", OptKind::Octal, OptDefault::Unset, "permissions of the directory (default from mode)"),
    opt("grp", OptKind::Text, OptDefault::Unset, "group owning the switch"),
];
const SWITCH_OPTIONS: &[Opt] = &[
    NODE_OPTIONS[0],
    NODE_OPTIONS[1],
    NODE_OPTIONS[2],
    opt("hashsize", OptKind::Int { lo: 1, hi: 1 << 24 }, OptDefault::Int(256), "MAC table size"),
    opt("hashseed", OptKind::Int { lo: 0, hi: u64::MAX }, OptDefault::Int(0), "MAC table hash seed"),
    opt("expiretime", OptKind::Int { lo: 1, hi: 1 << 40 }, OptDefault::Int(120), "MAC table entry lifetime (s)"),
];

/// vdeplug4's default: /tmp/vdenode_<user> (or u<euid>).
pub fn default_path() -> PathBuf {
    let user = user_name().unwrap_or_else(|| format!("u{}", sys::geteuid()));
    PathBuf::from(format!("/tmp/vdenode_{user}"))
}

fn open_kind(kind: Kind, t: &Target, args: &OpenArgs) -> OpenResult {
    let path = if t.address.is_empty() { default_path() } else { t.abs_path() };
    let grp = if t.given("grp") { t.text("grp") } else { args.group.clone() };
    let gid = grp.as_deref().map(group_id).transpose().map_err(|e| t.error(e, grp.as_deref().unwrap_or("")))?;
    let mode = match args.mode {
        Some(m) if !t.given("mode") => m,
        _ => t.num("mode") as u32,
    };
    // Only switch:// learns MACs (and has the table's options); the others
    // get the smallest table, never used.
    let (hashsize, expiretime, hashseed) = match kind {
        Kind::Switch => (t.num("hashsize") as usize, t.num("expiretime"), t.num("hashseed")),
        Kind::Hub | Kind::Multi | Kind::Bonding => (0, 0, 0),
    };
    let o = Options { kind, path, mode, dirmode: t.int("dirmode").map(|m| m as u32), gid, hashsize, expiretime, hashseed };
    Ok(Box::new(open(&o)?))
}

/// Our user's name as vdeplug4 finds it: LOGNAME, USER, LNAME, USERNAME,
/// then the password database.
fn user_name() -> Option<String> {
    ["LOGNAME", "USER", "LNAME", "USERNAME"].iter().filter_map(|v| std::env::var(v).ok()).find(|v| !v.is_empty()).or_else(sys::passwd_name)
}

const fn node(scheme: &'static str, options: &'static [Opt], summary: &'static str, open: fn(&Target, &OpenArgs) -> OpenResult) -> Builtin {
    Builtin { scheme, syntax: Syntax::Path, options, bare: None, nests: false, summary, open }
}

pub const SWITCH: Builtin = node("switch", SWITCH_OPTIONS, "learning switch (802.1Q trunk): switch:///tmp/sw", |t, a| open_kind(Kind::Switch, t, a));
pub const HUB: Builtin = node("hub", NODE_OPTIONS, "hub: floods every frame to every other port", |t, a| open_kind(Kind::Hub, t, a));
pub const MULTI: Builtin = node("multi", NODE_OPTIONS, "multiplexer: ports to host only, host to every port", |t, a| open_kind(Kind::Multi, t, a));
pub const BONDING: Builtin = node("bonding", NODE_OPTIONS, "bonding: host frames round robin over the ports", |t, a| open_kind(Kind::Bonding, t, a));

use crate::plugins::{group_id, opt, Builtin, Kind as OptKind, OpenArgs, OpenResult, Opt, OptDefault, Target};
use crate::vnl::Syntax;
