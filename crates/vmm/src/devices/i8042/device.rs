//! i8042 register model: no keyboard, an empty output buffer, and the
//! "pulse reset line" command.

use crate::device_manager::GuestRequest;

/// Offset of the command/status register from the data port (0x64 - 0x60).
pub const COMMAND: u64 = 4;
/// Pulse the CPU reset line.
pub const CMD_RESET: u8 = 0xfe;

/// The controller.
#[derive(Debug, Default, Clone, Copy)]
pub struct I8042;

impl I8042 {
    /// Status and data both read as zero: nothing to read, ready for input.
    pub fn read_register(&self, _offset: u64) -> u8 {
        0
    }

    /// Only the reset command does anything.
    pub fn write_register(&self, offset: u64, value: u8) -> Option<GuestRequest> {
        (offset == COMMAND && value == CMD_RESET).then_some(GuestRequest::Reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_requests_a_reset() {
        assert_eq!(I8042.write_register(COMMAND, CMD_RESET), Some(GuestRequest::Reset));
        assert_eq!(I8042.write_register(0, CMD_RESET), None, "data port");
        assert_eq!(I8042.write_register(COMMAND, 0xaa), None);
        assert_eq!(I8042.read_register(COMMAND), 0);
    }
}
