//! Writes each target's seed programs to `seeds/<target>/` (run by
//! `cargo xtask fuzz`; the files are committed too).

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for t in moat_fuzz::TARGETS {
        let out = dir.join(t.name);
        std::fs::create_dir_all(&out)?;
        for (n, seed) in (t.seeds)().iter().enumerate() {
            std::fs::write(out.join(format!("seed-{n:02}")), seed)?;
        }
    }
    Ok(())
}
