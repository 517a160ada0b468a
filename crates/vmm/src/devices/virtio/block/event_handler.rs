//! Draining the request queue when the driver notifies it.

use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::device::{Block, QUEUE_SIZE};
use super::request::execute;
use crate::devices::virtio::VirtioDevice;

/// virtio device ID of a block device.
const VIRTIO_ID_BLOCK: u32 = 2;

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        Block::features(self)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn config(&self) -> &[u8] {
        Block::config(self)
    }

    /// Handles the available requests, in order, at most two queues' worth
    /// per notification. virtio-queue refuses an available index more than a
    /// queue size ahead, but the index can keep moving while we work — another
    /// vCPU adding requests, or our own reads landing on the ring — and this
    /// thread must get back to its vCPU (to be paused or stopped). Requests
    /// left over are handled on the next notification, which whoever added
    /// them sends after this one.
    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let mut used = false;
        let mut budget = 2 * usize::from(queue.size()).max(1);
        while budget > 0 {
            budget -= 1;
            let Some(chain) = queue.pop_descriptor_chain(mem) else { break };
            let head = chain.head_index();
            let written = self.handle(chain, mem);
            // A head index past the queue can't be returned; the chains
            // after it still can.
            match queue.add_used(mem, head, written) {
                Ok(()) => used = true,
                Err(_) => self.stats.unreturned += 1,
            }
        }
        used && queue.needs_notification(mem).unwrap_or(true)
    }
}

impl Block {
    /// Carries out one request and writes its status; returns the bytes
    /// written into the chain (0 if it had nowhere for a status).
    fn handle(&mut self, chain: DescriptorChain<&GuestMemoryMmap>, mem: &GuestMemoryMmap) -> u32 {
        self.layout.read_chain(chain, mem);
        let Some(status_addr) = self.layout.status() else {
            self.stats.dropped += 1;
            return 0;
        };
        let outcome = execute(&self.layout, &self.disk, mem, &mut self.bounce);
        if mem.write_obj(outcome.status, status_addr).is_err() {
            self.stats.dropped += 1;
            return 0;
        }
        match u32::from(outcome.status) {
            VIRTIO_BLK_S_OK => self.stats.ok += 1,
            VIRTIO_BLK_S_UNSUPP => self.stats.unsupported += 1,
            _ => self.stats.ioerr += 1,
        }
        outcome.written
    }
}
