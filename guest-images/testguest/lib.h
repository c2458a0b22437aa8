/* The handful of string helpers and the formatted printer the guest needs. */
#ifndef TESTGUEST_LIB_H
#define TESTGUEST_LIB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* gcc may emit calls to these for struct copies even when freestanding. */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

size_t strlen(const char *s);
bool str_eq(const char *a, const char *b);

/*
 * printf subset: %s %c %d %u %x %p, the l and ll length modifiers, a field
 * width and the 0 flag. Output goes to the serial port, one line per call is
 * the norm, and concurrent callers on different CPUs do not interleave.
 */
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void kvprintf(const char *fmt, va_list ap);

/*
 * a * b / c through a 128-bit intermediate (one MUL, one DIV). The quotient
 * must fit in 64 bits, which holds for every time conversion here.
 */
static inline uint64_t muldiv64(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t q, r;
    __asm__("mulq %[b]\n\tdivq %[c]" : "=a"(q), "=&d"(r) : "a"(a), [b] "rm"(b), [c] "m"(c) : "cc");
    (void)r;
    return q;
}

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
