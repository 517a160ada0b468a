//! The virtio-mmio register model (virtio 1.2, 4.2.2; `Version` 2).
//!
//! Registers are 32 bits wide and must be accessed as such; the device's
//! config space (from [`regs::CONFIG`]) accepts 1-, 2-, 4- and 8-byte
//! accesses. Anything else is ignored (reads see zeros) and counted. The
//! status register follows the spec's state machine: bits are only ever
//! added, `FEATURES_OK` sticks only if the driver accepted a subset of the
//! offered features including `VIRTIO_F_VERSION_1`, and writing 0 resets.
//! Queue set-up is accepted between `FEATURES_OK` and `DRIVER_OK`; on
//! `DRIVER_OK` every ready queue must lie in guest RAM, or the device asks
//! for a reset (`DEVICE_NEEDS_RESET`) and never touches the rings.

use std::io;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::device::{status, VirtioDevice, VIRTIO_F_VERSION_1};
use super::interrupt::{Interrupt, CONFIG_CHANGE, USED_BUFFER};

/// Register offsets within a device's window.
pub mod regs {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device-specific config space.
    pub const CONFIG: u64 = 0x100;

    /// "virt", little-endian.
    pub const MAGIC: u32 = 0x7472_6976;
    /// The modern (virtio 1.x) register layout.
    pub const MMIO_VERSION: u32 = 2;
    /// Our vendor ID: ASCII "Moat".
    pub const VENDOR: u32 = 0x4d6f_6174;
}

/// Guest accesses the transport refused or could not honour.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransportStats {
    /// Register accesses of the wrong width or alignment, or to no register.
    pub bad_accesses: u64,
    /// Writes the device state did not allow (queue set-up after
    /// `DRIVER_OK`, features after `FEATURES_OK`, status bits removed).
    pub refused_writes: u64,
    /// `DRIVER_OK` with a ready queue outside guest RAM.
    pub bad_queues: u64,
    /// Notifications for a queue that doesn't exist or isn't live.
    pub ignored_notifies: u64,
}

/// A virtio device behind its MMIO registers.
#[derive(Debug)]
pub struct MmioTransport<D> {
    device: D,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Interrupt,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    /// The driver accepted a feature bit past 63 (none is ever offered).
    unknown_features: bool,
    queue_sel: u32,
    stats: TransportStats,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Puts `device` behind a transport whose queues live in `mem`.
    pub fn new(device: D, mem: &crate::GuestMemory) -> io::Result<Self> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string())))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            device,
            mem: mem.backend().clone(),
            queues,
            interrupt: Interrupt::new()?,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            unknown_features: false,
            queue_sel: 0,
            stats: TransportStats::default(),
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, to change.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The interrupt (status register and line).
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Refused or malformed guest accesses so far.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// Features offered: the device's plus `VIRTIO_F_VERSION_1`.
    pub fn offered_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    /// Handles a guest read of `data.len()` bytes at `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= regs::CONFIG {
            return self.read_config(offset - regs::CONFIG, data);
        }
        if data.len() != 4 || offset % 4 != 0 {
            self.stats.bad_accesses += 1;
            return;
        }
        let value = match self.read_register(offset) {
            Some(v) => v,
            None => {
                self.stats.bad_accesses += 1;
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Handles a guest write of `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            return self.write_config(offset - regs::CONFIG, data);
        }
        match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset % 4 == 0 => self.write_register(offset, u32::from_le_bytes(bytes)),
            _ => self.stats.bad_accesses += 1,
        }
    }

    fn read_register(&self, offset: u64) -> Option<u32> {
        let queue = self.selected_queue();
        Some(match offset {
            regs::MAGIC_VALUE => regs::MAGIC,
            regs::VERSION => regs::MMIO_VERSION,
            regs::DEVICE_ID => self.device.device_type(),
            regs::VENDOR_ID => regs::VENDOR,
            regs::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            regs::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            regs::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            regs::INTERRUPT_STATUS => self.interrupt_status(),
            regs::STATUS => self.status,
            // No shared-memory regions: their length reads as all ones.
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH | regs::SHM_BASE_LOW | regs::SHM_BASE_HIGH => u32::MAX,
            // The config space never changes under the driver's feet.
            regs::CONFIG_GENERATION => 0,
            _ => return None,
        })
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            regs::DRIVER_FEATURES => self.write_driver_features(value),
            regs::QUEUE_SEL => self.queue_sel = value,
            regs::QUEUE_NOTIFY => self.notify(value),
            regs::INTERRUPT_ACK => self.interrupt.ack(value),
            regs::STATUS => self.write_status(value),
            regs::SHM_SEL => {}
            regs::QUEUE_NUM
            | regs::QUEUE_READY
            | regs::QUEUE_DESC_LOW
            | regs::QUEUE_DESC_HIGH
            | regs::QUEUE_DRIVER_LOW
            | regs::QUEUE_DRIVER_HIGH
            | regs::QUEUE_DEVICE_LOW
            | regs::QUEUE_DEVICE_HIGH => self.write_queue_register(offset, value),
            _ => self.stats.bad_accesses += 1,
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if !self.status_is(status::DRIVER, status::FEATURES_OK | status::FAILED) {
            self.stats.refused_writes += 1;
            return;
        }
        let value = u64::from(value);
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32),
            // Feature words past 64 bits: we offer none, so any set bit is
            // a driver accepting something never offered.
            _ => self.unknown_features |= value != 0,
        }
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        if !self.status_is(status::FEATURES_OK, status::DRIVER_OK | status::FAILED) {
            self.stats.refused_writes += 1;
            return;
        }
        let Some(queue) = self.queues.get_mut(self.queue_sel as usize) else {
            self.stats.refused_writes += 1;
            return;
        };
        // Addresses and sizes can't change under a live queue.
        if queue.ready() && offset != regs::QUEUE_READY {
            self.stats.refused_writes += 1;
            return;
        }
        match offset {
            // Sizes that are zero, too large or not a power of two are refused.
            regs::QUEUE_NUM => {
                self.stats.refused_writes += u64::from(queue.try_set_size(value.try_into().unwrap_or(0)).is_err());
            }
            regs::QUEUE_READY => queue.set_ready(value == 1),
            regs::QUEUE_DESC_LOW => queue.set_desc_table_address(Some(value), None),
            regs::QUEUE_DESC_HIGH => queue.set_desc_table_address(None, Some(value)),
            regs::QUEUE_DRIVER_LOW => queue.set_avail_ring_address(Some(value), None),
            regs::QUEUE_DRIVER_HIGH => queue.set_avail_ring_address(None, Some(value)),
            regs::QUEUE_DEVICE_LOW => queue.set_used_ring_address(Some(value), None),
            regs::QUEUE_DEVICE_HIGH => queue.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            return self.reset();
        }
        // Bits are only ever added; taking one away takes a reset.
        if value & self.status != self.status {
            self.stats.refused_writes += 1;
            return;
        }
        let added = value & !self.status;
        let mut accepted = value;
        if added & status::FEATURES_OK != 0 && !self.features_acceptable() {
            accepted &= !status::FEATURES_OK;
        }
        if added & status::DRIVER_OK != 0 {
            if accepted & status::FEATURES_OK == 0 {
                self.stats.refused_writes += 1;
                return;
            }
            if !self.queues_valid() {
                self.stats.bad_queues += 1;
                self.status = accepted & !status::DRIVER_OK;
                return self.request_reset();
            }
            self.device.activate(self.driver_features);
            if !self.device.hand_off_queues(&self.queues, &self.mem, self.interrupt.line()) {
                self.status = accepted & !status::DRIVER_OK;
                return self.request_reset();
            }
        }
        self.status = accepted;
    }

    /// The device can't go on (a bad queue, a lost back-end): sets
    /// `DEVICE_NEEDS_RESET` and tells the driver with a config-change
    /// interrupt (virtio 1.2, 2.1.2). Only a reset clears it.
    pub fn request_reset(&mut self) {
        if self.status & status::DEVICE_NEEDS_RESET == 0 {
            self.status |= status::DEVICE_NEEDS_RESET;
            self.interrupt.raise(CONFIG_CHANGE);
        }
    }

    /// `InterruptStatus`: what the transport raised, plus a standing
    /// used-buffer bit while a device whose back-end interrupts on its own is live.
    fn interrupt_status(&self) -> u32 {
        let out_of_band = self.device.interrupts_out_of_band()
            && self.status_is(status::DRIVER_OK, status::DEVICE_NEEDS_RESET | status::FAILED);
        self.interrupt.status() | if out_of_band { USED_BUFFER } else { 0 }
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.offered_features();
        self.status & status::DRIVER != 0
            && !self.unknown_features
            && self.driver_features & !offered == 0
            && self.driver_features & VIRTIO_F_VERSION_1 != 0
    }

    fn queues_valid(&self) -> bool {
        self.queues.iter().filter(|q| q.ready()).all(|q| q.is_valid(&self.mem))
    }

    fn notify(&mut self, index: u32) {
        let live = self.status_is(status::DRIVER_OK, status::DEVICE_NEEDS_RESET | status::FAILED);
        let index = index as usize;
        match self.queues.get_mut(index) {
            Some(queue) if live && queue.ready() => {
                if self.device.process_queue(index, queue, &self.mem) {
                    self.interrupt.raise(USED_BUFFER);
                }
            }
            _ => self.stats.ignored_notifies += 1,
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        for queue in &mut self.queues {
            queue.reset();
        }
        self.interrupt.clear();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.unknown_features = false;
        self.queue_sel = 0;
    }

    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        if !matches!(data.len(), 1 | 2 | 4 | 8) {
            self.stats.bad_accesses += 1;
            return;
        }
        let config = self.device.config();
        let range = usize::try_from(offset).ok().and_then(|start| Some(start..start.checked_add(data.len())?));
        match range.and_then(|r| config.get(r)) {
            Some(bytes) => data.copy_from_slice(bytes),
            None => self.stats.bad_accesses += 1,
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let in_range =
            offset.checked_add(data.len() as u64).is_some_and(|end| end <= self.device.config().len() as u64);
        if !matches!(data.len(), 1 | 2 | 4 | 8) || !in_range {
            self.stats.bad_accesses += 1;
            return;
        }
        self.device.write_config(offset, data);
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    /// All of `set` and none of `clear` are in the status register.
    fn status_is(&self, set: u32, clear: u32) -> bool {
        self.status & set == set && self.status & clear == 0
    }
}

#[cfg(test)]
mod tests;
