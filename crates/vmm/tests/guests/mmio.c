/* Talks to the test MMIO device at 0xd0000000 and reports on COM1.
 * Device contract (tests/e2e/boot.rs): offset 0 stores a u32 and reads back
 * its bitwise NOT; offset 8 reads 0x54414f4d ("MOAT"). Nothing is mapped at
 * 0xd0002000, so reads there must see all ones. Exit code 0 on success. */
#include "guest.h"

#define DEV ((volatile unsigned int *)0xd0000000UL)
#define HOLE ((volatile unsigned int *)0xd0002000UL)

void _start(void) {
    int ok = 1;
    DEV[0] = 0x12345678u;
    if (DEV[0] != ~0x12345678u) ok = 0;
    if (DEV[2] != 0x54414f4du) ok = 0;
    if (*HOLE != 0xffffffffu) ok = 0;
    serial_puts(ok ? "mmio: ok\n" : "mmio: bad\n");
    guest_exit(ok ? 0 : 1);
}
