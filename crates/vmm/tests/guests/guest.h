/* Tiny freestanding runtime for moat-vmm test guests.
 * Runs in 64-bit long mode with paging on, interrupts off; everything polls.
 * No libc, no SSE. (pvh.c and bzimage.c get there through the Linux entry
 * paths first.) */
#ifndef MOAT_GUEST_H
#define MOAT_GUEST_H

#define COM1 0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_THRE 0x20
#define DEBUG_EXIT 0xf4

static inline void outb(unsigned short port, unsigned char v) {
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline unsigned char inb(unsigned short port) {
    unsigned char v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void serial_putc(char c) {
    while (!(inb(COM1_LSR) & LSR_THRE)) {
    }
    outb(COM1, (unsigned char)c);
}

static inline void serial_puts(const char *s) {
    while (*s) serial_putc(*s++);
}

/* `v` in hex with a 0x prefix and no leading zeros. */
static inline void serial_puthex(unsigned long v) {
    char buf[19];
    int i = sizeof(buf) - 1;
    buf[i] = 0;
    do {
        buf[--i] = "0123456789abcdef"[v & 0xf];
        v >>= 4;
    } while (v);
    buf[--i] = 'x';
    buf[--i] = '0';
    serial_puts(buf + i);
}

static inline __attribute__((noreturn)) void guest_exit(unsigned char code) {
    outb(DEBUG_EXIT, code);
    for (;;) __asm__ volatile("hlt");
}

#endif
