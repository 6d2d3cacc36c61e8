//! vdeplug-bench: the traffic generator, sink and micro-benchmarks used by
//! benches/run.py. Built with `cargo build --release --example vdeplug-bench`.
//!
//! It drives a network path with our own Rust transports (the same for the
//! C and the Rust relay under test, so the comparison is fair), closed loop:
//! at most `--window` frames in flight, sent and received in batches
//! (sendmmsg/recvmmsg), each frame carrying a sequence number and a send
//! timestamp so the sink measures one-way latency.
//!
//!   vdeplug-bench traffic --flow TX RX [--flow TX RX]... --size 64 --seconds 2
//!   vdeplug-bench traffic --echo ENDPOINT ...        (frames come back on the same endpoint)
//!   vdeplug-bench blast ENDPOINT --size 64 --seconds 2   (broadcast frames, one way, as fast as taken)
//!   vdeplug-bench hold ENDPOINT --count N            (N idle connections until stdin closes)
//!   vdeplug-bench micro
//!
//! Endpoints: udp:SRCPORT:DSTPORT (loopback), ptp:PATH, vde:PATH, vxvde:GROUP.
//!
//! And the per-packet round-trip probe of benches/latency.py, plain UDP over
//! IP (through whatever path joins two namespaces), open loop at a fixed rate:
//!
//!   vdeplug-bench echo ADDR:PORT                 send every datagram back
//!   vdeplug-bench rtt ADDR:PORT --rate PPS --count N [--size BYTES]
//!
//! `rtt` prints one JSON object: the round-trip time of every reply in ns
//! (CLOCK_MONOTONIC, taken when the blocking recv returns), in send order.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use _core::mac_table::MacTable;
use _core::transport::overlay::{Config, Remote};
use _core::transport::{ptp, udp, vde, vxvde, Batch, Transport};
use _core::wire::ethernet::Address;
use _core::wire::vxlan::{Packet, Repr};

fn open(spec: &str) -> io::Result<Box<dyn Transport>> {
    let (kind, rest) = spec.split_once(':').ok_or_else(|| io::Error::other(format!("bad endpoint {spec}")))?;
    Ok(match kind {
        "udp" => {
            let (s, d) = rest.split_once(':').ok_or_else(|| io::Error::other("udp:SRC:DST"))?;
            let src: SocketAddr = format!("127.0.0.1:{s}").parse().map_err(io::Error::other)?;
            let dst: SocketAddr = format!("127.0.0.1:{d}").parse().map_err(io::Error::other)?;
            Box::new(udp::open(src, dst)?)
        }
        "ptp" => Box::new(ptp::open(Path::new(rest), None, None)?),
        "vde" => Box::new(vde::open(Path::new(rest), &vde::Options { descr: "vdeplug-bench".into(), ..Default::default() })?),
        "vxvde" => {
            let remote = Remote::Group(rest.parse().map_err(io::Error::other)?);
            let cfg = Config { remote, port: 14789, vni: 1, ttl: None, ifname: None, rcvbuf: Some(4 << 20), hashsize: 1024, expiretime: 128, allow: Vec::new(), names: Vec::new(), refresh: 0 };
            Box::new(vxvde::open(&cfg, None)?)
        }
        _ => return Err(io::Error::other(format!("unknown endpoint kind {kind}"))),
    })
}

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0xbe, n]
}

fn clock_ns(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// A prepared batch of `n` frames for flow `f` (header fixed, stamp per send).
fn fill(batch: &mut Batch, n: usize, size: usize, flow: u8, seq: &mut u64, now: u64) {
    batch.clear();
    for i in 0..n {
        let b = &mut batch.bufs[i];
        b[..6].copy_from_slice(&mac(0x20 + flow));
        b[6..12].copy_from_slice(&mac(0x10 + flow));
        b[12..14].copy_from_slice(&[0x88, 0xb5]);
        b[14..22].copy_from_slice(&seq.to_be_bytes());
        b[22..30].copy_from_slice(&now.to_be_bytes());
        b[30] = flow;
        *seq += 1;
        batch.lens[i] = size;
    }
    batch.count = n;
}

fn learn_frame(src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb6]);
    f.resize(60, 0);
    f
}

struct Args {
    flows: Vec<(String, Option<String>)>,
    size: usize,
    seconds: f64,
    warmup: f64,
    window: usize,
}

fn traffic(a: Args) -> io::Result<()> {
    // Never wait for room on the sending side: the same thread must keep
    // reading, or a relay blocked on us would stall the whole loop.
    _core::transport::set_send_patience(0);
    let mut tx: Vec<Box<dyn Transport>> = Vec::new();
    let mut rx: Vec<Box<dyn Transport>> = Vec::new();
    let echo = a.flows.iter().all(|(_, r)| r.is_none());
    for (t, r) in &a.flows {
        tx.push(open(t)?);
        if let Some(r) = r {
            rx.push(open(r)?);
        }
    }
    // Learning phase: every endpoint announces its MAC (switches, vxvde).
    std::thread::sleep(Duration::from_millis(200));
    for round in 0..3 {
        for (i, t) in tx.iter_mut().enumerate() {
            let _ = t.send(&learn_frame(mac(0x10 + i as u8)));
        }
        for (i, r) in rx.iter_mut().enumerate() {
            let _ = r.send(&learn_frame(mac(0x20 + i as u8)));
        }
        std::thread::sleep(Duration::from_millis(if round == 2 { 300 } else { 50 }));
    }
    let sinks: &mut Vec<Box<dyn Transport>> = if echo { &mut tx } else { &mut rx };
    let mut drain = Batch::new(64);
    for s in sinks.iter_mut() {
        while s.recv_batch(&mut drain).is_ok() && drain.count > 0 {}
    }

    let nsinks = if echo { tx.len() } else { rx.len() };
    let origin = Instant::now();
    let warm_end = a.warmup;
    let end = a.warmup + a.seconds;
    let mut out = Batch::new(32);
    let mut inb = Batch::new(64);
    let idx: Vec<usize> = (0..32).collect();
    // Sequence numbers per flow: a frame arriving past the next one
    // expected means those between were lost (a relay's full queue dropped
    // them; each path keeps its order), and they leave the window at once.
    // Else every loss would shrink the window for the rest of the run, and
    // a relay that drops would show a lower latency (Little's law: frames
    // in flight / rate) than one that queues.
    let (mut in_flight, mut seqs, mut expect) = (0usize, vec![0u64; tx.len()], vec![0u64; tx.len()]);
    let mut lost = 0u64;
    let (mut frames, mut bytes, mut lost_resets) = (0u64, 0u64, 0u64);
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut last_rx = Instant::now();
    let mut measure_start: Option<Instant> = None;
    let mut flow = 0usize;
    loop {
        let t = origin.elapsed().as_secs_f64();
        if t >= end {
            break;
        }
        if t >= warm_end && measure_start.is_none() {
            measure_start = Some(Instant::now());
        }
        // Send while the window allows, one batch per flow in turn.
        while in_flight + 32 <= a.window {
            let now = clock_ns(origin);
            fill(&mut out, 32, a.size, flow as u8, &mut seqs[flow], now);
            let o = tx[flow].send_batch(&out, &idx);
            in_flight += o.sent;
            flow = (flow + 1) % tx.len();
            if o.sent == 0 {
                break;
            }
        }
        // Busy-poll the sinks directly, without epoll: we never sleep and no
        // wait-queue callback runs per datagram, so the relay under test
        // pays nothing for delivering to us.
        for i in 0..nsinks {
            let s = if echo { &mut tx[i] } else { &mut rx[i] };
            loop {
                s.recv_batch(&mut inb)?;
                if inb.count == 0 {
                    break;
                }
                let now = clock_ns(origin);
                for k in 0..inb.count {
                    let f = inb.frame(k);
                    if f.len() < 31 || f[12..14] != [0x88, 0xb5] {
                        continue;
                    }
                    let (seq, fl) = (u64::from_be_bytes(f[14..22].try_into().unwrap_or([0; 8])), usize::from(f[30]));
                    match expect.get_mut(fl) {
                        Some(e) if seq >= *e => {
                            let gone = seq - *e;
                            in_flight = in_flight.saturating_sub(1 + gone as usize);
                            *e = seq + 1;
                            if measure_start.is_some() {
                                lost += gone;
                            }
                        }
                        _ => {} // late: counted as lost when its successor came
                    }
                    if measure_start.is_some() {
                        frames += 1;
                        bytes += f.len() as u64;
                        let sent = u64::from_be_bytes(f[22..30].try_into().unwrap_or([0; 8]));
                        lat.push((now.saturating_sub(sent) / 1000).min(u64::from(u32::MAX)) as u32);
                    }
                }
                last_rx = Instant::now();
            }
        }
        // Frames lost (e.g. a full queue dropped them): reopen the window.
        if in_flight > 0 && last_rx.elapsed() > Duration::from_millis(20) {
            in_flight = 0;
            lost_resets += 1;
            last_rx = Instant::now();
        }
    }
    let secs = measure_start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0).max(1e-9);
    lat.sort_unstable();
    let pct = |p: f64| if lat.is_empty() { 0 } else { lat[((lat.len() - 1) as f64 * p) as usize] };
    println!(
        "{{\"frames\": {frames}, \"seconds\": {secs:.4}, \"fps\": {:.1}, \"mbps\": {:.2}, \"lat_p50_us\": {}, \"lat_p99_us\": {}, \"stalls\": {lost_resets}, \"lost\": {lost}, \"size\": {}}}",
        frames as f64 / secs,
        bytes as f64 * 8.0 / secs / 1e6,
        pct(0.50),
        pct(0.99),
        a.size
    );
    Ok(())
}

/// `echo`: every datagram goes back to its sender, one at a time (blocking).
fn echo(addr: &str) -> io::Result<()> {
    let sock = std::net::UdpSocket::bind(addr)?;
    let mut buf = [0u8; 65536];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        sock.send_to(&buf[..n], from)?;
    }
}

const RTT_MAGIC: [u8; 4] = *b"VDPL";
/// Sequence numbers at and above this are warm-up probes, not samples.
const WARMUP_SEQ: u64 = u64::MAX - 64;

/// `rtt`: `count` probes at `rate` per second on an absolute schedule (a
/// late probe goes at once, the next ones keep their times), after five
/// warm-up probes 10 ms apart (ARP, learning; none answered within 0.2 s
/// is an error). A receiver thread stamps each reply; replies later than
/// 0.2 s after the last send count as lost.
fn rtt(to: &str, rate: f64, count: usize, size: usize) -> io::Result<()> {
    // Sleep to the microsecond, not the default 50 µs timer slack: at
    // 10 000/s the gap between probes is 100 µs.
    // SAFETY: PR_SET_TIMERSLACK takes an integer and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(to)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let rx = sock.try_clone()?;
    let origin = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let warm = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (stop, warmed) = (done.clone(), warm.clone());
    let receiver = std::thread::spawn(move || -> io::Result<(Vec<u64>, u64)> {
        let mut rtt = vec![u64::MAX; count];
        let mut dups = 0u64;
        let mut buf = [0u8; 65536];
        loop {
            let n = match rx.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if stop.load(std::sync::atomic::Ordering::Acquire) {
                        break;
                    }
                    continue;
                }
                // An ICMP error on the connected socket (e.g. no listener yet): keep listening.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            };
            let now = clock_ns(origin);
            if n < 20 || buf[..4] != RTT_MAGIC {
                continue;
            }
            let seq = u64::from_be_bytes(buf[4..12].try_into().unwrap_or([0; 8]));
            let sent = u64::from_be_bytes(buf[12..20].try_into().unwrap_or([0; 8]));
            if seq >= WARMUP_SEQ {
                warmed.fetch_add(1, std::sync::atomic::Ordering::Release);
            } else if let Some(slot) = usize::try_from(seq).ok().and_then(|i| rtt.get_mut(i)) {
                if *slot == u64::MAX {
                    *slot = now.saturating_sub(sent);
                } else {
                    dups += 1;
                }
            }
        }
        Ok((rtt, dups))
    });
    let mut pkt = vec![0u8; size.max(20)];
    pkt[..4].copy_from_slice(&RTT_MAGIC);
    let mut send = |seq: u64| -> io::Result<()> {
        pkt[4..12].copy_from_slice(&seq.to_be_bytes());
        pkt[12..20].copy_from_slice(&clock_ns(origin).to_be_bytes());
        match sock.send(&pkt) {
            // A probe the path refused is a lost sample, not our error.
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::WouldBlock) => Ok(()),
            r => r.map(|_| ()),
        }
    };
    for i in 0..5 {
        send(WARMUP_SEQ + i)?;
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    if warm.load(std::sync::atomic::Ordering::Acquire) == 0 {
        // A path that answers nothing: say so now, not after `count` probes.
        return Err(io::Error::other(format!("no replies from {to}")));
    }
    let period = 1.0 / rate;
    let start = Instant::now();
    for seq in 0..count {
        let due = start + Duration::from_secs_f64(period * seq as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        send(seq as u64)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    done.store(true, std::sync::atomic::Ordering::Release);
    let (samples, dups) = receiver.join().map_err(|_| io::Error::other("receiver panicked"))??;
    let got: Vec<String> = samples.iter().filter(|&&s| s != u64::MAX).map(u64::to_string).collect();
    println!("{{\"sent\": {count}, \"received\": {}, \"duplicates\": {dups}, \"rate\": {rate}, \"seconds\": {seconds:.3}, \"rtt_ns\": [{}]}}", got.len(), got.join(","));
    Ok(())
}

/// One way, open loop: batches of 32 broadcast frames on `spec` for
/// `warmup + seconds`, each send waiting for room (the relay under test sets
/// the pace). Prints the frames taken during `seconds`.
fn blast(spec: &str, size: usize, seconds: f64, warmup: f64) -> io::Result<()> {
    let mut tx = open(spec)?;
    let mut out = Batch::new(32);
    let idx: Vec<usize> = (0..32).collect();
    let mut seq = 0u64;
    let origin = Instant::now();
    let (mut sent, mut measured) = (0u64, None::<Instant>);
    while origin.elapsed().as_secs_f64() < warmup + seconds {
        if measured.is_none() && origin.elapsed().as_secs_f64() >= warmup {
            measured = Some(Instant::now());
        }
        fill(&mut out, 32, size, 0, &mut seq, 0);
        for i in 0..32 {
            out.bufs[i][..6].copy_from_slice(&[0xff; 6]);
        }
        let o = tx.send_batch(&out, &idx);
        if measured.is_some() {
            sent += o.sent as u64;
        }
    }
    let secs = measured.map(|m| m.elapsed().as_secs_f64()).unwrap_or(0.0).max(1e-9);
    println!("{{\"sent\": {sent}, \"seconds\": {secs:.4}, \"fps\": {:.1}, \"size\": {size}}}", sent as f64 / secs);
    Ok(())
}

/// `count` idle connections to `spec` (switch ports), held until stdin closes.
fn hold(spec: &str, count: usize) -> io::Result<()> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(open(spec)?);
    }
    println!("ready {}", held.len());
    io::Read::read_to_end(&mut io::stdin(), &mut Vec::new())?;
    Ok(())
}

/// Resident memory of this process, bytes (/proc/self/statm).
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// The MAC table at its bound: for each station count, a table of exactly
/// that many slots (hashsize = stations) filled with that many random
/// stations, then random lookups of them. One JSON line per size: stations
/// learned, learn ns, lookups/s, hit ratio, resident bytes (switch ports
/// as values, and the overlays' peer addresses).
fn mac_curve(sizes: &[usize], ms: u64) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for &stations in sizes {
        let macs: Vec<Address> = (0..stations)
            .map(|_| {
                let r = rnd().to_le_bytes();
                Address([r[0] & 0xfe, r[1], r[2], r[3], r[4], r[5]])
            })
            .collect();
        let before = rss();
        let mut t: MacTable<u32> = MacTable::new(stations, 1_000_000, 7);
        let start = Instant::now();
        let mut learned = 0usize;
        for (i, m) in macs.iter().enumerate() {
            // All in one second: none may push another out (PROTECT), so a
            // full bucket refuses and the hit ratio is what the table holds.
            if matches!(t.learn(*m, 0, i as u32, 10), _core::mac_table::Learned::New) {
                learned += 1;
            }
        }
        let learn_ns = start.elapsed().as_nanos() as f64 / stations as f64;
        let bytes = rss().saturating_sub(before);
        let now = 10;
        let mut y: u64 = 0x9e37_79b9_7f4a_7c15;
        let (mut hits, mut n) = (0u64, 0u64);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(ms) {
            for _ in 0..1 << 18 {
                y ^= y << 13;
                y ^= y >> 7;
                y ^= y << 17;
                let m = macs[(y as usize) % stations];
                if t.lookup(std::hint::black_box(m), 0, now).is_some() {
                    hits += 1;
                }
            }
            n += 1 << 18;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        // Forgetting a port or peer scans the whole table (forget_value).
        let start = Instant::now();
        let mut scans = 0u32;
        while scans < 3 || start.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(t.forget_value(u32::MAX));
            scans += 1;
        }
        let forget_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(scans);
        drop(t);
        let before = rss();
        let mut p: MacTable<_core::transport::overlay::Peer> = MacTable::new(stations, 1_000_000, 7);
        for m in &macs {
            p.learn(*m, 0, Default::default(), 10);
        }
        let peer_bytes = rss().saturating_sub(before);
        println!(
            "{{\"stations\": {stations}, \"capacity\": {}, \"learned\": {learned}, \"learn_ns\": {learn_ns:.1}, \"lookups_per_s\": {rate:.0}, \"hit_ratio\": {:.4}, \"forget_us\": {forget_us:.1}, \"bytes_switch\": {bytes}, \"bytes_overlay\": {peer_bytes}}}",
            p.capacity(),
            hits as f64 / n as f64
        );
    }
}

fn micro() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut parts = Vec::new();
    for entries in [1usize << 10, 1 << 16] {
        // Table sized 2x the entries (vdeplug4 sizes tables by hashsize too).
        let mut t: MacTable<u32> = MacTable::new(entries * 2, 1_000_000, 1);
        let macs: Vec<Address> = (0..entries)
            .map(|_| {
                let r = rnd().to_le_bytes();
                Address([r[0] & 0xfe, r[1], r[2], r[3], r[4], r[5]])
            })
            .collect();
        for (i, m) in macs.iter().enumerate() {
            t.learn(*m, 0, i as u32, 10);
        }
        // Random present keys; the index comes from an inline xorshift so the
        // loop reads nothing but the table and the key list.
        let mut y: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut hits = 0u64;
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_millis(700) {
            for _ in 0..1 << 20 {
                y ^= y << 13;
                y ^= y >> 7;
                y ^= y << 17;
                let m = macs[(y as usize) & (entries - 1)];
                if t.lookup(std::hint::black_box(m), 0, 10).is_some() {
                    hits += 1;
                }
            }
            n += 1 << 20;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        parts.push(format!("\"mac_lookups_per_s_{}k\": {:.0}, \"mac_hit_ratio_{}k\": {:.4}", entries >> 10, rate, entries >> 10, hits as f64 / n as f64));
    }
    for size in [64usize, 1500] {
        let frame = vec![0xabu8; size];
        let mut buf = vec![0u8; size + 8];
        let hdr = Repr { vni: 42 };
        let iters = 5_000_000u64;
        let start = Instant::now();
        for _ in 0..iters {
            hdr.emit(&mut buf);
            buf[8..].copy_from_slice(std::hint::black_box(&frame));
            std::hint::black_box(&buf);
        }
        let enc = start.elapsed().as_nanos() as f64 / iters as f64;
        let start = Instant::now();
        let mut ok = 0u64;
        for _ in 0..iters {
            if let Ok(p) = Packet::new_checked(std::hint::black_box(&buf[..])) {
                if Repr::parse(&p, 42, true).is_ok() && p.payload().len() == size {
                    ok += 1;
                }
            }
        }
        let dec = start.elapsed().as_nanos() as f64 / iters as f64;
        assert_eq!(ok, iters);
        parts.push(format!("\"vxlan_encap_ns_{size}\": {enc:.2}, \"vxlan_decap_ns_{size}\": {dec:.2}"));
    }
    println!("{{{}}}", parts.join(", "));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: vdeplug-bench traffic (--flow TX RX | --echo EP)... [--size N] [--seconds S] [--warmup S] [--window N] | blast EP [--size N] [--seconds S] [--warmup S] | hold EP --count N | mac-curve [STATIONS...] | micro | echo ADDR:PORT | rtt ADDR:PORT --rate PPS --count N [--size BYTES]";
    // `--name value` after position `from`, as a number.
    let opt = |from: usize, name: &str, default: f64| -> f64 {
        let mut i = from;
        while i + 1 < args.len() {
            if args[i] == name {
                return args[i + 1].parse().unwrap_or_else(|_| panic!("{usage}"));
            }
            i += 2;
        }
        default
    };
    match args.first().map(String::as_str) {
        Some("micro") => micro(),
        Some("mac-curve") => {
            let sizes: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
            mac_curve(if sizes.is_empty() { &[1 << 10, 1 << 14, 1 << 17, 1 << 20] } else { &sizes }, 300);
        }
        Some(mode @ ("blast" | "hold")) => {
            let spec = args.get(1).unwrap_or_else(|| panic!("{usage}"));
            let r = if mode == "blast" { blast(spec, opt(2, "--size", 64.0) as usize, opt(2, "--seconds", 2.0), opt(2, "--warmup", 0.3)) } else { hold(spec, opt(2, "--count", 1.0) as usize) };
            if let Err(e) = r {
                eprintln!("vdeplug-bench: {e}");
                std::process::exit(1);
            }
        }
        Some("echo") => {
            let r = args.get(1).ok_or_else(|| io::Error::other(usage)).and_then(|a| echo(a));
            if let Err(e) = r {
                eprintln!("vdeplug-bench: {e}");
                std::process::exit(1);
            }
        }
        Some("rtt") => {
            let (mut rate, mut count, mut size) = (100.0, 100usize, 64usize);
            let mut i = 2;
            while i + 1 < args.len() {
                let v: f64 = args[i + 1].parse().unwrap_or_else(|_| panic!("{usage}"));
                match args[i].as_str() {
                    "--rate" => rate = v,
                    "--count" => count = v as usize,
                    "--size" => size = v as usize,
                    _ => panic!("{usage}"),
                }
                i += 2;
            }
            let to = args.get(1).unwrap_or_else(|| panic!("{usage}"));
            assert!(rate > 0.0 && count > 0 && i == args.len(), "{usage}");
            if let Err(e) = rtt(to, rate, count, size) {
                eprintln!("vdeplug-bench: {e}");
                std::process::exit(1);
            }
        }
        Some("traffic") => {
            let mut a = Args { flows: Vec::new(), size: 64, seconds: 2.0, warmup: 0.3, window: 256 };
            let mut i = 1;
            let num = |s: Option<&String>| s.and_then(|v| v.parse::<f64>().ok()).unwrap_or_else(|| panic!("{usage}"));
            while i < args.len() {
                match args[i].as_str() {
                    "--flow" => {
                        a.flows.push((args[i + 1].clone(), Some(args[i + 2].clone())));
                        i += 3;
                    }
                    "--echo" => {
                        a.flows.push((args[i + 1].clone(), None));
                        i += 2;
                    }
                    "--size" => {
                        a.size = num(args.get(i + 1)) as usize;
                        i += 2;
                    }
                    "--seconds" => {
                        a.seconds = num(args.get(i + 1));
                        i += 2;
                    }
                    "--warmup" => {
                        a.warmup = num(args.get(i + 1));
                        i += 2;
                    }
                    "--window" => {
                        a.window = num(args.get(i + 1)) as usize;
                        i += 2;
                    }
                    _ => panic!("{usage}"),
                }
            }
            assert!(!a.flows.is_empty() && a.size >= 60, "{usage}");
            if let Err(e) = traffic(a) {
                eprintln!("vdeplug-bench: {e}");
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
