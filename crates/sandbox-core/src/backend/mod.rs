//! Hypervisor backends behind one small trait.
//!
//! A backend turns a [`VmConfig`] into the command that runs the VM monitor.
//! Everything around it — the virtio-fs daemons, the vsock backend, waiting,
//! logging and cleanup — is shared and lives in [`crate::supervisor`], so a
//! monitor only has to say how it is launched (and, if it has a control
//! channel, how to stop it at once). Two exist: QEMU's microvm ([`Qemu`]) and
//! Moat's own `moat-vmm` ([`Vmm`], opt-in with `--backend vmm`).

mod jail;
mod qemu;
mod tools;
mod vmm;

use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

pub use jail::{jail_dir, sandbox_id};
pub use qemu::{too_many_devices, Qemu, MAX_DEVICES as QEMU_MAX_DEVICES};
pub use tools::{find_tool, search_path, Tool};
pub use vmm::{api_socket, Vmm};

/// The guest's vsock CID (each VM has its own vsock device, so all share it).
pub const GUEST_CID: u32 = 3;

/// Everything a monitor needs to start one sandbox VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// Sandbox name (also the guest hostname).
    pub name: String,
    /// Backend that runs it.
    pub backend: BackendKind,
    /// Hardware acceleration or emulation.
    pub accel: Accel,
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Guest kernel (`vmlinux`, PVH entry).
    pub kernel: PathBuf,
    /// Initramfs holding the guest agent as `/init`.
    pub initramfs: PathBuf,
    /// Read-only base root filesystem (ext4), first virtio-blk device.
    pub root_disk: PathBuf,
    /// The sandbox's own writable disk (ext4), second virtio-blk device.
    pub state_disk: PathBuf,
    /// Read-only template layers over the root disk, lowest first; the
    /// virtio-blk devices after the state disk.
    #[serde(default)]
    pub layers: Vec<LayerDisk>,
    /// Folders shared through virtio-fs, workspace first.
    pub shares: Vec<Share>,
    /// Folder for sockets, status and logs of this run.
    pub run_dir: PathBuf,
    /// Where the VM's egress service finds the policy, CA and log. `None`:
    /// no egress service, so the guest has no way out at all.
    #[serde(default)]
    pub egress: Option<crate::egress::EgressPaths>,
    /// Hosts the sandbox's agent needs, allowed for it on top of the
    /// `balanced` preset (its template's `[network] allow`).
    #[serde(default)]
    pub agent_hosts: Vec<String>,
}

/// One read-only layer disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDisk {
    /// The ext4 image.
    pub path: PathBuf,
    /// The folder of its file system that is the layer (`/upper` of a saved
    /// sandbox's disk); its root when absent.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// One virtio-fs share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// virtio-fs tag.
    pub tag: String,
    /// Host folder (the guest mounts it at the same path).
    pub path: PathBuf,
    /// Enforced read-only by virtiofsd, not only by the guest's mount flags.
    pub read_only: bool,
    /// Who owns, on the host, every file the guest writes here.
    pub owner: crate::owner::ShareOwner,
}

pub use moat_proto::backend::{Accel, BackendChoice, BackendKind, Running};

/// Sockets the shared device back-ends listen on for one VM.
#[derive(Debug, Clone)]
pub struct DeviceSockets {
    /// vhost-user socket of the vsock backend.
    pub vsock: PathBuf,
    /// vhost-user socket of each share's virtiofsd, in `VmConfig::shares` order.
    pub fs: Vec<PathBuf>,
}

/// A VM monitor.
pub trait Hypervisor: std::fmt::Debug + Send + Sync {
    /// Short name (`qemu`).
    fn name(&self) -> &'static str;
    /// The command that runs the VM with the guest serial console on stdout.
    /// The monitor must exit when the guest reboots (`reboot=t`), and say why
    /// on its last line of stderr when it fails.
    fn command(&self, vm: &VmConfig, sockets: &DeviceSockets) -> Result<Command, BackendError>;
    /// Stops the running VM at once through the monitor's control channel,
    /// for a guest that did not power off when asked. `false` when the
    /// monitor has none or did not answer: the supervisor then kills it.
    fn stop_now(&self, _vm: &VmConfig) -> bool {
        false
    }

    /// Files the monitor makes in the run folder, which the supervisor
    /// removes once it has exited (a confined monitor may not be able to).
    fn run_files(&self, _vm: &VmConfig) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// Why a backend cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A program is missing.
    #[error("{tool} not found (looked in $PATH and ~/.cargo/bin); {hint}")]
    MissingTool { tool: &'static str, hint: &'static str },
    /// The backend can't run on this host.
    #[error("the {0} backend is not available: {1}")]
    Unavailable(&'static str, String),
    /// The backend can't run a VM of this shape.
    #[error("the {0} backend cannot run this VM: {1}")]
    Unsupported(&'static str, String),
}

/// What this host offers for virtualization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVirt {
    /// The CPU advertises VMX or SVM.
    pub hardware: bool,
    /// `/dev/kvm` can be opened read-write.
    pub kvm_usable: bool,
}

impl HostVirt {
    /// Reads `/proc/cpuinfo` and probes `/dev/kvm`.
    pub fn detect() -> HostVirt {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let hardware = flags
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        let kvm_usable = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
        HostVirt { hardware, kvm_usable }
    }
}

/// The backend chosen for a sandbox, with a line telling the user why when it matters.
#[derive(Debug)]
pub struct Selection {
    /// Which monitor.
    pub kind: BackendKind,
    /// Acceleration.
    pub accel: Accel,
    /// One line for the user, e.g. why emulation is used.
    pub note: Option<String>,
}

/// Chooses a backend for `choice` (`auto`, `qemu`, `vmm`) on `host`.
///
/// Until a Linux guest has been seen booting on moat-vmm, `auto` means QEMU,
/// with KVM where the CPU has hardware virtualization and TCG otherwise;
/// `vmm` opts in to moat-vmm wherever `/dev/kvm` opens.
pub fn select(choice: BackendChoice, host: &HostVirt) -> Result<Selection, BackendError> {
    match choice {
        BackendChoice::Vmm if !host.kvm_usable => Err(BackendError::Unavailable(
            "vmm",
            "moat-vmm needs /dev/kvm, which cannot be opened read-write here (is KVM loaded, and are you in the \
             kvm group?); use --backend qemu"
                .into(),
        )),
        BackendChoice::Vmm => Ok(Selection {
            kind: BackendKind::Vmm,
            accel: Accel::Kvm,
            note: (!host.hardware).then(|| {
                "this CPU has no VMX/SVM, so /dev/kvm is a software implementation (such as PVM) on which Linux \
                 stops early in boot on moat-vmm (an `xrstor` it cannot emulate); use --backend qemu on this host"
                    .to_string()
            }),
        }),
        BackendChoice::Auto | BackendChoice::Qemu => {
            let (accel, note) = if host.hardware && host.kvm_usable {
                (Accel::Kvm, None)
            } else {
                let why = if !host.hardware {
                    "this CPU has no VMX/SVM hardware virtualization"
                } else {
                    "/dev/kvm cannot be opened read-write (are you in the kvm group?)"
                };
                (
                    Accel::Tcg,
                    Some(format!("using QEMU with software emulation (TCG) because {why}; expect slower guests")),
                )
            };
            Ok(Selection { kind: BackendKind::Qemu, accel, note })
        }
    }
}

/// The monitor for a selected kind.
pub fn hypervisor(kind: BackendKind) -> Result<Box<dyn Hypervisor>, BackendError> {
    match kind {
        BackendKind::Qemu => Ok(Box::new(Qemu::locate()?)),
        BackendKind::Vmm => Ok(Box::new(Vmm::locate()?)),
    }
}

/// The guest kernel command line for `vm`: console, reboot-to-exit, and the
/// `moat.*` parameters the guest agent reads.
pub fn kernel_cmdline(vm: &VmConfig) -> String {
    let boot = moat_proto::boot::BootConfig {
        name: Some(vm.name.clone()),
        root: Some("/dev/vda".into()),
        state: Some("/dev/vdb".into()),
        layers: vm
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| moat_proto::boot::Layer { device: layer_device(i), dir: l.dir.clone() })
            .collect(),
        mounts: vm
            .shares
            .iter()
            .map(|s| moat_proto::boot::ShareMount { tag: s.tag.clone(), path: s.path.clone(), read_only: s.read_only })
            .collect(),
    };
    format!("console=ttyS0 reboot=t panic=-1 quiet loglevel=3 {}", boot.encode())
}

/// The guest's name of the `i`-th layer disk: the disks after root and state.
fn layer_device(i: usize) -> String {
    let letter = char::from(b'c' + u8::try_from(i).unwrap_or(u8::MAX).min(b'z' - b'c'));
    format!("/dev/vd{letter}")
}

/// Longest command line the x86 kernel accepts (COMMAND_LINE_SIZE − NUL).
const COMMAND_LINE_MAX: usize = 2047;
/// Bytes QEMU and moat-vmm append per virtio-mmio device
/// (` virtio_mmio.device=512@0xfeb00e00:12`), rounded up.
const MMIO_ENTRY: usize = 40;

/// Whether `vm`'s command line still fits the kernel's limit once the monitor
/// has appended a `virtio_mmio.device=` entry for each device (root, state,
/// layers, vsock, shares).
pub fn cmdline_fits(vm: &VmConfig) -> bool {
    kernel_cmdline(vm).len() + MMIO_ENTRY * vm.devices() <= COMMAND_LINE_MAX
}

impl VmConfig {
    /// Virtio devices the VM has: root, state, layers, vsock, shares.
    pub fn devices(&self) -> usize {
        2 + self.layers.len() + 1 + self.shares.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_uses_kvm_only_with_hardware_virtualization() {
        let hw = HostVirt { hardware: true, kvm_usable: true };
        let s = select(BackendChoice::Auto, &hw).unwrap();
        assert_eq!((s.kind, s.accel, s.note), (BackendKind::Qemu, Accel::Kvm, None));

        let pvm = HostVirt { hardware: false, kvm_usable: true };
        let s = select(BackendChoice::Auto, &pvm).unwrap();
        assert_eq!(s.accel, Accel::Tcg);
        assert!(s.note.unwrap().contains("no VMX/SVM"));

        let no_perm = HostVirt { hardware: true, kvm_usable: false };
        assert!(select(BackendChoice::Qemu, &no_perm).unwrap().note.unwrap().contains("/dev/kvm"));
    }

    #[test]
    fn vmm_is_opt_in_and_needs_a_usable_dev_kvm() {
        let hw = HostVirt { hardware: true, kvm_usable: true };
        assert_eq!(select(BackendChoice::Auto, &hw).unwrap().kind, BackendKind::Qemu, "auto never picks moat-vmm yet");
        let s = select(BackendChoice::Vmm, &hw).unwrap();
        assert_eq!((s.kind, s.accel, s.note), (BackendKind::Vmm, Accel::Kvm, None));

        // PVM: /dev/kvm opens but the CPU has no VMX/SVM. moat-vmm runs, with a warning.
        let pvm = HostVirt { hardware: false, kvm_usable: true };
        let s = select(BackendChoice::Vmm, &pvm).unwrap();
        assert_eq!((s.kind, s.accel), (BackendKind::Vmm, Accel::Kvm));
        assert!(s.note.unwrap().contains("use --backend qemu"));

        for host in [HostVirt { hardware: true, kvm_usable: false }, HostVirt { hardware: false, kvm_usable: false }] {
            let err = select(BackendChoice::Vmm, &host).unwrap_err().to_string();
            assert!(err.starts_with("the vmm backend is not available: moat-vmm needs /dev/kvm"), "{err}");
            assert!(err.contains("--backend qemu"), "{err}");
        }
    }

    #[test]
    fn cmdline_hex_encodes_share_paths_and_layer_folders() {
        let vm = VmConfig {
            name: "s1".into(),
            backend: BackendKind::Qemu,
            accel: Accel::Tcg,
            cpus: 1,
            memory_mib: 256,
            kernel: "k".into(),
            initramfs: "i".into(),
            root_disk: "r".into(),
            state_disk: "s".into(),
            layers: vec![
                LayerDisk { path: "claude.ext4".into(), dir: None },
                LayerDisk { path: "saved.ext4".into(), dir: Some("/upper".into()) },
            ],
            shares: vec![Share {
                tag: "ws0".into(),
                path: "/a b/é".into(),
                read_only: true,
                owner: crate::owner::ShareOwner { uid: 0, gid: 0 },
            }],
            egress: None,
            agent_hosts: vec![],
            run_dir: "/run".into(),
        };
        let c = kernel_cmdline(&vm);
        assert!(cmdline_fits(&vm));
        assert!(c.contains("moat.name=s1"));
        assert!(c.contains(" moat.layer=/dev/vdc moat.layer=/dev/vdd,2f7570706572 "), "{c}");
        assert!(c.ends_with(" moat.mount=ws0,2f6120622fc3a9,ro"), "{c}");
        // Each layer and share costs its parameter and the monitor's device entry.
        let many = VmConfig { layers: vec![vm.layers[1].clone(); 5], ..vm.clone() };
        assert!(cmdline_fits(&many));
        let long = Share { path: format!("/{}", "x".repeat(300)).into(), ..vm.shares[0].clone() };
        assert!(!cmdline_fits(&VmConfig { shares: vec![long; 3], ..many }));
    }
}
