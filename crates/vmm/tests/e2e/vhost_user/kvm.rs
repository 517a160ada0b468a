//! The vsock device through the real monitor and /dev/kvm: the freestanding
//! guest `tests/guests/vsock.c` drives it with its own polling driver while
//! moat-vsock serves the queues. Its kicks are KVM ioeventfds and the
//! back-end's interrupts the device's irqfd, so the VMM never sees either.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use moat_vmm::devices::virtio::vhost_user::BackendState;
use moat_vmm::{build_microvm, Payload, RunOutcome, VmConfig, VsockConfig};

use super::vsock::{moat_vsock, GUEST_CID, GUEST_PORT};
use crate::util::{build_guest, e2e_available};

#[test]
fn a_guest_on_kvm_takes_a_host_connection_through_moat_vsock() {
    let test = "a_guest_on_kvm_takes_a_host_connection_through_moat_vsock";
    if !e2e_available(test, true) {
        return;
    }
    let Some(backend) = moat_vsock(test) else { return };
    let elf = build_guest("vsock");
    let config = VmConfig {
        mem_mib: 16,
        timeout: Duration::from_secs(60),
        vsock: Some(VsockConfig { socket: backend.socket.clone(), guest_cid: GUEST_CID }),
        ..VmConfig::default()
    };
    let mut vm = build_microvm(&config, Payload::Elf(&elf)).unwrap();
    assert_eq!(vm.virtio_cmdline(), "virtio_mmio.device=4K@0xd0000000:5");

    // The host side: connect, and read the guest's answer.
    let uds = backend.dir.path().join("vsock.sock");
    let host = std::thread::spawn(move || {
        let mut host = UnixStream::connect(uds).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        host.write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(&host).read_line(&mut line).unwrap();
        line
    });
    let report = vm.run().unwrap();
    let out = String::from_utf8_lossy(&vm.take_serial_output()).into_owned();
    eprintln!("vsock guest: {:?} in {:?}\n{out}", report.outcome, report.elapsed);
    assert_eq!(
        out,
        "vsock: identity ok\n\
         vsock: guest cid ok\n\
         vsock: features ok\n\
         vsock: three queues ok\n\
         vsock: device live ok\n\
         vsock: connection request ok\n\
         vsock: interrupt status ok\n\
         vsock: irq delivered ok\n\
         vsock: response taken ok\n\
         vsock: done\n"
    );
    assert_eq!(report.outcome, RunOutcome::Exited(0));
    assert!(host.join().unwrap().starts_with("OK "), "the host saw the guest accept");

    let transport = vm.vhost_users()[0].transport().lock().unwrap();
    let device = transport.device();
    assert_eq!(device.state(), BackendState::Running);
    assert_eq!(device.stats().started, 1);
    assert_eq!(device.stats().kicks + transport.stats().ignored_notifies, 0, "both kicks went through ioeventfds");
}
