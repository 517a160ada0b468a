//! The escaper.

use std::fmt::Write as _;

/// `bytes`, escaped for a terminal (see the crate docs).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut e = Escaper::default();
    e.push(bytes, &mut out);
    e.finish(&mut out);
    out
}

/// `text`, escaped for a terminal.
pub fn escape_str(text: &str) -> String {
    escape(text.as_bytes())
}

/// Escapes a stream chunk by chunk: a UTF-8 sequence or a `\r\n` split
/// between two chunks is handled as if it had arrived whole. Holds at most
/// four bytes between calls.
#[derive(Debug, Default)]
pub struct Escaper {
    pending: Vec<u8>,
}

impl Escaper {
    /// Appends the escaped form of `chunk` to `out`, keeping back an
    /// incomplete tail for the next call.
    pub fn push(&mut self, chunk: &[u8], out: &mut String) {
        let joined;
        let mut bytes: &[u8] = if self.pending.is_empty() {
            chunk
        } else {
            let mut v = std::mem::take(&mut self.pending);
            v.extend_from_slice(chunk);
            joined = v;
            &joined
        };
        while !bytes.is_empty() {
            match std::str::from_utf8(bytes) {
                Ok(text) => {
                    if let Some(keep) = self.text(text, out, true) {
                        self.pending.extend_from_slice(keep.as_bytes());
                    }
                    return;
                }
                Err(err) => {
                    let (valid, rest) = bytes.split_at(err.valid_up_to());
                    // SAFETY-free: `valid_up_to` marks a valid UTF-8 prefix.
                    let text = std::str::from_utf8(valid).expect("valid prefix");
                    if let Some(cr) = self.text(text, out, false) {
                        debug_assert_eq!(cr, "\r");
                        out.push_str("\\x0d");
                    }
                    match err.error_len() {
                        Some(n) => {
                            for b in &rest[..n] {
                                let _ = write!(out, "\\x{b:02x}");
                            }
                            bytes = &rest[n..];
                        }
                        // An incomplete sequence at the end: wait for more.
                        None => {
                            self.pending.extend_from_slice(rest);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Flushes what was held back (an incomplete sequence, a final `\r`).
    pub fn finish(&mut self, out: &mut String) {
        for b in std::mem::take(&mut self.pending) {
            let _ = write!(out, "\\x{b:02x}");
        }
    }

    /// Escapes valid text; a trailing `\r` is returned (held back) when
    /// `at_end`, since a `\n` may follow in the next chunk.
    fn text<'a>(&mut self, text: &'a str, out: &mut String, at_end: bool) -> Option<&'a str> {
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '\n' | '\t' => out.push(c),
                '\r' => match chars.peek() {
                    Some((_, '\n')) => out.push('\r'),
                    None if at_end => return Some(&text[i..]),
                    None => return Some("\r"),
                    Some(_) => out.push_str("\\x0d"),
                },
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if is_hidden_format(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        None
    }
}

/// C1 controls, and format characters that reorder or break what follows
/// (bidirectional overrides and isolates, line and paragraph separators).
fn is_hidden_format(c: char) -> bool {
    matches!(c as u32, 0x80..=0x9f | 0x200e | 0x200f | 0x2028..=0x202e | 0x2066..=0x2069 | 0x061c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_and_text_is_kept() {
        assert_eq!(escape(b"a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(escape(b"\x1b[2J"), "\\x1b[2J");
        assert_eq!(escape("x\u{9b}31m".as_bytes()), "x\\u{9b}31m");
        assert_eq!(escape(b"tab\there\nline\r\nnext"), "tab\there\nline\r\nnext");
        assert_eq!(escape(b"over\rwrite"), "over\\x0dwrite");
        assert_eq!(escape(b"end\r"), "end\\x0d");
        assert_eq!(escape(b"back\x08\x7f"), "back\\x08\\x7f");
        assert_eq!(escape(b"bad \xff\xfe utf8"), "bad \\xff\\xfe utf8");
        assert_eq!(escape("naïve ☕ ü".as_bytes()), "naïve ☕ ü");
        assert_eq!(escape("rtl\u{202e}txt".as_bytes()), "rtl\\u{202e}txt");
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_text() {
        let input = "a\u{9b}é☕\r\nb\rc\x1b".as_bytes().iter().copied().chain([0xe2, 0x98]).collect::<Vec<_>>();
        let whole = escape(&input);
        for cut in 0..=input.len() {
            let (mut e, mut out) = (Escaper::default(), String::new());
            e.push(&input[..cut], &mut out);
            e.push(&input[cut..], &mut out);
            e.finish(&mut out);
            assert_eq!(out, whole, "cut at {cut}");
        }
    }

    /// A seeded storm of random bytes, in random chunks: nothing that could
    /// steer a terminal ever comes out.
    #[test]
    fn random_bytes_never_produce_a_control() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 200) as usize;
            // Biased towards the interesting bytes.
            let pool: &[u8] = b"\x00\x07\x08\x09\x0a\x0d\x1b\x7f\x9b\xc2\xe2\x80\xae\xff[]0;a";
            let input: Vec<u8> = (0..len)
                .map(|_| if next() % 2 == 0 { pool[(next() % pool.len() as u64) as usize] } else { next() as u8 })
                .collect();
            let (mut e, mut out) = (Escaper::default(), String::new());
            let mut at = 0;
            while at < input.len() {
                let n = 1 + (next() % 7) as usize;
                let end = (at + n).min(input.len());
                e.push(&input[at..end], &mut out);
                at = end;
            }
            e.finish(&mut out);
            assert_eq!(out, escape(&input));
            let bytes = out.as_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                let allowed = b == b'\n' || b == b'\t' || (b == b'\r' && bytes.get(i + 1) == Some(&b'\n'));
                assert!(b >= 0x20 || allowed, "byte {b:#x} in {out:?} from {input:?}");
                assert_ne!(b, 0x7f, "{out:?}");
            }
            assert!(!out.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)), "C1 in {out:?}");
        }
    }
}
