/* SMP as on hardware: the BSP counts the CPUs in the MP table, starts every
 * AP with INIT, SIPI, SIPI (broadcast through its local APIC's ICR), and
 * waits for each AP to check in.
 *
 * An AP starts in 16-bit real mode at the SIPI vector's page (0x3000): the
 * trampoline counts itself in at AP_COUNT, then bumps AP_BEATS forever, so
 * the BSP can also see the APs keep running. */
#include "guest.h"

#define MPTABLE 0x9fc00UL
#define LAPIC 0xfee00000UL
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_BUSY (1u << 12)
/* Level assert, destination shorthand "all excluding self". */
#define ICR_ALL_BUT_SELF 0x000c4000u
#define ICR_INIT 0x500u
#define ICR_STARTUP 0x600u
#define TRAMPOLINE 0x3000UL
#define AP_COUNT 0x3f00UL
#define AP_BEATS 0x3f04UL
#define POLLS 3000000UL

static const unsigned char trampoline[] = {
    0xf0, 0x66, 0xff, 0x06, 0x00, 0x3f, /*    lock inc dword [0x3f00] */
    0xf0, 0x66, 0xff, 0x06, 0x04, 0x3f, /* 1: lock inc dword [0x3f04] */
    0xeb, 0xf8,                         /*    jmp 1b */
};

static volatile unsigned int *reg32(unsigned long addr) {
    return (volatile unsigned int *)addr;
}

static void lapic_write(unsigned long reg, unsigned int v) {
    *reg32(LAPIC + reg) = v;
}

static void send_ipi(unsigned int command) {
    lapic_write(LAPIC_ICR_HI, 0);
    lapic_write(LAPIC_ICR_LO, ICR_ALL_BUT_SELF | command);
    while (*reg32(LAPIC + LAPIC_ICR_LO) & ICR_BUSY) {
    }
}

/* Processor entries (type 0, 20 bytes) in the MP configuration table. */
static unsigned int mp_cpus(void) {
    unsigned long table = *reg32(MPTABLE + 4);
    unsigned int entries = *(volatile unsigned short *)(table + 34);
    unsigned long p = table + 44;
    unsigned int cpus = 0;
    for (unsigned int i = 0; i < entries; i++) {
        unsigned char type = *(volatile unsigned char *)p;
        if (type == 0) {
            cpus++;
            p += 20;
        } else {
            p += 8;
        }
    }
    return cpus;
}

void _start(void) {
    unsigned int cpus = mp_cpus();
    serial_puts("smp: cpus ");
    serial_puthex(cpus);
    serial_putc('\n');

    for (unsigned long i = 0; i < sizeof(trampoline); i++) {
        ((volatile unsigned char *)TRAMPOLINE)[i] = trampoline[i];
    }
    *reg32(AP_COUNT) = 0;
    *reg32(AP_BEATS) = 0;
    lapic_write(LAPIC_SVR, 0x1ff); /* software-enable the local APIC */
    send_ipi(ICR_INIT);
    send_ipi(ICR_STARTUP | (TRAMPOLINE >> 12));
    send_ipi(ICR_STARTUP | (TRAMPOLINE >> 12));

    unsigned long polls = 0;
    while (*reg32(AP_COUNT) < cpus - 1 && polls < POLLS) polls++;
    serial_puts("smp: aps up ");
    serial_puthex(*reg32(AP_COUNT));
    serial_putc('\n');
    if (*reg32(AP_COUNT) != cpus - 1) guest_exit(1);
    if (cpus > 1) {
        unsigned int beats = *reg32(AP_BEATS);
        for (polls = 0; *reg32(AP_BEATS) == beats && polls < POLLS; polls++) {
        }
        if (*reg32(AP_BEATS) == beats) guest_exit(2);
        serial_puts("smp: aps running\n");
    }
    guest_exit(0);
}
