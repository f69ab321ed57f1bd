/*
 * crc32c.h - CRC32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78), as iSCSI/ext4.
 *
 * Layer: engine utility, calls nothing but the C library. crc32c.c picks at first use the
 * SSE4.2 crc32 instruction (x86-64) or the ARMv8 CRC32C instructions when the CPU has them,
 * else a portable slicing-by-8 table; all give identical results.
 */
#ifndef BS_CRC32C_H
#define BS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: crc32c(0, buf, len) is the standard CRC32C of buf (check value of
 * "123456789" is 0xE3069283). crc32c(crc32c(0, a, n), b, m) == crc of a||b. */
uint32_t bs_crc32c(uint32_t crc, const void *buf, size_t len);
/* Name of the implementation in use: "sse4.2", "armv8" or "table". */
const char *bs_crc32c_impl(void);
/* Force the portable implementation (tests compare both); returns its result. */
uint32_t bs_crc32c_portable(uint32_t crc, const void *buf, size_t len);

#endif
