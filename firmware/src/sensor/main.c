/* notedfu-sensor: a small product firmware (newlib, printf, a command shell, lookup tables) for the
 * delta-update benchmark. It prints its banner at boot and every two seconds until a command is typed
 * (on most rigs the console is the bootloader's own USART, so the host starts listening late), then
 * answers commands on the console; `help` lists them.
 *
 * 2.0.0 and 2.0.1 differ as a real fix release would: the version string and one function
 * (sensor_celsius's interpolation). Both are built from this tree; the Makefile turns the fix on.
 */
#include <stdio.h>

#include "../board.h"
#include "../fwinfo.h"
#include "console.h"
#include "shell.h"

FIRMWARE_INFO("notedfu-sensor");

const char *shell_banner(void)
{
    return "notedfu-sensor " FW_VERSION " booted on " BOARD_NAME;
}

/* Polls per two seconds: one poll (a register read and a branch) takes about 8 cycles. */
#define POLLS_PER_BANNER (2u * CPU_HZ / 8u)

int main(void)
{
    char line[80];
    unsigned length = 0;
    int typed = 0;
    uint32_t polls = 0;

    console_init();
    setvbuf(stdout, NULL, _IONBF, 0); /* no 1 KiB stdio buffer in 8 KiB of RAM */
    printf("%s\n> ", shell_banner());
    for (;;) {
        char c;
        if (!console_poll(&c)) {
            if (!typed && ++polls >= POLLS_PER_BANNER) {
                polls = 0;
                printf("\n%s\n> ", shell_banner());
            }
            continue;
        }
        typed = 1;
        if (c == '\r' || c == '\n') {
            printf("\n");
            line[length] = '\0';
            shell_execute(line);
            length = 0;
            printf("> ");
        } else if ((c == '\b' || c == 0x7F) && length > 0) {
            length--;
            printf("\b \b");
        } else if (c >= ' ' && length < sizeof line - 1) {
            line[length++] = c;
            putchar(c);
        }
    }
}
