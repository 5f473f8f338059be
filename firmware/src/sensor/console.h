/* USART1 console: polled, 115200 8N1. */
#ifndef CONSOLE_H
#define CONSOLE_H

#include <stdbool.h>

void console_init(void);
void console_put(char c);
int console_get(void);            /* waits for a byte */
bool console_poll(char *c);       /* a byte if one has arrived */

#endif
