//! The Linux x86 boot protocols: a `vmlinux` through its PVH entry, a
//! `bzImage` through the 64-bit boot protocol. Both end in a
//! [`BootEntry`](super::regs::BootEntry) for the boot vCPU.

mod boot_info;
mod bzimage;
mod pvh;
mod setup_header;
#[cfg(any(test, feature = "test-utils"))]
mod testing;

pub use self::boot_info::{initrd_address, InitrdPlacement, LinuxBootError};
pub use self::bzimage::{load_bzimage, STARTUP_64_OFFSET};
pub use self::pvh::{load_pvh, PVH_CMDLINE_MAX, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR};
pub use self::setup_header::{HeaderError, SetupHeader};
#[cfg(any(test, feature = "test-utils"))]
pub use self::testing::FakeBzImage;
