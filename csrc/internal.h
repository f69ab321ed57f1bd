/*
 * internal.h - structures and functions shared by the engine's own files (never the binding).
 *
 * Layer map (each calls only downward):
 *   db.c       public API (bs.h): open/close, transactions, readers, buckets/catalog, commit
 *   btree.c    B+tree on one bs_tree: get/put/del, deferred rebalance, cursors, drop, page
 *              verification; check.c the integrity checker
 *   pager.c    page access for a transaction: reading and verifying pages, dirty pages of
 *              the write transaction, allocation/free, overflow runs, spilling, savepoints,
 *              loading the freelist, writing a commit
 *   cache.c    the shared page cache (lock-free hits, CLOCK, epoch reclamation): cache.h
 *   map.c      read-only shared mappings of the file, pages read in place: map.h
 *   freelist.c page lists, the free set, pending groups, the persisted chain: freelist.h
 *   meta.c     the meta pages: choosing, writing, retracting, creating: meta.h
 *   io_*.c     bs_io_methods (io.h); crc32c.c; util.c errors and growth of arrays
 */
#ifndef BS_INTERNAL_H
#define BS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "bs.h"
#include "cache.h"
#include "crc32c.h"
#include "format.h"
#include "io.h"
#include "map.h"

#define BS_MAX_DEPTH 32        /* deeper than any real tree (fanout >= 2 up to 2^64 pages) */
#define BS_MAX_NAME 255u
#define BS_TXID_END (UINT64_MAX >> 1) /* every txid is below it (meta_decode refuses more) */

#if defined(__GNUC__)
#define BS_LIKELY(x) __builtin_expect(!!(x), 1)
#define BS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define BS_PRINTF(a, b) __attribute__((format(printf, a, b)))
/* Use it in code that has effects of its own, or as a macro: gcc 12 deletes calls to a
 * function whose only effect is a prefetch (it takes it for one without side effects). */
#define BS_PREFETCH(a) __builtin_prefetch(a)
#else
#define BS_PREFETCH(a) ((void)(a))
#define BS_LIKELY(x) (x)
#define BS_UNLIKELY(x) (x)
#define BS_PRINTF(a, b)
#endif

/* ---- errors (util.c) ---- */
/* Record a thread-local message for rc and return rc: `return bs_fail(BS_CORRUPT, "page %llu:
 * bad slot", (unsigned long long)pgno);` */
int bs_fail(int rc, const char *fmt, ...) BS_PRINTF(2, 3);
/* Same, saving err as bs_errno(); rc BS_IOERR, or BS_FULL for ENOSPC/EDQUOT/EFBIG. */
int bs_fail_io(int err, const char *fmt, ...) BS_PRINTF(2, 3);
void bs_clear_error(void);

/* ---- trees ---- */
/* The root record of one B+tree (a bucket, the default bucket, or the catalog). btree.c keeps
 * root/depth/count right and sets dirty when any of them or any page of the tree changed, and
 * needs_rebalance when a delete left an underfull node (fixed at commit). */
typedef struct bs_tree {
    uint64_t root;   /* 0 = empty, no page */
    uint64_t root_txid; /* txid the root page carries (format.h: parents vouch for children) */
    uint64_t count;  /* entries */
    uint32_t depth;  /* 0 when root == 0, 1 when the root is a leaf */
    bool dirty;
    bool needs_rebalance;
    uint8_t edge;    /* a hint only, any value is safe (decoders set 0): the last write's
                      * descent ran along the right edge and ended past the last key
                      * (btree.c bt_descend: the next write tries each node's last cell
                      * first) */
} bs_tree;

struct bs_bucket {
    bs_tree tree;
    uint8_t name[BS_MAX_NAME];
    uint8_t nlen;        /* 0 for the default bucket */
    bool dropped;        /* dropped in this transaction (handle no longer usable) */
    bool stale;          /* opened after a savepoint that was rolled back: reload from catalog */
    unsigned idx;        /* position in txn->buckets */
};

/* A commit-list entry: a page a single-sync commit wrote, and its CRC (drop: scratch of
 * pager_commit, in what would be padding). */
typedef struct bs_list_ent { uint64_t pgno; uint32_t crc, drop; } bs_list_ent;

/* Parsed meta page (format.h META_*). */
typedef struct bs_meta {
    uint64_t txid;
    uint64_t slot;    /* meta page (0 or 1) this commit is (to be) written to */
    uint64_t page_count;
    uint64_t fl_head, fl_count;
    uint64_t fl_head_txid; /* txid the freelist head page carries */
    bs_tree main;     /* default bucket */
    bs_tree catalog;  /* named buckets: name -> 32-byte bucket record */
    uint32_t nlist;   /* commit list (single-sync commits), see format.h; last, so that
                       * meta_copy copies only the nlist entries in use */
    bs_list_ent list[BS_COMMIT_LIST_MAX];
} bs_meta;

/* *dst = *src, without the unused tail of the commit list (5 KiB that a transaction's begin
 * would otherwise copy) */
static inline void meta_copy(bs_meta *dst, const bs_meta *src)
{
    memcpy(dst, src, offsetof(bs_meta, list) + src->nlist * sizeof src->list[0]);
}

/* ---- page cache (cache.h; opaque outside cache.c) ---- */
typedef struct bs_cache bs_cache;
typedef struct bs_frame bs_frame;
typedef struct bs_slot bs_slot;

/* Checksum of a page image (everything after the CRC field). */
static inline uint32_t bs_page_crc(const uint8_t *pg, uint32_t psize)
{
    return bs_crc32c(0, pg + 4, psize - 4);
}

/* Grow the array *pp (of elements of elem bytes, capacity *cap) to hold at least need
 * elements, doubling from `first`. pp is the address of the array pointer. BS_OK, or
 * BS_NOMEM ("out of memory growing <what>") leaving the array as it was. */
int bs_grow(void *pp, size_t *cap, size_t need, size_t elem, size_t first, const char *what);

/* ---- freelist (freelist.h; touched only by the writer, under db->wmu ownership) ---- */
typedef struct bs_pgvec { uint64_t *v; size_t n, cap; } bs_pgvec;
typedef struct bs_pending { uint64_t txid; bs_pgvec pages; } bs_pending;

typedef struct bs_freelist {
    bs_pgvec reusable;     /* sorted DESCENDING so that the lowest page pops off the end */
    bs_pending *pend;      /* pages freed by commit txid, not yet reusable (readers) */
    size_t npend, cappend;
    bs_pgvec chain;        /* pages of the newest commit's freelist chain, head first */
    size_t ndelta;         /* delta records in that chain (compaction when it grows) */
} bs_freelist;

/* ---- dirty pages of the write transaction (pager.c) ---- */
typedef struct bs_dirty_ent {
    uint64_t pgno;          /* 0 = empty slot */
    bs_frame *fr;           /* NULL: spilled to disk (still owned by this txn) */
    uint64_t gen;           /* generation that allocated this page */
    uint64_t run;           /* overflow run: its length in pages (always on disk); else 0 */
    bool shadowed;          /* freed inside a savepoint while an outer level still needs it */
} bs_dirty_ent;

/* The page index of a large transaction: ix[pgno] for every pgno < ixcap is NULL (not a
 * dirty page), DIRTY_SPILLED (one written out, fr == NULL) or its frame; every entry of the
 * table lies below ixcap. A descent finds a dirty page there in one load from an array of
 * 8 bytes a page of the file (~370 KB for a 1M-record fill, against the table's 2 MB of
 * slots it would probe, cold in cache: a random write at 1M waited on that probe) and learns
 * that a page is not dirty without probing the table. Built once the table holds
 * DIRTY_IX_MIN entries that are at least 1 in DIRTY_IX_SPARSE of the file's pages (so that it
 * costs at most 128 bytes a dirty page: pager.c, dirty_ix_build); dropped (ix = NULL) if it
 * cannot grow: it is only a shortcut, the table holds every entry either way. */
#define DIRTY_SPILLED ((bs_frame *)(uintptr_t)1)
#define DIRTY_IX_MIN 1024u
#define DIRTY_IX_SPARSE 16u

typedef struct bs_dirty {
    bs_dirty_ent *e;
    size_t mask, n, nmem;   /* table size-1, entries, entries held in memory */
    bs_frame **ix;          /* NULL, or the page index (above) */
    size_t ixcap;
} bs_dirty;

/* The dirty map is open addressing with linear probing (pager.c keeps it); the lookup is
 * here so that a descent can ask it inline (pager_get_mine). */
static inline size_t dirty_slot(uint64_t pgno, size_t mask)
{
    uint64_t x = pgno;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (uint32_t)x & mask;
}

static inline bs_dirty_ent *dirty_lookup(const bs_dirty *d, uint64_t pgno)
{
    if (!d->n || (d->ix && (pgno >= d->ixcap || !d->ix[pgno])))
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

/* pgno is a dirty page; *fr its frame, NULL when it is spilled. */
static inline bool dirty_get(const bs_dirty *d, uint64_t pgno, bs_frame **fr)
{
    if (d->ix) {
        bs_frame *f = pgno < d->ixcap ? d->ix[pgno] : NULL;
        *fr = f == DIRTY_SPILLED ? NULL : f;
        return f != NULL;
    }
    const bs_dirty_ent *e = dirty_lookup(d, pgno);
    *fr = e ? e->fr : NULL;
    return e != NULL;
}

/* The frame of dirty page pgno held in memory, or NULL (not dirty, or spilled). */
static inline bs_frame *dirty_frame(const bs_dirty *d, uint64_t pgno)
{
    bs_frame *f;
    (void)dirty_get(d, pgno, &f);
    return f;
}

/* Request the line a lookup of pgno reads first (batch hints). */
static inline void dirty_prefetch(const bs_dirty *d, uint64_t pgno)
{
    if (d->ix) {
        if (pgno < d->ixcap)
            BS_PREFETCH(&d->ix[pgno]);
    } else if (d->n) {
        BS_PREFETCH(&d->e[dirty_slot(pgno, d->mask)]);
    }
}

typedef struct bs_savepoint {
    uint64_t floor_prev;
    uint64_t page_count;
    size_t freed_n, alloc_n;
    bs_pgvec local_free;    /* copy */
    bs_pgvec shadowed;      /* owned pages made unreachable inside this level */
    struct bs_bucket *buckets; size_t nbuckets; /* copies of the handles */
    bs_tree catalog;
} bs_savepoint;

/* ---- reader registry (db.c) ---- */
typedef struct bs_reader {
    uint64_t snap;          /* snapshot txid; 0 = free entry */
} bs_reader;

struct bs_db {
    const bs_io_methods *io;
    void *io_arg;           /* bs_options.io_arg (compact reopens with it) */
    bs_file *file;
    char *path;
    uint32_t page_size;
    uint32_t page_shift;
    int readonly, sync;
    uint64_t fork_gen;      /* bs_fork_generation at open */
    _Atomic int nowait_off; /* io->read_nowait unsupported here */
    /* read-ahead bookkeeping (pager.c): neighbour pages read ahead and, of those, how many a
     * lookup used (both halved now and then, so they describe the recent access pattern),
     * and a counter of the misses that skipped read-ahead (every AHEAD_PROBE-th still reads) */
    _Atomic uint32_t ahead_in, ahead_used, ahead_skip;

    pthread_mutex_t mu;     /* meta, readers, txn count */
    bs_meta meta;           /* newest commit (what new transactions see) */
    bs_reader *readers; size_t nreaders, capreaders;
    size_t ntxn;            /* live transactions */

    pthread_mutex_t wmu;    /* writer lock state */
    pthread_cond_t wcond;
    int writer_active;
    uint64_t writer_thread; /* bs_thread_token() of the writer (never reused, unlike pthread_t) */

    _Atomic int panic;      /* invariant 5 */
    /* The directory entry may not be durable (a file created with sync=False, or one found
     * at open: a crashed process may have created it so): the first durable commit or sync
     * fsyncs the directory first. */
    _Atomic int dir_unsynced;
    /* Durability horizon (writer-owned; read atomically by stat): the newest commit known
     * to be on stable storage, and the meta slot holding it. No commit writes that slot
     * until a newer commit is durable, and pages freed by commits newer than it wait. */
    _Atomic uint64_t durable_txid;
    uint64_t durable_slot;
    bs_freelist fl;         /* writer-owned */
    char *fl_broken;        /* the freelist failed to load: why (writes are refused) */
    bool fl_checked;        /* writer-owned: check_free_set passed (once per handle, at the
                             * first write transaction) or a repair rebuilt the free set */
    bs_cache *cache;
    uint64_t spill_limit;   /* dirty pages held in memory before spilling */
    uint64_t spill_early;   /* below spill_limit: leaves spilled early while few come back
                             * (pager_spill); 0 = never */
    bool check_commits;     /* check the whole state after each commit (bs_options) */
    /* Many processes (lockfile.h): the side file PATH-lock, NULL for memory databases and
     * for a read-only file no writer can exist for; lf_writing: we hold its write lock. */
    struct bs_lockfile *lf;
    bool lf_writing;
    uint64_t fl_txid;       /* writer-owned: the commit db->fl describes */
    uint64_t txid_floor;    /* writer-owned: the next commit takes a txid above this (the
                             * highest any process committed, lost commits included) */
    uint64_t dev, ino;      /* the data file (two handles of one file in one process) */
    bs_map *map;            /* committed pages read in place (map.h), or NULL: frames */
};

struct bs_txn {
    bs_db *db;
    bool write;
    bool noio;
    bool failed;            /* write txn hit an error mid-change: only abort is allowed */
    _Atomic int busy;       /* bs_txn_enter/leave */
    uint64_t txid;          /* read: snapshot txid; write: snapshot txid + 1 */
    uint64_t page_count;    /* high-water mark (the write txn grows it) */
    bs_slot *slot;          /* epoch slot */
    size_t reader_idx;      /* read txns: entry in db->readers */
    uint64_t mod_seq;       /* bumped by every change; cursors re-seek when it moved */
    uint64_t hits, misses;  /* cache statistics, added to the cache's totals at the end */
    bool wrote_early;       /* pages reached the file before commit (spill, overflow runs) */
    bool early_off;         /* early spilling gave up for this txn: spilled leaves came back */
    bool early_probed;      /* the last early spill was the probe (pager_spill) */
    uint64_t early_out, early_back; /* leaves the last early spill wrote; reloads since */
    bool sync;              /* write txn: commit durably (db->sync unless overridden at begin) */
    bool repair;            /* bs_db_repair's txn: writes a new base freelist; clears
                             * db->fl_broken when it commits */

    /* buckets opened in this transaction (default bucket is buckets[0]) */
    struct bs_bucket **buckets; size_t nbuckets, capbuckets;
    bs_tree catalog;

    /* write transaction only */
    bs_dirty dirty;
    bs_pgvec freed;         /* committed pages freed: become pending(txid) at commit */
    bs_pgvec local_free;    /* pages this txn allocated then freed: reusable at once */
    bs_pgvec alloc_from_free; /* pages popped from db->fl.reusable (returned on abort) */
    uint64_t gen, floor;    /* savepoint generations; in-place writes need ent->gen >= floor */
    uint64_t own_tag;       /* write txn: the tag of its dirty images (pager_mine), unique */
    void *bt_scratch;       /* btree.c's scratch block for overflowing nodes (btree_txn_free) */
    bs_savepoint *sp; size_t nsp, capsp;

    /* the snapshot (write: the base being changed); last, with its commit list last: begin
     * zeroes the transaction only up to the list (TXN_ZERO_SIZE) and copies nlist entries */
    bs_meta meta;
};
#define TXN_ZERO_SIZE (offsetof(bs_txn, meta) + offsetof(bs_meta, list))

/* bs_txn_begin flag of bs_db_repair only: begin even though db->fl_broken is set */
#define BS_TXN_REPAIR_ (1u << 16)

/* ---- fork detection (db.c) ---- */
extern _Atomic uint64_t bs_fork_generation;

/* ---- pager.c: epoch bracket for a transaction (bs_txn_enter/leave) ---- */
void pager_enter(bs_txn *txn);
void pager_leave(bs_txn *txn);

/* ---- pager.c: page access for btree.c and check.c ----
 * Pointers stay valid until bs_txn_leave, and (write txn) across other pager calls of the
 * same operation; pager_spill (called by db.c only at the start of an operation) is the one
 * call that drops in-memory dirty pages. */

/* Read access to a page of the given type (PT_BRANCH/PT_LEAF/PT_FREELIST; 0 = any).
 * Order: the write txn's dirty pages, then the shared cache, then the disk. A page read from
 * disk is verified before it is cached or returned (CRC, pgno, type, node bounds via
 * btree_verify_page, child numbers < txn->page_count): BS_CORRUPT naming the page.
 * BS_WOULDBLOCK if it needs the disk and txn->noio. */
int pager_get(bs_txn *txn, uint64_t pgno, int type, const uint8_t **out);
/* pager_get through a pointer (format.h: parents vouch for their children): the page's header
 * txid must equal `txid`, what the pointer recorded; `from` names the pointer's page for the
 * message (PAGER_FROM_RECORD: a bucket record). Checked on cache hits too: a cached page that
 * mismatches is dropped and reread from the file once. BS_CORRUPT naming both on mismatch. */
#define PAGER_FROM_RECORD UINT64_MAX
/* pager_get_ref's fast path, inline, for the common case of a write transaction's descent:
 * pgno is a dirty page of txn held in memory, carrying `txid` and of the given type. True
 * with *out set then; false (nothing set) in every other case, where the caller asks
 * pager_get_ref, which finds the same page, or reads it, or reports what is wrong. */
static inline bool pager_get_mine(bs_txn *txn, uint64_t pgno, int type, uint64_t txid,
                                  const uint8_t **out);
int pager_get_ref(bs_txn *txn, uint64_t pgno, int type, uint64_t txid, uint64_t from,
                  const uint8_t **out);
/* Writable copy of pgno. If this txn owns it (and its generation allows), in place:
 * *newpgno == pgno. Else copy-on-write: a new page with the same bytes (header pgno/txid
 * updated), the old one freed; *newpgno is the new number and the caller must repoint the
 * parent (or tree->root). Never does I/O except to reload a spilled page (io mode). */
int pager_write(bs_txn *txn, uint64_t pgno, uint8_t **out, uint64_t *newpgno);
/* A new dirty page of `type`, zeroed, header set (pgno, txid, type; nodes: upper = P). */
int pager_new(bs_txn *txn, int type, uint8_t **out, uint64_t *pgno);
/* The page is no longer part of the tree once this txn commits. */
int pager_free(bs_txn *txn, uint64_t pgno);
/* The freelist handed out a page that is in use (a hostile or damaged file): BS_CORRUPT
 * naming pgno and why, the transaction fails and the handle refuses writes from now on
 * (db->fl_broken; reads go on). For callers that see the conflict first (btree.c: a page
 * still on the path being copied). */
int pager_freelist_damaged(bs_txn *txn, uint64_t pgno, const char *why);
/* True when pgno belongs to this write txn (allocated by it, in memory or spilled). */
bool pager_owned(bs_txn *txn, uint64_t pgno);

/* The bounds of a node image: its first and last key (a branch's first key is that of cell
 * 1), at most BS_BOUNDS_CAP bytes of each; len BS_BOUNDS_LONG = longer (the bytes are a
 * prefix). A descent's range check (btree.c) reads these instead of the node's first and
 * last cells: two cache misses fewer per level. */
#define BS_BOUNDS_CAP 22
#define BS_BOUNDS_LONG 255
typedef struct bs_bounds {
    uint8_t valid;                  /* 0: no summary (then nothing else is meaningful) */
    uint8_t len[2];                 /* first, last */
    uint8_t key[2][BS_BOUNDS_CAP];
} bs_bounds;
/* The bounds of a page returned by pager_get/pager_get_ref: those kept with a shared cached
 * image (computed by btree_bounds before it was published; immutable), or NULL (a page of
 * the write transaction, which changes). */
const bs_bounds *pager_bounds(const uint8_t *pg);

/* Range-check memo (btree.c's descent). A shared cached image has an id that no other image
 * ever gets (pager_image_id; 0 for a page of the write transaction, which changes, or one
 * that is not a node). A key range is named by where its bounds lie: the image id and cell
 * index of each bound (BS_RNG_OPEN: unbounded; id 0: a bound in a page that may change, which
 * is never memoized). pager_memo_set records on image pg that it was checked against range
 * k and passed; pager_memo_hit returns pg's image id when that is what it recorded, else 0.
 * One memo per image (the last range recorded); a new image in a frame starts with none. */
#define BS_RNG_OPEN 1u
typedef struct bs_rng_key {
    uint64_t lo, hi;  /* image ids of the pages holding the low and high bound */
    uint32_t idx;     /* cell index of the low bound | cell index of the high bound << 16 */
} bs_rng_key;
/* The memo fields of an image (bs_img_memo, cache.h) are read inline: a descent asks once
 * per level. */

static inline bs_img_memo *pager_memo_of(const uint8_t *pg)
{
    bs_mpage *mp = bs_map_page_of(pg); /* a page read in place from a mapping (map.h) */
    if (mp)
        return &mp->memo;
    return (bs_img_memo *)(void *)(uintptr_t)(pg - BS_IMG_MEMO_BACK);
}

static inline uint64_t pager_image_id(const uint8_t *pg)
{
    return pager_memo_of(pg)->image_id;
}

/* pager_memo_hit on the memo itself (a mapped page's record at hand: pager_get_mapped) */
static inline uint64_t pager_memo_hit_at(const bs_img_memo *m, const bs_rng_key *k)
{
    uint64_t id = m->image_id;
    if (!id || !k->lo || !k->hi)
        return 0;
    uint32_t s = atomic_load_explicit(&m->seq, memory_order_acquire);
    bool eq = atomic_load_explicit(&m->lo, memory_order_relaxed) == k->lo &&
              atomic_load_explicit(&m->hi, memory_order_relaxed) == k->hi &&
              atomic_load_explicit(&m->idx, memory_order_relaxed) == k->idx;
    atomic_thread_fence(memory_order_acquire);
    if (!eq || (s & 1u) || atomic_load_explicit(&m->seq, memory_order_relaxed) != s)
        return 0;
    return id;
}

static inline uint64_t pager_memo_hit(const uint8_t *pg, const bs_rng_key *k)
{
    return pager_memo_hit_at(pager_memo_of(pg), k);
}

/* pager_get_ref's fast path for committed pages read in place (map.h), inline, for reads
 * (btree_get). pager_map_window: the window an operation of txn looks pages up in, loaded
 * once per operation; NULL (every lookup goes to pager_get_ref) without a mapping, or in a
 * write transaction with dirty pages (which come first). pager_get_mapped: pgno through
 * that window when its record says the image was verified at `txid` (what the pointer
 * expects, nonzero), the image's header carries it and it has the given type: the record,
 * *out set to the image. NULL (nothing set) in every other case (first use, a page reused
 * since, beyond the window or the snapshot, the wrong type, a mismatch): the caller asks
 * pager_get_ref, which verifies, reads again or reports, as for any lookup. What it does not
 * look at is the mapping's damaged flag (SIGBUS, map.h: such a page reads as zeros, which
 * the searches survive inside the window's tail): an operation that used it ends with
 * pager_map_check, which turns whatever it concluded into BS_IOERR. */
static inline const bs_mwin *pager_map_window(const bs_txn *txn)
{
    bs_map *m = txn->db->map;
    if (!m || (txn->write && txn->dirty.n))
        return NULL;
    return atomic_load_explicit(&m->cur, memory_order_acquire);
}

static inline bs_mpage *pager_get_mapped(bs_txn *txn, const bs_mwin *w, uint64_t pgno,
                                         int type, uint64_t txid, const uint8_t **out)
{
    if (BS_UNLIKELY(pgno < BS_META_PAGES || pgno >= txn->page_count || pgno >= w->npages))
        return NULL;
    bs_mpage *mp = &w->meta[pgno];
    const uint8_t *pg = w->base + (pgno << w->shift);
    if (BS_UNLIKELY(atomic_load_explicit(&mp->vtxid, memory_order_acquire) != txid || !txid ||
                    pg_txid(pg) != txid || pg_type(pg) != type))
        return NULL;
    txn->hits++;
    *out = pg;
    return mp;
}

/* Dirty images of the write transaction, told apart without a dirty-map lookup: a frame
 * that becomes a dirty page of txn carries txn->own_tag and the savepoint generation that
 * made it (bs_img_memo.own, own_gen); a shared image carries 0.
 * pager_mine: pg (returned by pager_get/pager_get_ref in this operation) is a dirty page that
 * pager_write would hand back in place (same page, same image; not one of an outer
 * savepoint level, which is copied).
 * pager_vouched / pager_vouch / pager_unvouch: the range-check mark of a dirty image, see
 * btree.c rng_check for what it means and who clears it. Dirty images only (vouch and
 * unvouch do nothing to any other image). */
static inline bool pager_get_mine(bs_txn *txn, uint64_t pgno, int type, uint64_t txid,
                                  const uint8_t **out)
{
    if (!txn->write || pgno < BS_META_PAGES || pgno >= txn->page_count)
        return false;
    bs_frame *fr = dirty_frame(&txn->dirty, pgno);
    if (!fr)
        return false;
    const uint8_t *pg = cache_frame_data(fr);
    if (pg_txid(pg) != txid || (type && pg_type(pg) != type))
        return false;
    *out = pg;
    return true;
}

static inline bool pager_mine(const bs_txn *txn, const uint8_t *pg)
{
    const bs_img_memo *m = pager_memo_of(pg);
    return m->own >= 2 && (m->own >> 1) == txn->own_tag && m->own_gen >= txn->floor;
}

static inline bool pager_vouched(const bs_txn *txn, const uint8_t *pg)
{
    return txn->own_tag && pager_memo_of(pg)->own == ((txn->own_tag << 1) | 1u);
}

static inline void pager_vouch(const bs_txn *txn, const uint8_t *pg)
{
    bs_img_memo *m = pager_memo_of(pg);
    if (txn->own_tag && (m->own >> 1) == txn->own_tag)
        m->own |= 1u;
}

static inline void pager_unvouch(const uint8_t *pg)
{
    pager_memo_of(pg)->own &= ~(uint64_t)1;
}

static inline void pager_memo_set(const uint8_t *pg, const bs_rng_key *k)
{
    bs_img_memo *m = pager_memo_of(pg);
    if (!m->image_id || !k->lo || !k->hi)
        return;
    uint32_t s = atomic_load_explicit(&m->seq, memory_order_relaxed);
    if ((s & 1u) || !atomic_compare_exchange_strong_explicit(&m->seq, &s, s + 1,
                                                             memory_order_relaxed,
                                                             memory_order_relaxed))
        return; /* another thread is writing it: leave it to that one */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&m->lo, k->lo, memory_order_relaxed);
    atomic_store_explicit(&m->hi, k->hi, memory_order_relaxed);
    atomic_store_explicit(&m->idx, k->idx, memory_order_relaxed);
    atomic_store_explicit(&m->seq, s + 2, memory_order_release);
}

/* BS_IOERR when a page read in place from the mapping may have turned to zeros (map.h:
 * SIGBUS; sticky for the handle), else BS_OK. For results built from page bytes after the
 * last page access (bs_get, cursors). */
int pager_map_check(bs_txn *txn);

/* Overflow runs: write a value into a new run (written to the file at once, never held in
 * memory; BS_WOULDBLOCK in noio mode), read one back (checksum verified against the header
 * and the expected length), free one. */
int pager_ov_write(bs_txn *txn, const void *data, size_t len, uint64_t *pgno);
int pager_ov_read(bs_txn *txn, uint64_t pgno, uint64_t txid, size_t len, void *dst);
int pager_ov_free(bs_txn *txn, uint64_t pgno, size_t len);
/* Header-only check of an overflow run (checker): type, pgno, npages, length, and the run
 * inside page_count. With full != 0 also reads the run and verifies its CRC. */
int pager_ov_check(bs_txn *txn, uint64_t pgno, uint64_t txid, size_t len, int full);

/* Write out dirty pages when more than db->spill_limit pages are in memory, or leaves only
 * when more than db->spill_early are and the leaves spilled before stayed out (io mode). */
int pager_spill(bs_txn *txn);
/* True when pager_spill would write (no-I/O mode: the operation must be retried with I/O). */
bool pager_spill_due(const bs_txn *txn);

/* ---- pager.c: freelist loading, commit, savepoints ---- */
/* Open: read the freelist chain of m and install it as db->fl (BS_CORRUPT if damaged). */
int pager_load_freelist(bs_db *db, const bs_meta *m);
/* Read the freelist chain of meta m into *out (checker); also verifies each chain page.
 * chain receives the chain's own page numbers. */
int pager_read_freelist(bs_txn *txn, const bs_meta *m, bs_pgvec *out, bs_pgvec *chain);
/* Write the commit of a write txn (see the protocol in pager.c). */
int pager_commit(bs_txn *txn, bs_meta *newmeta);
void pager_abort(bs_txn *txn);
void pager_txn_init(bs_txn *txn);
/* Savepoints: each returns BS_OK or BS_NOMEM, and on BS_NOMEM changes nothing (the
 * transaction and the savepoint stay as they were). */
int pager_savepoint(bs_txn *txn, bs_savepoint *sp);
int pager_rollback(bs_txn *txn, bs_savepoint *sp);
int pager_release(bs_txn *txn, bs_savepoint *sp);

/* page lists (freelist.c) */
int pgvec_push(bs_pgvec *v, uint64_t pgno);
int pgvec_reserve(bs_pgvec *v, size_t n);    /* capacity for n pages in all */
int pgvec_copy(bs_pgvec *dst, const bs_pgvec *src); /* dst is overwritten (not freed) */
void pgvec_free(bs_pgvec *v);

/* ---- btree.c ---- */
/* Verify the bounds of a branch or leaf page read from disk (after its CRC passed): nkeys,
 * upper, frag, every slot and cell inside the page and not overlapping the header/slots,
 * key lengths <= fmt_max_key, leaf vlen/overflow sizes sane, overflow runs and children
 * inside [2, page_count), keys strictly ascending. BS_OK or BS_CORRUPT naming the page. */
int btree_verify_page(const uint8_t *pg, uint32_t psize, uint64_t page_count);
/* The same checks one by one, each with its own message (what btree_verify_page runs for a
 * page its one-pass leaf path does not accept): the reference the tests compare it with. */
int btree_verify_page_full(const uint8_t *pg, uint32_t psize, uint64_t page_count);
/* The bounds summary of a branch or leaf image (verified or written by us); valid = 0 when
 * it holds no key to bound. */
void btree_bounds(const uint8_t *pg, bs_bounds *out);

int btree_get(bs_txn *txn, bs_tree *t, const uint8_t *key, size_t klen, bs_val *out);
/* btree_get that also says where it looked (hostile files: db.c checks a bucket record
 * against the catalog pages around it): the pages of the descent, root first, and the leaf
 * reached (valid while the caller stays in its epoch, like out's data), with the slot found
 * or where the key would go. depth 0 when the tree is empty or the descent failed. */
typedef struct bt_where {
    uint64_t path[BS_MAX_DEPTH];
    const uint8_t *pg[BS_MAX_DEPTH]; /* pg[depth - 1] is the leaf */
    unsigned depth, idx;
} bt_where;
int btree_get_where(bs_txn *txn, bs_tree *t, const uint8_t *key, size_t klen, bs_val *out,
                    bt_where *w);
/* put/del: all reads (descent) happen before the first change, so BS_WOULDBLOCK (noio mode)
 * always leaves the tree untouched. Values that need an overflow run return BS_WOULDBLOCK in
 * noio mode before changing anything. Bumps txn->mod_seq on success. */
int btree_put(bs_txn *txn, bs_tree *t, const uint8_t *key, size_t klen,
              const uint8_t *val, size_t vlen, unsigned flags);
int btree_del(bs_txn *txn, bs_tree *t, const uint8_t *key, size_t klen);
/* One step of a batch's prefetch pipeline (bs_hint_step, bs.h): key (NULL: none) starts
 * its way; the keys of the two steps before it advance. Reads only verified pages and the
 * transaction's own tables, changes nothing, returns nothing (bs.h). */
void btree_hint(bs_txn *txn, const bs_tree *t, bs_hint *h, const uint8_t *key, size_t klen);
/* Commit time (io mode): merge or refill the underfull nodes that deletes left in this
 * txn's own pages; collapse a root branch with one child; an emptied tree stays one empty
 * leaf. Clears t->needs_rebalance. */
int btree_rebalance(bs_txn *txn, bs_tree *t);
/* Free every page of the tree, overflow runs included (drop bucket). Leaves t empty. */
int btree_free_all(bs_txn *txn, bs_tree *t);
/* Free what btree.c keeps in the transaction (its scratch block); when the txn ends. */
void btree_txn_free(bs_txn *txn);

struct bs_cursor {
    bs_txn *txn;
    bs_tree *tree;
    int depth;                 /* entries used in stack */
    struct { uint64_t pgno, txid; int idx; } stack[BS_MAX_DEPTH]; /* txid: what the pointer
                                * to that page expects (format.h) */
    bool valid;                /* positioned on an item */
    uint64_t mod_seq;          /* txn->mod_seq when positioned (write txns re-seek on change) */
    uint8_t *kbuf; size_t klen, kcap; /* copy of the current key (write txns) */
};
int btree_cursor_seek(bs_cursor *cur, int op, const uint8_t *key, size_t klen);
int btree_cursor_step(bs_cursor *cur, int dir);  /* +1 next, -1 prev; BS_NOTFOUND at the end */
int btree_cursor_current(bs_cursor *cur, bs_val *key, bs_val *val);

/* ---- check.c ---- */
/* The checker's report callback: one problem (a message naming the page and the pointer);
 * nonzero = out of memory (the check stops with BS_NOMEM). */
typedef int (*check_report_fn)(void *ctx, const char *problem);
/* Check the snapshot of txn (inside its epoch bracket, which the walk leaves and re-enters
 * between pages: the caller holds no cache pointer). Each problem goes to fn (may be NULL),
 * at most max of them (0 = 1); BS_CORRUPT when there was any, bs_errmsg() summarising them
 * (the first few and the count). BS_IOERR, BS_NOMEM stop the walk. */
int check_db_report(bs_txn *txn, size_t max, check_report_fn fn, void *ctx);
int check_db(bs_txn *txn);   /* the first problem only */
/* Repair: walk every tree of the snapshot (BS_CORRUPT at the first problem in a tree: the
 * trees are damaged, nothing to rebuild from) and append every page below page_count that no
 * tree reaches to free_out (ascending); old_chain gets the readable start of the snapshot's
 * freelist chain (pages that no tree uses), head first. Same epoch rule as check_db_report. */
int check_free_pages(bs_txn *txn, bs_pgvec *free_out, bs_pgvec *old_chain);
/* Hostile files: no page of the free set fl (reusable and pending) may be a node of a tree of
 * txn's snapshot. Walks every branch page and the whole catalog, not the leaves of the data
 * trees (their numbers are in their parents) nor overflow runs (the write path's own checks
 * and the readers' txid checks cover those). BS_CORRUPT through pager_freelist_damaged
 * (writes refused) naming the first such page and its tree; damage of another kind is
 * ignored (reads report it), except a page two trees share (BS_CORRUPT naming it and both
 * trees, writes refused for this transaction); BS_NOMEM, read errors. Same epoch rule as
 * check_db_report. */
int check_free_set(bs_txn *txn, const bs_freelist *fl);

#endif
