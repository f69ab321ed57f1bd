/*
 * check.c - the integrity checker (bs_db_check, bbolt's Tx.Check): verifies architecture
 * invariants 3 and 4 for the snapshot of a read transaction (txn->meta).
 *
 * Layer: calls pager.c (pager_get, pager_read_freelist, pager_ov_check), freelist.c
 * (pgvec_*), btree.c (btree_verify_page) and util.c (bs_fail). Reads only; changes nothing.
 *
 * Every page below meta.page_count gets exactly one owner: the two meta pages, the freelist
 * chain pages and the free pages they list, and the pages (nodes and overflow runs) of the
 * default tree, the catalog tree and every named bucket's tree. A page claimed twice, a page
 * claimed by nobody (leaked), a page number out of range, a node that fails its bounds check,
 * a leaf at the wrong depth, a key outside the range its separators allow, an entry count
 * that differs from the bucket record, or an overflow run whose checksum fails is reported
 * as BS_CORRUPT with a message naming the first problem. The owner map also stops cycles.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ULL(x) ((unsigned long long)(x))

enum { OWN_NONE, OWN_META, OWN_FREE, OWN_CHAIN, OWN_MAIN, OWN_CATALOG, OWN_BUCKET0 };

typedef struct chk_bucket {
    uint8_t name[BS_MAX_NAME];
    uint8_t nlen;
    bs_tree tree;
    uint64_t from;           /* the catalog leaf holding its record */
} chk_bucket;

typedef struct chk {
    bs_txn *txn;
    uint32_t P;
    uint64_t npages;
    uint32_t *owner;         /* per page: OWN_* or OWN_BUCKET0 + bucket index */
    uint32_t cur;            /* owner of the tree being walked */
    const bs_tree *tree;
    uint64_t found;          /* entries seen in the current tree */
    chk_bucket *bk;
    size_t nbk, capbk;
} chk;

static void chk_name(const chk *ck, uint32_t own, char *buf, size_t sz)
{
    switch (own) {
    case OWN_META: snprintf(buf, sz, "meta pages"); return;
    case OWN_FREE: snprintf(buf, sz, "freelist"); return;
    case OWN_CHAIN: snprintf(buf, sz, "freelist chain"); return;
    case OWN_MAIN: snprintf(buf, sz, "default bucket"); return;
    case OWN_CATALOG: snprintf(buf, sz, "bucket catalog"); return;
    default: break;
    }
    const chk_bucket *b = &ck->bk[own - OWN_BUCKET0];
    size_t o = (size_t)snprintf(buf, sz, "bucket '");
    for (unsigned i = 0; i < b->nlen && o + 8 < sz; i++) {
        uint8_t ch = b->name[i];
        if (i >= 48) {
            o += (size_t)snprintf(buf + o, sz - o, "...");
            break;
        }
        if (ch >= 0x20 && ch < 0x7f && ch != '\'' && ch != '\\')
            buf[o++] = (char)ch;
        else
            o += (size_t)snprintf(buf + o, sz - o, "\\x%02x", ch);
    }
    snprintf(buf + o, sz - o, "'");
}

static int chk_mark(chk *ck, uint64_t pgno, uint32_t own)
{
    char a[160], b[160];
    if (pgno < BS_META_PAGES || pgno >= ck->npages) {
        chk_name(ck, own, a, sizeof a);
        return bs_fail(BS_CORRUPT, "page %llu (%s) is out of range (page count %llu)",
                       ULL(pgno), a, ULL(ck->npages));
    }
    if (ck->owner[pgno]) {
        chk_name(ck, ck->owner[pgno], a, sizeof a);
        chk_name(ck, own, b, sizeof b);
        return bs_fail(BS_CORRUPT, "page %llu is referenced twice (%s and %s)", ULL(pgno), a, b);
    }
    ck->owner[pgno] = own;
    return BS_OK;
}

static int chk_fail(const chk *ck, const char *what, uint64_t pgno)
{
    char a[160];
    chk_name(ck, ck->cur, a, sizeof a);
    return bs_fail(BS_CORRUPT, "%s: page %llu: %s", a, ULL(pgno), what);
}

/* A catalog entry: name -> 32-byte bucket record. */
static int chk_catalog_entry(chk *ck, uint64_t pgno, const uint8_t *c)
{
    uint32_t klen = lcell_klen(c);
    if (klen < 1 || klen > BS_MAX_NAME)
        return chk_fail(ck, "catalog entry with a bad name length", pgno);
    if ((lcell_flags(c) & LEAF_F_OVERFLOW) || lcell_vlen(c) != BREC_SIZE)
        return chk_fail(ck, "catalog entry with a bad bucket record", pgno);
    const uint8_t *r = lcell_val(c);
    int rc = bs_grow(&ck->bk, &ck->capbk, ck->nbk + 1, sizeof *ck->bk, 16, "the catalog check");
    if (rc)
        return rc;
    chk_bucket *b = &ck->bk[ck->nbk++];
    memcpy(b->name, lcell_key(c), klen);
    b->nlen = (uint8_t)klen;
    memset(&b->tree, 0, sizeof b->tree);
    b->tree.root = get64(r + BREC_ROOT);
    b->tree.count = get64(r + BREC_COUNT);
    b->tree.depth = get32(r + BREC_DEPTH);
    b->tree.root_txid = get64(r + BREC_TXID);
    b->from = pgno;
    return BS_OK;
}

/* Keys of the subtree at pgno (level L), reached through a pointer on page `from` that
 * expects txid, must lie in [lo, hi) (NULL = unbounded). */
static int chk_node(chk *ck, uint64_t pgno, uint64_t txid, uint64_t from, unsigned L,
                    const uint8_t *lo, size_t lol, const uint8_t *hi, size_t hil)
{
    const bs_tree *t = ck->tree;
    const uint8_t *pg;
    int rc, leaf = L + 1 == t->depth;
    char msg[96];
    if ((rc = chk_mark(ck, pgno, ck->cur)) != BS_OK)
        return rc;
    if ((rc = pager_get_ref(ck->txn, pgno, 0, txid, from, &pg)) != BS_OK) {
        if (rc == BS_CORRUPT) { /* say which tree */
            char a[160], m[512];
            snprintf(m, sizeof m, "%s", bs_errmsg());
            chk_name(ck, ck->cur, a, sizeof a);
            return bs_fail(BS_CORRUPT, "%s: %s", a, m);
        }
        return rc;
    }
    if (pg_type(pg) != (leaf ? PT_LEAF : PT_BRANCH)) {
        snprintf(msg, sizeof msg, "page type %d at level %u of a tree of depth %u", pg_type(pg),
                 L + 1, t->depth);
        return chk_fail(ck, msg, pgno);
    }
    if ((rc = btree_verify_page(pg, ck->P, ck->npages)) != BS_OK)
        return rc;
    unsigned n = pg_nkeys(pg);
    if (leaf) {
        for (unsigned i = 0; i < n; i++) {
            const uint8_t *c = node_cell(pg, i);
            const uint8_t *k = lcell_key(c);
            size_t kl = lcell_klen(c);
            if ((lo && key_cmp(k, kl, lo, lol) < 0) || (hi && key_cmp(k, kl, hi, hil) >= 0))
                return chk_fail(ck, "key outside the range of its parent separators", pgno);
            if (lcell_flags(c) & LEAF_F_OVERFLOW) {
                uint64_t ov = lcell_ovpgno(c), np = fmt_overflow_pages(ck->P, lcell_vlen(c));
                for (uint64_t j = 0; j < np; j++)
                    if ((rc = chk_mark(ck, ov + j, ck->cur)) != BS_OK)
                        return rc;
                if ((rc = pager_ov_check(ck->txn, ov, lcell_ovtxid(c), lcell_vlen(c), 1)) !=
                    BS_OK)
                    return rc;
            }
            if (ck->cur == OWN_CATALOG && (rc = chk_catalog_entry(ck, pgno, c)) != BS_OK)
                return rc;
        }
        ck->found += n;
        return BS_OK;
    }
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *c = node_cell(pg, i), *klo = lo, *khi = hi;
        size_t kll = lol, khl = hil;
        if (i > 0) {
            klo = bcell_key(c);
            kll = bcell_klen(c);
            if ((lo && key_cmp(klo, kll, lo, lol) < 0) || (hi && key_cmp(klo, kll, hi, hil) > 0))
                return chk_fail(ck, "separator outside the range of its parent separators",
                                pgno);
        }
        if (i + 1 < n) {
            const uint8_t *nc = node_cell(pg, i + 1);
            khi = bcell_key(nc);
            khl = bcell_klen(nc);
        }
        if ((rc = chk_node(ck, bcell_child(c), bcell_txid(c), pgno, L + 1, klo, kll, khi,
                           khl)) != BS_OK)
            return rc;
    }
    return BS_OK;
}

static int chk_tree(chk *ck, const bs_tree *t, uint64_t from, uint32_t own)
{
    char a[160];
    int rc;
    ck->cur = own;
    ck->tree = t;
    ck->found = 0;
    chk_name(ck, own, a, sizeof a);
    if (!t->root) {
        if (t->depth || t->count)
            return bs_fail(BS_CORRUPT, "%s: empty tree with depth %u and %llu entries", a,
                           t->depth, ULL(t->count));
        return BS_OK;
    }
    if (t->depth < 1 || t->depth > BS_MAX_DEPTH)
        return bs_fail(BS_CORRUPT, "%s: depth %u out of range", a, t->depth);
    if ((rc = chk_node(ck, t->root, t->root_txid, from, 0, NULL, 0, NULL, 0)) != BS_OK)
        return rc;
    if (ck->found != t->count)
        return bs_fail(BS_CORRUPT, "%s: %llu entries recorded, %llu found", a, ULL(t->count),
                       ULL(ck->found));
    return BS_OK;
}

int check_db(bs_txn *txn)
{
    chk ck;
    bs_pgvec fl = {0}, chain = {0};
    int rc;
    memset(&ck, 0, sizeof ck);
    ck.txn = txn;
    ck.P = txn->db->page_size;
    ck.npages = txn->meta.page_count;
    if (ck.npages < BS_META_PAGES)
        return bs_fail(BS_CORRUPT, "page count %llu is below 2", ULL(ck.npages));
    ck.owner = calloc(ck.npages, sizeof *ck.owner);
    if (!ck.owner)
        return bs_fail(BS_NOMEM, "out of memory for the checker's page map");
    ck.owner[0] = ck.owner[1] = OWN_META;

    if ((rc = pager_read_freelist(txn, &txn->meta, &fl, &chain)) != BS_OK)
        goto out;
    for (size_t i = 0; i < chain.n; i++)
        if ((rc = chk_mark(&ck, chain.v[i], OWN_CHAIN)) != BS_OK)
            goto out;
    for (size_t i = 0; i < fl.n; i++)
        if ((rc = chk_mark(&ck, fl.v[i], OWN_FREE)) != BS_OK)
            goto out;
    if (fl.n != txn->meta.fl_count) {
        rc = bs_fail(BS_CORRUPT, "freelist: %llu free pages recorded, %zu found",
                     ULL(txn->meta.fl_count), fl.n);
        goto out;
    }

    if ((rc = chk_tree(&ck, &txn->meta.main, txn->meta.slot, OWN_MAIN)) != BS_OK ||
        (rc = chk_tree(&ck, &txn->meta.catalog, txn->meta.slot, OWN_CATALOG)) != BS_OK)
        goto out;
    for (size_t i = 0; i < ck.nbk; i++) {
        bs_tree t = ck.bk[i].tree;
        if ((rc = chk_tree(&ck, &t, ck.bk[i].from, (uint32_t)(OWN_BUCKET0 + i))) != BS_OK)
            goto out;
    }

    for (uint64_t p = BS_META_PAGES; p < ck.npages; p++) {
        if (!ck.owner[p]) {
            rc = bs_fail(BS_CORRUPT, "page %llu is neither reachable nor free (leaked)", ULL(p));
            goto out;
        }
    }
    rc = BS_OK;
out:
    pgvec_free(&fl);
    pgvec_free(&chain);
    free(ck.owner);
    free(ck.bk);
    return rc;
}
