//! The Python face of the core (`vdeplug._core`): one `Endpoint` class, one
//! `open_*` function per built-in transport taking already-parsed, typed
//! parameters, and `forward` (the `vde_plug A B` loop). The GIL is released
//! around everything that may block.

use std::borrow::Cow;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::fwd::{Exit, Forwarder};
use crate::plugins::{self, OpenArgs, OpenError};
use crate::sys;
use crate::transport::{self, errno_of, Batch, Endpoint as CoreEndpoint, Link, Transport, RECV_BUFSIZE};

/// io::Error → OSError(errno, message), so Python sees FileNotFoundError etc.
fn os_err(e: io::Error) -> PyErr {
    match errno_of(&e) {
        Some(n) => PyOSError::new_err((n, e.to_string())),
        None => PyOSError::new_err(e.to_string()),
    }
}

// ---------------------------------------------------------------- GIL discipline
//
// Rules: a lock on an endpoint is only ever waited for with the GIL
// released; nothing blocks with the GIL held. At interpreter exit (atexit,
// `_finalize`), threads still inside a GIL-released section are made to
// return before Python finalizes: CPython 3.11 ends a daemon thread that
// retakes the GIL during finalization with pthread_exit, whose forced unwind
// through Rust frames aborts the process. After that, nothing releases the
// GIL any more and waits return at once.

static FINALIZING: AtomicBool = AtomicBool::new(false);
static DETACHED: AtomicUsize = AtomicUsize::new(0);

/// `py.detach(f)`, counted so `_finalize` can wait for it to return; once
/// finalizing, `f` runs with the GIL held (waits see `finalizing()` and
/// return at once).
pub(crate) fn detach<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    if FINALIZING.load(Ordering::SeqCst) {
        return f();
    }
    DETACHED.fetch_add(1, Ordering::SeqCst);
    let r = py.detach(f);
    DETACHED.fetch_sub(1, Ordering::SeqCst);
    r
}

fn finalizing() -> bool {
    FINALIZING.load(Ordering::SeqCst)
}

/// Called from atexit: make every thread blocked in vdeplug return to
/// Python (waits end as on a hang-up), and wait up to 2 s for them.
#[pyfunction]
fn _finalize(py: Python<'_>) {
    if FINALIZING.swap(true, Ordering::SeqCst) {
        return;
    }
    py.detach(|| {
        let deadline = Instant::now() + Duration::from_secs(2);
        while DETACHED.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

/// After daemonizing (fork, setsid, fork): this process takes over what
/// process `pid` opened, so closing removes its files and stops its
/// commands. Without it a forked child's close leaves the parent's alone.
#[pyfunction]
fn inherit_from(pid: u32) {
    crate::transport::owner::inherit_from(pid);
}

/// A timeout in seconds → a deadline. None and +inf (or anything too far
/// to represent) wait forever; NaN and negative values are a ValueError.
fn deadline_of(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(format!("timeout must be a non-negative number of seconds or None, not {t}"))),
        Some(t) => Ok(Duration::try_from_secs_f64(t).ok().and_then(|d| Instant::now().checked_add(d))),
    }
}

type Shared = Arc<Mutex<Option<CoreEndpoint>>>;

/// A connection to a virtual network, backed by a Rust transport.
#[pyclass(module = "vdeplug._core", name = "Endpoint")]
pub struct PyEndpoint {
    inner: Shared,
    /// Readable without the lock (closed, fileno, repr never wait).
    is_closed: Arc<AtomicBool>,
    /// Set while a `forward` drives this endpoint: a second one is refused.
    joined: Arc<AtomicBool>,
    data_fd: RawFd,
    ctl_fd: Option<RawFd>,
    /// The frame buffers of recv_many/send_many, kept between calls:
    /// allocating 64 × 9 KB per call would cost ~200 µs.
    scratch: Mutex<Option<Batch>>,
    #[pyo3(get)]
    name: String,
}

/// Only ever called with the GIL released (inside `detach`).
fn lock(s: &Shared) -> MutexGuard<'_, Option<CoreEndpoint>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn closed() -> PyErr {
    PyValueError::new_err("I/O operation on closed endpoint")
}

/// Why a GIL-released section gave up on an endpoint.
fn gone() -> io::Error {
    io::Error::other("closed")
}

impl PyEndpoint {
    /// Run `attempt` (non-blocking: `WouldBlock` = nothing yet) until it
    /// yields, polling the data fd with the GIL released in slices of at
    /// most 100 ms, between which signals are checked so Ctrl-C is seen
    /// (also while the fd stays readable with nothing but garbage). Ok(None) when `deadline` passes; Ok(Some(None))
    /// at interpreter exit (callers treat it as a hang-up).
    fn wait<T: Send>(&self, py: Python<'_>, deadline: Option<Instant>, mut attempt: impl FnMut(&mut CoreEndpoint) -> io::Result<T> + Send) -> PyResult<Option<Option<T>>> {
        loop {
            if finalizing() {
                return Ok(Some(None));
            }
            let got = detach(py, || -> io::Result<Option<T>> {
                let slice_end = Instant::now() + Duration::from_millis(100);
                loop {
                    let mut g = lock(&self.inner);
                    let ep = g.as_mut().ok_or_else(gone)?;
                    match attempt(ep) {
                        Ok(t) => return Ok(Some(t)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => ep.maybe_tick(),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
                        Err(e) => return Err(e),
                    }
                    drop(g);
                    let end = deadline.map_or(slice_end, |d| d.min(slice_end));
                    let slice = end.saturating_duration_since(Instant::now());
                    if slice.is_zero() || finalizing() {
                        return Ok(None);
                    }
                    match sys::poll_in(self.data_fd, slice.as_millis().max(1) as i32) {
                        Ok(true) => continue,
                        Ok(false) => return Ok(None),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
            });
            match got {
                Ok(Some(t)) => return Ok(Some(Some(t))),
                Ok(None) => {
                    py.check_signals()?;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    /// The Python error for a failure: "closed" if the endpoint was closed meanwhile.
    fn error(&self, e: io::Error) -> PyErr {
        if self.is_closed.load(Ordering::SeqCst) {
            closed()
        } else {
            os_err(e)
        }
    }

    fn check_open(&self) -> PyResult<()> {
        if self.is_closed.load(Ordering::SeqCst) {
            return Err(closed());
        }
        Ok(())
    }

    /// Take the transport out of this endpoint (it becomes closed), to nest it.
    fn take(&self, py: Python<'_>) -> PyResult<CoreEndpoint> {
        if self.joined.load(Ordering::SeqCst) {
            return Err(PyValueError::new_err("endpoint is being joined"));
        }
        let inner = self.inner.clone();
        let ep = detach(py, move || lock(&inner).take()).ok_or_else(closed)?;
        self.is_closed.store(true, Ordering::SeqCst);
        Ok(ep)
    }

    fn wrap(name: String, t: impl Transport + 'static) -> PyEndpoint {
        Self::wrap_boxed(name, Box::new(t))
    }

    fn wrap_boxed(name: String, t: Box<dyn Transport>) -> PyEndpoint {
        let data_fd = t.data_fd();
        let ctl_fd = t.ctl_fd();
        PyEndpoint {
            inner: Arc::new(Mutex::new(Some(CoreEndpoint::new(name.clone(), t)))),
            is_closed: Arc::new(AtomicBool::new(false)),
            joined: Arc::new(AtomicBool::new(false)),
            data_fd,
            ctl_fd,
            scratch: Mutex::new(None),
            name,
        }
    }

    /// The kept batch if it has `capacity` buffers (and no other thread
    /// has it), else a new one; give it back with `keep`.
    fn batch(&self, capacity: usize) -> Batch {
        match self.scratch.try_lock().ok().and_then(|mut g| g.take()) {
            Some(b) if b.capacity() == capacity => b,
            _ => Batch::new(capacity),
        }
    }

    fn keep(&self, b: Batch) {
        if let Ok(mut g) = self.scratch.try_lock() {
            *g = Some(b);
        }
    }
}

/// A frame argument: any bytes-like object, never an int (bytes(1500)
/// would be 1500 zero bytes) or a str.
fn frame_arg<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if obj.is_instance_of::<pyo3::types::PyInt>() || obj.is_instance_of::<pyo3::types::PyString>() {
        return Err(PyTypeError::new_err(format!("a frame must be bytes-like, not {}", obj.get_type().name()?)));
    }
    if let Ok(b) = obj.cast::<pyo3::types::PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    // Any other buffer (memoryview, array, mmap): bytes() copies it, as
    // the buffer protocol is not in the stable ABI before 3.11.
    let copy = obj.py().get_type::<PyBytes>().call1((obj,))?;
    Ok(Cow::Owned(copy.cast::<PyBytes>()?.as_bytes().to_vec()))
}

#[pymethods]
impl PyEndpoint {
    /// Wait for one valid frame and return it (at most `max` bytes of it).
    /// Returns b"" when the peer has gone away, None when `timeout` (seconds) expires.
    #[pyo3(signature = (max = RECV_BUFSIZE, timeout = None))]
    fn recv(&self, py: Python<'_>, max: usize, timeout: Option<f64>) -> PyResult<Option<Py<PyBytes>>> {
        if max == 0 {
            return Err(PyValueError::new_err("max must be at least 1"));
        }
        let deadline = deadline_of(timeout)?;
        self.check_open()?;
        let mut buf = vec![0u8; RECV_BUFSIZE];
        let got = self.wait(py, deadline, |ep| ep.recv_frame(&mut buf))?;
        // Some(None): the peer closed, b"".
        Ok(got.map(|n| PyBytes::new(py, &buf[..n.flatten().unwrap_or(0).min(max)]).unbind()))
    }

    /// Wait for frames and return up to `n` of them (one batched receive;
    /// a tap reads about as many as its last receive found, so more may be
    /// ready: call again). An empty list means the peer went away; None
    /// that `timeout` (seconds) expired.
    #[pyo3(signature = (n = 64, timeout = None))]
    fn recv_many(&self, py: Python<'_>, n: usize, timeout: Option<f64>) -> PyResult<Option<Vec<Py<PyBytes>>>> {
        let deadline = deadline_of(timeout)?;
        self.check_open()?;
        let mut batch = self.batch(n.clamp(1, crate::sys::MAX_BATCH));
        let mut idx = Vec::new();
        // One batch per attempt: one of nothing but garbage waits as if empty.
        let open = self.wait(py, deadline, |ep| {
            let open = ep.recv_valid(&mut batch, &mut idx)? == Link::Open;
            if !idx.is_empty() || !open {
                return Ok(open);
            }
            Err(io::ErrorKind::WouldBlock.into())
        });
        let frames = open.map(|o| o.map(|o| if o.is_some() { idx.iter().map(|&i| PyBytes::new(py, batch.frame(i)).unbind()).collect() } else { Vec::new() }));
        self.keep(batch);
        frames
    }

    /// Send many frames with batched system calls. Returns how many went
    /// out; malformed frames and frames the network could not take now are
    /// dropped and counted in `stats`.
    fn send_many(&self, py: Python<'_>, frames: Vec<Bound<'_, PyAny>>) -> PyResult<usize> {
        let frames = frames.iter().map(frame_arg).collect::<PyResult<Vec<_>>>()?;
        self.check_open()?;
        let mut batch = self.batch(crate::fwd::BATCH);
        let sent = detach(py, || -> io::Result<usize> {
            let mut g = lock(&self.inner);
            let ep = g.as_mut().ok_or_else(gone)?;
            let mut idx = Vec::with_capacity(batch.capacity());
            let mut sent = 0;
            for chunk in frames.chunks(batch.capacity()) {
                idx.clear();
                for (i, f) in chunk.iter().enumerate() {
                    if crate::transport::frame_ok(f) {
                        batch.bufs[i][..f.len()].copy_from_slice(f);
                        batch.lens[i] = f.len();
                        idx.push(i);
                    } else {
                        ep.stats.drops_out += 1;
                    }
                }
                let before = ep.stats.frames_out;
                let err = ep.send_valid(&batch, &idx);
                sent += (ep.stats.frames_out - before) as usize;
                if let Some(e) = err {
                    return Err(e);
                }
            }
            Ok(sent)
        });
        self.keep(batch);
        sent.map_err(|e| self.error(e))
    }

    /// Receive without waiting: a frame, b"" if the peer went away, None if nothing is ready.
    fn recv_nowait(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        self.check_open()?;
        let mut buf = vec![0u8; RECV_BUFSIZE];
        let inner = self.inner.clone();
        let got = detach(py, || {
            let mut g = lock(&inner);
            g.as_mut().ok_or_else(gone)?.recv_frame(&mut buf)
        });
        match got {
            Ok(n) => Ok(Some(PyBytes::new(py, &buf[..n.unwrap_or(0)]).unbind())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Send one frame (bytes-like). Returns its length, or 0 if it was
    /// dropped (malformed, or the network could not take it now); drops are
    /// counted in `stats`.
    fn send(&self, py: Python<'_>, frame: &Bound<'_, PyAny>) -> PyResult<usize> {
        let frame = frame_arg(frame)?;
        self.check_open()?;
        let inner = self.inner.clone();
        detach(py, move || {
            let (sent, stalled) = {
                let mut g = lock(&inner);
                let ep = g.as_mut().ok_or_else(gone)?;
                let before = ep.stats.drops_out;
                let sent = ep.send_frame(&frame);
                (sent, ep.stats.drops_out > before)
            };
            if stalled {
                // The peer is not reading (the frame waited its patience and
                // was dropped). A sender in a loop would take the lock back
                // before a thread woken for it (stats, recv) is scheduled, and
                // starve it: step aside for a moment, the GIL released.
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        })
        .map_err(|e| self.error(e))
    }

    /// The fd to wait on for readability (selectors, asyncio add_reader).
    fn fileno(&self) -> PyResult<RawFd> {
        self.check_open()?;
        Ok(self.data_fd)
    }

    /// The control fd (readable on hang-up), or None.
    fn ctl_fileno(&self) -> Option<RawFd> {
        self.ctl_fd
    }

    /// Close the transport (removes its socket files, stops its command).
    fn close(&self, py: Python<'_>) {
        self.is_closed.store(true, Ordering::SeqCst);
        let inner = self.inner.clone();
        detach(py, move || drop(lock(&inner).take()));
    }

    #[getter]
    fn closed(&self) -> bool {
        self.is_closed.load(Ordering::SeqCst)
    }

    /// Counters: frames_in, bytes_in, frames_out, bytes_out, drops_in, drops_out.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.clone();
        let (s, extra) = detach(py, move || {
            let g = lock(&inner);
            (g.as_ref().map(|e| e.stats).unwrap_or_default(), g.as_ref().map(|e| e.transport.extra_stats()).unwrap_or_default())
        });
        let d = PyDict::new(py);
        for (k, v) in extra {
            d.set_item(k, v)?;
        }
        d.set_item("frames_in", s.frames_in)?;
        d.set_item("bytes_in", s.bytes_in)?;
        d.set_item("frames_out", s.frames_out)?;
        d.set_item("bytes_out", s.bytes_out)?;
        d.set_item("drops_in", s.drops_in)?;
        d.set_item("drops_out", s.drops_out)?;
        Ok(d)
    }

    /// Exit code of the command behind a cmd:// endpoint, once it ended.
    fn exit_status(&self, py: Python<'_>) -> Option<i32> {
        let inner = self.inner.clone();
        detach(py, move || lock(&inner).as_mut().and_then(|e| e.transport.exit_status()))
    }

    /// A console command for the transport (wirefilter://'s `delay 20`):
    /// its answer, or None when the transport takes none.
    fn command(&self, py: Python<'_>, line: String) -> PyResult<Option<String>> {
        self.check_open()?;
        let inner = self.inner.clone();
        Ok(detach(py, move || lock(&inner).as_mut().and_then(|e| e.transport.command(&line))))
    }

    fn __repr__(&self) -> String {
        format!("<vdeplug._core.Endpoint {}{}>", self.name, if self.closed() { " closed" } else { "" })
    }
}

/// Marks both endpoints joined for as long as it lives.
struct JoinGuard(Arc<AtomicBool>, Arc<AtomicBool>);

impl JoinGuard {
    fn new(a: &PyEndpoint, b: &PyEndpoint) -> PyResult<JoinGuard> {
        let busy = || PyValueError::new_err("endpoint is already being joined (one forward per endpoint at a time)");
        a.joined.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).map_err(|_| busy())?;
        if b.joined.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            a.joined.store(false, Ordering::SeqCst);
            return Err(busy());
        }
        Ok(JoinGuard(a.joined.clone(), b.joined.clone()))
    }
}

impl Drop for JoinGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
        self.1.store(false, Ordering::SeqCst);
    }
}

/// Join two endpoints until one side hangs up or fails. Returns
/// (side, error): side 0 or 1, error None when it hung up, else the text.
/// Signals are checked every 200 ms (KeyboardInterrupt propagates).
/// With `iplog`, source IP addresses of frames from `b` are logged to syslog once each.
/// An endpoint can be in one forward at a time (ValueError otherwise).
#[pyfunction]
#[pyo3(signature = (a, b, iplog = false))]
fn forward(py: Python<'_>, a: &PyEndpoint, b: &PyEndpoint, iplog: bool) -> PyResult<(usize, Option<String>)> {
    if Arc::ptr_eq(&a.inner, &b.inner) {
        return Err(PyValueError::new_err("cannot forward an endpoint to itself"));
    }
    a.check_open()?;
    b.check_open()?;
    let _guard = JoinGuard::new(a, b)?;
    let (ia, ib) = (a.inner.clone(), b.inner.clone());
    let fw = detach(py, || {
        let (ga, gb) = (lock(&ia), lock(&ib));
        match (ga.as_ref(), gb.as_ref()) {
            (Some(ea), Some(eb)) => Some(Forwarder::new([ea, eb])),
            _ => None,
        }
    });
    let mut fw = fw.ok_or_else(closed)?.map_err(os_err)?;
    if iplog {
        fw.iplog = Some(crate::fwd::IpLog::default());
    }
    loop {
        if finalizing() {
            return Ok((0, Some("interpreter exiting".into())));
        }
        let exit = detach(py, || {
            let (mut ga, mut gb) = (lock(&ia), lock(&ib));
            match (ga.as_mut(), gb.as_mut()) {
                (Some(ea), Some(eb)) => fw.run_for([ea, eb], Duration::from_millis(200)),
                (None, _) => Exit::Closed(0),
                (_, None) => Exit::Closed(1),
            }
        });
        match exit {
            Exit::Tick => py.check_signals()?,
            Exit::Closed(side) => return Ok((side, None)),
            Exit::Failed(side, e) => return Ok((side, Some(transport::describe(&e)))),
        }
    }
}

fn endpoint(name: String, r: io::Result<impl Transport + 'static>) -> PyResult<PyEndpoint> {
    r.map(|t| PyEndpoint::wrap(name, t)).map_err(os_err)
}

/// An OpenError as the Python exception: VNLError (naming the bad part),
/// UnknownScheme, or OSError with its errno.
fn open_err(py: Python<'_>, vnl: &str, e: OpenError) -> PyErr {
    match e {
        OpenError::Vnl(v) => crate::py_vnl::vnl_error(py, v, vnl),
        OpenError::Unknown(s) => crate::py_vnl::unknown_scheme(py, &s, vnl),
        OpenError::Io(e) => os_err(e),
    }
}

/// Open a VNL with a built-in (Rust) plugin or a C plugin: the caller's
/// description, mode, group and port are used where the URL sets none.
#[pyfunction]
#[pyo3(signature = (vnl, *, descr = "vdeplug:", mode = None, group = None, port = None))]
fn open(py: Python<'_>, vnl: &Bound<'_, PyAny>, descr: &str, mode: Option<u32>, group: Option<String>, port: Option<u32>) -> PyResult<PyEndpoint> {
    let (text, bytes) = crate::py_vnl::text_arg(vnl)?;
    let args = OpenArgs { descr: plugins::full_descr(descr), mode, group, port };
    let t = detach(py, || plugins::open_transport(&bytes, &args)).map_err(|e| open_err(py, &text, e))?;
    Ok(PyEndpoint::wrap_boxed(text, t))
}

#[pyfunction]
fn open_stdio(py: Python<'_>) -> PyResult<PyEndpoint> {
    endpoint("stdio".into(), detach(py, transport::stream::open_stdio))
}

/// A stream endpoint over two fds this process owns (they are duplicated).
#[pyfunction]
fn open_stream(py: Python<'_>, input_fd: RawFd, output_fd: RawFd) -> PyResult<PyEndpoint> {
    endpoint(format!("stream:{input_fd},{output_fd}"), detach(py, || transport::stream::open(sys::dup_fd(input_fd)?, sys::dup_fd(output_fd)?)))
}

/// `vde_plug URL = command args`: the argv as given (no word splitting).
#[pyfunction]
fn open_cmd(py: Python<'_>, argv: Vec<String>) -> PyResult<PyEndpoint> {
    let name = format!("cmd://{}", argv.join(" "));
    endpoint(name, detach(py, || transport::cmd::open(&argv)))
}

/// capture://FILE{VNL} and vde_plug --pcap: everything crossing `inner`
/// (which this takes over) is written to a pcap file, rotated at `limit` bytes.
#[pyfunction]
fn open_capture(py: Python<'_>, inner: &PyEndpoint, path: PathBuf, limit: u64, files: u32) -> PyResult<PyEndpoint> {
    let cfg = transport::capture::Config { path: std::path::absolute(&path).unwrap_or(path), limit, files };
    let label = format!("capture://{}", cfg.path.display());
    let hook = detach(py, || transport::capture::hook(cfg)).map_err(os_err)?;
    let ep = inner.take(py)?;
    let t = transport::nested::Nested::new(ep.transport, hook);
    Ok(PyEndpoint::wrap(format!("{label}{{{}}}", ep.name), t))
}

// ---------------------------------------------------------------- wire helpers
// The per-frame code itself, exposed for scripting and property tests.

fn wire_err(e: crate::wire::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Parse an Ethernet header: dict(dst, src, vlan, ethertype, payload_len).
/// Raises ValueError for runt or oversized frames.
#[pyfunction]
fn frame_info<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    use crate::wire::ethernet::{Frame, Repr};
    let f = Frame::new_checked(data).map_err(wire_err)?;
    let r = Repr::parse(&f);
    let d = PyDict::new(py);
    d.set_item("dst", r.dst.to_string())?;
    d.set_item("src", r.src.to_string())?;
    d.set_item("vlan", r.vlan)?;
    d.set_item("ethertype", u16::from(r.ethertype))?;
    d.set_item("multicast", r.dst.is_multicast())?;
    d.set_item("payload_len", f.payload().len())?;
    Ok(d)
}

/// VXLAN-encapsulate a frame (8-byte header + frame).
#[pyfunction]
fn vxlan_encap<'py>(py: Python<'py>, vni: u32, frame: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    if vni > crate::wire::vxlan::MAX_VNI {
        return Err(PyValueError::new_err("vni does not fit in 24 bits"));
    }
    let mut out = crate::wire::vxlan::Repr { vni }.to_bytes().to_vec();
    out.extend_from_slice(frame);
    Ok(PyBytes::new(py, &out))
}

/// Check a VXLAN datagram for `vni` and return its payload; `strict` is the
/// vxvde rule (exact flags, zero reserved bits). Raises ValueError.
#[pyfunction]
#[pyo3(signature = (data, vni, strict = false))]
fn vxlan_decap<'py>(py: Python<'py>, data: &[u8], vni: u32, strict: bool) -> PyResult<Bound<'py, PyBytes>> {
    use crate::wire::vxlan::{Packet, Repr};
    let p = Packet::new_checked(data).map_err(wire_err)?;
    Repr::parse(&p, vni, strict).map_err(wire_err)?;
    Ok(PyBytes::new(py, p.payload()))
}

/// Write a new random seal:// key to `path` (created 0600; never over an
/// existing file or through a symlink).
#[pyfunction]
fn seal_keygen(py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
    detach(py, || crate::transport::seal::keygen(&path)).map_err(|e| PyOSError::new_err(format!("cannot create key file {}: {e}", path.display())))
}

/// The MAC learning table (values are ints), with time passed in.
#[pyclass(module = "vdeplug._core", name = "MacTable")]
struct PyMacTable(crate::mac_table::MacTable<u64>);

fn mac6(b: &[u8]) -> PyResult<crate::wire::ethernet::Address> {
    if b.len() != 6 {
        return Err(PyValueError::new_err("a MAC address is 6 bytes"));
    }
    Ok(crate::wire::ethernet::Address::from_bytes(b))
}

#[pymethods]
impl PyMacTable {
    #[new]
    #[pyo3(signature = (size = 1024, max_age = 128, seed = 0))]
    fn new(size: usize, max_age: u64, seed: u64) -> Self {
        PyMacTable(crate::mac_table::MacTable::new(size, max_age, seed))
    }
    /// Returns "new", "refreshed", "moved", "ignored" (multicast source) or
    /// "full" (its bucket holds only recently active stations).
    fn learn(&mut self, mac: &[u8], vlan: u16, value: u64, now: u64) -> PyResult<&'static str> {
        use crate::mac_table::Learned;
        Ok(match self.0.learn(mac6(mac)?, vlan, value, now) {
            Learned::New => "new",
            Learned::Refreshed => "refreshed",
            Learned::Moved => "moved",
            Learned::Ignored => "ignored",
            Learned::Full => "full",
        })
    }
    fn lookup(&self, mac: &[u8], vlan: u16, now: u64) -> PyResult<Option<u64>> {
        Ok(self.0.lookup(mac6(mac)?, vlan, now))
    }
    fn forget_value(&mut self, value: u64) -> usize {
        self.0.forget_value(value)
    }
    fn len(&self, now: u64) -> usize {
        self.0.len(now)
    }
    #[getter]
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// The extension module. Nothing here needs the GIL for safety: endpoints
/// sit behind their own locks, never waited for with the GIL held.
#[pymodule(gil_used = false)]
mod _core {
    #[pymodule_export]
    use super::{_finalize, forward, frame_info, inherit_from, open, open_capture, open_cmd, open_stdio, open_stream, seal_keygen, vxlan_decap, vxlan_encap, PyEndpoint, PyMacTable};
    #[pymodule_export]
    use crate::py_vnl::{
        builtin_plugins, c_plugins, full_descr, option_value, resolve_builtin, set_library, vnl_default, vnl_match, vnl_parse, vnl_size, vnl_split, vnl_split_nested, vnl_split_scheme,
    };

    #[pymodule_export]
    const ETH_BUFSIZE: usize = crate::wire::ETH_BUFSIZE;
    #[pymodule_export]
    const MAX_BATCH: usize = crate::sys::MAX_BATCH;
    #[pymodule_export]
    const VERSION: &str = env!("CARGO_PKG_VERSION");
    #[pymodule_export]
    const MAX_STREAM_FRAME: usize = crate::wire::stream::MAX_STREAM_FRAME;
}
