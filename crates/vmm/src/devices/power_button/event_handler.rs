//! Wires the power button to the port-I/O bus.

use super::device::PowerButton;
use crate::device_manager::{BusDevice, GuestRequest};

impl BusDevice for PowerButton {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = self.read_register();
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> Option<GuestRequest> {
        None
    }
}
