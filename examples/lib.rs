//! Examples of embedding Moat's crates in another tool: see `embed.rs`
//! (`cargo run -p moat-examples --example embed -- FOLDER COMMAND...`).
