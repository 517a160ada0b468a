//! What kind of program a file is, read from its ELF header: the one check
//! behind "the guest agent must be static" and "a binary brought into a
//! template must run on the base" (x86-64 Linux; static, or dynamic through
//! glibc's loader, which the Debian base has).

/// The program interpreter of glibc on x86-64, the one the base has.
pub const GLIBC_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// How an x86-64 executable is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter.
    Static,
    /// Loaded by [`GLIBC_LOADER`].
    Glibc,
}

/// Why a file is not an executable the base can run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// A `#!` script.
    #[error("it is a script (`#!`), not a program; bring the interpreter's program, or install the script in a template saved from a sandbox")]
    Script,
    /// Not ELF at all.
    #[error("it is not an ELF executable")]
    NotElf,
    /// 32-bit or big-endian.
    #[error("it is a {0} ELF; the guest runs 64-bit little-endian x86-64 programs")]
    Class(&'static str),
    /// Another architecture.
    #[error("it is built for {0}; the guest is x86-64")]
    Machine(String),
    /// An object file, core dump or unknown type.
    #[error("it is an ELF {0}, not an executable")]
    Type(&'static str),
    /// Dynamic through a loader the base lacks (musl, another distribution's).
    #[error("it needs the program interpreter {0:?}; the guest has glibc's {GLIBC_LOADER} only (bring a static build, or one for glibc)")]
    Interpreter(String),
    /// Headers point past the end of the file.
    #[error("its ELF headers are truncated or malformed")]
    Malformed,
}

/// Classifies `elf`: an x86-64 executable (or position-independent
/// executable) that is static or uses glibc's loader, or why not.
pub fn classify(elf: &[u8]) -> Result<Linkage, ElfError> {
    const PT_INTERP: u32 = 3;
    if elf.starts_with(b"#!") {
        return Err(ElfError::Script);
    }
    if !elf.starts_with(b"\x7fELF") {
        return Err(ElfError::NotElf);
    }
    match (elf.get(4), elf.get(5)) {
        (Some(2), Some(1)) => {}
        (Some(1), _) => return Err(ElfError::Class("32-bit")),
        (Some(2), Some(2)) => return Err(ElfError::Class("big-endian")),
        _ => return Err(ElfError::Malformed),
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let machine = u16_at(18).ok_or(ElfError::Malformed)?;
    if machine != 62 {
        return Err(ElfError::Machine(machine_name(machine)));
    }
    match u16_at(16).ok_or(ElfError::Malformed)? {
        2 | 3 => {}
        1 => return Err(ElfError::Type("relocatable object")),
        4 => return Err(ElfError::Type("core dump")),
        _ => return Err(ElfError::Type("file of unknown type")),
    }
    let as_usize = |v: u64| usize::try_from(v).map_err(|_| ElfError::Malformed);
    let phoff = as_usize(u64_at(32).ok_or(ElfError::Malformed)?)?;
    let phentsize = usize::from(u16_at(54).ok_or(ElfError::Malformed)?);
    let phnum = usize::from(u16_at(56).ok_or(ElfError::Malformed)?);
    if phnum > 0 && phentsize < 56 {
        return Err(ElfError::Malformed);
    }
    for i in 0..phnum {
        let header = phoff.checked_add(i * phentsize).ok_or(ElfError::Malformed)?;
        if u32_at(header).ok_or(ElfError::Malformed)? != PT_INTERP {
            continue;
        }
        let offset = as_usize(u64_at(header + 8).ok_or(ElfError::Malformed)?)?;
        let size = as_usize(u64_at(header + 32).ok_or(ElfError::Malformed)?)?;
        let bytes = offset.checked_add(size).and_then(|end| elf.get(offset..end)).ok_or(ElfError::Malformed)?;
        let interp = String::from_utf8_lossy(bytes.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
        return if interp == GLIBC_LOADER { Ok(Linkage::Glibc) } else { Err(ElfError::Interpreter(interp)) };
    }
    Ok(Linkage::Static)
}

/// Whether `elf` is a static x86-64 executable (no program interpreter): what
/// can run as the guest's init from an initramfs.
pub fn is_static_elf(elf: &[u8]) -> bool {
    classify(elf) == Ok(Linkage::Static)
}

fn machine_name(machine: u16) -> String {
    match machine {
        3 => "x86 (32-bit)".into(),
        40 => "ARM (32-bit)".into(),
        183 => "AArch64 (arm64)".into(),
        243 => "RISC-V".into(),
        other => format!("ELF machine {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit little-endian ELF header for `machine` and `kind`, with one
    /// PT_INTERP program header naming `interp` when given.
    fn elf(machine: u16, kind: u16, interp: Option<&str>) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[16..18].copy_from_slice(&kind.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        if let Some(interp) = interp {
            b[32..40].copy_from_slice(&64u64.to_le_bytes());
            b[54..56].copy_from_slice(&56u16.to_le_bytes());
            b[56..58].copy_from_slice(&1u16.to_le_bytes());
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&3u32.to_le_bytes());
            ph[8..16].copy_from_slice(&120u64.to_le_bytes());
            ph[32..40].copy_from_slice(&(interp.len() as u64 + 1).to_le_bytes());
            b.extend(ph);
            b.extend(interp.as_bytes());
            b.push(0);
        }
        b
    }

    #[test]
    fn static_and_glibc_programs_pass_and_everything_else_says_why() {
        assert_eq!(classify(&elf(62, 2, None)), Ok(Linkage::Static));
        assert_eq!(classify(&elf(62, 3, None)), Ok(Linkage::Static), "static-pie");
        assert_eq!(classify(&elf(62, 3, Some(GLIBC_LOADER))), Ok(Linkage::Glibc));
        // This test program is a real glibc executable.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(classify(&me), Ok(Linkage::Glibc));

        let musl = classify(&elf(62, 3, Some("/lib/ld-musl-x86_64.so.1"))).unwrap_err();
        assert!(musl.to_string().contains("ld-musl-x86_64.so.1"), "{musl}");
        assert_eq!(classify(&elf(183, 2, None)), Err(ElfError::Machine("AArch64 (arm64)".into())));
        let mut i386 = elf(3, 2, None);
        i386[4] = 1;
        assert_eq!(classify(&i386), Err(ElfError::Class("32-bit")));
        assert_eq!(classify(&elf(62, 1, None)), Err(ElfError::Type("relocatable object")));
        assert_eq!(classify(b"#!/bin/sh\necho hi\n"), Err(ElfError::Script));
        assert_eq!(classify(b"MZ\x90\x00 a Windows program"), Err(ElfError::NotElf));
        assert_eq!(classify(&[]), Err(ElfError::NotElf));
        // An interpreter header pointing past the end of the file.
        let mut cut = elf(62, 3, Some(GLIBC_LOADER));
        cut.truncate(125);
        assert_eq!(classify(&cut), Err(ElfError::Malformed));
        let mut garbage = b"\x7fELF\x02\x01".to_vec();
        garbage.extend((0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        assert!(classify(&garbage).is_err());
    }

    #[test]
    fn only_a_program_without_interpreter_is_static() {
        assert!(is_static_elf(&elf(62, 2, None)));
        assert!(!is_static_elf(&elf(62, 2, Some(GLIBC_LOADER))));
        assert!(!is_static_elf(&std::fs::read(std::env::current_exe().unwrap()).unwrap()));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&[]));
    }
}
