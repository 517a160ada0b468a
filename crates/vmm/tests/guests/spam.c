/* Prints forever: the VMM must bound its buffer and stop us on time. */
#include "guest.h"

void _start(void) {
    for (;;) serial_puts("spam ");
}
