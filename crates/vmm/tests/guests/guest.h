/* Tiny freestanding runtime for moat-vmm test guests.
 * Entered in 64-bit long mode with paging on, interrupts off, a small stack;
 * everything polls. No libc, no SSE. */
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

static inline __attribute__((noreturn)) void guest_exit(unsigned char code) {
    outb(DEBUG_EXIT, code);
    for (;;) __asm__ volatile("hlt");
}

#endif
