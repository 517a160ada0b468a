//! SMP through real KVM: every vCPU on its own thread, the APs waiting for
//! the guest to start them (`tests/guests/smp.c`).

use std::time::Duration;

use moat_vmm::{build_microvm, Payload, RunOutcome, VmConfig};

use crate::util::{build_guest, e2e_available};

fn boot_smp(vcpus: u8) -> (String, RunOutcome) {
    let elf = build_guest("smp");
    let config = VmConfig { mem_mib: 16, vcpus, timeout: Duration::from_secs(60), ..VmConfig::default() };
    let mut vm = build_microvm(&config, Payload::Elf(&elf)).unwrap();
    assert_eq!(vm.vcpu_count(), usize::from(vcpus));
    let report = vm.run().unwrap();
    let out = String::from_utf8_lossy(&vm.take_serial_output()).into_owned();
    eprintln!("smp x{vcpus}: {:?} in {:?}\n{out}", report.outcome, report.elapsed);
    assert_eq!(report.unmapped.reads + report.unmapped.writes, 0, "{report:?}");
    (out, report.outcome)
}

#[test]
fn the_bsp_starts_every_ap_with_init_and_startup_ipis() {
    if !e2e_available("the_bsp_starts_every_ap_with_init_and_startup_ipis", true) {
        return;
    }
    let (out, outcome) = boot_smp(3);
    assert_eq!(out, "smp: cpus 0x3\nsmp: aps up 0x2\nsmp: aps running\n");
    assert_eq!(outcome, RunOutcome::Exited(0));
}

#[test]
fn a_single_vcpu_vm_has_no_aps_to_start() {
    if !e2e_available("a_single_vcpu_vm_has_no_aps_to_start", true) {
        return;
    }
    let (out, outcome) = boot_smp(1);
    assert_eq!(out, "smp: cpus 0x1\nsmp: aps up 0x0\n");
    assert_eq!(outcome, RunOutcome::Exited(0));
}
