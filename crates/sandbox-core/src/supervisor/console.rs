//! A log file a guest cannot grow without bound.
//!
//! When the file reaches its cap it becomes `<name>.1` (replacing the previous
//! one) and a fresh file starts, so at most twice the cap is kept on disk.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only log with a size cap and one rotated generation.
#[derive(Debug)]
pub struct BoundedLog {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    cap: u64,
}

impl BoundedLog {
    /// Opens (truncating) the log at `path`, capped at `cap` bytes per generation.
    pub fn open(path: &Path, cap: u64) -> BoundedLog {
        BoundedLog { path: path.to_path_buf(), file: File::create(path).ok(), written: 0, cap }
    }

    /// Appends `bytes`, rotating first if they would pass the cap. Errors are dropped:
    /// losing console lines must never stop the VM.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.written + bytes.len() as u64 > self.cap {
            let _ = std::fs::rename(&self.path, rotated(&self.path));
            self.file = File::create(&self.path).ok();
            self.written = 0;
        }
        let take = bytes.len().min(self.cap as usize);
        if let Some(f) = self.file.as_mut() {
            if f.write_all(&bytes[..take]).is_ok() {
                self.written += take as u64;
            }
        }
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_never_keeps_more_than_two_generations_of_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = BoundedLog::open(&path, 1000);
        for i in 0..10_000u32 {
            log.write(format!("line {i}\n").as_bytes());
        }
        log.write(&[b'x'; 5000]);
        let cur = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(rotated(&path)).unwrap().len();
        assert!(cur <= 1000 && old <= 1000, "{cur} {old}");
        let before = std::fs::read_to_string(rotated(&path)).unwrap();
        assert!(before.contains("line 9999"), "the newest lines are kept");
    }
}
