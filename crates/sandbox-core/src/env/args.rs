//! `-e` and `--env-file` together: the environment a create request carries.

use std::ffi::OsString;
use std::path::PathBuf;

use super::file::{read_env_file, EnvFileError};
use super::vars::{check, check_name, EnvError};
use super::Env;

/// Why the variables given on a command line were refused.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// An `--env-file`.
    #[error(transparent)]
    File(#[from] EnvFileError),
    /// A `-e`, or the whole set.
    #[error(transparent)]
    Var(#[from] EnvError),
}

/// One `-e`: `KEY=VALUE`, or `KEY` for the value `host` has for it now
/// (this process's environment; an error when unset, unlike `exec -e`).
pub fn parse_assignment(arg: &str, host: impl Fn(&str) -> Option<OsString>) -> Result<(String, String), EnvError> {
    if let Some((name, value)) = arg.split_once('=') {
        check_name(name)?;
        return Ok((name.to_string(), value.to_string()));
    }
    check_name(arg)?;
    let value = host(arg).ok_or_else(|| EnvError::Unset(arg.to_string()))?;
    let value = value.into_string().map_err(|_| EnvError::NotUnicode(arg.to_string()))?;
    Ok((arg.to_string(), value))
}

/// The files in order, then the `-e`s in order: a later value beats an
/// earlier one, so any `-e` beats every file. The result is checked whole.
pub fn collect(
    files: &[PathBuf],
    args: &[String],
    host: impl Fn(&str) -> Option<OsString>,
) -> Result<Env, CollectError> {
    let mut env = Env::new();
    for file in files {
        env.extend(read_env_file(file)?);
    }
    for arg in args {
        let (name, value) = parse_assignment(arg, &host)?;
        env.insert(name, value);
    }
    check(&env)?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Option<OsString> {
        match name {
            "FROM_HOST" => Some("host value".into()),
            "NOT_UTF8" => Some(std::os::unix::ffi::OsStringExt::from_vec(vec![0xff])),
            _ => None,
        }
    }

    #[test]
    fn the_forms_of_e() {
        let p = |arg: &str| parse_assignment(arg, host);
        assert_eq!(p("A=1").unwrap(), ("A".into(), "1".into()));
        assert_eq!(p("A=").unwrap(), ("A".into(), "".into()));
        assert_eq!(p("A==b=c").unwrap(), ("A".into(), "=b=c".into()), "the first `=` splits");
        assert_eq!(p("FROM_HOST").unwrap(), ("FROM_HOST".into(), "host value".into()));
        let unset = p("NOT_SET").unwrap_err().to_string();
        assert!(unset.contains("NOT_SET is not set here") && unset.contains("-e NOT_SET=VALUE"), "{unset}");
        assert!(matches!(p("NOT_UTF8"), Err(EnvError::NotUnicode(_))));
        for bad in ["=x", "", "1A=x", "A B=x"] {
            assert!(matches!(p(bad), Err(EnvError::BadName(_))), "{bad:?}");
        }
        assert!(matches!(p("http_proxy=x"), Err(EnvError::Reserved { .. })));
        assert!(matches!(p("GH_TOKEN"), Err(EnvError::Reserved { .. })), "reserved before the host is asked");
    }

    #[test]
    fn e_beats_files_and_later_beats_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one.env");
        let two = dir.path().join("two.env");
        std::fs::write(&one, "A=file1\nB=file1\nC=file1\n").unwrap();
        std::fs::write(&two, "B=file2\nC=file2\n").unwrap();
        let args = ["C=arg1".to_string(), "D=arg1".into(), "D=arg2".into(), "FROM_HOST".into()];
        let env = collect(&[one, two], &args, host).unwrap();
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("A", "file1"), ("B", "file2"), ("C", "arg1"), ("D", "arg2"), ("FROM_HOST", "host value")]);
    }

    #[test]
    fn credentials_are_refused_wherever_they_come_from() {
        let key = format!("ghp_{}", "a1B2".repeat(9));
        let err = collect(&[], &[format!("FOO={key}")], host).unwrap_err().to_string();
        assert!(err.starts_with("FOO looks like a GitHub token; store it with `moat secret set -g github`"), "{err}");
        let leaky = |name: &str| (name == "LEAKY").then(|| OsString::from(&key));
        assert!(matches!(collect(&[], &["LEAKY".into()], leaky), Err(CollectError::Var(EnvError::Credential { .. }))));
        assert_eq!(collect(&[], &["FOO_TOKEN=abc".into()], host).unwrap()["FOO_TOKEN"], "abc");
    }
}
