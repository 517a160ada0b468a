//! Shared helpers: prerequisites and building guests in a temp dir.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the e2e prerequisites are present. Without them this prints a
/// loud SKIPPED line, or panics when `MOAT_REQUIRE_E2E=1`.
pub fn e2e_available(test: &str, needs_gcc: bool) -> bool {
    let missing: Vec<&str> = [
        (!Path::new("/dev/kvm").exists()).then_some("/dev/kvm"),
        (needs_gcc && Command::new("gcc").arg("--version").output().is_err()).then_some("gcc"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: missing {}", missing.join(" and "));
    if std::env::var("MOAT_REQUIRE_E2E").as_deref() == Ok("1") {
        panic!("{msg} (MOAT_REQUIRE_E2E=1)");
    }
    // Written to the real stderr, not eprintln!: the test harness would hide
    // captured output of a passing test, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {msg}; set MOAT_REQUIRE_E2E=1 to make this a failure");
    false
}

/// The host program `program`: `$<env>` if set, else (for our own
/// binaries) the one built next to this test, else the first on `$PATH` or
/// in `~/.cargo/bin`. Missing, it prints a loud SKIPPED line, or panics when
/// `MOAT_REQUIRE_E2E=1`.
pub fn find_tool(test: &str, program: &str, env: &str) -> Option<PathBuf> {
    let from_env = std::env::var_os(env).filter(|v| !v.is_empty()).map(PathBuf::from);
    // target/<profile>/deps/e2e-<hash> → target/<profile>/<program>
    let built = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.parent()?.join(program)));
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let searched = std::env::split_paths(&path).chain(home).map(|d| d.join(program));
    let found = from_env.into_iter().chain(built).chain(searched).find(|p| p.is_file());
    if found.is_none() {
        let msg = format!("{test}: missing {program} (set {env}, build it, or put it on PATH)");
        if std::env::var("MOAT_REQUIRE_E2E").as_deref() == Ok("1") {
            panic!("{msg} (MOAT_REQUIRE_E2E=1)");
        }
        let _ = writeln!(std::io::stderr(), "SKIPPED {msg}; set MOAT_REQUIRE_E2E=1 to make this a failure");
    }
    found
}

fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests")
}

/// Compiles `tests/guests/<name>.c` into a static ELF linked at 1 MiB and
/// returns its bytes. The build happens in a temp dir.
pub fn build_guest(name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let elf = compile(name, ELF_LDFLAGS, dir.path());
    std::fs::read(elf).expect("read guest ELF")
}

/// Compiles `tests/guests/<name>.c`, links it with `tests/guests/<name>.ld`
/// and returns it as a flat binary (`objcopy -O binary`): the image of its
/// loadable sections from the lowest address on.
pub fn build_flat_guest(name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = guests_dir().join(format!("{name}.ld"));
    let script_flag = format!("-Wl,-T,{}", script.display());
    let elf = compile(name, &[&script_flag, "-Wl,--build-id=none"], dir.path());
    let flat = dir.path().join(format!("{name}.bin"));
    let output = Command::new("objcopy").args(["-O", "binary"]).arg(&elf).arg(&flat).output().expect("run objcopy");
    assert!(
        output.status.success(),
        "objcopy failed for {}:\n{}",
        elf.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(flat).expect("read flat guest")
}

fn compile(name: &str, ldflags: &[&str], dir: &Path) -> PathBuf {
    let out = dir.join(name);
    let src = guests_dir().join(format!("{name}.c"));
    let output = Command::new("gcc")
        .args(GUEST_CFLAGS)
        .args(ldflags)
        .arg("-I")
        .arg(guests_dir())
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(output.status.success(), "gcc failed for {}:\n{}", src.display(), String::from_utf8_lossy(&output.stderr));
    out
}

/// Freestanding, no SSE, no stack protector, static, no PIE.
pub const GUEST_CFLAGS: &[&str] = &[
    "-O2",
    "-ffreestanding",
    "-nostdlib",
    "-mgeneral-regs-only",
    "-mno-sse",
    "-mno-red-zone",
    "-fno-pic",
    "-fno-pie",
    "-no-pie",
    "-static",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
];

/// How [`build_guest`] links: one RWX segment at 1 MiB, entry `_start`.
const ELF_LDFLAGS: &[&str] = &["-Wl,-N", "-Wl,-Ttext=0x100000", "-Wl,-e,_start", "-Wl,--build-id=none"];
