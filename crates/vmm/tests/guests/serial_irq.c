/* COM1's interrupt reaches the guest's local APIC through KVM's irqchip.
 *
 * Contract with tests/e2e/boot.rs: COM1 at 0x3f8 on ISA IRQ 4. The guest
 * (interrupts off, so a delivered interrupt stays pending in the IRR)
 * enables its local APIC, routes IOAPIC pin 4 to a vector, checks nothing is
 * pending while the UART's IER is 0, then enables the THR-empty interrupt
 * and checks the vector became pending. Prints each step; exit code 0 when
 * all went as expected. */
#include "guest.h"

#define LAPIC 0xfee00000UL
#define LAPIC_SVR 0xf0
#define LAPIC_IRR 0x200
#define IOAPIC 0xfec00000UL
#define COM1_IRQ 4
#define VECTOR 0x41
#define COM1_IER (COM1 + 1)
#define COM1_IIR (COM1 + 2)
#define IER_THRE 0x02

static void ioapic_write(unsigned int reg, unsigned int value) {
    *(volatile unsigned int *)IOAPIC = reg;
    *(volatile unsigned int *)(IOAPIC + 0x10) = value;
}

static int pending(void) {
    volatile unsigned int *irr = (volatile unsigned int *)(LAPIC + LAPIC_IRR + 0x10 * (VECTOR / 32));
    for (int i = 0; i < 20000; i++) {
        if (*irr & (1u << (VECTOR % 32))) return 1;
    }
    return 0;
}

static int failed;

static void check(int ok, const char *what) {
    serial_puts(ok ? "ok " : "FAIL ");
    serial_puts(what);
    serial_putc('\n');
    failed |= !ok;
}

void _start(void) {
    *(volatile unsigned int *)(LAPIC + LAPIC_SVR) = 0x1ff;
    ioapic_write(0x10 + 2 * COM1_IRQ + 1, 0);
    ioapic_write(0x10 + 2 * COM1_IRQ, VECTOR); /* edge, active high, unmasked */
    serial_puts("serial irq\n");
    check(!pending(), "quiet while IER is 0");
    outb(COM1_IER, IER_THRE);
    check(pending(), "THR empty raised IRQ 4");
    check((inb(COM1_IIR) & 0x0f) == 0x02, "IIR names THR empty");
    guest_exit(failed);
}
