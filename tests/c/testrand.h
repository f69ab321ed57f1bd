/*
 * testrand.h - the one pseudo-random source of the randomized C unit tests: a xorshift64
 * generator whose state `rs` a test may seed (never to 0), rnd() its next 64 bits and rn(n) a
 * number below n (0 when n is 0). Reproducible from the seed a failing test prints.
 *
 * Layer: test programs only; uses nothing of the engine.
 */
#ifndef BTREE_STORE_TESTRAND_H
#define BTREE_STORE_TESTRAND_H

#include <stdint.h>

static uint64_t rs = 88172645463325252ull;

static inline uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

static inline uint32_t rn(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }

#endif
