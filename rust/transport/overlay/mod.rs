//! What vxlan:// and vxvde:// share: frames carried in UDP behind the
//! 8-byte VXLAN header, a MAC table mapping each remote MAC to the peer
//! address it came from, and the choice of destination for each frame
//! (known unicast → that peer, anything else → the multicast group, or
//! a copy to every peer of the flood list when there is no group).
//!
//! Without multicast, members that join (flood.rs) are probed: a probe
//! carries a cookie, HMAC-SHA256 (ring) of the address it went to and the
//! minute truncated to 64 bits, that only a host receiving our traffic
//! there can echo (compared in constant time, subtle).
//!
//! - protocol.rs: the core, without I/O (state, `accept`, where a frame
//!   goes, the control messages owed); time and local addresses passed in.
//! - socket.rs: the sockets (batched receive with UDP GRO, one path per
//!   datagram; sends with UDP GSO; socket setup).
//! - options.rs: the option table, the address part, `Config`.
//! - dns.rs: peer names, each address a peer, looked up again every
//!   `refresh=` seconds by a thread (`Names` decides, without I/O).

mod dns;
mod options;
mod protocol;
mod socket;

pub use dns::{DnsStats, Names, Resolver};
pub(crate) use options::overlay_options;
pub use options::{config_of, peers_of, port_of, remote_of, Config, PeerName, Remote, DEFAULT_V4, DEFAULT_V6, MAX_ANSWER};
pub use protocol::{Outgoing, OverlayStats, Peer, Protocol, Rx};
pub use socket::{any, bind, ifindex, join_group, local_addrs, multicast_out, never_self, set_rcvbuf, udp_socket, unicast_out, IsSelf, Overlay};

#[cfg(test)]
mod testutil {
    use super::{Config, Remote};

    pub fn cfg() -> Config {
        let remote = Remote::Group("239.0.0.1".parse().unwrap());
        Config { remote, port: 4789, vni: 5, ttl: None, ifname: None, rcvbuf: None, hashsize: 64, expiretime: 128, allow: Vec::new(), names: Vec::new(), refresh: 0 }
    }

    pub fn eth(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0xab);
        f
    }

    pub const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    pub const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
}
