// build: csrc/crc32c.c
/*
 * test_crc32c.c - CRC32C: check values, the dispatched implementation against the portable
 * table on every length 0..1100 (and page-sized buffers) at every alignment, chained calls.
 * With argument "bench": time both on 4 KiB pages.
 *
 * Layer: test program; calls only crc32c.h.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crc32c.h"
#include "testutil.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Bit-at-a-time reference. */
static uint32_t crc_ref(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void bench(void)
{
    enum { N = 4096, ITERS = 200000 };
    static _Alignas(64) uint8_t page[N];
    for (size_t i = 0; i < N; i++)
        page[i] = (uint8_t)rng();
    volatile uint32_t sink = 0;
    double t0 = now();
    for (int i = 0; i < ITERS; i++)
        sink ^= bs_crc32c((uint32_t)i, page, N);
    double t1 = now();
    for (int i = 0; i < ITERS / 10; i++)
        sink ^= bs_crc32c_portable((uint32_t)i, page, N);
    double t2 = now();
    printf("%s: %.1f ns/page (%.2f GB/s); table: %.1f ns/page\n", bs_crc32c_impl(),
           (t1 - t0) / ITERS * 1e9, (double)N * ITERS / (t1 - t0) / 1e9,
           (t2 - t1) / (ITERS / 10) * 1e9);
    (void)sink;
}

int main(int argc, char **argv)
{
    const char *impl = bs_crc32c_impl();
    CHECK(!strcmp(impl, "sse4.2") || !strcmp(impl, "armv8") || !strcmp(impl, "table"), "%s",
          impl);
    if (argc > 1 && !strcmp(argv[1], "bench")) {
        bench();
        return 0;
    }

    /* check values */
    CHECK(bs_crc32c(0, "123456789", 9) == 0xE3069283u, "%08x", bs_crc32c(0, "123456789", 9));
    CHECK(bs_crc32c_portable(0, "123456789", 9) == 0xE3069283u, "portable");
    CHECK(bs_crc32c(0, "", 0) == 0, "empty");
    CHECK(bs_crc32c(0x12345678u, NULL, 0) == 0x12345678u, "empty keeps crc");
    {
        uint8_t z[32] = {0}, ff[32];
        memset(ff, 0xff, sizeof ff);
        /* RFC 3720 B.4 test vectors */
        CHECK(bs_crc32c(0, z, 32) == 0x8A9136AAu, "zeros %08x", bs_crc32c(0, z, 32));
        CHECK(bs_crc32c(0, ff, 32) == 0x62A8AB43u, "ones %08x", bs_crc32c(0, ff, 32));
        uint8_t inc[32];
        for (int i = 0; i < 32; i++)
            inc[i] = (uint8_t)i;
        CHECK(bs_crc32c(0, inc, 32) == 0x46DD794Eu, "inc %08x", bs_crc32c(0, inc, 32));
    }

    /* every length 0..1100 at every alignment 0..15, plus larger sizes */
    enum { MAXLEN = 70000 };
    uint8_t *buf = malloc(MAXLEN + 64);
    for (size_t i = 0; i < MAXLEN + 64; i++)
        buf[i] = (uint8_t)rng();
    for (size_t len = 0; len <= 1100; len++) {
        for (size_t al = 0; al < 16; al++) {
            uint32_t seed = (al & 1) ? (uint32_t)rng() : 0;
            uint32_t a = bs_crc32c(seed, buf + al, len);
            uint32_t b = bs_crc32c_portable(seed, buf + al, len);
            CHECK(a == b, "len %zu align %zu: %08x vs %08x", len, al, a, b);
            if (al == 3) {
                uint32_t r = crc_ref(seed, buf + al, len);
                CHECK(a == r, "len %zu vs reference: %08x vs %08x", len, a, r);
            }
        }
    }
    static const size_t sizes[] = {1152, 1151, 3 * 1360 - 1, 3 * 1360, 3 * 1360 + 1, 4088,
                                   4092, 4096, 8192, 8191, 16384, 32768, 65536, MAXLEN};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (size_t al = 0; al < 9; al++) {
            size_t len = sizes[i];
            uint32_t a = bs_crc32c(0, buf + al, len);
            uint32_t b = bs_crc32c_portable(0, buf + al, len);
            CHECK(a == b, "len %zu align %zu: %08x vs %08x", len, al, a, b);
        }
        CHECK(bs_crc32c(7, buf, sizes[i]) == crc_ref(7, buf, sizes[i]), "ref len %zu",
              sizes[i]);
    }
    /* random lengths/offsets */
    for (int it = 0; it < 2000; it++) {
        size_t off = rng() % 64, len = rng() % (MAXLEN - 64);
        uint32_t seed = (uint32_t)rng();
        uint32_t a = bs_crc32c(seed, buf + off, len);
        uint32_t b = bs_crc32c_portable(seed, buf + off, len);
        CHECK(a == b, "random len %zu off %zu", len, off);
    }

    /* chained calls: crc(crc(a), b) == crc(a||b), split anywhere, both implementations */
    for (int it = 0; it < 3000; it++) {
        size_t len = rng() % 9000, cut = len ? rng() % (len + 1) : 0;
        size_t off = rng() % 32;
        uint32_t whole = bs_crc32c(0, buf + off, len);
        uint32_t part = bs_crc32c(bs_crc32c(0, buf + off, cut), buf + off + cut, len - cut);
        uint32_t part2 = bs_crc32c_portable(bs_crc32c(0, buf + off, cut), buf + off + cut,
                                            len - cut);
        CHECK(whole == part, "chain len %zu cut %zu", len, cut);
        CHECK(whole == part2, "chain mixed len %zu cut %zu", len, cut);
    }
    /* byte-at-a-time chaining */
    {
        uint32_t c = 0;
        for (size_t i = 0; i < 5000; i++)
            c = bs_crc32c(c, buf + i, 1);
        CHECK(c == bs_crc32c(0, buf, 5000), "bytewise chain");
    }
    free(buf);

    if (failures) {
        fprintf(stderr, "test_crc32c: %d failure(s) (impl %s)\n", failures, impl);
        return 1;
    }
    printf("test_crc32c: ok (impl %s)\n", impl);
    return 0;
}
