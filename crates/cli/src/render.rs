//! Showing what a sandbox wrote: its bytes escaped by `moat_text`, then
//! Moat's own headers and colours.

use std::io::Read;

/// Reads `input` to its end in chunks, escapes it and hands whole lines
/// (coloured when `color`) to `write`, which says whether to go on.
pub fn stream_escaped(input: &mut dyn Read, color: bool, mut write: impl FnMut(&str) -> bool) -> std::io::Result<()> {
    let (mut escaper, mut buf, mut text) = (moat_text::Escaper::default(), vec![0u8; 64 * 1024], String::new());
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        escaper.push(&buf[..n], &mut text);
        if let Some(end) = text.rfind('\n') {
            let rest = text.split_off(end + 1);
            if !write(&colorize(&text, color)) {
                return Ok(()); // the pager was closed
            }
            text = rest;
        }
    }
    escaper.finish(&mut text);
    write(&colorize(&text, color));
    Ok(())
}

/// [`moat_worktree::Changes`] for a terminal: the sandbox's bytes escaped,
/// then Moat's own headers and (on a terminal) colours.
pub fn changes(changes: &moat_worktree::Changes, color: bool) -> String {
    let header = |text: String| {
        if color {
            format!("\x1b[1;33m# moat: {text}\x1b[m\n")
        } else {
            format!("# moat: {text}\n")
        }
    };
    let short = &changes.base[..changes.base.len().min(12)];
    let branch = moat_text::escape_str(&changes.branch);
    let mut out = header(format!("committed on {branch} since {short} (what `apply` brings over)"));
    let patch = |text: &str| {
        if text.is_empty() {
            "(none)\n".to_string()
        } else {
            colorize(&moat_text::escape_str(text), color)
        }
    };
    out.push_str(&if changes.committed.is_empty() { "(no commits)\n".to_string() } else { patch(&changes.committed) });
    out.push_str(&header("uncommitted changes in the workspace, staged and unstaged (`apply` leaves these)".into()));
    out.push_str(&patch(&changes.uncommitted));
    out.push_str(&header("untracked files in the workspace (`apply` leaves these)".into()));
    if changes.untracked.is_empty() {
        out.push_str("(none)\n");
    }
    for path in &changes.untracked {
        out.push_str(&format!("?? {}\n", moat_text::escape_str(path)));
    }
    out
}

/// Moat's own colours for an escaped patch (it holds no escape sequence of
/// the sandbox's any more): added lines green, removed red, hunks cyan.
pub fn colorize(escaped: &str, color: bool) -> String {
    if !color {
        return escaped.to_string();
    }
    let mut out = String::with_capacity(escaped.len() + escaped.len() / 8);
    for line in escaped.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let code = if body.starts_with("diff --git") || body.starts_with("+++ ") || body.starts_with("--- ") {
            "1"
        } else if body.starts_with('+') {
            "32"
        } else if body.starts_with('-') {
            "31"
        } else if body.starts_with("@@") {
            "36"
        } else {
            ""
        };
        if code.is_empty() {
            out.push_str(line);
        } else {
            out.push_str(&format!("\x1b[{code}m{body}\x1b[m{nl}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use moat_worktree::test_utils::{commit_all, git, isolate_git, write, TestRepo};
    use moat_worktree::{BranchName, Checkpoint};

    const TITLE: &str = "\x1b]0;pwned\x07";
    const CLEAR: &str = "\x1b[2J";

    fn assert_inert(text: &str) {
        for bad in ["\x1b]", "\x07", CLEAR, "\u{9b}"] {
            assert!(!text.contains(bad), "{bad:?} reached the terminal in {text:?}");
        }
        assert!(text.contains("\\x1b]0;pwned\\x07"), "{text}");
        assert!(text.contains("\\x1b[2J"), "{text}");
    }

    /// The `moat diff` path on a real checkpoint whose agent chose a file
    /// name and a line that would retitle and clear the user's terminal.
    #[test]
    fn moat_diff_never_passes_the_sandboxs_escape_sequences() {
        isolate_git();
        let repo = TestRepo::new("escapes");
        let cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "escapes").unwrap();
        let ws = cp.workspace().to_path_buf();
        let name = format!("evil{TITLE}{CLEAR}.txt");
        write(&ws, &name, &format!("line {TITLE} {CLEAR}\n"));
        commit_all(&ws, &format!("subject {TITLE}"));
        write(&ws, &name, &format!("line {TITLE} {CLEAR}\nmore {CLEAR}\u{9b}2J\n"));
        write(&ws, &format!("untracked{TITLE}{CLEAR}"), "x\n");
        git(&ws, &["status"]);
        cp.sync().unwrap();

        let changes = cp.changes().unwrap();
        assert!(changes.committed.contains(CLEAR), "the library returns the bytes as they are");
        for color in [false, true] {
            let text = super::changes(&changes, color);
            assert_inert(&text);
            assert!(text.contains("?? untracked\\x1b]0;pwned\\x07\\x1b[2J"), "{text}");
            assert_eq!(text.contains("\x1b[32m"), color, "Moat's own colours only on request");
        }
        let mut streamed = String::new();
        let mut diff = cp.diff_stream().unwrap();
        super::stream_escaped(&mut diff, true, |t| {
            streamed.push_str(t);
            true
        })
        .unwrap();
        diff.finish().unwrap();
        assert_inert(&streamed);
        assert!(streamed.contains("\x1b[32m+line"), "{streamed}");
    }
}
