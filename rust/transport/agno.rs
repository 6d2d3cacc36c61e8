//! agno://[KEYFILE][[ethtype=TYPE]]{VNL} — Debian's libvdeplug_agno
//! (vdeplug_agno 0.1.x) frame for frame: the same key from the same key
//! file, the same bytes on the wire, the same frames accepted.
//!
//! A frame `dst(6) src(6) type(2) payload` crosses the inner VNL as
//!
//! ```text
//! dst(6) src(6) | outer type(2) | E(H)(16) | CBC(key, iv = H, payload ‖ 0·pad)
//! H = type(2) pad(1) 0(1) "agno"(4) time(4, big-endian seconds) random(4)
//! ```
//!
//! AES-128 with the key file's 16 bytes taken raw; pad (0..15) makes the
//! payload whole blocks. The outer type is 0xa6de, or as `ethtype` says.
//! A receiver accepts a frame whose header decrypts to the "agno" tag with
//! a time from 1 s ahead of its clock to 2 s behind it. There is no
//! integrity: agno hides payloads and nothing else (README, "agno://").
//!
//! Unlike the C, frames it would mangle or crash on are dropped and
//! counted: shorter than a header, not a header and whole blocks, a pad
//! longer than the payload, or padding that is not zeros.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes128, Block};
use ring::rand::{SecureRandom, SystemRandom};

use super::nested::{unix_now, Hook};
use crate::plugins::{open_nested, opt, Builtin, Kind, OpenArgs, OpenError, OpenResult, Opt, OptDefault, Target, Value};
use crate::vnl::Syntax;
use crate::wire::ETH_BUFSIZE;

/// The outer EtherType of agno frames unless `ethtype` says otherwise.
pub const DEFAULT_ETHTYPE: u16 = 0xa6de;
const MACS: usize = 12;
const ETH: usize = 14;
const BLOCK: usize = 16;
/// The Ethernet header and the encrypted agno header: the shortest frame on the wire.
pub const HEADER: usize = ETH + BLOCK;
const MAGIC: &[u8; 4] = b"agno";
/// Random bytes one frame takes: 4 for its header, 4 for `ethtype=rand`.
pub const RAND_BYTES: usize = 8;
/// Clock skew a receiver accepts: the sender's time may be this many
/// seconds behind (positive) or ahead (negative) of ours (the C's window).
pub const WINDOW: std::ops::RangeInclusive<i32> = -1..=2;

/// What the outer EtherType of a sent frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EthType {
    /// The frame's own EtherType.
    Copy,
    Fixed(u16),
    /// A random one per frame, 0x0600..=0xfffe.
    Rand,
}

/// Why an `ethtype` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EthTypeError {
    #[error("not copy, ipv4, ipv6, rand or a number")]
    NotANumber,
    #[error("{0} ({0:#x}) is not an EtherType (0x600 to 0xfffe)")]
    OutOfRange(u64),
}

/// An `ethtype` value as the C reads it: exactly `copy`, `ipv4`, `ipv6` or
/// `rand`, else strtoul base 0 (leading blanks and a sign allowed, `0x` hex,
/// a leading `0` octal, anything after the digits ignored); 0 or nothing
/// is the default.
pub fn parse_ethtype(text: &[u8]) -> Result<EthType, EthTypeError> {
    match text {
        b"copy" => return Ok(EthType::Copy),
        b"ipv4" => return Ok(EthType::Fixed(0x0800)),
        b"ipv6" => return Ok(EthType::Fixed(0x86dd)),
        b"rand" => return Ok(EthType::Rand),
        _ => {}
    }
    if text.is_empty() {
        return Ok(EthType::Fixed(DEFAULT_ETHTYPE));
    }
    match strtoul(text).ok_or(EthTypeError::NotANumber)? {
        0 => Ok(EthType::Fixed(DEFAULT_ETHTYPE)),
        v @ 0x600..0xffff => Ok(EthType::Fixed(v as u16)),
        v => Err(EthTypeError::OutOfRange(v)),
    }
}

/// C's strtoul(text, &end, 0) on a 64-bit system; None when no digit was read.
fn strtoul(text: &[u8]) -> Option<u64> {
    let blank = text.iter().take_while(|c| b" \t\n\x0b\x0c\r".contains(c)).count();
    let mut s = &text[blank..];
    let neg = s.first() == Some(&b'-');
    if let Some((b'-' | b'+', rest)) = s.split_first() {
        s = rest;
    }
    let hex_digit = |c: Option<&u8>| c.is_some_and(u8::is_ascii_hexdigit);
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', rest @ ..] if hex_digit(rest.first()) => (rest, 16),
        [b'0', ..] => (s, 8),
        _ => (s, 10),
    };
    let mut value: u64 = 0;
    let mut any = false;
    let mut overflow = false;
    for &c in digits {
        let Some(d) = (c as char).to_digit(radix) else { break };
        any = true;
        match value.checked_mul(u64::from(radix)).and_then(|v| v.checked_add(u64::from(d))) {
            Some(v) => value = v,
            None => overflow = true,
        }
    }
    if !any {
        return None;
    }
    Some(if overflow {
        u64::MAX
    } else if neg {
        value.wrapping_neg()
    } else {
        value
    })
}

// ---------------------------------------------------------------- key files

/// A key as read from a key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    pub key: [u8; 16],
    /// Hex digits taken (2..=32).
    pub digits: usize,
    /// Uppercase digits among them.
    pub uppercase: usize,
    /// Uppercase `A`s among them (each reads as 1, as in the C).
    pub uppercase_a: usize,
}

/// The key in a key file's bytes, as the C reads it: every byte that is a
/// hex digit counts (anything else is skipped, the `0` of `0x` included),
/// up to 32 digits, high nibble first, missing bytes 0. A digit's value is
/// its low 4 bits, plus 9 above `A`: so `A` is 1, not 10 (the C's bug,
/// kept so that one key file gives one key on both). None below 2 digits.
pub fn parse_key(bytes: &[u8]) -> Option<ParsedKey> {
    let mut k = ParsedKey { key: [0; 16], digits: 0, uppercase: 0, uppercase_a: 0 };
    for &c in bytes.iter().filter(|c| c.is_ascii_hexdigit()).take(32) {
        let v = (c & 0x0f) + if c > b'A' { 9 } else { 0 };
        let i = k.digits;
        k.key[i / 2] |= if i.is_multiple_of(2) { v << 4 } else { v };
        k.digits += 1;
        k.uppercase += usize::from(c.is_ascii_uppercase());
        k.uppercase_a += usize::from(c == b'A');
    }
    (k.digits >= 2).then_some(k)
}

/// How much of a key file is read looking for its 32 digits (the C reads
/// on forever: /dev/zero would hang it).
pub const KEY_FILE_MAX: u64 = 64 << 10;

/// Why a key file gives no key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("agno: key file {0:?} must be an absolute path or start with ~ (e.g. ~/.vde_agno_key), as Debian's agno requires")]
    Relative(String),
    #[error("agno: no home directory for our user in the password database (name the key file: agno:///path/to/key{{…}})")]
    NoHome,
    #[error("agno: cannot read key file {path}: {err}")]
    Io { path: String, err: io::Error },
    #[error("agno: key file {path} holds {digits} hex digits; it needs at least 2, and should hold 32 (16 random bytes in hex: `head -c16 /dev/urandom | od -An -tx1 | tr -d ' \\n'`)")]
    TooFewDigits { path: String, digits: usize },
    #[error("agno: key file {path}: no 32 hex digits in its first {} KiB", KEY_FILE_MAX >> 10)]
    TooLong { path: String },
}

/// Where the key file of `address` is, as the C finds it: empty is
/// `<home>/.vde_agno_key`, `~rest` is `<home>/rest` (a `/` between), an
/// absolute path is itself. `home` is the password database's, not $HOME.
pub fn key_path(address: &[u8], home: impl FnOnce() -> Option<PathBuf>) -> Result<PathBuf, KeyFileError> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    match address.first() {
        None => Ok(home().ok_or(KeyFileError::NoHome)?.join(".vde_agno_key")),
        Some(b'~') => {
            let mut p = home().ok_or(KeyFileError::NoHome)?.into_os_string().into_vec();
            p.push(b'/');
            p.extend_from_slice(&address[1..]);
            Ok(PathBuf::from(std::ffi::OsString::from_vec(p)))
        }
        Some(b'/') => Ok(PathBuf::from(std::ffi::OsStr::from_bytes(address))),
        Some(_) => Err(KeyFileError::Relative(String::from_utf8_lossy(address).into_owned())),
    }
}

/// Read the key of the key file at `path`.
pub fn read_key_file(path: &Path) -> Result<ParsedKey, KeyFileError> {
    let name = path.display().to_string();
    let io_err = |err| KeyFileError::Io { path: name.clone(), err };
    let f = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    f.take(KEY_FILE_MAX + 1).read_to_end(&mut bytes).map_err(io_err)?;
    let truncated = bytes.len() as u64 > KEY_FILE_MAX;
    bytes.truncate(KEY_FILE_MAX as usize);
    match parse_key(&bytes) {
        Some(k) if k.digits == 32 || !truncated => Ok(k),
        _ if truncated => Err(KeyFileError::TooLong { path: name }),
        _ => Err(KeyFileError::TooFewDigits { path: name, digits: bytes.iter().filter(|c| c.is_ascii_hexdigit()).count() }),
    }
}

// ---------------------------------------------------------------- frames

/// Why a frame is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Shorter than an Ethernet header (the C sends nothing either).
    Runt,
    /// Its agno frame (`wire` bytes) would not fit the buffer.
    TooBig { wire: usize },
}

/// Why a received frame is dropped (each counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than an Ethernet and an agno header.
    TooShort,
    /// Not a header and whole blocks, or a pad longer than the payload.
    BadLength,
    /// The header has no "agno" tag: another key, or not an agno frame.
    BadMagic,
    /// Its time is outside the window around our clock.
    OutsideWindow,
    /// The padding bytes are not zeros.
    BadPadding,
}

/// The wire length of a frame of `len` bytes (at least 14).
pub fn wire_len(len: usize) -> usize {
    let body = len.saturating_sub(ETH);
    HEADER + body.div_ceil(BLOCK) * BLOCK
}

/// Encodes and decodes agno frames under one key. No I/O: the clock and
/// the random bytes are given.
pub struct Codec {
    aes: Aes128,
    ethtype: EthType,
}

fn xor(a: &mut [u8; BLOCK], b: &[u8; BLOCK]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

impl Codec {
    pub fn new(key: &[u8; 16], ethtype: EthType) -> Codec {
        Codec { aes: Aes128::new(&(*key).into()), ethtype }
    }

    fn encrypt(&self, b: [u8; BLOCK]) -> [u8; BLOCK] {
        let mut x = Block::from(b);
        self.aes.encrypt_block(&mut x);
        x.into()
    }

    fn decrypt(&self, b: [u8; BLOCK]) -> [u8; BLOCK] {
        let mut x = Block::from(b);
        self.aes.decrypt_block(&mut x);
        x.into()
    }

    /// The agno frame of `frame` into `out`, with time `now` (seconds since
    /// the epoch, low 32 bits) and `rand`; its length.
    pub fn encode(&self, frame: &[u8], out: &mut [u8], now: u32, rand: &[u8; RAND_BYTES]) -> Result<usize, SendError> {
        if frame.len() < ETH {
            return Err(SendError::Runt);
        }
        let wire = wire_len(frame.len());
        let Some(out) = out.get_mut(..wire) else { return Err(SendError::TooBig { wire }) };
        let pad = wire - HEADER - (frame.len() - ETH);
        let mut h = [0u8; BLOCK];
        h[0..2].copy_from_slice(&frame[MACS..ETH]);
        h[2] = pad as u8;
        h[4..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&now.to_be_bytes());
        h[12..16].copy_from_slice(&rand[..4]);
        let outer = match self.ethtype {
            EthType::Copy => [frame[MACS], frame[MACS + 1]],
            EthType::Fixed(t) => t.to_be_bytes(),
            EthType::Rand => {
                let pick = u32::from_be_bytes([rand[4], rand[5], rand[6], rand[7]]);
                ((0x600 + pick % 0xf9ff) as u16).to_be_bytes()
            }
        };
        let (head, body) = out.split_at_mut(HEADER);
        head[..MACS].copy_from_slice(&frame[..MACS]);
        head[MACS..ETH].copy_from_slice(&outer);
        head[ETH..].copy_from_slice(&self.encrypt(h));
        // CBC from the plain header, over the payload and zeros.
        let mut prev = h;
        for (src, dst) in frame[ETH..].chunks(BLOCK).zip(body.chunks_exact_mut(BLOCK)) {
            let mut x = [0u8; BLOCK];
            x[..src.len()].copy_from_slice(src);
            xor(&mut x, &prev);
            prev = self.encrypt(x);
            dst.copy_from_slice(&prev);
        }
        Ok(wire)
    }

    /// Decode the agno frame in `buf[..len]` in place, at time `now`
    /// (as `encode`); the frame's length.
    pub fn decode(&self, buf: &mut [u8], len: usize, now: u32) -> Result<usize, Reject> {
        let buf = buf.get_mut(..len).ok_or(Reject::BadLength)?;
        if len < HEADER {
            return Err(Reject::TooShort);
        }
        let body = len - HEADER;
        if !body.is_multiple_of(BLOCK) {
            return Err(Reject::BadLength);
        }
        let mut eh = [0u8; BLOCK];
        eh.copy_from_slice(&buf[ETH..HEADER]);
        let h = self.decrypt(eh);
        if &h[4..8] != MAGIC {
            return Err(Reject::BadMagic);
        }
        let sent = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if !WINDOW.contains(&(now.wrapping_sub(sent) as i32)) {
            return Err(Reject::OutsideWindow);
        }
        let pad = usize::from(h[2] & 0x0f);
        if pad > body {
            return Err(Reject::BadLength);
        }
        // CBC decryption, up to 8 blocks at a time (AES pipelines them),
        // each block moved one block down (over the header).
        let mut prev = h;
        let mut last = [0u8; BLOCK];
        let mut plain = [Block::default(); 8];
        let mut at = HEADER;
        while at < len {
            let k = ((len - at) / BLOCK).min(plain.len());
            for (i, p) in plain[..k].iter_mut().enumerate() {
                p.copy_from_slice(&buf[at + i * BLOCK..at + (i + 1) * BLOCK]);
            }
            self.aes.decrypt_blocks(&mut plain[..k]);
            for (i, p) in plain[..k].iter().enumerate() {
                let mut c = [0u8; BLOCK];
                c.copy_from_slice(&buf[at + i * BLOCK..at + (i + 1) * BLOCK]);
                last.copy_from_slice(p);
                xor(&mut last, &prev);
                prev = c;
                buf[at + i * BLOCK - BLOCK..at + i * BLOCK].copy_from_slice(&last);
            }
            at += k * BLOCK;
        }
        if last[BLOCK - pad..].iter().any(|&b| b != 0) {
            return Err(Reject::BadPadding);
        }
        buf[MACS..ETH].copy_from_slice(&h[0..2]);
        Ok(len - BLOCK - pad)
    }
}

// ---------------------------------------------------------------- the hook

/// Random bytes drawn from the system a few hundred frames at a time.
struct RandomPool {
    rng: SystemRandom,
    buf: [u8; 512],
    at: usize,
}

impl RandomPool {
    fn new() -> RandomPool {
        RandomPool { rng: SystemRandom::new(), buf: [0; 512], at: 512 }
    }

    fn take(&mut self) -> Option<[u8; RAND_BYTES]> {
        if self.at + RAND_BYTES > self.buf.len() {
            self.rng.fill(&mut self.buf).ok()?;
            self.at = 0;
        }
        let mut r = [0u8; RAND_BYTES];
        r.copy_from_slice(&self.buf[self.at..self.at + RAND_BYTES]);
        self.at += RAND_BYTES;
        Some(r)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct AgnoStats {
    pub encoded: u64,
    pub decoded: u64,
    pub too_short: u64,
    pub bad_length: u64,
    pub bad_magic: u64,
    pub outside_window: u64,
    pub bad_padding: u64,
    /// Outgoing frames whose agno frame would not fit a buffer.
    pub too_big: u64,
    /// Outgoing frames shorter than an Ethernet header.
    pub runts: u64,
    pub no_random: u64,
}

/// The nested plugin. No integrity: `authenticates` stays false, so the
/// inner transport learns from every frame, as under the C.
pub struct Agno {
    codec: Codec,
    pool: RandomPool,
    pub stats: AgnoStats,
    /// Unix seconds, read once per batch (`begin`).
    now: u32,
}

impl Agno {
    pub fn new(key: &[u8; 16], ethtype: EthType) -> Agno {
        Agno { codec: Codec::new(key, ethtype), pool: RandomPool::new(), stats: AgnoStats::default(), now: unix_now() }
    }
}

impl Hook for Agno {
    fn begin(&mut self) {
        self.now = unix_now();
    }
    fn incoming(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        let s = &mut self.stats;
        match self.codec.decode(buf, len, self.now) {
            Ok(n) => {
                s.decoded += 1;
                Some(n)
            }
            Err(r) => {
                *match r {
                    Reject::TooShort => &mut s.too_short,
                    Reject::BadLength => &mut s.bad_length,
                    Reject::BadMagic => &mut s.bad_magic,
                    Reject::OutsideWindow => &mut s.outside_window,
                    Reject::BadPadding => &mut s.bad_padding,
                } += 1;
                None
            }
        }
    }

    fn outgoing(&mut self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        let Some(rand) = self.pool.take() else {
            self.stats.no_random += 1;
            return None;
        };
        let room = out.len().min(ETH_BUFSIZE);
        match self.codec.encode(frame, &mut out[..room], self.now, &rand) {
            Ok(n) => {
                self.stats.encoded += 1;
                Some(n)
            }
            Err(SendError::Runt) => {
                self.stats.runts += 1;
                None
            }
            Err(SendError::TooBig { .. }) => {
                self.stats.too_big += 1;
                None
            }
        }
    }

    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("agno_encoded", s.encoded),
            ("agno_decoded", s.decoded),
            ("agno_too_short", s.too_short),
            ("agno_bad_length", s.bad_length),
            ("agno_bad_magic", s.bad_magic),
            ("agno_outside_window", s.outside_window),
            ("agno_bad_padding", s.bad_padding),
            ("agno_too_big", s.too_big),
            ("agno_runts", s.runts),
            ("agno_no_random", s.no_random),
        ]
    }
}

// ---------------------------------------------------------------- VNL

pub const OPTIONS: &[Opt] = &[opt("ethtype", Kind::Text, OptDefault::Unset, "outer EtherType: copy, ipv4, ipv6, rand, or a number (0x… hex, 0… octal); default 0xa6de")];

/// The key of `path`, warning on stderr about uppercase digits.
fn load_key(path: &Path) -> Result<[u8; 16], KeyFileError> {
    let k = read_key_file(path)?;
    if k.uppercase > 0 {
        let effect = if k.uppercase_a > 0 { "so this key is not the bytes its hex says" } else { "(no A here, so this key is the bytes its hex says)" };
        eprintln!(
            "agno: key file {} has uppercase hex digits: as Debian's agno, we read 'A' as 1, not 10, {effect}; \
             prefer lowercase keys (rewriting one changes the key: do it on every peer at once)",
            path.display()
        );
    }
    if k.digits < 32 {
        eprintln!("agno: key file {} holds {} hex digits of 32: the rest of the key is zeros", path.display(), k.digits);
    }
    Ok(k.key)
}

fn open_vnl(t: &Target, args: &OpenArgs) -> OpenResult {
    let ethtype = match t.value("ethtype") {
        Value::Text(v) => parse_ethtype(v).map_err(|e| {
            t.error(
                format!("agno: bad ethtype={:?}: {e}; use copy, ipv4, ipv6, rand, or a number from 0x600 to 0xfffe (0x… is hex, a leading 0 octal)", String::from_utf8_lossy(v)),
                [b"ethtype=", v.as_slice()].concat(),
            )
        })?,
        _ => EthType::Fixed(DEFAULT_ETHTYPE),
    };
    let key = key_path(&t.address, crate::sys::passwd_home).and_then(|p| load_key(&p)).map_err(|e| match e {
        KeyFileError::Io { path, err } => OpenError::Io(super::ctx(err, format!("agno: cannot read key file {path}"))),
        other => t.error(other.to_string(), &t.address),
    })?;
    let inner = open_nested(t, args)?;
    Ok(Box::new(super::nested::Nested::new(inner, Agno::new(&key, ethtype))))
}

pub const PLUGIN: Builtin = Builtin {
    scheme: "agno",
    syntax: Syntax::Path,
    options: OPTIONS,
    bare: None,
    nests: true,
    summary: "Debian's agno encryption (no integrity) around a VNL: agno:///etc/vde.agno{vxvde://}",
    open: open_vnl,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    const KEY: [u8; 16] = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

    fn rand(r: u32) -> [u8; RAND_BYTES] {
        let mut x = [0u8; RAND_BYTES];
        x[..4].copy_from_slice(&r.to_be_bytes());
        x
    }

    fn encode(c: &Codec, f: &[u8], now: u32, r: [u8; RAND_BYTES]) -> Vec<u8> {
        let mut out = vec![0u8; ETH_BUFSIZE];
        let n = c.encode(f, &mut out, now, &r).unwrap();
        out.truncate(n);
        out
    }

    fn decode(c: &Codec, w: &[u8], now: u32) -> Result<Vec<u8>, Reject> {
        let mut buf = w.to_vec();
        let n = c.decode(&mut buf, w.len(), now)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// (frame, time, rand, ethtype, wire).
    type Vector = (Vec<u8>, u32, u32, EthType, Vec<u8>);

    /// Two frames captured from Debian's plugin, then three made with the
    /// same steps by an independent encoder (key 00112233…eeff).
    fn vectors() -> Vec<Vector> {
        let seq = |n: usize, k: usize| (0..n).map(|i| (i * k % 256) as u8).collect::<Vec<u8>>();
        let def = EthType::Fixed(DEFAULT_ETHTYPE);
        vec![
            (unhex("ffffffffffff020000000001 0800 00070e151c23"), 0x6b1130d8, 0x0c197af6, def, unhex("ffffffffffff020000000001a6de d6d3647ed9fe181573eba5c0ce6caca8 f53382819f82a481aecc5137f8550151")),
            (
                [unhex("ffffffffffff020000000001 0800"), seq(46, 7)].concat(),
                0x6b1130d8,
                0xe67cf31a,
                def,
                unhex("ffffffffffff020000000001a6ded4864aa8f836a9622dc794581d89bb18d548b57fac75ac0fa105f496a16d2065b6711750ae3f0b73af34c8947713dd8626a7a302cbddc2d203988660cd9cc537"),
            ),
            (
                [unhex("020000000002 020000000001 0800"), seq(46, 1)].concat(),
                0x65000000,
                0xdeadbeef,
                def,
                unhex("020000000002020000000001a6de891a04ec72d5a60f4a7230df551965f60058038fa323f94313ca33f13523c145019cf19b0e483a4c3fd1e2e776922a4bbeb98efc091cb40c14dd39a2d16c1a11"),
            ),
            (unhex("ffffffffffff020000000001 0806"), 0x65000000, 0xdeadbeef, def, unhex("ffffffffffff020000000001a6de0597579bb627c5d3d80417ac50a2fadc")),
            (
                [unhex("ffffffffffff020000000001 86dd"), seq(16, 1)].concat(),
                0x65000000,
                0,
                EthType::Copy,
                unhex("ffffffffffff02000000000186dd1cc201cc94f633460a696ef2b7a3718f5e98f393ab34adbc2863616bdb7ec25f"),
            ),
        ]
    }

    #[test]
    fn encodes_and_decodes_the_captured_and_synthetic_vectors_byte_for_byte() {
        for (k, (f, t, r, et, wire)) in vectors().into_iter().enumerate() {
            let c = Codec::new(&KEY, et);
            assert_eq!(encode(&c, &f, t, rand(r)), wire, "vector {k}");
            assert_eq!(decode(&c, &wire, t).unwrap(), f, "vector {k}");
        }
    }

    #[test]
    fn wire_lengths_as_debian() {
        let c = Codec::new(&KEY, EthType::Fixed(DEFAULT_ETHTYPE));
        for (l, w) in [(14, 30), (15, 46), (20, 46), (29, 46), (30, 46), (31, 62), (46, 62), (60, 78), (62, 78), (64, 94), (1514, 1534)] {
            let f: Vec<u8> = (0..l).map(|i| i as u8).collect();
            let e = encode(&c, &f, 7, rand(9));
            assert_eq!((e.len(), wire_len(l)), (w, w), "{l}");
            assert_eq!(decode(&c, &e, 7).unwrap(), f, "{l}");
        }
        let mut out = vec![0u8; ETH_BUFSIZE];
        assert_eq!(c.encode(&[0u8; 13], &mut out, 0, &rand(0)), Err(SendError::Runt));
        assert_eq!(c.encode(&vec![0u8; 9214], &mut out, 0, &rand(0)), Ok(9230), "the largest frame that fits");
        assert_eq!(c.encode(&vec![0u8; 9215], &mut out, 0, &rand(0)), Err(SendError::TooBig { wire: 9246 }));
    }

    #[test]
    fn outer_ethertypes() {
        let f = [unhex("ffffffffffff020000000001 88b5"), vec![1; 50]].concat();
        for (et, want) in [(EthType::Copy, 0x88b5), (EthType::Fixed(0x0800), 0x0800), (EthType::Fixed(DEFAULT_ETHTYPE), 0xa6de)] {
            let w = encode(&Codec::new(&KEY, et), &f, 1, rand(2));
            assert_eq!(u16::from_be_bytes([w[12], w[13]]), want);
        }
        let c = Codec::new(&KEY, EthType::Rand);
        let mut seen = std::collections::HashSet::new();
        for pick in [0u32, 1, 0xf9fe, 0xf9ff, u32::MAX, 12345678] {
            let mut r = rand(3);
            r[4..].copy_from_slice(&pick.to_be_bytes());
            let w = encode(&c, &f, 1, r);
            let t = u16::from_be_bytes([w[12], w[13]]);
            assert!((0x600..=0xfffe).contains(&t), "{t:#x}");
            assert_eq!(t as u32, 0x600 + pick % 0xf9ff);
            seen.insert(t);
            assert_eq!(decode(&c, &w, 1).unwrap(), f, "the receiver ignores the outer type");
        }
        assert!(seen.contains(&0x600) && seen.contains(&0xfffe));
    }

    /// The receiver takes a sender's time from 1 s ahead to 2 s behind.
    #[test]
    fn time_window_edges_and_the_32_bit_wrap() {
        let c = Codec::new(&KEY, EthType::Fixed(DEFAULT_ETHTYPE));
        let f = [unhex("ffffffffffff020000000001 0800"), vec![5; 46]].concat();
        for sent in [1_000_000u32, u32::MAX, 0, 1] {
            let w = encode(&c, &f, sent, rand(1));
            for d in -4i32..=5 {
                let now = sent.wrapping_add(d as u32);
                let r = decode(&c, &w, now);
                if (-1..=2).contains(&d) {
                    assert_eq!(r.unwrap(), f, "sent {sent} now {now}");
                } else {
                    assert_eq!(r, Err(Reject::OutsideWindow), "sent {sent} now {now}");
                }
            }
        }
    }

    #[test]
    fn malformed_frames_are_dropped_cleanly() {
        let c = Codec::new(&KEY, EthType::Fixed(DEFAULT_ETHTYPE));
        let f = [unhex("ffffffffffff020000000001 0800"), vec![5; 46]].concat(); // 60 bytes: pad 2
        let w = encode(&c, &f, 100, rand(1));
        for n in 0..HEADER {
            assert_eq!(decode(&c, &w[..n], 100), Err(Reject::TooShort), "{n}");
        }
        for n in [31, 45, 74, 77] {
            assert_eq!(decode(&c, &w[..n], 100), Err(Reject::BadLength), "{n}");
        }
        let mut longer = w.clone();
        longer.extend([0; 16]);
        assert!(decode(&c, &longer, 100).is_err(), "one more block leaves non-zero padding or garbage");
        assert_eq!(decode(&c, &f, 100), Err(Reject::BadLength), "a frame in clear");
        assert_eq!(decode(&Codec::new(&[1; 16], EthType::Copy), &w, 100), Err(Reject::BadMagic), "another key");
        // A header claiming a pad longer than the payload (the C crashes).
        let mut h = [0u8; BLOCK];
        h[2] = 15;
        h[4..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&100u32.to_be_bytes());
        let mut forged = w[..HEADER].to_vec();
        forged[ETH..].copy_from_slice(&c.encrypt(h));
        assert_eq!(decode(&c, &forged, 100), Err(Reject::BadLength));
        h[2] = 0;
        forged[ETH..].copy_from_slice(&c.encrypt(h));
        assert_eq!(decode(&c, &forged, 100).unwrap().len(), 14, "a header alone with pad 0 is a 14-byte frame");
        // A header lying about the pad: the bytes it would cut are payload, not zeros.
        let mut lie = w.clone();
        let mut h = c.decrypt(lie[ETH..HEADER].try_into().unwrap());
        h[2] = 15;
        let iv_change = h;
        lie[ETH..HEADER].copy_from_slice(&c.encrypt(iv_change));
        assert!(decode(&c, &lie, 100).is_err());
        // Bits flipped in the last block land in the padding: caught there (no integrity elsewhere).
        let mut flipped = w.clone();
        let n = flipped.len();
        flipped[n - BLOCK - 1] ^= 1; // the previous block's last byte flips the last plain byte: padding
        assert_eq!(decode(&c, &flipped, 100), Err(Reject::BadPadding));
        // A buffer shorter than the claimed length.
        let mut small = w.clone();
        assert_eq!(c.decode(&mut small, w.len() + 1, 100), Err(Reject::BadLength));
        // Every prefix and every single-byte change of a frame: never a panic.
        for n in 0..=w.len() {
            let _ = decode(&c, &w[..n], 100);
        }
        for i in 0..w.len() {
            let mut x = w.clone();
            x[i] ^= 0x80;
            let _ = decode(&c, &x, 100);
        }
    }

    #[test]
    fn ethtype_values_as_strtoul() {
        let ok = |s: &str| parse_ethtype(s.as_bytes()).unwrap();
        let fixed = EthType::Fixed;
        assert_eq!(ok("copy"), EthType::Copy);
        assert_eq!(ok("ipv4"), fixed(0x0800));
        assert_eq!(ok("ipv6"), fixed(0x86dd));
        assert_eq!(ok("rand"), EthType::Rand);
        for (s, v) in [
            ("", 0xa6de),
            ("0", 0xa6de),
            ("0x0", 0xa6de),
            ("0800", 0xa6de),
            ("04000", 0x0800),
            ("1536", 0x600),
            (" 0x900", 0x900),
            ("0x800zz", 0x800),
            ("0xfffe", 0xfffe),
            ("+0x600", 0x600),
            ("-0", 0xa6de),
            ("0xzz", 0xa6de),
            ("\x0b\t0x700", 0x700),
        ] {
            assert_eq!(ok(s), fixed(v), "{s:?}");
        }
        for s in ["COPY", "copy2", "zz", "Ipv4", "-", " ", "x1"] {
            assert_eq!(parse_ethtype(s.as_bytes()), Err(EthTypeError::NotANumber), "{s:?}");
        }
        for s in ["800", "0x5ff", "0xffff", "-1", "99999999999999999999999"] {
            assert!(matches!(parse_ethtype(s.as_bytes()), Err(EthTypeError::OutOfRange(_))), "{s:?}");
        }
        assert_eq!(ok("-18446744073709550000"), fixed(0x650), "strtoul negates in 64 bits");
    }

    #[test]
    fn key_files_read_as_debian_reads_them() {
        let key = |s: &[u8]| parse_key(s).map(|k| k.key.to_vec());
        assert_eq!(key(b"00112233445566778899aabbccddeeff\n"), Some(KEY.to_vec()));
        assert_eq!(key(b"00112233445566778899AABBCCDDEEFF\n"), Some(unhex("0011223344556677889911bbccddeeff")), "uppercase A is 1, as in the C");
        assert_eq!(key(b"0x12 34-56:zz 78\n9\n"), Some(unhex("01234567890000000000000000000000")));
        assert_eq!(key(b"secret\n"), Some(unhex("ece00000000000000000000000000000")));
        assert_eq!(key(b"123"), Some(unhex("12300000000000000000000000000000")));
        assert_eq!(key(b"00112233445566778899aabbccddeeff01234567"), Some(KEY.to_vec()), "digits after the 32nd ignored");
        assert_eq!(key(b"AAAA"), Some(unhex("11110000000000000000000000000000")));
        for none in [&b""[..], b"1", b"g h i", b"\n\n"] {
            assert_eq!(key(none), None, "{none:?}");
        }
        let k = parse_key(b"aA bB F").unwrap();
        assert_eq!((k.digits, k.uppercase, k.uppercase_a), (5, 3, 1));
    }

    #[test]
    fn key_paths_and_files() {
        let home = || Some(PathBuf::from("/home/u"));
        assert_eq!(key_path(b"", home).unwrap(), PathBuf::from("/home/u/.vde_agno_key"));
        assert_eq!(key_path(b"~/k", home).unwrap().as_os_str(), "/home/u//k");
        assert_eq!(key_path(b"~k", home).unwrap().as_os_str(), "/home/u/k");
        assert_eq!(key_path(b"/etc/k", home).unwrap().as_os_str(), "/etc/k");
        assert!(matches!(key_path(b"k", home), Err(KeyFileError::Relative(_))));
        assert!(matches!(key_path(b"", || None), Err(KeyFileError::NoHome)));
        let dir = std::env::temp_dir().join(format!("vdeplug-agno-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        std::fs::write(&p, "00112233445566778899aabbccddeeff\n").unwrap();
        assert_eq!(read_key_file(&p).unwrap().key, KEY);
        std::fs::write(&p, "1").unwrap();
        assert!(matches!(read_key_file(&p), Err(KeyFileError::TooFewDigits { digits: 1, .. })));
        let mut long = vec![b'z'; KEY_FILE_MAX as usize];
        long.extend(b"00112233445566778899aabbccddeeff");
        std::fs::write(&p, &long).unwrap();
        assert!(matches!(read_key_file(&p), Err(KeyFileError::TooLong { .. })));
        long.drain(..40);
        std::fs::write(&p, &long).unwrap();
        assert_eq!(read_key_file(&p).unwrap().key, KEY, "32 digits within the limit");
        assert!(matches!(read_key_file(&dir.join("missing")), Err(KeyFileError::Io { .. })));
        assert!(read_key_file(&dir).is_err(), "a directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_hook_counts_what_it_drops() {
        let mut tx = Agno::new(&KEY, EthType::Rand);
        let mut rx = Agno::new(&KEY, EthType::Copy);
        let mut stranger = Agno::new(&[7; 16], EthType::Copy);
        let f = [unhex("ffffffffffff020000000001 0800"), vec![5; 300]].concat();
        let mut out = vec![0u8; crate::transport::RECV_BUFSIZE];
        let n = tx.outgoing(&f, &mut out).unwrap();
        let mut a = out.clone();
        assert_eq!(rx.incoming(&mut a, n), Some(f.len()));
        assert_eq!(&a[..f.len()], &f[..]);
        let mut b = out.clone();
        assert_eq!(stranger.incoming(&mut b, n), None);
        assert_eq!(rx.incoming(&mut out.clone(), 20), None);
        assert_eq!(rx.incoming(&mut out.clone(), n - 1), None);
        assert_eq!(tx.outgoing(&f[..10], &mut out), None);
        assert_eq!(tx.outgoing(&vec![0u8; 9215], &mut out), None);
        let get = |h: &Agno, k: &str| h.extra_stats().into_iter().find(|(n, _)| *n == k).unwrap().1;
        assert_eq!((get(&rx, "agno_decoded"), get(&rx, "agno_too_short"), get(&rx, "agno_bad_length")), (1, 1, 1));
        assert_eq!(get(&stranger, "agno_bad_magic"), 1);
        assert_eq!((get(&tx, "agno_encoded"), get(&tx, "agno_runts"), get(&tx, "agno_too_big")), (1, 1, 1));
        assert!(!tx.authenticates(), "agno has no integrity");
    }
}
