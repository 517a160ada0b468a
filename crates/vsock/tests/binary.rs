//! The `moat-vsock` binary as the supervisor runs it: a vhost-user frontend (a
//! stand-in for QEMU) reads the guest CID, and the process ends by itself when
//! the frontend goes, or on SIGTERM, removing its sockets.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

struct Backend {
    child: Child,
    socket: PathBuf,
    uds: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(cid: u64) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let (socket, uds) = (dir.path().join("backend.sock"), dir.path().join("vsock.sock"));
    let child = Command::new(env!("CARGO_BIN_EXE_moat-vsock"))
        .arg("--guest-cid")
        .arg(cid.to_string())
        .arg("--socket")
        .arg(&socket)
        .arg("--uds-path")
        .arg(&uds)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the vhost-user socket never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(uds.exists(), "the hybrid socket exists before the frontend may connect");
    Backend { child, socket, uds, _dir: dir }
}

fn exits_soon(b: &mut Backend) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = b.child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = b.child.kill();
            panic!("moat-vsock kept running");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn gone(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_err()
}

#[test]
fn a_frontend_reads_the_guest_cid_and_its_disconnect_ends_the_process() {
    let mut b = start(42);
    let mut fe = Frontend::connect(&b.socket, 3).unwrap();
    fe.set_owner().unwrap();
    let features = fe.get_features().unwrap();
    let protocol = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    assert_ne!(features & protocol, 0, "QEMU needs protocol features for GET_CONFIG");
    fe.set_features(features).unwrap();
    let offered = fe.get_protocol_features().unwrap();
    assert!(offered.contains(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ));
    fe.set_protocol_features(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ).unwrap();
    assert_eq!(fe.get_queue_num().unwrap(), 3, "rx, tx, event");
    let (_, config) = fe.get_config(0, 8, VhostUserConfigFlags::empty(), &[0u8; 8]).unwrap();
    assert_eq!(config, 42u64.to_le_bytes(), "virtio_vsock_config.guest_cid");
    drop(fe);
    assert!(exits_soon(&mut b).success());
    assert!(gone(&b.socket) && gone(&b.uds));
}

#[test]
fn sigterm_ends_the_process_and_removes_its_sockets() {
    let mut b = start(3);
    kill(Pid::from_raw(b.child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(exits_soon(&mut b).success());
    assert!(gone(&b.socket) && gone(&b.uds));
}

#[test]
fn reserved_cids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_moat-vsock"))
        .args(["--guest-cid", "2", "--socket"])
        .arg(dir.path().join("b.sock"))
        .arg("--uds-path")
        .arg(dir.path().join("v.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved"), "{}", String::from_utf8_lossy(&out.stderr));
}
