//! The built-in plugins, by scheme: each transport file declares its
//! `PLUGIN` (syntax, option table with defaults, and how to open it from a
//! parsed VNL); this file holds the table, typed options, and `open`, the
//! one way from a VNL to a transport. Python (`vdeplug.registry`) and the C
//! library (`libvdeplug.so.2`) both open built-ins through here, so every
//! option name and default is written once.

use std::fmt;
use std::io;

use crate::transport::{self, Transport};
use crate::vnl::{self, Syntax, VnlError};

/// How an option's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Decimal, or 0x/0o/0b prefixed, within lo..=hi.
    Int {
        lo: u64,
        hi: u64,
    },
    /// Octal permission bits (0..=0o7777).
    Octal,
    /// A size with an optional K/M/G/T suffix (powers of 1024), at least `min`.
    Size {
        min: u64,
    },
    /// Present or not; takes no value.
    Flag,
    Text,
    /// A group: '' is our egid, digits a gid, else a group name.
    Gid,
    /// A number, or a group name whose gid is the number (vxvde's vni).
    VniOrGid,
    /// VLAN map `A:B-C` (ours-network pairs; `:` or `.` separate).
    TagMap,
}

/// A default (const-friendly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptDefault {
    Unset,
    Int(u64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Unset,
    Int(u64),
    Bool(bool),
    Text(Vec<u8>),
    TagMap(Vec<(u16, u16)>),
}

impl From<OptDefault> for Value {
    fn from(d: OptDefault) -> Self {
        match d {
            OptDefault::Unset => Value::Unset,
            OptDefault::Int(v) => Value::Int(v),
            OptDefault::Bool(b) => Value::Bool(b),
        }
    }
}

/// One `/name=value` option a plugin accepts.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    pub name: &'static str,
    pub kind: Kind,
    pub default: OptDefault,
    pub help: &'static str,
}

pub const fn opt(name: &'static str, kind: Kind, default: OptDefault, help: &'static str) -> Opt {
    Opt { name, kind, default, help }
}

/// What `vde_open_args` and the description carry (the caller's wishes;
/// options in the URL win over them, as in vdeplug4).
#[derive(Debug, Clone, Default)]
pub struct OpenArgs {
    /// The full description (see `full_descr`).
    pub descr: String,
    pub mode: Option<u32>,
    pub group: Option<String>,
    pub port: Option<u32>,
}

/// vdeplug4 appends the user, pid and ssh client to the description.
pub fn full_descr(descr: &str) -> String {
    let mut d = format!("{descr} user={} pid={}", crate::sys::geteuid(), std::process::id());
    if let Some(ip) = std::env::var("SSH_CLIENT").ok().and_then(|s| s.split_whitespace().next().map(str::to_string)) {
        d.push_str(&format!(" SSH={ip}"));
    }
    let mut end = d.len().min(128);
    while !d.is_char_boundary(end) {
        end -= 1;
    }
    d.truncate(end);
    d
}

/// Why an open failed.
#[derive(Debug)]
pub enum OpenError {
    /// The VNL is malformed (EINVAL for C callers).
    Vnl(VnlError),
    /// No plugin has this scheme (EPROTONOSUPPORT for C callers).
    Unknown(String),
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Vnl(e) => write!(f, "{e}"),
            OpenError::Unknown(s) => write!(f, "unknown scheme {s:?}"),
            OpenError::Io(e) => write!(f, "{}", transport::describe(e)),
        }
    }
}

impl From<VnlError> for OpenError {
    fn from(e: VnlError) -> Self {
        OpenError::Vnl(e)
    }
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

impl OpenError {
    /// The errno a C caller sees.
    pub fn errno(&self) -> i32 {
        match self {
            OpenError::Vnl(_) => libc::EINVAL,
            OpenError::Unknown(_) => libc::EPROTONOSUPPORT,
            OpenError::Io(e) => transport::errno_of(e).unwrap_or(libc::EIO),
        }
    }
}

pub type OpenResult = Result<Box<dyn Transport>, OpenError>;

/// A built-in plugin: how its VNL reads and how it opens.
pub struct Builtin {
    pub scheme: &'static str,
    pub syntax: Syntax,
    pub options: &'static [Opt],
    /// Path syntax: the option a bare `[item]` sets (vde: `[3]` is the port).
    pub bare: Option<&'static str>,
    /// `scheme://head{inner VNL}`.
    pub nests: bool,
    pub summary: &'static str,
    pub open: fn(&Target, &OpenArgs) -> OpenResult,
}

/// A parsed VNL with typed options, as a plugin's open receives it.
#[derive(Debug, Clone)]
pub struct Target {
    pub vnl: Vec<u8>,
    pub scheme: String,
    pub address: Vec<u8>,
    pub options: &'static [Opt],
    pub values: Vec<Value>,
    pub given: Vec<bool>,
    pub nested: Option<Vec<u8>>,
}

impl Target {
    fn index(&self, name: &str) -> usize {
        self.options.iter().position(|o| o.name == name).unwrap_or(usize::MAX)
    }
    pub fn value(&self, name: &str) -> &Value {
        self.values.get(self.index(name)).unwrap_or(&Value::Unset)
    }
    pub fn int(&self, name: &str) -> Option<u64> {
        match self.value(name) {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
    /// An option whose table default is a number: `typed` filled it in,
    /// so there is always a value and the call site writes no second
    /// default.
    ///
    /// # Panics
    /// If the plugin's table gives `name` no number default (a bug in the
    /// table, hit by every open of that plugin).
    pub fn num(&self, name: &str) -> u64 {
        match self.value(name) {
            Value::Int(v) => *v,
            _ => panic!("{}: option {name:?} has no number default in its table", self.scheme),
        }
    }
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.value(name), Value::Bool(true))
    }
    pub fn text(&self, name: &str) -> Option<String> {
        match self.value(name) {
            Value::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        }
    }
    pub fn given(&self, name: &str) -> bool {
        self.given.get(self.index(name)).copied().unwrap_or(false)
    }
    pub fn address_str(&self) -> String {
        String::from_utf8_lossy(&self.address).into_owned()
    }
    /// A VNL error about `part` of this target.
    pub fn error(&self, msg: impl Into<String>, part: impl AsRef<[u8]>) -> OpenError {
        OpenError::Vnl(VnlError::new(msg, String::from_utf8_lossy(part.as_ref())))
    }
    /// The address as an absolute path (relative to the cwd).
    pub fn abs_path(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(&self.address));
        std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
    }
}

// ---------------------------------------------------------------- conversions

fn parse_int(t: &str) -> Option<u64> {
    let l = t.to_ascii_lowercase();
    let (digits, radix) = match l.get(..2) {
        Some("0x") => (&l[2..], 16),
        Some("0o") => (&l[2..], 8),
        Some("0b") => (&l[2..], 2),
        _ => (l.as_str(), 10),
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(&digits.replace('_', ""), radix).ok()
}

/// strtoullm: digits with an optional K/M/G/T suffix (powers of 1024).
pub fn size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let num = num.trim();
    if num.is_empty() || !num.bytes().all(|c| c.is_ascii_digit()) {
        return Err("not a size (digits with optional K/M/G/T)".into());
    }
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)).ok_or_else(|| "too large".into())
}

/// vde_grnam2gid: '' is our egid, digits are a gid, else a group name.
pub fn group_id(name: &str) -> Result<u32, String> {
    if name.is_empty() {
        return Ok(crate::sys::getegid());
    }
    if name.bytes().all(|c| c.is_ascii_digit()) {
        return name.parse().map_err(|_| format!("bad group {name:?}"));
    }
    crate::sys::group_by_name(name).ok_or_else(|| format!("no such group {name:?}"))
}

/// VLAN map "10:11-12" → [(10, 10), (11, 12)].
fn tag_map(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let vid = |t: &str| -> Result<u16, String> { parse_int(t).filter(|&v| v <= 4095).map(|v| v as u16).ok_or_else(|| format!("bad VLAN id {t:?} (0-4095)")) };
    let mut out = Vec::new();
    for tok in text.split([':', '.']).filter(|t| !t.is_empty()) {
        let (ours, net) = tok.split_once('-').unwrap_or((tok, tok));
        out.push((vid(ours)?, vid(if net.is_empty() { ours } else { net })?));
    }
    Ok(out)
}

/// An option's text → its value, or the reason it is not valid.
pub fn convert(kind: Kind, text: &[u8]) -> Result<Value, String> {
    let t = std::str::from_utf8(text).map_err(|_| "not valid UTF-8".to_string())?;
    Ok(match kind {
        Kind::Int { lo, hi } => {
            let v = parse_int(t).ok_or("not an integer")?;
            if !(lo..=hi).contains(&v) {
                return Err(format!("must be between {lo} and {hi}"));
            }
            Value::Int(v)
        }
        Kind::Octal => {
            let v = u64::from_str_radix(t, 8).map_err(|_| "not an octal mode")?;
            if v > 0o7777 {
                return Err("mode out of range".into());
            }
            Value::Int(v)
        }
        Kind::Size { min } => {
            let v = size(t)?;
            if v < min {
                return Err(format!("must be at least {}", if min % 1024 == 0 { format!("{}K", min / 1024) } else { min.to_string() }));
            }
            Value::Int(v)
        }
        Kind::Flag if t.is_empty() => Value::Bool(true),
        Kind::Flag => return Err("takes no value".into()),
        Kind::Text => Value::Text(text.to_vec()),
        Kind::Gid => Value::Int(u64::from(group_id(t)?)),
        Kind::VniOrGid => {
            let v = if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) { t.parse::<u64>().map_err(|_| "too large")? } else { u64::from(group_id(t)?) };
            if v > 0xFF_FFFF {
                return Err("must fit in 24 bits".into());
            }
            Value::Int(v)
        }
        Kind::TagMap => Value::TagMap(tag_map(t)?),
    })
}

/// Typed options from parsed items: prefix-matched keys (vdeplug4), the
/// last of repeated keys wins, defaults filled in.
pub fn typed(items: &[(Vec<u8>, Option<Vec<u8>>)], options: &'static [Opt], bare: Option<&str>, scheme: &str) -> Result<(Vec<Value>, Vec<bool>), VnlError> {
    let names: Vec<&str> = options.iter().map(|o| o.name).collect();
    let mut values: Vec<Value> = options.iter().map(|o| o.default.into()).collect();
    let mut given = vec![false; options.len()];
    let mut prev: Option<&(Vec<u8>, Option<Vec<u8>>)> = None;
    for kv @ (key, value) in items {
        let after = prev.replace(kv);
        let item = match value {
            Some(v) => [key.as_slice(), b"=", v].concat(),
            None => key.clone(),
        };
        let (i, val) = match (value, vnl::match_option(key, &names), bare) {
            (_, Some(i), _) => (i, value.clone().unwrap_or_default()),
            (None, None, Some(b)) => (names.iter().position(|n| *n == b).unwrap_or(0), key.clone()),
            _ => {
                let cut = after.and_then(|(k, v)| vnl::cut_prefix(k, v.as_deref()?, key));
                return Err(cut.unwrap_or_else(|| vnl::unknown_option(key, &names, scheme)));
            }
        };
        let o = &options[i];
        values[i] =
            convert(o.kind, &val).map_err(|reason| VnlError::new(format!("bad value {:?} for option {:?}: {reason}", String::from_utf8_lossy(&val), o.name), String::from_utf8_lossy(&item)))?;
        given[i] = true;
    }
    Ok((values, given))
}

// ---------------------------------------------------------------- the table

pub fn builtins() -> &'static [&'static Builtin] {
    use transport::*;
    static ALL: [&Builtin; 20] = [
        &null::PLUGIN,
        &ptp::PLUGIN,
        &udp::PLUGIN,
        &cmd::PLUGIN,
        &tap::PLUGIN,
        &vde::PLUGIN,
        &vxlan::PLUGIN,
        &vxvde::PLUGIN,
        &netnode::SWITCH,
        &netnode::HUB,
        &netnode::MULTI,
        &netnode::BONDING,
        &seqpacket::PLUGIN,
        &vlan::PLUGIN,
        &capture::PLUGIN,
        &seal::PLUGIN,
        &agno::PLUGIN,
        &wirefilter::PLUGIN,
        &macvtap::PLUGIN,
        &restart::PLUGIN,
    ];
    &ALL
}

impl Builtin {
    /// The example VNL at the end of the summary ("…: vlan://3{vde:///tmp/sw}").
    pub fn example(&self) -> &'static str {
        self.summary.rsplit(": ").next().unwrap_or(self.summary)
    }
}

pub fn builtin(scheme: &str) -> Option<&'static Builtin> {
    builtins().iter().copied().find(|b| b.scheme == scheme)
}

/// Parse `rest` (the text after `scheme://`) for plugin `b`.
pub fn parse(b: &'static Builtin, vnl: &[u8], rest: &[u8]) -> Result<Target, VnlError> {
    let (head, nested) = if b.nests {
        let (h, n) = vnl::split_nested(rest, b.example())?;
        (h, Some(n))
    } else {
        (rest.to_vec(), None)
    };
    // A nested plugin's head may take `[opt/…]` options instead of `/opt`.
    let syntax = if b.nests && head.contains(&b'[') { Syntax::Path } else { b.syntax };
    let p = vnl::parse_rest(&head, syntax)?;
    let (values, given) = typed(&p.items, b.options, b.bare, b.scheme)?;
    Ok(Target { vnl: vnl.to_vec(), scheme: b.scheme.to_string(), address: p.address, options: b.options, values, given, nested })
}

/// What a VNL names.
pub enum Resolved {
    /// A built-in plugin, and the parsed VNL.
    Builtin(&'static Builtin, Target),
    /// A scheme no built-in has (a Python or C plugin may): the text after `://`.
    Other { scheme: String, rest: Vec<u8> },
}

/// Find the built-in plugin of `vnl` and parse it.
pub fn resolve(vnl: &[u8]) -> Result<Resolved, VnlError> {
    let (scheme, rest) = vnl::split_scheme(vnl)?;
    match builtin(&scheme) {
        Some(b) => Ok(Resolved::Builtin(b, parse(b, vnl, &rest)?)),
        None => Ok(Resolved::Other { scheme, rest }),
    }
}

thread_local! {
    /// Opens in progress on this thread (each nested VNL adds one).
    static OPENING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One open in progress on this thread, until dropped. The grammar limits
/// nesting in the text (`vnl::MAX_NESTING`); this limits it at run time,
/// for plugins that build their inner VNL some other way (a C plugin may
/// call `vde_open` with any text): an open at a level past the limit fails.
pub struct Opening(());

impl Opening {
    pub fn enter(vnl: &[u8]) -> Result<Opening, OpenError> {
        let level = OPENING.get();
        if level > vnl::MAX_NESTING {
            return Err(OpenError::Vnl(vnl::too_deep(vnl)));
        }
        OPENING.set(level + 1);
        Ok(Opening(()))
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        OPENING.set(OPENING.get().saturating_sub(1));
    }
}

/// Open `vnl` as a transport: a built-in, else a C plugin
/// (`libvdeplug_<scheme>.so`, see cplugin.rs).
pub fn open_transport(vnl: &[u8], args: &OpenArgs) -> OpenResult {
    let _level = Opening::enter(vnl)?;
    match resolve(vnl)? {
        Resolved::Builtin(b, t) => (b.open)(&t, args),
        Resolved::Other { scheme, rest } => crate::cplugin::open(&scheme, &rest, args),
    }
}

/// A nested plugin's inner VNL, opened.
pub fn open_nested(t: &Target, args: &OpenArgs) -> OpenResult {
    open_transport(t.nested.as_deref().unwrap_or_default(), args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(vnl: &str) -> Target {
        match resolve(vnl.as_bytes()).unwrap() {
            Resolved::Builtin(_, t) => t,
            Resolved::Other { .. } => panic!("{vnl}: not built in"),
        }
    }

    #[test]
    fn prefix_defaults_given() {
        let t = target("vxvde://239.1.2.3/v=12/exp=30/hash=64");
        assert_eq!((t.int("vni"), t.int("expiretime"), t.int("hashsize"), t.int("port")), (Some(12), Some(30), Some(64), Some(14789)));
        assert!(t.given("vni") && !t.given("port"));
        let t = target("vde:///tmp/sw[3]");
        assert_eq!((t.address_str(), t.text("port")), ("/tmp/sw".into(), Some("3".into())));
        let t = target("switch:///tmp/sw[mode=0666/exp=9]");
        assert_eq!((t.int("mode"), t.int("expiretime")), (Some(0o666), Some(9)));
        let t = target("vlan://3/untag=4/tag=10:11-12/trunk{null://}");
        assert_eq!(t.value("tag"), &Value::TagMap(vec![(10, 10), (11, 12)]));
        assert_eq!(t.nested.as_deref(), Some(&b"null://"[..]));
    }

    #[test]
    fn opens_nest_to_the_limit_at_run_time() {
        let levels: Vec<Opening> = (0..=vnl::MAX_NESTING).map(|_| Opening::enter(b"x://").unwrap()).collect();
        match Opening::enter(b"again://") {
            Err(OpenError::Vnl(e)) => assert!(e.msg.contains("limit of 32 levels") && e.part == "again://", "{e:?}"),
            _ => panic!("one level past the limit opened"),
        }
        drop(levels);
        assert!(Opening::enter(b"x://").is_ok(), "levels are given back");
    }

    #[test]
    fn errors_name_the_part() {
        let e = |v: &str| match resolve(v.as_bytes()) {
            Err(e) => e,
            Ok(_) => panic!("{v} parsed"),
        };
        assert_eq!(e("vxlan://239.0.0.1/vni=16777216").part, "vni=16777216");
        assert_eq!(e("vxvde://239.0.0.1/bogus=1").part, "bogus");
        assert!(e("vxvde://239.0.0.1/bogus=1").msg.contains("known: port"));
        assert!(matches!(resolve(b"nosuch://x"), Ok(Resolved::Other { scheme, .. }) if scheme == "nosuch"));
        assert_eq!(size("2M"), Ok(2 << 20));
        assert!(size("two").is_err());
    }
}
