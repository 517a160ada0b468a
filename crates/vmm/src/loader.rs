//! Placing the guest payload in RAM and finding its entry point.

use std::io::Cursor;

use linux_loader::loader::{elf::Elf, KernelLoader};
use vm_memory::GuestAddress;

use crate::arch::PAYLOAD_ADDR;
use crate::memory::{GuestMemory, MemoryError};

/// What to run in the guest.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// Raw machine code, loaded and entered at [`PAYLOAD_ADDR`].
    Flat(&'a [u8]),
    /// A static 64-bit ELF whose loadable segments sit at or above
    /// [`PAYLOAD_ADDR`]; entered at its `e_entry`.
    Elf(&'a [u8]),
}

/// The payload could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the flat payload does not fit in guest RAM")]
    Flat(#[source] MemoryError),
    #[error("the ELF payload is invalid or does not fit in guest RAM")]
    Elf(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Copies `payload` into `memory`; returns the guest entry address.
pub fn load(memory: &GuestMemory, payload: Payload<'_>) -> Result<u64, LoadError> {
    match payload {
        Payload::Flat(code) => {
            memory.write(PAYLOAD_ADDR, code).map_err(LoadError::Flat)?;
            Ok(PAYLOAD_ADDR)
        }
        Payload::Elf(image) => {
            let loaded = Elf::load(memory.backend(), None, &mut Cursor::new(image), Some(GuestAddress(PAYLOAD_ADDR)))
                .map_err(|e| LoadError::Elf(Box::new(e)))?;
            Ok(loaded.kernel_load.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_payload_lands_at_the_payload_address() {
        let mem = GuestMemory::new(2).unwrap();
        assert_eq!(load(&mem, Payload::Flat(&[0xf4])).unwrap(), PAYLOAD_ADDR);
        let mut b = [0u8];
        mem.read(PAYLOAD_ADDR, &mut b).unwrap();
        assert_eq!(b, [0xf4]);
    }

    #[test]
    fn oversized_and_garbage_payloads_are_errors() {
        let mem = GuestMemory::new(2).unwrap();
        let big = vec![0u8; 2 << 20];
        assert!(matches!(load(&mem, Payload::Flat(&big)), Err(LoadError::Flat(_))));
        assert!(matches!(load(&mem, Payload::Elf(b"not an elf at all, sorry")), Err(LoadError::Elf(_))));
    }
}
