//! Decisions per second with 1,000 rules: the compiled index against the
//! naive linear matcher, on the same requests in the same run.
//!
//! Run: `cargo bench -p moat-netproxy --bench policy`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use moat_netproxy::policy::reference::LinearPolicy;
use moat_netproxy::policy::reference::SplitMix64;
use moat_netproxy::policy::{CompiledPolicy, Preset, Request, Rule};

const TLDS: [&str; 6] = ["com", "org", "io", "net", "dev", "ai"];
const SANDBOXES: [&str; 4] = ["web", "ci", "agent-1", "agent-2"];

type Rng = SplitMix64;

fn domain(i: usize) -> String {
    format!("vendor{i}.{}", TLDS[i % TLDS.len()])
}

/// 1,000 rules on top of `balanced`: 600 exact hosts, 150 `*.`, 100 `**.`,
/// 120 IPv4 CIDRs, 30 IPv6 CIDRs; a fifth are denies, a quarter per-sandbox.
fn rules(rng: &mut Rng) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..1000 {
        let resource = match i {
            0..600 => format!("api.{}", domain(i)),
            600..750 => format!("*.cdn.{}", domain(i)),
            750..850 => format!("**.{}", domain(i)),
            850..970 => format!("{}.{}.0.0/16", 11 + i % 80, i % 250),
            _ => format!("2a0{}:{:x}::/32", i % 10, i),
        };
        let action = if rng.below(5) == 0 { "deny" } else { "allow" };
        let scope = match rng.below(4) {
            0 => format!(" --sandbox {}", SANDBOXES[rng.below(SANDBOXES.len())]),
            _ => String::new(),
        };
        out.push(format!("{action} network {resource}{scope}"));
    }
    out
}

/// A realistic mix: preset hosts, hosts under user rules (exact and
/// wildcard), unknown hosts, and IP literals.
fn requests(rng: &mut Rng) -> Vec<(String, String, u16)> {
    let popular = ["registry.npmjs.org", "github.com", "api.anthropic.com", "pypi.org", "static.crates.io"];
    (0..10_000)
        .map(|_| {
            let i = rng.below(1000);
            let host = match rng.below(10) {
                0..3 => popular[rng.below(popular.len())].to_string(),
                3..5 => format!("api.{}", domain(i % 600)),
                5 => format!("img.cdn.{}", domain(600 + i % 150)),
                6 => format!("a.b.{}", domain(750 + i % 100)),
                7 => format!("unknown{i}.example.{}", TLDS[i % TLDS.len()]),
                8 => format!("{}.{}.{}.{}", 11 + i % 80, i % 250, i % 7, 1 + i % 200),
                _ => format!("[2a0{}:{:x}::1]", i % 10, 970 + i % 30),
            };
            let port = [443, 443, 443, 80, 22][rng.below(5)];
            (SANDBOXES[rng.below(SANDBOXES.len())].to_string(), host, port)
        })
        .collect()
}

/// Runs `decide` over all requests until `budget` passes; decisions per second.
fn measure(reqs: &[(String, String, u16)], budget: Duration, decide: impl Fn(&Request<'_>) -> bool) -> (f64, usize) {
    let start = Instant::now();
    let (mut n, mut allowed) = (0usize, 0usize);
    while start.elapsed() < budget {
        for (sandbox, host, port) in reqs {
            allowed += usize::from(decide(black_box(&Request::new(sandbox, host, *port))));
        }
        n += reqs.len();
    }
    (n as f64 / start.elapsed().as_secs_f64(), allowed * reqs.len() / n)
}

fn main() {
    let mut rng = SplitMix64(42);
    let rules: Vec<Rule> = rules(&mut rng).iter().map(|r| r.parse().expect("bench rule parses")).collect();
    let reqs = requests(&mut rng);
    let started = Instant::now();
    let fast = CompiledPolicy::compile(Preset::Balanced, &rules);
    let compile = started.elapsed();
    let slow = LinearPolicy::new(Preset::Balanced, &rules);
    let total = fast.rules().len();

    let budget = Duration::from_secs(2);
    let (fast_rate, fast_allowed) = measure(&reqs, budget, |r| fast.decide(r).is_allowed());
    let (slow_rate, slow_allowed) = measure(&reqs, budget, |r| slow.decide(r).is_allowed());
    assert_eq!(fast_allowed, slow_allowed, "the two matchers disagree");

    println!("policy: {} user rules + balanced preset = {total} rules, compiled in {compile:?}", rules.len());
    println!("requests: {} distinct, {fast_allowed} allowed", reqs.len());
    println!("compiled index: {:>12.0} decisions/s ({:.0} ns each)", fast_rate, 1e9 / fast_rate);
    println!("linear scan:    {:>12.0} decisions/s ({:.0} ns each)", slow_rate, 1e9 / slow_rate);
    println!("ratio:          {:>12.1}x", fast_rate / slow_rate);
}
