/*
 * check.c - the integrity checker (bs_db_check_report, bbolt's Tx.Check): verifies
 * architecture invariants 3 and 4 for the snapshot of a read transaction (txn->meta), and
 * the reachability walk that bs_db_repair rebuilds the freelist from.
 *
 * Layer: calls pager.c (pager_get_ref, pager_read_freelist, pager_ov_check, the epoch
 * bracket), freelist.c (pgvec_*), btree.c (btree_verify_page) and util.c (bs_fail). Reads
 * only; changes nothing.
 *
 * Every page below meta.page_count gets exactly one owner: the two meta pages, the freelist
 * chain pages and the free pages they list, and the pages (nodes and overflow runs) of the
 * default tree, the catalog tree and every named bucket's tree. A page claimed twice, a page
 * claimed by nobody (leaked), a page number out of range, a node that fails its bounds check,
 * a leaf at the wrong depth, a key outside the range its separators allow, an entry count
 * that differs from the bucket record, or an overflow run whose checksum fails is a problem.
 * The owner map also stops cycles.
 *
 * Every problem is reported (up to a limit), not only the first: a damaged node is reported
 * and its subtree skipped, the walk goes on with its siblings and the other trees. Pages
 * below a skipped node then show up as leaked (runs of leaked pages are one problem each);
 * an entry-count mismatch is not reported for a tree that already had a problem.
 *
 * Memory: the owner map (4 bytes per page) plus one copy of a branch page per level. The
 * walk keeps no pointer into the shared cache across pages (branch pages are copied before
 * their children are visited), so it leaves and re-enters its cache epoch every CHK_EPOCH
 * pages: frames evicted meanwhile are freed, and the walk's memory stays within cache_size
 * instead of growing with the file.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ULL(x) ((unsigned long long)(x))
#define CHK_SKIP (-1)    /* a problem was recorded: skip this page or subtree, go on */
#define CHK_EPOCH 64u    /* pages between two epoch re-entries */

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
    uint8_t *lvl[BS_MAX_DEPTH]; /* copies of the branch pages on the current path */
    unsigned since_epoch;    /* pages read since the last epoch re-entry */
    bool shallow;            /* check_free_set: leaves of the data trees are not read */
    uint64_t free_hit;       /* check_free_set: the first tree page the free set lists */
    char free_hit_owner[160];
    uint64_t twice_hit;      /* check_free_set: the first page two trees share */
    char twice_msg[400];
    /* problems */
    size_t max, nprob;
    size_t tree_prob;        /* nprob when the current tree's walk began */
    check_report_fn report;
    void *ctx;
    char first[3][512];      /* the first few, for the summary */
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

/* Record a problem. CHK_SKIP: go on (skip what it concerns); BS_CORRUPT: the limit is reached,
 * stop; BS_NOMEM: the report callback could not keep it. */
static int problem(chk *ck, const char *fmt, ...) BS_PRINTF(2, 3);
static int problem(chk *ck, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ck->nprob < 3)
        memcpy(ck->first[ck->nprob], msg, sizeof msg);
    ck->nprob++;
    if (ck->report && ck->report(ck->ctx, msg) != 0)
        return bs_fail(BS_NOMEM, "out of memory keeping the checker's report");
    return ck->nprob >= ck->max ? BS_CORRUPT : CHK_SKIP;
}

/* CHK_SKIP -> BS_OK (the problem is recorded, the walk goes on); anything else as it is */
static inline int go_on(int rc) { return rc == CHK_SKIP ? BS_OK : rc; }

/* Between two pages: no cache pointer is held here, let the cache free what it evicted. */
static void chk_pace(chk *ck)
{
    if (++ck->since_epoch >= CHK_EPOCH) {
        ck->since_epoch = 0;
        pager_leave(ck->txn);
        pager_enter(ck->txn);
    }
}

/* BS_OK (marked), CHK_SKIP (a problem: do not visit it), or a code that stops the walk */
static int chk_mark(chk *ck, uint64_t pgno, uint32_t own)
{
    char a[160], b[160];
    if (pgno < BS_META_PAGES || pgno >= ck->npages) {
        chk_name(ck, own, a, sizeof a);
        return problem(ck, "page %llu (%s) is out of range (page count %llu)", ULL(pgno), a,
                       ULL(ck->npages));
    }
    if (ck->owner[pgno]) {
        if (ck->owner[pgno] == OWN_FREE && !ck->free_hit) {
            ck->free_hit = pgno;
            chk_name(ck, own, ck->free_hit_owner, sizeof ck->free_hit_owner);
        }
        chk_name(ck, ck->owner[pgno], a, sizeof a);
        chk_name(ck, own, b, sizeof b);
        if (ck->owner[pgno] != OWN_FREE && !ck->twice_hit) {
            ck->twice_hit = pgno;
            snprintf(ck->twice_msg, sizeof ck->twice_msg, "%s and %s", a, b);
        }
        return problem(ck, "page %llu is referenced twice (%s and %s)", ULL(pgno), a, b);
    }
    ck->owner[pgno] = own;
    return BS_OK;
}

static int chk_fail(chk *ck, const char *what, uint64_t pgno)
{
    char a[160];
    chk_name(ck, ck->cur, a, sizeof a);
    return problem(ck, "%s: page %llu: %s", a, ULL(pgno), what);
}

/* which pointer led to a node: " (the root, recorded on page F)" or " (pointer on page F)" */
static void chk_via(char *buf, size_t sz, unsigned L, uint64_t from)
{
    snprintf(buf, sz, L ? " (pointer on page %llu)" : " (the root, recorded on page %llu)",
             ULL(from));
}

/* A read that failed: BS_CORRUPT becomes a problem of the current tree (named, with the
 * pointer `via` that led there), the rest (I/O, memory) stops the walk. */
static int chk_read_failed(chk *ck, int rc, const char *via)
{
    if (rc != BS_CORRUPT)
        return rc;
    char a[160], m[512];
    snprintf(m, sizeof m, "%s", bs_errmsg());
    chk_name(ck, ck->cur, a, sizeof a);
    return problem(ck, "%s: %s%s", a, m, via);
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

/* The cells of a verified leaf. */
static int chk_leaf(chk *ck, uint64_t pgno, const uint8_t *pg, const uint8_t *lo, size_t lol,
                    const uint8_t *hi, size_t hil)
{
    unsigned n = pg_nkeys(pg);
    int rc;
    bool range_bad = false;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *c = node_cell(pg, i);
        const uint8_t *k = lcell_key(c);
        size_t kl = lcell_klen(c);
        if (!range_bad &&
            ((lo && key_cmp(k, kl, lo, lol) < 0) || (hi && key_cmp(k, kl, hi, hil) >= 0))) {
            range_bad = true; /* once per page */
            if ((rc = go_on(chk_fail(ck, "key outside the range of its parent separators",
                                     pgno))) != BS_OK)
                return rc;
        }
        if (lcell_flags(c) & LEAF_F_OVERFLOW) {
            uint64_t ov = lcell_ovpgno(c), np = fmt_overflow_pages(ck->P, lcell_vlen(c));
            bool marked = true;
            for (uint64_t j = 0; j < np && marked; j++) {
                if ((rc = chk_mark(ck, ov + j, ck->cur)) == CHK_SKIP)
                    marked = false;
                else if (rc != BS_OK)
                    return rc;
            }
            if (marked && (rc = pager_ov_check(ck->txn, ov, lcell_ovtxid(c), lcell_vlen(c), 1)) !=
                              BS_OK &&
                (rc = go_on(chk_read_failed(ck, rc, ""))) != BS_OK)
                return rc;
        }
        if (ck->cur == OWN_CATALOG && (rc = go_on(chk_catalog_entry(ck, pgno, c))) != BS_OK)
            return rc;
    }
    ck->found += n;
    return BS_OK;
}

/* Keys of the subtree at pgno (level L), reached through a pointer on page `from` that
 * expects txid, must lie in [lo, hi) (NULL = unbounded). lo and hi point into ck->lvl[L-1]
 * (or nowhere), which stays as it is while this subtree is walked. */
static int chk_node(chk *ck, uint64_t pgno, uint64_t txid, uint64_t from, unsigned L,
                    const uint8_t *lo, size_t lol, const uint8_t *hi, size_t hil)
{
    const bs_tree *t = ck->tree;
    const uint8_t *pg;
    int rc, leaf = L + 1 == t->depth;
    char msg[160], via[64];
    if ((rc = chk_mark(ck, pgno, ck->cur)) != BS_OK)
        return go_on(rc);
    if (leaf && ck->shallow && ck->cur != OWN_CATALOG)
        return BS_OK; /* its number is all check_free_set needs */
    chk_pace(ck); /* no cache pointer is held here: the path is in ck->lvl */
    chk_via(via, sizeof via, L, from);
    if ((rc = pager_get_ref(ck->txn, pgno, 0, txid, from, &pg)) != BS_OK)
        return go_on(chk_read_failed(ck, rc, via));
    if (pg_type(pg) != (leaf ? PT_LEAF : PT_BRANCH)) {
        snprintf(msg, sizeof msg, "page type %d at level %u of a tree of depth %u%s",
                 pg_type(pg), L + 1, t->depth, via);
        return go_on(chk_fail(ck, msg, pgno));
    }
    if ((rc = btree_verify_page(pg, ck->P, ck->npages)) != BS_OK)
        return go_on(chk_read_failed(ck, rc, via));
    if (leaf)
        return chk_leaf(ck, pgno, pg, lo, lol, hi, hil);
    /* a branch: walk its children from a copy, so that no cache pointer is held meanwhile */
    if (!ck->lvl[L] && !(ck->lvl[L] = malloc(ck->P)))
        return bs_fail(BS_NOMEM, "out of memory for the checker's path");
    memcpy(ck->lvl[L], pg, ck->P);
    pg = ck->lvl[L];
    unsigned n = pg_nkeys(pg);
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *c = node_cell(pg, i), *klo = lo, *khi = hi;
        size_t kll = lol, khl = hil;
        if (i > 0) {
            klo = bcell_key(c);
            kll = bcell_klen(c);
            if ((lo && key_cmp(klo, kll, lo, lol) < 0) || (hi && key_cmp(klo, kll, hi, hil) > 0))
                return go_on(chk_fail(ck, "separator outside the range of its parent separators",
                                      pgno));
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
    ck->tree_prob = ck->nprob;
    chk_name(ck, own, a, sizeof a);
    if (!t->root) {
        if (t->depth || t->count)
            return go_on(problem(ck, "%s: empty tree with depth %u and %llu entries", a,
                                 t->depth, ULL(t->count)));
        return BS_OK;
    }
    if (t->depth < 1 || t->depth > BS_MAX_DEPTH)
        return go_on(problem(ck, "%s: depth %u out of range", a, t->depth));
    if ((rc = chk_node(ck, t->root, t->root_txid, from, 0, NULL, 0, NULL, 0)) != BS_OK)
        return rc;
    if (ck->nprob == ck->tree_prob && ck->found != t->count && !ck->shallow)
        return go_on(problem(ck, "%s: %llu entries recorded, %llu found", a, ULL(t->count),
                             ULL(ck->found)));
    return BS_OK;
}

/* Every tree of the snapshot: the default bucket, the catalog, each named bucket. */
static int chk_trees(chk *ck)
{
    bs_txn *txn = ck->txn;
    int rc;
    if ((rc = chk_tree(ck, &txn->meta.main, txn->meta.slot, OWN_MAIN)) != BS_OK ||
        (rc = chk_tree(ck, &txn->meta.catalog, txn->meta.slot, OWN_CATALOG)) != BS_OK)
        return rc;
    for (size_t i = 0; i < ck->nbk; i++) {
        bs_tree t = ck->bk[i].tree;
        if ((rc = chk_tree(ck, &t, ck->bk[i].from, (uint32_t)(OWN_BUCKET0 + i))) != BS_OK)
            return rc;
    }
    return BS_OK;
}

static int chk_init(chk *ck, bs_txn *txn, size_t max, check_report_fn fn, void *ctx)
{
    memset(ck, 0, sizeof *ck);
    ck->txn = txn;
    ck->P = txn->db->page_size;
    ck->npages = txn->meta.page_count;
    ck->max = max ? max : 1;
    ck->report = fn;
    ck->ctx = ctx;
    if (ck->npages < BS_META_PAGES)
        return bs_fail(BS_CORRUPT, "page count %llu is below 2", ULL(ck->npages));
    ck->owner = calloc(ck->npages, sizeof *ck->owner);
    if (!ck->owner)
        return bs_fail(BS_NOMEM, "out of memory for the checker's page map");
    ck->owner[0] = ck->owner[1] = OWN_META;
    return BS_OK;
}

static void chk_destroy(chk *ck)
{
    free(ck->owner);
    free(ck->bk);
    for (unsigned i = 0; i < BS_MAX_DEPTH; i++)
        free(ck->lvl[i]);
}

/* Report the leaked pages: each run of consecutive ones is one problem. */
static int chk_leaks(chk *ck)
{
    for (uint64_t p = BS_META_PAGES; p < ck->npages; p++) {
        if (ck->owner[p])
            continue;
        uint64_t q = p;
        while (q + 1 < ck->npages && !ck->owner[q + 1])
            q++;
        int rc = q == p ? problem(ck, "page %llu is neither reachable nor free (leaked)", ULL(p))
                        : problem(ck, "pages %llu..%llu are neither reachable nor free (leaked, "
                                      "%llu pages)", ULL(p), ULL(q), ULL(q - p + 1));
        if ((rc = go_on(rc)) != BS_OK)
            return rc;
        p = q;
    }
    return BS_OK;
}

int check_db_report(bs_txn *txn, size_t max, check_report_fn fn, void *ctx)
{
    chk ck;
    bs_pgvec fl = {0}, chain = {0};
    bool fl_read = false;
    int rc = chk_init(&ck, txn, max, fn, ctx);
    if (rc != BS_OK) {
        if (rc == BS_CORRUPT && fn && fn(ctx, bs_errmsg()) != 0)
            rc = bs_fail(BS_NOMEM, "out of memory keeping the checker's report");
        return rc;
    }
    rc = pager_read_freelist(txn, &txn->meta, &fl, &chain);
    if (rc == BS_CORRUPT) {
        /* the free pages are unknown: the trees are still checked, leaks are not */
        char m[512];
        snprintf(m, sizeof m, "%s", bs_errmsg());
        rc = go_on(problem(&ck, "freelist: %s", m));
    } else if (rc == BS_OK) {
        fl_read = true;
        for (size_t i = 0; rc == BS_OK && i < chain.n; i++)
            rc = go_on(chk_mark(&ck, chain.v[i], OWN_CHAIN));
        for (size_t i = 0; rc == BS_OK && i < fl.n; i++)
            rc = go_on(chk_mark(&ck, fl.v[i], OWN_FREE));
        if (rc == BS_OK && fl.n != txn->meta.fl_count)
            rc = go_on(problem(&ck, "freelist: %llu free pages recorded, %zu found",
                               ULL(txn->meta.fl_count), fl.n));
    }
    if (rc == BS_OK)
        rc = chk_trees(&ck);
    if (rc == BS_OK && fl_read)
        rc = chk_leaks(&ck);
    if ((rc == BS_OK || rc == BS_CORRUPT) && ck.nprob == 1) {
        rc = bs_fail(BS_CORRUPT, "%s", ck.first[0]);
    } else if ((rc == BS_OK || rc == BS_CORRUPT) && ck.nprob) {
        /* the summary: the count and the first few */
        size_t shown = ck.nprob < 3 ? ck.nprob : 3;
        char more[64] = "";
        if (ck.nprob > shown)
            snprintf(more, sizeof more, "; and %zu more", ck.nprob - shown);
        rc = bs_fail(BS_CORRUPT, "%s%zu problems: %s; %s%s%s%s",
                     ck.nprob >= ck.max ? "at least " : "", ck.nprob, ck.first[0], ck.first[1],
                     shown > 2 ? "; " : "", shown > 2 ? ck.first[2] : "", more);
    }
    pgvec_free(&fl);
    pgvec_free(&chain);
    chk_destroy(&ck);
    return rc;
}

int check_db(bs_txn *txn) { return check_db_report(txn, 1, NULL, NULL); }

int check_free_pages(bs_txn *txn, bs_pgvec *free_out, bs_pgvec *old_chain)
{
    chk ck;
    int rc = chk_init(&ck, txn, 1, NULL, NULL);
    if (rc != BS_OK)
        return rc;
    if ((rc = chk_trees(&ck)) != BS_OK || ck.nprob) {
        if (rc == BS_CORRUPT || ck.nprob)
            rc = bs_fail(BS_CORRUPT, "the trees themselves are damaged (%s); repair rebuilds "
                         "only the freelist, it cannot fix this", ck.first[0]);
        goto out;
    }
    /* the readable start of the old chain, as far as its pages are not in a tree */
    uint64_t pgno = txn->meta.fl_head, want = txn->meta.fl_head_txid, from = txn->meta.slot;
    for (uint64_t n = 0; pgno && n < ck.npages; n++) {
        const uint8_t *pg;
        if (pgno < BS_META_PAGES || pgno >= ck.npages || ck.owner[pgno] ||
            pager_get_ref(txn, pgno, PT_FREELIST, want, from, &pg) != BS_OK)
            break;
        if ((rc = pgvec_push(old_chain, pgno)) != BS_OK)
            goto out;
        ck.owner[pgno] = OWN_CHAIN;
        from = pgno;
        want = get64(pg + FL_NEXT_TXID);
        pgno = get64(pg + FL_NEXT);
    }
    bs_clear_error();
    for (uint64_t p = BS_META_PAGES; p < ck.npages; p++)
        if (!ck.owner[p] && (rc = pgvec_push(free_out, p)) != BS_OK)
            goto out;
    rc = BS_OK;
out:
    chk_destroy(&ck);
    return rc;
}

int check_free_set(bs_txn *txn, const bs_freelist *fl)
{
    chk ck;
    int rc = chk_init(&ck, txn, SIZE_MAX, NULL, NULL);
    if (rc != BS_OK)
        return rc;
    ck.shallow = true;
    for (size_t i = 0; rc == BS_OK && i < fl->reusable.n; i++)
        rc = go_on(chk_mark(&ck, fl->reusable.v[i], OWN_FREE));
    for (size_t g = 0; rc == BS_OK && g < fl->npend; g++)
        for (size_t i = 0; rc == BS_OK && i < fl->pend[g].pages.n; i++)
            rc = go_on(chk_mark(&ck, fl->pend[g].pages.v[i], OWN_FREE));
    if (rc == BS_OK)
        rc = chk_trees(&ck);
    if (rc == BS_OK || rc == BS_CORRUPT) {
        /* only a tree page listed as free matters here; other damage is check()'s (reads
         * report it where they meet it) */
        bs_clear_error();
        rc = BS_OK;
        if (ck.free_hit) {
            char why[256];
            snprintf(why, sizeof why, "is also a page of the %s (found before writing)",
                     ck.free_hit_owner);
            rc = pager_freelist_damaged(txn, ck.free_hit, why);
        } else if (ck.twice_hit) {
            /* two trees share a page (a crafted bucket record or branch cell): a write through
             * one would free or rewrite the other's page. Refused; the next write transaction
             * walks again (db->fl_checked stays unset), reads go on. */
            rc = bs_fail(BS_CORRUPT, "page %llu is a page of two trees (%s; found before "
                         "writing): writes are refused (check() reports the damage)",
                         ULL(ck.twice_hit), ck.twice_msg);
        }
    }
    chk_destroy(&ck);
    return rc;
}
