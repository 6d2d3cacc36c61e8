//! Thin, checked wrappers over the Linux system calls and libc functions
//! that neither std nor socket2 covers: epoll, eventfd, recvmmsg/sendmmsg
//! (one builder each), pktinfo and UDP GRO, the tun ioctls, fd-relative
//! file calls that never follow a symlink, getifaddrs, the user and group
//! databases, syslog. System calls only: what to do with them (policy) is
//! the calling module's. Constants come from libc.
//!
//! `unsafe` is denied crate-wide (lib.rs) and allowed here, in cplugin.rs
//! (the C plugin ABI: dlopen and calls through `vdeplug_ops`), in the two C
//! libraries (rust/libvdeplug, rust/libvdeplug_mod) and for the one AVX2
//! call in wire/checksum.rs; every block says why it is sound (`SAFETY:`).
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Turn a libc `-1` return into the current `errno`.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// read(2) into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() writable bytes.
    cvt_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// write(2) of `buf`.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() readable bytes.
    cvt_size(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

/// recv(2) with flags, on any socket.
pub fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() writable bytes.
    cvt_size(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) })
}

/// send(2) with flags, on a connected socket.
pub fn send(fd: RawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() readable bytes.
    cvt_size(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags | libc::MSG_NOSIGNAL) })
}

/// Wait until `fd` is readable or `timeout_ms` passes (-1: forever). Returns readiness.
pub fn poll_in(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = cvt(unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
    Ok(n > 0)
}

/// Wait until `fd` is writable or `timeout_ms` passes.
pub fn poll_out(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = cvt(unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
    Ok(n > 0 && p.revents & libc::POLLOUT != 0)
}

// ---------------------------------------------------------------- epoll

pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the fd returned is owned here.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd was just created and is not owned elsewhere.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32, u64: token };
        // SAFETY: ev is a valid epoll_event.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: ev is valid (ignored by the kernel for DEL).
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) })?;
        Ok(())
    }

    /// Returns the ready (token, events) pairs written into `events`.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: events is a valid writable array of its length.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), events.len() as libc::c_int, timeout_ms) };
        Ok(cvt(n)? as usize)
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

pub fn empty_events<const N: usize>() -> [libc::epoll_event; N] {
    [libc::epoll_event { events: 0, u64: 0 }; N]
}

// ---------------------------------------------------------------- eventfd

/// An eventfd: readable while "set". Used as a never-firing fd (null://) and
/// as a "frames still buffered" flag inside an epoll set.
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: fresh fd owned here.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }
    pub fn set(&self) {
        let _ = write(self.fd.as_raw_fd(), &1u64.to_ne_bytes());
    }
    pub fn clear(&self) {
        let mut b = [0u8; 8];
        let _ = read(self.fd.as_raw_fd(), &mut b);
    }
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

// ---------------------------------------------------------------- sockaddr

/// Convert a `sockaddr_storage` filled by the kernel into a std address.
pub fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: family says this storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this storage holds a sockaddr_in6.
            let s6: &libc::sockaddr_in6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(s6.sin6_addr.s6_addr.into(), u16::from_be(s6.sin6_port), s6.sin6_flowinfo, s6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Fill a `sockaddr_storage` from a std address; returns its length.
pub fn std_to_sockaddr(addr: &SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin: &mut libc::sockaddr_in = unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let s6: &mut libc::sockaddr_in6 = unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in6) };
            s6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s6.sin6_port = a.port().to_be();
            s6.sin6_addr.s6_addr = a.ip().octets();
            s6.sin6_flowinfo = a.flowinfo();
            s6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

pub fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    unsafe { mem::zeroed() }
}

// ---------------------------------------------------------------- batched datagrams

// recvmmsg/sendmmsg headers live on the stack of each call, rebuilt every
// time (cheap, no allocation): the caller's buffers may move between calls.

/// Most messages one recvmmsg/sendmmsg call handles.
pub const MAX_BATCH: usize = 64;

/// Where the messages of one `recvmmsg` go, and what is kept of them.
trait RecvInto {
    /// Whether control messages are wanted (IP_PKTINFO, UDP_GRO).
    fn control(&self) -> bool;
    /// Message `i`: its pieces into `iov` (returns how many, 1 or 2) and
    /// where its source address goes (null: nowhere). Each piece must be
    /// valid for writes of its length until the call returns.
    fn place(&mut self, i: usize, iov: &mut [libc::iovec; 2]) -> (usize, *mut libc::sockaddr_storage);
    /// Message `i` arrived: `len` bytes (all pieces), and what its control messages say.
    fn arrived(&mut self, i: usize, len: usize, ctl: Control);
}

/// The one recvmmsg(2) builder, with MSG_DONTWAIT, for up to `n` messages
/// laid out by `into`. Only the headers used are initialised: zeroing all
/// 64 would cost more than the call itself for small batches.
fn recvmmsg<R: RecvInto>(fd: RawFd, n: usize, into: &mut R) -> io::Result<usize> {
    const NONE: libc::iovec = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
    let n = n.min(MAX_BATCH);
    let want_control = into.control();
    let mut iov = [const { mem::MaybeUninit::<[libc::iovec; 2]>::uninit() }; MAX_BATCH];
    let mut msgs = [const { mem::MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut ctrl = [const { mem::MaybeUninit::<[u64; 12]>::uninit() }; MAX_BATCH];
    for i in 0..n {
        let v = iov[i].write([NONE; 2]);
        let (pieces, name) = into.place(i, v);
        // SAFETY: an all-zero mmsghdr is a valid value.
        let h = &mut msgs[i].write(unsafe { mem::zeroed() }).msg_hdr;
        h.msg_iov = v.as_mut_ptr();
        h.msg_iovlen = pieces.min(2);
        if !name.is_null() {
            h.msg_name = name.cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        if want_control {
            h.msg_control = ctrl[i].write([0; 12]).as_mut_ptr().cast();
            h.msg_controllen = mem::size_of::<[u64; 12]>();
        }
    }
    let got = if n == 1 {
        // One message: recvmsg, cheaper than a recvmmsg of one.
        // SAFETY: header 0 is initialised (n == 1) and points at live
        // buffers as below.
        let h = unsafe { msgs[0].assume_init_mut() };
        // SAFETY: as for recvmmsg below, for the one header.
        let len = cvt_size(unsafe { libc::recvmsg(fd, &mut h.msg_hdr, libc::MSG_DONTWAIT) })?;
        h.msg_len = len as libc::c_uint;
        1
    } else {
        // SAFETY: the first n headers are initialised and point at live
        // buffers, address slots and control buffers of the stated sizes
        // (`place`'s contract), all borrowed until this returns.
        let got = unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr().cast(), n as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        cvt(got)? as usize
    };
    for (i, m) in msgs[..got].iter().enumerate() {
        // SAFETY: i < got <= n: initialised above.
        let m = unsafe { m.assume_init_ref() };
        let ctl = if want_control { control(&m.msg_hdr) } else { Control::default() };
        into.arrived(i, m.msg_len as usize, ctl);
    }
    Ok(got)
}

/// An iovec over `b` (valid while `b` is borrowed).
fn iovec(b: &mut [u8]) -> libc::iovec {
    libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }
}

/// recvmmsg(2) with MSG_DONTWAIT into `bufs`; fills `lens` and, if given, `addrs`.
pub fn recv_batch(fd: RawFd, bufs: &mut [Box<[u8]>], lens: &mut [usize], addrs: Option<&mut [libc::sockaddr_storage]>) -> io::Result<usize> {
    struct Plain<'a> {
        bufs: &'a mut [Box<[u8]>],
        lens: &'a mut [usize],
        addrs: Option<&'a mut [libc::sockaddr_storage]>,
    }
    impl RecvInto for Plain<'_> {
        fn control(&self) -> bool {
            false
        }
        fn place(&mut self, i: usize, iov: &mut [libc::iovec; 2]) -> (usize, *mut libc::sockaddr_storage) {
            iov[0] = iovec(&mut self.bufs[i]);
            (1, self.addrs.as_deref_mut().map_or(std::ptr::null_mut(), |a| &mut a[i] as *mut _))
        }
        fn arrived(&mut self, i: usize, len: usize, _: Control) {
            self.lens[i] = len;
        }
    }
    let n = bufs.len().min(lens.len()).min(addrs.as_deref().map_or(usize::MAX, <[_]>::len));
    recvmmsg(fd, n, &mut Plain { bufs, lens, addrs })
}

/// connect(2) with a raw address (AF_UNSPEC to dissolve an association).
pub fn connect_unspec(fd: RawFd) -> io::Result<()> {
    let mut ss = zeroed_storage();
    ss.ss_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: ss is a valid sockaddr of at least sizeof(sockaddr).
    cvt(unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, mem::size_of::<libc::sockaddr>() as libc::socklen_t) })?;
    Ok(())
}

// ---------------------------------------------------------------- pktinfo

pub fn set_pktinfo(fd: RawFd, v6: bool) -> io::Result<()> {
    let one: libc::c_int = 1;
    let (level, opt) = if v6 { (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO) } else { (libc::IPPROTO_IP, libc::IP_PKTINFO) };
    // SAFETY: valid int option.
    cvt(unsafe { libc::setsockopt(fd, level, opt, (&one as *const libc::c_int).cast(), mem::size_of::<libc::c_int>() as libc::socklen_t) })?;
    Ok(())
}

// ---------------------------------------------------------------- tap

/// Tell the tap which offloads we handle (TUNSETOFFLOAD, libc::TUN_F_* flags).
pub fn tap_set_offload(fd: RawFd, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes the flags as an integer argument.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, flags as libc::c_ulong) })?;
    Ok(())
}

/// SO_RCVBUFFORCE: a receive buffer beyond net.core.rmem_max (CAP_NET_ADMIN).
pub fn set_rcvbuf_force(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: v is a live c_int for the call.
    cvt(unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) })?;
    Ok(())
}

/// readv(2) into std IoSliceMuts (ABI-compatible with iovec).
pub fn readv(fd: RawFd, bufs: &mut [std::io::IoSliceMut<'_>]) -> io::Result<usize> {
    // SAFETY: IoSliceMut is guaranteed ABI-compatible with iovec on Unix.
    cvt_size(unsafe { libc::readv(fd, bufs.as_mut_ptr().cast(), bufs.len() as libc::c_int) })
}

/// Open /dev/net/tun as a tap device named `name` (empty: kernel chooses),
/// creating it if needed; with `vnet_hdr`, every frame read or written
/// carries a virtio-net header (see wire::virtio_net). Returns the fd and
/// the final interface name.
pub fn open_tap(name: &str, vnet_hdr: bool) -> io::Result<(OwnedFd, String)> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("interface name too long: {name}")));
    }
    let path = c"/dev/net/tun";
    // SAFETY: path is a valid C string.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: fresh fd owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let final_name = tap_set_iff(fd.as_raw_fd(), &mut ifr, vnet_hdr)?;
    Ok((fd, final_name))
}

/// TUNSETIFF as a tap without packet info (and with a virtio-net header
/// when `vnet_hdr`) on a tun or macvtap fd; the interface name it reports.
fn tap_set_iff(fd: RawFd, ifr: &mut libc::ifreq, vnet_hdr: bool) -> io::Result<String> {
    let vnet = if vnet_hdr { libc::IFF_VNET_HDR } else { 0 };
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | vnet) as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq, which is live.
    cvt(unsafe { libc::ioctl(fd, libc::TUNSETIFF as _, ifr as *mut libc::ifreq) })?;
    Ok(ifr.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect())
}

/// Open a macvtap character device (`/dev/tapN`) non-blocking as a tap,
/// with a virtio-net header when `vnet_hdr`.
pub fn open_macvtap(path: &std::path::Path, vnet_hdr: bool) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: c is a valid C string.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: fresh fd owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    tap_set_iff(fd.as_raw_fd(), &mut ifr, vnet_hdr)?;
    Ok(fd)
}

/// mknod(2) a character device node (mode 0600) for `major:minor`.
pub fn mknod_char(path: &std::path::Path, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: c is a valid C string; makedev only computes a number.
    cvt(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(major, minor)) })?;
    Ok(())
}

/// if_nametoindex(3); 0 if unknown.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"))?;
    // SAFETY: c is a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no such interface: {name}")));
    }
    Ok(idx)
}

// ---------------------------------------------------------------- unix seqpacket / misc

/// Duplicate a borrowed fd (e.g. stdin) into one we own, close-on-exec.
pub fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh fd we own.
    let n = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Whether this process runs setuid, setgid or with added capabilities
/// (AT_SECURE, the rule of secure_getenv): then it must not take
/// directions from its environment.
pub fn secure_execution() -> bool {
    // SAFETY: getauxval reads the auxiliary vector; 0 when absent.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

pub fn geteuid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::geteuid() }
}

/// sched_yield(2): let any runnable task on this CPU go first (a busy-poll
/// must not keep the peers it waits for off a shared CPU).
pub fn yield_cpu() {
    // SAFETY: no arguments; cannot fail on Linux.
    unsafe { libc::sched_yield() };
}

/// syslog(3) of `msg` (NUL bytes dropped) at `priority`; openlog is the
/// caller's (the Python side's).
pub fn syslog(priority: libc::c_int, msg: &str) {
    if let Ok(c) = std::ffi::CString::new(msg.replace('\0', "")) {
        // SAFETY: constant "%s" format with one valid C string argument.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), c.as_ptr()) };
    }
}

/// kill(2); errors ignored (the process may be gone already).
pub fn kill(pid: i32, sig: libc::c_int) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, sig) };
}

/// writev(2) of std IoSlices (ABI-compatible with iovec).
pub fn writev(fd: RawFd, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: IoSlice is guaranteed ABI-compatible with iovec on Unix.
    cvt_size(unsafe { libc::writev(fd, bufs.as_ptr().cast(), bufs.len() as libc::c_int) })
}

// ---------------------------------------------------------------- overlay batches

/// Metadata of one datagram received by `recv_batch_prefixed`.
#[derive(Clone, Copy)]
pub struct Meta {
    /// Total bytes: prefix + payload.
    pub len: usize,
    pub from: libc::sockaddr_storage,
    /// IPv4 pktinfo: the local address the datagram was delivered to.
    pub spec_dst: Option<Ipv4Addr>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta { len: 0, from: zeroed_storage(), spec_dst: None }
    }
}

/// recvmmsg(2) with MSG_DONTWAIT where each datagram is scattered as an
/// 8-byte prefix (the VXLAN header) into `prefix[i]` and the rest into
/// `bufs[i]`: the frame lands where it will be forwarded from, no copy.
pub fn recv_batch_prefixed<B: AsMut<[u8]>>(fd: RawFd, prefix: &mut [[u8; 8]], bufs: &mut [B], meta: &mut [Meta], pktinfo: bool) -> io::Result<usize> {
    struct Prefixed<'a, B> {
        prefix: &'a mut [[u8; 8]],
        bufs: &'a mut [B],
        meta: &'a mut [Meta],
        pktinfo: bool,
    }
    impl<B: AsMut<[u8]>> RecvInto for Prefixed<'_, B> {
        fn control(&self) -> bool {
            self.pktinfo
        }
        fn place(&mut self, i: usize, iov: &mut [libc::iovec; 2]) -> (usize, *mut libc::sockaddr_storage) {
            *iov = [iovec(&mut self.prefix[i][..]), iovec(self.bufs[i].as_mut())];
            (2, &mut self.meta[i].from)
        }
        fn arrived(&mut self, i: usize, len: usize, ctl: Control) {
            self.meta[i].len = len;
            self.meta[i].spec_dst = ctl.spec_dst;
        }
    }
    let n = bufs.len().min(prefix.len()).min(meta.len());
    recvmmsg(fd, n, &mut Prefixed { prefix, bufs, meta, pktinfo })
}

/// What the control messages of a received datagram say.
#[derive(Default)]
struct Control {
    /// IP_PKTINFO: the local address it was delivered to.
    spec_dst: Option<Ipv4Addr>,
    /// UDP_GRO: the size of each datagram in a coalesced train (0: none).
    gro_size: usize,
}

/// Read the control messages the kernel wrote into `h`.
fn control(h: &libc::msghdr) -> Control {
    let mut out = Control::default();
    if h.msg_control.is_null() {
        return out;
    }
    // SAFETY: walk the control data the kernel wrote, within msg_controllen;
    // CMSG_DATA points at a payload of the type the level/type pair says.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let pi = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                    out.spec_dst = Some(Ipv4Addr::from(u32::from_be(pi.ipi_spec_dst.s_addr)));
                }
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    let size = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                    out.gro_size = size.max(0) as usize;
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    out
}

/// UDP_GRO: trains of equal-size datagrams from one sender arrive as one
/// buffer (see `recv_batch_gro`), not segmented by the kernel one by one.
pub fn set_udp_gro(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid int option.
    cvt(unsafe { libc::setsockopt(fd, libc::SOL_UDP, libc::UDP_GRO, (&one as *const libc::c_int).cast(), mem::size_of::<libc::c_int>() as libc::socklen_t) })?;
    Ok(())
}

/// recvmmsg(2) with MSG_DONTWAIT on a UDP_GRO socket, for up to `n`
/// messages: message i lands whole in the i-th `chunk` bytes of `arena`;
/// `seg[i]` is the size of each datagram in it (0: just one datagram).
/// With `pktinfo`, `meta[i].spec_dst` as in `recv_batch_prefixed`.
pub fn recv_batch_gro(fd: RawFd, arena: &mut [u8], chunk: usize, n: usize, meta: &mut [Meta], seg: &mut [usize], pktinfo: bool) -> io::Result<usize> {
    struct Gro<'a> {
        arena: &'a mut [u8],
        chunk: usize,
        meta: &'a mut [Meta],
        seg: &'a mut [usize],
        pktinfo: bool,
    }
    impl RecvInto for Gro<'_> {
        fn control(&self) -> bool {
            true
        }
        fn place(&mut self, i: usize, iov: &mut [libc::iovec; 2]) -> (usize, *mut libc::sockaddr_storage) {
            iov[0] = iovec(&mut self.arena[i * self.chunk..(i + 1) * self.chunk]);
            (1, &mut self.meta[i].from)
        }
        fn arrived(&mut self, i: usize, len: usize, ctl: Control) {
            self.meta[i].len = len;
            self.meta[i].spec_dst = ctl.spec_dst.filter(|_| self.pktinfo);
            self.seg[i] = ctl.gro_size;
        }
    }
    let n = n.min(meta.len()).min(seg.len()).min(arena.len() / chunk.max(1));
    recvmmsg(fd, n, &mut Gro { arena, chunk, meta, seg, pktinfo })
}

/// IP_MULTICAST_IF by interface index (IPv4; ip_mreqn).
pub fn set_multicast_if_v4_index(fd: RawFd, ifindex: u32) -> io::Result<()> {
    let mreq = libc::ip_mreqn { imr_multiaddr: libc::in_addr { s_addr: 0 }, imr_address: libc::in_addr { s_addr: 0 }, imr_ifindex: ifindex as libc::c_int };
    // SAFETY: valid ip_mreqn of the stated size.
    cvt(unsafe { libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, (&mreq as *const libc::ip_mreqn).cast(), mem::size_of::<libc::ip_mreqn>() as libc::socklen_t) })?;
    Ok(())
}

/// An interface sockaddr as an address (IPv4 and IPv6 only).
///
/// # Safety
/// `a` is null or points to a sockaddr whose family says its size.
unsafe fn ifa_ip(a: *const libc::sockaddr) -> Option<std::net::IpAddr> {
    if a.is_null() {
        return None;
    }
    // SAFETY: the caller's contract: the family tells which struct `a` is.
    unsafe {
        match (*a).sa_family as libc::c_int {
            libc::AF_INET6 => Some(std::net::Ipv6Addr::from((*(a as *const libc::sockaddr_in6)).sin6_addr.s6_addr).into()),
            libc::AF_INET => Some(std::net::Ipv4Addr::from(u32::from_be((*(a as *const libc::sockaddr_in)).sin_addr.s_addr)).into()),
            _ => None,
        }
    }
}

/// (address, netmask) of every IPv4 and IPv6 address on this host's interfaces.
pub fn interface_addrs() -> Vec<(std::net::IpAddr, Option<std::net::IpAddr>)> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills ifap with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: p walks the list returned by getifaddrs; its sockaddrs are
        // null or valid for their family.
        unsafe {
            if let Some(a) = ifa_ip((*p).ifa_addr) {
                out.push((a, ifa_ip((*p).ifa_netmask)));
            }
            p = (*p).ifa_next;
        }
    }
    // SAFETY: ifap came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

// ---------------------------------------------------------------- UDP GSO

/// A run of consecutive frames sent as one UDP GSO datagram train: every
/// segment is `seg` bytes (prefix included) except possibly the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GsoRun {
    pub first: usize,
    pub count: usize,
    pub seg: usize,
}

/// The iovecs of one message, a piece at a time: a piece that starts where
/// the last one ends extends it.
struct Gather<'v> {
    iov: &'v mut [mem::MaybeUninit<libc::iovec>],
    n: usize,
    /// Address where iov[n - 1] ends.
    end: Option<usize>,
}

impl Gather<'_> {
    fn push(&mut self, piece: &[u8]) {
        let base = piece.as_ptr() as usize;
        if self.end == Some(base) {
            // SAFETY: end is Some only once iov[n - 1] was written.
            unsafe { self.iov[self.n - 1].assume_init_mut().iov_len += piece.len() };
        } else {
            self.iov[self.n].write(libc::iovec { iov_base: piece.as_ptr() as *mut _, iov_len: piece.len() });
            self.n += 1;
        }
        self.end = Some(base + piece.len());
    }
}

/// sendmmsg(2) of GSO runs: each run is one message whose payload is the
/// concatenation of `prefix` + frame for its frames, with a UDP_SEGMENT
/// cmsg when it has more than one. `dest(i)` addresses frame i's run.
/// Frames already behind a copy of `prefix` in memory, back to back, are
/// given as one iovec: the kernel copies one buffer instead of two small
/// pieces per frame. Returns how many runs the kernel took.
pub fn send_gso<'a, 'd>(
    fd: RawFd,
    prefix: &[u8],
    runs: &[GsoRun],
    frame: impl Fn(usize) -> crate::transport::FrameRef<'a>,
    dest: Option<&dyn Fn(usize) -> (&'d libc::sockaddr_storage, libc::socklen_t)>,
) -> io::Result<usize> {
    let n = runs.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let total: usize = runs[..n].iter().map(|r| r.count).sum();
    if total > MAX_BATCH {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many frames for one GSO batch"));
    }
    // Only what is used is initialised (see recvmmsg).
    let mut iov = [const { mem::MaybeUninit::<libc::iovec>::uninit() }; 2 * MAX_BATCH];
    let mut msgs = [const { mem::MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut ctrl = [const { mem::MaybeUninit::<[u64; 4]>::uninit() }; MAX_BATCH];
    let mut v = 0;
    for (k, run) in runs[..n].iter().enumerate() {
        let start = v;
        let mut g = Gather { iov: &mut iov[start..], n: 0, end: None };
        for i in run.first..run.first + run.count {
            let f = frame(i);
            match f.prefixed(prefix) {
                Some(whole) => g.push(whole),
                None => {
                    g.push(prefix);
                    g.push(f.bytes());
                }
            }
        }
        v += g.n;
        // SAFETY: an all-zero mmsghdr is a valid value.
        let h = &mut msgs[k].write(unsafe { mem::zeroed() }).msg_hdr;
        h.msg_iov = iov[start..].as_mut_ptr().cast();
        h.msg_iovlen = v - start;
        if let Some(d) = dest {
            let (p, l) = d(run.first);
            h.msg_name = p as *const libc::sockaddr_storage as *mut _;
            h.msg_namelen = l;
        }
        if run.count > 1 {
            h.msg_control = ctrl[k].write([0; 4]).as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE/LEN are pure size computations.
            h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            // SAFETY: the control buffer is 32 bytes, enough for one u16 cmsg.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, run.seg as u16);
            }
        }
    }
    if n == 1 {
        // One message: sendmsg, cheaper than a sendmmsg of one.
        // SAFETY: header 0 is initialised (n == 1) and points at live
        // iovecs, frames, cmsg and address.
        let h = unsafe { msgs[0].assume_init_ref() };
        // SAFETY: as above.
        cvt_size(unsafe { libc::sendmsg(fd, &h.msg_hdr, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) })?;
        return Ok(1);
    }
    // SAFETY: the first n headers are initialised and point at live iovecs,
    // frames, cmsgs and addresses.
    let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr().cast(), n as libc::c_uint, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    Ok(cvt(sent)? as usize)
}

// ---------------------------------------------------------------- files without following symlinks

fn cpath(p: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// lstat(2)/fstatat(AT_SYMLINK_NOFOLLOW) of `name` in `dir` (None: the cwd).
pub fn lstat_at(dir: Option<RawFd>, name: &std::path::Path) -> io::Result<libc::stat> {
    let c = cpath(name)?;
    // SAFETY: stat is plain old data, written by the kernel.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: c is a valid C string, st a valid stat buffer.
    cvt(unsafe { libc::fstatat(dir.unwrap_or(libc::AT_FDCWD), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// fstat(2).
pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: st is a valid stat buffer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_socket(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

pub fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// Open a directory, refusing a symlink as its last component.
pub fn open_dir_nofollow(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: c is a valid C string; the fd returned is owned here.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An O_PATH handle on `name` in `dir` (None: cwd), not following a final
/// symlink: the object can then be checked with fstat and reached through
/// `proc_path` without a race against a swapped file.
pub fn open_path_nofollow(dir: Option<RawFd>, name: &std::path::Path) -> io::Result<OwnedFd> {
    let c = cpath(name)?;
    // SAFETY: c is a valid C string.
    let fd = cvt(unsafe { libc::openat(dir.unwrap_or(libc::AT_FDCWD), c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `/proc/self/fd/N`: a path that reaches exactly the object open on `fd`
/// (for bind/connect/chmod of sockets, which have no fd-relative calls).
pub fn proc_path(fd: RawFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// fchmod(2): change a mode through an fd, never through a path.
pub fn fchmod(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on an fd we hold.
    cvt(unsafe { libc::fchmod(fd, mode as libc::mode_t) })?;
    Ok(())
}

/// fchown(2) of the group only.
pub fn fchown_group(fd: RawFd, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on an fd we hold; uid -1 keeps the owner.
    cvt(unsafe { libc::fchown(fd, u32::MAX, gid) })?;
    Ok(())
}

/// chmod of `name` in `dir`, refusing to follow a symlink: the file is
/// opened O_PATH|O_NOFOLLOW, checked, and changed through /proc/self/fd.
pub fn chmod_at_nofollow(dir: RawFd, name: &std::path::Path, mode: u32) -> io::Result<()> {
    let h = open_path_nofollow(Some(dir), name)?;
    let st = fstat(h.as_raw_fd())?;
    if is_symlink(&st) {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let p = cpath(&proc_path(h.as_raw_fd()))?;
    // SAFETY: p is a valid C string naming the object held open by h.
    cvt(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// Group of `name` in `dir`, without following a symlink.
pub fn chown_group_at_nofollow(dir: RawFd, name: &std::path::Path, gid: u32) -> io::Result<()> {
    let c = cpath(name)?;
    // SAFETY: valid C string; uid -1 keeps the owner.
    cvt(unsafe { libc::fchownat(dir, c.as_ptr(), u32::MAX, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(())
}

/// unlinkat(2) of a non-directory `name` in `dir` (never follows symlinks).
pub fn unlink_at(dir: RawFd, name: &std::path::Path) -> io::Result<()> {
    let c = cpath(name)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::unlinkat(dir, c.as_ptr(), 0) })?;
    Ok(())
}

/// The uid of the process at the other end of a unix stream socket.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    // SAFETY: ucred is plain old data, filled by the kernel.
    let mut cred: libc::ucred = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for SO_PEERCRED.
    cvt(unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len) })?;
    Ok(cred.uid)
}

/// Create a fresh private directory `base/prefixXXXXXX` (mode 0700) and open it.
pub fn make_private_dir(base: &std::path::Path, prefix: &str) -> io::Result<(std::path::PathBuf, OwnedFd)> {
    let t = cpath(&base.join(format!("{prefix}XXXXXX")))?;
    let mut bytes = t.into_bytes_with_nul();
    // SAFETY: bytes is a writable NUL-terminated template.
    let p = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    bytes.pop();
    use std::os::unix::ffi::OsStringExt;
    let path = std::path::PathBuf::from(std::ffi::OsString::from_vec(bytes));
    let fd = open_dir_nofollow(&path)?;
    Ok((path, fd))
}

// ---------------------------------------------------------------- non-blocking fds

/// Set O_NONBLOCK on an fd (a file description shared with whoever else holds it).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a caller-owned fd.
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) })?;
    Ok(())
}

// ---------------------------------------------------------------- users and groups

pub fn getegid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::getegid() }
}

/// getgrnam_r: the gid of group `name`.
pub fn group_by_name(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: group is plain old data filled by getgrnam_r.
    let mut gr: libc::group = unsafe { mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the stated sizes.
    let r = unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(gr.gr_gid)
}

/// The name of our effective user in the password database.
pub fn passwd_name() -> Option<String> {
    passwd_field(|pw| pw.pw_name).map(|name| String::from_utf8_lossy(&name).into_owned())
}

/// The home directory of our effective user in the password database
/// (never $HOME), as vdeplug4's agno plugin finds `~/.vde_agno_key`.
pub fn passwd_home() -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    passwd_field(|pw| pw.pw_dir).map(|dir| std::path::PathBuf::from(std::ffi::OsString::from_vec(dir)))
}

/// One string field (`field` picks it) of our effective user's password
/// database entry, None if there is no entry or the field is null.
fn passwd_field(field: fn(&libc::passwd) -> *mut libc::c_char) -> Option<Vec<u8>> {
    // SAFETY: passwd is plain old data filled by getpwuid_r.
    let mut pw: libc::passwd = unsafe { mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the stated sizes.
    let r = unsafe { libc::getpwuid_r(geteuid(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    let p = field(&pw);
    if r != 0 || out.is_null() || p.is_null() {
        return None;
    }
    // SAFETY: the field points into buf, NUL-terminated.
    Some(unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes().to_vec())
}

#[cfg(test)]
mod nofollow_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn chmod_and_chown_at_never_follow_a_symlink() {
        let dir = std::env::temp_dir().join(format!("vdeplug-nofollow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link")).unwrap();
        let d = open_dir_nofollow(&dir).unwrap();
        let e = chmod_at_nofollow(d.as_raw_fd(), std::path::Path::new("link"), 0o666).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
        chmod_at_nofollow(d.as_raw_fd(), std::path::Path::new("target"), 0o640).unwrap();
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(open_dir_nofollow(&dir.join("link")).is_err(), "a symlink is not opened as a directory");
        unlink_at(d.as_raw_fd(), std::path::Path::new("link")).unwrap();
        assert!(target.exists(), "unlink removes the link, not its target");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod gather_tests {
    use super::*;

    #[test]
    fn gather_joins_pieces_that_lie_back_to_back() {
        let buf = [7u8; 64];
        let other = [1u8; 8];
        let mut iov = [const { mem::MaybeUninit::<libc::iovec>::uninit() }; 8];
        let mut g = Gather { iov: &mut iov, n: 0, end: None };
        for piece in [&buf[0..8], &buf[8..30], &buf[30..64], &other[..], &buf[0..4]] {
            g.push(piece);
        }
        assert_eq!(g.n, 3);
        // SAFETY: the first 3 were written.
        let lens: Vec<usize> = iov[..3].iter().map(|v| unsafe { v.assume_init_ref() }.iov_len).collect();
        assert_eq!(lens, [64, 8, 4]);
    }
}
