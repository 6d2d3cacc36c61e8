//! The switch's rendezvous directory (vde2's layout: `ctl`, and one
//! `NNN.fd` datagram socket per port), hardened against another local user,
//! who is assumed hostile: the directory is used only if it is ours and
//! nobody else can replace files in it; every file in it is created,
//! changed and removed relative to the directory's fd, never by following
//! a path; a client's data socket must belong to the client (SO_PEERCRED).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::{ctx, err};
use crate::sys;

/// The switch directory, held open: files in it are reached through this
/// fd, so a directory swapped for a symlink later is never followed.
pub struct NodeDir {
    pub path: PathBuf,
    fd: OwnedFd,
    /// Made by us (or taken over from a switch of ours that died): removed at close.
    created: bool,
    /// Socket files get this mode, and this group if given.
    mode: u32,
    gid: Option<u32>,
    /// The process that opened it: a forked child dropping its copy must
    /// not remove our files.
    owner: u32,
}

const CTL: &str = "ctl";

impl NodeDir {
    /// Make the directory at `path` (or reuse one of ours) and bind its
    /// `ctl` socket; a stale `ctl` of a switch that died is taken over
    /// with its dead port sockets, a live one refused. Sockets get `mode`
    /// (execute bits dropped) and group `gid`; the directory `dirmode`,
    /// else a mode derived from `mode` (`dir_mode`).
    pub fn open(path: &Path, mode: u32, dirmode: Option<u32>, gid: Option<u32>) -> io::Result<(NodeDir, UnixListener)> {
        let mode = mode & !0o111;
        let (fd, mut created) = prepare_dir(path, dir_mode(mode, dirmode), gid)?;
        let dfd = fd.as_raw_fd();
        let ctl = Path::new(CTL);
        match sys::lstat_at(Some(dfd), ctl) {
            Ok(st) => {
                if sys::is_socket(&st) && is_live_socket(&at(dfd, ctl)) {
                    return Err(err(io::ErrorKind::AddrInUse, format!("switch: a switch is already running at {}", path.display())));
                }
                sys::unlink_at(dfd, ctl).map_err(|e| ctx(e, format!("switch: stale {}/ctl", path.display())))?;
                remove_stale_ports(dfd);
                created = true; // taken over from a switch of ours that died: ours to remove
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx(e, format!("switch: {}/ctl", path.display()))),
        }
        let listener = UnixListener::bind(at(dfd, ctl)).map_err(|e| ctx(e, format!("switch: bind {}/ctl", path.display())))?;
        // From here on `ctl` is ours: dropping `dir` removes it.
        let dir = NodeDir { path: path.to_path_buf(), fd, created, mode, gid, owner: std::process::id() };
        listener.set_nonblocking(true)?;
        socket2::SockRef::from(&listener).set_cloexec(true)?;
        dir.publish(ctl)?;
        Ok((dir, listener))
    }

    /// `name` as clients see it (the directory's path, not our handle).
    pub fn public(&self, name: &Path) -> PathBuf {
        self.path.join(name)
    }

    /// Bind a datagram socket as `name` (replacing a file of that name).
    pub fn bind(&self, name: &Path) -> io::Result<UnixDatagram> {
        let _ = sys::unlink_at(self.fd.as_raw_fd(), name);
        UnixDatagram::bind(at(self.fd.as_raw_fd(), name))
    }

    /// Give `name` the sockets' group and mode, never through a symlink.
    pub fn publish(&self, name: &Path) -> io::Result<()> {
        let dfd = self.fd.as_raw_fd();
        if let Some(g) = self.gid {
            sys::chown_group_at_nofollow(dfd, name, g)?;
        }
        sys::chmod_at_nofollow(dfd, name, self.mode)
    }

    /// Remove `name`, unless we are a forked child that did not inherit it.
    pub fn remove(&self, name: &Path) {
        if super::owner::owns(self.owner) {
            let _ = sys::unlink_at(self.fd.as_raw_fd(), name);
        }
    }

    /// Whether this process may remove what the directory holds.
    pub fn ours(&self) -> bool {
        super::owner::owns(self.owner)
    }
}

impl Drop for NodeDir {
    /// `ctl`, then the directory if we made it, it is still the one we
    /// hold, and it is empty (the ports are gone by then).
    fn drop(&mut self) {
        if !self.ours() {
            return; // a forked child's copy: the files are the parent's
        }
        let _ = sys::unlink_at(self.fd.as_raw_fd(), Path::new(CTL));
        if self.created {
            let same = std::fs::symlink_metadata(&self.path).ok().zip(sys::fstat(self.fd.as_raw_fd()).ok()).is_some_and(|(m, st)| {
                use std::os::unix::fs::MetadataExt;
                m.is_dir() && m.ino() == st.st_ino && m.dev() == st.st_dev
            });
            if same {
                let _ = std::fs::remove_dir(&self.path);
            }
        }
    }
}

/// A path to `name` inside the directory held open as `dfd` (for
/// bind/connect, which have no fd-relative calls).
fn at(dfd: RawFd, name: &Path) -> PathBuf {
    sys::proc_path(dfd).join(name)
}

/// After a crash: port sockets (`NNN.fd`) nobody listens on any more. Only
/// names of our own pattern, and only dead sockets, are removed.
fn remove_stale_ports(dfd: RawFd) {
    let Ok(entries) = std::fs::read_dir(sys::proc_path(dfd)) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(s) = name.to_str() else { continue };
        let ours = s.split_once('.').is_some_and(|(a, b)| a.len() >= 3 && a.bytes().all(|c| c.is_ascii_digit()) && !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()));
        if ours && e.file_type().is_ok_and(|t| t.is_socket()) {
            let probe = UnixDatagram::unbound().and_then(|u| u.connect(at(dfd, Path::new(&name))));
            if probe.is_err_and(|err| err.raw_os_error() == Some(libc::ECONNREFUSED)) {
                let _ = sys::unlink_at(dfd, Path::new(&name));
            }
        }
    }
}

fn is_live_socket(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

fn refuse(path: &Path, why: &str) -> io::Error {
    err(io::ErrorKind::AlreadyExists, format!("switch: {} {why}: refusing to use it (File exists)", path.display()))
}

/// Make the switch directory, or reuse one only if it is ours: a real
/// directory (not a symlink), owned by us, and where nobody else can
/// replace our files (not writable by others, or sticky).
fn prepare_dir(path: &Path, dirmode: u32, gid: Option<u32>) -> io::Result<(OwnedFd, bool)> {
    // mkdir never follows a symlink planted at `path` (EEXIST).
    let created = match std::fs::create_dir(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(ctx(e, format!("switch: mkdir {}", path.display()))),
    };
    let fd = sys::open_dir_nofollow(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) if sys::lstat_at(None, path).is_ok_and(|st| sys::is_symlink(&st)) => refuse(path, "is a symbolic link"),
        Some(libc::ELOOP | libc::ENOTDIR) => refuse(path, "exists and is not a directory"),
        _ => ctx(e, format!("switch: {}", path.display())),
    })?;
    if created {
        if let Some(g) = gid {
            sys::fchown_group(fd.as_raw_fd(), g).map_err(|e| ctx(e, format!("switch: chown {}", path.display())))?;
        }
        sys::fchmod(fd.as_raw_fd(), dirmode).map_err(|e| ctx(e, format!("switch: chmod {}", path.display())))?;
    }
    let st = sys::fstat(fd.as_raw_fd())?;
    if st.st_uid != sys::geteuid() {
        return Err(refuse(path, &format!("exists and belongs to uid {}", st.st_uid)));
    }
    if st.st_mode & 0o022 != 0 && st.st_mode & libc::S_ISVTX == 0 {
        return Err(refuse(path, "is writable by others without the sticky bit"));
    }
    Ok((fd, created))
}

/// The default directory mode from the socket mode (vdeplug4's rule), plus
/// the sticky bit whenever others may write: they may add sockets, never
/// replace ours.
fn dir_mode(mode: u32, dirmode: Option<u32>) -> u32 {
    let m = dirmode.unwrap_or(0o2000 | mode | (mode & 0o444) >> 2 | (mode & 0o222) >> 1);
    if m & 0o022 != 0 {
        m | libc::S_ISVTX
    } else {
        m
    }
}

/// Connect a port's data socket to the client's socket, only if that
/// socket belongs to the client (or the client is root): the switch never
/// delivers frames, with its own privileges, into someone else's socket.
pub fn connect_client(data: &UnixDatagram, ctl: &UnixStream, sock_path: &[u8]) -> io::Result<()> {
    let uid = sys::peer_uid(ctl.as_raw_fd())?;
    let handle = sys::open_path_nofollow(None, Path::new(OsStr::from_bytes(sock_path)))?;
    let st = sys::fstat(handle.as_raw_fd())?;
    if !sys::is_socket(&st) {
        return Err(io::Error::from_raw_os_error(libc::ENOTSOCK));
    }
    if uid != 0 && st.st_uid != uid {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    // Through the handle: the socket checked is the socket connected.
    data.connect(sys::proc_path(handle.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let base = std::env::temp_dir().join(format!("vdeplug-nodedir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        base
    }

    fn refusal(path: &Path) -> String {
        match NodeDir::open(path, 0o600, None, None) {
            Ok(_) => panic!("{} was used", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_directory_that_is_not_ours_is_refused() {
        let base = scratch("refuse");
        std::os::unix::fs::symlink(&base, base.join("link")).unwrap();
        assert!(refusal(&base.join("link")).contains("is a symbolic link"));
        std::fs::write(base.join("file"), b"").unwrap();
        assert!(refusal(&base.join("file")).contains("is not a directory"));
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(refusal(&open).contains("writable by others without the sticky bit"));
        let theirs = base.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(sys::geteuid() + 4242), None).unwrap();
        assert!(refusal(&theirs).contains(&format!("belongs to uid {}", sys::geteuid() + 4242)));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_directory_mode_is_sticky_when_others_may_write() {
        assert_eq!(dir_mode(0o600, None), 0o2700);
        assert_eq!(dir_mode(0o640, None), 0o2750);
        assert_eq!(dir_mode(0o660, None), 0o3770, "the group may write: sticky too");
        assert_eq!(dir_mode(0o666, None), 0o3777, "others may add sockets, never replace ours");
        assert_eq!(dir_mode(0o600, Some(0o757)), 0o1757);
    }

    /// A switch that died leaves `ctl` and its port sockets: the next one
    /// takes over, removes the dead port sockets (only names of our
    /// pattern) and, at close, the directory; a live switch is refused.
    #[test]
    fn a_dead_switch_is_taken_over_and_a_live_one_refused() {
        let base = scratch("takeover");
        let path = base.join("sw");
        let (dir, listener) = NodeDir::open(&path, 0o666, None, None).unwrap();
        assert_eq!(std::fs::metadata(path.join("ctl")).unwrap().permissions().mode() & 0o777, 0o666);
        assert!(refusal(&path).contains("already running"));
        assert!(path.join("ctl").exists(), "a refused open leaves the live switch's ctl");
        drop(dir.bind(Path::new("002.9")).unwrap());
        drop(dir.bind(Path::new("x.1")).unwrap());
        std::mem::forget(dir); // died: nothing removed
        drop(listener);
        let (dir, _listener) = NodeDir::open(&path, 0o600, None, None).unwrap();
        assert!(!path.join("002.9").exists(), "a dead port socket of ours is removed");
        assert!(path.join("x.1").exists(), "a name not of our pattern is left alone");
        std::fs::remove_file(path.join("x.1")).unwrap();
        drop(dir);
        assert!(!path.exists(), "taken over: ours to remove");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
