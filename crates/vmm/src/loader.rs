//! Placing the guest payload in RAM and deciding how the boot vCPU enters it.

use std::io::Cursor;

use linux_loader::loader::{elf::Elf, KernelLoader};
use vm_memory::GuestAddress;

use crate::arch::{self, BootEntry, LinuxBootError, PAYLOAD_ADDR};
use crate::memory::{GuestMemory, MemoryError};

/// What to run in the guest.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// Raw machine code, loaded and entered in long mode at [`PAYLOAD_ADDR`].
    Flat(&'a [u8]),
    /// A static 64-bit ELF whose loadable segments sit at or above
    /// [`PAYLOAD_ADDR`]; entered in long mode at its `e_entry`.
    Elf(&'a [u8]),
    /// A Linux `vmlinux` booted through its PVH entry: 32-bit protected
    /// mode, EBX = `hvm_start_info` (command line, memory map, initrd).
    LinuxPvh { vmlinux: &'a [u8], initrd: Option<&'a [u8]>, cmdline: &'a str },
    /// A Linux `bzImage` booted through the 64-bit boot protocol: long mode
    /// at `startup_64`, RSI = the zero page.
    LinuxBzImage { bzimage: &'a [u8], initrd: Option<&'a [u8]>, cmdline: &'a str },
}

/// The payload could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the flat payload does not fit in guest RAM")]
    Flat(#[source] MemoryError),
    #[error("the ELF payload is invalid or does not fit in guest RAM")]
    Elf(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("could not set up the Linux kernel")]
    Linux(#[from] LinuxBootError),
}

/// Copies `payload` into `memory`; returns how the boot vCPU enters it.
/// For Linux, `devices_cmdline` (the `virtio_mmio.device=` entries) is
/// appended to the payload's command line.
pub fn load(memory: &GuestMemory, payload: Payload<'_>, devices_cmdline: &str) -> Result<BootEntry, LoadError> {
    match payload {
        Payload::Flat(code) => {
            memory.write(PAYLOAD_ADDR, code).map_err(LoadError::Flat)?;
            Ok(BootEntry::long_mode(PAYLOAD_ADDR))
        }
        Payload::Elf(image) => {
            let loaded = Elf::load(memory.backend(), None, &mut Cursor::new(image), Some(GuestAddress(PAYLOAD_ADDR)))
                .map_err(|e| LoadError::Elf(Box::new(e)))?;
            Ok(BootEntry::long_mode(loaded.kernel_load.0))
        }
        Payload::LinuxPvh { vmlinux, initrd, cmdline } => {
            Ok(arch::load_pvh(memory, vmlinux, initrd, &full_cmdline(cmdline, devices_cmdline))?)
        }
        Payload::LinuxBzImage { bzimage, initrd, cmdline } => {
            Ok(arch::load_bzimage(memory, bzimage, initrd, &full_cmdline(cmdline, devices_cmdline))?)
        }
    }
}

/// `cmdline` and `devices`, space-separated, either possibly empty.
fn full_cmdline(cmdline: &str, devices: &str) -> String {
    [cmdline.trim(), devices.trim()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_payload_lands_at_the_payload_address() {
        let mem = GuestMemory::new(2).unwrap();
        assert_eq!(load(&mem, Payload::Flat(&[0xf4]), "").unwrap(), BootEntry::long_mode(PAYLOAD_ADDR));
        let mut b = [0u8];
        mem.read(PAYLOAD_ADDR, &mut b).unwrap();
        assert_eq!(b, [0xf4]);
    }

    #[test]
    fn oversized_and_garbage_payloads_are_errors() {
        let mem = GuestMemory::new(2).unwrap();
        let big = vec![0u8; 2 << 20];
        assert!(matches!(load(&mem, Payload::Flat(&big), ""), Err(LoadError::Flat(_))));
        assert!(matches!(load(&mem, Payload::Elf(b"not an elf at all, sorry"), ""), Err(LoadError::Elf(_))));
        let bz = Payload::LinuxBzImage { bzimage: b"nope", initrd: None, cmdline: "" };
        assert!(matches!(load(&mem, bz, ""), Err(LoadError::Linux(LinuxBootError::Header(_)))));
    }

    #[test]
    fn device_entries_join_the_command_line() {
        assert_eq!(
            full_cmdline("console=ttyS0", "virtio_mmio.device=4K@0xd0000000:5"),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5"
        );
        assert_eq!(full_cmdline("console=ttyS0 ", ""), "console=ttyS0");
        assert_eq!(full_cmdline("", "a=b"), "a=b");
        assert_eq!(full_cmdline("", ""), "");
    }

    #[test]
    fn a_linux_payload_gets_the_device_entries() {
        let mem = GuestMemory::new(16).unwrap();
        let bzimage = arch::FakeBzImage::default().build(&[0x90; 0x400]);
        let payload = Payload::LinuxBzImage { bzimage: &bzimage, initrd: None, cmdline: "console=ttyS0" };
        let entry = load(&mem, payload, "virtio_mmio.device=4K@0xd0000000:5").unwrap();
        assert_eq!(entry, BootEntry::LongMode { rip: 0x20_0200, rsi: arch::ZERO_PAGE_ADDR });
        let want = b"console=ttyS0 virtio_mmio.device=4K@0xd0000000:5\0";
        let mut buf = vec![0u8; want.len()];
        mem.read(arch::CMDLINE_ADDR, &mut buf).unwrap();
        assert_eq!(&buf, want);
    }
}
