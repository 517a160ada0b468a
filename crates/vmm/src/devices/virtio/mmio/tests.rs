use virtio_queue::QueueOwnedT;

use super::*;
use crate::devices::virtio::testing::{Buf, Driver, DATA_BASE};
use crate::GuestMemory;

/// A small real device: two queues, eight bytes of config, and a log of
/// what the transport asked of it.
#[derive(Debug, Default)]
struct Fake {
    config: [u8; 8],
    processed: Vec<usize>,
    activated: Option<u64>,
    resets: usize,
}

const FAKE_FEATURES: u64 = 0b101;

impl VirtioDevice for Fake {
    fn device_type(&self) -> u32 {
        42
    }
    fn features(&self) -> u64 {
        FAKE_FEATURES
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn config(&self) -> &[u8] {
        &self.config
    }
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        self.processed.push(index);
        let heads: Vec<u16> = queue.iter(mem).map(|it| it.map(|c| c.head_index()).collect()).unwrap_or_default();
        for head in &heads {
            queue.add_used(mem, *head, 0).unwrap();
        }
        !heads.is_empty()
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.config[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    }
    fn activate(&mut self, features: u64) {
        self.activated = Some(features);
    }
    fn reset(&mut self) {
        self.resets += 1;
    }
}

fn driver(mem: &GuestMemory) -> Driver<'_, Fake> {
    let config = Fake { config: [1, 2, 3, 4, 5, 6, 7, 8], ..Fake::default() };
    Driver::new(MmioTransport::new(config, mem).unwrap(), mem)
}

#[test]
fn identity_registers_read_as_the_spec_says() {
    let mem = GuestMemory::new(2).unwrap();
    let mut d = driver(&mem);
    assert_eq!(d.reg(regs::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(d.reg(regs::VERSION), 2);
    assert_eq!(d.reg(regs::DEVICE_ID), 42);
    assert_eq!(d.reg(regs::VENDOR_ID), regs::VENDOR);
    assert_eq!(d.reg(regs::SHM_LEN_LOW), u32::MAX, "no shared memory regions");
    assert_eq!(d.reg(regs::CONFIG_GENERATION), 0);
    assert_eq!(d.transport.stats().bad_accesses, 0);

    assert_eq!(d.reg(0x0c8), 0, "no register there");
    let mut narrow = [0xaau8; 2];
    d.transport.read(regs::MAGIC_VALUE, &mut narrow);
    assert_eq!(narrow, [0, 0], "registers are 32-bit only");
    d.transport.write(regs::STATUS, &[1]);
    assert_eq!(d.transport.status(), 0);
    d.transport.read(regs::VERSION + 1, &mut [0u8; 4]);
    assert_eq!(d.transport.stats().bad_accesses, 4);
}

#[test]
fn features_are_offered_in_32_bit_windows() {
    let mem = GuestMemory::new(2).unwrap();
    let mut d = driver(&mem);
    assert_eq!(d.device_features(), FAKE_FEATURES | VIRTIO_F_VERSION_1);
    d.set_reg(regs::DEVICE_FEATURES_SEL, 2);
    assert_eq!(d.reg(regs::DEVICE_FEATURES), 0);
}

#[test]
fn features_ok_sticks_only_for_an_acceptable_subset() {
    let mem = GuestMemory::new(2).unwrap();
    let mut d = driver(&mem);
    let base = status::ACKNOWLEDGE | status::DRIVER;
    assert_eq!(d.negotiate(0b1), base, "VERSION_1 is required");
    assert_eq!(d.negotiate(VIRTIO_F_VERSION_1 | 0b10), base, "bit 1 was never offered");
    assert_eq!(d.negotiate(VIRTIO_F_VERSION_1 | 0b100), base | status::FEATURES_OK);

    // Past FEATURES_OK the features are frozen.
    d.set_reg(regs::DRIVER_FEATURES_SEL, 0);
    d.set_reg(regs::DRIVER_FEATURES, 0b1);
    assert_eq!(d.transport.stats().refused_writes, 1);
    d.setup_queue(16);
    assert_eq!(d.start() & status::DRIVER_OK, status::DRIVER_OK);
    assert_eq!(d.transport.device().activated, Some(VIRTIO_F_VERSION_1 | 0b100));

    // A bit in a feature word past 64 is never acceptable.
    d.set_reg(regs::STATUS, 0);
    d.set_reg(regs::STATUS, base);
    d.set_reg(regs::DRIVER_FEATURES_SEL, 1);
    d.set_reg(regs::DRIVER_FEATURES, 1);
    d.set_reg(regs::DRIVER_FEATURES_SEL, 2);
    d.set_reg(regs::DRIVER_FEATURES, 1);
    d.set_reg(regs::STATUS, base | status::FEATURES_OK);
    assert_eq!(d.reg(regs::STATUS), base);
}

#[test]
fn status_bits_are_only_added_and_zero_resets_everything() {
    let mem = GuestMemory::new(2).unwrap();
    let mut d = driver(&mem);
    d.set_reg(regs::DRIVER_FEATURES, 1);
    assert_eq!(d.transport.stats().refused_writes, 1, "features before DRIVER");
    d.set_reg(regs::STATUS, status::ACKNOWLEDGE | status::DRIVER_OK);
    assert_eq!(d.reg(regs::STATUS), 0, "DRIVER_OK needs FEATURES_OK");
    d.init(16);
    d.set_reg(regs::STATUS, status::ACKNOWLEDGE);
    assert_ne!(d.reg(regs::STATUS) & status::DRIVER_OK, 0, "bits can't be taken away");

    d.add_chain(&[Buf::writable(DATA_BASE, 8)]);
    d.notify();
    assert_eq!(d.reg(regs::INTERRUPT_STATUS), 1);
    d.set_reg(regs::QUEUE_SEL, 1);
    let resets = d.transport.device().resets;
    d.set_reg(regs::STATUS, 0);
    assert_eq!(d.transport.device().resets, resets + 1);
    for reg in [regs::STATUS, regs::INTERRUPT_STATUS, regs::QUEUE_READY] {
        assert_eq!(d.reg(reg), 0, "register {reg:#x} after reset");
    }
    assert_eq!(d.reg(regs::QUEUE_NUM_MAX), 16, "queue selector back to 0");
}

#[test]
fn queues_are_set_up_between_features_ok_and_driver_ok() {
    let mem = GuestMemory::new(2).unwrap();
    let mut d = driver(&mem);
    d.set_reg(regs::QUEUE_NUM, 8);
    assert_eq!(d.transport.stats().refused_writes, 1, "before FEATURES_OK");
    d.negotiate(VIRTIO_F_VERSION_1);
    d.set_reg(regs::QUEUE_SEL, 1);
    assert_eq!(d.reg(regs::QUEUE_NUM_MAX), 8);
    d.set_reg(regs::QUEUE_SEL, 7);
    assert_eq!(d.reg(regs::QUEUE_NUM_MAX), 0, "no queue 7");
    d.set_reg(regs::QUEUE_NUM, 4);
    d.set_reg(regs::QUEUE_SEL, 0);
    for bad in [0, 3, 32] {
        d.set_reg(regs::QUEUE_NUM, bad);
    }
    assert_eq!(d.transport.stats().refused_writes, 5);
    d.setup_queue(16);
    assert_eq!(d.reg(regs::QUEUE_READY), 1);
    d.set_reg(regs::QUEUE_DESC_LOW, 0x2000);
    assert_eq!(d.transport.stats().refused_writes, 6, "a ready queue's rings don't move");
    d.start();
    d.set_reg(regs::QUEUE_READY, 0);
    assert_eq!(d.reg(regs::QUEUE_READY), 1, "no queue changes after DRIVER_OK");
}

#[test]
fn a_queue_outside_guest_ram_needs_a_reset_and_is_never_used() {
    let mem = GuestMemory::new(2).unwrap();
    let mut d = driver(&mem);
    d.negotiate(VIRTIO_F_VERSION_1);
    d.setup_queue_at(16, 0xffff_f000);
    let after = d.start();
    assert_eq!(after & status::DRIVER_OK, 0);
    assert_ne!(after & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(d.reg(regs::INTERRUPT_STATUS), 2, "config change interrupt");
    assert_eq!(d.transport.interrupt().raised(), 1);
    d.notify();
    assert!(d.transport.device().processed.is_empty());
    assert_eq!(d.transport.stats().bad_queues, 1);
    assert_eq!(d.transport.stats().ignored_notifies, 1);
}

#[test]
fn notify_runs_the_device_and_raises_the_interrupt() {
    let mem = GuestMemory::new(2).unwrap();
    let mut d = driver(&mem);
    d.add_chain(&[]);
    d.set_reg(regs::QUEUE_NOTIFY, 0);
    assert!(d.transport.device().processed.is_empty(), "not before DRIVER_OK");
    d.init(16);
    d.add_chain(&[Buf::writable(DATA_BASE, 8)]);
    d.notify();
    assert_eq!(d.transport.device().processed, vec![0]);
    assert_eq!(d.pop_used(), Some((0, 0)));
    assert_eq!(d.reg(regs::INTERRUPT_STATUS), 1);
    assert_eq!(d.transport.interrupt().raised(), 1);
    d.set_reg(regs::INTERRUPT_ACK, 1);
    assert_eq!(d.reg(regs::INTERRUPT_STATUS), 0);

    d.set_reg(regs::QUEUE_NOTIFY, 1); // exists, never made ready
    d.set_reg(regs::QUEUE_NOTIFY, 9); // doesn't exist
    assert_eq!(d.transport.stats().ignored_notifies, 3);
    assert_eq!(d.transport.interrupt().raised(), 1);
}

#[test]
fn config_space_takes_1_2_4_and_8_byte_accesses_inside_it() {
    let mem = GuestMemory::new(2).unwrap();
    let mut d = driver(&mem);
    assert_eq!(d.config::<1>(3), [4]);
    assert_eq!(d.config::<2>(6), [7, 8]);
    assert_eq!(d.config::<4>(4), [5, 6, 7, 8]);
    assert_eq!(d.config::<8>(0), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(d.config::<4>(6), [0; 4], "straddles the end");
    assert_eq!(d.config::<3>(0), [0; 3], "odd width");
    assert_eq!(d.config::<1>(u64::MAX - regs::CONFIG), [0]);
    assert_eq!(d.transport.stats().bad_accesses, 3);

    d.transport.write(regs::CONFIG + 2, &[9, 9]);
    d.transport.write(regs::CONFIG + 7, &[9, 9]);
    d.transport.write(u64::MAX, &[9]);
    assert_eq!(d.config::<8>(0), [1, 2, 9, 9, 5, 6, 7, 8]);
    assert_eq!(d.transport.stats().bad_accesses, 5);
}
