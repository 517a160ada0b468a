//! [`FakeIps`]: the per-sandbox map between allowed names and the addresses
//! the guest is told they have.
//!
//! The guest never learns a real address. Each allowed name gets an address
//! from `198.18.0.0/15` (RFC 2544's benchmarking range, never routed on the
//! internet); when the guest connects to one, the transparent proxy asks
//! [`FakeIps::lookup_ip`] which name it meant and decides by that name. The
//! map is bounded: past its capacity the least recently used name gives up
//! its address. The guest cached that address for one TTL at most, and a
//! recycled address only ever maps to another name the policy allowed, which
//! the proxy decides again on connect.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

/// The first address of the range; `198.18.0.0/15`.
const BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// Addresses in the range.
const SPAN: u32 = 1 << 17;
/// Usable addresses per /24: `.1` to `.254`.
const PER_BLOCK: u32 = 254;
/// Index 0 would be `198.18.0.1`, the gateway.
const FIRST_INDEX: u32 = 1;
/// Indexes `FIRST_INDEX..END_INDEX` are the names' addresses.
const END_INDEX: u32 = (SPAN / 256) * PER_BLOCK;

/// The in-guest gateway's address, never given to a name.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// The gateway's name; the guest resolves it itself, but the responder
/// answers it too.
pub const GATEWAY_NAME: &str = "gateway.moat.internal";

/// Names a [`FakeIps`] holds by default.
pub const DEFAULT_CAPACITY: usize = 65_000;

/// A thread-safe, bounded, bidirectional map name ↔ fake IPv4 address.
#[derive(Debug)]
pub struct FakeIps {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<Arc<str>, Slot>,
    by_index: HashMap<u32, Arc<str>>,
    /// Last use → address index, oldest first.
    lru: BTreeMap<u64, u32>,
    /// The next index never handed out.
    next: u32,
    clock: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    index: u32,
    used: u64,
}

impl Default for FakeIps {
    fn default() -> FakeIps {
        FakeIps::new(DEFAULT_CAPACITY)
    }
}

impl FakeIps {
    /// A map holding at most `capacity` names (at least 1, at most the
    /// 130,047 addresses the range has).
    pub fn new(capacity: usize) -> FakeIps {
        let max = (END_INDEX - FIRST_INDEX) as usize;
        let inner = Inner { next: FIRST_INDEX, ..Inner::default() };
        FakeIps { capacity: capacity.clamp(1, max), inner: Mutex::new(inner) }
    }

    /// True if `ip` is in the fake range (`198.18.0.0/15`), gateway included.
    pub fn in_range(ip: Ipv4Addr) -> bool {
        u32::from(ip).wrapping_sub(BASE) < SPAN
    }

    /// The address for `name` (any case, trailing dot ignored): the one it
    /// already has, or a new one, recycling the least recently used name's
    /// when full.
    pub fn assign(&self, name: &str) -> Ipv4Addr {
        let name = normalize(name);
        let mut inner = self.lock();
        if let Some(slot) = inner.by_name.get(name.as_str()).copied() {
            inner.touch(&name, slot);
            return address(slot.index);
        }
        let index = match inner.by_name.len() < self.capacity {
            true => {
                inner.next += 1;
                inner.next - 1
            }
            false => inner.evict_oldest(),
        };
        let name: Arc<str> = name.into();
        let used = inner.tick();
        inner.by_name.insert(Arc::clone(&name), Slot { index, used });
        inner.by_index.insert(index, name);
        inner.lru.insert(used, index);
        address(index)
    }

    /// The name that has `ip`, if any (lowercase, no trailing dot). Counts
    /// as a use, so names in active use are not recycled.
    pub fn lookup_ip(&self, ip: Ipv4Addr) -> Option<String> {
        let index = index(ip)?;
        let mut inner = self.lock();
        let name = Arc::clone(inner.by_index.get(&index)?);
        let slot = inner.by_name.get(&name).copied()?;
        inner.touch(&name, slot);
        Some(name.to_string())
    }

    /// How many names have an address now.
    pub fn len(&self) -> usize {
        self.lock().by_name.len()
    }

    /// True if no name has an address.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent before anything can panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn touch(&mut self, name: &str, slot: Slot) {
        let used = self.tick();
        self.lru.remove(&slot.used);
        self.lru.insert(used, slot.index);
        if let Some(s) = self.by_name.get_mut(name) {
            s.used = used;
        }
    }

    /// Frees the least recently used name's address and returns its index.
    fn evict_oldest(&mut self) -> u32 {
        let Some((_, index)) = self.lru.pop_first() else {
            // Only reachable with capacity 0, which `new` rules out.
            self.next += 1;
            return self.next - 1;
        };
        if let Some(name) = self.by_index.remove(&index) {
            self.by_name.remove(&name);
        }
        index
    }
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The address with index `i` (`FIRST_INDEX..END_INDEX`): /24 block
/// `i / 254`, host `i % 254 + 1`, so no address ends in `.0` or `.255`.
fn address(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(BASE + (i / PER_BLOCK) * 256 + i % PER_BLOCK + 1)
}

/// The index of a name's address; `None` outside the range, for `.0`,
/// `.255` and the gateway.
fn index(ip: Ipv4Addr) -> Option<u32> {
    let offset = u32::from(ip).wrapping_sub(BASE);
    let host = offset % 256;
    let i = (offset / 256) * PER_BLOCK + host.checked_sub(1)?;
    (offset < SPAN && host != 255 && i >= FIRST_INDEX).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_skip_network_broadcast_and_gateway() {
        assert_eq!(address(FIRST_INDEX), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(address(253), Ipv4Addr::new(198, 18, 0, 254));
        assert_eq!(address(254), Ipv4Addr::new(198, 18, 1, 1));
        assert_eq!(address(END_INDEX - 1), Ipv4Addr::new(198, 19, 255, 254));
        for i in FIRST_INDEX..END_INDEX {
            let ip = address(i);
            assert!(FakeIps::in_range(ip));
            assert!(!matches!(ip.octets()[3], 0 | 255), "{ip}");
            assert_eq!(index(ip), Some(i), "{ip}");
        }
        for ip in
            [[198, 18, 0, 0], [198, 18, 0, 1], [198, 18, 3, 255], [198, 20, 0, 2], [198, 17, 255, 254], [8, 8, 8, 8]]
        {
            assert_eq!(index(Ipv4Addr::from(ip)), None, "{ip:?}");
        }
        assert!(FakeIps::in_range(GATEWAY));
        assert!(!FakeIps::in_range(Ipv4Addr::new(198, 20, 0, 0)));
    }

    #[test]
    fn names_keep_their_address_and_map_back() {
        let fake = FakeIps::default();
        let a = fake.assign("Api.Example.com.");
        let b = fake.assign("b.example.com");
        assert_ne!(a, b);
        assert_eq!(fake.assign("api.example.com"), a);
        assert_eq!(fake.lookup_ip(a).as_deref(), Some("api.example.com"));
        assert_eq!(fake.lookup_ip(b).as_deref(), Some("b.example.com"));
        assert_eq!(fake.lookup_ip(GATEWAY), None);
        assert_eq!(fake.lookup_ip(Ipv4Addr::new(198, 18, 0, 200)), None);
        assert_eq!(fake.len(), 2);
    }

    #[test]
    fn full_map_recycles_the_least_recently_used_name() {
        let fake = FakeIps::new(3);
        let a = fake.assign("a");
        let b = fake.assign("b");
        let c = fake.assign("c");
        assert_eq!(fake.lookup_ip(a).as_deref(), Some("a")); // a is now newer than b
        let d = fake.assign("d");
        assert_eq!(d, b, "b was the least recently used");
        assert_eq!(fake.lookup_ip(b).as_deref(), Some("d"));
        assert_eq!(fake.assign("c"), c);
        assert_eq!(fake.len(), 3);
        let e = fake.assign("e");
        assert_eq!(e, a);
        assert_eq!([fake.lookup_ip(c), fake.lookup_ip(e)], [Some("c".into()), Some("e".into())]);
    }

    #[test]
    fn bounded_under_a_flood_of_names() {
        let fake = FakeIps::new(1000);
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let ip = fake.assign(&format!("n{i}.example.com"));
            seen.insert(ip);
            assert_eq!(fake.lookup_ip(ip), Some(format!("n{i}.example.com")));
        }
        assert_eq!(fake.len(), 1000);
        assert_eq!(seen.len(), 1000, "only the first 1000 addresses are ever used");
        let inner = fake.lock();
        assert_eq!((inner.by_index.len(), inner.lru.len()), (1000, 1000));
    }

    #[test]
    fn capacity_is_clamped_to_the_range() {
        let fake = FakeIps::new(usize::MAX);
        assert_eq!(fake.capacity, 130_047);
        assert_eq!(FakeIps::new(0).capacity, 1);
    }

    #[test]
    fn shared_between_threads() {
        let fake = Arc::new(FakeIps::new(500));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let fake = Arc::clone(&fake);
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let name = format!("n{}.example.com", (i * 7 + t) % 600);
                        let ip = fake.assign(&name);
                        // Another thread may recycle it in between; never to a wrong range.
                        assert!(index(ip).is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let inner = fake.lock();
        assert_eq!(inner.by_name.len(), 500);
        assert!(inner.by_name.iter().all(|(n, s)| inner.by_index.get(&s.index) == Some(n)));
    }
}
