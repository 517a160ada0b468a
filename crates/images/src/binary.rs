//! Layers of programs brought from the host: for agents whose CLIs are not
//! on a registry an image build can reach. Each program lands in
//! `/usr/local/bin/` of a small read-only ext4 layer, packed from a tree on
//! the host with `mkfs.ext4 -d` (no mounts, no root needed), every file root's.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::elf::{self, ElfError, Linkage};
use super::ext4::{self, Ext4Error, ImageSize};
use super::hash::RecipeHash;
use super::io::PathIoError;
use super::rootfs::SOURCE_DATE_EPOCH;

/// Where the programs are installed in the guest.
pub const BIN_DIR: &str = "/usr/local/bin";

/// A program to install: its file name in [`BIN_DIR`] and its bytes.
#[derive(Debug, Clone)]
pub struct HostProgram {
    /// File name (checked by [`HostProgram::new`]).
    pub name: String,
    /// The executable.
    pub bytes: Vec<u8>,
    /// How it is linked.
    pub linkage: Linkage,
}

/// A program can't go into a layer, or the layer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BinaryLayerError {
    /// The file name can't be a command name.
    #[error("{0:?} can't be a program's name in the guest: use letters, digits, '.', '_', '+' and '-', not starting with '.' or '-' (at most 64)")]
    BadName(String),
    /// It is not something the guest can run.
    #[error("{name} can't run in the guest")]
    NotRunnable {
        name: String,
        #[source]
        source: ElfError,
    },
    /// Two programs would land on one path.
    #[error("two programs are named {0:?}")]
    Duplicate(String),
    /// Packing failed.
    #[error("packing the programs into a layer")]
    Pack(#[source] Ext4Error),
    /// The staging tree failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
}

impl HostProgram {
    /// Checks that `name` is a plain command name and `bytes` an x86-64
    /// program the Debian base can run (static, or glibc's loader).
    pub fn new(name: &str, bytes: Vec<u8>) -> Result<HostProgram, BinaryLayerError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-');
        if name.is_empty() || name.len() > 64 || name.starts_with(['.', '-']) || !name.chars().all(ok_char) {
            return Err(BinaryLayerError::BadName(name.to_string()));
        }
        let linkage =
            elf::classify(&bytes).map_err(|source| BinaryLayerError::NotRunnable { name: name.to_string(), source })?;
        Ok(HostProgram { name: name.to_string(), bytes, linkage })
    }
}

/// Packs `programs` into a new layer image at `image`; the staging tree lives
/// beside it and is removed. Equal programs give equal images.
pub fn binary_layer(programs: &[HostProgram], image: &Path, log: &Path) -> Result<ImageSize, BinaryLayerError> {
    for (i, p) in programs.iter().enumerate() {
        if programs[..i].iter().any(|q| q.name == p.name) {
            return Err(BinaryLayerError::Duplicate(p.name.clone()));
        }
    }
    let tree = image.with_extension("tree");
    let made = (|| {
        let bin = tree.join(BIN_DIR.trim_start_matches('/'));
        fs::create_dir_all(&bin).map_err(PathIoError::on("create", &bin))?;
        let mut dir = bin.as_path();
        while dir.starts_with(&tree) {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(PathIoError::on("chmod", dir))?;
            dir = dir.parent().expect("inside the tree");
        }
        let mut digest = RecipeHash::new("binary-layer");
        for p in programs {
            let path = bin.join(&p.name);
            fs::write(&path, &p.bytes).map_err(PathIoError::on("write", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(PathIoError::on("chmod", &path))?;
            digest.field(&p.name, &p.bytes);
        }
        let digest = digest.finish();
        let size = ext4::make_image(&tree, image, &digest, SOURCE_DATE_EPOCH, log).map_err(BinaryLayerError::Pack)?;
        if !nix::unistd::geteuid().is_root() {
            ext4::set_root_owner(image, SOURCE_DATE_EPOCH).map_err(BinaryLayerError::Pack)?;
        }
        Ok(size)
    })();
    let _ = fs::remove_dir_all(&tree);
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_command_names_and_programs_must_run_on_the_base() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(HostProgram::new("kiro-cli", me.clone()).unwrap().linkage, Linkage::Glibc);
        for bad in ["", ".hidden", "-x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(matches!(HostProgram::new(bad, me.clone()), Err(BinaryLayerError::BadName(_))), "{bad:?}");
        }
        let err = HostProgram::new("tool", b"#!/bin/sh\n".to_vec()).unwrap_err();
        assert!(matches!(&err, BinaryLayerError::NotRunnable { source: ElfError::Script, .. }), "{err}");
    }

    #[test]
    fn the_layer_holds_the_programs_in_usr_local_bin_and_belongs_to_root() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let programs = [HostProgram::new("moat-hello", me.clone()).unwrap()];
        let image = dir.path().join("layer.ext4");
        binary_layer(&programs, &image, &dir.path().join("build.log")).unwrap();
        assert!(!image.with_extension("tree").exists(), "the staging tree is removed");
        // Read it back with debugfs (a host-made image, never a guest's).
        let debugfs = crate::command::find_tool("debugfs", "e2fsprogs").unwrap();
        let stat = std::process::Command::new(debugfs)
            .args(["-R", "stat /usr/local/bin/moat-hello"])
            .arg(&image)
            .output()
            .unwrap();
        let stat = String::from_utf8_lossy(&stat.stdout);
        assert!(stat.contains(&format!("Size: {}", me.len())), "{stat}");
        assert!(
            stat.contains("Mode:  0755") && stat.contains("User:     0") && stat.contains("Group:     0"),
            "{stat}"
        );
    }
}
