//! The virtio-net header a tap opened with IFF_VNET_HDR puts before every
//! frame (struct virtio_net_hdr, 10 bytes, little-endian on x86): whether
//! the checksum is left to us, and whether the frame is a GSO super-frame
//! to be cut into `gso_size` pieces.

use super::{Error, Result};

pub const LEN: usize = 10;

/// `flags`: the checksum at csum_start + csum_offset holds only the
/// pseudo-header sum; the rest is ours to add.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksums are known good.
pub const F_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl Header {
    /// # Errors
    /// `Truncated` when shorter than the header.
    pub fn parse(b: &[u8]) -> Result<Header> {
        if b.len() < LEN {
            return Err(Error::Truncated { len: b.len(), need: LEN });
        }
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(Header { flags: b[0], gso_type: b[1], hdr_len: u(2), gso_size: u(4), csum_start: u(6), csum_offset: u(8) })
    }

    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// The GSO kind without the ECN bit.
    pub fn gso(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_little_endian() {
        let h = Header { flags: F_NEEDS_CSUM, gso_type: GSO_TCPV4, hdr_len: 66, gso_size: 1448, csum_start: 34, csum_offset: 16 };
        let b = h.to_bytes();
        assert_eq!(b, [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]);
        assert_eq!(Header::parse(&b), Ok(h));
        assert!(Header::parse(&b[..9]).is_err());
        assert_eq!(Header { gso_type: GSO_TCPV6 | GSO_ECN, ..h }.gso(), GSO_TCPV6);
    }
}
