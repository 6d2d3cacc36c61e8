//! The Internet checksum (RFC 1071) and the TCP/UDP pseudo-headers, for
//! the offload code that finishes or rebuilds checksums the kernel left to
//! us (tap offloads) or that we must verify before coalescing.

/// Add `data` to a running one's-complement sum (any value far below
/// 2^64: folded on the way). Big-endian 16-bit words; an odd last byte is
/// padded with zero. Headers (short) are summed word by word, inline;
/// payloads in bulk (`add_bulk`).
#[inline(always)]
pub fn add(sum: u64, data: &[u8]) -> u64 {
    if data.len() < 64 {
        let mut words = data.chunks_exact(2);
        let mut s = sum;
        for c in &mut words {
            s += u16::from_be_bytes([c[0], c[1]]) as u64;
        }
        if let [last] = words.remainder() {
            s += (*last as u64) << 8;
        }
        return s;
    }
    add_bulk(sum, data)
}

/// `add` for long data. The one's-complement sum does not depend on byte
/// order (RFC 1071), so the bulk is summed as native 32-bit words into
/// 64-bit accumulators (no carries to chase) and swapped once.
#[inline(never)]
fn add_bulk(sum: u64, data: &[u8]) -> u64 {
    let bulk = data.len() & !3;
    let acc = sum_words(&data[..bulk]);
    // Native-order 16-bit sum of the bulk, then big-endian.
    let bulk_sum = fold(acc);
    let bulk_sum = if cfg!(target_endian = "little") { bulk_sum.swap_bytes() } else { bulk_sum };
    // The last 0–3 bytes (at an even offset) take the short path.
    add(fold_once(fold_once(sum)) + bulk_sum as u64, &data[bulk..])
}

/// Sum of the native 32-bit words of `words` (a multiple of 4 bytes).
/// Segments and GRO trains are checksummed once per frame on the fast
/// path: with AVX2 the plain loop vectorises to 4 × 64-bit lanes (about
/// twice the speed of the best baseline x86-64 code, four unrolled
/// accumulators).
#[allow(unsafe_code)] // the one call of an AVX2 function, after the check
fn sum_words(words: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { sum_words_avx2(words) };
        }
        sum_words_unrolled(words)
    }
    #[cfg(not(target_arch = "x86_64"))]
    sum_words_plain(words)
}

#[inline(always)]
fn sum_words_plain(words: &[u8]) -> u64 {
    words.chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as u64).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_words_avx2(words: &[u8]) -> u64 {
    sum_words_plain(words)
}

/// Four independent accumulators: without AVX2 the adds pipeline (about
/// twice the plain loop).
#[cfg(target_arch = "x86_64")]
fn sum_words_unrolled(words: &[u8]) -> u64 {
    let mut wide = words.chunks_exact(16);
    let mut accs = [0u64; 4];
    for c in &mut wide {
        for (k, a) in accs.iter_mut().enumerate() {
            *a += u32::from_ne_bytes([c[4 * k], c[4 * k + 1], c[4 * k + 2], c[4 * k + 3]]) as u64;
        }
    }
    accs.iter().sum::<u64>() + sum_words_plain(wide.remainder())
}

fn fold_once(sum: u64) -> u64 {
    (sum & 0xffff_ffff) + (sum >> 32)
}

/// Fold a running sum to 16 bits (not complemented).
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum field value for data whose running sum is `sum`.
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// Pseudo-header sum from raw address bytes (4 or 16 each).
#[inline]
pub fn pseudo_raw(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
    add(add(0, src), dst) + proto as u64 + len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook one-word-at-a-time version.
    fn slow(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { (c[0] as u16) << 8 };
            s += w as u32;
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn matches_the_simple_sum_for_every_length_and_odd_data() {
        let mut x: u32 = 7;
        let data: Vec<u8> = (0..3000)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        for len in 0..300 {
            assert_eq!(fold(add(0, &data[..len])), slow(&data[..len]), "len {len}");
        }
        assert_eq!(fold(add(0, &data)), slow(&data));
        assert_eq!(fold(add(0, &[0xff; 1501])), slow(&[0xff; 1501]), "all ones: many carries");
        assert_eq!(fold(add(0, &[0xff; 65535])), slow(&[0xff; 65535]), "a 64 KB all-ones train");
        // Running sums across the short and the bulk paths (split at even offsets).
        for split in [2, 20, 62, 64, 66, 200] {
            assert_eq!(fold(add(add(0, &data[..split]), &data[split..1500])), slow(&data[..1500]), "split {split}");
        }
        // Each code path against the others (whichever this CPU picks in `add`).
        #[cfg(target_arch = "x86_64")]
        for len in [64, 68, 1448, 3000] {
            let w = &data[..len & !3];
            assert_eq!(sum_words_unrolled(w), sum_words_plain(w), "len {len}");
        }
    }

    #[test]
    fn rfc1071_example_and_a_known_ipv4_header() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(fold(add(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
        // An IPv4 header whose checksum field (b861) is correct: the sum is ffff.
        let h = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
        assert_eq!(fold(add(0, &h)), 0xffff);
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(finish(add(0, &z)), 0xb861);
    }
}
