//! Times checkpoint creation against the plain git commands it replaces, on a
//! 50,000-file repository: branch checkpoint vs `git worktree add`, clone
//! checkpoint vs `git clone --local`. Median of 5 each.
//!
//! `cargo run --release -p moat-worktree --features test-utils --example bench_checkpoint [files]`

use std::path::Path;
use std::time::{Duration, Instant};

use moat_worktree::test_utils::{git, isolate_git, TestRepo};
use moat_worktree::{BranchName, Checkpoint};

const RUNS: usize = 5;

fn main() {
    isolate_git();
    let files: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let repo = TestRepo::new("bench repo");
    git(&repo.path, &["config", "gc.auto", "0"]);
    let t = Instant::now();
    for i in 0..files {
        let dir = format!("src/d{:03}", i % 500);
        repo.write(&format!("{dir}/f{i}.txt"), &format!("file {i}\n"));
    }
    repo.commit_all("many files");
    git(&repo.path, &["repack", "-a", "-d", "-q"]);
    println!("built a {files}-file repository in {:.1?}", t.elapsed());

    let plain_wt = median(|i| {
        let dest = repo.scratch(&format!("wt{i}"));
        let t = Instant::now();
        git(&repo.path, &["worktree", "add", "-q", "-b", &format!("plain{i}"), dest.to_str().unwrap()]);
        t.elapsed()
    });
    let branch = median(|i| {
        let t = Instant::now();
        let cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, &format!("bench{i}")).unwrap();
        let d = t.elapsed();
        assert!(cp.workspace().join("src/d000/f0.txt").exists());
        d
    });
    let plain_clone = median(|i| {
        let dest = repo.scratch(&format!("clone{i}"));
        let t = Instant::now();
        git(Path::new("/"), &["clone", "-q", "--local", repo.path.to_str().unwrap(), dest.to_str().unwrap()]);
        t.elapsed()
    });
    let clone = median(|i| {
        let dest = repo.scratch(&format!("cp-clone{i}"));
        let t = Instant::now();
        Checkpoint::create_clone(&repo.path, BranchName::Auto, &format!("c{i}"), &dest).unwrap();
        t.elapsed()
    });
    report("branch checkpoint", branch, "git worktree add", plain_wt);
    report("clone checkpoint", clone, "git clone --local", plain_clone);
}

fn median(mut run: impl FnMut(usize) -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS).map(&mut run).collect();
    times.sort();
    times[RUNS / 2]
}

fn report(ours: &str, a: Duration, theirs: &str, b: Duration) {
    println!(
        "{ours:<18} {:>8.1} ms   {theirs:<18} {:>8.1} ms   ratio {:.3}",
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        a.as_secs_f64() / b.as_secs_f64()
    );
}
