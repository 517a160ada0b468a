//! An 8250/16550A UART, transmit side only, with bounded host-side output.

mod device;
mod event_handler;

pub use self::device::{Serial, SerialStats};
