//! What a sandbox is made of: its name, agent, workspace, extra mounts, size
//! and environment.
//!
//! Everything here is validated user input: a [`SandboxSpec`] that exists has a
//! valid name, absolute canonical paths, sizes within bounds, and variables
//! [`crate::env`] accepts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::env::{Env, EnvError};
use crate::owner::{OwnerError, ShareOwner};

/// Agents Moat knows how to start. `shell` is a login shell at the workspace.
pub const AGENTS: &[&str] = &["shell", "claude", "codex", "copilot", "gemini", "opencode"];

#[cfg(test)]
#[test]
fn every_agent_is_a_template_moat_ships_with_valid_hosts_and_services() {
    assert_eq!(AGENTS, moat_images::builtin_names());
    for agent in AGENTS {
        let t = moat_images::Template::builtin(agent).unwrap();
        for host in &t.spec.network.allow {
            assert!(host.parse::<moat_netproxy::policy::Resource>().is_ok(), "{agent}: {host}");
        }
        for service in &t.spec.credentials.services {
            assert!(moat_secrets::catalog::service(service).is_some(), "{agent}: {service}");
        }
    }
}

/// The request to make a sandbox, before defaults are filled in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Name; `<agent>-<workdir>` (`<template>-<workdir>`) when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Agent to run (see [`AGENTS`]); may be left out with `template`, whose agent it is.
    #[serde(default)]
    pub agent: String,
    /// A template users made (`moat template ls`) to boot from instead of the agent's own.
    #[serde(default)]
    pub template: Option<String>,
    /// The workspace folder, shared read-write at the same absolute path.
    pub workspace: PathBuf,
    /// Extra folders: `PATH` (read-write) or `PATH:ro`.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// vCPUs; 0 or absent = host CPUs − 1 (at least 1).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory, e.g. `2g`, `512m`; default a quarter of the host's RAM, at least
    /// 1 GiB and at most 8 GiB (see [`crate::host::default_memory_mib`]); never
    /// more than the host has.
    #[serde(default)]
    pub memory: Option<String>,
    /// Size of the sparse state disk, e.g. `20g`; default 16 GiB (1 GiB to 1 TiB).
    #[serde(default)]
    pub disk: Option<String>,
    /// Hypervisor backend (`auto` when absent).
    #[serde(default)]
    pub backend: Option<moat_proto::backend::BackendChoice>,
    /// Work on a review checkpoint of the workspace's git repository: a new
    /// branch (`auto` or a name) in a clone under `<repo>/.moat/worktrees/`.
    #[serde(default)]
    pub branch: Option<String>,
    /// Like `branch`, but the clone lives in Moat's own folder and the branch comes
    /// back to the repository as `refs/moat/clones/<branch>`.
    #[serde(default)]
    pub clone: bool,
    /// Who owns, on the host, what the guest writes to its shares; the user
    /// behind this process when absent (see [`ShareOwner::invoking`]).
    #[serde(default)]
    pub owner: Option<ShareOwner>,
    /// Variables every process started in the sandbox gets (checked by
    /// [`crate::env::check`]: no credentials, none Moat sets itself).
    #[serde(default)]
    pub env: Env,
}

/// A folder shared into the guest at the same absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Canonical absolute host path (also the guest path).
    pub path: PathBuf,
    /// Whether the guest may only read it (enforced on the host side too).
    pub read_only: bool,
}

/// A validated sandbox definition, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Unique name.
    pub name: String,
    /// Agent.
    pub agent: String,
    /// The user template it boots from, over the agent's own images (records
    /// from before templates users make: none).
    #[serde(default)]
    pub template: Option<String>,
    /// Workspace (first mount, read-write).
    pub workspace: PathBuf,
    /// Extra mounts.
    pub mounts: Vec<Mount>,
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Size of the sparse state disk in MiB (records from before the option: 32 GiB).
    #[serde(default = "legacy_disk_mib")]
    pub disk_mib: u64,
    /// Backend choice as the user gave it.
    pub backend: moat_proto::backend::BackendChoice,
    /// The git repository whose review checkpoint the workspace is (see `moat_worktree`).
    #[serde(default)]
    pub checkpoint_repo: Option<PathBuf>,
    /// Who owns, on the host, what the guest writes to its shares.
    #[serde(default = "ShareOwner::invoking")]
    pub owner: ShareOwner,
    /// Variables every process started in the sandbox gets; whoever starts one
    /// adds them to its exec request (records from before the option: none).
    #[serde(default)]
    pub env: Env,
}

fn legacy_disk_mib() -> u64 {
    32 * 1024
}

impl SandboxSpec {
    /// Every shared folder, workspace first.
    pub fn shares(&self) -> Vec<Mount> {
        let mut all = vec![Mount { path: self.workspace.clone(), read_only: false }];
        all.extend(self.mounts.iter().cloned());
        all
    }
}

/// Why a sandbox definition was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Name has characters or a length we don't accept (one rule: `moat_proto::name`).
    #[error(transparent)]
    BadName(#[from] moat_proto::name::NameError),
    /// Unknown agent.
    #[error("unknown agent {0:?}; known agents: {list}", list = AGENTS.join(", "))]
    UnknownAgent(String),
    /// A folder to share doesn't exist or isn't a folder.
    #[error("cannot share {path}: {why}")]
    BadPath { path: PathBuf, why: String },
    /// A folder would be shared twice, or inside another share.
    #[error("{0} is already shared (mounts must not repeat or nest)")]
    Overlap(PathBuf),
    /// Bad memory size.
    #[error("invalid memory size {0:?}: use a number with a unit, e.g. 512m or 4g (256 MiB to 32 GiB)")]
    BadMemory(String),
    /// More memory than the host has.
    #[error("cannot give the guest {0} MiB of memory: this host has {1} MiB; choose a smaller -m")]
    MemoryOverHost(u64, u64),
    /// Bad state disk size.
    #[error(transparent)]
    BadDisk(#[from] crate::host::DiskError),
    /// Bad CPU count.
    #[error("invalid CPU count {0}: this host has {1} CPUs")]
    BadCpus(u32, u32),
    /// Shared files may not be given to that user.
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// A variable is refused.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The template's name is not one a template can have.
    #[error(transparent)]
    Template(crate::templates::NameError),
}

/// Checks a sandbox name.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    moat_proto::name::SandboxName::parse(name)?;
    Ok(())
}

/// The default name: `<agent>-<workdir>`, lowercased, every other character
/// (`_` and `.` included) turned into `-`.
pub fn default_name(agent: &str, workspace: &Path) -> String {
    let base = workspace.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into());
    moat_proto::name::SandboxName::from_words(&[agent, &base], agent).to_string()
}

/// Parses `512m`, `4g`, `4GiB`, `2048` (MiB) into MiB.
pub fn parse_memory(s: &str) -> Result<u64, SpecError> {
    let bad = || SpecError::BadMemory(s.to_string());
    let t = s.trim().to_ascii_lowercase();
    let digits = t.bytes().take_while(|b| b.is_ascii_digit()).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mib = match unit.trim() {
        "" | "m" | "mb" | "mib" => Some(n),
        "g" | "gb" | "gib" => n.checked_mul(1024),
        _ => None,
    }
    .ok_or_else(bad)?;
    if !(256..=32 * 1024).contains(&mib) {
        return Err(bad());
    }
    Ok(mib)
}

/// Parses `PATH` or `PATH:ro` / `PATH:rw` into a canonical mount.
pub fn parse_mount(arg: &str, base: &Path) -> Result<Mount, SpecError> {
    let (path, read_only) = match arg.rsplit_once(':') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        _ => (arg, false),
    };
    Ok(Mount { path: canonical_dir(&base.join(path))?, read_only })
}

/// The canonical absolute form of an existing folder.
pub fn canonical_dir(path: &Path) -> Result<PathBuf, SpecError> {
    let bad = |why: String| SpecError::BadPath { path: path.to_path_buf(), why };
    let canon = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
    if !canon.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if canon == Path::new("/") {
        return Err(bad("sharing the whole host filesystem defeats the sandbox".into()));
    }
    Ok(canon)
}

/// Host facts that defaults depend on.
#[derive(Debug, Clone, Copy)]
pub struct HostSize {
    /// Online CPUs.
    pub cpus: u32,
    /// Physical memory in MiB.
    pub memory_mib: u64,
}

impl HostSize {
    /// Reads the running host.
    pub fn detect() -> HostSize {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map(|kib| kib / 1024)
            .unwrap_or(2048);
        HostSize { cpus, memory_mib }
    }
}

impl CreateRequest {
    /// Fills defaults and validates everything, resolving relative paths against `cwd`.
    pub fn resolve(&self, cwd: &Path, host: HostSize) -> Result<SandboxSpec, SpecError> {
        if !AGENTS.contains(&self.agent.as_str()) {
            return Err(SpecError::UnknownAgent(self.agent.clone()));
        }
        if let Some(template) = &self.template {
            crate::templates::check_name(template).map_err(SpecError::Template)?;
        }
        let workspace = canonical_dir(&cwd.join(&self.workspace))?;
        let first_word = self.template.as_deref().unwrap_or(&self.agent);
        let name = self.name.clone().unwrap_or_else(|| default_name(first_word, &workspace));
        validate_name(&name)?;
        let mut mounts: Vec<Mount> = Vec::new();
        for m in &self.mounts {
            let m = parse_mount(m, cwd)?;
            let taken = std::iter::once(&workspace).chain(mounts.iter().map(|m| &m.path));
            for other in taken {
                if m.path.starts_with(other) || other.starts_with(&m.path) {
                    return Err(SpecError::Overlap(m.path));
                }
            }
            mounts.push(m);
        }
        let cpus = match self.cpus.unwrap_or(0) {
            0 => host.cpus.saturating_sub(1).max(1),
            n if n <= host.cpus => n,
            n => return Err(SpecError::BadCpus(n, host.cpus)),
        };
        let memory_mib = match &self.memory {
            Some(m) => parse_memory(m)?,
            None => crate::host::default_memory_mib(host.memory_mib),
        };
        if memory_mib > host.memory_mib {
            return Err(SpecError::MemoryOverHost(memory_mib, host.memory_mib));
        }
        let disk_mib = match &self.disk {
            Some(d) => crate::host::parse_disk_size(d)? >> 20,
            None => crate::host::resources::DEFAULT_DISK_GIB * 1024,
        };
        let backend = self.backend.unwrap_or_default();
        let owner = self.owner.unwrap_or_else(ShareOwner::invoking);
        owner.check_allowed()?;
        crate::env::check(&self.env)?;
        Ok(SandboxSpec {
            name,
            agent: self.agent.clone(),
            template: self.template.clone(),
            workspace,
            mounts,
            cpus,
            memory_mib,
            disk_mib,
            backend,
            checkpoint_repo: None,
            owner,
            env: self.env.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid_and_readable() {
        assert_eq!(default_name("shell", Path::new("/home/me/My Project")), "shell-my-project");
        assert_eq!(default_name("claude", Path::new("/srv/données")), "claude-donn-es");
        assert!(validate_name(&default_name("shell", Path::new("/x/---"))).is_ok());
        // `moat run shell ./my_project`: a name the guest takes as its hostname.
        assert_eq!(default_name("shell", Path::new("/src/my_project")), "shell-my-project");
        assert!(validate_name("shell-my_project").is_err(), "one rule: no `_` anywhere");
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "-x", "A", "a b", "a/b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name("shell-proj-1.2").is_ok());
    }

    #[test]
    fn memory_sizes_parse_with_units_and_bounds() {
        assert_eq!(parse_memory("512m").unwrap(), 512);
        assert_eq!(parse_memory("4g").unwrap(), 4096);
        assert_eq!(parse_memory("2GiB").unwrap(), 2048);
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        for bad in ["", "g", "12x", "100m", "64g", "99999999999999999999g"] {
            assert!(parse_memory(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resolve_fills_defaults_and_rejects_overlaps() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("proj");
        let extra = dir.path().join("data");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(&extra).unwrap();
        let host = HostSize { cpus: 4, memory_mib: 8192 };
        let req = CreateRequest {
            agent: "shell".into(),
            workspace: "proj".into(),
            mounts: vec!["data:ro".into()],
            ..Default::default()
        };
        let spec = req.resolve(dir.path(), host).unwrap();
        assert_eq!(spec.name, "shell-proj");
        assert_eq!(spec.cpus, 3);
        assert_eq!(spec.memory_mib, 2048, "a quarter of the host");
        assert_eq!(spec.disk_mib, 16 * 1024);
        assert_eq!(spec.workspace, ws.canonicalize().unwrap());
        assert_eq!(spec.mounts, vec![Mount { path: extra.canonicalize().unwrap(), read_only: true }]);

        let nested = CreateRequest { mounts: vec!["proj".into()], ..req.clone() };
        assert!(matches!(nested.resolve(dir.path(), host), Err(SpecError::Overlap(_))));
        let missing = CreateRequest { workspace: "nope".into(), ..req.clone() };
        assert!(matches!(missing.resolve(dir.path(), host), Err(SpecError::BadPath { .. })));
        let root = CreateRequest { workspace: "/".into(), mounts: vec![], ..req.clone() };
        assert!(matches!(root.resolve(dir.path(), host), Err(SpecError::BadPath { .. })));
        let big = CreateRequest { memory: Some("9g".into()), ..req.clone() };
        let err = big.resolve(dir.path(), host).unwrap_err();
        assert!(matches!(err, SpecError::MemoryOverHost(9216, 8192)), "{err}");
        let disk = CreateRequest { disk: Some("20g".into()), ..req.clone() };
        assert_eq!(disk.resolve(dir.path(), host).unwrap().disk_mib, 20 * 1024);
        let disk = CreateRequest { disk: Some("20".into()), ..req.clone() };
        assert!(matches!(disk.resolve(dir.path(), host), Err(SpecError::BadDisk(_))));
        let cpus = CreateRequest { cpus: Some(9), ..req };
        assert!(matches!(cpus.resolve(dir.path(), host), Err(SpecError::BadCpus(9, 4))));
    }

    #[test]
    fn resolve_keeps_the_environment_and_refuses_credentials_in_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proj")).unwrap();
        let host = HostSize { cpus: 4, memory_mib: 8192 };
        let env: Env = [("FOO_TOKEN".to_string(), "abc".to_string())].into();
        let req = CreateRequest { agent: "shell".into(), workspace: "proj".into(), env, ..Default::default() };
        assert_eq!(req.resolve(dir.path(), host).unwrap().env, req.env);

        let mut leaky = req.clone();
        leaky.env.insert("FOO".into(), format!("sk-ant-api03-{}", "x".repeat(95)));
        let err = leaky.resolve(dir.path(), host).unwrap_err();
        assert!(matches!(err, SpecError::Env(EnvError::Credential { .. })), "{err}");
        let mut reserved = req;
        reserved.env.insert("no_proxy".into(), "*".into());
        assert!(matches!(reserved.resolve(dir.path(), host), Err(SpecError::Env(EnvError::Reserved { .. }))));
    }

    #[test]
    fn the_environment_round_trips_and_old_records_load_without_it() {
        let spec = SandboxSpec {
            name: "s".into(),
            agent: "shell".into(),
            template: None,
            workspace: "/w".into(),
            mounts: vec![],
            cpus: 1,
            memory_mib: 1024,
            disk_mib: 1024,
            backend: moat_proto::backend::BackendChoice::Auto,
            checkpoint_repo: None,
            owner: ShareOwner { uid: 1000, gid: 1000 },
            env: [("A".to_string(), "1".to_string()), ("MULTI".to_string(), "x\ny \"z\"".to_string())].into(),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains(r#""env":{"A":"1","MULTI":"x\ny \"z\""}"#), "{json}");
        assert_eq!(serde_json::from_str::<SandboxSpec>(&json).unwrap(), spec);

        // A record as Moat wrote it before sandboxes had an environment.
        let old = r#"{"name":"s","agent":"shell","workspace":"/w","mounts":[],"cpus":1,"memory_mib":1024,
                      "disk_mib":1024,"backend":"auto","checkpoint_repo":null,"owner":{"uid":1000,"gid":1000}}"#;
        let loaded: SandboxSpec = serde_json::from_str(old).unwrap();
        assert_eq!(loaded, SandboxSpec { env: Env::new(), ..spec });
        let req: CreateRequest = serde_json::from_str(r#"{"agent":"shell","workspace":"."}"#).unwrap();
        assert!(req.env.is_empty());
    }
}
