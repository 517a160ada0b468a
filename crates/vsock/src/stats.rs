//! Counters for what a guest or a host client got wrong, with logging that
//! can't flood: each counter prints on its 1st, 2nd, 4th, 8th… occurrence, so
//! a billion bad packets cost about thirty lines.

/// One kind of event, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally(u64);

impl Tally {
    /// How many times it happened.
    pub fn count(&self) -> u64 {
        self.0
    }

    /// Counts one more; returns whether this occurrence is one that gets logged.
    pub(crate) fn note(&mut self, what: &str) -> bool {
        self.0 = self.0.saturating_add(1);
        let log = self.0.is_power_of_two();
        if log {
            eprintln!("moat-vsock: {what} (seen {} times)", self.0);
        }
        log
    }
}

/// Everything the device refused or dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// TX chains whose descriptors point outside guest memory or hold no full header.
    pub bad_tx_chain: Tally,
    /// TX packets whose `len` exceeds the chain or the 64 KiB packet limit.
    pub bad_tx_len: Tally,
    /// Packets not from the guest's CID or not to the host's.
    pub wrong_cid: Tally,
    /// Data for no connection, unknown ops, non-stream types (answered with RST).
    pub unknown_conn: Tally,
    /// Connections reset for breaking the protocol (credit overrun, op out of order).
    pub violations: Tally,
    /// RX chains too small for a header or pointing outside guest memory.
    pub bad_rx_chain: Tally,
    /// RSTs for unknown connections dropped because too many were waiting for RX buffers.
    pub rst_dropped: Tally,
    /// Connections refused because the connection limit was reached.
    pub over_limit: Tally,
    /// Host clients dropped for a malformed `CONNECT <port>` line.
    pub bad_connect_line: Tally,
    /// Guest connections refused because nothing listens on `<uds-path>_<port>`.
    pub refused: Tally,
    /// Used-ring updates that failed (descriptor index or ring out of range).
    pub bad_queue: Tally,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_events_logs_logarithmically() {
        let mut t = Tally::default();
        let logged = (0..1_000_000).filter(|_| t.note("test event")).count();
        assert_eq!(t.count(), 1_000_000);
        assert_eq!(logged, 20, "1, 2, 4, … 2^19");
    }
}
