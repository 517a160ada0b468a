//! Terminal-safe text: the one place Moat turns bytes a sandbox chose (file
//! names, diff lines, console output, logged hosts) into something a host
//! terminal can show without obeying it.
//!
//! [`escape`] and the streaming [`Escaper`] keep printable text, `\n`, `\t` and
//! `\r\n`, and show everything else visibly: C0 controls, a lone `\r` and DEL
//! as `\xHH` (`\x1b` for ESC), C1 controls and Unicode's bidirectional and
//! line-breaking format characters as `\u{9b}`, invalid UTF-8 byte by byte as
//! `\xHH`. The output therefore never holds a byte below 0x20 other than
//! `\n`, `\t` and a `\r` right before `\n`, no DEL and no C1 control.
//!
//! Not here: colour. A presenter that wants colour escapes the sandbox's
//! bytes first and adds its own sequences after.

mod escape;

pub use escape::{escape, escape_str, Escaper};
