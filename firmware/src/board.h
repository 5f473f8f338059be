/* Board description: the registers the demo touches, per board.
 *
 * BOARD_QEMU_VLDISCOVERY (default): QEMU's stm32vldiscovery (STM32F100RB). QEMU
 * models USART1 at 0x40013800 and does not need clocks or pins configured.
 * BOARD_BLUEPILL: STM32F103C8 at 8 MHz HSI, USART1 on PA9/PA10.
 */
#ifndef BOARD_H
#define BOARD_H

#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(addr))

#define RCC_APB2ENR   REG32(0x40021018u)
#define GPIOA_CRH     REG32(0x40010804u)
#define USART1_SR     REG32(0x40013800u)
#define USART1_DR     REG32(0x40013804u)
#define USART1_BRR    REG32(0x40013808u)
#define USART1_CR1    REG32(0x4001380Cu)

#define RCC_APB2ENR_IOPAEN   (1u << 2)
#define RCC_APB2ENR_USART1EN (1u << 14)
#define USART_SR_TXE         (1u << 7)
#define USART_CR1_UE         (1u << 13)
#define USART_CR1_TE         (1u << 3)

#ifndef CPU_HZ
#define CPU_HZ 8000000u /* HSI after reset on F1/F100 */
#endif
#ifndef CONSOLE_BAUD
#define CONSOLE_BAUD 115200u
#endif

#endif
