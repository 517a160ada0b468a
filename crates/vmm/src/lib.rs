//! Moat's KVM microVM monitor, built on the rust-vmm crates.
//!
//! This crate turns a [`VmConfig`] and a guest payload into a running KVM
//! virtual machine: guest RAM backed by a memfd, x86_64 vCPUs (one thread
//! each, APs started by the guest with INIT/SIPI), legacy port-I/O devices
//! (8250 serial, a debug-exit port, a power button, an i8042 reset line),
//! and virtio-mmio devices on an MMIO bus with their interrupts delivered by
//! KVM's irqchip: block in-process, and virtio-fs and vsock through a
//! vhost-user front-end to external back-ends (`virtiofsd`, `moat-vsock`)
//! that map guest RAM and are kicked through KVM ioeventfds. Payloads are flat code or ELF entered in long
//! mode, or a Linux kernel set up through the x86 boot protocols (`vmlinux`
//! through PVH, `bzImage` through the 64-bit protocol: memory map, command
//! line, initrd, MP table).
//!
//! The Linux boot set-up is proven with freestanding guests entered exactly
//! as Linux would be; **no Linux kernel has booted on it**. It holds no
//! sandbox policy: the `sandbox-core` crate decides what runs, this crate
//! only runs it.
//!
//! A built VM runs on its own threads ([`runtime`]): one per vCPU plus a
//! VMM thread serving a small control API over a Unix socket ([`api`]),
//! each thread confined by its own seccomp filter ([`seccomp`]). The
//! `moat-vmm` binary (`src/main.rs`) is that, launched per sandbox.
//!
//! Reading order: [`builder`] (the recipe) → [`memory`] → [`vm`] →
//! [`runtime`] → [`vcpu`] → [`device_manager`] → [`devices`]; everything
//! architecture-specific lives behind [`arch`].

pub mod api;
pub mod arch;
pub mod builder;
pub mod config;
pub mod device_manager;
pub mod devices;
pub mod jail;
mod kick;
pub mod loader;
pub mod memory;
pub mod runtime;
pub mod seccomp;
pub mod vcpu;
pub mod vm;

pub use api::{ApiClient, ApiError, VmState, VmStats};
pub use arch::{BootEntry, LinuxBootError};
pub use builder::{build_microvm, BuildError, MicroVm};
pub use config::{ConfigError, DiskConfig, FsConfig, VmConfig, VsockConfig};
pub use device_manager::{AttachError, BusDevice, BusError, GuestRequest, MmioSlot, UnmappedAccesses, VhostUserHandle};
pub use devices::virtio::block::BlockStats;
pub use loader::{LoadError, Payload};
pub use memory::{GuestMemory, MemoryError};
pub use runtime::{RunOptions, RunReport};
pub use vcpu::{RunError, RunOutcome};
