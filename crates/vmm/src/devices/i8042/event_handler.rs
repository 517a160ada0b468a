//! Wires the i8042 to the port-I/O bus.

use super::device::I8042;
use crate::device_manager::{BusDevice, GuestRequest};

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(self.read_register(offset));
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<GuestRequest> {
        let value = *data.first()?;
        self.write_register(offset, value)
    }
}
