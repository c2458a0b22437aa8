/* "test=NAME key=value ..." from the PVH command line. */
#ifndef TESTGUEST_CMDLINE_H
#define TESTGUEST_CMDLINE_H

#include <stdbool.h>
#include <stdint.h>

/* Copies the string (the loader's copy may sit where we later put the AP trampoline). */
void cmdline_parse(const char *s);
const char *cmdline_raw(void);
/* Value of key=value, "" for a bare key, NULL when absent. */
const char *cmdline_get(const char *key);
uint64_t cmdline_u64(const char *key, uint64_t dflt);
/* True for a bare "key" and for key=<non-zero number>. */
bool cmdline_flag(const char *key);

#endif
