/* Counts on COM1 until the power button (port 0xf5) is pressed, then says
 * goodbye and powers off with exit code 0. */
#include "guest.h"

#define POWER_BUTTON 0xf5

void _start(void) {
    for (unsigned long n = 0;; n++) {
        if (inb(POWER_BUTTON)) {
            serial_puts("bye\n");
            guest_exit(0);
        }
        serial_puthex(n);
        serial_putc('\n');
    }
}
