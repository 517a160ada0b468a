//! Walking the TX and RX virtqueues in guest memory.
//!
//! A packet may be spread over any number of descriptors in any split (Linux
//! ≥ 6.1.63 puts the header in one and the payload in several), so both ways
//! go through a byte cursor over the chain rather than assuming "header in the
//! first descriptor". Everything in a chain is guest-controlled: addresses are
//! checked before use, the payload is bounded by [`MAX_PAYLOAD`], and the chain
//! walk itself is bounded by virtio-queue (queue size, loops cut by a TTL).
//!
//! Notifications follow the usual race-free pattern: process, re-enable guest
//! notifications, and look once more (`enable_notification` reports buffers
//! that arrived meanwhile). It is correct with and without
//! `VIRTIO_RING_F_EVENT_IDX`.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use crate::device::{RxNext, VsockDevice};
use crate::packet::{Header, HDR_LEN, MAX_PAYLOAD};

/// Writable descriptors of one RX chain looked at (Linux uses one or two).
const MAX_RX_DESCS: usize = 16;

impl VsockDevice {
    /// Consumes every packet the guest has put on the TX queue. Returns whether
    /// the guest should be interrupted.
    pub fn process_tx<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M) -> bool {
        let mut used = false;
        loop {
            let _ = queue.disable_notification(mem);
            let mut progress = false;
            while let Some(chain) = queue.pop_descriptor_chain(mem) {
                progress = true;
                let head = chain.head_index();
                self.tx_chain(chain, mem);
                used |= self.add_used(queue, mem, head, 0);
            }
            // A ring that claims buffers but yields none is broken: stop rather than spin.
            if !progress || !queue.enable_notification(mem).unwrap_or(false) {
                break;
            }
        }
        used && queue.needs_notification(mem).unwrap_or(true)
    }

    /// Fills RX buffers with whatever is due for the guest. Returns whether the
    /// guest should be interrupted. When work remains but buffers ran out, guest
    /// notifications are left enabled, so the guest's next RX buffer kicks us.
    pub fn process_rx<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M) -> bool {
        let mut used = false;
        loop {
            let _ = queue.disable_notification(mem);
            let mut progress = false;
            while self.has_rx_work() {
                let Some(chain) = queue.pop_descriptor_chain(mem) else { break };
                let head = chain.head_index();
                match self.rx_chain(chain, mem) {
                    Some(len) => {
                        progress = true;
                        used |= self.add_used(queue, mem, head, len);
                    }
                    None => {
                        queue.go_to_previous_position();
                        break;
                    }
                }
            }
            if !self.has_rx_work() || !queue.enable_notification(mem).unwrap_or(false) || !progress {
                break;
            }
        }
        used && queue.needs_notification(mem).unwrap_or(true)
    }

    fn add_used<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M, head: u16, len: u32) -> bool {
        let ok = queue.add_used(mem, head, len).is_ok();
        if !ok {
            self.stats.bad_queue.note("could not return a buffer to the guest's used ring");
        }
        ok
    }

    /// Reads one guest packet from `chain` and hands it to the device.
    fn tx_chain<M: GuestMemory>(&mut self, chain: DescriptorChain<&M>, mem: &M) {
        let mut hdr_bytes = [0u8; HDR_LEN];
        let mut hdr: Option<Header> = None;
        let (mut got, mut payload) = (0usize, 0usize);
        for desc in chain.readable() {
            let (mut addr, mut left) = (desc.addr(), desc.len() as usize);
            if hdr.is_none() {
                let n = left.min(HDR_LEN - got);
                if mem.read_slice(&mut hdr_bytes[got..got + n], addr).is_err() {
                    self.stats.bad_tx_chain.note("dropped a TX packet outside guest memory");
                    return;
                }
                got += n;
                left -= n;
                addr = GuestAddress(addr.0.wrapping_add(n as u64));
                if got < HDR_LEN {
                    continue;
                }
                let h = Header::decode(&hdr_bytes);
                if h.len as usize > MAX_PAYLOAD {
                    return self.bad_len(&h);
                }
                hdr = Some(h);
            }
            let Some(h) = hdr else { continue };
            let n = left.min(h.len as usize - payload);
            if n > 0 && mem.read_slice(&mut self.scratch[payload..payload + n], addr).is_err() {
                self.stats.bad_tx_chain.note("dropped a TX packet outside guest memory");
                return;
            }
            payload += n;
            if payload == h.len as usize {
                break;
            }
        }
        match hdr {
            None => {
                self.stats.bad_tx_chain.note("dropped a TX chain shorter than a packet header");
            }
            Some(h) if payload < h.len as usize => self.bad_len(&h),
            Some(h) => {
                let data = std::mem::take(&mut self.scratch);
                self.on_guest_packet(&h, &data[..payload]);
                self.scratch = data;
            }
        }
    }

    fn bad_len(&mut self, h: &Header) {
        self.stats.bad_tx_len.note("reset a connection over a TX packet with a bad length");
        self.on_malformed_packet(h);
    }

    /// Writes the next due packet into `chain`. `None`: nothing was due (the
    /// chain stays with the guest). `Some(len)`: the chain is used, `len` bytes.
    fn rx_chain<M: GuestMemory>(&mut self, chain: DescriptorChain<&M>, mem: &M) -> Option<u32> {
        let mut bufs = [(GuestAddress(0), 0usize); MAX_RX_DESCS];
        let (mut n, mut room) = (0, 0usize);
        for desc in chain.writable() {
            if n == MAX_RX_DESCS || room == HDR_LEN + MAX_PAYLOAD {
                break;
            }
            let len = (desc.len() as usize).min(HDR_LEN + MAX_PAYLOAD - room);
            if !mem.check_range(desc.addr(), len, Permissions::Write) {
                self.stats.bad_rx_chain.note("skipped an RX buffer outside guest memory");
                return Some(0);
            }
            bufs[n] = (desc.addr(), len);
            n += 1;
            room += len;
        }
        if room < HDR_LEN {
            self.stats.bad_rx_chain.note("skipped an RX buffer too small for a header");
            return Some(0);
        }
        match self.next_rx(room - HDR_LEN) {
            RxNext::Nothing => None,
            RxNext::TooSmall => {
                self.stats.bad_rx_chain.note("skipped an RX buffer with no room for data");
                Some(0)
            }
            RxNext::Packet(h) => {
                let len = h.len as usize;
                scatter(mem, &bufs[..n], &[&h.encode(), &self.scratch[..len]]);
                Some((HDR_LEN + len) as u32)
            }
        }
    }
}

/// Copies `parts` back to back into the (already range-checked) buffers.
fn scatter<M: GuestMemory>(mem: &M, bufs: &[(GuestAddress, usize)], parts: &[&[u8]]) {
    let mut bufs = bufs.iter().copied();
    let mut cur = bufs.next();
    for mut part in parts.iter().copied() {
        while !part.is_empty() {
            let Some((addr, len)) = cur else { return };
            let n = len.min(part.len());
            let _ = mem.write_slice(&part[..n], addr);
            part = &part[n..];
            cur = if n == len { bufs.next() } else { Some((GuestAddress(addr.0 + n as u64), len - n)) };
        }
    }
}

#[cfg(test)]
mod tests;
