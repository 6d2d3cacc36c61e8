//! seal://KEYFILE[[cipher=auto]]{VNL} — authenticated encryption of every
//! frame crossing any VNL (our own format; vdeplug4 has no equivalent).
//!
//! A sealed frame keeps the destination and source MAC in clear, so the
//! overlay below learns and delivers unicast as before; they are
//! authenticated with the header, and the rest is encrypted:
//!
//! ```text
//! dst(6) src(6) | 0x88b6 | ver·cipher(1) | key id(4) | session(16) | counter(8) | time(4) | E(type·payload) | tag(16)
//! ```
//!
//! 51 bytes more than the frame. The AEAD (AES-256-GCM where the CPU has
//! AES instructions, else ChaCha20-Poly1305; `ring`, an audited crate) runs
//! under a *session key*, HKDF-SHA256 of the shared key with a random
//! 128-bit session id drawn when the endpoint opens; the nonce is the
//! session's 64-bit counter. So a nonce never repeats under one key: each
//! start of each host draws a new session (a collision is a 2^-128 event
//! per pair), the counter only grows, and before it could wrap a new
//! session is drawn. Receivers keep, per session, a sliding replay window
//! (replay.rs); at most MAX_SESSIONS sessions are kept, and only a frame
//! that authenticated creates one, so forged senders cannot grow memory.
//! A session a receiver has not seen (it restarted, or forgot it) starts
//! only from a frame stamped within MAX_SKEW of its clock: old captured
//! traffic cannot be replayed into a new window.
//!
//! Keys: a key file of one or two lines of 64 hex digits (32 random bytes,
//! `vde_plug --keygen FILE` makes one), ours, a regular file, and not
//! readable by group or others. The first key seals; every key opens,
//! found by its id (4 bytes derived from it). To roll a key over host by
//! host, add the new key as the second line everywhere, then make it the
//! first, then drop the old one: the file is read again when it changes.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};

use super::nested::{unix_now, Hook};
use super::replay::{Replay, ReplayWindow};
use crate::wire::ETH_BUFSIZE;

/// The EtherType of a sealed frame (IEEE local experimental 2).
pub const ETHERTYPE: u16 = 0x88b6;
const VERSION: u8 = 1;
const MACS: usize = 12;
const OFF_VERSION: usize = 14;
const OFF_KEY_ID: usize = 15;
const OFF_SESSION: usize = 19;
const OFF_COUNTER: usize = 35;
const OFF_TIME: usize = 43;
/// Clear header of a sealed frame, MACs included.
pub const HEADER: usize = 47;
/// How far (seconds) a frame's stamp may be from our clock to start a session.
pub const MAX_SKEW: u32 = 60;
pub const TAG: usize = 16;
/// A sealed frame is this much longer than the frame.
pub const OVERHEAD: usize = HEADER - MACS + TAG;
/// Sessions (senders) a receiver remembers; the least recently used goes.
pub const MAX_SESSIONS: usize = 1024;
const INFO: &[u8] = b"vdeplug seal v1";

/// Which AEAD a sender uses (in the header's low nibble; a receiver opens both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes256Gcm = 1,
    ChaCha20Poly1305 = 2,
}

impl Cipher {
    fn of(code: u8) -> Option<Cipher> {
        match code {
            1 => Some(Cipher::Aes256Gcm),
            2 => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    /// AES-GCM when the CPU has AES and carry-less multiply, else ChaCha20.
    pub fn best() -> Cipher {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq") {
            return Cipher::Aes256Gcm;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull") {
            return Cipher::Aes256Gcm;
        }
        Cipher::ChaCha20Poly1305
    }
}

/// A shared key and its id.
#[derive(Clone)]
pub struct Key {
    pub id: [u8; 4],
    secret: [u8; 32],
}

impl Key {
    pub fn new(secret: [u8; 32]) -> Key {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), b"vdeplug seal v1 key id");
        let mut id = [0u8; 4];
        id.copy_from_slice(&tag.as_ref()[..4]);
        Key { id, secret }
    }

    /// The AEAD key of one session under this key.
    fn session_key(&self, session: &[u8; 16], cipher: Cipher) -> LessSafeKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, session).extract(&self.secret);
        let info = [INFO, &[cipher as u8]];
        // The lengths are ring's own (32-byte keys); expand cannot fail for them.
        let okm = prk.expand(&info, cipher.algorithm()).expect("HKDF output of one key length");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

/// Why a received frame was dropped (each counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than a header and a tag.
    Truncated,
    /// Not a sealed frame (in clear: someone on the segment without the key).
    NotSealed,
    /// An unknown version or cipher.
    BadFormat,
    /// Sealed under a key we do not hold.
    WrongKey,
    /// The tag does not verify: tampered, or forged.
    BadTag,
    /// Its counter was already accepted, or is older than the window.
    Replayed,
    /// From a session we do not know, stamped too far from our clock (an
    /// old frame replayed, or clocks apart by more than MAX_SKEW).
    Stale,
}

/// A sender's session: its key and the counters seen.
struct Session {
    key: LessSafeKey,
    window: ReplayWindow,
    used: u64,
}

/// Seals outgoing and opens incoming frames. No I/O.
pub struct Sealer {
    keys: Vec<Key>,
    cipher: Cipher,
    rng: SystemRandom,
    session: [u8; 16],
    counter: u64,
    /// The key sealing under `session` (None: draw a session first).
    current: Option<LessSafeKey>,
    sessions: HashMap<([u8; 4], [u8; 16]), Session>,
    clock: u64,
    pub stats: SealStats,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SealStats {
    pub sealed: u64,
    pub opened: u64,
    pub truncated: u64,
    pub not_sealed: u64,
    pub bad_format: u64,
    pub wrong_key: u64,
    pub bad_tag: u64,
    pub replayed: u64,
    pub stale: u64,
    /// Outgoing frames too big to seal (the sealed frame would not fit).
    pub too_big: u64,
    /// New sessions drawn (start, counter exhausted, key change).
    pub sessions_started: u64,
    pub sessions_evicted: u64,
}

impl Sealer {
    /// Seal with `keys[0]`, open with any of `keys` (1 or more).
    pub fn new(keys: Vec<Key>, cipher: Cipher) -> io::Result<Sealer> {
        if keys.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no key"));
        }
        let mut s = Sealer { keys, cipher, rng: SystemRandom::new(), session: [0; 16], counter: 0, current: None, sessions: HashMap::new(), clock: 0, stats: SealStats::default() };
        s.new_session()?;
        Ok(s)
    }

    /// Use new keys (a key file changed): a new session under the first.
    pub fn set_keys(&mut self, keys: Vec<Key>) -> io::Result<()> {
        if keys.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no key"));
        }
        self.keys = keys;
        self.sessions.retain(|(id, _), _| self.keys.iter().any(|k| k.id == *id));
        self.new_session()
    }

    fn new_session(&mut self) -> io::Result<()> {
        self.current = None;
        self.rng.fill(&mut self.session).map_err(|_| io::Error::other("no random numbers for a seal session"))?;
        self.counter = 0;
        self.current = Some(self.keys[0].session_key(&self.session, self.cipher));
        self.stats.sessions_started += 1;
        Ok(())
    }

    /// Seal `frame` into `out`; returns the sealed length, or None when it
    /// cannot be sent (too big, or no session could be drawn).
    pub fn seal(&mut self, frame: &[u8], out: &mut [u8], now: u32) -> Option<usize> {
        let total = frame.len() + OVERHEAD;
        if frame.len() < MACS || total > out.len() || total > ETH_BUFSIZE {
            self.stats.too_big += 1;
            return None;
        }
        if self.counter == u64::MAX && self.new_session().is_err() {
            return None;
        }
        let key = self.current.as_ref()?;
        let counter = self.counter;
        self.counter += 1;
        out[..MACS].copy_from_slice(&frame[..MACS]);
        out[MACS..OFF_VERSION].copy_from_slice(&ETHERTYPE.to_be_bytes());
        out[OFF_VERSION] = VERSION << 4 | self.cipher as u8;
        out[OFF_KEY_ID..OFF_SESSION].copy_from_slice(&self.keys[0].id);
        out[OFF_SESSION..OFF_COUNTER].copy_from_slice(&self.session);
        out[OFF_COUNTER..OFF_TIME].copy_from_slice(&counter.to_be_bytes());
        out[OFF_TIME..HEADER].copy_from_slice(&now.to_be_bytes());
        let body = frame.len() - MACS;
        out[HEADER..HEADER + body].copy_from_slice(&frame[MACS..]);
        let (head, rest) = out.split_at_mut(HEADER);
        let tag = key.seal_in_place_separate_tag(nonce(counter), Aad::from(&head[..]), &mut rest[..body]).ok()?;
        rest[body..body + TAG].copy_from_slice(tag.as_ref());
        self.stats.sealed += 1;
        Some(total)
    }

    /// Open the sealed frame in `buf[..len]` in place (`now`: our clock,
    /// Unix seconds); returns the frame's length.
    pub fn open(&mut self, buf: &mut [u8], len: usize, now: u32) -> Result<usize, Reject> {
        let r = self.open_inner(buf, len, now);
        match r {
            Ok(_) => self.stats.opened += 1,
            Err(Reject::Truncated) => self.stats.truncated += 1,
            Err(Reject::NotSealed) => self.stats.not_sealed += 1,
            Err(Reject::BadFormat) => self.stats.bad_format += 1,
            Err(Reject::WrongKey) => self.stats.wrong_key += 1,
            Err(Reject::BadTag) => self.stats.bad_tag += 1,
            Err(Reject::Replayed) => self.stats.replayed += 1,
            Err(Reject::Stale) => self.stats.stale += 1,
        }
        r
    }

    fn open_inner(&mut self, buf: &mut [u8], len: usize, now: u32) -> Result<usize, Reject> {
        let len = len.min(buf.len());
        if len >= MACS + 2 && u16::from_be_bytes([buf[MACS], buf[MACS + 1]]) != ETHERTYPE {
            return Err(Reject::NotSealed);
        }
        if len < HEADER + TAG {
            return Err(Reject::Truncated);
        }
        let mut head = [0u8; HEADER];
        head.copy_from_slice(&buf[..HEADER]);
        let cipher = (head[OFF_VERSION] >> 4 == VERSION).then(|| Cipher::of(head[OFF_VERSION] & 0x0f)).flatten().ok_or(Reject::BadFormat)?;
        let mut id = [0u8; 4];
        id.copy_from_slice(&head[OFF_KEY_ID..OFF_SESSION]);
        let mut session = [0u8; 16];
        session.copy_from_slice(&head[OFF_SESSION..OFF_COUNTER]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&head[OFF_COUNTER..OFF_TIME]);
        let counter = u64::from_be_bytes(c);
        self.clock += 1;
        let slot = (id, session);
        if !self.sessions.contains_key(&slot) {
            let key = self.keys.iter().find(|k| k.id == id).ok_or(Reject::WrongKey)?;
            let mut fresh = Session { key: key.session_key(&session, cipher), window: ReplayWindow::default(), used: self.clock };
            // Authenticate before it takes a place (forged senders cost no memory).
            let plain = fresh.key.open_within(nonce(counter), Aad::from(&head[..]), &mut buf[MACS..len], HEADER - MACS..).map_err(|_| Reject::BadTag)?.len();
            let stamp = u32::from_be_bytes([head[OFF_TIME], head[OFF_TIME + 1], head[OFF_TIME + 2], head[OFF_TIME + 3]]);
            if stamp.abs_diff(now) > MAX_SKEW {
                return Err(Reject::Stale);
            }
            fresh.window.accept(counter).map_err(|_| Reject::Replayed)?;
            self.remember(slot, fresh);
            return Ok(MACS + plain);
        }
        let clock = self.clock;
        let s = self.sessions.get_mut(&slot).ok_or(Reject::BadFormat)?;
        s.window.check(counter).map_err(|_: Replay| Reject::Replayed)?;
        let plain = s.key.open_within(nonce(counter), Aad::from(&head[..]), &mut buf[MACS..len], HEADER - MACS..).map_err(|_| Reject::BadTag)?.len();
        s.window.accept(counter).map_err(|_| Reject::Replayed)?;
        s.used = clock;
        Ok(MACS + plain)
    }

    fn remember(&mut self, slot: ([u8; 4], [u8; 16]), s: Session) {
        if self.sessions.len() >= MAX_SESSIONS {
            if let Some(old) = self.sessions.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k) {
                self.sessions.remove(&old);
                self.stats.sessions_evicted += 1;
            }
        }
        self.sessions.insert(slot, s);
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

// ---------------------------------------------------------------- key files

/// Why a key file is refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {err}")]
    Io { path: String, err: io::Error },
    #[error("key file {path} is not a regular file")]
    NotRegular { path: String },
    #[error("key file {path} belongs to uid {owner}, not to us (uid {uid}): use a key file of your own")]
    NotOurs { path: String, owner: u32, uid: u32 },
    #[error("key file {path} is readable by others (mode {mode:04o}): chmod 600 {path}")]
    Readable { path: String, mode: u32 },
    #[error("key file {path}, line {line}: expected 64 hex digits (32 bytes; vde_plug --keygen FILE makes a key)")]
    BadLine { path: String, line: usize },
    #[error("key file {path} holds no key (one or two lines of 64 hex digits)")]
    Empty { path: String },
    #[error("key file {path} holds more than two keys (the sealing key, then one being rolled in or out)")]
    TooMany { path: String },
}

/// The identity of a key file's contents, to notice a change.
pub type Stamp = (u64, u64, i64, i64, u64);

/// Read the keys of `path`: never through a symlink, only a regular file
/// of ours that group and others cannot read.
pub fn read_key_file(path: &Path) -> Result<(Vec<Key>, Stamp), KeyFileError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let name = path.display().to_string();
    let io_err = |err| KeyFileError::Io { path: name.clone(), err };
    let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK).open(path).map_err(io_err)?;
    let m = f.metadata().map_err(io_err)?;
    if !m.file_type().is_file() {
        return Err(KeyFileError::NotRegular { path: name });
    }
    let uid = crate::sys::geteuid();
    if m.uid() != uid {
        return Err(KeyFileError::NotOurs { path: name, owner: m.uid(), uid });
    }
    if m.mode() & 0o077 != 0 {
        return Err(KeyFileError::Readable { path: name, mode: m.mode() & 0o7777 });
    }
    let mut text = String::new();
    f.by_ref().take(4096).read_to_string(&mut text).map_err(io_err)?;
    let keys = parse_keys(&text).map_err(|line| match line {
        0 => KeyFileError::Empty { path: name.clone() },
        3 => KeyFileError::TooMany { path: name.clone() },
        l => KeyFileError::BadLine { path: name.clone(), line: l },
    })?;
    Ok((keys, stamp(&m)))
}

fn stamp(m: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size())
}

/// One or two lines of 64 hex digits (blank lines and `#` comments
/// skipped). Err(line number) for a bad line, Err(0) for none, Err(3) for
/// more than two keys.
fn parse_keys(text: &str) -> Result<Vec<Key>, usize> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() != 64 || !line.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(n + 1);
        }
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = u8::from_str_radix(&line[2 * i..2 * i + 2], 16).map_err(|_| n + 1)?;
        }
        keys.push(Key::new(secret));
    }
    match keys.len() {
        0 => Err(0),
        1 | 2 => Ok(keys),
        _ => Err(3),
    }
}

/// Write a new random key to `path` (created, mode 0600; never an
/// existing file or through a symlink).
pub fn keygen(path: &Path) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut secret = [0u8; 32];
    SystemRandom::new().fill(&mut secret).map_err(|_| io::Error::other("no random numbers"))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)?;
    f.write_all(format!("{hex}\n").as_bytes())?;
    f.sync_all()
}

// ---------------------------------------------------------------- the hook

/// The nested plugin: seals what we send, opens what we receive, and
/// reads the key file again when it changes.
pub struct Seal {
    sealer: Sealer,
    path: PathBuf,
    stamp: Stamp,
    reload_errors: u64,
    reloads: u64,
    /// Unix seconds, read once per batch (`begin`).
    now: u32,
}

impl Hook for Seal {
    fn begin(&mut self) {
        self.now = unix_now();
    }
    fn incoming(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        self.sealer.open(buf, len, self.now).ok()
    }
    fn outgoing(&mut self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        self.sealer.seal(frame, out, self.now)
    }
    fn authenticates(&self) -> bool {
        true
    }
    fn tick(&mut self) {
        let Ok(m) = std::fs::symlink_metadata(&self.path) else { return };
        if stamp(&m) == self.stamp {
            return;
        }
        match read_key_file(&self.path) {
            Ok((keys, st)) => {
                self.stamp = st;
                if self.sealer.set_keys(keys).is_ok() {
                    self.reloads += 1;
                }
            }
            Err(e) => {
                self.stamp = stamp(&m);
                self.reload_errors += 1;
                eprintln!("seal: keeping the keys in use: {e}");
            }
        }
    }
    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        let s = &self.sealer.stats;
        vec![
            ("seal_sealed", s.sealed),
            ("seal_opened", s.opened),
            ("seal_truncated", s.truncated),
            ("seal_not_sealed", s.not_sealed),
            ("seal_bad_format", s.bad_format),
            ("seal_wrong_key", s.wrong_key),
            ("seal_bad_tag", s.bad_tag),
            ("seal_replayed", s.replayed),
            ("seal_stale", s.stale),
            ("seal_too_big", s.too_big),
            ("seal_sessions", self.sealer.sessions() as u64),
            ("seal_sessions_started", s.sessions_started),
            ("seal_sessions_evicted", s.sessions_evicted),
            ("seal_key_reloads", self.reloads),
            ("seal_key_reload_errors", self.reload_errors),
        ]
    }
}

// ---------------------------------------------------------------- VNL

pub const OPTIONS: &[Opt] = &[opt("cipher", Kind::Text, OptDefault::Unset, "aes (AES-256-GCM) or chacha (ChaCha20-Poly1305); default: aes where the CPU has AES instructions")];

fn open_vnl(t: &Target, args: &OpenArgs) -> OpenResult {
    if t.address.is_empty() {
        return Err(t.error("seal:// needs a key file: seal://KEYFILE{VNL} (vde_plug --keygen KEYFILE makes one)", &t.vnl));
    }
    let cipher = match t.text("cipher").as_deref() {
        None | Some("") | Some("auto") => Cipher::best(),
        Some("aes") => Cipher::Aes256Gcm,
        Some("chacha") => Cipher::ChaCha20Poly1305,
        Some(other) => return Err(t.error(format!("cipher={other}: use aes or chacha"), "cipher")),
    };
    let path = t.abs_path();
    let (keys, stamp) = read_key_file(&path).map_err(|e| t.error(e.to_string(), &t.address))?;
    let sealer = Sealer::new(keys, cipher)?;
    let inner = open_nested(t, args)?;
    Ok(Box::new(super::nested::Nested::new(inner, Seal { sealer, path, stamp, reload_errors: 0, reloads: 0, now: unix_now() })))
}

pub const PLUGIN: Builtin =
    Builtin { scheme: "seal", syntax: Syntax::Path, options: OPTIONS, bare: None, nests: true, summary: "authenticated encryption around a VNL: seal:///etc/vde.key{vxvde://}", open: open_vnl };

use crate::plugins::{open_nested, opt, Builtin, Kind, OpenArgs, OpenResult, Opt, OptDefault, Target};
use crate::vnl::Syntax;

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock of every sealer and opener in these tests.
    const T: u32 = 1_800_000_000;

    fn key(b: u8) -> Key {
        Key::new([b; 32])
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        let mut f = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
        f
    }

    fn pair(cipher: Cipher) -> (Sealer, Sealer) {
        (Sealer::new(vec![key(1)], cipher).unwrap(), Sealer::new(vec![key(1)], cipher).unwrap())
    }

    fn sealed(tx: &mut Sealer, f: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; ETH_BUFSIZE];
        let n = tx.seal(f, &mut out, T).unwrap();
        out.truncate(n);
        out
    }

    fn open(rx: &mut Sealer, s: &[u8]) -> Result<Vec<u8>, Reject> {
        let mut buf = s.to_vec();
        let n = rx.open(&mut buf, s.len(), T)?;
        buf.truncate(n);
        Ok(buf)
    }

    #[test]
    fn round_trip_both_ciphers_macs_in_clear() {
        for c in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            let (mut tx, mut rx) = pair(c);
            for len in [14, 60, 1514, 9000] {
                let f = frame(len, len as u8);
                let s = sealed(&mut tx, &f);
                assert_eq!(s.len(), len + OVERHEAD);
                assert_eq!(&s[..12], &f[..12], "MACs in clear");
                assert_eq!(u16::from_be_bytes([s[12], s[13]]), ETHERTYPE);
                assert!(len < 40 || !s.windows(16).any(|w| w == &f[20..36]), "the payload is not in clear");
                assert_eq!(open(&mut rx, &s).unwrap(), f, "{c:?} {len}");
            }
        }
    }

    #[test]
    fn tampered_truncated_replayed_wrong_key_and_clear_are_counted() {
        let (mut tx, mut rx) = pair(Cipher::best());
        let f = frame(100, 1);
        let s = sealed(&mut tx, &f);
        for i in [0, 6, 13, 14, 16, 20, 40, 50, s.len() - 1] {
            let mut t = s.clone();
            t[i] ^= 0x01;
            let r = open(&mut rx, &t);
            assert!(matches!(r, Err(Reject::BadTag | Reject::BadFormat | Reject::WrongKey | Reject::NotSealed)), "byte {i}: {r:?}");
        }
        assert_eq!(open(&mut rx, &s[..s.len() - 1]), Err(Reject::BadTag), "truncated tag");
        assert_eq!(open(&mut rx, &s[..50]), Err(Reject::Truncated));
        assert_eq!(open(&mut rx, &f), Err(Reject::NotSealed));
        assert_eq!(open(&mut rx, &s).unwrap(), f, "the next valid frame gets through");
        assert_eq!(open(&mut rx, &s), Err(Reject::Replayed));
        let mut other = Sealer::new(vec![key(2)], Cipher::best()).unwrap();
        assert_eq!(open(&mut rx, &sealed(&mut other, &f)), Err(Reject::WrongKey));
        let st = rx.stats;
        assert_eq!((st.replayed, st.wrong_key, st.truncated, st.not_sealed, st.opened), (1, 2, 1, 2, 1), "a flipped key id is another key");
        assert!(st.bad_tag >= 7, "{st:?}");
        assert_eq!(rx.sessions(), 1, "failures create no session");
    }

    #[test]
    fn forged_senders_do_not_grow_memory_and_real_ones_are_bounded() {
        let mut rx = Sealer::new(vec![key(1)], Cipher::best()).unwrap();
        let mut tx = Sealer::new(vec![key(1)], Cipher::best()).unwrap();
        let s = sealed(&mut tx, &frame(80, 3));
        for k in 0..3000u32 {
            let mut t = s.clone();
            t[OFF_SESSION..OFF_SESSION + 4].copy_from_slice(&k.to_be_bytes());
            assert_eq!(open(&mut rx, &t), Err(Reject::BadTag));
        }
        assert_eq!(rx.sessions(), 0);
        for _ in 0..(MAX_SESSIONS + 10) {
            let mut t = Sealer::new(vec![key(1)], Cipher::best()).unwrap();
            assert!(open(&mut rx, &sealed(&mut t, &frame(60, 1))).is_ok());
        }
        assert_eq!((rx.sessions(), rx.stats.sessions_evicted), (MAX_SESSIONS, 10));
    }

    /// Nonces never repeat: every sealer draws its own session, and a
    /// counter at its end starts a new one.
    #[test]
    fn sessions_are_fresh_and_the_counter_never_wraps() {
        let (mut a, mut b) = pair(Cipher::best());
        assert_ne!(a.session, b.session);
        let f = frame(60, 9);
        let first = sealed(&mut a, &f);
        a.counter = u64::MAX;
        let old = a.session;
        let next = sealed(&mut a, &f);
        assert_ne!(a.session, old, "a new session at the counter's end");
        assert_eq!(&next[OFF_COUNTER..OFF_TIME], &0u64.to_be_bytes());
        assert_eq!(open(&mut b, &first).unwrap(), f);
        assert_eq!(open(&mut b, &next).unwrap(), f, "the new session opens too");
        assert_eq!(a.stats.sessions_started, 2);
    }

    /// Old traffic cannot open a session a receiver does not know (it
    /// restarted): only frames stamped within MAX_SKEW start one; a known
    /// session goes on whatever the stamps.
    #[test]
    fn an_unknown_session_starts_only_from_a_fresh_frame() {
        let (mut tx, _) = pair(Cipher::best());
        let f = frame(80, 5);
        let mut out = vec![0u8; 2000];
        let n = tx.seal(&f, &mut out, T - 3600).unwrap();
        let old = out[..n].to_vec();
        let n = tx.seal(&f, &mut out, T - 30).unwrap();
        let recent = out[..n].to_vec();
        let mut restarted = Sealer::new(vec![key(1)], Cipher::best()).unwrap();
        assert_eq!(open(&mut restarted, &old), Err(Reject::Stale));
        assert_eq!(restarted.sessions(), 0);
        assert_eq!(open(&mut restarted, &recent).unwrap(), f);
        let mut buf = old.clone();
        assert_eq!(restarted.open(&mut buf, old.len(), T).map(|_| ()), Ok(()), "known now: the window decides");
        let n = tx.seal(&f, &mut out, T + 3600).unwrap();
        let mut ahead = out[..n].to_vec();
        let l = ahead.len();
        assert!(restarted.open(&mut ahead, l, T).is_ok(), "a known session's later stamps are fine");
        assert_eq!(restarted.stats.stale, 1);
    }

    #[test]
    fn key_rollover_old_and_new_accepted_during_the_change() {
        let mut old_only = Sealer::new(vec![key(1)], Cipher::best()).unwrap();
        let mut both_old_first = Sealer::new(vec![key(1), key(2)], Cipher::best()).unwrap();
        let mut both_new_first = Sealer::new(vec![key(2), key(1)], Cipher::best()).unwrap();
        let f = frame(70, 4);
        assert!(open(&mut both_new_first, &sealed(&mut old_only, &f)).is_ok());
        assert!(open(&mut both_old_first, &sealed(&mut both_new_first, &f)).is_ok());
        assert_eq!(open(&mut old_only, &sealed(&mut both_new_first, &f)), Err(Reject::WrongKey));
        let mut new_only = Sealer::new(vec![key(9)], Cipher::best()).unwrap();
        new_only.set_keys(vec![key(2)]).unwrap();
        assert!(open(&mut both_old_first, &sealed(&mut new_only, &f)).is_ok(), "set_keys seals with the new key");
    }

    /// Not a test: how the AEAD crate was chosen. Seal and open of
    /// 1448-byte segments, ring against RustCrypto, both ciphers.
    /// `cargo test --release -- --ignored --nocapture aead_crates`
    #[test]
    #[ignore]
    fn aead_crates_compared() {
        use aes_gcm::aead::AeadInPlace;
        use aes_gcm::KeyInit;
        let rounds = 200_000u32;
        let mut buf = vec![7u8; 1448];
        let time = |name: &str, f: &mut dyn FnMut(u64)| {
            let t = std::time::Instant::now();
            for i in 0..u64::from(rounds) {
                f(i);
            }
            let ns = t.elapsed().as_nanos() as f64 / f64::from(rounds);
            eprintln!("{name:32} {ns:6.0} ns per 1448-byte seal ({:.2} GB/s)", 1448.0 / ns);
        };
        for c in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            let k = LessSafeKey::new(UnboundKey::new(c.algorithm(), &[3; 32]).unwrap());
            time(&format!("ring {c:?}"), &mut |i| {
                let _ = std::hint::black_box(k.seal_in_place_separate_tag(nonce(i), Aad::from(&[1u8; 43][..]), &mut buf).unwrap());
            });
        }
        let aes = aes_gcm::Aes256Gcm::new_from_slice(&[3; 32]).unwrap();
        time("RustCrypto aes-gcm", &mut |i| {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&i.to_be_bytes());
            std::hint::black_box(aes.encrypt_in_place_detached(&n.into(), &[1u8; 43], &mut buf).unwrap());
        });
        let cc = chacha20poly1305::ChaCha20Poly1305::new_from_slice(&[3; 32]).unwrap();
        time("RustCrypto chacha20poly1305", &mut |i| {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&i.to_be_bytes());
            std::hint::black_box(cc.encrypt_in_place_detached(&n.into(), &[1u8; 43], &mut buf).unwrap());
        });
    }

    #[test]
    fn key_files_parsed_and_refused() {
        let k = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        assert_eq!(parse_keys(&format!("{k}\n")).unwrap().len(), 1);
        assert_eq!(parse_keys(&format!("# rolled\n{k}\n\n{}\n", k.to_uppercase())).unwrap().len(), 2);
        assert_eq!(parse_keys("").err(), Some(0));
        assert_eq!(parse_keys(&format!("{k}\n{}", &k[1..])).err(), Some(2));
        assert_eq!(parse_keys(&format!("{k}\n{k}\n{k}\n")).err(), Some(3));
        assert_eq!(parse_keys(&k.replace('0', "g")).err(), Some(1));
        let dir = std::env::temp_dir().join(format!("vdeplug-seal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        let _ = std::fs::remove_file(&p);
        keygen(&p).unwrap();
        let (keys, _) = read_key_file(&p).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keygen(&p).is_err(), "never over an existing file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_key_file(&p).err().unwrap().to_string();
        assert!(e.contains("readable by others") && e.contains("chmod 600"), "{e}");
        let l = dir.join("link");
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert!(read_key_file(&l).is_err(), "never through a symlink");
        assert!(read_key_file(&dir).is_err(), "not a regular file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
