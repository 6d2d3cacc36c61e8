//! ptp://path — a point-to-point link over unix datagram sockets, as Debian's
//! vdeplug4 4.0.1 does it: the first end binds PATH and talks to PATH+, the
//! second binds PATH+ and talks to PATH; either end may start first, or both
//! at once (whoever loses the bind of PATH becomes the second end). A stale
//! socket file (nobody listening) is replaced; a young one is given a moment
//! first, as a peer inside bind(2) has its file before it answers. Files are
//! removed at close. The peer's socket must be ours (or root's) unless our
//! mode lets other users in: another user who binds PATH+ first does not get
//! our frames.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{bound_sends, ctx, err, send_bounded, send_connected, Batch, Link, Recv, SendOutcome, Transport};
use crate::sys;

pub struct Ptp {
    sock: UnixDatagram,
    mine: PathBuf,
    peer: PathBuf,
    /// The peer's socket file we are connected to, held open (O_PATH);
    /// None: not connected. When the peer is replaced, a connected unix
    /// datagram socket would refuse the newcomer (EPERM) until we send, so
    /// `tick` notices a new file at the peer's path and re-associates. Held,
    /// the inode cannot be reused for a new file; its mode and owner may
    /// change (vdeplug4 chmods after bind) without counting as a new peer.
    peer_file: Option<OwnedFd>,
    /// Our mode gives others write access: a peer of another user is fine.
    shared: bool,
    /// The process that opened the link: only it removes our file.
    owner: u32,
}

/// Connect `sock` to the socket at `peer` if its owner may be our peer:
/// the file connected to, held open. Ok(None): nobody there (yet).
fn connect_peer(sock: &UnixDatagram, peer: &Path, shared: bool) -> io::Result<Option<OwnedFd>> {
    let handle = match sys::open_path_nofollow(None, peer) {
        Ok(h) => h,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ctx(e, format!("ptp: {}", peer.display()))),
    };
    let st = sys::fstat(handle.as_raw_fd())?;
    if !sys::is_socket(&st) {
        return Err(err(io::ErrorKind::InvalidInput, format!("ptp: {} is not a socket", peer.display())));
    }
    if !shared && st.st_uid != sys::geteuid() && st.st_uid != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            super::Context { errno: Some(libc::EACCES), msg: format!("ptp: {} belongs to uid {}, not to us: refusing to link (mode=0666 links with other users)", peer.display(), st.st_uid) },
        ));
    }
    // Through the handle: the socket checked is the socket connected.
    match sock.connect(sys::proc_path(handle.as_raw_fd())) {
        Ok(()) => Ok(Some(handle)),
        Err(e) if is_errno(&e, libc::ECONNREFUSED) || is_errno(&e, libc::EPERM) => Ok(None),
        Err(e) => Err(ctx(e, format!("ptp: {}", peer.display()))),
    }
}

/// Whether `path` still names the file open on `handle` (same device and
/// inode; the handle keeps the inode number from being reused).
fn still_at(handle: &OwnedFd, path: &Path) -> bool {
    match (sys::fstat(handle.as_raw_fd()), sys::lstat_at(None, path)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

fn plus(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("+");
    PathBuf::from(s)
}

fn is_errno(e: &io::Error, n: i32) -> bool {
    e.raw_os_error() == Some(n)
}

/// A socket file that refuses connections and is younger than this may be
/// a peer between the two halves of its bind(2) (the file is created, then
/// the socket is made reachable): it is probed again for up to `GRACE`
/// before it counts as stale. An older one is stale at once.
const YOUNG: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_millis(300);
/// Role decisions lost to an end that started at the same moment, before
/// giving up (each loss means the other end made progress).
const ATTEMPTS: usize = 8;

/// What a probe found at a path.
enum Probe {
    Missing,
    /// A socket that answers (Ok) or is associated with another peer (EPERM).
    Live {
        answered: bool,
    },
    /// Nobody listens: the file, held open so only it is removed.
    Stale(OwnedFd),
}

fn probe(path: &Path) -> io::Result<Probe> {
    let handle = match sys::open_path_nofollow(None, path) {
        Ok(h) => h,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Missing),
        Err(e) => return Err(e),
    };
    let st = sys::fstat(handle.as_raw_fd())?;
    if !sys::is_socket(&st) {
        return Err(io::Error::new(io::ErrorKind::AddrInUse, super::Context { errno: Some(libc::EADDRINUSE), msg: "exists and is not a socket".into() }));
    }
    let born = SystemTime::UNIX_EPOCH + Duration::new(st.st_ctime.max(0) as u64, st.st_ctime_nsec.clamp(0, 999_999_999) as u32);
    let young = SystemTime::now().duration_since(born).map_or(true, |age| age < YOUNG);
    let deadline = Instant::now() + if young { GRACE } else { Duration::ZERO };
    let sock = UnixDatagram::unbound()?;
    loop {
        match sock.connect(sys::proc_path(handle.as_raw_fd())) {
            Ok(()) => return Ok(Probe::Live { answered: true }),
            Err(e) if is_errno(&e, libc::EPERM) => return Ok(Probe::Live { answered: false }),
            Err(e) if is_errno(&e, libc::ECONNREFUSED) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) if is_errno(&e, libc::ECONNREFUSED) => return Ok(Probe::Stale(handle)),
            Err(e) => return Err(e),
        }
    }
}

/// Remove the stale file on `handle` if `path` still names it (an end that
/// replaced it meanwhile keeps its own).
fn remove_stale(path: &Path, handle: &OwnedFd) -> io::Result<()> {
    if still_at(handle, path) {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Bind `path`, replacing a stale socket file nobody listens on.
fn bind_or_replace_stale(path: &Path) -> io::Result<UnixDatagram> {
    for _ in 0..ATTEMPTS {
        match UnixDatagram::bind(path) {
            Err(e) if is_errno(&e, libc::EADDRINUSE) => match probe(path)? {
                Probe::Stale(h) => remove_stale(path, &h)?,
                Probe::Missing => {}
                Probe::Live { .. } => break,
            },
            other => return other,
        }
    }
    Err(err(io::ErrorKind::AddrInUse, format!("{} is in use: both ends of this link are taken", path.display())))
}

/// Which end we are: the first (bound at PATH), or the second, with
/// whether the first answered (EPERM: it is still associated with a
/// previous second end that died; it re-associates with us the next time
/// it sends, getting ECONNREFUSED, so we connect lazily).
enum Role {
    First(UnixDatagram),
    Second { answered: bool },
}

/// Decide our role. Two ends starting together both find PATH missing (or
/// stale): bind(2) lets one have it, the other becomes the second end.
fn role(path: &Path) -> io::Result<Role> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match probe(path)? {
            Probe::Missing => match UnixDatagram::bind(path) {
                Ok(sock) => return Ok(Role::First(sock)),
                Err(e) if is_errno(&e, libc::EADDRINUSE) => last = Some(e),
                Err(e) => return Err(e),
            },
            Probe::Stale(h) => remove_stale(path, &h)?,
            Probe::Live { answered } => return Ok(Role::Second { answered }),
        }
    }
    Err(last.unwrap_or_else(|| err(io::ErrorKind::AddrInUse, format!("{}: another end keeps replacing it", path.display()))))
}

/// Open one end of the link at `path`; `mode`/`gid` apply to our socket file.
pub fn open(path: &Path, mode: Option<u32>, gid: Option<u32>) -> io::Result<Ptp> {
    let mode = mode.unwrap_or(0o600);
    let shared = mode & 0o022 != 0;
    let (sock, mine, peer, peer_file) = match role(path).map_err(|e| ctx(e, format!("ptp: {}", path.display())))? {
        Role::First(sock) => (sock, path.to_path_buf(), plus(path), None),
        Role::Second { answered } => {
            let mine = plus(path);
            let sock = bind_or_replace_stale(&mine).map_err(|e| ctx(e, format!("ptp: bind {}", mine.display())))?;
            let peer_file = if answered {
                connect_peer(&sock, path, shared).inspect_err(|_| {
                    let _ = std::fs::remove_file(&mine);
                })?
            } else {
                None
            };
            (sock, mine, path.to_path_buf(), peer_file)
        }
    };
    socket2::SockRef::from(&sock).set_cloexec(true)?;
    bound_sends(&sock)?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(&mine, None, Some(g)).map_err(|e| ctx(e, format!("ptp: chown {}", mine.display())))?;
    }
    std::fs::set_permissions(&mine, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(|e| ctx(e, format!("ptp: chmod {}", mine.display())))?;
    Ok(Ptp { sock, mine, peer, peer_file, shared, owner: std::process::id() })
}

impl Ptp {
    /// A 0-byte datagram from the peer dissolves the association (vdeplug4).
    fn disconnect(&mut self) {
        let _ = sys::connect_unspec(self.sock.as_raw_fd());
        self.peer_file = None;
    }

    fn connected(&self) -> bool {
        self.peer_file.is_some()
    }

    /// Connect to the peer's file if it is there now (it may have
    /// (re)started). An error: a socket there we must not talk to.
    fn reconnect(&mut self) -> io::Result<bool> {
        self.peer_file = connect_peer(&self.sock, &self.peer, self.shared)?;
        Ok(self.connected())
    }
}

impl Transport for Ptp {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        let n = sys::recv(self.sock.as_raw_fd(), buf, libc::MSG_DONTWAIT)?;
        if n == 0 {
            self.disconnect();
            return Ok(Recv::Skip);
        }
        Ok(Recv::Frame(n))
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        if !self.connected() && !self.reconnect()? {
            return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
        }
        match send_bounded(self.sock.as_raw_fd(), frame) {
            // The peer went away (or restarted): try once to reach a new one.
            Err(e) if is_errno(&e, libc::ECONNREFUSED) || is_errno(&e, libc::ENOTCONN) => {
                if self.reconnect()? {
                    send_bounded(self.sock.as_raw_fd(), frame)
                } else {
                    Err(e)
                }
            }
            r => r,
        }
    }

    fn data_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn tick(&mut self) {
        if self.peer_file.as_ref().is_some_and(|f| !still_at(f, &self.peer)) {
            // Our peer's file is gone or belongs to a new peer now.
            self.disconnect();
            let _ = self.reconnect(); // a refused peer is reported by the next send
        }
    }

    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        if batch.recv_datagrams(self.sock.as_raw_fd())? {
            self.disconnect();
        }
        Ok(Link::Open)
    }

    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        if !self.connected() {
            match self.reconnect() {
                Ok(true) => {}
                Ok(false) => return SendOutcome { dropped: idx.len(), ..Default::default() },
                Err(e) => return SendOutcome::failed(idx.len(), e),
            }
        }
        let out = send_connected(self.sock.as_raw_fd(), batch, idx);
        if out.sent == 0 && out.dropped > 0 {
            // Nothing went: the peer may have restarted on its file. Reach
            // the new one now rather than losing these frames too.
            match self.reconnect() {
                Ok(true) => return send_connected(self.sock.as_raw_fd(), batch, idx),
                Ok(false) => {}
                Err(e) => return SendOutcome::failed(idx.len(), e),
            }
        }
        out
    }
}

impl Drop for Ptp {
    fn drop(&mut self) {
        if super::owner::owns(self.owner) {
            let _ = std::fs::remove_file(&self.mine);
        }
    }
}

// ---------------------------------------------------------------- VNL

fn open_vnl(t: &Target, args: &OpenArgs) -> OpenResult {
    if t.address.is_empty() {
        return Err(t.error("ptp:// needs a path", &t.vnl));
    }
    let gid = args.group.as_deref().map(group_id).transpose().map_err(|e| t.error(e, args.group.as_deref().unwrap_or("")))?;
    Ok(Box::new(open(&t.abs_path(), args.mode, gid)?))
}

pub const PLUGIN: Builtin = Builtin { scheme: "ptp", syntax: Syntax::Raw, options: &[], bare: None, nests: false, summary: "point-to-point link: ptp:///tmp/link", open: open_vnl };

use crate::plugins::{group_id, Builtin, OpenArgs, OpenResult, Target};
use crate::vnl::Syntax;
