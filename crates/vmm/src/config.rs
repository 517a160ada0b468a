//! What a caller asks for when building a microVM.

use std::path::PathBuf;
use std::time::Duration;

use crate::arch;

/// Smallest guest RAM we accept: the payload is loaded at 1 MiB.
pub const MIN_MEM_MIB: u32 = 2;
/// Largest guest RAM we accept (1 TiB); a typo should not reserve the host.
pub const MAX_MEM_MIB: u32 = 1 << 20;
/// Default bound on buffered serial output (1 MiB).
pub const DEFAULT_SERIAL_LIMIT: usize = 1 << 20;

/// The shape of one microVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// Number of vCPUs, 1..=[`arch::max_cpus`]. vCPU 0 boots; the others
    /// wait for the guest to start them (INIT, startup IPI).
    pub vcpus: u8,
    /// Most bytes of serial output kept on the host before further output is
    /// dropped (and counted). Draining the output makes room again.
    pub serial_limit: usize,
    /// Wall-clock budget for [`crate::MicroVm::run`]; past it the vCPUs are
    /// kicked out of the guest and the run ends with `RunOutcome::TimedOut`.
    /// [`Duration::MAX`] (or anything too far off to represent) means none.
    pub timeout: Duration,
    /// Raw disk images, each a virtio-blk device, in virtio-mmio slot order.
    pub disks: Vec<DiskConfig>,
}

/// One virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The raw image file; its length in whole 512-byte sectors is the capacity.
    pub path: PathBuf,
    /// Offer the disk read-only (`VIRTIO_BLK_F_RO`); writes fail with IOERR.
    pub read_only: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            mem_mib: 128,
            vcpus: 1,
            serial_limit: DEFAULT_SERIAL_LIMIT,
            timeout: Duration::from_secs(30),
            disks: Vec::new(),
        }
    }
}

/// A [`VmConfig`] that cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("guest memory must be {MIN_MEM_MIB}..={MAX_MEM_MIB} MiB, got {0} MiB")]
    MemorySize(u32),
    #[error("a VM has 1..={max} vCPUs, got {0}", max = arch::max_cpus())]
    VcpuCount(u8),
    #[error("the serial output limit must be at least 1 byte")]
    SerialLimit,
    #[error("the run timeout must be non-zero")]
    Timeout,
    #[error("at most {max} disks are supported, got {0}", max = max_disks())]
    TooManyDisks(usize),
}

fn max_disks() -> usize {
    arch::VIRTIO_IRQS.count()
}

impl VmConfig {
    /// Checks the config before any resource is allocated.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_mib) {
            return Err(ConfigError::MemorySize(self.mem_mib));
        }
        if !(1..=arch::max_cpus()).contains(&self.vcpus) {
            return Err(ConfigError::VcpuCount(self.vcpus));
        }
        if self.serial_limit == 0 {
            return Err(ConfigError::SerialLimit);
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Timeout);
        }
        if self.disks.len() > max_disks() {
            return Err(ConfigError::TooManyDisks(self.disks.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(VmConfig::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_values() {
        let bad = |f: fn(&mut VmConfig)| {
            let mut c = VmConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.mem_mib = 1), ConfigError::MemorySize(1));
        assert_eq!(bad(|c| c.vcpus = 0), ConfigError::VcpuCount(0));
        assert_eq!(bad(|c| c.vcpus = u8::MAX), ConfigError::VcpuCount(u8::MAX));
        assert_eq!(bad(|c| c.serial_limit = 0), ConfigError::SerialLimit);
        assert_eq!(bad(|c| c.timeout = Duration::ZERO), ConfigError::Timeout);
        assert_eq!(
            bad(|c| c.disks = vec![DiskConfig { path: "/dev/null".into(), read_only: true }; 20]),
            ConfigError::TooManyDisks(20)
        );
    }
}
