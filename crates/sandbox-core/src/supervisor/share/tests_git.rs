//! The shield, exercised exactly as virtiofsd gets it: a shell spawned under
//! the same namespace, guard and notifier tries each way of planting git
//! configuration in a real repository, and the ordinary writes a commit needs.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::*;

/// Runs each `(name, script)` in one `sh` under the guard for `share`,
/// becoming `runner` first; returns `name: exit code` per script.
fn attempt(share: &Share, runner: Option<ShareOwner>, attempts: &[(&str, &str)]) -> Vec<(String, i32)> {
    let mut script = String::from("cd \"$1\" || exit 99\n");
    for (name, cmd) in attempts {
        script += &format!("( {cmd} ) >/dev/null 2>&1; echo \"{name}:$?\"\n");
    }
    let mut c = Command::new("/bin/sh");
    c.args(["-c", &script, "sh"]).arg(&share.path);
    if let Some(r) = runner {
        // SAFETY: setgroups/setgid/setuid are plain system calls.
        unsafe {
            c.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(r.gid) != 0 || libc::setuid(r.uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Changing ids made /proc/self root's; a user who started as
                // themselves owns it, and must write its uid_map.
                libc::prctl(libc::PR_SET_DUMPABLE, 1);
                Ok(())
            });
        }
    }
    let me = runner.unwrap_or_else(ShareOwner::effective);
    let serve = guarded_as(&mut c, share, me).unwrap();
    c.stdout(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    serve.start().unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.rsplit_once(':').map(|(n, rc)| (n.to_string(), rc.parse().unwrap())))
        .collect()
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap().status.success();
    assert!(ok, "git {args:?}");
}

/// A repository as a user has it: a commit, a hook folder, a config.
fn repo(dir: &Path) {
    git(dir, &["init", "-q"]);
    std::fs::write(dir.join("a.txt"), "a\n").unwrap();
    git(dir, &["add", "a.txt"]);
    git(dir, &["-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "one"]);
    std::fs::create_dir_all(dir.join(".git/objects/info")).unwrap();
}

fn share(path: &Path, owner: ShareOwner) -> Share {
    Share { tag: "ws0".into(), path: path.to_path_buf(), read_only: false, owner }
}

/// Each attempt and whether it must succeed.
const IN_A_REPOSITORY: &[(&str, &str, bool)] = &[
    ("append to config", "echo '[core] fsmonitor = touch PWNED' >> .git/config", false),
    ("replace config", "echo x > .git/cfg && mv .git/cfg .git/config", false),
    ("remove config", "rm -f .git/config", false),
    ("write a hook", "echo 'touch PWNED' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit", false),
    ("remove the hooks folder", "rm -rf .git/hooks && test ! -e .git/hooks", false),
    ("plant commondir", "echo ../evil > .git/commondir", false),
    ("plant commondir as a symlink", "ln -s ../evil .git/commondir", false),
    ("plant commondir as a folder", "mkdir .git/commondir", false),
    ("plant commondir by rename", "echo ../evil > .git/x && mv .git/x .git/commondir", false),
    ("plant commondir by hard link", "echo ../evil > x2 && ln x2 .git/commondir", false),
    ("plant config.worktree", "echo x > .git/config.worktree", false),
    ("plant info/attributes", "echo '* filter=evil' > .git/info/attributes", false),
    ("plant alternates", "echo /tmp > .git/objects/info/alternates", false),
    ("move objects away", "mv .git/objects .git/objects.old", false),
    ("move objects/info away", "mv .git/objects/info .git/objects/info.old", false),
    ("plant a modules folder", "mkdir -p .git/modules/x", false),
    // What a commit needs keeps working.
    ("write the index", "echo x > .git/index.lock && mv .git/index.lock .git/index.new", true),
    ("write an object", "mkdir -p .git/objects/ab && echo x > .git/objects/ab/cd", true),
    ("write a ref", "echo 0000000000000000000000000000000000000000 > .git/refs/heads/new", true),
    (
        "write HEAD and logs",
        "echo 'ref: refs/heads/main' > .git/HEAD.lock && mv .git/HEAD.lock .git/HEAD2 && mkdir -p .git/logs",
        true,
    ),
    ("write the commit message", "echo msg > .git/COMMIT_EDITMSG", true),
    ("write the workspace", "echo w > w.txt && mkdir -p sub && echo s > sub/HEAD && mv w.txt w2.txt", true),
    // Last: destroying the repository's contents is the guest's right, replacing it is not.
    ("move the git folder away", "mv .git .git.old", false),
    ("replace .git with a gitfile", "rm -rf .git; echo 'gitdir: evil' > .git", false),
];

fn check(dir: &Path, runner: Option<ShareOwner>, owner: ShareOwner) {
    let attempts: Vec<(&str, &str)> = IN_A_REPOSITORY.iter().map(|(n, c, _)| (*n, *c)).collect();
    let answers = attempt(&share(dir, owner), runner, &attempts);
    assert_eq!(answers.len(), IN_A_REPOSITORY.len(), "{answers:?}");
    let wrong: Vec<String> = IN_A_REPOSITORY
        .iter()
        .zip(&answers)
        .filter(|((_, _, ok), (_, rc))| (*rc == 0) != *ok)
        .map(|((n, _, ok), (_, rc))| format!("{n}: exit {rc}, want {}", if *ok { "success" } else { "failure" }))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // On the host, without the namespace: the repository is intact.
    let config = std::fs::read_to_string(dir.join(".git/config")).unwrap();
    assert!(!config.contains("fsmonitor"), "{config}");
    for p in
        [".git/commondir", ".git/config.worktree", ".git/objects/info/alternates", ".git/hooks/pre-commit", "PWNED"]
    {
        assert!(!dir.join(p).exists(), "{p} exists");
    }
    assert!(dir.join(".git").is_dir() && dir.join(".git/config").is_file() && dir.join("w2.txt").is_file());
}

#[test]
fn the_guest_can_commit_but_not_plant_git_configuration_when_moat_runs_as_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: this half needs root (the normal-user half runs everywhere)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path());
    check(dir.path(), None, ShareOwner { uid: 0, gid: 0 });
}

#[test]
fn the_guest_can_commit_but_not_plant_git_configuration_when_moat_runs_as_a_normal_user() {
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path());
    // SAFETY: geteuid has no preconditions.
    let runner = if unsafe { libc::geteuid() } == 0 {
        let nobody = ShareOwner { uid: 65534, gid: 65534 };
        let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(dir.path()).status().unwrap();
        assert!(chown.success());
        Some(nobody)
    } else {
        None
    };
    let owner = runner.unwrap_or_else(ShareOwner::effective);
    check(dir.path(), runner, owner);
}

#[test]
fn a_folder_that_is_no_repository_cannot_become_one() {
    let dir = tempfile::tempdir().unwrap();
    let attempts = [
        ("git init", "git init -q ."),
        ("mkdir .git", "mkdir .git"),
        ("gitfile", "echo 'gitdir: x' > .git"),
        ("bare repository", "echo 'ref: refs/heads/main' > HEAD && mkdir -p objects refs"),
        ("a folder below may be one", "mkdir sub && git init -q sub"),
    ];
    let answers = attempt(&share(dir.path(), ShareOwner::invoking()), None, &attempts);
    let codes: Vec<bool> = answers.iter().map(|(_, rc)| *rc == 0).collect();
    assert_eq!(codes, [false, false, false, false, true], "{answers:?}");
    assert!(!dir.path().join(".git").exists() && !dir.path().join("HEAD").exists());
}
