//! Virtual Network Locators (VNLs): the `scheme://address/opt=value` URLs of
//! vdeplug4, with its rules (parseparms.c): `'…'`/`"…"` quote, `\x` escapes
//! one character, unquoted `%XX` is decoded, delimiters split only when
//! unquoted; option keys match by prefix (first in table order wins); path
//! plugins take `path[opt/opt]`; nested plugins `head{inner VNL}`.
//!
//! This is the one home of the grammar: the Python API (`vdeplug.vnl`), the
//! built-in plugin tables (`plugins.rs`) and the C library all use it.
//! Everything works on bytes (a `%XX` may decode to any byte).

use std::fmt;

/// A malformed VNL: what is wrong, and the offending part of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VnlError {
    pub msg: String,
    /// The bad part (text of the VNL where possible).
    pub part: String,
}

impl VnlError {
    pub fn new(msg: impl Into<String>, part: impl Into<String>) -> Self {
        VnlError { msg: msg.into(), part: part.into() }
    }
}

impl fmt::Display for VnlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for VnlError {}

pub type Result<T> = std::result::Result<T, VnlError>;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One content byte of the text: its index, value, and whether it was
/// quoted or escaped (then it is never a delimiter or a `%`).
#[derive(Debug, Clone, Copy)]
struct Content {
    at: usize,
    byte: u8,
    quoted: bool,
}

/// The content bytes of `text`: quote characters and escaping backslashes
/// are consumed (a backslash escapes inside "…", not inside '…').
fn scan(text: &[u8]) -> Result<Vec<Content>> {
    let mut out = Vec::with_capacity(text.len());
    let mut quote = 0u8;
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if quote != 0 {
            if c == quote {
                quote = 0;
            } else if c == b'\\' && quote == b'"' && i + 1 < text.len() {
                i += 1;
                out.push(Content { at: i, byte: text[i], quoted: true });
            } else {
                out.push(Content { at: i, byte: c, quoted: true });
            }
        } else if c == b'\'' || c == b'"' {
            quote = c;
        } else if c == b'\\' {
            if i + 1 >= text.len() {
                return Err(VnlError::new("dangling backslash at the end", lossy(text)));
            }
            i += 1;
            out.push(Content { at: i, byte: text[i], quoted: true });
        } else {
            out.push(Content { at: i, byte: c, quoted: false });
        }
        i += 1;
    }
    if quote != 0 {
        return Err(VnlError::new(format!("unterminated {} quote", quote as char), lossy(text)));
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Split `text` at unquoted bytes of `delims`, removing quotes and escapes
/// and decoding unquoted `%XX`.
pub fn split(text: &[u8], delims: &[u8]) -> Result<Vec<Vec<u8>>> {
    let content = scan(text)?;
    let mut parts = vec![Vec::new()];
    let mut k = 0;
    while k < content.len() {
        let c = content[k];
        if !c.quoted && c.byte == b'%' {
            let code: Vec<Content> = content[k + 1..].iter().take(2).copied().collect();
            let shown = |n: usize| lossy(&text[c.at..content.get(k + n).map_or(text.len(), |e| e.at + 1)]);
            if code.len() < 2 {
                return Err(VnlError::new("truncated percent escape", shown(code.len())));
            }
            if code.iter().any(|d| d.quoted) {
                return Err(VnlError::new("bad percent escape", shown(2)));
            }
            match (hex(code[0].byte), hex(code[1].byte)) {
                (Some(h), Some(l)) => {
                    if let Some(p) = parts.last_mut() {
                        p.push(h << 4 | l);
                    }
                }
                _ => return Err(VnlError::new(format!("bad percent escape {:?}", shown(2)), shown(2))),
            }
            k += 3;
            continue;
        }
        if !c.quoted && delims.contains(&c.byte) {
            parts.push(Vec::new());
        } else if let Some(p) = parts.last_mut() {
            p.push(c.byte);
        }
        k += 1;
    }
    Ok(parts)
}

/// `split` with no delimiter: the text with quotes, escapes and %XX processed.
pub fn unquote(text: &[u8]) -> Result<Vec<u8>> {
    Ok(split(text, b"")?.concat())
}

/// Positions of unquoted `ch` in `text`.
fn unquoted(text: &[u8], ch: u8) -> Result<Vec<usize>> {
    Ok(scan(text)?.iter().filter(|c| !c.quoted && c.byte == ch).map(|c| c.at).collect())
}

fn valid_scheme(s: &[u8]) -> bool {
    s.first().is_some_and(|c| c.is_ascii_alphabetic()) && s.iter().all(|&c| c.is_ascii_alphanumeric() || b"_+.-".contains(&c))
}

/// What the empty VNL means: the first line of `~/.vdeplug/default` or
/// `~/.vde2/default.switch` when a regular file, the switch at
/// `~/.vde2/default.switch` when it is something else (a switch
/// directory), else `vde://` (the system switch).
pub fn default_vnl() -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let home = std::env::var_os("HOME").unwrap_or_default();
    if home.is_empty() {
        return b"vde://".to_vec();
    }
    for name in [".vdeplug/default", ".vde2/default.switch"] {
        let path = std::path::Path::new(&home).join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_file() {
            let text = std::fs::read(&path).unwrap_or_default();
            let line = text.split(|&c| c == b'\n').next().unwrap_or_default();
            let line = line.trim_ascii();
            return if line.is_empty() { b"vde://".to_vec() } else { line.to_vec() };
        }
        let mut v = b"vde://".to_vec();
        v.extend_from_slice(path.as_os_str().as_bytes());
        return v;
    }
    b"vde://".to_vec()
}

/// How deep VNLs may nest (`vlan://1{vlan://2{…}}`): each level is a
/// frame of the opens on the stack, so hostile text must not choose the
/// depth. vdeplug4 has no limit.
pub const MAX_NESTING: usize = 32;

/// The error for a VNL nested deeper than `MAX_NESTING`; `part` is the
/// start of the level past the limit.
pub fn too_deep(level: &[u8]) -> VnlError {
    let shown = lossy(&level[..level.len().min(40)]);
    VnlError::new(format!("VNLs nested deeper than the limit of {MAX_NESTING} levels"), shown)
}

/// Where `head{inner}` has its braces: the first unquoted `{` and the last
/// unquoted `}` after it (vde_parsenestparms); None without both.
fn braces(rest: &[u8]) -> Result<Option<(usize, usize)>> {
    let content = scan(rest)?;
    let Some(open) = content.iter().find(|c| !c.quoted && c.byte == b'{').map(|c| c.at) else { return Ok(None) };
    Ok(content.iter().rev().find(|c| !c.quoted && c.byte == b'}' && c.at > open).map(|c| (open, c.at)))
}

/// How many `scheme://head{inner}` levels `vnl` holds below itself, read
/// as nested plugins read them, counted up to `MAX_NESTING + 1`; and the
/// text of the last level reached. Text that does not scan ends the count
/// (its own parse reports it).
fn nesting(vnl: &[u8]) -> (usize, &[u8]) {
    let (mut depth, mut level) = (0, vnl);
    while depth <= MAX_NESTING {
        let Some(at) = level.windows(3).position(|w| w == b"://") else { break };
        let rest = &level[at + 3..];
        let Ok(Some((open, close))) = braces(rest) else { break };
        depth += 1;
        level = &rest[open + 1..close];
    }
    (depth, level)
}

/// (scheme, rest). No `://` means a vde switch path; empty means the
/// default (see `default_vnl`). The scheme is lowercased. Every VNL is
/// read through here first, so here nesting deeper than `MAX_NESTING`
/// is refused.
pub fn split_scheme(vnl: &[u8]) -> Result<(String, Vec<u8>)> {
    let vnl = if vnl.is_empty() { default_vnl() } else { vnl.to_vec() };
    let (depth, level) = nesting(&vnl);
    if depth > MAX_NESTING {
        return Err(too_deep(level));
    }
    let Some(at) = vnl.windows(3).position(|w| w == b"://") else {
        return Ok(("vde".into(), vnl));
    };
    let scheme = &vnl[..at];
    if !valid_scheme(scheme) {
        return Err(VnlError::new(format!("bad scheme {:?}", lossy(scheme)), lossy(scheme)));
    }
    Ok((lossy(scheme).to_ascii_lowercase(), vnl[at + 3..].to_vec()))
}

/// How a plugin reads the text after `scheme://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `address/opt=value/flag` (vde_parseparms).
    Net,
    /// `path[opt=value/opt]` (vde_parsepathparms).
    Path,
    /// Everything is the address (quotes and escapes processed).
    Raw,
    /// Everything is the address, untouched (cmd://: quotes group words).
    Verbatim,
}

/// The text after `scheme://`, split by a syntax but not yet typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub address: Vec<u8>,
    /// `key=value` or bare `key` items (value None), in order.
    pub items: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn items(tokens: impl IntoIterator<Item = Vec<u8>>) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    tokens
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| match t.iter().position(|&c| c == b'=') {
            Some(i) => (t[..i].to_vec(), Some(t[i + 1..].to_vec())),
            None => (t, None),
        })
        .collect()
}

/// Split `rest` by `syntax` (path: to the first unquoted `[`, options to
/// the last unquoted `]`, anything after ignored, as vdeplug4).
pub fn parse_rest(rest: &[u8], syntax: Syntax) -> Result<Parsed> {
    match syntax {
        Syntax::Raw => Ok(Parsed { address: unquote(rest)?, items: Vec::new() }),
        Syntax::Verbatim => Ok(Parsed { address: rest.to_vec(), items: Vec::new() }),
        Syntax::Net => {
            let mut tokens = split(rest, b"/")?.into_iter();
            let address = tokens.next().unwrap_or_default();
            Ok(Parsed { address, items: items(tokens) })
        }
        Syntax::Path => {
            let opens = unquoted(rest, b'[')?;
            let Some(&start) = opens.first() else {
                if let Some(&c) = unquoted(rest, b']')?.first() {
                    return Err(VnlError::new("']' without '['", lossy(&rest[c..])));
                }
                return Ok(Parsed { address: unquote(rest)?, items: Vec::new() });
            };
            let Some(&end) = unquoted(rest, b']')?.iter().rfind(|&&c| c > start) else {
                return Err(VnlError::new("unterminated '['", lossy(&rest[start..])));
            };
            Ok(Parsed { address: unquote(&rest[..start])?, items: items(split(&rest[start + 1..end], b"/")?) })
        }
    }
}

/// `head{inner}` → (head, inner), as vde_parsenestparms: the inner VNL is
/// the text between the first `{` and the last `}`, quotes kept (it is
/// parsed again when opened). `example`: a VNL of this scheme, shown when
/// the braces are missing.
pub fn split_nested(rest: &[u8], example: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let Some((open, close)) = braces(rest)? else {
        return Err(match unquoted(rest, b'{')?.first() {
            None => VnlError::new(format!("needs a nested VNL in braces, e.g. {example}"), lossy(rest)),
            Some(&open) => VnlError::new("unterminated '{'", lossy(&rest[open..])),
        });
    };
    let tail = &rest[close + 1..];
    if !tail.trim_ascii().is_empty() {
        return Err(VnlError::new("text after the nested VNL", lossy(tail)));
    }
    let inner = &rest[open + 1..close];
    if inner.trim_ascii().is_empty() {
        return Err(VnlError::new("empty nested VNL", lossy(&rest[open..])));
    }
    Ok((rest[..open].to_vec(), inner.to_vec()))
}

/// The option a key names: the first in `names` that starts with `key`
/// (vdeplug4's prefix match). An empty key matches nothing.
pub fn match_option<S: AsRef<str>>(key: &[u8], names: &[S]) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    names.iter().position(|n| n.as_ref().as_bytes().starts_with(key))
}

/// The message for item `key` (no value) right after `prev_key=prev_value`
/// when it is the prefix length of an unquoted address: `allow=10.0.0.0/8`
/// splits at the '/' into `allow=10.0.0.0` and `8` (and `allow=a/8,b/16`
/// into `allow=a`, `8,b` and `16`).
pub fn cut_prefix(prev_key: &[u8], prev_value: &[u8], key: &[u8]) -> Option<VnlError> {
    let digits = key.iter().take_while(|c| c.is_ascii_digit()).count();
    let length = (1..=3).contains(&digits) && matches!(key.get(digits), None | Some(b','));
    let address = std::str::from_utf8(prev_value).ok()?.parse::<std::net::IpAddr>().is_ok();
    (length && address).then(|| {
        let (k, v, n) = (lossy(prev_key), lossy(prev_value), lossy(&key[..digits]));
        let more = if digits < key.len() { ",…" } else { "" };
        let fixed = format!("{k}='{v}/{n}{more}'");
        VnlError::new(format!("unknown option {:?}: it is the prefix length of {k}={v}; quote the value, {fixed} (in a shell, quote the whole VNL too: \"…/{fixed}\")", lossy(key)), lossy(key))
    })
}

/// The message for a key that matches no option.
pub fn unknown_option<S: AsRef<str>>(key: &[u8], names: &[S], scheme: &str) -> VnlError {
    let known: Vec<&str> = names.iter().map(|n| n.as_ref()).collect();
    let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
    VnlError::new(format!("unknown option {:?} for {scheme}:// (known: {known})", lossy(key)), lossy(key))
}

/// Words of a command line, as a shell would split them (no expansion):
/// whitespace separates, '…' is literal, "…" takes \" \\ \$ \` escapes,
/// a backslash outside quotes escapes one character (cmd:// and s2argv).
pub fn shell_words(text: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut words = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        match c {
            b' ' | b'\t' | b'\n' => {
                if let Some(w) = cur.take() {
                    words.push(w);
                }
            }
            b'\'' => {
                let end = text[i + 1..].iter().position(|&x| x == b'\'').ok_or_else(|| VnlError::new("unterminated ' quote", lossy(&text[i..])))?;
                cur.get_or_insert_with(Vec::new).extend_from_slice(&text[i + 1..i + 1 + end]);
                i += end + 1;
            }
            b'"' => {
                let w = cur.get_or_insert_with(Vec::new);
                let start = i;
                i += 1;
                loop {
                    match text.get(i) {
                        None => return Err(VnlError::new("unterminated \" quote", lossy(&text[start..]))),
                        Some(b'"') => break,
                        Some(b'\\') if text.get(i + 1).is_some_and(|n| b"\"\\$`\n".contains(n)) => {
                            w.push(text[i + 1]);
                            i += 2;
                        }
                        Some(&x) => {
                            w.push(x);
                            i += 1;
                        }
                    }
                }
            }
            b'\\' => {
                let n = *text.get(i + 1).ok_or_else(|| VnlError::new("dangling backslash at the end", lossy(text)))?;
                cur.get_or_insert_with(Vec::new).push(n);
                i += 1;
            }
            _ => cur.get_or_insert_with(Vec::new).push(c),
        }
        i += 1;
    }
    if let Some(w) = cur {
        words.push(w);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[Vec<u8>]) -> Vec<String> {
        v.iter().map(|x| lossy(x)).collect()
    }

    #[test]
    fn quotes_escapes_percent() {
        assert_eq!(s(&split(b"a\"/b\"/c", b"/").unwrap()), ["a/b", "c"]);
        assert_eq!(s(&split(b"a\\/b/c", b"/").unwrap()), ["a/b", "c"]);
        assert_eq!(s(&split(b"a%2Fb/c", b"/").unwrap()), ["a/b", "c"]);
        assert_eq!(s(&split(b"'%41'%41", b"").unwrap()), ["%41A"]);
        assert_eq!(split(b"a%zz", b"").unwrap_err().part, "%zz");
        assert_eq!(split(b"a%4", b"").unwrap_err().msg, "truncated percent escape");
        assert!(split(b"\"abc", b"").unwrap_err().msg.contains("unterminated"));
    }

    #[test]
    fn path_and_net_syntax() {
        let p = parse_rest(b"/tmp/sw[mode=0666/group=x]trailing", Syntax::Path).unwrap();
        assert_eq!(p.address, b"/tmp/sw");
        assert_eq!(p.items, vec![(b"mode".to_vec(), Some(b"0666".to_vec())), (b"group".to_vec(), Some(b"x".to_vec()))]);
        let p = parse_rest(b"\"/tmp/a[b\"[3]", Syntax::Path).unwrap();
        assert_eq!((p.address.as_slice(), p.items.len()), (&b"/tmp/a[b"[..], 1));
        assert!(parse_rest(b"/x[port=1", Syntax::Path).unwrap_err().msg.contains("unterminated"));
        let p = parse_rest(b"239.1.2.3/vni=5/v6", Syntax::Net).unwrap();
        assert_eq!(p.address, b"239.1.2.3");
        assert_eq!(p.items[1], (b"v6".to_vec(), None));
    }

    #[test]
    fn schemes_nesting_prefix_words() {
        assert_eq!(split_scheme(b"VXVDE://x").unwrap(), ("vxvde".into(), b"x".to_vec()));
        assert_eq!(split_scheme(b"/tmp/sw").unwrap(), ("vde".into(), b"/tmp/sw".to_vec()));
        assert_eq!(split_scheme(b"bad scheme://x").unwrap_err().part, "bad scheme");
        assert_eq!(split_nested(b"3/untag=4{vde:///tmp/sw[2]}", "").unwrap(), (b"3/untag=4".to_vec(), b"vde:///tmp/sw[2]".to_vec()));
        assert!(split_nested(b"3{x}y", "").is_err());
        let e = split_nested(b"/tmp/x.pcap", "capture:///tmp/x.pcap{vxvde://}").unwrap_err();
        assert!(e.msg.ends_with("e.g. capture:///tmp/x.pcap{vxvde://}"), "{e}");
        let e = cut_prefix(b"allow", b"10.0.0.0", b"8").unwrap();
        assert!(e.msg.contains("quote the value, allow='10.0.0.0/8'"), "{e}");
        let e = cut_prefix(b"allow", b"fd00::", b"16,10.0.0.0").unwrap();
        assert!(e.msg.contains("allow='fd00::/16,…'"), "{e}");
        assert!(cut_prefix(b"allow", b"10.0.0.0", b"8x").is_none());
        assert!(cut_prefix(b"allow", b"10.0.0.0", b"1234").is_none());
        assert!(cut_prefix(b"grp", b"vde", b"8").is_none(), "not after an address");
        assert_eq!(match_option(b"v", &["port", "vni", "v6"]), Some(1));
        assert_eq!(match_option(b"", &["port"]), None);
        assert_eq!(s(&shell_words(b"sh -c 'a b' \"c\\\"d\" e\\ f").unwrap()), ["sh", "-c", "a b", "c\"d", "e f"]);
    }

    fn nested(levels: usize, inner: &str) -> Vec<u8> {
        ["vlan://5{".repeat(levels), inner.into(), "}".repeat(levels)].concat().into_bytes()
    }

    #[test]
    fn nesting_is_limited() {
        assert_eq!(split_scheme(&nested(MAX_NESTING, "null://")).unwrap().0, "vlan");
        let e = split_scheme(&nested(MAX_NESTING + 1, "null://")).unwrap_err();
        assert!(e.msg.contains(&format!("limit of {MAX_NESTING} levels")), "{}", e.msg);
        assert_eq!(e.part, "null://");
        // Far past the limit: refused at once, with no deep recursion anywhere.
        assert!(split_scheme(&nested(100_000, "null://")).unwrap_err().msg.contains("limit"));
        // Quoted or escaped braces are not levels, nor braces after no scheme.
        assert_eq!(nesting(b"vlan://5{cmd://echo '{{{{' \\{ \"{\"}").0, 1, "only the outer braces count");
        assert_eq!(nesting(b"cmd://echo '{x}'").0, 0);
        assert_eq!(nesting(b"/tmp/sw{1}").0, 0, "no scheme: a path");
    }
}
