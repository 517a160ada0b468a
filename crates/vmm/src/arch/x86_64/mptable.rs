//! The Intel MultiProcessor Specification 1.4 table: how a guest without ACPI
//! (ours has `CONFIG_X86_MPPARSE` and no ACPI) learns its CPUs, its IOAPIC
//! and which IOAPIC pin each interrupt line arrives on.
//!
//! Placed in the last KiB of base memory, where Linux's `smp_scan_config`
//! looks: a 16-byte floating pointer, then the configuration table with one
//! processor entry per vCPU, an ISA bus, the IOAPIC, an interrupt entry per
//! IOAPIC pin in use, and the two local-APIC lines (ExtINT, NMI).
//!
//! The routing mirrors KVM's default GSI routing: GSI 0 (the PIT) reaches
//! IOAPIC pin 2, every other GSI the pin of the same number. Lines 16..23
//! (virtio) are listed as ISA lines too, so Linux maps them at boot.

use super::layout::{BASE_RAM_END, IOAPIC_ADDR, IOAPIC_PINS, LAPIC_ADDR, MPTABLE_ADDR};
use crate::memory::{GuestMemory, MemoryError};

/// Bytes available for the whole table.
const MPTABLE_BYTES: usize = (BASE_RAM_END - MPTABLE_ADDR) as usize;
const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const PROCESSOR_LEN: usize = 20;
const ENTRY_LEN: usize = 8;
/// MP specification revision 1.4.
const SPEC_REV: u8 = 4;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Integrated local APIC (what KVM emulates).
const LAPIC_VERSION: u8 = 0x14;
/// Family 6; the guest reads the real signature from CPUID.
const CPU_SIGNATURE: u32 = 6 << 8;
/// CPUID.1:EDX FPU and APIC.
const CPU_FEATURES: u32 = (1 << 9) | 1;
/// KVM's IOAPIC reports version 0x11.
const IOAPIC_VERSION: u8 = 0x11;
const ISA_BUS_ID: u8 = 0;
/// Local interrupt destination meaning "every local APIC".
const ALL_LAPICS: u8 = 0xff;

/// The MP table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("an MP table lists 1..={max} vCPUs, not {cpus}")]
    CpuCount { cpus: u8, max: u8 },
    #[error("could not write the MP table into guest RAM")]
    Memory(#[source] MemoryError),
}

/// `(ISA line, IOAPIC pin)` for every interrupt entry: line 0 on pin 2,
/// line 2 (the PIC cascade) nowhere, every other line on its own pin.
pub fn interrupt_routes() -> impl Iterator<Item = (u8, u8)> {
    std::iter::once((0, 2)).chain((1..IOAPIC_PINS).filter(|&pin| pin != 2).map(|pin| (pin, pin)))
}

/// The most vCPUs whose processor entries fit.
pub fn max_cpus() -> u8 {
    let fixed = FLOATING_POINTER_LEN + HEADER_LEN + ENTRY_LEN * (2 + interrupt_routes().count() + 2);
    ((MPTABLE_BYTES - fixed) / PROCESSOR_LEN).min(usize::from(u8::MAX)) as u8
}

/// The table for `cpus` vCPUs (LAPIC IDs 0.., vCPU 0 bootstraps), as the
/// bytes to place at [`MPTABLE_ADDR`].
pub fn mptable(cpus: u8) -> Result<Vec<u8>, MpTableError> {
    let max = max_cpus();
    if cpus == 0 || cpus > max {
        return Err(MpTableError::CpuCount { cpus, max });
    }
    let ioapic_id = cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    count += 2;
    // Flags 0: polarity and trigger as the bus defines them (ISA: edge, high).
    for (line, pin) in interrupt_routes() {
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT, 0, 0, ISA_BUS_ID, line, ioapic_id, pin]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0, ISA_BUS_ID, 0, 0, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0, ISA_BUS_ID, 0, ALL_LAPICS, 1]);
    count += 2;

    let table_addr = MPTABLE_ADDR + FLOATING_POINTER_LEN as u64;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    header.extend_from_slice(&[SPEC_REV, 0]); // checksum below
    header.extend_from_slice(b"MOAT    ");
    header.extend_from_slice(b"MOAT-VMM    ");
    header.extend_from_slice(&[0; 4]); // no OEM table
    header.extend_from_slice(&[0; 2]);
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    header.extend_from_slice(&[0; 4]); // no extended table, reserved
    header.extend_from_slice(&entries);
    header[7] = checksum(&header);

    let mut floating = Vec::with_capacity(FLOATING_POINTER_LEN);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&(table_addr as u32).to_le_bytes());
    floating.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]); // length in 16-byte units
    floating[10] = checksum(&floating);

    floating.extend_from_slice(&header);
    debug_assert!(floating.len() <= MPTABLE_BYTES);
    Ok(floating)
}

/// Writes the table for `cpus` vCPUs at [`MPTABLE_ADDR`].
pub fn write_mptable(memory: &GuestMemory, cpus: u8) -> Result<(), MpTableError> {
    memory.write(MPTABLE_ADDR, &mptable(cpus)?).map_err(MpTableError::Memory)
}

/// The byte that makes `bytes` sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)))
}

#[cfg(test)]
mod tests;
