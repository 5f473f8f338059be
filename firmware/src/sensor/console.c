/* USART1 console, polled: the sensor firmware's printf and its command shell run over it. */
#include "console.h"

#include <stdint.h>

#include "../board.h"

#define USART1_SR_RXNE (1u << 5)
#define USART_CR1_RE   (1u << 2)

void console_init(void)
{
    RCC_APB2ENR |= RCC_APB2ENR_IOPAEN | RCC_APB2ENR_USART1EN;
    /* PA9 = USART1 TX: alternate function push-pull, 2 MHz (CNF=10, MODE=10); PA10 = RX, input floating. */
    GPIOA_CRH = (GPIOA_CRH & ~(0xFFu << 4)) | (0x4Au << 4);
    USART1_BRR = (CPU_HZ + CONSOLE_BAUD / 2) / CONSOLE_BAUD;
    USART1_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE;
}

void console_put(char c)
{
    while (!(USART1_SR & USART_SR_TXE)) {
    }
    USART1_DR = (uint32_t)(unsigned char)c;
}

bool console_poll(char *c)
{
    if (!(USART1_SR & USART1_SR_RXNE)) {
        return false;
    }
    *c = (char)(USART1_DR & 0xFFu);
    return true;
}

int console_get(void)
{
    char c;
    while (!console_poll(&c)) {
    }
    return (unsigned char)c;
}
