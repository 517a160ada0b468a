//! Egress proxy throughput and latency (issue #4), side by side on loopback
//! against one local HTTPS upstream with one client and one workload:
//!
//! * direct: client → upstream (the baseline);
//! * moat tunnel: CONNECT through our proxy, TLS passed through untouched;
//! * moat intercept: CONNECT, TLS terminated by our proxy, which adds a
//!   header to every request (the credential-injection path), with no log
//!   and again with the SQLite connection log;
//! * mitmproxy: `mitmdump` intercepting and adding the same header;
//! * squid: the classic forward proxy, tunnelling.
//!
//! The workload: `GET /` answered with a 100-byte body, HTTP/1.1 keep-alive
//! inside TLS; N persistent connections send requests back to back. Policy
//! decisions per second are measured by `crates/netproxy/benches/policy.rs`.
//!
//! Two CPU layouts, each a full run (`--layout shared|pinned|both`):
//!
//! * shared: every thread may run on every core, so the client and the
//!   upstream compete with the proxy for the same cores — a lower bound;
//! * pinned: the client and the upstream on core 0, the proxy under test
//!   (ours, mitmdump or squid) on core 1. This is how a sandbox meets the
//!   proxy: the client runs on the VM's vCPUs and the upstream is elsewhere;
//!   `direct` then has the same single core for client and upstream.
//!
//! Usage: `cargo xtask bench egress`, or run this binary with
//! `[--secs 5] [--warmup 1] [--conns 8,1] [--setups 100] [--only key,...]
//! [--layout both]` (keys: direct, tunnel, intercept, intercept-log,
//! mitmproxy, squid). A tool that is missing is reported as skipped; the rest
//! still run.

mod client;
mod ours;
mod report;
mod tools;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;

use client::{Client, Route};
use ours::{Log, Variant};
use report::Outcome;

struct Options {
    layouts: Vec<Layout>,
    secs: u64,
    warmup: u64,
    conns: Vec<usize>,
    setups: usize,
    only: Option<Vec<String>>,
}

fn options() -> Options {
    let mut o = Options {
        layouts: vec![Layout::Shared, Layout::Pinned],
        secs: 5,
        warmup: 1,
        conns: vec![8, 1],
        setups: 100,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || value.parse().unwrap_or_else(|_| panic!("{flag}: not a number: {value}"));
        match flag.as_str() {
            "--secs" => o.secs = number(),
            "--warmup" => o.warmup = number(),
            "--setups" => o.setups = number() as usize,
            "--conns" => o.conns = value.split(',').map(|c| c.trim().parse().expect("--conns: numbers")).collect(),
            "--only" => o.only = Some(value.split(',').map(str::to_string).collect()),
            "--layout" => {
                o.layouts = match value.as_str() {
                    "shared" => vec![Layout::Shared],
                    "pinned" => vec![Layout::Pinned],
                    "both" => vec![Layout::Shared, Layout::Pinned],
                    _ => panic!("--layout: shared, pinned or both"),
                }
            }
            _ => panic!("unknown option {flag}; see the doc comment of benches/egress/main.rs"),
        }
    }
    o
}

/// Where the threads of one run may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Shared,
    Pinned,
}

/// The core of the client and the upstream, and the proxy's, when pinned.
const LOAD_CPU: usize = 0;
const PROXY_CPU: usize = 1;

/// A 2-thread runtime whose threads run on `cpu` only, if given.
fn runtime(name: &str, cpu: Option<usize>) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .on_thread_start(move || {
            if let Some(cpu) = cpu {
                pin_current_thread(cpu);
            }
        })
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Restricts the calling thread (and what it forks later) to `cpu`.
fn pin_current_thread(cpu: usize) {
    // SAFETY: `set` is a plain bit set on the stack, initialised by
    // CPU_ZERO before use; sched_setaffinity only reads it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    assert!(ok, "cannot pin a thread to CPU {cpu}: {}", std::io::Error::last_os_error());
}

/// A scenario before it runs: how its client reaches the upstream, or why it cannot.
struct Scenario {
    key: &'static str,
    label: &'static str,
    client: Result<Client, String>,
}

fn main() {
    let opts = options();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    for &layout in &opts.layouts {
        if layout == Layout::Pinned && cores < 2 {
            println!("\n(pinned layout skipped: it needs 2 cores, this machine has {cores})");
            continue;
        }
        run(&opts, layout, cores);
    }
    println!("\npolicy decisions/s with 1,000 rules: `cargo bench -p moat-netproxy --bench policy` (run by `cargo xtask bench egress`)");
}

/// One full run of every scenario in `layout`.
fn run(opts: &Options, layout: Layout, cores: usize) {
    let wanted = |key: &str| opts.only.as_ref().is_none_or(|keys| keys.iter().any(|k| k == key));
    let (load_cpu, proxy_cpu) = match layout {
        Layout::Shared => (None, None),
        Layout::Pinned => (Some(LOAD_CPU), Some(PROXY_CPU)),
    };
    // `block_on` runs on this thread: it belongs with the load. (Shared runs
    // first, so no thread is pinned while it runs.)
    if let Some(cpu) = load_cpu {
        pin_current_thread(cpu);
    }
    let (upstream_rt, proxy_rt, client_rt) =
        (runtime("upstream", load_cpu), runtime("proxy", proxy_cpu), runtime("client", load_cpu));

    let ca = upstream::TestCa::new();
    let up = upstream::start(&upstream_rt, &ca);
    let port = up.addr.port();
    let scratch = tempfile::Builder::new().prefix("moat-bench-egress-").tempdir().expect("temp dir");

    let through = |key, label, started: Result<(std::net::SocketAddr, String), String>| Scenario {
        key,
        label,
        client: started.and_then(|(addr, ca_pem)| Client::new(Route::Proxy(addr), port, &ca_pem)),
    };
    let ours = |variant, log| {
        ours::start(&proxy_rt, variant, log, port, &ca.pem).map(|(p, db)| ((p.addr, p.ca_pem.clone()), db))
    };
    let mut logs = Vec::new();
    let mut keep_tools = Vec::new();
    let mut scenarios = vec![Scenario {
        key: "direct",
        label: "direct (no proxy)",
        client: Client::new(Route::Direct(up.addr), port, &ca.pem),
    }];
    if wanted("tunnel") {
        let started = ours(Variant::Tunnel, Log::None).map(|(s, _)| (s.0, ca.pem.clone()));
        scenarios.push(through("tunnel", "moat tunnel", started));
    }
    if wanted("intercept") {
        scenarios.push(through(
            "intercept",
            "moat intercept (+header)",
            ours(Variant::Intercept, Log::None).map(|(s, _)| s),
        ));
    }
    if wanted("intercept-log") {
        let db = scratch.path().join("log.db");
        let started = ours(Variant::Intercept, Log::Sqlite(&db)).map(|(s, db)| {
            logs.extend(db);
            s
        });
        scenarios.push(through("intercept-log", "moat intercept + SQLite log", started));
    }
    if wanted("mitmproxy") {
        let started = tools::mitmproxy(&ca.pem, proxy_cpu).map(|t| {
            let s = (t.addr, t.ca_pem.clone().unwrap_or_default());
            keep_tools.push(t);
            s
        });
        scenarios.push(through("mitmproxy", "mitmproxy (mitmdump, +header)", started));
    }
    if wanted("squid") {
        let started = tools::squid(port, proxy_cpu).map(|t| {
            let s = (t.addr, ca.pem.clone());
            keep_tools.push(t);
            s
        });
        scenarios.push(through("squid", "squid (tunnel)", started));
    }

    println!(
        "== egress proxy benchmark: HTTPS GET / -> {}-byte body, HTTP/1.1 keep-alive, loopback ==",
        upstream::BODY_LEN
    );
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg = loadavg.split(' ').take(3).collect::<Vec<_>>().join(" ");
    match layout {
        Layout::Shared => println!(
            "layout SHARED: {cores} cores, shared by the client, the upstream and the proxy under test \
             (each on its own 2-thread tokio runtime in this process; mitmdump and squid are separate processes), \
             so figures are lower bounds for a proxy with cores of its own; load average at start: {loadavg}"
        ),
        Layout::Pinned => println!(
            "layout PINNED: client and upstream on core {LOAD_CPU} (for direct too), the proxy under test \
             (ours, mitmdump, squid and its workers) on core {PROXY_CPU}; load average at start: {loadavg}"
        ),
    }
    println!(
        "each scenario: {}s warm-up + {}s measured per concurrency level ({:?}); \
         TLS resumption off, so every new connection is a full handshake",
        opts.warmup, opts.secs, opts.conns
    );

    let mut outcomes = Vec::new();
    for s in scenarios {
        let client = match s.client {
            Ok(c) => Arc::new(c),
            Err(why) => {
                eprintln!("{}: skipped: {why}", s.label);
                outcomes.push(Outcome {
                    key: s.key,
                    label: s.label,
                    skipped: Some(why),
                    loads: Vec::new(),
                    setup: Ok(Vec::new()),
                });
                continue;
            }
        };
        eprintln!("{}: new connections…", s.label);
        let setup = client_rt.block_on(client::setup(&client, opts.setups));
        let mut loads = Vec::new();
        for &conns in &opts.conns {
            eprintln!("{}: {conns} connection(s)…", s.label);
            let run = client::load(
                Arc::clone(&client),
                conns,
                Duration::from_secs(opts.warmup),
                Duration::from_secs(opts.secs),
            );
            let before = up.accepted();
            let load = client_rt.block_on(run).map(|mut l| {
                l.upstream_conns = up.accepted() - before;
                l
            });
            loads.push((conns, load));
        }
        outcomes.push(Outcome { key: s.key, label: s.label, skipped: None, loads, setup });
    }
    report::print(&outcomes, &opts.conns, opts.setups);
    for db in &logs {
        db.flush();
        println!(
            "SQLite log: {} record(s) dropped (over the per-sandbox rate, or queue full) during the run",
            db.dropped()
        );
    }
    drop(keep_tools);
}
