// build: csrc/util.c csrc/crc32c.c csrc/io_posix.c csrc/io_fault.c csrc/cache.c csrc/freelist.c csrc/meta.c csrc/pager.c csrc/db.c csrc/lockfile.c csrc/btree.c csrc/check.c csrc/map.c
/*
 * test_engine.c - end-to-end test of the engine through its public C API (bs.h) on real
 * files: commits, reopen, snapshot isolation, freelist reuse across reopen, spilling of a
 * huge transaction, overflow values, buckets, savepoints, and the checker after every step.
 *
 * Layer: test program; uses bs.h and io.h only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bs.h"

static int failures;
#define CHECK(c)                                                                         \
    do {                                                                                 \
        if (!(c)) {                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__,     \
                    __LINE__, #c, bs_errmsg());                                           \
            failures++;                                                                  \
            return;                                                                      \
        }                                                                                \
    } while (0)
#define OK(e) CHECK((e) == BS_OK)

static char path[256];

static bs_db *open_db(uint32_t psize, uint64_t cache)
{
    bs_options o = {0};
    o.page_size = psize;
    o.cache_size = cache;
    o.create = 1;
    o.sync = 1;
    bs_db *db = NULL;
    if (bs_db_open(path, &o, &db) != BS_OK) {
        fprintf(stderr, "open failed: %s\n", bs_errmsg());
        exit(1);
    }
    return db;
}

static void key_of(uint64_t i, char *k, size_t *klen)
{
    *klen = (size_t)snprintf(k, 32, "key-%010llu", (unsigned long long)(i * 2654435761u % 1000003));
}

static int put1(bs_txn *t, bs_bucket *b, const void *k, size_t kl, const void *v, size_t vl)
{
    int rc = bs_txn_enter(t);
    if (rc)
        return rc;
    rc = bs_put(t, b, k, kl, v, vl, 0);
    bs_txn_leave(t);
    return rc;
}

static int get1(bs_txn *t, bs_bucket *b, const void *k, size_t kl, char *out, size_t *ol)
{
    int rc = bs_txn_enter(t);
    if (rc)
        return rc;
    bs_val v;
    rc = bs_get(t, b, k, kl, &v);
    if (rc == BS_OK) {
        *ol = v.len;
        rc = bs_read_value(t, &v, out);
    }
    bs_txn_leave(t);
    return rc;
}

static void test_basic(uint32_t psize)
{
    unlink(path);
    bs_db *db = open_db(psize, 1 << 20);
    bs_txn *t;
    bs_bucket *b;
    const uint64_t N = 20000;
    OK(bs_txn_begin(db, BS_TXN_WRITE, -1, &t));
    OK(bs_bucket_open(t, NULL, 0, 0, &b));
    for (uint64_t i = 0; i < N; i++) {
        char k[32], v[64];
        size_t kl;
        key_of(i, k, &kl);
        int vl = snprintf(v, sizeof v, "value-%llu", (unsigned long long)i);
        OK(put1(t, b, k, kl, v, (size_t)vl));
    }
    OK(bs_txn_commit(t));
    OK(bs_db_check(db));

    /* a reader keeps its snapshot while a writer deletes half */
    bs_txn *r;
    OK(bs_txn_begin(db, 0, 0, &r));
    OK(bs_txn_begin(db, BS_TXN_WRITE, -1, &t));
    OK(bs_bucket_open(t, NULL, 0, 0, &b));
    for (uint64_t i = 0; i < N; i += 2) {
        char k[32];
        size_t kl;
        key_of(i, k, &kl);
        OK(bs_txn_enter(t));
        int rc = bs_del(t, b, k, kl);
        bs_txn_leave(t);
        OK(rc);
    }
    OK(bs_txn_commit(t));
    bs_bucket *rb;
    OK(bs_bucket_open(r, NULL, 0, 0, &rb));
    uint64_t cnt;
    OK(bs_bucket_count(r, rb, &cnt));
    CHECK(cnt == N);
    for (uint64_t i = 0; i < N; i += 97) {
        char k[32], out[64];
        size_t kl, ol;
        key_of(i, k, &kl);
        OK(get1(r, rb, k, kl, out, &ol));
    }
    bs_txn_abort(r);
    OK(bs_db_check(db));
    bs_stat st;
    OK(bs_db_stat(db, &st));
    CHECK(st.entries == N / 2);
    OK(bs_db_close(db));

    /* reopen: contents, then delete everything: one empty leaf remains */
    db = open_db(psize, 1 << 20);
    OK(bs_db_check(db));
    OK(bs_txn_begin(db, BS_TXN_WRITE, -1, &t));
    OK(bs_bucket_open(t, NULL, 0, 0, &b));
    for (uint64_t i = 0; i < N; i++) {
        char k[32], out[64];
        size_t kl, ol;
        key_of(i, k, &kl);
        int rc = get1(t, b, k, kl, out, &ol);
        CHECK(rc == ((i % 2) ? BS_OK : BS_NOTFOUND));
        if (rc == BS_OK) {
            char v[64];
            int vl = snprintf(v, sizeof v, "value-%llu", (unsigned long long)i);
            CHECK(ol == (size_t)vl && memcmp(out, v, ol) == 0);
            OK(bs_txn_enter(t));
            rc = bs_del(t, b, k, kl);
            bs_txn_leave(t);
            OK(rc);
        }
    }
    OK(bs_txn_commit(t));
    OK(bs_db_check(db));
    OK(bs_db_stat(db, &st));
    CHECK(st.entries == 0 && st.depth == 1);
    uint64_t pages = st.page_count;
    OK(bs_db_close(db));

    /* freed pages are reused after reopen: refilling does not grow the file much */
    for (int round = 0; round < 3; round++) {
        db = open_db(psize, 1 << 20);
        OK(bs_txn_begin(db, BS_TXN_WRITE, -1, &t));
        OK(bs_bucket_open(t, NULL, 0, 0, &b));
        for (uint64_t i = 0; i < N / 2; i++) {
            char k[32];
            size_t kl;
            key_of(i, k, &kl);
            OK(put1(t, b, k, kl, "v", 1));
        }
        OK(bs_txn_commit(t));
        OK(bs_txn_begin(db, BS_TXN_WRITE, -1, &t));
        OK(bs_bucket_open(t, NULL, 0, 0, &b));
        for (uint64_t i = 0; i < N / 2; i++) {
            char k[32];
            size_t kl;
            key_of(i, k, &kl);
            OK(bs_txn_enter(t));
            int rc = bs_del(t, b, k, kl);
            bs_txn_leave(t);
            OK(rc);
        }
        OK(bs_txn_commit(t));
        OK(bs_db_check(db));
        OK(bs_db_close(db));
    }
    db = open_db(psize, 1 << 20);
    OK(bs_db_stat(db, &st));
    CHECK(st.page_count <= pages + 8);
    OK(bs_db_close(db));
}

static void test_big(void)
{
    unlink(path);
    /* tiny cache: the transaction must spill */
    bs_db *db = open_db(4096, 256 * 1024);
    bs_txn *t;
    bs_bucket *b, *b2;
    OK(bs_txn_begin(db, BS_TXN_WRITE, -1, &t));
    OK(bs_bucket_open(t, NULL, 0, 0, &b));
    OK(bs_txn_enter(t));
    OK(bs_bucket_open(t, "second", 6, 1, &b2));
    bs_txn_leave(t);
    char *big = malloc(5 << 20);
    for (size_t i = 0; i < (5u << 20); i++)
        big[i] = (char)(i * 7 + (i >> 13));
    for (uint64_t i = 0; i < 60000; i++) {
        char k[32], v[200];
        size_t kl;
        key_of(i, k, &kl);
        memset(v, (int)(i & 255), sizeof v);
        OK(put1(t, (i & 1) ? b : b2, k, kl, v, 100 + i % 100));
    }
    OK(put1(t, b, "big", 3, big, 5 << 20));
    OK(put1(t, b2, "mid", 3, big, 3000));
    OK(bs_txn_commit(t));
    OK(bs_db_check(db));
    OK(bs_db_close(db));
    db = open_db(4096, 256 * 1024);
    OK(bs_txn_begin(db, 0, 0, &t));
    OK(bs_bucket_open(t, NULL, 0, 0, &b));
    char *out = malloc(5 << 20);
    size_t ol = 0;
    OK(get1(t, b, "big", 3, out, &ol));
    CHECK(ol == (5u << 20) && memcmp(out, big, ol) == 0);
    OK(bs_txn_enter(t));
    OK(bs_bucket_open(t, "second", 6, 0, &b2));
    uint64_t cnt;
    OK(bs_bucket_count(t, b2, &cnt));
    CHECK(cnt == 30001);
    bs_txn_leave(t);
    OK(get1(t, b2, "mid", 3, out, &ol));
    CHECK(ol == 3000 && memcmp(out, big, 3000) == 0);
    bs_txn_abort(t);

    /* savepoints: roll back the inner part only */
    OK(bs_txn_begin(db, BS_TXN_WRITE, -1, &t));
    OK(bs_bucket_open(t, NULL, 0, 0, &b));
    OK(put1(t, b, "outer", 5, "1", 1));
    OK(bs_txn_savepoint(t));
    OK(put1(t, b, "inner", 5, "2", 1));
    OK(put1(t, b, "outer", 5, "3", 1));
    OK(bs_txn_enter(t));
    OK(bs_bucket_drop(t, "second", 6));
    bs_txn_leave(t);
    OK(bs_txn_rollback(t));
    char v[8];
    size_t vl;
    CHECK(get1(t, b, "inner", 5, v, &vl) == BS_NOTFOUND);
    OK(get1(t, b, "outer", 5, v, &vl));
    CHECK(vl == 1 && v[0] == '1');
    /* a bucket that exists but is first opened inside a savepoint survives its rollback */
    OK(bs_txn_savepoint(t));
    OK(bs_txn_enter(t));
    OK(bs_bucket_open(t, "second", 6, 0, &b2));
    bs_txn_leave(t);
    OK(put1(t, b2, "tmp", 3, "t", 1));
    OK(bs_txn_rollback(t));
    OK(bs_txn_enter(t));
    OK(bs_bucket_open(t, "second", 6, 0, &b2));
    OK(bs_bucket_count(t, b2, &cnt));
    bs_txn_leave(t);
    CHECK(cnt == 30001);
    CHECK(get1(t, b2, "tmp", 3, v, &vl) == BS_NOTFOUND);
    OK(bs_txn_savepoint(t));
    OK(put1(t, b, "kept", 4, "4", 1));
    OK(bs_txn_release(t));
    OK(bs_txn_commit(t));
    OK(bs_db_check(db));
    OK(bs_txn_begin(db, 0, 0, &t));
    OK(bs_bucket_open(t, NULL, 0, 0, &b));
    OK(get1(t, b, "kept", 4, v, &vl));
    OK(bs_txn_enter(t));
    OK(bs_bucket_open(t, "second", 6, 0, &b2));
    bs_txn_leave(t);
    bs_txn_abort(t);

    /* drop frees everything: then the whole bucket's pages are reusable */
    OK(bs_txn_begin(db, BS_TXN_WRITE, -1, &t));
    OK(bs_txn_enter(t));
    OK(bs_bucket_drop(t, "second", 6));
    bs_txn_leave(t);
    OK(bs_txn_commit(t));
    OK(bs_db_check(db));
    free(big);
    free(out);
    OK(bs_db_close(db));
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/bs_test_engine_%d.db", (int)getpid());
    test_basic(4096);
    test_basic(1024);
    test_big();
    unlink(path);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("test_engine: ok\n");
    return 0;
}
