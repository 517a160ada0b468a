//! The lookup structure for one scope's rules (global, or one sandbox).
//!
//! Host names: three hash maps keyed by name — exact names, `*.` suffixes
//! (looked up with the first label stripped) and `**.` suffixes (looked up
//! with each proper suffix, longest first) — plus the `**` list. Addresses:
//! per family, one hash map per prefix length in use, longest first. A
//! decision is therefore a handful of hash lookups whatever the rule count.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use super::address::{mask, AddressClass};
use super::decision::RuleEntry;
use super::host::HostPattern;
use super::rule::{Action, PortSet, Resource};
use super::IpNet;

/// FxHash (rustc's hasher): keys are rule text chosen by the user, lookups
/// never insert, so flooding is not a concern and speed is.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let word = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// One rule as stored in the index.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    action: Action,
    ports: PortSet,
    pub(crate) rule: Arc<RuleEntry>,
}

/// The first matching allow and deny found, in specificity order.
#[derive(Debug, Default)]
pub(crate) struct Hits<'a> {
    pub(crate) deny: Option<&'a Entry>,
    pub(crate) allow: Option<&'a Entry>,
    /// Only the user's own rules count (not a preset's), and of address
    /// rules only those that name this class of address on purpose.
    naming: Option<AddressClass>,
}

impl<'a> Hits<'a> {
    /// Hits that take only the user's own rules naming a `class` address
    /// (or its host by name): what opens a special address.
    pub(crate) fn naming(class: AddressClass) -> Self {
        Hits { naming: Some(class), ..Hits::default() }
    }

    fn offer(&mut self, entries: &'a [Entry], port: u16) {
        let naming = self.naming;
        let counts = move |e: &&Entry| {
            let Some(class) = naming else { return true };
            e.rule.origin == super::decision::Origin::User
                && match &e.rule.rule.resource {
                    Resource::Net { net, .. } => net.names(class),
                    Resource::Host { .. } => true,
                    Resource::Request(_) => false,
                }
        };
        for e in entries.iter().filter(|e| e.ports.contains(port)).filter(counts) {
            match e.action {
                Action::Deny => self.deny = self.deny.or(Some(e)),
                Action::Allow => self.allow = self.allow.or(Some(e)),
            }
        }
    }
}

#[derive(Debug, Default)]
struct NetTable {
    /// `(prefix length, network address → rules)`, longest prefix first.
    by_prefix: Vec<(u8, FxMap<IpAddr, Vec<Entry>>)>,
}

impl NetTable {
    fn insert(&mut self, net: IpNet, entry: Entry) {
        let pos = match self.by_prefix.binary_search_by(|(p, _)| net.prefix().cmp(p)) {
            Ok(pos) => pos,
            Err(pos) => {
                self.by_prefix.insert(pos, (net.prefix(), FxMap::default()));
                pos
            }
        };
        self.by_prefix[pos].1.entry(net.addr()).or_default().push(entry);
    }

    fn hits<'a>(&'a self, ip: IpAddr, port: u16, hits: &mut Hits<'a>) {
        for (prefix, map) in &self.by_prefix {
            if let Some(entries) = map.get(&mask(ip, *prefix)) {
                hits.offer(entries, port);
            }
        }
    }
}

/// The rules of one scope, indexed.
#[derive(Debug, Default)]
pub(crate) struct Table {
    exact: FxMap<Box<str>, Vec<Entry>>,
    one_label: FxMap<Box<str>, Vec<Entry>>,
    any_depth: FxMap<Box<str>, Vec<Entry>>,
    everything: Vec<Entry>,
    v4: NetTable,
    v6: NetTable,
}

impl Table {
    pub(crate) fn insert(&mut self, rule: Arc<RuleEntry>) {
        let entry = Entry { action: rule.rule.action, ports: rule.rule.port_set(), rule: Arc::clone(&rule) };
        match &rule.rule.resource {
            // Request rules are kept apart (see `CompiledPolicy::decide_request`).
            Resource::Request(_) => {}
            Resource::Net { net, .. } => self.insert_net(*net, entry),
            Resource::Host { pattern, .. } => {
                if pattern.is_localhost() {
                    self.insert_loopback(&entry);
                }
                match pattern {
                    HostPattern::Exact(n) => self.exact.entry(n.clone()).or_default().push(entry),
                    HostPattern::OneLabel(n) => self.one_label.entry(n.clone()).or_default().push(entry),
                    HostPattern::AnyDepth(n) => self.any_depth.entry(n.clone()).or_default().push(entry),
                    HostPattern::Everything => self.everything.push(entry),
                }
            }
        }
    }

    /// `localhost` also names the loopback addresses `127.0.0.0/8` and `::1`.
    fn insert_loopback(&mut self, entry: &Entry) {
        for net in loopback_nets() {
            self.insert_net(net, entry.clone());
        }
    }

    fn insert_net(&mut self, net: IpNet, entry: Entry) {
        match net.addr() {
            IpAddr::V4(_) => self.v4.insert(net, entry),
            IpAddr::V6(_) => self.v6.insert(net, entry),
        }
    }

    /// Offers rules matching a (valid, lowercase) host name, most specific first.
    pub(crate) fn name_hits<'a>(&'a self, name: &str, port: u16, hits: &mut Hits<'a>) {
        if let Some(e) = self.exact.get(name) {
            hits.offer(e, port);
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(e) = self.one_label.get(parent) {
                hits.offer(e, port);
            }
        }
        if !self.any_depth.is_empty() {
            let mut rest = name;
            while let Some((_, parent)) = rest.split_once('.') {
                if let Some(e) = self.any_depth.get(parent) {
                    hits.offer(e, port);
                }
                rest = parent;
            }
        }
        hits.offer(&self.everything, port);
    }

    /// Offers rules matching an address (already canonical), longest prefix
    /// first; `**` rules last.
    pub(crate) fn ip_hits<'a>(&'a self, ip: IpAddr, port: u16, hits: &mut Hits<'a>) {
        self.net_hits(ip, port, hits);
        hits.offer(&self.everything, port);
    }

    /// Offers only IP/CIDR rules (and `localhost`'s loopback addresses).
    pub(crate) fn net_hits<'a>(&'a self, ip: IpAddr, port: u16, hits: &mut Hits<'a>) {
        match ip {
            IpAddr::V4(_) => self.v4.hits(ip, port, hits),
            IpAddr::V6(_) => self.v6.hits(ip, port, hits),
        }
    }

    /// Offers only exact-name rules.
    pub(crate) fn exact_hits<'a>(&'a self, name: &str, port: u16, hits: &mut Hits<'a>) {
        if let Some(e) = self.exact.get(name) {
            hits.offer(e, port);
        }
    }
}

/// The addresses the name `localhost` stands for.
pub(crate) fn loopback_nets() -> [IpNet; 2] {
    let v4 = IpNet::new(IpAddr::from([127, 0, 0, 0]), 8);
    [
        v4.unwrap_or_else(|| IpNet::host(IpAddr::from([127, 0, 0, 1]))),
        IpNet::host(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
    ]
}
