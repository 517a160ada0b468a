//! virtio-fs over vhost-user with a real `virtiofsd`: FUSE_INIT, then
//! LOOKUP, OPEN and READ of a host file, each request put on the request
//! queue in guest memory and answered there by virtiofsd.

use std::time::Instant;

use moat_vmm::devices::virtio::testing::{Buf, Driver, DATA_BASE};
use moat_vmm::devices::virtio::vhost_user::{Frontend, VhostUser, FS_TAG_LEN, VIRTIO_ID_FS};
use moat_vmm::devices::virtio::{regs, MmioTransport};
use moat_vmm::GuestMemory;

use super::{interrupt_status, start, tool, wait_used, Backend};

const FUSE_LOOKUP: u32 = 1;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_INIT: u32 = 26;
const FUSE_ROOT_ID: u64 = 1;
const IN_HDR: usize = 40;
const OUT_HDR: usize = 16;
const REQUEST_QUEUE: u16 = 1;
const CONTENT: &[u8] = b"hello from the host, through virtiofsd\n";

fn virtiofsd(test: &str) -> Option<Backend> {
    let program = tool(test, "virtiofsd", "MOAT_VIRTIOFSD")?;
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("hello.txt"), CONTENT).unwrap();
    let socket = dir.path().join("fs.sock");
    let args = [
        "--socket-path".as_ref(),
        socket.as_os_str(),
        "--shared-dir".as_ref(),
        shared.as_os_str(),
        "--sandbox".as_ref(),
        "none".as_ref(),
        "--log-level".as_ref(),
        "error".as_ref(),
    ];
    Some(Backend::spawn(&program, &args, socket.clone(), dir))
}

/// One FUSE request on the request queue: `fuse_in_header` + `body`
/// readable, `out_len` bytes writable. Returns the reply's error and body.
fn fuse(
    d: &mut Driver<'_, VhostUser<Frontend>>,
    mem: &GuestMemory,
    opcode: u32,
    unique: u64,
    nodeid: u64,
    body: &[u8],
    out_len: u32,
) -> (i32, Vec<u8>) {
    let at = DATA_BASE + 0x1_0000 * unique;
    let out = at + 0x8000;
    let mut req = Vec::with_capacity(IN_HDR + body.len());
    req.extend_from_slice(&((IN_HDR + body.len()) as u32).to_le_bytes());
    req.extend_from_slice(&opcode.to_le_bytes());
    req.extend_from_slice(&unique.to_le_bytes());
    req.extend_from_slice(&nodeid.to_le_bytes());
    req.extend_from_slice(&[0u8; 16]); // uid, gid, pid, total_extlen, padding
    req.extend_from_slice(body);
    mem.write(at, &req).unwrap();
    d.select_queue(REQUEST_QUEUE);
    d.add_chain(&[Buf::readable(at, req.len() as u32), Buf::writable(out, OUT_HDR as u32 + out_len)]);
    d.notify();
    let ((_, used), interrupts) = wait_used(d, REQUEST_QUEUE);
    assert!(interrupts >= 1, "virtiofsd signalled the irqfd");
    let mut reply = vec![0u8; used as usize];
    mem.read(out, &mut reply).unwrap();
    assert!(reply.len() >= OUT_HDR, "a reply has a header: {reply:?}");
    let len = u32::from_le_bytes(reply[..4].try_into().unwrap());
    let error = i32::from_le_bytes(reply[4..8].try_into().unwrap());
    assert_eq!(u64::from_le_bytes(reply[8..16].try_into().unwrap()), unique);
    assert_eq!(len, used, "fuse_out_header.len is what virtiofsd wrote");
    (error, reply.split_off(OUT_HDR))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

#[test]
fn virtiofsd_answers_fuse_requests_in_guest_memory() {
    let Some(backend) = virtiofsd("virtiofsd_answers_fuse_requests_in_guest_memory") else { return };
    let mem = GuestMemory::new(16).unwrap();
    let begin = Instant::now();
    let device = VhostUser::connect_fs(&backend.socket, "moatfs").unwrap();
    eprintln!("virtiofsd: {:?}", device.backend());
    let mut d = Driver::new(MmioTransport::new(device, &mem).unwrap(), &mem);
    assert_eq!(d.reg(regs::DEVICE_ID), VIRTIO_ID_FS);
    let config = d.config::<8>(0);
    assert_eq!(&config[..7], b"moatfs\0");
    let queues = u32::from_le_bytes(d.config::<4>(FS_TAG_LEN as u64));
    assert_eq!(queues, 1, "virtiofsd serves one request queue");
    start(&mut d, 1 + queues as u16, |_| {});
    let handshake = begin.elapsed();

    // FUSE_INIT: major 7, minor 31, max_readahead, no flags.
    let sent = Instant::now();
    let mut init = Vec::new();
    for v in [7u32, 31, 0x2_0000, 0] {
        init.extend_from_slice(&v.to_le_bytes());
    }
    let (error, out) = fuse(&mut d, &mem, FUSE_INIT, 1, 0, &init, 256);
    let init_rtt = sent.elapsed();
    assert_eq!(error, 0);
    assert_eq!(u32::from_le_bytes(out[..4].try_into().unwrap()), 7, "fuse_init_out.major");
    assert_eq!(interrupt_status(&mut d) & 1, 1);

    // LOOKUP hello.txt in the root: fuse_entry_out.attr.size is the file's.
    let (error, entry) = fuse(&mut d, &mem, FUSE_LOOKUP, 2, FUSE_ROOT_ID, b"hello.txt\0", 128);
    assert_eq!(error, 0);
    let (nodeid, size) = (u64_at(&entry, 0), u64_at(&entry, 48));
    assert_eq!(size, CONTENT.len() as u64);

    // OPEN read-only, then READ the whole file into guest memory.
    let (error, open) = fuse(&mut d, &mem, FUSE_OPEN, 3, nodeid, &[0u8; 8], 16);
    assert_eq!(error, 0);
    let fh = u64_at(&open, 0);
    let mut read = Vec::new();
    read.extend_from_slice(&fh.to_le_bytes());
    read.extend_from_slice(&0u64.to_le_bytes()); // offset
    read.extend_from_slice(&4096u32.to_le_bytes()); // size
    read.extend_from_slice(&[0u8; 20]); // read_flags, lock_owner, flags, padding
    let (error, data) = fuse(&mut d, &mem, FUSE_READ, 4, nodeid, &read, 4096);
    assert_eq!(error, 0);
    assert_eq!(data, CONTENT);

    // A missing file is an error reply, not a failure of the device.
    let (error, _) = fuse(&mut d, &mem, FUSE_LOOKUP, 5, FUSE_ROOT_ID, b"absent\0", 128);
    assert_eq!(error, -libc::ENOENT);
    eprintln!("virtio-fs: connect+negotiate+DRIVER_OK {handshake:?}; FUSE_INIT round trip {init_rtt:?}");
}
