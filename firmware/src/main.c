/* notedfu demo firmware: prints a version banner on USART1, again every two seconds.
 *
 * The banner repeats because on most rigs the console is the bootloader's own
 * USART: the host can only start listening after it has started the
 * application, and would miss a banner printed once.
 *
 * The image carries `firmware::info:{…}`, the JSON Notehub reads from host
 * firmware, and notedfu reads it too (version checks, the banner to expect).
 */
#include <stdint.h>

#include "board.h"
#include "fwinfo.h"

FIRMWARE_INFO("notedfu-demo");

static void console_init(void)
{
    RCC_APB2ENR |= RCC_APB2ENR_IOPAEN | RCC_APB2ENR_USART1EN;
    /* PA9 = USART1 TX: alternate function push-pull, 2 MHz (CNF=10, MODE=10). */
    GPIOA_CRH = (GPIOA_CRH & ~(0xFu << 4)) | (0xAu << 4);
    USART1_BRR = (CPU_HZ + CONSOLE_BAUD / 2) / CONSOLE_BAUD;
    USART1_CR1 = USART_CR1_UE | USART_CR1_TE;
}

static void console_write(const char *text)
{
    for (; *text; text++) {
        while (!(USART1_SR & USART_SR_TXE)) {
        }
        USART1_DR = (uint32_t)(unsigned char)*text;
    }
}

/* About `seconds` of busy waiting: subs + a taken bne cost 3 cycles on a Cortex-M3. */
static void spin(uint32_t seconds)
{
    uint32_t loops = seconds * (CPU_HZ / 3u);
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(loops));
}

int main(void)
{
    console_init();
    for (;;) {
#ifdef FW_BROKEN
        console_write("");  /* a BROKEN build runs and never says so: the agent must roll it back */
#else
        console_write("notedfu-demo " FW_VERSION " booted on " BOARD_NAME "\r\n");
#endif
        spin(2);
    }
}
