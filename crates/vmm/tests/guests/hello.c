/* Prints a greeting on COM1 and exits with code 0. */
#include "guest.h"

void _start(void) {
    serial_puts("hello from guest\n");
    guest_exit(0);
}
