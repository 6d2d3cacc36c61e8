//! macvtap://IFACE — frames straight onto a host NIC through an existing
//! macvtap interface IFACE (made by `ip link add link eth0 name IFACE type
//! macvtap mode bridge`), as upstream vdeplug4's libvdeplug_macvtap (2023,
//! not in 4.0.1): the plugin opens the interface's character device
//! `/dev/tap<ifindex of IFACE>` as a tap without packet info. It never
//! creates the interface. No options.
//!
//! Unlike upstream: the device number is checked against sysfs
//! (`/sys/class/net/IFACE/macvtap/tapN/dev`) when sysfs shows this network
//! namespace; if `/dev/tapN` is missing or belongs to another namespace's
//! interface of the same index (devtmpfs names nodes by ifindex, which is
//! per namespace), a private node is made for the open and removed at
//! once. Offloads (virtio-net header, TCP/UDP super-frames) are
//! negotiated as for tap:// (see tap.rs), off with VDEPLUG_TAP_OFFLOAD=0.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{ctx, tap};
use crate::sys;

/// Open the macvtap interface `name` as a transport (a `Tap`).
pub fn open(name: &str) -> io::Result<tap::Tap> {
    let what = format!("macvtap://{name}");
    let idx = sys::if_index(name).map_err(|_| {
        ctx(
            io::Error::new(io::ErrorKind::NotFound, format!("no interface {name} in this network namespace: make one over a NIC, e.g. `ip link add link eth0 name {name} type macvtap mode bridge`")),
            &what,
        )
    })?;
    let dev = PathBuf::from(format!("/dev/tap{idx}"));
    let want = tap::offload_wanted();
    let fd = match sysfs_devt(name, idx).map_err(|e| ctx(e, &what))? {
        Some(devt) if node_devt(&dev) != Some(devt) => open_private_node(devt, want),
        _ => sys::open_macvtap(&dev, want),
    }
    .map_err(|e| ctx(explain(e, name, &dev), &what))?;
    tap::with_fd(fd, what, want)
}

/// The device number sysfs gives IFACE's macvtap node: None when sysfs
/// does not show this interface (mounted for another network namespace);
/// an error when it shows IFACE is not a macvtap.
fn sysfs_devt(name: &str, idx: u32) -> io::Result<Option<(u32, u32)>> {
    let base = Path::new("/sys/class/net").join(name);
    let same = std::fs::read_to_string(base.join("ifindex")).ok().and_then(|s| s.trim().parse::<u32>().ok()) == Some(idx);
    if !same {
        return Ok(None);
    }
    let Ok(text) = std::fs::read_to_string(base.join(format!("macvtap/tap{idx}/dev"))) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name} is not a macvtap interface (for a tap, use tap://{name})")));
    };
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("unreadable device number {:?} in sysfs", text.trim()));
    let (maj, min) = text.trim().split_once(':').ok_or_else(bad)?;
    Ok(Some((maj.parse().map_err(|_| bad())?, min.parse().map_err(|_| bad())?)))
}

/// The device number of `path` if it is a character device.
fn node_devt(path: &Path) -> Option<(u32, u32)> {
    let m = std::fs::metadata(path).ok()?;
    m.file_type().is_char_device().then(|| (libc::major(m.rdev()), libc::minor(m.rdev())))
}

/// Open `major:minor` through a node made in a fresh private directory,
/// removed (with the directory) right after the open.
fn open_private_node(devt: (u32, u32), vnet_hdr: bool) -> io::Result<std::os::fd::OwnedFd> {
    let (dir, _dirfd) = sys::make_private_dir(&std::env::temp_dir(), "vdeplug-macvtap.")?;
    let node = dir.join("tap");
    let r = sys::mknod_char(&node, devt.0, devt.1).and_then(|()| sys::open_macvtap(&node, vnet_hdr));
    let _ = std::fs::remove_file(&node);
    let _ = std::fs::remove_dir(&dir);
    r
}

/// A failed open with what to do about it.
fn explain(e: io::Error, name: &str, dev: &Path) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::ENOENT) => format!("no {} for {name}: is {name} a macvtap interface (`ip -d link show {name}`)?", dev.display()),
        Some(libc::EACCES) => format!("cannot open {} (Permission denied): give your user access to it (`chown`/`chmod` it, or a udev rule)", dev.display()),
        Some(libc::EPERM) => format!("cannot make a device node for {name} (needs CAP_MKNOD): open it as root, or make {} reachable", dev.display()),
        Some(libc::EBUSY) => format!("{name}'s queue is taken by another process"),
        _ => return e,
    };
    io::Error::new(e.kind(), why)
}

// ---------------------------------------------------------------- VNL

fn open_vnl(t: &Target, _args: &OpenArgs) -> OpenResult {
    if t.address.is_empty() {
        return Err(t.error("missing interface name: macvtap://IFACE", &t.address));
    }
    Ok(Box::new(open(&super::tap::interface_name(t)?)?))
}

pub const PLUGIN: Builtin =
    Builtin { scheme: "macvtap", syntax: Syntax::Raw, options: &[], bare: None, nests: false, summary: "Linux macvtap interface (a NIC's MAC-VLAN): macvtap://mvtap0", open: open_vnl };

use crate::plugins::{Builtin, OpenArgs, OpenResult, Target};
use crate::vnl::Syntax;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_names_and_missing_interfaces() {
        for (vnl, part) in [("macvtap://", ""), ("macvtap://a/b", "a/b"), ("macvtap://abcdefghijklmnop", "abcdefghijklmnop")] {
            match crate::plugins::open_transport(vnl.as_bytes(), &OpenArgs::default()) {
                Err(crate::plugins::OpenError::Vnl(e)) => assert_eq!(e.part, part, "{vnl}"),
                Err(e) => panic!("{vnl}: {e}"),
                Ok(_) => panic!("{vnl} opened"),
            }
        }
        match crate::plugins::open_transport(b"macvtap://nosuch-mvt0", &OpenArgs::default()) {
            Err(e) => assert!(e.to_string().contains("no interface nosuch-mvt0") && e.to_string().contains("type macvtap"), "{e}"),
            Ok(_) => panic!("opened a missing interface"),
        }
    }

    #[test]
    fn lo_is_not_a_macvtap() {
        let idx = sys::if_index("lo").unwrap();
        let e = sysfs_devt("lo", idx).unwrap_err();
        assert!(e.to_string().contains("not a macvtap"), "{e}");
    }
}
