//! Imports are hostile: archives made with the real `tar` (and `zstd`) that
//! an export never holds are refused with a reason, before anything is
//! written; what `tar --sparse` writes and what Moat writes read the same.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::manifest::{BaseDigests, Layer, LayerKind, Manifest, FORMAT};
use super::transfer;

/// A manifest for one layer of `bytes`.
fn manifest(name: &str, bytes: u64) -> Manifest {
    Manifest {
        format: FORMAT,
        name: name.into(),
        description: String::new(),
        agent: "shell".into(),
        base: BaseDigests { rootfs: "0".repeat(64), layer: None },
        launch: None,
        layers: vec![Layer { kind: LayerKind::Sandbox, source: "src".into(), bytes, created_at: 1 }],
        parent: None,
        created_at: 1,
        source_sandbox: None,
    }
}

/// A folder holding `manifest.json` and a sparse `layer-0.ext4` of 1 GiB with data at three places.
fn template_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let layer = File::create(dir.path().join("layer-0.ext4")).unwrap();
    layer.set_len(1 << 30).unwrap();
    for (at, data) in [(0u64, &b"superblock"[..]), (300 << 20, b"inode table"), ((1 << 30) - 5, b"tail!")] {
        layer.write_all_at(data, at).unwrap();
    }
    std::fs::write(dir.path().join("manifest.json"), manifest("imported", 1 << 30).encode()).unwrap();
    dir
}

/// `tar --zstd -cf <dir>/out.tar.zst ARGS` run in `dir`.
fn tar(dir: &Path, args: &[&str]) -> PathBuf {
    let out = dir.join("out.tar.zst");
    let _ = std::fs::remove_file(&out);
    let st = Command::new("tar").current_dir(dir).arg("--zstd").arg("-cf").arg(&out).args(args).status().unwrap();
    assert!(st.success(), "tar {args:?}");
    out
}

/// Why listing `file` failed, with its causes.
fn refusal(file: &Path) -> String {
    let err = transfer::list(file).expect_err("the archive must be refused");
    crate::daemon::error_chain(&err)
}

#[test]
fn a_tar_sparse_archive_of_a_template_is_listed_and_extracted_with_its_holes() {
    let dir = template_dir();
    let file = tar(dir.path(), &["--sparse", "manifest.json", "layer-0.ext4"]);
    assert!(std::fs::metadata(&file).unwrap().len() < 64 * 1024, "the holes are not in the archive");
    let listing = transfer::list(&file).unwrap();
    assert_eq!(listing.manifest, manifest("imported", 1 << 30));
    assert!(listing.data_bytes() <= 3 * 4096 * 2, "{} data bytes", listing.data_bytes());
    let into = tempfile::tempdir().unwrap();
    transfer::extract(&file, into.path()).unwrap();
    let names: Vec<_> = std::fs::read_dir(into.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["layer-0.ext4"], "only the layer; the manifest is the caller's to write");
    let got = into.path().join("layer-0.ext4");
    assert_eq!(std::fs::metadata(&got).unwrap().len(), 1 << 30);
    assert!(super::sparse::allocated(&got) <= 64 * 1024);
    let mut buf = [0u8; 11];
    File::open(&got).unwrap().read_exact_at(&mut buf, 300 << 20).unwrap();
    assert_eq!(&buf, b"inode table");
}

#[test]
fn links_devices_folders_and_paths_outside_are_refused() {
    let dir = template_dir();
    let d = dir.path();
    let abs = d.join("manifest.json");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-P".into(), abs.display().to_string()], "has an absolute path"),
        (vec!["-P".into(), "sub/../manifest.json".into()], "has a `..` in its path"),
        (vec!["manifest.json".into(), "link/layer-0.ext4".into()], "is a symbolic link to \"/etc/passwd\""),
        (vec!["manifest.json".into(), "hard/layer-0.ext4".into()], "is a hard link to \"manifest.json\""),
        (vec!["manifest.json".into(), "-C".into(), "/".into(), "dev/null".into()], "is a character device"),
        (vec!["manifest.json".into(), "sub".into()], "is a folder"),
        (vec!["--sparse".into(), "manifest.json".into(), "layer-0.ext4".into(), "sub".into()], "is a folder"),
        (vec!["--sparse".into(), "manifest.json".into(), "layer-0.ext4".into(), "x".into()], "is not expected here"),
        (vec!["--sparse".into(), "layer-0.ext4".into(), "manifest.json".into()], "not manifest.json"),
        (vec!["manifest.json".into(), "x".repeat(120)], "GNU long-name header"),
    ];
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::create_dir_all(d.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.join("link/layer-0.ext4")).unwrap();
    std::fs::create_dir_all(d.join("hard")).unwrap();
    std::fs::write(d.join("x".repeat(120)), "x").unwrap();
    std::fs::write(d.join("x"), "x").unwrap();
    for (args, reason) in cases {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        if args.contains(&"hard/layer-0.ext4") {
            // The layer's name as a second link to the manifest: tar stores it as a hard link.
            let _ = std::fs::remove_file(d.join("hard/layer-0.ext4"));
            std::fs::hard_link(d.join("manifest.json"), d.join("hard/layer-0.ext4")).unwrap();
            args = vec!["manifest.json", "--transform=s,^hard/,,", "hard/layer-0.ext4"];
        }
        if args.contains(&"link/layer-0.ext4") {
            args = vec!["manifest.json", "--transform=s,^link/,,", "link/layer-0.ext4"];
        }
        let file = tar(d, &args);
        let why = refusal(&file);
        assert!(why.contains(reason), "{args:?}: expected {reason:?} in {why:?}");
    }
}

#[test]
fn sizes_over_the_bounds_and_bad_manifests_are_refused() {
    let dir = template_dir();
    let d = dir.path();
    let write_manifest = |m: &[u8]| std::fs::write(d.join("manifest.json"), m).unwrap();
    let listed = || refusal(&tar(d, &["--sparse", "manifest.json", "layer-0.ext4"]));

    // A manifest padded past 64 KiB.
    let mut big = manifest("imported", 1 << 30).encode();
    big.extend(vec![b' '; 70 * 1024]);
    write_manifest(&big);
    assert!(listed().contains("it may be 65536"), "{}", listed());

    write_manifest(b"{\"format\": 1, \"name\": ");
    assert!(listed().contains("the manifest is not valid"), "{}", listed());
    write_manifest(&manifest("../evil", 1 << 30).encode());
    assert!(listed().contains("invalid template name \"../evil\""), "{}", listed());
    write_manifest(&manifest("Evil", 1 << 30).encode());
    assert!(listed().contains("invalid template name"), "{}", listed());

    // A layer larger than its manifest says.
    write_manifest(&manifest("imported", 1 << 20).encode());
    assert!(listed().contains("is 1073741824 bytes; it may be 1048576"), "{}", listed());

    // A 2 TiB layer (sparse: the archive stays tiny): past what any template may hold.
    File::options().write(true).open(d.join("layer-0.ext4")).unwrap().set_len(2 << 40).unwrap();
    write_manifest(&manifest("imported", 2 << 40).encode());
    assert!(listed().contains("layers.bytes"), "{}", listed());
    write_manifest(&manifest("imported", 1 << 30).encode());
    assert!(listed().contains("is 2199023255552 bytes"), "{}", listed());
}

#[test]
fn a_file_that_is_not_zstd_is_refused() {
    let dir = template_dir();
    let plain = dir.path().join("plain.tar");
    let st = Command::new("tar")
        .current_dir(dir.path())
        .arg("-cf")
        .arg(&plain)
        .args(["manifest.json", "layer-0.ext4"])
        .status()
        .unwrap();
    assert!(st.success());
    let why = refusal(&plain);
    assert!(why.contains("not zstd-compressed data"), "{why}");
    assert!(refusal(&dir.path().join("manifest.json")).contains("not zstd-compressed data"));
}

#[test]
fn what_moat_exports_tar_extracts_byte_for_byte() {
    let dir = template_dir();
    let m = manifest("imported", 1 << 30);
    let export = dir.path().join("t.moat");
    let bytes = transfer::export(&m, dir.path(), &export).unwrap();
    assert!(bytes < 64 * 1024, "{bytes} bytes");
    assert!(transfer::export(&m, dir.path(), &export).is_err(), "never over an existing file");
    let out = tempfile::tempdir().unwrap();
    let st = Command::new("tar").current_dir(out.path()).args(["--zstd", "-xSf"]).arg(&export).status().unwrap();
    assert!(st.success());
    assert_eq!(Manifest::parse(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap(), m);
    let cmp = Command::new("cmp").arg(dir.path().join("layer-0.ext4")).arg(out.path().join("layer-0.ext4")).status();
    assert!(cmp.unwrap().success(), "the layer is the same bytes");
    assert!(super::sparse::allocated(&out.path().join("layer-0.ext4")) <= 64 * 1024, "and tar keeps the holes");
}
