//! Checking the driver's queues before a back-end sees them, and turning
//! them into what vhost-user speaks: ring addresses in *our* address space
//! (the back-end maps the same memfd and translates them back through the
//! memory table).
//!
//! The transport has checked the rings already; this is the second, stricter
//! look, because a back-end is a separate program that should never be asked
//! to serve something nonsensical: every size is a power of two no larger
//! than the queue's maximum, every ring is aligned and lies inside one RAM
//! region, and queues the driver didn't make ready are not handed over.

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// One queue, ready to hand to a back-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringPlan {
    /// The queue's index on the device (and in vhost-user messages).
    pub index: usize,
    /// Entries in the ring.
    pub size: u16,
    /// Host virtual addresses of the descriptor table, available ring and
    /// used ring.
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// Where the back-end starts reading the available ring.
    pub next_avail: u16,
}

/// A queue the driver set up that no back-end should be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VringError {
    #[error("queue {index}: size {size} is not a power of two in 1..={max}")]
    Size { index: usize, size: u16, max: u16 },
    #[error("queue {index}: the {ring} at {addr:#x} is misaligned")]
    Misaligned { index: usize, ring: &'static str, addr: u64 },
    #[error("queue {index}: the {ring} at {addr:#x}+{len:#x} is not inside one RAM region")]
    OutsideRam { index: usize, ring: &'static str, addr: u64, len: u64 },
    #[error("no queue is ready")]
    NoQueue,
}

/// What the driver programmed into one queue, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    pub size: u16,
    pub max_size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub next_avail: u16,
}

impl RingLayout {
    /// The layout of `queue`.
    pub fn of(queue: &Queue) -> Self {
        Self {
            size: queue.size(),
            max_size: queue.max_size(),
            desc: queue.desc_table(),
            avail: queue.avail_ring(),
            used: queue.used_ring(),
            next_avail: queue.next_avail(),
        }
    }
}

/// Plans every ready queue of `queues`, or says why one can't be served.
pub fn plan_vrings(queues: &[Queue], mem: &GuestMemoryMmap) -> Result<Vec<VringPlan>, VringError> {
    let plans = queues
        .iter()
        .enumerate()
        .filter(|(_, q)| q.ready())
        .map(|(index, q)| plan_vring(index, RingLayout::of(q), mem))
        .collect::<Result<Vec<_>, _>>()?;
    if plans.is_empty() {
        return Err(VringError::NoQueue);
    }
    Ok(plans)
}

/// Checks queue `index` laid out as `layout` and plans it.
pub fn plan_vring(index: usize, layout: RingLayout, mem: &GuestMemoryMmap) -> Result<VringPlan, VringError> {
    let (size, max) = (layout.size, layout.max_size);
    if !size.is_power_of_two() || size > max {
        return Err(VringError::Size { index, size, max });
    }
    let n = u64::from(size);
    // Split virtqueue layout (virtio 1.2, 2.7): alignment and byte length of
    // each part, the event-index fields included.
    let ring = |ring: &'static str, addr: u64, align: u64, len: u64| -> Result<u64, VringError> {
        if addr % align != 0 {
            return Err(VringError::Misaligned { index, ring, addr });
        }
        host_address(mem, addr, len).ok_or(VringError::OutsideRam { index, ring, addr, len })
    };
    Ok(VringPlan {
        index,
        size,
        desc: ring("descriptor table", layout.desc, 16, 16 * n)?,
        avail: ring("available ring", layout.avail, 2, 6 + 2 * n)?,
        used: ring("used ring", layout.used, 4, 6 + 8 * n)?,
        next_avail: layout.next_avail,
    })
}

/// Our address of guest range `[addr, addr + len)`, if it lies in one region.
fn host_address(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Option<u64> {
    let region = mem.find_region(GuestAddress(addr))?;
    let offset = addr - region.start_addr().0;
    let end = offset.checked_add(len)?;
    (end <= region.len()).then(|| region.as_ptr() as u64 + offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuestMemory;

    const MIB: u64 = 1 << 20;

    fn queue(size: u16, desc: u64, avail: u64, used: u64) -> Queue {
        let mut q = Queue::new(256).unwrap();
        q.set_size(size);
        q.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
        q.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
        q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        q.set_ready(true);
        q
    }

    /// A layout the driver could not even get past `virtio-queue`'s setters.
    fn layout(size: u16, desc: u64, avail: u64, used: u64) -> RingLayout {
        RingLayout { size, max_size: 256, desc, avail, used, next_avail: 0 }
    }

    fn good() -> RingLayout {
        layout(16, 0x1_0000, 0x1_1000, 0x1_2000)
    }

    #[test]
    fn ready_queues_become_host_addresses_in_the_memfd_mapping() {
        let mem = GuestMemory::new(4).unwrap();
        let region = mem.regions()[0];
        let idle = Queue::new(256).unwrap();
        let plans = plan_vrings(
            &[queue(16, 0x1_0000, 0x1_1000, 0x1_2000), idle, queue(256, 0x2_0000, 0x3_0000, 0x4_0000)],
            mem.backend(),
        )
        .unwrap();
        assert_eq!(plans.len(), 2, "the queue that isn't ready is not handed over");
        assert_eq!(
            plans[0],
            VringPlan {
                index: 0,
                size: 16,
                desc: region.host_addr + 0x1_0000,
                avail: region.host_addr + 0x1_1000,
                used: region.host_addr + 0x1_2000,
                next_avail: 0,
            }
        );
        assert_eq!(plans[1].index, 2);
    }

    #[test]
    fn sizes_must_be_powers_of_two_within_the_maximum() {
        let mem = GuestMemory::new(4).unwrap();
        assert!(plan_vring(0, good(), mem.backend()).is_ok());
        for size in [0, 3, 24, 512] {
            assert_eq!(
                plan_vring(5, RingLayout { size, ..good() }, mem.backend()),
                Err(VringError::Size { index: 5, size, max: 256 }),
                "size {size}"
            );
        }
    }

    #[test]
    fn rings_must_be_aligned() {
        let mem = GuestMemory::new(4).unwrap();
        let cases = [
            (layout(16, 0x1_0008, 0x1_1000, 0x1_2000), "descriptor table"),
            (layout(16, 0x1_0000, 0x1_1001, 0x1_2000), "available ring"),
            (layout(16, 0x1_0000, 0x1_1000, 0x1_2002), "used ring"),
        ];
        for (l, ring) in cases {
            let got = plan_vring(0, l, mem.backend());
            assert!(matches!(got, Err(VringError::Misaligned { ring: r, .. }) if r == ring), "{ring}: {got:?}");
        }
    }

    #[test]
    fn rings_outside_or_across_the_end_of_ram_are_refused() {
        let mem = GuestMemory::new(4).unwrap();
        let end = 4 * MIB;
        let cases = [
            (layout(16, end, 0x1_1000, 0x1_2000), "descriptor table"),
            (layout(16, end - 16 * 15, 0x1_1000, 0x1_2000), "descriptor table"),
            (layout(16, 0x1_0000, end - 2, 0x1_2000), "available ring"),
            (layout(256, 0x1_0000, 0x1_1000, end - 8 * 256), "used ring"),
            (layout(16, 0x1_0000, 0x1_1000, u64::MAX - 3), "used ring"),
        ];
        for (l, ring) in cases {
            let got = plan_vring(0, l, mem.backend());
            assert!(matches!(got, Err(VringError::OutsideRam { ring: r, .. }) if r == ring), "{ring}: {got:?}");
        }
    }

    #[test]
    fn a_device_with_no_ready_queue_has_nothing_to_hand_over() {
        let mem = GuestMemory::new(4).unwrap();
        assert_eq!(plan_vrings(&[Queue::new(8).unwrap()], mem.backend()), Err(VringError::NoQueue));
    }
}
