//! Bringing your own programs: for agents whose CLIs are not on a registry
//! Moat's image builds reach (Kiro's `kiro-cli`, Docker's `docker-agent`),
//! a template of the host's executables, installed in `/usr/local/bin` over
//! a shipped template, with a launch of its own.

use std::io::Read;
use std::path::Path;

use super::error::TemplateError;
use super::manifest::Launch;
use moat_images::HostProgram;

/// Largest program accepted.
pub const MAX_PROGRAM_BYTES: u64 = 1 << 30;

/// How agents Moat knows start unattended, by program name.
struct Known {
    program: &'static str,
    argv: &'static [&'static str],
    batch: &'static [&'static str],
}

/// Kiro CLI 3.x is one glibc program: `chat --trust-all-tools` trusts every
/// tool, `--no-interactive` runs a prompt headless. Docker Agent (formerly
/// cagent) as a standalone program: `run --yolo` approves every tool call,
/// `--exec` runs without its terminal UI.
const KNOWN: &[Known] = &[
    Known { program: "kiro-cli", argv: &["kiro-cli", "chat", "--trust-all-tools"], batch: &["--no-interactive"] },
    Known { program: "docker-agent", argv: &["docker-agent", "run", "--yolo"], batch: &["--exec"] },
];

/// The launch Moat knows for the first of `programs` it knows.
pub fn default_launch(programs: &[String]) -> Option<Launch> {
    programs.iter().find_map(|p| KNOWN.iter().find(|k| k.program == p)).map(|k| Launch {
        argv: k.argv.iter().map(|s| s.to_string()).collect(),
        batch: k.batch.iter().map(|s| s.to_string()).collect(),
    })
}

/// Reads the host file at `path` (absolute) and checks that the guest can run
/// it, as `/usr/local/bin/<its file name>`.
pub fn read_program(path: &Path) -> Result<HostProgram, TemplateError> {
    let io = TemplateError::io("read", path);
    if !path.is_absolute() {
        return Err(io(std::io::Error::other("the path must be absolute")));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let file = std::fs::File::open(path).map_err(TemplateError::io("read", path))?;
    let meta = file.metadata().map_err(TemplateError::io("read", path))?;
    if !meta.is_file() {
        return Err(TemplateError::io("read", path)(std::io::Error::other("not a regular file")));
    }
    if meta.len() > MAX_PROGRAM_BYTES {
        return Err(TemplateError::io("read", path)(std::io::Error::other("larger than 1 GiB")));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_PROGRAM_BYTES).read_to_end(&mut bytes).map_err(TemplateError::io("read", path))?;
    Ok(HostProgram::new(&name, bytes)?)
}

/// `--launch 'PROGRAM ARGS…'`: words split at whitespace (no quoting).
pub fn parse_launch(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kiro_and_docker_agent_start_unattended_by_default() {
        let kiro = default_launch(&["kiro-cli".into()]).unwrap();
        assert_eq!(kiro.argv, ["kiro-cli", "chat", "--trust-all-tools"]);
        assert_eq!(kiro.batch, ["--no-interactive"]);
        let docker = default_launch(&["helper".into(), "docker-agent".into()]).unwrap();
        assert_eq!(docker.argv, ["docker-agent", "run", "--yolo"]);
        assert_eq!(default_launch(&["my-agent".into()]), None);
        assert_eq!(parse_launch("  my-agent  --yes\t--model x "), ["my-agent", "--yes", "--model", "x"]);
    }

    #[test]
    fn only_programs_the_base_can_run_are_read() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(read_program(&me).unwrap().linkage, moat_images::elf::Linkage::Glibc);
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("agent.sh");
        std::fs::write(&script, "#!/bin/sh\nexec true\n").unwrap();
        let err = read_program(&script).unwrap_err();
        assert!(format!("{err}: {}", std::error::Error::source(&err).unwrap()).contains("script"), "{err}");
        assert!(read_program(Path::new("relative/agent")).is_err());
        assert!(read_program(dir.path()).is_err(), "a folder");
    }
}
