//! The printed table and ratios.

use std::time::Duration;

use crate::client::{percentile, Load};

/// One scenario's results.
pub struct Outcome {
    pub key: &'static str,
    pub label: &'static str,
    /// Why it did not run at all, if it didn't.
    pub skipped: Option<String>,
    /// Per concurrency level: the steady-state load, or why it failed.
    pub loads: Vec<(usize, Result<Load, String>)>,
    /// Sequential new connections, sorted, or why they failed.
    pub setup: Result<Vec<Duration>, String>,
}

impl Outcome {
    fn load(&self, conns: usize) -> Option<&Load> {
        self.loads.iter().find(|(c, _)| *c == conns).and_then(|(_, l)| l.as_ref().ok())
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Prints the steady-state table, connection set-up times and the ratios
/// against issue #4's targets.
pub fn print(outcomes: &[Outcome], levels: &[usize], setups: usize) {
    let direct = outcomes.iter().find(|o| o.key == "direct");
    println!("\nsteady state (persistent connections, sequential requests on each; upstr. TCP = connections the");
    println!("upstream accepted during the run, warm-up included; a proxy reusing its upstream side opens `conns`):");
    println!(
        "{:<34} {:>5} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}",
        "scenario", "conns", "req/s", "p50 µs", "p99 µs", "+p50 µs", "+p99 µs", "upstr. TCP"
    );
    for &conns in levels {
        let base = direct.and_then(|d| d.load(conns));
        for o in outcomes {
            if let Some(why) = &o.skipped {
                println!("{:<34} {conns:>5}  skipped: {why}", o.label);
                continue;
            }
            match o.loads.iter().find(|(c, _)| *c == conns).map(|(_, l)| l) {
                Some(Ok(l)) => {
                    let (p50, p99) = (percentile(&l.latencies, 50.0), percentile(&l.latencies, 99.0));
                    let added = |p: f64, mine: Duration| match (base, o.key) {
                        (_, "direct") | (None, _) => "-".to_string(),
                        (Some(b), _) => format!("{:+.0}", us(mine) - us(percentile(&b.latencies, p))),
                    };
                    println!(
                        "{:<34} {conns:>5} {:>9.0} {:>9.0} {:>9.0} {:>10} {:>10} {:>9}",
                        o.label,
                        l.rps,
                        us(p50),
                        us(p99),
                        added(50.0, p50),
                        added(99.0, p99),
                        l.upstream_conns
                    );
                }
                Some(Err(why)) => println!("{:<34} {conns:>5}  failed: {why}", o.label),
                None => {}
            }
        }
    }

    println!("\nnew connection ({setups} one after another: TCP, CONNECT, full TLS handshake, first GET):");
    println!("{:<34} {:>9} {:>9} {:>10}", "scenario", "p50 µs", "p99 µs", "+p50 µs");
    let direct_setup = direct.and_then(|d| d.setup.as_ref().ok()).map(|s| percentile(s, 50.0));
    for o in outcomes.iter().filter(|o| o.skipped.is_none()) {
        match &o.setup {
            Ok(s) => {
                let p50 = percentile(s, 50.0);
                let added = match direct_setup {
                    Some(d) if o.key != "direct" => format!("{:+.0}", us(p50) - us(d)),
                    _ => "-".to_string(),
                };
                println!("{:<34} {:>9.0} {:>9.0} {:>10}", o.label, us(p50), us(percentile(s, 99.0)), added);
            }
            Err(why) => println!("{:<34}  failed: {why}", o.label),
        }
    }

    println!("\nratios of req/s (issue #4 targets):");
    let rps =
        |key: &str, conns: usize| outcomes.iter().find(|o| o.key == key).and_then(|o| o.load(conns)).map(|l| l.rps);
    let ratios = [
        ("moat intercept / direct", "intercept", "direct", "≥ 0.50"),
        ("moat intercept / mitmproxy", "intercept", "mitmproxy", "≥ 100"),
        ("moat intercept + log / direct", "intercept-log", "direct", "≥ 0.50"),
        ("moat intercept + log / mitmproxy", "intercept-log", "mitmproxy", "≥ 100"),
        ("moat tunnel / direct", "tunnel", "direct", ""),
        ("moat tunnel / squid", "tunnel", "squid", ""),
        ("moat intercept + SQLite log / no log", "intercept-log", "intercept", ""),
    ];
    for (label, a, b, target) in ratios {
        let cells: Vec<String> = levels
            .iter()
            .map(|&c| match (rps(a, c), rps(b, c)) {
                (Some(x), Some(y)) if y > 0.0 => format!("{:>7.2} @{c}", x / y),
                _ => format!("{:>7} @{c}", "n/a"),
            })
            .collect();
        let target = if target.is_empty() { String::new() } else { format!("   target {target}") };
        println!("  {label:<38} {}{target}", cells.join("  "));
    }
}
