/* The command shell on the console. */
#ifndef SHELL_H
#define SHELL_H

const char *shell_banner(void);
void shell_execute(char *line);

#endif
