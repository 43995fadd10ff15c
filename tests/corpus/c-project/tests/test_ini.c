#include <stdio.h>
#include <string.h>

#include "ini.h"

static int failures, checks;

#define CHECK(cond)                                                        \
    do {                                                                   \
        checks++;                                                          \
        if (!(cond)) {                                                     \
            failures++;                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                  \
    } while (0)

struct seen {
    int count;
    char last[256];
};

static int collect(void *user, const char *section, const char *key, const char *value) {
    struct seen *s = user;
    s->count++;
    snprintf(s->last, sizeof s->last, "%s|%s|%s", section, key, value);
    return 0;
}

static int stop_at_first(void *user, const char *section, const char *key, const char *value) {
    (void)section, (void)key, (void)value;
    ((struct seen *)user)->count++;
    return 1;
}

int main(int argc, char **argv) {
    struct seen s = {0};
    CHECK(ini_parse_string("; comment\nname = demo\n\n[server]\n port=8080 \n", collect, &s) == 0);
    CHECK(s.count == 2);
    CHECK(strcmp(s.last, "server|port|8080") == 0);

    memset(&s, 0, sizeof s);
    CHECK(ini_parse_string("a=1\nb=2\n", stop_at_first, &s) == 0);
    CHECK(s.count == 1);

    CHECK(ini_parse_string("ok=1\n[broken\n", collect, &s) == 2);
    CHECK(ini_parse_string("ok=1\nno equals sign\n", collect, &s) == 2);

    if (argc > 1) {
        memset(&s, 0, sizeof s);
        CHECK(ini_parse_file(argv[1], collect, &s) == 0);
        CHECK(s.count >= 3);
    }
    CHECK(ini_parse_file("/nonexistent/file.ini", collect, &s) == -1);

    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}
