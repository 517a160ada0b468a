//! moat-vmm's control socket: the request words, the JSON answers, and the
//! blocking client the sandbox runtime uses. moat-vmm serves it.

mod client;
mod protocol;

pub use self::client::{ApiClient, ApiError};
pub use self::protocol::{Request, Response, VcpuStats, VmState, VmStats, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
