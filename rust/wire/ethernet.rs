//! Ethernet II frame view, with the optional 802.1Q tag. No FCS (VDE never carries it).

use super::{Error, Result, ETH_BUFSIZE};

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const VLAN_TCI: Field = 14..16;
    pub const INNER_ETHERTYPE: Field = 16..18;
}

/// Header length without a VLAN tag.
pub const HEADER_LEN: usize = field::ETHERTYPE.end;
/// 802.1Q TPID.
pub const TPID_8021Q: u16 = 0x8100;

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Address(pub [u8; 6]);

impl Address {
    pub const BROADCAST: Address = Address([0xff; 6]);

    pub fn from_bytes(b: &[u8]) -> Address {
        let mut a = [0u8; 6];
        a.copy_from_slice(&b[..6]);
        Address(a)
    }
    /// I/G bit: group (multicast or broadcast) address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// EtherType, open: unknown values are kept, never rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherType {
    Ipv4,
    Arp,
    Ipv6,
    Vlan,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            TPID_8021Q => EtherType::Vlan,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Vlan => TPID_8021Q,
            EtherType::Unknown(v) => v,
        }
    }
}

/// A read (or, with `AsMut`, write) view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap without checks; accessors may panic on short buffers.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wrap untrusted bytes: at least a full header (and the tag if one is
    /// announced), at most `ETH_BUFSIZE`.
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Frame::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// # Errors
    /// `Truncated` below 14 bytes (18 with a VLAN tag); `Oversized` above `ETH_BUFSIZE`.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated { len, need: HEADER_LEN });
        }
        if len > ETH_BUFSIZE {
            return Err(Error::Oversized { len, max: ETH_BUFSIZE });
        }
        if self.raw_ethertype() == TPID_8021Q && len < field::INNER_ETHERTYPE.end {
            return Err(Error::Truncated { len, need: field::INNER_ETHERTYPE.end });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn dst_addr(&self) -> Address {
        Address::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }
    pub fn src_addr(&self) -> Address {
        Address::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }
    fn raw_ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }
    /// The outer EtherType (`Vlan` for tagged frames).
    pub fn ethertype(&self) -> EtherType {
        self.raw_ethertype().into()
    }
    /// The 12-bit VLAN id of a tagged frame, or `None`.
    pub fn vlan_id(&self) -> Option<u16> {
        if self.raw_ethertype() != TPID_8021Q {
            return None;
        }
        let b = &self.buffer.as_ref()[field::VLAN_TCI];
        Some(u16::from_be_bytes([b[0], b[1]]) & 0x0fff)
    }
    /// The EtherType after the tag (the outer one when untagged).
    pub fn inner_ethertype(&self) -> EtherType {
        if self.vlan_id().is_some() {
            let b = &self.buffer.as_ref()[field::INNER_ETHERTYPE];
            u16::from_be_bytes([b[0], b[1]]).into()
        } else {
            self.ethertype()
        }
    }
    pub fn header_len(&self) -> usize {
        if self.vlan_id().is_some() {
            field::INNER_ETHERTYPE.end
        } else {
            HEADER_LEN
        }
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst_addr(&mut self, a: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0);
    }
    pub fn set_src_addr(&mut self, a: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0);
    }
    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(t).to_be_bytes());
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

/// High-level summary of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Address,
    pub dst: Address,
    pub vlan: Option<u16>,
    pub ethertype: EtherType,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Repr {
        Repr { src: f.src_addr(), dst: f.dst_addr(), vlan: f.vlan_id(), ethertype: f.inner_ethertype() }
    }
    pub fn buffer_len(&self) -> usize {
        if self.vlan.is_some() {
            18
        } else {
            HEADER_LEN
        }
    }
    /// Write the header into the start of `buf` (which must be `buffer_len()` long at least).
    pub fn emit(&self, buf: &mut [u8]) {
        buf[field::DESTINATION].copy_from_slice(&self.dst.0);
        buf[field::SOURCE].copy_from_slice(&self.src.0);
        match self.vlan {
            Some(v) => {
                buf[field::ETHERTYPE].copy_from_slice(&TPID_8021Q.to_be_bytes());
                buf[field::VLAN_TCI].copy_from_slice(&(v & 0x0fff).to_be_bytes());
                buf[field::INNER_ETHERTYPE].copy_from_slice(&u16::from(self.ethertype).to_be_bytes());
            }
            None => buf[field::ETHERTYPE].copy_from_slice(&u16::from(self.ethertype).to_be_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ARP request from 52:54:00:12:34:56, broadcast.
    static FRAME_BYTES: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 10, 0, 0, 1, 0, 0, 0,
        0, 0, 0, 10, 0, 0, 2,
    ];
    static TAGGED: [u8; 20] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00, 0xaa, 0xbb];

    #[test]
    fn test_deconstruct() {
        let f = Frame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(f.dst_addr(), Address::BROADCAST);
        assert!(f.dst_addr().is_multicast() && f.dst_addr().is_broadcast());
        assert_eq!(f.src_addr(), Address([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert!(f.src_addr().is_unicast());
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn test_vlan() {
        let f = Frame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.ethertype(), EtherType::Vlan);
        assert_eq!(f.vlan_id(), Some(5));
        assert_eq!(f.inner_ethertype(), EtherType::Ipv4);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn test_construct() {
        let mut buf = [0u8; 42];
        let mut f = Frame::new_unchecked(&mut buf[..]);
        f.set_dst_addr(Address::BROADCAST);
        f.set_src_addr(Address([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        f.set_ethertype(EtherType::Arp);
        f.payload_mut().copy_from_slice(&FRAME_BYTES[14..]);
        assert_eq!(buf, FRAME_BYTES);
    }

    #[test]
    fn test_parse_emit() {
        for bytes in [&FRAME_BYTES[..], &TAGGED[..]] {
            let repr = Repr::parse(&Frame::new_checked(bytes).unwrap());
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut out);
            assert_eq!(&out[..], &bytes[..repr.buffer_len()]);
        }
    }

    #[test]
    fn test_truncated() {
        assert_eq!(Frame::new_checked(&FRAME_BYTES[..13]).unwrap_err(), Error::Truncated { len: 13, need: 14 });
        assert_eq!(Frame::new_checked(&TAGGED[..16]).unwrap_err(), Error::Truncated { len: 16, need: 18 });
        let big = vec![0u8; ETH_BUFSIZE + 1];
        assert!(matches!(Frame::new_checked(&big[..]), Err(Error::Oversized { .. })));
    }

    #[test]
    fn test_unknown_ethertype_kept() {
        let t: EtherType = 0x88b5.into();
        assert_eq!(t, EtherType::Unknown(0x88b5));
        assert_eq!(u16::from(t), 0x88b5);
    }

    #[test]
    fn test_arbitrary_bytes_never_panic() {
        // Deterministic pseudo-random sweep over lengths and contents.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..80 {
            let mut buf = vec![0u8; len];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if len > 13 {
                buf[12] = 0x81;
                buf[13] = 0x00;
            }
            if let Ok(f) = Frame::new_checked(&buf[..]) {
                let _ = (Repr::parse(&f), f.payload().len());
            }
        }
    }
}
