//! Moat's KVM microVM monitor, built on the rust-vmm crates.
//!
//! This crate turns a [`VmConfig`] and a guest payload into a running KVM
//! virtual machine: guest RAM backed by a memfd, one x86_64 vCPU entered
//! directly in 64-bit long mode, legacy port-I/O devices (8250 serial, a
//! debug-exit port, an i8042 reset line), and virtio-mmio devices (block)
//! on an MMIO bus with their interrupts delivered by KVM's irqchip.
//!
//! It is **not** a Linux boot path yet (no boot params) and it holds no
//! sandbox policy: the `sandbox-core` crate decides what runs, this crate
//! only runs it.
//!
//! Reading order: [`builder`] (the recipe) → [`memory`] → [`vm`] →
//! [`vcpu`] → [`device_manager`] → [`devices`]; everything
//! architecture-specific lives behind [`arch`].

pub mod arch;
pub mod builder;
pub mod config;
pub mod device_manager;
pub mod devices;
pub mod loader;
pub mod memory;
pub mod vcpu;
pub mod vm;
mod watchdog;

pub use builder::{build_microvm, BuildError, MicroVm, RunReport};
pub use config::{ConfigError, DiskConfig, VmConfig};
pub use device_manager::{AttachError, BusDevice, BusError, GuestRequest, MmioSlot, UnmappedAccesses};
pub use devices::virtio::block::BlockStats;
pub use loader::{LoadError, Payload};
pub use memory::{GuestMemory, MemoryError};
pub use vcpu::{RunError, RunOutcome};
