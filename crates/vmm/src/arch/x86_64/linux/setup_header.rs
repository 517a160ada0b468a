//! The bzImage setup header (Documentation/arch/x86/boot.rst): parsed and
//! checked before anything is copied into guest RAM.
//!
//! We boot through the 64-bit protocol only, so we need protocol 2.12 or
//! later (`xloadflags`), a kernel loaded high, and `XLF_KERNEL_64`.

/// Where the setup header starts in the image (and in the zero page).
pub const HEADER_START: usize = 0x1f1;
/// One past the last header field we know (`kernel_info_offset`, 2.15).
pub const HEADER_END: usize = 0x26c;
/// `"HdrS"` at 0x202.
const MAGIC: u32 = 0x5372_6448;
const BOOT_FLAG: u16 = 0xaa55;
/// Boot protocol 2.12: the first with `xloadflags`.
pub const MIN_VERSION: u16 = 0x020c;
/// `loadflags` bit 0: the protected-mode kernel is loaded at 1 MiB or above.
pub const LOADED_HIGH: u8 = 1 << 0;
/// `xloadflags` bit 0: the kernel has the 64-bit entry point at +0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
const SECTOR: usize = 512;

/// A bzImage's setup header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the image is {0} bytes, too short to hold a setup header")]
    TooShort(usize),
    #[error("no boot signature 0xaa55 at 0x1fe (found {0:#06x}): not a bzImage")]
    BootFlag(u16),
    #[error("no \"HdrS\" magic at 0x202 (found {0:#010x}): not a bzImage")]
    Magic(u32),
    #[error("boot protocol {}.{:02} is too old; 2.12 or later is needed", .0 >> 8, .0 & 0xff)]
    Version(u16),
    #[error("the kernel is not loaded high (loadflags bit 0 clear): a zImage, not a bzImage")]
    NotLoadedHigh,
    #[error("the kernel has no 64-bit entry point (xloadflags XLF_KERNEL_64 clear)")]
    Not64Bit,
    #[error("{sects} setup sectors leave no protected-mode kernel in a {len}-byte image")]
    SetupTooBig { sects: u8, len: usize },
    #[error("the kernel asks to be loaded at {0:#x}, below 1 MiB or above 4 GiB")]
    LoadAddress(u64),
}

/// The fields of a bzImage's setup header that we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupHeader {
    /// Boot protocol version, e.g. 0x020f for 2.15.
    pub version: u16,
    /// Sectors of real-mode setup code after the boot sector (0 read as 4).
    pub setup_sects: u8,
    pub loadflags: u8,
    pub code32_start: u32,
    /// Highest address the initrd may occupy (inclusive).
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable: bool,
    pub xloadflags: u16,
    /// Longest command line the kernel takes, without the terminating NUL.
    pub cmdline_size: u32,
    pub pref_address: u64,
    /// Bytes the kernel needs from its load address while it decompresses.
    pub init_size: u32,
    /// Where the header bytes end in the image: `0x202 + image[0x201]`,
    /// capped at 0x26c (the end of protocol 2.15's header).
    pub end: usize,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | u64::from(u32_at(b, at + 4)) << 32
}

impl SetupHeader {
    /// Parses and checks the header of `image`, a whole bzImage.
    pub fn parse(image: &[u8]) -> Result<Self, HeaderError> {
        if image.len() < HEADER_END {
            return Err(HeaderError::TooShort(image.len()));
        }
        let boot_flag = u16_at(image, 0x1fe);
        if boot_flag != BOOT_FLAG {
            return Err(HeaderError::BootFlag(boot_flag));
        }
        let magic = u32_at(image, 0x202);
        if magic != MAGIC {
            return Err(HeaderError::Magic(magic));
        }
        let version = u16_at(image, 0x206);
        if version < MIN_VERSION {
            return Err(HeaderError::Version(version));
        }
        let header = Self {
            version,
            setup_sects: match image[0x1f1] {
                0 => 4,
                n => n,
            },
            loadflags: image[0x211],
            code32_start: u32_at(image, 0x214),
            initrd_addr_max: u32_at(image, 0x22c),
            kernel_alignment: u32_at(image, 0x230),
            relocatable: image[0x234] != 0,
            xloadflags: u16_at(image, 0x236),
            cmdline_size: u32_at(image, 0x238),
            pref_address: u64_at(image, 0x258),
            init_size: u32_at(image, 0x260),
            end: (0x202 + usize::from(image[0x201])).min(HEADER_END),
        };
        if header.loadflags & LOADED_HIGH == 0 {
            return Err(HeaderError::NotLoadedHigh);
        }
        if header.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(HeaderError::Not64Bit);
        }
        if header.setup_len() >= image.len() {
            return Err(HeaderError::SetupTooBig { sects: header.setup_sects, len: image.len() });
        }
        let load = header.load_address();
        if !(0x10_0000..(1 << 32)).contains(&load) {
            return Err(HeaderError::LoadAddress(load));
        }
        Ok(header)
    }

    /// Bytes of the boot sector plus the real-mode setup code: where the
    /// protected-mode kernel starts in the image.
    pub fn setup_len(&self) -> usize {
        (usize::from(self.setup_sects) + 1) * SECTOR
    }

    /// Where the protected-mode kernel goes: `pref_address` (2.10+, the
    /// address a non-relocatable kernel runs at), else `code32_start`.
    pub fn load_address(&self) -> u64 {
        match self.pref_address {
            0 => u64::from(self.code32_start),
            pref => pref,
        }
    }

    /// Bytes from the load address the kernel may use before it has set up
    /// its own memory map: the larger of `init_size` and `kernel_len`.
    pub fn footprint(&self, kernel_len: usize) -> u64 {
        u64::from(self.init_size).max(kernel_len as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::linux::testing::{cached_kernel, FakeBzImage};

    fn parse_fake(f: impl FnOnce(&mut FakeBzImage)) -> Result<SetupHeader, HeaderError> {
        let mut fake = FakeBzImage::default();
        f(&mut fake);
        SetupHeader::parse(&fake.build(&[0x90; 1024]))
    }

    #[test]
    fn a_good_synthetic_header_parses() {
        let h = parse_fake(|_| {}).unwrap();
        assert_eq!(h.version, 0x020f);
        assert_eq!(h.setup_len(), 5 * 512, "default 4 setup sectors + boot sector");
        assert_eq!(h.load_address(), FakeBzImage::default().pref_address);
        assert_eq!(h.end, HEADER_END);
    }

    #[test]
    fn bad_headers_are_clear_errors() {
        assert_eq!(SetupHeader::parse(&[0; 100]), Err(HeaderError::TooShort(100)));
        assert_eq!(parse_fake(|f| f.boot_flag = 0x1234), Err(HeaderError::BootFlag(0x1234)));
        assert_eq!(parse_fake(|f| f.magic = *b"HdrZ"), Err(HeaderError::Magic(0x5a72_6448)));
        let old = parse_fake(|f| f.version = 0x020b).unwrap_err();
        assert_eq!(old, HeaderError::Version(0x020b));
        assert_eq!(old.to_string(), "boot protocol 2.11 is too old; 2.12 or later is needed");
        assert_eq!(parse_fake(|f| f.loadflags = 0), Err(HeaderError::NotLoadedHigh));
        assert_eq!(parse_fake(|f| f.xloadflags = 0x2), Err(HeaderError::Not64Bit));
        assert_eq!(parse_fake(|f| f.pref_address = 0x9_0000), Err(HeaderError::LoadAddress(0x9_0000)));
        assert_eq!(parse_fake(|f| f.pref_address = 1 << 40), Err(HeaderError::LoadAddress(1 << 40)));
    }

    #[test]
    fn huge_setup_sects_past_the_image_is_an_error() {
        let mut fake = FakeBzImage { setup_sects: 255, ..FakeBzImage::default() };
        let image = fake.build(&[0x90; 1024]);
        // The fake is laid out with the claimed setup size; cut it short.
        let cut = &image[..64 * 512];
        assert_eq!(SetupHeader::parse(cut), Err(HeaderError::SetupTooBig { sects: 255, len: 64 * 512 }));
        fake.setup_sects = 0;
        assert_eq!(SetupHeader::parse(&fake.build(&[1])).unwrap().setup_sects, 4, "0 means 4");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let good = FakeBzImage::default().build(&[0x90; 64]);
        for round in 0..2000 {
            let mut image = good.clone();
            for _ in 0..1 + round % 8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = 0x1f0 + (seed as usize % (HEADER_END - 0x1f0));
                image[at] = (seed >> 32) as u8;
            }
            let len = HEADER_END + (seed as usize >> 40) % (image.len() - HEADER_END + 1);
            let _ = SetupHeader::parse(&image[..len]);
        }
    }

    #[test]
    fn the_real_bzimage_header_is_usable() {
        let Some(path) = cached_kernel("bzImage") else { return };
        let image = std::fs::read(&path).unwrap();
        let h = SetupHeader::parse(&image).unwrap();
        eprintln!("{}: {h:x?}", path.display());
        assert!(h.version >= MIN_VERSION);
        assert_ne!(h.xloadflags & XLF_KERNEL_64, 0);
        assert_eq!(h.load_address(), 0x100_0000, "CONFIG_PHYSICAL_START, not relocatable");
        assert!(!h.relocatable);
        assert_eq!(h.cmdline_size, 2047);
        assert!(u64::from(h.init_size) > (image.len() - h.setup_len()) as u64, "decompression needs room");
        assert_eq!(h.end, 0x26c);
    }
}
