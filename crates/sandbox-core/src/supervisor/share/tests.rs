use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::*;

/// What one call should answer under the guard: `0` or an errno.
struct Probe {
    what: &'static str,
    expect: i32,
    call: Box<dyn Fn() -> i32>,
}

fn errno_of(rc: libc::c_long) -> i32 {
    if rc < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

// Thin wrappers: each makes one system call on a NUL-terminated path owned by
// the caller and returns 0 or the errno.

fn mknod(path: &CString, mode: libc::mode_t, dev: libc::dev_t) -> i32 {
    // SAFETY: `path` is a valid C string; the other arguments are integers.
    errno_of(unsafe { libc::mknodat(libc::AT_FDCWD, path.as_ptr(), mode, dev) }.into())
}

fn open(path: &CString, flags: i32, mode: libc::mode_t) -> i32 {
    // SAFETY: as above; a descriptor that opened stays open until the child exits.
    errno_of(unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), flags, mode) }.into())
}

fn chmod(path: &CString, mode: libc::mode_t) -> i32 {
    // SAFETY: as above.
    errno_of(unsafe { libc::fchmodat(libc::AT_FDCWD, path.as_ptr(), mode, 0) }.into())
}

fn chmod_old(path: &CString, mode: libc::mode_t) -> i32 {
    // SAFETY: as above.
    errno_of(unsafe { libc::chmod(path.as_ptr(), mode) }.into())
}

fn chmod2(path: &CString, mode: libc::mode_t) -> i32 {
    // SAFETY: fchmodat2(dirfd, path, mode, flags) with a valid C string.
    errno_of(unsafe { libc::syscall(SYS_FCHMODAT2, libc::AT_FDCWD, path.as_ptr(), mode, 0) })
}

fn setxattr(path: &CString, name: &std::ffi::CStr, value: &[u8]) -> i32 {
    // SAFETY: valid C strings and a value buffer of the given length.
    errno_of(unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) }.into())
}

fn chown(path: &CString, uid: u32, gid: u32) -> i32 {
    // SAFETY: a valid C string; ids are integers.
    errno_of(unsafe { libc::fchownat(libc::AT_FDCWD, path.as_ptr(), uid, gid, 0) }.into())
}

fn openat2(path: &CString) -> i32 {
    let how = [0u64; 3]; // struct open_how { flags, mode, resolve }: O_RDONLY, nothing else
                         // SAFETY: a valid C string and a 24-byte open_how that outlives the call.
    errno_of(unsafe { libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, path.as_ptr(), how.as_ptr(), 24usize) })
}

/// Every way a file server could put privilege on the host, and the harmless
/// neighbours that must keep working. Paths are made before the fork.
fn probes(dir: &Path, owner: ShareOwner) -> Vec<Probe> {
    let p = |name: &str| c(&dir.join(name));
    let (chr, blk, fifo, suid_node, suid_open, plain, tmp) =
        (p("chr"), p("blk"), p("fifo"), p("suid-node"), p("suid-open"), p("plain"), c(dir));
    let (uid, gid) = (owner.uid, owner.gid);
    let probe = |what: &'static str, expect: i32, call: Box<dyn Fn() -> i32>| Probe { what, expect, call };
    let f = || plain.clone();
    let cap = [1u8, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    vec![
        probe(
            "mknod char device 1:3",
            libc::EPERM,
            Box::new(move || mknod(&chr, libc::S_IFCHR | 0o666, libc::makedev(1, 3))),
        ),
        probe(
            "mknod block device 254:0",
            libc::EPERM,
            Box::new(move || mknod(&blk, libc::S_IFBLK | 0o666, libc::makedev(254, 0))),
        ),
        probe(
            "mknod set-uid regular file",
            libc::EPERM,
            Box::new(move || mknod(&suid_node, libc::S_IFREG | 0o4755, 0)),
        ),
        probe(
            "open O_CREAT mode 4755",
            libc::EPERM,
            Box::new(move || open(&suid_open, libc::O_CREAT | libc::O_WRONLY, 0o4755)),
        ),
        probe("open O_TMPFILE mode 2755", libc::EPERM, {
            let d = tmp.clone();
            Box::new(move || open(&d, libc::O_TMPFILE | libc::O_WRONLY, 0o2755))
        }),
        probe("mkfifo", 0, Box::new(move || mknod(&fifo, libc::S_IFIFO | 0o644, 0))),
        probe("open O_CREAT mode 755", 0, {
            let f = f();
            Box::new(move || open(&f, libc::O_CREAT | libc::O_WRONLY, 0o755))
        }),
        probe("chmod 4755", libc::EPERM, {
            let f = f();
            Box::new(move || chmod(&f, 0o4755))
        }),
        probe("chmod 2755", libc::EPERM, {
            let f = f();
            Box::new(move || chmod(&f, 0o2755))
        }),
        probe("chmod(2) 6777", libc::EPERM, {
            let f = f();
            Box::new(move || chmod_old(&f, 0o6777))
        }),
        probe("fchmodat2 4755", libc::EPERM, {
            let f = f();
            Box::new(move || chmod2(&f, 0o4755))
        }),
        probe("chmod 1777 (sticky)", 0, {
            let f = f();
            Box::new(move || chmod(&f, 0o1777))
        }),
        probe("setxattr security.capability", libc::EPERM, {
            let f = f();
            Box::new(move || setxattr(&f, c"security.capability", &cap))
        }),
        probe("setxattr user.x", libc::EPERM, {
            let f = f();
            Box::new(move || setxattr(&f, c"user.x", b"1"))
        }),
        probe("chown to another user", libc::EPERM, {
            let f = f();
            Box::new(move || chown(&f, uid.wrapping_add(4242), u32::MAX))
        }),
        probe("chown to another group", libc::EPERM, {
            let f = f();
            Box::new(move || chown(&f, u32::MAX, gid.wrapping_add(4242)))
        }),
        probe("chown to the owner", 0, {
            let f = f();
            Box::new(move || chown(&f, uid, gid))
        }),
        probe("openat2", libc::ENOSYS, Box::new(move || openat2(&tmp))),
    ]
}

/// Runs `probes` in a forked child, first becoming `become_user` (if any) and
/// then installing `guard` (if any). Returns each probe's answer.
fn run_in_child(probes: &[Probe], become_user: Option<u32>, guard: Option<&Guard>) -> Vec<i32> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fork has no memory-safety preconditions; the child below only
    // makes system calls.
    match unsafe { libc::fork() } {
        // SAFETY: the child only makes system calls on memory prepared before the
        // fork, writes its answers to the pipe and leaves with `_exit`.
        0 => unsafe {
            if let Some(id) = become_user {
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(id) != 0 || libc::setuid(id) != 0 {
                    libc::_exit(2);
                }
            }
            if let Some(g) = guard {
                if g.install().is_err() {
                    libc::_exit(3);
                }
            }
            for p in probes {
                let answer = (p.call)();
                libc::write(fds[1], (&answer as *const i32).cast(), 4);
            }
            libc::_exit(0);
        },
        pid => {
            // SAFETY: closing our copy of the write end; the read end is ours.
            unsafe { libc::close(fds[1]) };
            let mut out = Vec::new();
            let mut buf = [0u8; 4];
            // SAFETY: reading into a 4-byte buffer from the pipe we own.
            while unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 4) } == 4 {
                out.push(i32::from_ne_bytes(buf));
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe {
                libc::close(fds[0]);
                libc::waitpid(pid, &mut status, 0);
            }
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: {status:#x}");
            out
        }
    }
}

fn check(dir: &Path, owner: ShareOwner, become_user: Option<u32>) {
    let guard = Guard::new(owner).unwrap();
    let probes = probes(dir, owner);
    let answers = run_in_child(&probes, become_user, Some(&guard));
    let wrong: Vec<String> = probes
        .iter()
        .zip(&answers)
        .filter(|(p, a)| p.expect != **a)
        .map(|(p, a)| format!("{}: got errno {a}, want {}", p.what, p.expect))
        .collect();
    assert!(wrong.is_empty(), "under the guard:\n{}", wrong.join("\n"));
    // And what is on disk says the same, whatever the calls answered.
    for entry in std::fs::read_dir(dir).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        let t = meta.file_type();
        assert!(!t.is_block_device() && !t.is_char_device(), "a device node exists");
        assert_eq!(meta.mode() & 0o6000, 0, "a set-id bit exists");
        assert_eq!((meta.uid(), meta.gid()), (owner.uid, owner.gid), "a file belongs to someone else");
    }
}

#[test]
fn a_guarded_file_server_run_by_root_puts_no_device_set_id_bit_capability_or_stranger_on_the_host() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: the root half of this test needs root (the unprivileged half still runs)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    check(dir.path(), ShareOwner { uid: 0, gid: 0 }, None);
}

#[test]
fn a_guarded_file_server_run_by_a_normal_user_sets_no_set_id_bit_either() {
    // The owner is a normal user: a set-uid file of theirs would let any other
    // local user act as them.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), ShareOwner::invoking(), None);
        return;
    }
    let nobody = 65534;
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(nobody), Some(nobody)).unwrap();
    check(dir.path(), ShareOwner { uid: nobody, gid: nobody }, Some(nobody));
}

#[test]
fn the_probes_do_put_privilege_on_the_host_without_the_guard() {
    // Proof that the probes above are real: as root, unguarded, they succeed.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root to create device nodes");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let probes = probes(dir.path(), ShareOwner { uid: 0, gid: 0 });
    let answers = run_in_child(&probes, None, None);
    for (p, a) in probes.iter().zip(&answers) {
        if p.what.starts_with("mknod") || p.what.starts_with("chmod") || p.what.starts_with("open O_CREAT") {
            assert_eq!(*a, 0, "{} failed without the guard", p.what);
        }
    }
    let chr = std::fs::symlink_metadata(dir.path().join("chr")).unwrap();
    assert!(chr.file_type().is_char_device());
}
