/* The few system calls newlib needs on a bare-metal board: the console is USART1, the heap is the RAM
 * between the end of .bss and the stack. Everything else is refused (ENOSYS-like), as newlib's nosys does. */
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>

#include "../board.h"
#include "console.h"

extern char _ebss[], _estack[];  /* linker symbols: addresses, not objects */

#define STACK_RESERVE 2048u /* bytes kept free for the stack below _estack */

void *_sbrk(int increment)
{
    static char *heap_end;
    if (heap_end == 0) {
        heap_end = _ebss;
    }
    char *limit = (char *)((uintptr_t)_estack - STACK_RESERVE);
    if (heap_end + increment > limit) {
        errno = ENOMEM;
        return (void *)-1;
    }
    char *previous = heap_end;
    heap_end += increment;
    return previous;
}

int _write(int fd, const char *data, int length)
{
    (void)fd;
    for (int i = 0; i < length; i++) {
        if (data[i] == '\n') {
            console_put('\r');
        }
        console_put(data[i]);
    }
    return length;
}

int _read(int fd, char *data, int length)
{
    (void)fd;
    if (length <= 0) {
        return 0;
    }
    data[0] = (char)console_get();
    return 1;
}

int _close(int fd) { (void)fd; return -1; }
int _fstat(int fd, struct stat *st) { (void)fd; st->st_mode = S_IFCHR; return 0; }
int _isatty(int fd) { (void)fd; return 1; }
int _lseek(int fd, int offset, int whence) { (void)fd; (void)offset; (void)whence; return 0; }
int _getpid(void) { return 1; }
int _kill(int pid, int sig) { (void)pid; (void)sig; errno = EINVAL; return -1; }
void _exit(int status) { (void)status; for (;;) { } }
