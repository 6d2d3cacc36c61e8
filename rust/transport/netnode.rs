//! switch://, hub://, multi://, bonding:// — a switch living inside the
//! process that opens it (vdeplug4's "netnode" modules). It serves the
//! vde_switch control protocol in a vde2-compatible directory, so qemu,
//! C `vde_plug vde://…` and our vde:// client plug in. The opening process
//! is the "host" port: what it sends enters the switch, what the switch
//! delivers to it comes out of recv.
//!
//! Forwarding per kind:
//! - switch: learning on (MAC, VLAN) → port; known unicast to its port only
//!   (never back to the sender); unknown, broadcast, multicast flooded.
//!   802.1Q trunk: tagged frames are forwarded as they are.
//! - hub: flood to everyone but the sender.
//! - multi: ports → host only; host → every port.
//! - bonding: ports → host; host → one port, round robin.
//!
//! Writes to ports are non-blocking: a slow port loses frames, it never
//! stalls the switch.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::{ctx, err, now_secs, send_datagrams, Batch, Recv, SendOutcome, Transport};
use crate::mac_table::MacTable;
use crate::sys::{self, Epoll, EventFd};
use crate::wire::ethernet::Frame;
use crate::wire::vde_ctl::{self, Request, REQ_NEW_CONTROL};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Switch,
    Hub,
    Multi,
    Bonding,
}

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

/// Port 0 is the host (the opening process); clients are 1..
type PortId = u32;
const HOST: PortId = 0;

struct Port {
    ctl: UnixStream,
    data: UnixDatagram,
    data_path: PathBuf,
}

enum Decision {
    Drop,
    Host,
    Port(PortId),
    Flood,
}

enum Slot {
    Free,
    /// Connected to ctl, request not read yet.
    Pending(UnixStream),
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

pub struct NetNode {
    kind: Kind,
    dir: PathBuf,
    created_dir: bool,
    ctl_path: PathBuf,
    listener: UnixListener,
    slots: Vec<Slot>,
    table: MacTable<PortId>,
    poll: Epoll,
    hostq_fd: EventFd,
    hostq: Batch,
    hostq_head: usize,
    hostq_set: bool,
    scratch: Batch,
    /// One-frame batch for `send`.
    single: Batch,
    /// Per destination port: indexes of the frames to send it (reused).
    out: Vec<Vec<usize>>,
    touched: Vec<PortId>,
    rr: usize,
    mode: u32,
    gid: Option<u32>,
    stats: NodeStats,
    /// False while accept() fails for lack of fds (the listener is then out
    /// of the poll set, so it cannot spin); back in when a port closes.
    listening: bool,
}

fn is_live_socket(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

pub fn open(o: &Options) -> io::Result<NetNode> {
    let dir = o.path.clone();
    let mode = o.mode & !0o111;
    let dirmode = o.dirmode.unwrap_or(0o2000 | mode | (mode & 0o444) >> 2 | (mode & 0o222) >> 1);
    let mut created_dir = false;
    match std::fs::create_dir(&dir) {
        Ok(()) => {
            created_dir = true;
            if let Some(g) = o.gid {
                sys::chown_group(&dir, g).map_err(|e| ctx(e, format!("switch: chown {}", dir.display())))?;
            }
            sys::chmod(&dir, dirmode).map_err(|e| ctx(e, format!("switch: chmod {}", dir.display())))?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(ctx(e, format!("switch: mkdir {}", dir.display()))),
    }
    let ctl_path = dir.join("ctl");
    if ctl_path.exists() {
        if is_live_socket(&ctl_path) {
            return Err(err(io::ErrorKind::AddrInUse, format!("switch: a switch is already running at {}", dir.display())));
        }
        std::fs::remove_file(&ctl_path).map_err(|e| ctx(e, format!("switch: stale {}", ctl_path.display())))?;
        remove_stale_ports(&dir);
        created_dir = true; // taken over from a switch that died: ours to remove
    }
    let listener = UnixListener::bind(&ctl_path).map_err(|e| ctx(e, format!("switch: bind {}", ctl_path.display())))?;
    listener.set_nonblocking(true)?;
    sys::set_cloexec(listener.as_raw_fd())?;
    if let Some(g) = o.gid {
        sys::chown_group(&ctl_path, g)?;
    }
    sys::chmod(&ctl_path, mode)?;
    let poll = Epoll::new()?;
    poll.add(listener.as_raw_fd(), TOKEN_LISTEN)?;
    let hostq_fd = EventFd::new()?;
    poll.add(hostq_fd.raw(), TOKEN_HOSTQ)?;
    Ok(NetNode {
        kind: o.kind,
        dir,
        created_dir,
        ctl_path,
        listener,
        slots: vec![Slot::Free], // slot 0 is the host
        table: MacTable::new(o.hashsize, o.expiretime, o.hashseed),
        poll,
        hostq_fd,
        hostq: Batch::new(HOST_QUEUE),
        hostq_head: 0,
        hostq_set: false,
        scratch: Batch::new(crate::fwd::BATCH),
        single: Batch::new(1),
        out: Vec::new(),
        touched: Vec::new(),
        rr: 0,
        mode,
        gid: o.gid,
        stats: NodeStats::default(),
        listening: true,
    })
}

/// After a crash: port sockets (`NNN.fd`) nobody listens on any more. Only
/// names of our own pattern, and only dead sockets, are removed.
fn remove_stale_ports(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.split_once('.').is_some_and(|(a, b)| a.len() >= 3 && a.bytes().all(|c| c.is_ascii_digit()) && !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()));
        if ours && e.file_type().is_ok_and(|t| t.is_socket()) {
            let probe = UnixDatagram::unbound().and_then(|u| u.connect(e.path()));
            if probe.is_err_and(|err| err.raw_os_error() == Some(libc::ECONNREFUSED)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn token(id: PortId, tag: u64) -> u64 {
    (u64::from(id) << 2) | tag
}

impl NetNode {
    fn free_slot(&mut self, wanted: i32) -> PortId {
        if wanted > 0 {
            let w = wanted as usize;
            if w < 1 << 16 {
                if self.slots.len() <= w {
                    self.slots.resize_with(w + 1, || Slot::Free);
                }
                if matches!(self.slots[w], Slot::Free) {
                    return w as PortId;
                }
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
            let pending = self.slots.iter().filter(|s| matches!(s, Slot::Pending(_))).count();
            if self.port_count() >= MAX_PORTS || pending >= MAX_PENDING {
                self.stats.rejected += 1;
                continue; // dropping conn closes it: the client sees EOF
            }
            let _ = sys::set_cloexec(conn.as_raw_fd());
            if conn.set_nonblocking(true).is_err() {
                continue;
            }
            let id = self.free_slot(0);
            if self.poll.add(conn.as_raw_fd(), token(id, TAG_CTL)).is_ok() {
                self.slots[id as usize] = Slot::Pending(conn);
            }
        }
    }

    /// A pending connection sent its request: make its port, or refuse it.
    fn handshake(&mut self, id: PortId) {
        let Slot::Pending(mut conn) = std::mem::replace(&mut self.slots[id as usize], Slot::Free) else { return };
        let mut buf = [0u8; 256];
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.slots[id as usize] = Slot::Pending(conn);
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
        // Honour a requested port number when it is free.
        let id = if req.port() > 0 && req.port() as PortId != id { self.free_slot(req.port()) } else { id };
        match self.make_port(id, conn, &req) {
            Ok(port) => {
                let ok = self.poll.add(port.ctl.as_raw_fd(), token(id, TAG_CTL)).is_ok() && self.poll.add(port.data.as_raw_fd(), token(id, TAG_DATA)).is_ok();
                if ok {
                    self.slots[id as usize] = Slot::Port(port);
                    self.stats.joins += 1;
                } else {
                    let _ = std::fs::remove_file(&port.data_path);
                }
            }
            Err(_) => self.stats.rejected += 1,
        }
    }

    fn make_port(&self, id: PortId, mut conn: UnixStream, req: &Request) -> io::Result<Port> {
        let data_path = self.dir.join(format!("{id:03}.{}", conn.as_raw_fd()));
        let _ = std::fs::remove_file(&data_path);
        let data = UnixDatagram::bind(&data_path)?;
        let mut setup = || -> io::Result<()> {
            sys::set_cloexec(data.as_raw_fd())?;
            data.set_nonblocking(true)?;
            data.connect(std::ffi::OsStr::from_bytes(&req.sock_path))?;
            if let Some(g) = self.gid {
                sys::chown_group(&data_path, g)?;
            }
            sys::chmod(&data_path, self.mode)?;
            let reply = vde_ctl::encode_sockaddr_un(data_path.as_os_str().as_bytes()).map_err(|e| err(io::ErrorKind::InvalidInput, e.to_string()))?;
            conn.set_nonblocking(false)?;
            conn.write_all(&reply)?;
            conn.set_nonblocking(true)
        };
        if let Err(e) = setup() {
            let _ = std::fs::remove_file(&data_path);
            return Err(e);
        }
        Ok(Port { ctl: conn, data, data_path })
    }

    fn close_port(&mut self, id: PortId) {
        match std::mem::replace(&mut self.slots[id as usize], Slot::Free) {
            Slot::Port(p) => {
                let _ = self.poll.delete(p.ctl.as_raw_fd());
                let _ = self.poll.delete(p.data.as_raw_fd());
                let _ = std::fs::remove_file(&p.data_path);
                self.table.forget_value(id);
                self.stats.leaves += 1;
                self.resume_listening();
            }
            Slot::Pending(c) => {
                let _ = self.poll.delete(c.as_raw_fd());
            }
            Slot::Free => {}
        }
    }

    fn resume_listening(&mut self) {
        if !self.listening && self.poll.add(self.listener.as_raw_fd(), TOKEN_LISTEN).is_ok() {
            self.listening = true;
        }
    }

    /// The control stream is silent after the handshake: EOF closes the port.
    fn ctl_event(&mut self, id: PortId) {
        match &mut self.slots[id as usize] {
            Slot::Pending(_) => self.handshake(id),
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

    /// Where one frame entering at `src` goes. Learns its source (switch).
    fn decide(&mut self, src: PortId, frame: &[u8]) -> Decision {
        let Ok(eth) = Frame::new_checked(frame) else { return Decision::Drop };
        match self.kind {
            Kind::Hub => Decision::Flood,
            Kind::Switch => {
                let vlan = eth.vlan_id().unwrap_or(0);
                let now = now_secs();
                self.table.learn(eth.src_addr(), vlan, src, now);
                match self.table.lookup(eth.dst_addr(), vlan, now) {
                    Some(d) if d == src => Decision::Drop,
                    Some(HOST) => Decision::Host,
                    Some(d) if matches!(self.slots.get(d as usize), Some(Slot::Port(_))) => Decision::Port(d),
                    _ => Decision::Flood,
                }
            }
            Kind::Multi | Kind::Bonding if src != HOST => Decision::Host,
            Kind::Multi => Decision::Flood,
            Kind::Bonding => {
                let n = self.ports().count();
                if n == 0 {
                    return Decision::Drop;
                }
                let pick = self.ports().nth(self.rr % n);
                self.rr = self.rr.wrapping_add(1);
                pick.map_or(Decision::Drop, Decision::Port)
            }
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
        for &i in idx {
            let f = frames.frame(i);
            match self.decide(src, f) {
                Decision::Drop => {}
                Decision::Host => self.deliver_to_host(f),
                Decision::Port(p) => self.queue(p, i),
                Decision::Flood => {
                    for p in 1..self.slots.len() as PortId {
                        if p != src && matches!(self.slots[p as usize], Slot::Port(_)) {
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
                let o = send_datagrams(port.data.as_raw_fd(), &[], list.len(), &|k| frames.frame(list[k]), None, &|_, _| true, &mut false, 0);
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
        let q = &mut self.hostq;
        if q.count == q.capacity() {
            self.stats.host_drops += 1;
            return;
        }
        let slot = (self.hostq_head + q.count) % q.capacity();
        q.bufs[slot][..frame.len()].copy_from_slice(frame);
        q.lens[slot] = frame.len();
        q.count += 1;
    }

    fn ports(&self) -> impl Iterator<Item = PortId> + '_ {
        self.slots.iter().enumerate().filter(|(_, s)| matches!(s, Slot::Port(_))).map(|(i, _)| i as PortId)
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

    /// Handle whatever is ready, without waiting. Returns the frames moved
    /// between ports (work that never reaches the host).
    fn service(&mut self) -> io::Result<usize> {
        let mut events = sys::empty_events::<32>();
        let n = match self.poll.wait(&mut events, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        let mut moved = 0;
        for ev in &events[..n] {
            let t = ev.u64;
            match t {
                TOKEN_LISTEN => self.accept(),
                TOKEN_HOSTQ => {}
                t if t & 3 == TAG_CTL => self.ctl_event((t >> 2) as PortId),
                t if t & 3 == TAG_DATA => moved += self.data_event((t >> 2) as PortId),
                _ => {}
            }
        }
        Ok(moved)
    }

    /// Take the oldest queued host frame into `buf` (truncated to it).
    fn pop_host(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.hostq.count == 0 {
            return None;
        }
        let h = self.hostq_head;
        let len = self.hostq.lens[h].min(buf.len());
        buf[..len].copy_from_slice(&self.hostq.bufs[h][..len]);
        self.hostq_head = (h + 1) % self.hostq.capacity();
        self.hostq.count -= 1;
        Some(len)
    }

    /// Keep the eventfd readable exactly while host frames are queued.
    fn refresh_pending(&mut self) {
        let pending = self.hostq.count > 0;
        if pending != self.hostq_set {
            if pending { self.hostq_fd.set() } else { self.hostq_fd.clear() }
            self.hostq_set = pending;
        }
    }

    /// Move queued host frames into `out`, as many as fit.
    fn drain_host(&mut self, out: &mut Batch) {
        while out.count < out.capacity() {
            let Some(n) = self.pop_host(&mut out.bufs[out.count]) else { break };
            out.lens[out.count] = n;
            out.count += 1;
        }
        self.refresh_pending();
    }

    pub fn port_count(&self) -> usize {
        self.ports().count()
    }
}

impl Transport for NetNode {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        if self.hostq.count == 0 {
            self.service()?;
        }
        let got = self.pop_host(buf);
        self.refresh_pending();
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
    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<bool> {
        batch.clear();
        self.drain_host(batch);
        if batch.count < batch.capacity() {
            // Port-to-port traffic counts as consumed work (keeps the loop hot).
            batch.skipped += self.service()?;
            self.drain_host(batch);
        }
        Ok(true)
    }
    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("ports", self.port_count() as u64),
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
    fn drop(&mut self) {
        for id in 1..self.slots.len() as PortId {
            self.close_port(id);
        }
        let _ = std::fs::remove_file(&self.ctl_path);
        if self.created_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}
