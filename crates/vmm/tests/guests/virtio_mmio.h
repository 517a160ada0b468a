/* The virtio-mmio v2 register map and the bits the test guests' polling
 * drivers use, for the device in moat-vmm's first virtio-mmio window. */
#ifndef MOAT_VIRTIO_MMIO_H
#define MOAT_VIRTIO_MMIO_H

#define VIRTIO_BASE 0xd0000000UL
#define VIRTIO_IRQ 5
#define REG(off) (*(volatile unsigned int *)(VIRTIO_BASE + (off)))

#define MAGIC_VALUE 0x000
#define VERSION 0x004
#define DEVICE_ID 0x008
#define DEVICE_FEATURES 0x010
#define DEVICE_FEATURES_SEL 0x014
#define DRIVER_FEATURES 0x020
#define DRIVER_FEATURES_SEL 0x024
#define QUEUE_SEL 0x030
#define QUEUE_NUM_MAX 0x034
#define QUEUE_NUM 0x038
#define QUEUE_READY 0x044
#define QUEUE_NOTIFY 0x050
#define INTERRUPT_STATUS 0x060
#define INTERRUPT_ACK 0x064
#define STATUS 0x070
#define QUEUE_DESC_LOW 0x080
#define QUEUE_DESC_HIGH 0x084
#define QUEUE_DRIVER_LOW 0x090
#define QUEUE_DRIVER_HIGH 0x094
#define QUEUE_DEVICE_LOW 0x0a0
#define QUEUE_DEVICE_HIGH 0x0a4
#define CONFIG 0x100

#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40

#define D_NEXT 1
#define D_WRITE 2

/* A split virtqueue of QSIZE entries, as the driver lays it out (define
 * QSIZE before including this header). */
#ifndef QSIZE
#error "define QSIZE (the queue size) before including virtio_mmio.h"
#endif
struct desc {
    unsigned long addr;
    unsigned int len;
    unsigned short flags, next;
};
struct avail {
    unsigned short flags, idx, ring[QSIZE], used_event;
};
struct used_elem {
    unsigned int id, len;
};
struct used {
    unsigned short flags, idx;
    struct used_elem ring[QSIZE];
    unsigned short avail_event;
};

/* Writes a ring's guest-physical address into a LOW/HIGH register pair. */
static inline void set_queue_addr(unsigned int low_reg, const volatile void *p) {
    unsigned long a = (unsigned long)p;
    REG(low_reg) = (unsigned int)a;
    REG(low_reg + 4) = (unsigned int)(a >> 32);
}

#endif
