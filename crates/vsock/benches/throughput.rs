//! moat-vsock stream throughput through the device code: `guest::Bench`, the
//! strict in-process driver of the unit tests (split rings in test memory,
//! Linux-like kicks and interrupts, RX refill), moves a stream each way
//! between a guest socket and a host Unix socket, calling `process_tx`,
//! `process_rx` and `handle_host_events` as the vhost-user worker would. No
//! VM, vhost-user messages or eventfds: it measures our ring walks, copies,
//! credit flow and host socket calls, with the driver on the device's thread
//! and a host thread at the other end. Beside each case, a plain Unix
//! socketpair moves the same bytes with the same chunk sizes: the ceiling of
//! the device's host side.
//!
//! `cargo bench -p moat-vsock --bench throughput [-- --mib 256 --runs 3]`
//! prints one line per case (the median run): MiB/s through the device and
//! through the socketpair, then CPU time per GiB moved inside the device's
//! entry points (and the MiB/s that makes for one core running only the
//! device, as the vhost-user worker thread does beside the vCPUs), on the
//! thread that runs driver and device, and on the host program's thread. Run by `cargo test
//! --all-targets` (no `--bench` argument), each case moves 4 MiB once and the
//! data is checked, as a smoke test.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use moat_vsock::guest::{pkt, Bench};
use moat_vsock::packet::{Header, Op, MAX_PAYLOAD};

/// The host service's port, and the guest's port.
const HOST_PORT: u32 = 5000;
const GUEST_PORT: u32 = 1024;
/// The guest's receive buffer for a connection (`buf_alloc`, as `pkt` says).
const GUEST_BUF_ALLOC: u32 = 256 * 1024;
/// What a host program reads or writes at a time.
const HOST_IO: usize = 64 * 1024;
/// What the device reads from a host socket at a time: one Linux RX buffer.
const RX_PAYLOAD: usize = 4096;
/// Give up on a case that makes no progress for this long.
const STALL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
enum Case {
    /// The guest writes packets of this payload size to a host service.
    GuestToHost(usize),
    /// A host client writes to the guest, which takes 4 KiB RX buffers.
    HostToGuest,
}

/// One run: wall time and CPU time of each part.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    /// Inside the device's entry points.
    device: Duration,
    /// The thread running the driver and the device (or the socketpair's device side).
    guest: Duration,
    /// The host program's thread.
    host: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let arg = |name: &str, default: u64| {
        let at = args.iter().position(|a| a == name);
        at.and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().expect("a number"))
    };
    let (mib, runs) = if smoke { (4, 1) } else { (arg("--mib", 256), arg("--runs", 3).max(1)) };
    let total = mib << 20;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "vsock bench: {mib} MiB per run, median of {runs}; {} CPUs, load average {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        load.join(" ")
    );
    println!(
        "  {:<30} {:>13} {:>11} {:>6}   {:<26}   CPU s/GiB: driver+device, host thread",
        "", "MiB/s: device", "socketpair", "ratio", "device CPU s/GiB (MiB/s)"
    );
    let cases = [
        ("guest → host, 64 KiB packets", Case::GuestToHost(MAX_PAYLOAD)),
        ("guest → host, 4 KiB packets", Case::GuestToHost(4096)),
        ("host → guest, 4 KiB RX buffers", Case::HostToGuest),
    ];
    for (name, case) in cases {
        let device = median((0..runs).map(|_| match case {
            Case::GuestToHost(chunk) => guest_to_host(total, chunk, smoke),
            Case::HostToGuest => host_to_guest(total, smoke),
        }));
        let pair = median((0..runs).map(|_| match case {
            Case::GuestToHost(chunk) => socketpair(total, chunk, HOST_IO),
            Case::HostToGuest => socketpair(total, HOST_IO, RX_PAYLOAD),
        }));
        let (dev_rate, pair_rate) = (mib as f64 / device.secs, mib as f64 / pair.secs);
        let per_gib = |d: Duration| d.as_secs_f64() * 1024.0 / mib as f64;
        println!(
            "  {name:<30} {dev_rate:>13.0} {pair_rate:>11.0} {:>6.2}   {:>15.2} {:<10}   {:.2}, {:.2}",
            dev_rate / pair_rate,
            per_gib(device.device),
            format!("({:.0})", 1024.0 / per_gib(device.device)),
            per_gib(device.guest),
            per_gib(device.host),
        );
    }
}

fn median(samples: impl Iterator<Item = Sample>) -> Sample {
    let mut v: Vec<Sample> = samples.collect();
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    v[v.len() / 2]
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on our stack.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The stream's bytes: byte `i` is `i % 251`, so a slice of `pattern` starting at
/// `offset % 251` continues the stream at `offset`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len + 251).map(|i| (i % 251) as u8).collect()
}

fn check(offset: u64, bytes: &[u8]) {
    let start = (offset % 251) as usize;
    assert!(bytes.iter().zip(start..).all(|(&b, i)| b == (i % 251) as u8), "wrong data at stream offset {offset}");
}

fn new_bench() -> Bench {
    let mut b = Bench::new(true);
    b.clock = Some(thread_cpu);
    b
}

/// The guest writes `total` bytes in packets of at most `chunk` bytes (header
/// and payload in separate descriptors) within the host side's credit; a host
/// service reads them.
fn guest_to_host(total: u64, chunk: usize, verify: bool) -> Sample {
    let mut b = new_bench();
    let listener = b.listen(HOST_PORT);
    let reader = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let (cpu, mut buf, mut got) = (thread_cpu(), vec![0u8; HOST_IO], 0u64);
        while got < total {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "EOF after {got} bytes");
            if verify {
                check(got, &buf[..n]);
            }
            got += n as u64;
        }
        (Instant::now(), thread_cpu() - cpu)
    });
    b.send(&pkt(Op::Request, GUEST_PORT, HOST_PORT), &[]);
    b.pump();
    let got = b.take();
    let response = got.first().map(|(h, _)| *h).filter(|h| h.op() == Some(Op::Response));
    let mut peer = response.unwrap_or_else(|| panic!("no RESPONSE: {got:?}"));

    let data = pattern(chunk);
    let (start, cpu, device) = (Instant::now(), thread_cpu(), b.device_cpu);
    let mut sent = 0u64;
    let mut progress = Instant::now();
    while sent < total {
        for (h, _) in b.take() {
            follow(&mut b, &h, &mut peer);
        }
        let mut credit = u64::from(peer.buf_alloc.saturating_sub((sent as u32).wrapping_sub(peer.fwd_cnt)));
        let queued = credit > 0;
        while credit > 0 && sent < total {
            let n = (chunk as u64).min(credit).min(total - sent);
            let at = (sent % 251) as usize;
            b.send(&pkt(Op::Rw, GUEST_PORT, HOST_PORT), &data[at..at + n as usize]);
            sent += n;
            credit -= n;
        }
        if b.pump_once(if queued { 0 } else { 100 }) {
            progress = Instant::now();
        }
        assert!(progress.elapsed() < STALL, "stalled at {sent} bytes");
    }
    while !reader.is_finished() {
        b.pump_once(10);
        for (h, _) in b.take() {
            follow(&mut b, &h, &mut peer);
        }
    }
    let guest = thread_cpu() - cpu;
    let (end, host) = reader.join().unwrap();
    Sample { secs: (end - start).as_secs_f64(), device: b.device_cpu - device, guest, host }
}

/// What the guest does with a packet from the host on the sending connection.
fn follow(b: &mut Bench, h: &Header, peer: &mut Header) {
    match h.op() {
        Some(Op::CreditRequest) => b.send(&pkt(Op::CreditUpdate, GUEST_PORT, HOST_PORT), &[]),
        // The host service closes once it has everything.
        Some(Op::CreditUpdate | Op::Response | Op::Shutdown) => {}
        other => panic!("unexpected {other:?}: {h:?}"),
    }
    (peer.buf_alloc, peer.fwd_cnt) = (h.buf_alloc, h.fwd_cnt);
}

/// A host client writes `total` bytes; the guest takes them in 4 KiB RX
/// buffers (refilled as used) and sends a CREDIT_UPDATE when what the device
/// believes free drops below 64 KiB, as Linux does.
fn host_to_guest(total: u64, verify: bool) -> Sample {
    let mut b = new_bench();
    let uds = b.uds();
    let writer = thread::spawn(move || {
        let mut s = UnixStream::connect(uds).unwrap();
        s.write_all(format!("CONNECT {GUEST_PORT}\n").as_bytes()).unwrap();
        let mut line = Vec::new();
        while line.last() != Some(&b'\n') {
            let mut byte = [0u8];
            s.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        assert!(line.starts_with(b"OK "), "{line:?}");
        let (cpu, data, mut sent) = (thread_cpu(), pattern(HOST_IO), 0u64);
        while sent < total {
            let n = (HOST_IO as u64).min(total - sent) as usize;
            let at = (sent % 251) as usize;
            s.write_all(&data[at..at + n]).unwrap();
            sent += n as u64;
        }
        thread_cpu() - cpu
    });
    let deadline = Instant::now() + STALL;
    let request = loop {
        assert!(Instant::now() < deadline, "no REQUEST from the device");
        b.pump_once(100);
        if let Some((h, _)) = b.take().first() {
            assert_eq!(h.op(), Some(Op::Request), "{h:?}");
            break *h;
        }
    };
    let host_port = request.src_port;
    b.send(&pkt(Op::Response, GUEST_PORT, host_port), &[]);

    let (start, cpu, device) = (Instant::now(), thread_cpu(), b.device_cpu);
    let (mut got, mut told) = (0u64, 0u32);
    let mut progress = Instant::now();
    while got < total {
        if b.pump_once(100) {
            progress = Instant::now();
        }
        assert!(progress.elapsed() < STALL, "stalled at {got} bytes");
        let mut asked = false;
        for (h, payload) in b.take() {
            match h.op() {
                Some(Op::Rw) => {
                    if verify {
                        check(got, &payload);
                    }
                    got += payload.len() as u64;
                }
                Some(Op::CreditRequest) => asked = true,
                // The client closes once it has written everything.
                Some(Op::Shutdown) => {}
                other => panic!("unexpected {other:?}: {h:?}"),
            }
        }
        let fwd_cnt = got as u32;
        if asked || GUEST_BUF_ALLOC.saturating_sub(fwd_cnt.wrapping_sub(told)) < MAX_PAYLOAD as u32 {
            let mut h = pkt(Op::CreditUpdate, GUEST_PORT, host_port);
            h.fwd_cnt = fwd_cnt;
            b.send(&h, &[]);
            told = fwd_cnt;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let guest = thread_cpu() - cpu;
    let host = writer.join().unwrap();
    Sample { secs, device: b.device_cpu - device, guest, host }
}

/// The same bytes through a Unix socketpair: one thread writes `write_chunk`
/// bytes at a time, this one reads `read_chunk` at a time.
fn socketpair(total: u64, write_chunk: usize, read_chunk: usize) -> Sample {
    let (mut rx, mut tx) = UnixStream::pair().unwrap();
    let start = Instant::now();
    let writer = thread::spawn(move || {
        let (cpu, data, mut sent) = (thread_cpu(), pattern(write_chunk), 0u64);
        while sent < total {
            let n = (write_chunk as u64).min(total - sent) as usize;
            let at = (sent % 251) as usize;
            tx.write_all(&data[at..at + n]).unwrap();
            sent += n as u64;
        }
        thread_cpu() - cpu
    });
    let (cpu, mut buf, mut got) = (thread_cpu(), vec![0u8; read_chunk], 0u64);
    while got < total {
        let n = rx.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {got} bytes");
        got += n as u64;
    }
    let (secs, reader) = (start.elapsed().as_secs_f64(), thread_cpu() - cpu);
    let writer = writer.join().unwrap();
    // The device side: the writer for guest → host cases, the reader for host → guest.
    let (guest, host) = if read_chunk == RX_PAYLOAD { (reader, writer) } else { (writer, reader) };
    Sample { secs, device: guest, guest, host }
}
