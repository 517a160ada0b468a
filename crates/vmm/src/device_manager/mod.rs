//! Attaching devices to the port-I/O and MMIO buses, and dispatching guest
//! accesses to them.
//!
//! A guest access that hits no device is not an error: reads return all
//! ones (as on real hardware), writes are dropped, and both are counted.

mod bus;

use std::sync::{Arc, Mutex};

pub use self::bus::{Bus, BusDevice, BusError, GuestRequest};

use crate::arch;
use crate::devices::{debug_exit::DebugExit, i8042::I8042, serial::Serial};

/// Guest accesses that hit no device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnmappedAccesses {
    pub reads: u64,
    pub writes: u64,
}

/// The VM's two buses and the legacy devices on them.
#[derive(Debug)]
pub struct DeviceManager {
    pio: Bus,
    mmio: Bus,
    unmapped: UnmappedAccesses,
    serial: Arc<Mutex<Serial>>,
}

impl DeviceManager {
    /// Attaches COM1, the debug-exit port and the i8042 reset line.
    pub fn with_legacy_devices(serial_limit: usize) -> Result<Self, BusError> {
        let serial = Arc::new(Mutex::new(Serial::new(serial_limit)));
        let mut pio = Bus::default();
        pio.insert(u64::from(arch::COM1_PORT), 8, serial.clone())?;
        pio.insert(u64::from(arch::DEBUG_EXIT_PORT), 1, Arc::new(Mutex::new(DebugExit)))?;
        pio.insert(u64::from(arch::I8042_PORT), 5, Arc::new(Mutex::new(I8042)))?;
        Ok(Self { pio, mmio: Bus::default(), unmapped: UnmappedAccesses::default(), serial })
    }

    /// Attaches `device` to guest-physical `[base, base + len)`.
    pub fn attach_mmio(&mut self, base: u64, len: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        self.mmio.insert(base, len, device)
    }

    /// The serial console.
    pub fn serial(&self) -> &Arc<Mutex<Serial>> {
        &self.serial
    }

    /// Accesses that hit no device so far.
    pub fn unmapped(&self) -> UnmappedAccesses {
        self.unmapped
    }

    pub(crate) fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        if !self.pio.read(u64::from(port), data) {
            self.unmapped_read(data);
        }
    }

    pub(crate) fn pio_write(&mut self, port: u16, data: &[u8]) -> Option<GuestRequest> {
        self.pio.write(u64::from(port), data).unwrap_or_else(|| self.unmapped_write())
    }

    pub(crate) fn mmio_read(&mut self, addr: u64, data: &mut [u8]) {
        if !self.mmio.read(addr, data) {
            self.unmapped_read(data);
        }
    }

    pub(crate) fn mmio_write(&mut self, addr: u64, data: &[u8]) -> Option<GuestRequest> {
        self.mmio.write(addr, data).unwrap_or_else(|| self.unmapped_write())
    }

    fn unmapped_read(&mut self, data: &mut [u8]) {
        data.fill(0xff);
        self.unmapped.reads += 1;
    }

    fn unmapped_write(&mut self) -> Option<GuestRequest> {
        self.unmapped.writes += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmapped_port_reads_all_ones_and_is_counted() {
        let mut dm = DeviceManager::with_legacy_devices(16).unwrap();
        let mut data = [0u8; 2];
        dm.pio_read(0x1234, &mut data);
        assert_eq!(data, [0xff, 0xff]);
        assert_eq!(dm.pio_write(0x1234, &[1]), None);
        let mut word = [0u8; 4];
        dm.mmio_read(0xd000_0000, &mut word);
        assert_eq!(word, [0xff; 4]);
        assert_eq!(dm.unmapped(), UnmappedAccesses { reads: 2, writes: 1 });
    }

    #[test]
    fn legacy_ports_reach_their_devices() {
        let mut dm = DeviceManager::with_legacy_devices(16).unwrap();
        assert_eq!(dm.pio_write(arch::COM1_PORT, b"h"), None);
        assert_eq!(dm.pio_write(arch::DEBUG_EXIT_PORT, &[7]), Some(GuestRequest::Exit(7)));
        assert_eq!(dm.pio_write(arch::I8042_PORT + 4, &[0xfe]), Some(GuestRequest::Reset));
        assert_eq!(dm.serial().lock().unwrap().output(), b"h");
        assert_eq!(dm.unmapped(), UnmappedAccesses::default());
    }
}
