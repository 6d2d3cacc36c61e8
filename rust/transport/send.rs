//! Sending datagrams: the one batched sender (sendmmsg, UDP GSO runs), how
//! long a send may wait for a full peer, and which errors only drop a frame.

use std::io;
use std::os::fd::RawFd;

use super::{Batch, FrameRef};

#[derive(Debug, Default)]
pub struct SendOutcome {
    pub sent: usize,
    pub dropped: usize,
    /// A hard error (the peer is gone): the caller decides whether it is fatal.
    pub error: Option<io::Error>,
    /// Sends with explicit destinations that failed for a reason about the
    /// destination (`is_about_destination`): the index of the first frame
    /// of each failed run (one destination) and the errno. Those frames
    /// are counted in `dropped`; the rest of the batch went on.
    pub bad_dest: Vec<(usize, i32)>,
}

impl SendOutcome {
    /// Nothing of `n` frames went out because of `e`.
    pub fn failed(n: usize, e: io::Error) -> Self {
        let error = if is_transient(&e) { None } else { Some(e) };
        SendOutcome { sent: 0, dropped: n, error, bad_dest: Vec::new() }
    }
}

/// How long a datagram send waits for room at a full peer before the frame
/// is dropped. Bounded, so two plugs sending to each other cannot deadlock
/// (unix datagram queues hold only ~10 frames), yet a briefly busy peer
/// still gets backpressure instead of losses.
pub const SEND_PATIENCE_MS: i32 = 10;

static PATIENCE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(SEND_PATIENCE_MS);

/// Change the send patience (ms) of this process; 0 drops at once. A traffic
/// generator that must keep reading while it sends uses 0.
pub fn set_send_patience(ms: i32) {
    PATIENCE.store(ms.max(0), std::sync::atomic::Ordering::Relaxed);
}

pub fn send_patience() -> i32 {
    PATIENCE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Send one datagram on a connected unix socket opened with
/// `bound_sends`: one system call that waits for room at most
/// SEND_PATIENCE_MS (the socket's SO_SNDTIMEO), as vdeplug4's blocking send
/// but bounded; with patience 0, not at all.
pub fn send_bounded(fd: RawFd, frame: &[u8]) -> io::Result<usize> {
    if send_patience() == 0 {
        return crate::sys::send(fd, frame, libc::MSG_DONTWAIT);
    }
    crate::sys::send(fd, frame, 0)
}

/// Give a (blocking) socket the send timeout `send_bounded` relies on.
pub fn bound_sends(sock: &std::os::unix::net::UnixDatagram) -> io::Result<()> {
    sock.set_write_timeout(Some(std::time::Duration::from_millis(SEND_PATIENCE_MS as u64)))
}

/// Send one datagram on a connected socket without blocking for long.
pub fn send_patiently(fd: RawFd, frame: &[u8]) -> io::Result<usize> {
    match crate::sys::send(fd, frame, libc::MSG_DONTWAIT) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && crate::sys::poll_out(fd, send_patience())? => crate::sys::send(fd, frame, libc::MSG_DONTWAIT),
        r => r,
    }
}

/// Frame i's destination: a socket address and its length.
type DestFn<'f, 'd> = &'f dyn Fn(usize) -> (&'d libc::sockaddr_storage, libc::socklen_t);

/// The one batched datagram sender (udp, ptp, vde, vxlan, vxvde): frames
/// `0..n` (each `prefix` + `frame(i)`, to `dest(i)` or the connected peer)
/// go out with sendmmsg; with `gso`, consecutive equal-size frames to one
/// destination leave as a single UDP GSO send (one buffer when they lie
/// back to back, each behind a copy of `prefix`, see `FrameRef`). A train the kernel refuses
/// (segment above the path MTU, no GSO here) is resent as single datagrams.
/// A full peer gets `patience_ms` (usually `send_patience()`), then the
/// rest is dropped.
#[allow(clippy::too_many_arguments)]
pub fn send_datagrams<'a, 'd>(
    fd: RawFd,
    prefix: &[u8],
    n: usize,
    frame: &dyn Fn(usize) -> FrameRef<'a>,
    dest: Option<DestFn<'_, 'd>>,
    same_dest: &dyn Fn(usize, usize) -> bool,
    gso: &mut bool,
    patience_ms: i32,
) -> SendOutcome {
    use super::gso_runs::{plan_gso_runs, GSO_MAX_SEGS};
    use crate::sys::{send_gso, GsoRun, MAX_BATCH};
    let mut out = SendOutcome::default();
    let mut start = 0;
    while start < n {
        let chunk = (n - start).min(MAX_BATCH);
        let mut runs = [GsoRun::default(); MAX_BATCH];
        let max_segs = if *gso { GSO_MAX_SEGS } else { 1 };
        let nr = plan_gso_runs(chunk, prefix.len(), |i| frame(start + i).len(), |a, b| same_dest(start + a, start + b), &mut runs, max_segs);
        let at = |i: usize| frame(start + i);
        let dest_at = dest.map(|d| move |i: usize| d(start + i));
        let dest_ref = dest_at.as_ref().map(|d| d as &dyn Fn(usize) -> (&'d libc::sockaddr_storage, libc::socklen_t));
        let mut done = 0;
        while done < nr {
            match send_gso(fd, prefix, &runs[done..nr], at, dest_ref) {
                Ok(0) => break,
                Ok(k) => {
                    out.sent += runs[done..done + k].iter().map(|r| r.count).sum::<usize>();
                    done += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if patience_ms == 0 || !crate::sys::poll_out(fd, patience_ms).unwrap_or(false) {
                        break;
                    }
                }
                Err(e) if runs[done].count > 1 && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EMSGSIZE | libc::EIO | libc::EOPNOTSUPP | libc::ENOPROTOOPT)) => {
                    if matches!(e.raw_os_error(), Some(libc::EIO | libc::EOPNOTSUPP | libc::ENOPROTOOPT)) {
                        *gso = false; // no GSO on this socket or path
                    }
                    let r = runs[done];
                    let first = start + r.first;
                    let sub_dest = dest.map(|d| move |i: usize| d(first + i));
                    let sub_ref = sub_dest.as_ref().map(|d| d as &dyn Fn(usize) -> (&'d libc::sockaddr_storage, libc::socklen_t));
                    let sub = send_datagrams(fd, prefix, r.count, &|i| frame(first + i), sub_ref, &|_, _| true, &mut false, patience_ms);
                    out.sent += sub.sent;
                    out.dropped += sub.dropped;
                    out.bad_dest.extend(sub.bad_dest.iter().map(|&(i, e)| (i + r.first + start, e)));
                    if sub.error.is_some() {
                        out.error = sub.error;
                        return out;
                    }
                    done += 1;
                }
                Err(e) if dest.is_some() && is_about_destination(&e) => {
                    out.bad_dest.push((start + runs[done].first, e.raw_os_error().unwrap_or(0)));
                    out.dropped += runs[done].count;
                    done += 1;
                }
                Err(e) if is_transient(&e) => {
                    out.dropped += runs[done].count;
                    done += 1;
                }
                Err(e) => {
                    out.dropped += runs[done..nr].iter().map(|r| r.count).sum::<usize>();
                    out.error = Some(e);
                    return out;
                }
            }
        }
        out.dropped += runs[done..nr].iter().map(|r| r.count).sum::<usize>();
        start += chunk;
    }
    out
}

/// Batched send on a connected unix datagram socket (ptp, vde): no GSO.
pub fn send_connected(fd: RawFd, batch: &Batch, idx: &[usize]) -> SendOutcome {
    send_datagrams(fd, &[], idx.len(), &|i| batch.frame_ref(idx[i]), None, &|_, _| true, &mut false, send_patience())
}

/// A frame dropped on purpose (a nested plugin filtered it): the error a
/// single `send` reports so the endpoint counts it in drops_out.
#[derive(Debug)]
pub struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("frame dropped by a filter")
    }
}

impl std::error::Error for Dropped {}

pub fn dropped() -> io::Error {
    io::Error::other(Dropped)
}

/// For a send with an explicit destination (unconnected UDP): is this error
/// about that destination (no route, a broadcast without SO_BROADCAST, the
/// other address family, a firewall …) rather than about our socket? Only
/// a broken socket (EBADF, ENOTSOCK, EFAULT, ENOMEM) and the transient
/// errors are not. An error about the destination is counted against it
/// and never ends the endpoint.
pub fn is_about_destination(e: &io::Error) -> bool {
    match e.raw_os_error() {
        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::ENOMEM) | None => false,
        // EPERM is often host-wide (a full conntrack table, an OUTPUT
        // policy): it drops the frame, not the destination.
        Some(libc::EAGAIN | libc::EINTR | libc::ENOBUFS | libc::EPERM) => false,
        Some(_) => true,
    }
}

/// Errors after which the link is still usable: the frame is just dropped.
/// (EPERM: a unix datagram peer still bound to a previous partner, or a
/// firewall rule.)
pub fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
        || e.get_ref().is_some_and(|r| r.is::<Dropped>())
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOBUFS | libc::EMSGSIZE | libc::ECONNREFUSED | libc::ENOTCONN | libc::EDESTADDRREQ | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EINVAL | libc::EPERM)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A destination of the wrong family (EAFNOSUPPORT) or a broadcast
    /// (EACCES) fails alone: it is reported, and the others still go out.
    #[test]
    fn an_error_about_one_destination_spares_the_others() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let good: std::net::SocketAddr = rx.local_addr().unwrap();
        let dests: Vec<std::net::SocketAddr> = vec![good, "[::ffff:10.9.1.4]:4789".parse().unwrap(), good, "127.255.255.255:4789".parse().unwrap(), good];
        let mut ss = vec![crate::sys::zeroed_storage(); dests.len()];
        let lens: Vec<libc::socklen_t> = dests.iter().zip(ss.iter_mut()).map(|(d, s)| crate::sys::std_to_sockaddr(d, s)).collect();
        let frame = [7u8; 60];
        let o = send_datagrams(tx.as_raw_fd(), b"HDR", dests.len(), &|_| FrameRef::from(&frame[..]), Some(&|k| (&ss[k], lens[k])), &|a, b| dests[a] == dests[b], &mut true, 100);
        assert!(o.error.is_none(), "{:?}", o.error);
        assert_eq!((o.sent, o.dropped), (3, 2));
        assert_eq!(o.bad_dest, vec![(1, libc::EAFNOSUPPORT), (3, libc::EACCES)]);
        let mut buf = [0u8; 128];
        for _ in 0..3 {
            assert_eq!(rx.recv(&mut buf).unwrap(), 63);
        }
    }

    /// Frames cut back to back behind the prefix (one buffer for the
    /// kernel), one behind other bytes, and one in its own buffer: on the
    /// wire every datagram is exactly prefix + frame.
    #[test]
    fn runs_given_as_one_buffer_arrive_as_the_same_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let prefix = *b"VXLANHDR";
        let frames: Vec<Vec<u8>> = (0..6u8).map(|k| vec![k + 1; if k == 5 { 300 } else { 1000 }]).collect();
        let mut pool = super::super::batch::BufPool::new(16 << 10, 1);
        assert!(pool.pick_free());
        let buf = pool.current_mut().unwrap();
        let mut at = 0;
        let mut offs = Vec::new();
        for (k, f) in frames.iter().enumerate() {
            buf[at..at + 8].copy_from_slice(if k == 3 { b"OTHERHDR" } else { &prefix });
            buf[at + 8..at + 8 + f.len()].copy_from_slice(f);
            offs.push(at + 8);
            at += 8 + f.len();
        }
        let mut batch = Batch::new(8);
        batch.bufs[0][..1000].copy_from_slice(&[9; 1000]);
        batch.lens[0] = 1000;
        batch.count = 1;
        for (f, &o) in frames.iter().zip(&offs) {
            assert!(batch.push_view(pool.current(), o, f.len()));
        }
        let idx: Vec<usize> = (0..batch.count).collect();
        let mut gso = true;
        let o = send_datagrams(tx.as_raw_fd(), &prefix, idx.len(), &|i| batch.frame_ref(idx[i]), None, &|_, _| true, &mut gso, 1000);
        assert_eq!((o.sent, o.dropped, o.error.is_none()), (7, 0, true));
        let mut got = vec![0u8; 2000];
        for i in 0..batch.count {
            let n = rx.recv(&mut got).unwrap();
            let mut want = prefix.to_vec();
            want.extend_from_slice(batch.frame(i));
            assert_eq!(&got[..n], &want[..], "datagram {i}");
        }
    }
}
