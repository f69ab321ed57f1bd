/*
 * pager.c - pages for transactions: the shared page cache, the write transaction's dirty
 * pages, page allocation and the freelist, overflow runs, spilling, meta pages and commit.
 *
 * Layer: calls io (through db->io), crc32c, and btree_verify_page (a pure function on bytes)
 * to bounds-check nodes read from disk. Called by btree.c, check.c and db.c.
 *
 * INVARIANTS (numbers as in shared/ARCHITECTURE.md; asserts cite them)
 *  1. A commit never overwrites a page the newest durable meta references: pages are written
 *     only if this transaction allocated them (beyond the base high-water mark, or taken from
 *     the freelist of the base commit, or freed and re-taken inside this transaction).
 *  2. A page freed by commit F is reusable only when every live reader's snapshot is >= F:
 *     freed pages wait in db->fl.pend[F] until pager_release_pending says so.
 *  3. Every page below page_count is reachable once or on the persisted freelist once. The
 *     freelist written by commit T holds the reusable pages, every pending group, the pages T
 *     freed (its old freelist chain included) and the pages T allocated and freed again.
 *  4. Pages read from disk are verified (CRC, pgno, type, node bounds) before anyone sees them.
 *  5. Failures are sticky: a failed write or sync during commit sets db->panic (except a disk
 *     full error while writing data pages, which leaves the durable state untouched).
 *
 * COMMIT PROTOCOL (pager_commit)
 *  a. Serialize the new freelist into freshly allocated chain pages (dirty pages).
 *  b. Write every dirty page still in memory, in page order, checksummed (spilled pages and
 *     overflow runs were already written when they were created).
 *  c. fsync (fdatasync) the file                                   [sync=True only]
 *  d. Write the meta page txid % 2 (checksummed).
 *  e. fsync                                                         [sync=True only]
 *  f. Publish: the in-memory meta, pending freed pages, cache promotion of the dirty pages.
 *  A crash before (d) completes leaves the previous meta as the newest valid one, and it
 *  references only pages this commit never touched (invariant 1). A torn meta fails its CRC.
 *
 * PAGE CACHE
 *  Readers find pages through an open-addressing table of atomic pointers without any lock;
 *  a hit sets a CLOCK bit and costs no system call. Misses, inserts and evictions take
 *  cache.mu. Evicted frames are retired with the global epoch and freed only when every
 *  transaction that may hold a pointer (announced in its epoch slot between bs_txn_enter and
 *  bs_txn_leave) has moved past that epoch.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define TOMB ((bs_frame *)(uintptr_t)1)
#define FRAME_POOL_MAX 64

/* ------------------------------------------------------------------ pgvec */

int pgvec_push(bs_pgvec *v, uint64_t pgno)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        uint64_t *nv = realloc(v->v, nc * sizeof *nv);
        if (!nv)
            return bs_fail(BS_NOMEM, "out of memory growing a page list");
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = pgno;
    return BS_OK;
}

static int pgvec_reserve(bs_pgvec *v, size_t n)
{
    if (v->cap >= n)
        return BS_OK;
    size_t nc = v->cap ? v->cap : 64;
    while (nc < n)
        nc *= 2;
    uint64_t *nv = realloc(v->v, nc * sizeof *nv);
    if (!nv)
        return bs_fail(BS_NOMEM, "out of memory growing a page list");
    v->v = nv;
    v->cap = nc;
    return BS_OK;
}

void pgvec_free(bs_pgvec *v)
{
    free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
}

static int pgvec_copy(bs_pgvec *dst, const bs_pgvec *src)
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

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}
static int cmp_asc(const void *a, const void *b) { return -cmp_desc(a, b); }

/* Merge pages (any order) into the descending-sorted reusable list. */
static int freelist_merge(bs_pgvec *reusable, uint64_t *pages, size_t n)
{
    if (!n)
        return BS_OK;
    int rc = pgvec_reserve(reusable, reusable->n + n);
    if (rc)
        return rc;
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

/* ------------------------------------------------------------------ frames */

static bs_frame *frame_new(uint32_t psize)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, sizeof(bs_frame) + psize))
        return NULL;
    bs_frame *f = p;
    f->pgno = 0;
    atomic_init(&f->ref, 0);
    f->pos = UINT32_MAX;
    f->retired_at = 0;
    f->next = NULL;
    f->gen = 0;
    return f;
}

/* ------------------------------------------------------------------ cache */

static inline uint32_t pg_hash(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static bs_ctable *ctable_new(uint32_t size)
{
    bs_ctable *t = calloc(1, sizeof(bs_ctable) + (size_t)size * sizeof(bs_frame *));
    if (!t)
        return NULL;
    t->mask = size - 1;
    for (uint32_t i = 0; i < size; i++)
        atomic_init(&t->e[i], NULL);
    return t;
}

int cache_init(bs_cache *c, uint32_t page_size, uint64_t bytes)
{
    memset(c, 0, sizeof *c);
    uint64_t cap = bytes / page_size;
    if (cap < 16)
        cap = 16;
    if (cap > (1u << 26))
        cap = 1u << 26;
    c->cap = (uint32_t)cap;
    c->page_size = page_size;
    uint32_t size = 64;
    while (size < 2 * c->cap + 16)
        size *= 2;
    bs_ctable *t = ctable_new(size);
    c->clock = calloc(c->cap, sizeof *c->clock);
    c->free_pos = malloc(c->cap * sizeof *c->free_pos);
    if (!t || !c->clock || !c->free_pos) {
        free(t);
        free(c->clock);
        free(c->free_pos);
        return bs_fail(BS_NOMEM, "out of memory for the page cache");
    }
    for (uint32_t i = 0; i < c->cap; i++)
        c->free_pos[i] = c->cap - 1 - i;
    c->nfree_pos = c->cap;
    atomic_init(&c->table, t);
    atomic_init(&c->epoch, 1);
    atomic_init(&c->slots, NULL);
    atomic_init(&c->hits, 0);
    atomic_init(&c->misses, 0);
    pthread_mutex_init(&c->mu, NULL);
    return BS_OK;
}

void cache_destroy(bs_cache *c)
{
    bs_ctable *t = atomic_load(&c->table);
    if (t) {
        for (uint32_t i = 0; i <= t->mask; i++) {
            bs_frame *f = atomic_load(&t->e[i]);
            if (f && f != TOMB)
                free(f);
        }
        free(t);
    }
    for (bs_frame *f = c->retired, *n; f; f = n) {
        n = f->next;
        free(f);
    }
    for (bs_frame *f = c->freelist, *n; f; f = n) {
        n = f->next;
        free(f);
    }
    for (bs_ctable *x = c->retired_tables, *n; x; x = n) {
        n = x->next;
        free(x);
    }
    for (bs_slot *s = atomic_load(&c->slots), *n; s; s = n) {
        n = atomic_load(&s->next);
        free(s);
    }
    free(c->clock);
    free(c->free_pos);
    pthread_mutex_destroy(&c->mu);
    memset(c, 0, sizeof *c);
}

bs_slot *cache_slot_acquire(bs_cache *c)
{
    for (bs_slot *s = atomic_load(&c->slots); s; s = atomic_load(&s->next)) {
        int zero = 0;
        if (atomic_load_explicit(&s->in_use, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong(&s->in_use, &zero, 1))
            return s;
    }
    bs_slot *s = NULL;
    if (posix_memalign((void **)&s, 64, sizeof *s))
        return NULL;
    memset(s, 0, sizeof *s);
    atomic_init(&s->epoch, 0);
    atomic_init(&s->in_use, 1);
    bs_slot *head = atomic_load(&c->slots);
    do {
        atomic_store(&s->next, head);
    } while (!atomic_compare_exchange_weak(&c->slots, &head, s));
    return s;
}

void cache_slot_release(bs_cache *c, bs_slot *s)
{
    (void)c;
    if (!s)
        return;
    atomic_store(&s->epoch, 0);
    atomic_store(&s->in_use, 0);
}

static bs_frame *cache_lookup(bs_cache *c, uint64_t pgno)
{
    bs_ctable *t = atomic_load_explicit(&c->table, memory_order_acquire);
    uint32_t i = pg_hash(pgno) & t->mask;
    for (;;) {
        bs_frame *f = atomic_load_explicit(&t->e[i], memory_order_acquire);
        if (!f)
            return NULL;
        if (f != TOMB && f->pgno == pgno)
            return f;
        i = (i + 1) & t->mask;
    }
}

/* smallest epoch any transaction announced (UINT64_MAX if none) */
static uint64_t cache_min_epoch(bs_cache *c)
{
    uint64_t m = UINT64_MAX;
    atomic_thread_fence(memory_order_seq_cst);
    for (bs_slot *s = atomic_load(&c->slots); s; s = atomic_load(&s->next)) {
        uint64_t e = atomic_load(&s->epoch);
        if (e && e < m)
            m = e;
    }
    return m;
}

/* under c->mu: free what no reader can still hold */
static void cache_reclaim(bs_cache *c)
{
    if (!c->retired && !c->retired_tables)
        return;
    uint64_t m = cache_min_epoch(c);
    /* the queue is ordered by retirement: free from the front while nobody can hold them */
    while (c->retired && c->retired->retired_at < m) {
        bs_frame *f = c->retired;
        c->retired = f->next;
        if (!c->retired)
            c->retired_tail = NULL;
        if (c->nfree < FRAME_POOL_MAX) {
            f->next = c->freelist;
            c->freelist = f;
            c->nfree++;
        } else {
            free(f);
        }
    }
    bs_ctable **tp = &c->retired_tables;
    while (*tp) {
        bs_ctable *t = *tp;
        if (t->retired_at < m) {
            *tp = t->next;
            free(t);
        } else {
            tp = &t->next;
        }
    }
}

static void cache_retire(bs_cache *c, bs_frame *f)
{
    f->retired_at = atomic_fetch_add(&c->epoch, 1);
    f->next = NULL;
    if (c->retired_tail)
        c->retired_tail->next = f;
    else
        c->retired = f;
    c->retired_tail = f;
}

/* under c->mu: unlink the table entry of f */
static void cache_unlink(bs_cache *c, bs_frame *f)
{
    bs_ctable *t = atomic_load_explicit(&c->table, memory_order_relaxed);
    uint32_t i = pg_hash(f->pgno) & t->mask;
    for (;;) {
        bs_frame *x = atomic_load_explicit(&t->e[i], memory_order_relaxed);
        if (!x)
            return;
        if (x == f) {
            atomic_store(&t->e[i], TOMB);
            c->tlive--;
            c->ttomb++;
            break;
        }
        i = (i + 1) & t->mask;
    }
    if (f->pos != UINT32_MAX) {
        c->clock[f->pos] = NULL;
        c->free_pos[c->nfree_pos++] = f->pos;
        f->pos = UINT32_MAX;
    }
    c->nframes--;
    cache_retire(c, f);
}

/* under c->mu: rebuild the table without tombstones */
static int cache_rebuild(bs_cache *c)
{
    bs_ctable *old = atomic_load_explicit(&c->table, memory_order_relaxed);
    bs_ctable *t = ctable_new(old->mask + 1);
    if (!t)
        return BS_NOMEM;
    for (uint32_t i = 0; i <= old->mask; i++) {
        bs_frame *f = atomic_load_explicit(&old->e[i], memory_order_relaxed);
        if (!f || f == TOMB)
            continue;
        uint32_t j = pg_hash(f->pgno) & t->mask;
        while (atomic_load_explicit(&t->e[j], memory_order_relaxed))
            j = (j + 1) & t->mask;
        atomic_init(&t->e[j], f);
    }
    atomic_store(&c->table, t);
    c->ttomb = 0;
    old->retired_at = atomic_fetch_add(&c->epoch, 1);
    old->next = c->retired_tables;
    c->retired_tables = old;
    return BS_OK;
}

/* under c->mu: make room for one more frame (CLOCK) and return its clock position */
static uint32_t cache_make_room(bs_cache *c)
{
    if (c->nfree_pos)
        return c->free_pos[--c->nfree_pos];
    for (uint64_t spins = 0;; spins++) {
        uint32_t pos = c->hand;
        c->hand = (c->hand + 1) % c->cap;
        bs_frame *f = c->clock[pos];
        if (!f)
            return pos;
        if (atomic_load_explicit(&f->ref, memory_order_relaxed) && spins < 2ull * c->cap) {
            atomic_store_explicit(&f->ref, 0, memory_order_relaxed);
            continue;
        }
        cache_unlink(c, f);
        return c->free_pos[--c->nfree_pos];
    }
}

/* Insert a verified frame for pgno; if one is already there, keep the old one and give the
 * new frame back (*out = the cached frame). Replaces instead when `replace`. Takes c->mu. */
static void cache_insert(bs_cache *c, bs_frame *f, int replace, bs_frame **out)
{
    pthread_mutex_lock(&c->mu);
    bs_frame *cur = cache_lookup(c, f->pgno);
    if (cur) {
        if (!replace) {
            *out = cur;
            f->next = c->freelist;
            c->freelist = f;
            c->nfree++;
            pthread_mutex_unlock(&c->mu);
            return;
        }
        cache_unlink(c, cur);
    }
    bs_ctable *t = atomic_load_explicit(&c->table, memory_order_relaxed);
    if ((uint64_t)(c->tlive + c->ttomb + 1) * 4 > (uint64_t)(t->mask + 1) * 3) {
        if (cache_rebuild(c) == BS_OK)
            t = atomic_load_explicit(&c->table, memory_order_relaxed);
    }
    uint32_t pos = cache_make_room(c);
    t = atomic_load_explicit(&c->table, memory_order_relaxed);
    uint32_t i = pg_hash(f->pgno) & t->mask;
    for (;;) {
        bs_frame *x = atomic_load_explicit(&t->e[i], memory_order_relaxed);
        if (!x || x == TOMB) {
            if (x == TOMB)
                c->ttomb--;
            break;
        }
        i = (i + 1) & t->mask;
    }
    f->pos = pos;
    c->clock[pos] = f;
    atomic_store_explicit(&f->ref, 1, memory_order_relaxed);
    c->nframes++;
    c->tlive++;
    atomic_store_explicit(&t->e[i], f, memory_order_release);
    cache_reclaim(c);
    pthread_mutex_unlock(&c->mu);
    *out = f;
}

static bs_frame *cache_frame_alloc(bs_cache *c)
{
    bs_frame *f = NULL;
    pthread_mutex_lock(&c->mu);
    cache_reclaim(c);
    if (c->freelist) {
        f = c->freelist;
        c->freelist = f->next;
        c->nfree--;
    }
    pthread_mutex_unlock(&c->mu);
    if (!f)
        f = frame_new(c->page_size);
    else {
        f->pos = UINT32_MAX;
        f->next = NULL;
        f->gen = 0;
    }
    return f;
}

void cache_evict(bs_db *db, uint64_t pgno)
{
    bs_cache *c = &db->cache;
    if (!cache_lookup(c, pgno))
        return;
    pthread_mutex_lock(&c->mu);
    bs_frame *f = cache_lookup(c, pgno);
    if (f)
        cache_unlink(c, f);
    pthread_mutex_unlock(&c->mu);
}

void pager_enter(bs_txn *txn)
{
    bs_cache *c = &txn->db->cache;
    uint64_t e = atomic_load_explicit(&c->epoch, memory_order_acquire);
    atomic_store_explicit(&txn->slot->epoch, e, memory_order_release);
    /* StoreLoad: the announcement is visible before we read any table entry (pairs with the
     * fence in cache_min_epoch) */
    atomic_thread_fence(memory_order_seq_cst);
}

void pager_leave(bs_txn *txn)
{
    atomic_store_explicit(&txn->slot->epoch, 0, memory_order_release);
}

/* ------------------------------------------------------------------ verification */

static const char *type_name(int t)
{
    switch (t) {
    case PT_META: return "meta";
    case PT_BRANCH: return "branch";
    case PT_LEAF: return "leaf";
    case PT_OVERFLOW: return "overflow";
    case PT_FREELIST: return "freelist";
    default: return "unknown";
    }
}

static uint32_t page_crc(const uint8_t *pg, uint32_t psize)
{
    return bs_crc32c(0, pg + 4, psize - 4);
}

/* CRC, pgno, writer txid, type and structure of a page image just read from disk
 * (invariant 4). A page written by a transaction newer than the reader's snapshot can only be
 * a page that was freed and reused after a meta page went bad: refuse it. */
static int verify_page(bs_db *db, const uint8_t *pg, uint64_t pgno, uint64_t page_count,
                       uint64_t max_txid)
{
    uint32_t P = db->page_size;
    if (get32(pg + PH_CRC) != page_crc(pg, P)) {
        int zero = 1;
        for (uint32_t i = 0; i < P && zero; i++)
            zero = pg[i] == 0;
        return bs_fail(BS_CORRUPT, "page %llu: checksum mismatch%s", (unsigned long long)pgno,
                       zero ? " (page is all zeros)" : "");
    }
    if (pg_pgno(pg) != pgno)
        return bs_fail(BS_CORRUPT, "page %llu: header says it is page %llu (misdirected write)",
                       (unsigned long long)pgno, (unsigned long long)pg_pgno(pg));
    if (pg_txid(pg) > max_txid)
        return bs_fail(BS_CORRUPT, "page %llu: written by transaction %llu, newer than the "
                       "snapshot %llu", (unsigned long long)pgno,
                       (unsigned long long)pg_txid(pg), (unsigned long long)max_txid);
    int t = pg_type(pg);
    if (t == PT_BRANCH || t == PT_LEAF)
        return btree_verify_page(pg, P, page_count);
    if (t == PT_FREELIST) {
        uint32_t na = get32(pg + FL_NADD), nd = get32(pg + FL_NDEL);
        if (na > fmt_freelist_cap(P) || nd > fmt_freelist_cap(P) - na ||
            ((pg[PH_FLAGS] & FL_F_BASE) && nd))
            return bs_fail(BS_CORRUPT, "page %llu: freelist page claims %u + %u entries",
                           (unsigned long long)pgno, na, nd);
        uint64_t next = get64(pg + FL_NEXT);
        if (next && (next < BS_META_PAGES || next >= page_count))
            return bs_fail(BS_CORRUPT, "page %llu: freelist next page %llu out of range",
                           (unsigned long long)pgno, (unsigned long long)next);
        for (uint32_t i = 0; i < na + nd; i++) {
            uint64_t x = get64(pg + FL_ENTRIES + 8 * i);
            if (x < BS_META_PAGES || x >= page_count)
                return bs_fail(BS_CORRUPT, "page %llu: free page number %llu out of range",
                               (unsigned long long)pgno, (unsigned long long)x);
        }
        return BS_OK;
    }
    return bs_fail(BS_CORRUPT, "page %llu: unexpected page type %d (%s)", (unsigned long long)pgno,
                   t, type_name(t));
}

static int read_page(bs_db *db, uint64_t pgno, uint8_t *buf)
{
    size_t got = 0;
    uint32_t P = db->page_size;
    int err = db->io->read_at(db->file, buf, P, pgno * (uint64_t)P, &got);
    if (err)
        return bs_fail_io(err, "reading page %llu", (unsigned long long)pgno);
    if (got < P)
        return bs_fail(BS_CORRUPT, "page %llu: beyond the end of the file (file truncated?)",
                       (unsigned long long)pgno);
    return BS_OK;
}

static inline int check_type(const uint8_t *pg, uint64_t pgno, int type)
{
    if (type && pg_type(pg) != type)
        return bs_fail(BS_CORRUPT, "page %llu: expected a %s page, found %s",
                       (unsigned long long)pgno, type_name(type), type_name(pg_type(pg)));
    return BS_OK;
}

/* ------------------------------------------------------------------ dirty map */

static inline size_t dirty_slot(uint64_t pgno, size_t mask) { return pg_hash(pgno) & mask; }

static bs_dirty_ent *dirty_find(bs_txn *txn, uint64_t pgno)
{
    bs_dirty *d = &txn->dirty;
    if (!d->n)
        return NULL;
    size_t i = dirty_slot(pgno, d->mask);
    for (;;) {
        bs_dirty_ent *e = &d->e[i];
        if (e->pgno == pgno)
            return e;
        if (!e->pgno)
            return NULL;
        i = (i + 1) & d->mask;
    }
}

static int dirty_grow(bs_dirty *d)
{
    size_t nsize = d->e ? (d->mask + 1) * 2 : 256;
    bs_dirty_ent *ne = calloc(nsize, sizeof *ne);
    if (!ne)
        return bs_fail(BS_NOMEM, "out of memory for dirty pages");
    if (d->e) {
        for (size_t i = 0; i <= d->mask; i++) {
            if (!d->e[i].pgno)
                continue;
            size_t j = dirty_slot(d->e[i].pgno, nsize - 1);
            while (ne[j].pgno)
                j = (j + 1) & (nsize - 1);
            ne[j] = d->e[i];
        }
        free(d->e);
    }
    d->e = ne;
    d->mask = nsize - 1;
    return BS_OK;
}

static int dirty_add(bs_txn *txn, uint64_t pgno, bs_frame *fr, uint64_t run, bs_dirty_ent **out)
{
    bs_dirty *d = &txn->dirty;
    int rc;
    if (!d->e || (d->n + 1) * 2 > d->mask + 1)
        if ((rc = dirty_grow(d)) != BS_OK)
            return rc;
    size_t i = dirty_slot(pgno, d->mask);
    while (d->e[i].pgno)
        i = (i + 1) & d->mask;
    bs_dirty_ent *e = &d->e[i];
    e->pgno = pgno;
    e->fr = fr;
    e->gen = txn->gen;
    e->run = run;
    e->shadowed = false;
    d->n++;
    if (fr)
        d->nmem++;
    if (out)
        *out = e;
    return BS_OK;
}

/* remove an entry (backward-shift deletion keeps probe chains intact) */
static void dirty_remove(bs_txn *txn, bs_dirty_ent *e)
{
    bs_dirty *d = &txn->dirty;
    if (e->fr) {
        free(e->fr);
        d->nmem--;
    }
    size_t i = (size_t)(e - d->e);
    size_t j = i;
    for (;;) {
        j = (j + 1) & d->mask;
        if (!d->e[j].pgno)
            break;
        size_t k = dirty_slot(d->e[j].pgno, d->mask);
        /* can e[j] move to i? only if its home k is not in (i, j] cyclically */
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            d->e[i] = d->e[j];
            i = j;
        }
    }
    memset(&d->e[i], 0, sizeof d->e[i]);
    d->n--;
}

static void dirty_clear(bs_txn *txn)
{
    bs_dirty *d = &txn->dirty;
    if (d->e) {
        for (size_t i = 0; i <= d->mask; i++)
            if (d->e[i].pgno && d->e[i].fr)
                free(d->e[i].fr);
        free(d->e);
    }
    memset(d, 0, sizeof *d);
}

/* ------------------------------------------------------------------ allocation */

static int alloc_pgno(bs_txn *txn, uint64_t *pgno)
{
    bs_db *db = txn->db;
    int rc;
    if (txn->local_free.n) {
        *pgno = txn->local_free.v[--txn->local_free.n];
        return BS_OK;
    }
    if (db->fl.reusable.n) {
        uint64_t p = db->fl.reusable.v[db->fl.reusable.n - 1];
        if ((rc = pgvec_push(&txn->alloc_from_free, p)) != BS_OK)
            return rc;
        db->fl.reusable.n--;
        cache_evict(db, p);
        *pgno = p;
        return BS_OK;
    }
    if (txn->page_count >= (UINT64_MAX >> 1) / db->page_size)
        return bs_fail(BS_FULL, "database reached its maximum size");
    *pgno = txn->page_count++;
    return BS_OK;
}

/* n contiguous pages: from the reusable list if it has such a run, else at the end */
static int alloc_run(bs_txn *txn, uint64_t n, uint64_t *first)
{
    bs_db *db = txn->db;
    int rc;
    if (n == 1)
        return alloc_pgno(txn, first);
    bs_pgvec *r = &db->fl.reusable;
    if (r->n >= n) {
        /* descending list: a run is v[i] .. v[i+n-1] with v[i] - v[i+n-1] == n-1 */
        size_t best = SIZE_MAX;
        for (size_t i = r->n - n + 1; i-- > 0;) {
            if (r->v[i] - r->v[i + n - 1] == n - 1) {
                best = i;
                break;
            }
        }
        if (best != SIZE_MAX) {
            if ((rc = pgvec_reserve(&txn->alloc_from_free, txn->alloc_from_free.n + n)) != BS_OK)
                return rc;
            for (size_t k = 0; k < n; k++) {
                uint64_t p = r->v[best + k];
                txn->alloc_from_free.v[txn->alloc_from_free.n++] = p;
                cache_evict(db, p);
            }
            uint64_t lowest = r->v[best + n - 1];
            memmove(r->v + best, r->v + best + n, (r->n - best - n) * sizeof *r->v);
            r->n -= n;
            *first = lowest;
            return BS_OK;
        }
    }
    if (txn->page_count + n >= (UINT64_MAX >> 1) / db->page_size)
        return bs_fail(BS_FULL, "database reached its maximum size");
    *first = txn->page_count;
    txn->page_count += n;
    return BS_OK;
}

static void init_header(uint8_t *pg, uint32_t P, int type, uint64_t pgno, uint64_t txid)
{
    memset(pg, 0, PH_SIZE);
    pg[PH_TYPE] = (uint8_t)type;
    put64(pg + PH_PGNO, pgno);
    put64(pg + PH_TXID, txid);
    if (type == PT_BRANCH || type == PT_LEAF)
        pg_set_upper(pg, P);
}

int pager_new(bs_txn *txn, int type, uint8_t **out, uint64_t *pgno)
{
    bs_db *db = txn->db;
    uint64_t p;
    int rc;
    bs_frame *f = frame_new(db->page_size);
    if (!f)
        return bs_fail(BS_NOMEM, "out of memory for a new page");
    if ((rc = alloc_pgno(txn, &p)) != BS_OK)
        goto fail;
    f->pgno = p;
    memset(f->data, 0, db->page_size);
    init_header(f->data, db->page_size, type, p, txn->txid);
    if ((rc = dirty_add(txn, p, f, 0, NULL)) != BS_OK) {
        pgvec_push(&txn->local_free, p);
        goto fail;
    }
    *out = f->data;
    *pgno = p;
    return BS_OK;
fail:
    free(f);
    return rc;
}

/* Read a spilled page of this txn back into memory. */
static int dirty_reload(bs_txn *txn, bs_dirty_ent *e)
{
    bs_db *db = txn->db;
    int rc;
    if (txn->noio)
        return BS_WOULDBLOCK;
    bs_frame *f = frame_new(db->page_size);
    if (!f)
        return bs_fail(BS_NOMEM, "out of memory reloading a page");
    if ((rc = read_page(db, e->pgno, f->data)) != BS_OK ||
        (rc = verify_page(db, f->data, e->pgno, txn->page_count, txn->txid)) != BS_OK) {
        free(f);
        return rc;
    }
    f->pgno = e->pgno;
    e->fr = f;
    txn->dirty.nmem++;
    return BS_OK;
}

static int load_shared(bs_txn *txn, uint64_t pgno, const uint8_t **out)
{
    bs_db *db = txn->db;
    bs_cache *c = &db->cache;
    bs_frame *f = cache_lookup(c, pgno);
    if (BS_LIKELY(f != NULL)) {
        if (!atomic_load_explicit(&f->ref, memory_order_relaxed))
            atomic_store_explicit(&f->ref, 1, memory_order_relaxed);
        txn->hits++;
        *out = f->data;
        return BS_OK;
    }
    bool nowait = false;
    if (txn->noio) {
        /* no-I/O mode (GIL held): a page the OS has cached costs a copy, not a wait */
        if (!db->io->read_nowait || atomic_load_explicit(&db->nowait_off, memory_order_relaxed))
            return BS_WOULDBLOCK;
        nowait = true;
    }
    txn->misses++;
    int rc;
    f = cache_frame_alloc(c);
    if (!f)
        return bs_fail(BS_NOMEM, "out of memory for the page cache");
    if (nowait) {
        size_t got = 0;
        int err = db->io->read_nowait(db->file, f->data, db->page_size,
                                      pgno * (uint64_t)db->page_size, &got);
        if (err || got != db->page_size) {
            if (err && err != EAGAIN)
                atomic_store(&db->nowait_off, 1);
            free(f);
            return BS_WOULDBLOCK;
        }
        rc = BS_OK;
    } else {
        rc = read_page(db, pgno, f->data);
    }
    if (rc != BS_OK ||
        (rc = verify_page(db, f->data, pgno, txn->page_count, txn->txid)) != BS_OK) {
        free(f);
        return rc;
    }
    assert(pg_pgno(f->data) == pgno); /* invariant 4: verified before it is shared */
    f->pgno = pgno;
    cache_insert(c, f, 0, &f);
    *out = f->data;
    return BS_OK;
}

int pager_get(bs_txn *txn, uint64_t pgno, int type, const uint8_t **out)
{
    int rc;
    if (BS_UNLIKELY(pgno < BS_META_PAGES || pgno >= txn->page_count))
        return bs_fail(BS_CORRUPT, "page %llu: out of range (page count %llu)",
                       (unsigned long long)pgno, (unsigned long long)txn->page_count);
    if (txn->write && txn->dirty.n) {
        bs_dirty_ent *e = dirty_find(txn, pgno);
        if (e) {
            if (!e->fr && (rc = dirty_reload(txn, e)) != BS_OK)
                return rc;
            *out = e->fr->data;
            return check_type(*out, pgno, type);
        }
    }
    if ((rc = load_shared(txn, pgno, out)) != BS_OK)
        return rc;
    return check_type(*out, pgno, type);
}

bool pager_owned(bs_txn *txn, uint64_t pgno)
{
    if (!txn->write)
        return false;
    bs_dirty_ent *e = dirty_find(txn, pgno);
    return e && !e->shadowed && e->gen >= txn->floor;
}

/* An owned page that a savepoint level must keep: hide it until release/rollback. */
static int shadow(bs_txn *txn, bs_dirty_ent *e)
{
    e->shadowed = true;
    return pgvec_push(&txn->sp[txn->nsp - 1].shadowed, e->pgno);
}

int pager_write(bs_txn *txn, uint64_t pgno, uint8_t **out, uint64_t *newpgno)
{
    bs_db *db = txn->db;
    int rc;
    bs_dirty_ent *e = dirty_find(txn, pgno);
    if (e && e->gen >= txn->floor) {
        if (!e->fr && (rc = dirty_reload(txn, e)) != BS_OK)
            return rc;
        *out = e->fr->data;
        *newpgno = pgno;
        return BS_OK;
    }
    const uint8_t *src;
    if (e) {
        if (!e->fr && (rc = dirty_reload(txn, e)) != BS_OK)
            return rc;
        src = e->fr->data;
    } else {
        /* The caller read this page moments ago, but another thread may have evicted it from
         * the shared cache since: reload it even in no-I/O mode (rare), because the caller may
         * already have changed the tree above it. */
        bool noio = txn->noio;
        txn->noio = false;
        rc = pager_get(txn, pgno, 0, &src);
        txn->noio = noio;
        if (rc != BS_OK)
            return rc;
    }
    uint8_t *dst;
    uint64_t np;
    if ((rc = pager_new(txn, pg_type(src), &dst, &np)) != BS_OK)
        return rc;
    memcpy(dst + PH_SIZE, src + PH_SIZE, db->page_size - PH_SIZE);
    memcpy(dst + PH_NKEYS, src + PH_NKEYS, 2);
    memcpy(dst + PH_UPPER, src + PH_UPPER, 8);
    /* the old copy: committed -> freed at commit; ours from an outer savepoint -> shadowed */
    e = dirty_find(txn, pgno);
    if (e)
        rc = shadow(txn, e);
    else
        rc = pgvec_push(&txn->freed, pgno);
    if (rc)
        return rc;
    *out = dst;
    *newpgno = np;
    return BS_OK;
}

int pager_free(bs_txn *txn, uint64_t pgno)
{
    bs_dirty_ent *e = dirty_find(txn, pgno);
    if (e) {
        if (e->gen >= txn->floor) {
            dirty_remove(txn, e);
            return pgvec_push(&txn->local_free, pgno);
        }
        return shadow(txn, e);
    }
    return pgvec_push(&txn->freed, pgno);
}

#ifndef NDEBUG
/* Invariant 1: a page this transaction writes lies beyond the base commit's high-water mark
 * or was on the base commit's freelist (taken by this transaction). Debug builds only. */
static bool page_is_ours_to_write(bs_txn *txn, uint64_t pgno)
{
    if (pgno >= txn->meta.page_count)
        return true;
    for (size_t i = 0; i < txn->alloc_from_free.n; i++)
        if (txn->alloc_from_free.v[i] == pgno)
            return true;
    return false;
}
#endif

/* ------------------------------------------------------------------ overflow runs */

int pager_ov_write(bs_txn *txn, const void *data, size_t len, uint64_t *pgno)
{
    bs_db *db = txn->db;
    uint32_t P = db->page_size;
    int rc;
    if (txn->noio)
        return BS_WOULDBLOCK;
    if ((uint64_t)len > UINT32_MAX)
        return bs_fail(BS_TOOBIG, "value of %zu bytes is over the limit of 4294967295", len);
    uint64_t n = fmt_overflow_pages(P, len);
    uint64_t first;
    if ((rc = alloc_run(txn, n, &first)) != BS_OK)
        return rc;
    uint8_t hdr[PH_SIZE];
    init_header(hdr, P, PT_OVERFLOW, first, txn->txid);
    put32(hdr + PH_UPPER, (uint32_t)n);
    put32(hdr + PH_FRAG, (uint32_t)len);
    uint32_t crc = bs_crc32c(0, hdr + 4, PH_SIZE - 4);
    crc = bs_crc32c(crc, data, len);
    put32(hdr + PH_CRC, crc);
    /* pad the last page so that the file stays a whole number of pages */
    static const uint8_t zeros[BS_PAGE_MAX];
    size_t pad = (size_t)(n * P - PH_SIZE - len);
    struct iovec iov[3] = {{hdr, PH_SIZE}, {(void *)data, len}, {(void *)zeros, pad}};
    int k = 1;
    if (len)
        iov[k++] = (struct iovec){(void *)data, len};
    if (pad)
        iov[k++] = (struct iovec){(void *)zeros, pad};
    assert(page_is_ours_to_write(txn, first)); /* invariant 1 */
    int err = db->io->writev_at(db->file, iov, k, first * (uint64_t)P);
    if (err) {
        rc = bs_fail_io(err, "writing overflow pages %llu..%llu", (unsigned long long)first,
                        (unsigned long long)(first + n - 1));
        goto fail;
    }
    txn->wrote_early = true;
    if ((rc = dirty_add(txn, first, NULL, n, NULL)) != BS_OK)
        goto fail;
    *pgno = first;
    return BS_OK;
fail:
    for (uint64_t k = 0; k < n; k++)
        pgvec_push(&txn->local_free, first + k);
    return rc;
}

static int ov_header(bs_txn *txn, uint64_t pgno, size_t len, uint8_t *hdr, uint64_t *npages)
{
    bs_db *db = txn->db;
    uint64_t n = fmt_overflow_pages(db->page_size, len);
    if (pgno < BS_META_PAGES || pgno + n > txn->page_count || pgno + n < pgno)
        return bs_fail(BS_CORRUPT, "overflow run at page %llu (%llu pages) out of range",
                       (unsigned long long)pgno, (unsigned long long)n);
    size_t got = 0;
    int err = db->io->read_at(db->file, hdr, PH_SIZE, pgno * (uint64_t)db->page_size, &got);
    if (err)
        return bs_fail_io(err, "reading overflow page %llu", (unsigned long long)pgno);
    if (got < PH_SIZE)
        return bs_fail(BS_CORRUPT, "page %llu: beyond the end of the file (file truncated?)",
                       (unsigned long long)pgno);
    if (pg_type(hdr) != PT_OVERFLOW || pg_pgno(hdr) != pgno || get32(hdr + PH_UPPER) != n ||
        get32(hdr + PH_FRAG) != len || pg_txid(hdr) > txn->txid)
        return bs_fail(BS_CORRUPT, "page %llu: bad overflow header (type %d, pgno %llu, "
                       "%u pages, %u bytes; expected %llu pages, %zu bytes)",
                       (unsigned long long)pgno, pg_type(hdr),
                       (unsigned long long)pg_pgno(hdr), get32(hdr + PH_UPPER),
                       get32(hdr + PH_FRAG), (unsigned long long)n, len);
    *npages = n;
    return BS_OK;
}

static int ov_read_data(bs_txn *txn, uint64_t pgno, size_t len, uint8_t *dst)
{
    bs_db *db = txn->db;
    size_t got = 0;
    if (!len)
        return BS_OK;
    int err = db->io->read_at(db->file, dst, len, pgno * (uint64_t)db->page_size + PH_SIZE, &got);
    if (err)
        return bs_fail_io(err, "reading overflow pages from %llu", (unsigned long long)pgno);
    if (got < len)
        return bs_fail(BS_CORRUPT, "page %llu: overflow run beyond the end of the file",
                       (unsigned long long)pgno);
    return BS_OK;
}

int pager_ov_read(bs_txn *txn, uint64_t pgno, size_t len, void *dst)
{
    uint8_t hdr[PH_SIZE];
    uint64_t n;
    int rc;
    if (txn->noio)
        return BS_WOULDBLOCK;
    if ((rc = ov_header(txn, pgno, len, hdr, &n)) != BS_OK ||
        (rc = ov_read_data(txn, pgno, len, dst)) != BS_OK)
        return rc;
    uint32_t crc = bs_crc32c(bs_crc32c(0, hdr + 4, PH_SIZE - 4), dst, len);
    if (crc != get32(hdr + PH_CRC))
        return bs_fail(BS_CORRUPT, "page %llu: overflow run checksum mismatch",
                       (unsigned long long)pgno);
    return BS_OK;
}

int pager_ov_check(bs_txn *txn, uint64_t pgno, size_t len, int full)
{
    uint8_t hdr[PH_SIZE];
    uint64_t n;
    int rc;
    if ((rc = ov_header(txn, pgno, len, hdr, &n)) != BS_OK || !full)
        return rc;
    size_t chunk = len < (1u << 20) ? len : (1u << 20);
    uint8_t *buf = malloc(chunk ? chunk : 1);
    if (!buf)
        return bs_fail(BS_NOMEM, "out of memory checking an overflow run");
    uint32_t crc = bs_crc32c(0, hdr + 4, PH_SIZE - 4);
    bs_db *db = txn->db;
    for (size_t off = 0; off < len; off += chunk) {
        size_t k = len - off < chunk ? len - off : chunk, got = 0;
        int err = db->io->read_at(db->file, buf, k,
                                  pgno * (uint64_t)db->page_size + PH_SIZE + off, &got);
        if (err) {
            rc = bs_fail_io(err, "reading overflow pages from %llu", (unsigned long long)pgno);
            break;
        }
        if (got < k) {
            rc = bs_fail(BS_CORRUPT, "page %llu: overflow run beyond the end of the file",
                         (unsigned long long)pgno);
            break;
        }
        crc = bs_crc32c(crc, buf, k);
    }
    free(buf);
    if (rc == BS_OK && crc != get32(hdr + PH_CRC))
        rc = bs_fail(BS_CORRUPT, "page %llu: overflow run checksum mismatch",
                     (unsigned long long)pgno);
    return rc;
}

int pager_ov_free(bs_txn *txn, uint64_t pgno, size_t len)
{
    uint64_t n = fmt_overflow_pages(txn->db->page_size, len);
    bs_pgvec *to = &txn->freed;
    bs_dirty_ent *e = dirty_find(txn, pgno);
    int rc;
    if (e) {
        if (e->gen < txn->floor)
            return shadow(txn, e);
        dirty_remove(txn, e);
        to = &txn->local_free;
    }
    if ((rc = pgvec_reserve(to, to->n + n)) != BS_OK)
        return rc;
    for (uint64_t k = 0; k < n; k++)
        to->v[to->n++] = pgno + k;
    return BS_OK;
}

/* ------------------------------------------------------------------ writing pages */

static int cmp_ent(const void *a, const void *b)
{
    uint64_t x = (*(bs_dirty_ent *const *)a)->pgno, y = (*(bs_dirty_ent *const *)b)->pgno;
    return x < y ? -1 : x > y;
}


/* Write the given in-memory entries (sorted by pgno), coalescing neighbours into writev. */
static int write_entries(bs_txn *txn, bs_dirty_ent **ents, size_t n)
{
    bs_db *db = txn->db;
    uint32_t P = db->page_size;
    struct iovec iov[256];
    size_t i = 0;
    while (i < n) {
        size_t k = 0;
        uint64_t start = ents[i]->pgno;
        while (i < n && k < 256 && ents[i]->pgno == start + k) {
            assert(page_is_ours_to_write(txn, ents[i]->pgno)); /* invariant 1 */
            uint8_t *pg = ents[i]->fr->data;
            put32(pg + PH_CRC, page_crc(pg, P));
            iov[k].iov_base = pg;
            iov[k].iov_len = P;
            k++;
            i++;
        }
        int err = db->io->writev_at(db->file, iov, (int)k, start * (uint64_t)P);
        if (err)
            return bs_fail_io(err, "writing pages %llu..%llu", (unsigned long long)start,
                              (unsigned long long)(start + k - 1));
    }
    return BS_OK;
}

/* in-memory entries (optionally only leaves), sorted by pgno */
static int collect(bs_txn *txn, int leaves_only, bs_dirty_ent ***out, size_t *n)
{
    bs_dirty *d = &txn->dirty;
    bs_dirty_ent **v = malloc((d->nmem + 1) * sizeof *v);
    if (!v)
        return bs_fail(BS_NOMEM, "out of memory collecting dirty pages");
    size_t k = 0;
    for (size_t i = 0; d->e && i <= d->mask; i++) {
        bs_dirty_ent *e = &d->e[i];
        if (!e->pgno || !e->fr || e->shadowed)
            continue;
        if (leaves_only && pg_type(e->fr->data) != PT_LEAF)
            continue;
        v[k++] = e;
    }
    qsort(v, k, sizeof *v, cmp_ent);
    *out = v;
    *n = k;
    return BS_OK;
}

int pager_spill(bs_txn *txn)
{
    if (txn->dirty.nmem <= txn->db->spill_limit || txn->noio)
        return BS_OK;
    for (int pass = 0; pass < 2 && txn->dirty.nmem > txn->db->spill_limit / 2; pass++) {
        bs_dirty_ent **v;
        size_t n;
        int rc = collect(txn, pass == 0, &v, &n);
        if (rc)
            return rc;
        txn->wrote_early = true;
        rc = write_entries(txn, v, n);
        if (rc == BS_OK) {
            for (size_t i = 0; i < n; i++) {
                free(v[i]->fr);
                v[i]->fr = NULL;
                txn->dirty.nmem--;
            }
        }
        free(v);
        if (rc) {
            txn->failed = true;
            return rc;
        }
    }
    return BS_OK;
}

/* ------------------------------------------------------------------ meta pages */

static void meta_encode(const bs_meta *m, uint32_t P, uint8_t *pg)
{
    memset(pg, 0, P);
    pg[PH_TYPE] = PT_META;
    put64(pg + PH_PGNO, m->txid % 2);
    put64(pg + PH_TXID, m->txid);
    memcpy(pg + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN);
    put32(pg + META_VERSION, BS_FORMAT_VERSION);
    put32(pg + META_PAGESIZE, P);
    put64(pg + META_PAGECOUNT, m->page_count);
    put64(pg + META_FL_HEAD, m->fl_head);
    put64(pg + META_FL_COUNT, m->fl_count);
    const bs_tree *t[2] = {&m->main, &m->catalog};
    for (int i = 0; i < 2; i++) {
        uint8_t *r = pg + (i ? META_CATALOG : META_DEFAULT);
        put64(r + BREC_ROOT, t[i]->root);
        put64(r + BREC_COUNT, t[i]->count);
        put32(r + BREC_DEPTH, t[i]->depth);
    }
    put32(pg + META_LIST_N, m->nlist);
    for (uint32_t i = 0; i < m->nlist; i++) {
        put64(pg + META_LIST + META_LIST_ENT * i, m->list[i].pgno);
        put32(pg + META_LIST + META_LIST_ENT * i + 8, m->list[i].crc);
    }
    put32(pg + PH_CRC, page_crc(pg, P));
}

static int tree_decode(const uint8_t *r, uint64_t page_count, bs_tree *t)
{
    t->root = get64(r + BREC_ROOT);
    t->count = get64(r + BREC_COUNT);
    t->depth = get32(r + BREC_DEPTH);
    t->dirty = t->needs_rebalance = false;
    if (t->root == 0)
        return (t->depth == 0 && t->count == 0) ? 0 : -1;
    if (t->root < BS_META_PAGES || t->root >= page_count || t->depth < 1 ||
        t->depth > BS_MAX_DEPTH)
        return -1;
    return 0;
}

/* 0 valid, -1 invalid; *why says what */
static int meta_decode(const uint8_t *pg, uint32_t P, uint64_t slot, bs_meta *m, const char **why)
{
    if (memcmp(pg + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN) != 0)
        return *why = "no magic", -1;
    if (get32(pg + META_VERSION) > BS_FORMAT_VERSION)
        return *why = "newer version", -1;
    if (get32(pg + META_PAGESIZE) != P)
        return *why = "page size", -1;
    if (get32(pg + PH_CRC) != page_crc(pg, P))
        return *why = "checksum", -1;
    if (pg_type(pg) != PT_META || pg_pgno(pg) != slot || get32(pg + META_VERSION) == 0)
        return *why = "header", -1;
    m->txid = pg_txid(pg);
    m->page_count = get64(pg + META_PAGECOUNT);
    m->fl_head = get64(pg + META_FL_HEAD);
    m->fl_count = get64(pg + META_FL_COUNT);
    if (m->page_count < BS_META_PAGES || m->page_count > (UINT64_MAX >> 1) / P)
        return *why = "fields", -1;
    if (m->fl_head && (m->fl_head < BS_META_PAGES || m->fl_head >= m->page_count))
        return *why = "freelist head", -1;
    if (m->fl_count >= m->page_count)
        return *why = "freelist count", -1;
    if (tree_decode(pg + META_DEFAULT, m->page_count, &m->main) ||
        tree_decode(pg + META_CATALOG, m->page_count, &m->catalog))
        return *why = "tree record", -1;
    m->nlist = get32(pg + META_LIST_N);
    if (m->nlist > fmt_commit_list_cap(P))
        return *why = "commit list", -1;
    for (uint32_t i = 0; i < m->nlist; i++) {
        m->list[i].pgno = get64(pg + META_LIST + META_LIST_ENT * i);
        m->list[i].crc = get32(pg + META_LIST + META_LIST_ENT * i + 8);
        if (m->list[i].pgno < BS_META_PAGES || m->list[i].pgno >= m->page_count)
            return *why = "commit list entry", -1;
    }
    return 0;
}

/* A single-sync commit is real only if every page it wrote reached the file: each listed page
 * must carry the listed CRC and this commit's txid. buf holds P bytes. */
static int meta_commit_complete(bs_db *db, const bs_meta *m, uint32_t P, uint8_t *buf)
{
    for (uint32_t i = 0; i < m->nlist; i++) {
        size_t got = 0;
        int err = db->io->read_at(db->file, buf, P, m->list[i].pgno * (uint64_t)P, &got);
        if (err)
            return bs_fail_io(err, "reading page %llu", (unsigned long long)m->list[i].pgno);
        if (got < P || get32(buf + PH_CRC) != m->list[i].crc || page_crc(buf, P) != m->list[i].crc ||
            pg_txid(buf) != m->txid || pg_pgno(buf) != m->list[i].pgno)
            return BS_NOTFOUND;
    }
    return BS_OK;
}

int pager_read_meta(bs_db *db, bs_meta *out)
{
    uint8_t *buf = malloc(BS_PAGE_MAX);
    if (!buf)
        return bs_fail(BS_NOMEM, "out of memory reading the meta pages");
    int rc = BS_OK, found = 0, magic = 0, newer = 0;
    bs_meta best = {0};
    uint32_t best_p = 0;
    size_t got = 0;
    int err;
    /* page size candidates: what page 0 says first, then every legal size */
    uint32_t cands[8];
    int nc = 0;
    if ((err = db->io->read_at(db->file, buf, 64, 0, &got)) != 0) {
        rc = bs_fail_io(err, "reading the meta page");
        goto out;
    }
    if (got >= 64 && memcmp(buf + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN) == 0) {
        uint32_t p = get32(buf + META_PAGESIZE);
        if (p >= BS_PAGE_MIN && p <= BS_PAGE_MAX && !(p & (p - 1)))
            cands[nc++] = p;
    }
    for (uint32_t p = BS_PAGE_MIN; p <= BS_PAGE_MAX; p *= 2)
        if (!nc || p != cands[0])
            cands[nc++] = p;
    for (int ci = 0; ci < nc && !found; ci++) {
        uint32_t P = cands[ci];
        bs_meta cand[2];
        int ncand = 0;
        for (uint64_t slot = 0; slot < 2; slot++) {
            if ((err = db->io->read_at(db->file, buf, P, slot * P, &got)) != 0) {
                rc = bs_fail_io(err, "reading meta page %llu", (unsigned long long)slot);
                goto out;
            }
            const char *why = "";
            if (got >= META_MAGIC + BS_MAGIC_LEN &&
                memcmp(buf + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN) == 0)
                magic = 1;
            if (got < P)
                continue;
            if (memcmp(buf + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN) == 0) {
                magic = 1;
                /* a checksummed meta of a newer format: the file belongs to a newer library */
                if (get32(buf + META_VERSION) > BS_FORMAT_VERSION &&
                    get32(buf + META_PAGESIZE) == P && get32(buf + PH_CRC) == page_crc(buf, P))
                    newer = (int)get32(buf + META_VERSION);
            }
            if (meta_decode(buf, P, slot, &cand[ncand], &why) == 0)
                ncand++;
        }
        /* newest first; a single-sync commit whose pages did not all arrive is skipped */
        if (ncand == 2 && cand[1].txid > cand[0].txid) {
            bs_meta tmp = cand[0];
            cand[0] = cand[1];
            cand[1] = tmp;
        }
        if (newer)
            break;
        for (int i = 0; i < ncand && !found; i++) {
            rc = meta_commit_complete(db, &cand[i], P, buf);
            if (rc == BS_OK) {
                best = cand[i];
                best_p = P;
                found = 1;
            } else if (rc != BS_NOTFOUND) {
                goto out;
            }
        }
        rc = BS_OK;
    }
    if (!found || newer) {
        if (newer)
            rc = bs_fail(BS_VERSION, "file format version %d is newer than supported version %u",
                         newer, BS_FORMAT_VERSION);
        else if (!magic)
            rc = bs_fail(BS_NOTDB, "%s is not a btree_store database (no magic)", db->path);
        else
            rc = bs_fail(BS_CORRUPT, "%s: no valid meta page (both meta pages 0 and 1 are "
                         "corrupt or the file is truncated)", db->path);
        goto out;
    }
    db->page_size = best_p;
    *out = best;
out:
    free(buf);
    return rc;
}

static int write_meta(bs_db *db, const bs_meta *m)
{
    uint32_t P = db->page_size;
    uint8_t *pg = malloc(P);
    if (!pg)
        return bs_fail(BS_NOMEM, "out of memory writing the meta page");
    meta_encode(m, P, pg);
    int err = db->io->write_at(db->file, pg, P, (m->txid % 2) * (uint64_t)P);
    free(pg);
    if (err)
        return bs_fail_io(err, "writing meta page %llu", (unsigned long long)(m->txid % 2));
    return BS_OK;
}

/* A commit failed after its meta page was (perhaps) written: overwrite that slot with zeros,
 * best effort, so that a reopen in this boot finds the previous commit in the other slot
 * (after a power cut either state is acceptable: the commit was never acknowledged). */
static void retract_meta(bs_db *db, uint64_t txid)
{
    uint8_t *pg = calloc(1, db->page_size);
    if (!pg)
        return;
    (void)(db->io->write_at(db->file, pg, db->page_size, (txid % 2) * (uint64_t)db->page_size));
    free(pg);
}

int pager_write_initial(bs_db *db)
{
    uint32_t P = db->page_size;
    uint8_t *pg = calloc(2, P);
    if (!pg)
        return bs_fail(BS_NOMEM, "out of memory creating the database");
    bs_meta m = {0};
    m.page_count = BS_META_PAGES;
    meta_encode(&m, P, pg); /* txid 0 -> slot 0 */
    /* slot 1 holds the same empty state; it is written as txid 0 too but must say pgno 1 */
    memcpy(pg + P, pg, P);
    put64(pg + P + PH_PGNO, 1);
    put32(pg + P + PH_CRC, page_crc(pg + P, P));
    int err = db->io->write_at(db->file, pg, 2 * (size_t)P, 0);
    free(pg);
    if (err)
        return bs_fail_io(err, "writing the new database's meta pages");
    if (db->sync && (err = db->io->sync(db->file)) != 0)
        return bs_fail_io(err, "syncing the new database");
    db->meta = m;
    return BS_OK;
}

/* ------------------------------------------------------------------ freelist */

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

static int read_freelist(bs_txn *txn, const bs_meta *m, bs_pgvec *out, bs_pgvec *chain,
                         size_t *ndelta)
{
    uint64_t pgno = m->fl_head;
    int rc = BS_OK;
    uint64_t steps = 0;
    size_t n = 0, cap = 0, deltas = 0;
    fl_ent *v = NULL;
    bool base_seen = false;
    while (pgno) {
        const uint8_t *pg;
        if (++steps > m->page_count) {
            rc = bs_fail(BS_CORRUPT, "freelist chain is malformed at page %llu (loop, or "
                         "records after the base)", (unsigned long long)pgno);
            goto out;
        }
        if ((rc = pager_get(txn, pgno, PT_FREELIST, &pg)) != BS_OK)
            goto out;
        if (chain && (rc = pgvec_push(chain, pgno)) != BS_OK)
            goto out;
        uint32_t na = get32(pg + FL_NADD), nd = get32(pg + FL_NDEL);
        if (pg[PH_FLAGS] & FL_F_BASE) {
            base_seen = true;
        } else if (base_seen) {
            rc = bs_fail(BS_CORRUPT, "page %llu: freelist delta record after the base",
                         (unsigned long long)pgno);
            goto out;
        } else {
            deltas++;
        }
        if (n + na + nd > cap) {
            size_t nc = (n + na + nd) * 2 + 64;
            fl_ent *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                rc = bs_fail(BS_NOMEM, "out of memory reading the freelist");
                goto out;
            }
            v = nv;
            cap = nc;
        }
        for (uint32_t i = 0; i < na + nd; i++) {
            v[n].pgno = get64(pg + FL_ENTRIES + 8 * i);
            v[n].seq = (uint32_t)steps;
            v[n].add = i < na;
            n++;
        }
        pgno = get64(pg + FL_NEXT);
    }
    if (n)
        qsort(v, n, sizeof *v, cmp_flent);
    for (size_t i = 0; i < n; i++) {
        if (i && v[i].pgno == v[i - 1].pgno)
            continue; /* the newest mention decided */
        if (v[i].add && (rc = pgvec_push(out, v[i].pgno)) != BS_OK)
            goto out;
    }
    if (out->n != m->fl_count) {
        rc = bs_fail(BS_CORRUPT, "freelist holds %zu pages, meta says %llu", out->n,
                     (unsigned long long)m->fl_count);
        goto out;
    }
    if (ndelta)
        *ndelta = deltas;
out:
    free(v);
    return rc;
}

int pager_read_freelist(bs_txn *txn, const bs_meta *m, bs_pgvec *out, bs_pgvec *chain)
{
    return read_freelist(txn, m, out, chain, NULL);
}

int pager_load_freelist(bs_db *db, const bs_meta *m)
{
    /* a temporary read transaction over m */
    bs_txn t;
    memset(&t, 0, sizeof t);
    t.db = db;
    t.meta = *m;
    t.txid = m->txid;
    t.page_count = m->page_count;
    t.slot = cache_slot_acquire(&db->cache);
    if (!t.slot)
        return bs_fail(BS_NOMEM, "out of memory");
    pager_enter(&t);
    bs_pgvec v = {0};
    int rc = read_freelist(&t, m, &v, &db->fl_chain, &db->fl_ndelta);
    pager_leave(&t);
    cache_slot_release(&db->cache, t.slot);
    if (rc) {
        pgvec_free(&v);
        return rc;
    }
    if (v.n)
        qsort(v.v, v.n, sizeof *v.v, cmp_desc);
    for (size_t i = 1; i < v.n; i++)
        if (v.v[i] == v.v[i - 1]) {
            pgvec_free(&v);
            return bs_fail(BS_CORRUPT, "page %llu is on the freelist twice",
                           (unsigned long long)v.v[i]);
        }
    pgvec_free(&db->fl.reusable);
    db->fl.reusable = v;
    return BS_OK;
}

void pager_release_pending(bs_db *db, uint64_t oldest)
{
    bs_freelist *fl = &db->fl;
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

uint64_t pager_pinned_pages(bs_db *db, uint64_t oldest)
{
    uint64_t n = 0;
    for (size_t i = 0; i < db->fl.npend; i++)
        if (db->fl.pend[i].txid > oldest)
            n += db->fl.pend[i].pages.n;
    return n;
}

static int pending_add(bs_db *db, uint64_t txid, bs_pgvec *pages)
{
    bs_freelist *fl = &db->fl;
    if (!pages->n)
        return BS_OK;
    if (fl->npend == fl->cappend) {
        size_t nc = fl->cappend ? fl->cappend * 2 : 8;
        bs_pending *np = realloc(fl->pend, nc * sizeof *np);
        if (!np)
            return bs_fail(BS_NOMEM, "out of memory");
        fl->pend = np;
        fl->cappend = nc;
    }
    fl->pend[fl->npend].txid = txid;
    fl->pend[fl->npend].pages = *pages;
    fl->npend++;
    memset(pages, 0, sizeof *pages);
    return BS_OK;
}

/* ------------------------------------------------------------------ transactions */

void pager_txn_init(bs_txn *txn)
{
    txn->gen = 1;
    txn->floor = 1;
}

void pager_abort(bs_txn *txn)
{
    bs_db *db = txn->db;
    if (txn->write) {
        /* give back what we took from the freelist */
        if (txn->alloc_from_free.n)
            freelist_merge(&db->fl.reusable, txn->alloc_from_free.v, txn->alloc_from_free.n);
        dirty_clear(txn);
        pgvec_free(&txn->freed);
        pgvec_free(&txn->local_free);
        pgvec_free(&txn->alloc_from_free);
        for (size_t i = 0; i < txn->nsp; i++) {
            pgvec_free(&txn->sp[i].local_free);
            pgvec_free(&txn->sp[i].shadowed);
            free(txn->sp[i].buckets);
        }
        free(txn->sp);
        txn->sp = NULL;
        txn->nsp = txn->capsp = 0;
    }
}

/* append n pages to a vector reserved large enough */
static void append_pages(bs_pgvec *dst, const uint64_t *src, size_t n)
{
    if (n) {
        memcpy(dst->v + dst->n, src, n * sizeof *src);
        dst->n += n;
    }
}

#define FL_MAX_DELTAS 32

static int cmp_u64(const void *a, const void *b) { return cmp_asc(a, b); }

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
        qsort(all->v, all->n, 8, cmp_u64);
    for (size_t i = 1; i < all->n; i++)
        if (all->v[i] == all->v[i - 1])
            return bs_fail(BS_CORRUPT, "internal: page %llu freed twice",
                           (unsigned long long)all->v[i]);
    return BS_OK;
}

/* Write the freelist record of this commit (step a): normally a delta (pages freed, pages
 * taken) prepended to the chain; after FL_MAX_DELTAS deltas, a new complete base that
 * replaces the whole chain (whose pages this commit then frees). */
static int commit_freelist(bs_txn *txn, bs_meta *nm, bs_pgvec *chain, size_t *ndelta)
{
    bs_db *db = txn->db;
    uint32_t P = db->page_size, cap = fmt_freelist_cap(P);
    /* compact once the deltas outweigh the base (keeps the chain within twice the size of
     * the free set it describes) or there are too many of them */
    size_t base = db->fl_chain.n - db->fl_ndelta;
    bool compact = db->fl_ndelta >= FL_MAX_DELTAS || (db->fl_ndelta && db->fl_ndelta >= base);
    bs_pgvec add = {0}, del = {0};
    uint8_t **pgs = NULL;
    size_t npages = 0;
    int rc;

    if (!compact && !txn->freed.n && !txn->local_free.n && !txn->alloc_from_free.n) {
        /* the free set did not change: keep the chain as it is */
        if ((rc = pgvec_copy(chain, &db->fl_chain)) != BS_OK)
            return rc;
        *ndelta = db->fl_ndelta;
        nm->fl_head = db->fl_chain.n ? db->fl_chain.v[0] : 0;
        nm->fl_count = db->meta.fl_count;
        return BS_OK;
    }
    if (compact)
        for (size_t i = 0; i < db->fl_chain.n; i++)
            if ((rc = pgvec_push(&txn->freed, db->fl_chain.v[i])) != BS_OK)
                return rc;
    /* pages for the record: allocating them can only move entries between lists, adding at
     * most one entry each */
    size_t est = txn->freed.n + txn->local_free.n + (compact ? db->fl.reusable.n : txn->alloc_from_free.n);
    if (compact)
        for (size_t i = 0; i < db->fl.npend; i++)
            est += db->fl.pend[i].pages.n;
    npages = (est + cap - 1) / cap;
    while (npages * cap < est + npages)
        npages++;
    pgs = calloc(npages + 1, sizeof *pgs);
    if (!pgs)
        return bs_fail(BS_NOMEM, "out of memory writing the freelist");
    for (size_t i = 0; i < npages; i++) {
        uint64_t p;
        if ((rc = pager_new(txn, PT_FREELIST, &pgs[i], &p)) != BS_OK ||
            (rc = pgvec_push(chain, p)) != BS_OK)
            goto out;
    }
    if (compact) {
        const bs_pgvec *lists[64 + 3];
        size_t nl = 0;
        lists[nl++] = &db->fl.reusable;
        lists[nl++] = &txn->freed;
        lists[nl++] = &txn->local_free;
        bs_pgvec pend_all = {0};
        for (size_t i = 0; i < db->fl.npend; i++) {
            if ((rc = pgvec_reserve(&pend_all, pend_all.n + db->fl.pend[i].pages.n + 1)) != BS_OK)
                goto out;
            append_pages(&pend_all, db->fl.pend[i].pages.v, db->fl.pend[i].pages.n);
        }
        lists[nl++] = &pend_all;
        rc = gather(&add, lists, nl);
        pgvec_free(&pend_all);
        if (rc)
            goto out;
    } else {
        const bs_pgvec *al[2] = {&txn->freed, &txn->local_free};
        const bs_pgvec *dl[1] = {&txn->alloc_from_free};
        if ((rc = gather(&add, al, 2)) != BS_OK || (rc = gather(&del, dl, 1)) != BS_OK)
            goto out;
        /* a page taken and given back in this commit stays free: drop it from del */
        size_t k = 0, j = 0;
        for (size_t i = 0; i < del.n; i++) {
            while (j < add.n && add.v[j] < del.v[i])
                j++;
            if (j < add.n && add.v[j] == del.v[i])
                continue;
            del.v[k++] = del.v[i];
        }
        del.n = k;
    }
    if (add.n + del.n > npages * cap) {
        rc = bs_fail(BS_CORRUPT, "internal: freelist record larger than estimated");
        goto out;
    }
    /* fill: the add entries, then the del entries, page after page */
    size_t ai = 0, di = 0;
    for (size_t i = 0; i < npages; i++) {
        uint8_t *pg = pgs[i];
        uint32_t na = 0, nd = 0;
        while (na + nd < cap && ai < add.n)
            put64(pg + FL_ENTRIES + 8 * (na++), add.v[ai++]);
        while (na + nd < cap && di < del.n) {
            put64(pg + FL_ENTRIES + 8 * (na + nd), del.v[di++]);
            nd++;
        }
        put32(pg + FL_NADD, na);
        put32(pg + FL_NDEL, nd);
        if (compact)
            pg[PH_FLAGS] |= FL_F_BASE;
        uint64_t next = i + 1 < npages ? chain->v[i + 1] : (compact || !db->fl_chain.n ? 0 : db->fl_chain.v[0]);
        put64(pg + FL_NEXT, next);
    }
    if (!compact && (rc = pgvec_reserve(chain, chain->n + db->fl_chain.n + 1)) == BS_OK)
        append_pages(chain, db->fl_chain.v, db->fl_chain.n);
    if (rc)
        goto out;
    *ndelta = compact ? 0 : db->fl_ndelta + npages;
    nm->fl_head = chain->n ? chain->v[0] : 0;
    /* the free set after this commit */
    uint64_t count = db->fl.reusable.n + txn->freed.n + txn->local_free.n;
    for (size_t i = 0; i < db->fl.npend; i++)
        count += db->fl.pend[i].pages.n;
    nm->fl_count = count;
    rc = BS_OK;
out:
    pgvec_free(&add);
    pgvec_free(&del);
    free(pgs);
    return rc;
}

int pager_commit(bs_txn *txn, bs_meta *nm)
{
    bs_db *db = txn->db;
    bs_pgvec chain = {0};
    bs_dirty_ent **v = NULL;
    size_t n = 0, ndelta = 0;
    int rc, err;

    if ((rc = commit_freelist(txn, nm, &chain, &ndelta)) != BS_OK)
        goto fail;
    nm->page_count = txn->page_count;
    nm->txid = txn->txid;
    if ((rc = collect(txn, 0, &v, &n)) != BS_OK)
        goto fail;
    if ((rc = write_entries(txn, v, n)) != BS_OK) {
        if (rc != BS_FULL)
            atomic_store(&db->panic, 1);
        goto fail;
    }
    /* Small commits whose pages are all written here use one fsync: the meta lists every page
     * with its CRC, and opening ignores this meta unless all of them arrived (format.h). */
    bool single = db->sync && !txn->wrote_early && n <= fmt_commit_list_cap(db->page_size);
    nm->nlist = 0;
    if (single) {
        for (size_t i = 0; i < n; i++) {
            nm->list[i].pgno = v[i]->pgno;
            nm->list[i].crc = get32(v[i]->fr->data + PH_CRC);
        }
        nm->nlist = (uint32_t)n;
    }
    if (db->sync && !single && (err = db->io->sync(db->file)) != 0) {
        rc = bs_fail_io(err, "syncing the data pages of commit %llu", (unsigned long long)txn->txid);
        atomic_store(&db->panic, 1);
        goto fail;
    }
    if ((rc = write_meta(db, nm)) != BS_OK) {
        retract_meta(db, nm->txid);
        atomic_store(&db->panic, 1);
        goto fail;
    }
    if (db->sync && (err = db->io->sync(db->file)) != 0) {
        rc = bs_fail_io(err, "syncing commit %llu", (unsigned long long)txn->txid);
        retract_meta(db, nm->txid);
        atomic_store(&db->panic, 1);
        goto fail;
    }

    /* publish: new transactions see this commit from here on */
    pthread_mutex_lock(&db->mu);
    if (freelist_merge(&db->fl.reusable, txn->local_free.v, txn->local_free.n) != BS_OK ||
        pending_add(db, txn->txid, &txn->freed) != BS_OK) {
        /* out of memory here only loses track of free pages in memory: the file holds them
         * on its freelist and reopening recovers them */
    }
    db->meta = *nm;
    pthread_mutex_unlock(&db->mu);
    pgvec_free(&db->fl_chain);
    db->fl_chain = chain;
    db->fl_ndelta = ndelta;
    memset(&chain, 0, sizeof chain);
    /* promote the written pages into the shared cache (they are now committed). From here
     * on this transaction holds no shared-cache pointer: stop pinning the epoch so that the
     * frames this evicts can be reclaimed at once. */
    pager_leave(txn);
    for (size_t i = 0; i < n; i++) {
        bs_frame *f = v[i]->fr, *got;
        v[i]->fr = NULL;
        txn->dirty.nmem--;
        f->pos = UINT32_MAX;
        cache_insert(&db->cache, f, 1, &got);
    }
    free(v);
    pgvec_free(&txn->alloc_from_free);
    pgvec_free(&txn->local_free);
    dirty_clear(txn);
    return BS_OK;
fail:
    free(v);
    pgvec_free(&chain);
    return rc;
}

/* ------------------------------------------------------------------ savepoints */

void pager_savepoint(bs_txn *txn, bs_savepoint *sp)
{
    sp->floor_prev = txn->floor;
    sp->page_count = txn->page_count;
    sp->freed_n = txn->freed.n;
    sp->alloc_n = txn->alloc_from_free.n;
    pgvec_copy(&sp->local_free, &txn->local_free);
    memset(&sp->shadowed, 0, sizeof sp->shadowed);
    txn->gen++;
    txn->floor = txn->gen;
}

void pager_rollback(bs_txn *txn, bs_savepoint *sp)
{
    bs_dirty *d = &txn->dirty;
    /* pages made since the savepoint disappear; shadowed ones come back */
    for (size_t i = 0; d->e && i <= d->mask;) {
        bs_dirty_ent *e = &d->e[i];
        if (e->pgno && e->gen >= txn->floor) {
            dirty_remove(txn, e); /* shifts a later entry into slot i: look at i again */
            continue;
        }
        i++;
    }
    for (size_t i = 0; i < sp->shadowed.n; i++) {
        bs_dirty_ent *e = dirty_find(txn, sp->shadowed.v[i]);
        if (e)
            e->shadowed = false;
    }
    pgvec_free(&sp->shadowed);
    pgvec_free(&txn->local_free);
    txn->local_free = sp->local_free;
    memset(&sp->local_free, 0, sizeof sp->local_free);
    /* pages taken from the freelist since then stay ours (abort gives them back) */
    for (size_t i = sp->alloc_n; i < txn->alloc_from_free.n; i++)
        pgvec_push(&txn->local_free, txn->alloc_from_free.v[i]);
    txn->page_count = sp->page_count;
    txn->freed.n = sp->freed_n;
    txn->floor = sp->floor_prev;
}

void pager_release(bs_txn *txn, bs_savepoint *sp)
{
    txn->floor = sp->floor_prev;
    bs_savepoint *parent = txn->nsp >= 2 ? &txn->sp[txn->nsp - 2] : NULL;
    for (size_t i = 0; i < sp->shadowed.n; i++) {
        bs_dirty_ent *e = dirty_find(txn, sp->shadowed.v[i]);
        if (!e)
            continue;
        if (e->gen >= txn->floor || !parent) {
            uint64_t p = e->pgno, run = e->run;
            dirty_remove(txn, e);
            if (run) {
                for (uint64_t k = 0; k < run; k++)
                    pgvec_push(&txn->local_free, p + k);
            } else {
                pgvec_push(&txn->local_free, p);
            }
        } else {
            pgvec_push(&parent->shadowed, e->pgno);
        }
    }
    pgvec_free(&sp->shadowed);
    pgvec_free(&sp->local_free);
}
