//! GRO in software for frames going to a tap: consecutive frames that are
//! in-order segments of one TCP flow (same headers but for lengths, IDs,
//! sequence numbers and checksums; only ACK and PSH set; every checksum
//! verified; all full-sized but the last) become one super-frame
//! with a virtio-net header, so the kernel's TCP stack takes 64 KB in one
//! go. Anything else is a run of one and goes through unchanged. Runs never
//! reorder frames.

use super::{Layout, TCP};
use crate::wire::checksum;
use crate::wire::virtio_net::{self, Header};

/// Largest IP packet a super-frame may become (IPv4's 16-bit total length).
const MAX_IP_LEN: usize = 65_535;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// What a frame looks like as a candidate segment.
#[derive(Debug, Clone, Copy)]
struct Seg {
    lay: Layout,
    seq: u32,
    len: usize,
}

/// A TCP segment with nothing but ACK (and maybe PSH) set, no urgent
/// data, IPv4 without options, and valid checksums.
fn candidate(f: &[u8]) -> Option<Seg> {
    let lay = Layout::of(f)?;
    if lay.proto != TCP || (!lay.v6 && lay.l4 - lay.l3 != 20) {
        return None;
    }
    let t = lay.l4;
    let flags = f[t + 13];
    if flags & !TCP_PSH != TCP_ACK || f[t + 18] != 0 || f[t + 19] != 0 {
        return None;
    }
    verified(f, lay)
}

/// The segment `f` with layout `lay` if it carries data and its checksums
/// (IPv4 header, TCP) verify.
fn verified(f: &[u8], lay: Layout) -> Option<Seg> {
    let t = lay.l4;
    let len = lay.end - lay.payload;
    if len == 0 {
        return None; // pure ACKs carry no data to merge
    }
    if !lay.v6 && checksum::fold(checksum::add(0, &f[lay.l3..lay.l4])) != 0xffff {
        return None;
    }
    let (src, dst) = lay.addrs(f);
    if checksum::fold(checksum::add(checksum::pseudo_raw(src, dst, TCP, lay.end - t), &f[t..lay.end])) != 0xffff {
        return None;
    }
    let seq = u32::from_be_bytes([f[t + 4], f[t + 5], f[t + 6], f[t + 7]]);
    Some(Seg { lay, seq, len })
}

/// Longest header a run may have: Ethernet + VLAN tag + IPv6 (or IPv4
/// with options) + TCP with options, rounded up to 8 bytes.
const MAX_HDR: usize = 144;

/// Which header bytes two segments of one run must share: all but the IP
/// length, ID and checksum, the sequence number, PSH and the TCP checksum.
struct SameMask {
    m: [u8; MAX_HDR],
    n: usize,
}

impl SameMask {
    fn of(lay: &Layout) -> Option<SameMask> {
        let n = lay.payload;
        if n > MAX_HDR {
            return None;
        }
        let mut m = [0u8; MAX_HDR];
        m[..n].fill(0xff);
        let (l3, t) = (lay.l3, lay.l4);
        // (start, length): IP lengths, ID and checksum; TCP sequence and checksum.
        let ip: &[(usize, usize)] = if lay.v6 { &[(l3 + 4, 2)] } else { &[(l3 + 2, 4), (l3 + 10, 2)] };
        for &(at, len) in ip.iter().chain(&[(t + 4, 4), (t + 16, 2)]) {
            m[at..at + len].fill(0);
        }
        m[t + 13] = !TCP_PSH;
        Some(SameMask { m, n })
    }

    /// Do `a` and `b` (both at least `n` bytes) agree on every masked byte?
    fn same(&self, a: &[u8], b: &[u8]) -> bool {
        // chunks_exact(8) always gives 8 bytes: the fallback is never taken.
        let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
        let (a, b, m) = (&a[..self.n], &b[..self.n], &self.m[..self.n]);
        let mut diff = 0u64;
        for ((x, y), z) in a.chunks_exact(8).zip(b.chunks_exact(8)).zip(m.chunks_exact(8)) {
            diff |= (word(x) ^ word(y)) & word(z);
        }
        let tail = self.n & !7;
        for k in tail..self.n {
            diff |= ((a[k] ^ b[k]) & m[k]) as u64;
        }
        diff == 0
    }
}

/// Where the IP packet of `f` ends, read from its length field (`lay` is
/// its layout but for `end`).
fn ip_end(f: &[u8], lay: &Layout) -> usize {
    let be16 = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]) as usize;
    if lay.v6 {
        lay.l3 + 40 + be16(lay.l3 + 4)
    } else {
        lay.l3 + be16(lay.l3 + 2)
    }
}

/// `b` as the next segment of the run that `a` (segment `fa`) starts:
/// the same headers but for lengths, IDs, sequence numbers and
/// checksums, and itself a valid segment.
fn follower(a: &[u8], fa: &Seg, mask: &SameMask, b: &[u8]) -> Option<Seg> {
    if b.len() < mask.n || !mask.same(a, b) {
        return None;
    }
    let lay = Layout { end: ip_end(b, &fa.lay), ..fa.lay };
    if lay.end > b.len() || lay.end < lay.payload {
        return None;
    }
    verified(b, lay)
}

/// Split `n` frames into runs `(first, count)`, in order: count > 1 only
/// for frames that coalesce. `frame(i)` gives frame i. Unlike the kernel's
/// GRO, a PSH does not end a run: GRO flushes there so as not to hold data
/// back waiting for more, but a run only takes frames already here (the
/// super-frame carries the PSH). TCP senders push every write, so this
/// saves a short super-frame per write.
pub fn plan<'a>(n: usize, frame: &dyn Fn(usize) -> &'a [u8], runs: &mut Vec<(usize, usize)>, max_segs: usize) {
    runs.clear();
    let mut i = 0;
    while i < n {
        let a = frame(i);
        let mut count = 1;
        if let Some((fa, mask)) = candidate(a).and_then(|fa| Some((fa, SameMask::of(&fa.lay)?))) {
            let mut prev = fa;
            let mut total = fa.lay.end - fa.lay.l3;
            while i + count < n && count < max_segs && prev.len == fa.len {
                let Some(fb) = follower(a, &fa, &mask, frame(i + count)) else { break };
                if fb.seq != prev.seq.wrapping_add(prev.len as u32) || fb.len > fa.len || total + fb.len > MAX_IP_LEN {
                    break;
                }
                total += fb.len;
                prev = fb;
                count += 1;
            }
        }
        runs.push((i, count));
        i += count;
    }
}

/// The virtio-net header and the packet headers (written into `hdr`,
/// returning their length) of the super-frame made of `frames` — a run
/// `plan` found. The payloads that follow go into `payloads[..frames.len()]`.
pub fn super_header<'a>(frames: &[&'a [u8]], hdr: &mut [u8], payloads: &mut [&'a [u8]]) -> Option<(Header, usize)> {
    let first = frames.first()?;
    let lay = Layout::of(first)?;
    let h = lay.payload;
    if hdr.len() < h || payloads.len() < frames.len() {
        return None;
    }
    hdr[..h].copy_from_slice(&first[..h]);
    let mut payload = 0;
    let mut psh = 0;
    // `plan` checked that every frame of a run has the first one's layout.
    for (f, p) in frames.iter().zip(payloads.iter_mut()) {
        if f.len() < lay.payload {
            return None;
        }
        *p = f.get(lay.payload..ip_end(f, &lay))?;
        payload += p.len();
        psh |= f[lay.l4 + 13] & TCP_PSH;
    }
    let l4_len = h - lay.l4 + payload;
    lay.set_ip_len(hdr, l4_len);
    hdr[lay.l4 + 13] |= psh;
    // NEEDS_CSUM: the field holds the pseudo-header sum, the kernel trusts
    // (and, if it forwards the packet, completes) the rest.
    let (src, dst) = lay.addrs(hdr);
    let partial = checksum::fold(checksum::pseudo_raw(src, dst, TCP, l4_len));
    hdr[lay.l4 + 16..lay.l4 + 18].copy_from_slice(&partial.to_be_bytes());
    let vh = Header {
        flags: virtio_net::F_NEEDS_CSUM,
        gso_type: if lay.v6 { virtio_net::GSO_TCPV6 } else { virtio_net::GSO_TCPV4 },
        hdr_len: h as u16,
        gso_size: (lay.end - lay.payload) as u16,
        csum_start: lay.l4 as u16,
        csum_offset: 16,
    };
    Some((vh, h))
}

#[cfg(test)]
mod tests {
    use super::super::segment::Segmenter;
    use super::super::testutil::{frame, payload, Tcp};
    use super::*;

    fn seg(seq: u32, n: usize, flags: u8) -> Vec<u8> {
        frame(&Tcp { seq, flags, payload: payload(n, seq as u8), ..Tcp::default() }, false)
    }

    fn runs_of(frames: &[Vec<u8>]) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        plan(frames.len(), &|i| &frames[i][..], &mut runs, 64);
        runs
    }

    #[test]
    fn in_order_segments_of_one_flow_coalesce_and_nothing_else() {
        let mss = 1448;
        let mut f = vec![seg(100, mss, 0x10), seg(100 + 1448, mss, 0x10), seg(100 + 2896, 500, 0x18)];
        assert_eq!(runs_of(&f), [(0, 3)]);
        // A gap in sequence numbers, another flow, a short middle segment, a SYN.
        f.push(seg(9000, mss, 0x10));
        f.push(frame(&Tcp { seq: 9000 + 1448, sport: 1, payload: payload(mss, 1), ..Tcp::default() }, false));
        f.push(seg(20000, 100, 0x10));
        f.push(seg(20100, mss, 0x10));
        f.push(seg(30000, mss, 0x02 | 0x10));
        assert_eq!(runs_of(&f), [(0, 3), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1)]);
        // A PSH in the middle does not end a run; the super-frame carries it.
        let f = vec![seg(0, mss, 0x10), seg(1448, mss, 0x18), seg(2896, mss, 0x10), seg(4344, mss, 0x10)];
        assert_eq!(runs_of(&f), [(0, 4)]);
        let refs: Vec<&[u8]> = f.iter().map(|x| &x[..]).collect();
        let (mut hdr, mut payloads) = ([0u8; 128], [&[][..]; 4]);
        let (_, h) = super_header(&refs, &mut hdr, &mut payloads).unwrap();
        assert_eq!(hdr[Layout::of(&f[0]).unwrap().l4 + 13], 0x18, "PSH|ACK");
        assert_eq!(h, Layout::of(&f[0]).unwrap().payload);
    }

    /// Any header byte but lengths, IDs, sequence numbers, PSH and
    /// checksums ends a run (the frame is then re-checksummed so that only
    /// the header difference can stop it).
    #[test]
    fn a_run_ends_at_any_other_header_difference() {
        let fix = |f: &mut Vec<u8>| {
            let lay = Layout::of(f).unwrap();
            f[lay.l3 + 10..lay.l3 + 12].copy_from_slice(&[0, 0]);
            let c = checksum::finish(checksum::add(0, &f[lay.l3..lay.l4]));
            f[lay.l3 + 10..lay.l3 + 12].copy_from_slice(&c.to_be_bytes());
            f[lay.l4 + 16..lay.l4 + 18].copy_from_slice(&[0, 0]);
            let (src, dst) = lay.addrs(f);
            let c = checksum::finish(checksum::add(checksum::pseudo_raw(src, dst, TCP, lay.end - lay.l4), &f[lay.l4..lay.end]));
            f[lay.l4 + 16..lay.l4 + 18].copy_from_slice(&c.to_be_bytes());
        };
        // Ethernet source, TOS, TTL, window, an option byte.
        for at in [6, 14 + 1, 14 + 8, 14 + 20 + 14, 14 + 20 + 25] {
            let mut f = vec![seg(0, 1448, 0x10), seg(1448, 1448, 0x10), seg(2896, 1448, 0x10)];
            f[1][at] ^= 0x40;
            fix(&mut f[1]);
            assert!(candidate(&f[1]).is_some(), "byte {at}: still a valid segment on its own");
            assert_eq!(runs_of(&f), [(0, 1), (1, 1), (2, 1)], "byte {at}");
        }
        let mut f = vec![seg(0, 1448, 0x10), seg(1448, 1448, 0x10)];
        f[1][14 + 4] ^= 0x55; // the IP ID may differ
        fix(&mut f[1]);
        assert_eq!(runs_of(&f), [(0, 2)]);
    }

    #[test]
    fn bad_checksums_and_non_tcp_pass_alone() {
        let mut bad = seg(1448, 1448, 0x10);
        let n = bad.len();
        bad[n - 1] ^= 1;
        let f = vec![seg(0, 1448, 0x10), bad, seg(2896, 1448, 0x10)];
        assert_eq!(runs_of(&f), [(0, 1), (1, 1), (2, 1)]);
        let arp = vec![0xffu8; 60];
        let udp = frame(&Tcp { payload: payload(100, 0), ..Tcp::default() }, true);
        assert_eq!(runs_of(&[arp, udp]), [(0, 1), (1, 1)]);
    }

    #[test]
    fn a_coalesced_run_segments_back_into_the_same_frames() {
        for v6 in [false, true] {
            let frames: Vec<Vec<u8>> = (0..5u32)
                .map(|k| {
                    frame(
                        &Tcp { v6, seq: 7 + k * 1000, flags: if k == 4 { 0x18 } else { 0x10 }, payload: payload(if k == 4 { 321 } else { 1000 }, k as u8), ip_id: 50 + k as u16, ..Tcp::default() },
                        false,
                    )
                })
                .collect();
            assert_eq!(runs_of(&frames), [(0, 5)]);
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            let mut hdr = [0u8; 256];
            let mut payloads: Vec<&[u8]> = vec![&[]; refs.len()];
            let (vh, h) = super_header(&refs, &mut hdr, &mut payloads).unwrap();
            let mut sup = hdr[..h].to_vec();
            for p in &payloads {
                sup.extend_from_slice(p);
            }
            assert_eq!(vh.gso_size, 1000);
            assert_eq!(vh.flags, virtio_net::F_NEEDS_CSUM);
            // What the kernel would do with it on the way out: segment again.
            let mut s = Segmenter::new(&vh, &sup).unwrap();
            let mut buf = vec![0u8; 9300];
            for (k, f) in frames.iter().enumerate() {
                let n = s.next_into(&sup, &mut buf).unwrap();
                let mut want = f.clone();
                if !v6 {
                    // IDs follow the first's.
                    want[14 + 4..14 + 6].copy_from_slice(&(50 + k as u16).to_be_bytes());
                }
                assert_eq!(&buf[..n], &want[..], "segment {k}");
            }
        }
    }

    #[test]
    fn runs_stop_at_the_ip_length_limit_and_max_segs() {
        let frames: Vec<Vec<u8>> = (0..60u32).map(|k| seg(k * 1448, 1448, 0x10)).collect();
        let runs = runs_of(&frames);
        assert!(runs.iter().all(|&(_, c)| 40 + c * 1448 + 12 <= MAX_IP_LEN), "{runs:?}");
        assert_eq!(runs.iter().map(|r| r.1).sum::<usize>(), 60);
        let mut small = Vec::new();
        plan(frames.len(), &|i| &frames[i][..], &mut small, 8);
        assert!(small.iter().all(|&(_, c)| c <= 8));
    }
}
