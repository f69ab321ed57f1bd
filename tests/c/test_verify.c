// build: tests/c/mock_pager.c csrc/btree.c csrc/check.c csrc/util.c csrc/map.c
/*
 * test_verify.c - btree_verify_page's one-pass leaf path (btree.c leaf_verify_fast) against
 * the check-by-check reference btree_verify_page_full.
 *
 * Layer: tests only; calls btree.c's two verifiers on crafted page images (the mock pager
 * only satisfies the link). Random valid leaves (inline and overflow cells, keys of 0-40
 * bytes, cells in random order with dead bytes counted in frag) must pass both. Each check
 * the fast path merges into one compare gets a page that violates only that check (a slot
 * below the cell area, a whole cell moved there, a cell header past the page, a flag or pad byte, a key length over the
 * limit, a value that should be an overflow run, a vlen near 2^32 (8 + klen + vlen wraps in
 * 32 bits), equal or descending keys, cells not filling the area, two slots on one cell):
 * BS_CORRUPT. Then
 * random byte changes of valid leaves: both verifiers give the same verdict.
 * Usage: test_verify [seed]   (exit 0 on success)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "testutil.h"
#include "testrand.h"


#define PAGES 1000u /* page_count given to the verifiers */
#define TXID 50u    /* the crafted pages' txid */

typedef struct {
    uint8_t key[48];
    uint32_t klen;
} tkey;

static int tkey_cmp(const void *a, const void *b)
{
    const tkey *x = a, *y = b;
    return key_cmp(x->key, x->klen, y->key, y->klen);
}

/* A valid leaf of page size P in pg: up to `want` cells (fewer when they do not fit). */
static unsigned make_leaf(uint8_t *pg, uint32_t P, unsigned want, int overflow_ok)
{
    tkey keys[64];
    if (want > 64)
        want = 64;
    for (unsigned i = 0; i < want; i++) {
        keys[i].klen = rn(4) ? 16 : rn(41);
        for (uint32_t j = 0; j < keys[i].klen; j++)
            keys[i].key[j] = (uint8_t)(rn(3) ? '0' + rn(3) : rnd());
    }
    qsort(keys, want, sizeof keys[0], tkey_cmp);
    unsigned n = 0;
    for (unsigned i = 0; i < want; i++) /* distinct keys only */
        if (n == 0 || tkey_cmp(&keys[n - 1], &keys[i]) < 0)
            keys[n++] = keys[i];
    memset(pg, 0, P);
    pg[PH_TYPE] = PT_LEAF;
    put64(pg + PH_PGNO, 7);
    put64(pg + PH_TXID, TXID);
    /* cells in random order from the end of the page down, some with dead bytes after */
    unsigned order[64];
    for (unsigned i = 0; i < n; i++)
        order[i] = i;
    for (unsigned i = n; i > 1; i--) {
        unsigned j = rn(i), t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    uint32_t upper = P, frag = 0;
    unsigned placed = 0;
    uint16_t slot_of[64];
    for (unsigned o = 0; o < n; o++) {
        unsigned i = order[o];
        uint32_t klen = keys[i].klen, maxv = fmt_max_cell(P) - 2 - LEAF_CELL_HDR - klen;
        int ov = overflow_ok && rn(8) == 0;
        uint32_t vlen = ov ? maxv + 1 + rn(3 * P) : rn(maxv + 1 < 200 ? maxv + 1 : 200);
        uint32_t sz = LEAF_CELL_HDR + klen + (ov ? LEAF_OVREF : vlen);
        uint32_t dead = rn(3) ? 0 : rn(20);
        if (PH_SIZE + 2u * n + sz + dead + 8 > upper)
            break; /* does not fit: fewer cells */
        upper -= dead;
        frag += dead;
        upper -= sz;
        uint8_t *c = pg + upper;
        put16(c, (uint16_t)klen);
        c[2] = ov ? LEAF_F_OVERFLOW : 0;
        put32(c + 4, vlen);
        memcpy(c + LEAF_CELL_HDR, keys[i].key, klen);
        if (ov) {
            put64(c + LEAF_CELL_HDR + klen, 2 + rn(100));
            put64(c + LEAF_CELL_HDR + klen + 8, 1 + rn(TXID));
        } else {
            for (uint32_t j = 0; j < vlen; j++)
                c[LEAF_CELL_HDR + klen + j] = (uint8_t)rnd();
        }
        slot_of[i] = (uint16_t)upper;
        placed++;
    }
    /* keep the placed cells, in key order */
    unsigned m = 0;
    for (unsigned i = 0; i < n; i++) {
        int was = 0;
        for (unsigned o = 0; o < placed; o++)
            was |= order[o] == i;
        if (was)
            put16(pg + PH_SIZE + 2 * m++, slot_of[i]);
    }
    pg_set_nkeys(pg, (uint16_t)m);
    pg_set_upper(pg, upper);
    pg_set_frag(pg, frag);
    return m;
}

static int fast_ok(const uint8_t *pg, uint32_t P)
{
    int rc = btree_verify_page(pg, P, PAGES);
    bs_clear_error();
    return rc;
}

static int full_ok(const uint8_t *pg, uint32_t P)
{
    int rc = btree_verify_page_full(pg, P, PAGES);
    bs_clear_error();
    return rc;
}

/* A valid all-inline leaf of at least 3 cells for the targeted cases. */
static void base_leaf(uint8_t *pg, uint32_t P)
{
    while (make_leaf(pg, P, 3 + rn(20), 0) < 3)
        ;
}

#define CORRUPT(pg, P, what)                                                                 \
    do {                                                                                     \
        CHECK(fast_ok(pg, P) == BS_CORRUPT, "P %u: %s passes btree_verify_page", P, what);   \
        CHECK(full_ok(pg, P) == BS_CORRUPT, "P %u: %s passes the full check", P, what);      \
    } while (0)

static uint8_t *cell(uint8_t *pg, unsigned i) { return pg + node_slot(pg, i); }

static void targeted(uint32_t P)
{
    uint8_t *pg = malloc(P);
    for (int round = 0; round < 200; round++) {
        unsigned n;
        uint32_t upper, maxk = fmt_max_key(P);

        base_leaf(pg, P);
        n = pg_nkeys(pg);
        CHECK(fast_ok(pg, P) == BS_OK && full_ok(pg, P) == BS_OK, "P %u: valid base leaf", P);

        base_leaf(pg, P); /* slot below the cell area (into the slot array's gap) */
        upper = pg_upper(pg);
        put16(pg + PH_SIZE + 2 * rn(pg_nkeys(pg)), (uint16_t)(upper - 1 - rn(upper - PH_SIZE - 2u * pg_nkeys(pg))));
        CORRUPT(pg, P, "slot below upper");

        base_leaf(pg, P); /* a cell moved below upper, its old bytes left uncounted: sizes
                           * and frag still fill the area, keys still ascend */
        {
            unsigned i = rn(pg_nkeys(pg));
            uint8_t *c = cell(pg, i);
            uint32_t sz = lcell_size(c), gap = node_gap(pg);
            if (sz <= gap) {
                uint32_t to = pg_upper(pg) - sz - rn(gap - sz + 1);
                memmove(pg + to, c, sz);
                put16(pg + PH_SIZE + 2 * i, (uint16_t)to);
                CORRUPT(pg, P, "cell below upper");
            }
        }

        base_leaf(pg, P); /* slot whose cell header runs past the page */
        put16(pg + PH_SIZE + 2 * rn(pg_nkeys(pg)), (uint16_t)(P - 1 - rn(LEAF_CELL_HDR - 1)));
        CORRUPT(pg, P, "cell header past the page");

        if (P < 65536) {
            base_leaf(pg, P); /* slot at or past the end of the page */
            put16(pg + PH_SIZE + 2 * rn(pg_nkeys(pg)), (uint16_t)(P + rn(65536 - P)));
            CORRUPT(pg, P, "slot past the page");
        }

        base_leaf(pg, P); /* unknown flag bit */
        cell(pg, rn(pg_nkeys(pg)))[2] = (uint8_t)(2u << rn(7));
        CORRUPT(pg, P, "unknown cell flag");

        base_leaf(pg, P); /* nonzero pad byte */
        cell(pg, rn(pg_nkeys(pg)))[3] = (uint8_t)(1 + rn(255));
        CORRUPT(pg, P, "nonzero pad byte");

        base_leaf(pg, P); /* key length over the limit (and the rest of the cell moved) */
        put16(cell(pg, rn(pg_nkeys(pg))), (uint16_t)(maxk + 1 + rn(65535 - maxk)));
        CORRUPT(pg, P, "key over the limit");

        base_leaf(pg, P); /* vlen near 2^32: 8 + klen + vlen wraps in 32-bit arithmetic */
        put32(cell(pg, rn(pg_nkeys(pg))) + 4, 0xFFFFFFFFu - rn(LEAF_CELL_HDR + 4));
        CORRUPT(pg, P, "vlen wrapping the cell size");

        /* a value that should be an overflow run, the page otherwise sound: one cell with no
         * key and a value of fmt_max_cell - 2 - LEAF_CELL_HDR + 1 bytes */
        {
            uint32_t vlen = fmt_max_cell(P) - 2 - LEAF_CELL_HDR + 1, sz = LEAF_CELL_HDR + vlen;
            memset(pg, 0, P);
            pg[PH_TYPE] = PT_LEAF;
            put64(pg + PH_PGNO, 7);
            put64(pg + PH_TXID, TXID);
            pg_set_nkeys(pg, 1);
            pg_set_upper(pg, P - sz);
            put16(pg + PH_SIZE, (uint16_t)(P - sz));
            put32(pg + P - sz + 4, vlen);
            CORRUPT(pg, P, "inline value too large");
            put32(pg + P - sz + 4, vlen - 1); /* one byte less fits: then the sizes differ */
            pg_set_frag(pg, 1);
            CHECK(fast_ok(pg, P) == BS_OK && full_ok(pg, P) == BS_OK,
                  "P %u: largest inline value", P);
        }

        base_leaf(pg, P); /* two neighbours with equal keys: copy the slot (sizes then differ
                           * too), or make the keys equal in place */
        n = pg_nkeys(pg);
        {
            unsigned i = 1 + rn(n - 1);
            uint8_t *a = cell(pg, i - 1), *b = cell(pg, i);
            uint32_t al = get16(a), bl = get16(b);
            if (al == bl) {
                memcpy(b + LEAF_CELL_HDR, a + LEAF_CELL_HDR, al);
                CORRUPT(pg, P, "equal neighbouring keys");
            }
        }

        base_leaf(pg, P); /* two slots swapped: descending keys, sizes unchanged */
        n = pg_nkeys(pg);
        {
            unsigned i = 1 + rn(n - 1);
            uint16_t s0 = node_slot(pg, i - 1), s1 = node_slot(pg, i);
            put16(pg + PH_SIZE + 2 * (i - 1), s1);
            put16(pg + PH_SIZE + 2 * i, s0);
            CORRUPT(pg, P, "descending keys");
        }

        base_leaf(pg, P); /* two slots on one cell */
        {
            unsigned i = 1 + rn(pg_nkeys(pg) - 1);
            put16(pg + PH_SIZE + 2 * i, node_slot(pg, i - rn(2)));
            put16(pg + PH_SIZE + 2 * (i - 1), node_slot(pg, i));
            CORRUPT(pg, P, "two slots on one cell");
        }

        base_leaf(pg, P); /* cells and frag not filling the cell area */
        pg_set_frag(pg, pg_frag(pg) + 1);
        CORRUPT(pg, P, "frag one too many");
        base_leaf(pg, P);
        if (pg_frag(pg)) {
            pg_set_frag(pg, pg_frag(pg) - 1);
            CORRUPT(pg, P, "frag one too few");
        }

        base_leaf(pg, P); /* upper inside the last cell header's 8 bytes: header past P */
        n = pg_nkeys(pg);
        pg_set_upper(pg, P - 1 - rn(LEAF_CELL_HDR - 1));
        CORRUPT(pg, P, "upper near the end of the page");

        base_leaf(pg, P); /* page flags */
        pg[PH_FLAGS] = (uint8_t)(1 + rn(255));
        CORRUPT(pg, P, "page flags");

        base_leaf(pg, P); /* slot array running into the cell area */
        pg_set_nkeys(pg, (uint16_t)((pg_upper(pg) - PH_SIZE) / 2 + 1));
        CORRUPT(pg, P, "slots past upper");
    }
    free(pg);
}

/* Random changes of valid leaves: the fast path accepts exactly what the reference does. */
static void differential(uint32_t P, unsigned count)
{
    uint8_t *pg = malloc(P);
    unsigned passed = 0;
    for (unsigned it = 0; it < count; it++) {
        unsigned n = make_leaf(pg, P, rn(40), 1);
        CHECK(fast_ok(pg, P) == BS_OK, "P %u: valid leaf of %u cells fails", P, n);
        CHECK(full_ok(pg, P) == BS_OK, "P %u: valid leaf of %u cells fails the full check", P,
              n);
        unsigned changes = 1 + rn(3);
        for (unsigned c = 0; c < changes; c++) {
            uint32_t at;
            switch (rn(4)) {
            case 0: at = rn(PH_SIZE + 2 * n + 2); break;              /* header and slots */
            case 1: at = n ? node_slot(pg, rn(n)) + rn(8) : rn(P); break; /* a cell header */
            case 2: at = n ? node_slot(pg, rn(n)) + 8 + rn(24) : rn(P); break; /* its key */
            default: at = rn(P);
            }
            if (at >= P)
                at = rn(P);
            if (rn(2))
                pg[at] ^= (uint8_t)(1u << rn(8));
            else
                pg[at] = (uint8_t)(rn(2) ? rnd() : rn(2) ? 0 : 0xFF);
        }
        int a = fast_ok(pg, P), b = full_ok(pg, P);
        CHECK(a == b, "P %u it %u: btree_verify_page %d, full check %d", P, it, a, b);
        passed += a == BS_OK;
    }
    /* both outcomes were exercised (a mutation of a value byte keeps the page valid) */
    CHECK(passed > 0 && passed < count, "P %u: %u of %u mutated pages passed", P, passed, count);
    free(pg);
}

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 4711;
    rs ^= seed * 0x9E3779B97F4A7C15ull;
    if (!rs)
        rs = 1;
    const uint32_t sizes[] = {1024, 4096, 65536};
    for (unsigned s = 0; s < 3; s++) {
        targeted(sizes[s]);
        differential(sizes[s], sizes[s] == 65536 ? 20000 : 100000);
    }
    if (failures)
        return 1;
    printf("test_verify: ok\n");
    return 0;
}
