//! Benchmarks of Moat; run them with `cargo xtask bench`.
