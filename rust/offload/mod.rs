//! Tap offloads done in software, so a tap can hand us (and take from us)
//! 64 KB TCP super-frames while the wire keeps carrying one ≤ MTU frame
//! per datagram:
//! - `segment`: cut a TSO/USO super-frame read from the tap into MTU-sized
//!   frames with correct IP and TCP/UDP headers and checksums (and finish
//!   the partial checksums of ordinary frames);
//! - `coalesce`: join consecutive in-order segments of one TCP flow (their
//!   checksums verified) into one super-frame for the tap, as the kernel's
//!   GRO does; everything else passes frame by frame.
//!
//! Pure functions over bytes: no I/O, no allocation.

pub mod coalesce;
pub mod segment;

/// Where the headers of an IP frame start, after Ethernet (and at most one
/// 802.1Q tag): only the shapes the offloads handle (IPv4 without
/// fragments, IPv6 without extension headers; TCP or UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Offset of the payload (after the TCP/UDP header).
    pub payload: usize,
    /// End of the IP packet (Ethernet padding may follow).
    pub end: usize,
    pub v6: bool,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;

impl Layout {
    /// Parse `frame`'s headers; None for anything else (ARP, fragments,
    /// IP options beyond the header length, extension headers, truncation).
    pub fn of(frame: &[u8]) -> Option<Layout> {
        let be16 = |i: usize| frame.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let (mut ethertype, mut l3) = (be16(12)?, 14);
        if ethertype == ETHERTYPE_VLAN {
            ethertype = be16(16)?;
            l3 = 18;
        }
        let (l4, end, proto, v6) = match ethertype {
            ETHERTYPE_IPV4 => {
                let ihl = (*frame.get(l3)? & 0x0f) as usize * 4;
                if frame[l3] >> 4 != 4 || ihl < 20 || frame.len() < l3 + ihl {
                    return None;
                }
                let frag = be16(l3 + 6)?;
                if frag & 0x3fff != 0 {
                    return None; // MF or an offset: a fragment
                }
                (l3 + ihl, l3 + be16(l3 + 2)? as usize, frame[l3 + 9], false)
            }
            ETHERTYPE_IPV6 => {
                if *frame.get(l3)? >> 4 != 6 || frame.len() < l3 + 40 {
                    return None;
                }
                (l3 + 40, l3 + 40 + be16(l3 + 4)? as usize, frame[l3 + 6], true)
            }
            _ => return None,
        };
        let payload = match proto {
            TCP => {
                let doff = (*frame.get(l4 + 12)? >> 4) as usize * 4;
                if doff < 20 {
                    return None;
                }
                l4 + doff
            }
            UDP => l4 + 8,
            _ => return None,
        };
        if payload > end || end > frame.len() {
            return None;
        }
        Some(Layout { l3, l4, payload, end, v6, proto })
    }

    /// Source and destination address bytes.
    pub fn addrs<'a>(&self, frame: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        if self.v6 {
            (&frame[self.l3 + 8..self.l3 + 24], &frame[self.l3 + 24..self.l3 + 40])
        } else {
            (&frame[self.l3 + 12..self.l3 + 16], &frame[self.l3 + 16..self.l3 + 20])
        }
    }

    /// Rewrite the IP length field(s) of `hdr` for `l4_len` bytes of
    /// TCP/UDP header + payload; IPv4 also gets its header checksum.
    pub fn set_ip_len(&self, hdr: &mut [u8], l4_len: usize) {
        use crate::wire::checksum;
        if self.v6 {
            hdr[self.l3 + 4..self.l3 + 6].copy_from_slice(&((l4_len + self.l4 - self.l3 - 40) as u16).to_be_bytes());
        } else {
            let total = (self.l4 - self.l3 + l4_len) as u16;
            hdr[self.l3 + 2..self.l3 + 4].copy_from_slice(&total.to_be_bytes());
            hdr[self.l3 + 10..self.l3 + 12].copy_from_slice(&[0, 0]);
            let c = checksum::finish(checksum::add(0, &hdr[self.l3..self.l4]));
            hdr[self.l3 + 10..self.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
    }

    /// Offset of the TCP/UDP checksum field.
    pub fn csum_at(&self) -> usize {
        self.l4 + if self.proto == TCP { 16 } else { 6 }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Frames for the offload tests: real headers, valid checksums.
    use crate::wire::checksum;

    pub struct Tcp {
        pub v6: bool,
        pub vlan: bool,
        pub seq: u32,
        pub flags: u8,
        pub options: Vec<u8>,
        pub payload: Vec<u8>,
        pub ip_id: u16,
        pub sport: u16,
    }

    impl Default for Tcp {
        fn default() -> Self {
            Tcp { v6: false, vlan: false, seq: 1000, flags: 0x10, options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], payload: vec![], ip_id: 7, sport: 40000 }
        }
    }

    pub fn payload(n: usize, salt: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
    }

    /// An Ethernet frame carrying one TCP (or UDP if `udp`) segment.
    pub fn frame(t: &Tcp, udp: bool) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        if t.vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        let l3 = f.len() + 2;
        let l4hdr = if udp { 8 } else { 20 + t.options.len() };
        let l4len = l4hdr + t.payload.len();
        let proto = if udp { 17 } else { 6 };
        if t.v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4len as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((20 + l4len) as u16).to_be_bytes());
            f.extend_from_slice(&t.ip_id.to_be_bytes());
            f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2]);
            let c = checksum::finish(checksum::add(0, &f[l3..l3 + 20]));
            f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = f.len();
        f.extend_from_slice(&t.sport.to_be_bytes());
        f.extend_from_slice(&5201u16.to_be_bytes());
        if udp {
            f.extend_from_slice(&(l4len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        } else {
            f.extend_from_slice(&t.seq.to_be_bytes());
            f.extend_from_slice(&77u32.to_be_bytes());
            f.push(((l4hdr / 4) as u8) << 4);
            f.push(t.flags);
            f.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 0]);
            f.extend_from_slice(&t.options);
        }
        f.extend_from_slice(&t.payload);
        let (src, dst) = if t.v6 { (&f[l3 + 8..l3 + 24], &f[l3 + 24..l3 + 40]) } else { (&f[l3 + 12..l3 + 16], &f[l3 + 16..l3 + 20]) };
        let s = checksum::pseudo_raw(src, dst, proto, l4len);
        let c = checksum::finish(checksum::add(s, &f[l4..]));
        let at = l4 + if udp { 6 } else { 16 };
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// True when the frame's IP header (v4) and TCP/UDP checksums verify.
    pub fn checksums_ok(f: &[u8]) -> bool {
        let lay = super::Layout::of(f).expect("an IP frame");
        if !lay.v6 && checksum::fold(checksum::add(0, &f[lay.l3..lay.l4])) != 0xffff {
            return false;
        }
        let (src, dst) = lay.addrs(f);
        let s = checksum::pseudo_raw(src, dst, lay.proto, lay.end - lay.l4);
        checksum::fold(checksum::add(s, &f[lay.l4..lay.end])) == 0xffff
    }
}
