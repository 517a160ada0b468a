//! The sandbox lifecycle: create, start, stop, remove, list.
//!
//! [`Manager`] is what the daemon serves and what an embedding tool can use
//! in-process. It keeps definitions in SQLite and launches one supervisor
//! process per running VM; a VM's state is always read from its supervisor.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::backend::{self, find_tool, BackendError, HostVirt, LayerDisk, Share, Tool, VmConfig};
use crate::host::{check_disk_space, DiskError, ProtectedDirs, ShareError};
use crate::paths::Home;
use crate::spec::{CreateRequest, HostSize, SandboxSpec, SpecError};
use crate::state::{Record, Store, StoreError};
use crate::supervisor::{Phase, RunDir, Status};
use crate::templates::{TemplateError, TemplateStore};

const START_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A sandbox as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    /// Stable id.
    pub id: String,
    /// Definition.
    #[serde(flatten)]
    pub spec: SandboxSpec,
    /// Creation time, seconds since the epoch.
    pub created_at: i64,
    /// Current run status.
    pub status: Status,
    /// Hybrid vsock socket for reaching the guest agent (valid while running).
    pub vsock_socket: PathBuf,
    /// Guest console log.
    pub console_log: PathBuf,
}

/// Why a lifecycle operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No sandbox has that name.
    #[error("no sandbox named {0:?}; see `moat ls`")]
    NotFound(String),
    /// The definition is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A folder may not be shared (it would hand the guest something the host trusts).
    #[error(transparent)]
    Share(#[from] ShareError),
    /// The state disk has no room on the host.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backend can't run here.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Guest images are missing or could not be built.
    #[error("guest images are not available")]
    Images(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A host filesystem operation failed.
    #[error("{what} ({path})")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// The VM failed to start.
    #[error("sandbox {name:?} failed to start: {reason}")]
    StartFailed { name: String, reason: String },
    /// The VM did not stop.
    #[error("sandbox {0:?} did not stop in time")]
    StopTimeout(String),
    /// Creating, inspecting or removing the review checkpoint failed (or would lose work).
    #[error(transparent)]
    Checkpoint(Box<dyn std::error::Error + Send + Sync>),
    /// A template users made could not be saved, used, moved or removed.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// How to launch a supervisor process: `program args… <run-dir>`.
#[derive(Debug, Clone)]
pub struct SupervisorCommand {
    /// Program (by default this executable).
    pub program: PathBuf,
    /// Arguments before the run folder (by default `__supervise`).
    pub args: Vec<OsString>,
}

impl SupervisorCommand {
    /// `<current exe> __supervise`; the binary must dispatch that to [`crate::supervisor::supervise`].
    pub fn current_exe() -> std::io::Result<SupervisorCommand> {
        Ok(SupervisorCommand { program: std::env::current_exe()?, args: vec!["__supervise".into()] })
    }
}

/// The files a sandbox VM boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImages {
    /// Guest kernel (`vmlinux`).
    pub kernel: PathBuf,
    /// Read-only root filesystem image (ext4): the template's base.
    pub rootfs: PathBuf,
    /// Read-only layers above it (ext4), lowest first.
    pub layers: Vec<PathBuf>,
    /// Initramfs with the guest agent as `/init`.
    pub initramfs: PathBuf,
}

/// Where guest images come from.
pub trait ImageProvider: Send + Sync + std::fmt::Debug {
    /// Kernel, root disk and agent initramfs for `agent`'s template.
    fn images(&self, agent: &str) -> Result<GuestImages, Box<dyn std::error::Error + Send + Sync>>;
    /// The recipe hashes of `agent`'s template images and whether they are
    /// built, without building them (what user templates are made over).
    fn digests(&self, agent: &str) -> Result<moat_images::TemplateDigests, Box<dyn std::error::Error + Send + Sync>>;
}

/// Creates, runs and removes sandboxes.
#[derive(Debug)]
pub struct Manager {
    home: Home,
    store: Mutex<Store>,
    supervisor: SupervisorCommand,
    images: Box<dyn ImageProvider>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Manager {
    /// Opens the installation at `home`.
    pub fn open(
        home: Home,
        supervisor: SupervisorCommand,
        images: Box<dyn ImageProvider>,
    ) -> Result<Manager, ManagerError> {
        home.ensure_private().map_err(io_err("cannot create a private Moat folder", home.root()))?;
        let sandboxes = home.root().join("sandboxes");
        std::fs::create_dir_all(&sandboxes).map_err(|source| ManagerError::Io {
            what: "cannot create the Moat folder",
            path: sandboxes.clone(),
            source,
        })?;
        // Finish removals a crash interrupted.
        if let Ok(entries) = std::fs::read_dir(&sandboxes) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".trash-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let store = Store::open(&home.database())?;
        TemplateStore::new(&home).clear_leftovers();
        Ok(Manager { home, store: Mutex::new(store), supervisor, images, locks: Mutex::new(HashMap::new()) })
    }

    /// The installation's folders.
    pub fn home(&self) -> &Home {
        &self.home
    }

    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock that orders lifecycle operations on sandbox `name`.
    pub(crate) fn lock_name(&self, name: &str) -> Arc<Mutex<()>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(name.to_string()).or_default().clone()
    }

    pub(crate) fn record(&self, name: &str) -> Result<Record, ManagerError> {
        self.store().get(name)?.ok_or_else(|| ManagerError::NotFound(name.to_string()))
    }

    /// The templates users made.
    pub fn templates(&self) -> TemplateStore {
        TemplateStore::new(&self.home)
    }

    pub(crate) fn image_provider(&self) -> &dyn ImageProvider {
        self.images.as_ref()
    }

    pub(crate) fn run_dir(&self, id: &str) -> RunDir {
        RunDir::new(self.home.sandbox_dir(id).join("run"))
    }

    fn info(&self, r: Record) -> SandboxInfo {
        let run = self.run_dir(&r.id);
        SandboxInfo {
            status: run.read_status(),
            vsock_socket: run.vsock_socket(),
            console_log: run.console_log(),
            id: r.id,
            spec: r.spec,
            created_at: r.created_at,
        }
    }

    /// One sandbox.
    pub fn get(&self, name: &str) -> Result<SandboxInfo, ManagerError> {
        Ok(self.info(self.record(name)?))
    }

    /// All sandboxes.
    pub fn list(&self) -> Result<Vec<SandboxInfo>, ManagerError> {
        let records = self.store().list()?;
        Ok(records.into_iter().map(|r| self.info(r)).collect())
    }

    /// Defines a sandbox (and formats its state disk); does not start it. Refuses
    /// shares the host must keep from the guest (see [`crate::host::shares`]) and a
    /// disk the host has no room for.
    pub fn create(&self, req: &CreateRequest, cwd: &Path) -> Result<SandboxInfo, ManagerError> {
        let req = &self.with_template_agent(req)?;
        let mut spec = req.resolve(cwd, HostSize::detect())?;
        let mut protected = ProtectedDirs::detect(&self.home);
        for share in spec.shares() {
            protected.check(&share.path)?;
        }
        let guard = self.lock_name(&spec.name);
        let _held = guard.lock().unwrap_or_else(|p| p.into_inner());
        // Held until the record is stored: the template can't be removed meanwhile.
        let _template = match &spec.template {
            Some(t) => {
                let store = self.templates();
                let lock = store.lock()?;
                store.get(t)?;
                Some(lock)
            }
            None => None,
        };
        if self.store().get(&spec.name)?.is_some() {
            return Err(StoreError::NameTaken(spec.name).into());
        }
        let id = new_id();
        let dir = self.home.sandbox_dir(&id);
        let disk = dir.join("state.ext4");
        check_disk_space(&disk, spec.disk_mib << 20)?;
        std::fs::create_dir_all(dir.join("run")).map_err(io_err("cannot create the sandbox folder", &dir))?;
        let checkpoint = match crate::checkpoint::attach(&mut spec, req, &dir.join("workspace")) {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // A checkpoint's clone lives in the sandbox's own folder, inside Moat's.
        protected.allow(&dir.join("workspace"));
        let made = (|| {
            canonical_shares(&mut spec)?;
            for share in spec.shares() {
                protected.check(&share.path)?;
            }
            make_state_disk(&disk, spec.disk_mib << 20)?;
            let record = Record { id: id.clone(), created_at: now(), spec };
            self.store().insert(&record)?;
            Ok(record)
        })();
        match made {
            Ok(record) => Ok(self.info(record)),
            Err(e) => {
                if let Some(c) = checkpoint {
                    let _ = c.remove(true);
                }
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Boots a sandbox and waits until its guest agent answers. A running sandbox is left alone.
    pub fn start(&self, name: &str) -> Result<SandboxInfo, ManagerError> {
        let guard = self.lock_name(name);
        let _held = guard.lock().unwrap_or_else(|p| p.into_inner());
        let record = self.record(name)?;
        let run = self.run_dir(&record.id);
        if run.supervisor_alive() {
            return self.wait_ready(name, &run).map(|()| self.info(record));
        }
        // A shared folder may have become a symlink (or a protected folder moved)
        // since create: check again before virtiofsd is handed the paths.
        let mut protected = ProtectedDirs::detect(&self.home);
        protected.allow(&self.home.sandbox_dir(&record.id).join("workspace"));
        for share in record.spec.shares() {
            protected.recheck(&share.path)?;
        }
        let state_disk = self.home.sandbox_dir(&record.id).join("state.ext4");
        check_disk_space(&state_disk, record.spec.disk_mib << 20)?;
        let selection = backend::select(record.spec.backend, &HostVirt::detect())?;
        let images = self.images.images(&record.spec.agent).map_err(ManagerError::Images)?;
        let mut layers: Vec<LayerDisk> = images.layers.into_iter().map(|path| LayerDisk { path, dir: None }).collect();
        if let Some(template) = &record.spec.template {
            layers.extend(self.template_layers(name, template)?);
        }
        for tool in [Tool::Virtiofsd, Tool::VsockBackend] {
            find_tool(tool)?;
        }
        // The monitor too, so a missing one is said here rather than in the supervisor's log.
        backend::hypervisor(selection.kind)?;
        let shares = record
            .spec
            .shares()
            .into_iter()
            .enumerate()
            .map(|(i, m)| Share {
                tag: format!("ws{i}"),
                path: m.path,
                read_only: m.read_only,
                owner: record.spec.owner,
            })
            .collect();
        let vm = VmConfig {
            name: record.spec.name.clone(),
            backend: selection.kind,
            accel: selection.accel,
            cpus: record.spec.cpus,
            memory_mib: record.spec.memory_mib,
            kernel: images.kernel,
            initramfs: images.initramfs,
            root_disk: images.rootfs,
            layers,
            state_disk,
            shares,
            run_dir: run.path().to_path_buf(),
            egress: Some(crate::egress::EgressPaths::for_home(&self.home)),
            agent_hosts: moat_images::Template::builtin(&record.spec.agent)
                .map(|t| t.spec.network.allow)
                .unwrap_or_default(),
        };
        if selection.kind == backend::BackendKind::Qemu && vm.devices() > backend::QEMU_MAX_DEVICES {
            return Err(BackendError::Unsupported("qemu", backend::too_many_devices(&vm)).into());
        }
        if !backend::cmdline_fits(&vm) {
            return Err(ManagerError::StartFailed {
                name: name.into(),
                reason: "the shared folders' paths (and the template's layers) are too long for the kernel command \
                         line; share fewer or shorter paths"
                    .into(),
            });
        }
        std::fs::create_dir_all(run.path()).map_err(io_err("cannot create the run folder", run.path()))?;
        let _ = std::fs::remove_file(run.status_file());
        crate::supervisor::write_atomic(&run.config(), &serde_json::to_vec_pretty(&vm).expect("serializing VM config"))
            .map_err(io_err("cannot write the VM configuration", &run.config()))?;
        self.spawn_supervisor(&run)?;
        self.wait_ready(name, &run).map_err(|e| match (e, selection.note) {
            (ManagerError::StartFailed { name, mut reason }, Some(note)) => {
                reason.push_str(&format!("\nnote: {note}"));
                ManagerError::StartFailed { name, reason }
            }
            (e, _) => e,
        })?;
        Ok(self.info(record))
    }

    fn spawn_supervisor(&self, run: &RunDir) -> Result<(), ManagerError> {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(run.supervisor_log()).map_err(|source| {
                ManagerError::Io { what: "cannot open the supervisor log", path: run.supervisor_log(), source }
            })?;
        let mut cmd = Command::new(&self.supervisor.program);
        cmd.args(&self.supervisor.args)
            .arg(run.path())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: runs in the forked child before exec; setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // Its own session: the supervisor outlives the daemon and the terminal.
                nix::unistd::setsid().map(drop).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|source| ManagerError::Io {
            what: "cannot start the VM supervisor",
            path: self.supervisor.program.clone(),
            source,
        })?;
        // Reap it when it ends, whoever we are.
        crate::threads::spawn_without_signals(move || child.wait());
        Ok(())
    }

    fn wait_ready(&self, name: &str, run: &RunDir) -> Result<(), ManagerError> {
        let begin = Instant::now();
        let mut seen_alive = false;
        loop {
            seen_alive |= run.supervisor_alive();
            let st = run.read_status();
            // `Stopped` before the supervisor was ever seen may just mean it hasn't taken its lock yet.
            let gave_up = st.phase == Phase::Failed
                || (st.phase == Phase::Stopped && (seen_alive || begin.elapsed() > Duration::from_secs(5)));
            if st.phase == Phase::Running {
                return Ok(());
            } else if gave_up {
                let mut reason = st.error.unwrap_or_else(|| "the VM stopped during boot".into());
                reason.push_str(&log_tail(&run.console_log()));
                return Err(ManagerError::StartFailed { name: name.into(), reason });
            } else if begin.elapsed() > START_TIMEOUT {
                return Err(ManagerError::StartFailed {
                    name: name.into(),
                    reason: "timed out waiting for the guest agent".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Powers a sandbox off (cleanly if the guest cooperates, killed otherwise).
    pub fn stop(&self, name: &str) -> Result<SandboxInfo, ManagerError> {
        let guard = self.lock_name(name);
        let _held = guard.lock().unwrap_or_else(|p| p.into_inner());
        let record = self.record(name)?;
        let run = self.run_dir(&record.id);
        stop_run(name, &run)?;
        Ok(self.info(record))
    }

    /// Stops and deletes a sandbox: its state disk, logs and record. Workspace folders
    /// are never touched, except a review checkpoint's clone, which is removed only
    /// when it holds no work missing elsewhere — or with `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), ManagerError> {
        let guard = self.lock_name(name);
        let _held = guard.lock().unwrap_or_else(|p| p.into_inner());
        let record = self.record(name)?;
        if !force {
            crate::checkpoint::check_removable(&record.spec)?;
        }
        let run = self.run_dir(&record.id);
        stop_run(name, &run)?;
        crate::checkpoint::remove(&record.spec, force)?;
        let dir = self.home.sandbox_dir(&record.id);
        let trash = self.home.root().join("sandboxes").join(format!(".trash-{}", record.id));
        // Move aside first: a crash after this point leaves only garbage that the next open clears.
        let moved = std::fs::rename(&dir, &trash).is_ok();
        self.store().remove(name)?;
        // Its own rules go with it (a later sandbox of the same name starts clean).
        if let Ok(mut policy) = crate::egress::PolicyStore::open(&self.home.policy_database()) {
            let _ = policy.remove_sandbox(name);
        }
        if moved {
            let _ = std::fs::remove_dir_all(&trash);
        }
        Ok(())
    }
}

pub(crate) fn stop_run(name: &str, run: &RunDir) -> Result<(), ManagerError> {
    if !run.supervisor_alive() {
        return Ok(());
    }
    let pid = run.read_status().supervisor_pid;
    if pid > 1 {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while run.supervisor_alive() {
        if Instant::now() > deadline {
            if pid > 1 {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(200));
            }
            if run.supervisor_alive() {
                return Err(ManagerError::StopTimeout(name.into()));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ManagerError {
    let path = path.to_path_buf();
    move |source| ManagerError::Io { what, path, source }
}

/// Records every share by its canonical path (a checkpoint's paths may come
/// through a symlinked `$MOAT_HOME`), so a start can tell when one has changed.
fn canonical_shares(spec: &mut SandboxSpec) -> Result<(), ManagerError> {
    let canon = |p: &Path| std::fs::canonicalize(p).map_err(io_err("cannot resolve a shared folder", p));
    spec.workspace = canon(&spec.workspace)?;
    for m in &mut spec.mounts {
        m.path = canon(&m.path)?;
    }
    Ok(())
}

/// A sparse ext4 file of `bytes` (only what the guest writes takes space).
fn make_state_disk(path: &Path, bytes: u64) -> Result<(), ManagerError> {
    let io = |what| io_err(what, path);
    let f = std::fs::File::create(path).map_err(io("cannot create the state disk"))?;
    f.set_len(bytes).map_err(io("cannot size the state disk"))?;
    drop(f);
    let out = Command::new(find_tool(Tool::MkfsExt4)?)
        .current_dir("/")
        .args(["-q", "-F", "-m", "0", "-L", "moat-state", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
        .arg(path)
        .output()
        .map_err(io("cannot run mkfs.ext4"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(ManagerError::Io {
            what: "mkfs.ext4 failed on the state disk",
            path: path.to_path_buf(),
            source: std::io::Error::other(msg),
        });
    }
    Ok(())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(2000);
    let tail = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = tail.lines().rev().take(15).collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut s = format!("\n--- last lines of {} ---\n", path.display());
    for l in lines.into_iter().rev() {
        s.push_str(l);
        s.push('\n');
    }
    s
}

fn new_id() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
