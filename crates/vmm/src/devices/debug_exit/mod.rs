//! A one-byte port that ends the run: the guest writes its exit code.

mod device;
mod event_handler;

pub use self::device::DebugExit;
