//! x86_64: guest layout and memory map, the boot vCPU (long mode or PVH's
//! protected mode), firmware tables (MP table), the Linux boot protocols,
//! in-kernel irqchip and PIT.

mod cpuid;
mod gdt;
mod lapic;
mod layout;
mod linux;
mod memory_map;
mod mptable;
mod msr;
mod paging;
mod regs;
mod setup;

pub use self::cpuid::filter_cpuid;
pub use self::gdt::{boot_gdt, gdt_entry, segment_from_gdt};
pub use self::lapic::wire_lint_pins;
pub use self::layout::*;
pub use self::linux::*;
pub use self::memory_map::{low_ram_end, memory_map, MemoryRange, E820_RAM, E820_RESERVED};
pub use self::mptable::{interrupt_routes, max_cpus, mptable, write_mptable, MpTableError};
pub use self::msr::boot_msrs;
pub use self::paging::{IdentityPageTables, PAGE_TABLE_BYTES};
pub use self::regs::{boot_fpu, boot_regs, boot_sregs, BootEntry};
pub(crate) use self::setup::kvm_err;
pub use self::setup::{configure_vcpus, setup_vm, write_boot_tables, ArchError};
