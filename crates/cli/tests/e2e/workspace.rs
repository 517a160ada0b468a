//! The workspace: shared live at the same path, and nothing else of the host.

use std::os::unix::fs::MetadataExt;

use crate::harness::{moat, stderr};

#[test]
fn files_cross_both_ways_at_once() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("live");
    std::fs::write(ws.join("before.txt"), "from the host\n").unwrap();
    m.sandbox("live", &ws, &[]);
    let w = ws.display();

    assert_eq!(m.sh("live", &format!("cat '{w}/before.txt'")), "from the host\n");
    m.sh("live", &format!("echo from the guest > '{w}/guest.txt'"));
    assert_eq!(
        std::fs::read_to_string(ws.join("guest.txt")).unwrap(),
        "from the guest\n",
        "guest writes are on the host when exec returns"
    );

    std::fs::write(ws.join("later.txt"), "written while running\n").unwrap();
    assert_eq!(m.sh("live", &format!("cat '{w}/later.txt'")), "written while running\n");

    // Whatever user writes in the guest, even root, the host sees the host user's files;
    // inside, the workspace belongs to `agent`.
    m.sh("live", &format!("mkdir -p '{w}/sub/dir' && echo deep > '{w}/sub/dir/f'; sudo touch '{w}/by-root'; sudo chown 0:0 '{w}/by-root'"));
    assert_eq!(std::fs::read_to_string(ws.join("sub/dir/f")).unwrap(), "deep\n");
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    for f in ["guest.txt", "sub/dir/f", "by-root"] {
        let meta = std::fs::metadata(ws.join(f)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{f} on the host");
    }
    assert_eq!(m.sh("live", &format!("stat -c %u:%g '{w}/before.txt' '{w}/by-root'")), "1000:1000\n1000:1000\n");
    m.sh("live", &format!("rm '{w}/guest.txt'"));
    assert!(!ws.join("guest.txt").exists());
}

#[test]
fn nothing_outside_the_workspace_is_reachable() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("proj");
    let outside = m.workspace("outside");
    let secret = "host-secret-7f3a9c";
    std::fs::write(outside.join("secret.txt"), secret).unwrap();
    // A symlink the host user made, pointing out of the workspace.
    std::os::unix::fs::symlink(outside.join("secret.txt"), ws.join("host-link")).unwrap();
    m.sandbox("esc", &ws, &[]);
    let w = ws.display();
    let o = outside.display();

    // The parent folders are empty scaffolding: only the workspace is in them.
    let listing = m.sh("esc", &format!("ls -A '{w}/..'"));
    assert_eq!(listing, "proj\n", "the guest sees nothing beside the workspace");
    let attempts = [
        format!("cat '{o}/secret.txt'"),
        format!("cat '{w}/../outside/secret.txt'"),
        format!("cat '{w}/host-link'"),
        // Symlinks and hard links the guest plants (as root) resolve inside the guest.
        format!("sudo ln -s '{o}/secret.txt' '{w}/guest-link'; cat '{w}/guest-link'"),
        format!("sudo ln '{o}/secret.txt' '{w}/hard' && cat '{w}/hard'"),
        format!("cd '{w}' && cat ../../../../..{o}/secret.txt"),
    ];
    for a in &attempts {
        let out = m.run(&["exec", "esc", "sh", "-c", a]);
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(!all.contains(secret), "escape worked: {a}\n{all}");
    }
    // The planted symlink is, on the host, just a symlink: the host file is untouched.
    assert_eq!(std::fs::read_to_string(outside.join("secret.txt")).unwrap(), secret);
    assert!(!ws.join("hard").exists() || std::fs::read_to_string(ws.join("hard")).map(|s| s != secret).unwrap_or(true));
}

#[test]
fn extra_mounts_are_shared_and_read_only_holds_even_for_root() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("main");
    let data = m.workspace("data");
    let docs = m.workspace("docs");
    std::fs::write(data.join("in.txt"), "data\n").unwrap();
    std::fs::write(docs.join("ro.txt"), "read me\n").unwrap();
    let ro = format!("{}:ro", docs.display());
    m.sandbox("mounts", &ws, &[data.to_str().unwrap(), &ro]);

    assert_eq!(m.sh("mounts", &format!("cat '{}/in.txt'", data.display())), "data\n");
    m.sh("mounts", &format!("echo out > '{}/out.txt'", data.display()));
    assert_eq!(std::fs::read_to_string(data.join("out.txt")).unwrap(), "out\n");

    assert_eq!(m.sh("mounts", &format!("cat '{}/ro.txt'", docs.display())), "read me\n");
    let d = docs.display();
    let out = m.run(&[
        "exec",
        "-u",
        "root",
        "mounts",
        "sh",
        "-c",
        &format!("mount -o remount,rw '{d}' 2>/dev/null; echo x > '{d}/ro.txt' || echo x > '{d}/new.txt'"),
    ]);
    assert!(!out.status.success(), "writing to a read-only mount must fail");
    assert_eq!(std::fs::read_to_string(docs.join("ro.txt")).unwrap(), "read me\n");
    assert!(!docs.join("new.txt").exists());
}

#[test]
fn two_sandboxes_on_one_workspace_do_not_interfere() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("shared");
    m.sandbox("one", &ws, &[]);
    m.sandbox("two", &ws, &[]);
    let w = ws.display();
    m.sh("one", &format!("echo one > '{w}/from-one'; echo private > /tmp/mine"));
    assert_eq!(m.sh("two", &format!("cat '{w}/from-one'")), "one\n", "the workspace is shared");
    let out = m.run(&["exec", "two", "cat", "/tmp/mine"]);
    assert!(!out.status.success(), "each VM has its own filesystem");
    assert_eq!(m.sh("two", "hostname"), "two\n");

    m.ok(&["stop", "one"]);
    assert_eq!(m.status("one")["status"]["phase"], "stopped");
    assert_eq!(m.sh("two", &format!("cat '{w}/from-one'")), "one\n", "stopping one leaves two running");
}
