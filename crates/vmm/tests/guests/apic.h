/* Just enough of the local APIC and the IOAPIC to see an interrupt arrive
 * with interrupts off: route an IOAPIC pin to a vector, then watch the
 * vector's bit in the local APIC's IRR. */
#ifndef MOAT_APIC_H
#define MOAT_APIC_H

#define LAPIC 0xfee00000UL
#define LAPIC_SVR 0xf0
#define LAPIC_IRR 0x200
#define IOAPIC 0xfec00000UL

static inline void ioapic_write(unsigned int reg, unsigned int value) {
    *(volatile unsigned int *)IOAPIC = reg;
    *(volatile unsigned int *)(IOAPIC + 0x10) = value;
}

/* Software-enables the local APIC and routes IOAPIC `pin` (edge, active
 * high, unmasked) to `vector` on CPU 0. */
static inline void route_irq(unsigned int pin, unsigned int vector) {
    *(volatile unsigned int *)(LAPIC + LAPIC_SVR) = 0x1ff;
    ioapic_write(0x10 + 2 * pin + 1, 0);
    ioapic_write(0x10 + 2 * pin, vector);
}

/* Whether `vector` becomes pending in the IRR within a bounded poll. */
static inline int vector_pending(unsigned int vector) {
    volatile unsigned int *irr = (volatile unsigned int *)(LAPIC + LAPIC_IRR + 0x10 * (vector / 32));
    for (int i = 0; i < 100000; i++) {
        if (*irr & (1u << (vector % 32))) return 1;
    }
    return 0;
}

#endif
