//! The virtio-vsock packet header (virtio spec 1.2, 5.10.6): 44 little-endian
//! bytes in front of every packet, in both directions.

/// Size of [`Header`] on the wire.
pub const HDR_LEN: usize = 44;
/// The host's CID: the only peer a guest reaches through this device.
pub const HOST_CID: u64 = 2;
/// `type` of a stream socket, the only kind this device carries.
pub const TYPE_STREAM: u16 = 1;
/// Largest payload one packet may carry. Linux never sends more
/// (`VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`); a guest that does is refused.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// `flags` of a SHUTDOWN: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `flags` of a SHUTDOWN: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// What a packet asks for (`op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Open a connection.
    Request = 1,
    /// Accept a connection.
    Response = 2,
    /// Refuse or abort a connection.
    Rst = 3,
    /// Half- or full-close (see [`SHUTDOWN_RCV`], [`SHUTDOWN_SEND`]).
    Shutdown = 4,
    /// Data.
    Rw = 5,
    /// "Here is my buffer space" (every header carries it too).
    CreditUpdate = 6,
    /// "Tell me your buffer space."
    CreditRequest = 7,
}

impl Op {
    /// The op for a wire value, `None` for values the spec doesn't define.
    pub fn from_wire(v: u16) -> Option<Op> {
        Some(match v {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// A decoded packet header. `op` stays raw so unknown values survive decoding
/// and can be answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Sender's CID.
    pub src_cid: u64,
    /// Receiver's CID.
    pub dst_cid: u64,
    /// Sender's port.
    pub src_port: u32,
    /// Receiver's port.
    pub dst_port: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub kind: u16,
    /// Raw op (see [`Op::from_wire`]).
    pub op: u16,
    /// Op-specific flags.
    pub flags: u32,
    /// Sender's receive buffer size for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

impl Header {
    /// Decodes the wire format.
    pub fn decode(b: &[u8; HDR_LEN]) -> Header {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the wire format.
    pub fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The decoded op, if known.
    pub fn op(&self) -> Option<Op> {
        Op::from_wire(self.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips_at_the_spec_offsets() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 1024,
            dst_port: 0xdead_beef,
            len: 65536,
            kind: TYPE_STREAM,
            op: Op::Rw as u16,
            flags: SHUTDOWN_SEND,
            buf_alloc: 262_144,
            fwd_cnt: u32::MAX,
        };
        let b = h.encode();
        assert_eq!(b[0], 0x08, "src_cid is little-endian at 0");
        assert_eq!(&b[8..16], &2u64.to_le_bytes());
        assert_eq!(&b[24..28], &65536u32.to_le_bytes(), "len at 24");
        assert_eq!(&b[30..32], &5u16.to_le_bytes(), "op at 30");
        assert_eq!(&b[40..44], &[0xff; 4], "fwd_cnt at 40");
        assert_eq!(Header::decode(&b), h);
    }

    #[test]
    fn unknown_ops_decode_to_none() {
        for v in [0u16, 8, 0xffff] {
            assert_eq!(Op::from_wire(v), None);
        }
        for v in 1..=7u16 {
            assert_eq!(Op::from_wire(v).map(|o| o as u16), Some(v));
        }
    }
}
