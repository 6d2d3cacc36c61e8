//! vlan://[vlan][/untag=N][/tag=A:B-C][/trunk][/qinq]{VNL} — 802.1Q tagging
//! done by the plug, as Debian's libvdeplug_vlan (checked against it):
//!
//! to the network: untagged frames get `vlan` (unchanged when 0); frames
//! tagged `untag` lose their tag; tags listed in `tag` are mapped (A-B: A on
//! our side is B on the network); other tags pass only with `trunk`.
//! From the network, the reverse: `vlan` is untagged, untagged frames get
//! `untag` (or pass when `vlan` is 0, else are dropped), mapped tags are
//! mapped back, other tags pass only with `trunk`. Only the TPID in use
//! (0x8100, or 0x88a8 with qinq) is a tag; any other frame is "untagged".
//! A tag this plugin passes or writes carries the VLAN id only (priority
//! bits cleared), as Debian's plugin does on the wire. Unlike it, frames
//! received with a kept or mapped tag keep their length (Debian's 4.0.1
//! plugin hands them up padded to the full 9234-byte buffer).

use super::nested::Hook;
use crate::wire::ethernet::{HEADER_LEN, TPID_8021Q};
use crate::wire::ETH_BUFSIZE;

pub const TPID_8021AD: u16 = 0x88a8;
const VID_MASK: u16 = 0x0fff;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The VLAN our side sees untagged (0: none).
    pub vlan: u16,
    /// Untagged network traffic appears to us with this tag (0: none).
    pub untag: u16,
    /// (our tag, network tag) pairs.
    pub map: Vec<(u16, u16)>,
    pub trunk: bool,
    pub qinq: bool,
}

#[derive(Default)]
pub struct Vlan {
    cfg: Config,
    tpid: u16,
    filtered_in: u64,
    filtered_out: u64,
}

pub fn hook(cfg: Config) -> Vlan {
    let tpid = if cfg.qinq { TPID_8021AD } else { TPID_8021Q };
    Vlan { cfg, tpid, ..Vlan::default() }
}

/// What to do with a frame's outer tag.
enum Action {
    Keep,
    Push(u16),
    Pop,
    Retag(u16),
    Drop,
}

impl Vlan {
    fn tag_of(&self, f: &[u8]) -> Option<u16> {
        (f.len() >= HEADER_LEN + 4 && u16::from_be_bytes([f[12], f[13]]) == self.tpid).then(|| u16::from_be_bytes([f[14], f[15]]) & VID_MASK)
    }

    fn outbound_action(&self, tag: Option<u16>) -> Action {
        let c = &self.cfg;
        match tag {
            None if c.vlan != 0 => Action::Push(c.vlan),
            None => Action::Keep,
            Some(t) if c.untag != 0 && t == c.untag => Action::Pop,
            Some(t) => match c.map.iter().find(|m| m.0 == t) {
                Some(&(_, net)) => Action::Retag(net),
                None if c.trunk => Action::Retag(t),
                None => Action::Drop,
            },
        }
    }

    fn inbound_action(&self, tag: Option<u16>) -> Action {
        let c = &self.cfg;
        match tag {
            None if c.untag != 0 => Action::Push(c.untag),
            None if c.vlan == 0 => Action::Keep,
            None => Action::Drop,
            Some(t) if c.vlan != 0 && t == c.vlan => Action::Pop,
            Some(t) => match c.map.iter().find(|m| m.1 == t) {
                Some(&(ours, _)) => Action::Retag(ours),
                None if c.trunk => Action::Retag(t),
                None => Action::Drop,
            },
        }
    }

    /// Apply `a` in place to the `len`-byte frame at the start of `buf`
    /// (shifting the body by 4 bytes to push or pop a tag); the new length,
    /// or None to drop it.
    fn rewrite(&self, a: Action, buf: &mut [u8], len: usize) -> Option<usize> {
        match a {
            Action::Push(vid) if len >= HEADER_LEN && len + 4 <= ETH_BUFSIZE && buf.len() >= len + 4 => {
                buf.copy_within(12..len, 16);
                buf[12..14].copy_from_slice(&self.tpid.to_be_bytes());
                buf[14..16].copy_from_slice(&vid.to_be_bytes());
                Some(len + 4)
            }
            Action::Push(_) | Action::Drop => None,
            Action::Pop => {
                buf.copy_within(16..len, 12);
                Some(len - 4)
            }
            Action::Keep => Some(len),
            Action::Retag(vid) => {
                buf[14..16].copy_from_slice(&vid.to_be_bytes());
                Some(len)
            }
        }
    }
}

impl Hook for Vlan {
    fn incoming(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        let tag = self.tag_of(buf.get(..len)?);
        let r = self.rewrite(self.inbound_action(tag), buf, len);
        if r.is_none() {
            self.filtered_in += 1;
        }
        r
    }

    fn outgoing(&mut self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        let action = self.outbound_action(self.tag_of(frame));
        let r = match out.get_mut(..frame.len()) {
            Some(o) => {
                o.copy_from_slice(frame);
                self.rewrite(action, out, frame.len())
            }
            None => None,
        };
        if r.is_none() {
            self.filtered_out += 1;
        }
        r
    }

    fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        vec![("vlan_filtered_in", self.filtered_in), ("vlan_filtered_out", self.filtered_out)]
    }
}

// ---------------------------------------------------------------- VNL

const VID: Kind = Kind::Int { lo: 0, hi: 4095 };
const OPTIONS: &[Opt] = &[
    opt("untag", VID, OptDefault::Int(0), "tag that untagged network traffic gets on our side"),
    opt("tag", Kind::TagMap, OptDefault::Unset, "VLANs seen tagged: 10:11-12 (ours-network)"),
    opt("trunk", Kind::Flag, OptDefault::Bool(false), "pass tags not listed"),
    opt("x", Kind::Flag, OptDefault::Bool(false), "same as trunk"),
    opt("qinq", Kind::Flag, OptDefault::Bool(false), "802.1ad TPID 0x88a8"),
    opt("ad", Kind::Flag, OptDefault::Bool(false), "same as qinq"),
];

fn open_vnl(t: &Target, args: &OpenArgs) -> OpenResult {
    let text = t.address_str();
    let vlan = match crate::plugins::convert(VID, if text.is_empty() { b"0" } else { &t.address }) {
        Ok(Value::Int(v)) => v as u16,
        Ok(_) | Err(_) => return Err(t.error(format!("bad VLAN {text:?}: must be between 0 and 4095"), &t.address)),
    };
    let map = match t.value("tag") {
        Value::TagMap(m) => m.clone(),
        _ => Vec::new(),
    };
    let cfg = Config { vlan, untag: t.num("untag") as u16, map, trunk: t.flag("trunk") || t.flag("x"), qinq: t.flag("qinq") || t.flag("ad") };
    let inner = open_nested(t, args)?;
    Ok(Box::new(super::nested::Nested::new(inner, hook(cfg))))
}

pub const PLUGIN: Builtin = Builtin { scheme: "vlan", syntax: Syntax::Net, options: OPTIONS, bare: None, nests: true, summary: "802.1Q tagging around a VNL: vlan://3{vde:///tmp/sw}", open: open_vnl };

use crate::plugins::{open_nested, opt, Builtin, Kind, OpenArgs, OpenResult, Opt, OptDefault, Target, Value};
use crate::vnl::Syntax;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tpid_vid: Option<(u16, u16)>) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        if let Some((tpid, vid)) = tpid_vid {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend(std::iter::repeat_n(0x50, 46));
        f
    }

    fn describe(v: &Vlan, f: &[u8]) -> Option<u16> {
        v.tag_of(f)
    }

    /// Out and back through the hook; `None` = dropped, `Some(None)` = untagged.
    fn out(v: &mut Vlan, f: &[u8]) -> Option<Option<u16>> {
        let mut o = vec![0u8; ETH_BUFSIZE + 1];
        let n = v.outgoing(f, &mut o)?;
        Some(describe(v, &o[..n]))
    }
    fn inc(v: &mut Vlan, f: &[u8]) -> Option<Option<u16>> {
        let mut b = vec![0u8; ETH_BUFSIZE + 1];
        b[..f.len()].copy_from_slice(f);
        let n = v.incoming(&mut b, f.len())?;
        assert_eq!(&b[n - 46..n], &f[f.len() - 46..], "payload intact");
        Some(describe(v, &b[..n]))
    }

    const Q: u16 = TPID_8021Q;

    #[test]
    fn matches_debian_vlan_3_untag_4() {
        // Observed with Debian's libvdeplug_vlan: vlan://3/untag=4{...}
        let mut v = hook(Config { vlan: 3, untag: 4, ..Config::default() });
        assert_eq!(out(&mut v, &frame(None)), Some(Some(3)));
        assert_eq!(out(&mut v, &frame(Some((Q, 3)))), None);
        assert_eq!(out(&mut v, &frame(Some((Q, 4)))), Some(None));
        assert_eq!(out(&mut v, &frame(Some((Q, 7)))), None);
        assert_eq!(inc(&mut v, &frame(None)), Some(Some(4)));
        assert_eq!(inc(&mut v, &frame(Some((Q, 3)))), Some(None));
        assert_eq!(inc(&mut v, &frame(Some((Q, 4)))), None);
        assert_eq!(v.filtered_in + v.filtered_out, 3);
    }

    #[test]
    fn matches_debian_map_trunk_and_qinq() {
        let mut v = hook(Config { vlan: 3, map: vec![(10, 10), (11, 12)], ..Config::default() });
        assert_eq!(out(&mut v, &frame(Some((Q, 11)))), Some(Some(12)));
        assert_eq!(out(&mut v, &frame(Some((Q, 12)))), None);
        assert_eq!(inc(&mut v, &frame(Some((Q, 12)))), Some(Some(11)));
        assert_eq!(inc(&mut v, &frame(Some((Q, 11)))), None);
        assert_eq!(inc(&mut v, &frame(None)), None);
        let mut t = hook(Config { vlan: 3, trunk: true, ..Config::default() });
        assert_eq!(out(&mut t, &frame(Some((Q, 3)))), Some(Some(3)));
        assert_eq!(out(&mut t, &frame(Some((Q, 7)))), Some(Some(7)));
        assert_eq!(inc(&mut t, &frame(Some((Q, 7)))), Some(Some(7)));
        assert_eq!(inc(&mut t, &frame(Some((Q, 3)))), Some(None));
        let mut z = hook(Config::default());
        assert_eq!(out(&mut z, &frame(None)), Some(None));
        assert_eq!(inc(&mut z, &frame(None)), Some(None));
        assert_eq!(out(&mut z, &frame(Some((Q, 3)))), None);
        let mut q = hook(Config { vlan: 5, qinq: true, ..Config::default() });
        assert_eq!(out(&mut q, &frame(Some((Q, 3)))), Some(Some(5)), "an 802.1Q frame is 'untagged' for qinq");
        assert_eq!(inc(&mut q, &frame(Some((TPID_8021AD, 5)))), Some(None));
    }

    #[test]
    fn never_panics_on_short_or_huge_frames() {
        let mut v = hook(Config { vlan: 3, untag: 4, ..Config::default() });
        for n in 0..40 {
            let f = vec![0x81u8; n];
            let mut b = vec![0u8; ETH_BUFSIZE + 1];
            b[..n].copy_from_slice(&f);
            let _ = v.incoming(&mut b, n);
            let _ = v.outgoing(&f, &mut b);
        }
        let big = frame(None).into_iter().chain(std::iter::repeat_n(0, ETH_BUFSIZE - 60)).collect::<Vec<_>>();
        assert_eq!(out(&mut v, &big[..ETH_BUFSIZE]), None, "no room for a tag");
    }
}
