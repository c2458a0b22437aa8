#include "cmdline.h"

#include "lib.h"

#define MAX_LEN 255
#define MAX_ARGS 16

static char raw[MAX_LEN + 1];
static char buf[MAX_LEN + 1];
static const char *keys[MAX_ARGS];
static const char *values[MAX_ARGS];
static unsigned nargs;

void cmdline_parse(const char *s)
{
    size_t n = 0;
    if (s)
        while (n < MAX_LEN && s[n]) {
            raw[n] = s[n];
            n++;
        }
    raw[n] = 0;
    memcpy(buf, raw, n + 1);
    char *p = buf;
    while (*p && nargs < MAX_ARGS) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            *p++ = 0;
        if (!*p)
            break;
        keys[nargs] = p;
        values[nargs] = "";
        bool split = false;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
            if (*p == '=' && !split) { /* only the first '=' splits: values may contain '=' */
                *p = 0;
                values[nargs] = p + 1;
                split = true;
            }
            p++;
        }
        nargs++;
    }
}

const char *cmdline_raw(void) { return raw; }

const char *cmdline_get(const char *key)
{
    /* Last one wins, as with kernel parameters. */
    const char *v = 0;
    for (unsigned i = 0; i < nargs; i++)
        if (str_eq(keys[i], key))
            v = values[i];
    return v;
}

uint64_t cmdline_u64(const char *key, uint64_t dflt)
{
    const char *v = cmdline_get(key);
    if (!v || *v < '0' || *v > '9')
        return dflt;
    uint64_t n = 0;
    while (*v >= '0' && *v <= '9')
        n = n * 10 + (uint64_t)(*v++ - '0');
    return n;
}

bool cmdline_flag(const char *key)
{
    const char *v = cmdline_get(key);
    return v && (!*v || cmdline_u64(key, 1) != 0);
}
