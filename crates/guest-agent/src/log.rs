//! Best-effort logging to stderr (the serial console when the agent is PID 1).
//!
//! Logging never fails and never panics: a PID 1 that panics takes the kernel down
//! with it, so a console write error is ignored.

use std::fmt;
use std::io::Write;

/// Writes one `moat-agent: ...` line to stderr with a single `write` call.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    let text = format!("moat-agent: {args}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `log!("format", args..)`: one line on the console, errors ignored.
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}
pub(crate) use log;
