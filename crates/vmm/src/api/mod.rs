//! The control API: a Unix socket the VMM serves on its VMM thread, so
//! `sandbox-core` can drive a running VM.
//!
//! The protocol is line-based: a client sends one request word per line —
//! `status`, `start`, `pause`, `resume`, `shutdown`, `stop` or `stats` — and reads
//! one JSON object per line back, in order:
//!
//! ```text
//! > pause
//! < {"state":"paused"}
//! > stats
//! < {"state":"paused","stats":{"uptime_ms":812,"vcpus":[{"index":0,"cpu_ns":80312114}],
//!    "rss_bytes":5677056,"guest_ram_bytes":1175552,"serial_bytes":1710}}
//! > hello
//! < {"state":"paused","error":"unknown request; expected one of status, start, pause, resume, shutdown, stop, stats"}
//! ```
//!
//! Every answer carries the VM's state after the request; a failed request
//! also carries `error`. `shutdown` returns at once (`shutting-down`); the
//! VM stops when the guest powers off or the grace period ends. After
//! `stop` (or any other end) the VMM answers `stopped` and tears down.
//! Reads are bounded on both sides (see [`server`] and
//! [`MAX_RESPONSE_BYTES`]).

pub(crate) mod server;

pub use moat_proto::vmm::{
    ApiClient, ApiError, Request, Response, VcpuStats, VmState, VmStats, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
};
