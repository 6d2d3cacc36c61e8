//! C plugins: `libvdeplug_<scheme>.so` files exporting `vdeplug_ops`
//! (vdeplug4's plugin ABI, libvdeplug_mod.h), found in absolute
//! directories only, the system's before LD_LIBRARY_PATH's (see
//! `plugin_dirs`), and driven as a `Transport`. Also the ABI structs the
//! C library exports.
//!
//! Nested C plugins (vlan, agno) open their inner VNL through the global
//! `vde_open_real`, so the process must have our libvdeplug.so.2 in its
//! global scope: the C library is (it is what the program linked); from
//! Python, `set_library` names the file, loaded RTLD_GLOBAL before the
//! first plugin.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::plugins::{OpenArgs, OpenError, OpenResult};
use crate::transport::{Recv, Transport};

/// `struct vde_open_args { int port; char *group; mode_t mode; }` (24 bytes).
#[repr(C)]
pub struct VdeOpenArgs {
    pub port: c_int,
    pub group: *mut c_char,
    pub mode: libc::mode_t,
}

pub type OpenFn = unsafe extern "C" fn(*mut c_char, *mut c_char, c_int, *mut VdeOpenArgs) -> *mut VdeConn;
pub type RecvFn = unsafe extern "C" fn(*mut VdeConn, *mut c_void, usize, c_int) -> isize;
pub type SendFn = unsafe extern "C" fn(*mut VdeConn, *const c_void, usize, c_int) -> isize;
pub type FdFn = unsafe extern "C" fn(*mut VdeConn) -> c_int;

/// `struct vdeplug_module` (56 bytes): what `vdeplug_ops` holds.
#[repr(C)]
pub struct VdeplugModule {
    pub flags: c_int,
    pub open: Option<OpenFn>,
    pub recv: Option<RecvFn>,
    pub send: Option<SendFn>,
    pub datafd: Option<FdFn>,
    pub ctlfd: Option<FdFn>,
    pub close: Option<FdFn>,
}

/// `struct vdeconn`: every connection starts with these two pointers,
/// written by the library after a plugin's open returns.
#[repr(C)]
pub struct VdeConn {
    pub handle: *mut c_void,
    pub module: *const VdeplugModule,
}

/// The directory of the libvdeplug.so.2 in use (for `<dir>/vdeplug/`).
static LIBDIR: OnceLock<PathBuf> = OnceLock::new();
/// Python: our libvdeplug.so.2, loaded RTLD_GLOBAL before the first plugin.
static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
static GLOBAL: OnceLock<Result<(), String>> = OnceLock::new();

/// Where libvdeplug.so.2 lives; the C library sets it from dladdr
/// (made absolute here, against today's current directory).
pub fn set_libdir(dir: PathBuf) {
    let _ = LIBDIR.set(std::path::absolute(&dir).unwrap_or(dir));
}

/// Python: the libvdeplug.so.2 file of the package (also sets the libdir).
pub fn set_library(path: PathBuf) {
    if let Some(d) = path.parent() {
        set_libdir(d.to_path_buf());
    }
    let _ = LIBRARY.set(path);
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a valid C string.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-NULL, NUL-terminated.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Put our libvdeplug.so.2 in the global scope (Python only; once).
fn ensure_global() -> Result<(), OpenError> {
    let Some(lib) = LIBRARY.get() else { return Ok(()) };
    let r = GLOBAL.get_or_init(|| {
        let c = CString::new(lib.as_os_str().as_encoded_bytes()).map_err(|_| "bad path".to_string())?;
        // SAFETY: c is a valid C string; the handle is kept for the life of the process.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if h.is_null() {
            return Err(format!("cannot load {}: {}", lib.display(), dlerror()));
        }
        Ok(())
    });
    r.clone().map_err(|e| OpenError::Io(io::Error::new(io::ErrorKind::NotFound, e)))
}

/// The multiarch triplet of this build (Debian's plugin directory).
fn triplet() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "x86_64-linux-gnu"
    } else if cfg!(target_arch = "aarch64") {
        "aarch64-linux-gnu"
    } else if cfg!(target_arch = "x86") {
        "i386-linux-gnu"
    } else if cfg!(target_arch = "arm") {
        "arm-linux-gnueabihf"
    } else {
        "unknown-linux-gnu"
    }
}

/// The plugin directories of the system, after our own: Debian's
/// multiarch one first, then vdeplug4's `/lib`, `/usr/lib`, and
/// `/usr/local/lib`.
fn system_dirs() -> Vec<PathBuf> {
    let t = triplet();
    [format!("/usr/lib/{t}/vdeplug"), format!("/lib/{t}/vdeplug"), "/lib/vdeplug".into(), "/usr/lib/vdeplug".into(), "/usr/local/lib/vdeplug".into()].into_iter().map(PathBuf::from).collect()
}

/// The absolute entries of a colon list (an empty or relative entry
/// would name a file relative to the current directory).
fn absolute_entries(list: &OsStr) -> impl Iterator<Item = PathBuf> + '_ {
    std::env::split_paths(list).filter(|d| d.is_absolute())
}

/// Where `libvdeplug_<scheme>.so` is looked for, in order, from the
/// values of VDEPLUGIN_PATH and LD_LIBRARY_PATH (None: unset) and the
/// directory of libvdeplug.so.2: VDEPLUGIN_PATH's directories alone when
/// it is set (as vdeplug4); else `<libdir>/vdeplug/`, `<libdir>/`, the
/// system directories, and only then each LD_LIBRARY_PATH dir +
/// `/vdeplug/` (vdeplug4 looks there before `/lib` and `/usr/lib`).
/// Beyond vdeplug4: empty and relative entries are ignored, and there is
/// no last bare name for the loader's own search (which takes an empty
/// LD_LIBRARY_PATH entry as the current directory).
pub fn plugin_dirs(libdir: Option<&Path>, vdeplugin_path: Option<&OsStr>, ld_library_path: Option<&OsStr>) -> Vec<PathBuf> {
    if let Some(list) = vdeplugin_path {
        return absolute_entries(list).collect();
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = libdir.filter(|d| d.is_absolute()) {
        dirs.push(d.join("vdeplug"));
        dirs.push(d.to_path_buf());
    }
    dirs.extend(system_dirs());
    if let Some(list) = ld_library_path {
        dirs.extend(absolute_entries(list).map(|d| d.join("vdeplug")));
    }
    dirs
}

/// `plugin_dirs` of this process. A setuid or setgid program reads
/// neither variable (secure_getenv's rule; vdeplug4 reads both).
fn search_dirs() -> Vec<PathBuf> {
    let secure = crate::sys::secure_execution();
    let var = |name: &str| if secure { None } else { std::env::var_os(name) };
    plugin_dirs(LIBDIR.get().map(PathBuf::as_path), var("VDEPLUGIN_PATH").as_deref(), var("LD_LIBRARY_PATH").as_deref())
}

/// The files `libvdeplug_<scheme>.so` is looked for as, in order.
pub fn candidates(scheme: &str) -> Vec<PathBuf> {
    let file = format!("libvdeplug_{scheme}.so");
    search_dirs().into_iter().map(|d| d.join(&file)).collect()
}

/// Every C plugin scheme found in the search directories (for --help).
pub fn available() -> Vec<(String, PathBuf)> {
    let mut seen: Vec<(String, PathBuf)> = Vec::new();
    for dir in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut found: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let scheme = name.strip_prefix("libvdeplug_")?.strip_suffix(".so")?.to_string();
                Some((scheme, e.path()))
            })
            .collect();
        found.sort();
        for f in found {
            if !seen.iter().any(|(s, _)| *s == f.0) {
                seen.push(f);
            }
        }
    }
    seen
}

/// An open C plugin connection.
pub struct CConn {
    conn: *mut VdeConn,
    ops: *const VdeplugModule,
    handle: *mut c_void,
    data_fd: RawFd,
    ctl_fd: Option<RawFd>,
}

// SAFETY: the connection is used by one thread at a time (Transport is
// driven through &mut self); plugins keep no thread-local state.
unsafe impl Send for CConn {}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// A plugin connection as vdeplug4 hands it out: the plugin's struct,
/// with `handle` and `module` written by us.
pub struct RawConn {
    pub conn: *mut VdeConn,
    pub ops: *const VdeplugModule,
    pub handle: *mut c_void,
}

/// Try one candidate file. Ok(Err(reason)): not a usable plugin (missing
/// file or symbol): try the next, as vdeplug4 on EPROTONOSUPPORT.
fn try_open(file: &Path, rest: &[u8], args: &OpenArgs) -> Result<Result<RawConn, String>, OpenError> {
    let cfile = CString::new(file.as_os_str().as_encoded_bytes()).map_err(|_| OpenError::Unknown(file.display().to_string()))?;
    // SAFETY: cfile is a valid C string. RTLD_DEEPBIND as vdeplug4: the
    // plugin binds first to its own libraries.
    let handle = unsafe { libc::dlopen(cfile.as_ptr(), libc::RTLD_NOW | libc::RTLD_DEEPBIND) };
    if handle.is_null() {
        // dlerror starts with the file name; it is said once, by the caller.
        let why = dlerror();
        let prefix = format!("{}: ", file.display());
        return Ok(Err(why.strip_prefix(&prefix).map_or(why.clone(), str::to_string)));
    }
    // SAFETY: handle is a live dlopen handle; the name is a valid C string.
    let ops = unsafe { libc::dlsym(handle, c"vdeplug_ops".as_ptr()) } as *const VdeplugModule;
    // SAFETY: a non-NULL vdeplug_ops is the plugin's module struct.
    let open = if ops.is_null() { None } else { unsafe { (*ops).open } };
    let Some(open) = open else {
        // SAFETY: handle came from dlopen.
        unsafe { libc::dlclose(handle) };
        return Ok(Err(format!("{}: no vdeplug_ops", file.display())));
    };
    // The plugin may parse its text in place: give it a writable copy.
    let mut text: Vec<u8> = rest.iter().copied().filter(|&c| c != 0).collect();
    text.push(0);
    let mut descr: Vec<u8> = args.descr.bytes().filter(|&c| c != 0).take(127).collect();
    descr.resize(128, 0);
    let group = args.group.as_deref().and_then(|g| CString::new(g).ok());
    let mut oa = VdeOpenArgs { port: args.port.unwrap_or(0) as c_int, group: group.as_ref().map_or(std::ptr::null_mut(), |g| g.as_ptr() as *mut c_char), mode: args.mode.unwrap_or(0o700) };
    // SAFETY: the plugin's open takes (text, descr, version 1, args), all valid for the call.
    let conn = unsafe { open(text.as_mut_ptr().cast(), descr.as_mut_ptr().cast(), 1, &mut oa) };
    if conn.is_null() {
        let e = last_errno();
        // SAFETY: handle came from dlopen.
        unsafe { libc::dlclose(handle) };
        return Err(OpenError::Io(io::Error::from_raw_os_error(e)));
    }
    // SAFETY: conn starts with struct vdeconn; the library fills it (plugin ABI).
    unsafe {
        (*conn).handle = handle;
        (*conn).module = ops;
    }
    Ok(Ok(RawConn { conn, ops, handle }))
}

/// Open `scheme://rest` with a C plugin, as vdeplug4 does; an unknown
/// scheme if none is found. A file that exists but cannot be loaded is
/// named, with the loader's reason.
pub fn open_raw(scheme: &str, rest: &[u8], args: &OpenArgs) -> Result<RawConn, OpenError> {
    if scheme.is_empty() || !scheme.bytes().all(|c| c.is_ascii_alphanumeric() || b"_+.-".contains(&c)) {
        return Err(OpenError::Unknown(scheme.to_string()));
    }
    let candidates = candidates(scheme);
    ensure_global()?;
    let mut failure: Option<String> = None;
    for file in &candidates {
        let exists = file.exists();
        match try_open(file, rest, args)? {
            Ok(c) => return Ok(c),
            Err(why) if exists && failure.is_none() => failure = Some(format!("cannot load {}: {why}", file.display())),
            Err(_) => {}
        }
    }
    match failure {
        Some(msg) => Err(OpenError::Io(io::Error::new(io::ErrorKind::Unsupported, crate::transport::Context { errno: Some(libc::EPROTONOSUPPORT), msg }))),
        None => Err(OpenError::Unknown(scheme.to_string())),
    }
}

/// `open_raw`, driven as a Transport.
pub fn open(scheme: &str, rest: &[u8], args: &OpenArgs) -> OpenResult {
    let RawConn { conn, ops, handle } = open_raw(scheme, rest, args)?;
    // SAFETY: ops is valid while handle is open; conn is the plugin's.
    let (data_fd, ctl_fd) = unsafe { ((*ops).datafd.map_or(-1, |f| f(conn)), (*ops).ctlfd.map_or(-1, |f| f(conn))) };
    Ok(Box::new(CConn { conn, ops, handle, data_fd, ctl_fd: (ctl_fd >= 0).then_some(ctl_fd) }))
}

impl Transport for CConn {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        // Plugins' recv may block (vde's is a plain recv): only when ready.
        if !crate::sys::poll_in(self.data_fd, 0)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // SAFETY: ops and conn are live; buf is valid for its length.
        let n = unsafe { (*self.ops).recv.map_or(-1, |f| f(self.conn, buf.as_mut_ptr().cast(), buf.len(), 0)) };
        match n {
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Err(e)
            }
            0 => Ok(Recv::Closed),
            n if (n as usize) < crate::wire::ethernet::HEADER_LEN => Ok(Recv::Skip), // 1: an event, consumed
            n => Ok(Recv::Frame((n as usize).min(buf.len()))),
        }
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: ops and conn are live; frame is valid for its length.
        let n = unsafe { (*self.ops).send.map_or(-1, |f| f(self.conn, frame.as_ptr().cast(), frame.len(), 0)) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(frame.len())
    }
    fn data_fd(&self) -> RawFd {
        self.data_fd
    }
    fn ctl_fd(&self) -> Option<RawFd> {
        self.ctl_fd
    }
}

impl Drop for CConn {
    fn drop(&mut self) {
        // SAFETY: ops/conn are live until close, which frees conn; the
        // handle is closed only if close returned 0 (as vdeplug4).
        unsafe {
            let rc = (*self.ops).close.map_or(0, |f| f(self.conn));
            if rc == 0 {
                libc::dlclose(self.handle);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(libdir: Option<&str>, vdeplugin_path: Option<&str>, ld_library_path: Option<&str>) -> Vec<String> {
        plugin_dirs(libdir.map(Path::new), vdeplugin_path.map(OsStr::new), ld_library_path.map(OsStr::new)).iter().map(|d| d.display().to_string()).collect()
    }

    #[test]
    fn system_directories_come_before_ld_library_path() {
        let d = dirs(Some("/opt/vdeplug/lib"), None, Some("/home/eve/lib:/srv/x"));
        let system = format!("/usr/lib/{}/vdeplug", triplet());
        assert_eq!(&d[..3], ["/opt/vdeplug/lib/vdeplug", "/opt/vdeplug/lib", &system]);
        assert_eq!(&d[d.len() - 2..], ["/home/eve/lib/vdeplug", "/srv/x/vdeplug"]);
        for s in ["/lib/vdeplug", "/usr/lib/vdeplug", "/usr/local/lib/vdeplug"] {
            assert!(d.iter().position(|x| x == s) < d.iter().position(|x| x == "/home/eve/lib/vdeplug"), "{s}");
        }
    }

    #[test]
    fn empty_and_relative_entries_are_ignored() {
        let d = dirs(Some("lib"), None, Some(":.:lib::/abs:"));
        assert_eq!(d.iter().filter(|x| !x.starts_with('/')).count(), 0, "{d:?}");
        assert_eq!(d.last().map(String::as_str), Some("/abs/vdeplug"));
        assert_eq!(dirs(None, Some(":plugins:./p:/abs/p:"), Some("/x")), ["/abs/p"], "VDEPLUGIN_PATH alone, absolute entries only");
        assert!(dirs(None, Some(""), None).is_empty(), "set but empty: nothing, as vdeplug4");
        assert_eq!(dirs(None, None, None), system_dirs().iter().map(|d| d.display().to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn no_bare_name_for_the_loader() {
        assert!(candidates("slirp").iter().all(|f| f.is_absolute()));
    }
}
