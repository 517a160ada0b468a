//! virtio-blk over a raw image file: read-only or read-write; requests IN,
//! OUT, FLUSH, GET_ID, DISCARD and WRITE_ZEROES; features RO, FLUSH,
//! SEG_MAX, SIZE_MAX, BLK_SIZE, DISCARD and WRITE_ZEROES; one queue.
//!
//! `device.rs` is the device (features, config space, statistics),
//! `request.rs` turns one descriptor chain into one request and carries it
//! out, `disk.rs` is the image file, `event_handler.rs` drains the queue.

mod device;
mod disk;
mod event_handler;
mod request;

pub use self::device::{Block, BlockStats, CONFIG_LEN, QUEUE_SIZE};
pub use self::disk::{DiskError, DiskImage, ID_BYTES, SECTOR};
pub use self::request::{MAX_DATA, MAX_DESCS, SEG_MAX, SIZE_MAX};

#[cfg(test)]
mod tests;
