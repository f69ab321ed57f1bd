/*
 * crc32c.c - CRC32C (Castagnoli, reflected polynomial 0x82F63B78) with runtime dispatch.
 *
 * Layer: engine utility; calls only the C library (and CPU intrinsics).
 *
 * Implementations, chosen once at first use (pthread_once):
 *   "sse4.2"  x86-64 with SSE4.2: the crc32 instruction. Long buffers are cut into blocks of
 *             3 x L bytes whose three thirds are summed as three independent streams (the
 *             instruction has latency 3, throughput 1), then joined with shift tables: the CRC
 *             register update is linear over GF(2), so state(A||B) = shift_|B|(state(A)) ^
 *             state_0(B), where shift_n multiplies by x^(8n) mod P (a 4 x 256 lookup table per
 *             block length, built at init from the portable code).
 *   "armv8"   aarch64 with the CRC32 extension (HWCAP_CRC32): __crc32cd, one stream.
 *   "table"   portable slicing-by-8.
 * Internally all code works on the raw register (no pre/post inversion); bs_crc32c inverts
 * on entry and exit so that chained calls compose.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "crc32c.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <nmmintrin.h>
#define CRC_X86 1
#endif

#if defined(__aarch64__) && defined(__GNUC__)
#include <arm_acle.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#define CRC_ARM 1
#elif defined(__APPLE__)
#define CRC_ARM 1 /* every Apple arm64 CPU has the CRC32 instructions */
#endif
#endif

#define POLY 0x82F63B78u

static uint32_t crc_table[8][256];

typedef uint32_t (*crc_fn)(uint32_t crc, const uint8_t *p, size_t len);

static crc_fn crc_impl_fn;
static const char *crc_impl_name = "table";
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static inline uint64_t crc_load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* ---- portable slicing-by-8 (raw register) ---- */
static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len && ((uintptr_t)p & 7)) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        uint64_t v = crc_load64(p);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
#endif
        v ^= crc;
        crc = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^
              crc_table[5][(v >> 16) & 0xff] ^ crc_table[4][(v >> 24) & 0xff] ^
              crc_table[3][(v >> 32) & 0xff] ^ crc_table[2][(v >> 40) & 0xff] ^
              crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(CRC_X86)
/* Block lengths (bytes per stream; multiples of 8). A 4 KiB page is one long block (4080)
 * plus a 16-byte tail; the short blocks pick up mid-sized buffers. */
#define CRC_LONG 1360
#define CRC_SHORT 128
static uint32_t crc_shift_long[4][256];
static uint32_t crc_shift_short[4][256];

static inline uint32_t crc_shift(uint32_t t[4][256], uint32_t crc)
{
    return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^
           t[3][crc >> 24];
}

/* Table for shift_n: entry [k][b] = raw crc of the register (b << 8k) followed by n zeros. */
static void crc_shift_init(uint32_t t[4][256], size_t n)
{
    static const uint8_t zeros[CRC_LONG];
    uint32_t bit[32];
    for (int i = 0; i < 32; i++)
        bit[i] = crc_sw(1u << i, zeros, n);
    for (int k = 0; k < 4; k++) {
        for (int b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int j = 0; j < 8; j++)
                if (b & (1 << j))
                    v ^= bit[8 * k + j];
            t[k][b] = v;
        }
    }
}

__attribute__((target("sse4.2")))
static uint32_t crc_hw_x86(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c0 = crc;
    while (len && ((uintptr_t)p & 7)) {
        c0 = _mm_crc32_u8((uint32_t)c0, *p++);
        len--;
    }
    while (len >= 3 * CRC_LONG) {
        uint64_t c1 = 0, c2 = 0;
        /* unrolled: the loop's own add/compare/branch would be half the instructions */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 5
#elif defined(__clang__)
#pragma unroll 5
#endif
        for (size_t i = 0; i < CRC_LONG; i += 8) {
            c0 = _mm_crc32_u64(c0, crc_load64(p + i));
            c1 = _mm_crc32_u64(c1, crc_load64(p + CRC_LONG + i));
            c2 = _mm_crc32_u64(c2, crc_load64(p + 2 * CRC_LONG + i));
        }
        c0 = crc_shift(crc_shift_long, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = crc_shift(crc_shift_long, (uint32_t)c0) ^ (uint32_t)c2;
        p += 3 * CRC_LONG;
        len -= 3 * CRC_LONG;
    }
    while (len >= 3 * CRC_SHORT) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < CRC_SHORT; i += 8) {
            c0 = _mm_crc32_u64(c0, crc_load64(p + i));
            c1 = _mm_crc32_u64(c1, crc_load64(p + CRC_SHORT + i));
            c2 = _mm_crc32_u64(c2, crc_load64(p + 2 * CRC_SHORT + i));
        }
        c0 = crc_shift(crc_shift_short, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = crc_shift(crc_shift_short, (uint32_t)c0) ^ (uint32_t)c2;
        p += 3 * CRC_SHORT;
        len -= 3 * CRC_SHORT;
    }
    while (len >= 8) {
        c0 = _mm_crc32_u64(c0, crc_load64(p));
        p += 8;
        len -= 8;
    }
    while (len--)
        c0 = _mm_crc32_u8((uint32_t)c0, *p++);
    return (uint32_t)c0;
}
#endif

#if defined(CRC_ARM)
#if defined(__clang__)
#define CRC_ARM_TARGET __attribute__((target("crc")))
#else
#define CRC_ARM_TARGET __attribute__((target("+crc")))
#endif
CRC_ARM_TARGET
static uint32_t crc_hw_arm(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len && ((uintptr_t)p & 7)) {
        crc = __crc32cb(crc, *p++);
        len--;
    }
    while (len >= 8) {
        crc = __crc32cd(crc, crc_load64(p));
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = __crc32cb(crc, *p++);
    return crc;
}
#endif

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc_table[0][n];
        for (int k = 1; k < 8; k++) {
            c = crc_table[0][c & 0xff] ^ (c >> 8);
            crc_table[k][n] = c;
        }
    }
    crc_impl_fn = crc_sw;
    crc_impl_name = "table";
#if defined(CRC_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc_shift_init(crc_shift_long, CRC_LONG);
        crc_shift_init(crc_shift_short, CRC_SHORT);
        crc_impl_fn = crc_hw_x86;
        crc_impl_name = "sse4.2";
    }
#elif defined(CRC_ARM)
#if defined(__linux__)
    if (getauxval(AT_HWCAP) & HWCAP_CRC32)
#endif
    {
        crc_impl_fn = crc_hw_arm;
        crc_impl_name = "armv8";
    }
#endif
}

uint32_t bs_crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    return ~crc_impl_fn(~crc, (const uint8_t *)buf, len);
}

uint32_t bs_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    return ~crc_sw(~crc, (const uint8_t *)buf, len);
}

const char *bs_crc32c_impl(void)
{
    pthread_once(&crc_once, crc_init);
    return crc_impl_name;
}
