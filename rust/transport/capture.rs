//! capture://FILE[limit=64M/files=4]{VNL} and `vde_plug --pcap FILE`:
//! every frame crossing the inner transport, both ways, goes to a pcap file
//! (microsecond timestamps, LINKTYPE_ETHERNET), readable by tcpdump and
//! tshark. When FILE reaches `limit` bytes it is renamed FILE.1 (FILE.1 to
//! FILE.2, …) and a new FILE begins; at most `files` files exist, so a
//! capture cannot fill the disk.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::ctx;
use super::nested::Hook;

/// pcap global header: magic, v2.4, tz 0, sigfigs 0, snaplen, LINKTYPE_ETHERNET.
pub fn file_header(snaplen: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h
}

/// pcap record header for a frame of `len` bytes captured at `t`.
pub fn record_header(t: SystemTime, len: usize) -> [u8; 16] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&(d.as_secs() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&d.subsec_micros().to_le_bytes());
    h[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    h
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// Rotate when a file would grow past this many bytes (at least one frame is always written).
    pub limit: u64,
    /// How many files (FILE, FILE.1, …) may exist.
    pub files: u32,
}

pub struct Capture {
    cfg: Config,
    out: BufWriter<File>,
    size: u64,
    frames: u64,
    rotations: u64,
    write_errors: u64,
}

/// Create (or truncate) a capture file of ours: never through a symlink
/// (O_NOFOLLOW), never into a file of another user (a planted world-writable
/// file in /tmp would hand them the traffic); mode 0600, captures are private.
fn open_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?;
    let m = f.metadata()?;
    if !m.is_file() || m.uid() != crate::sys::geteuid() {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{} belongs to another user or is not a regular file", path.display())));
    }
    f.set_len(0)?;
    Ok(f)
}

fn create(path: &Path) -> io::Result<BufWriter<File>> {
    let mut f = BufWriter::with_capacity(1 << 16, open_private(path).map_err(|e| ctx(e, path.display()))?);
    f.write_all(&file_header(crate::wire::ETH_BUFSIZE as u32))?;
    Ok(f)
}

pub fn hook(cfg: Config) -> io::Result<Capture> {
    let out = create(&cfg.path)?;
    Ok(Capture { cfg, out, size: 24, frames: 0, rotations: 0, write_errors: 0 })
}

/// FILE.n
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Capture {
    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let keep = self.cfg.files.max(1);
        if keep == 1 {
            // Only one file allowed: start it again.
            self.out = create(&self.cfg.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(&self.cfg.path, keep - 1));
            for n in (1..keep - 1).rev() {
                let _ = std::fs::rename(numbered(&self.cfg.path, n), numbered(&self.cfg.path, n + 1));
            }
            std::fs::rename(&self.cfg.path, numbered(&self.cfg.path, 1))?;
            self.out = create(&self.cfg.path)?;
        }
        self.size = 24;
        self.rotations += 1;
        Ok(())
    }

    fn record(&mut self, frame: &[u8]) {
        let need = 16 + frame.len() as u64;
        let r = (|| {
            if self.size + need > self.cfg.limit && self.size > 24 {
                self.rotate()?;
            }
            self.out.write_all(&record_header(SystemTime::now(), frame.len()))?;
            self.out.write_all(frame)
        })();
        match r {
            Ok(()) => {
                self.size += need;
                self.frames += 1;
            }
            // A full disk must not stop the network: count and go on.
            Err(_) => self.write_errors += 1,
        }
    }
}

impl Hook for Capture {
    fn incoming(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        if let Some(f) = buf.get(..len) {
            self.record(f);
        }
        Some(len)
    }
    fn outgoing(&mut self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        let o = out.get_mut(..frame.len())?;
        o.copy_from_slice(frame);
        self.record(frame);
        Some(frame.len())
    }
    fn flush(&mut self) {
        if self.out.flush().is_err() {
            self.write_errors += 1;
        }
    }
    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        vec![("captured", self.frames), ("capture_rotations", self.rotations), ("capture_errors", self.write_errors)]
    }
}

// ---------------------------------------------------------------- VNL

pub const OPTIONS: &[Opt] = &[
    opt("limit", Kind::Size { min: 1024 }, OptDefault::Int(64 << 20), "rotate after this many bytes (K/M/G)"),
    opt("files", Kind::Int { lo: 1, hi: 1000 }, OptDefault::Int(4), "files kept: FILE, FILE.1, ..."),
];

fn open_vnl(t: &Target, args: &OpenArgs) -> OpenResult {
    if t.address.is_empty() {
        return Err(t.error("capture:// needs a file name", &t.vnl));
    }
    let cfg = Config { path: t.abs_path(), limit: t.num("limit"), files: t.num("files") as u32 };
    let inner = open_nested(t, args)?;
    Ok(Box::new(super::nested::Nested::new(inner, hook(cfg)?)))
}

pub const PLUGIN: Builtin =
    Builtin { scheme: "capture", syntax: Syntax::Path, options: OPTIONS, bare: None, nests: true, summary: "pcap capture around a VNL: capture:///tmp/x.pcap{vxvde://}", open: open_vnl };

use crate::plugins::{open_nested, opt, Builtin, Kind, OpenArgs, OpenResult, Opt, OptDefault, Target};
use crate::vnl::Syntax;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_at_most_files() {
        let dir = std::env::temp_dir().join(format!("vdeplug-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.pcap");
        let mut c = hook(Config { path: path.clone(), limit: 1000, files: 3 }).unwrap();
        let f = [0x11u8; 100];
        for _ in 0..100 {
            c.record(&f);
        }
        c.flush();
        assert_eq!(c.frames, 100);
        assert!(c.rotations >= 10, "{}", c.rotations);
        let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["c.pcap", "c.pcap.1", "c.pcap.2"]);
        for n in &names {
            let data = std::fs::read(dir.join(n)).unwrap();
            assert!(data.len() as u64 <= 1000, "{n}: {}", data.len());
            assert_eq!(&data[..4], &0xa1b2_c3d4u32.to_le_bytes());
            assert_eq!((data.len() - 24) % 116, 0, "whole records only");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
