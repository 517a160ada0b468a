//! The table parsed back the way a guest would: scan for the floating
//! pointer, check both checksums, walk the entries.

use super::*;

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[derive(Debug, Default, PartialEq)]
struct Parsed {
    /// (LAPIC ID, flags)
    cpus: Vec<(u8, u8)>,
    buses: Vec<(u8, String)>,
    /// (ID, address)
    ioapics: Vec<(u8, u32)>,
    /// (type, source line, IOAPIC ID, pin)
    interrupts: Vec<(u8, u8, u8, u8)>,
    /// (type, LAPIC, LINT pin)
    locals: Vec<(u8, u8, u8)>,
    lapic_addr: u32,
}

/// Scans base memory's last KiB on 16-byte boundaries, as Linux does.
fn parse(mem: &GuestMemory) -> Parsed {
    let mut region = vec![0u8; MPTABLE_BYTES];
    mem.read(MPTABLE_ADDR, &mut region).unwrap();
    let at = (0..MPTABLE_BYTES).step_by(16).find(|&o| region[o..].starts_with(b"_MP_")).expect("_MP_");
    let fp = &region[at..at + 16];
    assert_eq!(sum(fp), 0, "floating pointer checksum");
    assert_eq!((fp[8], fp[9], fp[11]), (1, 4, 0), "length, revision, feature 1 (a table follows)");

    let table_addr = u64::from(u32_at(fp, 4));
    let mut head = [0u8; HEADER_LEN];
    mem.read(table_addr, &mut head).unwrap();
    assert_eq!(&head[..4], b"PCMP");
    let len = usize::from(u16_at(&head, 4));
    let mut table = vec![0u8; len];
    mem.read(table_addr, &mut table).unwrap();
    assert_eq!(sum(&table), 0, "configuration table checksum");
    assert_eq!(table[6], 4, "revision 1.4");
    assert!(table_addr + len as u64 <= BASE_RAM_END, "the table stays in its KiB");

    let mut parsed = Parsed { lapic_addr: u32_at(&table, 36), ..Parsed::default() };
    let count = u16_at(&table, 34);
    let mut off = HEADER_LEN;
    for _ in 0..count {
        let e = &table[off..];
        off += match e[0] {
            ENTRY_PROCESSOR => {
                parsed.cpus.push((e[1], e[3]));
                PROCESSOR_LEN
            }
            ENTRY_BUS => {
                parsed.buses.push((e[1], String::from_utf8_lossy(&e[2..8]).into_owned()));
                ENTRY_LEN
            }
            ENTRY_IOAPIC => {
                assert_eq!(e[3] & 1, 1, "IOAPIC enabled");
                parsed.ioapics.push((e[1], u32_at(e, 4)));
                ENTRY_LEN
            }
            ENTRY_IO_INTERRUPT => {
                assert_eq!(e[4], 0, "source bus is the ISA bus");
                parsed.interrupts.push((e[1], e[5], e[6], e[7]));
                ENTRY_LEN
            }
            ENTRY_LOCAL_INTERRUPT => {
                parsed.locals.push((e[1], e[6], e[7]));
                ENTRY_LEN
            }
            other => panic!("unknown entry type {other}"),
        };
    }
    assert_eq!(off, len, "entry count and length agree");
    parsed
}

#[test]
fn one_vcpu_table_parses_back() {
    let mem = GuestMemory::new(2).unwrap();
    write_mptable(&mem, 1).unwrap();
    let p = parse(&mem);
    assert_eq!(p.cpus, vec![(0, CPU_ENABLED | CPU_BOOTSTRAP)]);
    assert_eq!(p.buses, vec![(0, "ISA   ".to_string())]);
    assert_eq!(p.ioapics, vec![(1, 0xfec0_0000)], "IOAPIC ID after the LAPIC IDs");
    assert_eq!(p.lapic_addr, 0xfee0_0000);
    assert_eq!(p.locals, vec![(INT_TYPE_EXTINT, 0, 0), (INT_TYPE_NMI, 0xff, 1)]);

    assert_eq!(p.interrupts.len(), 23);
    assert!(p.interrupts.iter().all(|&(kind, _, apic, _)| kind == INT_TYPE_INT && apic == 1));
    let pin_of = |line| p.interrupts.iter().find(|i| i.1 == line).map(|i| i.3);
    assert_eq!(pin_of(0), Some(2), "the PIT arrives on pin 2, as KVM routes GSI 0");
    assert_eq!(pin_of(2), None, "the cascade line is not routed");
    assert_eq!(pin_of(4), Some(4), "COM1");
    for irq in crate::arch::VIRTIO_IRQS {
        assert_eq!(pin_of(irq as u8), Some(irq as u8), "virtio line {irq}");
    }
}

#[test]
fn every_vcpu_is_listed_and_only_the_first_bootstraps() {
    let mem = GuestMemory::new(2).unwrap();
    let max = max_cpus();
    assert!(max >= 32, "{max}");
    write_mptable(&mem, max).unwrap();
    let p = parse(&mem);
    assert_eq!(p.cpus.len(), usize::from(max));
    assert!(p.cpus.iter().enumerate().all(|(i, &(id, _))| usize::from(id) == i));
    assert_eq!(p.cpus.iter().filter(|c| c.1 & CPU_BOOTSTRAP != 0).count(), 1);
    assert_eq!(p.ioapics[0].0, max);
}

#[test]
fn impossible_cpu_counts_are_errors() {
    let max = max_cpus();
    assert!(matches!(mptable(0), Err(MpTableError::CpuCount { cpus: 0, .. })));
    assert!(matches!(mptable(max + 1), Err(MpTableError::CpuCount { cpus, max: m }) if cpus == max + 1 && m == max));
}
