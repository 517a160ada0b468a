//! A bus: non-overlapping address ranges, each owned by one device.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// Something a guest write asks of the VMM beyond the device itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRequest {
    /// End the run with this exit code (debug-exit port).
    Exit(u8),
    /// Reset the machine (i8042 pulse); for now this ends the run.
    Reset,
}

/// A device reachable through port I/O or MMIO. `offset` is relative to the
/// base the device was attached at.
pub trait BusDevice: Send {
    /// Fills `data` with the value read at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a guest write; returns a request for the VMM, if any.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<GuestRequest>;
}

/// A device could not be attached.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("range {base:#x}+{len:#x} is empty or wraps around")]
    InvalidRange { base: u64, len: u64 },
    #[error("range {base:#x}+{len:#x} overlaps a device at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
}

struct Slot {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Address ranges → devices.
#[derive(Default)]
pub struct Bus {
    slots: BTreeMap<u64, Slot>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.slots.iter().map(|(b, s)| (*b, s.len))).finish()
    }
}

impl Bus {
    /// Attaches `device` at `[base, base + len)`; overlaps are rejected.
    pub fn insert(&mut self, base: u64, len: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        let end = match base.checked_add(len) {
            Some(end) if len > 0 => end,
            _ => return Err(BusError::InvalidRange { base, len }),
        };
        let below = self.slots.range(..end).next_back();
        if let Some((&other, slot)) = below {
            if other + slot.len > base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        self.slots.insert(base, Slot { len, device });
        Ok(())
    }

    /// Reads from the device covering the whole access; `false` if none does.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((device, offset)) => {
                lock(device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device covering the whole access; `None` if none does.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<Option<GuestRequest>> {
        let (device, offset) = self.resolve(addr, data.len())?;
        Some(lock(device).write(offset, data))
    }

    fn resolve(&self, addr: u64, len: usize) -> Option<(&Arc<Mutex<dyn BusDevice>>, u64)> {
        let (&base, slot) = self.slots.range(..=addr).next_back()?;
        let offset = addr - base;
        let fits = offset.checked_add(len as u64).is_some_and(|end| end <= slot.len);
        fits.then_some((&slot.device, offset))
    }
}

/// A device whose lock was poisoned by a panic elsewhere is still usable for
/// register emulation; the VMM must not panic in turn.
fn lock(device: &Arc<Mutex<dyn BusDevice>>) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and answers reads with the offset.
    #[derive(Default)]
    struct Probe {
        last: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Option<GuestRequest> {
            self.last = Some((offset, data.to_vec()));
            (data == [0xee]).then_some(GuestRequest::Exit(1))
        }
    }

    fn probe() -> Arc<Mutex<Probe>> {
        Arc::new(Mutex::new(Probe::default()))
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let mut bus = Bus::default();
        bus.insert(0x100, 0x10, probe()).unwrap();
        bus.insert(0x110, 0x10, probe()).unwrap(); // adjacent is fine
        bus.insert(0xf0, 0x10, probe()).unwrap();
        for (base, len) in [(0x10f, 1), (0xff, 2), (0x90, 0x100), (0x108, 4)] {
            assert!(matches!(bus.insert(base, len, probe()), Err(BusError::Overlap { .. })), "{base:#x}+{len:#x}");
        }
        assert_eq!(bus.insert(0x200, 0, probe()), Err(BusError::InvalidRange { base: 0x200, len: 0 }));
        assert!(matches!(bus.insert(u64::MAX, 2, probe()), Err(BusError::InvalidRange { .. })));
    }

    #[test]
    fn accesses_reach_the_device_with_relative_offsets() {
        let mut bus = Bus::default();
        let p = probe();
        bus.insert(0x3f8, 8, p.clone()).unwrap();

        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);
        assert_eq!(bus.write(0x3f9, &[7]), Some(None));
        assert_eq!(p.lock().unwrap().last, Some((1, vec![7])));
        assert_eq!(bus.write(0x3f8, &[0xee]), Some(Some(GuestRequest::Exit(1))));
    }

    #[test]
    fn accesses_outside_or_straddling_are_unmapped() {
        let mut bus = Bus::default();
        bus.insert(0x3f8, 8, probe()).unwrap();
        let mut word = [0u8; 4];
        assert!(!bus.read(0x3f7, &mut word[..1]));
        assert!(!bus.read(0x400, &mut word[..1]));
        assert!(!bus.read(0x3fe, &mut word), "straddles the end");
        assert_eq!(bus.write(0x3fe, &[0; 4]), None);
    }
}
