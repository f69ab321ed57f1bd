/*
 * stat.c - per-bucket statistics (bs_bucket_stats): walks one bucket's tree in a
 * transaction's snapshot and counts its pages by kind (branch, leaf, overflow), its entries
 * and the bytes of its keys and values.
 *
 * Layer: calls db.c (bs_bucket_count: the handle checks), pager.c (pager_get_ref, the epoch
 * bracket) and the page accessors of format.h. Reads only; changes nothing. In no-I/O mode a page that needs the disk gives BS_WOULDBLOCK and the
 * caller repeats the whole walk (the result is rebuilt from zero each time).
 *
 * A hostile file cannot make the walk loop or explode: the type of every page is checked
 * against its level (a tree of depth D has leaves exactly at level D), the depth is bounded
 * by BS_MAX_DEPTH, and a walk that visits more pages than the snapshot has is a DAG of
 * shared pages: BS_CORRUPT.
 *
 * Memory: branch pages on the path are copied (one page per level), so the walk holds no
 * cache pointer between two pages and leaves and re-enters its cache epoch every ST_EPOCH
 * pages (as check.c does): what it evicts is freed as it goes.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ULL(x) ((unsigned long long)(x))
#define ST_EPOCH 64u /* pages between two epoch re-entries */

typedef struct st_walk {
    bs_txn *txn;
    uint32_t P;
    unsigned depth;
    uint64_t limit; /* pages the snapshot has: no sound tree visits more */
    bs_bucket_stats *out;
    uint8_t *lvl[BS_MAX_DEPTH]; /* copies of the branch pages on the path */
    unsigned since_epoch;
} st_walk;

static int st_node(st_walk *w, uint64_t pgno, uint64_t txid, uint64_t from, unsigned L)
{
    int leaf = L + 1 == w->depth, rc;
    const uint8_t *pg;
    bs_bucket_stats *o = w->out;
    if (o->branch_pages + o->leaf_pages + o->overflow_pages >= w->limit)
        return bs_fail(BS_CORRUPT, "tree at page %llu: more pages reachable than the file has",
                       ULL(pgno));
    if (++w->since_epoch >= ST_EPOCH) {
        w->since_epoch = 0;
        pager_leave(w->txn);
        pager_enter(w->txn);
    }
    if ((rc = pager_get_ref(w->txn, pgno, leaf ? PT_LEAF : PT_BRANCH, txid, from, &pg)) !=
        BS_OK)
        return rc;
    unsigned n = pg_nkeys(pg);
    if (leaf) {
        o->leaf_pages++;
        for (unsigned i = 0; i < n; i++) {
            const uint8_t *c = node_cell(pg, i);
            o->key_bytes += lcell_klen(c);
            o->value_bytes += lcell_vlen(c);
            if (lcell_flags(c) & LEAF_F_OVERFLOW)
                o->overflow_pages += fmt_overflow_pages(w->P, lcell_vlen(c));
        }
        o->entries += n;
        return BS_OK;
    }
    o->branch_pages++;
    if (!w->lvl[L] && !(w->lvl[L] = malloc(w->P)))
        return bs_fail(BS_NOMEM, "out of memory walking a tree");
    memcpy(w->lvl[L], pg, w->P);
    pg = w->lvl[L];
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *c = node_cell(pg, i);
        if ((rc = st_node(w, bcell_child(c), bcell_txid(c), pgno, L + 1)) != BS_OK)
            return rc;
    }
    return BS_OK;
}

int bs_bucket_stat(bs_txn *txn, bs_bucket *b, bs_bucket_stats *out)
{
    uint64_t count;
    memset(out, 0, sizeof *out);
    int rc = bs_bucket_count(txn, b, &count); /* a dropped bucket, a dead transaction */
    if (rc != BS_OK)
        return rc;
    const bs_tree *t = &b->tree;
    out->depth = t->depth;
    if (!t->root)
        return BS_OK;
    if (t->depth < 1 || t->depth > BS_MAX_DEPTH)
        return bs_fail(BS_CORRUPT, "tree at page %llu: depth %u out of range", ULL(t->root),
                       t->depth);
    st_walk w;
    memset(&w, 0, sizeof w);
    w.txn = txn;
    w.P = txn->db->page_size;
    w.depth = t->depth;
    w.limit = txn->page_count;
    w.out = out;
    rc = st_node(&w, t->root, t->root_txid, PAGER_FROM_RECORD, 0);
    for (unsigned i = 0; i < BS_MAX_DEPTH; i++)
        free(w.lvl[i]);
    if (rc != BS_OK)
        return rc;
    if (out->entries != t->count)
        return bs_fail(BS_CORRUPT, "tree at page %llu: %llu entries recorded, %llu found",
                       ULL(t->root), ULL(t->count), ULL(out->entries));
    return BS_OK;
}
