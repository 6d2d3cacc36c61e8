//! vde://path[port] — a client of a legacy vde_switch (or of our switch://).
//! Connects to `path/ctl`, announces a datagram socket of ours, and talks
//! to the switch's per-port socket; the control stream stays open and its
//! EOF means the switch went away.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{bound_sends, ctx, err, send_bounded, send_connected, Batch, Link, Recv, SendOutcome, Transport};
use crate::sys;
use crate::wire::vde_ctl::{self, Request};

pub struct VdeClient {
    ctl: UnixStream,
    data: UnixDatagram,
    pub switch_path: PathBuf,
    pub port_path: PathBuf,
}

/// Typed options of vde:// (from the URL and vde_open_args).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub port: Option<u32>,
    pub portgroup: Option<String>,
    pub mode: Option<u32>,
    pub gid: Option<u32>,
    pub descr: String,
}

/// Where the default switch is: /var/run/vde.ctl if present, else /tmp/vde.ctl.
fn default_switch() -> PathBuf {
    for p in ["/var/run/vde.ctl", "/run/vde.ctl"] {
        if Path::new(p).join("ctl").exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("/tmp/vde.ctl")
}

fn connect_ctl(dir: &Path, portgroup: Option<&str>) -> io::Result<UnixStream> {
    if let Some(g) = portgroup {
        if let Ok(s) = UnixStream::connect(dir.join(g)) {
            return Ok(s);
        }
    }
    let ctl = dir.join("ctl");
    UnixStream::connect(&ctl).map_err(|e| {
        let what = if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::ConnectionRefused {
            format!("vde: no switch at {} (is vde_switch running?)", dir.display())
        } else {
            format!("vde: {}", ctl.display())
        };
        ctx(e, what)
    })
}

/// Our data socket, in a fresh directory of our own (mode 0711: a switch
/// run by another user can reach the socket by name, nobody else can
/// replace it before the switch connects). vdeplug4 binds it in the switch
/// directory, where other members of the switch group could swap it.
struct DataSocket {
    sock: UnixDatagram,
    dir: PathBuf,
    dir_fd: std::os::fd::OwnedFd,
    path: PathBuf,
}

const SOCK_NAME: &str = "sock";

fn bind_data() -> io::Result<DataSocket> {
    let mut last = None;
    for base in ["/tmp", "/var/tmp", "/run"] {
        match sys::make_private_dir(Path::new(base), "vdeplug.") {
            Ok((dir, dir_fd)) => {
                let made = sys::fchmod(dir_fd.as_raw_fd(), 0o711).and_then(|_| UnixDatagram::bind(dir.join(SOCK_NAME)));
                match made {
                    Ok(sock) => return Ok(DataSocket { sock, path: dir.join(SOCK_NAME), dir, dir_fd }),
                    Err(e) => {
                        let _ = std::fs::remove_dir(&dir);
                        last = Some(e);
                    }
                }
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ctx(last.unwrap_or_else(|| err(io::ErrorKind::NotFound, "no directory")), "vde: data socket"))
}

impl DataSocket {
    /// Remove the file and its directory (the connected socket lives on).
    fn unlink(&self) {
        let _ = sys::unlink_at(self.dir_fd.as_raw_fd(), Path::new(SOCK_NAME));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

pub fn open(path: &Path, opts: &Options) -> io::Result<VdeClient> {
    let dir = if path.as_os_str().is_empty() { default_switch() } else { path.to_path_buf() };
    let dir = std::fs::canonicalize(&dir).map_err(|e| ctx(e, format!("vde: no switch at {}", dir.display())))?;
    let mut ctl = connect_ctl(&dir, opts.portgroup.as_deref())?;
    socket2::SockRef::from(&ctl).set_cloexec(true)?;
    let ds = bind_data()?;
    let (data, my_path) = (&ds.sock, &ds.path); // std sockets are close-on-exec
    let cleanup = |e: io::Error| {
        ds.unlink();
        e
    };
    let dfd = ds.dir_fd.as_raw_fd();
    let name = Path::new(SOCK_NAME);
    let mut mode = opts.mode.unwrap_or(0o700);
    if let Some(g) = opts.gid {
        sys::chown_group_at_nofollow(dfd, name, g).map_err(|e| cleanup(ctx(e, "vde: chown data socket")))?;
    } else if mode & 0o077 == 0 {
        // A switch run by another user must be able to reach our socket: as
        // vdeplug4, share it with the switch's group (or with everybody).
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(dir.join("ctl")) {
            if m.uid() != 0 && m.uid() != sys::geteuid() {
                mode |= if sys::chown_group_at_nofollow(dfd, name, m.gid()).is_ok() { 0o070 } else { 0o077 };
            }
        }
    }
    sys::chmod_at_nofollow(dfd, name, mode).map_err(|e| cleanup(ctx(e, "vde: chmod data socket")))?;

    use std::os::unix::ffi::OsStrExt;
    let req = Request { kind: Request::kind_for_port(opts.port), sock_path: my_path.as_os_str().as_bytes().to_vec(), descr: opts.descr.as_bytes().to_vec() };
    let bytes = req.emit().map_err(|e| cleanup(err(io::ErrorKind::InvalidInput, format!("vde: {e}"))))?;
    ctl.write_all(&bytes).map_err(|e| cleanup(ctx(e, "vde: request")))?;
    ctl.set_read_timeout(Some(Duration::from_secs(10))).map_err(cleanup)?;
    let mut reply = [0u8; vde_ctl::SOCKADDR_UN_LEN];
    ctl.read_exact(&mut reply).map_err(|e| {
        let msg = match opts.port {
            Some(p) => format!("vde: switch {} refused the connection (port {p} unavailable?)", dir.display()),
            None => format!("vde: switch {} refused the connection", dir.display()),
        };
        cleanup(ctx(e, msg))
    })?;
    ctl.set_read_timeout(None).map_err(cleanup)?;
    let port_path = PathBuf::from(std::ffi::OsStr::from_bytes(vde_ctl::decode_sockaddr_un(&reply).map_err(|e| cleanup(err(io::ErrorKind::InvalidData, format!("vde: bad reply: {e}"))))?));
    data.connect(&port_path).map_err(|e| cleanup(ctx(e, format!("vde: connect {}", port_path.display()))))?;
    bound_sends(&ds.sock).map_err(cleanup)?;
    // Connected: our file name is no longer needed (vdeplug4 does the same).
    ds.unlink();
    Ok(VdeClient { ctl, data: ds.sock, switch_path: dir, port_path })
}

impl Transport for VdeClient {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        match sys::recv(self.data.as_raw_fd(), buf, libc::MSG_DONTWAIT) {
            // Nothing to read: has the switch hung up (control stream EOF)?
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && sys::poll_in(self.ctl.as_raw_fd(), 0)? => Ok(Recv::Closed),
            r => Ok(Recv::Frame(r?)),
        }
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        send_bounded(self.data.as_raw_fd(), frame)
    }
    fn data_fd(&self) -> RawFd {
        self.data.as_raw_fd()
    }
    fn ctl_fd(&self) -> Option<RawFd> {
        Some(self.ctl.as_raw_fd())
    }
    fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<Link> {
        batch.recv_datagrams(self.data.as_raw_fd())?;
        Ok(Link::Open)
    }
    fn send_batch(&mut self, batch: &Batch, idx: &[usize]) -> SendOutcome {
        send_connected(self.data.as_raw_fd(), batch, idx)
    }
}

// ---------------------------------------------------------------- VNL

const OPTIONS: &[Opt] = &[
    opt("port", Kind::Text, OptDefault::Unset, "port number, or a port group name"),
    opt("portgroup", Kind::Text, OptDefault::Unset, "port group"),
    opt("group", Kind::Text, OptDefault::Unset, "group owning our data socket"),
    opt("mode", Kind::Octal, OptDefault::Unset, "mode of our data socket (default 0700)"),
];

/// Options in the URL win over the caller's (vde_open_args, -m/-g/--port).
fn open_vnl(t: &Target, args: &OpenArgs) -> OpenResult {
    let (mut port, mut portgroup) = (t.text("port"), t.text("portgroup"));
    if port.as_deref().is_some_and(|p| !p.bytes().all(|c| c.is_ascii_digit())) {
        (port, portgroup) = (None, port); // vde:///sw[mygroup]
    }
    let port = match port {
        Some(p) => Some(p.parse::<u32>().ok().filter(|&n| n <= 65535).ok_or_else(|| t.error("bad port: must be between 0 and 65535", &p))?),
        None => args.port.filter(|&p| p > 0),
    };
    let group = t.text("group").or_else(|| args.group.clone());
    let gid = group.as_deref().map(group_id).transpose().map_err(|e| t.error(e, group.as_deref().unwrap_or("")))?;
    let mode = t.int("mode").map(|m| m as u32).or(args.mode);
    let path = if t.address.is_empty() { PathBuf::new() } else { t.abs_path() };
    let opts = Options { port, portgroup, mode, gid, descr: args.descr.clone() };
    Ok(Box::new(open(&path, &opts)?))
}

pub const PLUGIN: Builtin = Builtin { scheme: "vde", syntax: Syntax::Path, options: OPTIONS, bare: Some("port"), nests: false, summary: "client of a vde_switch: vde:///tmp/sw[3]", open: open_vnl };

use crate::plugins::{group_id, opt, Builtin, Kind, OpenArgs, OpenResult, Opt, OptDefault, Target};
use crate::vnl::Syntax;
