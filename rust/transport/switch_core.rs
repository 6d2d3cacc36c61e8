//! The forwarding decisions of switch://, hub://, multi:// and bonding://,
//! without I/O (boringtun's rule: the protocol core is unit-tested with
//! plain values; sockets, clock and queues belong to netnode.rs).
//!
//! - switch: learns (MAC, VLAN) → port; known unicast to its port only,
//!   never back to the sender; unknown, broadcast, multicast flooded.
//!   802.1Q trunk: tagged frames keep their tag and their VLAN's table.
//! - hub: flood to everyone but the sender.
//! - multi: ports → host only; host → every port.
//! - bonding: ports → host; host → one port, round robin.

use crate::mac_table::MacTable;
use crate::wire::ethernet::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Switch,
    Hub,
    Multi,
    Bonding,
}

/// Port 0 is the host (the opening process); clients are 1..
pub type PortId = u32;
pub const HOST: PortId = 0;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop,
    Host,
    Port(PortId),
    /// Every joined port but the sender, and the host unless it sent it.
    Flood,
}

pub struct SwitchCore {
    pub kind: Kind,
    table: MacTable<PortId>,
    rr: usize,
}

impl SwitchCore {
    pub fn new(kind: Kind, hashsize: usize, expiretime: u64, hashseed: u64) -> SwitchCore {
        SwitchCore { kind, table: MacTable::new(hashsize, expiretime, hashseed), rr: 0 }
    }

    /// Where `frame`, entering at `src` at `now` (seconds), goes; a switch
    /// learns its source. `joined` are the client ports now joined.
    pub fn decide(&mut self, src: PortId, frame: &[u8], now: u64, joined: &[PortId], is_joined: impl Fn(PortId) -> bool) -> Decision {
        let Ok(eth) = Frame::new_checked(frame) else { return Decision::Drop };
        match self.kind {
            Kind::Hub => Decision::Flood,
            Kind::Switch => {
                let vlan = eth.vlan_id().unwrap_or(0);
                self.table.learn(eth.src_addr(), vlan, src, now);
                match self.table.lookup(eth.dst_addr(), vlan, now) {
                    Some(d) if d == src => Decision::Drop,
                    Some(HOST) => Decision::Host,
                    Some(d) if is_joined(d) => Decision::Port(d),
                    _ => Decision::Flood,
                }
            }
            Kind::Multi | Kind::Bonding if src != HOST => Decision::Host,
            Kind::Multi => Decision::Flood,
            Kind::Bonding => {
                if joined.is_empty() {
                    return Decision::Drop;
                }
                let pick = joined[self.rr % joined.len()];
                self.rr = self.rr.wrapping_add(1);
                Decision::Port(pick)
            }
        }
    }

    /// A port left: forget the MACs learned on it.
    pub fn port_closed(&mut self, id: PortId) {
        self.table.forget_value(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }

    fn eth(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(64, 0);
        f
    }

    const BCAST: [u8; 6] = [0xff; 6];
    const JOINED: &[PortId] = &[1, 2, 3];

    fn decide(c: &mut SwitchCore, src: PortId, f: &[u8], now: u64) -> Decision {
        c.decide(src, f, now, JOINED, |p| JOINED.contains(&p))
    }

    #[test]
    fn switch_learns_and_forwards_unicast_to_one_port() {
        let mut c = SwitchCore::new(Kind::Switch, 64, 100, 0);
        assert_eq!(decide(&mut c, 1, &eth(mac(2), mac(1), None), 0), Decision::Flood, "unknown");
        assert_eq!(decide(&mut c, 2, &eth(mac(1), mac(2), None), 0), Decision::Port(1), "learned");
        assert_eq!(decide(&mut c, 1, &eth(mac(2), mac(1), None), 0), Decision::Port(2));
        assert_eq!(decide(&mut c, 3, &eth(BCAST, mac(3), None), 0), Decision::Flood, "broadcast");
        assert_eq!(decide(&mut c, 3, &eth([0x01, 0, 0x5e, 0, 0, 1], mac(3), None), 0), Decision::Flood, "multicast");
        assert_eq!(decide(&mut c, HOST, &eth(mac(3), mac(9), None), 0), Decision::Port(3));
        assert_eq!(decide(&mut c, 1, &eth(mac(9), mac(1), None), 0), Decision::Host, "the host's MAC");
    }

    #[test]
    fn switch_never_sends_back_to_the_sender() {
        let mut c = SwitchCore::new(Kind::Switch, 64, 100, 0);
        decide(&mut c, 1, &eth(BCAST, mac(1), None), 0);
        decide(&mut c, 1, &eth(BCAST, mac(5), None), 0);
        assert_eq!(decide(&mut c, 1, &eth(mac(5), mac(1), None), 0), Decision::Drop, "both behind port 1");
    }

    #[test]
    fn switch_keys_on_vlan() {
        let mut c = SwitchCore::new(Kind::Switch, 64, 100, 0);
        decide(&mut c, 1, &eth(BCAST, mac(1), Some(10)), 0);
        assert_eq!(decide(&mut c, 2, &eth(mac(1), mac(2), Some(10)), 0), Decision::Port(1), "same VLAN");
        assert_eq!(decide(&mut c, 2, &eth(mac(1), mac(2), Some(20)), 0), Decision::Flood, "another VLAN");
        assert_eq!(decide(&mut c, 2, &eth(mac(1), mac(2), None), 0), Decision::Flood, "untagged");
    }

    #[test]
    fn switch_entries_expire_and_leave_with_their_port() {
        let mut c = SwitchCore::new(Kind::Switch, 64, 10, 0);
        decide(&mut c, 1, &eth(BCAST, mac(1), None), 0);
        assert_eq!(decide(&mut c, 2, &eth(mac(1), mac(2), None), 5), Decision::Port(1));
        assert_eq!(decide(&mut c, 2, &eth(mac(1), mac(2), None), 20), Decision::Flood, "expired");
        decide(&mut c, 1, &eth(BCAST, mac(1), None), 20);
        c.port_closed(1);
        assert_eq!(decide(&mut c, 2, &eth(mac(1), mac(2), None), 20), Decision::Flood, "forgotten");
        decide(&mut c, 3, &eth(BCAST, mac(3), None), 20);
        let gone = c.decide(2, &eth(mac(3), mac(2), None), 20, &[1, 2], |p| p != 3);
        assert_eq!(gone, Decision::Flood, "a port no longer joined is not a destination");
    }

    #[test]
    fn hub_floods_everything() {
        let mut c = SwitchCore::new(Kind::Hub, 64, 10, 0);
        decide(&mut c, 1, &eth(BCAST, mac(1), None), 0);
        assert_eq!(decide(&mut c, 2, &eth(mac(1), mac(2), None), 0), Decision::Flood, "no learning");
        assert_eq!(decide(&mut c, HOST, &eth(mac(1), mac(2), None), 0), Decision::Flood);
    }

    #[test]
    fn multi_joins_ports_to_the_host() {
        let mut c = SwitchCore::new(Kind::Multi, 64, 10, 0);
        assert_eq!(decide(&mut c, 2, &eth(BCAST, mac(2), None), 0), Decision::Host);
        assert_eq!(decide(&mut c, 3, &eth(mac(2), mac(3), None), 0), Decision::Host, "never port to port");
        assert_eq!(decide(&mut c, HOST, &eth(mac(2), mac(9), None), 0), Decision::Flood);
    }

    #[test]
    fn bonding_rotates_over_joined_ports() {
        let mut c = SwitchCore::new(Kind::Bonding, 64, 10, 0);
        let f = eth(mac(1), mac(9), None);
        let picks: Vec<Decision> = (0..4).map(|_| decide(&mut c, HOST, &f, 0)).collect();
        assert_eq!(picks, [Decision::Port(1), Decision::Port(2), Decision::Port(3), Decision::Port(1)]);
        assert_eq!(decide(&mut c, 2, &f, 0), Decision::Host);
        assert_eq!(c.decide(HOST, &f, 0, &[], |_| false), Decision::Drop, "no ports");
    }

    #[test]
    fn runts_are_dropped() {
        for kind in [Kind::Switch, Kind::Hub, Kind::Multi, Kind::Bonding] {
            let mut c = SwitchCore::new(kind, 64, 10, 0);
            assert_eq!(decide(&mut c, 1, &[0u8; 10], 0), Decision::Drop, "{kind:?}");
        }
    }
}
