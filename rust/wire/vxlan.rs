//! VXLAN header (RFC 7348): flags with the I bit, 24-bit VNI. vxlan:// and
//! vxvde:// both use it; vxvde additionally requires the reserved bytes to be 0.
//!
//! Our extension, for overlays without multicast: *control messages* have
//! the last reserved byte set to a kind and carry no frame. A peer list
//! (`PEER_LIST`) carries flood peers, each `family (4|6) · port (BE16) ·
//! address`; a probe (`PROBE`) carries an 8-byte cookie that the receiver
//! echoes in a `PROBE_ACK`. The kernel's vxlan and strict parsers drop
//! them (reserved bits set).

use super::{Error, Result};

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const FLAGS: usize = 0;
    pub const RESERVED1: Field = 1..4;
    pub const VNI: Field = 4..7;
    pub const RESERVED2: usize = 7;
    pub const PAYLOAD: core::ops::RangeFrom<usize> = 8..;
}

pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// The "I" flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
pub const MAX_VNI: u32 = 0x00ff_ffff;

#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }
    /// # Errors
    /// `Truncated` when shorter than the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated { len, need: HEADER_LEN });
        }
        Ok(Packet { buffer })
    }
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }
    /// True when all reserved bits are zero.
    pub fn reserved_clear(&self) -> bool {
        let b = self.buffer.as_ref();
        b[field::RESERVED1].iter().all(|&x| x == 0) && b[field::RESERVED2] == 0
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// Parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub vni: u32,
}

impl Repr {
    /// Validate a received header against the VNI we serve. `strict` (vxvde)
    /// also requires exact flags and zero reserved bytes.
    ///
    /// # Errors
    /// `BadFlags` without the I bit (or, strict, any other bit); `WrongVni`.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, want_vni: u32, strict: bool) -> Result<Repr> {
        let flags = p.flags();
        if flags & FLAG_I == 0 || (strict && (flags != FLAG_I || !p.reserved_clear())) {
            return Err(Error::BadFlags(flags));
        }
        let vni = p.vni();
        if vni != want_vni {
            return Err(Error::WrongVni { got: vni, want: want_vni });
        }
        Ok(Repr { vni })
    }
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    /// The 8 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let v = (self.vni & MAX_VNI).to_be_bytes();
        [FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]
    }
    pub fn emit(&self, buf: &mut [u8]) {
        buf[..HEADER_LEN].copy_from_slice(&self.to_bytes());
    }
}

/// The last reserved byte of each control message.
pub const PEER_LIST: u8 = 0x50;
pub const PROBE: u8 = 0x51;
pub const PROBE_ACK: u8 = 0x52;
/// A probe's (and its answer's) cookie: small, so that probing every host
/// of a peer list (7 bytes an IPv4 entry) costs under 3× the list.
pub const COOKIE_LEN: usize = 8;
/// A whole probe or answer: header and cookie.
pub const PROBE_LEN: usize = HEADER_LEN + COOKIE_LEN;

/// The kinds of control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    PeerList,
    Probe,
    ProbeAck,
}

/// Which control message this header starts, if any (whatever its VNI).
pub fn control_kind(header: &[u8; HEADER_LEN]) -> Option<Control> {
    if header[field::FLAGS] != FLAG_I || header[field::RESERVED1] != [0, 0, 0] {
        return None;
    }
    match header[field::RESERVED2] {
        PEER_LIST => Some(Control::PeerList),
        PROBE => Some(Control::Probe),
        PROBE_ACK => Some(Control::ProbeAck),
        _ => None,
    }
}

/// Is this header a peer list (whatever its VNI)?
pub fn is_peer_list(header: &[u8; HEADER_LEN]) -> bool {
    control_kind(header) == Some(Control::PeerList)
}

impl Repr {
    /// The header of a control message of `kind` for this VNI.
    pub fn control_header(&self, kind: Control) -> [u8; HEADER_LEN] {
        let mut h = self.to_bytes();
        h[field::RESERVED2] = match kind {
            Control::PeerList => PEER_LIST,
            Control::Probe => PROBE,
            Control::ProbeAck => PROBE_ACK,
        };
        h
    }

    /// The header of a peer list for this VNI.
    pub fn peer_list_header(&self) -> [u8; HEADER_LEN] {
        self.control_header(Control::PeerList)
    }
}

/// Append entries for `peers` to `out` while it stays within `max` bytes;
/// returns how many peers went in.
pub fn emit_peers(peers: &[std::net::SocketAddr], out: &mut Vec<u8>, max: usize) -> usize {
    let mut n = 0;
    for p in peers {
        let (fam, addr): (u8, Vec<u8>) = match p.ip() {
            std::net::IpAddr::V4(a) => (4, a.octets().to_vec()),
            std::net::IpAddr::V6(a) => (6, a.octets().to_vec()),
        };
        if out.len() + 3 + addr.len() > max {
            break;
        }
        out.push(fam);
        out.extend_from_slice(&p.port().to_be_bytes());
        out.extend_from_slice(&addr);
        n += 1;
    }
    n
}

/// The peers of a peer list's payload; stops at the first malformed entry.
pub fn parse_peers(mut payload: &[u8]) -> impl Iterator<Item = std::net::SocketAddr> + '_ {
    std::iter::from_fn(move || {
        let (&fam, rest) = payload.split_first()?;
        let alen = match fam {
            4 => 4,
            6 => 16,
            _ => return None,
        };
        if rest.len() < 2 + alen {
            return None;
        }
        let port = u16::from_be_bytes([rest[0], rest[1]]);
        let a = &rest[2..2 + alen];
        let ip = match <[u8; 4]>::try_from(a) {
            Ok(v4) => std::net::IpAddr::from(v4),
            Err(_) => std::net::IpAddr::from(<[u8; 16]>::try_from(a).ok()?),
        };
        payload = &rest[2 + alen..];
        Some(std::net::SocketAddr::new(ip, port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    static PACKET: [u8; 12] = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xde, 0xad, 0xbe, 0xef];

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.flags(), FLAG_I);
        assert_eq!(p.vni(), 0x123456);
        assert!(p.reserved_clear());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn test_construct() {
        let mut buf = [0u8; 12];
        Repr { vni: 0x123456 }.emit(&mut buf);
        Packet::new_unchecked(&mut buf[..]).payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn test_parse() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(Repr::parse(&p, 0x123456, true), Ok(Repr { vni: 0x123456 }));
        assert_eq!(Repr::parse(&p, 1, false), Err(Error::WrongVni { got: 0x123456, want: 1 }));
    }

    #[test]
    fn test_emit() {
        assert_eq!(Repr { vni: 1 }.to_bytes(), [8, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(Repr { vni: 0xffffff }.to_bytes(), [8, 0, 0, 0, 0xff, 0xff, 0xff, 0]);
    }

    #[test]
    fn test_flags() {
        let mut b = PACKET;
        b[0] = 0;
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap(), 0x123456, false), Err(Error::BadFlags(0)));
        b[0] = 0x0c; // I plus another bit: accepted by vxlan, not by vxvde
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(Repr::parse(&p, 0x123456, false).is_ok());
        assert!(Repr::parse(&p, 0x123456, true).is_err());
        b[0] = 0x08;
        b[7] = 1;
        assert!(Repr::parse(&Packet::new_checked(&b[..]).unwrap(), 0x123456, true).is_err());
    }

    #[test]
    fn peer_lists() {
        let h = Repr { vni: 7 }.peer_list_header();
        assert!(is_peer_list(&h) && !is_peer_list(&Repr { vni: 7 }.to_bytes()));
        let p = Packet::new_checked(&h[..]).unwrap();
        assert!(Repr::parse(&p, 7, true).is_err(), "strict parsers (C vxvde) drop it");
        let peers: Vec<std::net::SocketAddr> = vec!["10.0.0.2:4789".parse().unwrap(), "[fd00::3]:14789".parse().unwrap(), "10.0.0.4:1".parse().unwrap()];
        let mut out = Vec::new();
        assert_eq!(emit_peers(&peers, &mut out, 7 + 19), 2, "stops at max");
        assert_eq!(parse_peers(&out).collect::<Vec<_>>(), peers[..2]);
        out.push(4);
        out.push(0);
        assert_eq!(parse_peers(&out).count(), 2, "a truncated entry ends the list");
        assert_eq!(parse_peers(&[9, 0, 0, 1, 2, 3, 4]).count(), 0, "unknown family");
    }

    #[test]
    fn control_kinds() {
        let r = Repr { vni: 7 };
        for k in [Control::PeerList, Control::Probe, Control::ProbeAck] {
            assert_eq!(control_kind(&r.control_header(k)), Some(k));
        }
        assert_eq!(control_kind(&r.to_bytes()), None, "a frame");
        let mut h = r.control_header(Control::Probe);
        h[1] = 1;
        assert_eq!(control_kind(&h), None, "other reserved bits set");
        h = r.to_bytes();
        h[7] = 0x53;
        assert_eq!(control_kind(&h), None, "unknown kind");
    }

    #[test]
    fn test_truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&PACKET[..n]).unwrap_err(), Error::Truncated { len: n, need: 8 });
        }
        assert!(Packet::new_checked(&PACKET[..8]).is_ok());
    }
}
