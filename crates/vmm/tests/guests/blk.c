/* A minimal polling virtio-mmio + virtio-blk driver.
 *
 * Contract with tests/e2e/blk.rs: a virtio-blk device in the first
 * virtio-mmio window (0xd0000000, IRQ 5); sector 0 of its image holds
 * sector0_byte(i). The guest negotiates features, sets up one 8-entry queue,
 * reads sector 0 and checks it, checks the interrupt status register and
 * that the interrupt reached the local APIC through the IOAPIC (IF stays 0,
 * so it stays pending in IRR), writes sector1_byte(i) to sector 1 (a
 * read-only device must answer IOERR), flushes, and reports each step on
 * COM1. Exit code 0 when every step went as expected, 1 otherwise. */
#include "guest.h"
#include "apic.h"

#define F_SEG_MAX (1u << 2)
#define F_RO (1u << 5)
#define F_BLK_SIZE (1u << 6)
#define F_FLUSH (1u << 9)

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define BLK_S_OK 0
#define BLK_S_IOERR 1

#define IRQ_VECTOR 0x35

#define QSIZE 8
#include "virtio_mmio.h"

struct blk_header {
    unsigned int type, reserved;
    unsigned long sector;
};

static volatile struct desc descs[QSIZE] __attribute__((aligned(16)));
static volatile struct avail avail __attribute__((aligned(4096)));
static volatile struct used used __attribute__((aligned(4096)));
static volatile struct blk_header header;
static volatile unsigned char data[512];
static volatile unsigned char blk_status;
static unsigned short used_seen;
static int failures;

static inline unsigned char sector0_byte(unsigned int i) { return (unsigned char)(i * 13 + 7); }
static inline unsigned char sector1_byte(unsigned int i) { return (unsigned char)(255 - i * 3); }

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static void put_dec(unsigned long v) {
    char buf[24];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) serial_putc(buf[--n]);
}

static void check(int ok, const char *what) {
    serial_puts("blk: ");
    serial_puts(what);
    serial_puts(ok ? " ok\n" : " FAILED\n");
    if (!ok) failures++;
}

static void set_desc(int i, const volatile void *addr, unsigned int len, unsigned short flags, unsigned short next) {
    descs[i].addr = (unsigned long)addr;
    descs[i].len = len;
    descs[i].flags = flags;
    descs[i].next = next;
}

/* One request, polled to completion: header, optional data, status byte. */
static int request(unsigned int type, unsigned long sector, unsigned int len, int device_writes) {
    header.type = type;
    header.reserved = 0;
    header.sector = sector;
    blk_status = 0xff;
    set_desc(0, &header, sizeof header, D_NEXT, 1);
    if (len) {
        set_desc(1, data, len, D_NEXT | (device_writes ? D_WRITE : 0), 2);
        set_desc(2, &blk_status, 1, D_WRITE, 0);
    } else {
        set_desc(1, &blk_status, 1, D_WRITE, 0);
    }
    avail.ring[avail.idx % QSIZE] = 0;
    barrier();
    avail.idx = avail.idx + 1;
    barrier();
    REG(QUEUE_NOTIFY) = 0;
    while (used.idx == used_seen) {
    }
    used_seen++;
    return blk_status;
}

void _start(void) {
    if (REG(MAGIC_VALUE) != 0x74726976 || REG(VERSION) != 2 || REG(DEVICE_ID) != 2) {
        serial_puts("blk: no virtio-blk device\n");
        guest_exit(1);
    }
    REG(STATUS) = 0;
    REG(STATUS) = S_ACKNOWLEDGE;
    REG(STATUS) = S_ACKNOWLEDGE | S_DRIVER;
    REG(DEVICE_FEATURES_SEL) = 1;
    unsigned int high = REG(DEVICE_FEATURES);
    REG(DEVICE_FEATURES_SEL) = 0;
    unsigned int low = REG(DEVICE_FEATURES);
    int read_only = (low & F_RO) != 0;
    REG(DRIVER_FEATURES_SEL) = 0;
    REG(DRIVER_FEATURES) = low & (F_SEG_MAX | F_RO | F_BLK_SIZE | F_FLUSH);
    REG(DRIVER_FEATURES_SEL) = 1;
    REG(DRIVER_FEATURES) = high & 1; /* VIRTIO_F_VERSION_1 */
    REG(STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK;
    check((high & 1) && (REG(STATUS) & S_FEATURES_OK), "features");

    REG(QUEUE_SEL) = 0;
    check(REG(QUEUE_NUM_MAX) >= QSIZE, "queue size");
    REG(QUEUE_NUM) = QSIZE;
    set_queue_addr(QUEUE_DESC_LOW, descs);
    set_queue_addr(QUEUE_DRIVER_LOW, &avail);
    set_queue_addr(QUEUE_DEVICE_LOW, &used);
    REG(QUEUE_READY) = 1;
    route_irq(VIRTIO_IRQ, IRQ_VECTOR);
    REG(STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
    check((REG(STATUS) & (S_DRIVER_OK | S_NEEDS_RESET)) == S_DRIVER_OK, "device live");

    unsigned long capacity = REG(CONFIG) | ((unsigned long)REG(CONFIG + 4) << 32);
    serial_puts("blk: capacity ");
    put_dec(capacity);
    serial_puts(read_only ? " sectors, read-only\n" : " sectors, read-write\n");

    int ok = request(T_IN, 0, 512, 1) == BLK_S_OK;
    for (unsigned int i = 0; i < 512 && ok; i++) ok = data[i] == sector0_byte(i);
    check(ok, "read sector 0");

    check(REG(INTERRUPT_STATUS) == 1, "interrupt status");
    REG(INTERRUPT_ACK) = 1;
    check(REG(INTERRUPT_STATUS) == 0, "interrupt ack");
    check(vector_pending(IRQ_VECTOR), "irq delivered");

    for (unsigned int i = 0; i < 512; i++) data[i] = sector1_byte(i);
    int st = request(T_OUT, 1, 512, 0);
    check(st == (read_only ? BLK_S_IOERR : BLK_S_OK), read_only ? "write refused" : "write sector 1");
    check(request(T_FLUSH, 0, 0, 0) == BLK_S_OK, "flush");

    serial_puts(failures ? "blk: FAILED\n" : "blk: done\n");
    guest_exit(failures ? 1 : 0);
}
