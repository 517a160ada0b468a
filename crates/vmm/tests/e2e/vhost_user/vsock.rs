//! virtio-vsock over vhost-user with a real `moat-vsock`: a host process
//! connects through the hybrid socket, the connection request lands in a
//! guest RX buffer, the guest's response reaches the host as `OK <port>`,
//! and host bytes come back as a guest RW packet.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moat_vmm::devices::virtio::status;
use moat_vmm::devices::virtio::testing::{Buf, Driver, DATA_BASE};
use moat_vmm::devices::virtio::vhost_user::{BackendState, BackendWatch, VhostUser, VIRTIO_ID_VSOCK};
use moat_vmm::devices::virtio::{regs, MmioTransport};
use moat_vmm::GuestMemory;

use super::{interrupt_status, start, tool, wait_used, Backend};

pub const GUEST_CID: u64 = 3;
const HOST_CID: u64 = 2;
pub const GUEST_PORT: u32 = 1234;
const HDR: u32 = 44;
const RX_BUF: u32 = HDR + 4096;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RW: u16 = 5;
const TYPE_STREAM: u16 = 1;

pub fn moat_vsock(test: &str) -> Option<Backend> {
    let program = tool(test, "moat-vsock", "MOAT_VSOCK_BACKEND")?;
    let dir = tempfile::tempdir().unwrap();
    let (socket, uds) = (dir.path().join("backend.sock"), dir.path().join("vsock.sock"));
    let cid = GUEST_CID.to_string();
    let args = [
        "--guest-cid".as_ref(),
        cid.as_ref(),
        "--socket".as_ref(),
        socket.as_os_str(),
        "--uds-path".as_ref(),
        uds.as_os_str(),
    ];
    Some(Backend::spawn(&program, &args, socket.clone(), dir))
}

/// `struct virtio_vsock_hdr`, the fields we look at.
#[derive(Debug, PartialEq, Eq)]
struct Hdr {
    src_cid: u64,
    dst_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    kind: u16,
    op: u16,
}

fn read_hdr(mem: &GuestMemory, addr: u64) -> Hdr {
    let mut b = [0u8; HDR as usize];
    mem.read(addr, &mut b).unwrap();
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    Hdr {
        src_cid: u64_at(0),
        dst_cid: u64_at(8),
        src_port: u32_at(16),
        dst_port: u32_at(20),
        len: u32_at(24),
        kind: u16_at(28),
        op: u16_at(30),
    }
}

fn write_response(mem: &GuestMemory, addr: u64, host_port: u32) {
    let mut b = [0u8; HDR as usize];
    b[0..8].copy_from_slice(&GUEST_CID.to_le_bytes());
    b[8..16].copy_from_slice(&HOST_CID.to_le_bytes());
    b[16..20].copy_from_slice(&GUEST_PORT.to_le_bytes());
    b[20..24].copy_from_slice(&host_port.to_le_bytes());
    b[28..30].copy_from_slice(&TYPE_STREAM.to_le_bytes());
    b[30..32].copy_from_slice(&OP_RESPONSE.to_le_bytes());
    b[36..40].copy_from_slice(&65536u32.to_le_bytes()); // buf_alloc
    mem.write(addr, &b).unwrap();
}

#[test]
fn a_host_connection_reaches_guest_memory_through_moat_vsock_and_back() {
    let Some(backend) = moat_vsock("a_host_connection_reaches_guest_memory_through_moat_vsock_and_back") else {
        return;
    };
    let mem = GuestMemory::new(16).unwrap();
    let begin = Instant::now();
    let device = VhostUser::connect_vsock(&backend.socket, GUEST_CID).unwrap();
    eprintln!("moat-vsock: {:?}", device.backend());
    let mut d = Driver::new(MmioTransport::new(device, &mem).unwrap(), &mem);
    assert_eq!(d.reg(regs::DEVICE_ID), VIRTIO_ID_VSOCK);
    assert_eq!(d.config::<8>(0), GUEST_CID.to_le_bytes());
    let (rx1, rx2, tx) = (DATA_BASE, DATA_BASE + 0x2000, DATA_BASE + 0x4000);
    start(&mut d, 3, |d| {
        d.select_queue(0);
        d.add_chain(&[Buf::writable(rx1, RX_BUF)]);
        d.add_chain(&[Buf::writable(rx2, RX_BUF)]);
    });
    let handshake = begin.elapsed();
    d.select_queue(0);
    d.notify();

    // Host → guest: a connection request.
    let sent = Instant::now();
    let mut host = UnixStream::connect(backend.dir.path().join("vsock.sock")).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes()).unwrap();
    let ((head, len), interrupts) = wait_used(&mut d, 0);
    let latency = sent.elapsed();
    assert_eq!((head, len), (0, HDR), "the request, header only, in the first RX buffer");
    let req = read_hdr(&mem, rx1);
    assert_eq!(
        req,
        Hdr {
            src_cid: HOST_CID,
            dst_cid: GUEST_CID,
            src_port: req.src_port,
            dst_port: GUEST_PORT,
            len: 0,
            kind: TYPE_STREAM,
            op: OP_REQUEST
        }
    );
    assert!(interrupts >= 1, "moat-vsock signalled the irqfd");
    assert_eq!(interrupt_status(&mut d) & 1, 1);

    // Guest → host: accept. The host side reads `OK <port>`.
    write_response(&mem, tx, req.src_port);
    d.select_queue(1);
    d.add_chain(&[Buf::readable(tx, HDR)]);
    d.notify();
    let mut line = String::new();
    BufReader::new(&host).read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {}\n", req.src_port));
    assert_eq!(wait_used(&mut d, 1).0, (0, 0), "the TX buffer came back, nothing written to it");

    // Host bytes → a guest RW packet in the second RX buffer.
    host.write_all(b"ping").unwrap();
    let ((head, len), _) = wait_used(&mut d, 0);
    assert_eq!((head, len), (1, HDR + 4));
    let rw = read_hdr(&mem, rx2);
    assert_eq!((rw.op, rw.len, rw.dst_port), (OP_RW, 4, GUEST_PORT));
    let mut payload = [0u8; 4];
    mem.read(rx2 + u64::from(HDR), &mut payload).unwrap();
    assert_eq!(&payload, b"ping");

    let stats = d.transport.device().stats();
    assert_eq!((stats.started, stats.kicks), (1, 2));
    eprintln!("vsock: connect+negotiate+DRIVER_OK {handshake:?}; host CONNECT → guest RX used {latency:?}");
    let mut rest = Vec::new();
    drop(d);
    // Our end is gone: moat-vsock ends, and with it the host connection.
    let _ = (&host).read_to_end(&mut rest);
}

#[test]
fn moat_vsock_going_away_leaves_the_device_needing_reset_and_the_vmm_running() {
    let test = "moat_vsock_going_away_leaves_the_device_needing_reset_and_the_vmm_running";
    let Some(mut backend) = moat_vsock(test) else { return };
    let mem = GuestMemory::new(16).unwrap();

    // Killed while live: the watch notices the hang-up.
    let mut d = Driver::new(
        MmioTransport::new(VhostUser::connect_vsock(&backend.socket, GUEST_CID).unwrap(), &mem).unwrap(),
        &mem,
    );
    start(&mut d, 3, |_| {});
    let transport = Arc::new(Mutex::new(d.into_transport()));
    let locked = transport.lock().unwrap();
    let _watch = BackendWatch::spawn(locked.device().backend().socket(), Arc::downgrade(&transport)).unwrap();
    drop(locked);
    backend.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while transport.lock().unwrap().status() & status::DEVICE_NEEDS_RESET == 0 {
        assert!(Instant::now() < deadline, "the dead back-end was never noticed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut t = transport.lock().unwrap();
    assert_eq!(t.device().state(), BackendState::Lost);
    // The driver resets and tries again: refused cleanly, nothing panics.
    t.write(regs::STATUS, &0u32.to_le_bytes());
    for s in [status::ACKNOWLEDGE, status::ACKNOWLEDGE | status::DRIVER] {
        t.write(regs::STATUS, &s.to_le_bytes());
    }
    t.write(regs::QUEUE_NOTIFY, &0u32.to_le_bytes());
    assert_eq!(t.device().stats().kicks, 0, "a kick to a dead device goes nowhere");
    assert_eq!(t.stats().ignored_notifies, 1);
    drop(t);

    // Killed between attach and DRIVER_OK: the start itself fails.
    let Some(mut backend) = moat_vsock(test) else { return };
    let mut d = Driver::new(
        MmioTransport::new(VhostUser::connect_vsock(&backend.socket, GUEST_CID).unwrap(), &mem).unwrap(),
        &mem,
    );
    backend.kill();
    let features = d.device_features() & !super::EVENT_IDX;
    d.negotiate(features);
    for q in 0..3 {
        d.select_queue(q);
        d.setup_queue(super::QUEUE_SIZE);
    }
    let after = d.start();
    assert_eq!(after & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET), status::DEVICE_NEEDS_RESET);
    assert_eq!(d.transport.device().state(), BackendState::Lost);
    eprintln!("start after the back-end died: {}", d.transport.device().last_error().unwrap());
}
