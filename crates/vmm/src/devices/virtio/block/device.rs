//! The virtio-blk device: what it offers and what it has done.

use virtio_bindings::virtio_blk::*;

use super::disk::{DiskImage, SECTOR};
use super::request::{Layout, MAX_DISCARD_SECTORS, MAX_RANGE_SEGS, MAX_WRITE_ZEROES_SECTORS, SEG_MAX, SIZE_MAX};

/// Entries in the one request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes of `struct virtio_blk_config` we expose (through the write-zeroes
/// fields; no secure erase, no zones).
pub const CONFIG_LEN: usize = 60;
/// The bounce buffer all data moves through.
const BOUNCE_BYTES: usize = 64 << 10;

/// Requests by outcome, and chains that could not be answered at all.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockStats {
    pub ok: u64,
    pub ioerr: u64,
    pub unsupported: u64,
    /// Chains with nowhere to put a status byte: returned unanswered.
    pub dropped: u64,
    /// Chains that could not be put on the used ring (a head index past
    /// the queue).
    pub unreturned: u64,
}

/// A virtio-blk device backed by a [`DiskImage`].
#[derive(Debug)]
pub struct Block {
    pub(super) disk: DiskImage,
    config: [u8; CONFIG_LEN],
    features: u64,
    pub(super) layout: Layout,
    pub(super) bounce: Vec<u8>,
    pub(super) stats: BlockStats,
}

impl Block {
    /// A device for `disk`.
    pub fn new(disk: DiskImage) -> Self {
        let mut features = bit(VIRTIO_BLK_F_SEG_MAX)
            | bit(VIRTIO_BLK_F_SIZE_MAX)
            | bit(VIRTIO_BLK_F_BLK_SIZE)
            | bit(VIRTIO_BLK_F_FLUSH);
        if disk.read_only() {
            features |= bit(VIRTIO_BLK_F_RO);
        } else {
            features |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
        }
        Self {
            config: config_space(disk.sectors()),
            disk,
            features,
            layout: Layout::with_capacity(),
            bounce: vec![0; BOUNCE_BYTES],
            stats: BlockStats::default(),
        }
    }

    /// Requests handled so far, by outcome.
    pub fn stats(&self) -> BlockStats {
        self.stats
    }

    /// The image.
    pub fn disk(&self) -> &DiskImage {
        &self.disk
    }

    pub(super) fn features(&self) -> u64 {
        self.features
    }

    pub(super) fn config(&self) -> &[u8] {
        &self.config
    }
}

fn bit(feature: u32) -> u64 {
    1 << feature
}

/// `struct virtio_blk_config`, little-endian (virtio 1.2, 5.2.4).
fn config_space(sectors: u64) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    let mut put = |at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &sectors.to_le_bytes()); // capacity
    put(8, &SIZE_MAX.to_le_bytes());
    put(12, &SEG_MAX.to_le_bytes());
    // 16: geometry (not offered)
    put(20, &(SECTOR as u32).to_le_bytes()); // blk_size
                                             // 24: topology (not offered); 32: wce, unused; 34: num_queues (no MQ)
    put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
    put(40, &MAX_RANGE_SEGS.to_le_bytes()); // max_discard_seg
    put(44, &1u32.to_le_bytes()); // discard_sector_alignment
    put(48, &MAX_WRITE_ZEROES_SECTORS.to_le_bytes());
    put(52, &MAX_RANGE_SEGS.to_le_bytes()); // max_write_zeroes_seg
    put(56, &[1]); // write_zeroes_may_unmap
    c
}
