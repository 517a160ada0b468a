//! The boot vCPU's local APIC as the MP table describes it: LINT0 takes the
//! 8259 PIC's output (ExtINT), LINT1 is the NMI line.

use kvm_bindings::kvm_lapic_state;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const DELIVERY_MODE_MASK: u32 = 0x700;
const MODE_NMI: u32 = 0x4;
const MODE_EXTINT: u32 = 0x7;

fn reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| state.regs[offset + i] as u8);
    u32::from_le_bytes(bytes)
}

fn set_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().into_iter().enumerate() {
        state.regs[offset + i] = b as _;
    }
}

fn with_delivery_mode(lvt: u32, mode: u32) -> u32 {
    (lvt & !DELIVERY_MODE_MASK) | (mode << 8)
}

/// `state` with LINT0 in ExtINT and LINT1 in NMI delivery mode; masks and
/// other fields are kept.
pub fn wire_lint_pins(mut state: kvm_lapic_state) -> kvm_lapic_state {
    let lvt0 = reg(&state, APIC_LVT0);
    set_reg(&mut state, APIC_LVT0, with_delivery_mode(lvt0, MODE_EXTINT));
    let lvt1 = reg(&state, APIC_LVT1);
    set_reg(&mut state, APIC_LVT1, with_delivery_mode(lvt1, MODE_NMI));
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint0_is_extint_and_lint1_is_nmi() {
        let mut state = kvm_lapic_state::default();
        set_reg(&mut state, APIC_LVT0, 0x1_0000); // masked, fixed
        set_reg(&mut state, APIC_LVT1, 0x1_0700);
        set_reg(&mut state, 0x20, 0xdead_beef);
        let state = wire_lint_pins(state);
        assert_eq!(reg(&state, APIC_LVT0), 0x1_0700, "mask kept, mode ExtINT");
        assert_eq!(reg(&state, APIC_LVT1), 0x1_0400, "mask kept, mode NMI");
        assert_eq!(reg(&state, 0x20), 0xdead_beef, "other registers untouched");
    }
}
