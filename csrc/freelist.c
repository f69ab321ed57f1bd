/*
 * freelist.c - page lists, the free set (reusable pages and pending groups), the replay of a
 * persisted freelist chain and the record a commit writes (see freelist.h).
 *
 * Layer: calls only the C library, bs_fail/bs_grow (util.c) and format.h accessors; no I/O.
 * Called by pager.c, db.c and check.c.
 */
#include <stdlib.h>
#include <string.h>

#include "freelist.h"

/* ------------------------------------------------------------------ page lists */

int pgvec_push(bs_pgvec *v, uint64_t pgno)
{
    if (v->n == v->cap) {
        int rc = bs_grow(&v->v, &v->cap, v->n + 1, sizeof *v->v, 64, "a page list");
        if (rc)
            return rc;
    }
    v->v[v->n++] = pgno;
    return BS_OK;
}

int pgvec_reserve(bs_pgvec *v, size_t n)
{
    return bs_grow(&v->v, &v->cap, n, sizeof *v->v, 64, "a page list");
}

void pgvec_free(bs_pgvec *v)
{
    free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
}

int pgvec_copy(bs_pgvec *dst, const bs_pgvec *src)
{
    dst->v = NULL;
    dst->n = dst->cap = 0;
    if (!src->n)
        return BS_OK;
    int rc = pgvec_reserve(dst, src->n);
    if (rc)
        return rc;
    memcpy(dst->v, src->v, src->n * sizeof *src->v);
    dst->n = src->n;
    return BS_OK;
}

/* append n pages to a vector reserved large enough */
static void append_pages(bs_pgvec *dst, const uint64_t *src, size_t n)
{
    if (n) {
        memcpy(dst->v + dst->n, src, n * sizeof *src);
        dst->n += n;
    }
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}
static int cmp_asc(const void *a, const void *b) { return -cmp_desc(a, b); }

/* ------------------------------------------------------------------ the free set */

void freelist_destroy(bs_freelist *fl)
{
    pgvec_free(&fl->reusable);
    for (size_t i = 0; i < fl->npend; i++)
        pgvec_free(&fl->pend[i].pages);
    free(fl->pend);
    fl->pend = NULL;
    fl->npend = fl->cappend = 0;
    pgvec_free(&fl->chain);
    fl->ndelta = 0;
}

int freelist_merge(bs_pgvec *reusable, uint64_t *pages, size_t n)
{
    if (!n)
        return BS_OK;
    int rc = pgvec_reserve(reusable, reusable->n + n);
    if (rc)
        return rc;
    if (n)
        qsort(pages, n, sizeof *pages, cmp_desc);
    /* merge from the back: both descending, output descending */
    size_t i = reusable->n, j = n, k = reusable->n + n;
    uint64_t *v = reusable->v;
    while (j > 0) {
        if (i > 0 && v[i - 1] < pages[j - 1])
            v[--k] = v[--i];
        else
            v[--k] = pages[--j];
    }
    reusable->n += n;
    return BS_OK;
}

bool freelist_take(bs_freelist *fl, uint64_t *pgno)
{
    if (!fl->reusable.n)
        return false;
    *pgno = fl->reusable.v[--fl->reusable.n];
    return true;
}

bool freelist_take_run(bs_freelist *fl, uint64_t n, uint64_t *pages)
{
    bs_pgvec *r = &fl->reusable;
    if (r->n < n || n == 0)
        return false;
    /* descending list: a run is v[i] .. v[i+n-1] with v[i] - v[i+n-1] == n-1; the lowest one
     * is nearest the end */
    for (size_t i = r->n - n + 1; i-- > 0;) {
        if (r->v[i] - r->v[i + n - 1] == n - 1) {
            memcpy(pages, r->v + i, n * sizeof *pages);
            memmove(r->v + i, r->v + i + n, (r->n - i - n) * sizeof *r->v);
            r->n -= n;
            return true;
        }
    }
    return false;
}

int freelist_reserve_pend(bs_freelist *fl)
{
    return bs_grow(&fl->pend, &fl->cappend, fl->npend + 1, sizeof *fl->pend, 8,
                   "the pending free pages");
}

int freelist_pend(bs_freelist *fl, uint64_t txid, bs_pgvec *pages)
{
    if (!pages->n)
        return BS_OK;
    int rc = freelist_reserve_pend(fl);
    if (rc)
        return rc;
    fl->pend[fl->npend].txid = txid;
    fl->pend[fl->npend].pages = *pages;
    fl->npend++;
    memset(pages, 0, sizeof *pages);
    return BS_OK;
}

void freelist_release(bs_freelist *fl, uint64_t oldest)
{
    size_t keep = 0;
    for (size_t i = 0; i < fl->npend; i++) {
        bs_pending *p = &fl->pend[i];
        /* invariant 2: pages freed by commit F may be reused only when every live reader's
         * snapshot is >= F (a snapshot older than F can still reach them) */
        if (p->txid <= oldest &&
            freelist_merge(&fl->reusable, p->pages.v, p->pages.n) == BS_OK) {
            pgvec_free(&p->pages);
            continue;
        }
        fl->pend[keep++] = *p;
    }
    fl->npend = keep;
}

uint64_t freelist_pinned(const bs_freelist *fl, uint64_t oldest)
{
    uint64_t n = 0;
    for (size_t i = 0; i < fl->npend; i++)
        if (fl->pend[i].txid > oldest)
            n += fl->pend[i].pages.n;
    return n;
}

uint64_t freelist_count(const bs_freelist *fl)
{
    uint64_t n = fl->reusable.n;
    for (size_t i = 0; i < fl->npend; i++)
        n += fl->pend[i].pages.n;
    return n;
}

int freelist_compare(const bs_freelist *fl, bs_pgvec *persisted, const bs_pgvec *chain)
{
    bs_pgvec mem = {0};
    int rc;
    if (chain->n != fl->chain.n)
        return bs_fail(BS_CORRUPT, "freelist chain: %zu pages in memory, %zu in the file",
                       fl->chain.n, chain->n);
    for (size_t i = 0; i < chain->n; i++)
        if (chain->v[i] != fl->chain.v[i])
            return bs_fail(BS_CORRUPT, "freelist chain: record %zu is page %llu in memory, "
                           "%llu in the file", i, (unsigned long long)fl->chain.v[i],
                           (unsigned long long)chain->v[i]);
    if ((rc = pgvec_reserve(&mem, freelist_count(fl) + 1)) != BS_OK)
        return rc;
    append_pages(&mem, fl->reusable.v, fl->reusable.n);
    for (size_t i = 0; i < fl->npend; i++)
        append_pages(&mem, fl->pend[i].pages.v, fl->pend[i].pages.n);
    if (mem.n)
        qsort(mem.v, mem.n, sizeof *mem.v, cmp_asc);
    if (persisted->n)
        qsort(persisted->v, persisted->n, sizeof *persisted->v, cmp_asc);
    size_t i = 0, j = 0;
    rc = BS_OK;
    while (rc == BS_OK && (i < mem.n || j < persisted->n)) {
        if (i + 1 < mem.n && mem.v[i] == mem.v[i + 1])
            rc = bs_fail(BS_CORRUPT, "page %llu is free twice in memory",
                         (unsigned long long)mem.v[i]);
        else if (j < persisted->n && (i == mem.n || persisted->v[j] < mem.v[i]))
            rc = bs_fail(BS_CORRUPT, "page %llu is free in the file but not in memory",
                         (unsigned long long)persisted->v[j]);
        else if (j == persisted->n || mem.v[i] < persisted->v[j])
            rc = bs_fail(BS_CORRUPT, "page %llu is free in memory but not in the file",
                         (unsigned long long)mem.v[i]);
        else
            i++, j++;
    }
    pgvec_free(&mem);
    return rc;
}

/* ------------------------------------------------------------------ verification, replay */

int freelist_verify_page(const uint8_t *pg, uint32_t P, uint64_t pgno, uint64_t page_count)
{
    uint32_t na = get32(pg + FL_NADD), nd = get32(pg + FL_NDEL);
    if (na > fmt_freelist_cap(P) || nd > fmt_freelist_cap(P) - na ||
        ((pg[PH_FLAGS] & FL_F_BASE) && nd))
        return bs_fail(BS_CORRUPT, "page %llu: freelist page claims %u + %u entries",
                       (unsigned long long)pgno, na, nd);
    uint64_t next = get64(pg + FL_NEXT), ntx = get64(pg + FL_NEXT_TXID);
    if (next && (next < BS_META_PAGES || next >= page_count))
        return bs_fail(BS_CORRUPT, "page %llu: freelist next page %llu out of range",
                       (unsigned long long)pgno, (unsigned long long)next);
    /* the chain runs from newer records to older ones */
    if ((next == 0) != (ntx == 0) || ntx > pg_txid(pg))
        return bs_fail(BS_CORRUPT, "page %llu: freelist next page %llu expected at txid %llu, "
                       "but this page is txid %llu", (unsigned long long)pgno,
                       (unsigned long long)next, (unsigned long long)ntx,
                       (unsigned long long)pg_txid(pg));
    for (uint32_t i = 0; i < na + nd; i++) {
        uint64_t x = get64(pg + FL_ENTRIES + 8 * i);
        if (x < BS_META_PAGES || x >= page_count)
            return bs_fail(BS_CORRUPT, "page %llu: free page number %llu out of range",
                           (unsigned long long)pgno, (unsigned long long)x);
    }
    return BS_OK;
}

/* Replay entry: (pgno, record sequence from the head, add?) */
typedef struct fl_ent { uint64_t pgno; uint32_t seq; uint32_t add; } fl_ent;

static int cmp_flent(const void *a, const void *b)
{
    const fl_ent *x = a, *y = b;
    if (x->pgno != y->pgno)
        return x->pgno < y->pgno ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return (int)y->add - (int)x->add; /* within a record, add before del */
}

void freelist_replay_init(fl_replay *r, uint64_t limit)
{
    memset(r, 0, sizeof *r);
    r->limit = limit;
}

int freelist_replay_page(fl_replay *r, uint64_t pgno, const uint8_t *pg)
{
    if (++r->seq > r->limit)
        return bs_fail(BS_CORRUPT, "freelist chain is malformed at page %llu (loop, or "
                       "records after the base)", (unsigned long long)pgno);
    uint32_t na = get32(pg + FL_NADD), nd = get32(pg + FL_NDEL);
    if (pg[PH_FLAGS] & FL_F_BASE)
        r->base_seen = true;
    else if (r->base_seen)
        return bs_fail(BS_CORRUPT, "page %llu: freelist delta record after the base",
                       (unsigned long long)pgno);
    else
        r->ndelta++;
    int rc = bs_grow(&r->v, &r->cap, r->n + na + nd, sizeof *r->v, 64, "the freelist");
    if (rc || (rc = bs_grow(&r->txid, &r->captxid, r->seq, sizeof *r->txid, 16,
                            "the freelist")) != BS_OK)
        return rc;
    r->txid[r->seq - 1] = pg_txid(pg);
    for (uint32_t i = 0; i < na + nd; i++) {
        r->v[r->n].pgno = get64(pg + FL_ENTRIES + 8 * i);
        r->v[r->n].seq = r->seq;
        r->v[r->n].add = i < na;
        r->n++;
    }
    return BS_OK;
}

int freelist_replay_finish(fl_replay *r, uint64_t count, bs_pgvec *out, size_t *ndelta)
{
    int rc;
    size_t before = out->n;
    if (r->n)
        qsort(r->v, r->n, sizeof *r->v, cmp_flent);
    for (size_t i = 0; i < r->n; i++) {
        if (i && r->v[i].pgno == r->v[i - 1].pgno)
            continue; /* the newest mention decided */
        if (r->v[i].add && (rc = pgvec_push(out, r->v[i].pgno)) != BS_OK)
            return rc;
    }
    if (out->n - before != count)
        return bs_fail(BS_CORRUPT, "freelist holds %zu pages, meta says %llu", out->n - before,
                       (unsigned long long)count);
    if (ndelta)
        *ndelta = r->ndelta;
    return BS_OK;
}

void freelist_replay_free(fl_replay *r)
{
    free(r->v);
    free(r->txid);
    memset(r, 0, sizeof *r);
}

int freelist_install(bs_freelist *fl, bs_pgvec *pages, bs_pgvec *chain, size_t ndelta)
{
    if (pages->n)
        qsort(pages->v, pages->n, sizeof *pages->v, cmp_desc);
    for (size_t i = 1; i < pages->n; i++)
        if (pages->v[i] == pages->v[i - 1])
            return bs_fail(BS_CORRUPT, "page %llu is on the freelist twice",
                           (unsigned long long)pages->v[i]);
    pgvec_free(&fl->reusable);
    fl->reusable = *pages;
    memset(pages, 0, sizeof *pages);
    pgvec_free(&fl->chain);
    fl->chain = *chain;
    memset(chain, 0, sizeof *chain);
    fl->ndelta = ndelta;
    return BS_OK;
}

/* ------------------------------------------------------------------ another process wrote */

int freelist_pend_all(bs_freelist *fl, uint64_t txid)
{
    bs_pgvec *S = &fl->reusable;
    if (!S->n)
        return BS_OK;
    int rc = freelist_reserve_pend(fl);
    if (rc)
        return rc;
    fl->pend[fl->npend].txid = txid;
    fl->pend[fl->npend].pages = *S;
    fl->npend++;
    memset(S, 0, sizeof *S);
    return BS_OK;
}

/* ------------------------------------------------------------------ the commit record */

/* sorted, duplicate-free union of some page lists */
static int gather(bs_pgvec *all, const bs_pgvec *const *lists, size_t nlists)
{
    size_t total = 0;
    for (size_t i = 0; i < nlists; i++)
        total += lists[i]->n;
    int rc = pgvec_reserve(all, total ? total : 1);
    if (rc)
        return rc;
    all->n = 0;
    for (size_t i = 0; i < nlists; i++)
        append_pages(all, lists[i]->v, lists[i]->n);
    if (all->n)
        qsort(all->v, all->n, 8, cmp_asc);
    for (size_t i = 1; i < all->n; i++)
        if (all->v[i] == all->v[i - 1])
            return bs_fail(BS_CORRUPT, "freelist is damaged: page %llu is free twice (the "
                           "freelist lists a page in use)", (unsigned long long)all->v[i]);
    return BS_OK;
}

int freelist_plan(const bs_freelist *fl, bs_txn *txn, fl_record *r)
{
    uint32_t cap = fmt_freelist_cap(txn->db->page_size);
    int rc;
    memset(r, 0, sizeof *r);
    /* compact once the deltas outweigh the base (keeps the chain within twice the size of
     * the free set it describes) or there are too many of them */
    size_t base = fl->chain.n - fl->ndelta;
    r->compact = fl->ndelta >= FL_MAX_DELTAS || (fl->ndelta && fl->ndelta >= base) ||
                 txn->repair; /* repair: a new base, whatever the chain was */
    if (!r->compact && !txn->freed.n && !txn->local_free.n && !txn->alloc_from_free.n) {
        r->keep = true;
        return BS_OK;
    }
    if (r->compact)
        for (size_t i = 0; i < fl->chain.n; i++)
            if ((rc = pgvec_push(&txn->freed, fl->chain.v[i])) != BS_OK)
                return rc;
    /* pages for the record: allocating them can only move entries between lists, adding at
     * most one entry each */
    size_t est = txn->freed.n + txn->local_free.n +
                 (r->compact ? fl->reusable.n : txn->alloc_from_free.n);
    if (r->compact)
        for (size_t i = 0; i < fl->npend; i++)
            est += fl->pend[i].pages.n;
    size_t npages = (est + cap - 1) / cap;
    while (npages * cap < est + npages)
        npages++;
    r->npages = npages;
    return BS_OK;
}

/* Hostile files: txn->freed holds pages of the base commit's trees (in use until this commit)
 * and alloc_from_free pages the free set handed out; a page in both means the loaded free set
 * listed a page in use, and writing this record would persist it as free and used. */
static int check_freed_not_taken(const bs_txn *txn)
{
    if (!txn->freed.n || !txn->alloc_from_free.n)
        return BS_OK;
    bs_pgvec a;
    int rc = pgvec_copy(&a, &txn->alloc_from_free);
    if (rc)
        return rc;
    if (a.n)
        qsort(a.v, a.n, sizeof *a.v, cmp_asc);
    for (size_t i = 0; i < txn->freed.n && rc == BS_OK; i++)
        if (a.n && bsearch(&txn->freed.v[i], a.v, a.n, sizeof *a.v, cmp_asc))
            rc = bs_fail(BS_CORRUPT, "freelist is damaged: it lists page %llu, which a tree "
                         "used until this transaction; this handle refuses writes from now on "
                         "(reads go on; check() reports the damage)",
                         (unsigned long long)txn->freed.v[i]);
    pgvec_free(&a);
    return rc;
}

int freelist_collect(const bs_freelist *fl, const bs_txn *txn, fl_record *r)
{
    int rc;
    if ((rc = check_freed_not_taken(txn)) != BS_OK)
        return rc;
    if (r->compact) {
        const bs_pgvec *lists[4];
        size_t nl = 0;
        lists[nl++] = &fl->reusable;
        lists[nl++] = &txn->freed;
        lists[nl++] = &txn->local_free;
        bs_pgvec pend_all = {0};
        for (size_t i = 0; i < fl->npend; i++) {
            if ((rc = pgvec_reserve(&pend_all, pend_all.n + fl->pend[i].pages.n + 1)) != BS_OK) {
                pgvec_free(&pend_all);
                return rc;
            }
            append_pages(&pend_all, fl->pend[i].pages.v, fl->pend[i].pages.n);
        }
        lists[nl++] = &pend_all;
        rc = gather(&r->add, lists, nl);
        pgvec_free(&pend_all);
        return rc;
    }
    const bs_pgvec *al[2] = {&txn->freed, &txn->local_free};
    const bs_pgvec *dl[1] = {&txn->alloc_from_free};
    if ((rc = gather(&r->add, al, 2)) != BS_OK || (rc = gather(&r->del, dl, 1)) != BS_OK)
        return rc;
    /* a page taken and given back in this commit stays free: drop it from del */
    size_t k = 0, j = 0;
    for (size_t i = 0; i < r->del.n; i++) {
        while (j < r->add.n && r->add.v[j] < r->del.v[i])
            j++;
        if (j < r->add.n && r->add.v[j] == r->del.v[i])
            continue;
        r->del.v[k++] = r->del.v[i];
    }
    r->del.n = k;
    return BS_OK;
}

int freelist_fill(const bs_freelist *fl, const bs_txn *txn, fl_record *r, uint32_t P,
                  uint8_t *const *pgs, bs_pgvec *chain, uint64_t *head, uint64_t *count,
                  size_t *ndelta)
{
    uint32_t cap = fmt_freelist_cap(P);
    int rc;
    if (r->keep) {
        if ((rc = pgvec_copy(chain, &fl->chain)) != BS_OK)
            return rc;
        *ndelta = fl->ndelta;
        *head = fl->chain.n ? fl->chain.v[0] : 0;
        *count = txn->meta.fl_count;
        return BS_OK;
    }
    size_t npages = r->npages;
    if (r->add.n + r->del.n > npages * cap)
        return bs_fail(BS_CORRUPT, "internal: freelist record larger than estimated");
    /* the add entries, then the del entries, page after page */
    size_t ai = 0, di = 0;
    for (size_t i = 0; i < npages; i++) {
        uint8_t *pg = pgs[i];
        uint32_t na = 0, nd = 0;
        while (na + nd < cap && ai < r->add.n)
            put64(pg + FL_ENTRIES + 8 * (na++), r->add.v[ai++]);
        while (na + nd < cap && di < r->del.n) {
            put64(pg + FL_ENTRIES + 8 * (na + nd), r->del.v[di++]);
            nd++;
        }
        put32(pg + FL_NADD, na);
        put32(pg + FL_NDEL, nd);
        if (r->compact)
            pg[PH_FLAGS] |= FL_F_BASE;
        uint64_t next = i + 1 < npages ? chain->v[i + 1]
                                       : (r->compact || !fl->chain.n ? 0 : fl->chain.v[0]);
        /* the txid the next page carries: ours, or the old head's (format.h) */
        uint64_t ntx = !next ? 0 : i + 1 < npages ? txn->txid : txn->meta.fl_head_txid;
        put64(pg + FL_NEXT, next);
        put64(pg + FL_NEXT_TXID, ntx);
    }
    if (!r->compact) {
        if ((rc = pgvec_reserve(chain, chain->n + fl->chain.n + 1)) != BS_OK)
            return rc;
        append_pages(chain, fl->chain.v, fl->chain.n);
    }
    *ndelta = r->compact ? 0 : fl->ndelta + npages;
    *head = chain->n ? chain->v[0] : 0;
    /* the free set after this commit */
    *count = freelist_count(fl) + txn->freed.n + txn->local_free.n;
    return BS_OK;
}

void freelist_record_free(fl_record *r)
{
    pgvec_free(&r->add);
    pgvec_free(&r->del);
}

/* ------------------------------------------------------------------ catching up by replay */

/* Keep the pages of v that are not in drop (ascending); in place, order kept. */
static void filter_out(bs_pgvec *v, const bs_pgvec *drop)
{
    size_t k = 0;
    for (size_t i = 0; i < v->n; i++)
        if (!bsearch(&v->v[i], drop->v, drop->n, sizeof *drop->v, cmp_asc))
            v->v[k++] = v->v[i];
    v->n = k;
}

/* an added page and the commit whose record added it, ordered by that commit */
typedef struct fl_added { uint64_t txid, pgno; } fl_added;

static int cmp_added(const void *a, const void *b)
{
    const fl_added *x = a, *y = b;
    if (x->txid != y->txid)
        return x->txid < y->txid ? -1 : 1;
    return x->pgno < y->pgno ? -1 : x->pgno > y->pgno;
}

/* the runs of equal txid in v[0..n) (sorted by txid): the pending groups they make */
static size_t added_runs(const fl_added *v, size_t n)
{
    size_t runs = 0;
    for (size_t i = 0; i < n; i++)
        runs += !i || v[i].txid != v[i - 1].txid;
    return runs;
}

/* out[0..added_runs(v, n)) (zeroed): one pending group per run of v, its txid and pages.
 * BS_OK or BS_NOMEM (the groups filled so far stay for the caller to free). */
static int added_groups(const fl_added *v, size_t n, bs_pending *out)
{
    for (size_t i = 0, j, g = 0; i < n; i = j, g++) {
        for (j = i + 1; j < n && v[j].txid == v[i].txid; j++)
            ;
        out[g].txid = v[i].txid;
        int rc = pgvec_reserve(&out[g].pages, j - i);
        if (rc != BS_OK)
            return rc;
        for (size_t k = i; k < j; k++)
            out[g].pages.v[out[g].pages.n++] = v[k].pgno;
    }
    return BS_OK;
}

int freelist_catch_up(bs_freelist *fl, fl_replay *r, const bs_pgvec *newchain, uint64_t txid,
                      uint64_t count, const uint64_t *live, size_t nlive)
{
    bs_pgvec touched = {0}, added = {0}, chain = {0};
    fl_added *by = NULL;
    bs_pending *gv = NULL; /* the new pending groups, ngroups of them */
    size_t ngroups = 0;
    int rc = BS_OK;
    /* the commit of each record, from the head: at most `txid`, and at most the newer
     * record's (a chain runs from newer to older commits; a crafted one cannot make a page
     * reusable earlier than the order of its records allows) */
    for (uint32_t i = 0; i < r->seq; i++) {
        uint64_t cap = i ? r->txid[i - 1] : txid;
        if (r->txid[i] > cap)
            r->txid[i] = cap;
    }
    if (r->n)
        qsort(r->v, r->n, sizeof *r->v, cmp_flent);
    if ((rc = pgvec_reserve(&touched, r->n + 1)) != BS_OK ||
        (rc = pgvec_reserve(&added, r->n + 1)) != BS_OK ||
        (rc = pgvec_reserve(&chain, newchain->n + fl->chain.n + 1)) != BS_OK)
        goto out;
    if (!(by = malloc((r->n + 1) * sizeof *by))) {
        rc = bs_fail(BS_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < r->n; i++) {
        if (i && r->v[i].pgno == r->v[i - 1].pgno)
            continue; /* the newest mention decided */
        touched.v[touched.n++] = r->v[i].pgno;
        if (r->v[i].add) {
            by[added.n].txid = r->txid[r->v[i].seq - 1];
            by[added.n].pgno = r->v[i].pgno;
            added.v[added.n++] = r->v[i].pgno;
        }
    }
    /* one pending group per commit that added pages */
    if (added.n)
        qsort(by, added.n, sizeof *by, cmp_added);
    ngroups = added_runs(by, added.n);
    if ((rc = bs_grow(&fl->pend, &fl->cappend, fl->npend + ngroups + 1, sizeof *fl->pend, 8,
                      "the pending free pages")) != BS_OK)
        goto out;
    if (ngroups && !(gv = calloc(ngroups, sizeof *gv))) {
        rc = bs_fail(BS_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = added_groups(by, added.n, gv)) != BS_OK)
        goto out;
    /* what the set will hold, before changing anything */
    uint64_t n = freelist_count(fl) + added.n;
    for (size_t i = 0; i < touched.n; i++)
        if (fl->reusable.n &&
            bsearch(&touched.v[i], fl->reusable.v, fl->reusable.n, sizeof *touched.v, cmp_desc))
            n--;
    for (size_t g = 0; g < fl->npend; g++)
        for (size_t i = 0; i < fl->pend[g].pages.n; i++)
            if (touched.n && bsearch(&fl->pend[g].pages.v[i], touched.v, touched.n,
                                     sizeof *touched.v, cmp_asc))
                n--;
    if (n != count) {
        rc = bs_fail(BS_CORRUPT, "freelist holds %llu pages after the records of other "
                     "processes' commits, meta says %llu", (unsigned long long)n,
                     (unsigned long long)count);
        goto out;
    }
    for (size_t i = 0; i < newchain->n + nlive; i++) {
        uint64_t p = i < newchain->n ? newchain->v[i] : live[i - newchain->n];
        if (p && added.n && bsearch(&p, added.v, added.n, sizeof p, cmp_asc)) {
            rc = bs_fail(BS_CORRUPT, "freelist lists page %llu, which is %s",
                         (unsigned long long)p, i < newchain->n ? "a page of the freelist "
                         "chain itself" : "the root page of a bucket tree");
            goto out;
        }
    }
    /* apply: nothing fails from here on */
    if (touched.n) {
        filter_out(&fl->reusable, &touched);
        size_t keep = 0;
        for (size_t g = 0; g < fl->npend; g++) {
            filter_out(&fl->pend[g].pages, &touched);
            if (fl->pend[g].pages.n)
                fl->pend[keep++] = fl->pend[g];
            else
                pgvec_free(&fl->pend[g].pages);
        }
        fl->npend = keep;
    }
    for (size_t g = 0; g < ngroups; g++) /* the groups' pages (their room taken above) */
        fl->pend[fl->npend++] = gv[g];
    ngroups = 0;
    append_pages(&chain, newchain->v, newchain->n);
    append_pages(&chain, fl->chain.v, fl->chain.n);
    pgvec_free(&fl->chain);
    fl->chain = chain;
    memset(&chain, 0, sizeof chain);
    fl->ndelta += r->ndelta;
out:
    for (size_t g = 0; gv && g < ngroups; g++)
        pgvec_free(&gv[g].pages);
    free(gv);
    free(by);
    pgvec_free(&touched);
    pgvec_free(&added);
    pgvec_free(&chain);
    return rc;
}

/* a page of a known free set and its place there: 0 reusable, else its pending group's txid */
typedef struct fl_known { uint64_t pgno, txid; } fl_known;

static int cmp_known(const void *a, const void *b)
{
    const fl_known *x = a, *y = b;
    return x->pgno < y->pgno ? -1 : x->pgno > y->pgno;
}

int freelist_keep_known(bs_freelist *g, const bs_freelist *old, uint64_t base_txid)
{
    size_t gi = g->npend, nk = old->reusable.n, nr = 0, nq = 0, ng = 0;
    for (size_t i = 0; i < g->npend; i++)
        if (g->pend[i].txid == base_txid)
            gi = i;
    for (size_t i = 0; i < old->npend; i++)
        nk += old->pend[i].pages.n;
    if (gi == g->npend || !nk)
        return BS_OK;
    bs_pgvec *pg = &g->pend[gi].pages;
    fl_known *k = malloc(nk * sizeof *k);
    fl_added *q = malloc((pg->n + 1) * sizeof *q); /* by txid: cmp_added */
    bs_pending *nv = NULL;
    uint64_t *rp = NULL; /* the pages that were reusable (freelist_merge sorts them) */
    int rc = BS_OK;
    if (!k || !q) {
        rc = bs_fail(BS_NOMEM, "out of memory");
        goto out;
    }
    nk = 0;
    for (size_t i = 0; i < old->reusable.n; i++)
        k[nk++] = (fl_known){old->reusable.v[i], 0};
    for (size_t i = 0; i < old->npend; i++)
        for (size_t j = 0; j < old->pend[i].pages.n; j++)
            k[nk++] = (fl_known){old->pend[i].pages.v[j], old->pend[i].txid};
    qsort(k, nk, sizeof *k, cmp_known);
    /* q: the base's pages that old knew, by their place there (reusable first) */
    for (size_t i = 0; i < pg->n; i++) {
        fl_known key = {pg->v[i], 0}, *f = bsearch(&key, k, nk, sizeof *k, cmp_known);
        if (f) {
            q[nq].txid = f->txid;
            q[nq++].pgno = f->pgno;
            nr += !f->txid;
        }
    }
    if (!nq)
        goto out;
    qsort(q, nq, sizeof *q, cmp_added); /* the nr reusable ones (txid 0) first */
    ng = added_runs(q + nr, nq - nr);
    /* every allocation before anything changes */
    if ((rc = pgvec_reserve(&g->reusable, g->reusable.n + nr)) != BS_OK ||
        (rc = bs_grow(&g->pend, &g->cappend, g->npend + ng + 1, sizeof *g->pend, 8,
                      "the pending free pages")) != BS_OK)
        goto out;
    pg = &g->pend[gi].pages; /* g->pend may have moved */
    if ((ng && !(nv = calloc(ng, sizeof *nv))) || !(rp = malloc((nr + 1) * sizeof *rp))) {
        rc = bs_fail(BS_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = added_groups(q + nr, nq - nr, nv)) != BS_OK)
        goto out;
    /* apply: nothing fails from here on */
    size_t keep = 0;
    for (size_t i = 0; i < pg->n; i++) {
        fl_known key = {pg->v[i], 0};
        if (!bsearch(&key, k, nk, sizeof *k, cmp_known))
            pg->v[keep++] = pg->v[i];
    }
    pg->n = keep;
    for (size_t i = 0; i < nr; i++)
        rp[i] = q[i].pgno;
    (void)freelist_merge(&g->reusable, rp, nr); /* capacity reserved: cannot fail */
    for (size_t n = 0; n < ng; n++) {
        g->pend[g->npend++] = nv[n];
        memset(&nv[n], 0, sizeof nv[n]);
    }
    if (!pg->n) { /* an empty group goes */
        pgvec_free(pg);
        g->pend[gi] = g->pend[--g->npend];
    }
out:
    for (size_t n = 0; nv && n < ng; n++)
        pgvec_free(&nv[n].pages);
    free(nv);
    free(rp);
    free(k);
    free(q);
    return rc;
}

