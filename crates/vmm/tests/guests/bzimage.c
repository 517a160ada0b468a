/* The protected-mode kernel of a fake bzImage, entered exactly as Linux is
 * through the 64-bit boot protocol: at startup_64 (load address + 0x200) in
 * long mode, CS = __BOOT_CS (0x10), DS = SS = __BOOT_DS (0x18), interrupts
 * off, RSI = the zero page. It records what it was given, sets its own
 * stack (the protocol promises none) and reports on COM1 what the zero page
 * says: setup header fields, e820 table, command line, initrd; and what the
 * MP table in base memory lists.
 *
 * Contract with tests/e2e/linux.rs: the lines printed below; exit code 0
 * when every check passed, 1 otherwise, 0x33 if entered at startup_32. */
#include "guest.h"

#define U8(p, off) (*(const volatile unsigned char *)((p) + (off)))
#define U16(p, off) (*(const volatile unsigned short *)((p) + (off)))
#define U32(p, off) (*(const volatile unsigned int *)((p) + (off)))
#define U64(p, off) (*(const volatile unsigned long *)((p) + (off)))
#define RFLAGS_IF 0x200ul
#define EFER_LMA 0x400u

unsigned long entry_rsi, entry_rflags;
unsigned short entry_cs, entry_ds, entry_ss;
unsigned int entry_efer;
unsigned char stack[8192] __attribute__((aligned(16)));

__asm__(
    ".section .head.text, \"ax\"\n"
    ".code32\n"
    "startup_32:\n"
    "  movb $0x33, %al\n"
    "  outb %al, $0xf4\n"
    "1:hlt\n"
    "  jmp 1b\n"
    ".org 0x200\n"
    ".code64\n"
    ".globl startup_64\n"
    "startup_64:\n"
    "  movq %rsi, entry_rsi(%rip)\n"
    "  movw %cs, entry_cs(%rip)\n"
    "  movw %ds, entry_ds(%rip)\n"
    "  movw %ss, entry_ss(%rip)\n"
    "  pushfq\n"
    "  popq %rax\n"
    "  movq %rax, entry_rflags(%rip)\n"
    "  movl $0xc0000080, %ecx\n"
    "  rdmsr\n"
    "  movl %eax, entry_efer(%rip)\n"
    "  leaq stack + 8192(%rip), %rsp\n"
    "  movq entry_rsi(%rip), %rdi\n"
    "  call bz_main\n"
    "2:hlt\n"
    "  jmp 2b\n"
    ".text\n");

static int ok = 1;

static void check(int good, const char *what) {
    if (!good) {
        serial_puts("bz: BAD ");
        serial_puts(what);
        serial_putc('\n');
        ok = 0;
    }
}

static unsigned char sum8(unsigned long addr, unsigned long len) {
    unsigned char s = 0;
    for (unsigned long i = 0; i < len; i++) s += U8(addr, i);
    return s;
}

/* Finds the MP floating pointer where Linux looks, checks both checksums,
 * counts processors and reports the IOAPIC. */
static void report_mptable(void) {
    unsigned long fp = 0;
    for (unsigned long a = 0x9fc00; a < 0xa0000; a += 16)
        if (U32(a, 0) == 0x5f504d5f) { /* "_MP_" */
            fp = a;
            break;
        }
    check(fp != 0, "no _MP_ in the last KiB of base memory");
    if (!fp) return;
    unsigned long table = U32(fp, 4);
    check(sum8(fp, 16) == 0, "floating pointer checksum");
    check(U32(table, 0) == 0x504d4350, "PCMP"); /* "PCMP" */
    check(sum8(table, U16(table, 4)) == 0, "table checksum");
    unsigned long e = table + 44, cpus = 0, ioapic = 0, irqs = 0;
    for (unsigned int i = 0; i < U16(table, 34); i++) {
        unsigned char type = U8(e, 0);
        if (type == 0) cpus++;
        if (type == 2) ioapic = U32(e, 4);
        if (type == 3) irqs++;
        e += type == 0 ? 20 : 8;
    }
    serial_puts("bz: mptable cpus ");
    serial_puthex(cpus);
    serial_puts(" ioapic ");
    serial_puthex(ioapic);
    serial_puts(" irqs ");
    serial_puthex(irqs);
    serial_putc('\n');
}

void bz_main(unsigned long zp) {
    check(!(entry_rflags & RFLAGS_IF), "interrupts on");
    check(entry_efer & EFER_LMA, "not in long mode");
    serial_puts("bz: startup_64 with rsi ");
    serial_puthex(entry_rsi);
    serial_puts(", cs ");
    serial_puthex(entry_cs);
    serial_puts(" ds ");
    serial_puthex(entry_ds);
    serial_puts(" ss ");
    serial_puthex(entry_ss);
    serial_putc('\n');

    check(U32(zp, 0x202) == 0x53726448, "HdrS"); /* "HdrS" */
    serial_puts("bz: protocol ");
    serial_puthex(U16(zp, 0x206));
    serial_puts(" loader ");
    serial_puthex(U8(zp, 0x210));
    serial_puts(" loadflags ");
    serial_puthex(U8(zp, 0x211));
    serial_puts(" vid_mode ");
    serial_puthex(U16(zp, 0x1fa));
    serial_putc('\n');

    serial_puts("bz: cmdline \"");
    serial_puts((const char *)(unsigned long)U32(zp, 0x228));
    serial_puts("\"\n");

    for (unsigned int i = 0; i < U8(zp, 0x1e8); i++) {
        unsigned long entry = zp + 0x2d0 + 20 * i;
        serial_puts("bz: e820 ");
        serial_puthex(U64(entry, 0));
        serial_putc(' ');
        serial_puthex(U64(entry, 8));
        serial_putc(' ');
        serial_puthex(U32(entry, 16));
        serial_putc('\n');
    }

    unsigned long rd = U32(zp, 0x218), rd_size = U32(zp, 0x21c), sum = 0;
    for (unsigned long j = 0; j < rd_size; j++) sum += U8(rd, j);
    serial_puts("bz: ramdisk ");
    serial_puthex(rd);
    serial_putc(' ');
    serial_puthex(rd_size);
    serial_puts(" sum ");
    serial_puthex(sum);
    serial_putc('\n');

    report_mptable();
    serial_puts(ok ? "bz: done\n" : "bz: failed\n");
    guest_exit(ok ? 0 : 1);
}
