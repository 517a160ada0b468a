/* A guest entered exactly as Linux is through PVH (the Xen PVH ABI that
 * Linux implements with CONFIG_PVH): the ELF note below names the 32-bit
 * entry, which the VMM must find and enter in protected mode with paging
 * off, EBX = the hvm_start_info. The entry records what it was given, then
 * switches to long mode the way Linux's pvh_start_xen does (own page tables,
 * own GDT) and calls pvh_main, which reports on COM1.
 *
 * Contract with tests/e2e/linux.rs: the lines printed below; exit code 0
 * when every check passed, 1 otherwise, 2 if entered at the ELF's e_entry
 * (a VMM that ignored the note). */
#include "guest.h"

#define XEN_HVM_START_MAGIC 0x336ec578u
#define CR0_PE 0x1u
#define CR0_PG 0x80000000u
#define CR4_PAE 0x20u
#define EFER_LME 0x100u
#define RFLAGS_IF 0x200u

struct hvm_start_info {
    unsigned int magic, version, flags, nr_modules;
    unsigned long modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    unsigned int memmap_entries, reserved;
};
struct hvm_modlist_entry {
    unsigned long paddr, size, cmdline_paddr, reserved;
};
struct hvm_memmap_table_entry {
    unsigned long addr, size;
    unsigned int type, reserved;
};

/* What the 32-bit entry found, recorded before it left protected mode. */
unsigned int entry_ebx, entry_cr0, entry_cr4, entry_efer, entry_cs, entry_eflags;
unsigned long pml4[512] __attribute__((aligned(4096)));
unsigned long pdpt[512] __attribute__((aligned(4096)));
unsigned long pd[512] __attribute__((aligned(4096)));
unsigned char stack[8192] __attribute__((aligned(16)));

__asm__(
    /* XEN_ELFNOTE_PHYS32_ENTRY (18), 8-byte descriptor as in vmlinux. */
    ".section .note.Xen, \"a\", @note\n"
    ".balign 4\n"
    ".long 4, 8, 18\n"
    ".asciz \"Xen\"\n"
    ".balign 4\n"
    ".quad pvh_start\n"
    ".text\n"
    ".code32\n"
    ".globl pvh_start\n"
    "pvh_start:\n"
    "  movl %ebx, entry_ebx\n"
    "  movl %cr0, %eax\n"
    "  movl %eax, entry_cr0\n"
    "  movl %cr4, %eax\n"
    "  movl %eax, entry_cr4\n"
    "  movl $0xc0000080, %ecx\n"
    "  rdmsr\n"
    "  movl %eax, entry_efer\n"
    "  movw %cs, %ax\n"
    "  movzwl %ax, %eax\n"
    "  movl %eax, entry_cs\n"
    "  pushfl\n"
    "  popl %eax\n"
    "  movl %eax, entry_eflags\n"
    /* Identity-map the first GiB in 2 MiB pages. */
    "  movl $pd, %edi\n"
    "  movl $0x83, %eax\n"
    "  movl $512, %ecx\n"
    "1:movl %eax, (%edi)\n"
    "  addl $0x200000, %eax\n"
    "  addl $8, %edi\n"
    "  loop 1b\n"
    "  movl $pd + 3, pdpt\n"
    "  movl $pdpt + 3, pml4\n"
    "  movl $pml4, %eax\n"
    "  movl %eax, %cr3\n"
    "  movl %cr4, %eax\n"
    "  orl $0x20, %eax\n"
    "  movl %eax, %cr4\n"
    "  movl $0xc0000080, %ecx\n"
    "  rdmsr\n"
    "  orl $0x100, %eax\n"
    "  wrmsr\n"
    "  movl %cr0, %eax\n"
    "  orl $0x80000000, %eax\n"
    "  movl %eax, %cr0\n"
    "  lgdt gdt64_ptr\n"
    "  ljmp $0x8, $long_mode\n"
    ".code64\n"
    "long_mode:\n"
    "  movl $0x10, %eax\n"
    "  movl %eax, %ds\n"
    "  movl %eax, %es\n"
    "  movl %eax, %ss\n"
    "  leaq stack + 8192(%rip), %rsp\n"
    "  movl entry_ebx(%rip), %edi\n"
    "  call pvh_main\n"
    "2:hlt\n"
    "  jmp 2b\n"
    ".balign 8\n"
    "gdt64:\n"
    "  .quad 0, 0x00af9b000000ffff, 0x00cf93000000ffff\n"
    "gdt64_ptr:\n"
    "  .word gdt64_ptr - gdt64 - 1\n"
    "  .long gdt64\n");

static int ok = 1;

static void check(int good, const char *what) {
    if (!good) {
        serial_puts("pvh: BAD ");
        serial_puts(what);
        serial_putc('\n');
        ok = 0;
    }
}

void pvh_main(unsigned int info_addr) {
    const struct hvm_start_info *si = (const void *)(unsigned long)info_addr;

    check((entry_cr0 & CR0_PE) && !(entry_cr0 & CR0_PG), "cr0: want protected mode, paging off");
    check(!(entry_cr4 & CR4_PAE) && !(entry_efer & EFER_LME), "cr4.pae/efer.lme set");
    check(!(entry_eflags & RFLAGS_IF), "interrupts on");
    serial_puts("pvh: protected mode, paging off, cs ");
    serial_puthex(entry_cs);
    serial_puts(", start_info ");
    serial_puthex(info_addr);
    serial_putc('\n');

    check(si->magic == XEN_HVM_START_MAGIC, "magic");
    serial_puts("pvh: magic ");
    serial_puthex(si->magic);
    serial_puts(" version ");
    serial_puthex(si->version);
    serial_putc('\n');

    serial_puts("pvh: cmdline \"");
    serial_puts((const char *)si->cmdline_paddr);
    serial_puts("\"\n");

    const struct hvm_memmap_table_entry *map = (const void *)si->memmap_paddr;
    for (unsigned int i = 0; i < si->memmap_entries; i++) {
        serial_puts("pvh: mem ");
        serial_puthex(map[i].addr);
        serial_putc(' ');
        serial_puthex(map[i].size);
        serial_putc(' ');
        serial_puthex(map[i].type);
        serial_putc('\n');
    }

    const struct hvm_modlist_entry *mods = (const void *)si->modlist_paddr;
    for (unsigned int i = 0; i < si->nr_modules; i++) {
        unsigned long sum = 0;
        const unsigned char *p = (const unsigned char *)mods[i].paddr;
        for (unsigned long j = 0; j < mods[i].size; j++) sum += p[j];
        serial_puts("pvh: module ");
        serial_puthex(mods[i].paddr);
        serial_putc(' ');
        serial_puthex(mods[i].size);
        serial_puts(" sum ");
        serial_puthex(sum);
        serial_putc('\n');
    }
    serial_puts(ok ? "pvh: done\n" : "pvh: failed\n");
    guest_exit(ok ? 0 : 1);
}

/* e_entry: only a VMM that ignored the PVH note comes here. */
void _start(void) {
    serial_puts("pvh: entered at e_entry, not the PVH note\n");
    guest_exit(2);
}
