//! A paravirtual power button: how the VMM asks a guest to shut down.
//!
//! Freestanding guests have no ACPI and no keyboard; they poll one port and
//! power off (debug-exit, or the i8042 reset line) once it reads non-zero.
//! A Linux guest will be asked through its agent instead; the VMM treats a
//! guest's reset or power-off as a clean exit either way.

mod device;
mod event_handler;

pub use self::device::PowerButton;
