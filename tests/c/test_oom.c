// build: csrc/util.c csrc/crc32c.c csrc/io_posix.c csrc/io_fault.c csrc/cache.c csrc/freelist.c csrc/meta.c csrc/pager.c csrc/db.c csrc/lockfile.c csrc/btree.c csrc/check.c csrc/map.c
/*
 * test_oom.c - out of memory anywhere in a write transaction, its savepoints, its commit or
 * its abort: the n-th allocation from a point on fails, for n = 1, 2, ... until the whole
 * sequence runs through. Whatever the calls return, afterwards the file checks clean (also
 * after reopening) and the next commit passes the debug whole-state check, i.e. the writer's
 * in-memory free set is exactly the persisted one. Three sequences: puts (inline and
 * overflow), deletes and savepoints; named buckets created, filled, emptied (rebalancing at
 * commit) and dropped under nested savepoints; and bs_db_repair of a file whose freelist
 * count was damaged (a failed repair leaves writes refused until a repair succeeds).
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
#include "crc32c.h"
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

static uint64_t txid_of(bs_db *db)
{
    bs_stat st;
    CHECK(bs_db_stat(db, &st) == BS_OK, "stat: %s", bs_errmsg());
    return st.txid;
}

/* bs.h: BS_NOMEM from a commit means nothing durable changed (also when the whole-state
 * check of check_commits runs out of memory after the commit was written); BS_OK means it
 * went through. An aborted (or failed) transaction leaves the txid alone. */
static void check_outcome(const char *what, long n, int rc, int abort_it, uint64_t before,
                          bs_db *db)
{
    char why[300];
    snprintf(why, sizeof why, "%s", bs_errmsg());
    uint64_t after = txid_of(db);
    if (abort_it || rc == BS_NOMEM || rc == BS_BADTXN)
        CHECK(after == before, "%s n=%ld: rc %d (abort %d) but the txid moved %llu -> %llu (%s)",
              what, n, rc, abort_it, (unsigned long long)before, (unsigned long long)after,
              why);
    else if (rc == BS_OK)
        CHECK(after == before + 1, "%s n=%ld: commit ok but txid %llu -> %llu", what, n,
              (unsigned long long)before, (unsigned long long)after);
}

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

static int bput(bs_txn *t, const char *bucket, int create, int i, size_t vlen)
{
    char k[32];
    static char v[2000];
    memset(v, 'A' + i % 26, sizeof v);
    int kl = snprintf(k, sizeof k, "bk%05d", i);
    bs_bucket *b;
    int rc = bs_txn_enter(t);
    if (rc)
        return rc;
    if ((rc = bs_bucket_open(t, bucket, strlen(bucket), create, &b)) == BS_OK)
        rc = bs_put(t, b, k, (size_t)kl, v, vlen, 0);
    bs_txn_leave(t);
    return rc;
}

static int bdel(bs_txn *t, const char *bucket, int i)
{
    char k[32];
    int kl = snprintf(k, sizeof k, "bk%05d", i);
    bs_bucket *b;
    int rc = bs_txn_enter(t);
    if (rc)
        return rc;
    if ((rc = bs_bucket_open(t, bucket, strlen(bucket), 0, &b)) == BS_OK)
        rc = bs_del(t, b, k, (size_t)kl);
    bs_txn_leave(t);
    return rc == BS_NOTFOUND || rc == BS_NOBUCKET ? BS_OK : rc;
}

static int bdrop(bs_txn *t, const char *bucket)
{
    int rc = bs_txn_enter(t);
    if (rc)
        return rc;
    rc = bs_bucket_drop(t, bucket, strlen(bucket));
    bs_txn_leave(t);
    return rc == BS_NOBUCKET ? BS_OK : rc;
}

/* Buckets: create and fill one, empty most of another (rebalancing at commit), drop a third,
 * inside nested savepoints (the inner one rolled back, the outer one released). */
static int sequence_buckets(bs_db *db, int round, int abort_it)
{
    char fill[16], thin[16], gone[16];
    snprintf(fill, sizeof fill, "b%d", round % 5);
    snprintf(thin, sizeof thin, "b%d", (round + 1) % 5);
    snprintf(gone, sizeof gone, "b%d", (round + 3) % 5);
    bs_txn *t;
    int rc = bs_txn_begin(db, 1, -1, &t);
    if (rc)
        return rc;
    for (int i = 0; i < 60 && rc == BS_OK; i++)
        rc = bput(t, fill, 1, i, (size_t)(i % 9 == 0 ? 1500 : 40));
    for (int i = 0; i < 50 && rc == BS_OK; i++)
        rc = bdel(t, thin, i);
    if (rc == BS_OK && (rc = bs_txn_savepoint(t)) == BS_OK) {
        rc = bdrop(t, gone);
        if (rc == BS_OK && (rc = bs_txn_savepoint(t)) == BS_OK) {
            for (int i = 0; i < 20 && rc == BS_OK; i++)
                rc = bput(t, "inner", 1, i, 300);
            int r2 = bs_txn_rollback(t);
            rc = rc ? rc : r2;
        }
        int r2 = rc == BS_OK ? bs_txn_release(t) : bs_txn_rollback(t);
        rc = rc ? rc : r2;
    }
    if (abort_it) {
        bs_txn_abort(t);
        return BS_OK;
    }
    return bs_txn_commit(t);
}

/* The newest meta page's free-page count, plus one, resealed: the freelist no longer loads
 * (the handle opened on it refuses writes) but every tree is intact. */
static void damage_fl_count(void)
{
    enum { P = 1024 };
    uint8_t m[2][P];
    FILE *f = fopen(path, "r+b");
    CHECK(f && fread(m, 1, sizeof m, f) == sizeof m, "reading the meta pages");
    if (!f)
        return;
    uint64_t tx[2] = {0, 0};
    for (int s = 0; s < 2; s++)
        for (int i = 7; i >= 0; i--)
            tx[s] = tx[s] << 8 | m[s][16 + i];
    int s = tx[1] > tx[0];
    m[s][72]++; /* fl_count (little-endian u64); these counts stay far below 255 */
    uint32_t crc = bs_crc32c(0, m[s] + 4, P - 4);
    for (int i = 0; i < 4; i++)
        m[s][i] = (uint8_t)(crc >> (8 * i));
    CHECK(fseek(f, (long)s * P, SEEK_SET) == 0 && fwrite(m[s], 1, P, f) == P, "writing");
    fclose(f);
}

static int can_write(bs_db *db)
{
    bs_txn *t;
    int rc = bs_txn_begin(db, 1, -1, &t);
    if (rc)
        return rc;
    if ((rc = put1(t, 6000, 20)) != BS_OK) {
        bs_txn_abort(t);
        return rc;
    }
    return bs_txn_commit(t);
}

/* Repair with the n-th allocation failing, for every n: BS_OK or BS_NOMEM; after a failure
 * writes stay refused, and the next repair (no failure) makes the file clean and writable. */
static void repair_under_oom(void)
{
    bs_db *db;
    int done = 0;
    for (long n = 1; n < 100000 && !done; n++) {
        bs_db_close(open_db()); /* (the file is closed while we edit it) */
        damage_fl_count();
        db = open_db();
        CHECK(can_write(db) == BS_CORRUPT, "n=%ld: a damaged freelist must refuse writes", n);
        fired = 0;
        countdown = INJECT ? n : 0;
        int rebuilt = -1, rc = bs_db_repair(db, &rebuilt);
        countdown = 0;
        if (!fired)
            done = 1;
        CHECK(rc == BS_OK || rc == BS_NOMEM, "n=%ld: repair rc %d %s", n, rc, bs_errmsg());
        if (rc == BS_OK) {
            CHECK(rebuilt == 1, "n=%ld: repair of a damaged freelist rebuilt nothing", n);
        } else {
            /* BS_NOMEM: nothing was committed, writes stay refused (a state check after the
             * repair's commit that runs out of memory is skipped: the repair reports BS_OK) */
            int w = can_write(db);
            CHECK(w == BS_CORRUPT, "n=%ld: write after a failed repair: %d %s", n, w,
                  bs_errmsg());
            rc = bs_db_repair(db, &rebuilt);
            CHECK(rc == BS_OK && rebuilt == (w == BS_CORRUPT), "n=%ld: second repair %d %d %s",
                  n, rc, rebuilt, bs_errmsg());
        }
        CHECK(bs_db_check(db) == BS_OK, "n=%ld check after repair: %s", n, bs_errmsg());
        CHECK(can_write(db) == BS_OK, "n=%ld write after repair: %s", n, bs_errmsg());
        rc = bs_db_repair(db, &rebuilt);
        CHECK(rc == BS_OK && rebuilt == 0, "n=%ld: repair of a clean file: %d %d %s", n, rc,
              rebuilt, bs_errmsg());
        CHECK(bs_db_close(db) == BS_OK, "close");
        db = open_db();
        CHECK(bs_db_check(db) == BS_OK, "n=%ld check after reopen: %s", n, bs_errmsg());
        bs_db_close(db);
        if (failures)
            break;
    }
    CHECK(done, "repair never ran through");
}

static void copy_file(const char *from, const char *to)
{
    static char buf[1 << 16];
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    CHECK(a && b, "copying %s to %s", from, to);
    for (size_t k; a && b && (k = fread(buf, 1, sizeof buf, a)) > 0;)
        CHECK(fwrite(buf, 1, k, b) == k, "writing %s", to);
    if (a)
        fclose(a);
    if (b)
        fclose(b);
}

/* The exact sweep: every run starts from the same file (a copy restored before each one), so
 * the n-th allocation is the same point of the same sequence each time and every point is
 * failed once, with a commit and with an abort at the end. (The drifting loop in main goes
 * on from the state each run leaves, which meets other states but not every point.) */
static void exact_sweep(int which)
{
    char snap[80];
    snprintf(snap, sizeof snap, "%s.snap", path);
    copy_file(path, snap);
    int done = 0;
    for (long n = 1; n < 100000 && !done && !failures; n++) {
        for (int abort_it = 0; abort_it < 2; abort_it++) {
            copy_file(snap, path);
            bs_db *db = open_db();
            uint64_t before = txid_of(db);
            fired = 0;
            countdown = INJECT ? n : 0;
            int rc = which ? sequence_buckets(db, 3, abort_it) : sequence(db, 3, abort_it);
            countdown = 0;
            check_outcome("exact", n, rc, abort_it, before, db);
            if (!fired && !abort_it)
                done = 1;
            CHECK(rc == BS_OK || rc == BS_NOMEM || rc == BS_BADTXN, "exact %d n=%ld: rc %d %s",
                  which, n, rc, bs_errmsg());
            if (!fired && !abort_it)
                CHECK(rc == BS_OK, "exact %d n=%ld: commit %d %s", which, n, rc, bs_errmsg());
            bs_txn *t;
            rc = bs_txn_begin(db, 1, -1, &t);
            CHECK(rc == BS_OK, "exact n=%ld begin: %s", n, bs_errmsg());
            if (rc == BS_OK) {
                CHECK(put1(t, 5000, 10) == BS_OK, "exact n=%ld put", n);
                rc = bs_txn_commit(t);
                CHECK(rc == BS_OK, "exact %d n=%ld abort %d: then commit %d %s", which, n,
                      abort_it, rc, bs_errmsg());
            }
            CHECK(bs_db_check(db) == BS_OK, "exact n=%ld check: %s", n, bs_errmsg());
            CHECK(bs_db_close(db) == BS_OK, "close");
            db = open_db();
            CHECK(bs_db_check(db) == BS_OK, "exact n=%ld check after reopen: %s", n,
                  bs_errmsg());
            bs_db_close(db);
        }
    }
    CHECK(done, "exact sweep %d never ran through", which);
    copy_file(snap, path);
    unlink(snap);
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
    for (int r = 0; r < 6; r++)
        CHECK(sequence_buckets(db, r, 0) == BS_OK, "setup commit %d: %s", r, bs_errmsg());
    bs_db_close(db);
    exact_sweep(0);
    exact_sweep(1);
    db = open_db();
    for (int which = 0; which < 2 && !failures; which++) {
    int done = 0, round = 10;
    for (long n = 1; n < 100000 && !done; n++, round++) {
        int abort_it = (int)(n % 4 == 0);
        uint64_t before = txid_of(db);
        fired = 0;
        countdown = INJECT ? n : 0;
        int rc = which ? sequence_buckets(db, round, abort_it) : sequence(db, round, abort_it);
        countdown = 0;
        check_outcome("drift", n, rc, abort_it, before, db);
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
    CHECK(done, "sequence %d never ran through", which);
    }
    bs_db_close(db);
    if (!failures)
        repair_under_oom();
    unlink(path);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("test_oom: ok\n");
    return 0;
}
