/* A minimal polling virtio-mmio + virtio-vsock driver for a vhost-user
 * device served by moat-vsock.
 *
 * Contract with tests/e2e/vhost_user/kvm.rs: a virtio-vsock device in the
 * first virtio-mmio window (0xd0000000, IRQ 5) for guest CID 3; a host
 * process connects to guest port 1234 through moat-vsock's hybrid socket.
 * The guest checks identity and config, negotiates VERSION_1, sets up rx, tx
 * and event queues, posts one RX buffer and kicks it, polls until the
 * connection request lands there, answers with a response on tx (its kick
 * goes through KVM's ioeventfd straight to moat-vsock), and checks that the
 * back-end's interrupts reached the local APIC through the irqfd. Each step
 * is reported on COM1; exit code 0 when all went as expected. */
#include "guest.h"
#include "apic.h"

#define IRQ_VECTOR 0x35

#define QSIZE 8
#include "virtio_mmio.h"
#define NQUEUES 3
#define RX 0
#define TX 1

#define GUEST_CID 3
#define HOST_CID 2
#define GUEST_PORT 1234
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define TYPE_STREAM 1

struct queue {
    struct desc descs[QSIZE] __attribute__((aligned(4096)));
    struct avail avail __attribute__((aligned(4096)));
    struct used used __attribute__((aligned(4096)));
};
struct vsock_hdr {
    unsigned long src_cid, dst_cid;
    unsigned int src_port, dst_port, len;
    unsigned short type, op;
    unsigned int flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static volatile struct queue queues[NQUEUES];
static volatile struct vsock_hdr rx_buf[2] __attribute__((aligned(64)));
static volatile struct vsock_hdr tx_hdr __attribute__((aligned(64)));
static int failures;

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static void check(int ok, const char *what) {
    serial_puts("vsock: ");
    serial_puts(what);
    serial_puts(ok ? " ok\n" : " FAILED\n");
    if (!ok) failures++;
}

/* Publishes descriptor 0 of queue `q` as (addr, len, flags) and kicks. */
static void post(int q, const volatile void *addr, unsigned int len, unsigned short flags) {
    volatile struct queue *vq = &queues[q];
    vq->descs[0].addr = (unsigned long)addr;
    vq->descs[0].len = len;
    vq->descs[0].flags = flags;
    vq->descs[0].next = 0;
    vq->avail.ring[vq->avail.idx % QSIZE] = 0;
    barrier();
    vq->avail.idx = vq->avail.idx + 1;
    barrier();
    REG(QUEUE_NOTIFY) = q;
}

/* Polls queue `q`'s used ring until it reaches `idx`; bounded. */
static int wait_used(int q, unsigned short idx) {
    for (unsigned long i = 0; i < 4000000000UL; i++) {
        if (queues[q].used.idx == idx) return 1;
        __asm__ volatile("pause");
    }
    return 0;
}

void _start(void) {
    check(REG(MAGIC_VALUE) == 0x74726976 && REG(VERSION) == 2 && REG(DEVICE_ID) == 19, "identity");
    check(REG(CONFIG) == GUEST_CID && REG(CONFIG + 4) == 0, "guest cid");
    REG(STATUS) = 0;
    REG(STATUS) = S_ACKNOWLEDGE;
    REG(STATUS) = S_ACKNOWLEDGE | S_DRIVER;
    REG(DEVICE_FEATURES_SEL) = 1;
    unsigned int high = REG(DEVICE_FEATURES);
    REG(DRIVER_FEATURES_SEL) = 0;
    REG(DRIVER_FEATURES) = 0;
    REG(DRIVER_FEATURES_SEL) = 1;
    REG(DRIVER_FEATURES) = high & 1; /* VIRTIO_F_VERSION_1 only */
    REG(STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK;
    check((high & 1) && (REG(STATUS) & S_FEATURES_OK), "features");

    int sizes_ok = 1;
    for (int q = 0; q < NQUEUES; q++) {
        REG(QUEUE_SEL) = q;
        sizes_ok &= REG(QUEUE_NUM_MAX) >= QSIZE;
        REG(QUEUE_NUM) = QSIZE;
        set_queue_addr(QUEUE_DESC_LOW, queues[q].descs);
        set_queue_addr(QUEUE_DRIVER_LOW, &queues[q].avail);
        set_queue_addr(QUEUE_DEVICE_LOW, &queues[q].used);
        REG(QUEUE_READY) = 1;
    }
    REG(QUEUE_SEL) = 3;
    check(sizes_ok && REG(QUEUE_NUM_MAX) == 0, "three queues");

    route_irq(VIRTIO_IRQ, IRQ_VECTOR);
    REG(STATUS) = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;
    check((REG(STATUS) & (S_DRIVER_OK | S_NEEDS_RESET)) == S_DRIVER_OK, "device live");

    post(RX, &rx_buf[0], sizeof rx_buf[0] + 64, D_WRITE);
    int got = wait_used(RX, 1);
    volatile struct vsock_hdr *req = &rx_buf[0];
    check(got && req->op == OP_REQUEST && req->type == TYPE_STREAM && req->src_cid == HOST_CID &&
              req->dst_cid == GUEST_CID && req->dst_port == GUEST_PORT,
          "connection request");
    check(REG(INTERRUPT_STATUS) & 1, "interrupt status");
    check(vector_pending(IRQ_VECTOR), "irq delivered");

    tx_hdr.src_cid = GUEST_CID;
    tx_hdr.dst_cid = HOST_CID;
    tx_hdr.src_port = GUEST_PORT;
    tx_hdr.dst_port = req->src_port;
    tx_hdr.len = 0;
    tx_hdr.type = TYPE_STREAM;
    tx_hdr.op = OP_RESPONSE;
    tx_hdr.flags = 0;
    tx_hdr.buf_alloc = 65536;
    tx_hdr.fwd_cnt = 0;
    post(TX, &tx_hdr, sizeof tx_hdr, 0);
    check(wait_used(TX, 1), "response taken");

    serial_puts(failures ? "vsock: FAILED\n" : "vsock: done\n");
    guest_exit(failures ? 1 : 0);
}
