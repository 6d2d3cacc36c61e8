//! Peers from DNS: a host name of the peer list stands for every address it
//! has in the endpoint's family (a Kubernetes headless Service, Consul's
//! DNS interface), looked up again every `refresh=` seconds.
//!
//! - `Names`, without I/O: the last good answer of each name, and what a
//!   new answer changes (addresses added to and removed from the fixed
//!   peers). An answer is bounded (`MAX_ANSWER`, the rest counted), goes
//!   through `HostRule` as a peer list does, and a failed or empty lookup
//!   keeps the last good list (counted, noted once per change of state).
//! - `Resolver`: a thread doing the lookups (getaddrinfo blocks, so never
//!   on the forwarding loop), its answers taken by the loop's `tick`. It
//!   ends when the endpoint closes: at once while it waits, else when the
//!   lookup in flight returns.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use super::options::{lookup, PeerName, MAX_ANSWER};
use crate::transport::flood::HostRule;

/// Counters of the lookups (visible in the overlay's stats).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DnsStats {
    pub lookups: u64,
    /// Lookups that failed or had no address of our family (last list kept).
    pub failures: u64,
    /// Answers of more than `MAX_ANSWER` addresses (the rest left out).
    pub capped: u64,
    /// Addresses `HostRule` refused (a group, a broadcast, loopback …).
    pub refused: u64,
    /// Peers added and removed by new answers.
    pub added: u64,
    pub removed: u64,
}

/// One name's state: its last good answer (admitted, sorted), and whether
/// its last lookup failed or was capped (notes are printed on changes).
#[derive(Debug)]
struct Entry {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    failing: bool,
    capped: bool,
}

/// What an answer changed: peers to add and to remove, and a line to log
/// when the name's state changed (failing, recovered, capped).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
    pub note: Option<String>,
}

/// The peers of a list with host names: the literal ones and each name's
/// last good answer.
#[derive(Debug)]
pub struct Names {
    literal: Vec<SocketAddr>,
    names: Vec<Entry>,
    v6: bool,
    pub stats: DnsStats,
}

impl Names {
    /// From the peer list at open (`all`: literal peers and the names'
    /// answers, as `peers_of` gave them) and its names; the answers at open
    /// go through `rule` like any later one.
    pub fn new(all: &[SocketAddr], names: &[PeerName], v6: bool, rule: &HostRule) -> Names {
        let mut literal = all.to_vec();
        for a in names.iter().flat_map(|n| &n.addrs) {
            if let Some(k) = literal.iter().position(|l| l == a) {
                literal.remove(k);
            }
        }
        let mut n = Names { literal, names: Vec::new(), v6, stats: DnsStats::default() };
        for p in names {
            let addrs = n.admitted(p.addrs.iter().map(SocketAddr::ip), p.port, rule);
            n.names.push(Entry { host: p.host.clone(), port: p.port, addrs, failing: false, capped: false });
        }
        n
    }

    /// The names to look up, by index.
    pub fn hosts(&self) -> Vec<String> {
        self.names.iter().map(|e| e.host.clone()).collect()
    }

    /// Every peer: the literal ones that are not us, then each name's
    /// addresses, without repeats.
    pub fn peers(&self, rule: &HostRule) -> Vec<SocketAddr> {
        let mut seen = BTreeSet::new();
        let literal = self.literal.iter().filter(|a| !rule.is_self(a));
        literal.chain(self.names.iter().flat_map(|e| &e.addrs)).copied().filter(|a| seen.insert(*a)).collect()
    }

    /// The answer to a lookup of name `i`: its addresses (at most
    /// `MAX_ANSWER` + 1 are ever passed, more mean capped) or an error.
    /// An empty answer or an error keeps the last list.
    pub fn answer(&mut self, i: usize, answer: Result<Vec<IpAddr>, String>, rule: &HostRule) -> Change {
        let mut change = Change::default();
        if i >= self.names.len() {
            return change;
        }
        self.stats.lookups += 1;
        let family: Result<Vec<IpAddr>, String> = answer.map(|a| a.into_iter().filter(|a| a.is_ipv6() == self.v6).collect());
        let family = family.and_then(|a| if a.is_empty() { Err(format!("no IPv{} address", if self.v6 { 6 } else { 4 })) } else { Ok(a) });
        let ips = match family {
            Ok(ips) => ips,
            Err(e) => {
                self.stats.failures += 1;
                let entry = &mut self.names[i];
                if !entry.failing {
                    entry.failing = true;
                    change.note = Some(format!("cannot resolve {}: {e}; keeping its {} addresses", entry.host, entry.addrs.len()));
                }
                return change;
            }
        };
        let capped = ips.len() > MAX_ANSWER;
        self.stats.capped += u64::from(capped);
        let before: BTreeSet<SocketAddr> = self.peers(rule).into_iter().collect();
        let port = self.names[i].port;
        let addrs = self.admitted(ips.into_iter(), port, rule);
        let entry = &mut self.names[i];
        if entry.failing {
            change.note = Some(format!("{} resolves again: {} addresses", entry.host, addrs.len()));
        } else if capped && !entry.capped {
            change.note = Some(format!("{} has more than {MAX_ANSWER} addresses: using the first {MAX_ANSWER}", entry.host));
        }
        (entry.failing, entry.capped, entry.addrs) = (false, capped, addrs);
        let after: BTreeSet<SocketAddr> = self.peers(rule).into_iter().collect();
        change.added = after.difference(&before).copied().collect();
        change.removed = before.difference(&after).copied().collect();
        self.stats.added += change.added.len() as u64;
        self.stats.removed += change.removed.len() as u64;
        change
    }

    /// Addresses of our family at `port` that `rule` admits and that are
    /// not us, the first `MAX_ANSWER`, sorted, without repeats.
    fn admitted(&mut self, ips: impl Iterator<Item = IpAddr>, port: u16, rule: &HostRule) -> Vec<SocketAddr> {
        let mut out = BTreeSet::new();
        for ip in ips.take(MAX_ANSWER) {
            let a = SocketAddr::new(ip, port);
            if !rule.admits(&a) {
                self.stats.refused += 1;
            } else if !rule.is_self(&a) {
                out.insert(a);
            }
        }
        out.into_iter().collect()
    }

    /// How many peers the names give now.
    pub fn named_peers(&self) -> usize {
        self.names.iter().map(|e| e.addrs.len()).sum()
    }
}

/// A lookup's outcome, for name `i`.
type Answer = (usize, Result<Vec<IpAddr>, String>);

/// The thread that looks the names up every `every`, and the end of its
/// channel the loop polls. Dropping it stops the thread.
pub struct Resolver {
    answers: Receiver<Answer>,
    /// Dropped with the resolver: the thread's wait ends at once.
    _stop: SyncSender<()>,
}

impl Resolver {
    /// Look `hosts` up every `every` (their addresses of one family, at most
    /// `MAX_ANSWER` + 1 each), the first time after `every`.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn spawn(hosts: Vec<String>, v6: bool, every: Duration) -> io::Result<Resolver> {
        // One round of answers waits at most (a loop that stops ticking holds the thread).
        let (tx, answers) = mpsc::sync_channel(hosts.len());
        let (stop, stopped) = mpsc::sync_channel::<()>(0);
        std::thread::Builder::new().name("vdeplug-dns".into()).spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            for (i, h) in hosts.iter().enumerate() {
                let got = lookup(h, Some(v6), MAX_ANSWER + 1).map_err(|e| e.to_string());
                if tx.send((i, got)).is_err() {
                    return;
                }
            }
        })?;
        Ok(Resolver { answers, _stop: stop })
    }

    /// An answer that arrived, if any (never blocks).
    pub fn poll(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ips(list: &[&str]) -> Result<Vec<IpAddr>, String> {
        Ok(list.iter().map(|a| a.parse().unwrap()).collect())
    }

    /// IPv4 hosts off loopback; 10.0.0.255 a local broadcast, 10.0.0.9:4789 us.
    fn rule() -> HostRule {
        HostRule { v6: false, loopback: false, broadcasts: vec!["10.0.0.255".parse().unwrap()], local: vec!["10.0.0.9".parse().unwrap()], own_port: 4789 }
    }

    /// `10.0.0.1` literal, `pods` → 10.0.0.2, 10.0.0.3, 10.0.0.9 (us).
    fn names() -> Names {
        let pods = PeerName { host: "pods".into(), port: 4789, addrs: vec![sa("10.0.0.2:4789"), sa("10.0.0.3:4789"), sa("10.0.0.9:4789")] };
        let all = [sa("10.0.0.1:4789"), sa("10.0.0.2:4789"), sa("10.0.0.3:4789"), sa("10.0.0.9:4789")];
        Names::new(&all, &[pods], false, &rule())
    }

    #[test]
    fn every_address_of_a_name_is_a_peer_but_us() {
        let n = names();
        assert_eq!(n.peers(&rule()), [sa("10.0.0.1:4789"), sa("10.0.0.2:4789"), sa("10.0.0.3:4789")]);
        assert_eq!((n.hosts(), n.named_peers()), (vec!["pods".to_string()], 2));
    }

    #[test]
    fn a_new_answer_adds_and_removes() {
        let mut n = names();
        let c = n.answer(0, ips(&["10.0.0.3", "10.0.0.4", "10.0.0.9", "10.0.0.4"]), &rule());
        assert_eq!(c, Change { added: vec![sa("10.0.0.4:4789")], removed: vec![sa("10.0.0.2:4789")], note: None });
        assert_eq!(n.peers(&rule()), [sa("10.0.0.1:4789"), sa("10.0.0.3:4789"), sa("10.0.0.4:4789")]);
        assert_eq!(n.answer(0, ips(&["10.0.0.4", "10.0.0.3"]), &rule()), Change::default(), "the same set in another order changes nothing");
        let c = n.answer(0, ips(&["10.0.0.1", "10.0.0.3"]), &rule());
        assert_eq!((c.added, c.removed), (vec![], vec![sa("10.0.0.4:4789")]), "a literal peer stays a peer, named or not");
        let c = n.answer(0, ips(&["10.0.0.3"]), &rule());
        assert!(c.removed.is_empty() && n.peers(&rule()).contains(&sa("10.0.0.1:4789")), "and when the name drops it");
        assert_eq!((n.stats.lookups, n.stats.added, n.stats.removed), (4, 1, 2));
        assert_eq!(n.answer(7, ips(&["10.0.0.5"]), &rule()), Change::default(), "no such name");
    }

    #[test]
    fn a_failed_or_empty_lookup_keeps_the_last_list_and_is_noted_once() {
        let mut n = names();
        let c = n.answer(0, Err("Temporary failure in name resolution".into()), &rule());
        assert!(c.added.is_empty() && c.removed.is_empty());
        assert_eq!(c.note.as_deref(), Some("cannot resolve pods: Temporary failure in name resolution; keeping its 2 addresses"));
        assert_eq!(n.answer(0, Err("again".into()), &rule()).note, None, "noted once per change of state");
        assert_eq!(n.answer(0, ips(&["fd00::1"]), &rule()).note, None, "no address of our family is a failure too");
        assert_eq!(n.peers(&rule()).len(), 3);
        assert_eq!(n.stats.failures, 3);
        let c = n.answer(0, ips(&["10.0.0.2"]), &rule());
        assert_eq!((c.removed, c.note.as_deref()), (vec![sa("10.0.0.3:4789")], Some("pods resolves again: 1 addresses")));
        assert!(n.answer(0, Err("x".into()), &rule()).note.is_some(), "a new failure is noted again");
    }

    #[test]
    fn answers_go_through_the_host_rule_and_are_capped() {
        let mut n = names();
        let c = n.answer(0, ips(&["10.0.0.255", "239.1.1.1", "127.0.0.1", "0.0.0.0", "10.0.0.7"]), &rule());
        assert_eq!(c.added, [sa("10.0.0.7:4789")]);
        assert_eq!(n.stats.refused, 4);
        let many: Vec<IpAddr> = (0..MAX_ANSWER as u32 + 1).map(|i| IpAddr::V4((0x0a01_0000 + i).into())).collect();
        let c = n.answer(0, Ok(many.clone()), &rule());
        assert_eq!((c.added.len(), n.named_peers(), n.stats.capped), (MAX_ANSWER, MAX_ANSWER, 1));
        assert!(c.note.is_some_and(|m| m.contains("more than 1024")));
        assert_eq!(n.answer(0, Ok(many), &rule()).note, None, "capped again: noted once");
        assert_eq!(n.peers(&rule()).len(), MAX_ANSWER + 1, "the literal peer and the first MAX_ANSWER");
    }

    /// The first answer within 5 s.
    fn wait(r: &Resolver) -> Option<Answer> {
        for _ in 0..500 {
            if let Some(a) = r.poll() {
                return Some(a);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn dns_threads() -> usize {
        let named = |t: &std::fs::DirEntry| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "vdeplug-dns");
        std::fs::read_dir("/proc/self/task").unwrap().flatten().filter(named).count()
    }

    #[test]
    fn the_resolver_answers_and_ends_with_its_endpoint() {
        let r = Resolver::spawn(vec!["localhost".into(), "no-such-host.invalid".into()], false, Duration::from_millis(20)).unwrap();
        let (i, got) = wait(&r).unwrap();
        assert_eq!((i, got.unwrap().contains(&"127.0.0.1".parse().unwrap())), (0, true));
        let (i, got) = wait(&r).unwrap();
        assert!(i == 1 && got.is_err());
        assert_eq!(dns_threads(), 1);
        drop(r);
        let ended = (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            dns_threads() == 0
        });
        assert!(ended, "the thread ends with its endpoint");
    }
}
