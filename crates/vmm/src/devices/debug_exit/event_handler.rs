//! Wires the debug-exit port to the port-I/O bus.

use super::device::DebugExit;
use crate::device_manager::{BusDevice, GuestRequest};

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<GuestRequest> {
        self.on_write(data)
    }
}
