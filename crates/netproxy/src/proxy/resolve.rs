//! Name resolution. The proxy resolves every name itself, checks each
//! address against the policy, and connects only to an address it checked —
//! no library re-resolves behind its back, so a DNS answer that changes
//! between the check and the connection (rebinding) cannot reach the host.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;

/// What [`Resolve::resolve`] returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a host name into addresses.
pub trait Resolve: Send + Sync {
    /// The addresses of `host` (a lowercase name without trailing dot).
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a>;
}

/// The host's resolver (`getaddrinfo` on a blocking thread: `/etc/hosts`,
/// then DNS as the host is configured); [`HOST_ALIAS`](crate::policy::HOST_ALIAS)
/// is the loopback addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            if host == crate::policy::HOST_ALIAS {
                // The host machine as the guest names it; the policy decides it as `localhost`.
                return Ok(vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)]);
            }
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            let mut ips: Vec<IpAddr> = Vec::new();
            for addr in addrs {
                if !ips.contains(&addr.ip()) {
                    ips.push(addr.ip());
                }
            }
            Ok(ips)
        })
    }
}

/// A fixed table of names, for tests and pinned overrides. Unknown names
/// fail with [`io::ErrorKind::NotFound`].
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Maps `name` (any case, optional trailing dot) to `addrs`.
    pub fn with(mut self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) -> StaticResolver {
        self.names.insert(normalize(name), addrs.into_iter().collect());
        self
    }

    /// A table from `/etc/hosts`-format text: `IP NAME…` per line, `#`
    /// starts a comment, lines without a valid IP are skipped, and a name on
    /// several lines gets every address.
    pub fn from_hosts(text: &str) -> StaticResolver {
        let mut table = StaticResolver::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else { continue };
            for name in words {
                table.names.entry(normalize(name)).or_default().push(ip);
            }
        }
        table
    }

    /// Whether the table has no names.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// This table first; names not in it go to the host's resolver
    /// ([`SystemResolver`]) instead of failing.
    pub fn or_system(self) -> OrSystem {
        OrSystem(self)
    }

    fn lookup(&self, host: &str) -> Option<Vec<IpAddr>> {
        self.names.get(host).cloned()
    }
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        let found = self.lookup(host);
        Box::pin(async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name")) })
    }
}

/// A [`StaticResolver`] in front of the [`SystemResolver`]: pinned names
/// (e.g. a `hosts` file of overrides), then the host's own resolution.
#[derive(Debug, Clone, Default)]
pub struct OrSystem(StaticResolver);

impl Resolve for OrSystem {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        match self.0.lookup(host) {
            Some(ips) => Box::pin(async move { Ok(ips) }),
            None => SystemResolver.resolve(host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn hosts_text_parses_like_etc_hosts_and_falls_back_to_the_system() {
        let table = StaticResolver::from_hosts(
            "# test names\n127.0.0.1 api.test  Other.Test.\nnot-an-ip x.test\n::1 api.test\n",
        );
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(table.resolve("api.test").await.unwrap(), vec![loopback, "::1".parse().unwrap()]);
        assert_eq!(table.resolve("other.test").await.unwrap(), vec![loopback]);
        assert!(table.resolve("x.test").await.is_err(), "a line without an IP names nothing");
        assert!(StaticResolver::from_hosts("").is_empty());
        let both = table.or_system();
        assert_eq!(both.resolve("other.test").await.unwrap(), vec![loopback], "pinned first");
        assert!(both.resolve("localhost").await.unwrap().iter().all(IpAddr::is_loopback), "then the system");
    }
}
