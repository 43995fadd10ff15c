#ifndef INI_H
#define INI_H

#include <stddef.h>

/* Called for every `key = value` pair; `section` is "" before the first [section]. Return non-zero to stop. */
typedef int (*ini_handler)(void *user, const char *section, const char *key, const char *value);

/* Parses NUL-terminated INI text. Returns 0 on success, or the 1-based number of the first bad line. */
int ini_parse_string(const char *text, ini_handler handler, void *user);

/* Parses a file; -1 when it cannot be read. */
int ini_parse_file(const char *path, ini_handler handler, void *user);

#endif
