//! TSO/USO in software: a super-frame read from a tap (virtio-net header
//! with a GSO type) becomes frames of at most `gso_size` bytes of payload,
//! each with its own IP length/ID/checksum and TCP sequence number, flags
//! and checksum (or UDP length and checksum), as the kernel's
//! tcp_gso_segment/udp4_ufo would have produced them on a real NIC.
//! Ordinary frames with a partial checksum (NEEDS_CSUM) get it finished.

use super::{Layout, TCP, UDP};
use crate::wire::checksum;
use crate::wire::virtio_net::{self, Header};

/// Why a frame from the tap cannot be passed on (it is counted and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("offload request for a frame that is not TCP/UDP over IPv4/IPv6")]
    NotIp,
    #[error("GSO type {0} not supported")]
    GsoType(u8),
    #[error("GSO size 0 or larger than the frame allows")]
    GsoSize,
    #[error("checksum offsets outside the frame")]
    CsumRange,
}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Finish a partial checksum in place: the field at csum_start +
/// csum_offset holds the pseudo-header sum; add the bytes from csum_start
/// to the end of the packet.
pub fn finish_checksum(h: &Header, frame: &mut [u8]) -> Result<(), Error> {
    let start = h.csum_start as usize;
    let at = start + h.csum_offset as usize;
    // A TCP/UDP packet ends where IP says (Ethernet padding is not summed).
    let lay = Layout::of(frame).filter(|l| l.l4 == start);
    let end = lay.map_or(frame.len(), |l| l.end);
    if at + 2 > end || start > end {
        return Err(Error::CsumRange);
    }
    let c = checksum::finish(checksum::add(0, &frame[start..end]));
    // UDP sends a computed 0 as ffff (0 means "no checksum").
    let c = if c == 0 && lay.is_some_and(|l| l.proto == UDP) { 0xffff } else { c };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// One super-frame being cut into segments, one `next_into` at a time (a
/// batch may fill up half-way; the rest comes on the next call).
#[derive(Debug, Clone)]
pub struct Segmenter {
    lay: Layout,
    mss: usize,
    /// Bytes of payload already handed out.
    done: usize,
    index: u16,
    ip_id: u16,
    /// IPv4 header sum without its length, ID and checksum; the
    /// pseudo-header sum without its length: per segment only those are
    /// added (no re-reading of headers just written).
    ip_sum: u64,
    pseudo: u64,
    seq: u32,
    tcp_flags: u8,
}

impl Segmenter {
    /// Check `frame` against its virtio-net header `h` (whose gso_type is
    /// not NONE) and prepare to segment it.
    pub fn new(h: &Header, frame: &[u8]) -> Result<Segmenter, Error> {
        let lay = Layout::of(frame).ok_or(Error::NotIp)?;
        let want = match h.gso() {
            virtio_net::GSO_TCPV4 => (TCP, false),
            virtio_net::GSO_TCPV6 => (TCP, true),
            virtio_net::GSO_UDP_L4 => (UDP, lay.v6),
            other => return Err(Error::GsoType(other)),
        };
        if (lay.proto, lay.v6) != want {
            return Err(Error::NotIp);
        }
        let mss = h.gso_size as usize;
        if mss == 0 || lay.payload + mss > crate::wire::ETH_BUFSIZE {
            return Err(Error::GsoSize);
        }
        let be16 = |i: usize| u16::from_be_bytes([frame[i], frame[i + 1]]);
        let (seq, tcp_flags) = if lay.proto == TCP { (u32::from_be_bytes([frame[lay.l4 + 4], frame[lay.l4 + 5], frame[lay.l4 + 6], frame[lay.l4 + 7]]), frame[lay.l4 + 13]) } else { (0, 0) };
        let ip_id = if lay.v6 { 0 } else { be16(lay.l3 + 4) };
        let ip_sum = if lay.v6 {
            0
        } else {
            let ip = &frame[lay.l3..lay.l4];
            checksum::add(checksum::add(checksum::add(0, &ip[..2]), &ip[6..10]), &ip[12..])
        };
        let (src, dst) = lay.addrs(frame);
        let pseudo = checksum::pseudo_raw(src, dst, lay.proto, 0);
        Ok(Segmenter { lay, mss, done: 0, index: 0, ip_id, ip_sum, pseudo, seq, tcp_flags })
    }

    fn payload_len(&self) -> usize {
        self.lay.end - self.lay.payload
    }

    /// Segments still to come.
    pub fn remaining(&self) -> usize {
        let left = self.payload_len() - self.done;
        if left == 0 {
            usize::from(self.done == 0 && self.index == 0)
        } else {
            left.div_ceil(self.mss)
        }
    }

    /// Bytes the next segment may take (headers + gso_size).
    pub fn max_len(&self) -> usize {
        self.lay.payload + self.mss
    }

    /// Write the next segment of `frame` (the same bytes given to `new`)
    /// into `out`; its length, or None when all were written. `out` must
    /// hold a full segment (headers + gso_size).
    pub fn next_into(&mut self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        if self.remaining() == 0 {
            return None;
        }
        let lay = self.lay;
        let hdr = lay.payload;
        let n = (self.payload_len() - self.done).min(self.mss);
        let len = hdr + n;
        if out.len() < len {
            return None;
        }
        let first = self.index == 0;
        let last = self.done + n == self.payload_len();
        out[..hdr].copy_from_slice(&frame[..hdr]);
        out[hdr..len].copy_from_slice(&frame[hdr + self.done..hdr + self.done + n]);
        let l3 = lay.l3;
        if lay.v6 {
            lay.set_ip_len(out, len - lay.l4);
        } else {
            let (total, id) = ((len - l3) as u16, self.ip_id.wrapping_add(self.index));
            out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            out[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
            let c = checksum::finish(self.ip_sum + u64::from(total) + u64::from(id));
            out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = lay.l4;
        if lay.proto == TCP {
            out[l4 + 4..l4 + 8].copy_from_slice(&self.seq.wrapping_add(self.done as u32).to_be_bytes());
            let mut flags = self.tcp_flags;
            if !last {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if !first {
                flags &= !TCP_CWR;
            }
            out[l4 + 13] = flags;
        } else {
            out[l4 + 4..l4 + 6].copy_from_slice(&((len - l4) as u16).to_be_bytes());
        }
        let at = lay.csum_at();
        out[at..at + 2].copy_from_slice(&[0, 0]);
        let c = checksum::finish(checksum::add(self.pseudo + (len - l4) as u64, &out[l4..len]));
        let c = if c == 0 && lay.proto == UDP { 0xffff } else { c };
        out[at..at + 2].copy_from_slice(&c.to_be_bytes());
        self.done += n;
        self.index = self.index.wrapping_add(1);
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{checksums_ok, frame, payload, Tcp};
    use super::*;
    use crate::wire::virtio_net::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};

    fn segments(h: &Header, f: &[u8]) -> Vec<Vec<u8>> {
        let mut s = Segmenter::new(h, f).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 9300];
        while let Some(n) = s.next_into(f, &mut buf) {
            out.push(buf[..n].to_vec());
        }
        assert_eq!(s.remaining(), 0);
        out
    }

    /// A super-frame as the kernel hands it over: one header, all the
    /// payload, and (with NEEDS_CSUM) only a pseudo-header checksum.
    fn superframe(t: &Tcp, udp: bool) -> Vec<u8> {
        let mut f = frame(t, udp);
        let lay = Layout::of(&f).unwrap();
        let (src, dst) = lay.addrs(&f);
        let partial = checksum::fold(checksum::pseudo_raw(src, dst, lay.proto, lay.end - lay.l4));
        let at = lay.csum_at();
        f[at..at + 2].copy_from_slice(&partial.to_be_bytes());
        f
    }

    #[test]
    fn tso_v4_v6_vlan_segments_equal_what_the_sender_would_have_sent() {
        for (v6, vlan) in [(false, false), (true, false), (false, true), (true, true)] {
            let data = payload(10_000, 3);
            let t = Tcp { v6, vlan, seq: 0xffff_f000, flags: 0x18 | 0x80, payload: data.clone(), ..Tcp::default() };
            let sf = superframe(&t, false);
            let lay = Layout::of(&sf).unwrap();
            let h = Header { flags: F_NEEDS_CSUM, gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 }, hdr_len: lay.payload as u16, gso_size: 1448, csum_start: lay.l4 as u16, csum_offset: 16 };
            let segs = segments(&h, &sf);
            assert_eq!(segs.len(), 7, "10000 bytes in 1448-byte pieces");
            for (k, s) in segs.iter().enumerate() {
                let chunk = &data[k * 1448..((k + 1) * 1448).min(data.len())];
                let last = k == segs.len() - 1;
                let mut flags = 0x10 | if last { 0x08 } else { 0 };
                if k == 0 {
                    flags |= 0x80; // CWR only on the first
                }
                let expect = frame(&Tcp { v6, vlan, seq: 0xffff_f000u32.wrapping_add((k * 1448) as u32), flags, payload: chunk.to_vec(), ip_id: 7 + k as u16, ..Tcp::default() }, false);
                assert_eq!(s, &expect, "segment {k} (v6 {v6}, vlan {vlan})");
                assert!(checksums_ok(s));
            }
        }
    }

    #[test]
    fn fin_only_on_the_last_segment_and_uso_gets_udp_headers() {
        let t = Tcp { flags: 0x11, payload: payload(3000, 1), ..Tcp::default() };
        let sf = superframe(&t, false);
        let h = Header { gso_type: GSO_TCPV4, gso_size: 1000, ..Header::default() };
        let segs = segments(&h, &sf);
        assert_eq!(segs.iter().map(|s| s[14 + 20 + 13]).collect::<Vec<_>>(), [0x10, 0x10, 0x11]);
        let u = Tcp { payload: payload(2500, 9), ..Tcp::default() };
        let sf = superframe(&u, true);
        let h = Header { gso_type: GSO_UDP_L4, gso_size: 1200, ..Header::default() };
        let segs = segments(&h, &sf);
        assert_eq!(segs.len(), 3);
        for (k, s) in segs.iter().enumerate() {
            let chunk = &u.payload[k * 1200..((k + 1) * 1200).min(2500)];
            assert_eq!(s, &frame(&Tcp { payload: chunk.to_vec(), ip_id: 7 + k as u16, ..Tcp::default() }, true));
        }
    }

    #[test]
    fn segments_can_be_taken_a_few_at_a_time() {
        let t = Tcp { payload: payload(5000, 2), ..Tcp::default() };
        let sf = superframe(&t, false);
        let h = Header { gso_type: GSO_TCPV4, gso_size: 1000, ..Header::default() };
        let mut s = Segmenter::new(&h, &sf).unwrap();
        let mut buf = vec![0u8; 2000];
        assert_eq!(s.remaining(), 5);
        assert!(s.next_into(&sf, &mut buf[..100]).is_none(), "too small: nothing taken");
        assert_eq!(s.remaining(), 5);
        for left in (0..5).rev() {
            assert!(s.next_into(&sf, &mut buf).is_some());
            assert_eq!(s.remaining(), left);
        }
        assert!(s.next_into(&sf, &mut buf).is_none());
    }

    #[test]
    fn bad_requests_are_refused_not_panicking() {
        let t = Tcp { payload: payload(3000, 1), ..Tcp::default() };
        let sf = superframe(&t, false);
        let tcp4 = Header { gso_type: GSO_TCPV4, gso_size: 1000, ..Header::default() };
        assert_eq!(Segmenter::new(&Header { gso_size: 0, ..tcp4 }, &sf).err(), Some(Error::GsoSize));
        assert_eq!(Segmenter::new(&Header { gso_type: GSO_TCPV6, ..tcp4 }, &sf).err(), Some(Error::NotIp));
        assert_eq!(Segmenter::new(&Header { gso_type: 3, ..tcp4 }, &sf).err(), Some(Error::GsoType(3)));
        assert_eq!(Segmenter::new(&tcp4, &sf[..40]).err(), Some(Error::NotIp));
        let mut x: u32 = 1;
        for len in 0..200 {
            let mut f = sf[..len.min(sf.len())].to_vec();
            for b in f.iter_mut().skip(12) {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                if x >> 28 == 0 {
                    *b = (x >> 16) as u8;
                }
            }
            if let Ok(mut s) = Segmenter::new(&tcp4, &f) {
                let mut buf = vec![0u8; 9300];
                while s.next_into(&f, &mut buf).is_some() {}
            }
            let mut g = f.clone();
            let _ = finish_checksum(&Header { flags: F_NEEDS_CSUM, csum_start: (len as u16) / 2, csum_offset: 16, ..Header::default() }, &mut g);
        }
    }

    #[test]
    fn partial_checksums_are_finished() {
        for udp in [false, true] {
            let t = Tcp { payload: payload(333, 4), ..Tcp::default() };
            let good = frame(&t, udp);
            let mut f = superframe(&t, udp);
            let lay = Layout::of(&f).unwrap();
            let h = Header { flags: F_NEEDS_CSUM, csum_start: lay.l4 as u16, csum_offset: (lay.csum_at() - lay.l4) as u16, ..Header::default() };
            finish_checksum(&h, &mut f).unwrap();
            assert_eq!(f, good);
            // Ethernet padding after a short packet is not summed.
            let short = Tcp { payload: vec![], ..Tcp::default() };
            let mut p = superframe(&short, udp);
            let good = {
                let mut g = frame(&short, udp);
                g.resize(g.len().max(60) + 4, 0);
                g
            };
            p.resize(p.len().max(60) + 4, 0);
            finish_checksum(&Header { flags: F_NEEDS_CSUM, csum_start: lay.l4 as u16, csum_offset: h.csum_offset, ..Header::default() }, &mut p).unwrap();
            assert_eq!(p, good);
        }
    }
}
