//! COM1: an 8250/16550A UART (rust-vmm's `vm-superio` model) with bounded
//! host-side output, a bounded input FIFO and its interrupt on IRQ 4.

mod device;
mod event_handler;

pub use self::device::{Serial, SerialStats};
