/* COM1's interrupt reaches the guest's local APIC through KVM's irqchip.
 *
 * Contract with tests/e2e/boot.rs: COM1 at 0x3f8 on ISA IRQ 4. The guest
 * (interrupts off, so a delivered interrupt stays pending in the IRR)
 * enables its local APIC, routes IOAPIC pin 4 to a vector, checks nothing is
 * pending while the UART's IER is 0, then enables the THR-empty interrupt
 * and checks the vector became pending. Prints each step; exit code 0 when
 * all went as expected. */
#include "guest.h"
#include "apic.h"

#define COM1_IRQ 4
#define VECTOR 0x41
#define COM1_IER (COM1 + 1)
#define COM1_IIR (COM1 + 2)
#define IER_THRE 0x02

static int failed;

static void check(int ok, const char *what) {
    serial_puts(ok ? "ok " : "FAIL ");
    serial_puts(what);
    serial_putc('\n');
    failed |= !ok;
}

void _start(void) {
    route_irq(COM1_IRQ, VECTOR);
    serial_puts("serial irq\n");
    check(!vector_pending(VECTOR), "quiet while IER is 0");
    outb(COM1_IER, IER_THRE);
    check(vector_pending(VECTOR), "THR empty raised IRQ 4");
    check((inb(COM1_IIR) & 0x0f) == 0x02, "IIR names THR empty");
    guest_exit(failed);
}
