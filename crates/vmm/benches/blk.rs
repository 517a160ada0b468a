//! virtio-blk request throughput through the device code: an in-process
//! driver puts requests on the queue in guest RAM and kicks the transport
//! exactly as a guest's MMIO write would, minus the VM exit. It measures our
//! parsing, bounds checks and copies plus the host's page cache, not KVM.
//!
//! `cargo bench -p moat-vmm --bench blk` prints one line per case; run by
//! `cargo test --all-targets` (no `--bench` argument) each case runs for a
//! moment only, as a smoke test.

use std::time::{Duration, Instant};

use moat_vmm::devices::virtio::block::{Block, DiskImage, QUEUE_SIZE};
use moat_vmm::devices::virtio::testing::{Buf, Driver, DATA_BASE};
use moat_vmm::devices::virtio::MmioTransport;
use moat_vmm::GuestMemory;

const IMAGE_MIB: u64 = 64;
const RUN_FOR: Duration = Duration::from_millis(1500);
const SMOKE_FOR: Duration = Duration::from_millis(20);
const IN: u32 = 0;
const OUT: u32 = 1;

struct Case {
    name: &'static str,
    kind: u32,
    bytes: u32,
    batch: u16,
}

fn main() {
    let image = tempfile::NamedTempFile::new().expect("temp image");
    // Real data, so reads come from the page cache rather than holes.
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7) as u8).collect();
    for mib in 0..IMAGE_MIB {
        std::os::unix::fs::FileExt::write_all_at(image.as_file(), &chunk, mib << 20).expect("fill image");
    }
    let mem = GuestMemory::new(64).expect("guest memory");
    let disk = DiskImage::open(image.path(), false).expect("open image");
    let mut driver = Driver::new(MmioTransport::new(Block::new(disk), &mem).expect("transport"), &mem);
    driver.init(QUEUE_SIZE);

    let cases = [
        Case { name: "4 KiB reads, 1 per kick", kind: IN, bytes: 4096, batch: 1 },
        Case { name: "4 KiB reads, 32 per kick", kind: IN, bytes: 4096, batch: 32 },
        Case { name: "4 KiB writes, 32 per kick", kind: OUT, bytes: 4096, batch: 32 },
        Case { name: "64 KiB reads, 32 per kick", kind: IN, bytes: 64 << 10, batch: 32 },
    ];
    let run_for = if std::env::args().any(|a| a == "--bench") { RUN_FOR } else { SMOKE_FOR };
    println!("blk bench: {IMAGE_MIB} MiB image in the page cache, queue of {QUEUE_SIZE}, in-process driver");
    for case in &cases {
        run(&mut driver, case, run_for);
    }
}

fn run(d: &mut Driver<'_, Block>, case: &Case, run_for: Duration) {
    let sectors_per_request = u64::from(case.bytes / 512);
    let slots = IMAGE_MIB * 2048 / sectors_per_request;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let (mut requests, start) = (0u64, Instant::now());
    while start.elapsed() < run_for {
        for slot in 0..case.batch {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let sector = (rng % slots) * sectors_per_request;
            let addr = DATA_BASE + u64::from(slot) * u64::from(case.bytes);
            let data = if case.kind == IN { Buf::writable(addr, case.bytes) } else { Buf::readable(addr, case.bytes) };
            d.blk_chain(slot, case.kind, sector, &[data]);
        }
        d.notify();
        for slot in 0..case.batch {
            assert!(d.pop_used().is_some(), "request {slot} came back");
            assert_eq!(d.blk_status(slot), 0, "request {slot} succeeded");
        }
        requests += u64::from(case.batch);
    }
    let secs = start.elapsed().as_secs_f64();
    let per_sec = requests as f64 / secs;
    let mib_per_sec = per_sec * f64::from(case.bytes) / f64::from(1 << 20);
    println!(
        "  {:<28} {:>10.0} requests/s  {:>8.0} MiB/s  ({requests} in {secs:.2} s)",
        case.name, per_sec, mib_per_sec
    );
}
