//! Moat's git worktrees and clones that give each sandbox its own branch.
//!
//! Not built yet: this crate is reserved by the workspace layout and is the
//! subject of issue #6. It exports nothing today.
