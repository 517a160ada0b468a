//! The agents' images and start-up, side by side with `shell`.
//!
//! * image builds: each template layer built cold (a fresh cache that already
//!   holds the base and the downloaded npm tarballs, so the figure is the
//!   layer's own work: unpack, setup.sh, mkfs) and found cached, with the
//!   CPU time of the build tools per layer; `MOAT_BENCH_COLD_BASE=1` also
//!   times a cold base (debootstrap; minutes, network-bound);
//! * start-up: `moat run AGENT DIR -- --version` on a new sandbox (create,
//!   boot, the agent's CLI start) against `moat run shell DIR -- true`,
//!   interleaved, as a ratio.
//!
//! Usage: `cargo xtask bench agents` (needs root for the layer builds and
//! `MOAT_AGENT_BIN`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_sandbox_core::images::{builtin_names, ImageCache, Silent, Template};

const START_RUNS: usize = 3;

fn main() {
    let agents: Vec<&str> = builtin_names().into_iter().filter(|n| *n != "shell").collect();
    images(&agents);
    start_up(&agents);
}

/// CPU time (user + system) of this process's waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes one rusage into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid `who`.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn images(agents: &[&str]) {
    let real = ImageCache::open_default().unwrap();
    let scratch = tempfile::Builder::new().prefix("moat-bench-cache-").tempdir_in(real.root()).unwrap();
    // The base and the downloads come along (hard links: same file system); the layers don't.
    for dir in ["rootfs", "downloads"] {
        let status = Command::new("cp").arg("-al").arg(real.root().join(dir)).arg(scratch.path()).status().unwrap();
        assert!(status.success(), "cp -al {dir}");
    }
    let cold_cache = ImageCache::open(scratch.path()).unwrap();

    if std::env::var("MOAT_BENCH_COLD_BASE").as_deref() == Ok("1") {
        let fresh = tempfile::Builder::new().prefix("moat-bench-base-").tempdir_in(real.root()).unwrap();
        let cache = ImageCache::open(fresh.path()).unwrap();
        let (cpu, t) = (children_cpu(), Instant::now());
        cache.base(&Silent).unwrap();
        println!(
            "base cold: {:.1} s wall, {:.1} s CPU of the build tools",
            secs(t.elapsed()),
            secs(children_cpu() - cpu)
        );
    }
    let t = Instant::now();
    real.base(&Silent).unwrap();
    println!("base cached: {:.3} s", secs(t.elapsed()));

    println!("\n{:<10} {:>10} {:>10} {:>12} {:>10}", "layer", "cold (s)", "CPU (s)", "cached (ms)", "size (MiB)");
    for agent in agents {
        let template = Template::builtin(agent).unwrap();
        let (cpu, t) = (children_cpu(), Instant::now());
        let built = cold_cache.template(&template, &Silent).unwrap();
        let (cold, cold_cpu) = (t.elapsed(), children_cpu() - cpu);
        let t = Instant::now();
        cold_cache.template(&template, &Silent).unwrap();
        let cached = t.elapsed();
        let size: u64 = built.layers.iter().map(|l| allocated(&l.path)).sum();
        println!(
            "{agent:<10} {:>10.1} {:>10.1} {:>12.1} {:>10}",
            secs(cold),
            secs(cold_cpu),
            cached.as_secs_f64() * 1e3,
            size >> 20
        );
    }
}

/// Bytes a file occupies on disk (sparse images are smaller than their length).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn start_up(agents: &[&str]) {
    let moat = std::env::var_os("MOAT_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_exe().unwrap().parent().unwrap().join("moat"));
    let home = tempfile::Builder::new().prefix("moat-bench-").tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&moat)
            .args(args)
            .current_dir(scratch.path())
            .env("MOAT_HOME", home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "moat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["daemon", "start"]);
    run(&["policy", "preset", "balanced"]);
    let time = |name: &str, template: &str, tail: &[&str]| {
        let ws = scratch.path().join(name);
        std::fs::create_dir_all(&ws).unwrap();
        let ws = ws.to_str().unwrap().to_string();
        let mut args = vec!["run", "--name", name, "-m", "2g", "--cpus", "1", template, &ws, "--"];
        args.extend_from_slice(tail);
        let t = Instant::now();
        run(&args);
        let took = t.elapsed();
        run(&["rm", "-f", name]);
        took
    };
    println!("\nmoat run AGENT DIR -- --version on a new sandbox, against moat run shell DIR -- true (median of {START_RUNS})");
    println!("{:<10} {:>12} {:>12} {:>8}", "agent", "agent (s)", "shell (s)", "ratio");
    for agent in agents {
        let (mut a, mut s) = (Vec::new(), Vec::new());
        for i in 0..START_RUNS {
            s.push(time(&format!("s{i}"), "shell", &["true"]));
            a.push(time(&format!("{agent}{i}"), agent, &["--version"]));
        }
        let (a, s) = (median(a), median(s));
        println!("{agent:<10} {:>12.2} {:>12.2} {:>8.2}", secs(a), secs(s), secs(a) / secs(s));
    }
    run(&["daemon", "stop"]);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
