//! The one door to architecture-specific code.
//!
//! Only this folder may contain `cfg(target_arch)`. Generic code calls the
//! functions and constants re-exported here.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("moat-vmm supports only x86_64 hosts today");
