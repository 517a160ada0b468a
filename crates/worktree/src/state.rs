//! The record each checkpoint keeps at `<repo>/.moat/checkpoints/<sandbox>.json`,
//! outside anything shared with the sandbox.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

/// How the sandbox's workspace relates to the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Workspace at `<repo>/.moat/worktrees/<sandbox>`, branch `refs/heads/<branch>`
    /// in the repository from the start.
    Branch,
    /// Workspace anywhere; the branch reaches the repository as the review ref
    /// `refs/moat/clones/<branch>`.
    Clone,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    pub mode: Mode,
    pub sandbox: String,
    pub branch: String,
    pub host_ref: String,
    pub base: String,
    pub workspace: PathBuf,
    pub read_only: Vec<PathBuf>,
    pub submodules: Vec<String>,
    pub workspace_config: String,
    pub host_config: String,
    pub host_hooks: Vec<HookStamp>,
    pub applied_tip: Option<String>,
}

/// Enough about a hook file to notice that it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HookStamp {
    pub name: String,
    pub len: u64,
    pub modified_ns: u128,
}

pub(crate) fn dir(top: &Path) -> PathBuf {
    top.join(".moat").join("checkpoints")
}

pub(crate) fn path(top: &Path, sandbox: &str) -> PathBuf {
    dir(top).join(format!("{sandbox}.json"))
}

/// Moat's scratch copies of the sandbox's repositories: next to the record,
/// outside anything shared with the sandbox.
pub(crate) fn scratch_dir(top: &Path, sandbox: &str) -> PathBuf {
    dir(top).join(format!("{sandbox}.scratch"))
}

pub(crate) fn save(path: &Path, state: &State) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("state path has a parent"))?;
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// Hook files that would run: everything in `dir` except git's `*.sample`s.
pub(crate) fn hook_stamps(dir: &Path) -> Vec<HookStamp> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<HookStamp> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".sample"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let modified_ns = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
            Some(HookStamp { name: e.file_name().to_string_lossy().into_owned(), len: meta.len(), modified_ns })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A config file's text (lossy, at most 1 MiB), or empty if it does not exist
/// or is not a regular file: a symlink is not followed, a FIFO never blocks.
pub(crate) fn read_config(path: &Path) -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let Ok(file) = opened else { return String::new() };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(1 << 20).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}
