//! Fuzz targets for the guest-facing parts of Moat (`cargo xtask fuzz`).
//!
//! Each target is a module with `run(&[u8])`, the harness libFuzzer calls
//! (see `fuzz_targets/`), and `seeds()`, honest programs to start from
//! (`examples/seeds.rs` writes them to `seeds/<target>/`); inputs that once
//! failed live in `regressions/<target>/` and run as a test. A fuzz input is
//! read as a small program over [`input::Input`]: every byte string is a
//! valid one, so no input is wasted on parse errors.
//!
//! - [`mmio`] (`mmio_registers`): virtio-mmio register accesses against
//!   the block device and a vhost-user device with a checking fake back-end.
//! - [`blk`] (`blk_chains`): descriptor chains for the real virtio-blk device.
//! - [`vsock`] (`vsock_chains`): TX/RX chains for moat-vsock's device core.
//! - [`agent`] (`agent_frames`): the guest agent's frame decoder.
//!
//! Every target also checks invariants beyond "no panic": heap growth
//! bounded (the counting allocator in [`alloc`]), guest RAM written only
//! where the guest allowed ([`guest::check_writes`]), used rings sane.
//!
//! Not a member of the main workspace: it needs nightly and libFuzzer.

pub mod agent;
pub mod alloc;
pub mod blk;
pub mod guest;
pub mod input;
pub mod mmio;
pub mod vsock;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// A fuzz target: its name (the binary in `fuzz_targets/`), its harness,
/// and its seed programs.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: [Target; 4] = [
    Target { name: "mmio_registers", run: mmio::run, seeds: mmio::seeds },
    Target { name: "blk_chains", run: blk::run, seeds: blk::seeds },
    Target { name: "vsock_chains", run: vsock::run, seeds: vsock::seeds },
    Target { name: "agent_frames", run: agent::run, seeds: agent::seeds },
];

#[cfg(test)]
mod tests {
    /// The harnesses share process-wide state (the vsock rig's sockets, the
    /// counting allocator), as under libFuzzer, which runs one input at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Every seed runs clean through its harness, on stable, without libFuzzer.
    #[test]
    fn every_seed_passes_its_target() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        for t in crate::TARGETS {
            for seed in (t.seeds)() {
                (t.run)(&seed);
            }
            (t.run)(&[]);
        }
    }

    /// Inputs that once failed (`regressions/<target>/`, each named for what
    /// it found) pass now.
    #[test]
    fn every_regression_passes_its_target() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
        for t in crate::TARGETS {
            for entry in std::fs::read_dir(dir.join(t.name)).into_iter().flatten().flatten() {
                (t.run)(&std::fs::read(entry.path()).expect("regression input"));
            }
        }
    }
}
