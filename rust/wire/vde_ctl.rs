//! The vde_switch control protocol (vde2/vdeplug4): a client connects to
//! `DIR/ctl` (unix stream) and sends one request announcing its datagram
//! socket; the switch answers with the path of the datagram socket it made
//! for this port. Packed, host byte order:
//!
//! ```text
//! request: u32 magic 0xfeedface | u32 version 3 | i32 type | sockaddr_un (110) | descr (<=128, no NUL)
//! reply:   sockaddr_un (110)
//! ```
//! `type` is REQ_NEW_CONTROL (0) + port << 8, or REQ_NEW_PORT0 (1).

use super::{Error, Result};

pub const MAGIC: u32 = 0xfeed_face;
pub const VERSION: u32 = 3;
pub const REQ_NEW_CONTROL: i32 = 0;
pub const REQ_NEW_PORT0: i32 = 1;
/// sizeof(struct sockaddr_un) on Linux.
pub const SOCKADDR_UN_LEN: usize = 110;
pub const SUN_PATH_LEN: usize = 108;
pub const MAX_DESCR: usize = 128;

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const MAGIC: Field = 0..4;
    pub const VERSION: Field = 4..8;
    pub const TYPE: Field = 8..12;
    pub const SOCK: Field = 12..122;
    pub const DESCR: core::ops::RangeFrom<usize> = 122..;
}

pub const REQUEST_MIN_LEN: usize = field::SOCK.end;

/// Encode a `struct sockaddr_un` for `path`.
///
/// # Errors
/// `Oversized` when the path does not fit in sun_path with its NUL.
pub fn encode_sockaddr_un(path: &[u8]) -> Result<[u8; SOCKADDR_UN_LEN]> {
    if path.len() >= SUN_PATH_LEN {
        return Err(Error::Oversized { len: path.len(), max: SUN_PATH_LEN - 1 });
    }
    let mut out = [0u8; SOCKADDR_UN_LEN];
    out[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    out[2..2 + path.len()].copy_from_slice(path);
    Ok(out)
}

/// The path inside a `struct sockaddr_un` (up to the first NUL).
///
/// # Errors
/// `Truncated` when shorter than a sockaddr_un.
pub fn decode_sockaddr_un(b: &[u8]) -> Result<&[u8]> {
    if b.len() < SOCKADDR_UN_LEN {
        return Err(Error::Truncated { len: b.len(), need: SOCKADDR_UN_LEN });
    }
    let p = &b[2..SOCKADDR_UN_LEN];
    let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
    Ok(&p[..end])
}

/// A parsed v3 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: i32,
    pub sock_path: Vec<u8>,
    pub descr: Vec<u8>,
}

impl Request {
    /// Requested port (0: any), from `type`.
    pub fn port(&self) -> i32 {
        if self.kind == REQ_NEW_PORT0 {
            0
        } else {
            self.kind >> 8
        }
    }

    /// # Errors
    /// `Truncated` for a short request, `BadMagic` for a wrong magic or version.
    pub fn parse(b: &[u8]) -> Result<Request> {
        if b.len() < REQUEST_MIN_LEN {
            return Err(Error::Truncated { len: b.len(), need: REQUEST_MIN_LEN });
        }
        let u = |r: core::ops::Range<usize>| u32::from_ne_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]]);
        if u(field::MAGIC) != MAGIC || u(field::VERSION) != VERSION {
            return Err(Error::BadMagic);
        }
        let kind = u(field::TYPE) as i32;
        let sock_path = decode_sockaddr_un(&b[field::SOCK])?.to_vec();
        let d = &b[field::DESCR];
        let descr = d[..d.iter().position(|&c| c == 0).unwrap_or(d.len()).min(MAX_DESCR)].to_vec();
        Ok(Request { kind, sock_path, descr })
    }

    /// # Errors
    /// `Oversized` when the socket path is too long.
    pub fn emit(&self) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(REQUEST_MIN_LEN + self.descr.len());
        v.extend_from_slice(&MAGIC.to_ne_bytes());
        v.extend_from_slice(&VERSION.to_ne_bytes());
        v.extend_from_slice(&self.kind.to_ne_bytes());
        v.extend_from_slice(&encode_sockaddr_un(&self.sock_path)?);
        v.extend_from_slice(&self.descr[..self.descr.len().min(MAX_DESCR)]);
        Ok(v)
    }

    /// `type` for a port request (None: any port; Some(0): management port 0).
    pub fn kind_for_port(port: Option<u32>) -> i32 {
        match port {
            None => REQ_NEW_CONTROL,
            Some(0) => REQ_NEW_PORT0,
            Some(p) => REQ_NEW_CONTROL + ((p as i32) << 8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_emit_parse() {
        let r = Request { kind: Request::kind_for_port(Some(3)), sock_path: b"/tmp/sw/.01234-00000".to_vec(), descr: b"vdeplug: user=0".to_vec() };
        let b = r.emit().unwrap();
        assert_eq!(b.len(), 122 + 15);
        assert_eq!(&b[..4], &0xfeedfaceu32.to_ne_bytes());
        assert_eq!(&b[8..12], &(3i32 << 8).to_ne_bytes());
        let p = Request::parse(&b).unwrap();
        assert_eq!(p, r);
        assert_eq!(p.port(), 3);
    }

    #[test]
    fn test_port0_and_any() {
        assert_eq!(Request::kind_for_port(Some(0)), REQ_NEW_PORT0);
        assert_eq!(Request::kind_for_port(None), 0);
    }

    #[test]
    fn test_truncated_and_bad_magic() {
        let r = Request { kind: 0, sock_path: b"/x".to_vec(), descr: vec![] };
        let b = r.emit().unwrap();
        for n in 0..REQUEST_MIN_LEN {
            assert!(matches!(Request::parse(&b[..n]), Err(Error::Truncated { .. })));
        }
        let mut bad = b.clone();
        bad[0] ^= 1;
        assert_eq!(Request::parse(&bad), Err(Error::BadMagic));
        let mut v2 = b;
        v2[4] = 2;
        assert_eq!(Request::parse(&v2), Err(Error::BadMagic));
    }

    #[test]
    fn test_sockaddr() {
        let s = encode_sockaddr_un(b"/tmp/a").unwrap();
        assert_eq!(decode_sockaddr_un(&s).unwrap(), b"/tmp/a");
        assert!(encode_sockaddr_un(&[b'a'; 108]).is_err());
        assert!(decode_sockaddr_un(&s[..50]).is_err());
    }
}
