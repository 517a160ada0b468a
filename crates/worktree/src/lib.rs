//! Review checkpoints: each sandbox works on its own branch, and nothing it
//! writes reaches the user's repository — or runs on the host — before the user
//! has looked at it.
//!
//! A [`Checkpoint`] is a branch plus a **workspace** folder the sandbox shares.
//! [`Checkpoint::create_branch`] puts the workspace at
//! `<repo>/.moat/worktrees/<sandbox>` (excluded through `.git/info/exclude`, the
//! tracked `.gitignore` is never touched) and the branch in `refs/heads/`;
//! [`Checkpoint::create_clone`] puts it wherever the caller says and brings the
//! branch back as the review ref `refs/moat/clones/<branch>`. Then
//! [`Checkpoint::changes`] (the commits, and apart what is not committed yet —
//! the files `review` flags and `remove` refuses to lose), [`Checkpoint::review`],
//! [`Checkpoint::apply`] and [`Checkpoint::remove`] close the loop. The crate
//! depends on no other Moat crate and drives the `git` binary (2.39 or newer).
//!
//! # How git works inside the guest (design decision)
//!
//! A real `git worktree` keeps its index, HEAD and refs in the host's `.git`
//! (`.git` in the worktree is a file pointing at `<repo>/.git/worktrees/<name>`).
//! The guest sees only the shared folders, so git would not work there unless
//! the host's `.git` were shared read-write — which would let the agent write
//! hooks, config or `refs/heads/main` that the user's git later obeys. So **both
//! modes are clone-backed**: the workspace is a self-contained repository made
//! with `git clone --shared --no-checkout --template=` (no hook samples), with
//! its own `.git` *directory* inside the workspace, where the agent can commit.
//! Objects are borrowed through `objects/info/alternates`, never hard-linked:
//! the sandbox shares [`Checkpoint::guest_read_only_paths`] (the host's object
//! stores) **read-only** at their host paths, so no byte the agent writes lands
//! under the host's `.git`. The two modes differ only in where the workspace
//! lives and where the branch lands on the host.
//!
//! Work comes back by the *host* fetching the branch from the workspace
//! ([`Checkpoint::sync`]); from then on review and apply read the host's copy.
//!
//! # Nothing the agent writes runs on the host
//!
//! Every git call goes through one runner (`git.rs`, the only place that
//! builds a `git` command). Host git never runs with the workspace's `.git` as
//! its repository: `scratch.rs` reads its refs and objects as data into a
//! Moat-owned scratch repository with Moat's own config, and sync, diff,
//! review, `rm`'s accounting and apply work from there (see `scratch.rs` for
//! what is read and how). On the user's own repository the runner overrides
//! hooks, `core.fsmonitor`, pager, editors, askpass, credential helpers, ssh,
//! every named `filter.<x>` and `merge.<x>` driver, and uses plumbing or
//! `--no-ext-diff --no-textconv` for diffs. The workspace itself stays
//! agent-controlled: running your own `git` *inside* it on the host obeys its
//! config — use [`Checkpoint::review`] first, which reports hooks and config
//! changes there. Text from the workspace (patches, file names) is returned as
//! it is; whoever shows it on a terminal escapes it (the CLI uses `moat-text`).
//!
//! # Submodules
//!
//! Every submodule initialised on the host is checked out in the workspace as
//! its own `--shared` clone of the host's `.git/modules/<name>` (no network),
//! so the agent can commit inside it and bump the pointer. `apply` fetches the
//! commits each applied pointer names from the workspace's submodule into the
//! host's (kept by `refs/moat/applied/<commit>`) before moving the user's
//! branch, refuses if one is nowhere, and then moves the host's submodule to
//! it; `remove` counts submodule commits the host lacks as work to lose.
//! Submodules not initialised on the host are left to `git submodule update`.
//!
//! # Git LFS (design decision)
//!
//! Moat's calls never run a filter, LFS's included, so LFS files are pointer
//! files in the new workspace. The host's LFS objects are shared read-only with
//! the guest next to the borrowed git objects, where Git LFS looks for them:
//! `git lfs checkout` (or `pull`) inside the guest gets the content offline.
//! `apply` copies the content behind every pointer the applied commits add
//! from the workspace's `.git/lfs/objects` into the host's store — read
//! without following symlinks, bounded by the pointer's size, kept only if its
//! SHA-256 matches — and refuses, changing nothing, when a tracked file's
//! content is in neither store. If the user's git has LFS's smudge filter set
//! up, the pointer files `apply` checked out are then replaced by their content,
//! and Moat's own clean-tree check recognises such files. Not supported:
//! content for LFS files inside submodules, pointers with LFS extensions
//! (applied as pointers), and an `lfs.storage` elsewhere than `<git dir>/lfs`
//! for the guest's offline lookup.
//!
//! Not here: sharing folders with the VM (the caller does that) and pushing.

mod apply;
mod changes;
mod checkpoint;
mod create;
mod error;
mod git;
mod lfs;
mod names;
mod remove;
mod review;
mod scratch;
mod state;
mod submodules;
#[cfg(feature = "test-utils")]
pub mod test_utils;

pub use apply::Applied;
pub use changes::{pager_command, Changes};
pub use checkpoint::Checkpoint;
pub use error::{ApplyError, CreateError, DiffError, OpenError, RemoveError, ReviewError, SyncError};
pub use git::{GitError, GitOutput, UntrustedError};
pub use names::BranchName;
pub use remove::Lost;
pub use review::{Concern, Finding, Review};
pub use state::Mode;
