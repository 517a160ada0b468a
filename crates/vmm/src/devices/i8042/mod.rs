//! Just enough of the i8042 keyboard controller for a guest to reset the
//! machine (command 0xFE on port 0x64), the way Linux reboots.

mod device;
mod event_handler;

pub use self::device::I8042;
