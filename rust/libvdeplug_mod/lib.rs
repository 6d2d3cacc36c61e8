//! libvdeplug_mod.so.2: the helpers C plugins link against (see
//! rust/include/libvdeplug_mod.h), from the Rust core: the VNL grammar of
//! rust/vnl.rs and the MAC table of rust/mac_table.rs. Exactly vdeplug4's
//! 10 functions, so a plugin built against Debian's headers (or ours) runs
//! on our package alone.
//!
//! The parse functions work in place, as vdeplug4's: the text is rewritten
//! with quotes, escapes and %XX processed, each token NUL-terminated, and
//! option values point into it (processed text never grows, so it fits).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use _core::mac_table::MacTable;
use _core::vnl::{self, Syntax, VnlError};
use _core::wire::ethernet::Address;

fn set_errno(e: i32) {
    // SAFETY: errno is thread-local and always writable.
    unsafe { *libc::__errno_location() = e };
}

fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_errno(libc::EIO);
        on_panic
    })
}

/// `struct vdeparms { char *tag; char **value; }`, ended by {NULL, NULL}.
#[repr(C)]
pub struct VdeParms {
    pub tag: *const c_char,
    pub value: *mut *mut c_char,
}

static EMPTY: [c_char; 1] = [0];

/// The tags of a {NULL, NULL}-terminated table.
unsafe fn tags<'a>(parms: *const VdeParms) -> Vec<(&'a [u8], *mut *mut c_char)> {
    let mut out = Vec::new();
    if parms.is_null() {
        return out;
    }
    let mut p = parms;
    // SAFETY: the caller's table ends with a NULL tag; tags are C strings.
    unsafe {
        while !(*p).tag.is_null() {
            out.push((CStr::from_ptr((*p).tag).to_bytes(), (*p).value));
            p = p.add(1);
        }
    }
    out
}

/// `*value = v` for a table entry (its value pointer is the caller's).
unsafe fn set(value: *mut *mut c_char, v: *mut c_char) {
    if !value.is_null() {
        // SAFETY: a non-NULL value pointer of the caller's table.
        unsafe { *value = v };
    }
}

fn unknown(key: &[u8]) -> c_int {
    eprintln!("unknown key: {}", String::from_utf8_lossy(key));
    set_errno(libc::EINVAL);
    -1
}

fn bad(e: &VnlError) -> c_int {
    eprintln!("libvdeplug_mod: {}: {}", e.msg, e.part);
    set_errno(libc::EINVAL);
    -1
}

/// Lay `tokens` out from the start of `buf` (each NUL-terminated);
/// returns where each begins. They fit: processing only shrinks text and
/// every token had a delimiter or the terminator after it.
unsafe fn lay_out(buf: *mut c_char, cap: usize, tokens: &[Vec<u8>]) -> Vec<*mut c_char> {
    let mut at = 0;
    let mut starts = Vec::with_capacity(tokens.len());
    for t in tokens {
        if at > cap {
            break;
        }
        let n = t.len().min(cap - at); // the buffer holds cap bytes and a NUL
                                       // SAFETY: at + n + 1 <= cap + 1, within the caller's buffer (its
                                       // length plus the NUL).
        unsafe {
            std::ptr::copy_nonoverlapping(t.as_ptr(), buf.add(at).cast::<u8>(), n);
            *buf.add(at + n) = 0;
            starts.push(buf.add(at));
        }
        at += n + 1;
    }
    starts
}

/// Assign option items (from `first`) to the table; `bare`: a path
/// plugin's first tag is "" and takes a bare item matching no tag.
unsafe fn assign(parms: *const VdeParms, starts: &[*mut c_char], items: &[Vec<u8>], bare: bool) -> c_int {
    // SAFETY: the caller's table.
    let table = unsafe { tags(parms) };
    let names: Vec<String> = table.iter().map(|(t, _)| String::from_utf8_lossy(t).into_owned()).collect();
    for (item, &start) in items.iter().zip(starts) {
        let eq = item.iter().position(|&c| c == b'=');
        let key = &item[..eq.unwrap_or(item.len())];
        if key.is_empty() {
            continue;
        }
        // A tag matches when the key is its prefix (vdeplug4); "" never does.
        let found = vnl::match_option(key, &names);
        // SAFETY: value pointers are the caller's; start points into its buffer.
        unsafe {
            match (found, eq) {
                (Some(i), Some(e)) => set(table[i].1, start.add(e + 1)),
                (Some(i), None) => set(table[i].1, EMPTY.as_ptr() as *mut c_char),
                (None, None) if bare && table.first().is_some_and(|(t, _)| t.is_empty()) => set(table[0].1, start),
                (None, _) => return unknown(key),
            }
        }
    }
    0
}

unsafe fn text<'a>(s: *mut c_char) -> Option<&'a [u8]> {
    // SAFETY: NULL or a NUL-terminated string.
    (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_bytes())
}

/// The common body of the parse functions: `tokens` (address first,
/// then `key[=value]` items) from the text, laid out in place and assigned.
unsafe fn parse_in_place(s: *mut c_char, parms: *mut VdeParms, bare: bool, tokens: impl FnOnce(&[u8]) -> Result<Vec<Vec<u8>>, VnlError>) -> c_int {
    // SAFETY: the caller's contract (NULL or a writable NUL-terminated string).
    let Some(t) = (unsafe { text(s) }) else { return 0 };
    if t.is_empty() {
        return 0;
    }
    let cap = t.len();
    let tokens = match tokens(t) {
        Ok(tok) => tok,
        Err(e) => return bad(&e),
    };
    // SAFETY: the caller's buffer, cap bytes plus its NUL; its table.
    unsafe {
        let starts = lay_out(s, cap, &tokens);
        assign(parms, &starts[1..], &tokens[1..], bare)
    }
}

/// `int vde_parseparms(char *str, struct vdeparms *parms)`: `address/k=v/flag`.
///
/// # Safety
/// `str` is NULL or a writable NUL-terminated string; `parms` a valid table.
#[no_mangle]
pub unsafe extern "C" fn vde_parseparms(s: *mut c_char, parms: *mut VdeParms) -> c_int {
    // SAFETY: the caller's contract.
    guard(-1, || unsafe { parse_in_place(s, parms, false, |t| vnl::split(t, b"/")) })
}

/// `int vde_parsepathparms(char *str, struct vdeparms *parms)`: `path[k=v/k]`.
///
/// # Safety
/// As vde_parseparms.
#[no_mangle]
pub unsafe extern "C" fn vde_parsepathparms(s: *mut c_char, parms: *mut VdeParms) -> c_int {
    let tokens = |t: &[u8]| -> Result<Vec<Vec<u8>>, VnlError> {
        let parsed = vnl::parse_rest(t, Syntax::Path)?;
        let mut tokens = vec![parsed.address];
        tokens.extend(parsed.items.into_iter().map(|(k, v)| match v {
            Some(v) => [k.as_slice(), b"=", v.as_slice()].concat(),
            None => k,
        }));
        Ok(tokens)
    };
    // SAFETY: the caller's contract.
    guard(-1, || unsafe { parse_in_place(s, parms, true, tokens) })
}

/// `char *vde_parsenestparms(char *str)`: `head{inner}` → `str` ends at
/// the first `{`, the result is the text up to the last `}` (quotes kept);
/// NULL without braces.
///
/// # Safety
/// `str` is NULL or a writable NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vde_parsenestparms(s: *mut c_char) -> *mut c_char {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let Some(t) = (unsafe { text(s) }) else { return std::ptr::null_mut() };
        let Ok((head, inner)) = vnl::split_nested(t, "") else { return std::ptr::null_mut() };
        // head and inner are slices of t: head is t[..open], inner t[open+1..close].
        let open = head.len();
        let close = open + 1 + inner.len();
        // SAFETY: open and close are within the string.
        unsafe {
            *s.add(open) = 0;
            *s.add(close) = 0;
            s.add(open + 1)
        }
    })
}

/// `unsigned long long strtoullm(const char *numstr)`: strtoull (base 0)
/// times K/M/G/T suffixes (powers of 1024).
///
/// # Safety
/// `numstr` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn strtoullm(numstr: *const c_char) -> c_ulonglong {
    guard(0, || {
        let mut tail: *mut c_char = std::ptr::null_mut();
        // SAFETY: the caller's string; tail receives a pointer into it.
        let mut v = unsafe { libc::strtoull(numstr, &mut tail, 0) };
        // SAFETY: tail points into the same NUL-terminated string.
        for &c in unsafe { CStr::from_ptr(tail) }.to_bytes() {
            v = v.wrapping_mul(match c {
                b'k' | b'K' => 1 << 10,
                b'm' | b'M' => 1 << 20,
                b'g' | b'G' => 1 << 30,
                b't' | b'T' => 1 << 40,
                _ => 1,
            });
        }
        v
    })
}

/// `gid_t vde_grnam2gid(const char *name)`: '' is our egid, digits a gid,
/// else the group's gid; -1 if unknown.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vde_grnam2gid(name: *const c_char) -> libc::gid_t {
    guard(u32::MAX, || {
        if name.is_null() {
            return u32::MAX;
        }
        // SAFETY: the caller's string.
        let n = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        _core::plugins::group_id(&n).unwrap_or(u32::MAX)
    })
}

// ---------------------------------------------------------------- the MAC hash table

/// `struct vde_hashtable`: our MAC table, with each entry's payload (the
/// plugin's bytes) kept beside it at the entry's slot.
pub struct HashTable {
    table: MacTable<u8>,
    payload_size: usize,
    payloads: Vec<u8>,
}

/// `struct vde_hashtable *_vde_hash_init(size_t payload_size, unsigned int hashsize, uint64_t seed)`
///
/// # Safety
/// None beyond the C signature.
#[no_mangle]
pub unsafe extern "C" fn _vde_hash_init(payload_size: usize, hashsize: c_uint, seed: u64) -> *mut HashTable {
    guard(std::ptr::null_mut(), || {
        // Ages are checked per lookup (too_old), so entries never expire by themselves.
        let table = MacTable::new(hashsize as usize, u64::from(u32::MAX), seed);
        let payloads = vec![0u8; table.capacity() * payload_size];
        Box::into_raw(Box::new(HashTable { table, payload_size, payloads }))
    })
}

/// `void vde_hash_fini(struct vde_hashtable *table)`
///
/// # Safety
/// `table` came from _vde_hash_init and is not used again.
#[no_mangle]
pub unsafe extern "C" fn vde_hash_fini(table: *mut HashTable) {
    guard((), || {
        if !table.is_null() {
            // SAFETY: made by Box::into_raw in _vde_hash_init.
            drop(unsafe { Box::from_raw(table) });
        }
    })
}

unsafe fn mac(p: *const u8) -> Address {
    // SAFETY: the caller passes a 6-byte MAC address.
    Address::from_bytes(unsafe { std::slice::from_raw_parts(p, 6) })
}

/// `void *vde_find_in_hash(struct vde_hashtable *table, unsigned char *dst, int vlan, time_t too_old)`:
/// the payload of `dst`, if seen at or after `too_old`; NULL for unknown
/// or group addresses.
///
/// # Safety
/// `table` is live; `dst` points at 6 bytes.
#[no_mangle]
pub unsafe extern "C" fn vde_find_in_hash(table: *mut HashTable, dst: *const u8, vlan: c_int, too_old: libc::time_t) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let Some(t) = (unsafe { table.as_mut() }) else { return std::ptr::null_mut() };
        let Some(slot) = t.table.slot_of(unsafe { mac(dst) }, vlan as u16) else { return std::ptr::null_mut() };
        if i64::from(t.table.seen_at(slot)) < too_old {
            return std::ptr::null_mut();
        }
        t.payloads[slot * t.payload_size..].as_mut_ptr().cast()
    })
}

/// `void vde_find_in_hash_update(struct vde_hashtable *table, unsigned char *src, int vlan, void *payload, time_t now)`:
/// `src` was seen now, with this payload (payload_size bytes are copied).
///
/// # Safety
/// `table` is live; `src` points at 6 bytes; `payload` at payload_size bytes.
#[no_mangle]
pub unsafe extern "C" fn vde_find_in_hash_update(table: *mut HashTable, src: *const u8, vlan: c_int, payload: *const c_void, now: libc::time_t) {
    guard((), || {
        // SAFETY: the caller's contract.
        let Some(t) = (unsafe { table.as_mut() }) else { return };
        let (_, slot) = t.table.learn_at(unsafe { mac(src) }, vlan as u16, 0, now as u64);
        if let Some(slot) = slot {
            let n = t.payload_size;
            // SAFETY: payload is valid for payload_size bytes.
            let p = unsafe { std::slice::from_raw_parts(payload.cast::<u8>(), n) };
            t.payloads[slot * n..slot * n + n].copy_from_slice(p);
        }
    })
}

/// `void vde_hash_delete(struct vde_hashtable *table, void *payload)`:
/// forget every entry whose payload equals this one (a peer that left).
///
/// # Safety
/// `table` is live; `payload` points at payload_size bytes.
#[no_mangle]
pub unsafe extern "C" fn vde_hash_delete(table: *mut HashTable, payload: *const c_void) {
    guard((), || {
        // SAFETY: the caller's contract.
        let Some(t) = (unsafe { table.as_mut() }) else { return };
        let n = t.payload_size;
        let p = unsafe { std::slice::from_raw_parts(payload.cast::<u8>(), n) };
        for slot in 0..t.table.capacity() {
            if n > 0 && &t.payloads[slot * n..slot * n + n] == p {
                t.table.forget_slot(slot);
            }
        }
    })
}
