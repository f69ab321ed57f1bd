/*
 * btree.c - copy-on-write B+tree over the slotted branch/leaf pages of format.h: lookup,
 * insert/replace with splits, delete with eager removal of empty pages, deferred rebalance at
 * commit, dropping a whole tree, cursors, and the bounds check of node pages read from disk.
 *
 * Layer: calls pager.c (pager_get/write/new/free/owned, pager_ov_*) and util.c (bs_fail).
 * Never does I/O itself; never keeps a page pointer across calls (cursors keep page numbers).
 *
 * Node invariants kept here and enforced by btree_verify_page on every page read from disk:
 *  - slots [PH_SIZE, PH_SIZE + 2n) then the gap up to `upper`, cells in [upper, P);
 *  - sum(cell sizes) + frag == P - upper exactly (frag = dead bytes of removed cells);
 *  - keys strictly ascending; branch cell 0 has an empty key (minus infinity), nkeys >= 1;
 *  - a leaf value is inline iff fmt_value_inline() says so, else an overflow run.
 * Tree invariants: all leaves at depth t->depth; no empty leaf except an empty root; a
 * separator is any key s with (last key of the left subtree) < s <= (first key of the right);
 * leaf splits store the shortest such prefix.
 *
 * Writes are top-down copy-on-write: put/del first descend with pager_get only (the one place
 * BS_WOULDBLOCK can come from), then make the path writable with pager_write, repointing the
 * parent (or t->root) when a page moved, then change the nodes.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PSIZE(txn) ((txn)->db->page_size)
#define ULL(x) ((unsigned long long)(x))

/* ------------------------------------------------------------------ node primitives */

static inline uint32_t cell_size(const uint8_t *c, int leaf)
{
    return leaf ? lcell_size(c) : bcell_size(c);
}

/* bytes used by slots and live cells */
static inline uint32_t node_used(const uint8_t *pg, uint32_t P)
{
    return 2u * pg_nkeys(pg) + (P - pg_upper(pg) - pg_frag(pg));
}

/* below this many used bytes a non-root node is underfull */
static inline uint32_t node_thresh(uint32_t P) { return (P - PH_SIZE) / 4; }

static inline uint64_t node_child(const uint8_t *pg, unsigned i)
{
    return bcell_child(node_cell(pg, i));
}

/* Binary search is bound by cache misses on the cells: while cell mid is compared, start
 * loading the two cells the next step may probe. */
static inline void search_prefetch(const uint8_t *pg, unsigned lo, unsigned mid, unsigned hi)
{
#if defined(__GNUC__)
    if (hi - lo > 2) {
        __builtin_prefetch(pg + node_slot(pg, (lo + mid) >> 1));
        __builtin_prefetch(pg + node_slot(pg, (mid + 1 + hi) >> 1));
    }
#else
    (void)pg, (void)lo, (void)mid, (void)hi;
#endif
}

/* leaf: first index whose key is >= key; *exact = 1 when equal */
static unsigned leaf_search(const uint8_t *pg, const uint8_t *key, size_t klen, int *exact)
{
    unsigned lo = 0, hi = pg_nkeys(pg);
    while (lo < hi) {
        unsigned mid = (lo + hi) >> 1;
        const uint8_t *c = node_cell(pg, mid);
        search_prefetch(pg, lo, mid, hi);
        int r = key_cmp(c + LEAF_CELL_HDR, lcell_klen(c), key, klen);
        if (r < 0) {
            lo = mid + 1;
        } else if (r > 0) {
            hi = mid;
        } else {
            *exact = 1;
            return mid;
        }
    }
    *exact = 0;
    return lo;
}

/* branch: the child whose range holds key: the last i with key_i <= key (cell 0 = -inf) */
static unsigned branch_search(const uint8_t *pg, const uint8_t *key, size_t klen)
{
    unsigned lo = 1, hi = pg_nkeys(pg);
    while (lo < hi) {
        unsigned mid = (lo + hi) >> 1;
        const uint8_t *c = node_cell(pg, mid);
        search_prefetch(pg, lo, mid, hi);
        int r = key_cmp(c + BRANCH_CELL_HDR, bcell_klen(c), key, klen);
        if (r < 0)
            lo = mid + 1;
        else if (r > 0)
            hi = mid;
        else
            return mid;
    }
    return lo - 1;
}

/* A cell to place in a node: leaf: p = the raw cell bytes (klen = its key length);
 * branch: p = key bytes, child. size = cell bytes without the slot. */
typedef struct vcell {
    const uint8_t *p;
    uint64_t child, txid;  /* branch: the child and the txid the pointer expects of it */
    uint32_t klen;
    uint32_t size;
} vcell;

static inline vcell vcell_of(const uint8_t *pg, unsigned i, int leaf)
{
    const uint8_t *c = node_cell(pg, i);
    vcell v;
    if (leaf) {
        v.p = c;
        v.child = v.txid = 0;
        v.klen = lcell_klen(c);
        v.size = lcell_size(c);
    } else {
        v.p = bcell_key(c);
        v.child = bcell_child(c);
        v.txid = bcell_txid(c);
        v.klen = bcell_klen(c);
        v.size = BRANCH_CELL_HDR + v.klen;
    }
    return v;
}

static inline const uint8_t *vcell_key(const vcell *v, int leaf)
{
    return leaf ? v->p + LEAF_CELL_HDR : v->p;
}

/* Reserve size bytes for a new cell at slot i (caller checked gap >= size + 2). */
static uint8_t *node_alloc(uint8_t *pg, unsigned i, uint32_t size)
{
    unsigned n = pg_nkeys(pg);
    uint32_t up = pg_upper(pg) - size;
    uint8_t *s = pg + PH_SIZE + 2 * i;
    if (i < n)
        memmove(s + 2, s, 2 * (n - i));
    put16(s, (uint16_t)up);
    pg_set_upper(pg, up);
    pg_set_nkeys(pg, (uint16_t)(n + 1));
    return pg + up;
}

static void node_put_cell(uint8_t *pg, unsigned i, const vcell *v, int leaf)
{
    uint8_t *c = node_alloc(pg, i, v->size);
    if (leaf) {
        memcpy(c, v->p, v->size);
    } else {
        bcell_set_child(c, v->child, v->txid);
        put16(c + BC_KLEN, (uint16_t)v->klen);
        if (v->klen)
            memcpy(c + BRANCH_CELL_HDR, v->p, v->klen);
    }
}

static void node_remove(uint8_t *pg, unsigned i, int leaf)
{
    unsigned n = pg_nkeys(pg);
    uint32_t off = node_slot(pg, i), sz = cell_size(pg + off, leaf);
    uint8_t *s = pg + PH_SIZE + 2 * i;
    memmove(s, s + 2, 2 * (n - 1 - i));
    pg_set_nkeys(pg, (uint16_t)(n - 1));
    if (n == 1) {
        pg_set_upper(pg, (uint32_t)(pg_upper(pg) + sz + pg_frag(pg)));
        pg_set_frag(pg, 0);
    } else if (off == pg_upper(pg)) {
        pg_set_upper(pg, off + sz);
    } else {
        pg_set_frag(pg, pg_frag(pg) + sz);
    }
}

/* Move the cells to the end of the page so that frag becomes part of the gap. tmp: P bytes. */
static void node_compact(uint8_t *pg, uint32_t P, int leaf, uint8_t *tmp)
{
    unsigned n = pg_nkeys(pg);
    uint32_t up = P;
    memcpy(tmp, pg, P);
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *c = node_cell(tmp, i);
        uint32_t sz = cell_size(c, leaf);
        up -= sz;
        memcpy(pg + up, c, sz);
        put16(pg + PH_SIZE + 2 * i, (uint16_t)up);
    }
    pg_set_upper(pg, up);
    pg_set_frag(pg, 0);
}

static int node_compact_alloc(uint8_t *pg, uint32_t P, int leaf)
{
    uint8_t *tmp = malloc(P);
    if (!tmp)
        return bs_fail(BS_NOMEM, "out of memory compacting a page");
    node_compact(pg, P, leaf, tmp);
    free(tmp);
    return BS_OK;
}

/* Rebuild a node's cells from a list (header type/pgno/txid kept). Branch cell 0 gets an
 * empty key. */
static void node_build(uint8_t *pg, uint32_t P, int leaf, const vcell *v, unsigned n)
{
    pg_set_nkeys(pg, 0);
    pg_set_upper(pg, P);
    pg_set_frag(pg, 0);
    for (unsigned i = 0; i < n; i++) {
        if (!leaf && i == 0) {
            vcell z = v[0];
            z.klen = 0;
            z.size = BRANCH_CELL_HDR;
            node_put_cell(pg, 0, &z, 0);
        } else {
            node_put_cell(pg, i, &v[i], leaf);
        }
    }
}

static void leaf_cell_write(uint8_t *c, const uint8_t *key, size_t klen, const uint8_t *val,
                            size_t vlen, uint64_t ovpgno, uint64_t ovtxid)
{
    put16(c, (uint16_t)klen);
    c[2] = ovpgno ? LEAF_F_OVERFLOW : 0;
    c[3] = 0;
    put32(c + 4, (uint32_t)vlen);
    if (klen)
        memcpy(c + LEAF_CELL_HDR, key, klen);
    if (ovpgno) {
        put64(c + LEAF_CELL_HDR + klen, ovpgno);
        put64(c + LEAF_CELL_HDR + klen + 8, ovtxid);
    } else if (vlen)
        memcpy(c + LEAF_CELL_HDR + klen, val, vlen);
}

/* Split point k in [1, n): v[0..k) and v[k..n) each fit cap bytes (slots included; a branch
 * half's first cell loses its key). Balanced, or (append) with the left half as full as
 * possible. def: a split known to fit, used if none is found. */
static unsigned choose_split(const vcell *v, unsigned n, int leaf, uint32_t cap, int append,
                             unsigned def)
{
    uint64_t total = 0, left = 0, best_score = UINT64_MAX;
    unsigned best = def;
    for (unsigned i = 0; i < n; i++)
        total += v[i].size + 2u;
    for (unsigned k = 1; k < n; k++) {
        left += v[k - 1].size + 2u;
        uint64_t l = left - (leaf ? 0 : v[0].klen);
        uint64_t r = total - left - (leaf ? 0 : v[k].klen);
        if (l > cap)
            break;
        if (r > cap)
            continue;
        uint64_t score = append ? cap - l : (l > r ? l : r);
        if (score <= best_score) {
            if (!append && score == best_score)
                continue;
            best_score = score;
            best = k;
        }
    }
    return best;
}

/* Length of the shortest prefix s of b with a < s <= b (a < b). */
static size_t sep_len(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i + 1 <= blen ? i + 1 : blen;
}

/* ------------------------------------------------------------------ verification */

int btree_verify_page(const uint8_t *pg, uint32_t P, uint64_t page_count)
{
    unsigned long long pgno = pg_pgno(pg);
    int type = pg_type(pg), leaf = type == PT_LEAF;
    if (type != PT_BRANCH && type != PT_LEAF)
        return bs_fail(BS_CORRUPT, "page %llu: not a branch or leaf page (type %d)", pgno, type);
    unsigned n = pg_nkeys(pg);
    uint32_t upper = pg_upper(pg), frag = pg_frag(pg), maxk = fmt_max_key(P);
    if (PH_SIZE + 2u * n > upper || upper > P)
        return bs_fail(BS_CORRUPT, "page %llu: %u slots and cell area at %u do not fit", pgno, n,
                       upper);
    if (frag > P - upper)
        return bs_fail(BS_CORRUPT, "page %llu: fragment count %u out of range", pgno, frag);
    if (!leaf && n == 0)
        return bs_fail(BS_CORRUPT, "page %llu: branch page without children", pgno);
    if (pg[PH_FLAGS])
        return bs_fail(BS_CORRUPT, "page %llu: unknown page flags %#x", pgno, pg[PH_FLAGS]);
    uint64_t sum = 0;
    const uint8_t *pk = NULL;
    size_t pkl = 0;
    for (unsigned i = 0; i < n; i++) {
        uint32_t off = node_slot(pg, i), sz, klen;
        const uint8_t *c = pg + off, *k;
        if (off < upper || off >= P)
            return bs_fail(BS_CORRUPT, "page %llu: slot %u points outside the cell area (%u)",
                           pgno, i, off);
        if (leaf) {
            if (P - off < LEAF_CELL_HDR)
                return bs_fail(BS_CORRUPT, "page %llu: cell %u runs past the page", pgno, i);
            klen = lcell_klen(c);
            uint32_t vlen = lcell_vlen(c);
            if (klen > maxk)
                return bs_fail(BS_CORRUPT, "page %llu: cell %u key length %u over the limit",
                               pgno, i, klen);
            if ((lcell_flags(c) & ~LEAF_F_OVERFLOW) || c[3])
                return bs_fail(BS_CORRUPT, "page %llu: cell %u has bad flags", pgno, i);
            int inl = fmt_value_inline(P, klen, vlen);
            if (lcell_flags(c) & LEAF_F_OVERFLOW) {
                if (inl)
                    return bs_fail(BS_CORRUPT, "page %llu: cell %u: value of %u bytes should "
                                   "be inline", pgno, i, vlen);
                sz = LEAF_CELL_HDR + klen + LEAF_OVREF;
                if (sz > P - off)
                    return bs_fail(BS_CORRUPT, "page %llu: cell %u runs past the page", pgno, i);
                uint64_t ov = get64(c + LEAF_CELL_HDR + klen);
                uint64_t otx = get64(c + LEAF_CELL_HDR + klen + 8);
                uint64_t np = fmt_overflow_pages(P, vlen);
                if (ov < BS_META_PAGES || ov >= page_count || np > page_count - ov)
                    return bs_fail(BS_CORRUPT, "page %llu: cell %u: overflow run %llu (+%llu "
                                   "pages) out of range", pgno, i, ULL(ov), ULL(np));
                if (otx == 0 || otx > pg_txid(pg))
                    return bs_fail(BS_CORRUPT, "page %llu: cell %u: overflow run %llu expected "
                                   "at txid %llu, but this page is txid %llu", pgno, i,
                                   ULL(ov), ULL(otx), ULL(pg_txid(pg)));
            } else {
                if (!inl)
                    return bs_fail(BS_CORRUPT, "page %llu: cell %u: inline value of %u bytes "
                                   "is too large", pgno, i, vlen);
                sz = LEAF_CELL_HDR + klen + vlen;
                if (sz > P - off)
                    return bs_fail(BS_CORRUPT, "page %llu: cell %u runs past the page", pgno, i);
            }
            k = c + LEAF_CELL_HDR;
        } else {
            if (P - off < BRANCH_CELL_HDR)
                return bs_fail(BS_CORRUPT, "page %llu: cell %u runs past the page", pgno, i);
            klen = bcell_klen(c);
            if (klen > maxk)
                return bs_fail(BS_CORRUPT, "page %llu: cell %u key length %u over the limit",
                               pgno, i, klen);
            sz = BRANCH_CELL_HDR + klen;
            if (sz > P - off)
                return bs_fail(BS_CORRUPT, "page %llu: cell %u runs past the page", pgno, i);
            uint64_t child = bcell_child(c), ctx = bcell_txid(c);
            if (child < BS_META_PAGES || child >= page_count)
                return bs_fail(BS_CORRUPT, "page %llu: cell %u: child page %llu out of range",
                               pgno, i, ULL(child));
            /* a child is never newer than its parent: copying it rewrites the parent too */
            if (ctx == 0 || ctx > pg_txid(pg))
                return bs_fail(BS_CORRUPT, "page %llu: cell %u: child page %llu expected at "
                               "txid %llu, but this page is txid %llu", pgno, i, ULL(child),
                               ULL(ctx), ULL(pg_txid(pg)));
            if (i == 0 && klen)
                return bs_fail(BS_CORRUPT, "page %llu: first branch cell has a key", pgno);
            k = c + BRANCH_CELL_HDR;
        }
        if (pk && key_cmp(pk, pkl, k, klen) >= 0)
            return bs_fail(BS_CORRUPT, "page %llu: keys out of order at cell %u", pgno, i);
        if (leaf || i > 0) {
            pk = k;
            pkl = klen;
        }
        sum += sz;
    }
    if (sum + frag != P - upper)
        return bs_fail(BS_CORRUPT, "page %llu: cell sizes (%llu) and fragments (%u) do not "
                       "fill the cell area (%u)", pgno, ULL(sum), frag, P - upper);
    return BS_OK;
}

/* ------------------------------------------------------------------ key ranges
 * A descent narrows the key range [lo, hi) at each level to the separators around the child
 * it takes, and checks the node it reaches against it: the node's smallest and largest key
 * (its own order was verified when it was read), so a node that another parent's separators
 * describe (a stale or misplaced page) is corrupt, not data. NULL bound = unbounded. */
typedef struct bt_rng {
    const uint8_t *lo, *hi;
    size_t lol, hil;
} bt_rng;

static const bt_rng RNG_ALL = {NULL, NULL, 0, 0};

/* narrow r to child i of the branch pg */
static inline void rng_child(bt_rng *r, const uint8_t *pg, unsigned i)
{
    if (i > 0) {
        const uint8_t *c = node_cell(pg, i);
        r->lo = bcell_key(c);
        r->lol = bcell_klen(c);
    }
    if (i + 1u < pg_nkeys(pg)) {
        const uint8_t *c = node_cell(pg, i + 1);
        r->hi = bcell_key(c);
        r->hil = bcell_klen(c);
    }
}

void btree_bounds(const uint8_t *pg, bs_bounds *out)
{
    unsigned n = pg_nkeys(pg);
    int leaf = pg_type(pg) == PT_LEAF;
    unsigned first = leaf ? 0 : 1;
    out->valid = 0;
    if (n <= first)
        return;
    for (int w = 0; w < 2; w++) {
        const uint8_t *c = node_cell(pg, w ? n - 1 : first);
        const uint8_t *k = leaf ? lcell_key(c) : bcell_key(c);
        size_t kl = leaf ? lcell_klen(c) : bcell_klen(c);
        out->len[w] = kl <= BS_BOUNDS_CAP ? (uint8_t)kl : BS_BOUNDS_LONG;
        memcpy(out->key[w], k, kl <= BS_BOUNDS_CAP ? kl : BS_BOUNDS_CAP);
    }
    out->valid = 1;
}

/* key w (0 first, 1 last) of the summary b against (key, klen): < 0, 0, > 0 as key_cmp, or
 * 2 when the stored prefix does not decide (both longer than BS_BOUNDS_CAP, prefixes equal) */
static inline int bounds_cmp(const bs_bounds *b, int w, const uint8_t *key, size_t klen)
{
    if (b->len[w] != BS_BOUNDS_LONG)
        return key_cmp(b->key[w], b->len[w], key, klen);
    size_t m = klen < BS_BOUNDS_CAP ? klen : BS_BOUNDS_CAP;
    int c = m ? memcmp(b->key[w], key, m) : 0;
    if (c)
        return c;
    return klen <= BS_BOUNDS_CAP ? 1 : 2; /* a longer key with the whole of key as prefix */
}

/* node pg's keys lie in r: leaf keys in [lo, hi), branch separators in [lo, hi] */
static int rng_check(const bt_rng *r, const uint8_t *pg, uint64_t pgno)
{
    unsigned n = pg_nkeys(pg), first;
    int leaf = pg_type(pg) == PT_LEAF;
    const uint8_t *k;
    size_t kl;
    first = leaf ? 0 : 1;
    if (n <= first || (!r->lo && !r->hi))
        return BS_OK;
    /* a cached image's first and last keys are kept beside it (pager_bounds) */
    const bs_bounds *b = pager_bounds(pg);
    if (r->lo) {
        int c = b ? bounds_cmp(b, 0, r->lo, r->lol) : 2;
        if (c == 2) {
            const uint8_t *cl = node_cell(pg, first);
            k = leaf ? lcell_key(cl) : bcell_key(cl);
            kl = leaf ? lcell_klen(cl) : bcell_klen(cl);
            c = key_cmp(k, kl, r->lo, r->lol);
        }
        if (c < 0)
            goto bad;
    }
    if (r->hi) {
        int c = b ? bounds_cmp(b, 1, r->hi, r->hil) : 2;
        if (c == 2) {
            const uint8_t *cl = node_cell(pg, n - 1);
            k = leaf ? lcell_key(cl) : bcell_key(cl);
            kl = leaf ? lcell_klen(cl) : bcell_klen(cl);
            c = key_cmp(k, kl, r->hi, r->hil);
        }
        if (c >= leaf)
            goto bad;
    }
    return BS_OK;
bad:
    return bs_fail(BS_CORRUPT, "page %llu: keys outside the range of its parent's separators "
                   "(stale or misplaced page)", ULL(pgno));
}

/* pager_get_ref through child i of the branch parent (pgno ppgno), checked against the range
 * r of the child (already narrowed) */
static inline int bt_child(bs_txn *txn, const uint8_t *par, uint64_t ppgno, unsigned i, int type,
                           const bt_rng *r, uint64_t *pgno, const uint8_t **pg)
{
    const uint8_t *c = node_cell(par, i);
    int rc;
    *pgno = bcell_child(c);
    if ((rc = pager_get_ref(txn, *pgno, type, bcell_txid(c), ppgno, pg)) != BS_OK)
        return rc;
    return rng_check(r, *pg, *pgno);
}

/* the root page of t */
static inline int bt_root(bs_txn *txn, const bs_tree *t, int type, const uint8_t **pg)
{
    return pager_get_ref(txn, t->root, type, t->root_txid, PAGER_FROM_RECORD, pg);
}

/* ------------------------------------------------------------------ descent */

typedef struct bt_path {
    unsigned rm;                       /* levels [0, rm) are on the rightmost edge */
    uint64_t pgno[BS_MAX_DEPTH];
    unsigned idx[BS_MAX_DEPTH];        /* child index (branch) / slot (leaf) */
    const uint8_t *rp[BS_MAX_DEPTH];   /* read pointers from the descent */
    uint8_t *wp[BS_MAX_DEPTH];         /* writable pointers after bt_writable */
} bt_path;

static int bad_depth(const bs_tree *t)
{
    return bs_fail(BS_CORRUPT, "tree at page %llu: depth %u out of range", ULL(t->root),
                   t->depth);
}

static int bt_descend(bs_txn *txn, const bs_tree *t, const uint8_t *key, size_t klen,
                      bt_path *p, int *exact)
{
    unsigned D = t->depth, L;
    uint64_t pgno = t->root;
    const uint8_t *pg;
    bt_rng r = RNG_ALL;
    int rc, edge = 1;
    if (BS_UNLIKELY(D == 0 || D > BS_MAX_DEPTH))
        return bad_depth(t);
    p->rm = 0;
    if ((rc = bt_root(txn, t, D > 1 ? PT_BRANCH : PT_LEAF, &pg)) != BS_OK)
        return rc;
    for (L = 0; L + 1 < D; L++) {
        unsigned i = branch_search(pg, key, klen);
        p->pgno[L] = pgno;
        p->idx[L] = i;
        p->rp[L] = pg;
        if (edge && i + 1u == pg_nkeys(pg))
            p->rm = L + 1;
        else
            edge = 0;
        rng_child(&r, pg, i);
        if ((rc = bt_child(txn, pg, pgno, i, L + 2 < D ? PT_BRANCH : PT_LEAF, &r, &pgno, &pg)) !=
            BS_OK)
            return rc;
    }
    p->pgno[L] = pgno;
    p->idx[L] = leaf_search(pg, key, klen, exact);
    p->rp[L] = pg;
    return BS_OK;
}

/* Make levels [0, top] of the path writable, repointing parents / the root. */
static int bt_writable(bs_txn *txn, bs_tree *t, bt_path *p, unsigned top)
{
    int rc;
    for (unsigned L = 0; L <= top; L++) {
        uint64_t np;
        if ((rc = pager_write(txn, p->pgno[L], &p->wp[L], &np)) != BS_OK)
            return rc;
        if (np != p->pgno[L]) {
            /* hostile files: the freelist handed out a page still on the path below */
            for (unsigned M = L + 1; M < t->depth; M++)
                if (BS_UNLIKELY(p->pgno[M] == np))
                    return pager_freelist_damaged(txn, np, "is in use on the path being copied");
            txn->mod_seq++; /* pages moved: cursors must not reuse their stacks */
            if (L == 0) {
                t->root = np;
                t->root_txid = txn->txid;
            } else {
                bcell_set_child(p->wp[L - 1] + node_slot(p->wp[L - 1], p->idx[L - 1]), np,
                                txn->txid);
            }
            p->pgno[L] = np;
        }
    }
    return BS_OK;
}

/* ------------------------------------------------------------------ get */

/* The value of a leaf cell: a pointer into the page, or the overflow run it lives in. */
static void cell_value(const uint8_t *c, bs_val *out)
{
    out->len = lcell_vlen(c);
    if (lcell_flags(c) & LEAF_F_OVERFLOW) {
        out->data = NULL;
        out->ovpgno = lcell_ovpgno(c);
        out->ovtxid = lcell_ovtxid(c);
    } else {
        out->data = lcell_val(c);
        out->ovpgno = out->ovtxid = 0;
    }
}

int btree_get(bs_txn *txn, bs_tree *t, const uint8_t *key, size_t klen, bs_val *out)
{
    unsigned D = t->depth;
    uint64_t pgno = t->root;
    const uint8_t *pg;
    bt_rng r = RNG_ALL;
    int rc, exact;
    if (!pgno)
        return BS_NOTFOUND;
    if (BS_UNLIKELY(D == 0 || D > BS_MAX_DEPTH))
        return bad_depth(t);
    if ((rc = bt_root(txn, t, D > 1 ? PT_BRANCH : PT_LEAF, &pg)) != BS_OK)
        return rc;
    for (unsigned L = 1; L < D; L++) {
        unsigned i = branch_search(pg, key, klen);
        rng_child(&r, pg, i);
        if ((rc = bt_child(txn, pg, pgno, i, L + 1 < D ? PT_BRANCH : PT_LEAF, &r, &pgno, &pg)) !=
            BS_OK)
            return rc;
    }
    unsigned i = leaf_search(pg, key, klen, &exact);
    if (!exact)
        return BS_NOTFOUND;
    cell_value(node_cell(pg, i), out);
    return BS_OK;
}

/* ------------------------------------------------------------------ put */

/* Insert nv at slot i of level L of the path (writable), splitting up the path as needed. */
static int bt_insert(bs_txn *txn, bs_tree *t, bt_path *p, unsigned L, unsigned i, vcell nv)
{
    uint32_t P = PSIZE(txn), cap = P - PH_SIZE;
    uint8_t *buf = NULL, *sepb[2] = {NULL, NULL};
    vcell *v = NULL;
    int rc = BS_OK, sw = 0;
    for (;;) {
        uint8_t *pg = p->wp[L];
        int leaf = L + 1 == t->depth;
        unsigned n = pg_nkeys(pg);
        uint32_t need = nv.size + 2;
        if (node_gap(pg) >= need) {
            node_put_cell(pg, i, &nv, leaf);
            break;
        }
        if (!buf) {
            buf = malloc(P);
            sepb[0] = malloc(fmt_max_key(P));
            sepb[1] = malloc(fmt_max_key(P));
            v = malloc((cap / (2 + LEAF_CELL_HDR) + 2) * sizeof *v);
            if (!buf || !sepb[0] || !sepb[1] || !v) {
                rc = bs_fail(BS_NOMEM, "out of memory splitting a page");
                break;
            }
        }
        if (node_gap(pg) + pg_frag(pg) >= need) {
            node_compact(pg, P, leaf, buf);
            node_put_cell(pg, i, &nv, leaf);
            break;
        }
        /* split: the cells of pg with nv inserted at i */
        memcpy(buf, pg, P);
        unsigned m = 0;
        for (unsigned j = 0; j < n; j++) {
            if (j == i)
                v[m++] = nv;
            v[m++] = vcell_of(buf, j, leaf);
        }
        if (i == n)
            v[m++] = nv;
        int append = p->rm >= L && i == n;
        unsigned k = choose_split(v, m, leaf, cap, append, m / 2);
        uint8_t *rpg;
        uint64_t rno;
        if ((rc = pager_new(txn, leaf ? PT_LEAF : PT_BRANCH, &rpg, &rno)) != BS_OK)
            break;
        node_build(pg, P, leaf, v, k);
        node_build(rpg, P, leaf, v + k, m - k);
        const uint8_t *sp = vcell_key(&v[k], leaf);
        size_t sl = v[k].klen;
        if (leaf)
            sl = sep_len(vcell_key(&v[k - 1], 1), v[k - 1].klen, sp, sl);
        if (sl)
            memcpy(sepb[sw], sp, sl);
        nv = (vcell){sepb[sw], rno, txn->txid, (uint32_t)sl, (uint32_t)(BRANCH_CELL_HDR + sl)};
        sw ^= 1;
        if (L == 0) {
            /* the root split: a new root above it */
            uint8_t *root;
            uint64_t rootno;
            if (t->depth >= BS_MAX_DEPTH) {
                rc = bs_fail(BS_FULL, "tree depth limit (%d) reached", BS_MAX_DEPTH);
                break;
            }
            if ((rc = pager_new(txn, PT_BRANCH, &root, &rootno)) != BS_OK)
                break;
            vcell c0 = {NULL, p->pgno[0], txn->txid, 0, BRANCH_CELL_HDR};
            node_put_cell(root, 0, &c0, 0);
            node_put_cell(root, 1, &nv, 0);
            t->root = rootno;
            t->root_txid = txn->txid;
            t->depth++;
            break;
        }
        L--;
        i = p->idx[L] + 1;
    }
    free(buf);
    free(sepb[0]);
    free(sepb[1]);
    free(v);
    return rc;
}

int btree_put(bs_txn *txn, bs_tree *t, const uint8_t *key, size_t klen,
              const uint8_t *val, size_t vlen, unsigned flags)
{
    uint32_t P = PSIZE(txn);
    bt_path p;
    int exact = 0, rc;
    unsigned D = 0;
    uint64_t ovpgno = 0;
    if (klen > fmt_max_key(P))
        return bs_fail(BS_TOOBIG, "key of %zu bytes is over the limit of %u", klen,
                       fmt_max_key(P));
    if ((uint64_t)vlen > UINT32_MAX)
        return bs_fail(BS_TOOBIG, "value of %zu bytes is over the limit of 4294967295", vlen);
    if (t->root) {
        if ((rc = bt_descend(txn, t, key, klen, &p, &exact)) != BS_OK)
            return rc;
        D = t->depth;
        if (exact) {
            if (flags & BS_NOOVERWRITE)
                return BS_EXISTS;
            const uint8_t *c = node_cell(p.rp[D - 1], p.idx[D - 1]);
            if (!(lcell_flags(c) & LEAF_F_OVERFLOW) && lcell_vlen(c) == vlen &&
                (!vlen || !memcmp(lcell_val(c), val, vlen)))
                return BS_OK; /* same value: nothing to write */
        }
    }
    int ov = !fmt_value_inline(P, klen, vlen);
    if (ov) {
        if (txn->noio)
            return BS_WOULDBLOCK;
        if ((rc = pager_ov_write(txn, val, vlen, &ovpgno)) != BS_OK)
            return rc;
    }
    if (!t->root) {
        uint64_t pgno;
        if ((rc = pager_new(txn, PT_LEAF, &p.wp[0], &pgno)) != BS_OK)
            goto fail_ov;
        t->root = pgno;
        t->root_txid = txn->txid;
        t->depth = D = 1;
        t->count = 0;
        p.pgno[0] = pgno;
        p.idx[0] = 0;
        p.rm = 0;
    } else if ((rc = bt_writable(txn, t, &p, D - 1)) != BS_OK) {
        goto fail_ov;
    }
    uint8_t *lf = p.wp[D - 1];
    unsigned i = p.idx[D - 1];
    uint32_t csize = LEAF_CELL_HDR + (uint32_t)klen + (ov ? LEAF_OVREF : (uint32_t)vlen);
    t->dirty = true;
    txn->mod_seq++;
    if (exact) {
        uint8_t *c = lf + node_slot(lf, i);
        if ((lcell_flags(c) & LEAF_F_OVERFLOW) &&
            (rc = pager_ov_free(txn, lcell_ovpgno(c), lcell_vlen(c))) != BS_OK)
            return rc;
        if (lcell_size(c) == csize) {
            leaf_cell_write(c, key, klen, val, vlen, ovpgno, txn->txid);
            return BS_OK;
        }
        node_remove(lf, i, 1);
    } else {
        t->count++;
    }
    uint32_t need = csize + 2;
    if (BS_LIKELY(node_gap(lf) >= need)) {
        leaf_cell_write(node_alloc(lf, i, csize), key, klen, val, vlen, ovpgno, txn->txid);
        return BS_OK;
    }
    /* compaction or a split: go through a built cell */
    uint8_t *cbuf = malloc(csize);
    if (!cbuf)
        return bs_fail(BS_NOMEM, "out of memory inserting a key");
    leaf_cell_write(cbuf, key, klen, val, vlen, ovpgno, txn->txid);
    vcell nv = {cbuf, 0, 0, (uint32_t)klen, csize};
    rc = bt_insert(txn, t, &p, D - 1, i, nv);
    free(cbuf);
    return rc;
fail_ov:
    /* best effort: the caller marks the transaction failed, and its abort (or the rollback
     * of a savepoint) gives the run back in any case */
    if (ovpgno)
        (void)pager_ov_free(txn, ovpgno, vlen);
    return rc;
}

/* ------------------------------------------------------------------ delete */

int btree_del(bs_txn *txn, bs_tree *t, const uint8_t *key, size_t klen)
{
    uint32_t P = PSIZE(txn);
    bt_path p;
    int exact = 0, rc;
    if (!t->root || klen > fmt_max_key(P))
        return BS_NOTFOUND;
    if ((rc = bt_descend(txn, t, key, klen, &p, &exact)) != BS_OK)
        return rc;
    if (!exact)
        return BS_NOTFOUND;
    if (BS_UNLIKELY(t->count == 0)) /* hostile files: a record that undercounts its tree */
        return bs_fail(BS_CORRUPT, "tree at page %llu: its record says it is empty, but it "
                       "holds keys", ULL(t->root));
    unsigned D = t->depth, top = D - 1;
    const uint8_t *c = node_cell(p.rp[D - 1], p.idx[D - 1]);
    uint64_t ovpgno = (lcell_flags(c) & LEAF_F_OVERFLOW) ? lcell_ovpgno(c) : 0;
    uint32_t vlen = lcell_vlen(c);
    /* levels that become empty disappear: top = the level that loses a cell and survives */
    while (top > 0 && pg_nkeys(p.rp[top]) == 1)
        top--;
    unsigned nroot = pg_nkeys(p.rp[0]);
    if (D > 1 && top == 0 && nroot <= 2) {
        /* the root branch keeps one child (collapse) or none (the tree empties) */
        uint8_t *pg;
        uint64_t pgno, newroot = 0, newtxid = txn->txid;
        unsigned newdepth = D - 1;
        if (nroot == 1) {
            if ((rc = pager_new(txn, PT_LEAF, &pg, &pgno)) != BS_OK)
                return rc;
            for (unsigned L = 0; L < D; L++) /* hostile files: a path page handed out */
                if (BS_UNLIKELY(p.pgno[L] == pgno))
                    return pager_freelist_damaged(txn, pgno, "is in use on the path");
            newroot = pgno;
            newdepth = 1;
        } else {
            const uint8_t *oc = node_cell(p.rp[0], 1 - p.idx[0]);
            newroot = bcell_child(oc);
            newtxid = bcell_txid(oc);
        }
        if (ovpgno && (rc = pager_ov_free(txn, ovpgno, vlen)) != BS_OK)
            return rc;
        for (unsigned L = 0; L < D; L++)
            if ((rc = pager_free(txn, p.pgno[L])) != BS_OK)
                return rc;
        t->root = newroot;
        t->root_txid = newtxid;
        t->depth = newdepth;
        t->needs_rebalance = true;
    } else {
        if ((rc = bt_writable(txn, t, &p, top)) != BS_OK)
            return rc;
        if (ovpgno && (rc = pager_ov_free(txn, ovpgno, vlen)) != BS_OK)
            return rc;
        for (unsigned L = top + 1; L < D; L++)
            if ((rc = pager_free(txn, p.pgno[L])) != BS_OK)
                return rc;
        uint8_t *pg = p.wp[top];
        int leaf = top == D - 1;
        node_remove(pg, p.idx[top], leaf);
        if (!leaf && p.idx[top] == 0) {
            /* the new first cell stands for minus infinity: drop its key */
            uint8_t *c0 = pg + node_slot(pg, 0);
            uint32_t k = bcell_klen(c0);
            if (k) {
                put16(c0 + BC_KLEN, 0);
                pg_set_frag(pg, pg_frag(pg) + k);
            }
        }
        if (top > 0 && node_used(pg, P) < node_thresh(P))
            t->needs_rebalance = true;
    }
    t->count--;
    t->dirty = true;
    txn->mod_seq++;
    return BS_OK;
}

/* ------------------------------------------------------------------ rebalance */

/* Merge child a+1 of par into child a (the caller checked that it fits). */
static int bt_merge(bs_txn *txn, uint8_t *par, unsigned a, int leaf)
{
    uint32_t P = PSIZE(txn);
    uint64_t lno = node_child(par, a), rno, np;
    const uint8_t *rp;
    uint8_t *lw;
    int rc;
    if ((rc = bt_child(txn, par, pg_pgno(par), a + 1, leaf ? PT_LEAF : PT_BRANCH, &RNG_ALL, &rno,
                       &rp)) != BS_OK ||
        (rc = pager_write(txn, lno, &lw, &np)) != BS_OK)
        return rc;
    if (BS_UNLIKELY(np == rno)) /* hostile files: the sibling came back from the freelist */
        return pager_freelist_damaged(txn, np, "is the sibling being merged");
    if (np != lno)
        bcell_set_child(par + node_slot(par, a), np, txn->txid);
    const uint8_t *sc = node_cell(par, a + 1);
    uint32_t need = node_used(rp, P) + (leaf ? 0 : bcell_klen(sc));
    if (node_gap(lw) < need && (rc = node_compact_alloc(lw, P, leaf)) != BS_OK)
        return rc;
    unsigned n = pg_nkeys(lw), rn = pg_nkeys(rp);
    for (unsigned j = 0; j < rn; j++) {
        vcell v = vcell_of(rp, j, leaf);
        if (!leaf && j == 0) {
            v.p = bcell_key(sc);
            v.klen = bcell_klen(sc);
            v.size = BRANCH_CELL_HDR + v.klen;
        }
        node_put_cell(lw, n + j, &v, leaf);
    }
    if ((rc = pager_free(txn, rno)) != BS_OK)
        return rc;
    node_remove(par, a + 1, 0);
    return BS_OK;
}

/* Move cells between children a and a+1 of par so that both are about equally full. Leaves
 * them alone when the new separator would not fit par. */
static int bt_redistribute(bs_txn *txn, uint8_t *par, unsigned a, int leaf)
{
    uint32_t P = PSIZE(txn), cap = P - PH_SIZE;
    uint64_t lno, rno, np;
    const uint8_t *lp, *rp;
    uint8_t *lw, *rw, *lb = malloc(P), *rb = malloc(P), *sb = malloc(fmt_max_key(P));
    vcell *v = malloc((2 * (cap / (2 + LEAF_CELL_HDR)) + 2) * sizeof *v);
    int rc = BS_OK, type = leaf ? PT_LEAF : PT_BRANCH;
    if (!lb || !rb || !sb || !v) {
        rc = bs_fail(BS_NOMEM, "out of memory rebalancing");
        goto out;
    }
    if ((rc = bt_child(txn, par, pg_pgno(par), a, type, &RNG_ALL, &lno, &lp)) != BS_OK ||
        (rc = bt_child(txn, par, pg_pgno(par), a + 1, type, &RNG_ALL, &rno, &rp)) != BS_OK)
        goto out;
    memcpy(lb, lp, P);
    memcpy(rb, rp, P);
    const uint8_t *sc = node_cell(par, a + 1);
    uint32_t oldk = bcell_klen(sc);
    if (oldk)
        memcpy(sb, bcell_key(sc), oldk);
    unsigned nl = pg_nkeys(lb), nr = pg_nkeys(rb), m = 0;
    for (unsigned j = 0; j < nl; j++)
        v[m++] = vcell_of(lb, j, leaf);
    for (unsigned j = 0; j < nr; j++) {
        v[m] = vcell_of(rb, j, leaf);
        if (!leaf && j == 0) {
            v[m].p = sb;
            v[m].klen = oldk;
            v[m].size = BRANCH_CELL_HDR + oldk;
        }
        m++;
    }
    unsigned k = choose_split(v, m, leaf, cap, 0, nl);
    if (k == nl)
        goto out;
    const uint8_t *sp = vcell_key(&v[k], leaf);
    size_t sl = v[k].klen;
    if (leaf)
        sl = sep_len(vcell_key(&v[k - 1], 1), v[k - 1].klen, sp, sl);
    if (sl > oldk && node_gap(par) + pg_frag(par) + oldk < sl)
        goto out; /* the parent has no room for a longer separator */
    if ((rc = pager_write(txn, lno, &lw, &np)) != BS_OK)
        goto out;
    if (BS_UNLIKELY(np == rno)) { /* hostile files: the sibling came back from the freelist */
        rc = pager_freelist_damaged(txn, np, "is the sibling being rebalanced");
        goto out;
    }
    if (np != lno)
        bcell_set_child(par + node_slot(par, a), np, txn->txid);
    if ((rc = pager_write(txn, rno, &rw, &np)) != BS_OK)
        goto out;
    node_build(lw, P, leaf, v, k);
    node_build(rw, P, leaf, v + k, m - k);
    node_remove(par, a + 1, 0);
    if (node_gap(par) < BRANCH_CELL_HDR + sl + 2 && (rc = node_compact_alloc(par, P, 0)) != BS_OK)
        goto out;
    vcell nc = {sp, np, txn->txid, (uint32_t)sl, (uint32_t)(BRANCH_CELL_HDR + sl)};
    node_put_cell(par, a + 1, &nc, 0);
out:
    free(lb);
    free(rb);
    free(sb);
    free(v);
    return rc;
}

/* Child i of par is underfull: merge it with a neighbour when they fit one page, else even
 * it out with the fuller neighbour. *next: the child index to look at next. */
static int bt_fix(bs_txn *txn, uint8_t *par, unsigned i, int leaf, unsigned *next)
{
    uint32_t P = PSIZE(txn), cap = P - PH_SIZE;
    unsigned n = pg_nkeys(par);
    int type = leaf ? PT_LEAF : PT_BRANCH, rc;
    const uint8_t *pg;
    uint64_t uc, ul = 0, ur = 0, cno, ppg = pg_pgno(par);
    if ((rc = bt_child(txn, par, ppg, i, type, &RNG_ALL, &cno, &pg)) != BS_OK)
        return rc;
    uc = node_used(pg, P);
    if (i > 0) {
        if ((rc = bt_child(txn, par, ppg, i - 1, type, &RNG_ALL, &cno, &pg)) != BS_OK)
            return rc;
        ul = node_used(pg, P);
        if (ul + uc + (leaf ? 0 : bcell_klen(node_cell(par, i))) <= cap) {
            *next = i - 1;
            return bt_merge(txn, par, i - 1, leaf);
        }
    }
    if (i + 1 < n) {
        if ((rc = bt_child(txn, par, ppg, i + 1, type, &RNG_ALL, &cno, &pg)) != BS_OK)
            return rc;
        ur = node_used(pg, P);
        if (uc + ur + (leaf ? 0 : bcell_klen(node_cell(par, i + 1))) <= cap) {
            *next = i;
            return bt_merge(txn, par, i, leaf);
        }
    }
    *next = i + 1;
    return bt_redistribute(txn, par, (i + 1 < n && (i == 0 || ur >= ul)) ? i : i - 1, leaf);
}

/* Post-order over the pages this txn owns below the writable branch pg at level L. */
static int bt_rebal(bs_txn *txn, bs_tree *t, uint8_t *pg, unsigned L)
{
    uint32_t P = PSIZE(txn);
    int cleaf = L + 2 == t->depth, rc;
    if (!cleaf) {
        for (unsigned i = 0; i < pg_nkeys(pg); i++) {
            uint8_t *cell = pg + node_slot(pg, i), *cp;
            uint64_t child = bcell_child(cell), np;
            if (!pager_owned(txn, child))
                continue;
            if ((rc = pager_write(txn, child, &cp, &np)) != BS_OK)
                return rc;
            if (np != child)
                bcell_set_child(cell, np, txn->txid);
            if ((rc = bt_rebal(txn, t, cp, L + 1)) != BS_OK)
                return rc;
        }
    }
    for (unsigned i = 0; i < pg_nkeys(pg) && pg_nkeys(pg) > 1;) {
        uint64_t child = node_child(pg, i);
        const uint8_t *cp;
        if (!pager_owned(txn, child)) {
            i++;
            continue;
        }
        if ((rc = bt_child(txn, pg, pg_pgno(pg), i, cleaf ? PT_LEAF : PT_BRANCH, &RNG_ALL, &child,
                           &cp)) != BS_OK)
            return rc;
        if (node_used(cp, P) >= node_thresh(P)) {
            i++;
            continue;
        }
        if ((rc = bt_fix(txn, pg, i, cleaf, &i)) != BS_OK)
            return rc;
    }
    return BS_OK;
}

int btree_rebalance(bs_txn *txn, bs_tree *t)
{
    int rc;
    if (!t->needs_rebalance)
        return BS_OK;
    if (t->root && t->depth > 1) {
        const uint8_t *pg;
        if (t->depth > BS_MAX_DEPTH)
            return bad_depth(t);
        if (pager_owned(txn, t->root)) {
            uint8_t *wp;
            uint64_t np;
            if ((rc = pager_write(txn, t->root, &wp, &np)) != BS_OK)
                return rc;
            if (np != t->root) {
                t->root = np;
                t->root_txid = txn->txid;
            }
            if ((rc = bt_rebal(txn, t, wp, 0)) != BS_OK)
                return rc;
        }
        while (t->depth > 1) {
            if ((rc = bt_root(txn, t, PT_BRANCH, &pg)) != BS_OK)
                return rc;
            if (pg_nkeys(pg) != 1)
                break;
            uint64_t child = node_child(pg, 0), ctx = bcell_txid(node_cell(pg, 0));
            if ((rc = pager_free(txn, t->root)) != BS_OK)
                return rc;
            t->root = child;
            t->root_txid = ctx;
            t->depth--;
        }
    }
    t->needs_rebalance = false;
    t->dirty = true;
    txn->mod_seq++;
    return BS_OK;
}

/* ------------------------------------------------------------------ drop */

/* Dropping a tree first collects every page it owns (nodes and overflow runs) and checks
 * that none is listed twice, so that a corrupt tree (a cycle, a shared page) is reported
 * before anything is freed instead of freeing a page twice. */
typedef struct bt_ext {
    uint64_t pgno, n;   /* first page, pages */
    uint32_t vlen;      /* overflow run: value length */
    bool ov;
} bt_ext;

typedef struct bt_exts {
    bt_ext *v;
    size_t n, cap;
    uint64_t pages, limit;
    uint8_t *lvl[BS_MAX_DEPTH]; /* copies of the branch pages on the current path */
    unsigned since_epoch;       /* pages read since the last epoch re-entry */
} bt_exts;

#define BT_EPOCH 64u /* pages between two epoch re-entries of the walk */

static int ext_add(bt_exts *e, uint64_t pgno, uint64_t n, uint32_t vlen, bool ov)
{
    int rc = bs_grow(&e->v, &e->cap, e->n + 1, sizeof *e->v, 256, "the pages of a dropped tree");
    if (rc)
        return rc;
    e->v[e->n++] = (bt_ext){pgno, n, vlen, ov};
    e->pages += n;
    if (e->pages > e->limit)
        return bs_fail(BS_CORRUPT, "page %llu: tree has more pages than the file (cycle?)",
                       ULL(pgno));
    return BS_OK;
}

static int ext_cmp(const void *a, const void *b)
{
    uint64_t x = ((const bt_ext *)a)->pgno, y = ((const bt_ext *)b)->pgno;
    return x < y ? -1 : x > y;
}

/* The walk holds no pointer into the shared cache between two pages (branch pages are
 * copied into e->lvl before their children are read), so it leaves and re-enters the cache
 * epoch every BT_EPOCH pages: the frames a long drop evicts are freed as it goes, and its
 * memory stays within the cache size (dirty pages of this txn are not cache frames). */
static int bt_collect(bs_txn *txn, bt_exts *e, uint64_t pgno, uint64_t txid, uint64_t from,
                      unsigned L, unsigned D)
{
    const uint8_t *pg;
    int leaf = L + 1 == D, rc;
    if (++e->since_epoch >= BT_EPOCH) {
        e->since_epoch = 0;
        pager_leave(txn);
        pager_enter(txn);
    }
    if ((rc = pager_get_ref(txn, pgno, leaf ? PT_LEAF : PT_BRANCH, txid, from, &pg)) != BS_OK ||
        (rc = ext_add(e, pgno, 1, 0, false)) != BS_OK)
        return rc;
    if (!leaf) {
        if (!e->lvl[L] && !(e->lvl[L] = malloc(PSIZE(txn))))
            return bs_fail(BS_NOMEM, "out of memory dropping a tree");
        memcpy(e->lvl[L], pg, PSIZE(txn));
        pg = e->lvl[L];
    }
    unsigned n = pg_nkeys(pg);
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *c = node_cell(pg, i);
        if (leaf) {
            if ((lcell_flags(c) & LEAF_F_OVERFLOW) &&
                (rc = ext_add(e, lcell_ovpgno(c), fmt_overflow_pages(PSIZE(txn), lcell_vlen(c)),
                              lcell_vlen(c), true)) != BS_OK)
                return rc;
        } else if ((rc = bt_collect(txn, e, bcell_child(c), bcell_txid(c), pgno, L + 1, D)) !=
                   BS_OK) {
            return rc;
        }
    }
    return BS_OK;
}

int btree_free_all(bs_txn *txn, bs_tree *t)
{
    bt_exts e;
    memset(&e, 0, sizeof e);
    e.limit = txn->page_count;
    int rc = BS_OK;
    if (t->root) {
        if (t->depth == 0 || t->depth > BS_MAX_DEPTH)
            return bad_depth(t);
        if ((rc = bt_collect(txn, &e, t->root, t->root_txid, PAGER_FROM_RECORD, 0, t->depth)) !=
            BS_OK)
            goto out;
        if (e.n)
            qsort(e.v, e.n, sizeof *e.v, ext_cmp);
        for (size_t i = 1; i < e.n; i++) {
            if (e.v[i - 1].pgno + e.v[i - 1].n > e.v[i].pgno) {
                rc = bs_fail(BS_CORRUPT, "page %llu is used twice in the tree at page %llu",
                             ULL(e.v[i].pgno), ULL(t->root));
                goto out;
            }
        }
        for (size_t i = 0; i < e.n; i++) {
            rc = e.v[i].ov ? pager_ov_free(txn, e.v[i].pgno, e.v[i].vlen)
                           : pager_free(txn, e.v[i].pgno);
            if (rc != BS_OK)
                goto out;
        }
    }
    t->root = 0;
    t->root_txid = 0;
    t->depth = 0;
    t->count = 0;
    t->dirty = true;
    t->needs_rebalance = false;
    txn->mod_seq++;
out:
    free(e.v);
    for (unsigned i = 0; i < BS_MAX_DEPTH; i++)
        free(e.lvl[i]);
    return rc;
}

/* ------------------------------------------------------------------ cursors
 * The stack holds (pgno, idx) per level; every call re-fetches the pages it needs. Work is
 * done on a copy of the cursor and stored back only on success, so an error (BS_WOULDBLOCK)
 * leaves the cursor where it was. */

static inline int cur_fetch(bs_cursor *c, int L, const uint8_t **pg)
{
    return pager_get_ref(c->txn, c->stack[L].pgno, L + 1 == c->depth ? PT_LEAF : PT_BRANCH,
                         c->stack[L].txid, L ? c->stack[L - 1].pgno : PAGER_FROM_RECORD, pg);
}

/* Only the root may be an empty leaf (a branch always has a child). Refusing one below the
 * root also bounds a walk over a hostile file: every leaf a cursor passes then holds a key,
 * keys must grow from leaf to leaf, so no page is visited twice, however many pointers a
 * crafted tree aims at it. */
static int cur_empty(bs_cursor *c, int L)
{
    return bs_fail(BS_CORRUPT, "page %llu: empty page below the root of the tree at page %llu",
                   ULL(c->stack[L].pgno), ULL(c->stack[0].pgno));
}

/* point level L + 1 of the stack at child idx of the branch pg at level L, fetch it and check
 * it against the separators around it in pg */
static int cur_child(bs_cursor *c, int L, const uint8_t **pg, unsigned idx)
{
    const uint8_t *par = *pg, *cell = node_cell(par, idx);
    bt_rng r = RNG_ALL;
    int rc;
    c->stack[L + 1].pgno = bcell_child(cell);
    c->stack[L + 1].txid = bcell_txid(cell);
    if ((rc = cur_fetch(c, L + 1, pg)) != BS_OK)
        return rc;
    if (BS_UNLIKELY(!pg_nkeys(*pg)))
        return cur_empty(c, L + 1);
    rng_child(&r, par, idx);
    return rng_check(&r, *pg, c->stack[L + 1].pgno);
}

static int cur_badidx(bs_cursor *c, int L)
{
    return bs_fail(BS_CORRUPT, "page %llu: cursor position %d out of range",
                   ULL(c->stack[L].pgno), c->stack[L].idx);
}

/* From branch level L (page pg, stack[L].idx set), descend to the first (last = 0) or last
 * item of that child's subtree; *pg ends as the leaf. */
static int cur_down(bs_cursor *c, int L, const uint8_t **pg, int last)
{
    int rc;
    for (; L + 1 < c->depth; L++) {
        int idx = c->stack[L].idx;
        if (idx < 0 || idx >= pg_nkeys(*pg))
            return cur_badidx(c, L);
        if ((rc = cur_child(c, L, pg, (unsigned)idx)) != BS_OK)
            return rc;
        c->stack[L + 1].idx = last ? pg_nkeys(*pg) - 1 : 0;
    }
    return BS_OK;
}

/* Make the leaf position valid moving forward (idx past the end -> next leaves). */
static int cur_fwd(bs_cursor *c, const uint8_t **out)
{
    const uint8_t *pg;
    int D = c->depth, rc;
    const uint8_t *lk = NULL;
    size_t lkl = 0;
    if ((rc = cur_fetch(c, D - 1, &pg)) != BS_OK)
        return rc;
    while (c->stack[D - 1].idx >= pg_nkeys(pg)) {
        int L = D - 2;
        if (pg_nkeys(pg)) {
            const uint8_t *lc = node_cell(pg, pg_nkeys(pg) - 1u);
            lk = lcell_key(lc);
            lkl = lcell_klen(lc);
        }
        for (; L >= 0; L--) {
            if ((rc = cur_fetch(c, L, &pg)) != BS_OK)
                return rc;
            if (c->stack[L].idx + 1 < pg_nkeys(pg))
                break;
        }
        if (L < 0)
            return BS_NOTFOUND;
        c->stack[L].idx++;
        if ((rc = cur_down(c, L, &pg, 0)) != BS_OK)
            return rc;
    }
    if (c->stack[D - 1].idx < 0)
        return cur_badidx(c, D - 1);
    if (lk) { /* keys must grow across leaves: this also ends cycles in a corrupt tree */
        const uint8_t *nc = node_cell(pg, (unsigned)c->stack[D - 1].idx);
        if (key_cmp(lcell_key(nc), lcell_klen(nc), lk, lkl) <= 0)
            return bs_fail(BS_CORRUPT, "page %llu: keys out of order across leaves",
                           ULL(c->stack[D - 1].pgno));
    }
    *out = pg;
    return BS_OK;
}

/* Same moving backward (idx -1 -> previous leaves). */
static int cur_bwd(bs_cursor *c, const uint8_t **out)
{
    const uint8_t *pg;
    int D = c->depth, rc;
    if ((rc = cur_fetch(c, D - 1, &pg)) != BS_OK)
        return rc;
    const uint8_t *lk = NULL;
    size_t lkl = 0;
    if (c->stack[D - 1].idx >= pg_nkeys(pg))
        return cur_badidx(c, D - 1);
    while (c->stack[D - 1].idx < 0) {
        int L = D - 2;
        if (pg_nkeys(pg)) {
            const uint8_t *lc = node_cell(pg, 0);
            lk = lcell_key(lc);
            lkl = lcell_klen(lc);
        }
        for (; L >= 0; L--) {
            if ((rc = cur_fetch(c, L, &pg)) != BS_OK)
                return rc;
            if (c->stack[L].idx > 0)
                break;
        }
        if (L < 0)
            return BS_NOTFOUND;
        c->stack[L].idx--;
        if ((rc = cur_down(c, L, &pg, 1)) != BS_OK)
            return rc;
    }
    if (lk) {
        const uint8_t *nc = node_cell(pg, (unsigned)c->stack[D - 1].idx);
        if (key_cmp(lcell_key(nc), lcell_klen(nc), lk, lkl) >= 0)
            return bs_fail(BS_CORRUPT, "page %llu: keys out of order across leaves",
                           ULL(c->stack[D - 1].pgno));
    }
    *out = pg;
    return BS_OK;
}

/* Position c by op; *pg = the leaf. *exact: GE/LE landed on key itself. */
static int cur_seek(bs_cursor *c, int op, const uint8_t *key, size_t klen, const uint8_t **out,
                    int *exact)
{
    const bs_tree *t = c->tree;
    const uint8_t *pg = NULL, *par = NULL;
    uint64_t pgno = t->root, txid = t->root_txid;
    bt_rng r = RNG_ALL;
    int rc, D = (int)t->depth;
    *exact = 0;
    if (!pgno)
        return BS_NOTFOUND;
    if (D == 0 || D > BS_MAX_DEPTH)
        return bad_depth(t);
    c->depth = D;
    for (int L = 0; L < D; L++) {
        c->stack[L].pgno = pgno;
        c->stack[L].txid = txid;
        if ((rc = cur_fetch(c, L, &pg)) != BS_OK)
            return rc;
        if (par) {
            if (BS_UNLIKELY(!pg_nkeys(pg)))
                return cur_empty(c, L);
            rng_child(&r, par, (unsigned)c->stack[L - 1].idx);
            if ((rc = rng_check(&r, pg, pgno)) != BS_OK)
                return rc;
        }
        int n = pg_nkeys(pg), i;
        if (L + 1 < D) {
            i = op == BS_SEEK_FIRST ? 0 : op == BS_SEEK_LAST ? n - 1 : (int)branch_search(pg, key, klen);
            pgno = node_child(pg, (unsigned)i);
            txid = bcell_txid(node_cell(pg, (unsigned)i));
            par = pg;
        } else if (op == BS_SEEK_FIRST) {
            i = 0;
        } else if (op == BS_SEEK_LAST) {
            i = n - 1;
        } else {
            i = (int)leaf_search(pg, key, klen, exact);
            if (op == BS_SEEK_LE && !*exact)
                i--;
        }
        c->stack[L].idx = i;
    }
    if (op == BS_SEEK_FIRST || op == BS_SEEK_GE)
        return cur_fwd(c, out);
    return cur_bwd(c, out);
}

static int cur_savekey(bs_cursor *cur, const uint8_t *k, size_t klen)
{
    if (klen > cur->kcap) {
        size_t cap = klen < 64 ? 64 : klen;
        uint8_t *nb = realloc(cur->kbuf, cap);
        if (!nb)
            return bs_fail(BS_NOMEM, "out of memory for a cursor key");
        cur->kbuf = nb;
        cur->kcap = cap;
    }
    if (klen)
        memcpy(cur->kbuf, k, klen);
    cur->klen = klen;
    return BS_OK;
}

/* Store the work copy c (positioned on leaf pg) into cur. */
static int cur_store(bs_cursor *cur, const bs_cursor *c, const uint8_t *pg)
{
    int rc;
    if (cur->txn->write) {
        const uint8_t *cell = node_cell(pg, (unsigned)c->stack[c->depth - 1].idx);
        if ((rc = cur_savekey(cur, lcell_key(cell), lcell_klen(cell))) != BS_OK)
            return rc;
    }
    cur->depth = c->depth;
    memcpy(cur->stack, c->stack, sizeof cur->stack[0] * (size_t)c->depth);
    cur->valid = true;
    cur->mod_seq = cur->txn->mod_seq;
    return BS_OK;
}

int btree_cursor_seek(bs_cursor *cur, int op, const uint8_t *key, size_t klen)
{
    bs_cursor c;
    const uint8_t *pg;
    int exact, rc;
    if (op < BS_SEEK_GE || op > BS_SEEK_LAST)
        return bs_fail(BS_MISUSE, "bad cursor seek op %d", op);
    c.txn = cur->txn;
    c.tree = cur->tree;
    rc = cur_seek(&c, op, key, klen, &pg, &exact);
    if (rc == BS_NOTFOUND)
        cur->valid = false;
    if (rc != BS_OK)
        return rc;
    return cur_store(cur, &c, pg);
}

/* The tree changed since cur was positioned: re-seek relative to the saved key.
 * dir > 0: first key > saved; dir < 0: last key < saved; dir == 0: first key >= saved. */
static int cur_reseek(bs_cursor *cur, int dir)
{
    bs_cursor c;
    const uint8_t *pg;
    int exact, rc;
    c.txn = cur->txn;
    c.tree = cur->tree;
    rc = cur_seek(&c, dir >= 0 ? BS_SEEK_GE : BS_SEEK_LE, cur->kbuf, cur->klen, &pg, &exact);
    if (rc == BS_OK && exact && dir) {
        c.stack[c.depth - 1].idx += dir;
        rc = dir > 0 ? cur_fwd(&c, &pg) : cur_bwd(&c, &pg);
    }
    if (rc == BS_NOTFOUND)
        cur->valid = false;
    if (rc != BS_OK)
        return rc;
    return cur_store(cur, &c, pg);
}

int btree_cursor_step(bs_cursor *cur, int dir)
{
    const uint8_t *pg;
    int rc;
    if (!cur->valid)
        return BS_NOTFOUND;
    if (cur->txn->write && cur->mod_seq != cur->txn->mod_seq)
        return cur_reseek(cur, dir > 0 ? 1 : -1);
    int L = cur->depth - 1, idx = cur->stack[L].idx + (dir > 0 ? 1 : -1);
    if ((rc = cur_fetch(cur, L, &pg)) != BS_OK)
        return rc;
    if (BS_LIKELY(idx >= 0 && idx < pg_nkeys(pg))) {
        if (cur->txn->write) {
            const uint8_t *cell = node_cell(pg, (unsigned)idx);
            if ((rc = cur_savekey(cur, lcell_key(cell), lcell_klen(cell))) != BS_OK)
                return rc;
        }
        cur->stack[L].idx = idx;
        return BS_OK;
    }
    bs_cursor c;
    c.txn = cur->txn;
    c.tree = cur->tree;
    c.depth = cur->depth;
    memcpy(c.stack, cur->stack, sizeof c.stack[0] * (size_t)c.depth);
    c.stack[L].idx = idx;
    rc = dir > 0 ? cur_fwd(&c, &pg) : cur_bwd(&c, &pg);
    if (rc == BS_NOTFOUND)
        cur->valid = false;
    if (rc != BS_OK)
        return rc;
    return cur_store(cur, &c, pg);
}

int btree_cursor_current(bs_cursor *cur, bs_val *key, bs_val *val)
{
    const uint8_t *pg;
    int rc;
    if (!cur->valid)
        return BS_NOTFOUND;
    if (cur->txn->write && cur->mod_seq != cur->txn->mod_seq &&
        (rc = cur_reseek(cur, 0)) != BS_OK)
        return rc;
    int L = cur->depth - 1, idx = cur->stack[L].idx;
    if ((rc = cur_fetch(cur, L, &pg)) != BS_OK)
        return rc;
    if (idx < 0 || idx >= pg_nkeys(pg))
        return cur_badidx(cur, L);
    const uint8_t *c = node_cell(pg, (unsigned)idx);
    key->data = lcell_key(c);
    key->len = lcell_klen(c);
    key->ovpgno = 0;
    cell_value(c, val);
    return BS_OK;
}
