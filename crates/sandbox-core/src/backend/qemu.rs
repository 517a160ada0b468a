//! The QEMU backend: `qemu-system-x86_64 -M microvm`.

use std::path::PathBuf;
use std::process::Command;

use super::{find_tool, kernel_cmdline, Accel, BackendError, DeviceSockets, Hypervisor, Tool, VmConfig};

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
        // Device order decides guest names: the root disk must be /dev/vda, the state disk /dev/vdb,
        // the layers /dev/vdc onwards.
        c.arg("-drive").arg(drive("root", &vm.root_disk, true));
        c.args(["-device", "virtio-blk-device,drive=root"]);
        c.arg("-drive").arg(drive("state", &vm.state_disk, false));
        c.args(["-device", "virtio-blk-device,drive=state"]);
        for (i, layer) in vm.layers.iter().enumerate() {
            c.arg("-drive").arg(drive(&format!("layer{i}"), layer, true));
            c.args(["-device", &format!("virtio-blk-device,drive=layer{i}")]);
        }
        c.arg("-chardev").arg(socket_chardev("vsock", &sockets.vsock));
        c.args(["-device", "vhost-user-vsock-device,chardev=vsock"]);
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
    fn commas_in_paths_are_doubled() {
        assert_eq!(escape_commas(std::path::Path::new("/a,b/c")), "/a,,b/c");
    }
}
