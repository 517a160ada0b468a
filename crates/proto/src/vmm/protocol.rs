//! The control protocol's messages: one request word per line in, one JSON
//! object per line out.

use serde::{Deserialize, Serialize};

/// Longest request line accepted, newline included.
pub const MAX_REQUEST_BYTES: usize = 64;
/// Longest response line a client accepts, newline included.
pub const MAX_RESPONSE_BYTES: usize = 64 << 10;

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The VM's state.
    Status,
    /// Let the vCPUs of a VM launched paused enter the guest for the first
    /// time (the same as `resume`, by the name a launcher expects).
    Start,
    /// Park every vCPU outside the guest.
    Pause,
    /// Let parked vCPUs enter the guest again.
    Resume,
    /// Press the power button and give the guest a grace period to power
    /// off; past it the VM is stopped.
    Shutdown,
    /// Stop the vCPUs now and tear the VM down.
    Stop,
    /// CPU time per vCPU and memory use.
    Stats,
}

impl Request {
    /// Every request, by its word.
    pub const ALL: [(&'static str, Request); 7] = [
        ("status", Request::Status),
        ("start", Request::Start),
        ("pause", Request::Pause),
        ("resume", Request::Resume),
        ("shutdown", Request::Shutdown),
        ("stop", Request::Stop),
        ("stats", Request::Stats),
    ];

    /// Parses one request line (without its newline); surrounding
    /// whitespace is ignored.
    pub fn parse(line: &[u8]) -> Option<Request> {
        let word = std::str::from_utf8(line).ok()?.trim();
        Self::ALL.iter().find(|(w, _)| *w == word).map(|(_, r)| *r)
    }

    /// The request's word on the wire.
    pub fn word(self) -> &'static str {
        Self::ALL.iter().find(|(_, r)| *r == self).map_or("", |(w, _)| w)
    }
}

/// Where the VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    /// vCPUs may enter the guest.
    Running,
    /// Every vCPU is parked outside the guest.
    Paused,
    /// The power button was pressed; the guest has not powered off yet.
    ShuttingDown,
    /// The VM has stopped; the process exits once it is torn down.
    Stopped,
}

/// One vCPU's share of [`VmStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuStats {
    pub index: u8,
    /// CPU time the vCPU thread has used (in the guest and in the VMM).
    pub cpu_ns: u64,
}

/// What `stats` reports, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStats {
    /// Since the vCPUs were started.
    pub uptime_ms: u64,
    pub vcpus: Vec<VcpuStats>,
    /// Resident memory of the whole VMM process, guest RAM included.
    pub rss_bytes: u64,
    /// Guest RAM the guest has touched (pages allocated to its memfd).
    pub guest_ram_bytes: u64,
    /// Serial bytes the guest has written, dropped ones included.
    pub serial_bytes: u64,
}

impl VmStats {
    /// The VMM's own footprint: resident memory outside guest RAM.
    pub fn vmm_overhead_bytes(&self) -> u64 {
        self.rss_bytes.saturating_sub(self.guest_ram_bytes)
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The state after the request was handled.
    pub state: VmState,
    /// Present for `stats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<VmStats>,
    /// Why the request failed; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A successful answer.
    pub fn ok(state: VmState) -> Self {
        Self { state, stats: None, error: None }
    }

    /// A failed one.
    pub fn error(state: VmState, error: impl Into<String>) -> Self {
        Self { state, stats: None, error: Some(error.into()) }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Plain structs of numbers, strings and enums always serialize.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_junk_is_rejected() {
        for (word, request) in Request::ALL {
            assert_eq!(Request::parse(word.as_bytes()), Some(request));
            assert_eq!(request.word(), word);
        }
        assert_eq!(Request::parse(b"  pause \r"), Some(Request::Pause));
        for junk in [&b""[..], b"PAUSE", b"pause now", b"\xff\xfe", b"stats\0"] {
            assert_eq!(Request::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn responses_are_one_json_line() {
        let line = Response::ok(VmState::ShuttingDown).to_line();
        assert_eq!(line, b"{\"state\":\"shutting-down\"}\n");
        let stats = VmStats {
            uptime_ms: 5,
            vcpus: vec![VcpuStats { index: 0, cpu_ns: 7 }],
            rss_bytes: 10 << 20,
            guest_ram_bytes: 4 << 20,
            serial_bytes: 3,
        };
        let response = Response { stats: Some(stats.clone()), ..Response::ok(VmState::Running) };
        let back: Response = serde_json::from_slice(&response.to_line()).unwrap();
        assert_eq!(back, response);
        assert_eq!(stats.vmm_overhead_bytes(), 6 << 20);
        let failed = Response::error(VmState::Stopped, "the VM has stopped");
        assert_eq!(serde_json::from_slice::<Response>(&failed.to_line()).unwrap(), failed);
    }
}
