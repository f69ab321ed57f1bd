/*
 * testutil.h - the checks the single-threaded C unit tests share: CHECK(cond) and
 * CHECK(cond, "format", ...) report a failed condition (with an optional printf-style
 * message, which must start with a string literal) and go on; CHECK_EQ(a, b) compares two
 * integers and prints both values. Each failure counts in `failures` (a test's main returns
 * non-zero when it is set); after TU_MAX_FAILURES the program exits.
 *
 * Layer: test programs only; uses the C library, nothing of the engine.
 */
#ifndef BTREE_STORE_TESTUTIL_H
#define BTREE_STORE_TESTUTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define TU_MAX_FAILURES 30

static int failures;

/* fmt is ": " followed by the caller's message (possibly empty). */
__attribute__((format(printf, 4, 5))) static inline void tu_fail(const char *file, int line,
                                                                 const char *what,
                                                                 const char *fmt, ...) {
    fprintf(stderr, "%s:%d: FAIL %s", file, line, what);
    if (fmt[2]) {
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    if (++failures > TU_MAX_FAILURES)
        exit(1);
}

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (!(cond))                                                                         \
            tu_fail(__FILE__, __LINE__, #cond, ": " __VA_ARGS__);                            \
    } while (0)

#define CHECK_EQ(a, b)                                                                       \
    do {                                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                                  \
        if (a_ != b_)                                                                        \
            tu_fail(__FILE__, __LINE__, #a " == " #b, ": %lld vs %lld", a_, b_);             \
    } while (0)

#endif
