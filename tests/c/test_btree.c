// build: tests/c/mock_pager.c csrc/btree.c csrc/check.c csrc/util.c csrc/map.c
/*
 * test_btree.c - randomized model test of btree.c and check.c over the in-memory mock pager.
 *
 * Layer: tests only. Drives btree_put/del/get, cursors, btree_rebalance, btree_free_all on
 * three trees (the default bucket and two named buckets recorded in a catalog tree) against
 * sorted-array models, with keys of 0..max length and inline and overflow values, at page
 * sizes 1024, 4096 and 65536. Mock commits run btree_rebalance and then check_db (every page
 * reachable exactly once or free) plus a full comparison; mock aborts check that committed
 * pages were never touched. noio mode (with an evicted "cache") must give BS_WOULDBLOCK with
 * nothing changed. Garbage and bit-flipped pages go through btree_verify_page, and corrupted
 * trees through every operation: BS_CORRUPT or a result, never a crash or a hang.
 * Usage: test_btree [seed] [scale]   (exit 0 on success)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock_pager.h"
#include "testrand.h"

static uint64_t seed0;
static uint32_t P;
static unsigned long long opno;


#define FAIL(...)                                                                            \
    do {                                                                                     \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                 \
        fprintf(stderr, __VA_ARGS__);                                                        \
        fprintf(stderr, "\n  (seed %llu, page size %u, op %llu, errmsg: %s)\n",              \
                (unsigned long long)seed0, P, opno, bs_errmsg());                            \
        exit(1);                                                                             \
    } while (0)
#define CHECK(c, ...)                                                                        \
    do {                                                                                     \
        if (!(c))                                                                            \
            FAIL(__VA_ARGS__);                                                               \
    } while (0)

/* ------------------------------------------------------------------ model */

typedef struct ent {
    uint8_t *k;
    uint32_t kl, vseed, vl;
} ent;
typedef struct model {
    ent *e;
    size_t n, cap;
} model;

/* first index with key >= k */
static size_t m_lb(const model *m, const uint8_t *k, size_t kl, int *exact)
{
    size_t lo = 0, hi = m->n;
    *exact = 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = key_cmp(m->e[mid].k, m->e[mid].kl, k, kl);
        if (r < 0)
            lo = mid + 1;
        else if (r > 0)
            hi = mid;
        else {
            *exact = 1;
            return mid;
        }
    }
    return lo;
}

static void m_put(model *m, const uint8_t *k, uint32_t kl, uint32_t vseed, uint32_t vl)
{
    int ex;
    size_t i = m_lb(m, k, kl, &ex);
    if (ex) {
        m->e[i].vseed = vseed;
        m->e[i].vl = vl;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 256;
        m->e = realloc(m->e, m->cap * sizeof *m->e);
    }
    memmove(m->e + i + 1, m->e + i, (m->n - i) * sizeof *m->e);
    m->e[i].k = malloc(kl ? kl : 1);
    if (kl)
        memcpy(m->e[i].k, k, kl);
    m->e[i].kl = kl;
    m->e[i].vseed = vseed;
    m->e[i].vl = vl;
    m->n++;
}

static void m_del_at(model *m, size_t i)
{
    free(m->e[i].k);
    memmove(m->e + i, m->e + i + 1, (m->n - i - 1) * sizeof *m->e);
    m->n--;
}

static void m_clear(model *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->e[i].k);
    m->n = 0;
}

static void m_copy(model *dst, const model *src)
{
    m_clear(dst);
    for (size_t i = 0; i < src->n; i++)
        m_put(dst, src->e[i].k, src->e[i].kl, src->e[i].vseed, src->e[i].vl);
}

static void gen_val(uint8_t *b, uint32_t seed, uint32_t len)
{
    uint32_t x = seed * 2654435761u + 12345u;
    for (uint32_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (uint8_t)(x >> 16);
    }
}

/* ------------------------------------------------------------------ world */

#define NT 3
static bs_db db;
static bs_txn txn;
static bs_tree trees[NT], saved_trees[NT], catalog, saved_catalog;
static model models[NT], saved_models[NT];
static const char *bucket_names[NT] = {NULL, "alpha", "\x00\xff" "bin"};
static const size_t bucket_nlens[NT] = {0, 5, 5};
static uint8_t *vbuf, *vbuf2, *kbuf;
static uint32_t maxk;
static int ever_nonempty[NT];

static uint32_t gen_key(uint8_t *k)
{
    uint32_t r = rn(100), len;
    if (r < 2)
        return 0;
    if (r < 45) {
        len = 1 + rn(4);
        for (uint32_t i = 0; i < len; i++)
            k[i] = (uint8_t)('a' + rn(4));
        return len;
    }
    if (r < 65) {
        len = 1 + rn(24);
        for (uint32_t i = 0; i < len; i++)
            k[i] = (uint8_t)rn(256);
        return len;
    }
    if (r < 85) { /* long shared prefix, short varying tail */
        uint32_t pl = rn(maxk / 2);
        len = pl + 1 + rn(3);
        memset(k, 'p', pl);
        for (uint32_t i = pl; i < len; i++)
            k[i] = (uint8_t)('a' + rn(3));
        return len;
    }
    len = r < 97 ? rn(maxk + 1) : maxk - rn(4);
    for (uint32_t i = 0; i < len; i++)
        k[i] = (uint8_t)rn(256);
    return len;
}

/* The key of an operation into kbuf, its length returned: a random key of m's entries when
 * `existing` (m not empty), a new one from gen_key otherwise. */
static uint32_t pick_key(const model *m, int existing)
{
    if (!existing)
        return gen_key(kbuf);
    const ent *e = &m->e[rn((uint32_t)m->n)];
    memcpy(kbuf, e->k, e->kl);
    return e->kl;
}

static uint32_t gen_vlen(uint32_t kl)
{
    uint32_t r = rn(100);
    uint32_t inl = fmt_max_cell(P) - 2 - LEAF_CELL_HDR - kl; /* largest inline value */
    if (r < 45)
        return rn(20);
    if (r < 70)
        return rn(200);
    if (r < 88) {
        uint32_t v = inl + 8 - rn(40);
        return v > inl + 8 ? 0 : v;
    }
    return inl + 1 + rn(3 * P);
}

static void check_value(const bs_val *v, const ent *e, const char *what)
{
    CHECK(v->len == e->vl, "%s: value length %zu, expected %u", what, v->len, e->vl);
    gen_val(vbuf, e->vseed, e->vl);
    const uint8_t *d = v->data;
    if (!d) {
        CHECK(!fmt_value_inline(P, e->kl, e->vl), "%s: inline value stored in overflow", what);
        int rc = pager_ov_read(&txn, v->ovpgno, v->ovtxid, v->len, vbuf2);
        CHECK(rc == BS_OK, "%s: pager_ov_read rc %d", what, rc);
        d = vbuf2;
    } else {
        CHECK(fmt_value_inline(P, e->kl, e->vl), "%s: overflow value stored inline", what);
    }
    CHECK(!e->vl || !memcmp(d, vbuf, e->vl), "%s: value bytes differ", what);
}

/* ------------------------------------------------------------------ operations */

/* Run op under noio with an evicted cache sometimes: BS_WOULDBLOCK must change nothing. */
#define NOIO_TRY(t, call, rcvar)                                                             \
    do {                                                                                     \
        if (rn(8) == 0) {                                                                    \
            mock_evict(40, &rs);                                                             \
            bs_tree tc = *(t);                                                               \
            uint64_t fp = mock_fingerprint(), ms = txn.mod_seq;                              \
            txn.noio = 1;                                                                    \
            rcvar = call;                                                                    \
            txn.noio = 0;                                                                    \
            if (rcvar == BS_WOULDBLOCK) {                                                    \
                CHECK(!memcmp(&tc, (t), sizeof tc) && fp == mock_fingerprint() &&            \
                          ms == txn.mod_seq,                                                 \
                      "BS_WOULDBLOCK after a change");                                       \
                rcvar = call;                                                                \
            }                                                                                \
        } else {                                                                             \
            rcvar = call;                                                                    \
        }                                                                                    \
    } while (0)

static void op_put(int ti)
{
    model *m = &models[ti];
    uint32_t kl, vl, vs = (uint32_t)rnd();
    kl = pick_key(m, m->n && rn(4) == 0); /* 1 in 4 overwrites a key */
    vl = gen_vlen(kl);
    gen_val(vbuf, vs, vl);
    unsigned flags = rn(10) == 0 ? BS_NOOVERWRITE : 0;
    int ex, rc;
    size_t i = m_lb(m, kbuf, kl, &ex);
    uint64_t before = txn.mod_seq;
    NOIO_TRY(&trees[ti], btree_put(&txn, &trees[ti], kbuf, kl, vbuf, vl, flags), rc);
    if (ex && (flags & BS_NOOVERWRITE)) {
        CHECK(rc == BS_EXISTS, "put NOOVERWRITE existing: rc %d", rc);
        CHECK(txn.mod_seq == before, "NOOVERWRITE changed mod_seq");
        return;
    }
    CHECK(rc == BS_OK, "put rc %d (klen %u vlen %u)", rc, kl, vl);
    (void)i;
    m_put(m, kbuf, kl, vs, vl);
    ever_nonempty[ti] = 1;
    CHECK(trees[ti].count == m->n, "count %llu, model %zu", (unsigned long long)trees[ti].count,
          m->n);
}

static void op_del(int ti)
{
    model *m = &models[ti];
    uint32_t kl;
    int ex, rc;
    kl = pick_key(m, m->n && rn(5));
    size_t i = m_lb(m, kbuf, kl, &ex);
    uint64_t before = txn.mod_seq;
    NOIO_TRY(&trees[ti], btree_del(&txn, &trees[ti], kbuf, kl), rc);
    if (!ex) {
        CHECK(rc == BS_NOTFOUND, "del missing: rc %d", rc);
        CHECK(txn.mod_seq == before, "del missing changed mod_seq");
        return;
    }
    CHECK(rc == BS_OK, "del rc %d", rc);
    m_del_at(m, i);
    CHECK(trees[ti].count == m->n, "count after del");
}

static void op_get(int ti)
{
    model *m = &models[ti];
    uint32_t kl;
    int ex, rc;
    bs_val v;
    kl = pick_key(m, m->n && rn(3));
    size_t i = m_lb(m, kbuf, kl, &ex);
    NOIO_TRY(&trees[ti], btree_get(&txn, &trees[ti], kbuf, kl, &v), rc);
    if (!ex) {
        CHECK(rc == BS_NOTFOUND, "get missing: rc %d", rc);
        return;
    }
    CHECK(rc == BS_OK, "get rc %d", rc);
    check_value(&v, &m->e[i], "get");
}

/* The cursor must sit on model entry i (or be invalid when i == n). */
static void cur_expect(bs_cursor *cur, const model *m, size_t i, int rc, const char *what)
{
    if (i >= m->n) {
        CHECK(rc == BS_NOTFOUND, "%s: expected the end, rc %d", what, rc);
        return;
    }
    CHECK(rc == BS_OK, "%s: rc %d (expected entry %zu of %zu)", what, rc, i, m->n);
    bs_val k, v;
    rc = btree_cursor_current(cur, &k, &v);
    CHECK(rc == BS_OK, "%s: current rc %d", what, rc);
    CHECK(key_cmp(k.data, k.len, m->e[i].k, m->e[i].kl) == 0, "%s: wrong key (entry %zu of %zu)",
          what, i, m->n);
    check_value(&v, &m->e[i], what);
}

static int cur_call(bs_cursor *cur, int kind, int op, const uint8_t *k, size_t kl)
{
    int rc;
    for (int noio = rn(6) == 0; ; noio = 0) {
        if (noio)
            mock_evict(50, &rs);
        txn.noio = noio;
        rc = kind == 0 ? btree_cursor_seek(cur, op, k, kl) : btree_cursor_step(cur, op);
        txn.noio = 0;
        if (rc != BS_WOULDBLOCK || !noio)
            return rc;
    }
}

static void op_cursor(int ti)
{
    model *m = &models[ti];
    bs_cursor cur;
    memset(&cur, 0, sizeof cur);
    cur.txn = &txn;
    cur.tree = &trees[ti];
    int op = 1 + (int)rn(4), ex, rc;
    uint32_t kl = 0;
    size_t pos;
    kl = pick_key(m, m->n && rn(2));
    size_t lb = m_lb(m, kbuf, kl, &ex);
    switch (op) {
    case BS_SEEK_GE: pos = lb; break;
    case BS_SEEK_LE: pos = ex ? lb : (lb ? lb - 1 : SIZE_MAX); break;
    case BS_SEEK_FIRST: pos = 0; break;
    default: pos = m->n ? m->n - 1 : SIZE_MAX; break;
    }
    rc = cur_call(&cur, 0, op, kbuf, kl);
    cur_expect(&cur, m, pos, rc, "seek");
    int steps = (int)rn(40), dir = rn(2) ? 1 : -1;
    for (int s = 0; s < steps && pos < m->n; s++) {
        if (rn(3) == 0)
            dir = -dir;
        if (rn(6) == 0) {
            /* change the tree under the cursor: it re-seeks from its key */
            ent cure = m->e[pos];
            uint8_t *ck = malloc(cure.kl ? cure.kl : 1);
            memcpy(ck, cure.k, cure.kl);
            if (rn(2))
                op_put(ti);
            else
                op_del(ti);
            if (rn(3) == 0) {
                bs_val k, v;
                rc = btree_cursor_current(&cur, &k, &v);
                pos = m_lb(m, ck, cure.kl, &ex);
                cur_expect(&cur, m, pos, rc, "current after change");
                free(ck);
                continue;
            }
            pos = m_lb(m, ck, cure.kl, &ex);
            if (dir > 0)
                pos += ex;
            else
                pos = pos ? pos - 1 : SIZE_MAX;
            free(ck);
        } else {
            pos = dir > 0 ? pos + 1 : (pos ? pos - 1 : SIZE_MAX);
        }
        rc = cur_call(&cur, 1, dir, NULL, 0);
        cur_expect(&cur, m, pos, rc, dir > 0 ? "next" : "prev");
    }
    free(cur.kbuf);
}

static void full_scan(int ti)
{
    model *m = &models[ti];
    bs_cursor cur;
    memset(&cur, 0, sizeof cur);
    cur.txn = &txn;
    cur.tree = &trees[ti];
    int rc = btree_cursor_seek(&cur, BS_SEEK_FIRST, NULL, 0);
    for (size_t i = 0; i <= m->n; i++) {
        cur_expect(&cur, m, i, rc, "scan forward");
        if (i < m->n)
            rc = btree_cursor_step(&cur, 1);
    }
    rc = btree_cursor_seek(&cur, BS_SEEK_LAST, NULL, 0);
    for (size_t i = m->n; i-- > 0;) {
        cur_expect(&cur, m, i, rc, "scan backward");
        rc = btree_cursor_step(&cur, -1);
    }
    CHECK(rc == BS_NOTFOUND, "scan backward past the start: rc %d", rc);
    free(cur.kbuf);
}

static void run_check(const char *when)
{
    txn.write = false;
    int rc = check_db(&txn);
    txn.write = true;
    CHECK(rc == BS_OK, "check_db %s: rc %d", when, rc);
}

static void commit(void)
{
    int rc;
    for (int i = 0; i < NT; i++) {
        rc = btree_rebalance(&txn, &trees[i]);
        CHECK(rc == BS_OK, "rebalance rc %d", rc);
        CHECK(!trees[i].needs_rebalance, "needs_rebalance still set");
        CHECK(trees[i].count == models[i].n, "count after rebalance");
        if (ever_nonempty[i] && models[i].n == 0 && trees[i].root) {
            const uint8_t *pg;
            CHECK(trees[i].depth == 1, "emptied tree has depth %u", trees[i].depth);
            rc = pager_get(&txn, trees[i].root, PT_LEAF, &pg);
            CHECK(rc == BS_OK && pg_nkeys(pg) == 0, "emptied tree is not one empty leaf");
        }
    }
    for (int i = 1; i < NT; i++) {
        uint8_t rec[BREC_SIZE] = {0};
        put64(rec + BREC_ROOT, trees[i].root);
        put64(rec + BREC_COUNT, trees[i].count);
        put32(rec + BREC_DEPTH, trees[i].depth);
        put64(rec + BREC_TXID, trees[i].root_txid);
        rc = btree_put(&txn, &catalog, (const uint8_t *)bucket_names[i], bucket_nlens[i], rec,
                       BREC_SIZE, 0);
        CHECK(rc == BS_OK, "catalog put rc %d", rc);
    }
    CHECK((rc = btree_rebalance(&txn, &catalog)) == BS_OK, "catalog rebalance");
    txn.meta.main = trees[0];
    txn.meta.catalog = catalog;
    mock_commit(&txn);
    run_check("after commit");
    for (int i = 0; i < NT; i++) {
        saved_trees[i] = trees[i];
        m_copy(&saved_models[i], &models[i]);
        if (rn(4) == 0)
            full_scan(i);
    }
    saved_catalog = catalog;
}

static void abort_txn(void)
{
    mock_abort(&txn);
    for (int i = 0; i < NT; i++) {
        trees[i] = saved_trees[i];
        m_copy(&models[i], &saved_models[i]);
    }
    catalog = saved_catalog;
    txn.mod_seq++;
    run_check("after abort");
    for (int i = 0; i < NT; i++)
        full_scan(i);
}

/* ------------------------------------------------------------------ corruption */

static void garbage_pages(unsigned count)
{
    uint8_t *pg = malloc(P);
    for (unsigned it = 0; it < count; it++) {
        for (uint32_t i = 0; i < P; i += 8) {
            uint64_t x = rnd();
            memcpy(pg + i, &x, 8);
        }
        pg[PH_TYPE] = rn(2) ? PT_LEAF : PT_BRANCH;
        pg[PH_FLAGS] = 0;
        if (rn(2)) {
            unsigned n = rn(20);
            pg_set_nkeys(pg, (uint16_t)n);
            pg_set_upper(pg, PH_SIZE + 2 * n + rn(P));
            pg_set_frag(pg, rn(4) ? 0 : rn(P));
            for (unsigned i = 0; i < n; i++)
                put16(pg + PH_SIZE + 2 * i, (uint16_t)(P - 1 - rn(P / 2)));
        }
        (void)btree_verify_page(pg, P, rn(1000));
    }
    free(pg);
}

static void bitflip_pages(unsigned count)
{
    uint8_t *pg = malloc(P);
    uint64_t n = mock_page_count();
    for (unsigned it = 0; it < count; it++) {
        uint64_t p = 2 + rn((uint32_t)(n - 2));
        const uint8_t *src = mock_page(p);
        if ((pg_type(src) != PT_LEAF && pg_type(src) != PT_BRANCH) || !mock_page_live(p) ||
            pg_pgno(src) != p)
            continue; /* free, or inside an overflow run */
        memcpy(pg, src, P);
        CHECK(btree_verify_page(pg, P, n) == BS_OK, "valid page %llu fails verification",
              (unsigned long long)p);
        unsigned flips = 1 + rn(4);
        for (unsigned f = 0; f < flips; f++) {
            uint32_t at = rn(P);
            if (rn(2))
                pg[at] ^= (uint8_t)(1u << rn(8));
            else
                pg[at] = (uint8_t)rnd();
        }
        (void)btree_verify_page(pg, P, n);
    }
    free(pg);
}

/* The verifier's key order check (8-byte words, then the rest) against key_cmp: a leaf of two
 * cells passes exactly when its first key sorts strictly before its second. Keys share
 * random prefixes of 0-24 bytes (word boundaries and their neighbours) and differ, or one is
 * a prefix of the other, or they are equal. */
static void verify_key_order(void)
{
    const uint32_t P = 1024;
    uint8_t *pg = calloc(1, P), a[40], b[40];
    for (unsigned it = 0; it < 20000; it++) {
        uint32_t common = rn(25), al = common + rn(9), bl = common + rn(9);
        for (uint32_t i = 0; i < common; i++)
            a[i] = b[i] = (uint8_t)(rn(3) ? 'k' : rnd());
        for (uint32_t i = common; i < al; i++)
            a[i] = (uint8_t)(rn(2) ? 'k' + rn(2) : rnd());
        for (uint32_t i = common; i < bl; i++)
            b[i] = (uint8_t)(rn(2) ? 'k' + rn(2) : rnd());
        memset(pg, 0, P);
        pg[PH_TYPE] = PT_LEAF;
        uint32_t ca = LEAF_CELL_HDR + al, cb = LEAF_CELL_HDR + bl;
        uint32_t offa = P - ca, offb = offa - cb;
        pg_set_nkeys(pg, 2);
        pg_set_upper(pg, offb);
        put16(pg + PH_SIZE, (uint16_t)offa);
        put16(pg + PH_SIZE + 2, (uint16_t)offb);
        put16(pg + offa, (uint16_t)al);
        memcpy(pg + offa + LEAF_CELL_HDR, a, al);
        put16(pg + offb, (uint16_t)bl);
        memcpy(pg + offb + LEAF_CELL_HDR, b, bl);
        int want = key_cmp(a, al, b, bl) < 0 ? BS_OK : BS_CORRUPT;
        int got = btree_verify_page(pg, P, 100);
        bs_clear_error();
        CHECK(got == want, "verify key order: lengths %u/%u common %u: got %d want %d", al, bl,
              common, got, want);
    }
    free(pg);
}

/* Corrupt committed node pages structurally (valid bounds, wrong pointers) and run every
 * operation: results or BS_CORRUPT, never a crash or a hang. Destroys the mock state. */
static void corrupt_trees(void)
{
    uint64_t n = mock_page_count();
    for (int round = 0; round < 30; round++) {
        uint64_t p = 0;
        uint8_t *pg = NULL;
        for (int tries = 0; tries < 10000 && !pg; tries++) {
            p = 2 + rn((uint32_t)(n - 2));
            pg = mock_page(p);
            if (!mock_page_live(p) || pg_pgno(pg) != p ||
                (pg_type(pg) != PT_BRANCH && !(pg_type(pg) == PT_LEAF && pg_nkeys(pg))))
                pg = NULL;
        }
        CHECK(pg, "no node page to corrupt");
        if (pg_type(pg) == PT_BRANCH) {
            unsigned i = rn(pg_nkeys(pg));
            uint8_t *c = pg + node_slot(pg, i);
            uint64_t root = trees[rn(NT)].root;
            uint64_t to = rn(3) && root ? root : 2 + rn((uint32_t)(n - 2));
            to = to == bcell_child(c) && root ? root : to;
            /* keep the txid check satisfied half of the time, so that the walks meet cycles */
            bcell_set_child(c, to, rn(2) ? pg_txid(mock_page(to)) : bcell_txid(c));
        } else {
            pg[PH_TYPE] = PT_BRANCH;
        }
        mock_evict(100, &rs);
        for (int ti = 0; ti < NT; ti++) {
            bs_cursor cur;
            memset(&cur, 0, sizeof cur);
            cur.txn = &txn;
            cur.tree = &trees[ti];
            /* keys must grow across leaves, so a scan ends within the number of cells */
            uint64_t cap = n * (P / 8);
            int rc = btree_cursor_seek(&cur, BS_SEEK_FIRST, NULL, 0);
            for (uint64_t s = 0; rc == BS_OK && s < cap; s++)
                rc = btree_cursor_step(&cur, 1);
            CHECK(rc != BS_OK, "forward scan of a corrupt tree does not end");
            rc = btree_cursor_seek(&cur, BS_SEEK_LAST, NULL, 0);
            for (uint64_t s = 0; rc == BS_OK && s < cap; s++)
                rc = btree_cursor_step(&cur, -1);
            CHECK(rc != BS_OK, "backward scan of a corrupt tree does not end");
            free(cur.kbuf);
            for (int k = 0; k < 20; k++) {
                bs_val v;
                uint32_t kl = gen_key(kbuf);
                (void)btree_get(&txn, &trees[ti], kbuf, kl, &v);
            }
        }
        txn.write = false;
        int rc = check_db(&txn);
        txn.write = true;
        CHECK(rc == BS_CORRUPT, "check_db missed a corrupted page (rc %d)", rc);
    }
    /* dropping a corrupt tree: a page reached twice is reported before anything is freed */
    int rc = btree_free_all(&txn, &trees[0]);
    CHECK(rc == BS_OK || rc == BS_CORRUPT, "free_all of a corrupt tree: rc %d", rc);
}

/* ------------------------------------------------------------------ driver */

static void run(uint32_t psize, unsigned long long nops)
{
    P = psize;
    maxk = fmt_max_key(P);
    btree_txn_free(&txn); /* its scratch block is sized for the previous page size */
    mock_init(&db, &txn, P);
    memset(trees, 0, sizeof trees);
    memset(&catalog, 0, sizeof catalog);
    memset(ever_nonempty, 0, sizeof ever_nonempty);
    for (int i = 0; i < NT; i++) {
        m_clear(&models[i]);
        m_clear(&saved_models[i]);
        saved_trees[i] = trees[i];
    }
    saved_catalog = catalog;
    vbuf = realloc(vbuf, 5 * (size_t)P);
    vbuf2 = realloc(vbuf2, 5 * (size_t)P);
    kbuf = realloc(kbuf, P);

    garbage_pages(P == 65536 ? 2000 : 50000);

    unsigned long long next_commit = 1 + rn(1500);
    size_t target = P == 65536 ? 300 : 3000;
    int shrinking = 0;
    for (opno = 0; opno < nops; opno++) {
        int ti = (int)rn(NT);
        if (ti == 2 && rn(2))
            ti = 0;
        size_t total = models[0].n + models[1].n + models[2].n;
        if (!shrinking && total > target)
            shrinking = 1;
        else if (shrinking && total == 0)
            shrinking = 0;
        uint32_t r = rn(100);
        uint32_t pput = shrinking ? 25 : 55;
        if (r < pput)
            op_put(ti);
        else if (r < 80)
            op_del(ti);
        else if (r < 92)
            op_get(ti);
        else
            op_cursor(ti);
        if (rn(700) == 0)
            mock_savepoint();
        if (shrinking && rn(200) == 0) { /* bursts of deletes empty trees quickly */
            model *m = &models[ti];
            while (m->n && rn(50)) {
                size_t i = rn((uint32_t)m->n);
                int rc = btree_del(&txn, &trees[ti], m->e[i].k, m->e[i].kl);
                CHECK(rc == BS_OK, "burst del rc %d", rc);
                m_del_at(m, i);
            }
        }
        if (opno == next_commit) {
            if (rn(10) == 0) {
                abort_txn();
            } else {
                if (rn(40) == 0) { /* drop a bucket */
                    int rc = btree_free_all(&txn, &trees[2]);
                    CHECK(rc == BS_OK && !trees[2].root && !trees[2].count, "free_all rc %d", rc);
                    m_clear(&models[2]);
                    ever_nonempty[2] = 0;
                }
                commit();
            }
            next_commit = opno + 1 + rn(rn(2) ? 200 : 3000);
        }
    }
    /* delete everything: each tree ends as one empty leaf */
    for (int ti = 0; ti < NT; ti++) {
        model *m = &models[ti];
        while (m->n) {
            size_t i = rn((uint32_t)m->n);
            int rc = btree_del(&txn, &trees[ti], m->e[i].k, m->e[i].kl);
            CHECK(rc == BS_OK, "final del rc %d", rc);
            m_del_at(m, i);
            if (rn(500) == 0)
                commit();
        }
    }
    commit();
    for (int ti = 0; ti < NT; ti++)
        CHECK(!ever_nonempty[ti] || (trees[ti].root && trees[ti].depth == 1 && !trees[ti].count),
              "tree %d is not a single empty leaf", ti);
    /* refill, then drop with free_all: no page may leak */
    for (int k = 0; k < 2000; k++)
        op_put(1);
    commit();
    bitflip_pages(20000);
    CHECK(btree_free_all(&txn, &trees[1]) == BS_OK, "free_all");
    m_clear(&models[1]);
    ever_nonempty[1] = 0;
    commit();
    for (int k = 0; k < 1500; k++)
        op_put(k % NT);
    commit();
    corrupt_trees();
}

/* ------------------------------------------------------------------ fill factor */

/* leaves of the tree below pgno (a node at level L of a tree of depth D) */
static uint64_t count_leaves(uint64_t pgno, unsigned L, unsigned D)
{
    const uint8_t *pg;
    int rc = pager_get(&txn, pgno, L + 1 == D ? PT_LEAF : PT_BRANCH, &pg);
    CHECK(rc == BS_OK, "count_leaves: page %llu rc %d", (unsigned long long)pgno, rc);
    if (L + 1 == D)
        return 1;
    uint64_t n = 0;
    unsigned nk = pg_nkeys(pg);
    uint64_t *kids = malloc(nk * sizeof *kids);
    CHECK(kids, "oom");
    for (unsigned i = 0; i < nk; i++)
        kids[i] = bcell_child(node_cell(pg, i));
    for (unsigned i = 0; i < nk; i++)
        n += count_leaves(kids[i], L + 1, D);
    free(kids);
    return n;
}

/* btree_verify_page on every page below pgno (dirty ones too); *frag += the branches' frag */
static void verify_tree(uint64_t pgno, unsigned L, unsigned D, uint32_t *frag)
{
    const uint8_t *pg;
    int rc = pager_get(&txn, pgno, L + 1 == D ? PT_LEAF : PT_BRANCH, &pg);
    CHECK(rc == BS_OK, "verify_tree: page %llu rc %d", (unsigned long long)pgno, rc);
    rc = btree_verify_page(pg, P, txn.page_count);
    CHECK(rc == BS_OK, "verify_tree: page %llu fails verification: %s",
          (unsigned long long)pgno, bs_errmsg());
    if (L + 1 == D)
        return;
    *frag += pg_frag(pg);
    unsigned nk = pg_nkeys(pg);
    uint64_t *kids = malloc(nk * sizeof *kids);
    CHECK(kids, "oom");
    for (unsigned i = 0; i < nk; i++)
        kids[i] = bcell_child(node_cell(pg, i));
    for (unsigned i = 0; i < nk; i++)
        verify_tree(kids[i], L + 1, D, frag);
    free(kids);
}

/* Random-order inserts of equal cells (16-byte keys, 100-byte values) fill 4096-byte leaves
 * past what halving splits leave (~69%: 22 of the 32 cells a leaf holds): shifts into a
 * neighbour and 2 -> 3 splits (btree.c, bt_spread). Sequential ones still pack them full.
 * Then deleting a random half and committing: the rebalance merges what that leaves half
 * empty. */
static void fill_factor(void)
{
    enum { NF = 20000 };
    P = 4096;
    btree_txn_free(&txn); /* its scratch block is sized for the previous page size */
    mock_init(&db, &txn, P);
    static uint32_t order[NF];
    uint8_t k[17], v[100];
    for (int pass = 0; pass < 2; pass++) {
        bs_tree t;
        memset(&t, 0, sizeof t);
        for (uint32_t i = 0; i < NF; i++)
            order[i] = i;
        if (pass == 0)
            for (uint32_t i = NF - 1; i > 0; i--) {
                uint32_t j = rn(i + 1), x = order[i];
                order[i] = order[j];
                order[j] = x;
            }
        for (uint32_t i = 0; i < NF; i++) {
            snprintf((char *)k, sizeof k, "%016u", order[i]);
            gen_val(v, order[i], sizeof v);
            int rc = btree_put(&txn, &t, k, 16, v, sizeof v, 0);
            CHECK(rc == BS_OK, "fill_factor put rc %d", rc);
            if (i % 997 == 0 && rn(3) == 0)
                mock_savepoint(); /* later shifts copy the neighbours they change */
            if (i % 2500 == 2499) {
                /* every page mid-transaction, the branches whose separators shifts and
                 * spreads rewrote in place (btree.c node_set_sep: a shorter key leaves its
                 * tail as frag) included: cell sizes + frag == P - upper exactly */
                uint32_t frag = 0;
                verify_tree(t.root, 0, t.depth, &frag);
            }
        }
        CHECK(t.count == NF, "fill_factor count");
        uint64_t leaves = count_leaves(t.root, 0, t.depth);
        uint32_t per = (P - PH_SIZE) / (LEAF_CELL_HDR + 16 + 100 + 2);
        if (pass == 0)
            CHECK(leaves * per * 78 <= (uint64_t)NF * 100, "random fill: %llu leaves for %u "
                  "records (%u a leaf when full)", (unsigned long long)leaves, NF, per);
        else
            CHECK(leaves <= NF / per + 1, "sequential fill: %llu leaves",
                  (unsigned long long)leaves);
        txn.meta.main = t;
        memset(&txn.meta.catalog, 0, sizeof txn.meta.catalog);
        mock_commit(&txn);
        run_check("after the fill");
        if (pass == 0) {
            /* delete a random half in one txn: the commit's rebalance merges the leaves that
             * drop under half full (was: only those under a quarter) */
            for (uint32_t i = 0; i < NF / 2; i++) {
                snprintf((char *)k, sizeof k, "%016u", order[i]);
                int rc = btree_del(&txn, &t, k, 16);
                CHECK(rc == BS_OK, "fill_factor del rc %d", rc);
            }
            CHECK(btree_rebalance(&txn, &t) == BS_OK, "fill_factor rebalance");
            leaves = count_leaves(t.root, 0, t.depth);
            CHECK(leaves * per * 60 <= (uint64_t)(NF / 2) * 100, "after deleting half: %llu "
                  "leaves for %u records", (unsigned long long)leaves, NF / 2);
            txn.meta.main = t;
            mock_commit(&txn);
            run_check("after deleting half");
        }
        CHECK(btree_free_all(&txn, &t) == BS_OK, "fill_factor free_all");
        txn.meta.main = t;
        mock_commit(&txn);
    }
}

/* ------------------------------------------------------------------ range-check marks */

/* child i of the depth-2 tree t's root */
static uint64_t root_child(const bs_tree *t, unsigned i)
{
    const uint8_t *pg;
    CHECK(pager_get(&txn, t->root, PT_BRANCH, &pg) == BS_OK, "root_child: root");
    CHECK(i < pg_nkeys(pg), "root_child: %u of %u", i, pg_nkeys(pg));
    return bcell_child(node_cell(pg, i));
}

static const uint8_t *page_of(uint64_t pgno)
{
    const uint8_t *pg;
    CHECK(pager_get(&txn, pgno, 0, &pg) == BS_OK, "page_of %llu", (unsigned long long)pgno);
    return pg;
}

/* The range-check mark of the write txn's pages (btree.c rng_check, internal.h pager_vouched):
 * a dirty leaf that passed a descent's check is marked (and not checked again); a 2 -> 3
 * spread with a neighbour that no descent checked at its place unmarks the leaf it rebuilds,
 * which the next descent checks (and marks) again. */
static void range_marks(void)
{
    P = 4096;
    btree_txn_free(&txn); /* its scratch block is sized for the previous page size */
    mock_init(&db, &txn, P);
    bs_tree t;
    memset(&t, 0, sizeof t);
    uint8_t k[17], v[100];
    /* sequential keys 0, 10, 20, ...: full leaves (the append split) under one root */
    unsigned per = (P - PH_SIZE) / (LEAF_CELL_HDR + 16 + 100 + 2), nk = per * 12;
    for (unsigned i = 0; i < nk; i++) {
        snprintf((char *)k, sizeof k, "%016u", i * 10);
        gen_val(v, i, sizeof v);
        CHECK(btree_put(&txn, &t, k, 16, v, sizeof v, 0) == BS_OK, "range_marks fill");
    }
    CHECK(t.depth == 2, "range_marks: depth %u", t.depth);
    txn.meta.main = t;
    memset(&txn.meta.catalog, 0, sizeof txn.meta.catalog);
    mock_commit(&txn);
    /* leaf 3's first key */
    const uint8_t *lf = page_of(root_child(&t, 3));
    unsigned nroot = pg_nkeys(page_of(t.root)), first;
    CHECK(lcell_klen(node_cell(lf, 0)) == 16, "range_marks: key length");
    memcpy(k, lcell_key(node_cell(lf, 0)), 16);
    k[16] = 0;
    first = (unsigned)strtoul((char *)k, NULL, 10);
    CHECK(!pager_vouched(&txn, lf), "range_marks: a committed page is never marked");
    /* two deletes: the first copies the leaf (a copy starts unmarked), the second's descent
     * checks the copy and marks it */
    for (unsigned j = 1; j <= 2; j++) {
        snprintf((char *)k, sizeof k, "%016u", first + 10 * j);
        CHECK(btree_del(&txn, &t, k, 16) == BS_OK, "range_marks del");
        CHECK(pager_vouched(&txn, page_of(root_child(&t, 3))) == (j == 2),
              "range_marks: after delete %u the leaf is %smarked", j, j == 2 ? "not " : "");
    }
    uint64_t leaf = root_child(&t, 3);
    /* inserts into its range: two fit, the third spreads it with a full neighbour that is
     * still the committed page (checked by no descent): 2 -> 3, the root grows */
    for (unsigned j = 1; j <= 3; j++) {
        snprintf((char *)k, sizeof k, "%016u", first + j);
        gen_val(v, j, sizeof v);
        CHECK(btree_put(&txn, &t, k, 16, v, sizeof v, 0) == BS_OK, "range_marks put");
        CHECK(root_child(&t, 3) == leaf || j == 3, "range_marks: the leaf moved");
        if (j < 3)
            CHECK(pager_vouched(&txn, page_of(leaf)) &&
                  pg_nkeys(page_of(t.root)) == nroot, "range_marks: insert %u", j);
    }
    CHECK(pg_nkeys(page_of(t.root)) == nroot + 1, "range_marks: no 2 -> 3 spread happened");
    CHECK(!pager_vouched(&txn, page_of(leaf)), "range_marks: a leaf rebuilt with the cells of "
          "an unchecked neighbour is still marked");
    /* the next descent to it checks it again and marks it */
    snprintf((char *)k, sizeof k, "%016u", first + 4);
    CHECK(btree_put(&txn, &t, k, 16, v, sizeof v, 0) == BS_OK, "range_marks put");
    int marked = 0;
    for (unsigned i = 0; i < pg_nkeys(page_of(t.root)); i++)
        marked += pager_vouched(&txn, page_of(root_child(&t, i)));
    CHECK(marked == 1, "range_marks: %d leaves marked after one more put", marked);
    txn.meta.main = t;
    mock_commit(&txn);
    CHECK(!pager_vouched(&txn, page_of(root_child(&t, 3))), "range_marks: marked after commit");
    run_check("range_marks");
    CHECK(btree_free_all(&txn, &t) == BS_OK, "range_marks free_all");
    txn.meta.main = t;
    mock_commit(&txn);
}

int main(int argc, char **argv)
{
    seed0 = argc > 1 ? strtoull(argv[1], NULL, 0) : 12345;
    double scale = argc > 2 ? atof(argv[2]) : 1.0;
    rs ^= seed0 * 0x9E3779B97F4A7C15ull;
    if (!rs)
        rs = 1;
    verify_key_order();
    run(1024, (unsigned long long)(120000 * scale));
    run(4096, (unsigned long long)(120000 * scale));
    run(65536, (unsigned long long)(8000 * scale));
    fill_factor();
    range_marks();
    for (int i = 0; i < NT; i++) {
        m_clear(&models[i]);
        m_clear(&saved_models[i]);
        free(models[i].e);
        free(saved_models[i].e);
    }
    free(vbuf);
    free(vbuf2);
    free(kbuf);
    btree_txn_free(&txn);
    mock_destroy();
    printf("test_btree: ok\n");
    return 0;
}
