//! Test aids: a synthetic bzImage with a chosen setup header, and the
//! project's cached guest kernel.

use super::setup_header::{LOADED_HIGH, XLF_KERNEL_64};

/// The setup header fields of a synthetic bzImage; [`Default`] is a valid
/// 2.15 header for a 64-bit kernel preferring 2 MiB.
#[derive(Debug, Clone)]
pub struct FakeBzImage {
    /// Written as is; the image is laid out with `max(setup_sects, 4)`
    /// sectors of setup code when it is 0, as the protocol reads it.
    pub setup_sects: u8,
    pub boot_flag: u16,
    pub magic: [u8; 4],
    pub version: u16,
    pub loadflags: u8,
    pub xloadflags: u16,
    pub code32_start: u32,
    pub pref_address: u64,
    pub init_size: u32,
    pub cmdline_size: u32,
    pub initrd_addr_max: u32,
}

impl Default for FakeBzImage {
    fn default() -> Self {
        Self {
            setup_sects: 4,
            boot_flag: 0xaa55,
            magic: *b"HdrS",
            version: 0x020f,
            loadflags: LOADED_HIGH,
            xloadflags: XLF_KERNEL_64,
            code32_start: 0x10_0000,
            pref_address: 0x20_0000,
            init_size: 0x10_0000,
            cmdline_size: 2047,
            initrd_addr_max: 0x7fff_ffff,
        }
    }
}

impl FakeBzImage {
    /// The image: boot sector with this header, zeroed setup sectors, then
    /// `kernel` as the protected-mode kernel (its 64-bit entry at +0x200).
    pub fn build(&self, kernel: &[u8]) -> Vec<u8> {
        let sects = match self.setup_sects {
            0 => 4,
            n => usize::from(n),
        };
        let mut image = vec![0u8; (sects + 1) * 512];
        let mut put = |at: usize, bytes: &[u8]| image[at..at + bytes.len()].copy_from_slice(bytes);
        put(0x1f1, &[self.setup_sects]);
        put(0x1f4, &((kernel.len() as u32).div_ceil(16)).to_le_bytes());
        put(0x1fe, &self.boot_flag.to_le_bytes());
        put(0x200, &[0xeb, 0x6a]); // jmp over the header, which ends at 0x26c
        put(0x202, &self.magic);
        put(0x206, &self.version.to_le_bytes());
        put(0x211, &[self.loadflags]);
        put(0x214, &self.code32_start.to_le_bytes());
        put(0x22c, &self.initrd_addr_max.to_le_bytes());
        put(0x230, &0x20_0000u32.to_le_bytes());
        put(0x236, &self.xloadflags.to_le_bytes());
        put(0x238, &self.cmdline_size.to_le_bytes());
        put(0x258, &self.pref_address.to_le_bytes());
        put(0x260, &self.init_size.to_le_bytes());
        image.extend_from_slice(kernel);
        image
    }
}

/// The newest cached build of the project's guest kernel file `name`
/// (`vmlinux`, `bzImage`) under `<cache>/kernel/linux-*/`. Without one this
/// prints a loud SKIPPED line and returns `None`, or panics when
/// `MOAT_REQUIRE_E2E=1`.
#[cfg(test)]
pub fn cached_kernel(name: &str) -> Option<std::path::PathBuf> {
    use std::io::Write;
    use std::path::PathBuf;

    let var = |v| std::env::var_os(v).filter(|s| !s.is_empty()).map(PathBuf::from);
    let root = var("MOAT_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("moat")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/moat")));
    let newest = root
        .and_then(|r| std::fs::read_dir(r.join("kernel")).ok())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("linux-"))
        .map(|e| e.path().join(name))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p);
    if newest.is_none() {
        let msg = format!("no cached guest kernel {name} (build one with `cargo xtask images`)");
        if std::env::var("MOAT_REQUIRE_E2E").as_deref() == Ok("1") {
            panic!("{msg} (MOAT_REQUIRE_E2E=1)");
        }
        // The real stderr: the harness hides a passing test's captured output.
        let _ = writeln!(std::io::stderr(), "SKIPPED {msg}; set MOAT_REQUIRE_E2E=1 to make this a failure");
    }
    newest
}
