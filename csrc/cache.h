/*
 * cache.h - the shared page cache: verified page images of committed pages, found without a
 * lock, evicted by CLOCK, and freed only when no transaction can still hold a pointer to
 * them (epoch reclamation).
 *
 * Layer: called by pager.c (page access, commit promotion, allocation) and db.c (open/close,
 * epoch slots of transactions, statistics). Calls only the C library.
 *
 * How it works
 *  - Readers find pages through an open-addressing table of atomic pointers (pgno -> frame)
 *    without any lock; a hit sets the frame's CLOCK bit and costs no system call.
 *  - Inserts, evictions and reclamation take cache.mu (a miss takes it once, to insert).
 *    The table is replaced, never resized in place, when tombstones pile up.
 *  - An evicted frame (or a replaced table) is retired with the global epoch and freed only
 *    when every transaction that may hold a pointer into the cache (one that announced an
 *    epoch in its slot between cache_enter and cache_leave) has announced a later one.
 *
 * Everything below "private" is in this header only so that the hit path (cache_find) and
 * the epoch bracket inline into the pager; no file but cache.c touches those fields.
 */
#ifndef BS_CACHE_H
#define BS_CACHE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bs_cache bs_cache;
typedef struct bs_frame bs_frame;
typedef struct bs_slot bs_slot;

/* The pager's range-check memo of an image (internal.h, pager_memo_hit), kept in the frame
 * header BS_IMG_MEMO_BACK bytes before the page (asserted below). cache.c only clears it.
 * image_id is written only before the image is published (pager.c, frame_summarize); the
 * rest is a seqlock (seq odd while written): readers of one shared image may race to record
 * a range, and a reader that sees a write in progress or torn fields treats it as a miss. */
typedef struct bs_img_memo {
    _Atomic uint32_t seq;
    _Atomic uint32_t idx;
    uint64_t image_id;
    _Atomic uint64_t lo, hi;
    /* A dirty image of a write transaction (never a shared one): that transaction's tag
     * << 1 | 1 when the image passed the descent's range check, and the savepoint generation
     * that made it (internal.h, pager_mine). Written by the pager only: set when the frame
     * becomes a dirty page (pager.c page_new, dirty_reload), zeroed when it becomes a shared
     * image (frame_summarize); cache.c never reads it. */
    uint64_t own, own_gen;
} bs_img_memo;
#define BS_IMG_MEMO_BACK 112u

/* ---- life cycle ---- */
/* A cache of about `bytes` bytes of page_size pages (at least 16, at most 2^26 frames).
 * Frames and the table grow with use: a capacity larger than the file costs nothing.
 * BS_OK or BS_NOMEM. */
int cache_open(uint32_t page_size, uint64_t bytes, bs_cache **out);
void cache_close(bs_cache *c);          /* no transaction may be left; NULL is a no-op */
uint32_t cache_capacity(const bs_cache *c);

/* ---- epoch slots (one per transaction) ---- */
bs_slot *cache_slot_acquire(bs_cache *c);  /* NULL when out of memory */
void cache_slot_release(bs_cache *c, bs_slot *s);
/* Announce the current epoch in s: until cache_leave, no frame found through the cache is
 * freed. */
static inline void cache_enter(bs_cache *c, bs_slot *s);
static inline void cache_leave(bs_slot *s);

/* ---- frames: a page image of page_size bytes ---- */
/* A frame that is in no table (for a page being read, or a dirty page of a write txn), from
 * the pool of reclaimed frames when possible. NULL when out of memory. */
bs_frame *cache_frame_alloc(bs_cache *c);
/* A fresh frame outside the pool (dirty pages). NULL when out of memory. */
bs_frame *cache_frame_new(uint32_t page_size);
void cache_frame_free(bs_frame *f);     /* a frame in no table */
static inline uint8_t *cache_frame_data(bs_frame *f);
/* The frame whose image data is (the pager's summary bytes: f->aux). */
static inline bs_frame *cache_frame_of(const uint8_t *data);

/* ---- lookups and inserts ---- */
/* The cached image of pgno (CLOCK bit set), or NULL. Lock-free; the caller is inside
 * cache_enter/cache_leave. */
static inline const uint8_t *cache_find(bs_cache *c, uint64_t pgno);
/* pgno is cached (no CLOCK bit set). Lock-free, inside cache_enter/cache_leave. */
static inline bool cache_contains(bs_cache *c, uint64_t pgno);
/* Insert frame f (verified image of pgno). If pgno is cached already: keep the cached frame
 * and take f back into the pool, unless `replace` (committed pages replace older images).
 * Returns the image now cached for pgno. */
const uint8_t *cache_insert(bs_cache *c, bs_frame *f, uint64_t pgno, bool replace);
/* Drop pgno if cached (the page is being reused by a write transaction). */
void cache_evict(bs_cache *c, uint64_t pgno);
/* Drop pgno if the frame cached for it is f. */
void cache_evict_frame(bs_cache *c, uint64_t pgno, const bs_frame *f);
/* The cache can take n more frames without evicting any (approximate: read without the
 * lock). */
bool cache_has_room(bs_cache *c, uint32_t n);

/* ---- dirty pages (frames of the write transaction, outside the cache) ---- */
/* The write transaction holds n more (or -n fewer) dirty frames in memory. Beyond the room
 * set by cache_set_dirty_room, each dirty frame displaces a clean one, so that clean + dirty
 * frames stay within capacity + room (the cache keeps at least 16). */
void cache_dirty_add(bs_cache *c, int64_t n);
void cache_set_dirty_room(bs_cache *c, uint32_t pages);

/* ---- statistics ---- */
/* Add a transaction's hit and miss counts to the totals. */
void cache_count(bs_cache *c, uint64_t hits, uint64_t misses);
/* Frames cached now, total hits and misses so far. */
void cache_stats(bs_cache *c, uint64_t *pages, uint64_t *hits, uint64_t *misses);
/* Frames evicted but not yet freed (a transaction may still hold them: its epoch). */
uint64_t cache_retired(bs_cache *c);

/* ------------------------------------------------------------------ private to cache.c */

/* The first cache line holds what only the cache itself reads (eviction, retirement); the
 * second what a lookup reads (pgno, CLOCK bit) and the pager's own bytes about the image,
 * next to the page. */
#define BS_FRAME_AUX 48
struct bs_frame {
    uint32_t pos;              /* slot in the clock array, or UINT32_MAX */
    bool slab;                 /* carved from a slab (cache.c), else its own allocation */
    uint64_t retired_at;       /* epoch when unlinked from the table */
    struct bs_frame *next;     /* retired list / free list */
    uint64_t ahead_txid;       /* read ahead: the newest txid its image may carry (pager.c) */
    _Alignas(64) uint64_t pgno;
    _Atomic uint8_t ref;       /* CLOCK bit, set on hits */
    /* 0: a verified image. Else an image read ahead that nobody has verified yet
     * (BS_AHEAD_*, pager.c): a lookup that finds it must verify it before use, and an insert
     * of a verified image replaces it. */
    _Atomic uint8_t ahead;
    /* The pager's range-check memo (internal.h, bs_img_memo), on the line a lookup reads
     * anyway; image_id == 0 and lo == 0 in every frame cache.c hands out. */
    bs_img_memo memo;
    /* The pager's summary of the image (pager.c): written before the frame is published,
     * or (a frame read ahead) before `ahead` drops to 0; aux[0] == 0 (no summary) in every
     * frame cache.c hands out. */
    _Alignas(64) uint8_t aux[BS_FRAME_AUX];
    _Alignas(64) uint8_t data[]; /* page_size bytes */
};
_Static_assert(offsetof(bs_frame, data) - offsetof(bs_frame, memo) == BS_IMG_MEMO_BACK,
               "internal.h finds the memo of an image at this distance before it");

/* An epoch slot: a transaction announces the global epoch while it may hold page pointers
 * from the shared cache; 0 = quiescent. */
struct bs_slot {
    _Atomic uint64_t epoch;
    _Atomic int in_use;
    struct bs_slot *_Atomic next;
    char pad[64 - 8 - 4 - 8];
};

/* Open-addressing table pgno -> frame; readers load the table pointer and probe without
 * locks. */
typedef struct bs_ctable {
    uint32_t mask;
    uint64_t retired_at;
    struct bs_ctable *next;         /* retired tables */
    bs_frame *_Atomic e[];
} bs_ctable;

#define BS_CACHE_TOMB ((bs_frame *)(uintptr_t)1)

struct bs_cache {
    pthread_mutex_t mu;             /* insert/evict/reclaim; never taken on a hit */
    bs_ctable *_Atomic table;
    uint32_t tlive, ttomb;          /* live entries, tombstones */
    uint32_t page_size;
    bs_frame **clock;               /* clock_cap slots (grown up to cap as they are used) */
    uint32_t cap, hand, nframes;
    uint32_t clock_cap;             /* slots allocated in clock and free_pos */
    bs_frame *retired;              /* unlinked, waiting for readers to pass their epoch: a
                                     * queue, oldest first (retired_at only grows) */
    bs_frame *retired_tail;
    uint64_t nretired;              /* frames on the retired queue */
    bs_frame *freelist;             /* reusable frames */
    uint32_t nfree;
    _Atomic uint64_t epoch;         /* global epoch, starts at 1 */
    bs_slot *_Atomic slots;         /* append-only list of epoch slots */
    bs_ctable *retired_tables;      /* old tables waiting for their epoch */
    uint32_t *free_pos; uint32_t nfree_pos; /* freed clock slots */
    uint32_t next_pos;              /* clock slots [next_pos, cap) were never used */
    uint32_t dirty_room;            /* dirty frames that do not displace clean ones */
    _Atomic int64_t dirty;          /* dirty frames of the write transaction */
    _Atomic uint64_t hits, misses;
    _Atomic uint32_t nframes_hint;  /* nframes, for cache_has_room */
    _Atomic int recycled;           /* a frame was ever retired or pooled (cache_frame_alloc
                                     * takes the lock only from then on) */
};

static inline uint32_t cache_hash(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static inline bs_frame *cache_lookup(bs_cache *c, uint64_t pgno)
{
    bs_ctable *t = atomic_load_explicit(&c->table, memory_order_acquire);
    uint32_t i = cache_hash(pgno) & t->mask;
    for (;;) {
        bs_frame *f = atomic_load_explicit(&t->e[i], memory_order_acquire);
        if (!f)
            return NULL;
        if (f != BS_CACHE_TOMB && f->pgno == pgno)
            return f;
        i = (i + 1) & t->mask;
    }
}

static inline bool cache_contains(bs_cache *c, uint64_t pgno)
{
    return cache_lookup(c, pgno) != NULL;
}

static inline const uint8_t *cache_find(bs_cache *c, uint64_t pgno)
{
    bs_frame *f = cache_lookup(c, pgno);
    if (!f)
        return NULL;
    if (!atomic_load_explicit(&f->ref, memory_order_relaxed))
        atomic_store_explicit(&f->ref, 1, memory_order_relaxed);
    return f->data;
}

static inline uint8_t *cache_frame_data(bs_frame *f) { return f->data; }

/* the frame of an image (data from cache_frame_data or cache_find) */
static inline bs_frame *cache_frame_of(const uint8_t *data)
{
    return (bs_frame *)(void *)((uintptr_t)data - offsetof(bs_frame, data));
}

static inline void cache_enter(bs_cache *c, bs_slot *s)
{
    uint64_t e = atomic_load_explicit(&c->epoch, memory_order_acquire);
    atomic_store_explicit(&s->epoch, e, memory_order_release);
    /* StoreLoad: the announcement is visible before we read any table entry (pairs with the
     * fence in cache_min_epoch) */
    atomic_thread_fence(memory_order_seq_cst);
}

static inline void cache_leave(bs_slot *s)
{
    atomic_store_explicit(&s->epoch, 0, memory_order_release);
}

#endif
