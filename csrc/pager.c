/*
 * pager.c - pages for transactions: reading and verifying pages (through the shared cache of
 * cache.c), the write transaction's dirty pages, page allocation, overflow runs, spilling,
 * savepoints, loading the freelist, and writing a commit (pager_commit).
 *
 * Layer: calls cache.c, map.c (pages read in place from a mapping of the file, when
 * db->map: see "mapped pages" below), freelist.c, meta.c, io (through db->io), crc32c,
 * lockfile.h's lockfile_lost (a reader's error when its snapshot was lost), and
 * btree_verify_page (a pure function on bytes) to bounds-check nodes read from disk. Called
 * by btree.c, check.c and db.c.
 *
 * INVARIANTS (numbers as in docs/ARCHITECTURE.md; asserts cite them)
 *  1. A commit never overwrites a page that a commit opening could pick references: pages are
 *     written only if this transaction allocated them (beyond the base high-water mark, or
 *     taken from the reusable free set, or freed and re-taken inside this transaction), and
 *     the meta page holding the newest durable commit (db->durable_slot) is never written
 *     until a newer commit is durable.
 *  2. A page freed by commit F is reusable only when every live reader's snapshot is >= F
 *     and F is durable (F <= db->durable_txid): freed pages wait in a pending group of db->fl
 *     until freelist_release says so. So after a power cut, opening finds the newest durable
 *     commit intact, or a newer one whose pages all arrived (checked by its commit list).
 *  3. Every page below page_count is reachable once or on the persisted freelist once. The
 *     freelist written by commit T holds the reusable pages, every pending group, the pages T
 *     freed (its old freelist chain included) and the pages T allocated and freed again.
 *  4. Pages read from disk are verified (CRC, pgno, type, node bounds) before anyone sees them.
 *  5. Failures are sticky: a failed write or sync during commit sets db->panic (except a disk
 *     full error while writing data pages, which leaves the durable state untouched).
 *
 * COMMIT PROTOCOL (pager_commit, as implemented)
 *  a. The freelist record (freelist.h): plan it, allocate its chain pages as dirty pages of
 *     this transaction, collect the entries, fill the pages. Normally one delta record in
 *     front of the old chain; a new base that replaces the chain when the deltas pile up;
 *     nothing when the free set did not change.
 *  b. Write every dirty page still in memory, in page order, checksummed, coalesced into
 *     writev calls (spilled pages and overflow runs reached the file when they were made).
 *     A failed write panics the database, except BS_FULL: nothing durable changed, and the
 *     transaction simply fails.
 *  c. Choose the sync path. The UNSYNCED set is every page this commit references that was
 *     written since the newest durable commit: the pages written in (b) plus the unsynced
 *     set of the previous commit (its commit list, when it was not durable) minus the pages
 *     this commit freed. When no page reached the file early (spill, overflow run) and the
 *     set fits the commit list (format.h META_LIST), the meta lists each page with its CRC:
 *     at open, meta_read accepts the meta only if every listed page carries the listed CRC,
 *     else it falls back to the other meta page, which holds the newest durable commit and
 *     references none of these pages (invariants 1, 2).
 *     - durable commit (txn->sync) with a list: one fsync, after the meta;
 *     - durable commit without a list: fsync the data pages now (failure: panic), then two;
 *     - sync=False commit with a list: no fsync at all; it is durable only at the next
 *       durable commit, db sync or reopen;
 *     - sync=False commit that cannot be listed: made durable like the second case (a
 *       sync=False commit may sync: it never risks the commits before it);
 *     - sync=False commit while more than UNSYNCED_FREED_MAX pages freed since the durable
 *       commit wait for it (they cannot be reused before, so the file grows by every page
 *       such commits rewrite): made durable (with its list: one fsync), which bounds that
 *       growth for trees small enough that their whole unsynced set fits the list.
 *  d. Write the meta page that does NOT hold the newest durable commit (1 - durable_slot).
 *  e. fsync                                                          [durable commits only]
 *     When (d) or (e) fails, the meta slot is retracted (best effort: rewritten with the base
 *     commit when that sync=False commit lives in this slot, else zeros) so that a reopen in
 *     this boot finds the previous commit, and the database panics: the commit was not acknowledged, either state is acceptable after a
 *     power cut.
 *  f. Publish under db->mu: the pages this transaction allocated and freed again become
 *     reusable, the committed pages it freed become the pending group of this txid, and
 *     db->meta is the new commit. Then the new chain replaces the old one in db->fl, the
 *     epoch is left, and the written frames replace older images in the shared cache.
 *  A crash before (d) completes leaves the previous meta as the newest valid one, and it
 *  references only pages this commit never touched (invariant 1). A torn meta fails its CRC.
 */
#include <assert.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cache.h"
#include "freelist.h"
#include "internal.h"
#include "lockfile.h"
#include "meta.h"

void pager_enter(bs_txn *txn) { cache_enter(txn->db->cache, txn->slot); }

void pager_leave(bs_txn *txn) { cache_leave(txn->slot); }

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

/* CRC, pgno, writer txid, type and structure of a page image just read from disk
 * (invariant 4). A page written by a transaction newer than the reader's snapshot can only be
 * a page that was freed and reused after a meta page went bad: refuse it. */
static int verify_page(bs_db *db, const uint8_t *pg, uint64_t pgno, uint64_t page_count,
                       uint64_t max_txid)
{
    uint32_t P = db->page_size;
    if (get32(pg + PH_CRC) != bs_page_crc(pg, P)) {
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
    if (t == PT_FREELIST)
        return freelist_verify_page(pg, P, pgno, page_count);
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

/* dirty_slot, dirty_lookup: internal.h */
static inline bs_dirty_ent *dirty_find(bs_txn *txn, uint64_t pgno)
{
    return dirty_lookup(&txn->dirty, pgno);
}

/* the page index (internal.h): entry fr of pgno, if there is an index */
static inline void dirty_ix_set(bs_dirty *d, uint64_t pgno, bs_frame *fr)
{
    if (d->ix)
        d->ix[pgno] = fr ? fr : DIRTY_SPILLED;
}

static void dirty_ix_drop(bs_dirty *d)
{
    free(d->ix);
    d->ix = NULL;
    d->ixcap = 0;
}

/* The index covers page numbers below `need` (and the transaction's pages), or is dropped. */
static void dirty_ix_cover(bs_txn *txn, uint64_t need)
{
    bs_dirty *d = &txn->dirty;
    if (need < txn->page_count)
        need = txn->page_count;
    if (need <= d->ixcap)
        return;
    size_t ncap = d->ixcap * 2 > need ? d->ixcap * 2 : need;
    bs_frame **nix = realloc(d->ix, ncap * sizeof *nix);
    if (!nix) {
        dirty_ix_drop(d); /* only a shortcut: the table holds everything */
        return;
    }
    memset(nix + d->ixcap, 0, (ncap - d->ixcap) * sizeof *nix);
    d->ix = nix;
    d->ixcap = ncap;
}

/* Build the page index once the table is large and dense enough (internal.h). */
static void dirty_ix_build(bs_txn *txn)
{
    bs_dirty *d = &txn->dirty;
    if (d->ix || d->n < DIRTY_IX_MIN || txn->page_count / DIRTY_IX_SPARSE > d->n)
        return;
    size_t cap = txn->page_count;
    for (size_t i = 0; i <= d->mask; i++)
        if (d->e[i].pgno >= cap)
            cap = d->e[i].pgno + 1;
    if (!(d->ix = calloc(cap, sizeof *d->ix)))
        return;
    d->ixcap = cap;
    for (size_t i = 0; i <= d->mask; i++)
        if (d->e[i].pgno)
            dirty_ix_set(d, d->e[i].pgno, d->e[i].fr);
}

static int dirty_grow(bs_txn *txn)
{
    bs_dirty *d = &txn->dirty;
    size_t nsize = d->e ? (d->mask + 1) * 2 : 32; /* most transactions dirty a few pages */
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
    dirty_ix_build(txn);
    return BS_OK;
}

static int dirty_add(bs_txn *txn, uint64_t pgno, bs_frame *fr, uint64_t run, bs_dirty_ent **out)
{
    bs_dirty *d = &txn->dirty;
    int rc;
    if (!d->e || (d->n + 1) * 2 > d->mask + 1)
        if ((rc = dirty_grow(txn)) != BS_OK)
            return rc;
    if (d->ix && pgno >= d->ixcap)
        dirty_ix_cover(txn, pgno + 1);
    size_t i = dirty_slot(pgno, d->mask);
    while (d->e[i].pgno)
        i = (i + 1) & d->mask;
    bs_dirty_ent *e = &d->e[i];
    e->pgno = pgno;
    e->fr = fr;
    e->gen = txn->gen;
    e->run = run;
    e->shadowed = false;
    dirty_ix_set(d, pgno, fr);
    d->n++;
    if (fr) {
        d->nmem++;
        cache_dirty_add(txn->db->cache, 1);
    }
    if (out)
        *out = e;
    return BS_OK;
}

/* remove an entry (backward-shift deletion keeps probe chains intact) */
static void dirty_remove(bs_txn *txn, bs_dirty_ent *e)
{
    bs_dirty *d = &txn->dirty;
    if (e->fr) {
        cache_frame_free(e->fr);
        d->nmem--;
        cache_dirty_add(txn->db->cache, -1);
    }
    if (d->ix)
        d->ix[e->pgno] = NULL;
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
                cache_frame_free(d->e[i].fr);
        free(d->e);
    }
    free(d->ix);
    cache_dirty_add(txn->db->cache, -(int64_t)d->nmem);
    memset(d, 0, sizeof *d);
}

/* ------------------------------------------------------------------ allocation */

int pager_freelist_damaged(bs_txn *txn, uint64_t pgno, const char *why)
{
    bs_db *db = txn->db;
    int rc = bs_fail(BS_CORRUPT, "freelist is damaged: it lists page %llu, which %s; this "
                     "handle refuses writes from now on (reads go on; check() reports the "
                     "damage)", (unsigned long long)pgno, why);
    /* sticky: set by the writer only (bs_txn_begin reads it once it holds the writer) */
    if (!db->fl_broken)
        db->fl_broken = strdup(bs_errmsg());
    txn->failed = true;
    return rc;
}

/* A page the freelist hands out must be free (hostile files, invariant 3): inside the base
 * commit's pages (every reusable page was free or freed in a commit <= the base), and not a
 * page of this transaction. The full test (not reachable from any tree) is check()'s job. */
static int check_taken(bs_txn *txn, uint64_t p)
{
    if (BS_UNLIKELY(p < BS_META_PAGES || p >= txn->meta.page_count))
        return pager_freelist_damaged(txn, p, "lies outside the file's pages");
    if (BS_UNLIKELY(txn->dirty.n && dirty_find(txn, p) != NULL))
        return pager_freelist_damaged(txn, p, "this transaction already uses");
    return BS_OK;
}

static int alloc_pgno(bs_txn *txn, uint64_t *pgno)
{
    bs_db *db = txn->db;
    int rc;
    if (txn->local_free.n) {
        *pgno = txn->local_free.v[--txn->local_free.n];
        return BS_OK;
    }
    if (db->fl.reusable.n) {
        uint64_t p;
        if ((rc = pgvec_reserve(&txn->alloc_from_free, txn->alloc_from_free.n + 1)) != BS_OK)
            return rc;
        freelist_take(&db->fl, &p);
        /* ours from here on either way: abort gives it back */
        txn->alloc_from_free.v[txn->alloc_from_free.n++] = p;
        if ((rc = check_taken(txn, p)) != BS_OK)
            return rc;
        cache_evict(db->cache, p);
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
    if (db->fl.reusable.n >= n) {
        if ((rc = pgvec_reserve(&txn->alloc_from_free, txn->alloc_from_free.n + n)) != BS_OK)
            return rc;
        uint64_t *pages = txn->alloc_from_free.v + txn->alloc_from_free.n;
        if (freelist_take_run(&db->fl, n, pages)) {
            txn->alloc_from_free.n += n;
            for (uint64_t k = 0; k < n; k++)
                if ((rc = check_taken(txn, pages[k])) != BS_OK)
                    return rc;
            for (uint64_t k = 0; k < n; k++)
                cache_evict(db->cache, pages[k]);
            *first = pages[n - 1];
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

/* A new dirty page; zero: its body zeroed (else the caller overwrites [PH_SIZE, P) at once) */
static int page_new(bs_txn *txn, int type, bool zero, uint8_t **out, uint64_t *pgno);

int pager_new(bs_txn *txn, int type, uint8_t **out, uint64_t *pgno)
{
    return page_new(txn, type, true, out, pgno);
}

static int page_new(bs_txn *txn, int type, bool zero, uint8_t **out, uint64_t *pgno)
{
    bs_db *db = txn->db;
    uint64_t p;
    int rc;
    /* room to give the page back if the dirty map cannot take it */
    if ((rc = pgvec_reserve(&txn->local_free, txn->local_free.n + 1)) != BS_OK)
        return rc;
    bs_frame *f = cache_frame_new(db->page_size);
    if (!f)
        return bs_fail(BS_NOMEM, "out of memory for a new page");
    if ((rc = alloc_pgno(txn, &p)) != BS_OK)
        goto fail;
    uint8_t *pg = cache_frame_data(f);
    if (zero)
        memset(pg, 0, db->page_size);
    init_header(pg, db->page_size, type, p, txn->txid);
    f->memo.own = txn->own_tag << 1; /* ours, not vouched (pager_mine) */
    f->memo.own_gen = txn->gen;      /* = the entry's gen (dirty_add) */
    if ((rc = dirty_add(txn, p, f, 0, NULL)) != BS_OK) {
        txn->local_free.v[txn->local_free.n++] = p; /* reserved above */
        goto fail;
    }
    *out = pg;
    *pgno = p;
    return BS_OK;
fail:
    cache_frame_free(f);
    return rc;
}

/* Read a spilled page of this txn back into memory. */
static int dirty_reload(bs_txn *txn, bs_dirty_ent *e)
{
    bs_db *db = txn->db;
    int rc;
    if (txn->noio)
        return BS_WOULDBLOCK;
    bs_frame *f = cache_frame_new(db->page_size);
    if (!f)
        return bs_fail(BS_NOMEM, "out of memory reloading a page");
    if ((rc = read_page(db, e->pgno, cache_frame_data(f))) != BS_OK ||
        (rc = verify_page(db, cache_frame_data(f), e->pgno, txn->page_count, txn->txid)) != BS_OK) {
        cache_frame_free(f);
        return rc;
    }
    /* ours again, but not vouched: these bytes come from the file (a lost write of the
     * spill would give an older image with the same txid) */
    f->memo.own = txn->own_tag << 1;
    f->memo.own_gen = e->gen;
    e->fr = f;
    dirty_ix_set(&txn->dirty, e->pgno, f);
    txn->dirty.nmem++;
    txn->early_back++;
    cache_dirty_add(db->cache, 1);
    return BS_OK;
}

/* the bounds of a node image, kept in its frame before it is published (never after) */
_Static_assert(sizeof(bs_bounds) <= BS_FRAME_AUX, "bounds summary fits the frame");
/* Image ids (pager_image_id): never reused, so a memo naming an image cannot outlive it. Ids
 * 0 (none) and 1 (BS_RNG_OPEN, "unbounded" in a memo key) are never handed out. */
static _Atomic uint64_t next_image_id = 2;

/* A new image's summary: its bounds, a new image id, and no memo (whatever the frame or the
 * mapped page's record held before); nobody's dirty page (own = 0). */
static void image_summarize(const uint8_t *img, bs_img_memo *m, bs_bounds *b)
{
    atomic_store_explicit(&m->lo, 0, memory_order_relaxed);
    atomic_store_explicit(&m->hi, 0, memory_order_relaxed);
    atomic_store_explicit(&m->idx, 0, memory_order_relaxed);
    m->own = m->own_gen = 0;
    if (pg_type(img) == PT_BRANCH || pg_type(img) == PT_LEAF) {
        btree_bounds(img, b);
        m->image_id = atomic_fetch_add_explicit(&next_image_id, 1, memory_order_relaxed);
    } else {
        b->valid = 0;
        m->image_id = 0;
    }
}

static void frame_summarize(bs_frame *f)
{
    image_summarize(cache_frame_data(f), &f->memo, (bs_bounds *)(void *)f->aux);
}

_Static_assert(sizeof(bs_bounds) <= BS_MAP_BOUNDS, "bounds summary fits its slot (map.h)");

const bs_bounds *pager_bounds(const uint8_t *pg)
{
    uint8_t *mb = bs_map_bounds_of(pg);
    const bs_bounds *b = mb ? (const bs_bounds *)(const void *)mb
                            : (const bs_bounds *)(const void *)cache_frame_of(pg)->aux;
    return b->valid ? b : NULL;
}

/* ------------------------------------------------------------------ mapped pages
 * With db->map (POSIX files, map.h) a committed page is used in place in the read-only shared
 * mapping. Its record (bs_mpage) says at which header txid the image was verified (CRC,
 * verify_page) and keeps the bounds summary and memo of that image. A lookup that expects
 * the txid the record holds uses the page at once; any other expectation (first use, or the
 * page number reused by a commit of this or another process: the mapping shows the new
 * bytes) verifies the image again and summarizes it anew. One thread verifies a page at a
 * time (busy); a page that fails is not recorded. A SIGBUS in the mapping (the file shrank,
 * an I/O error) leaves zeros there and sets map->damaged: every access fails from then on. */
static int map_damaged(bs_db *db)
{
    (void)db;
    return bs_fail(BS_IOERR, "the database file could not be read through its mapping (it "
                   "was truncated by another process, or an I/O error occurred): reopen it");
}

/* Record img (pgno's image as the mapping shows it, or the very bytes just written there) as
 * verified at its header txid, with a new summary and no memo. The caller holds mp->busy. */
static void mpage_set(bs_mwin *w, uint64_t pgno, const uint8_t *img)
{
    bs_mpage *mp = &w->meta[pgno];
    atomic_store_explicit(&mp->vtxid, 0, memory_order_seq_cst);
    image_summarize(img, &mp->memo, (bs_bounds *)(void *)w->bounds[pgno]);
    atomic_store_explicit(&mp->vtxid, pg_txid(img), memory_order_release);
}

/* One thread verifies or records a mapped page at a time (no I/O wait inside: short). */
static void mpage_lock(bs_mpage *mp)
{
    while (atomic_exchange_explicit(&mp->busy, 1, memory_order_acquire))
        sched_yield();
}

static void mpage_unlock(bs_mpage *mp)
{
    atomic_store_explicit(&mp->busy, 0, memory_order_release);
}

static int map_verify(bs_txn *txn, bs_mwin *w, bs_mpage *mp, const uint8_t *pg,
                      uint64_t pgno, uint64_t want)
{
    bs_db *db = txn->db;
    if (!map_covers(db->map, (pgno + 1) << db->page_shift))
        return bs_fail(BS_CORRUPT, "page %llu: beyond the end of the file (file truncated?)",
                       (unsigned long long)pgno);
    /* no-I/O mode (GIL held): a page the OS has cached costs no wait */
    if (txn->noio && !map_resident(w, pg, db->page_size))
        return BS_WOULDBLOCK;
    txn->misses++;
    mpage_lock(mp);
    uint64_t v = atomic_load_explicit(&mp->vtxid, memory_order_relaxed);
    int rc = BS_OK;
    if (!v || v != want) {
        rc = verify_page(db, pg, pgno, txn->page_count, txn->txid);
        if (rc == BS_OK && !atomic_load(&db->map->damaged))
            mpage_set(w, pgno, pg);
    }
    mpage_unlock(mp);
    if (BS_UNLIKELY(atomic_load(&db->map->damaged)))
        return map_damaged(db);
    return rc;
}

/* The mapped image of pgno, verified (want: the txid the pointer expects, 0 = whatever the
 * page carries). BS_NOTFOUND when no window holds pgno (the caller reads it into a frame). */
static inline int load_mapped(bs_txn *txn, uint64_t pgno, uint64_t want, const uint8_t **out)
{
    bs_db *db = txn->db;
    bs_mwin *w = atomic_load_explicit(&db->map->cur, memory_order_acquire);
    if (BS_UNLIKELY(pgno >= w->npages) && !(w = map_window_for(db->map, pgno)))
        return BS_NOTFOUND;
    bs_mpage *mp = &w->meta[pgno];
    const uint8_t *pg = w->base + (pgno << db->page_shift);
    *out = pg;
    uint64_t v = atomic_load_explicit(&mp->vtxid, memory_order_acquire);
    if (BS_LIKELY(v != 0) && v == (want ? want : pg_txid(pg))) {
        if (BS_UNLIKELY(atomic_load_explicit(&db->map->damaged, memory_order_relaxed)))
            return map_damaged(db);
        txn->hits++;
        return BS_OK;
    }
    return map_verify(txn, w, mp, pg, pgno, want);
}

/* Commit (f): pgno was just written with the image img (a dirty frame of ours, so its bytes
 * are what the mapping shows): record it as verified at its txid, so that the first read
 * after a commit costs no verification. False when no window holds pgno. */
static bool map_record(bs_db *db, uint64_t pgno, const uint8_t *img)
{
    bs_mwin *w = atomic_load_explicit(&db->map->cur, memory_order_acquire);
    if (pgno >= w->npages)
        return false;
    bs_mpage *mp = &w->meta[pgno];
    mpage_lock(mp);
    mpage_set(w, pgno, img);
    mpage_unlock(mp);
    return true;
}

int pager_map_check(bs_txn *txn)
{
    bs_db *db = txn->db;
    if (db->map && BS_UNLIKELY(atomic_load(&db->map->damaged)))
        return map_damaged(db);
    return BS_OK;
}

/* ------------------------------------------------------------------ read-ahead
 * A miss reads the neighbours of its page that are not cached (within an aligned group of
 * AHEAD_BYTES, at most AHEAD_PAGES pages) with the same system call, when the cache has room
 * for them without evicting anything. The neighbours go into the cache UNVERIFIED (frame
 * field `ahead`): the first lookup that finds one verifies it before anyone uses it
 * (invariant 4 still holds: no caller ever sees an unverified image), and one that fails is
 * dropped and read again as an ordinary miss, so that read-ahead never turns into an error.
 * A neighbour may be a free page, or one a writer (this process or another) is writing at
 * that moment; so an image read ahead is accepted only if its txid is at most ahead_txid, a
 * commit that was complete before the read started (the reader's snapshot): such an image
 * is final until its page is freed and reused, which gives it a newer txid (the pointer
 * check of pager_get_ref then rereads it). A page written and rewritten by one transaction
 * (spilled, then written again) carries that transaction's txid, newer than any snapshot
 * taken before it committed, so its first image is never taken. A torn image fails its
 * CRC. Only for the POSIX file table (not in-memory files, not fault injection). */
#define AHEAD_BYTES 65536u
#define AHEAD_PAGES 8u
/* Read-ahead pays only when the neighbours get used: under random access to a tree much
 * larger than what the reads touch (10M records, 100k gets: a neighbour is used one time in
 * five at best), each miss would read, copy and cache 7 pages nobody asks for, and fault in
 * fresh frame memory for them. So the db counts the neighbours it read ahead and those a
 * lookup then used; once AHEAD_SAMPLE have been read and fewer than 1 in AHEAD_RATIO was
 * used, a miss reads its page alone, except every AHEAD_PROBE-th miss, which still reads
 * ahead so that a change of pattern (a scan) is noticed. The counts are halved when they pass
 * AHEAD_DECAY, so they follow the recent pattern (relaxed atomics: approximate, harmless). */
_Static_assert(AHEAD_PAGES <= BS_IO_READV_MAX, "a read-ahead group is one readv");
#define AHEAD_SAMPLE 512u
#define AHEAD_RATIO 4u
#define AHEAD_PROBE 16u
#define AHEAD_DECAY 16384u
enum { AHEAD_NONE = 0, AHEAD_UNVERIFIED = 1, AHEAD_VERIFYING = 2, AHEAD_BAD = 3 };

/* A frame read ahead, found by a lookup: verify it now (one thread does, the others wait for
 * it). True when it may be used; false when it failed (dropped from the cache). */
static bool ahead_settle(bs_txn *txn, bs_frame *f, uint64_t pgno)
{
    for (;;) {
        uint8_t st = atomic_load_explicit(&f->ahead, memory_order_acquire);
        if (st == AHEAD_NONE)
            return true;
        if (st == AHEAD_BAD)
            return false;
        if (st == AHEAD_UNVERIFIED) {
            uint8_t want = AHEAD_UNVERIFIED;
            if (!atomic_compare_exchange_strong(&f->ahead, &want, AHEAD_VERIFYING))
                continue;
            const uint8_t *pg = cache_frame_data(f);
            bool ok = pg_txid(pg) <= f->ahead_txid &&
                      verify_page(txn->db, pg, pgno, txn->page_count, txn->txid) == BS_OK;
            if (ok) {
                frame_summarize(f);
                atomic_fetch_add_explicit(&txn->db->ahead_used, 1, memory_order_relaxed);
            }
            else
                bs_clear_error(); /* not an error: the page is read again */
            atomic_store_explicit(&f->ahead, ok ? AHEAD_NONE : AHEAD_BAD, memory_order_release);
            if (!ok)
                cache_evict_frame(txn->db->cache, pgno, f);
            return ok;
        }
        sched_yield(); /* another thread is verifying it (no I/O, no lock: short) */
    }
}

/* Whether this miss should read ahead (see AHEAD_SAMPLE). */
static bool ahead_pays(bs_db *db)
{
    uint32_t in = atomic_load_explicit(&db->ahead_in, memory_order_relaxed);
    uint32_t used = atomic_load_explicit(&db->ahead_used, memory_order_relaxed);
    if (in < AHEAD_SAMPLE || (uint64_t)used * AHEAD_RATIO >= in)
        return true;
    return atomic_fetch_add_explicit(&db->ahead_skip, 1, memory_order_relaxed) % AHEAD_PROBE ==
           AHEAD_PROBE - 1;
}

/* The miss of pgno, reading its uncached neighbours too: BS_OK with pgno's image in buf (not
 * verified yet) and the neighbours cached unverified; BS_NOTFOUND when read-ahead does not
 * apply or did not get pgno (the caller reads it alone, and reports any error itself). */
static int read_ahead(bs_txn *txn, uint64_t pgno, uint8_t *buf, bool nowait)
{
    bs_db *db = txn->db;
    bs_cache *c = db->cache;
    uint32_t P = db->page_size;
    if (db->io != &bs_io_posix || !db->io->readv_at || P > AHEAD_BYTES / 2)
        return BS_NOTFOUND;
    if (!ahead_pays(db))
        return BS_NOTFOUND;
    uint64_t G = AHEAD_BYTES / P < AHEAD_PAGES ? AHEAD_BYTES / P : AHEAD_PAGES;
    uint64_t lo = pgno - pgno % G, hi = lo + G, a = pgno, b = pgno + 1;
    if (lo < BS_META_PAGES)
        lo = BS_META_PAGES;
    if (hi > txn->page_count)
        hi = txn->page_count;
    while (a > lo && !cache_contains(c, a - 1))
        a--;
    while (b < hi && !cache_contains(c, b))
        b++;
    if (b - a < 2 || !cache_has_room(c, (uint32_t)(b - a)))
        return BS_NOTFOUND;
    /* straight into the frames: pgno's into buf, each neighbour's into a frame of its own */
    bs_frame *fr[AHEAD_PAGES];
    struct iovec iov[AHEAD_PAGES];
    unsigned k = 0;
    for (uint64_t q = a; q < b; q++, k++) {
        fr[k] = NULL;
        if (q != pgno && !(fr[k] = cache_frame_alloc(c)))
            break;
        iov[k].iov_base = q == pgno ? buf : cache_frame_data(fr[k]);
        iov[k].iov_len = P;
    }
    size_t got = 0;
    uint64_t full = 0; /* pages read whole */
    if (k == b - a && db->io->readv_at(db->file, iov, (int)k, a * (uint64_t)P, nowait, &got) == 0)
        full = got / P;
    uint64_t horizon = txn->write ? txn->txid - 1 : txn->txid;
    uint32_t cached = 0;
    for (unsigned i = 0; i < k; i++) {
        bs_frame *g = fr[i];
        if (!g)
            continue;
        if (i >= full || pgno - a >= full) {
            cache_frame_free(g);
            continue;
        }
        cached++;
        g->ahead_txid = horizon;
        atomic_store_explicit(&g->ahead, AHEAD_UNVERIFIED, memory_order_relaxed);
        cache_insert(c, g, a + i, false); /* a page cached meanwhile keeps its frame */
    }
    if (pgno - a >= full)
        return BS_NOTFOUND;
    if (atomic_fetch_add_explicit(&db->ahead_in, cached, memory_order_relaxed) + cached >
        AHEAD_DECAY) {
        atomic_store_explicit(&db->ahead_in, atomic_load_explicit(&db->ahead_in,
                              memory_order_relaxed) / 2, memory_order_relaxed);
        atomic_store_explicit(&db->ahead_used, atomic_load_explicit(&db->ahead_used,
                              memory_order_relaxed) / 2, memory_order_relaxed);
    }
    return BS_OK;
}

static int load_shared(bs_txn *txn, uint64_t pgno, const uint8_t **out)
{
    bs_db *db = txn->db;
    bs_cache *c = db->cache;
    if (db->map) {
        int rc = load_mapped(txn, pgno, 0, out);
        if (rc != BS_NOTFOUND)
            return rc;
    }
    const uint8_t *hit = cache_find(c, pgno);
    if (BS_LIKELY(hit != NULL)) {
        bs_frame *hf = cache_frame_of(hit);
        if (BS_LIKELY(atomic_load_explicit(&hf->ahead, memory_order_acquire) == AHEAD_NONE) ||
            ahead_settle(txn, hf, pgno)) {
            txn->hits++;
            *out = hit;
            return BS_OK;
        }
        /* read ahead and failed its verification: read it as a miss */
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
    bs_frame *f = cache_frame_alloc(c);
    if (!f)
        return bs_fail(BS_NOMEM, "out of memory for the page cache");
    uint8_t *buf = cache_frame_data(f);
    if (read_ahead(txn, pgno, buf, nowait) == BS_OK) {
        rc = BS_OK;
    } else if (nowait) {
        size_t got = 0;
        int err = db->io->read_nowait(db->file, buf, db->page_size,
                                      pgno * (uint64_t)db->page_size, &got);
        if (err || got != db->page_size) {
            if (err && err != EAGAIN)
                atomic_store(&db->nowait_off, 1);
            cache_frame_free(f);
            return BS_WOULDBLOCK;
        }
        rc = BS_OK;
    } else {
        rc = read_page(db, pgno, buf);
    }
    if (rc != BS_OK ||
        (rc = verify_page(db, buf, pgno, txn->page_count, txn->txid)) != BS_OK) {
        cache_frame_free(f);
        return rc;
    }
    assert(pg_pgno(buf) == pgno); /* invariant 4: verified before it is shared */
    frame_summarize(f);
    /* (an image read ahead and not verified yet that is cached meanwhile is replaced) */
    *out = cache_insert(c, f, pgno, false);
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
            *out = cache_frame_data(e->fr);
            return check_type(*out, pgno, type);
        }
    }
    if ((rc = load_shared(txn, pgno, out)) != BS_OK)
        return rc;
    return check_type(*out, pgno, type);
}

/* The page carries another txid than the pointer that led to it (format.h: parents vouch for
 * their children): an older image at its place (a lost write, a stale cache, a restored
 * page), or a page of another state. */
static int ref_mismatch(uint64_t pgno, uint64_t have, uint64_t want, uint64_t from)
{
    char by[64];
    if (from == PAGER_FROM_RECORD)
        snprintf(by, sizeof by, "its bucket record");
    else if (from < BS_META_PAGES)
        snprintf(by, sizeof by, "meta page %llu", (unsigned long long)from);
    else
        snprintf(by, sizeof by, "its parent page %llu", (unsigned long long)from);
    return bs_fail(BS_CORRUPT, "page %llu: stale or misplaced page: it was written by "
                   "transaction %llu, but %s expects transaction %llu", (unsigned long long)pgno,
                   (unsigned long long)have, by, (unsigned long long)want);
}

/* A page a reader needs is not what its snapshot wrote there (rc BS_CORRUPT): when the
 * snapshot is a commit that was announced and then lost with a torn meta slot (another
 * process's sync=False commit, lockfile.h lost[]), the page was reused by the
 * writers that went on from the commit before: say so instead of calling the file damaged. */
static int snapshot_lost(bs_txn *txn, int rc)
{
    bs_db *db = txn->db;
    uint64_t kept = 0;
    if (rc != BS_CORRUPT || txn->write || !db->lf ||
        !lockfile_lost(db->lf, txn->meta.txid, &kept))
        return rc;
    char why[300];
    snprintf(why, sizeof why, "%s", bs_errmsg());
    return bs_fail(BS_CORRUPT, "this transaction's snapshot (commit %llu) was lost: the process "
                   "that made it (sync=False) died while its meta page was written, and the "
                   "database went on from commit %llu, reusing the lost commit's pages; the "
                   "file is not damaged: end this transaction and begin a new one (%s)",
                   (unsigned long long)txn->meta.txid, (unsigned long long)kept, why);
}

int pager_get_ref(bs_txn *txn, uint64_t pgno, int type, uint64_t txid, uint64_t from,
                  const uint8_t **out)
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
            *out = cache_frame_data(e->fr);
            /* a page of ours carries our txid, and so does every pointer we made to it: a
             * pointer of the base commit that leads here means the freelist handed out a page
             * still in use (hostile files) */
            if (BS_UNLIKELY(pg_txid(*out) != txid))
                return pager_freelist_damaged(txn, pgno, "is still in use by a tree");
            return check_type(*out, pgno, type);
        }
    }
    if (txn->db->map) {
        rc = load_mapped(txn, pgno, txid, out);
        if (rc == BS_OK) {
            /* the mapping shows the file's bytes: nothing older to drop */
            if (BS_UNLIKELY(pg_txid(*out) != txid))
                return snapshot_lost(txn, ref_mismatch(pgno, pg_txid(*out), txid, from));
            return check_type(*out, pgno, type);
        }
        if (rc != BS_NOTFOUND)
            return snapshot_lost(txn, rc);
    }
    if (BS_UNLIKELY((rc = load_shared(txn, pgno, out)) != BS_OK))
        return snapshot_lost(txn, rc);
    if (BS_UNLIKELY(pg_txid(*out) != txid)) {
        /* A cached image the pointer does not vouch for: the page number was reused (by
         * another process, or a frame outlived its page) or the read was stale. Drop it and
         * read the file once more; readers holding the old frame keep it until their epoch
         * ends. */
        cache_evict(txn->db->cache, pgno);
        if ((rc = load_shared(txn, pgno, out)) != BS_OK)
            return snapshot_lost(txn, rc);
        if (pg_txid(*out) != txid)
            return snapshot_lost(txn, ref_mismatch(pgno, pg_txid(*out), txid, from));
    }
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
    /* only pages of an outer savepoint level are shadowed (e->gen < floor needs one) */
    if (BS_UNLIKELY(!txn->nsp))
        return pager_freelist_damaged(txn, e->pgno, "this transaction already uses");
    /* listed first: a page marked shadowed but missing from the list would stay hidden
     * after a rollback, and commit would not write it */
    int rc = pgvec_push(&txn->sp[txn->nsp - 1].shadowed, e->pgno);
    if (rc == BS_OK)
        e->shadowed = true;
    return rc;
}

int pager_write(bs_txn *txn, uint64_t pgno, uint8_t **out, uint64_t *newpgno)
{
    bs_db *db = txn->db;
    int rc;
    bs_dirty_ent *e = dirty_find(txn, pgno);
    if (e && e->gen >= txn->floor) {
        if (!e->fr && (rc = dirty_reload(txn, e)) != BS_OK)
            return rc;
        *out = cache_frame_data(e->fr);
        *newpgno = pgno;
        return BS_OK;
    }
    const uint8_t *src;
    if (e) {
        if (!e->fr && (rc = dirty_reload(txn, e)) != BS_OK)
            return rc;
        src = cache_frame_data(e->fr);
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
    bool committed = e == NULL;
    if ((rc = page_new(txn, pg_type(src), false, &dst, &np)) != BS_OK) /* body copied below */
        return rc;
    /* a crafted freelist can list the very page being copied (hostile files) */
    if (BS_UNLIKELY(np == pgno)) {
        memset(dst + PH_SIZE, 0, db->page_size - PH_SIZE);
        return pager_freelist_damaged(txn, pgno, "is the page being copied");
    }
    memcpy(dst + PH_SIZE, src + PH_SIZE, db->page_size - PH_SIZE);
    memcpy(dst + PH_NKEYS, src + PH_NKEYS, 2);
    memcpy(dst + PH_UPPER, src + PH_UPPER, 8);
    /* the old copy: committed -> freed at commit; ours from an outer savepoint -> shadowed */
    e = committed ? NULL : dirty_find(txn, pgno);
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
        if (BS_UNLIKELY(e->run)) /* a node page that is our overflow run (hostile files) */
            return pager_freelist_damaged(txn, pgno, "is in use by an overflow value");
        if (e->gen >= txn->floor) {
            int rc = pgvec_reserve(&txn->local_free, txn->local_free.n + 1);
            if (rc)
                return rc;
            dirty_remove(txn, e);
            txn->local_free.v[txn->local_free.n++] = pgno;
            return BS_OK;
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
    /* room to give the run back if writing it fails */
    if ((rc = pgvec_reserve(&txn->local_free, txn->local_free.n + n)) != BS_OK ||
        (rc = alloc_run(txn, n, &first)) != BS_OK)
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
        txn->local_free.v[txn->local_free.n++] = first + k; /* reserved above */
    return rc;
}

static int ov_header(bs_txn *txn, uint64_t pgno, uint64_t txid, size_t len, uint8_t *hdr,
                     uint64_t *npages)
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
        return snapshot_lost(txn, bs_fail(BS_CORRUPT, "page %llu: bad overflow header (type "
                       "%d, pgno %llu, %u pages, %u bytes; expected %llu pages, %zu bytes)",
                       (unsigned long long)pgno, pg_type(hdr),
                       (unsigned long long)pg_pgno(hdr), get32(hdr + PH_UPPER),
                       get32(hdr + PH_FRAG), (unsigned long long)n, len));
    if (pg_txid(hdr) != txid)
        return snapshot_lost(txn, bs_fail(BS_CORRUPT, "page %llu: stale or misplaced overflow "
                       "run: it was written by transaction %llu, but the leaf cell that points "
                       "to it expects transaction %llu", (unsigned long long)pgno,
                       (unsigned long long)pg_txid(hdr), (unsigned long long)txid));
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

int pager_ov_read(bs_txn *txn, uint64_t pgno, uint64_t txid, size_t len, void *dst)
{
    uint8_t hdr[PH_SIZE];
    uint64_t n;
    int rc;
    if (txn->noio)
        return BS_WOULDBLOCK;
    if ((rc = ov_header(txn, pgno, txid, len, hdr, &n)) != BS_OK ||
        (rc = ov_read_data(txn, pgno, len, dst)) != BS_OK)
        return rc;
    uint32_t crc = bs_crc32c(bs_crc32c(0, hdr + 4, PH_SIZE - 4), dst, len);
    if (crc != get32(hdr + PH_CRC))
        return bs_fail(BS_CORRUPT, "page %llu: overflow run checksum mismatch",
                       (unsigned long long)pgno);
    return BS_OK;
}

int pager_ov_check(bs_txn *txn, uint64_t pgno, uint64_t txid, size_t len, int full)
{
    uint8_t hdr[PH_SIZE];
    uint64_t n;
    int rc;
    if ((rc = ov_header(txn, pgno, txid, len, hdr, &n)) != BS_OK || !full)
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
        /* ours: it must be the run this value made (hostile files: a page of ours that the
         * freelist handed out while the committed value still used it) */
        if (BS_UNLIKELY(e->run != n))
            return pager_freelist_damaged(txn, pgno, "is in use by an overflow value");
        if (e->gen < txn->floor)
            return shadow(txn, e);
        to = &txn->local_free;
    }
    if ((rc = pgvec_reserve(to, to->n + n)) != BS_OK)
        return rc;
    if (e)
        dirty_remove(txn, e);
    for (uint64_t k = 0; k < n; k++)
        to->v[to->n++] = pgno + k;
    return BS_OK;
}

/* ------------------------------------------------------------------ writing pages */

/* sync=False: pages freed since the durable commit (not reusable until a commit is durable)
 * beyond which a commit is made durable anyway (16 MiB of 4 KiB pages) */
#define UNSYNCED_FREED_MAX 4096u

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
            uint8_t *pg = cache_frame_data(ents[i]->fr);
            put32(pg + PH_CRC, bs_page_crc(pg, P));
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
        if (leaves_only && pg_type(cache_frame_data(e->fr)) != PT_LEAF)
            continue;
        v[k++] = e;
    }
    if (k)
        qsort(v, k, sizeof *v, cmp_ent);
    *out = v;
    *n = k;
    return BS_OK;
}

/* Spilling (at the start of an operation, io mode only). Past db->spill_limit pages in memory
 * (the cache's capacity), the leaves and then every page are written out until half that is
 * left, so that a transaction's memory stays within the cache.
 * Early spilling: below that, a transaction that changes far more than the cache's dirty room
 * (db->spill_early pages, 64 MiB: a bulk load) would hold every page it made until its commit,
 * each in fresh memory the kernel must fault in and zero (a sorted fill of 10M records: 1.3
 * GB of frames, 29% of its profile in clear_page), and write them all at once at commit. So
 * past spill_early pages in memory the leaves are written out and their frames reused, as long
 * as they stay out: when more than 1 in EARLY_BACK of the leaves the last early spill wrote
 * were reloaded before the next one (random inserts into a tree that is all dirty), this
 * transaction stops spilling early. The first early spill is a probe of 1 in EARLY_PROBE of
 * the leaves, the lowest pages (the oldest), so that a pattern that brings them back costs
 * little; a sorted load brings back only its rightmost leaf. Leaves only: a transaction whose
 * branches alone fill half of spill_early stops too (nothing to gain).
 * After the probe, EARLY_PROBE_BACK leaves back are enough: the probe spills the oldest
 * leaves, which a sorted load never touches again, and the window to the next check can be
 * short. Random deletes from a committed 1M-record tree (37k leaves, each change a copy of a
 * clean leaf) dirty a new page almost every operation, so the probe's ~500 leaves faced ~600
 * operations and ~8 came back (1 in 60): at 1 in 32 that passed for a sorted load, and the
 * next spill wrote all 16.5k leaves in memory early, every one of which was read back (16.5k
 * preads and verifications) before the commit wrote it again. */
#define EARLY_BACK 32u
#define EARLY_PROBE 32u
#define EARLY_PROBE_BACK 2u

static int spill_write(bs_txn *txn, bs_dirty_ent **v, size_t n)
{
    txn->wrote_early = true;
    int rc = write_entries(txn, v, n);
    if (rc == BS_OK) {
        for (size_t i = 0; i < n; i++) {
            cache_frame_free(v[i]->fr);
            v[i]->fr = NULL;
            dirty_ix_set(&txn->dirty, v[i]->pgno, NULL);
            txn->dirty.nmem--;
        }
        cache_dirty_add(txn->db->cache, -(int64_t)n);
    }
    return rc;
}

bool pager_spill_due(const bs_txn *txn)
{
    const bs_db *db = txn->db;
    return txn->dirty.nmem > db->spill_limit ||
           (db->spill_early && !txn->early_off && txn->dirty.nmem > db->spill_early);
}

int pager_spill(bs_txn *txn)
{
    bs_db *db = txn->db;
    bs_dirty_ent **v;
    size_t n;
    int rc = BS_OK;
    if (txn->noio || !pager_spill_due(txn))
        return BS_OK;
    if (txn->dirty.nmem > db->spill_limit) {
        for (int pass = 0; pass < 2 && txn->dirty.nmem > db->spill_limit / 2; pass++) {
            if ((rc = collect(txn, pass == 0, &v, &n)) != BS_OK)
                return rc;
            rc = spill_write(txn, v, n);
            free(v);
            if (rc)
                goto fail;
        }
        return BS_OK;
    }
    if (txn->early_out && (txn->early_back * EARLY_BACK > txn->early_out ||
                           (txn->early_probed && txn->early_back >= EARLY_PROBE_BACK))) {
        txn->early_off = true; /* they come back: keep them in memory (up to spill_limit) */
        return BS_OK;
    }
    bool probe = !txn->early_out;
    if ((rc = collect(txn, 1, &v, &n)) != BS_OK)
        return rc;
    if (probe && n >= EARLY_PROBE)
        n /= EARLY_PROBE;
    rc = spill_write(txn, v, n);
    free(v);
    if (rc)
        goto fail;
    txn->early_out = n;
    txn->early_back = 0;
    txn->early_probed = probe;
    if (!probe && txn->dirty.nmem > db->spill_early / 2)
        txn->early_off = true; /* mostly branches in memory */
    return BS_OK;
fail:
    txn->failed = true;
    return rc;
}

/* ------------------------------------------------------------------ loading the freelist */

static int read_freelist(bs_txn *txn, const bs_meta *m, bs_pgvec *out, bs_pgvec *chain,
                         size_t *ndelta)
{
    uint64_t pgno = m->fl_head, want = m->fl_head_txid, from = m->slot;
    int rc = BS_OK;
    fl_replay r;
    freelist_replay_init(&r, m->page_count);
    while (pgno) {
        const uint8_t *pg;
        if (r.seq >= r.limit) {
            rc = freelist_replay_page(&r, pgno, NULL); /* reports the loop */
            goto out;
        }
        if ((rc = pager_get_ref(txn, pgno, PT_FREELIST, want, from, &pg)) != BS_OK)
            goto out;
        if (chain && (rc = pgvec_push(chain, pgno)) != BS_OK)
            goto out;
        if ((rc = freelist_replay_page(&r, pgno, pg)) != BS_OK)
            goto out;
        from = pgno;
        want = get64(pg + FL_NEXT_TXID);
        pgno = get64(pg + FL_NEXT);
    }
    rc = freelist_replay_finish(&r, m->fl_count, out, ndelta);
out:
    freelist_replay_free(&r);
    return rc;
}

int pager_read_freelist(bs_txn *txn, const bs_meta *m, bs_pgvec *out, bs_pgvec *chain)
{
    return read_freelist(txn, m, out, chain, NULL);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
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
    t.slot = cache_slot_acquire(db->cache);
    if (!t.slot)
        return bs_fail(BS_NOMEM, "out of memory");
    pager_enter(&t);
    bs_pgvec v = {0}, chain = {0};
    size_t ndelta = 0;
    int rc = read_freelist(&t, m, &v, &chain, &ndelta);
    pager_leave(&t);
    cache_slot_release(db->cache, t.slot);
    /* the cheap part of invariant 3 (hostile files): no page of the chain itself and no
     * tree root is listed as free (v is ascending); check() tests the rest */
    for (size_t i = 0; rc == BS_OK && i < chain.n + 2; i++) {
        uint64_t p = i < chain.n ? chain.v[i] : i == chain.n ? m->main.root : m->catalog.root;
        if (p && v.n && bsearch(&p, v.v, v.n, sizeof *v.v, cmp_u64))
            rc = bs_fail(BS_CORRUPT, "freelist lists page %llu, which is %s", (unsigned long long)p,
                         i < chain.n ? "a page of the freelist chain itself"
                                     : "the root page of a bucket tree");
    }
    if (rc == BS_OK)
        rc = freelist_install(&db->fl, &v, &chain, ndelta);
    pgvec_free(&v);
    pgvec_free(&chain);
    return rc;
}

/* ------------------------------------------------------------------ transactions */

/* dirty-image tags (pager_mine): never reused, never 0 */
static _Atomic uint64_t next_own_tag = 1;

void pager_txn_init(bs_txn *txn)
{
    txn->gen = 1;
    txn->floor = 1;
    txn->own_tag = txn->write ? atomic_fetch_add_explicit(&next_own_tag, 1, memory_order_relaxed)
                              : 0;
}

void pager_abort(bs_txn *txn)
{
    bs_db *db = txn->db;
    if (txn->write) {
        /* give back what we took from the freelist: this cannot run out of memory, because
         * pages only leave the reusable list during a write txn (its capacity still holds
         * them all), so the free set stays exact */
        assert(db->fl.reusable.cap >= db->fl.reusable.n + txn->alloc_from_free.n);
        if (txn->alloc_from_free.n)
            (void)freelist_merge(&db->fl.reusable, txn->alloc_from_free.v,
                                 txn->alloc_from_free.n);
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

/* Step a: the freelist record of this commit (see freelist.h). */
static int commit_freelist(bs_txn *txn, bs_meta *nm, bs_pgvec *chain, size_t *ndelta)
{
    bs_db *db = txn->db;
    fl_record r;
    uint8_t **pgs = NULL;
    int rc;
    if ((rc = freelist_plan(&db->fl, txn, &r)) != BS_OK)
        goto out;
    if (r.npages) {
        pgs = calloc(r.npages + 1, sizeof *pgs);
        if (!pgs) {
            rc = bs_fail(BS_NOMEM, "out of memory writing the freelist");
            goto out;
        }
        for (size_t i = 0; i < r.npages; i++) {
            uint64_t p;
            if ((rc = pager_new(txn, PT_FREELIST, &pgs[i], &p)) != BS_OK ||
                (rc = pgvec_push(chain, p)) != BS_OK)
                goto out;
        }
    }
    if (!r.keep && (rc = freelist_collect(&db->fl, txn, &r)) != BS_OK) {
        /* a page both freed from a tree and taken from the freelist, or free twice: the
         * loaded free set held pages in use (hostile files) */
        if (rc == BS_CORRUPT && !db->fl_broken)
            db->fl_broken = strdup(bs_errmsg());
        goto out;
    }
    rc = freelist_fill(&db->fl, txn, &r, db->page_size, pgs, chain, &nm->fl_head,
                       &nm->fl_count, ndelta);
    /* the head is a page written now, or the base's head kept as it was */
    nm->fl_head_txid = !nm->fl_head ? 0 : (!r.keep && r.npages) ? txn->txid
                                                               : txn->meta.fl_head_txid;
out:
    freelist_record_free(&r);
    free(pgs);
    return rc;
}

static int cmp_list_ent(const void *a, const void *b)
{
    const bs_list_ent *ea = a, *eb = b;
    return ea->pgno < eb->pgno ? -1 : ea->pgno > eb->pgno;
}

/* The base commit's list without the pages this transaction freed, into nm->list in page
 * order (lists this code writes are in page order; one an older build wrote is sorted
 * first); returns how many remain. Freed pages are looked up, not scanned: the list holds up
 * to 328 entries and a commit may free as many. */
static uint32_t base_list_unfreed(const bs_txn *txn, bs_meta *nm)
{
    uint32_t m = txn->meta.nlist, k = 0;
    memcpy(nm->list, txn->meta.list, m * sizeof nm->list[0]);
    bool sorted = true;
    for (uint32_t i = 1; i < m && sorted; i++)
        sorted = nm->list[i - 1].pgno < nm->list[i].pgno;
    if (!sorted)
        qsort(nm->list, m, sizeof nm->list[0], cmp_list_ent);
    for (uint32_t i = 0; i < m; i++)
        nm->list[i].drop = 0;
    for (size_t i = 0; i < txn->freed.n && m; i++) {
        bs_list_ent key = {.pgno = txn->freed.v[i]};
        bs_list_ent *hit = bsearch(&key, nm->list, m, sizeof nm->list[0], cmp_list_ent);
        if (hit)
            hit->drop = 1; /* marked, not moved: the list stays sorted for the next search */
    }
    for (uint32_t i = 0; i < m; i++)
        if (!nm->list[i].drop)
            nm->list[k++] = nm->list[i];
    return k;
}

int pager_commit(bs_txn *txn, bs_meta *nm)
{
    bs_db *db = txn->db;
    bs_pgvec chain = {0};
    bs_dirty_ent **v = NULL;
    uint8_t *mpg = NULL;
    size_t n = 0, ndelta = 0;
    int rc, err;

    if ((rc = commit_freelist(txn, nm, &chain, &ndelta)) != BS_OK)
        goto fail;
    /* room for publishing (f), taken now: once the meta is written nothing may fail, or the
     * in-memory free set would disagree with the persisted one */
    if ((rc = pgvec_reserve(&db->fl.reusable, db->fl.reusable.n + txn->local_free.n)) != BS_OK ||
        (rc = freelist_reserve_pend(&db->fl)) != BS_OK)
        goto fail;
    if (!(mpg = malloc(db->page_size))) { /* the meta page's image (and its retraction) */
        rc = bs_fail(BS_NOMEM, "out of memory writing the meta page");
        goto fail;
    }
    nm->page_count = txn->page_count;
    nm->txid = txn->txid;
    if ((rc = collect(txn, 0, &v, &n)) != BS_OK)
        goto fail;
    if ((rc = write_entries(txn, v, n)) != BS_OK) {
        if (rc != BS_FULL)
            atomic_store(&db->panic, 1);
        goto fail;
    }
    /* (c) the unsynced set: pages this commit references written since the durable commit */
    bool durable = txn->sync;
    if (!durable && txn->freed.n + freelist_pinned(&db->fl, atomic_load(&db->durable_txid)) >
                        UNSYNCED_FREED_MAX)
        durable = true; /* the writer owns db->fl */
    bool listed = !txn->wrote_early && n <= fmt_commit_list_cap(db->page_size);
    uint32_t cap = fmt_commit_list_cap(db->page_size), nl = 0;
    nm->nlist = 0;
    if (listed && txn->meta.txid > atomic_load(&db->durable_txid)) {
        /* the base commit was not durable: its list is still at risk, minus what we freed */
        nl = base_list_unfreed(txn, nm);
        listed = nl + n <= cap;
    }
    if (listed) {
        /* merge this commit's pages (v is in page order) into the remaining ones, from the
         * back: the list stays in page order */
        uint32_t kept = nl;
        for (size_t k = nl + n, j = n; j > 0;) {
            k--;
            if (nl && nm->list[nl - 1].pgno > v[j - 1]->pgno) {
                nm->list[k] = nm->list[nl - 1];
                nl--;
            } else {
                nm->list[k].pgno = v[j - 1]->pgno;
                nm->list[k].crc = get32(cache_frame_data(v[j - 1]->fr) + PH_CRC);
                j--;
            }
        }
        nm->nlist = kept + (uint32_t)n;
    } else {
        listed = false;
        durable = true; /* cannot be validated at open: make it durable instead */
    }
    nm->slot = 1 - db->durable_slot;
    if (durable && atomic_load(&db->dir_unsynced)) {
        /* the file's directory entry must be durable before any commit is (nothing of this
         * commit is referenced yet: a failure leaves the durable state untouched) */
        if ((err = db->io->sync_dir(db->io_arg, db->path)) != 0) {
            if (err == ENOMEM) { /* before any sync was tried: the commit just fails */
                rc = bs_fail(BS_NOMEM, "out of memory syncing the directory of %s", db->path);
                goto fail;
            }
            rc = bs_fail_io(err, "syncing the directory of %s", db->path);
            atomic_store(&db->panic, 1);
            goto fail;
        }
        atomic_store(&db->dir_unsynced, 0);
    }
    if (durable && !listed && (err = db->io->sync(db->file)) != 0) {
        rc = bs_fail_io(err, "syncing the data pages of commit %llu", (unsigned long long)txn->txid);
        atomic_store(&db->panic, 1);
        goto fail;
    }
    if ((rc = meta_write(db, nm, mpg)) != BS_OK) {
        meta_retract(db, nm->slot, &txn->meta, mpg);
        atomic_store(&db->panic, 1);
        goto fail;
    }
    if (durable && (err = db->io->sync(db->file)) != 0) {
        rc = bs_fail_io(err, "syncing commit %llu", (unsigned long long)txn->txid);
        meta_retract(db, nm->slot, &txn->meta, mpg);
        atomic_store(&db->panic, 1);
        goto fail;
    }

    /* publish: new transactions see this commit from here on */
    pthread_mutex_lock(&db->mu);
    rc = freelist_merge(&db->fl.reusable, txn->local_free.v, txn->local_free.n);
    if (rc == BS_OK)
        rc = freelist_pend(&db->fl, txn->txid, &txn->freed);
    assert(rc == BS_OK); /* both reserved above */
    rc = BS_OK;
    meta_copy(&db->meta, nm);
    if (durable) {
        atomic_store(&db->durable_txid, nm->txid);
        db->durable_slot = nm->slot;
    }
    pthread_mutex_unlock(&db->mu);
    pgvec_free(&db->fl.chain);
    db->fl.chain = chain;
    db->fl.ndelta = ndelta;
    memset(&chain, 0, sizeof chain);
    /* promote the written pages into the shared cache (they are now committed). From here
     * on this transaction holds no shared-cache pointer: stop pinning the epoch so that the
     * frames this evicts can be reclaimed at once. */
    pager_leave(txn);
    for (size_t i = 0; i < n; i++) {
        bs_frame *f = v[i]->fr;
        v[i]->fr = NULL;
        dirty_ix_set(&txn->dirty, v[i]->pgno, NULL);
        txn->dirty.nmem--;
        cache_dirty_add(db->cache, -1);
        if (db->map && map_record(db, v[i]->pgno, cache_frame_data(f))) {
            /* read in place from the mapping from now on, known good */
            cache_frame_free(f);
            continue;
        }
        frame_summarize(f);
        cache_insert(db->cache, f, v[i]->pgno, true);
    }
    free(v);
    free(mpg);
    pgvec_free(&txn->alloc_from_free);
    pgvec_free(&txn->local_free);
    dirty_clear(txn);
    return BS_OK;
fail:
    free(v);
    free(mpg);
    pgvec_free(&chain);
    return rc;
}

/* ------------------------------------------------------------------ savepoints */

int pager_savepoint(bs_txn *txn, bs_savepoint *sp)
{
    int rc = pgvec_copy(&sp->local_free, &txn->local_free);
    if (rc)
        return rc;
    sp->floor_prev = txn->floor;
    sp->page_count = txn->page_count;
    sp->freed_n = txn->freed.n;
    sp->alloc_n = txn->alloc_from_free.n;
    memset(&sp->shadowed, 0, sizeof sp->shadowed);
    txn->gen++;
    txn->floor = txn->gen;
    return BS_OK;
}

int pager_rollback(bs_txn *txn, bs_savepoint *sp)
{
    bs_dirty *d = &txn->dirty;
    /* the only allocation comes first: pages taken from the freelist since the savepoint
     * stay ours (abort gives them back) and join the restored local_free */
    size_t taken = txn->alloc_from_free.n - sp->alloc_n;
    int rc = pgvec_reserve(&sp->local_free, sp->local_free.n + taken);
    if (rc)
        return rc;
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
    for (size_t i = sp->alloc_n; i < txn->alloc_from_free.n; i++)
        txn->local_free.v[txn->local_free.n++] = txn->alloc_from_free.v[i];
    txn->page_count = sp->page_count;
    txn->freed.n = sp->freed_n;
    txn->floor = sp->floor_prev;
    return BS_OK;
}

int pager_release(bs_txn *txn, bs_savepoint *sp)
{
    bs_savepoint *parent = txn->nsp >= 2 ? &txn->sp[txn->nsp - 2] : NULL;
    /* first the room for every page this moves (so that nothing fails half way) */
    size_t nlocal = 0, nparent = 0;
    for (size_t i = 0; i < sp->shadowed.n; i++) {
        bs_dirty_ent *e = dirty_find(txn, sp->shadowed.v[i]);
        if (!e)
            continue;
        if (e->gen >= sp->floor_prev || !parent)
            nlocal += e->run ? e->run : 1;
        else
            nparent++;
    }
    int rc;
    if ((rc = pgvec_reserve(&txn->local_free, txn->local_free.n + nlocal)) != BS_OK ||
        (parent && (rc = pgvec_reserve(&parent->shadowed, parent->shadowed.n + nparent)) != BS_OK))
        return rc;
    txn->floor = sp->floor_prev;
    for (size_t i = 0; i < sp->shadowed.n; i++) {
        bs_dirty_ent *e = dirty_find(txn, sp->shadowed.v[i]);
        if (!e)
            continue;
        if (e->gen >= txn->floor || !parent) {
            uint64_t p = e->pgno, run = e->run;
            dirty_remove(txn, e);
            for (uint64_t k = 0; k < (run ? run : 1); k++)
                txn->local_free.v[txn->local_free.n++] = p + k;
        } else {
            parent->shadowed.v[parent->shadowed.n++] = e->pgno;
        }
    }
    pgvec_free(&sp->shadowed);
    pgvec_free(&sp->local_free);
    return BS_OK;
}
