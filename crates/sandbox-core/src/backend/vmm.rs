//! The moat-vmm backend: Moat's own KVM monitor (`crates/vmm`), one process
//! per VM, with the same device back-ends as QEMU (virtiofsd per share,
//! `moat-vsock`) attached through its vhost-user front-end.
//!
//! Opt-in (`--backend vmm`): no Linux guest has been seen booting on it yet.
//! The guest console is the process's stdout, like QEMU's, so the supervisor
//! logs it and watches for the agent's ready line the same way; the control
//! socket in the run folder stops a guest that ignored the agent's power-off.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::jail::{jail_dir, sandbox_id};
use super::{find_tool, kernel_cmdline, BackendError, DeviceSockets, Hypervisor, Tool, VmConfig, GUEST_CID};

/// How long the control socket gets to answer `stop`.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// `moat-vmm` driving `/dev/kvm`.
#[derive(Debug, Clone)]
pub struct Vmm {
    binary: PathBuf,
}

impl Vmm {
    /// Finds `moat-vmm` (see [`find_tool`]).
    pub fn locate() -> Result<Vmm, BackendError> {
        Ok(Vmm { binary: find_tool(Tool::Vmm)? })
    }

    /// The monitor at `binary`.
    pub fn at(binary: impl Into<PathBuf>) -> Vmm {
        Vmm { binary: binary.into() }
    }
}

/// The control socket of the VM running in `vm.run_dir`.
pub fn api_socket(vm: &VmConfig) -> PathBuf {
    vm.run_dir.join("vmm-api.sock")
}

impl Hypervisor for Vmm {
    fn name(&self) -> &'static str {
        "vmm"
    }

    fn command(&self, vm: &VmConfig, sockets: &DeviceSockets) -> Result<Command, BackendError> {
        let unsupported = |what: String| BackendError::Unsupported("vmm", what);
        let mem = u32::try_from(vm.memory_mib)
            .map_err(|_| unsupported(format!("{} MiB of memory is more than it supports", vm.memory_mib)))?;
        let cpus =
            u8::try_from(vm.cpus).map_err(|_| unsupported(format!("{} vCPUs is more than it supports", vm.cpus)))?;
        let mut c = Command::new(&self.binary);
        // `linux`: the ELF vmlinux through PVH, a bzImage through the 64-bit protocol.
        c.arg("--kernel").arg(&vm.kernel).args(["--format", "linux"]);
        c.arg("--initrd").arg(&vm.initramfs);
        // moat-vmm appends the `virtio_mmio.device=` entries itself, like QEMU's microvm.
        c.args(["--cmdline", &kernel_cmdline(vm)]);
        c.args(["--mem-mib", &mem.to_string(), "--vcpus", &cpus.to_string()]);
        // Device order decides guest names: the root disk must be /dev/vda, the state disk /dev/vdb.
        c.arg("--disk").arg(with_option(&vm.root_disk, "ro"));
        c.arg("--disk").arg(with_option(&vm.state_disk, "rw"));
        for layer in &vm.layers {
            c.arg("--disk").arg(with_option(&layer.path, "ro"));
        }
        for (share, sock) in vm.shares.iter().zip(&sockets.fs) {
            c.arg("--fs").arg(with_option(sock, &share.tag));
        }
        c.arg("--vsock").arg(with_option(&sockets.vsock, &GUEST_CID.to_string()));
        c.args(["--serial", "stdout"]);
        c.arg("--api-socket").arg(api_socket(vm));
        // SAFETY: geteuid only reads this process's credentials.
        if unsafe { libc::geteuid() } == 0 {
            // Root can jail it: own namespaces, an empty root, a uid of the sandbox's own.
            let id = sandbox_id(&vm.run_dir).to_string();
            c.arg("--jail").arg(jail_dir(&vm.run_dir));
            c.args(["--jail-uid", &id, "--jail-gid", &id]);
        }
        Ok(c)
    }

    fn run_files(&self, vm: &VmConfig) -> Vec<PathBuf> {
        // Jailed, moat-vmm runs as a user that cannot unlink in the run folder.
        vec![api_socket(vm)]
    }

    fn stop_now(&self, vm: &VmConfig) -> bool {
        moat_proto::vmm::ApiClient::connect(api_socket(vm), API_TIMEOUT).and_then(|mut api| api.stop()).is_ok()
    }
}

/// `PATH,OPTION`; moat-vmm splits at the last comma, so commas in `path` are fine.
fn with_option(path: &Path, option: &str) -> OsString {
    let mut s = path.as_os_str().to_owned();
    s.push(",");
    s.push(option);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Accel, BackendKind, LayerDisk, Share};

    fn vm() -> VmConfig {
        let share = |tag: &str, path: &str, read_only| Share {
            tag: tag.into(),
            path: path.into(),
            read_only,
            owner: crate::owner::ShareOwner { uid: 0, gid: 0 },
        };
        VmConfig {
            name: "box".into(),
            backend: BackendKind::Vmm,
            accel: Accel::Kvm,
            cpus: 2,
            memory_mib: 1536,
            kernel: "/cache/kernel/vmlinux".into(),
            initramfs: "/cache/initramfs/initramfs.cpio".into(),
            root_disk: "/cache/rootfs/root,fs.ext4".into(),
            state_disk: "/home/sandboxes/ab/state.ext4".into(),
            layers: vec![LayerDisk { path: "/cache/layer/claude/layer.ext4".into(), dir: None }],
            shares: vec![share("ws0", "/src/app", false), share("ws1", "/data", true)],
            run_dir: "/home/sandboxes/ab/run".into(),
            egress: None,
            agent_hosts: vec![],
        }
    }

    fn sockets() -> DeviceSockets {
        DeviceSockets {
            vsock: "/home/sandboxes/ab/run/vsock-backend.sock".into(),
            fs: vec!["/home/sandboxes/ab/run/fs0.sock".into(), "/home/sandboxes/ab/run/f,s1.sock".into()],
        }
    }

    fn args(c: &Command) -> Vec<String> {
        c.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn every_field_of_the_vm_lands_in_the_arguments() {
        let vm = vm();
        let c = Vmm::at("/opt/moat-vmm").command(&vm, &sockets()).unwrap();
        assert_eq!(c.get_program(), "/opt/moat-vmm");
        let cmdline = kernel_cmdline(&vm);
        assert!(cmdline.contains("reboot=t") && cmdline.contains(" moat.mount=ws1,2f64617461,ro"), "{cmdline}");
        assert!(cmdline.contains(" moat.state=/dev/vdb moat.layer=/dev/vdc "), "{cmdline}");
        let want = [
            "--kernel",
            "/cache/kernel/vmlinux",
            "--format",
            "linux",
            "--initrd",
            "/cache/initramfs/initramfs.cpio",
            "--cmdline",
            &cmdline,
            "--mem-mib",
            "1536",
            "--vcpus",
            "2",
            "--disk",
            "/cache/rootfs/root,fs.ext4,ro",
            "--disk",
            "/home/sandboxes/ab/state.ext4,rw",
            "--disk",
            "/cache/layer/claude/layer.ext4,ro",
            "--fs",
            "/home/sandboxes/ab/run/fs0.sock,ws0",
            "--fs",
            "/home/sandboxes/ab/run/f,s1.sock,ws1",
            "--vsock",
            "/home/sandboxes/ab/run/vsock-backend.sock,3",
            "--serial",
            "stdout",
            "--api-socket",
            "/home/sandboxes/ab/run/vmm-api.sock",
        ];
        let got = args(&c);
        assert_eq!(got[..want.len()], want);
        // SAFETY: geteuid only reads this process's credentials.
        let jail: Vec<String> = match unsafe { libc::geteuid() } {
            0 => {
                let id = sandbox_id(&vm.run_dir).to_string();
                ["--jail", "/home/sandboxes/ab/run/jail", "--jail-uid", &id, "--jail-gid", &id].map(String::from).into()
            }
            _ => Vec::new(),
        };
        assert_eq!(got[want.len()..], jail, "jailed exactly when run as root");
    }

    #[test]
    fn a_vm_without_shares_still_gets_its_disks_and_vsock() {
        let vm = VmConfig { shares: Vec::new(), layers: Vec::new(), ..vm() };
        let c = Vmm::at("moat-vmm").command(&vm, &DeviceSockets { fs: Vec::new(), ..sockets() }).unwrap();
        let a = args(&c);
        assert!(!a.contains(&"--fs".to_string()), "{a:?}");
        assert_eq!(a.iter().filter(|x| *x == "--disk").count(), 2);
        assert!(a.windows(2).any(|w| w[0] == "--vsock" && w[1].ends_with("vsock-backend.sock,3")), "{a:?}");
    }

    #[test]
    fn sizes_moat_vmm_cannot_take_are_refused_before_it_runs() {
        let err = Vmm::at("moat-vmm").command(&VmConfig { cpus: 300, ..vm() }, &sockets()).unwrap_err();
        assert_eq!(err.to_string(), "the vmm backend cannot run this VM: 300 vCPUs is more than it supports");
        let huge = VmConfig { memory_mib: u64::from(u32::MAX) + 1, ..vm() };
        let err = Vmm::at("moat-vmm").command(&huge, &sockets()).unwrap_err();
        assert!(err.to_string().contains("4294967296 MiB of memory"), "{err}");
    }

    #[test]
    fn stop_now_is_false_when_nothing_serves_the_control_socket() {
        let dir = tempfile::tempdir().unwrap();
        let vm = VmConfig { run_dir: dir.path().into(), ..vm() };
        assert!(!Vmm::at("moat-vmm").stop_now(&vm));
    }
}
