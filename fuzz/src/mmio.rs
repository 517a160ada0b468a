//! `mmio_registers`: a hostile driver poking a virtio-mmio window — any
//! offset, any width, any value, in any order — in front of either the real
//! virtio-blk device or a vhost-user device (virtio-fs or vsock) whose
//! back-end is a fake behind the real [`Backend`] trait.
//!
//! Besides "no panic": the identity registers never change, `DRIVER_OK`
//! never stands without `FEATURES_OK`, a back-end is only ever started on
//! vrings that lie inside guest RAM with sizes it can serve and features it
//! offered (and never twice without a stop), and no access raises the heap
//! by more than [`ALLOC_CAP`].

use moat_vmm::devices::virtio::block::{Block, DiskImage};
use moat_vmm::devices::virtio::vhost_user::{Backend, BackendError, DeviceKind, VhostUser, VringPlan, QUEUE_MAX};
use moat_vmm::devices::virtio::{regs, status, MmioTransport, VirtioDevice};
use moat_vmm::GuestMemory;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::alloc;
use crate::guest::{self, REGIONS};
use crate::input::{Input, Seed};

/// Accesses in one program.
pub const MAX_OPS: usize = 512;
/// Most the heap may rise during one access.
pub const ALLOC_CAP: usize = 16 << 10;

/// Registers a `REG` step picks from (its index byte modulo the length).
pub const REGS: [u64; 22] = [
    regs::DEVICE_FEATURES_SEL,
    regs::DRIVER_FEATURES,
    regs::DRIVER_FEATURES_SEL,
    regs::QUEUE_SEL,
    regs::QUEUE_NUM,
    regs::QUEUE_READY,
    regs::QUEUE_NOTIFY,
    regs::INTERRUPT_ACK,
    regs::STATUS,
    regs::QUEUE_DESC_LOW,
    regs::QUEUE_DESC_HIGH,
    regs::QUEUE_DRIVER_LOW,
    regs::QUEUE_DRIVER_HIGH,
    regs::QUEUE_DEVICE_LOW,
    regs::QUEUE_DEVICE_HIGH,
    regs::SHM_SEL,
    regs::DEVICE_FEATURES,
    regs::QUEUE_NUM_MAX,
    regs::INTERRUPT_STATUS,
    regs::CONFIG_GENERATION,
    regs::CONFIG,
    regs::CONFIG + 8,
];

/// Step opcodes (the byte before each step, modulo 6).
pub mod op {
    /// A 32-bit write of one of [`super::REGS`].
    pub const REG: u8 = 0;
    /// A read of any width at any offset.
    pub const READ: u8 = 1;
    /// A write of any width at any offset.
    pub const WRITE: u8 = 2;
    /// Bytes into guest RAM (rings, descriptors).
    pub const MEM: u8 = 3;
    /// Host side: the back-end hangs up and the device asks for a reset.
    pub const LOST: u8 = 4;
    /// A 32-bit read of one of [`super::REGS`].
    pub const READ_REG: u8 = 5;
}

/// A back-end that checks what it is handed.
#[derive(Debug, Default)]
pub struct FakeBackend {
    /// `(host address, length)` of each RAM mapping.
    ram: Vec<(u64, u64)>,
    queues: usize,
    offered: u64,
    fail_start: bool,
    fail_stop: bool,
    running: bool,
}

impl Backend for FakeBackend {
    fn start(
        &mut self,
        features: u64,
        mem: &GuestMemoryMmap,
        vrings: &[VringPlan],
        kicks: &[EventFd],
        _call: &EventFd,
    ) -> Result<(), BackendError> {
        assert!(!self.running, "a back-end was started twice without a stop");
        assert_eq!(features & !self.offered, 0, "the back-end was asked for features it never offered");
        assert_eq!(kicks.len(), self.queues, "one kick per queue");
        assert!(!vrings.is_empty(), "started with no vring");
        let mapped = mem.iter().map(|r| (r.as_ptr() as u64, r.len())).collect::<Vec<_>>();
        assert_eq!(mapped, self.ram, "the memory table is guest RAM");
        for v in vrings {
            assert!(v.index < self.queues, "vring {} of {}", v.index, self.queues);
            assert!(v.size.is_power_of_two() && v.size <= QUEUE_MAX, "vring size {}", v.size);
            let n = u64::from(v.size);
            for (addr, len) in [(v.desc, 16 * n), (v.avail, 6 + 2 * n), (v.used, 6 + 8 * n)] {
                let inside = self.ram.iter().any(|&(h, l)| addr >= h && addr + len <= h + l);
                assert!(inside, "vring {} part at host {addr:#x}+{len:#x} is outside guest RAM", v.index);
            }
        }
        if self.fail_start {
            return Err(BackendError { request: "SET_VRING_ADDR", source: "the back-end hung up".into() });
        }
        self.running = true;
        Ok(())
    }

    fn stop(&mut self) -> Result<(), BackendError> {
        assert!(self.running, "a back-end that isn't running was stopped");
        self.running = false;
        if self.fail_stop {
            return Err(BackendError { request: "GET_VRING_BASE", source: "the back-end hung up".into() });
        }
        Ok(())
    }
}

/// Runs one program.
pub fn run(data: &[u8]) {
    let mut i = Input::new(data);
    let mem = GuestMemory::with_ranges(&REGIONS).expect("guest RAM");
    match i.u8() % 3 {
        0 => {
            let image = crate::blk::fresh_image_path();
            let disk = DiskImage::open(&image, i.bool()).expect("image opens");
            drive(MmioTransport::new(Block::new(disk), &mem).expect("transport"), &mem, &mut i, |_| {});
        }
        kind => {
            let kind = if kind == 1 {
                DeviceKind::Vsock { guest_cid: 3 }
            } else {
                DeviceKind::Fs { tag: "moat".into(), request_queues: u16::from(i.u8() % 9) }
            };
            let offered = i.u64();
            let extra = 1 << 30;
            let backend = FakeBackend {
                ram: mem.regions().iter().map(|r| (r.host_addr, r.len)).collect(),
                queues: kind.queue_count(),
                offered: offered | extra,
                fail_start: i.u8() == 0xff,
                fail_stop: i.u8() == 0xff,
                running: false,
            };
            let device = VhostUser::new(kind, offered, extra, backend).expect("device");
            drive(MmioTransport::new(device, &mem).expect("transport"), &mem, &mut i, |t| {
                t.device_mut().backend_lost("fuzz: the back-end hung up");
                t.request_reset();
            });
        }
    }
}

fn drive<D: VirtioDevice>(
    mut t: MmioTransport<D>,
    mem: &GuestMemory,
    i: &mut Input,
    mut lose_backend: impl FnMut(&mut MmioTransport<D>),
) {
    let device_type = t.device().device_type();
    for _ in 0..MAX_OPS {
        if i.is_empty() {
            break;
        }
        let ((), grew) = alloc::measure(|| match i.u8() % 6 {
            op::REG => {
                let offset = REGS[usize::from(i.u8()) % REGS.len()];
                t.write(offset, &i.u32().to_le_bytes());
            }
            op::READ | op::READ_REG => {
                let (offset, width) = access(i);
                let mut buf = [0xa5u8; 16];
                t.read(offset, &mut buf[..width]);
            }
            op::WRITE => {
                let (offset, width) = access(i);
                let value = i.u64().to_le_bytes();
                let mut buf = [0u8; 16];
                buf[..8].copy_from_slice(&value);
                t.write(offset, &buf[..width]);
            }
            op::MEM => {
                let at = guest::addr(i);
                let _ = mem.write(at, i.bytes());
            }
            _ => lose_backend(&mut t),
        });
        assert!(grew <= ALLOC_CAP, "one register access grew the heap by {grew} bytes");
        let s = t.status();
        assert!(s & status::DRIVER_OK == 0 || s & status::FEATURES_OK != 0, "DRIVER_OK without FEATURES_OK: {s:#x}");
        let mut id = [0u8; 4];
        t.read(regs::MAGIC_VALUE, &mut id);
        assert_eq!(u32::from_le_bytes(id), regs::MAGIC);
        t.read(regs::DEVICE_ID, &mut id);
        assert_eq!(u32::from_le_bytes(id), device_type);
    }
}

/// An offset (mostly within the window) and a width (mostly 1, 2, 4 or 8).
fn access(i: &mut Input) -> (u64, usize) {
    let offset = match i.u8() {
        0xff => i.u64(),
        _ => u64::from(i.u16()) % 0x200,
    };
    let width = match i.u8() % 8 {
        0 => 1,
        1 => 2,
        2 | 3 => 4,
        4 => 8,
        w => usize::from(w) * 2 + i.u8() as usize % 4,
    };
    (offset, width.min(16))
}

/// Seeds: the honest handshake with a queue for each device, and the same
/// with features refused, a queue outside RAM, and a reset in the middle.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for device in 0..3u8 {
        for variant in 0..4u8 {
            let mut s = Seed::default();
            s.u8(device);
            match device {
                0 => {
                    s.u8(0);
                }
                1 => {
                    s.u64(1 << 32 | 1 << 28 | 1).u8(0).u8(0);
                }
                _ => {
                    s.u8(1).u64(1 << 32).u8(0).u8(0);
                }
            }
            let reg = |s: &mut Seed, r: u64, v: u32| {
                let idx = REGS.iter().position(|&x| x == r).unwrap_or(0) as u8;
                s.u8(op::REG).u8(idx).u32(v);
            };
            reg(&mut s, regs::STATUS, status::ACKNOWLEDGE);
            reg(&mut s, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
            reg(&mut s, regs::DRIVER_FEATURES_SEL, 1);
            reg(&mut s, regs::DRIVER_FEATURES, if variant == 1 { 0 } else { 1 });
            reg(&mut s, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
            let queues: &[u32] = if device == 0 { &[0] } else { &[0, 1] };
            for &q in queues {
                let base = if variant == 2 { 0x2_0000 } else { 0x1000 + 0x3000 * q };
                reg(&mut s, regs::QUEUE_SEL, q);
                reg(&mut s, regs::QUEUE_NUM, 16);
                reg(&mut s, regs::QUEUE_DESC_LOW, base);
                reg(&mut s, regs::QUEUE_DRIVER_LOW, base + 0x1000);
                reg(&mut s, regs::QUEUE_DEVICE_LOW, base + 0x2000);
                reg(&mut s, regs::QUEUE_READY, 1);
            }
            reg(&mut s, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
            reg(&mut s, regs::QUEUE_NOTIFY, 0);
            s.u8(op::READ).u8(0).u16(0x60).u8(2);
            s.u8(op::READ).u8(0).u16(0x100).u8(4);
            if variant == 3 {
                s.u8(op::LOST);
                reg(&mut s, regs::STATUS, 0);
                reg(&mut s, regs::STATUS, status::ACKNOWLEDGE);
            }
            out.push(s.bytes);
        }
    }
    out
}
