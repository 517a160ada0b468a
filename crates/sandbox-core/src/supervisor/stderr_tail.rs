//! A child's stderr, appended to a log file, with its last lines kept so a
//! failure can be explained with the child's own words.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::thread::JoinHandle;

/// Lines kept for the error message.
const KEPT_LINES: usize = 4;
/// Longest line kept or logged whole; longer lines are cut.
const MAX_LINE: u64 = 4096;

/// Copies a stream to a log on a thread of its own.
#[derive(Debug)]
pub struct StderrTail {
    thread: JoinHandle<VecDeque<String>>,
}

impl StderrTail {
    /// Starts copying `stderr` to `log` (nowhere when `None`).
    pub fn spawn(stderr: impl Read + Send + 'static, mut log: Option<File>) -> StderrTail {
        let thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut kept = VecDeque::with_capacity(KEPT_LINES);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return kept,
                    Ok(_) => {}
                }
                if let Some(l) = log.as_mut() {
                    let _ = l.write_all(&line);
                }
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if !text.is_empty() {
                    if kept.len() == KEPT_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(text);
                }
            }
        });
        StderrTail { thread }
    }

    /// Waits for the stream to end (call once the child has exited) and
    /// returns its last non-empty line.
    pub fn last_line(self) -> Option<String> {
        self.thread.join().ok().and_then(|mut kept| kept.pop_back())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_logged_and_the_last_line_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text = "warming up\nmoat-vmm: KVM reported internal error 1 on vCPU 0\n\n";
        let tail = StderrTail::spawn(text.as_bytes(), Some(File::create(&path).unwrap()));
        assert_eq!(tail.last_line().as_deref(), Some("moat-vmm: KVM reported internal error 1 on vCPU 0"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(StderrTail::spawn(&b""[..], None).last_line(), None);
    }

    #[test]
    fn a_flood_without_newlines_keeps_bounded_lines() {
        let flood = vec![b'x'; 100_000];
        let last = StderrTail::spawn(std::io::Cursor::new(flood), None).last_line().unwrap();
        assert!(last.len() as u64 <= MAX_LINE, "{}", last.len());
    }
}
