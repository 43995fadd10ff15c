#include "ini.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE 512

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
    return s;
}

int ini_parse_string(const char *text, ini_handler handler, void *user) {
    char section[MAX_LINE] = "";
    char line[MAX_LINE];
    int lineno = 0;
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, "\n");
        if (n >= sizeof line) return lineno + 1;
        memcpy(line, p, n);
        line[n] = '\0';
        p += n + (p[n] == '\n');
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == ';' || *s == '#') continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close) return lineno;
            *close = '\0';
            snprintf(section, sizeof section, "%s", trim(s + 1));
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) return lineno;
        *eq = '\0';
        if (handler(user, section, trim(s), trim(eq + 1))) break;
    }
    return 0;
}

int ini_parse_file(const char *path, ini_handler handler, void *user) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return -1;
    }
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len < 2) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) {
                free(buf);
                fclose(f);
                return -1;
            }
            buf = bigger;
        }
    }
    fclose(f);
    buf[len] = '\0';
    int rc = ini_parse_string(buf, handler, user);
    free(buf);
    return rc;
}
