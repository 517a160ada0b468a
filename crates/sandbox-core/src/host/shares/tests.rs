use super::*;

/// A temp tree: `root/{home/{moat,proj}, bin, elsewhere}` with `home/moat` protected
/// as Moat's home, `bin` as a program folder, `home` as the user's home.
struct Tree {
    dir: tempfile::TempDir,
    protected: ProtectedDirs,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        for d in ["home/moat/sandboxes/abc/workspace", "home/proj", "bin", "elsewhere"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let mut protected = ProtectedDirs::new();
        protected.protect(&dir.path().join("home/moat"), Guarded::MoatHome);
        protected.protect_program(&dir.path().join("bin/qemu-system-x86_64"), "qemu-system-x86_64");
        protected.protect_home(&dir.path().join("home"));
        Tree { dir, protected }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn relation(&self, rel: &str) -> Option<(Relation, Guarded)> {
        match self.protected.check(&self.path(rel)) {
            Ok(()) => None,
            Err(ShareError::Protected { relation, what, .. }) => Some((relation, what)),
            Err(e) => panic!("{rel}: {e}"),
        }
    }
}

#[test]
fn a_share_may_not_be_contain_or_lie_inside_a_protected_folder() {
    let t = Tree::new();
    assert_eq!(t.relation("home/moat"), Some((Relation::Is, Guarded::MoatHome)));
    assert_eq!(t.relation("home/moat/sandboxes"), Some((Relation::Inside, Guarded::MoatHome)));
    assert_eq!(t.relation("home"), Some((Relation::Is, Guarded::HomeFolder)), "the closest conflict is named");
    assert_eq!(t.relation("home/moat/sandboxes/abc"), Some((Relation::Inside, Guarded::MoatHome)));
    assert_eq!(t.relation(""), Some((Relation::Contains, Guarded::MoatHome)));
    let program = Guarded::Program("qemu-system-x86_64".into());
    assert_eq!(t.relation("bin"), Some((Relation::Is, program)));
    // A project inside the home folder is fine; so is anything elsewhere.
    assert_eq!(t.relation("home/proj"), None);
    assert_eq!(t.relation("elsewhere"), None);
    assert!(ProtectedDirs::new().check(Path::new("/")).is_ok(), "nothing protected, nothing refused");
}

#[test]
fn the_home_folder_itself_is_refused_with_advice_but_not_a_folder_inside() {
    let mut p = ProtectedDirs::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("proj")).unwrap();
    p.protect_home(dir.path());
    let err = p.check(dir.path()).unwrap_err().to_string();
    assert!(err.contains("it is a home folder") && err.contains("share a project folder inside it instead"), "{err}");
    assert!(p.check(&dir.path().join("proj")).is_ok());
    assert!(p.check(dir.path().parent().unwrap()).is_err(), "a folder holding a home folder is refused");
}

#[test]
fn symlinks_are_resolved_before_comparing() {
    let t = Tree::new();
    let link = t.path("elsewhere/link");
    std::os::unix::fs::symlink(t.path("home/moat"), &link).unwrap();
    let err = t.protected.check(&link).unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot share {}: it is Moat's own folder", link.display())), "{err}");
    // A protected folder named through a symlink is protected where it really is.
    let mut p = ProtectedDirs::new();
    p.protect(&link, Guarded::ImageCache);
    assert!(p.check(&t.path("home/moat/sandboxes")).is_err());
}

#[test]
fn a_protected_folder_not_made_yet_is_protected_by_path() {
    let t = Tree::new();
    let mut p = ProtectedDirs::new();
    p.protect(&t.path("elsewhere/.cache/moat"), Guarded::ImageCache);
    assert!(matches!(p.check(&t.path("elsewhere")), Err(ShareError::Protected { relation: Relation::Contains, .. })));
}

#[test]
fn an_allowed_folder_inside_a_protected_one_may_be_shared() {
    let mut t = Tree::new();
    let clone = t.path("home/moat/sandboxes/abc/workspace");
    assert!(t.protected.check(&clone).is_err());
    t.protected.allow(&clone);
    assert!(t.protected.check(&clone).is_ok());
    assert!(t.protected.check(&t.path("home/moat/sandboxes/abc")).is_err(), "only the allowed folder");
}

#[test]
fn recheck_refuses_a_folder_that_became_a_symlink() {
    let t = Tree::new();
    let share = t.path("elsewhere/ws");
    std::fs::create_dir(&share).unwrap();
    let share = share.canonicalize().unwrap();
    assert!(t.protected.recheck(&share).is_ok());
    std::fs::remove_dir(&share).unwrap();
    std::os::unix::fs::symlink(t.path("home/moat"), &share).unwrap();
    let err = t.protected.recheck(&share).unwrap_err();
    assert!(matches!(err, ShareError::Moved { .. }), "{err}");
    assert!(err.to_string().contains("recreate the sandbox"), "{err}");
    std::fs::remove_file(&share).unwrap();
    assert!(matches!(t.protected.recheck(&share), Err(ShareError::Missing { .. })));
}

/// A bind mount of a protected folder (or of a folder holding one) has another path
/// but the same identity. Needs root (`mount --bind`); skipped otherwise.
#[test]
fn a_bind_mount_of_a_protected_folder_is_caught_wherever_it_is() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: bind mounts need root");
        return;
    }
    let t = Tree::new();
    let bind = |src: &Path, dst: &Path| {
        std::fs::create_dir_all(dst).unwrap();
        let ok =
            std::process::Command::new("mount").arg("--bind").arg(src).arg(dst).status().is_ok_and(|s| s.success());
        ok.then(|| Unmount(dst.to_path_buf()))
    };
    let Some(_m1) = bind(&t.path("home/moat"), &t.path("elsewhere/m1")) else {
        eprintln!("skipping: mount --bind failed here");
        return;
    };
    let _m2 = bind(&t.path("home"), &t.path("elsewhere/m2")).expect("second bind mount");
    assert_eq!(t.relation("elsewhere/m1"), Some((Relation::Is, Guarded::MoatHome)));
    assert_eq!(t.relation("elsewhere/m1/sandboxes"), Some((Relation::Inside, Guarded::MoatHome)));
    assert_eq!(t.relation("elsewhere/m2"), Some((Relation::Is, Guarded::HomeFolder)));
    let mut only_moat = ProtectedDirs::new();
    only_moat.protect(&t.path("home/moat"), Guarded::MoatHome);
    assert!(matches!(
        only_moat.check(&t.path("elsewhere/m2")),
        Err(ShareError::Protected { relation: Relation::Contains, what: Guarded::MoatHome, .. })
    ));
    assert_eq!(t.relation("elsewhere/m2/proj"), None, "a project inside the bound home is still fine");
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn the_detected_set_protects_moat_home_the_cache_and_this_executable() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("moat"));
    home.ensure_private().unwrap();
    let p = ProtectedDirs::detect(&home);
    assert!(p.check(home.root()).is_err());
    let exe_dir = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    assert!(p.check(&exe_dir).is_err());
    assert!(p.check(&crate::paths::home_dir()).is_err());
    if let Ok(cache) = crate::images::ImageCache::default_root() {
        if cache.exists() {
            assert!(p.check(&cache).is_err());
        }
    }
    // The system folders holding the back-ends (e.g. /usr/bin for mkfs.ext4 or QEMU).
    if let Ok(mkfs) = find_tool(Tool::MkfsExt4) {
        assert!(p.check(mkfs.parent().unwrap()).is_err());
    }
    assert!(p.check(Path::new("/")).is_err());
}
