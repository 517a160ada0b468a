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
    /// The program's file name.
    pub(crate) fn binary(self) -> &'static str {
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
    let found = if tool == Tool::Vmm {
        let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
        let cargo_bin = crate::paths::home_dir().join(".cargo/bin");
        crate::host::resolve_program(tool.binary(), exe_dir.into_iter().chain([cargo_bin]))
            .or_else(|| search_path(tool.binary()))
    } else {
        search_path(tool.binary())
    };
    found.ok_or(BackendError::MissingTool { tool: tool.binary(), hint: tool.hint() })
}

pub use moat_images::tools::search_path;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_first_folder_with_an_executable_wins() {
        let [beside, cargo_bin] = [(); 2].map(|()| tempfile::tempdir().unwrap());
        let dirs = || [beside.path().to_path_buf(), cargo_bin.path().to_path_buf()];
        assert_eq!(crate::host::resolve_program("moat-vmm", dirs()), None);
        std::fs::write(beside.path().join("moat-vmm"), "").unwrap();
        assert_eq!(crate::host::resolve_program("moat-vmm", dirs()), None, "a file that is not executable is skipped");
        let installed = cargo_bin.path().join("moat-vmm");
        std::fs::write(&installed, "").unwrap();
        std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(crate::host::resolve_program("moat-vmm", dirs()), Some(installed));
        let built = beside.path().join("moat-vmm");
        std::fs::set_permissions(&built, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(crate::host::resolve_program("moat-vmm", dirs()), Some(built), "the same build as moat comes first");
    }

    /// Runs in a child process (this test binary again) so that its working folder
    /// and `PATH` can be set without disturbing the other tests.
    #[test]
    fn search_path_never_finds_a_program_through_a_relative_entry() {
        const PLANTED: &str = "moat-planted-tool";
        if let Some(expect) = std::env::var_os("MOAT_TEST_SEARCH_EXPECT") {
            let found = search_path(PLANTED).map(PathBuf::into_os_string).unwrap_or_default();
            assert_eq!(found, expect, "PATH={:?}", std::env::var_os("PATH"));
            return;
        }
        let [cwd, abs] = [(); 2].map(|()| tempfile::tempdir().unwrap());
        let plant = |dir: &Path| {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(PLANTED), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(dir.join(PLANTED), std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        plant(cwd.path());
        plant(&cwd.path().join("relative"));
        plant(abs.path());
        let abs_tool = abs.path().join(PLANTED).into_os_string();
        let with_abs = format!(".:relative::{}", abs.path().display());
        for (path, expect) in [(".:relative::", "".into()), (with_abs.as_str(), abs_tool)] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "backend::tools::tests::search_path_never_finds_a_program_through_a_relative_entry"])
                .args(["--test-threads=1", "--nocapture"])
                .current_dir(cwd.path())
                .env("PATH", path)
                .env("MOAT_TEST_SEARCH_EXPECT", &expect)
                .output()
                .unwrap();
            let report = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "PATH={path}: a relative entry was used (or the absolute one missed)\n{report}"
            );
            assert!(report.contains("1 passed"), "the child ran no test:\n{report}");
        }
    }

    #[test]
    fn a_missing_monitor_says_how_to_install_it() {
        let err = BackendError::MissingTool { tool: Tool::Vmm.binary(), hint: Tool::Vmm.hint() }.to_string();
        assert!(err.starts_with("moat-vmm not found"), "{err}");
        assert!(err.contains("`cargo xtask install`") && err.contains("MOAT_VMM_BIN"), "{err}");
    }
}
