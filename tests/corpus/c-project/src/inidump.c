/* inidump: prints every key of an INI file as section.key=value. */
#include <stdio.h>

#include "ini.h"

static int print_pair(void *user, const char *section, const char *key, const char *value) {
    (void)user;
    if (*section)
        printf("%s.%s=%s\n", section, key, value);
    else
        printf("%s=%s\n", key, value);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE.ini\n", argv[0]);
        return 2;
    }
    int rc = ini_parse_file(argv[1], print_pair, NULL);
    if (rc < 0) {
        perror(argv[1]);
        return 1;
    }
    if (rc > 0) {
        fprintf(stderr, "%s:%d: syntax error\n", argv[1], rc);
        return 1;
    }
    return 0;
}
