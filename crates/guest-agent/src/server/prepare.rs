//! Turning an [`ExecRequest`] into everything `execve` needs, before forking.
//!
//! All allocation and all checks that can give a precise error (unknown user,
//! program not in `PATH`, missing working directory) happen here, in the parent.
//! The forked child only runs async-signal-safe system calls.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::users::{self, Account, UserError};
use super::{ExecError, ServerConfig};
use moat_proto::exec::{ExecRequest, WinSize};

/// The default `PATH` of every process.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A fully resolved exec request.
#[derive(Debug)]
pub struct Prepared {
    /// Absolute (or cwd-relative) path of the program.
    pub program: CString,
    /// Arguments, `argv[0]` as the client gave it.
    pub argv: Vec<CString>,
    /// `KEY=value` strings.
    pub envp: Vec<CString>,
    /// Working directory.
    pub cwd: CString,
    /// Who to run as.
    pub account: Account,
    /// Terminal size, if a terminal was asked for.
    pub tty: Option<WinSize>,
    /// Whether stdin is a pipe fed by the client (non-tty mode).
    pub stdin: bool,
}

/// Resolves `req` under `config` (where `passwd` and `group` live, the user
/// when the request names none, the environment every process gets).
pub fn prepare(req: &ExecRequest, config: &ServerConfig) -> Result<Prepared, ExecError> {
    let (etc, default_user) = (config.etc_dir.as_path(), config.default_user.as_str());
    let Some(arg0) = req.argv.first() else {
        return Err(ExecError::EmptyArgv);
    };
    let who = req.user.as_deref().unwrap_or(default_user);
    let account = users::lookup(etc, who).map_err(|e| match e {
        UserError::Unknown(name) => ExecError::UnknownUser(name),
        other => ExecError::UserDb(other),
    })?;

    let cwd = match &req.cwd {
        Some(dir) => {
            if !Path::new(dir).is_dir() {
                return Err(ExecError::BadCwd(dir.clone()));
            }
            dir.clone()
        }
        // A home that does not exist (e.g. nobody's /nonexistent) falls back to `/`.
        None if Path::new(&account.home).is_dir() => account.home.clone(),
        None => "/".to_string(),
    };

    let env = environment(&account, &config.base_env, req);
    let path_var = env.iter().find(|(k, _)| k == "PATH").map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let program =
        find_program(arg0, path_var, Path::new(&cwd)).ok_or_else(|| ExecError::ProgramNotFound(arg0.clone()))?;

    Ok(Prepared {
        program: cstring(program.into_os_string().into_encoded_bytes(), "program path")?,
        argv: req.argv.iter().map(|a| cstring(a.clone().into_bytes(), "argv")).collect::<Result<_, _>>()?,
        envp: env
            .into_iter()
            .map(|(k, v)| cstring(format!("{k}={v}").into_bytes(), "env"))
            .collect::<Result<_, _>>()?,
        cwd: cstring(cwd.into_bytes(), "cwd")?,
        account,
        tty: req.tty,
        stdin: req.stdin,
    })
}

/// Login defaults for `account`, the server's base environment, then the
/// request's overrides (last one wins).
fn environment(account: &Account, base: &[(String, String)], req: &ExecRequest) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), account.home.clone()),
        ("USER".into(), account.name.clone()),
        ("LOGNAME".into(), account.name.clone()),
        ("SHELL".into(), account.shell.clone()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    if req.tty.is_some() {
        env.push(("TERM".into(), "xterm-256color".into()));
    }
    for (k, v) in base.iter().chain(&req.env) {
        match env.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

/// `arg0` itself when it contains a slash (relative to `cwd`), else the first
/// executable regular file named `arg0` in `path_var`.
fn find_program(arg0: &str, path_var: &str, cwd: &Path) -> Option<PathBuf> {
    if arg0.is_empty() {
        return None;
    }
    if arg0.contains('/') {
        let p = cwd.join(arg0);
        return p.exists().then_some(p);
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| cwd.join(d).join(arg0))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn cstring(bytes: Vec<u8>, what: &'static str) -> Result<CString, ExecError> {
    CString::new(bytes).map_err(|_| ExecError::NulByte(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            name: "agent".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/agent".into(),
            shell: "/bin/bash".into(),
            groups: vec![1000],
        }
    }

    #[test]
    fn request_env_overrides_defaults_and_tty_sets_term() {
        let req = ExecRequest {
            env: vec![("PATH".into(), "/opt/bin".into()), ("FOO".into(), "bar".into())],
            tty: Some(WinSize { rows: 1, cols: 1 }),
            ..Default::default()
        };
        let base = [("https_proxy".to_string(), "http://gw:3128".to_string())];
        let env = environment(&account(), &base, &req);
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/opt/bin"));
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("TERM"), Some("xterm-256color"));
        assert_eq!(get("HOME"), Some("/home/agent"));
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert_eq!(get("https_proxy"), Some("http://gw:3128"), "the base environment is there");
        let req = ExecRequest { env: vec![("https_proxy".into(), "".into())], ..Default::default() };
        let env = environment(&account(), &base, &req);
        assert!(env.contains(&("https_proxy".into(), "".into())), "and the request can override it");
    }

    #[test]
    fn program_lookup() {
        assert_eq!(find_program("sh", DEFAULT_PATH, Path::new("/")).map(|p| p.is_absolute()), Some(true));
        assert_eq!(find_program("no-such-program-moat", DEFAULT_PATH, Path::new("/")), None);
        assert_eq!(find_program("/bin/sh", "", Path::new("/")), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_program("", DEFAULT_PATH, Path::new("/")), None);
    }
}
