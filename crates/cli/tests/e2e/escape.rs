//! The escape suite: a root guest tries, one probe at a time, to get anything
//! out of its VM that a sandbox promises it cannot — privilege on the host
//! through the shared folder, a way around the policy proxy, a channel the host
//! did not open. Each probe prints one line, `HELD <name>` or `BROKEN <name>:
//! why`, and the test fails if any broke.
//!
//! Probes run as root inside the guest (`moat exec -u root`); what a probe
//! proves is checked on the host. Network probes only ever reach this
//! machine's loopback, through names mapped to 127.0.0.1 in `$MOAT_HOME/hosts`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::egress::Upstream;
use crate::harness::{moat, stdout, Moat};

/// What every probe gets: the installation, the sandbox, its workspace.
struct Ctx<'a> {
    m: &'a Moat,
    name: &'a str,
    ws: PathBuf,
    owner: (u32, u32),
    /// The workspace repository's `.git/config` before any probe.
    git_config: String,
}

impl Ctx<'_> {
    /// Runs `script` as root in the guest; returns (exit code, stdout+stderr).
    fn root(&self, script: &str) -> (i32, String) {
        let out = self.m.run(&["exec", "-u", "root", "-w", "/", self.name, "bash", "-c", script]);
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    fn host(&self, rel: &str) -> PathBuf {
        self.ws.join(rel)
    }
}

type Check = Box<dyn Fn(&Ctx) -> Result<(), String>>;

struct Probe {
    name: &'static str,
    check: Check,
}

fn probe(name: &'static str, check: impl Fn(&Ctx) -> Result<(), String> + 'static) -> Probe {
    Probe { name, check: Box::new(check) }
}

/// `rel` on the host, if it exists, must be an ordinary file of the owner's
/// without set-id bits; a missing file holds too (the guest was refused).
fn ordinary_or_absent(c: &Ctx, rel: &str) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(c.host(rel)) else { return Ok(()) };
    let t = meta.file_type();
    if t.is_block_device() || t.is_char_device() {
        return Err(format!("{rel} is a device node on the host (rdev {:#x})", meta.rdev()));
    }
    if meta.mode() & 0o6000 != 0 {
        return Err(format!("{rel} has mode {:o} on the host", meta.mode()));
    }
    if (meta.uid(), meta.gid()) != c.owner {
        return Err(format!("{rel} belongs to {}:{} on the host, not {:?}", meta.uid(), meta.gid(), c.owner));
    }
    Ok(())
}

/// Runs `py` (python3 source) as root in the guest with `W` set to the workspace.
fn py(c: &Ctx, code: &str) -> (i32, String) {
    let w = c.ws.display();
    c.root(&format!("cd '{w}' && python3 -c '{}'", code.replace('\'', "'\\''")))
}

fn share_probes() -> Vec<Probe> {
    vec![
        probe("share: mknod of the host's disk (block 254:0)", |c| {
            c.root(&format!("mknod '{}/disk' b 254 0", c.ws.display()));
            ordinary_or_absent(c, "disk")
        }),
        probe("share: mknod of /dev/mem (char 1:1)", |c| {
            c.root(&format!("mknod '{}/mem' c 1 1 && chmod 666 '{}/mem'", c.ws.display(), c.ws.display()));
            ordinary_or_absent(c, "mem")
        }),
        probe("share: mknod of a char device through python os.mknod", |c| {
            py(c, "import os; os.mknod('kmsg', 0o20666, os.makedev(1, 11))");
            ordinary_or_absent(c, "kmsg")
        }),
        probe("share: a FIFO carrying a device number stays a plain FIFO", |c| {
            py(c, "import os, stat; os.mknod('fifo', stat.S_IFIFO | 0o666, os.makedev(254, 0))");
            ordinary_or_absent(c, "fifo")?;
            match std::fs::symlink_metadata(c.host("fifo")) {
                Ok(m) if m.file_type().is_fifo() && m.rdev() == 0 => Ok(()),
                Ok(m) => Err(format!("fifo has type {:?} rdev {:#x}", m.file_type(), m.rdev())),
                Err(_) => Ok(()),
            }
        }),
        probe("share: setuid-root copy of a shell (chmod 4755)", |c| {
            let w = c.ws.display();
            c.root(&format!("cp /bin/bash '{w}/rootsh' && chown 0:0 '{w}/rootsh' && chmod 4755 '{w}/rootsh'"));
            ordinary_or_absent(c, "rootsh")
        }),
        probe("share: setgid bit (chmod 2755)", |c| {
            let w = c.ws.display();
            c.root(&format!("cp /bin/true '{w}/sg' ; chmod 2755 '{w}/sg'"));
            ordinary_or_absent(c, "sg")
        }),
        probe("share: setgid folder (chmod g+s)", |c| {
            let w = c.ws.display();
            c.root(&format!("mkdir -p '{w}/sgdir' && chmod 2777 '{w}/sgdir'"));
            ordinary_or_absent(c, "sgdir")
        }),
        probe("share: a file created with mode 4755 (open O_CREAT)", |c| {
            py(c, "import os; os.close(os.open('created', os.O_CREAT | os.O_WRONLY, 0o4755))");
            ordinary_or_absent(c, "created")
        }),
        probe("share: a regular file made by mknod with mode 6755", |c| {
            py(c, "import os, stat; os.mknod('mknodreg', stat.S_IFREG | 0o6755)");
            ordinary_or_absent(c, "mknodreg")
        }),
        probe("share: an anonymous O_TMPFILE linked in with mode 4755", |c| {
            py(
                c,
                "import os; fd = os.open('.', os.O_TMPFILE | os.O_WRONLY, 0o4755); \
                 os.link('/proc/self/fd/%d' % fd, 'tmpfile', follow_symlinks=True)",
            );
            ordinary_or_absent(c, "tmpfile")
        }),
        probe("share: a file capability (security.capability xattr)", |c| {
            let w = c.ws.display();
            c.root(&format!("cp /bin/true '{w}/capped'"));
            // VFS_CAP_REVISION_2 with CAP_SYS_ADMIN (21) permitted and effective.
            py(c, "import os; os.setxattr('capped', 'security.capability', bytes([1,0,0,2, 0,0,32,0, 0,0,0,0, 0,0,0,0, 0,0,0,0]))");
            if xattr(&c.host("capped"), "security.capability").is_some() {
                return Err("capped carries security.capability on the host".into());
            }
            ordinary_or_absent(c, "capped")
        }),
        probe("share: trusted.* and user.* extended attributes", |c| {
            let w = c.ws.display();
            c.root(&format!("echo x > '{w}/attrs'"));
            py(c, "import os\nfor n in ('trusted.overlay.opaque', 'user.moat'):\n  try: os.setxattr('attrs', n, b'y')\n  except OSError: pass");
            for n in ["trusted.overlay.opaque", "user.moat"] {
                if xattr(&c.host("attrs"), n).is_some() {
                    return Err(format!("attrs carries {n} on the host"));
                }
            }
            Ok(())
        }),
        probe("share: chown to root", |c| {
            let w = c.ws.display();
            c.root(&format!("touch '{w}/byroot' && chown 0:0 '{w}/byroot'"));
            ordinary_or_absent(c, "byroot")
        }),
        probe("share: chown to an arbitrary host user", |c| {
            let w = c.ws.display();
            c.root(&format!("touch '{w}/stranger' && chown 4242:4242 '{w}/stranger'"));
            ordinary_or_absent(c, "stranger")
        }),
        probe("share: files of every guest user belong to the owner", |c| {
            let w = c.ws.display();
            c.root(&format!("su -s /bin/sh nobody -c 'echo n > /tmp/n'; install -o nobody -m 644 /tmp/n '{w}/bynobody'; sudo -u agent touch '{w}/byagent'"));
            ordinary_or_absent(c, "bynobody")?;
            ordinary_or_absent(c, "byagent")
        }),
        probe("share: a guest write to the owner's set-uid file clears the bit", |c| {
            // The owner's own set-uid program in the workspace: after the guest
            // rewrites it, it must not run the guest's code with set-uid.
            let f = c.host("hostsuid");
            std::fs::write(&f, b"#!/bin/sh\n").unwrap();
            std::os::unix::fs::chown(&f, Some(c.owner.0), Some(c.owner.1)).unwrap();
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
            c.root(&format!("echo 'echo pwned' >> '{}'", f.display()));
            let meta = std::fs::metadata(&f).unwrap();
            let content = std::fs::read_to_string(&f).unwrap_or_default();
            if content.contains("pwned") && meta.mode() & 0o4000 != 0 {
                return Err(format!("rewritten by the guest and still mode {:o}", meta.mode()));
            }
            Ok(())
        }),
        probe("share: immutable or append-only flags (chattr)", |c| {
            let w = c.ws.display();
            c.root(&format!("echo x > '{w}/flags'"));
            py(c, "import fcntl, struct\nf = open('flags')\ntry: fcntl.ioctl(f, 0x40086602, struct.pack('l', 0x30))\nexcept OSError: pass");
            match inode_flags(&c.host("flags")) {
                Some(flags) if flags & 0x30 != 0 => Err(format!("flags has inode flags {flags:#x} on the host")),
                _ => Ok(()),
            }
        }),
        probe("share: a hard link to a file outside the share", |c| {
            c.root(&format!("ln /etc/shadow '{}/shadow'", c.ws.display()));
            match std::fs::read_to_string(c.host("shadow")) {
                Ok(s) if s == std::fs::read_to_string("/etc/shadow").unwrap_or_default() => {
                    Err("the host's /etc/shadow is linked into the workspace".into())
                }
                _ => ordinary_or_absent(c, "shadow"),
            }
        }),
        probe("share: the guest sees nothing beside the workspace", |c| {
            let (_, out) = c.root(&format!("ls -A '{}/..'", c.ws.display()));
            let name = c.ws.file_name().unwrap().to_string_lossy().into_owned();
            if out.trim() == name {
                Ok(())
            } else {
                Err(format!("parent lists {out:?}"))
            }
        }),
        probe("share: every file the guest left behind is ordinary", |c| {
            let mut bad = Vec::new();
            walk(&c.ws, &mut |p, meta| {
                let t = meta.file_type();
                if t.is_block_device() || t.is_char_device() || meta.mode() & 0o6000 != 0 {
                    bad.push(format!("{} mode {:o}", p.display(), meta.mode()));
                }
                if (meta.uid(), meta.gid()) != c.owner {
                    bad.push(format!("{} owned by {}:{}", p.display(), meta.uid(), meta.gid()));
                }
            });
            if bad.is_empty() {
                Ok(())
            } else {
                Err(bad.join(", "))
            }
        }),
    ]
}

/// The user's plain git on the host, in the workspace: status, diff, a commit
/// of everything, a checkout there and back. Each call may take 60 s at most
/// (an alternates FIFO would hang it; 20 s). Then the probe's `marker`, which its
/// planted program would create, may not exist.
fn host_git_runs_nothing(c: &Ctx, marker: &Path) -> Result<(), String> {
    let home = tempfile::tempdir().unwrap();
    let branch = format!("probe-{}", marker.file_name().unwrap().to_string_lossy());
    let steps: [&[&str]; 7] = [
        &["status"],
        &["log", "-p", "-3"],
        &["diff"],
        &["add", "-A"],
        &["commit", "-q", "--allow-empty", "-m", "host commit"],
        &["checkout", "-q", "-B", &branch],
        &["checkout", "-q", "-"],
    ];
    for args in steps {
        let out = std::process::Command::new("timeout")
            .arg("20")
            .arg("git")
            .args(args)
            .current_dir(&c.ws)
            .env("HOME", home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env("GIT_AUTHOR_NAME", "u")
            .env("GIT_AUTHOR_EMAIL", "u@x")
            .env("GIT_COMMITTER_NAME", "u")
            .env("GIT_COMMITTER_EMAIL", "u@x")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        if out.status.code() == Some(124) {
            return Err(format!("host `git {}` hung", args.join(" ")));
        }
    }
    if marker.exists() {
        Err(format!("host git ran the guest's program: {} exists", marker.display()))
    } else {
        Ok(())
    }
}

/// Undoes on the host whatever a git probe managed to plant, so that each
/// probe meets the repository as it was (with the shield on, nothing is).
fn reset_repo(c: &Ctx) {
    let git = c.ws.join(".git");
    if !git.is_dir() && c.ws.join(".git-old").is_dir() {
        let _ = std::fs::remove_file(&git);
        let _ = std::fs::rename(c.ws.join(".git-old"), &git);
    }
    let _ = std::fs::write(git.join("config"), &c.git_config);
    for f in ["commondir", "config.worktree", "objects/info/alternates", "info/attributes"] {
        let _ = std::fs::remove_file(git.join(f));
    }
    let _ = std::fs::remove_dir_all(git.join("modules"));
    if let Ok(hooks) = std::fs::read_dir(git.join("hooks")) {
        for h in hooks.flatten().filter(|h| !h.file_name().to_string_lossy().ends_with(".sample")) {
            let _ = std::fs::remove_file(h.path());
        }
    }
    // The promisor probes delete a blob the repository needs: put it back;
    // then the first commit, and nothing else, in the index and worktree.
    let restore = "echo a | git hash-object -w --stdin >/dev/null; rm -f .git/objects/pack/*.promisor; \
                   git reset -q --hard first; git clean -qfdx";
    let _ = std::process::Command::new("sh").args(["-c", restore]).current_dir(&c.ws).status();
    for f in [".gitmodules", ".gitattributes"] {
        let _ = std::fs::remove_file(c.ws.join(f));
    }
}

/// A git probe: the guest (root) runs `plant` with `$W` the workspace and `$M`
/// a marker path its program would create; then the user's git runs on the host.
fn git_probe(name: &'static str, plant: &'static str) -> Probe {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    probe(name, move |c| {
        let marker = c.ws.join(format!("PWNED-{n}"));
        // The host may have undone the last probe's plants: drop what the
        // guest cached of them first.
        c.root(&format!(
            "echo 3 > /proc/sys/vm/drop_caches; W='{}'; M='{}'; {plant}",
            c.ws.display(),
            marker.display()
        ));
        let verdict = host_git_runs_nothing(c, &marker);
        reset_repo(c);
        verdict
    })
}

fn git_probes() -> Vec<Probe> {
    vec![
        git_probe(
            "git: hooks (post-checkout, pre-commit, reference-transaction, …)",
            r#"for h in post-checkout pre-commit post-commit reference-transaction post-index-change pre-auto-gc; do
                 printf '#!/bin/sh\ntouch "%s"\n' "$M" > "$W/.git/hooks/$h"; chmod +x "$W/.git/hooks/$h"; done"#,
        ),
        git_probe(
            "git: core.fsmonitor appended to .git/config",
            r#"printf '[core]\n\tfsmonitor = touch "%s"\n' "$M" >> "$W/.git/config""#,
        ),
        git_probe(
            "git: .git/config replaced by a rename",
            r#"cp "$W/.git/config" "$W/.git/c2"; printf '[core]\n\tfsmonitor = touch "%s"\n' "$M" >> "$W/.git/c2"; mv -f "$W/.git/c2" "$W/.git/config""#,
        ),
        git_probe(
            "git: include.path to a file of the worktree",
            r#"printf '[core]\n\tfsmonitor = touch "%s"\n' "$M" > "$W/evil.cfg"; printf '[include]\n\tpath = ../evil.cfg\n[includeIf "gitdir:/"]\n\tpath = ../evil.cfg\n' >> "$W/.git/config""#,
        ),
        git_probe(
            "git: core.hooksPath to a folder of the worktree",
            r#"mkdir -p "$W/evilhooks"; printf '#!/bin/sh\ntouch "%s"\n' "$M" > "$W/evilhooks/post-checkout"; chmod +x "$W/evilhooks/post-checkout"; printf '[core]\n\thooksPath = evilhooks\n' >> "$W/.git/config""#,
        ),
        git_probe(
            "git: commondir to a git folder the guest made",
            r#"cp -r "$W/.git" "$W/evilgit"; printf '[core]\n\tfsmonitor = touch "%s"\n' "$M" >> "$W/evilgit/config"; echo ../evilgit > "$W/.git/commondir""#,
        ),
        git_probe(
            "git: .git swapped for a gitfile to a git folder the guest made",
            r#"cp -r "$W/.git" "$W/evilgit2"; printf '[core]\n\tfsmonitor = touch "%s"\n' "$M" >> "$W/evilgit2/config"; mv "$W/.git" "$W/.git-old" && echo 'gitdir: evilgit2' > "$W/.git""#,
        ),
        git_probe(
            "git: config.worktree with extensions.worktreeConfig",
            r#"printf '[core]\n\trepositoryformatversion = 1\n[extensions]\n\tworktreeConfig = true\n' >> "$W/.git/config"; printf '[core]\n\tfsmonitor = touch "%s"\n' "$M" > "$W/.git/config.worktree""#,
        ),
        // A FIFO as the alternates file itself: git would block reading it.
        git_probe("git: alternates that are a FIFO", r#"mkfifo "$W/.git/objects/info/alternates""#),
        probe("git: alternates to another object store", |c| {
            // An object only the guest's store has: visible to host git only
            // if it followed the planted alternates.
            let w = c.ws.display();
            let (_, out) = c.root(&format!(
                "cd '{w}' && git init -q other && echo only-in-other | git -c safe.directory=* --git-dir=other/.git hash-object -w --stdin && \\
                 echo '{w}/other/.git/objects' > .git/objects/info/alternates"
            ));
            let sha = out.lines().find(|l| l.len() == 40).unwrap_or_default().to_string();
            let seen = std::process::Command::new("git")
                .args(["cat-file", "-e", &sha])
                .current_dir(&c.ws)
                .status()
                .unwrap()
                .success();
            if sha.is_empty() || !seen {
                Ok(())
            } else {
                Err(format!("host git reads {sha} from the guest's object store"))
            }
        }),
        git_probe(
            "git: a promisor remote whose uploadpack is a program (lazy fetch of an object the guest deleted)",
            r#"printf '[core]\n\trepositoryformatversion = 1\n[remote "origin"]\n\turl = %s\n\tpromisor = true\n\tuploadpack = touch "%s"; git-upload-pack\n[extensions]\n\tpartialClone = origin\n' "$W" "$M" >> "$W/.git/config";
               b=$(git -c safe.directory=* -C "$W" rev-parse HEAD:a.txt); rm -f "$W/.git/objects/${b:0:2}/${b:2}""#,
        ),
        git_probe(
            "git: a promisor remote with an ext:: URL",
            r#"printf '[core]\n\trepositoryformatversion = 1\n[remote "origin"]\n\turl = ext::sh -c touch%% %s\n\tpromisor = true\n[protocol]\n\tallow = always\n[extensions]\n\tpartialClone = origin\n' "$M" >> "$W/.git/config";
               b=$(git -c safe.directory=* -C "$W" rev-parse HEAD:a.txt); rm -f "$W/.git/objects/${b:0:2}/${b:2}""#,
        ),
        git_probe(
            "git: gpg.program with commit.gpgSign",
            r#"printf '#!/bin/sh\ntouch "%s"\nexit 1\n' "$M" > "$W/g.sh"; chmod +x "$W/g.sh"; printf '[commit]\n\tgpgSign = true\n[gpg]\n\tprogram = %s/g.sh\n' "$W" >> "$W/.git/config""#,
        ),
        git_probe(
            "git: a filter driver picked by info/attributes and .gitattributes",
            r#"echo '* filter=evil diff=evil' > "$W/.git/info/attributes"; echo '* filter=evil diff=evil merge=evil' > "$W/.gitattributes"; printf '[filter "evil"]\n\tclean = touch %s\n\tsmudge = touch %s\n' "$M" "$M" >> "$W/.git/config""#,
        ),
        // A registered submodule (gitlink in the index, .gitmodules) whose git
        // folder under .git/modules has a program in its config: host `git
        // status` would recurse into it.
        git_probe(
            "git: a submodule whose git folder the guest made",
            r#"cd "$W" && mkdir -p .git/modules && cp -r .git .git/modules/sub 2>/dev/null; mkdir -p sub;
               printf '[core]\n\tfsmonitor = touch "%s"\n\tworktree = ../../../sub\n' "$M" >> .git/modules/sub/config;
               echo 'gitdir: ../.git/modules/sub' > sub/.git; printf '[submodule "sub"]\n\tpath = sub\n\turl = ./sub\n' > .gitmodules;
               git -c safe.directory=* update-index --add --cacheinfo "160000,$(git -c safe.directory=* rev-parse HEAD),sub""#,
        ),
        git_probe(
            "git: diff.external",
            r#"printf '#!/bin/sh\ntouch "%s"\n' "$M" > "$W/d.sh"; chmod +x "$W/d.sh"; echo change >> "$W/a.txt"; printf '[diff]\n\texternal = %s/d.sh\n' "$W" >> "$W/.git/config""#,
        ),
        probe("git: the agent still commits in live mode", |c| {
            let w = c.ws.display();
            let (_, said) = c.root(&format!(
                "cd '{w}' && sudo -u agent git -c user.name=agent -c user.email=a@x commit -q --allow-empty -m 'agent commit'"
            ));
            let out = std::process::Command::new("git")
                .args(["log", "-1", "--format=%s"])
                .current_dir(&c.ws)
                .output()
                .unwrap();
            let subject = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if subject == "agent commit" {
                Ok(())
            } else {
                Err(format!("the host's last commit is {subject:?}; the agent's commit said: {said}"))
            }
        }),
    ]
}

fn guest_probes() -> Vec<Probe> {
    vec![
        probe("vm: the base image is read-only to the guest", |c| {
            let (code, out) = c.root("dd if=/dev/zero of=/dev/vda bs=512 count=1 seek=64 conv=notrunc,fsync 2>&1");
            if code == 0 {
                return Err(format!("a write to the shared base image succeeded: {out}"));
            }
            Ok(())
        }),
        probe("vm: no network interface backed by a device", |c| {
            // Virtual ones (lo, moat0, the kernel's dummy0/sit0, docker0) have no
            // `device` link; anything a VMM could hand the guest would.
            let (_, out) = c.root("for n in /sys/class/net/*; do [ -e \"$n/device\" ] && echo \"$n\"; done; true");
            if out.trim().is_empty() {
                Ok(())
            } else {
                Err(format!("network devices: {out}"))
            }
        }),
        probe("vm: no virtio-net or other PCI device to the host", |c| {
            let (_, out) = c.root("ls /sys/bus/pci/devices 2>/dev/null | wc -l; grep -lx 0x0001 /sys/bus/virtio/devices/*/device 2>/dev/null");
            let first = out.lines().next().unwrap_or("0").trim().to_string();
            if first == "0" && out.lines().count() == 1 {
                Ok(())
            } else {
                Err(format!("devices: {out}"))
            }
        }),
    ]
}

fn network_probes(up_port: u16) -> Vec<Probe> {
    let silent = |c: &Ctx, script: String, what: &'static str| -> Result<(), String> {
        let (_, out) = c.root(&script);
        if out.contains("hello from upstream") {
            Err(format!("{what} reached the host service: {out}"))
        } else {
            Ok(())
        }
    };
    let p = up_port;
    vec![
        probe("net: a name no rule allows gets a 403", move |c| {
            let (_, out) = c.root(&format!("curl -s -w '%{{http_code}}' -o /dev/null http://denied.test:{p}/"));
            if out.trim() == "403" {
                Ok(())
            } else {
                Err(format!("got {out}"))
            }
        }),
        probe("net: ignoring the proxy variables", move |c| {
            silent(c, format!("curl -sS --noproxy '*' --max-time 10 http://denied.test:{p}/"), "curl --noproxy")
        }),
        probe("net: a denied name does not resolve", |c| {
            let (code, out) = c.root("getent hosts denied.test");
            if code == 2 {
                Ok(())
            } else {
                Err(format!("resolved: {out}"))
            }
        }),
        probe("net: the host's localhost by name, through the gateway", move |c| {
            silent(
                c,
                format!(
                    "curl -s --max-time 10 --noproxy '' -x http://gateway.moat.internal:3128 http://localhost:{p}/"
                ),
                "localhost via the proxy",
            )
        }),
        probe("net: the host's localhost by address, through the gateway", move |c| {
            silent(
                c,
                format!(
                    "curl -s --max-time 10 --noproxy '' -x http://gateway.moat.internal:3128 http://127.0.0.1:{p}/"
                ),
                "127.0.0.1 via the proxy",
            )
        }),
        probe("net: the host as host.moat.internal without a rule", move |c| {
            silent(c, format!("curl -s --max-time 10 http://host.moat.internal:{p}/"), "host.moat.internal")
        }),
        probe("net: allow-all does not open names that resolve to loopback", move |c| {
            silent(c, format!("curl -s --max-time 10 http://metadata.test:{p}/"), "a ** name resolving to loopback")
        }),
        probe("net: loopback spelled in decimal, hex and IPv6-mapped forms", move |c| {
            let mut script = String::new();
            for a in ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]", "[::1]", "0.0.0.0"] {
                script += &format!(
                    "curl -s --max-time 10 --noproxy '' -x http://gateway.moat.internal:3128 http://{a}:{p}/; "
                );
            }
            silent(c, script, "a spelling of loopback")
        }),
        probe("net: CONNECT to the host's loopback", move |c| {
            silent(
                c,
                format!(
                    "curl -s --max-time 10 -p --noproxy '' -x http://gateway.moat.internal:3128 http://127.0.0.1:{p}/"
                ),
                "a CONNECT tunnel",
            )
        }),
        probe("net: raw TCP to an address no name maps to", |c| {
            let (_, out) =
                c.root("exec 3<>/dev/tcp/198.18.255.254/9 || exit 0; echo hi >&3; timeout 5 cat <&3; echo \"read:$?\"");
            if out.trim().is_empty() || out.contains("read:0") {
                Ok(())
            } else {
                Err(format!("answered: {out}"))
            }
        }),
        probe("net: guest vsock to host ports nobody opened", |c| {
            let code = "import socket\nok = []\nfor port in (22, 1024, 1025, 2375, 8080, 3130):\n  s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\n  s.settimeout(5)\n  try:\n    s.connect((2, port)); ok.append(port)\n  except OSError: pass\nprint('open', ok)";
            let (_, out) = py(c, code);
            if out.contains("open []") {
                Ok(())
            } else {
                Err(out)
            }
        }),
        probe("net: the boot config port carries no private key", |c| {
            let code = "import socket\ns = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\ns.settimeout(10)\ns.connect((2, 1026))\nd = b''\nwhile True:\n  b = s.recv(65536)\n  if not b: break\n  d += b\nprint(len(d), b'PRIVATE KEY' in d)";
            let (_, out) = py(c, code);
            if out.contains(" False") {
                Ok(())
            } else {
                Err(out)
            }
        }),
        probe("net: root flushes the redirect and connects directly", move |c| {
            silent(
                c,
                format!("nft flush ruleset; curl -sS --noproxy '*' --max-time 5 http://198.18.0.1:{p}/; curl -sS --max-time 5 --noproxy '*' http://host.moat.internal:{p}/"),
                "a direct connection",
            )
        }),
    ]
}

#[test]
fn a_root_guest_breaks_none_of_the_promises() {
    let Some(m) = moat() else { return };
    let up = Upstream::start();
    // denied.test is in no rule; metadata.test only matches `**`.
    std::fs::write(m.home().join("hosts"), "127.0.0.1 denied.test metadata.test\n").unwrap();
    m.ok(&["policy", "preset", "allow-all"]);
    m.ok(&["policy", "deny", "network", "denied.test"]);
    let ws = m.workspace("escape");
    // A repository, as most workspaces are: the git probes plant in its `.git`.
    std::fs::write(ws.join("a.txt"), "a\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "a.txt"],
        &["-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "-m", "first"],
        &["tag", "first"],
    ] {
        assert!(std::process::Command::new("git").args(args).current_dir(&ws).status().unwrap().success());
    }
    // The sandbox is asked for by this process's user, not someone behind sudo.
    let mut create = m.cmd();
    create.env_remove("SUDO_UID").env_remove("SUDO_GID");
    let out = create
        .args(["create", "--name", "esc", "-m", "1g", "--cpus", "1", "shell", ws.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "create: {}", String::from_utf8_lossy(&out.stderr));
    m.ok(&["start", "esc"]);
    // SAFETY: geteuid/getegid have no preconditions.
    let owner = unsafe { (libc::geteuid(), libc::getegid()) };
    let git_config = std::fs::read_to_string(ws.join(".git/config")).unwrap();
    let ctx = Ctx { m: &m, name: "esc", ws, owner, git_config };

    let probes: Vec<Probe> =
        share_probes().into_iter().chain(git_probes()).chain(guest_probes()).chain(network_probes(up.port)).collect();
    let mut broken = Vec::new();
    for p in &probes {
        match (p.check)(&ctx) {
            Ok(()) => println!("HELD   {}", p.name),
            Err(why) => {
                println!("BROKEN {}: {why}", p.name);
                broken.push(p.name);
            }
        }
    }
    println!("{} probes, {} broken", probes.len(), broken.len());
    let reached: Vec<String> = up.seen();
    assert!(reached.is_empty(), "the host service was reached: {reached:?}");
    assert!(broken.is_empty(), "broken: {broken:?}");
}

#[test]
fn with_sudo_the_shared_files_belong_to_the_user_behind_it() {
    let Some(m) = moat() else { return };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: sudo's hand-over only applies to a Moat run as root");
        return;
    }
    let ws = m.workspace("sudo");
    // The folder of the user behind sudo: the guest writes with that user's rights.
    std::os::unix::fs::chown(&ws, Some(4321), Some(4322)).unwrap();
    let mut create = m.cmd();
    create.env("SUDO_UID", "4321").env("SUDO_GID", "4322");
    let out = create
        .args(["create", "--name", "sudo", "-m", "1g", "--cpus", "1", "shell", ws.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "create: {}", String::from_utf8_lossy(&out.stderr));
    m.ok(&["start", "sudo"]);
    let w = ws.display();
    m.ok(&["exec", "-u", "root", "sudo", "sh", "-c", &format!("echo x > '{w}/mine'; chown 0:0 '{w}/mine'")]);
    let meta = std::fs::metadata(ws.join("mine")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322), "owned by the user behind sudo, not root");
    let inside = m.ok(&["exec", "sudo", "stat", "-c", "%u:%g", &format!("{w}/mine")]);
    assert_eq!(inside, "1000:1000\n", "inside, the workspace still belongs to agent");
}

/// An extended attribute's value on the host, if set.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

/// The inode flags (`FS_IOC_GETFLAGS`) of a regular file on the host.
fn inode_flags(path: &Path) -> Option<libc::c_long> {
    let f = std::fs::File::open(path).ok()?;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), 0x80086601, &mut flags) };
    (rc == 0).then_some(flags)
}

/// Visits every entry under `dir` without following symlinks.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &std::fs::Metadata)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        visit(&p, &meta);
        if meta.is_dir() {
            walk(&p, visit);
        }
    }
}

#[test]
fn a_live_folder_that_is_no_repository_cannot_become_one_and_run_says_so() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("plain");
    let w = ws.to_str().unwrap();
    let out = m.run(&["run", "--name", "plain", "-m", "1g", "--cpus", "1", "shell", w, "--", "git", "init", "-q", w]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "git init at the root of a live share must fail: {err}");
    assert!(err.contains("is not a git repository") && err.contains("git init"), "moat says why first: {err}");
    assert!(!ws.join(".git").exists(), "no repository appeared on the host");
    // Below the root, the agent may make repositories of its own.
    let sub = format!("{w}/sub");
    m.ok(&["exec", "plain", "sh", "-c", &format!("mkdir -p '{sub}' && git init -q '{sub}'")]);
    assert!(ws.join("sub/.git").is_dir());
}
