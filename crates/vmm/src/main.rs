//! `moat-vmm`: one microVM per process, launched per sandbox by
//! `sandbox-core` and driven through its control socket.
//!
//! Thin on purpose: arguments → (namespaces) → [`VmConfig`] → build → (jail) → rlimits → run.
//! Exit status:
//! the guest's debug-exit code if it used that port; 0 when it powered off
//! or reset (how Linux exits: `reboot=t` ends in a triple fault, `reboot=k`
//! in an i8042 reset, and neither is emulated as a reboot) or a controller
//! stopped it; 124 when the timeout passed; 125 when the VMM itself failed
//! (the reason on stderr, one line starting `moat-vmm: `).

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use moat_vmm::jail::{apply_rlimits, confine, enter_namespaces, Jail, Rlimits};
use moat_vmm::{build_microvm, DiskConfig, FsConfig, Payload, RunOptions, RunOutcome, VmConfig, VsockConfig};

const EXIT_TIMED_OUT: u8 = 124;
const EXIT_VMM_FAILED: u8 = 125;
/// Longest kernel command line accepted (x86 `COMMAND_LINE_SIZE` minus its
/// NUL); the loader checks the kernel's own limit, with the device entries.
const MAX_CMDLINE: usize = 2047;

/// Runs one KVM microVM.
#[derive(Debug, Parser)]
#[command(name = "moat-vmm", version)]
struct Args {
    /// The payload: a kernel or a freestanding program.
    #[arg(long)]
    kernel: PathBuf,
    /// How to load and enter the payload.
    #[arg(long, value_enum, default_value_t = Format::Elf)]
    format: Format,
    /// An initrd, for Linux payloads.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The kernel command line, for Linux payloads. The `virtio_mmio.device=`
    /// entries announcing the virtio devices are appended to it.
    #[arg(long, default_value = "console=ttyS0 reboot=k panic=-1", value_parser = parse_cmdline)]
    cmdline: String,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 128)]
    mem_mib: u32,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// A raw disk image as a virtio-blk device: `PATH`, `PATH,ro` or
    /// `PATH,rw` (give the option when PATH may contain a comma).
    #[arg(long = "disk", value_parser = parse_disk)]
    disks: Vec<DiskConfig>,
    /// A shared directory as a virtio-fs device served by a vhost-user
    /// back-end already listening on SOCKET (`virtiofsd --socket-path`):
    /// `SOCKET,TAG` (the tag is what follows the last comma). Repeatable.
    #[arg(long = "fs", value_name = "SOCKET,TAG", value_parser = parse_fs)]
    fs: Vec<FsConfig>,
    /// A virtio-vsock device served by a vhost-user back-end already
    /// listening on SOCKET (`moat-vsock --socket`): `SOCKET,CID`.
    #[arg(long, value_name = "SOCKET,CID", value_parser = parse_vsock)]
    vsock: Option<VsockConfig>,
    /// Serve the control API on a Unix socket created at this path (a stale
    /// socket nobody serves is replaced; a live one is an error).
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Where serial output goes: `stdout`, `none`, or a file path (truncated).
    #[arg(long, default_value = "stdout")]
    serial: String,
    /// Stop the VM after this many seconds (default: never).
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// How long a guest asked to shut down gets before it is stopped.
    #[arg(long, default_value_t = 5000)]
    shutdown_grace_ms: u64,
    /// Build the VM and serve the control socket, but hold the vCPUs until
    /// a controller says `start`.
    #[arg(long, requires = "api_socket")]
    paused: bool,
    /// Run without seccomp filters (debugging only).
    #[arg(long)]
    no_seccomp: bool,
    /// Most fds the process may hold.
    #[arg(long, default_value_t = 256)]
    rlimit_nofile: u64,
    /// Largest file the process may write, in bytes: bounds the serial log;
    /// must exceed the largest disk image.
    #[arg(long)]
    rlimit_fsize: Option<u64>,
    /// Most processes and threads of the user running the VMM.
    #[arg(long)]
    rlimit_nproc: Option<u64>,
    /// Confine the process (needs root): new mount, IPC, UTS and network
    /// namespaces, then — once the VM is built — an empty read-only root
    /// mounted over DIR, no capabilities, no new privileges.
    #[arg(long, value_name = "DIR")]
    jail: Option<PathBuf>,
    /// With --jail: run as this user id once the VM is built.
    #[arg(long, requires_all = ["jail", "jail_gid"])]
    jail_uid: Option<u32>,
    /// With --jail: run as this group id (and no supplementary groups).
    #[arg(long, requires_all = ["jail", "jail_uid"])]
    jail_gid: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Raw 64-bit code loaded and entered at 1 MiB.
    Flat,
    /// A static 64-bit ELF entered at its entry point.
    Elf,
    /// A Linux vmlinux through its PVH entry.
    Pvh,
    /// A Linux bzImage through the 64-bit boot protocol.
    Bzimage,
    /// A Linux kernel of either kind: an ELF `vmlinux` through PVH,
    /// anything else as a bzImage.
    Linux,
}

fn parse_disk(value: &str) -> Result<DiskConfig, String> {
    match value.rsplit_once(',') {
        Some((path, "ro")) => Ok(DiskConfig { path: path.into(), read_only: true }),
        Some((path, "rw")) => Ok(DiskConfig { path: path.into(), read_only: false }),
        Some((_, option)) => Err(format!("unknown disk option `{option}` (`ro` or `rw`)")),
        None => Ok(DiskConfig { path: value.into(), read_only: false }),
    }
}

fn parse_fs(value: &str) -> Result<FsConfig, String> {
    match value.rsplit_once(',') {
        Some((socket, tag)) if !socket.is_empty() => Ok(FsConfig { socket: socket.into(), tag: tag.into() }),
        _ => Err("expected SOCKET,TAG (e.g. /run/fs0.sock,ws0)".into()),
    }
}

fn parse_vsock(value: &str) -> Result<VsockConfig, String> {
    let Some((socket, cid)) = value.rsplit_once(',').filter(|(socket, _)| !socket.is_empty()) else {
        return Err("expected SOCKET,CID (e.g. /run/vsock.sock,3)".into());
    };
    let guest_cid = cid.parse().map_err(|_| format!("guest CID `{cid}` is not a number"))?;
    Ok(VsockConfig { socket: socket.into(), guest_cid })
}

fn parse_cmdline(value: &str) -> Result<String, String> {
    if value.len() > MAX_CMDLINE {
        return Err(format!("{} bytes is longer than the {MAX_CMDLINE} a kernel command line may have", value.len()));
    }
    Ok(value.to_owned())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let mut message = format!("moat-vmm: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                message += &format!(": {cause}");
                source = cause.source();
            }
            let _ = writeln!(std::io::stderr(), "{message}");
            ExitCode::from(EXIT_VMM_FAILED)
        }
    }
}

fn run(args: &Args) -> Result<u8, Box<dyn std::error::Error>> {
    let jail = args.jail.as_ref().map(|root| Jail { root: root.clone(), ids: args.jail_uid.zip(args.jail_gid) });
    if jail.is_some() {
        // While this process has a single thread.
        enter_namespaces()?;
    }
    let config = VmConfig {
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        timeout: args.timeout_secs.map_or(Duration::MAX, Duration::from_secs),
        disks: args.disks.clone(),
        fs: args.fs.clone(),
        vsock: args.vsock.clone(),
        ..VmConfig::default()
    };
    let image = read(&args.kernel)?;
    let initrd = args.initrd.as_ref().map(read).transpose()?;
    let (initrd, cmdline) = (initrd.as_deref(), args.cmdline.as_str());
    let payload = match args.format {
        Format::Flat => Payload::Flat(&image),
        Format::Elf => Payload::Elf(&image),
        Format::Pvh => Payload::LinuxPvh { vmlinux: &image, initrd, cmdline },
        Format::Bzimage => Payload::LinuxBzImage { bzimage: &image, initrd, cmdline },
        Format::Linux if image.starts_with(b"\x7fELF") => Payload::LinuxPvh { vmlinux: &image, initrd, cmdline },
        Format::Linux => Payload::LinuxBzImage { bzimage: &image, initrd, cmdline },
    };
    let serial_out: Option<Box<dyn Write + Send>> = match args.serial.as_str() {
        "none" => None,
        "stdout" => Some(Box::new(std::io::stdout())),
        path => Some(Box::new(File::create(path).map_err(|e| format!("could not create {path}: {e}"))?)),
    };

    let mut vm = build_microvm(&config, payload)?;
    let api = args.api_socket.as_deref().map(bind_api).transpose()?;
    // The socket's folder, to remove it by name at exit even from the jail.
    let api_dir = args.api_socket.as_deref().and_then(SocketFile::new);
    if let Some(jail) = &jail {
        confine(jail)?;
    }
    // Limits go on once the VM is built: sizing guest RAM is a file write
    // RLIMIT_FSIZE would refuse, and everything needing an fd is open.
    apply_rlimits(&Rlimits { nofile: Some(args.rlimit_nofile), fsize: args.rlimit_fsize, nproc: args.rlimit_nproc })?;
    let options = RunOptions {
        api,
        serial_out,
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
        seccomp: !args.no_seccomp,
        start_paused: args.paused,
    };
    let report = vm.run_with(options);
    if let Some(file) = api_dir {
        file.remove();
    }
    Ok(match report?.outcome {
        RunOutcome::Exited(code) => code,
        RunOutcome::TimedOut => EXIT_TIMED_OUT,
        RunOutcome::Reset | RunOutcome::Shutdown | RunOutcome::Halted | RunOutcome::Stopped => 0,
    })
}

/// Binds the control socket at `path`, replacing a socket file left by a
/// VMM that died without removing it (nobody accepts on it).
fn bind_api(path: &Path) -> Result<UnixListener, String> {
    let failed = |e: std::io::Error| format!("could not bind the control socket {}: {e}", path.display());
    match UnixListener::bind(path) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => match UnixStream::connect(path) {
            Err(refused) if refused.kind() == ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(failed)?;
                UnixListener::bind(path).map_err(failed)
            }
            _ => Err(failed(e) + " (another process serves it)"),
        },
        bound => bound.map_err(failed),
    }
}

/// A socket file to remove at exit through an fd on its folder, which
/// works after the root changed (though not if the jail's user may not
/// write the folder: then the next start replaces the stale file).
struct SocketFile {
    dir: std::os::fd::OwnedFd,
    name: std::ffi::CString,
}

impl SocketFile {
    fn new(path: &Path) -> Option<SocketFile> {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::CString::new(path.file_name()?.as_bytes()).ok()?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir = File::open(parent).ok()?.into();
        Some(SocketFile { dir, name })
    }

    fn remove(self) {
        use std::os::fd::AsRawFd;
        // SAFETY: an open directory fd and a valid C string, for the call only.
        unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), 0) };
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("could not read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["moat-vmm", "--kernel", "k"].iter().chain(args))
    }

    #[test]
    fn shares_and_vsock_map_to_the_config() {
        let args = parse(&["--fs", "/r/a,b.sock,ws0", "--fs", "/r/fs1.sock,ws1", "--vsock", "/r/v.sock,3"]).unwrap();
        let fs = |socket: &str, tag: &str| FsConfig { socket: socket.into(), tag: tag.into() };
        assert_eq!(args.fs, [fs("/r/a,b.sock", "ws0"), fs("/r/fs1.sock", "ws1")]);
        assert_eq!(args.vsock, Some(VsockConfig { socket: "/r/v.sock".into(), guest_cid: 3 }));
        let disks =
            parse(&["--disk", "/r/root.ext4,ro", "--disk", "/r/state.ext4", "--disk", "/r/a,b,rw"]).unwrap().disks;
        assert_eq!(disks[0], DiskConfig { path: "/r/root.ext4".into(), read_only: true });
        assert_eq!(disks[1], DiskConfig { path: "/r/state.ext4".into(), read_only: false });
        assert_eq!(disks[2], DiskConfig { path: "/r/a,b".into(), read_only: false });
    }

    #[test]
    fn malformed_device_arguments_say_what_is_expected() {
        for (args, expected) in [
            (&["--fs", "/r/fs.sock"][..], "expected SOCKET,TAG"),
            (&["--fs", ",ws0"], "expected SOCKET,TAG"),
            (&["--vsock", "/r/v.sock"], "expected SOCKET,CID"),
            (&["--vsock", "/r/v.sock,three"], "`three` is not a number"),
            (&["--vsock", "/r/a.sock,3", "--vsock", "/r/b.sock,4"], "cannot be used multiple times"),
            (&["--disk", "/r/d,sync"], "unknown disk option `sync` (`ro` or `rw`)"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn jail_ids_come_in_pairs_and_only_with_a_jail() {
        let args = parse(&["--jail", "/run/j", "--jail-uid", "65534", "--jail-gid", "65534"]).unwrap();
        assert_eq!((args.jail_uid, args.jail_gid), (Some(65534), Some(65534)));
        assert!(parse(&["--jail", "/run/j"]).is_ok(), "root without capabilities");
        for bad in [&["--jail", "/run/j", "--jail-uid", "1"][..], &["--jail-uid", "1", "--jail-gid", "1"]] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("required arguments were not provided"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_command_line_is_bounded() {
        assert!(parse(&["--cmdline", &"x".repeat(MAX_CMDLINE)]).is_ok());
        let err = parse(&["--cmdline", &"x".repeat(MAX_CMDLINE + 1)]).unwrap_err().to_string();
        assert!(err.contains("2048 bytes is longer than the 2047"), "{err}");
    }

    #[test]
    fn a_stale_control_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a dropped listener leaves its file behind");
        let live = bind_api(&path).unwrap();
        let err = bind_api(&path).unwrap_err();
        assert!(err.contains("another process serves it"), "{err}");
        drop(live);
    }
}
