//! A writer for the `newc` cpio format, the format the Linux kernel unpacks
//! an initramfs from. Every entry gets mtime 0 and owner root, so the same
//! input gives the same bytes.

use std::io::{self, Write};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;
const TRAILER: &str = "TRAILER!!!";

/// Writes a `newc` archive entry by entry; `finish` writes the trailer.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    offset: u64,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Self { out, next_ino: 1, offset: 0 }
    }

    /// Adds a directory. `path` is relative (`"dev"`, `"dev/pts"`); `mode`
    /// holds the permission bits.
    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | (mode & 0o7777), 2, (0, 0), &[])
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (mode & 0o7777), 1, (0, 0), data)
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, S_IFCHR | (mode & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0, 1, (0, 0), 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        if path.is_empty() || path == TRAILER {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad cpio path {path:?}")));
        }
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio entries are limited to 4 GiB"))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(path, ino, mode, nlink, rdev, size)?;
        self.write_padded(data)
    }

    fn header(&mut self, name: &str, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), size: u32) -> io::Result<()> {
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio path too long"))?;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
        // devminor, rdevmajor, rdevminor, namesize, check
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0];
        let mut header = String::with_capacity(110 + name.len() + 1);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }
        header.push_str(name);
        header.push('\0');
        self.write_padded(header.as_bytes())
    }

    /// Writes `bytes`, then zeros up to the next 4-byte boundary.
    fn write_padded(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        let pad = (4 - self.offset % 4) % 4;
        self.out.write_all(&[0; 3][..pad as usize])?;
        self.offset += pad;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn archive() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.char_device("/dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.file("odd", 0o644, b"12345").unwrap();
        w.finish().unwrap()
    }

    fn cpio(args: &[&str], dir: &std::path::Path, input: &[u8]) -> String {
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the system `cpio` is needed for this test");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "cpio: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn layout_is_aligned_and_deterministic() {
        let bytes = archive();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes, archive());
    }

    #[test]
    fn system_cpio_lists_it() {
        let tmp = tempfile::tempdir().unwrap();
        let listing = cpio(&["-itv", "--quiet"], tmp.path(), &archive());
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 4, "{listing}");
        assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" dev"));
        assert!(lines[1].starts_with("crw-------") && lines[1].contains("5,") && lines[1].ends_with(" dev/console"));
        assert!(lines[2].starts_with("-rwxr-xr-x") && lines[2].ends_with(" init"));
        assert!(lines[3].starts_with("-rw-r--r--") && lines[3].ends_with(" odd"));
    }

    #[test]
    fn system_cpio_extracts_it() {
        let tmp = tempfile::tempdir().unwrap();
        cpio(&["-id", "--quiet", "init", "odd"], tmp.path(), &archive());
        assert_eq!(std::fs::read(tmp.path().join("init")).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(std::fs::read(tmp.path().join("odd")).unwrap(), b"12345");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("init")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
