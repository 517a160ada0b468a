//! The device through its transport, with a recording back-end in place of
//! a vhost-user process (the real ones are exercised in `tests/e2e`).

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::virtio::testing::Driver;
use crate::devices::virtio::{regs, status, MmioTransport, VIRTIO_F_VERSION_1};
use crate::GuestMemory;

const PROTOCOL_FEATURES: u64 = 1 << 30;
const INDIRECT: u64 = 1 << 28;
const EVENT_IDX: u64 = 1 << 29;
const CID: u64 = 0x0012_3456_789a;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Start { features: u64, vrings: Vec<VringPlan>, kicks: usize },
    Stop,
}

/// Records what the device asks of its back-end; fails on request.
#[derive(Debug, Default)]
struct Recorder {
    calls: Vec<Call>,
    fail_start: bool,
}

impl Backend for Recorder {
    fn start(
        &mut self,
        features: u64,
        _mem: &GuestMemoryMmap,
        vrings: &[VringPlan],
        kicks: &[EventFd],
        _call: &EventFd,
    ) -> Result<(), BackendError> {
        self.calls.push(Call::Start { features, vrings: vrings.to_vec(), kicks: kicks.len() });
        if self.fail_start {
            return Err(BackendError { request: "SET_MEM_TABLE", source: "the back-end hung up".into() });
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), BackendError> {
        self.calls.push(Call::Stop);
        Ok(())
    }
}

fn vsock(backend: Recorder) -> VhostUser<Recorder> {
    let features = VIRTIO_F_VERSION_1 | INDIRECT | EVENT_IDX | PROTOCOL_FEATURES;
    VhostUser::new(DeviceKind::Vsock { guest_cid: CID }, features, PROTOCOL_FEATURES, backend).unwrap()
}

fn driver(mem: &GuestMemory, device: VhostUser<Recorder>) -> Driver<'_, VhostUser<Recorder>> {
    Driver::new(MmioTransport::new(device, mem).unwrap(), mem)
}

fn calls<'a>(d: &'a Driver<'_, VhostUser<Recorder>>) -> &'a [Call] {
    &d.transport.device().backend().calls
}

/// Negotiates VERSION_1 only and sets up `queues` with 16 entries each.
fn set_up(d: &mut Driver<'_, VhostUser<Recorder>>, queues: &[u16]) {
    assert_ne!(d.negotiate(VIRTIO_F_VERSION_1) & status::FEATURES_OK, 0);
    for &q in queues {
        d.select_queue(q);
        d.setup_queue(16);
    }
}

#[test]
fn config_space_answers_the_tag_and_queue_count_or_the_cid() {
    let fs = DeviceKind::Fs { tag: "work".into(), request_queues: 2 };
    let config = fs.config_space();
    assert_eq!(config.len(), 40, "struct virtio_fs_config");
    assert_eq!(&config[..4], b"work");
    assert!(config[4..36].iter().all(|&b| b == 0), "NUL-padded");
    assert_eq!(config[36..], 2u32.to_le_bytes());
    let full = DeviceKind::Fs { tag: "t".repeat(FS_TAG_LEN), request_queues: 1 }.config_space();
    assert_eq!(&full[..FS_TAG_LEN], "t".repeat(FS_TAG_LEN).as_bytes(), "a 36-byte tag has no NUL");
    assert_eq!((fs.device_type(), fs.queue_count()), (VIRTIO_ID_FS, 3));

    let mem = GuestMemory::new(4).unwrap();
    let mut d = driver(&mem, vsock(Recorder::default()));
    assert_eq!(d.reg(regs::DEVICE_ID), VIRTIO_ID_VSOCK);
    assert_eq!(d.config::<8>(0), CID.to_le_bytes());
    assert_eq!(d.config::<4>(4), [0x12, 0, 0, 0]);
    d.transport.write(regs::CONFIG, &[0xff; 8]);
    assert_eq!(d.config::<8>(0), CID.to_le_bytes(), "read-only");
    assert_eq!(d.config::<1>(8), [0], "nothing past the CID");
    for (queue, max) in [(0, QUEUE_MAX), (1, QUEUE_MAX), (2, QUEUE_MAX), (3, 0)] {
        d.set_reg(regs::QUEUE_SEL, queue);
        assert_eq!(d.reg(regs::QUEUE_NUM_MAX), u32::from(max), "queue {queue}");
    }
}

#[test]
fn only_feature_bits_we_can_carry_reach_the_driver() {
    let everything = u64::MAX;
    let fs = VhostUser::new(DeviceKind::Fs { tag: "t".into(), request_queues: 1 }, everything, 0, Recorder::default())
        .unwrap();
    assert_eq!(
        crate::devices::virtio::VirtioDevice::features(&fs),
        VIRTIO_F_VERSION_1 | INDIRECT | EVENT_IDX,
        "no packed rings, notification data, IOMMU, PROTOCOL_FEATURES or fs notifications"
    );
    let vs = VhostUser::new(DeviceKind::Vsock { guest_cid: 3 }, everything, 0, Recorder::default()).unwrap();
    assert_eq!(crate::devices::virtio::VirtioDevice::features(&vs), VIRTIO_F_VERSION_1 | INDIRECT | EVENT_IDX | 0b111);
    let plain = VhostUser::new(DeviceKind::Vsock { guest_cid: 3 }, VIRTIO_F_VERSION_1, 0, Recorder::default()).unwrap();
    assert_eq!(
        crate::devices::virtio::VirtioDevice::features(&plain),
        VIRTIO_F_VERSION_1,
        "nothing the back-end lacks"
    );

    let mem = GuestMemory::new(4).unwrap();
    let mut d = driver(&mem, vsock(Recorder::default()));
    assert_eq!(d.device_features(), VIRTIO_F_VERSION_1 | INDIRECT | EVENT_IDX);
    assert_eq!(d.negotiate(VIRTIO_F_VERSION_1 | PROTOCOL_FEATURES) & status::FEATURES_OK, 0, "bit 30 is not virtio's");
}

#[test]
fn driver_ok_hands_the_ready_queues_to_the_backend_in_host_addresses() {
    let mem = GuestMemory::new(4).unwrap();
    let host = mem.regions()[0].host_addr;
    let mut d = driver(&mem, vsock(Recorder::default()));
    set_up(&mut d, &[0, 1]);
    assert_eq!(d.reg(regs::INTERRUPT_STATUS), 0, "nothing is live yet");
    assert_eq!(d.start() & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET), status::DRIVER_OK);

    let vring = |index: u16| {
        let base = Driver::<VhostUser<Recorder>>::ring_base(index);
        VringPlan {
            index: usize::from(index),
            size: 16,
            desc: host + base,
            avail: host + base + 0x1000,
            used: host + base + 0x2000,
            next_avail: 0,
        }
    };
    assert_eq!(
        calls(&d),
        [Call::Start { features: VIRTIO_F_VERSION_1 | PROTOCOL_FEATURES, vrings: vec![vring(0), vring(1)], kicks: 3 }],
        "the event queue was not set up, so it is not handed over"
    );
    assert_eq!(d.transport.device().state(), BackendState::Running);
    assert_eq!(d.reg(regs::INTERRUPT_STATUS), 1, "the back-end interrupts behind our back: always look");
}

#[test]
fn trapped_kicks_reach_the_queue_eventfd_only_while_running() {
    let mem = GuestMemory::new(4).unwrap();
    let mut d = driver(&mem, vsock(Recorder::default()));
    set_up(&mut d, &[0, 1, 2]);
    d.select_queue(1);
    d.notify();
    assert_eq!(d.transport.stats().ignored_notifies, 1, "not live yet");
    d.start();
    d.notify();
    d.notify();
    let device = d.transport.device();
    assert_eq!(device.kicks()[1].read().unwrap(), 2);
    assert!(device.kicks()[0].read().is_err(), "queue 0 was not kicked");
    assert_eq!(device.stats().kicks, 2);
}

#[test]
fn a_reset_stops_the_backend_and_the_next_driver_ok_starts_it_again() {
    let mem = GuestMemory::new(4).unwrap();
    let mut d = driver(&mem, vsock(Recorder::default()));
    set_up(&mut d, &[0]);
    d.start();
    d.set_reg(regs::STATUS, 0);
    assert_eq!(d.transport.device().state(), BackendState::Idle);
    set_up(&mut d, &[0, 1, 2]);
    assert_ne!(d.start() & status::DRIVER_OK, 0);
    let kinds: Vec<_> = calls(&d).iter().map(|c| matches!(c, Call::Stop)).collect();
    assert_eq!(kinds, [false, true, false], "start, stop, start");
    assert_eq!(d.transport.device().stats().started, 2);
}

#[test]
fn a_backend_that_fails_to_start_leaves_the_device_needing_reset() {
    let mem = GuestMemory::new(4).unwrap();
    let mut d = driver(&mem, vsock(Recorder { fail_start: true, ..Recorder::default() }));
    set_up(&mut d, &[0, 1, 2]);
    let after = d.start();
    assert_eq!(after & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET), status::DEVICE_NEEDS_RESET);
    assert_eq!(d.reg(regs::INTERRUPT_STATUS), 2, "a config-change interrupt, no used-buffer one");
    assert_eq!(d.transport.device().state(), BackendState::Lost);
    assert!(d.transport.device().last_error().unwrap().contains("SET_MEM_TABLE"));

    // The driver resets and tries again: the lost back-end is asked nothing.
    set_up(&mut d, &[0, 1, 2]);
    assert_ne!(d.start() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(calls(&d).len(), 1);
    d.notify();
    assert_eq!(d.transport.device().stats().kicks, 0);
}

#[test]
fn features_never_offered_and_unfit_queues_never_reach_the_backend() {
    let mem = GuestMemory::new(4).unwrap();
    let line = EventFd::new(0).unwrap();
    let mut device = vsock(Recorder::default());

    // What the transport would refuse anyway, straight at the device.
    device.set_acked(VIRTIO_F_VERSION_1 | 1 << 34);
    let mut q = Queue::new(16).unwrap();
    q.set_ready(true);
    assert!(!device.start(std::slice::from_ref(&q), mem.backend(), &line));
    assert_eq!(device.stats().bad_features, 1);

    device.set_acked(VIRTIO_F_VERSION_1);
    q.set_desc_table_address(Some(0), Some(1)); // 4 GiB: no RAM there
    assert!(!device.start(&[q], mem.backend(), &line));
    assert_eq!(device.stats().bad_queues, 1);
    assert!(device.last_error().unwrap().contains("descriptor table"));
    assert!(device.backend().calls.is_empty());
    assert_eq!(device.state(), BackendState::Idle, "refusing a driver doesn't lose the back-end");
}

#[test]
fn a_backend_hanging_up_sets_needs_reset_and_the_vmm_carries_on() {
    let mem = GuestMemory::new(4).unwrap();
    let mut d = driver(&mem, vsock(Recorder::default()));
    set_up(&mut d, &[0, 1, 2]);
    d.start();
    let transport = Arc::new(Mutex::new(d.into_transport()));
    let (ours, theirs) = UnixStream::pair().unwrap();
    let watch = BackendWatch::spawn(ours.as_fd(), Arc::downgrade(&transport)).unwrap();

    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(transport.lock().unwrap().status() & status::DEVICE_NEEDS_RESET, 0, "no hang-up yet");
    drop(theirs);
    let deadline = Instant::now() + Duration::from_secs(5);
    while transport.lock().unwrap().status() & status::DEVICE_NEEDS_RESET == 0 {
        assert!(Instant::now() < deadline, "the hang-up was never noticed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut t = transport.lock().unwrap();
    assert_eq!(t.device().state(), BackendState::Lost);
    let mut isr = [0u8; 4];
    t.read(regs::INTERRUPT_STATUS, &mut isr);
    assert_eq!(u32::from_le_bytes(isr) & 2, 2, "the driver is told");
    assert_eq!(t.interrupt().raised(), 1);
    drop(t);
    drop(watch);
}

#[test]
fn a_dropped_watch_stops_watching() {
    let mem = GuestMemory::new(4).unwrap();
    let transport = Arc::new(Mutex::new(MmioTransport::new(vsock(Recorder::default()), &mem).unwrap()));
    let (ours, theirs) = UnixStream::pair().unwrap();
    drop(BackendWatch::spawn(ours.as_fd(), Arc::downgrade(&transport)).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    drop(theirs);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(transport.lock().unwrap().device().state(), BackendState::Idle);
}
