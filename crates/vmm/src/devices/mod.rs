//! Emulated devices. Each lives in `devices/<name>/`: register/spec logic in
//! `device.rs` (no fds), bus and event wiring in `event_handler.rs`.

pub mod debug_exit;
pub mod i8042;
pub mod power_button;
pub mod serial;
pub mod virtio;
