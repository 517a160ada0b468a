//! The QEMU backend: `qemu-system-x86_64 -M microvm`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use super::jail::{jail_dir, sandbox_id, ChildJail};
use super::{find_tool, kernel_cmdline, Accel, BackendError, DeviceSockets, Hypervisor, Tool, VmConfig};

/// Virtio-mmio transports of QEMU's microvm without ACPI: every disk, the
/// vsock device and every share takes one.
pub const MAX_DEVICES: usize = 8;

/// Why a VM has more devices than [`MAX_DEVICES`], in the user's words.
pub fn too_many_devices(vm: &VmConfig) -> String {
    format!(
        "it needs {} virtio devices (root, state, vsock, {} template layer(s), {} shared folder(s)) and QEMU's \
         microvm has {MAX_DEVICES}: share fewer folders, or boot from a template with fewer layers",
        vm.devices(),
        vm.layers.len(),
        vm.shares.len()
    )
}

/// QEMU's microvm machine, with vhost-user devices for vsock and virtio-fs.
#[derive(Debug, Clone)]
pub struct Qemu {
    binary: PathBuf,
}

impl Qemu {
    /// Finds `qemu-system-x86_64`.
    pub fn locate() -> Result<Qemu, BackendError> {
        Ok(Qemu { binary: find_tool(Tool::Qemu)? })
    }
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn command(&self, vm: &VmConfig, sockets: &DeviceSockets) -> Result<Command, BackendError> {
        // SAFETY: geteuid only reads this process's credentials.
        let root = unsafe { libc::geteuid() } == 0;
        self.command_as(vm, sockets, root)
    }
}

impl Qemu {
    /// [`Hypervisor::command`] for a Moat that runs as root or not.
    fn command_as(&self, vm: &VmConfig, sockets: &DeviceSockets, root: bool) -> Result<Command, BackendError> {
        let mut c = Command::new(&self.binary);
        let accel = match vm.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=multi",
        };
        let mem = format!("{}M", vm.memory_mib);
        // acpi=off: our kernel has no ACPI, and microvm then describes devices on the
        // command line (auto-kernel-cmdline appends the virtio_mmio.device= entries).
        c.args(["-M", "microvm,acpi=off,auto-kernel-cmdline=on,pcie=off,rtc=on", "-accel", accel]);
        c.args(["-cpu", if vm.accel == Accel::Kvm { "host" } else { "max" }]);
        c.args(["-smp", &vm.cpus.to_string(), "-m", &mem]);
        // Shared memfd memory: vhost-user back-ends map guest RAM.
        c.args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
            "-machine",
            "memory-backend=mem",
        ]);
        c.args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
        // No network device at all: the guest's only way out is vsock to the host.
        c.args(["-nic", "none"]);
        c.args(["-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"]);
        c.arg("-kernel").arg(&vm.kernel).arg("-initrd").arg(&vm.initramfs);
        c.args(["-append", &kernel_cmdline(vm)]);
        if vm.devices() > MAX_DEVICES {
            return Err(BackendError::Unsupported("qemu", too_many_devices(vm)));
        }
        // Device order decides guest names: the root disk must be /dev/vda, the state disk /dev/vdb,
        // the layers /dev/vdc onwards (vsock, no disk, takes no letter). It also decides interrupts:
        // the i-th device gets IRQ 12 - i, and the 5th (IRQ 8) shares the RTC's line, which the
        // guest's RTC driver claims before the vsock driver binds (disk and file-system drivers bind
        // first). So vsock goes third, always.
        c.arg("-drive").arg(drive("root", &vm.root_disk, true));
        c.args(["-device", "virtio-blk-device,drive=root"]);
        c.arg("-drive").arg(drive("state", &vm.state_disk, false));
        c.args(["-device", "virtio-blk-device,drive=state"]);
        c.arg("-chardev").arg(socket_chardev("vsock", &sockets.vsock));
        c.args(["-device", "vhost-user-vsock-device,chardev=vsock"]);
        for (i, layer) in vm.layers.iter().enumerate() {
            c.arg("-drive").arg(drive(&format!("layer{i}"), &layer.path, true));
            c.args(["-device", &format!("virtio-blk-device,drive=layer{i}")]);
        }
        for (i, (share, sock)) in vm.shares.iter().zip(&sockets.fs).enumerate() {
            c.arg("-chardev").arg(socket_chardev(&format!("fs{i}"), sock));
            c.args(["-device", &format!("vhost-user-fs-device,chardev=fs{i},tag={}", share.tag)]);
        }
        confine(&mut c, vm, root)?;
        Ok(c)
    }
}

/// Capabilities QEMU started by root keeps in its bounding set: reading the
/// files it opens at start whoever owns them, and taking the jail itself.
const ROOT_KEEPS: &[u32] = &[CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_SETGID, CAP_SETUID, CAP_SYS_CHROOT];
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SYS_CHROOT: u32 = 18;

/// QEMU's own seccomp policy, whoever runs it: no obsolete calls, no new
/// processes, no scheduler or resource changes; a violation kills it. Run by
/// root, it also opens everything it needs, then takes an empty read-only
/// root (`-chroot`) and a user of the sandbox's own (`-runas`), in new mount,
/// network, IPC and UTS namespaces ([`ChildJail`]), with a bounding set of
/// [`ROOT_KEEPS`]. Its `set*id` calls happen after its filter is in place, so
/// the policy must allow them there; afterwards it holds no capability and has
/// `no_new_privs` (set with the filter), so it cannot become root again.
fn confine(c: &mut Command, vm: &VmConfig, root: bool) -> Result<(), BackendError> {
    let elevate = if root { "allow" } else { "deny" };
    c.args(["-sandbox", &format!("on,obsolete=deny,elevateprivileges={elevate},spawn=deny,resourcecontrol=deny")]);
    if !root {
        return Ok(());
    }
    let id = sandbox_id(&vm.run_dir);
    let jail = jail_dir(&vm.run_dir);
    c.arg("-chroot").arg(&jail).args(["-runas", &format!("{id}:{id}")]);
    let child = ChildJail::new(&jail, ROOT_KEEPS)
        .map_err(|e| BackendError::Unsupported("qemu", format!("its jail {} cannot be used: {e}", jail.display())))?;
    // SAFETY: `enter` makes only system calls on memory prepared before the fork.
    unsafe { c.pre_exec(move || child.enter()) };
    Ok(())
}

fn drive(id: &str, file: &std::path::Path, read_only: bool) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(format!("id={id},format=raw,if=none,discard=unmap,"));
    if read_only {
        s.push("read-only=on,");
    }
    s.push("file=");
    s.push(escape_commas(file));
    s
}

fn socket_chardev(id: &str, path: &std::path::Path) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(format!("socket,id={id},path="));
    s.push(escape_commas(path));
    s
}

/// QEMU option values escape a comma by doubling it.
fn escape_commas(p: &std::path::Path) -> std::ffi::OsString {
    let bytes = p.as_os_str().as_encoded_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    // SAFETY: `out` is the encoded bytes of an OsStr with ASCII commas duplicated;
    // inserting ASCII bytes next to ASCII bytes keeps the encoding valid.
    unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-vCPU TCG VM with no layers or shares, run from `run_dir`.
    fn vm_config(run_dir: &str) -> VmConfig {
        VmConfig {
            name: "q".into(),
            backend: super::super::BackendKind::Qemu,
            accel: Accel::Tcg,
            cpus: 1,
            memory_mib: 512,
            kernel: "k".into(),
            initramfs: "i".into(),
            root_disk: "r".into(),
            state_disk: "s".into(),
            layers: vec![],
            shares: vec![],
            run_dir: run_dir.into(),
            egress: None,
            agent_hosts: vec![],
        }
    }

    #[test]
    fn vsock_comes_third_and_a_ninth_device_is_refused() {
        let vm = |layers: usize, shares: usize| VmConfig {
            layers: vec![super::super::LayerDisk { path: "l".into(), dir: None }; layers],
            shares: vec![
                super::super::Share {
                    tag: "ws0".into(),
                    path: "/w".into(),
                    read_only: false,
                    owner: crate::owner::ShareOwner { uid: 0, gid: 0 },
                };
                shares
            ],
            ..vm_config("/run")
        };
        let sockets = DeviceSockets { vsock: "v.sock".into(), fs: vec!["f.sock".into(); 2] };
        let qemu = Qemu { binary: "qemu".into() };
        let cmd = qemu.command_as(&vm(2, 1), &sockets, false).unwrap();
        let devices: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .filter(|a| a.starts_with("virtio-blk-device") || a.starts_with("vhost-user"))
            .collect();
        assert_eq!(
            devices,
            [
                "virtio-blk-device,drive=root",
                "virtio-blk-device,drive=state",
                "vhost-user-vsock-device,chardev=vsock",
                "virtio-blk-device,drive=layer0",
                "virtio-blk-device,drive=layer1",
                "vhost-user-fs-device,chardev=fs0,tag=ws0",
            ]
        );
        assert!(qemu.command(&vm(3, 2), &sockets).is_ok(), "eight devices fit");
        let err = qemu.command(&vm(4, 2), &sockets).unwrap_err().to_string();
        assert!(err.contains("it needs 9 virtio devices") && err.contains("has 8"), "{err}");
    }

    #[test]
    fn qemu_runs_under_its_seccomp_policy_and_as_root_in_a_jail_of_the_sandboxs_own() {
        let vm = vm_config("/home/u/.moat/sandboxes/ab/run");
        let sockets = DeviceSockets { vsock: "v.sock".into(), fs: vec![] };
        let qemu = Qemu { binary: "qemu".into() };
        let args = |root| -> Vec<String> {
            let c = qemu.command_as(&vm, &sockets, root).unwrap();
            c.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
        };
        let after = |args: &[String], flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].clone());

        let user = args(false);
        assert_eq!(
            after(&user, "-sandbox").as_deref(),
            Some("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
        );
        assert_eq!((after(&user, "-runas"), after(&user, "-chroot")), (None, None), "a user's QEMU is already theirs");

        let root = args(true);
        // QEMU drops root itself after its filter is in place, so set*id stays allowed; it then
        // has no capability and no_new_privs, so it cannot come back.
        assert_eq!(
            after(&root, "-sandbox").as_deref(),
            Some("on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny")
        );
        let id = sandbox_id(&vm.run_dir);
        assert!(id >= 0x4d00_0000, "never root nor an ordinary user: {id}");
        assert_eq!(after(&root, "-runas"), Some(format!("{id}:{id}")));
        assert_eq!(after(&root, "-chroot").as_deref(), Some("/home/u/.moat/sandboxes/ab/run/jail"));
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        assert_eq!(escape_commas(std::path::Path::new("/a,b/c")), "/a,,b/c");
    }
}
