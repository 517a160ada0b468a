//! Finding the host programs Moat drives.

use std::path::{Path, PathBuf};

use super::BackendError;

/// A host program Moat runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `qemu-system-x86_64`.
    Qemu,
    /// `virtiofsd`.
    Virtiofsd,
    /// `moat-vsock` (this workspace's vhost-user vsock backend).
    VsockBackend,
    /// `moat-vmm` (this workspace's KVM monitor).
    Vmm,
    /// `mkfs.ext4`.
    MkfsExt4,
}

impl Tool {
    fn binary(self) -> &'static str {
        match self {
            Tool::Qemu => "qemu-system-x86_64",
            Tool::Virtiofsd => "virtiofsd",
            Tool::VsockBackend => "moat-vsock",
            Tool::Vmm => "moat-vmm",
            Tool::MkfsExt4 => "mkfs.ext4",
        }
    }

    fn env_override(self) -> &'static str {
        match self {
            Tool::Qemu => "MOAT_QEMU",
            Tool::Virtiofsd => "MOAT_VIRTIOFSD",
            Tool::VsockBackend => "MOAT_VSOCK_BACKEND",
            Tool::Vmm => "MOAT_VMM_BIN",
            Tool::MkfsExt4 => "MOAT_MKFS_EXT4",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Tool::Qemu => "install it with `apt-get install qemu-system-x86` or run `cargo xtask setup`",
            Tool::Virtiofsd => "install it with `cargo install --locked virtiofsd` or run `cargo xtask setup`",
            Tool::VsockBackend => "build and install it from Moat's workspace with `cargo xtask install`",
            Tool::Vmm => {
                "build and install it from Moat's workspace with `cargo xtask install` \
                 (or put it beside `moat`, or set MOAT_VMM_BIN)"
            }
            Tool::MkfsExt4 => "install it with `apt-get install e2fsprogs`",
        }
    }
}

/// The path of `tool`: `$MOAT_<TOOL>` if set, else [`search_path`]. The
/// monitor `moat-vmm` is first looked for beside the running executable (the
/// same build as `moat`) and in `~/.cargo/bin` (where `cargo xtask install`
/// puts it), then on `$PATH`.
pub fn find_tool(tool: Tool) -> Result<PathBuf, BackendError> {
    if let Some(p) = std::env::var_os(tool.env_override()).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let missing = BackendError::MissingTool { tool: tool.binary(), hint: tool.hint() };
    if tool == Tool::Vmm {
        let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
        let cargo_bin = crate::paths::home_dir().join(".cargo/bin");
        let own = exe_dir.into_iter().chain([cargo_bin]);
        return own
            .map(|d| d.join(tool.binary()))
            .find(|p| is_executable(p))
            .or_else(|| search_path(tool.binary()))
            .ok_or(missing);
    }
    search_path(tool.binary()).ok_or(missing)
}

/// Finds an executable `program` on `$PATH`, then in `~/.cargo/bin` (where `cargo
/// install` puts virtiofsd and the vsock backend) and the sbin/bin folders a
/// non-login root shell may lack.
pub fn search_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [crate::paths::home_dir().join(".cargo/bin")]
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    std::env::split_paths(&path).chain(extra).map(|d| d.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}
