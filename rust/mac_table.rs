//! MAC learning table: (MAC, VLAN) → where that MAC was last seen (a peer
//! socket address for vxlan/vxvde, a port for a switch), with expiry.
//!
//! Fixed size, allocated once: `hashsize` slots (rounded up to a power of
//! two) arranged as 4-way set-associative buckets. A lookup or insert touches
//! one bucket (a single 64-byte cache line for switch ports), never allocates, and a flood of random
//! source MACs can only evict, never grow. Eviction policy inside a full
//! bucket: expired slots first, else the least recently seen one, but only
//! if it was last seen at least `PROTECT` seconds ago: stations that keep
//! talking cannot be pushed out by a flood of new source MACs (the newcomer
//! is then not learned, and frames to it are flooded like any unknown
//! destination). (vdeplug4 uses one slot per bucket, so any collision
//! evicts; this keeps up to 4.)
//! Time is passed in (seconds), so tests never read a clock.

use crate::wire::ethernet::Address;

const WAYS: usize = 4;
const EMPTY: u64 = u64::MAX;
/// Entries seen this recently (seconds) are never evicted by a new MAC.
pub const PROTECT: u32 = 2;

/// vdeplug4's murmur3 fmix64, seeded.
fn fmix64(mut k: u64, seed: u64) -> u64 {
    k ^= (k >> 33) ^ seed;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

fn key(mac: Address, vlan: u16) -> u64 {
    let m = mac.0;
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]) | (u64::from(vlan & 0x0fff) << 48)
}

/// One bucket: keys, ages and values side by side, cache-line aligned. With
/// 4-byte values (switch ports) a bucket is exactly one 64-byte line, so a
/// lookup costs one cache miss at most.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket<V> {
    keys: [u64; WAYS],
    /// Seconds (truncated to 32 bits: wraps after 136 years).
    seen: [u32; WAYS],
    vals: [V; WAYS],
}

/// What `learn` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    New,
    Refreshed,
    /// The MAC was known at another place (station moved).
    Moved,
    /// Multicast source: never learned.
    Ignored,
    /// Its bucket holds only recently active stations: not learned now.
    Full,
}

pub struct MacTable<V: Copy + PartialEq> {
    buckets: Box<[Bucket<V>]>,
    mask: usize,
    seed: u64,
    max_age: u32,
    /// Whole-table scans so far (`forget_value`, `forget_if`): each costs
    /// the table's size, so callers keep them rare.
    scans: u64,
}

impl<V: Copy + PartialEq + Default> MacTable<V> {
    /// `size` slots (at least 4, rounded up to a power of two), entries valid
    /// for `max_age` seconds after they were last seen.
    pub fn new(size: usize, max_age: u64, seed: u64) -> Self {
        let size = size.clamp(WAYS, 1 << 24).next_power_of_two();
        let empty = Bucket { keys: [EMPTY; WAYS], seen: [0; WAYS], vals: [V::default(); WAYS] };
        let buckets = vec![empty; size / WAYS].into_boxed_slice();
        MacTable { buckets, mask: size / WAYS - 1, seed, max_age: max_age.min(u64::from(u32::MAX)) as u32, scans: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    #[inline]
    fn bucket(&self, k: u64) -> usize {
        (fmix64(k, self.seed) as usize) & self.mask
    }

    #[inline]
    fn fresh(&self, seen: u32, now: u32) -> bool {
        now.wrapping_sub(seen) <= self.max_age
    }

    /// Where `mac` was last seen, unless unknown, expired or a group address.
    #[inline]
    pub fn lookup(&self, mac: Address, vlan: u16, now: u64) -> Option<V> {
        if mac.is_multicast() {
            return None;
        }
        let k = key(mac, vlan);
        let b = &self.buckets[self.bucket(k)];
        let now = now as u32;
        (0..WAYS).find(|&w| b.keys[w] == k && self.fresh(b.seen[w], now)).map(|w| b.vals[w])
    }

    /// `lookup`, with when the entry was last seen (seconds, truncated to 32 bits).
    #[inline]
    pub fn lookup_seen(&self, mac: Address, vlan: u16, now: u64) -> Option<(V, u32)> {
        if mac.is_multicast() {
            return None;
        }
        let k = key(mac, vlan);
        let b = &self.buckets[self.bucket(k)];
        let now = now as u32;
        (0..WAYS).find(|&w| b.keys[w] == k && self.fresh(b.seen[w], now)).map(|w| (b.vals[w], b.seen[w]))
    }

    /// Record that `mac` was seen at `value` now.
    #[inline]
    pub fn learn(&mut self, mac: Address, vlan: u16, value: V, now: u64) -> Learned {
        self.learn_at(mac, vlan, value, now).0
    }

    /// Where the entry of `mac` sits (0..capacity), for a caller keeping
    /// data beside the table (libvdeplug_mod's payloads), unless unknown
    /// or a group address. Its age is not checked (see `seen_at`).
    pub fn slot_of(&self, mac: Address, vlan: u16) -> Option<usize> {
        if mac.is_multicast() {
            return None;
        }
        let k = key(mac, vlan);
        let i = self.bucket(k);
        (0..WAYS).find(|&w| self.buckets[i].keys[w] == k).map(|w| i * WAYS + w)
    }

    /// True when the entry at `slot` (as `learn_at` gave it) is `mac` on
    /// `vlan` → `value`, seen at `now`: learning it again changes nothing.
    /// Lets a receiver skip the lookup for the frames of one burst.
    pub fn unchanged(&self, slot: usize, mac: Address, vlan: u16, value: V, now: u64) -> bool {
        let Some(b) = self.buckets.get(slot / WAYS) else { return false };
        let w = slot % WAYS;
        b.keys[w] == key(mac, vlan) && b.seen[w] == now as u32 && b.vals[w] == value
    }

    /// When the entry at `slot` was last seen (truncated to 32 bits).
    pub fn seen_at(&self, slot: usize) -> u32 {
        self.buckets[slot / WAYS].seen[slot % WAYS]
    }

    /// Empty the entry at `slot`.
    pub fn forget_slot(&mut self, slot: usize) {
        self.buckets[slot / WAYS].keys[slot % WAYS] = EMPTY;
    }

    /// `learn`, also telling where the entry sits (None: not learned).
    pub fn learn_at(&mut self, mac: Address, vlan: u16, value: V, now: u64) -> (Learned, Option<usize>) {
        if mac.is_multicast() {
            return (Learned::Ignored, None);
        }
        let k = key(mac, vlan);
        let i = self.bucket(k);
        let now = now as u32;
        let max_age = self.max_age;
        let fresh = |seen: u32| now.wrapping_sub(seen) <= max_age;
        let b = &mut self.buckets[i];
        if let Some(w) = (0..WAYS).find(|&w| b.keys[w] == k) {
            let was_fresh = fresh(b.seen[w]);
            let moved = b.vals[w] != value;
            b.vals[w] = value;
            b.seen[w] = now;
            let how = if !was_fresh {
                Learned::New
            } else if moved {
                Learned::Moved
            } else {
                Learned::Refreshed
            };
            return (how, Some(i * WAYS + w));
        }
        // Victim: an empty or expired slot, else the least recently seen.
        let mut victim = 0;
        for w in 0..WAYS {
            if b.keys[w] == EMPTY || !fresh(b.seen[w]) {
                victim = w;
                break;
            }
            if now.wrapping_sub(b.seen[w]) > now.wrapping_sub(b.seen[victim]) {
                victim = w;
            }
        }
        let taken = b.keys[victim] != EMPTY && fresh(b.seen[victim]);
        if taken && now.wrapping_sub(b.seen[victim]) < PROTECT {
            return (Learned::Full, None);
        }
        b.keys[victim] = k;
        b.seen[victim] = now;
        b.vals[victim] = value;
        (Learned::New, Some(i * WAYS + victim))
    }

    /// Forget every entry for which `stale(value, seen)` holds: one scan of
    /// the whole table. Returns how many went.
    pub fn forget_if(&mut self, stale: impl Fn(&V, u32) -> bool) -> usize {
        self.scans += 1;
        let mut n = 0;
        for b in self.buckets.iter_mut() {
            for w in 0..WAYS {
                if b.keys[w] != EMPTY && stale(&b.vals[w], b.seen[w]) {
                    b.keys[w] = EMPTY;
                    n += 1;
                }
            }
        }
        n
    }

    /// Whole-table scans so far.
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Forget every entry pointing at `value` (a port that closed, a vxvde peer that left).
    pub fn forget_value(&mut self, value: V) -> usize {
        self.scans += 1;
        let mut n = 0;
        for b in self.buckets.iter_mut() {
            for w in 0..WAYS {
                if b.keys[w] != EMPTY && b.vals[w] == value {
                    b.keys[w] = EMPTY;
                    n += 1;
                }
            }
        }
        n
    }

    /// Number of valid entries at `now` (a full scan: for stats, not the hot path).
    pub fn len(&self, now: u64) -> usize {
        let now = now as u32;
        self.buckets.iter().map(|b| (0..WAYS).filter(|&w| b.keys[w] != EMPTY && self.fresh(b.seen[w], now)).count()).sum()
    }

    pub fn is_empty(&self, now: u64) -> bool {
        self.len(now) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> Address {
        let b = n.to_be_bytes();
        Address([0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn learn_and_lookup() {
        let mut t: MacTable<u32> = MacTable::new(256, 120, 0);
        assert_eq!(t.lookup(mac(1), 0, 10), None);
        assert_eq!(t.learn(mac(1), 0, 7, 10), Learned::New);
        assert_eq!(t.lookup(mac(1), 0, 10), Some(7));
        assert_eq!(t.lookup(mac(1), 5, 10), None, "vlan is part of the key");
        assert_eq!(t.learn(mac(1), 0, 7, 11), Learned::Refreshed);
        assert_eq!(t.learn(mac(1), 0, 8, 12), Learned::Moved);
        assert_eq!(t.lookup(mac(1), 0, 12), Some(8));
    }

    #[test]
    fn expiry() {
        let mut t: MacTable<u32> = MacTable::new(16, 120, 0);
        t.learn(mac(1), 0, 1, 100);
        assert_eq!(t.lookup(mac(1), 0, 220), Some(1));
        assert_eq!(t.lookup(mac(1), 0, 221), None);
        assert_eq!(t.learn(mac(1), 0, 1, 221), Learned::New);
        assert_eq!(t.len(221), 1);
    }

    #[test]
    fn multicast_never_learned_nor_found() {
        let mut t: MacTable<u32> = MacTable::new(16, 120, 0);
        assert_eq!(t.learn(Address::BROADCAST, 0, 1, 0), Learned::Ignored);
        assert_eq!(t.lookup(Address::BROADCAST, 0, 0), None);
        assert!(t.is_empty(0));
    }

    #[test]
    fn bounded_under_flood() {
        let mut t: MacTable<u32> = MacTable::new(1000, 120, 42);
        assert_eq!(t.capacity(), 1024);
        t.learn(mac(1_000_000), 0, 7, 5); // an active station
        for i in 0..200_000 {
            t.learn(mac(i), 0, i, 5 + u64::from(i) / 20_000); // 10 s of flood
            if i % 20_000 == 0 {
                t.learn(mac(1_000_000), 0, 7, 5 + u64::from(i) / 20_000); // it keeps talking
            }
        }
        assert!(t.len(15) <= 1024);
        assert_eq!(t.lookup(mac(1_000_000), 0, 15), Some(7), "the active station survived the flood");
        // The flood is learned too, as far as protection allows: recent entries are there.
        let recent = (180_000..200_000).filter(|&i| t.lookup(mac(i), 0, 15).is_some()).count();
        let older = (160_000..180_000).filter(|&i| t.lookup(mac(i), 0, 15).is_some()).count();
        assert!(recent + older > 500, "{recent} {older}");
    }

    #[test]
    fn collisions_keep_four_per_bucket_and_evict_oldest() {
        let mut t: MacTable<u32> = MacTable::new(4, 1000, 0); // one bucket
        for i in 0..4 {
            t.learn(mac(i), 0, i, 10 + u64::from(i));
        }
        for i in 0..4 {
            assert_eq!(t.lookup(mac(i), 0, 20), Some(i));
        }
        t.learn(mac(9), 0, 9, 30);
        assert_eq!(t.lookup(mac(0), 0, 30), None, "oldest evicted");
        assert_eq!(t.lookup(mac(1), 0, 30), Some(1));
        assert_eq!(t.lookup(mac(9), 0, 30), Some(9));
    }

    #[test]
    fn recently_seen_entries_are_not_evicted() {
        let mut t: MacTable<u32> = MacTable::new(4, 1000, 0); // one bucket
        for i in 0..4 {
            t.learn(mac(i), 0, i, 10);
        }
        assert_eq!(t.learn(mac(9), 0, 9, 11), Learned::Full);
        assert_eq!(t.lookup(mac(9), 0, 11), None);
        assert_eq!(t.learn(mac(9), 0, 9, 10 + u64::from(PROTECT)), Learned::New);
    }

    #[test]
    fn expired_slot_reused_first() {
        let mut t: MacTable<u32> = MacTable::new(4, 10, 0);
        for i in 1..4 {
            t.learn(mac(i), 0, i, 1); // expired at 100
        }
        t.learn(mac(0), 0, 0, 100); // takes the free slot
        t.learn(mac(5), 0, 5, 100); // must take an expired slot, not mac(0)'s
        assert_eq!(t.lookup(mac(0), 0, 100), Some(0));
        assert_eq!(t.lookup(mac(5), 0, 100), Some(5));
    }

    #[test]
    fn forget_value() {
        let mut t: MacTable<u32> = MacTable::new(64, 120, 0);
        t.learn(mac(1), 0, 3, 0);
        t.learn(mac(2), 0, 3, 0);
        t.learn(mac(3), 0, 4, 0);
        assert_eq!(t.forget_value(3), 2);
        assert_eq!(t.lookup(mac(1), 0, 0), None);
        assert_eq!(t.lookup(mac(3), 0, 0), Some(4));
    }

    #[test]
    fn bucket_is_one_cache_line_for_port_values() {
        assert_eq!(std::mem::size_of::<Bucket<u32>>(), 64);
    }

    #[test]
    fn unchanged_only_while_the_slot_holds_the_same_entry() {
        let mut t: MacTable<u32> = MacTable::new(64, 300, 0);
        let (_, slot) = t.learn_at(mac(1), 0, 7, 100);
        let slot = slot.unwrap();
        assert!(t.unchanged(slot, mac(1), 0, 7, 100));
        assert!(!t.unchanged(slot, mac(1), 0, 7, 101), "another second: refresh");
        assert!(!t.unchanged(slot, mac(1), 0, 8, 100), "moved");
        assert!(!t.unchanged(slot, mac(2), 0, 7, 100));
        assert!(!t.unchanged(usize::MAX, mac(1), 0, 7, 100), "no such slot");
        t.forget_slot(slot);
        assert!(!t.unchanged(slot, mac(1), 0, 7, 100), "forgotten");
    }

    #[test]
    fn key_packs_mac_and_vlan() {
        assert_ne!(key(mac(1), 0), key(mac(1), 1));
        assert_eq!(key(mac(1), 0x1005), key(mac(1), 5), "vlan is 12 bits");
        assert_ne!(key(Address([0xff; 6]), 0xfff), EMPTY);
    }
}
