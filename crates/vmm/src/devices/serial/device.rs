//! 16550A register model. Output is instantaneous (THR is always empty) and
//! lands in a bounded buffer: once `limit` bytes are waiting, further bytes
//! are dropped and counted, so a guest printing forever cannot grow host
//! memory. Draining with [`Serial::take_output`] makes room again.
//!
//! Not modelled yet: input (RBR never has data), interrupts, loopback.

const DATA: u64 = 0; // THR (write) / RBR (read); DLL when DLAB=1
const IER: u64 = 1; // DLM when DLAB=1
const IIR_FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

const LCR_DLAB: u8 = 0x80;
/// THR empty and transmitter idle: the guest may always send.
const LSR_IDLE: u8 = 0x60;
/// No interrupt pending.
const IIR_NONE: u8 = 0x01;
/// FIFOs enabled, reported in IIR[7:6].
const IIR_FIFO: u8 = 0xc0;
/// DCD, DSR and CTS asserted: a terminal is connected and ready.
const MSR_READY: u8 = 0xb0;
const IER_MASK: u8 = 0x0f;

/// Output accounting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SerialStats {
    /// Bytes the guest wrote to THR.
    pub written: u64,
    /// Bytes dropped because the buffer was full.
    pub dropped: u64,
}

/// The UART state.
#[derive(Debug)]
pub struct Serial {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fifo_enabled: bool,
    divisor: u16,
    out: Vec<u8>,
    limit: usize,
    stats: SerialStats,
}

impl Serial {
    /// A UART keeping at most `limit` bytes of undrained output.
    pub fn new(limit: usize) -> Self {
        Self {
            ier: 0,
            lcr: 0x03, // 8N1
            mcr: 0x08, // OUT2
            scr: 0,
            fifo_enabled: false,
            divisor: 12, // 9600 baud
            out: Vec::new(),
            limit,
            stats: SerialStats::default(),
        }
    }

    /// Reads register `offset` (0..8).
    pub fn read_register(&mut self, offset: u64) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            DATA if dlab => self.divisor as u8,
            IER if dlab => (self.divisor >> 8) as u8,
            DATA => 0,
            IER => self.ier,
            IIR_FCR if self.fifo_enabled => IIR_NONE | IIR_FIFO,
            IIR_FCR => IIR_NONE,
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => LSR_IDLE,
            MSR => MSR_READY,
            SCR => self.scr,
            _ => 0xff,
        }
    }

    /// Writes `value` to register `offset` (0..8).
    pub fn write_register(&mut self, offset: u64, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            DATA if dlab => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            IER if dlab => self.divisor = (self.divisor & 0x00ff) | (u16::from(value) << 8),
            DATA => self.transmit(value),
            IER => self.ier = value & IER_MASK,
            IIR_FCR => self.fifo_enabled = value & 1 != 0,
            LCR => self.lcr = value,
            MCR => self.mcr = value & 0x1f,
            SCR => self.scr = value,
            _ => {} // LSR and MSR are read-only.
        }
    }

    /// Output not yet drained.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Drains the buffered output, making room for more.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Bytes written and dropped so far.
    pub fn stats(&self) -> SerialStats {
        self.stats
    }

    fn transmit(&mut self, byte: u8) {
        self.stats.written += 1;
        if self.out.len() < self.limit {
            self.out.push(byte);
        } else {
            self.stats.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thr_writes_reach_the_buffer_and_lsr_says_ready() {
        let mut s = Serial::new(64);
        assert_eq!(s.read_register(LSR) & 0x20, 0x20, "THRE");
        assert_eq!(s.read_register(LSR) & 0x01, 0, "no input");
        for b in b"hi\n" {
            s.write_register(DATA, *b);
        }
        assert_eq!(s.output(), b"hi\n");
        assert_eq!(s.read_register(LSR), LSR_IDLE);
    }

    #[test]
    fn output_is_bounded_and_drops_are_counted() {
        let mut s = Serial::new(4);
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
        let mut s = Serial::new(4);
        s.write_register(LCR, 0x83);
        s.write_register(DATA, 0x01);
        s.write_register(IER, 0x00);
        assert_eq!(s.read_register(DATA), 1);
        s.write_register(LCR, 0x03);
        assert_eq!(s.output(), b"", "divisor writes are not output");
        s.write_register(IER, 0xff);
        assert_eq!(s.read_register(IER), 0x0f);
        assert_eq!(s.read_register(IIR_FCR), IIR_NONE);
        s.write_register(IIR_FCR, 0x07);
        assert_eq!(s.read_register(IIR_FCR), 0xc1);
        s.write_register(SCR, 0x5a);
        assert_eq!(s.read_register(SCR), 0x5a);
        assert_eq!(s.read_register(MSR), MSR_READY);
    }
}
