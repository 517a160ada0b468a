//! The supervisor's life: device back-ends, the monitor, readiness, shutdown, cleanup.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

use super::console::BoundedLog;
use super::pid_ns::VmPidNamespace;
use super::status::{BootTimes, Phase, RunDir, Status};
use super::stderr_tail::StderrTail;
use crate::agent::AgentConn;
use crate::backend::{self, find_tool, DeviceSockets, Hypervisor, Tool, VmConfig, GUEST_CID};

/// The line the guest agent prints on the serial console once it listens.
pub const READY_MARKER: &str = "moat-agent: ready";
/// How long a boot may take before the start is declared failed.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a guest gets to power off cleanly before it is stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a monitor told to stop through its control channel gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Why a supervisor could not run its VM.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Another supervisor owns this sandbox.
    #[error("another supervisor is already running this sandbox")]
    AlreadyRunning,
    /// The run folder or config could not be read or written.
    #[error("cannot use the run folder {0}")]
    RunDir(PathBuf, #[source] std::io::Error),
    /// `vm.json` is unreadable.
    #[error("unreadable VM configuration")]
    Config(#[source] serde_json::Error),
    /// A back-end program is missing.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// A process failed to start or to become ready.
    #[error("{0}")]
    Start(String),
    /// The egress service (policy proxy, DNS) could not start.
    #[error("cannot start the sandbox's network egress")]
    Egress(#[from] crate::egress::EgressError),
}

/// Runs the VM described by `<run_dir>/vm.json` until it stops. Returns the process exit code.
///
/// Call this from the process that should own the VM (e.g. a hidden
/// `__supervise` subcommand), after `setsid()`. Killing this process kills the VM.
pub fn supervise(run_dir: &Path) -> i32 {
    let run = RunDir::new(run_dir);
    let mut log = OpenOptions::new().create(true).append(true).open(run.supervisor_log()).ok();
    let mut say = |msg: &str| {
        if let Some(l) = log.as_mut() {
            let _ = writeln!(l, "{msg}");
        }
    };
    let lock = match take_lock(&run) {
        Ok(l) => l,
        Err(e) => {
            say(&format!("supervisor: {e}"));
            return 1;
        }
    };
    let started = Instant::now();
    let mut status = Status {
        phase: Phase::Starting,
        supervisor_pid: std::process::id(),
        vmm_pid: None,
        backend: None,
        boot_ms: None,
        error: None,
        boot: None,
    };
    let result = run_vm(&run, &mut status, started);
    match &result {
        Ok(()) => {
            status.phase = Phase::Stopped;
        }
        Err(e) => {
            say(&format!("supervisor: {e}"));
            status.phase = if status.boot_ms.is_some() { Phase::Stopped } else { Phase::Failed };
            status.error = Some(e.to_string());
        }
    }
    let _ = run.write_status(&status);
    drop(lock);
    i32::from(result.is_err())
}

fn take_lock(run: &RunDir) -> Result<File, SuperviseError> {
    let f = File::create(run.lock_file()).map_err(|e| SuperviseError::RunDir(run.path().into(), e))?;
    // Readers take a shared lock for an instant; retry briefly before concluding it's taken.
    for _ in 0..50 {
        // SAFETY: `f` is an open file that outlives the call.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(SuperviseError::AlreadyRunning)
}

/// Child processes and the signal that ends each, sent in reverse order when dropped.
struct Children(Vec<(String, Child, Signal)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c, sig) in self.0.iter_mut().rev() {
            let _ = kill(Pid::from_raw(c.id() as i32), *sig);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for (_, c, _) in self.0.iter_mut().rev() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes its files when dropped.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The supervisor's recipe: configuration → the way out → device back-ends →
/// monitor → console → stop on signal → readiness → the monitor's end.
fn run_vm(run: &RunDir, status: &mut Status, started: Instant) -> Result<(), SuperviseError> {
    let io_err = |e| SuperviseError::RunDir(run.path().into(), e);
    let (vm, hv) = load_config(run)?;
    status.backend = Some(crate::backend::Running { kind: vm.backend, accel: vm.accel });
    run.write_status(status).map_err(io_err)?;
    let signals = block_stop_signals().map_err(|e| io_err(e.into()))?;
    let sockets = device_sockets(run, &vm);
    // The host ends of the guest's only way out, up before the guest can knock.
    let _egress = match &vm.egress {
        Some(paths) => Some(crate::egress::service::start(&vm.name, &vm.agent_hosts, paths, &run.vsock_socket())?),
        None => None,
    };
    // moat-vsock and the monitor share a PID namespace whose init is moat-vsock (root only).
    let mut pid_ns = VmPidNamespace::new().map_err(io_err)?;
    // Dropped after the monitor: the back-ends are stopped once it is gone.
    let _backends = start_backends(&vm, &sockets, run, pid_ns.as_mut())?;
    let ms = |since: Instant| since.elapsed().as_millis() as u64;
    let mut boot = BootTimes { devices_ms: ms(started), ..BootTimes::default() };

    let mut monitor = Monitor::start(hv.as_ref(), &vm, &sockets, run, pid_ns.as_mut())?;
    // Declared after the monitor: dropped (files removed) once it was waited for.
    let _leftovers = RemoveOnDrop(hv.run_files(&vm));
    boot.vmm_spawned_ms = ms(started);
    status.vmm_pid = Some(monitor.child.id());
    run.write_status(status).map_err(io_err)?;

    let ready = monitor.watch_console(run);
    let agent_up = Arc::new(AtomicBool::new(false));
    stop_on_signal(signals, run, &monitor, Arc::clone(&hv), &vm, Arc::clone(&agent_up));
    let ready = ready.recv_timeout(BOOT_TIMEOUT);
    agent_up.store(ready.is_ok(), Ordering::SeqCst);
    if let Err(waited) = ready {
        return Err(monitor.failed_to_boot(run, waited == mpsc::RecvTimeoutError::Timeout));
    }
    boot.ready_line_ms = ms(started);
    match AgentConn::connect(&run.vsock_socket()).and_then(|c| c.ping()) {
        Ok(pong) => {
            boot.agent_ms = ms(started);
            boot.guest_uptime_ms = pong.uptime_ms;
            status.phase = Phase::Running;
            status.boot_ms = Some(boot.agent_ms);
            status.boot = Some(boot);
            run.write_status(status).map_err(io_err)?;
        }
        Err(e) => {
            monitor.kill();
            return Err(SuperviseError::Start(format!("the guest agent did not answer: {e}")));
        }
    }
    monitor.wait_exit(status).map_err(io_err)
}

/// `vm.json` and the backend it names.
fn load_config(run: &RunDir) -> Result<(VmConfig, Arc<dyn Hypervisor>), SuperviseError> {
    let config = std::fs::read(run.config()).map_err(|e| SuperviseError::RunDir(run.path().into(), e))?;
    let vm: VmConfig = serde_json::from_slice(&config).map_err(SuperviseError::Config)?;
    let hv: Arc<dyn Hypervisor> = backend::hypervisor(vm.backend)?.into();
    Ok((vm, hv))
}

/// Blocks the signals that stop the VM on this thread (the watcher takes them
/// synchronously; children get a clean mask from std).
fn block_stop_signals() -> nix::Result<SigSet> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block()?;
    Ok(mask)
}

/// The back-ends' sockets in the run folder, stale ones removed.
fn device_sockets(run: &RunDir, vm: &VmConfig) -> DeviceSockets {
    let sockets = DeviceSockets {
        vsock: run.path().join("vsock-backend.sock"),
        fs: (0..vm.shares.len()).map(|i| run.path().join(format!("fs{i}.sock"))).collect(),
    };
    for stale in sockets.fs.iter().chain([&sockets.vsock, &run.vsock_socket()]) {
        let _ = std::fs::remove_file(stale);
    }
    sockets
}

/// The vsock device (first: in the VM's PID namespace it is the init) and
/// virtiofsd for each share (guarded, see `share`), up and listening.
fn start_backends(
    vm: &VmConfig,
    sockets: &DeviceSockets,
    run: &RunDir,
    pid_ns: Option<&mut VmPidNamespace>,
) -> Result<Children, SuperviseError> {
    let mut children = Children(Vec::new());
    let (name, child) = spawn("vsock backend", vsock_backend(sockets, run)?, run, pid_ns)?;
    children.0.push((name, child, Signal::SIGTERM));
    for (share, sock) in vm.shares.iter().zip(&sockets.fs) {
        let failed = |e: &dyn std::fmt::Display| SuperviseError::Start(format!("virtiofsd[{}]: {e}", share.tag));
        let (c, serve) = super::share::virtiofsd(&find_tool(Tool::Virtiofsd)?, share, sock).map_err(|e| failed(&e))?;
        let (name, child) = spawn(&format!("virtiofsd[{}]", share.tag), c, run, None)?;
        children.0.push((name, child, Signal::SIGTERM));
        serve.start().map_err(|e| failed(&e))?;
    }
    for sock in sockets.fs.iter().chain([&sockets.vsock]) {
        wait_for_socket(sock, &mut children)?;
    }
    Ok(children)
}

/// `moat-vsock` for the VM. Run by root, it is jailed: new network, IPC and
/// UTS namespaces (it needs none of them: its sockets are Unix sockets in the
/// run folder), and `--jail`, with which it takes the run folder as its root
/// and drops every capability before it serves (see its `jail` module).
fn vsock_backend(sockets: &DeviceSockets, run: &RunDir) -> Result<Command, SuperviseError> {
    let mut c = Command::new(find_tool(Tool::VsockBackend)?);
    c.arg("--guest-cid")
        .arg(GUEST_CID.to_string())
        .arg("--socket")
        .arg(&sockets.vsock)
        .arg("--uds-path")
        .arg(run.vsock_socket());
    // SAFETY: geteuid only reads this process's credentials.
    if unsafe { libc::geteuid() } == 0 {
        c.arg("--jail");
        // SAFETY: the closure makes one system call (unshare) on no memory.
        unsafe {
            c.pre_exec(|| {
                let flags = libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
                match libc::unshare(flags) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
    }
    Ok(c)
}

/// A watcher thread that, on SIGTERM/SIGINT/SIGHUP, stops the VM gracefully.
fn stop_on_signal(
    signals: SigSet,
    run: &RunDir,
    monitor: &Monitor,
    hv: Arc<dyn Hypervisor>,
    vm: &VmConfig,
    agent_up: Arc<AtomicBool>,
) {
    let vsock = run.vsock_socket();
    let pid = Pid::from_raw(monitor.child.id() as i32);
    let vm = vm.clone();
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            graceful_stop(&vsock, agent_up.load(Ordering::SeqCst), pid, hv.as_ref(), &vm);
        }
    });
}

/// The running VM monitor, with the tail of its stderr.
struct Monitor {
    name: String,
    child: Child,
    stderr: StderrTail,
}

impl Monitor {
    fn start(
        hv: &dyn Hypervisor,
        vm: &VmConfig,
        sockets: &DeviceSockets,
        run: &RunDir,
        pid_ns: Option<&mut VmPidNamespace>,
    ) -> Result<Monitor, SuperviseError> {
        let mut cmd = hv.command(vm, sockets)?;
        cmd.stdout(Stdio::piped());
        log_line(run, &format!("supervisor: running {cmd:?}"));
        let (name, child, stderr) = spawn_monitor(hv.name(), cmd, run, pid_ns)?;
        Ok(Monitor { name, child, stderr })
    }

    /// Copies the console into the bounded log; the receiver hears once the
    /// guest agent printed its ready line (or disconnects when the console closes).
    fn watch_console(&mut self, run: &RunDir) -> mpsc::Receiver<()> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let console = self.child.stdout.take().expect("stdout was piped");
        let console_log = run.console_log();
        std::thread::spawn(move || pump_console(console, &console_log, ready_tx));
        ready_rx
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The boot failed: the monitor is stopped and the error says why.
    fn failed_to_boot(mut self, run: &RunDir, timed_out: bool) -> SuperviseError {
        // Not timed out: the console closed, so the monitor is exiting on its own.
        let _ = self.child.kill();
        let exit = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        let why = self.stderr.last_line().map(|l| format!(": {l}")).unwrap_or_default();
        let console = run.console_log();
        SuperviseError::Start(if timed_out {
            format!(
                "the guest agent was not ready within {} s; console log: {}",
                BOOT_TIMEOUT.as_secs(),
                console.display()
            )
        } else {
            format!(
                "{} exited ({exit}) before the guest agent was ready{why}; console log: {}",
                self.name,
                console.display()
            )
        })
    }

    /// Waits for the monitor to end; a failure is recorded in `status`.
    fn wait_exit(mut self, status: &mut Status) -> std::io::Result<()> {
        let exit = self.child.wait()?;
        let why = self.stderr.last_line().map(|l| format!(": {l}")).unwrap_or_default();
        if !exit.success() && !matches!(exit.code(), Some(0)) {
            status.error = Some(format!("{} exited ({exit}){why}", self.name));
        }
        Ok(())
    }
}

/// [`spawn`] for the VM monitor: its stderr goes to the supervisor log through a
/// [`StderrTail`], so its last words can explain a failure.
fn spawn_monitor(
    name: &str,
    mut cmd: Command,
    run: &RunDir,
    pid_ns: Option<&mut VmPidNamespace>,
) -> Result<(String, Child, StderrTail), SuperviseError> {
    let log = OpenOptions::new().create(true).append(true).open(run.supervisor_log()).ok();
    cmd.stderr(Stdio::piped());
    let (name, mut child) = spawn_with_stderr(name, cmd, None, pid_ns)?;
    let stderr = StderrTail::spawn(child.stderr.take().expect("stderr was piped"), log);
    Ok((name, child, stderr))
}

/// Appends one line to the supervisor log.
fn log_line(run: &RunDir, line: &str) {
    if let Ok(mut log) = OpenOptions::new().create(true).append(true).open(run.supervisor_log()) {
        let _ = writeln!(log, "{line}");
    }
}

/// Spawns a child that dies with this process, its stderr appended to the
/// supervisor log; in `pid_ns` when given.
fn spawn(
    name: &str,
    cmd: Command,
    run: &RunDir,
    pid_ns: Option<&mut VmPidNamespace>,
) -> Result<(String, Child), SuperviseError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.supervisor_log())
        .map_err(|e| SuperviseError::RunDir(run.path().into(), e))?;
    spawn_with_stderr(name, cmd, Some(log), pid_ns)
}

/// Spawns a child that dies with this process, its stderr to `stderr` (as set on `cmd` when `None`).
fn spawn_with_stderr(
    name: &str,
    mut cmd: Command,
    stderr: Option<File>,
    pid_ns: Option<&mut VmPidNamespace>,
) -> Result<(String, Child), SuperviseError> {
    cmd.stdin(Stdio::null()).current_dir("/");
    if let Some(log) = stderr {
        cmd.stderr(log);
    }
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (prctl, getppid, kill on itself).
    unsafe {
        cmd.pre_exec(|| {
            // Die with the supervisor, so a SIGKILLed supervisor leaves no VM behind.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    let child = match pid_ns {
        Some(ns) => ns.spawn(|| cmd.spawn()),
        None => cmd.spawn(),
    };
    let child = child.map_err(|e| SuperviseError::Start(format!("cannot start {name}: {e}")))?;
    Ok((name.to_string(), child))
}

fn wait_for_socket(path: &Path, children: &mut Children) -> Result<(), SuperviseError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        for (name, c, _) in children.0.iter_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                return Err(SuperviseError::Start(format!("{name} exited early ({st}); see supervisor.log")));
            }
        }
        if Instant::now() > deadline {
            return Err(SuperviseError::Start(format!("{} did not appear", path.display())));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Copies the guest console into a bounded log and reports the ready marker once.
fn pump_console(console: impl Read, log_path: &Path, ready: mpsc::Sender<()>) {
    let mut log = BoundedLog::open(log_path, 1 << 20);
    let mut reader = BufReader::with_capacity(16 * 1024, console);
    let mut line = Vec::new();
    let mut ready = Some(ready);
    loop {
        line.clear();
        // A guest may print without newlines forever: cap what one line may hold.
        match reader.by_ref().take(8192).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        log.write(&line);
        if ready.is_some() && line.windows(READY_MARKER.len()).any(|w| w == READY_MARKER.as_bytes()) {
            let _ = ready.take().map(|tx| tx.send(()));
        }
    }
}

/// Asks the guest to power off and gives it the grace period; stops the VM
/// through the monitor's control channel if it has one (at once when the agent
/// was not up or could not be reached: nobody asked the guest); kills the
/// monitor last.
fn graceful_stop(vsock: &Path, agent_up: bool, vmm: Pid, hv: &dyn Hypervisor, vm: &VmConfig) {
    let asked = agent_up && AgentConn::connect(vsock).map(|agent| drop(agent.shutdown())).is_ok();
    if asked && exits_within(vmm, SHUTDOWN_GRACE) {
        return;
    }
    if hv.stop_now(vm) && exits_within(vmm, STOP_GRACE) {
        return;
    }
    // Without a control channel (QEMU) an unreachable guest still gets the grace period.
    if !asked && exits_within(vmm, SHUTDOWN_GRACE) {
        return;
    }
    let _ = kill(vmm, Signal::SIGKILL);
}

/// Whether the process `pid` is gone (reaped by the main thread) within `grace`.
fn exits_within(pid: Pid, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if kill(pid, None).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
