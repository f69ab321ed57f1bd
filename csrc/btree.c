/*
 * btree.c - copy-on-write B+tree over the slotted branch/leaf pages of format.h: lookup,
 * insert/replace with splits, delete with eager removal of empty pages, deferred rebalance at
 * commit, dropping a whole tree, cursors, and the bounds check of node pages read from disk.
 *
 * Layer: calls pager.c (pager_get/write/new/free/owned, pager_ov_*; inline from internal.h:
 * pager_get_mine, pager_mine and the range-check marks pager_vouch*) and util.c (bs_fail).
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
 * Fill (B*-style, bt_spread): a node that overflows first gives cells to a neighbour under
 * the same parent that has room (left, then right), and when both are full it and a
 * neighbour become three nodes about 2/3 full; only an append at the right edge of the tree
 * (sequential inserts) or a node without a usable neighbour splits in two, the append one
 * with the left node full. Random inserts so leave leaves ~85% full instead of ~69%.
 *
 * Writes are top-down copy-on-write: put/del first descend with pager_get only (the one place
 * BS_WOULDBLOCK can come from; a neighbour that bt_spread would need I/O for in no-I/O mode is
 * passed over instead), then make the path writable with pager_write, repointing the
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

/* below this many used bytes a non-root node is underfull: the commit's rebalance merges it
 * with a neighbour, or evens the two out when they do not fit one page */
static inline uint32_t node_thresh(uint32_t P) { return (P - PH_SIZE) / 4; }

/* below this many (half full) the commit's rebalance merges a node with a neighbour when the
 * two fit one page, and otherwise leaves it alone: deleting half the keys does not leave the
 * tree twice the size of a fresh load */
static inline uint32_t node_merge_thresh(uint32_t P) { return (P - PH_SIZE) / 2; }

static inline uint64_t node_child(const uint8_t *pg, unsigned i)
{
    return bcell_child(node_cell(pg, i));
}

/* (Prefetches: BS_PREFETCH, internal.h. gcc 12 -O2 deleted the calls of the search_prefetch
 * this file had, an inline function whose only effect was __builtin_prefetch: no prefetch
 * instruction was in the binary. Making that one real, the two cells the next step of a
 * binary search may probe, was measured and not kept: bench/PROFILE.md, session 21.) */

/* A leaf a write (bt_descend) or a read (btree_get) is about to search is seldom in any CPU
 * cache (a random put, delete or get at 1M records goes to one of ~37k leaves, 150 MB): the
 * binary search would wait for its ~5 cells one after the other, each a trip to memory. So
 * once the page is known, start loading the line of every cell's key at once (the slot array
 * first: it says where they are). Only for leaves of at most LEAF_PREFETCH_MAX cells (4 KiB
 * pages with keys of 16 bytes and values of 100 hold ~30); a prefetch never faults, whatever
 * the bytes say. */
#define LEAF_PREFETCH_MAX 48u
#define LEAF_PREFETCH(pg)                                                                    \
    do {                                                                                     \
        unsigned n_ = pg_nkeys(pg);                                                          \
        if (n_ <= LEAF_PREFETCH_MAX) {                                                       \
            BS_PREFETCH((pg) + 64);                                                          \
            for (unsigned i_ = 0; i_ < n_; i_++)                                             \
                BS_PREFETCH((pg) + node_slot((pg), i_) + LEAF_CELL_HDR);                     \
        }                                                                                    \
    } while (0)

/* leaf: first index whose key is >= key; *exact = 1 when equal */
static unsigned leaf_search(const uint8_t *pg, const uint8_t *key, size_t klen, int *exact)
{
    unsigned lo = 0, hi = pg_nkeys(pg);
    while (lo < hi) {
        unsigned mid = (lo + hi) >> 1;
        const uint8_t *c = node_cell(pg, mid);
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

/* Give the separator cell at slot j of the branch par the key (sp, sl) and the child: in
 * place when the key is not longer than the old one (its dropped tail counts as frag: a
 * shift or spread under a parent changes one separator each time, and a new cell for each
 * would fill the parent with dead bytes and compact it every few changes), else as a new
 * cell, compacting par first when the gap is short (tmp: P bytes, or NULL to allocate). The
 * caller checked that a longer key fits (gap + frag >= sl - old length); sp never points
 * into par. */
static int node_set_sep(uint8_t *par, uint32_t P, unsigned j, const uint8_t *sp, size_t sl,
                        uint64_t child, uint64_t txid, uint8_t *tmp)
{
    uint8_t *c = par + node_slot(par, j);
    uint32_t oldk = bcell_klen(c);
    if (sl <= oldk) {
        bcell_set_child(c, child, txid);
        put16(c + BC_KLEN, (uint16_t)sl);
        if (sl)
            memmove(c + BRANCH_CELL_HDR, sp, sl);
        pg_set_frag(par, pg_frag(par) + (oldk - (uint32_t)sl));
        return BS_OK;
    }
    node_remove(par, j, 0);
    if (node_gap(par) < BRANCH_CELL_HDR + sl + 2) {
        int rc = BS_OK;
        if (tmp)
            node_compact(par, P, 0, tmp);
        else if ((rc = node_compact_alloc(par, P, 0)) != BS_OK)
            return rc;
    }
    vcell c1 = {sp, child, txid, (uint32_t)sl, (uint32_t)(BRANCH_CELL_HDR + sl)};
    node_put_cell(par, j, &c1, 0);
    return BS_OK;
}

/* Rebuild a node's cells from a list (header type/pgno/txid kept), none of which may point
 * into pg itself. Branch cell 0 gets an empty key. */
static void node_build(uint8_t *pg, uint32_t P, int leaf, const vcell *v, unsigned n)
{
    uint32_t up = P;
    uint8_t *slot = pg + PH_SIZE;
    for (unsigned i = 0; i < n; i++, slot += 2) {
        if (leaf) {
            up -= v[i].size;
            memcpy(pg + up, v[i].p, v[i].size);
        } else {
            uint32_t kl = i ? v[i].klen : 0;
            up -= BRANCH_CELL_HDR + kl;
            uint8_t *c = pg + up;
            bcell_set_child(c, v[i].child, v[i].txid);
            put16(c + BC_KLEN, (uint16_t)kl);
            if (kl)
                memcpy(c + BRANCH_CELL_HDR, v[i].p, kl);
        }
        put16(slot, (uint16_t)up);
    }
    pg_set_nkeys(pg, (uint16_t)n);
    pg_set_upper(pg, up);
    pg_set_frag(pg, 0);
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

/* key_cmp(a, b) < 0, without a memcmp call for the common case of short keys that differ
 * within their first words: 8 bytes at a time as big-endian words, then key_cmp on the rest
 * (the verifier compares every neighbouring pair of a page it reads from disk). */
static inline int key_less(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x = get64(a + i), y = get64(b + i);
        if (x != y) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            x = __builtin_bswap64(x);
            y = __builtin_bswap64(y);
#endif
            return x < y;
        }
    }
    return key_cmp(a + i, alen - i, b + i, blen - i) < 0;
}

int btree_verify_page_full(const uint8_t *pg, uint32_t P, uint64_t page_count)
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
        if (pk && !key_less(pk, pkl, k, klen))
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

/* The common case of btree_verify_page in one pass and few instructions a cell: a leaf whose
 * cells are all inline (no overflow reference). True only for a page btree_verify_page_full
 * accepts; false for every page it rejects and for the ones this path does not handle (an
 * overflow cell, an empty leaf), which then go through btree_verify_page_full (which also
 * names what is wrong). Each check below is one of _full's, or several of them in one
 * compare:
 *  - off - upper <= P - 8 - upper (unsigned): off >= upper, off < P and a whole cell header
 *    inside the page (P - off >= LEAF_CELL_HDR);
 *  - klen | pad16 << 16 <= maxk: klen <= fmt_max_key and flags byte and pad byte both zero
 *    (an inline cell; maxk < 65536, so any nonzero flag or pad byte exceeds it);
 *  - klen + vlen <= fmt_max_cell - 2 - LEAF_CELL_HDR (64-bit sum: a vlen near 2^32 cannot
 *    wrap): fmt_value_inline;
 *  - LEAF_CELL_HDR + klen + vlen <= P - off: the cell inside the page;
 *  - key_cmp(previous key, key) < 0: strictly ascending (key_cmp compares 8 bytes at a time);
 *  - the sizes plus frag fill [upper, P) exactly (cells cannot overlap each other). */
static int leaf_verify_fast(const uint8_t *pg, uint32_t P)
{
    unsigned n = pg_nkeys(pg);
    uint32_t upper = pg_upper(pg), frag = pg_frag(pg);
    if (n == 0 || pg[PH_FLAGS] || PH_SIZE + 2u * n > upper || upper > P - LEAF_CELL_HDR ||
        frag > P - upper)
        return 0;
    const uint32_t room = P - LEAF_CELL_HDR - upper, maxk = fmt_max_key(P);
    const uint64_t maxkv = fmt_max_cell(P) - 2u - LEAF_CELL_HDR;
    const uint8_t *slots = pg + PH_SIZE, *pk = NULL;
    uint32_t pkl = 0;
    uint64_t sum = frag;
    for (unsigned i = 0; i < n; i++) {
        uint32_t off = get16(slots + 2u * i);
        if (off - upper > room)
            return 0;
        const uint8_t *c = pg + off;
        uint32_t klen = get16(c);
        uint64_t kv = (uint64_t)klen + get32(c + 4);
        if ((klen | (uint32_t)get16(c + 2) << 16) > maxk || kv > maxkv ||
            LEAF_CELL_HDR + kv > P - off)
            return 0;
        const uint8_t *k = c + LEAF_CELL_HDR;
        if (pk) {
            if (pkl >= 16 && klen >= 16) {
                uint64_t x0 = KEY_WORD(pk), y0 = KEY_WORD(k);
                if (x0 != y0) {
                    if (x0 > y0)
                        return 0;
                } else {
                    uint64_t x1 = KEY_WORD(pk + 8), y1 = KEY_WORD(k + 8);
                    if (x1 != y1) {
                        if (x1 > y1)
                            return 0;
                    } else if (key_cmp(pk + 16, pkl - 16, k + 16, klen - 16) >= 0)
                        return 0;
                }
            } else if (key_cmp(pk, pkl, k, klen) >= 0)
                return 0;
        }
        pk = k;
        pkl = klen;
        sum += LEAF_CELL_HDR + kv;
    }
    return sum == P - upper;
}

int btree_verify_page(const uint8_t *pg, uint32_t P, uint64_t page_count)
{
    if (pg_type(pg) == PT_LEAF && BS_LIKELY(leaf_verify_fast(pg, P)))
        return BS_OK;
    return btree_verify_page_full(pg, P, page_count);
}

/* ------------------------------------------------------------------ key ranges
 * A descent narrows the key range [lo, hi) at each level to the separators around the child
 * it takes, and checks the node it reaches against it: the node's smallest and largest key
 * (its own order was verified when it was read), so a node that another parent's separators
 * describe (a stale or misplaced page) is corrupt, not data. NULL bound = unbounded. */
typedef struct bt_rng {
    const uint8_t *lo, *hi;
    size_t lol, hil;
    bs_rng_key k;  /* where lo and hi lie (the memo's name for this range, pager_memo_hit) */
} bt_rng;

static const bt_rng RNG_ALL = {NULL, NULL, 0, 0, {BS_RNG_OPEN, BS_RNG_OPEN, 0}};

/* narrow r to child i of the branch pg, whose image id is id */
static inline void rng_child_id(bt_rng *r, const uint8_t *pg, unsigned i, uint64_t id)
{
    unsigned n = pg_nkeys(pg);
    if (i > 0) {
        const uint8_t *c = node_cell(pg, i);
        r->lo = bcell_key(c);
        r->lol = bcell_klen(c);
        r->k.lo = id;
        r->k.idx = (r->k.idx & 0xFFFF0000u) | i;
    }
    if (i + 1u < n) {
        const uint8_t *c = node_cell(pg, i + 1);
        r->hi = bcell_key(c);
        r->hil = bcell_klen(c);
        r->k.hi = id;
        r->k.idx = (r->k.idx & 0xFFFFu) | ((i + 1u) << 16);
    }
}

/* narrow r to child i of the branch pg */
static inline void rng_child(bt_rng *r, const uint8_t *pg, unsigned i)
{
    unsigned n = pg_nkeys(pg);
    rng_child_id(r, pg, i, (i > 0 || i + 1u < n) ? pager_image_id(pg) : 0);
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

/* node pg's keys lie in r: leaf keys in [lo, hi), branch separators in [lo, hi]
 *
 * Dirty pages of the write transaction (pager_vouched): once one passes this check it is
 * marked (pager_vouch), and the check is skipped for it from then on. That is safe because
 * after the check, only this file's own code changes the page and its ancestors' separators,
 * and every change it makes keeps "keys within the separators the parent gives" true when
 * the bytes it starts from were checked:
 *  - a leaf insert puts the key into the leaf the separators chose for it; a removal, an
 *    emptied child's separator removed, or a merge only widen or keep a node's range;
 *  - a split moves cells of a checked node into a new page (unmarked: checked when a descent
 *    first reaches it) and sends up a separator that lies between two of those cells;
 *  - what takes cells or separators from a page that was NOT checked at its place (the
 *    neighbour of bt_spread, the siblings of the commit's rebalance, read with bt_sibling:
 *    checked against the separators of their parent only, not marked at its edges)
 *    unmarks every node it rebuilds and the parent whose separators it changes, unless that
 *    page is itself marked: they are checked again on the next descent, as before.
 * A mark is kept in the frame, with the transaction's tag (internal.h, pager_mine): a page
 * becomes dirty unmarked (page_new; a copy made by pager_write; a spilled page read back by
 * dirty_reload, whose bytes come from the file), and a shared image never carries one. A
 * descent reaching one of our pages through a pointer this transaction did not write (a
 * hostile freelist handed out a page still in use) fails first, in pager_get_ref (the page's
 * txid is ours, the pointer's is older), so a mark is only ever used for a page reached
 * through our own pointers. The check itself is never skipped for a page read from disk or
 * the shared cache. */
static int rng_check(const bs_txn *txn, const bt_rng *r, const uint8_t *pg, uint64_t pgno)
{
    unsigned n = pg_nkeys(pg), first;
    int leaf = pg_type(pg) == PT_LEAF;
    const uint8_t *k;
    size_t kl;
    first = leaf ? 0 : 1;
    /* (not marked for an unbounded range: RNG_ALL also stands for "not checked here") */
    if (n <= first || (!r->lo && !r->hi) || pager_vouched(txn, pg))
        return BS_OK;
    /* checked against this very range before (the memo of its image): the same bytes */
    if (pager_memo_hit(pg, &r->k))
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
    pager_memo_set(pg, &r->k);
    pager_vouch(txn, pg);
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
    return rng_check(txn, r, *pg, *pgno);
}

/* bt_child for the descent of a write (bt_descend): our own dirty pages are found inline
 * (pager_get_mine) and a vouched one needs no range check (rng_check) */
static inline int bt_child_w(bs_txn *txn, const uint8_t *par, uint64_t ppgno, unsigned i,
                             int type, const bt_rng *r, uint64_t *pgno, const uint8_t **pg)
{
    const uint8_t *c = node_cell(par, i);
    *pgno = bcell_child(c);
    if (BS_LIKELY(pager_get_mine(txn, *pgno, type, bcell_txid(c), pg))) {
        if (pager_vouched(txn, *pg))
            return BS_OK;
        return rng_check(txn, r, *pg, *pgno);
    }
    return bt_child(txn, par, ppgno, i, type, r, pgno, pg);
}

/* A neighbour of a node, read through their parent par by what moves cells between siblings
 * (bt_spread, the commit's rebalance: bt_merge, bt_redistribute): checked as a descent checks
 * a child (rng_check), against the separators around child i in par, so that a crafted
 * sibling's cells outside them are CorruptionError, never moved into a node. At the parent's
 * edge (i = 0 or the last child) one bound lies in an ancestor this caller does not know: that
 * side is not checked here (the moved cells still keep their order against the other child's)
 * and the page is not left marked as checked at its place (pager_vouch). */
static int bt_sibling(bs_txn *txn, const uint8_t *par, uint64_t ppgno, unsigned i, int type,
                      uint64_t *pgno, const uint8_t **pg)
{
    bt_rng r = RNG_ALL;
    rng_child(&r, par, i);
    int edge = i == 0 || i + 1u >= pg_nkeys(par), rc;
    *pgno = node_child(par, i);
    if ((rc = pager_get_ref(txn, *pgno, type, bcell_txid(node_cell(par, i)), ppgno, pg)) !=
        BS_OK)
        return rc;
    if (!edge || pager_vouched(txn, *pg))
        return rng_check(txn, &r, *pg, *pgno);
    if ((rc = rng_check(txn, &r, *pg, *pgno)) == BS_OK && pager_vouched(txn, *pg))
        pager_unvouch(*pg);
    return rc;
}

/* the root page of t */
static inline int bt_root(bs_txn *txn, const bs_tree *t, int type, const uint8_t **pg)
{
    return pager_get_ref(txn, t->root, type, t->root_txid, PAGER_FROM_RECORD, pg);
}

/* ------------------------------------------------------------------ descent */

typedef struct bt_path {
    unsigned rm;                       /* levels [0, rm) are on the rightmost edge */
    int edge;                          /* all levels on it, the leaf slot past the last key */
    uint64_t pgno[BS_MAX_DEPTH];
    uint64_t from[BS_MAX_DEPTH];       /* pgno before bt_writable copied the page */
    unsigned idx[BS_MAX_DEPTH];        /* child index (branch) / slot (leaf) */
    const uint8_t *rp[BS_MAX_DEPTH];   /* read pointers from the descent */
    uint8_t *wp[BS_MAX_DEPTH];         /* writable pointers after bt_writable */
} bt_path;

static int bad_depth(const bs_tree *t)
{
    return bs_fail(BS_CORRUPT, "tree at page %llu: depth %u out of range", ULL(t->root),
                   t->depth);
}

/* The edge bias of a write descent (sequential inserts: every put lands past the last key):
 * while the previous write of the tree ended at the right edge (t->edge) and this descent is
 * still on it, each node's last key is compared first; at or past it, the answer is the one
 * the binary search would give (branch: the last child; leaf: slot n, or n - 1 when equal),
 * in one compare instead of ~log2(n). Otherwise the binary search runs as always, so the
 * hint never changes a result, only the order of the compares. */
static inline int edge_branch(const uint8_t *pg, const uint8_t *key, size_t klen, unsigned *i)
{
    unsigned n = pg_nkeys(pg);
    if (n < 2)
        return 0;
    const uint8_t *c = node_cell(pg, n - 1);
    if (key_cmp(c + BRANCH_CELL_HDR, bcell_klen(c), key, klen) > 0)
        return 0;
    *i = n - 1;
    return 1;
}

static inline int edge_leaf(const uint8_t *pg, const uint8_t *key, size_t klen, unsigned *i,
                            int *exact)
{
    unsigned n = pg_nkeys(pg);
    if (n == 0)
        return 0;
    const uint8_t *c = node_cell(pg, n - 1);
    int r = key_cmp(c + LEAF_CELL_HDR, lcell_klen(c), key, klen);
    if (r > 0)
        return 0;
    *exact = r == 0;
    *i = r == 0 ? n - 1 : n;
    return 1;
}

static int bt_descend(bs_txn *txn, const bs_tree *t, const uint8_t *key, size_t klen,
                      bt_path *p, int *exact)
{
    unsigned D = t->depth, L;
    uint64_t pgno = t->root;
    const uint8_t *pg;
    bt_rng r = RNG_ALL;
    int rc, edge = 1, bias = t->edge;
    if (BS_UNLIKELY(D == 0 || D > BS_MAX_DEPTH))
        return bad_depth(t);
    p->rm = 0;
    if (!pager_get_mine(txn, pgno, D > 1 ? PT_BRANCH : PT_LEAF, t->root_txid, &pg) &&
        (rc = bt_root(txn, t, D > 1 ? PT_BRANCH : PT_LEAF, &pg)) != BS_OK)
        return rc;
    for (L = 0; L + 1 < D; L++) {
        unsigned i;
        if (!(bias && edge && edge_branch(pg, key, klen, &i)))
            i = branch_search(pg, key, klen);
        p->pgno[L] = pgno;
        p->idx[L] = i;
        p->rp[L] = pg;
        if (edge && i + 1u == pg_nkeys(pg))
            p->rm = L + 1;
        else
            edge = 0;
        rng_child(&r, pg, i);
        if ((rc = bt_child_w(txn, pg, pgno, i, L + 2 < D ? PT_BRANCH : PT_LEAF, &r, &pgno,
                             &pg)) != BS_OK)
            return rc;
    }
    p->pgno[L] = pgno;
    p->rp[L] = pg;
    if (bias && edge && edge_leaf(pg, key, klen, &p->idx[L], exact)) {
        p->edge = p->idx[L] == pg_nkeys(pg);
        return BS_OK;
    }
    LEAF_PREFETCH(pg);
    p->idx[L] = leaf_search(pg, key, klen, exact);
    p->edge = edge && p->idx[L] == pg_nkeys(pg);
    return BS_OK;
}

/* Make levels [0, top] of the path writable, repointing parents / the root. */
static int bt_writable(bs_txn *txn, bs_tree *t, bt_path *p, unsigned top)
{
    int rc;
    for (unsigned L = 0; L <= top; L++) {
        uint64_t np;
        p->from[L] = p->pgno[L];
        if (pager_mine(txn, p->rp[L])) {
            /* what pager_write would return: this very image, in place (no lookup) */
            p->wp[L] = (uint8_t *)(uintptr_t)p->rp[L];
            continue;
        }
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
        /* an inline value fits its page (verified): 16 bits even if a foreign program rewrote
         * a page read in place from the mapping (map.h), so the caller's copy stays inside the
         * mapping's tail */
        out->len &= 0xFFFFu;
        out->data = lcell_val(c);
        out->ovpgno = out->ovtxid = 0;
    }
}

/* The descent of a read: committed pages read in place whose record vouches for them
 * (pager_get_mapped) and whose range check is memoized for this very range are taken
 * inline; any other page goes through pager_get_ref and rng_check, as in every descent. The
 * damaged flag of the mapping is looked at once, at the end (pager_get_mapped): whatever the
 * descent concluded from a page that turned to zeros becomes BS_IOERR. */
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
    const bs_mwin *w = pager_map_window(txn);
    const bs_mpage *mp = NULL;
    if (!w || !(mp = pager_get_mapped(txn, w, pgno, D > 1 ? PT_BRANCH : PT_LEAF, t->root_txid,
                                      &pg))) {
        if ((rc = bt_root(txn, t, D > 1 ? PT_BRANCH : PT_LEAF, &pg)) != BS_OK)
            goto out;
    }
    for (unsigned L = 1; L < D; L++) {
        unsigned i = branch_search(pg, key, klen);
        unsigned n = pg_nkeys(pg);
        uint64_t id = 0;
        if (i > 0 || i + 1u < n)
            id = mp ? mp->memo.image_id : pager_image_id(pg);
        rng_child_id(&r, pg, i, id);
        const uint8_t *c = node_cell(pg, i), *cp;
        uint64_t child = bcell_child(c), want = bcell_txid(c);
        int type = L + 1 < D ? PT_BRANCH : PT_LEAF;
        if (w && (mp = pager_get_mapped(txn, w, child, type, want, &cp)) != NULL) {
            if (BS_UNLIKELY(!pager_memo_hit_at(&mp->memo, &r.k)) &&
                (rc = rng_check(txn, &r, cp, child)) != BS_OK)
                goto out;
        } else if ((rc = pager_get_ref(txn, child, type, want, pgno, &cp)) != BS_OK ||
                   (rc = rng_check(txn, &r, cp, child)) != BS_OK) {
            goto out;
        }
        pg = cp;
        pgno = child;
    }
    LEAF_PREFETCH(pg);
    unsigned i = leaf_search(pg, key, klen, &exact);
    if (!exact) {
        rc = BS_NOTFOUND;
        goto out;
    }
    cell_value(node_cell(pg, i), out);
    rc = BS_OK;
out:
    /* (also for pages looked up by pager_get_ref: the leaf was searched after its lookup) */
    if (BS_UNLIKELY(txn->db->map != NULL) && rc != BS_WOULDBLOCK &&
        BS_UNLIKELY(atomic_load_explicit(&txn->db->map->damaged, memory_order_relaxed)))
        return pager_map_check(txn);
    return rc;
}

/* ------------------------------------------------------------------ batch hints */

/* A page a hint may look at without I/O and without trusting anything unverified: this write
 * transaction's dirty image of pgno held in memory, or (pgno not dirty) the committed page read
 * in place whose record says it was verified at txid, what the pointer expects. NULL in every
 * other case (then the hint stops). Reads no other memory and changes nothing (not even
 * txn->hits, which pager_get_mapped counts). */
static const uint8_t *hint_page(const bs_txn *txn, const bs_mwin *w, uint64_t pgno, int type,
                                uint64_t txid)
{
    if (pgno < BS_META_PAGES || pgno >= txn->page_count || !txid)
        return NULL;
    if (txn->write) {
        bs_frame *fr;
        if (dirty_get(&txn->dirty, pgno, &fr)) {
            if (!fr)
                return NULL; /* spilled: reading it back is I/O */
            const uint8_t *pg = cache_frame_data(fr);
            return pg_txid(pg) == txid && pg_type(pg) == type ? pg : NULL;
        }
    }
    if (!w || pgno >= w->npages)
        return NULL;
    const bs_mpage *mp = &w->meta[pgno];
    const uint8_t *pg = w->base + (pgno << w->shift);
    if (atomic_load_explicit(&mp->vtxid, memory_order_acquire) != txid || pg_txid(pg) != txid ||
        pg_type(pg) != type)
        return NULL;
    return pg;
}

/* The window a hint looks committed pages up in: the mapping's current one (a write
 * transaction's dirty pages are looked up first, in hint_page, as pager_get_ref does). */
static const bs_mwin *hint_window(const bs_txn *txn)
{
    bs_map *m = txn->db->map;
    return m ? atomic_load_explicit(&m->cur, memory_order_acquire) : NULL;
}

/* Stage 1: the leaf key would reach, through branch pages that hint_page accepts (no range
 * checks: a hint only needs pages safe to read, and a wrong leaf costs a wasted prefetch);
 * *pgno = 0 when the descent stopped. Then the first lines of what the real lookup of that
 * leaf will read first are requested: the dirty table's slot, the mapped page's record and
 * header. */
static void hint_descend(const bs_txn *txn, const bs_mwin *w, const bs_tree *t,
                         const uint8_t *key, size_t klen, uint64_t *pgno, uint64_t *txid)
{
    unsigned D = t->depth;
    uint64_t pn = t->root, tx = t->root_txid;
    *pgno = 0;
    if (!pn || D == 0 || D > BS_MAX_DEPTH)
        return;
    for (unsigned L = 1; L < D; L++) {
        const uint8_t *pg = hint_page(txn, w, pn, PT_BRANCH, tx);
        if (!pg)
            return;
        const uint8_t *c = node_cell(pg, branch_search(pg, key, klen));
        pn = bcell_child(c);
        tx = bcell_txid(c);
    }
    if (txn->write)
        dirty_prefetch(&txn->dirty, pn);
    if (w && pn < w->npages) {
        const uint8_t *pg = w->base + (pn << w->shift);
        BS_PREFETCH(&w->meta[pn]);
        BS_PREFETCH(pg);
        BS_PREFETCH(pg + 64);
    }
    *pgno = pn;
    *txid = tx;
}

void btree_hint(bs_txn *txn, const bs_tree *t, bs_hint *h, const uint8_t *key, size_t klen)
{
    const bs_mwin *w = hint_window(txn);
    /* stage 3, the leaf found two steps ago: its header is in cache by now; request every
     * cell's key line and the line below the cell area, where an insert puts its cell */
    if (h->pgno[1]) {
        const uint8_t *pg = hint_page(txn, w, h->pgno[1], PT_LEAF, h->txid[1]);
        if (pg) {
            LEAF_PREFETCH(pg);
            BS_PREFETCH(pg + pg_upper(pg) - 1);
        }
    }
    /* stage 2, the leaf found one step ago: the dirty table's slot is in cache by now; request
     * the dirty image's header, its slot array's second line and its own mark (pager_vouched) */
    if (h->pgno[0] && txn->write) {
        bs_frame *fr = dirty_frame(&txn->dirty, h->pgno[0]);
        if (fr) {
            const uint8_t *pg = cache_frame_data(fr);
            BS_PREFETCH(pg);
            BS_PREFETCH(pg + 64);
            BS_PREFETCH(&pager_memo_of(pg)->own);
        }
    }
    h->pgno[1] = h->pgno[0];
    h->txid[1] = h->txid[0];
    h->pgno[0] = 0;
    if (key)
        hint_descend(txn, w, t, key, klen, &h->pgno[0], &h->txid[0]);
}

/* ------------------------------------------------------------------ put */

/* Scratch memory of one insert that overflows a node (allocated on the first overflow). */
typedef struct bt_scr {
    uint8_t *buf, *sbuf;   /* copies of the full node and of its sibling */
    uint8_t *sepb[2];      /* separator keys going up (alternating: one may be nv's key) */
    uint8_t *pk;           /* the parent's separator pulled down between two branch nodes */
    vcell *v;              /* the cells being distributed */
    uint64_t *ps;          /* ps[j] = bytes (slots included) of v[0..j) */
} bt_scr;

/* one block for all of it, kept by the transaction for its next overflow (txn->bt_scratch,
 * freed with the transaction): a random fill overflows a leaf every few puts */
static int scr_alloc(bs_txn *txn, bt_scr *s, uint32_t P)
{
    size_t nv = 2 * ((P - PH_SIZE) / (2 + LEAF_CELL_HDR)) + 3, mk = fmt_max_key(P);
    size_t off_v = (2 * (size_t)P + 3 * mk + 15) & ~(size_t)15;
    size_t off_ps = off_v + nv * sizeof *s->v;
    uint8_t *b = txn->bt_scratch;
    if (!b && !(b = txn->bt_scratch = malloc(off_ps + (nv + 1) * sizeof *s->ps)))
        return bs_fail(BS_NOMEM, "out of memory splitting a page");
    s->buf = b;
    s->sbuf = b + P;
    s->sepb[0] = b + 2 * (size_t)P;
    s->sepb[1] = s->sepb[0] + mk;
    s->pk = s->sepb[1] + mk;
    s->v = (vcell *)(void *)(b + off_v);
    s->ps = (uint64_t *)(void *)(b + off_ps);
    return BS_OK;
}

void btree_txn_free(bs_txn *txn)
{
    free(txn->bt_scratch);
    txn->bt_scratch = NULL;
}

/* bytes of the node built from v[a..b): slots included, a branch node's first key dropped */
static inline uint64_t part_bytes(const bt_scr *s, unsigned a, unsigned b, int leaf)
{
    return s->ps[b] - s->ps[a] - (leaf ? 0 : s->v[a].klen);
}

/* first j in [lo, hi) with ps[j] >= x, or hi */
static unsigned ps_lower(const uint64_t *ps, unsigned lo, unsigned hi, uint64_t x)
{
    while (lo < hi) {
        unsigned mid = (lo + hi) >> 1;
        if (ps[mid] >= x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* The cut b in (a, m) that evens out nodes v[a..b) and v[b..m): *w = the larger of the two
 * (UINT64_MAX when neither near-even cut fits cap). */
static unsigned cut_two(const bt_scr *s, unsigned a, unsigned m, int leaf, uint64_t cap,
                        uint64_t *w)
{
    unsigned mid = ps_lower(s->ps, a + 1, m, (s->ps[a] + s->ps[m]) / 2), best = 0;
    *w = UINT64_MAX;
    for (unsigned b = mid > a + 1 ? mid - 1 : mid; b <= mid + 1 && b < m; b++) {
        uint64_t x = part_bytes(s, a, b, leaf), y = part_bytes(s, b, m, leaf);
        uint64_t big = x > y ? x : y;
        if (x <= cap && y <= cap && big < *w) {
            *w = big;
            best = b;
        }
    }
    return best;
}

/* Cut v[0..m) (prefix sums in s->ps) into k = 2 or 3 nodes of at most cap bytes each, about
 * even: cut[0] = 0 < cut[1] (< cut[2]) < m, cut[k] = m. 0 when no such cut is found. */
static int split_even(const bt_scr *s, unsigned m, int leaf, uint64_t cap, unsigned k,
                      unsigned *cut)
{
    uint64_t w, best = UINT64_MAX;
    cut[0] = 0;
    cut[k] = m;
    if (k == 2) {
        cut[1] = cut_two(s, 0, m, leaf, cap, &w);
        return w != UINT64_MAX;
    }
    if (m < 3)
        return 0;
    unsigned a0 = ps_lower(s->ps, 1, m - 1, s->ps[m] / 3);
    for (unsigned a = a0 > 2 ? a0 - 1 : 1; a <= a0 + 1 && a + 1 < m; a++) {
        uint64_t l = part_bytes(s, 0, a, leaf);
        if (l > cap)
            break;
        unsigned b = cut_two(s, a, m, leaf, cap, &w);
        if (w == UINT64_MAX)
            continue;
        w = w > l ? w : l;
        if (w < best) {
            best = w;
            cut[1] = a;
            cut[2] = b;
        }
    }
    return best != UINT64_MAX;
}

/* The separator that goes up for the node starting at cell v[j] (j > 0): a leaf's shortest
 * prefix between v[j-1] and v[j]; a branch node's first key (which the node drops). */
static void sep_of(const vcell *v, unsigned j, int leaf, const uint8_t **sp, size_t *sl)
{
    *sp = vcell_key(&v[j], leaf);
    *sl = v[j].klen;
    if (leaf)
        *sl = sep_len(vcell_key(&v[j - 1], 1), v[j - 1].klen, *sp, *sl);
}

/* B*-style overflow: node L of the path (writable, child ci of the writable parent at L-1)
 * has no room for nv at slot i. Rather than splitting it in two half-full nodes:
 *  - shift: when a neighbour (left first, then right) has room, even the cells of the two
 *    out so that both keep room (no new page; the separator between them changes);
 *  - 2 -> 3: when both neighbours are full, spread the node and its emptier neighbour over
 *    three nodes, each about 2/3 full (one new page; one separator changes, one is added).
 * A neighbour that would need I/O in no-I/O mode is left alone (this runs after the path was
 * changed, so it must not return BS_WOULDBLOCK). *how: 0 = nothing done (the caller splits
 * in two), 1 = done, 2 = done and *up must be inserted at slot *upi of level L-1. */
/* The shift of bt_spread between two leaves, done in place: the full leaf pg (child ci of
 * par) gives cells to its neighbour sib (child ci - 1 when right == 0, else ci + 1), which
 * keeps its own cells where they are; pg is rebuilt from a copy. *done = 0 when no even cut
 * exists (nothing changed). */
/* Make the neighbour sno of a path node writable (a copy when this txn does not own it):
 * its image in *sw and its page number (new when copied) in *np. A copy's number must not be
 * one on the path being copied (hostile freelist), and the parent's cell for it (right: at
 * ci + 1, else at ci - 1) is repointed; for the right neighbour, the branch child and txid
 * the caller keeps for it follow. */
static int bt_neighbour_writable(bs_txn *txn, const bt_path *p, unsigned D, uint8_t *par,
                                 unsigned ci, int right, uint64_t sno, uint8_t **sw,
                                 uint64_t *np, uint64_t *bchild, uint64_t *btxid)
{
    int rc = pager_write(txn, sno, sw, np);
    if (rc != BS_OK || *np == sno)
        return rc;
    for (unsigned M = 0; M < D; M++)
        if (BS_UNLIKELY(p->pgno[M] == *np))
            return pager_freelist_damaged(txn, *np, "is in use on the path being copied");
    bcell_set_child(par + node_slot(par, right ? ci + 1 : ci - 1), *np, txn->txid);
    if (right) {
        *bchild = *np;
        *btxid = txn->txid;
    }
    return BS_OK;
}

static int bt_shift_leaf(bs_txn *txn, bs_tree *t, bt_path *p, unsigned L, unsigned i,
                         const vcell *nv, bt_scr *s, int right, uint64_t sno,
                         const uint8_t *sib, int *done)
{
    uint32_t P = PSIZE(txn), cap = P - PH_SIZE;
    uint8_t *par = p->wp[L - 1], *pg = p->wp[L];
    unsigned ci = p->idx[L - 1], n = pg_nkeys(pg), m = 0, D = t->depth;
    uint64_t us = node_used(sib, P);
    int rc;
    *done = 0;
    memcpy(s->buf, pg, P);
    for (unsigned j = 0; j < n; j++) {
        if (j == i)
            s->v[m++] = *nv;
        s->v[m++] = vcell_of(s->buf, j, 1);
    }
    if (i == n)
        s->v[m++] = *nv;
    uint64_t *ps = s->ps;
    ps[0] = 0;
    for (unsigned j = 0; j < m; j++)
        ps[j + 1] = ps[j] + s->v[j].size + 2u;
    /* c: pg keeps v[c..m) (left: v[0..c) move) or v[0..c) (right: v[c..m) move); the bytes
     * of the left node grow with c, those of the right one shrink: find where they cross */
    uint64_t base_l = right ? 0 : us, base_r = right ? us : 0;
    unsigned lo = 1, hi = m;
    while (lo < hi) {
        unsigned mid = (lo + hi) >> 1;
        if (base_l + ps[mid] >= base_r + ps[m] - ps[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    unsigned c = 0;
    uint64_t best = UINT64_MAX;
    for (unsigned x = lo > 1 ? lo - 1 : lo; x <= lo && x < m; x++) {
        uint64_t l = base_l + ps[x], r = base_r + ps[m] - ps[x], w = l > r ? l : r;
        if (l <= cap && r <= cap && w < best) {
            best = w;
            c = x;
        }
    }
    if (!c)
        return BS_OK;
    const uint8_t *sp;
    size_t sl;
    sep_of(s->v, c, 1, &sp, &sl);
    unsigned a = right ? ci : ci - 1; /* the separator at a + 1 changes */
    const uint8_t *sc = node_cell(par, a + 1);
    uint32_t oldk = bcell_klen(sc);
    if (sl > oldk && node_gap(par) + pg_frag(par) < sl - oldk)
        return BS_OK;
    uint64_t bchild = bcell_child(sc), btxid = bcell_txid(sc);
    uint8_t *sw;
    uint64_t np;
    if ((rc = bt_neighbour_writable(txn, p, D, par, ci, right, sno, &sw, &np, &bchild,
                                    &btxid)) != BS_OK)
        return rc;
    /* the cells that move go to the neighbour's end (left) or front (right) */
    unsigned from = right ? c : 0, cnt = right ? m - c : c, sn = pg_nkeys(sw);
    uint64_t bytes = ps[from + cnt] - ps[from];
    if (node_gap(sw) < bytes)
        node_compact(sw, P, 1, s->sbuf);
    uint8_t *slots = sw + PH_SIZE;
    unsigned at = right ? 0 : sn;
    if (right)
        memmove(slots + 2 * cnt, slots, 2 * (size_t)sn);
    uint32_t up = pg_upper(sw);
    for (unsigned j = 0; j < cnt; j++) {
        const vcell *v = &s->v[from + j];
        up -= v->size;
        memcpy(sw + up, v->p, v->size);
        put16(slots + 2 * (at + j), (uint16_t)up);
    }
    pg_set_upper(sw, up);
    pg_set_nkeys(sw, (uint16_t)(sn + cnt));
    /* pg keeps the rest */
    node_build(pg, P, 1, s->v + (right ? 0 : c), m - cnt);
    /* the parent: the new separator for node a + 1 */
    if ((rc = node_set_sep(par, P, a + 1, sp, sl, bchild, btxid, s->sbuf)) != BS_OK)
        return rc;
    *done = 1;
    return BS_OK;
}

/* A shift must leave room for this many more cells like the new one in the two nodes: a
 * shift that evens out two nearly full nodes would be followed by another one at the next
 * insert (measured at 4096-byte pages, 126-byte cells, random order: 0 gives 148.6 bytes a
 * record and a shift every 4.5 puts, 2 gives 151.9 and one every 9 puts). */
#define BT_SHIFT_SLACK 2u

static int bt_spread(bs_txn *txn, bs_tree *t, bt_path *p, unsigned L, unsigned i,
                     const vcell *nv, bt_scr *s, int *sw, int *how, vcell *up, unsigned *upi)
{
    uint32_t P = PSIZE(txn), cap = P - PH_SIZE;
    int leaf = L + 1 == t->depth, type = leaf ? PT_LEAF : PT_BRANCH, rc;
    uint8_t *par = p->wp[L - 1], *pg = p->wp[L];
    unsigned ci = p->idx[L - 1], npar = pg_nkeys(par), D = t->depth;
    uint64_t ppg = p->pgno[L - 1];
    uint64_t cur = node_used(pg, P) + nv->size + 2u;
    const uint8_t *sib[2] = {NULL, NULL};
    uint64_t sno[2] = {0, 0}, sused[2] = {0, 0};
    int pick = -1, shift = 0;
    *how = 0;
    /* side 0: the left neighbour ci - 1, side 1: the right one ci + 1 */
    for (int side = 0; side < 2 && !shift; side++) {
        if (side == 0 ? ci == 0 : ci + 1 >= npar)
            continue;
        unsigned si = side ? ci + 1 : ci - 1;
        rc = bt_sibling(txn, par, ppg, si, type, &sno[side], &sib[side]);
        if (rc == BS_WOULDBLOCK) {
            sib[side] = NULL;
            continue;
        }
        if (rc != BS_OK)
            return rc;
        for (unsigned M = 0; M < D; M++) /* hostile files: a page listed twice */
            if (BS_UNLIKELY(sno[side] == p->pgno[M] || sno[side] == p->from[M]))
                return bs_fail(BS_CORRUPT, "page %llu: listed twice in its parent %llu",
                               ULL(sno[side]), ULL(ppg));
        sused[side] = node_used(sib[side], P) +
                      (leaf ? 0 : bcell_klen(node_cell(par, side ? ci + 1 : ci)));
        if (cur + sused[side] + BT_SHIFT_SLACK * (nv->size + 2u) <= 2u * (uint64_t)cap) {
            pick = side;
            shift = 1;
        } else if (pick < 0 || sused[side] < sused[pick] ||
                   (sused[side] == sused[pick] && pager_owned(txn, sno[side]))) {
            pick = side;
        }
    }
    if (pick < 0)
        return BS_OK;
    if (shift && leaf) {
        int done;
        if ((rc = bt_shift_leaf(txn, t, p, L, i, nv, s, pick, sno[pick], sib[pick], &done)) !=
            BS_OK)
            return rc;
        *how = done;
        return BS_OK;
    }
    /* the two nodes, left to right: a (child a of par) and a + 1 */
    unsigned a = pick ? ci : ci - 1;
    const uint8_t *sc = node_cell(par, a + 1);
    uint32_t oldk = bcell_klen(sc);
    uint64_t bchild = bcell_child(sc), btxid = bcell_txid(sc);
    memcpy(s->buf, pg, P);
    memcpy(s->sbuf, sib[pick], P);
    if (oldk)
        memcpy(s->pk, bcell_key(sc), oldk);
    const uint8_t *lp = pick ? s->buf : s->sbuf, *rp = pick ? s->sbuf : s->buf;
    unsigned m = 0, nl = pg_nkeys(lp), nr = pg_nkeys(rp);
    /* nv goes in at slot i of the full node: the left one when pick == 1 */
    unsigned ins = pick ? i : nl + i;
    for (unsigned j = 0; j < nl + nr; j++) {
        if (j == ins)
            s->v[m++] = *nv;
        if (j < nl) {
            s->v[m++] = vcell_of(lp, j, leaf);
        } else {
            s->v[m] = vcell_of(rp, j - nl, leaf);
            if (!leaf && j == nl) {
                s->v[m].p = s->pk;
                s->v[m].klen = oldk;
                s->v[m].size = BRANCH_CELL_HDR + oldk;
            }
            m++;
        }
    }
    if (ins == nl + nr)
        s->v[m++] = *nv;
    s->ps[0] = 0;
    for (unsigned j = 0; j < m; j++)
        s->ps[j + 1] = s->ps[j] + s->v[j].size + 2u;
    unsigned k = shift ? 2 : 3, cut[4] = {0, 0, 0, 0};
    if (!split_even(s, m, leaf, cap, k, cut))
        return BS_OK;
    /* the separator that replaces the one at a + 1 must fit the parent */
    const uint8_t *sp1, *sp2 = NULL;
    size_t sl1, sl2 = 0;
    sep_of(s->v, cut[1], leaf, &sp1, &sl1);
    if (sl1 > oldk && node_gap(par) + pg_frag(par) < sl1 - oldk)
        return BS_OK;
    if (k == 3)
        sep_of(s->v, cut[2], leaf, &sp2, &sl2);
    /* the neighbour becomes writable (a copy if this txn does not own it) */
    uint8_t *sw_pg, *npg = NULL;
    uint64_t np, nno = 0;
    if ((rc = bt_neighbour_writable(txn, p, D, par, ci, pick, sno[pick], &sw_pg, &np, &bchild,
                                    &btxid)) != BS_OK)
        return rc;
    if (k == 3) {
        if ((rc = pager_new(txn, type, &npg, &nno)) != BS_OK)
            return rc;
        for (unsigned M = 0; M < D; M++)
            if (BS_UNLIKELY(p->pgno[M] == nno || np == nno))
                return pager_freelist_damaged(txn, nno, "is in use on the path being copied");
    }
    uint8_t *lw = pick ? pg : sw_pg, *rw = pick ? sw_pg : pg;
    if (!pager_vouched(txn, sib[pick])) {
        /* cells and separators from a neighbour not checked at its place (rng_check) */
        pager_unvouch(lw);
        pager_unvouch(rw);
        pager_unvouch(par);
    }
    node_build(lw, P, leaf, s->v, cut[1]);
    node_build(rw, P, leaf, s->v + cut[1], cut[2] - cut[1]);
    if (k == 3)
        node_build(npg, P, leaf, s->v + cut[2], m - cut[2]);
    /* the parent: a new separator for node a + 1 */
    if ((rc = node_set_sep(par, P, a + 1, sp1, sl1, bchild, btxid, NULL)) != BS_OK)
        return rc;
    if (k == 3) {
        if (sl2)
            memcpy(s->sepb[*sw], sp2, sl2);
        *up = (vcell){s->sepb[*sw], nno, txn->txid, (uint32_t)sl2,
                      (uint32_t)(BRANCH_CELL_HDR + sl2)};
        *sw ^= 1;
        *upi = a + 2;
        *how = 2;
    } else {
        *how = 1;
    }
    return BS_OK;
}

/* Insert nv at slot i of level L of the path (writable), splitting up the path as needed. */
static int bt_insert(bs_txn *txn, bs_tree *t, bt_path *p, unsigned L, unsigned i, vcell nv)
{
    uint32_t P = PSIZE(txn), cap = P - PH_SIZE;
    bt_scr s;
    int rc = BS_OK, sw = 0, have = 0;
    memset(&s, 0, sizeof s);
    for (;;) {
        uint8_t *pg = p->wp[L];
        int leaf = L + 1 == t->depth;
        unsigned n = pg_nkeys(pg);
        uint32_t need = nv.size + 2;
        if (node_gap(pg) >= need) {
            node_put_cell(pg, i, &nv, leaf);
            break;
        }
        if (!have) {
            have = 1;
            if ((rc = scr_alloc(txn, &s, P)) != BS_OK)
                break;
        }
        if (node_gap(pg) + pg_frag(pg) >= need) {
            node_compact(pg, P, leaf, s.buf);
            node_put_cell(pg, i, &nv, leaf);
            break;
        }
        int append = p->rm >= L && i == n;
        if (L > 0 && !append) {
            int how = 0;
            vcell up = {NULL, 0, 0, 0, 0};
            unsigned upi = 0;
            if ((rc = bt_spread(txn, t, p, L, i, &nv, &s, &sw, &how, &up, &upi)) != BS_OK)
                break;
            if (how == 1)
                break;
            if (how == 2) {
                nv = up;
                L--;
                i = upi;
                continue;
            }
        }
        /* split: the cells of pg with nv inserted at i */
        memcpy(s.buf, pg, P);
        unsigned m = 0;
        for (unsigned j = 0; j < n; j++) {
            if (j == i)
                s.v[m++] = nv;
            s.v[m++] = vcell_of(s.buf, j, leaf);
        }
        if (i == n)
            s.v[m++] = nv;
        unsigned k = choose_split(s.v, m, leaf, cap, append, m / 2);
        uint8_t *rpg;
        uint64_t rno;
        if ((rc = pager_new(txn, leaf ? PT_LEAF : PT_BRANCH, &rpg, &rno)) != BS_OK)
            break;
        node_build(pg, P, leaf, s.v, k);
        node_build(rpg, P, leaf, s.v + k, m - k);
        const uint8_t *sp;
        size_t sl;
        sep_of(s.v, k, leaf, &sp, &sl);
        if (sl)
            memcpy(s.sepb[sw], sp, sl);
        nv = (vcell){s.sepb[sw], rno, txn->txid, (uint32_t)sl, (uint32_t)(BRANCH_CELL_HDR + sl)};
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
        p.pgno[0] = p.from[0] = pgno;
        p.idx[0] = 0;
        p.rm = 0;
        p.edge = 1;
    } else if ((rc = bt_writable(txn, t, &p, D - 1)) != BS_OK) {
        goto fail_ov;
    }
    uint8_t *lf = p.wp[D - 1];
    unsigned i = p.idx[D - 1];
    uint32_t csize = LEAF_CELL_HDR + (uint32_t)klen + (ov ? LEAF_OVREF : (uint32_t)vlen);
    t->dirty = true;
    t->edge = p.edge != 0;
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
    /* compaction or a split: go through a built cell (on the stack unless it is large) */
    uint8_t cstack[512], *cbuf = csize <= sizeof cstack ? cstack : malloc(csize);
    if (!cbuf)
        return bs_fail(BS_NOMEM, "out of memory inserting a key");
    leaf_cell_write(cbuf, key, klen, val, vlen, ovpgno, txn->txid);
    vcell nv = {cbuf, 0, 0, (uint32_t)klen, csize};
    rc = bt_insert(txn, t, &p, D - 1, i, nv);
    if (cbuf != cstack)
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
        if (top > 0 && node_used(pg, P) < node_merge_thresh(P))
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
    const uint8_t *lp;
    if ((rc = bt_sibling(txn, par, pg_pgno(par), a, leaf ? PT_LEAF : PT_BRANCH, &lno, &lp)) !=
            BS_OK ||
        (rc = bt_sibling(txn, par, pg_pgno(par), a + 1, leaf ? PT_LEAF : PT_BRANCH, &rno,
                         &rp)) != BS_OK ||
        (rc = pager_write(txn, lno, &lw, &np)) != BS_OK)
        return rc;
    if (BS_UNLIKELY(np == rno)) /* hostile files: the sibling came back from the freelist */
        return pager_freelist_damaged(txn, np, "is the sibling being merged");
    if (np != lno)
        bcell_set_child(par + node_slot(par, a), np, txn->txid);
    if (!pager_vouched(txn, rp)) { /* cells of a sibling not checked at its place (rng_check) */
        pager_unvouch(lw);
        pager_unvouch(par);
    }
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

/* Move cells between children a and a+1 of par so that both are about equally full (pack:
 * child a as full as it gets). Leaves them alone when the new separator would not fit par. */
static int bt_redistribute(bs_txn *txn, uint8_t *par, unsigned a, int leaf, int pack)
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
    if ((rc = bt_sibling(txn, par, pg_pgno(par), a, type, &lno, &lp)) != BS_OK ||
        (rc = bt_sibling(txn, par, pg_pgno(par), a + 1, type, &rno, &rp)) != BS_OK)
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
    unsigned k = choose_split(v, m, leaf, cap, pack, nl);
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
    if (!pager_vouched(txn, lp) || !pager_vouched(txn, rp)) {
        /* cells of siblings not checked at their place (rng_check) */
        pager_unvouch(lw);
        pager_unvouch(rw);
        pager_unvouch(par);
    }
    node_build(lw, P, leaf, v, k);
    node_build(rw, P, leaf, v + k, m - k);
    rc = node_set_sep(par, P, a + 1, sp, sl, np, txn->txid, NULL);
out:
    free(lb);
    free(rb);
    free(sb);
    free(v);
    return rc;
}

/* Child i of par is less than half full: merge it with a neighbour when they fit one page,
 * else, when it is underfull, even it out with the fuller neighbour. *next: the child index
 * to look at next. */
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
    if (i > 0 && i + 1 < n &&
        ul + uc + ur + (leaf ? 0 : bcell_klen(node_cell(par, i)) + bcell_klen(node_cell(par, i + 1)))
            <= 2 * (uint64_t)cap - cap / 8) {
        /* three fit two: pack the left one full, then merge the right one into what is left */
        if ((rc = bt_redistribute(txn, par, i - 1, leaf, 1)) != BS_OK ||
            (rc = bt_child(txn, par, ppg, i, type, &RNG_ALL, &cno, &pg)) != BS_OK)
            return rc;
        uc = node_used(pg, P);
        if ((rc = bt_child(txn, par, ppg, i + 1, type, &RNG_ALL, &cno, &pg)) != BS_OK)
            return rc;
        if (uc + node_used(pg, P) + (leaf ? 0 : bcell_klen(node_cell(par, i + 1))) <= cap) {
            *next = i;
            return bt_merge(txn, par, i, leaf);
        }
    }
    *next = i + 1;
    if (uc >= node_thresh(P))
        return BS_OK; /* only half empty: merged when it fits, never evened out */
    return bt_redistribute(txn, par, (i + 1 < n && (i == 0 || ur >= ul)) ? i : i - 1, leaf, 0);
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
        if (node_used(cp, P) >= node_merge_thresh(P)) {
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
    return rng_check(c->txn, &r, *pg, c->stack[L + 1].pgno);
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
            if ((rc = rng_check(c->txn, &r, pg, pgno)) != BS_OK)
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

/* ------------------------------------------------------------------ lookups that show where */

int btree_get_where(bs_txn *txn, bs_tree *t, const uint8_t *key, size_t klen, bs_val *out,
                    bt_where *w)
{
    unsigned D = t->depth;
    uint64_t pgno = t->root;
    const uint8_t *pg;
    bt_rng r = RNG_ALL;
    int rc, exact;
    w->depth = 0;
    if (!pgno)
        return BS_NOTFOUND;
    if (BS_UNLIKELY(D == 0 || D > BS_MAX_DEPTH))
        return bad_depth(t);
    if ((rc = bt_root(txn, t, D > 1 ? PT_BRANCH : PT_LEAF, &pg)) != BS_OK)
        return rc;
    w->path[0] = pgno;
    w->pg[0] = pg;
    for (unsigned L = 1; L < D; L++) {
        unsigned i = branch_search(pg, key, klen);
        rng_child(&r, pg, i);
        if ((rc = bt_child(txn, pg, pgno, i, L + 1 < D ? PT_BRANCH : PT_LEAF, &r, &pgno, &pg)) !=
            BS_OK)
            return rc;
        w->path[L] = pgno;
        w->pg[L] = pg;
    }
    w->depth = D;
    unsigned i = leaf_search(pg, key, klen, &exact);
    w->idx = i;
    if (!exact)
        return BS_NOTFOUND;
    cell_value(node_cell(pg, i), out);
    return BS_OK;
}
