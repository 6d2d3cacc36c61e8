//! libvdeplug.so.2: vdeplug4's C library, built from the Rust core with no
//! Python inside. Exactly the 11 symbols of Debian's 4.0.1 (see
//! rust/include/libvdeplug.h): qemu, VirtualBox, vde2's tools and C plugins
//! that nest (vlan, agno) run on it.
//!
//! Built-in schemes are our Rust transports behind a connection that starts
//! like every `struct vdeconn` (handle, module) with `module` pointing at
//! our own ops; other schemes load C plugins (`libvdeplug_<scheme>.so`)
//! exactly as vdeplug4 does, and their connection is handed out as is. So
//! `vde_recv` & co. dispatch through `conn->module` for both.
//!
//! What programs rely on, for built-ins:
//! - `vde_recv` returns only real frames: a batch is read with recvmmsg
//!   into a ring, malformed frames are counted and skipped, and the data fd
//!   (transport::ready: an epoll of the transport's fd and an eventfd) stays
//!   readable exactly while frames are queued.
//! - `vde_send` never returns 0 for a frame it dropped (qemu would stop
//!   transmitting): a dropped frame is reported sent, as C plugins do.
//! - recv and send may run at once on one connection (VirtualBox): receive
//!   state and the transport have separate locks, and no lock is held while
//!   waiting for a frame.
//! - No panic crosses into C: every entry point catches it (-1/NULL, EIO).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::io;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, Once};

use _core::cplugin::{self, VdeConn, VdeOpenArgs, VdeplugModule};
use _core::plugins::{self, OpenArgs, OpenError};
use _core::sys;
use _core::transport::ready::ReadyFd;
use _core::transport::{errno_of, Batch, Endpoint, Link};
use _core::wire::stream::{encode_len, Decoder, Next, MAX_STREAM_FRAME};

/// vdeplug4 exports it (value 4) as an anchor for dladdr; so do we.
#[no_mangle]
#[used]
pub static mut __vde_version_tag: u64 = 4;

fn set_errno(e: i32) {
    // SAFETY: errno is thread-local and always writable.
    unsafe { *libc::__errno_location() = e };
}

fn fail<T>(e: i32, v: T) -> T {
    set_errno(e);
    v
}

/// Run an entry point; a panic becomes `on_panic` with errno EIO.
fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => fail(libc::EIO, on_panic),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Plugins are looked for beside this library (dladdr), as vdeplug4.
fn init_libdir() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: dladdr fills info for an address inside this library.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: the address of our own static, valid for dladdr.
        let ok = unsafe { libc::dladdr(std::ptr::addr_of!(__vde_version_tag).cast(), &mut info) };
        if ok != 0 && !info.dli_fname.is_null() {
            // SAFETY: dli_fname is a NUL-terminated path.
            let path = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned();
            if let Some(dir) = std::path::Path::new(&path).parent() {
                cplugin::set_libdir(dir.to_path_buf());
            }
        }
    });
}

// ---------------------------------------------------------------- our connections

/// Frames read ahead (one recvmmsg) and not yet handed out.
struct Ring {
    batch: Batch,
    /// Indices of the valid frames in `batch`; `next` is the next to hand out.
    idx: Vec<usize>,
    next: usize,
    /// The data fd: the transport's fd, or frames queued here.
    ready: ReadyFd,
}

impl Ring {
    /// Keep the data fd readable exactly while frames are queued.
    fn refresh(&mut self) {
        let pending = self.next < self.idx.len();
        self.ready.queued(pending);
    }
}

#[repr(C)]
struct Conn {
    /// Must come first: what `vde_recv` & co. dispatch on.
    head: VdeConn,
    ring: Mutex<Ring>,
    ep: Mutex<Endpoint>,
    /// `ring.ready`'s fd, readable without the lock.
    data_fd: RawFd,
    transport_fd: RawFd,
    ctl_fd: c_int,
}

static OURS: VdeplugModule = VdeplugModule { flags: 0, open: None, recv: Some(ours_recv), send: Some(ours_send), datafd: Some(ours_datafd), ctlfd: Some(ours_ctlfd), close: Some(ours_close) };

impl Conn {
    fn new(ep: Endpoint) -> io::Result<Box<Conn>> {
        let transport_fd = ep.transport.data_fd();
        let ctl_fd = ep.transport.ctl_fd().unwrap_or(-1);
        // Readable while the transport is: over the fds its data fd sums up,
        // so a caller's poll crosses one epoll, not two.
        let mut sources = Vec::new();
        ep.transport.poll_fds(&mut sources);
        let ready = ReadyFd::new(&sources)?;
        let data_fd = ready.raw();
        let ring = Ring { batch: Batch::new(_core::fwd::BATCH), idx: Vec::with_capacity(_core::fwd::BATCH), next: 0, ready };
        Ok(Box::new(Conn { head: VdeConn { handle: std::ptr::null_mut(), module: &OURS }, ring: Mutex::new(ring), ep: Mutex::new(ep), data_fd, transport_fd, ctl_fd }))
    }

    /// The next valid frame into `buf`: its length; 0 once the peer is
    /// gone; -1 with errno (EAGAIN when only non-frames were ready).
    fn recv(&self, buf: &mut [u8]) -> isize {
        loop {
            let mut ring = lock(&self.ring);
            if ring.next < ring.idx.len() {
                let f = ring.batch.frame(ring.idx[ring.next]);
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                ring.next += 1;
                ring.refresh();
                return n as isize;
            }
            let r = &mut *ring;
            // Readable now: the caller polled us. If what was there is gone
            // by the time we read (a ptp re-association purges the socket's
            // queue), say EAGAIN rather than wait for traffic that may
            // never come.
            let was_ready = sys::poll_in(self.transport_fd, 0).unwrap_or(false);
            let got = {
                let mut ep = lock(&self.ep);
                ep.maybe_tick();
                ep.recv_valid(&mut r.batch, &mut r.idx)
            };
            r.next = 0;
            let consumed = r.batch.count + r.batch.skipped;
            match got {
                Ok(_) if !r.idx.is_empty() => continue,
                Ok(Link::Closed) => {
                    ring.refresh();
                    return 0;
                }
                Ok(Link::Open) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => r.idx.clear(),
                Err(e) => {
                    r.idx.clear();
                    ring.refresh();
                    return fail(errno_of(&e).unwrap_or(libc::EIO), -1);
                }
            }
            ring.refresh();
            drop(ring);
            if consumed > 0 || was_ready {
                return fail(libc::EAGAIN, -1); // only non-frames: nothing for the caller now
            }
            // Nothing at all, and nothing was there: wait (as a plain recv
            // would), holding no lock.
            match sys::poll_in(self.transport_fd, -1) {
                Ok(_) => {}
                Err(e) => return fail(e.raw_os_error().unwrap_or(libc::EINTR), -1),
            }
        }
    }

    fn send(&self, frame: &[u8]) -> isize {
        let mut ep = lock(&self.ep);
        match ep.send_frame(frame) {
            // Dropped frames (malformed, no room now) are counted, and
            // reported sent: 0 would stop qemu's transmit queue for good.
            Ok(_) => frame.len() as isize,
            Err(e) => fail(errno_of(&e).unwrap_or(libc::EIO), -1),
        }
    }
}

unsafe extern "C" fn ours_recv(conn: *mut VdeConn, buf: *mut c_void, len: usize, _flags: c_int) -> isize {
    if buf.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: conn came from vde_open_real with module OURS: it is a Conn;
    // buf is the caller's, valid for len bytes.
    let (c, b) = unsafe { (&*(conn as *const Conn), std::slice::from_raw_parts_mut(buf.cast::<u8>(), len)) };
    c.recv(b)
}

unsafe extern "C" fn ours_send(conn: *mut VdeConn, buf: *const c_void, len: usize, _flags: c_int) -> isize {
    if buf.is_null() && len > 0 {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: as ours_recv; buf is valid for len bytes.
    let (c, b) = unsafe { (&*(conn as *const Conn), if len == 0 { &[][..] } else { std::slice::from_raw_parts(buf.cast::<u8>(), len) }) };
    c.send(b)
}

unsafe extern "C" fn ours_datafd(conn: *mut VdeConn) -> c_int {
    // SAFETY: conn is one of ours (module OURS).
    unsafe { &*(conn as *const Conn) }.data_fd
}

unsafe extern "C" fn ours_ctlfd(conn: *mut VdeConn) -> c_int {
    // SAFETY: conn is one of ours (module OURS).
    unsafe { &*(conn as *const Conn) }.ctl_fd
}

unsafe extern "C" fn ours_close(conn: *mut VdeConn) -> c_int {
    // SAFETY: conn was made by Box::into_raw in vde_open_real and is
    // closed once (vde_close's contract).
    drop(unsafe { Box::from_raw(conn as *mut Conn) });
    0
}

// ---------------------------------------------------------------- the API

fn cstr(p: *const c_char) -> Vec<u8> {
    if p.is_null() {
        Vec::new()
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_bytes().to_vec()
    }
}

fn report(vnl: &[u8], e: &OpenError) {
    // vdeplug4 prints parse errors too; a bare errno ("Invalid argument")
    // is all qemu would show otherwise.
    if matches!(e, OpenError::Vnl(_)) || matches!(e, OpenError::Io(io) if io.kind() == io::ErrorKind::Unsupported) {
        eprintln!("libvdeplug: {}: {e}", String::from_utf8_lossy(vnl));
    }
}

fn open_real(vnl: &[u8], descr: &[u8], args: Option<&VdeOpenArgs>) -> Result<*mut VdeConn, OpenError> {
    init_libdir();
    let _level = plugins::Opening::enter(vnl)?;
    let group = args.filter(|a| !a.group.is_null()).map(|a| String::from_utf8_lossy(&cstr(a.group)).into_owned());
    let oa = OpenArgs { descr: plugins::full_descr(&String::from_utf8_lossy(descr)), mode: args.map(|a| a.mode), group, port: args.and_then(|a| u32::try_from(a.port).ok()).filter(|&p| p > 0) };
    match plugins::resolve(vnl)? {
        plugins::Resolved::Builtin(b, t) => {
            let transport = (b.open)(&t, &oa)?;
            let conn = Conn::new(Endpoint::new(String::from_utf8_lossy(vnl).into_owned(), transport))?;
            Ok(Box::into_raw(conn).cast())
        }
        plugins::Resolved::Other { scheme, rest } => Ok(cplugin::open_raw(&scheme, &rest, &oa)?.conn),
    }
}

/// `VDECONN *vde_open_real(char *vnl, char *descr, int interface_version, struct vde_open_args *open_args)`
///
/// # Safety
/// `vnl` and `descr` are NULL or NUL-terminated; `open_args` is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn vde_open_real(vnl: *mut c_char, descr: *mut c_char, _interface_version: c_int, open_args: *mut VdeOpenArgs) -> *mut VdeConn {
    guard(std::ptr::null_mut(), || {
        let v = cstr(vnl);
        // SAFETY: NULL or a valid struct vde_open_args (the caller's).
        let args = unsafe { open_args.as_ref() };
        match open_real(&v, &cstr(descr), args) {
            Ok(c) => c,
            Err(e) => {
                report(&v, &e);
                fail(e.errno(), std::ptr::null_mut())
            }
        }
    })
}

/// The module of a connection (NULL conn: EBADF).
unsafe fn module(conn: *mut VdeConn) -> Option<&'static VdeplugModule> {
    if conn.is_null() {
        return None;
    }
    // SAFETY: a non-NULL conn starts with struct vdeconn; module is set at open.
    unsafe { (*conn).module.as_ref() }
}

/// `ssize_t vde_recv(VDECONN *conn, void *buf, size_t len, int flags)`
///
/// # Safety
/// `conn` is NULL or open; `buf` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn vde_recv(conn: *mut VdeConn, buf: *mut c_void, len: usize, flags: c_int) -> isize {
    // SAFETY: the caller's contract; the module's recv takes the same.
    guard(-1, || match unsafe { module(conn) }.and_then(|m| m.recv) {
        Some(f) => unsafe { f(conn, buf, len, flags) },
        None => fail(libc::EBADF, -1),
    })
}

/// `ssize_t vde_send(VDECONN *conn, const void *buf, size_t len, int flags)`
///
/// # Safety
/// `conn` is NULL or open; `buf` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn vde_send(conn: *mut VdeConn, buf: *const c_void, len: usize, flags: c_int) -> isize {
    // SAFETY: as vde_recv.
    guard(-1, || match unsafe { module(conn) }.and_then(|m| m.send) {
        Some(f) => unsafe { f(conn, buf, len, flags) },
        None => fail(libc::EBADF, -1),
    })
}

/// `int vde_datafd(VDECONN *conn)`
///
/// # Safety
/// `conn` is NULL or open.
#[no_mangle]
pub unsafe extern "C" fn vde_datafd(conn: *mut VdeConn) -> c_int {
    // SAFETY: as vde_recv.
    guard(-1, || match unsafe { module(conn) }.and_then(|m| m.datafd) {
        Some(f) => unsafe { f(conn) },
        None => fail(libc::EBADF, -1),
    })
}

/// `int vde_ctlfd(VDECONN *conn)`: -1 when there is no control channel.
///
/// # Safety
/// `conn` is NULL or open.
#[no_mangle]
pub unsafe extern "C" fn vde_ctlfd(conn: *mut VdeConn) -> c_int {
    // SAFETY: as vde_recv.
    guard(-1, || match unsafe { module(conn) }.and_then(|m| m.ctlfd) {
        Some(f) => unsafe { f(conn) },
        None => fail(libc::EBADF, -1),
    })
}

/// `int vde_close(VDECONN *conn)`: the plugin's close; its library is
/// unloaded only if that returned 0 (as vdeplug4).
///
/// # Safety
/// `conn` is NULL or open, and is not used again.
#[no_mangle]
pub unsafe extern "C" fn vde_close(conn: *mut VdeConn) -> c_int {
    guard(-1, || {
        // SAFETY: as vde_recv; handle is read before close frees conn.
        let Some(m) = (unsafe { module(conn) }) else { return fail(libc::EBADF, -1) };
        let handle = unsafe { (*conn).handle };
        let rc = match m.close {
            Some(f) => unsafe { f(conn) },
            None => 0,
        };
        if rc == 0 && !handle.is_null() {
            // SAFETY: handle came from dlopen when the plugin was opened.
            unsafe { libc::dlclose(handle) };
        }
        rc
    })
}

// ---------------------------------------------------------------- vdestream

type FrecvFn = unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> isize;
type FerrFn = unsafe extern "C" fn(*mut c_void, c_int, *mut c_char, ...);

/// The stream framing (2-byte big-endian length + frame) for programs
/// that carry frames over their own byte streams (vde_plug, slirpvde).
pub struct VdeStream {
    opaque: *mut c_void,
    fdout: c_int,
    frecv: Option<FrecvFn>,
    ferr: Option<FerrFn>,
    decoder: Decoder,
}

/// `PACKET_LENGTH_ERROR`, the `type` given to ferr.
const PACKET_LENGTH_ERROR: c_int = 1;

/// `VDESTREAM *vdestream_open(void *opaque, int fdout, ssize_t (*frecv)(void *, void *, size_t), void (*ferr)(void *, int, char *, ...))`
///
/// # Safety
/// The callbacks (may be NULL) are valid functions for the stream's life.
#[no_mangle]
pub unsafe extern "C" fn vdestream_open(opaque: *mut c_void, fdout: c_int, frecv: Option<FrecvFn>, ferr: Option<FerrFn>) -> *mut VdeStream {
    guard(std::ptr::null_mut(), || Box::into_raw(Box::new(VdeStream { opaque, fdout, frecv, ferr, decoder: Decoder::new() })))
}

/// `ssize_t vdestream_send(VDESTREAM *vdestream, const void *buf, size_t len)`:
/// one writev of length and frame; 0 without writing for a frame too long.
///
/// # Safety
/// `vs` came from vdestream_open; `buf` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn vdestream_send(vs: *mut VdeStream, buf: *const c_void, len: usize) -> isize {
    guard(-1, || {
        // SAFETY: the caller's contract.
        let Some(s) = (unsafe { vs.as_ref() }) else { return fail(libc::EBADF, -1) };
        if len > MAX_STREAM_FRAME {
            return 0;
        }
        let frame = if len == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) } };
        let hdr = encode_len(len);
        match sys::writev(s.fdout, &[io::IoSlice::new(&hdr), io::IoSlice::new(frame)]) {
            Ok(n) => n as isize,
            Err(e) => fail(e.raw_os_error().unwrap_or(libc::EIO), -1),
        }
    })
}

/// `void vdestream_recv(VDESTREAM *vdestream, unsigned char *buf, size_t len)`:
/// any chunk of the byte stream; frecv is called once per whole frame.
/// Unlike vdeplug4, a length split across chunks and an oversized length
/// keep sync (ferr is still told).
///
/// # Safety
/// `vs` came from vdestream_open; `buf` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn vdestream_recv(vs: *mut VdeStream, buf: *mut u8, len: usize) {
    guard((), || {
        // SAFETY: the caller's contract.
        let Some(s) = (unsafe { vs.as_mut() }) else { return };
        let mut data = if len == 0 || buf.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(buf, len) } };
        while !data.is_empty() {
            let space = s.decoder.space();
            let n = space.len().min(data.len());
            space[..n].copy_from_slice(&data[..n]);
            s.decoder.filled(n);
            data = &data[n..];
            loop {
                match s.decoder.next_frame() {
                    Next::Frame([]) => {}
                    Next::Frame(f) => {
                        if let Some(cb) = s.frecv {
                            // SAFETY: the caller's callback; f is valid for its length.
                            unsafe { cb(s.opaque, f.as_ptr() as *mut c_void, f.len()) };
                        }
                    }
                    Next::Oversized(size) => {
                        if let Some(cb) = s.ferr {
                            let msg = std::ffi::CString::new(format!("Packet length error size {size}")).unwrap_or_default();
                            // SAFETY: a printf-style callback given "%s" and one C string.
                            unsafe { cb(s.opaque, PACKET_LENGTH_ERROR, c"%s".as_ptr() as *mut c_char, msg.as_ptr()) };
                        }
                    }
                    Next::NeedMore => break,
                }
            }
        }
    })
}

/// `void vdestream_close(VDESTREAM *vdestream)`: frees it; fdout stays open.
///
/// # Safety
/// `vs` came from vdestream_open and is not used again.
#[no_mangle]
pub unsafe extern "C" fn vdestream_close(vs: *mut VdeStream) {
    guard((), || {
        if !vs.is_null() {
            // SAFETY: made by Box::into_raw in vdestream_open.
            drop(unsafe { Box::from_raw(vs) });
        }
    })
}
