//! `moat-vmm`: one microVM per process, launched per sandbox by
//! `sandbox-core` and driven through its control socket.
//!
//! Thin on purpose: arguments → [`VmConfig`] → build → rlimits → run.
//! Exit status:
//! the guest's debug-exit code if it used that port; 0 when it powered off
//! or reset (how Linux exits) or a controller stopped it; 124 when the
//! timeout passed; 125 when the VMM itself failed (the reason on stderr).

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use moat_vmm::jail::{apply_rlimits, Rlimits};
use moat_vmm::{build_microvm, DiskConfig, Payload, RunOptions, RunOutcome, VmConfig};

const EXIT_TIMED_OUT: u8 = 124;
const EXIT_VMM_FAILED: u8 = 125;

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
    /// The kernel command line, for Linux payloads.
    #[arg(long, default_value = "console=ttyS0 reboot=k panic=-1")]
    cmdline: String,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 128)]
    mem_mib: u32,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// A raw disk image as a virtio-blk device: `PATH` or `PATH,ro`.
    #[arg(long = "disk", value_parser = parse_disk)]
    disks: Vec<DiskConfig>,
    /// Serve the control API on a Unix socket created at this path.
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Where serial output goes: `stdout`, `none`, or a file path.
    #[arg(long, default_value = "stdout")]
    serial: String,
    /// Stop the VM after this many seconds (default: never).
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// How long a guest asked to shut down gets before it is stopped.
    #[arg(long, default_value_t = 5000)]
    shutdown_grace_ms: u64,
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
}

fn parse_disk(value: &str) -> Result<DiskConfig, String> {
    match value.rsplit_once(',') {
        Some((path, "ro")) => Ok(DiskConfig { path: path.into(), read_only: true }),
        Some((_, option)) => Err(format!("unknown disk option `{option}` (only `ro`)")),
        None => Ok(DiskConfig { path: value.into(), read_only: false }),
    }
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
    let config = VmConfig {
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        timeout: args.timeout_secs.map_or(Duration::MAX, Duration::from_secs),
        disks: args.disks.clone(),
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
    };
    let serial_out: Option<Box<dyn Write + Send>> = match args.serial.as_str() {
        "none" => None,
        "stdout" => Some(Box::new(std::io::stdout())),
        path => Some(Box::new(File::create(path).map_err(|e| format!("could not create {path}: {e}"))?)),
    };

    let mut vm = build_microvm(&config, payload)?;
    let api = match &args.api_socket {
        Some(path) => Some(UnixListener::bind(path).map_err(|e| format!("could not bind {}: {e}", path.display()))?),
        None => None,
    };
    // Limits go on once the VM is built: sizing guest RAM is a file write
    // RLIMIT_FSIZE would refuse, and everything needing an fd is open.
    apply_rlimits(&Rlimits { nofile: Some(args.rlimit_nofile), fsize: args.rlimit_fsize, nproc: args.rlimit_nproc })?;
    let options = RunOptions {
        api,
        serial_out,
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
        seccomp: !args.no_seccomp,
    };
    let report = vm.run_with(options);
    if let Some(path) = &args.api_socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(match report?.outcome {
        RunOutcome::Exited(code) => code,
        RunOutcome::TimedOut => EXIT_TIMED_OUT,
        RunOutcome::Reset | RunOutcome::Shutdown | RunOutcome::Halted | RunOutcome::Stopped => 0,
    })
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("could not read {}: {e}", path.display()))
}
