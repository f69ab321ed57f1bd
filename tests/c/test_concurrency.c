// build: csrc/util.c csrc/crc32c.c csrc/io_posix.c csrc/io_fault.c csrc/cache.c csrc/freelist.c csrc/meta.c csrc/pager.c csrc/db.c csrc/lockfile.c csrc/btree.c csrc/check.c csrc/map.c
/*
 * test_concurrency.c - the engine's concurrency through its public C API (bs.h), with
 * pthreads, on real files in /tmp and a tiny shared page cache (64 KiB), so that evictions,
 * frame retirement and epoch reclamation happen all the time.
 *
 *  1. snapshots: reader threads verify whole snapshots (cursor scans with enter/leave every
 *     few steps, random gets, overflow values, counts) against a model of every generation
 *     the writer committed, and check that value pointers into cache frames stay unchanged
 *     until bs_txn_leave. Some hold a transaction open across many commits, one for half the
 *     run (the writer provably never waits for readers; the second half reuses the pages it
 *     pinned); one uses no-I/O mode with the binding's retry; aborted write transactions
 *     (with savepoints and overflow values) must stay invisible; bs_db_stat and bs_db_check
 *     run from reader threads. Runs at 1 KiB and 4 KiB pages with a 64 KiB cache, and once
 *     with a 256 KiB cache (frames of freed pages live long enough to be served stale).
 *  2. pinning: long readers pin freed pages (the file grows); bs_db_stat reports them;
 *     after they end it shows 0 pinned pages, later commits reuse pages, bs_db_check passes.
 *  3. one transaction used by two threads at once: BS_INUSE, never a crash.
 *  4. the writer lock: BS_LOCKED after a timeout in another thread, BS_MISUSE at once in the
 *     owning thread, a waiting writer proceeds after the commit.
 *
 * Knobs (environment): BS_CONC_GENS = writer commits in scenario 1 (default 240),
 * BS_CONC_READERS = verifying reader threads (default 3), BS_CONC_PACE_US = the writer's mean
 * pause between commits (default 3000), BS_CONC_ONLY_SNAPSHOTS=1 runs scenario 1 alone (long
 * runs under a sanitizer). Also runs under -fsanitize=thread and -fsanitize=address,undefined.
 *
 * Layer: test program; uses bs.h only.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bs.h"

/* ------------------------------------------------------------------ failure reporting */

static atomic_int failures;
static atomic_int stop_all; /* set on the first failure: every thread winds down */
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;

static void fail_at(int line, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&report_mu);
    if (atomic_fetch_add(&failures, 1) < 20) {
        fprintf(stderr, "test_concurrency.c:%d: ", line);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, " (last error: %s)\n", bs_errmsg());
    }
    pthread_mutex_unlock(&report_mu);
    atomic_store(&stop_all, 1);
}

/* In functions returning int: report and return -1. */
#define EXPECT(c, ...)                                                                   \
    do {                                                                                 \
        if (!(c)) {                                                                      \
            fail_at(__LINE__, "CHECK failed: " #c " " __VA_ARGS__);                      \
            return -1;                                                                   \
        }                                                                                \
    } while (0)
#define EXPECT_RC(e, want)                                                               \
    do {                                                                                 \
        int rc_ = (e);                                                                   \
        if (rc_ != (want)) {                                                             \
            fail_at(__LINE__, "%s returned %d (%s), expected %s", #e, rc_,               \
                    bs_strerror(rc_), #want);                                            \
            return -1;                                                                   \
        }                                                                                \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t rnd(uint64_t *s)
{
    *s = mix64(*s);
    return *s;
}

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

static bs_db *open_db(const char *path, uint32_t psize, uint64_t cache)
{
    bs_options o = {0};
    o.page_size = psize;
    o.cache_size = cache;
    o.create = 1;
    o.sync = 0; /* the disk is not what this test is about */
    bs_db *db = NULL;
    unlink(path);
    if (bs_db_open(path, &o, &db) != BS_OK) {
        fprintf(stderr, "open %s failed: %s\n", path, bs_errmsg());
        exit(1);
    }
    return db;
}

/* ------------------------------------------------------------------ values */

/* The value of key k written in generation ver: 8 bytes (k, ver), then a pattern. Lengths
 * vary; one in eight is over any page size (an overflow run), one in eight is a large inline
 * value at 1 KiB pages. */
static size_t val_len(uint32_t k, uint32_t ver)
{
    uint64_t h = mix64(((uint64_t)k << 32) | ver);
    switch (h % 8) {
    case 0: return 2200 + (size_t)((h >> 8) % 4000);
    case 1: return 200 + (size_t)((h >> 8) % 250);
    default: return 8 + (size_t)((h >> 8) % 100);
    }
}

static void val_fill(uint32_t k, uint32_t ver, uint8_t *buf, size_t len)
{
    uint64_t h = mix64(((uint64_t)ver << 32) | k);
    memcpy(buf, &k, 4);
    memcpy(buf + 4, &ver, 4);
    for (size_t i = 8; i < len; i++)
        buf[i] = (uint8_t)(h + i * 131 + (i >> 7));
}

#define VMAX 8192

/* Compare a value read from the database with (k, ver); describe a mismatch. */
static int val_check(int line, const char *what, uint32_t k, uint32_t ver, const uint8_t *got,
                     size_t glen, uint64_t snap_gen)
{
    uint8_t want[VMAX];
    size_t wl = val_len(k, ver);
    val_fill(k, ver, want, wl);
    if (glen == wl && memcmp(got, want, wl) == 0)
        return 0;
    uint32_t gk = 0, gv = 0;
    if (glen >= 8) {
        memcpy(&gk, got, 4);
        memcpy(&gv, got + 4, 4);
    }
    fail_at(line, "%s: key %u in snapshot of generation %" PRIu64 ": expected the value of "
            "generation %u (%zu bytes), got %zu bytes claiming key %u generation %u", what, k,
            snap_gen, ver, wl, glen, gk, gv);
    return -1;
}

/* ------------------------------------------------------------------ scenario 1: snapshots */

#define S1_KEYS 400
#define S1_BULK 4000          /* keys of a bulk generation (big enough to spill at 1 KiB) */
#define S1_BULK_LEN 300
#define S1_BULK_BASE 1000000u /* bulk key j uses k = S1_BULK_BASE + j in its value */
#define GEN_KEY "!gen"

typedef struct s1_shared {
    bs_db *db;
    uint32_t psize;
    int gens;
    int32_t *state;      /* state[g * S1_KEYS + k]: generation of k's value in g, -1 absent */
    int32_t *bulk;       /* bulk[g]: generation that inserted the bulk keys present in g, or 0 */
    atomic_int writer_done;
    atomic_int committed; /* newest generation whose commit returned */
    atomic_long reader_rounds, reader_txns, noio_retries, long_holds;
    double max_commit_s;
    long pace_us;        /* writer pause between commits */
} s1_shared;

static int s1_key(uint32_t k, char *buf) { return sprintf(buf, "k%05u", k); }
static int s1_bulk_key(uint32_t j, char *buf) { return sprintf(buf, "zz%05u", j); }

/* A data call in no-I/O mode first (like the binding with the GIL held), then for real. */
typedef struct rd {
    bs_txn *txn;
    int noio;
    s1_shared *sh;
} rd;

static int rd_enter(rd *r)
{
    int rc = bs_txn_enter(r->txn);
    if (rc == BS_OK && r->noio)
        bs_txn_set_noio(r->txn, 1);
    return rc;
}

static void rd_leave(rd *r)
{
    bs_txn_leave(r->txn);
}

/* rc = call; retried with no-I/O off when it said BS_WOULDBLOCK */
#define RD_CALL(r, rc, call)                                                             \
    do {                                                                                 \
        (rc) = (call);                                                                   \
        if ((rc) == BS_WOULDBLOCK && (r)->noio) {                                        \
            atomic_fetch_add(&(r)->sh->noio_retries, 1);                                 \
            bs_txn_set_noio((r)->txn, 0);                                                \
            (rc) = (call);                                                               \
            bs_txn_set_noio((r)->txn, 1);                                                \
        }                                                                                \
    } while (0)

/* Read the value v (inline or overflow) into buf. */
static int rd_value(rd *r, const bs_val *v, uint8_t *buf)
{
    int rc;
    if (v->len > VMAX)
        return BS_CORRUPT;
    RD_CALL(r, rc, bs_read_value(r->txn, v, buf));
    return rc;
}

/* Verify the whole snapshot of r->txn. *gen_io: in 0 = learn the generation, else it must not
 * have changed. */
static int s1_verify(rd *r, bs_bucket *b, int64_t *gen_io, uint64_t *seed)
{
    s1_shared *sh = r->sh;
    bs_val v;
    uint8_t buf[VMAX];
    char kb[32];
    int rc;

    /* 1. the generation stored in the snapshot */
    EXPECT_RC(rd_enter(r), BS_OK);
    RD_CALL(r, rc, bs_get(r->txn, b, GEN_KEY, strlen(GEN_KEY), &v));
    if (rc != BS_OK || v.len != 8 || !v.data) {
        rd_leave(r);
        fail_at(__LINE__, "generation key: rc %d (%s), len %zu", rc, bs_strerror(rc), v.len);
        return -1;
    }
    int64_t g;
    memcpy(&g, v.data, 8);
    uint64_t count = 0;
    rc = bs_bucket_count(r->txn, b, &count);
    rd_leave(r);
    EXPECT(rc == BS_OK);
    EXPECT(g >= 0 && g <= sh->gens, "(generation %" PRId64 ")", g);
    if (*gen_io >= 0)
        EXPECT(g == *gen_io, "(the snapshot moved from generation %" PRId64 " to %" PRId64 ")",
               *gen_io, g);
    *gen_io = g;
    const int32_t *st = sh->state + (size_t)g * S1_KEYS;
    int32_t bulkgen = sh->bulk[g];
    uint64_t want_count = 1 + (bulkgen ? S1_BULK : 0);
    for (uint32_t k = 0; k < S1_KEYS; k++)
        want_count += st[k] >= 0;
    EXPECT(count == want_count, "(bucket count %" PRIu64 ", generation %" PRId64 " has %" PRIu64
           ")", count, g, want_count);

    /* 2. a full cursor scan, leaving and re-entering the transaction every few steps */
    bs_cursor *cur = NULL;
    EXPECT_RC(bs_cursor_open(r->txn, b, &cur), BS_OK);
    uint32_t next_k = 0, next_j = 0;
    uint64_t seen = 0;
    int steps = 0, ret = -1;
    if ((rc = rd_enter(r)) != BS_OK) {
        fail_at(__LINE__, "enter: %d", rc);
        goto out;
    }
    RD_CALL(r, rc, bs_cursor_seek(cur, BS_SEEK_FIRST, NULL, 0));
    while (rc == BS_OK) {
        bs_val key;
        RD_CALL(r, rc, bs_cursor_current(cur, &key, &v));
        if (rc != BS_OK)
            break;
        char kc[40];
        size_t kl = key.len < sizeof kc - 1 ? key.len : sizeof kc - 1;
        memcpy(kc, key.data, kl);
        kc[kl] = 0;
        seen++;
        if (strcmp(kc, GEN_KEY) == 0) {
            if (seen != 1) {
                fail_at(__LINE__, "generation key not first");
                goto out_leave;
            }
        } else if (kc[0] == 'k') {
            uint32_t k = (uint32_t)atoi(kc + 1);
            while (next_k < S1_KEYS && st[next_k] < 0)
                next_k++;
            if (k != next_k || k >= S1_KEYS) {
                fail_at(__LINE__, "scan of generation %" PRId64 ": found key %s, expected k%05u",
                        g, kc, next_k);
                goto out_leave;
            }
            next_k++;
            if ((rc = rd_value(r, &v, buf)) != BS_OK) {
                fail_at(__LINE__, "reading the value of %s: %d (%s)", kc, rc, bs_strerror(rc));
                goto out_leave;
            }
            if (val_check(__LINE__, "scan", k, (uint32_t)st[k], v.data ? v.data : buf, v.len,
                          (uint64_t)g))
                goto out_leave;
        } else if (kc[0] == 'z') {
            uint32_t j = (uint32_t)atoi(kc + 2);
            if (!bulkgen || j != next_j) {
                fail_at(__LINE__, "scan of generation %" PRId64 ": unexpected bulk key %s", g, kc);
                goto out_leave;
            }
            next_j++;
            if (v.len != S1_BULK_LEN || !v.data) {
                fail_at(__LINE__, "bulk key %s: %zu bytes", kc, v.len);
                goto out_leave;
            }
            uint8_t want[S1_BULK_LEN];
            val_fill(S1_BULK_BASE + j, (uint32_t)bulkgen, want, S1_BULK_LEN);
            if (memcmp(want, v.data, S1_BULK_LEN) != 0) {
                fail_at(__LINE__, "bulk key %s: wrong value in generation %" PRId64, kc, g);
                goto out_leave;
            }
        } else {
            fail_at(__LINE__, "unexpected key %s", kc);
            goto out_leave;
        }
        if (++steps % 7 == 0) { /* leave with the cursor positioned, come back later */
            rd_leave(r);
            if (steps % 91 == 0)
                sched_yield();
            if ((rc = rd_enter(r)) != BS_OK) {
                fail_at(__LINE__, "enter: %d", rc);
                goto out;
            }
        }
        RD_CALL(r, rc, bs_cursor_next(cur));
    }
    if (rc != BS_NOTFOUND) {
        fail_at(__LINE__, "scan of generation %" PRId64 " stopped with %d (%s)", g, rc,
                bs_strerror(rc));
        goto out_leave;
    }
    while (next_k < S1_KEYS && st[next_k] < 0)
        next_k++;
    if (next_k != S1_KEYS || next_j != (bulkgen ? S1_BULK : 0u) || seen != want_count) {
        fail_at(__LINE__, "scan of generation %" PRId64 " ended early: next key %u, bulk %u, "
                "%" PRIu64 " of %" PRIu64 " entries", g, next_k, next_j, seen, want_count);
        goto out_leave;
    }
    rd_leave(r);

    /* 3. random gets (present and absent keys) in one enter/leave bracket: the inline values'
     * pointers point into shared cache frames, which must stay valid and unchanged until
     * bs_txn_leave while the writer and the other readers churn the cache */
    const uint8_t *held[24];
    size_t held_len[24];
    uint32_t held_k[24];
    int nheld = 0;
    if ((rc = rd_enter(r)) != BS_OK) {
        fail_at(__LINE__, "enter: %d", rc);
        goto out;
    }
    for (int i = 0; i < 24; i++) {
        uint32_t k = (uint32_t)(rnd(seed) % S1_KEYS);
        int kl = s1_key(k, kb);
        RD_CALL(r, rc, bs_get(r->txn, b, kb, (size_t)kl, &v));
        if (st[k] < 0) {
            if (rc != BS_NOTFOUND) {
                fail_at(__LINE__, "get %s in generation %" PRId64 ": %d, expected BS_NOTFOUND",
                        kb, g, rc);
                goto out_leave;
            }
            continue;
        }
        if (rc != BS_OK) {
            fail_at(__LINE__, "get %s in generation %" PRId64 ": %d (%s)", kb, g, rc,
                    bs_strerror(rc));
            goto out_leave;
        }
        if (v.data) {
            held[nheld] = v.data;
            held_len[nheld] = v.len;
            held_k[nheld++] = k;
        }
        if ((rc = rd_value(r, &v, buf)) != BS_OK) {
            fail_at(__LINE__, "reading the value of %s: %d (%s)", kb, rc, bs_strerror(rc));
            goto out_leave;
        }
        if (val_check(__LINE__, "get", k, (uint32_t)st[k], v.data ? v.data : buf, v.len,
                      (uint64_t)g))
            goto out_leave;
    }
    if (rnd(seed) % 2)
        sleep_us((long)(rnd(seed) % 2000)); /* inside the bracket: commits and evictions go on */
    for (int i = 0; i < nheld; i++)
        if (val_check(__LINE__, "value pointer held until leave", held_k[i],
                      (uint32_t)st[held_k[i]], held[i], held_len[i], (uint64_t)g))
            goto out_leave;
    rd_leave(r);
    ret = 0;
    goto out;
out_leave:
    rd_leave(r);
out:
    bs_cursor_close(cur);
    return ret;
}

typedef struct s1_reader_arg {
    s1_shared *sh;
    int id;
    int pin_all;  /* hold one transaction for the first half of the writer's run */
    int noio;
} s1_reader_arg;

static void *s1_reader(void *p)
{
    s1_reader_arg *a = p;
    s1_shared *sh = a->sh;
    uint64_t seed = 0x1234567ull * (uint64_t)(a->id + 1);
    int64_t last_gen = -1;
    while (!atomic_load(&stop_all)) {
        int done = atomic_load(&sh->writer_done);
        bs_txn *txn;
        int rc = bs_txn_begin(sh->db, 0, 0, &txn);
        if (rc != BS_OK) {
            fail_at(__LINE__, "reader %d: begin: %d (%s)", a->id, rc, bs_strerror(rc));
            break;
        }
        atomic_fetch_add(&sh->reader_txns, 1);
        rd r = {txn, a->noio, sh};
        bs_bucket *b;
        if (bs_bucket_open(txn, NULL, 0, 0, &b) != BS_OK) {
            fail_at(__LINE__, "bucket_open");
            bs_txn_abort(txn);
            break;
        }
        /* mostly short transactions; one in five stays open across several rounds (and
         * therefore across commits); the pinning reader across the whole run */
        int rounds = a->pin_all ? 1 << 30 : (rnd(&seed) % 5 == 0 ? 2 + (int)(rnd(&seed) % 6) : 1);
        int64_t g = -1;
        int bad = 0;
        for (int i = 0; i < rounds && !atomic_load(&stop_all); i++) {
            int committed_before = atomic_load(&sh->committed);
            if (s1_verify(&r, b, &g, &seed)) {
                bad = 1;
                break;
            }
            atomic_fetch_add(&sh->reader_rounds, 1);
            if (i == 0) {
                if (g < last_gen) {
                    fail_at(__LINE__, "reader %d: snapshot went back from generation %" PRId64
                            " to %" PRId64, a->id, last_gen, g);
                    bad = 1;
                    break;
                }
                last_gen = g;
            }
            if (i > 0 && committed_before > g)
                atomic_fetch_add(&sh->long_holds, 1);
            if (a->pin_all && atomic_load(&sh->committed) >= sh->gens / 2) {
                /* held across half the run: verify once more, then end (so that the second
                 * half reuses pages) */
                if (!s1_verify(&r, b, &g, &seed))
                    atomic_fetch_add(&sh->reader_rounds, 1);
                break;
            }
            if (rounds > 1)
                sleep_us(a->pin_all ? 20000 : 2000 + (long)(rnd(&seed) % 4000));
        }
        /* now and then: statistics and a full check from a reader thread */
        if (!bad && rnd(&seed) % 16 == 0) {
            bs_stat st;
            if (bs_db_stat(sh->db, &st) != BS_OK || st.readers < 1) {
                fail_at(__LINE__, "stat from a reader: readers %" PRIu64, st.readers);
                bad = 1;
            }
        }
        if (!bad && a->id == 0 && rnd(&seed) % 24 == 0 && bs_db_check(sh->db) != BS_OK) {
            fail_at(__LINE__, "check during the run");
            bad = 1;
        }
        bs_txn_abort(txn);
        if (bad || a->pin_all || done)
            break;
        sleep_us(500 + (long)(rnd(&seed) % 1500));
    }
    return NULL;
}

/* One generation: decide the changes, record the model row, write, commit. */
static int s1_write_gen(s1_shared *sh, int g, uint64_t *seed)
{
    int32_t *prev = sh->state + (size_t)(g - 1) * S1_KEYS;
    int32_t *cur = sh->state + (size_t)g * S1_KEYS;
    uint8_t buf[VMAX];
    char kb[32];
    bs_txn *txn;
    bs_bucket *b;
    int prevbulk = sh->bulk[g - 1];
    int bulk_in = prevbulk == 0 && g % 53 == 26, bulk_out = prevbulk != 0;

    memcpy(cur, prev, S1_KEYS * sizeof *cur);
    uint32_t churn = 8 + (uint32_t)(rnd(seed) % 4); /* ~1/churn of the keys change */
    if (g == 1)
        churn = 1;
    for (uint32_t k = 0; k < S1_KEYS; k++) {
        if (rnd(seed) % churn)
            continue;
        if (prev[k] >= 0 && rnd(seed) % 4 == 0 && g > 1)
            cur[k] = -1;
        else
            cur[k] = g;
    }
    sh->bulk[g] = bulk_in ? g : bulk_out ? 0 : prevbulk;

    EXPECT_RC(bs_txn_begin(sh->db, BS_TXN_WRITE, -1, &txn), BS_OK);
    EXPECT_RC(bs_bucket_open(txn, NULL, 0, 0, &b), BS_OK);
    EXPECT_RC(bs_txn_enter(txn), BS_OK);
    int rc = BS_OK;
    for (uint32_t k = 0; k < S1_KEYS && rc == BS_OK; k++) {
        if (cur[k] == prev[k])
            continue;
        int kl = s1_key(k, kb);
        if (cur[k] < 0) {
            rc = bs_del(txn, b, kb, (size_t)kl);
        } else {
            size_t vl = val_len(k, (uint32_t)g);
            val_fill(k, (uint32_t)g, buf, vl);
            rc = bs_put(txn, b, kb, (size_t)kl, buf, vl, 0);
        }
    }
    for (uint32_t j = 0; (bulk_in || bulk_out) && j < S1_BULK && rc == BS_OK; j++) {
        int kl = s1_bulk_key(j, kb);
        if (bulk_out) {
            rc = bs_del(txn, b, kb, (size_t)kl);
        } else {
            val_fill(S1_BULK_BASE + j, (uint32_t)g, buf, S1_BULK_LEN);
            rc = bs_put(txn, b, kb, (size_t)kl, buf, S1_BULK_LEN, 0);
        }
    }
    int64_t g64 = g;
    if (rc == BS_OK)
        rc = bs_put(txn, b, GEN_KEY, strlen(GEN_KEY), &g64, 8, 0);
    bs_txn_leave(txn);
    if (rc != BS_OK) {
        bs_txn_abort(txn);
        EXPECT_RC(rc, BS_OK);
    }
    double t0 = now_s();
    EXPECT_RC(bs_txn_commit(txn), BS_OK);
    double dt = now_s() - t0;
    if (dt > sh->max_commit_s)
        sh->max_commit_s = dt;
    atomic_store(&sh->committed, g);
    return 0;
}

/* A write transaction with changes (overflow values, deletes, a savepoint) that is aborted:
 * nobody may ever see it. */
static int s1_write_aborted(s1_shared *sh, uint64_t *seed)
{
    uint8_t buf[VMAX];
    char kb[32];
    bs_txn *txn;
    bs_bucket *b;
    EXPECT_RC(bs_txn_begin(sh->db, BS_TXN_WRITE, -1, &txn), BS_OK);
    EXPECT_RC(bs_bucket_open(txn, NULL, 0, 0, &b), BS_OK);
    EXPECT_RC(bs_txn_enter(txn), BS_OK);
    int rc = BS_OK;
    for (int i = 0; i < 60 && rc == BS_OK; i++) {
        uint32_t k = (uint32_t)(rnd(seed) % S1_KEYS);
        int kl = s1_key(k, kb);
        if (i == 30)
            rc = bs_txn_savepoint(txn);
        if (rnd(seed) % 3 == 0) {
            rc = bs_del(txn, b, kb, (size_t)kl);
            if (rc == BS_NOTFOUND)
                rc = BS_OK;
        } else {
            /* generation numbers no commit ever uses */
            uint32_t ver = 0x7fff0000u + (uint32_t)i;
            size_t vl = val_len(k, ver);
            val_fill(k, ver, buf, vl);
            rc = bs_put(txn, b, kb, (size_t)kl, buf, vl, 0);
        }
    }
    int64_t bogus = 1 << 30;
    if (rc == BS_OK)
        rc = bs_put(txn, b, GEN_KEY, strlen(GEN_KEY), &bogus, 8, 0);
    bs_txn_leave(txn);
    bs_txn_abort(txn);
    EXPECT_RC(rc, BS_OK);
    return 0;
}

static void *s1_writer(void *p)
{
    s1_shared *sh = p;
    uint64_t seed = 99;
    for (int g = 1; g <= sh->gens && !atomic_load(&stop_all); g++) {
        if (g % 7 == 3 && s1_write_aborted(sh, &seed))
            break;
        if (s1_write_gen(sh, g, &seed))
            break;
        if (sh->pace_us) /* leave the readers time to overlap many commits */
            sleep_us(sh->pace_us / 2 + (long)(rnd(&seed) % (uint64_t)sh->pace_us));
    }
    atomic_store(&sh->writer_done, 1);
    return NULL;
}

static void scenario_snapshots(uint32_t psize, uint64_t cache, int gens, int nreaders)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/bs_test_conc1_%d.db", (int)getpid());
    s1_shared *sh = calloc(1, sizeof *sh);
    sh->db = open_db(path, psize, cache);
    sh->psize = psize;
    sh->gens = gens;
    sh->pace_us = env_int("BS_CONC_PACE_US", 3000);
    sh->state = malloc((size_t)(gens + 1) * S1_KEYS * sizeof *sh->state);
    sh->bulk = calloc((size_t)gens + 1, sizeof *sh->bulk);
    for (uint32_t k = 0; k < S1_KEYS; k++)
        sh->state[k] = -1;
    double t0 = now_s();

    /* generation 0: only the generation key */
    {
        bs_txn *txn;
        bs_bucket *b;
        int64_t zero = 0;
        if (bs_txn_begin(sh->db, BS_TXN_WRITE, -1, &txn) || bs_bucket_open(txn, NULL, 0, 0, &b) ||
            bs_txn_enter(txn) || bs_put(txn, b, GEN_KEY, strlen(GEN_KEY), &zero, 8, 0)) {
            fail_at(__LINE__, "generation 0");
            exit(1);
        }
        bs_txn_leave(txn);
        if (bs_txn_commit(txn)) {
            fail_at(__LINE__, "commit of generation 0");
            exit(1);
        }
    }

    int nthreads = nreaders + 2;
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    s1_reader_arg *ra = calloc((size_t)nthreads, sizeof *ra);
    /* the pinning reader first, so that it holds generation 0 for the whole run */
    ra[0] = (s1_reader_arg){sh, 100, 1, 0};
    pthread_create(&th[0], NULL, s1_reader, &ra[0]);
    sleep_us(20000);
    for (int i = 0; i < nreaders; i++) {
        ra[i + 1] = (s1_reader_arg){sh, i, 0, i == 1};
        pthread_create(&th[i + 1], NULL, s1_reader, &ra[i + 1]);
    }
    pthread_create(&th[nthreads - 1], NULL, s1_writer, sh);
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);

    bs_stat st;
    if (bs_db_stat(sh->db, &st) != BS_OK || st.readers != 0 || st.pinned_pages != 0)
        fail_at(__LINE__, "stat after the run: readers %" PRIu64 ", pinned %" PRIu64,
                st.readers, st.pinned_pages);
    if (bs_db_check(sh->db) != BS_OK)
        fail_at(__LINE__, "bs_db_check after scenario 1");
    if (!atomic_load(&failures) && atomic_load(&sh->committed) != gens)
        fail_at(__LINE__, "writer stopped at generation %d of %d", atomic_load(&sh->committed),
                gens);
    printf("scenario 1 (page %u, cache %" PRIu64 " KiB): %d commits, %ld reader txns, %ld "
           "snapshot verifications (%ld across commits), %ld no-I/O retries, max commit %.1f "
           "ms, %" PRIu64 " pages, cache %" PRIu64 " hits / %" PRIu64 " misses, %.2f s\n",
           psize, cache >> 10, atomic_load(&sh->committed), atomic_load(&sh->reader_txns),
           atomic_load(&sh->reader_rounds), atomic_load(&sh->long_holds),
           atomic_load(&sh->noio_retries), sh->max_commit_s * 1e3, st.page_count,
           st.cache_hits, st.cache_misses, now_s() - t0);
    if (bs_db_close(sh->db) != BS_OK)
        fail_at(__LINE__, "close");
    unlink(path);
    free(th);
    free(ra);
    free(sh->state);
    free(sh->bulk);
    free(sh);
}

/* ------------------------------------------------------------------ scenario 2: pinning */

#define S2_KEYS 300

static int s2_commit(bs_db *db, uint32_t ver)
{
    uint8_t buf[VMAX];
    char kb[32];
    bs_txn *txn;
    bs_bucket *b;
    EXPECT_RC(bs_txn_begin(db, BS_TXN_WRITE, -1, &txn), BS_OK);
    EXPECT_RC(bs_bucket_open(txn, NULL, 0, 0, &b), BS_OK);
    EXPECT_RC(bs_txn_enter(txn), BS_OK);
    int rc = BS_OK;
    for (uint32_t k = 0; k < S2_KEYS && rc == BS_OK; k++) {
        int kl = s1_key(k, kb);
        size_t vl = val_len(k, ver);
        val_fill(k, ver, buf, vl);
        rc = bs_put(txn, b, kb, (size_t)kl, buf, vl, 0);
    }
    bs_txn_leave(txn);
    if (rc != BS_OK)
        bs_txn_abort(txn);
    EXPECT_RC(rc, BS_OK);
    EXPECT_RC(bs_txn_commit(txn), BS_OK);
    return 0;
}

static int s2_verify(bs_txn *txn, uint32_t ver)
{
    uint8_t buf[VMAX];
    char kb[32];
    bs_bucket *b;
    bs_val v;
    EXPECT_RC(bs_bucket_open(txn, NULL, 0, 0, &b), BS_OK);
    for (uint32_t k = 0; k < S2_KEYS; k++) {
        int kl = s1_key(k, kb);
        EXPECT_RC(bs_txn_enter(txn), BS_OK);
        int rc = bs_get(txn, b, kb, (size_t)kl, &v);
        if (rc == BS_OK && v.len <= VMAX)
            rc = bs_read_value(txn, &v, buf);
        if (rc == BS_OK && v.data)
            memcpy(buf, v.data, v.len);
        bs_txn_leave(txn);
        EXPECT_RC(rc, BS_OK);
        if (val_check(__LINE__, "pinned snapshot", k, ver, buf, v.len, ver))
            return -1;
    }
    return 0;
}

/* The reader is in another thread, to be sure nothing depends on the opening thread. */
typedef struct s2_reader {
    bs_db *db;
    bs_txn *txn;
    pthread_t th;
    uint32_t ver;
    int rc;
} s2_reader;

static void *s2_begin_thread(void *p)
{
    s2_reader *r = p;
    r->rc = bs_txn_begin(r->db, 0, 0, &r->txn);
    if (r->rc == BS_OK)
        r->rc = s2_verify(r->txn, r->ver) ? -1 : BS_OK;
    return NULL;
}

static void *s2_end_thread(void *p)
{
    s2_reader *r = p;
    r->rc = s2_verify(r->txn, r->ver) ? -1 : BS_OK;
    bs_txn_abort(r->txn);
    return NULL;
}

static int s2_run_thread(s2_reader *r, void *(*fn)(void *))
{
    pthread_create(&r->th, NULL, fn, r);
    pthread_join(r->th, NULL);
    return r->rc;
}

static int scenario_pinning(uint32_t psize)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/bs_test_conc2_%d.db", (int)getpid());
    bs_db *db = open_db(path, psize, 64 << 10);
    bs_stat st0, st1, st2, st3, st4, st5;
    uint32_t ver = 1;
    int ret = -1;
    if (s2_commit(db, ver))
        goto out;
    for (int i = 0; i < 5; i++) /* let the freelist settle into a steady state */
        if (s2_commit(db, ++ver))
            goto out;
    EXPECT_RC(bs_db_stat(db, &st0), BS_OK);
    if (st0.readers || st0.pinned_pages) {
        fail_at(__LINE__, "fresh state: readers %" PRIu64 " pinned %" PRIu64, st0.readers,
                st0.pinned_pages);
        goto out;
    }

    s2_reader r1 = {db, NULL, 0, ver, 0};
    if (s2_run_thread(&r1, s2_begin_thread) != BS_OK)
        goto out;
    uint64_t snap1 = bs_txn_id(r1.txn);
    for (int i = 0; i < 20; i++)
        if (s2_commit(db, ++ver))
            goto out;
    s2_reader r2 = {db, NULL, 0, ver, 0};
    if (s2_run_thread(&r2, s2_begin_thread) != BS_OK)
        goto out;
    uint64_t snap2 = bs_txn_id(r2.txn);
    for (int i = 0; i < 20; i++)
        if (s2_commit(db, ++ver))
            goto out;
    EXPECT_RC(bs_db_stat(db, &st1), BS_OK);
    printf("scenario 2 (page %u): before readers %" PRIu64 " pages; with 2 readers (snapshots %"
           PRIu64 ", %" PRIu64 ") %" PRIu64 " pages, %" PRIu64 " pinned, file %" PRIu64 " KiB\n",
           psize, st0.page_count, snap1, snap2, st1.page_count, st1.pinned_pages,
           st1.file_size >> 10);
    if (st1.readers != 2 || st1.oldest_reader != snap1 || st1.pinned_pages == 0 ||
        st1.page_count < st0.page_count + 20 || st1.file_size <= st0.file_size) {
        fail_at(__LINE__, "with two readers: readers %" PRIu64 ", oldest %" PRIu64 " (want %"
                PRIu64 "), pinned %" PRIu64 ", pages %" PRIu64 " (before %" PRIu64 ")",
                st1.readers, st1.oldest_reader, snap1, st1.pinned_pages, st1.page_count,
                st0.page_count);
        goto out;
    }
    /* the old snapshots are intact after 40 commits that rewrote every key */
    if (s2_run_thread(&r1, s2_end_thread) != BS_OK)
        goto out;
    EXPECT_RC(bs_db_stat(db, &st2), BS_OK);
    if (st2.readers != 1 || st2.oldest_reader != snap2 || st2.pinned_pages == 0 ||
        st2.pinned_pages >= st1.pinned_pages) {
        fail_at(__LINE__, "after the older reader: readers %" PRIu64 ", oldest %" PRIu64
                ", pinned %" PRIu64 " (was %" PRIu64 ")", st2.readers, st2.oldest_reader,
                st2.pinned_pages, st1.pinned_pages);
        goto out;
    }
    if (s2_run_thread(&r2, s2_end_thread) != BS_OK)
        goto out;
    EXPECT_RC(bs_db_stat(db, &st3), BS_OK);
    if (st3.readers != 0 || st3.oldest_reader != 0 || st3.pinned_pages != 0) {
        fail_at(__LINE__, "after both readers: readers %" PRIu64 ", pinned %" PRIu64,
                st3.readers, st3.pinned_pages);
        goto out;
    }
    /* later commits reuse the released pages: the file stops growing */
    for (int i = 0; i < 40; i++)
        if (s2_commit(db, ++ver))
            goto out;
    EXPECT_RC(bs_db_stat(db, &st4), BS_OK);
    printf("scenario 2: after the readers %" PRIu64 " pages, %" PRIu64 " free; 40 commits "
           "later %" PRIu64 " pages, %" PRIu64 " free\n", st3.page_count, st3.free_pages,
           st4.page_count, st4.free_pages);
    if (st4.page_count > st3.page_count + 4) {
        fail_at(__LINE__, "pages not reused: %" PRIu64 " -> %" PRIu64 " pages, free %" PRIu64
                " -> %" PRIu64, st3.page_count, st4.page_count, st3.free_pages, st4.free_pages);
        goto out;
    }
    /* and a reader now sees the newest data, with nothing pinned */
    s2_reader r3 = {db, NULL, 0, ver, 0};
    if (s2_run_thread(&r3, s2_begin_thread) != BS_OK || s2_run_thread(&r3, s2_end_thread) != BS_OK)
        goto out;
    EXPECT_RC(bs_db_stat(db, &st5), BS_OK);
    if (st5.pinned_pages != 0) {
        fail_at(__LINE__, "pinned %" PRIu64, st5.pinned_pages);
        goto out;
    }
    if (bs_db_check(db) != BS_OK) {
        fail_at(__LINE__, "bs_db_check after scenario 2");
        goto out;
    }
    ret = 0;
out:
    if (bs_db_close(db) != BS_OK)
        fail_at(__LINE__, "close after scenario 2");
    unlink(path);
    return ret;
}

/* ------------------------------------------------------------------ scenario 3: one txn, two threads */

typedef struct s3_shared {
    bs_db *db;
    bs_txn *txn;
    bs_bucket *b;
    pthread_barrier_t bar;
    atomic_int phase;
    atomic_long ok[2], inuse[2];
    int iters;
} s3_shared;

typedef struct s3_arg {
    s3_shared *sh;
    int id;
} s3_arg;

/* Hammer one transaction from two threads: every enter either works (and then the thread has
 * it alone) or answers BS_INUSE. */
static void *s3_hammer(void *p)
{
    s3_arg *a = p;
    s3_shared *sh = a->sh;
    static atomic_int inside;
    uint8_t buf[VMAX];
    char kb[32];
    uint64_t seed = 7 + (uint64_t)a->id;
    pthread_barrier_wait(&sh->bar);
    for (int i = 0; i < sh->iters && !atomic_load(&stop_all); i++) {
        int rc = bs_txn_enter(sh->txn);
        if (rc == BS_INUSE) {
            atomic_fetch_add(&sh->inuse[a->id], 1);
            continue;
        }
        if (rc != BS_OK) {
            fail_at(__LINE__, "enter: %d (%s)", rc, bs_strerror(rc));
            break;
        }
        if (atomic_fetch_add(&inside, 1) != 0)
            fail_at(__LINE__, "two threads inside one transaction");
        atomic_fetch_add(&sh->ok[a->id], 1);
        uint32_t k = (uint32_t)(rnd(&seed) % S2_KEYS);
        int kl = s1_key(k, kb);
        bs_val v;
        rc = bs_get(sh->txn, sh->b, kb, (size_t)kl, &v);
        if (rc == BS_OK && v.len <= VMAX)
            rc = bs_read_value(sh->txn, &v, buf);
        if (rc != BS_OK)
            fail_at(__LINE__, "get %s: %d (%s)", kb, rc, bs_strerror(rc));
        else
            val_check(__LINE__, "shared txn", k, 1, buf, v.len, 1);
        atomic_fetch_sub(&inside, 1);
        bs_txn_leave(sh->txn);
        if (i % 4 == a->id * 2) /* give the other thread a chance to get in */
            sched_yield();
    }
    return NULL;
}

/* Deterministic part: A inside, B gets BS_INUSE (also for a data call pattern on a write
 * transaction), then B gets in after A left. */
static void *s3_holder(void *p)
{
    s3_shared *sh = p;
    if (bs_txn_enter(sh->txn) != BS_OK) {
        fail_at(__LINE__, "holder enter");
        atomic_store(&sh->phase, 99);
        return NULL;
    }
    atomic_store(&sh->phase, 1);
    while (atomic_load(&sh->phase) == 1 && !atomic_load(&stop_all))
        sleep_us(200);
    bs_txn_leave(sh->txn);
    atomic_store(&sh->phase, 3);
    return NULL;
}

static int s3_exclusive(s3_shared *sh)
{
    pthread_t th;
    atomic_store(&sh->phase, 0);
    pthread_create(&th, NULL, s3_holder, sh);
    while (atomic_load(&sh->phase) == 0)
        sleep_us(200);
    int rc1 = bs_txn_enter(sh->txn), rc2 = bs_txn_enter(sh->txn);
    atomic_store(&sh->phase, 2);
    while (atomic_load(&sh->phase) == 2)
        sleep_us(200);
    pthread_join(th, NULL);
    EXPECT(rc1 == BS_INUSE && rc2 == BS_INUSE, "(enter while another thread is inside: %d, %d)",
           rc1, rc2);
    EXPECT_RC(bs_txn_enter(sh->txn), BS_OK);
    bs_txn_leave(sh->txn);
    return 0;
}

static int scenario_shared_txn(void)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/bs_test_conc3_%d.db", (int)getpid());
    s3_shared *sh = calloc(1, sizeof *sh);
    sh->db = open_db(path, 1024, 64 << 10);
    int ret = -1;
    if (s2_commit(sh->db, 1))
        goto out;

    /* a read transaction */
    EXPECT_RC(bs_txn_begin(sh->db, 0, 0, &sh->txn), BS_OK);
    EXPECT_RC(bs_bucket_open(sh->txn, NULL, 0, 0, &sh->b), BS_OK);
    if (s3_exclusive(sh))
        goto out_txn;
    sh->iters = env_int("BS_CONC_S3_ITERS", 20000);
    pthread_barrier_init(&sh->bar, NULL, 2);
    pthread_t th[2];
    s3_arg args[2] = {{sh, 0}, {sh, 1}};
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, s3_hammer, &args[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&sh->bar);
    long inuse = atomic_load(&sh->inuse[0]) + atomic_load(&sh->inuse[1]);
    printf("scenario 3: shared read txn: %ld + %ld entered, %ld BS_INUSE\n",
           atomic_load(&sh->ok[0]), atomic_load(&sh->ok[1]), inuse);
    bs_txn_abort(sh->txn);
    sh->txn = NULL;
    if (atomic_load(&failures))
        goto out;

    /* a write transaction: the second thread's enter fails, the transaction is unharmed */
    EXPECT_RC(bs_txn_begin(sh->db, BS_TXN_WRITE, -1, &sh->txn), BS_OK);
    EXPECT_RC(bs_bucket_open(sh->txn, NULL, 0, 0, &sh->b), BS_OK);
    if (s3_exclusive(sh))
        goto out_txn;
    EXPECT_RC(bs_txn_enter(sh->txn), BS_OK);
    int rc = bs_put(sh->txn, sh->b, "shared", 6, "yes", 3, 0);
    bs_txn_leave(sh->txn);
    EXPECT_RC(rc, BS_OK);
    rc = bs_txn_commit(sh->txn);
    sh->txn = NULL;
    EXPECT_RC(rc, BS_OK);
    EXPECT_RC(bs_db_check(sh->db), BS_OK);
    ret = 0;
    goto out;
out_txn:
    bs_txn_abort(sh->txn);
out:
    bs_db_close(sh->db);
    unlink(path);
    free(sh);
    return ret;
}

/* ------------------------------------------------------------------ scenario 4: writer lock */

typedef struct s4_shared {
    bs_db *db;
    long timeout;
    int rc;
    double waited;
    atomic_int started;
    uint64_t txid;
    int saw_first;
} s4_shared;

static void *s4_other_writer(void *p)
{
    s4_shared *s = p;
    bs_txn *txn = NULL;
    double t0 = now_s();
    atomic_store(&s->started, 1); /* after t0: the main thread's pause counts in s->waited */
    s->rc = bs_txn_begin(s->db, BS_TXN_WRITE, s->timeout, &txn);
    s->waited = now_s() - t0;
    if (s->rc == BS_OK) {
        bs_bucket *b;
        bs_val v;
        s->txid = bs_txn_id(txn);
        bs_bucket_open(txn, NULL, 0, 0, &b);
        if (bs_txn_enter(txn) == BS_OK) {
            s->saw_first = bs_get(txn, b, "first", 5, &v) == BS_OK && v.len == 1 && v.data &&
                           memcmp(v.data, "1", 1) == 0;
            if (bs_put(txn, b, "second", 6, "2", 1, 0) != BS_OK)
                s->saw_first = -1;
            bs_txn_leave(txn);
        }
        if (bs_txn_commit(txn) != BS_OK)
            s->rc = -1;
    }
    return NULL;
}

static int scenario_writer_lock(void)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/bs_test_conc4_%d.db", (int)getpid());
    bs_db *db = open_db(path, 4096, 64 << 10);
    bs_txn *w, *w2 = NULL, *rtx;
    bs_bucket *b;
    pthread_t th;
    int ret = -1;

    EXPECT_RC(bs_txn_begin(db, BS_TXN_WRITE, 0, &w), BS_OK);
    EXPECT_RC(bs_bucket_open(w, NULL, 0, 0, &b), BS_OK);
    EXPECT_RC(bs_txn_enter(w), BS_OK);
    EXPECT_RC(bs_put(w, b, "first", 5, "1", 1, 0), BS_OK);
    bs_txn_leave(w);

    /* another thread: 50 ms timeout -> BS_LOCKED after about 50 ms; 0 -> at once */
    s4_shared s = {db, 50, 0, 0, 0, 0, 0};
    pthread_create(&th, NULL, s4_other_writer, &s);
    pthread_join(th, NULL);
    printf("scenario 4: second writer with a 50 ms timeout: rc %d after %.1f ms\n", s.rc,
           s.waited * 1e3);
    if (s.rc != BS_LOCKED || s.waited < 0.045 || s.waited > 5.0) {
        fail_at(__LINE__, "second writer: rc %d after %.1f ms", s.rc, s.waited * 1e3);
        goto out;
    }
    s = (s4_shared){db, 0, 0, 0, 0, 0, 0};
    pthread_create(&th, NULL, s4_other_writer, &s);
    pthread_join(th, NULL);
    if (s.rc != BS_LOCKED || s.waited > 1.0) {
        fail_at(__LINE__, "second writer, timeout 0: rc %d after %.1f ms", s.rc, s.waited * 1e3);
        goto out;
    }

    /* the same thread: BS_MISUSE at once, whatever the timeout (never a self-deadlock) */
    double t0 = now_s();
    int rc = bs_txn_begin(db, BS_TXN_WRITE, 2000, &w2);
    double dt = now_s() - t0;
    if (rc != BS_MISUSE || w2 != NULL || dt > 1.0) {
        fail_at(__LINE__, "nested write begin: rc %d after %.1f ms", rc, dt * 1e3);
        goto out;
    }
    rc = bs_txn_begin(db, BS_TXN_WRITE, -1, &w2);
    if (rc != BS_MISUSE) {
        fail_at(__LINE__, "nested write begin with no timeout: rc %d", rc);
        goto out;
    }
    /* readers are never blocked by the writer */
    EXPECT_RC(bs_txn_begin(db, 0, 0, &rtx), BS_OK);
    bs_txn_abort(rtx);
    /* the first write transaction is still fine */
    EXPECT_RC(bs_txn_enter(w), BS_OK);
    rc = bs_put(w, b, "first", 5, "1", 1, 0);
    bs_txn_leave(w);
    EXPECT_RC(rc, BS_OK);

    /* a writer waiting with no timeout proceeds after the commit and sees it */
    s = (s4_shared){db, -1, 0, 0, 0, 0, 0};
    pthread_create(&th, NULL, s4_other_writer, &s);
    while (!atomic_load(&s.started))
        sleep_us(1000);
    sleep_us(60000); /* it is waiting now (or about to) */
    uint64_t wid = bs_txn_id(w);
    rc = bs_txn_commit(w);
    pthread_join(th, NULL);
    EXPECT_RC(rc, BS_OK);
    printf("scenario 4: waiting writer: rc %d after %.1f ms, txid %" PRIu64 " after %" PRIu64
           "\n", s.rc, s.waited * 1e3, s.txid, wid);
    if (s.rc != BS_OK || s.txid != wid + 1 || s.saw_first != 1 || s.waited < 0.05) {
        fail_at(__LINE__, "waiting writer: rc %d, txid %" PRIu64 " (want %" PRIu64 "), saw "
                "first %d, waited %.1f ms", s.rc, s.txid, wid + 1, s.saw_first, s.waited * 1e3);
        goto out;
    }
    /* and this thread can write again */
    EXPECT_RC(bs_txn_begin(db, BS_TXN_WRITE, 0, &w), BS_OK);
    bs_txn_abort(w);
    EXPECT_RC(bs_db_check(db), BS_OK);
    ret = 0;
out:
    if (bs_db_close(db) != BS_OK)
        fail_at(__LINE__, "close after scenario 4 (a transaction left open?)");
    unlink(path);
    return ret;
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int gens = env_int("BS_CONC_GENS", 240);
    int nreaders = env_int("BS_CONC_READERS", 3);
    double t0 = now_s();

    if (env_int("BS_CONC_ONLY_SNAPSHOTS", 0)) { /* the long sanitizer run */
        scenario_snapshots(1024, 64 << 10, gens, nreaders);
        if (!atomic_load(&failures))
            scenario_snapshots(4096, 64 << 10, gens, nreaders);
        if (!atomic_load(&failures))
            scenario_snapshots(1024, 256 << 10, gens, nreaders);
        goto done;
    }

    scenario_writer_lock();
    if (!atomic_load(&failures))
        scenario_shared_txn();
    if (!atomic_load(&failures))
        scenario_pinning(1024);
    if (!atomic_load(&failures))
        scenario_snapshots(1024, 64 << 10, gens, nreaders);
    if (!atomic_load(&failures))
        scenario_snapshots(4096, 64 << 10, gens / 2, nreaders);
    /* a cache large enough to keep frames of freed pages around until they are reused: a
     * stale frame served after reuse shows up here (a tiny cache evicts it first) */
    if (!atomic_load(&failures))
        scenario_snapshots(1024, 256 << 10, gens / 2, nreaders);

done:
    if (atomic_load(&failures)) {
        fprintf(stderr, "test_concurrency: %d failure(s)\n", atomic_load(&failures));
        return 1;
    }
    printf("test_concurrency: all scenarios passed in %.2f s\n", now_s() - t0);
    return 0;
}
