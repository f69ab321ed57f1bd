// build: csrc/util.c csrc/crc32c.c csrc/io_posix.c csrc/io_fault.c csrc/cache.c csrc/freelist.c csrc/meta.c csrc/pager.c csrc/db.c csrc/lockfile.c csrc/btree.c csrc/check.c
/*
 * test_oom.c - out of memory anywhere in a write transaction, its savepoints, its commit or
 * its abort: the n-th allocation from a point on fails, for n = 1, 2, ... until the whole
 * sequence runs through. Whatever the calls return, afterwards the file checks clean (also
 * after reopening) and the next commit passes the debug whole-state check, i.e. the writer's
 * in-memory free set is exactly the persisted one.
 *
 * Layer: test program; calls bs.h. Replaces malloc/calloc/realloc/posix_memalign of the
 * process by wrappers around glibc's own allocator that can be told to fail; sanitizer
 * builds (which own the allocator) run the same sequence without injected failures.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bs.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define INJECT 0
#else
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INJECT 0
#endif
#endif
#ifndef INJECT
#define INJECT 1
#endif
#endif

static long countdown; /* 0: off; n: the n-th allocation from now fails */
static int fired;

#if INJECT
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static int should_fail(void)
{
    if (countdown > 0 && --countdown == 0) {
        fired = 1;
        return 1;
    }
    return 0;
}
void *malloc(size_t n) { return should_fail() ? NULL : __libc_malloc(n); }
void *calloc(size_t a, size_t b) { return should_fail() ? NULL : __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { return should_fail() ? NULL : __libc_realloc(p, n); }
int posix_memalign(void **out, size_t align, size_t n)
{
    if (should_fail())
        return ENOMEM;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
#endif

static char path[64];

static bs_db *open_db(void)
{
    bs_options o = {0};
    o.page_size = 1024;
    o.cache_size = 16 * 1024; /* tiny: evictions and misses allocate too */
    o.create = 1;
    bs_db *db = NULL;
    if (bs_db_open(path, &o, &db) != BS_OK) {
        fprintf(stderr, "open: %s\n", bs_errmsg());
        exit(1);
    }
    return db;
}

static int put1(bs_txn *t, int i, size_t vlen)
{
    char k[32];
    static char v[3000];
    memset(v, 'a' + i % 26, sizeof v);
    int kl = snprintf(k, sizeof k, "key%06d", i);
    bs_bucket *b;
    int rc = bs_txn_enter(t);
    if (rc)
        return rc;
    bs_bucket_open(t, NULL, 0, 0, &b);
    rc = bs_put(t, b, k, (size_t)kl, v, vlen, 0);
    bs_txn_leave(t);
    return rc;
}

static int del1(bs_txn *t, int i)
{
    char k[32];
    int kl = snprintf(k, sizeof k, "key%06d", i);
    bs_bucket *b;
    int rc = bs_txn_enter(t);
    if (rc)
        return rc;
    bs_bucket_open(t, NULL, 0, 0, &b);
    rc = bs_del(t, b, k, (size_t)kl);
    bs_txn_leave(t);
    return rc;
}

/* The sequence under test: changes, a savepoint rolled back, one released, commit (or abort
 * when `abort_it`). Returns the commit's result (BS_OK for an abort). */
static int sequence(bs_db *db, int round, int abort_it)
{
    bs_txn *t;
    int rc = bs_txn_begin(db, 1, -1, &t);
    if (rc)
        return rc;
    for (int i = 0; i < 40 && rc == BS_OK; i++)
        rc = put1(t, (round * 7 + i) % 300, (size_t)(i % 5 == 0 ? 2500 : 60));
    for (int i = 0; i < 15 && rc == BS_OK; i++) {
        rc = del1(t, (round * 11 + i * 3) % 300);
        if (rc == BS_NOTFOUND)
            rc = BS_OK;
    }
    if (rc == BS_OK && (rc = bs_txn_savepoint(t)) == BS_OK) {
        for (int i = 0; i < 10 && rc == BS_OK; i++)
            rc = put1(t, 1000 + i, 700);
        int r2 = bs_txn_rollback(t);
        rc = rc ? rc : r2;
    }
    if (rc == BS_OK && (rc = bs_txn_savepoint(t)) == BS_OK) {
        for (int i = 0; i < 5 && rc == BS_OK; i++)
            rc = del1(t, (round + i) % 300) == BS_NOTFOUND ? BS_OK : BS_OK;
        int r2 = bs_txn_release(t);
        rc = rc ? rc : r2;
    }
    if (abort_it) {
        bs_txn_abort(t);
        return BS_OK;
    }
    (void)rc; /* commit reports a failed transaction itself (BS_BADTXN) */
    return bs_txn_commit(t);
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/bs_test_oom_%d", (int)getpid());
    unlink(path);
    setenv("BTREE_STORE_CHECK_COMMITS", "1", 1);
    bs_db *db = open_db();
    /* some history: free pages, a freelist chain */
    for (int r = 0; r < 6; r++)
        CHECK(sequence(db, r, 0) == BS_OK, "setup commit %d: %s", r, bs_errmsg());
    int done = 0, round = 10;
    for (long n = 1; n < 100000 && !done; n++, round++) {
        int abort_it = (int)(n % 4 == 0);
        fired = 0;
        countdown = INJECT ? n : 0;
        int rc = sequence(db, round, abort_it);
        countdown = 0;
        if (!fired)
            done = 1; /* the whole sequence ran without a failure */
        CHECK(rc == BS_OK || rc == BS_NOMEM || rc == BS_BADTXN, "n=%ld: rc %d %s", n, rc,
              bs_errmsg());
        if (!fired && !abort_it)
            CHECK(rc == BS_OK, "n=%ld: no failure injected, commit %d %s", n, rc, bs_errmsg());
        /* the writer's memory agrees with the file: a plain commit passes the debug check */
        bs_txn *t;
        CHECK(bs_txn_begin(db, 1, -1, &t) == BS_OK, "n=%ld begin: %s", n, bs_errmsg());
        CHECK(put1(t, 5000, 10) == BS_OK, "n=%ld put", n);
        rc = bs_txn_commit(t);
        CHECK(rc == BS_OK, "n=%ld: after the failure, commit %d %s", n, rc, bs_errmsg());
        if (n % 25 == 0 || done) {
            CHECK(bs_db_check(db) == BS_OK, "n=%ld check: %s", n, bs_errmsg());
            CHECK(bs_db_close(db) == BS_OK, "close");
            db = open_db();
            CHECK(bs_db_check(db) == BS_OK, "n=%ld check after reopen: %s", n, bs_errmsg());
        }
        if (failures)
            break;
    }
    CHECK(done, "the sequence never ran through");
    bs_db_close(db);
    unlink(path);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("test_oom: ok\n");
    return 0;
}
