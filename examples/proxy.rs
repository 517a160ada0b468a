//! Moat's egress proxy as a command of its own, for tools that want the
//! policy without the VMs: an HTTP/CONNECT proxy that allows only what the
//! rules say, with a line per connection on stdout.
//!
//! ```sh
//! cargo run -p moat-examples --example proxy -- --listen 127.0.0.1:3128 \
//!     --preset deny-all 'allow network **.crates.io' 'allow network static.rust-lang.org'
//! curl -x http://127.0.0.1:3128 https://static.rust-lang.org/   # allowed
//! curl -x http://127.0.0.1:3128 https://example.org/            # 403, with the rule that denied it
//! ```
//!
//! `--hosts FILE` pins names to addresses (`/etc/hosts` format), e.g. a test
//! server on this machine; a rule must still name such a host.

use std::sync::Arc;

use moat_examples::standalone_proxy::{self, Options, PrintSink};
use moat_netproxy::Preset;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut listen = "127.0.0.1:3128".to_string();
    let mut options = Options { preset: Preset::DenyAll, rules: Vec::new(), hosts: Default::default() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value("--listen")?,
            "--preset" => options.preset = value("--preset")?.parse()?,
            "--hosts" => options.hosts = std::fs::read_to_string(value("--hosts")?)?,
            "-h" | "--help" => {
                println!(
                    "usage: proxy [--listen ADDR] [--preset allow-all|balanced|deny-all] [--hosts FILE] [RULE...]"
                );
                return Ok(());
            }
            rule => options.rules.push(rule.parse().map_err(|e| format!("{rule:?}: {e}"))?),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let proxy = standalone_proxy::proxy(standalone_proxy::policy(&options), &options, Arc::new(PrintSink))?;
    eprintln!("proxy: listening on {}", listener.local_addr()?);
    standalone_proxy::serve(listener, proxy, "proxy-example").await?;
    Ok(())
}
