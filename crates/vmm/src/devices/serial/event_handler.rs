//! Wires the UART to the port-I/O bus. Output is polled from the buffer by
//! the VMM thread; the interrupt line is an irqfd the device manager made.

use super::device::Serial;
use crate::device_manager::{BusDevice, GuestRequest};

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART is byte-wide; wider reads see the register then all ones.
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = self.read_register(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<GuestRequest> {
        if let [value] = data {
            self.write_register(offset, *value);
        }
        None
    }
}
