//! What a caller asks for when building a microVM.

use std::path::PathBuf;
use std::time::Duration;

use crate::arch;
use crate::devices::virtio::vhost_user::FS_TAG_LEN;

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
    /// Shared directories, each a virtio-fs device served by a vhost-user
    /// back-end (virtiofsd); their slots follow the disks'.
    pub fs: Vec<FsConfig>,
    /// A virtio-vsock device served by a vhost-user back-end (moat-vsock);
    /// its slot comes last.
    pub vsock: Option<VsockConfig>,
}

/// One virtio-fs device. The back-end must already listen on `socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The vhost-user socket of the back-end (`virtiofsd --socket-path`).
    pub socket: PathBuf,
    /// The tag the guest mounts (`mount -t virtiofs <tag> <dir>`): 1 to 36
    /// bytes, no NUL.
    pub tag: String,
}

/// The virtio-vsock device. The back-end must already listen on `socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The vhost-user socket of the back-end (`moat-vsock --socket`).
    pub socket: PathBuf,
    /// The guest's CID: 3 or more, below 2^32 - 1 (`VMADDR_CID_ANY`).
    pub guest_cid: u64,
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
            fs: Vec::new(),
            vsock: None,
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
    #[error("at most {max} virtio devices are supported, got {0}", max = max_disks())]
    TooManyDevices(usize),
    #[error("virtio-fs tag {0:?} must be 1 to {FS_TAG_LEN} bytes without NUL")]
    FsTag(String),
    #[error("guest CID {0} is reserved or out of range (3..4294967295)")]
    GuestCid(u64),
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
        let devices = self.disks.len() + self.fs.len() + usize::from(self.vsock.is_some());
        if devices > max_disks() {
            return Err(ConfigError::TooManyDevices(devices));
        }
        if let Some(fs) =
            self.fs.iter().find(|fs| fs.tag.is_empty() || fs.tag.len() > FS_TAG_LEN || fs.tag.contains('\0'))
        {
            return Err(ConfigError::FsTag(fs.tag.clone()));
        }
        if let Some(vsock) = self.vsock.as_ref().filter(|v| !(3..u64::from(u32::MAX)).contains(&v.guest_cid)) {
            return Err(ConfigError::GuestCid(vsock.guest_cid));
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
        fn fs(tag: &str) -> FsConfig {
            FsConfig { socket: "/run/fs.sock".into(), tag: tag.into() }
        }
        assert_eq!(bad(|c| c.fs = vec![fs("")]), ConfigError::FsTag(String::new()));
        assert_eq!(bad(|c| c.fs = vec![fs("ok"), fs(&"t".repeat(37))]), ConfigError::FsTag("t".repeat(37)));
        assert_eq!(bad(|c| c.fs = vec![fs("a\0b")]), ConfigError::FsTag("a\0b".into()));
        fn vsock(guest_cid: u64) -> Option<VsockConfig> {
            Some(VsockConfig { socket: "/run/v.sock".into(), guest_cid })
        }
        for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
            let mut c = VmConfig { vsock: vsock(cid), ..VmConfig::default() };
            assert_eq!(c.validate(), Err(ConfigError::GuestCid(cid)));
            c.vsock = vsock(3);
            c.disks = vec![DiskConfig { path: "/dev/null".into(), read_only: true }; max_disks()];
            assert_eq!(c.validate(), Err(ConfigError::TooManyDevices(max_disks() + 1)));
        }
    }

    #[test]
    fn shared_directories_and_vsock_at_their_limits_are_valid() {
        let config = VmConfig {
            fs: vec![FsConfig { socket: "/run/fs.sock".into(), tag: "t".repeat(FS_TAG_LEN) }],
            vsock: Some(VsockConfig { socket: "/run/v.sock".into(), guest_cid: u64::from(u32::MAX) - 1 }),
            ..VmConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
    }
}
