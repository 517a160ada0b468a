//! The QEMU backend: `qemu-system-x86_64 -M microvm`.

use std::path::PathBuf;
use std::process::Command;

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
        Ok(c)
    }
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

    #[test]
    fn vsock_comes_third_and_a_ninth_device_is_refused() {
        let vm = |layers: usize, shares: usize| VmConfig {
            name: "q".into(),
            backend: super::super::BackendKind::Qemu,
            accel: Accel::Tcg,
            cpus: 1,
            memory_mib: 512,
            kernel: "k".into(),
            initramfs: "i".into(),
            root_disk: "r".into(),
            state_disk: "s".into(),
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
            run_dir: "/run".into(),
            egress: None,
            agent_hosts: vec![],
        };
        let sockets = DeviceSockets { vsock: "v.sock".into(), fs: vec!["f.sock".into(); 2] };
        let qemu = Qemu { binary: "qemu".into() };
        let cmd = qemu.command(&vm(2, 1), &sockets).unwrap();
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
    fn commas_in_paths_are_doubled() {
        assert_eq!(escape_commas(std::path::Path::new("/a,b/c")), "/a,,b/c");
    }
}
