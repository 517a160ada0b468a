//! Filesystems of the boot: the overlay root, the API filesystems, the virtiofs
//! shares, and the switch from the initramfs into the new root.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::log::log;
use moat_proto::boot::{Layer, ShareMount};

/// A failed boot step.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// mount(2) failed.
    #[error("cannot mount {what} on {target}")]
    Mount {
        what: String,
        target: String,
        #[source]
        errno: Errno,
    },
    /// A directory or file could not be created.
    #[error("cannot create {path}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// chdir/chroot while switching root failed.
    #[error("cannot switch into the new root ({step})")]
    SwitchRoot {
        step: &'static str,
        #[source]
        errno: Errno,
    },
}

/// mount(2) with a readable error.
pub fn mount_fs(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), MountError> {
    mkdir_p(Path::new(target))?;
    mount(Some(src), target, Some(fstype), flags, data).map_err(|errno| MountError::Mount {
        what: format!("{fstype} {src}"),
        target: target.to_string(),
        errno,
    })
}

fn mkdir_p(path: &Path) -> Result<(), MountError> {
    fs::create_dir_all(path).map_err(|source| MountError::Create { path: path.display().to_string(), source })
}

/// Mounts devtmpfs, proc and sysfs in the initramfs (before anything else, so the
/// console and block devices exist).
pub fn mount_early() -> Result<(), MountError> {
    let nosuid = MsFlags::MS_NOSUID;
    mount_fs("devtmpfs", "/dev", "devtmpfs", nosuid, Some("mode=0755"))?;
    mount_fs("proc", "/proc", "proc", nosuid | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None)?;
    mount_fs("sysfs", "/sys", "sysfs", nosuid | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None)?;
    Ok(())
}

/// Builds the overlay root at `/newroot`: `root` read-only at the bottom, the
/// template's `layers` read-only over it, `state` (or a tmpfs) above. Returns
/// an `O_PATH` handle on the upper filesystem, for the final remount
/// read-only at power-off.
pub fn mount_overlay_root(root: &str, layers: &[Layer], state: Option<&str>) -> Result<OwnedFd, MountError> {
    wait_for_device(root);
    mount_fs(root, "/lower", "ext4", MsFlags::MS_RDONLY, None)?;
    // overlayfs lists lower folders top first.
    let mut lowerdirs = vec!["/lower".to_string()];
    for (i, layer) in layers.iter().enumerate() {
        let at = format!("/layers/{i}");
        wait_for_device(&layer.device);
        // noload: a layer is never written, and a journal is never replayed on it.
        mount_fs(&layer.device, &at, "ext4", MsFlags::MS_RDONLY, Some("noload"))?;
        let dir = match &layer.dir {
            Some(d) => format!("{at}{}", d.display()),
            None => at,
        };
        lowerdirs.insert(0, dir);
    }
    match state {
        Some(dev) => {
            wait_for_device(dev);
            mount_fs(dev, "/state", "ext4", MsFlags::MS_NOATIME, None)?;
        }
        None => mount_fs("tmpfs", "/state", "tmpfs", MsFlags::empty(), Some("mode=0755"))?,
    }
    mkdir_p(Path::new("/state/upper"))?;
    mkdir_p(Path::new("/state/work"))?;
    let state_handle = nix::fcntl::open(
        "/state",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| MountError::Mount { what: "state handle".into(), target: "/state".into(), errno })?;
    // SAFETY: open just returned this fd and nothing else owns it.
    let state_handle = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(state_handle) };
    mount_fs(
        "overlay",
        "/newroot",
        "overlay",
        MsFlags::empty(),
        Some(&format!("lowerdir={},upperdir=/state/upper,workdir=/state/work", lowerdirs.join(":"))),
    )?;
    if let Err(e) = docker_data_root() {
        log!("{}", super::chain(&e));
    }
    Ok(state_handle)
}

/// Docker keeps its images and containers on the state filesystem itself:
/// its overlay2 driver cannot stack on our overlay root.
fn docker_data_root() -> Result<(), MountError> {
    if !Path::new("/newroot/usr/sbin/dockerd").exists() {
        return Ok(());
    }
    mkdir_p(Path::new("/state/docker"))?;
    mkdir_p(Path::new("/newroot/var/lib/docker"))?;
    mount(Some("/state/docker"), "/newroot/var/lib/docker", None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(
        |errno| MountError::Mount {
            what: "(bind) /state/docker".into(),
            target: "/newroot/var/lib/docker".into(),
            errno,
        },
    )
}

/// Block devices can appear a moment after PID 1 starts.
fn wait_for_device(dev: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !Path::new(dev).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Moves /dev, /proc, /sys under `/newroot` and makes it `/`.
pub fn switch_root() -> Result<(), MountError> {
    for dir in ["/dev", "/proc", "/sys"] {
        let target = format!("/newroot{dir}");
        mkdir_p(Path::new(&target))?;
        mount(Some(dir), target.as_str(), None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(|errno| MountError::Mount { what: format!("(move) {dir}"), target: target.clone(), errno })?;
    }
    let step = |step| move |errno| MountError::SwitchRoot { step, errno };
    nix::unistd::chdir("/newroot").map_err(step("chdir /newroot"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(step("move to /"))?;
    nix::unistd::chroot(".").map_err(step("chroot"))?;
    nix::unistd::chdir("/").map_err(step("chdir /"))?;
    Ok(())
}

/// The API filesystems of the running system; each failure is logged, not fatal.
pub fn mount_api_filesystems() {
    let nosuid = MsFlags::MS_NOSUID;
    let nodev = MsFlags::MS_NODEV;
    let steps: [(&str, &str, &str, MsFlags, Option<&str>); 5] = [
        ("devpts", "/dev/pts", "devpts", nosuid | MsFlags::MS_NOEXEC, Some("ptmxmode=0666,mode=0620,gid=5")),
        ("tmpfs", "/dev/shm", "tmpfs", nosuid | nodev, Some("mode=1777")),
        ("tmpfs", "/run", "tmpfs", nosuid | nodev, Some("mode=0755")),
        ("tmpfs", "/tmp", "tmpfs", nosuid | nodev, Some("mode=1777")),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid | nodev | MsFlags::MS_NOEXEC, None),
    ];
    for (src, target, fstype, flags, data) in steps {
        if let Err(e) = mount_fs(src, target, fstype, flags, data) {
            log!("{}", super::chain(&e));
        }
    }
    let links = [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ];
    for (link, target) in links {
        if fs::symlink_metadata(link).is_err() {
            if let Err(e) = std::os::unix::fs::symlink(target, link) {
                log!("cannot link {link} -> {target}: {e}");
            }
        }
    }
}

/// Sets the hostname and records it in /etc/hostname and /etc/hosts.
pub fn set_hostname(name: &str) {
    if let Err(e) = nix::unistd::sethostname(name) {
        log!("cannot set the hostname: {e}");
    }
    if let Err(e) = fs::write("/etc/hostname", format!("{name}\n")) {
        log!("cannot write /etc/hostname: {e}");
    }
    let hosts = fs::read_to_string("/etc/hosts").unwrap_or_else(|_| "127.0.0.1\tlocalhost\n::1\tlocalhost\n".into());
    let line = format!("127.0.1.1\t{name}");
    if !hosts.lines().any(|l| l.split_whitespace().eq(line.split_whitespace())) {
        let mut text = hosts;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        if let Err(e) = fs::write("/etc/hosts", text) {
            log!("cannot write /etc/hosts: {e}");
        }
    }
}

/// Mounts the virtiofs shares, shallowest first (so nested shares land inside
/// their parents). Returns the mount points that succeeded.
pub fn mount_shares(shares: &[ShareMount]) -> Vec<PathBuf> {
    let mut ordered: Vec<&ShareMount> = shares.iter().collect();
    ordered.sort_by_key(|s| s.path.components().count());
    let mut mounted = Vec::new();
    for share in ordered {
        let flags = if share.read_only { MsFlags::MS_RDONLY } else { MsFlags::empty() };
        let result = mkdir_p(&share.path).and_then(|()| {
            mount(Some(share.tag.as_str()), &share.path, Some("virtiofs"), flags, None::<&str>).map_err(|errno| {
                MountError::Mount {
                    what: format!("virtiofs {}", share.tag),
                    target: share.path.display().to_string(),
                    errno,
                }
            })
        });
        match result {
            Ok(()) => mounted.push(share.path.clone()),
            Err(e) => log!("{}", super::chain(&e)),
        }
    }
    mounted
}

/// Makes sure fds 0, 1 and 2 are open (on the console if possible), so that no
/// pipe or socket the agent creates ever lands on them.
pub fn open_console() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the fd table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
            .or_else(|_| OpenOptions::new().read(true).write(true).open("/dev/null"));
        if let Ok(file) = file {
            let raw = std::os::fd::IntoRawFd::into_raw_fd(file);
            if raw != fd {
                // SAFETY: dup2 onto a free slot, then close our temporary fd, which we own.
                unsafe {
                    libc::dup2(raw, fd);
                    libc::close(raw);
                }
            }
        }
    }
    let _ = std::io::stderr().flush();
}
