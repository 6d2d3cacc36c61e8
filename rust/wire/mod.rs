//! Wire formats as typed views over `&[u8]` (smoltcp style): `new_checked`
//! validates untrusted input once, accessors never panic afterwards.
//! Nothing here does I/O.

pub mod checksum;
pub mod ethernet;
pub mod stream;
pub mod vde_ctl;
pub mod virtio_net;
pub mod vxlan;

/// Why a buffer is not a valid frame or header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("truncated: {len} bytes, need at least {need}")]
    Truncated { len: usize, need: usize },
    #[error("oversized: {len} bytes, at most {max}")]
    Oversized { len: usize, max: usize },
    #[error("bad VXLAN flags {0:#04x}")]
    BadFlags(u8),
    #[error("VXLAN VNI {got} is not ours ({want})")]
    WrongVni { got: u32, want: u32 },
    #[error("not a vde_switch v3 request (bad magic or version)")]
    BadMagic,
}

pub type Result<T> = core::result::Result<T, Error>;

/// Largest MTU vdeplug4 moves (jumbo frames).
pub const MAX_MTU: usize = 9216;
/// Ethernet header (14) + 802.1Q tag (4) + MTU: the buffer every frame fits in.
pub const ETH_BUFSIZE: usize = MAX_MTU + 14 + 4;
