//! Fuzzing of everything that parses untrusted bytes: the Ethernet frame
//! view, the VXLAN decoder, the vde_switch control-protocol parser, the
//! stream-mode decoder, and the vlan:// rewriting. proptest drives each
//! with structure-aware inputs (valid headers with mutations, arbitrary
//! splits) as well as plain random bytes, and checks invariants beyond
//! "no panic" against simple models.
//!
//! Cases per target: `VDEPLUG_FUZZ_CASES` (default 100 000, what CI runs).
//! The long run: `VDEPLUG_FUZZ_CASES=1000000 cargo test --release fuzz_`.

use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::transport::nested::Hook;
use crate::wire::ethernet::{Frame, Repr as EthRepr};
use crate::wire::stream::{encode_len, Decoder, Next, MAX_STREAM_FRAME};
use crate::wire::vde_ctl::{decode_sockaddr_un, Request, MAGIC, REQUEST_MIN_LEN, SOCKADDR_UN_LEN, VERSION};
use crate::wire::vxlan::{Packet, Repr as VxRepr, HEADER_LEN as VX_HEADER};
use crate::wire::{Error, ETH_BUFSIZE};

fn config() -> Config {
    let cases = std::env::var("VDEPLUG_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    Config { cases, failure_persistence: None, max_shrink_iters: 2_000, ..Config::default() }
}

/// `n` pseudo-random bytes from `seed` (xorshift: cheap, so large inputs
/// do not dominate the run time).
fn fill(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Random bytes, biased towards the interesting sizes around header limits.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..64), (any::<u64>(), 0..max).prop_map(|(s, n)| fill(s, n)), (any::<u64>(), ETH_BUFSIZE - 4..ETH_BUFSIZE + 8).prop_map(|(s, n)| fill(s, n)),]
}

/// A valid value `base` with a few bytes overwritten and a random length cut or extension.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len();
    (prop::collection::vec((0..n.max(1), any::<u8>()), 0..4), 0..n + 16, any::<bool>()).prop_map(move |(edits, cut, trunc)| {
        let mut v = base.clone();
        for (i, b) in edits {
            if i < v.len() {
                v[i] = b;
            }
        }
        if trunc {
            v.resize(cut, 0xa5);
        }
        v
    })
}

fn eth_frame() -> impl Strategy<Value = Vec<u8>> {
    (any::<[u8; 12]>(), prop_oneof![Just(None), (0u16..4096).prop_map(Some)], any::<u16>(), 0usize..200).prop_map(|(macs, vlan, et, plen)| {
        let mut f = macs.to_vec();
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&et.to_be_bytes());
        f.resize(f.len() + plen, 0x42);
        f
    })
}

proptest! {
    #![proptest_config(config())]

    /// The frame view accepts exactly 14..=ETH_BUFSIZE bytes and never
    /// reads outside them; a parsed header re-emits to the same bytes.
    #[test]
    fn fuzz_ethernet_view(data in prop_oneof![bytes(ETH_BUFSIZE + 8), eth_frame().prop_flat_map(mutated)]) {
        match Frame::new_checked(&data[..]) {
            Ok(f) => {
                prop_assert!(data.len() >= 14 && data.len() <= ETH_BUFSIZE);
                let r = EthRepr::parse(&f);
                let _ = (f.vlan_id(), f.inner_ethertype(), f.payload().len(), f.dst_addr().is_multicast());
                prop_assert!(f.header_len() <= data.len());
                let mut out = vec![0u8; r.buffer_len()];
                r.emit(&mut out);
                let mut want = data[..r.buffer_len()].to_vec();
                if r.vlan.is_some() {
                    want[14] &= 0x0f; // Repr keeps the VLAN id, not the priority bits
                }
                prop_assert_eq!(out, want);
            }
            // A frame announcing an 802.1Q tag needs the whole tag.
            Err(Error::Truncated { .. }) => prop_assert!(data.len() < 14 || (data.len() < 18 && data[12..14] == [0x81, 0x00])),
            Err(Error::Oversized { .. }) => prop_assert!(data.len() > ETH_BUFSIZE),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    /// VXLAN decode: only I-flag headers of our VNI pass (strict: exact
    /// flags, zero reserved), and the payload is exactly what follows.
    #[test]
    fn fuzz_vxlan_decoder(
        data in prop_oneof![bytes(2000), (0u32..=0xff_ffff, eth_frame()).prop_flat_map(|(vni, f)| {
            let mut p = VxRepr { vni }.to_bytes().to_vec();
            p.extend_from_slice(&f);
            mutated(p)
        })],
        vni in prop_oneof![Just(1u32), 0u32..=0xff_ffff],
        strict in any::<bool>(),
    ) {
        match Packet::new_checked(&data[..]) {
            Ok(p) => {
                prop_assert!(data.len() >= VX_HEADER);
                match VxRepr::parse(&p, vni, strict) {
                    Ok(r) => {
                        prop_assert_eq!(r.vni, vni);
                        prop_assert!(data[0] & 0x08 != 0);
                        prop_assert_eq!(p.payload(), &data[VX_HEADER..]);
                        if strict {
                            prop_assert_eq!(&data[..VX_HEADER], &VxRepr { vni }.to_bytes()[..]);
                        }
                    }
                    Err(Error::BadFlags(_) | Error::WrongVni { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
            }
            Err(_) => prop_assert!(data.len() < VX_HEADER),
        }
    }

    /// The switch's request parser: magic/version/type/sockaddr/descr of
    /// any bytes; a parsed request re-emits to an equivalent one.
    #[test]
    fn fuzz_vde_ctl_request(data in prop_oneof![
        bytes(400),
        (any::<i32>(), prop::collection::vec(1u8..=255, 0..120), prop::collection::vec(any::<u8>(), 0..200)).prop_flat_map(|(kind, path, descr)| {
            let mut v = MAGIC.to_ne_bytes().to_vec();
            v.extend_from_slice(&VERSION.to_ne_bytes());
            v.extend_from_slice(&kind.to_ne_bytes());
            let mut sa = [0u8; SOCKADDR_UN_LEN];
            let n = path.len().min(SOCKADDR_UN_LEN - 2);
            sa[2..2 + n].copy_from_slice(&path[..n]);
            v.extend_from_slice(&sa);
            v.extend_from_slice(&descr);
            mutated(v)
        }),
    ]) {
        let _ = decode_sockaddr_un(&data);
        match Request::parse(&data) {
            Ok(r) => {
                prop_assert!(data.len() >= REQUEST_MIN_LEN);
                prop_assert!(r.sock_path.len() < SOCKADDR_UN_LEN - 1);
                prop_assert!(!r.sock_path.contains(&0) && !r.descr.contains(&0));
                prop_assert!(r.descr.len() <= 128);
                let _ = r.port();
                if r.sock_path.len() < 107 {
                    let again = Request::parse(&r.emit().map_err(|e| TestCaseError::fail(e.to_string()))?);
                    prop_assert_eq!(again.ok(), Some(r));
                }
            }
            Err(Error::Truncated { .. }) => prop_assert!(data.len() < REQUEST_MIN_LEN),
            Err(Error::BadMagic) => {}
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    /// The stream decoder, fed any byte stream in any chunking, never
    /// panics, never grows its buffer, always makes progress, and yields
    /// only frames of valid length; for streams without lying (oversized)
    /// lengths it yields exactly what a one-shot model parse yields.
    #[test]
    fn fuzz_stream_decoder(
        (stream, honest) in prop_oneof![
            bytes(30_000).prop_map(|b| (b, false)),
            prop::collection::vec(prop_oneof![
                4 => (0usize..1600).prop_map(|n| { let mut v = encode_len(n).to_vec(); v.resize(2 + n, n as u8); v }),
                1 => (MAX_STREAM_FRAME + 1..=65535usize).prop_map(|n| encode_len(n).to_vec()), // a lying length
                1 => Just(vec![0u8, 0]),
            ], 0..30).prop_map(|parts| { let honest = parts.iter().all(|p| p.len() != 2 || p == &[0, 0]); (parts.concat(), honest) }),
        ],
        cuts in prop::collection::vec(1usize..5000, 1..40),
    ) {
        let mut d = Decoder::new();
        let cap = d.space().len();
        let mut got = Vec::new();
        let (mut at, mut k) = (0, 0);
        while at < stream.len() {
            let want = cuts[k % cuts.len()].min(stream.len() - at);
            k += 1;
            let n = d.push(&stream[at..at + want]);
            at += n;
            prop_assert!(d.buffered() <= cap);
            loop {
                match d.next_frame() {
                    Next::Frame(f) => {
                        prop_assert!(f.len() <= MAX_STREAM_FRAME);
                        got.push(Ok(f.to_vec()));
                    }
                    Next::Oversized(n) => got.push(Err(n)),
                    Next::NeedMore => break,
                }
            }
            prop_assert!(n > 0, "decoder stuck with {} bytes buffered", d.buffered());
        }
        if honest {
            prop_assert_eq!(got, model_stream(&stream));
        }
    }

    /// vlan:// never panics and never produces an invalid-length frame.
    #[test]
    fn fuzz_vlan_rewrite(
        data in prop_oneof![bytes(ETH_BUFSIZE + 4), eth_frame().prop_flat_map(mutated)],
        vlan in 0u16..5, untag in 0u16..5, trunk in any::<bool>(), qinq in any::<bool>(),
    ) {
        let cfg = crate::transport::vlan::Config { vlan, untag, map: vec![(1, 2), (3, 4)], trunk, qinq };
        let mut h = crate::transport::vlan::hook(cfg);
        let mut out = vec![0u8; ETH_BUFSIZE + 1];
        if let Some(n) = h.outgoing(&data, &mut out) {
            prop_assert!(n <= ETH_BUFSIZE.max(data.len()) && n + 4 >= data.len());
        }
        let mut buf = vec![0u8; ETH_BUFSIZE + 1];
        let len = data.len().min(buf.len());
        buf[..len].copy_from_slice(&data[..len]);
        if let Some(n) = h.incoming(&mut buf, len) {
            prop_assert!(n <= ETH_BUFSIZE.max(len) && n + 4 >= len);
        }
    }
}

/// Reference parse of a whole stream: frames, and oversized lengths whose
/// bytes are skipped; a trailing partial frame yields nothing.
fn model_stream(s: &[u8]) -> Vec<Result<Vec<u8>, usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= s.len() {
        let len = u16::from_be_bytes([s[i], s[i + 1]]) as usize;
        i += 2;
        if len == 0 {
            continue;
        }
        if len > MAX_STREAM_FRAME {
            out.push(Err(len));
            i += len;
            continue;
        }
        if i + len > s.len() {
            break;
        }
        out.push(Ok(s[i..i + len].to_vec()));
        i += len;
    }
    out
}
