//! `--env-file`: dotenv-style files.
//!
//! One `KEY=VALUE` per line. Blank lines and lines starting with `#` are
//! skipped; `export KEY=VALUE` is accepted; spaces around the key and `=`
//! don't count. A value in matching single or double quotes is taken
//! literally between them (a `#` inside stays, and so does everything else:
//! no escapes, no `${VAR}` expansion, no line continuation); a value without
//! quotes is trimmed and ends at ` #` (a comment). A later line beats an
//! earlier one. Every variable is checked as `-e` checks it, and a bad line
//! is reported as `FILE:LINE`.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::vars::{check_var, is_identifier, EnvError};

/// Largest env file read.
pub const MAX_FILE: u64 = 1024 * 1024;

/// Why an env file was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// It could not be read.
    #[error("cannot read the env file {}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// It is over [`MAX_FILE`].
    #[error("the env file {} is over 1 MiB; is it the right file?", .path.display())]
    TooBig { path: PathBuf },
    /// It isn't UTF-8 text.
    #[error("the env file {} is not UTF-8 text", .path.display())]
    NotText { path: PathBuf },
    /// A line isn't `KEY=VALUE`.
    #[error("{}:{line}: {why}", .path.display())]
    Syntax { path: PathBuf, line: usize, why: &'static str },
    /// A line's variable is refused.
    #[error("{}:{line}", .path.display())]
    Var { path: PathBuf, line: usize, source: EnvError },
}

/// Reads and parses the env file at `path`.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let read = |source| EnvFileError::Read { path: path.to_path_buf(), source };
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(read)?.take(MAX_FILE + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(EnvFileError::TooBig { path: path.to_path_buf() });
    }
    let text = String::from_utf8(bytes).map_err(|_| EnvFileError::NotText { path: path.to_path_buf() })?;
    parse_env_file(&text, path)
}

/// Parses an env file's text; `path` names it in errors.
pub fn parse_env_file(text: &str, path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |why| EnvFileError::Syntax { path: path.to_path_buf(), line: i + 1, why };
        let Some((name, value)) = parse_line(line).map_err(at)? else { continue };
        check_var(name, value).map_err(|source| EnvFileError::Var { path: path.to_path_buf(), line: i + 1, source })?;
        vars.push((name.to_string(), value.to_string()));
    }
    Ok(vars)
}

/// One line: `None` for a blank line or a comment.
fn parse_line(line: &str) -> Result<Option<(&str, &str)>, &'static str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = match line.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => line,
    };
    let Some((name, value)) = line.split_once('=') else {
        return Err("not KEY=VALUE: add `=` and the value (to pass a variable of your shell, use -e KEY)");
    };
    let name = name.trim_end();
    if !is_identifier(name) {
        return Err(
            "the name before `=` is not a variable name: use letters, digits and `_`, not starting with a digit",
        );
    }
    Ok(Some((name, parse_value(value)?)))
}

/// What follows `=`: a quoted value (literally what is between the quotes) or
/// a bare one (trimmed, up to a comment).
fn parse_value(raw: &str) -> Result<&str, &'static str> {
    let trimmed = raw.trim_start();
    let Some(quote) = trimmed.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        let comment = [" #", "\t#"].iter().filter_map(|c| raw.find(c)).min();
        return Ok(raw[..comment.unwrap_or(raw.len())].trim());
    };
    let inner = &trimmed[1..];
    let Some(close) = inner.find(quote) else {
        return Err("the value's opening quote is never closed (a value is one line)");
    };
    let rest = inner[close + 1..].trim_start();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return Err("text after the closing quote: quote the whole value, or put a comment after ` #`");
    }
    Ok(&inner[..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
        parse_env_file(text, Path::new("dev.env"))
    }

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {}", crate::daemon::error_chain(&e)))
    }

    fn one(line: &str) -> String {
        let v = pairs(line);
        assert_eq!(v.len(), 1, "{line:?}: {v:?}");
        v[0].1.clone()
    }

    #[test]
    fn the_grammar() {
        let text = "\n# a comment\n  # indented comment\nA=1\r\nexport B=two words\n\tC = spaced \nD=\nA=again\n";
        assert_eq!(
            pairs(text),
            [("A", "1"), ("B", "two words"), ("C", "spaced"), ("D", ""), ("A", "again")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(one("Q=\"double # kept\""), "double # kept");
        assert_eq!(one("Q='single \"x\" $HOME \\n'"), "single \"x\" $HOME \\n");
        assert_eq!(one("Q=\"  padded  \"  # comment"), "  padded  ");
        assert_eq!(one("Q=\"\""), "");
        assert_eq!(one("Q=bare # comment"), "bare");
        assert_eq!(one("Q=bare\t# comment"), "bare");
        assert_eq!(one("COLOR=#fff"), "#fff", "a # not after a space is the value");
        assert_eq!(one("URL=http://h/p?a=b=c#frag"), "http://h/p?a=b=c#frag");
        assert_eq!(one("Q=it's"), "it's");
        assert_eq!(one("EMPTY= # nothing"), "");
    }

    #[test]
    fn export_is_a_prefix_only_when_followed_by_space() {
        assert_eq!(pairs("exported=1")[0].0, "exported");
        assert_eq!(pairs("export=1")[0].0, "export");
        assert_eq!(pairs("export\tX=1")[0].0, "X");
    }

    #[test]
    fn bad_lines_name_file_and_line_and_say_what_to_do() {
        let cases = [
            ("A=1\nJUST_A_NAME\n", 2, "add `=`"),
            ("\n\n1A=x", 3, "not a variable name"),
            ("A B=x", 1, "not a variable name"),
            ("=x", 1, "not a variable name"),
            ("Q=\"open", 1, "never closed"),
            ("Q=\"a\"b", 1, "text after the closing quote"),
            ("# ok\nHTTPS_PROXY=http://elsewhere", 2, "HTTPS_PROXY is set by Moat"),
            ("OK=1\nTOKEN=AKIAIOSFODNN7EXAMPLE", 2, "TOKEN looks like an AWS access key id"),
            ("N=a\0b", 1, "NUL"),
        ];
        for (text, line, says) in cases {
            let err = parse(text).unwrap_err();
            let msg = crate::daemon::error_chain(&err);
            assert!(msg.starts_with(&format!("dev.env:{line}: ")), "{text:?}: {msg}");
            assert!(msg.contains(says), "{text:?}: {msg}");
        }
        let err = parse("KEY=AKIAIOSFODNN7EXAMPLE").unwrap_err();
        assert!(!crate::daemon::error_chain(&err).contains("AKIAIOSFODNN7EXAMPLE"), "values are never echoed");
    }

    #[test]
    fn files_are_read_bounded_and_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "A=1\n").unwrap();
        assert_eq!(read_env_file(&path).unwrap(), [("A".to_string(), "1".to_string())]);
        std::fs::write(&path, [b'A', b'=', 0xff]).unwrap();
        assert!(matches!(read_env_file(&path), Err(EnvFileError::NotText { .. })));
        std::fs::write(&path, "#".repeat(MAX_FILE as usize + 1)).unwrap();
        assert!(matches!(read_env_file(&path), Err(EnvFileError::TooBig { .. })));
        let missing = read_env_file(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, EnvFileError::Read { .. }) && missing.to_string().contains("nope"), "{missing}");
    }
}
