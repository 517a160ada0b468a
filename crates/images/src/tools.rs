//! Finding the host programs Moat runs (build tools, hypervisors, daemons):
//! only through absolute folders, never the working folder.

use std::path::{Path, PathBuf};

/// The first executable `program` in `dirs`, skipping every relative folder.
pub fn resolve_program(program: &str, dirs: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.into_iter().filter(|d| d.is_absolute()).map(|d| d.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The user's home folder (`$HOME`, else `/root`).
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

/// Finds an executable `program` on `$PATH`, then in `~/.cargo/bin` (where `cargo
/// install` puts virtiofsd and the vsock backend) and the sbin/bin folders a
/// non-login root shell may lack. Only absolute folders count: an empty or
/// relative `PATH` entry (the working folder, perhaps a workspace) is ignored.
pub fn search_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [home_dir().join(".cargo/bin")]
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    resolve_program(program, std::env::split_paths(&path).chain(extra))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_program_in_a_relative_folder_is_never_found() {
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("bin/moat-tool");
        std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
        std::fs::write(&planted, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve_program("moat-tool", ["bin", ".", "", "bin/"].map(PathBuf::from)), None);
        let abs = resolve_program("moat-tool", [PathBuf::from("bin"), dir.path().join("bin")]);
        assert_eq!(abs, Some(planted));
    }
}
