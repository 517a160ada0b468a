//! What kind of address an IP is, and IP networks (`10.0.0.0/8`) as written in rules.
//!
//! [`classify`] is the post-resolution guard: the proxy resolves names itself
//! and refuses any address that is not [`AddressClass::Public`] unless a rule
//! names it explicitly. IPv6 forms that embed an IPv4 address (mapped,
//! compatible, NAT64, 6to4, Teredo) are classified by the address they embed, so
//! `::ffff:127.0.0.1` and `64:ff9b::a9fe:a9fe` are as special as `127.0.0.1`
//! and `169.254.169.254`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of an IP address, as far as egress policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// Globally routable; the only class reachable without an explicit rule.
    Public,
    /// `0.0.0.0/8`, `::` — "this host"; connecting to it reaches the host.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// RFC 6598 carrier-grade NAT: `100.64.0.0/10`.
    SharedAddressSpace,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// Cloud instance metadata: `169.254.169.254`, `fd00:ec2::254`.
    CloudMetadata,
    /// `fc00::/7`.
    UniqueLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// Everything else that is not globally reachable: `240/4`, `192.0.0/24`,
    /// `198.18/15` (benchmarking), `192.88.99/24`, `100::/64`, `fec0::/10`,
    /// `2001:2::/48`, IPv4-compatible `::a.b.c.d`.
    Reserved,
}

impl AddressClass {
    /// True for every class except [`AddressClass::Public`].
    pub fn is_special(self) -> bool {
        self != AddressClass::Public
    }

    /// A short human description, e.g. for the 403 page.
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Unspecified => "an unspecified (this-host) address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private (RFC 1918) address",
            AddressClass::SharedAddressSpace => "a carrier-grade NAT (100.64.0.0/10) address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::CloudMetadata => "a cloud metadata address",
            AddressClass::UniqueLocal => "a unique-local (fc00::/7) address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Documentation => "a documentation address",
            AddressClass::Reserved => "a reserved, non-routable address",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Classifies an address; see [`AddressClass`].
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// The class of `ip` if it is special (not public).
pub(crate) fn special_class(ip: IpAddr) -> Option<AddressClass> {
    Some(classify(ip)).filter(|c| c.is_special())
}

fn in_v4(ip: u32, net: [u8; 4], len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    ip & mask == u32::from_be_bytes(net) & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::*;
    let n = u32::from(ip);
    let table: &[([u8; 4], u32, AddressClass)] = &[
        ([169, 254, 169, 254], 32, CloudMetadata),
        ([255, 255, 255, 255], 32, Broadcast),
        ([0, 0, 0, 0], 8, Unspecified),
        ([127, 0, 0, 0], 8, Loopback),
        ([10, 0, 0, 0], 8, Private),
        ([172, 16, 0, 0], 12, Private),
        ([192, 168, 0, 0], 16, Private),
        ([100, 64, 0, 0], 10, SharedAddressSpace),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([192, 0, 2, 0], 24, Documentation),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
        ([192, 0, 0, 0], 24, Reserved),
        ([198, 18, 0, 0], 15, Reserved),
        ([192, 88, 99, 0], 24, Reserved),
    ];
    table.iter().find(|(net, len, _)| in_v4(n, *net, *len)).map_or(Public, |(_, _, class)| *class)
}

fn v4_at(b: &[u8; 16], idx: [usize; 4]) -> Ipv4Addr {
    Ipv4Addr::new(b[idx[0]], b[idx[1]], b[idx[2]], b[idx[3]])
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::*;
    let b = ip.octets();
    let s = ip.segments();
    let last32 = [12, 13, 14, 15];
    if ip.is_unspecified() {
        return Unspecified;
    }
    if ip.is_loopback() {
        return Loopback;
    }
    // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (translated).
    if s[..5] == [0; 5] && s[5] == 0xffff {
        return classify_v4(v4_at(&b, last32));
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return classify_v4(v4_at(&b, last32));
    }
    // ::a.b.c.d (IPv4-compatible, deprecated): never routable on its own.
    if s[..6] == [0; 6] {
        return match classify_v4(v4_at(&b, last32)) {
            Public => Reserved,
            class => class,
        };
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(v4_at(&b, last32));
    }
    // NAT64 local-use 64:ff9b:1::/48: the operator picks the prefix length.
    if s[..3] == [0x64, 0xff9b, 1] {
        return classify_local_nat64(&b);
    }
    // 6to4 2002:a.b.c.d::/48.
    if s[0] == 0x2002 {
        return classify_v4(v4_at(&b, [2, 3, 4, 5]));
    }
    // Teredo 2001::/32: the client address is stored inverted in the last 32 bits.
    if s[0] == 0x2001 && s[1] == 0 {
        let client = !u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
        return classify_v4(Ipv4Addr::from(client));
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return CloudMetadata;
    }
    match s[0] {
        x if x & 0xfe00 == 0xfc00 => UniqueLocal,
        x if x & 0xffc0 == 0xfe80 => LinkLocal,
        x if x & 0xffc0 == 0xfec0 => Reserved,
        x if x & 0xff00 == 0xff00 => Multicast,
        0x2001 if s[1] == 0xdb8 => Documentation,
        0x2001 if s[1] == 2 && s[2] == 0 => Reserved,
        x if x & 0xfff0 == 0x3ff0 => Documentation,
        0x0100 if s[1..4] == [0, 0, 0] => Reserved,
        _ => Public,
    }
}

/// Classifies an address under the NAT64 local-use prefix `64:ff9b:1::/48`.
///
/// RFC 6052 §2.2 lets the operator use a /48, /56, /64 or /96 prefix, each
/// placing the IPv4 address differently (skipping byte 8) and requiring the
/// bytes after it to be zero. Every layout consistent with the address is
/// checked; if any gives a special address, that class wins. A `0.0.0.0/8`
/// reading is ignored when another layout fits, since zero padding produces it.
fn classify_local_nat64(b: &[u8; 16]) -> AddressClass {
    const LAYOUTS: [([usize; 4], usize); 4] =
        [([6, 7, 9, 10], 11), ([7, 9, 10, 11], 12), ([9, 10, 11, 12], 13), ([12, 13, 14, 15], 16)];
    let mut result = AddressClass::Unspecified;
    for (idx, suffix) in LAYOUTS {
        let fits = idx[3] == 15 || (b[8] == 0 && b[suffix..].iter().all(|&x| x == 0));
        match classify_v4(v4_at(b, idx)) {
            _ if !fits => {}
            AddressClass::Unspecified => {}
            AddressClass::Public => result = AddressClass::Public,
            special => return special,
        }
    }
    result
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d`: the kernel connects to the IPv4
/// address, so rules written for it must match. Other addresses are unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An IP network as written in a rule: `10.0.0.0/8`, `2001:db8::/32`, or a
/// single address (`10.0.0.5` is `10.0.0.5/32`). Host bits are always zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// A network; `None` if `prefix` is too long or `addr` has host bits set.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        if prefix > max_prefix(addr) {
            return None;
        }
        (mask(addr, prefix) == addr).then_some(IpNet { addr, prefix })
    }

    /// A single address (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> IpNet {
        let addr = canonical(addr);
        IpNet { addr, prefix: max_prefix(addr) }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True if this is a single address.
    pub fn is_host(&self) -> bool {
        self.prefix == max_prefix(self.addr)
    }

    /// True if `ip` (after mapping `::ffff:a.b.c.d` to IPv4) is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }

    /// `ip` with the bits past this network's prefix cleared.
    pub(crate) fn masked(&self, ip: IpAddr) -> IpAddr {
        mask(ip, self.prefix)
    }

    /// The last address inside.
    pub fn last(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(v4) => {
                let host = u32::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) | host))
            }
            IpAddr::V6(v6) => {
                let host = u128::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) | host))
            }
        }
    }

    /// True if the network names addresses of `class` on purpose: a single
    /// address, or a network that lies inside that kind of space from its
    /// first address to its last. `0.0.0.0/0`, `::/0` or `169.254.0.0/16`
    /// cover loopback or the metadata service without naming them.
    pub fn names(&self, class: AddressClass) -> bool {
        self.is_host() || (classify(self.addr) == class && classify(self.last()) == class)
    }

    /// True if any address inside is special (loopback, private, metadata, …).
    pub fn covers_special(&self) -> bool {
        if classify(self.addr).is_special() || classify(self.last()).is_special() {
            return true;
        }
        SPECIAL_STARTS.iter().any(|&ip| self.contains(ip))
    }
}

/// The first address of every special range, so a network whose own ends are
/// public (`8.0.0.0/5`, `2000::/3`) is still seen to cover one inside it.
const SPECIAL_STARTS: [IpAddr; 14] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
    IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0)),
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)),
    IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)),
    IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)),
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)),
    IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0)),
    IpAddr::V6(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0)),
    IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)),
];

/// `ip` truncated to `prefix` bits.
pub(crate) fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

impl fmt::Display for IpNet {
    /// `10.0.0.5`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}
