//! COM1: rust-vmm's 16550A model (`vm-superio`) with our two host-side
//! pieces — a bounded output buffer and an interrupt line.
//!
//! Output is instantaneous (THR is always empty) and lands in a bounded
//! buffer: once `limit` bytes are waiting, further bytes are dropped and
//! counted, so a guest printing forever cannot grow host memory. Draining
//! with [`Serial::take_output`] makes room again. Input goes through the
//! model's 64-byte FIFO ([`Serial::enqueue_input`]); the model raises the
//! THR-empty and received-data interrupts the guest enabled on the line,
//! which the device manager routes to IRQ 4 through a KVM irqfd.

use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// Output accounting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SerialStats {
    /// Bytes the guest wrote to THR.
    pub written: u64,
    /// Bytes dropped because the buffer was full.
    pub dropped: u64,
}

/// The UART.
pub struct Serial {
    uart: vm_superio::Serial<IrqLine, NoEvents, BoundedOutput>,
}

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serial").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Serial {
    /// A UART keeping at most `limit` bytes of undrained output, raising its
    /// interrupt on `irq` (an irqfd), or nowhere when `None`.
    pub fn new(limit: usize, irq: Option<EventFd>) -> Self {
        let out = BoundedOutput { out: Vec::new(), limit, stats: SerialStats::default() };
        Self { uart: vm_superio::Serial::new(IrqLine(irq), out) }
    }

    /// Reads register `offset` (0..8).
    pub fn read_register(&mut self, offset: u64) -> u8 {
        match u8::try_from(offset) {
            Ok(offset) if offset < 8 => self.uart.read(offset),
            _ => 0xff,
        }
    }

    /// Writes `value` to register `offset` (0..8). A failed interrupt
    /// (the irqfd's counter is full) is not the guest's problem: the byte
    /// was still taken, and the line is raised again on the next event.
    pub fn write_register(&mut self, offset: u64, value: u8) {
        if let Ok(offset) = u8::try_from(offset) {
            if offset < 8 {
                let _ = self.uart.write(offset, value);
            }
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the
    /// FIFO (the rest is the caller's to retry once the guest has read).
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(input) {
            Ok(n) => n,
            // A full FIFO takes nothing; a failed interrupt still took the bytes.
            Err(vm_superio::serial::Error::FullFifo) => 0,
            Err(_) => input.len().min(self.uart.fifo_capacity()),
        }
    }

    /// Output not yet drained.
    pub fn output(&self) -> &[u8] {
        &self.uart.writer().out
    }

    /// Drains the buffered output, making room for more.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.uart.writer_mut().out)
    }

    /// Bytes written and dropped so far.
    pub fn stats(&self) -> SerialStats {
        self.uart.writer().stats
    }
}

/// The UART's interrupt: an eventfd KVM turns into an edge on IRQ 4.
struct IrqLine(Option<EventFd>);

impl Trigger for IrqLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        match &self.0 {
            Some(line) => line.write(1),
            None => Ok(()),
        }
    }
}

/// Where transmitted bytes go: kept up to `limit`, then counted and dropped.
struct BoundedOutput {
    out: Vec<u8>,
    limit: usize,
    stats: SerialStats,
}

impl Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.out.len());
        let kept = buf.len().min(room);
        self.out.extend_from_slice(&buf[..kept]);
        self.stats.written += buf.len() as u64;
        self.stats.dropped += (buf.len() - kept) as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const LSR: u64 = 5;
    const MSR: u64 = 6;
    const SCR: u64 = 7;

    #[test]
    fn thr_writes_reach_the_buffer_and_lsr_says_ready() {
        let mut s = Serial::new(64, None);
        assert_eq!(s.read_register(LSR) & 0x20, 0x20, "THRE");
        assert_eq!(s.read_register(LSR) & 0x01, 0, "no input");
        for b in b"hi\n" {
            s.write_register(DATA, *b);
        }
        assert_eq!(s.output(), b"hi\n");
        assert_eq!(s.read_register(LSR), 0x60);
    }

    #[test]
    fn output_is_bounded_and_drops_are_counted() {
        let mut s = Serial::new(4, None);
        for b in 0..10u8 {
            s.write_register(DATA, b);
        }
        assert_eq!(s.output(), &[0, 1, 2, 3]);
        assert_eq!(s.stats(), SerialStats { written: 10, dropped: 6 });
        assert_eq!(s.take_output(), vec![0, 1, 2, 3]);
        s.write_register(DATA, 42);
        assert_eq!(s.output(), &[42], "draining makes room");
    }

    #[test]
    fn dlab_switches_data_and_ier_to_the_divisor() {
        let mut s = Serial::new(4, None);
        s.write_register(LCR, 0x83);
        s.write_register(DATA, 0x01);
        s.write_register(IER, 0x00);
        assert_eq!(s.read_register(DATA), 1);
        s.write_register(LCR, 0x03);
        assert_eq!(s.output(), b"", "divisor writes are not output");
        s.write_register(IER, 0xff);
        assert_eq!(s.read_register(IER), 0x0f, "only the 16550A's interrupt bits");
        s.write_register(SCR, 0x5a);
        assert_eq!(s.read_register(SCR), 0x5a);
        assert_eq!(s.read_register(MSR), 0xb0, "DCD, DSR, CTS: a terminal is there");
        assert_eq!(s.read_register(8), 0xff, "past the eight registers");
    }

    #[test]
    fn enabled_interrupts_reach_the_line_and_input_is_bounded_by_the_fifo() {
        let line = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let mut s = Serial::new(64, Some(line.try_clone().unwrap()));
        s.write_register(DATA, b'x');
        assert!(line.read().is_err(), "no interrupt while IER is 0");

        s.write_register(IER, 0x02); // THR empty
        assert_eq!(line.read().unwrap(), 1, "enabling THRE with an empty THR asserts it");
        assert_eq!(s.read_register(IIR) & 0x0f, 0x02, "IIR names THR empty");
        s.write_register(DATA, b'y');
        assert_eq!(line.read().unwrap(), 1, "each transmitted byte leaves THR empty again");

        s.write_register(IER, 0x01); // received data
        let _ = line.read();
        let input = [b'k'; 100];
        assert_eq!(s.enqueue_input(&input), 64, "the FIFO holds 64 bytes");
        assert_eq!(line.read().unwrap(), 1, "received data raises the line");
        assert_eq!(s.enqueue_input(b"more"), 0, "a full FIFO takes nothing");
        assert_eq!(s.read_register(LSR) & 0x01, 0x01, "data ready");
        let read: Vec<u8> = (0..64).map(|_| s.read_register(DATA)).collect();
        assert_eq!(read, vec![b'k'; 64]);
        assert_eq!(s.read_register(LSR) & 0x01, 0, "drained");
    }
}
