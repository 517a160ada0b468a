//! What Moat guarantees the host, whatever the guest does.
//!
//! [`shares`] decides which folders may be shared at all (never Moat's own
//! state, its image cache, the folders of the programs the host runs, nor the
//! user's home folder itself); [`process`] keeps the host's own processes away
//! from the workspace (working folder `/`, programs only from absolute `PATH`
//! entries) and sizes the supervisor's file limit; [`resources`] bounds what one
//! sandbox may take of the host (state disk size, guest memory, free space).
//!
//! Nothing here talks to a guest.

pub mod process;
pub mod resources;
pub mod shares;

pub use process::{drop_relative_path_entries, enter_host_process, resolve_program, sanitized_path};
pub use resources::{check_disk_space, default_memory_mib, parse_disk_size, DiskError};
pub use shares::{ProtectedDirs, ShareError};
