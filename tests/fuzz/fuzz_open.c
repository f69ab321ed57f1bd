/*
 * fuzz_open.c - libFuzzer target: open an arbitrary byte string as a database file and use it.
 *
 * Layer: test harness over the engine's public C API (bs.h) and I/O table (io.h). The file
 * lives in memory behind a bs_io_methods table, so the fuzzer never touches the disk. For each
 * input it opens the image, runs the integrity checker, walks every bucket with cursors in
 * both directions, looks keys up, reads overflow values, and commits a small write
 * transaction. Any crash, hang, sanitizer report or leak is a bug; error codes are fine.
 *
 * Build (CI):  clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icsrc \
 *                tests/fuzz/fuzz_open.c \
 *                csrc/{util,crc32c,cache,freelist,meta,pager,db,btree,check,io_posix,io_fault}.c
 * Also builds as a plain program replaying files given on the command line (-DREPLAY_MAIN).
 *
 * With -DFUZZ_RESEAL (run_fuzz.sh builds both) every input is first resealed: each page's
 * CRC32C is recomputed over its (mutated) bytes, the meta pages' commit lists take the new
 * CRCs of the pages they name, and the meta pages are resealed last. Every checksum of the
 * image is then valid, so the mutations reach the structural checks behind the CRC (crafted
 * files: pages inconsistent with each other, out-of-range fields) instead of stopping at it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bs.h"
#include "io.h"

typedef struct memfile {
    uint8_t *buf;
    size_t len, cap;
} memfile;

static int mem_open(void *arg, const char *path, int readonly, int create, bs_file **out, int *created)
{
    (void)path; (void)readonly; (void)create;
    *out = (bs_file *)arg;
    *created = 0;
    return 0;
}
static int mem_close(bs_file *f, int forked) { (void)f; (void)forked; return 0; }
static int mem_read(bs_file *f, void *buf, size_t len, uint64_t off, size_t *got)
{
    memfile *m = (memfile *)f;
    size_t n = 0;
    if (off < m->len)
        n = m->len - off < len ? m->len - off : len;
    if (n)
        memcpy(buf, m->buf + off, n);
    memset((uint8_t *)buf + n, 0, len - n);
    *got = n;
    return 0;
}
static int mem_write(bs_file *f, const void *buf, size_t len, uint64_t off)
{
    memfile *m = (memfile *)f;
    if (off + len > (64u << 20))
        return ENOSPC; /* keep the fuzzer's memory bounded */
    if (off + len > m->cap) {
        size_t nc = (off + len) * 2;
        uint8_t *nb = realloc(m->buf, nc);
        if (!nb)
            return ENOMEM;
        m->buf = nb;
        m->cap = nc;
    }
    if (off > m->len)
        memset(m->buf + m->len, 0, off - m->len);
    memcpy(m->buf + off, buf, len);
    if (off + len > m->len)
        m->len = off + len;
    return 0;
}
static int mem_writev(bs_file *f, const struct iovec *iov, int n, uint64_t off)
{
    for (int i = 0; i < n; i++) {
        int err = mem_write(f, iov[i].iov_base, iov[i].iov_len, off);
        if (err)
            return err;
        off += iov[i].iov_len;
    }
    return 0;
}
static int mem_sync(bs_file *f) { (void)f; return 0; }
static int mem_size(bs_file *f, uint64_t *out) { *out = ((memfile *)f)->len; return 0; }
static int mem_truncate(bs_file *f, uint64_t len)
{
    memfile *m = (memfile *)f;
    if (len < m->len)
        m->len = len;
    return 0;
}
static int mem_lock(bs_file *f, int kind) { (void)f; (void)kind; return 0; }
static int mem_sync_dir(void *arg, const char *path) { (void)arg; (void)path; return 0; }

static const bs_io_methods mem_io = {mem_open, mem_close, mem_read, mem_write, mem_writev,
                                     mem_sync, mem_size, mem_truncate, mem_lock, mem_sync_dir};

static int collect_name(void *ctx, const void *name, size_t nlen)
{
    char (*names)[256] = ctx;
    for (int i = 0; i < 8; i++)
        if (!names[i][0]) {
            size_t n = nlen < 255 ? nlen : 255;
            memcpy(names[i], name, n);
            names[i][n] = 0;
            return 0;
        }
    return 1;
}

static void walk(bs_txn *txn, bs_bucket *b)
{
    bs_cursor *cur;
    if (bs_cursor_open(txn, b, &cur))
        return;
    for (int dir = 0; dir < 2; dir++) {
        int rc = bs_cursor_seek(cur, dir ? BS_SEEK_LAST : BS_SEEK_FIRST, NULL, 0);
        for (int steps = 0; rc == BS_OK && steps < 100000; steps++) {
            bs_val k, v;
            if (bs_cursor_current(cur, &k, &v))
                break;
            if (v.len <= (1u << 20)) {
                uint8_t *dst = malloc(v.len ? v.len : 1);
                if (dst) {
                    bs_read_value(txn, &v, dst);
                    free(dst);
                }
            }
            bs_val g;
            bs_get(txn, b, k.data, k.len, &g);
            rc = dir ? bs_cursor_prev(cur) : bs_cursor_next(cur);
        }
    }
    bs_cursor_close(cur);
}

#ifdef FUZZ_RESEAL
#include "crc32c.h"
#include "format.h"

/* CRC of the page at off: [4, P), or for an overflow run [4, 32 + vlen) of the run when the
 * whole run lies in the image. Returns the bytes the page (run) spans. */
static size_t reseal_page(uint8_t *buf, size_t size, size_t off, uint32_t psize)
{
    uint8_t *pg = buf + off;
    size_t span = psize;
    size_t len = psize;
    if (pg[PH_TYPE] == 4) { /* overflow: the first page of a run */
        uint64_t run = (uint64_t)PH_SIZE + get32(pg + PH_FRAG);
        if (run <= size - off) {
            len = (size_t)run;
            span = (len + psize - 1) / psize * psize;
        }
    }
    put32(pg + PH_CRC, bs_crc32c(0, pg + 4, len - 4));
    return span;
}

static void reseal(uint8_t *buf, size_t size)
{
    if (size < 2 * 1024)
        return;
    uint32_t psize = get32(buf + META_PAGESIZE);
    if (psize < 1024 || psize > 65536 || (psize & (psize - 1)) || size < 2 * (size_t)psize)
        psize = 4096;
    if (size < 2 * (size_t)psize)
        return;
    for (size_t off = 2 * (size_t)psize; off + psize <= size;)
        off += reseal_page(buf, size, off, psize);
    for (int m = 0; m < 2; m++) {
        uint8_t *meta = buf + (size_t)m * psize;
        uint32_t n = get32(meta + META_LIST_N);
        for (uint32_t i = 0; i < n && META_LIST + META_LIST_ENT * (size_t)(i + 1) <= psize; i++) {
            uint8_t *ent = meta + META_LIST + META_LIST_ENT * (size_t)i;
            uint64_t pgno = get64(ent);
            if (pgno >= 2 && pgno < size / psize)
                put32(ent + 8, bs_crc32c(0, buf + pgno * psize + 4, psize - 4));
        }
        put32(meta + PH_CRC, bs_crc32c(0, meta + 4, psize - 4));
    }
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memfile m = {0};
    m.buf = malloc(size ? size : 1);
    if (!m.buf)
        return 0;
    memcpy(m.buf, data, size);
    m.len = m.cap = size;
#ifdef FUZZ_RESEAL
    reseal(m.buf, size);
#endif
    bs_options o = {0};
    o.cache_size = 1 << 20;
    o.create = 1;
    o.sync = 1;
    o.io = &mem_io;
    o.io_arg = &m;
    bs_db *db;
    if (bs_db_open("fuzz.db", &o, &db) == BS_OK) {
        bs_db_check(db);
        bs_txn *txn;
        if (bs_txn_begin(db, 0, 0, &txn) == BS_OK) {
            if (bs_txn_enter(txn) == BS_OK) {
                bs_bucket *b;
                char names[8][256];
                memset(names, 0, sizeof names);
                if (bs_bucket_open(txn, NULL, 0, 0, &b) == BS_OK)
                    walk(txn, b);
                bs_bucket_list(txn, collect_name, names);
                for (int i = 0; i < 8 && names[i][0]; i++)
                    if (bs_bucket_open(txn, names[i], strlen(names[i]), 0, &b) == BS_OK)
                        walk(txn, b);
                bs_txn_leave(txn);
            }
            bs_txn_abort(txn);
        }
        if (bs_txn_begin(db, BS_TXN_WRITE, 0, &txn) == BS_OK) {
            if (bs_txn_enter(txn) == BS_OK) {
                bs_bucket *b;
                if (bs_bucket_open(txn, NULL, 0, 0, &b) == BS_OK) {
                    for (int i = 0; i < 20; i++) {
                        char k[16];
                        snprintf(k, sizeof k, "k%d", i * 7);
                        if (i % 3 == 2)
                            bs_del(txn, b, k, strlen(k));
                        else
                            bs_put(txn, b, k, strlen(k), data, size < 3000 ? size : 3000, 0);
                    }
                }
                if (bs_bucket_open(txn, "fz", 2, 1, &b) == BS_OK)
                    bs_put(txn, b, "x", 1, "y", 1, 0);
                bs_txn_leave(txn);
            }
            bs_txn_commit(txn);
        }
        bs_db_check(db);
        bs_db_close(db);
    }
    free(m.buf);
    return 0;
}

#ifdef REPLAY_MAIN
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
        if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n)
            LLVMFuzzerTestOneInput(buf, (size_t)n);
        free(buf);
        fclose(f);
    }
    return 0;
}
#endif
