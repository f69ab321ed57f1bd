/*
 * cache.c - the shared page cache (see cache.h for how it works): frames, the lock-free
 * table, CLOCK eviction, epoch slots and the reclamation of retired frames and tables,
 * statistics.
 *
 * Layer: calls only the C library and bs_fail (util.c). Called by pager.c and db.c.
 */
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cache.h"
#include "internal.h"

#define FRAME_POOL_MAX 64

/* ------------------------------------------------------------------ frame slabs
 * Frames are carved from 2 MiB slabs, aligned to 2 MiB and (Linux) advised as transparent huge
 * pages: a lookup touches the table, then the frame and its page, and a random descent over
 * a cache of thousands of frames missed the TLB at every level when each frame was a 4 KiB
 * allocation of its own (a page image straddled two small pages). One huge page covers 500
 * frames of 4 KiB. The slabs of one frame size are shared by every cache of the process
 * (slab_class, its own mutex, handed over across fork() by pthread_atfork); a frame finds its
 * slab by masking its address; an empty slab goes back to the allocator (one is kept per size
 * so that a frame freed and allocated again does not map and unmap a slab each time); slabs
 * are mappings of their own, so a closed cache's memory goes back to the OS.
 * Sanitizer builds allocate each frame on its own, so that a use after free is caught. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FRAME_SLABS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define FRAME_SLABS 0
#endif
#endif
#ifndef FRAME_SLABS
#define FRAME_SLABS 1
#endif

#if FRAME_SLABS
#define SLAB_BYTES ((size_t)2 << 20)
#define SLAB_HDR 64u
#define SLAB_CLASSES 7 /* page sizes 1 KiB .. 64 KiB */

typedef struct bs_slab {
    struct bs_slab *prev, *next;  /* the class's list of slabs with a free frame */
    bs_frame *free;               /* freed frames of this slab */
    char *bump;                   /* frames from here on were never handed out */
    uint32_t live;                /* frames handed out and not freed */
    uint32_t cls;
    bool listed;
} bs_slab;

typedef struct slab_class {
    pthread_mutex_t mu;
    bs_slab *avail;               /* slabs with a free or never-used frame */
    bs_slab *spare;               /* one empty slab kept */
    size_t fsize;                 /* frame bytes: header + page, a multiple of 64 */
} slab_class;

static slab_class slab_classes[SLAB_CLASSES];
static pthread_once_t slab_once = PTHREAD_ONCE_INIT;

static void slab_lock_all(void)
{
    for (int i = 0; i < SLAB_CLASSES; i++)
        pthread_mutex_lock(&slab_classes[i].mu);
}

static void slab_unlock_all(void)
{
    for (int i = SLAB_CLASSES - 1; i >= 0; i--)
        pthread_mutex_unlock(&slab_classes[i].mu);
}

static void slab_init(void)
{
    for (int i = 0; i < SLAB_CLASSES; i++) {
        pthread_mutex_init(&slab_classes[i].mu, NULL);
        slab_classes[i].fsize = (sizeof(bs_frame) + ((size_t)1024 << i) + 63) & ~(size_t)63;
    }
    pthread_atfork(slab_lock_all, slab_unlock_all, slab_unlock_all);
}

static int slab_class_of(uint32_t psize)
{
    for (int i = 0; i < SLAB_CLASSES; i++)
        if (psize == (1024u << i))
            return i;
    return -1;
}

static void slab_unlist(slab_class *k, bs_slab *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        k->avail = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->listed = false;
}

static void slab_list(slab_class *k, bs_slab *s)
{
    s->prev = NULL;
    s->next = k->avail;
    if (k->avail)
        k->avail->prev = s;
    k->avail = s;
    s->listed = true;
}

/* A slab of its own mapping (so that freeing it gives the memory back to the OS at once; a
 * 2 MiB-aligned block from malloc would leave the heap fragmented), 2 MiB-aligned, advised as
 * huge pages. NULL when out of memory. */
static void *slab_map(void)
{
#if defined(__linux__) && defined(MAP_ANONYMOUS)
    size_t len = 2 * SLAB_BYTES;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    char *p = (char *)(((uintptr_t)m + SLAB_BYTES - 1) & ~(uintptr_t)(SLAB_BYTES - 1));
    if (p > m)
        munmap(m, (size_t)(p - m));
    if (p + SLAB_BYTES < m + len)
        munmap(p + SLAB_BYTES, (size_t)(m + len - (p + SLAB_BYTES)));
#if defined(MADV_HUGEPAGE)
    (void)madvise(p, SLAB_BYTES, MADV_HUGEPAGE); /* advice only: small pages work too */
#endif
    return p;
#else
    void *p = NULL;
    return posix_memalign(&p, SLAB_BYTES, SLAB_BYTES) ? NULL : p;
#endif
}

static void slab_unmap(void *p)
{
    if (!p)
        return;
#if defined(__linux__) && defined(MAP_ANONYMOUS)
    munmap(p, SLAB_BYTES);
#else
    free(p);
#endif
}

static bs_frame *slab_take(int cls)
{
    slab_class *k = &slab_classes[cls];
    pthread_mutex_lock(&k->mu);
    bs_slab *s = k->avail;
    if (!s && k->spare) {
        s = k->spare;
        k->spare = NULL;
        slab_list(k, s);
    }
    if (!s) {
        void *p = slab_map();
        if (!p) {
            pthread_mutex_unlock(&k->mu);
            return NULL;
        }
        s = p;
        memset(s, 0, sizeof *s);
        s->bump = (char *)p + SLAB_HDR;
        s->cls = (uint32_t)cls;
        slab_list(k, s);
    }
    bs_frame *f;
    if (s->free) {
        f = s->free;
        s->free = f->next;
    } else {
        f = (bs_frame *)s->bump;
        s->bump += k->fsize;
    }
    s->live++;
    if (!s->free && (size_t)((char *)s + SLAB_BYTES - s->bump) < k->fsize)
        slab_unlist(k, s); /* full */
    pthread_mutex_unlock(&k->mu);
    return f;
}

static void slab_give(bs_frame *f)
{
    bs_slab *s = (bs_slab *)((uintptr_t)f & ~(uintptr_t)(SLAB_BYTES - 1));
    slab_class *k = &slab_classes[s->cls];
    void *drop = NULL;
    pthread_mutex_lock(&k->mu);
    f->next = s->free;
    s->free = f;
    if (--s->live == 0) {
        /* empty: keep it as the spare (its frames are forgotten: it restarts from bump) */
        if (s->listed)
            slab_unlist(k, s);
        s->free = NULL;
        s->bump = (char *)s + SLAB_HDR;
        if (k->spare)
            drop = s;
        else
            k->spare = s;
    } else if (!s->listed) {
        slab_list(k, s);
    }
    pthread_mutex_unlock(&k->mu);
    slab_unmap(drop);
}
#endif

bs_frame *cache_frame_new(uint32_t psize)
{
    void *p = NULL;
    bool slab = false;
#if FRAME_SLABS
    int cls = slab_class_of(psize);
    if (cls >= 0) {
        pthread_once(&slab_once, slab_init);
        if (!(p = slab_take(cls)))
            return NULL;
        slab = true;
    }
#endif
    if (!slab && posix_memalign(&p, 64, sizeof(bs_frame) + psize))
        return NULL;
    bs_frame *f = p;
    f->pgno = 0;
    atomic_init(&f->ref, 0);
    f->aux[0] = 0;
    atomic_init(&f->ahead, 0);
    f->ahead_txid = 0;
    f->memo.image_id = 0;
    atomic_init(&f->memo.seq, 0);
    atomic_init(&f->memo.lo, 0);
    atomic_init(&f->memo.hi, 0);
    atomic_init(&f->memo.idx, 0);
    f->memo.own = f->memo.own_gen = 0;
    f->slab = slab;
    f->pos = UINT32_MAX;
    f->retired_at = 0;
    f->next = NULL;
    return f;
}

void cache_frame_free(bs_frame *f)
{
#if FRAME_SLABS
    if (f && f->slab) {
        slab_give(f);
        return;
    }
#endif
    free(f);
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

/* table size for n live entries: a power of two, at most 1/2 full (a rebuild happens at 3/4) */
static uint32_t ctable_size_for(uint32_t n)
{
    uint32_t size = 64;
    while (size < 2 * (uint64_t)n + 16)
        size *= 2;
    return size;
}

int cache_open(uint32_t page_size, uint64_t bytes, bs_cache **out)
{
    *out = NULL;
    bs_cache *c = calloc(1, sizeof *c);
    if (!c)
        return bs_fail(BS_NOMEM, "out of memory for the page cache");
    uint64_t cap = bytes / page_size;
    if (cap < 16)
        cap = 16;
    if (cap > (1u << 26))
        cap = 1u << 26;
    c->cap = (uint32_t)cap;
    c->page_size = page_size;
    /* Nothing here grows with the capacity: the table, the clock and its free positions
     * start small and grow with the frames (cache_grow_clock), frames are allocated on
     * first use. So a large capacity over a small file costs what the file needs, and
     * opening costs the same whatever the capacity (no large block to map or zero). */
    uint32_t first = c->cap < 1024 ? c->cap : 1024;
    bs_ctable *t = ctable_new(ctable_size_for(16));
    c->clock_cap = first;
    c->clock = malloc(first * sizeof *c->clock);
    c->free_pos = malloc(first * sizeof *c->free_pos);
    if (!t || !c->clock || !c->free_pos) {
        free(t);
        free(c->clock);
        free(c->free_pos);
        free(c);
        return bs_fail(BS_NOMEM, "out of memory for the page cache");
    }
    c->nfree_pos = 0;
    c->next_pos = 0;
    c->dirty_room = 0;
    atomic_init(&c->dirty, 0);
    atomic_init(&c->table, t);
    atomic_init(&c->epoch, 1);
    atomic_init(&c->slots, NULL);
    atomic_init(&c->hits, 0);
    atomic_init(&c->misses, 0);
    atomic_init(&c->recycled, 0);
    atomic_init(&c->nframes_hint, 0);
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return BS_OK;
}

void cache_close(bs_cache *c)
{
    if (!c)
        return;
    bs_ctable *t = atomic_load(&c->table);
    if (t) {
        for (uint32_t i = 0; i <= t->mask; i++) {
            bs_frame *f = atomic_load(&t->e[i]);
            if (f && f != BS_CACHE_TOMB)
                cache_frame_free(f);
        }
        free(t);
    }
    for (bs_frame *f = c->retired, *n; f; f = n) {
        n = f->next;
        cache_frame_free(f);
    }
    for (bs_frame *f = c->freelist, *n; f; f = n) {
        n = f->next;
        cache_frame_free(f);
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
    free(c);
}

uint32_t cache_capacity(const bs_cache *c) { return c->cap; }

/* ------------------------------------------------------------------ epoch slots */

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

/* ------------------------------------------------------------------ table and CLOCK */

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
        c->nretired--;
        if (!c->retired)
            c->retired_tail = NULL;
        if (c->nfree < FRAME_POOL_MAX) {
            f->next = c->freelist;
            c->freelist = f;
            c->nfree++;
        } else {
            cache_frame_free(f);
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
    atomic_store_explicit(&c->recycled, 1, memory_order_relaxed);
    f->retired_at = atomic_fetch_add(&c->epoch, 1);
    f->next = NULL;
    c->nretired++;
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
    uint32_t i = cache_hash(f->pgno) & t->mask;
    for (;;) {
        bs_frame *x = atomic_load_explicit(&t->e[i], memory_order_relaxed);
        if (!x)
            return;
        if (x == f) {
            atomic_store(&t->e[i], BS_CACHE_TOMB);
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
    atomic_store_explicit(&c->nframes_hint, c->nframes, memory_order_relaxed);
    cache_retire(c, f);
}

/* under c->mu: rebuild the table without tombstones, sized for the live entries + 1 */
static int cache_rebuild(bs_cache *c)
{
    bs_ctable *old = atomic_load_explicit(&c->table, memory_order_relaxed);
    uint32_t size = ctable_size_for(c->tlive + 1);
    if (size < old->mask + 1 && c->tlive + 1 > (old->mask + 1) / 8)
        size = old->mask + 1; /* shrink only when mostly empty */
    bs_ctable *t = ctable_new(size);
    if (!t)
        return BS_NOMEM;
    for (uint32_t i = 0; i <= old->mask; i++) {
        bs_frame *f = atomic_load_explicit(&old->e[i], memory_order_relaxed);
        if (!f || f == BS_CACHE_TOMB)
            continue;
        uint32_t j = cache_hash(f->pgno) & t->mask;
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

/* under c->mu: frames the cache may hold now. Dirty pages of the write transaction (frames
 * outside the cache) take room from it beyond dirty_room pages, so that clean + dirty stays
 * within the capacity + dirty_room (never below 16 clean frames). */
static uint32_t cache_limit(bs_cache *c)
{
    uint64_t d = (uint64_t)atomic_load_explicit(&c->dirty, memory_order_relaxed);
    uint64_t lim = (uint64_t)c->cap + c->dirty_room;
    lim = lim > d ? lim - d : 0;
    if (lim > c->cap)
        lim = c->cap;
    return lim < 16 ? 16 : (uint32_t)lim;
}

/* under c->mu: double the clock and free_pos arrays (up to cap slots); false when out of
 * memory (the clock then keeps the slots it has and evicts within them). Slots at and
 * beyond next_pos are never read, so the new ones are left uninitialized. */
static bool cache_grow_clock(bs_cache *c)
{
    uint32_t n = c->clock_cap > c->cap / 2 ? c->cap : c->clock_cap * 2;
    bs_frame **clock = realloc(c->clock, (size_t)n * sizeof *clock);
    if (!clock)
        return false;
    c->clock = clock;
    uint32_t *free_pos = realloc(c->free_pos, (size_t)n * sizeof *free_pos);
    if (!free_pos)
        return false; /* clock is larger than clock_cap says: harmless */
    c->free_pos = free_pos;
    c->clock_cap = n;
    return true;
}

/* under c->mu: make room for one more frame (CLOCK) and return its clock position */
static uint32_t cache_make_room(bs_cache *c)
{
    uint32_t lim = cache_limit(c);
    /* over the limit (dirty pages grew): evict a few frames per insert until under it */
    for (int k = 0; k < 8 && c->nframes >= lim && c->nframes > 0; k++) {
        bs_frame *f = NULL;
        for (uint64_t spins = 0; spins < 4ull * c->next_pos; spins++) {
            uint32_t pos = c->hand;
            c->hand = (c->hand + 1) % c->next_pos; /* slots beyond were never used */
            f = c->clock[pos];
            if (!f)
                continue;
            if (atomic_load_explicit(&f->ref, memory_order_relaxed) && spins < 2ull * c->next_pos) {
                atomic_store_explicit(&f->ref, 0, memory_order_relaxed);
                f = NULL;
                continue;
            }
            break;
        }
        if (!f)
            break;
        cache_unlink(c, f);
    }
    if (c->nfree_pos)
        return c->free_pos[--c->nfree_pos];
    if (c->next_pos < c->cap && (c->next_pos < c->clock_cap || cache_grow_clock(c)))
        return c->next_pos++;
    for (uint64_t spins = 0;; spins++) {
        uint32_t pos = c->hand;
        c->hand = (c->hand + 1) % c->next_pos; /* slots beyond were never used */
        bs_frame *f = c->clock[pos];
        if (!f)
            return pos;
        if (atomic_load_explicit(&f->ref, memory_order_relaxed) && spins < 2ull * c->next_pos) {
            atomic_store_explicit(&f->ref, 0, memory_order_relaxed);
            continue;
        }
        cache_unlink(c, f);
        return c->free_pos[--c->nfree_pos];
    }
}

const uint8_t *cache_insert(bs_cache *c, bs_frame *f, uint64_t pgno, bool replace)
{
    f->pgno = pgno;
    f->pos = UINT32_MAX;
    pthread_mutex_lock(&c->mu);
    bs_frame *cur = cache_lookup(c, pgno);
    /* a verified image replaces one read ahead that nobody verified yet */
    if (cur && !replace && atomic_load_explicit(&f->ahead, memory_order_relaxed) == 0 &&
        atomic_load_explicit(&cur->ahead, memory_order_acquire) != 0)
        replace = true;
    if (cur) {
        if (!replace) {
            atomic_store_explicit(&c->recycled, 1, memory_order_relaxed);
            f->next = c->freelist;
            c->freelist = f;
            c->nfree++;
            pthread_mutex_unlock(&c->mu);
            return cur->data;
        }
        cache_unlink(c, cur);
    }
    bs_ctable *t = atomic_load_explicit(&c->table, memory_order_relaxed);
    if ((uint64_t)(c->tlive + c->ttomb + 2) * 4 > (uint64_t)(t->mask + 1) * 3 &&
        cache_rebuild(c) != BS_OK &&
        (uint64_t)(c->tlive + c->ttomb + 2) * 8 > (uint64_t)(t->mask + 1) * 7) {
        /* Out of memory growing the table, and it is nearly full: leave this image out of the
         * cache (a probe must always meet an empty slot). The caller may use it until it
         * leaves its epoch: retired now, it is freed only after that. */
        cache_retire(c, f);
        pthread_mutex_unlock(&c->mu);
        return f->data;
    }
    uint32_t pos = cache_make_room(c);
    t = atomic_load_explicit(&c->table, memory_order_relaxed);
    uint32_t i = cache_hash(pgno) & t->mask;
    for (;;) {
        bs_frame *x = atomic_load_explicit(&t->e[i], memory_order_relaxed);
        if (!x || x == BS_CACHE_TOMB) {
            if (x == BS_CACHE_TOMB)
                c->ttomb--;
            break;
        }
        i = (i + 1) & t->mask;
    }
    f->pos = pos;
    c->clock[pos] = f;
    atomic_store_explicit(&f->ref, 1, memory_order_relaxed);
    c->nframes++;
    atomic_store_explicit(&c->nframes_hint, c->nframes, memory_order_relaxed);
    c->tlive++;
    atomic_store_explicit(&t->e[i], f, memory_order_release);
    cache_reclaim(c);
    pthread_mutex_unlock(&c->mu);
    return f->data;
}

bs_frame *cache_frame_alloc(bs_cache *c)
{
    bs_frame *f = NULL;
    /* No frame was ever retired or pooled (a cache that has not evicted yet, the common case
     * while it fills): nothing to reuse or reclaim, so no lock. A stale 0 only means a new
     * frame instead of a reused one. */
    if (!atomic_load_explicit(&c->recycled, memory_order_relaxed))
        return cache_frame_new(c->page_size);
    pthread_mutex_lock(&c->mu);
    cache_reclaim(c);
    if (c->freelist) {
        f = c->freelist;
        c->freelist = f->next;
        c->nfree--;
    }
    pthread_mutex_unlock(&c->mu);
    if (!f)
        return cache_frame_new(c->page_size);
    f->pos = UINT32_MAX;
    f->next = NULL;
    f->aux[0] = 0;
    atomic_store_explicit(&f->ahead, 0, memory_order_relaxed);
    f->ahead_txid = 0;
    f->memo.image_id = 0;
    f->memo.own = 0;
    atomic_store_explicit(&f->memo.lo, 0, memory_order_relaxed);
    return f;
}

void cache_evict(bs_cache *c, uint64_t pgno)
{
    if (!cache_lookup(c, pgno))
        return;
    pthread_mutex_lock(&c->mu);
    bs_frame *f = cache_lookup(c, pgno);
    if (f)
        cache_unlink(c, f);
    pthread_mutex_unlock(&c->mu);
}

void cache_evict_frame(bs_cache *c, uint64_t pgno, const bs_frame *f)
{
    pthread_mutex_lock(&c->mu);
    if (cache_lookup(c, pgno) == f)
        cache_unlink(c, (bs_frame *)f);
    pthread_mutex_unlock(&c->mu);
}

bool cache_has_room(bs_cache *c, uint32_t n)
{
    uint64_t have = atomic_load_explicit(&c->nframes_hint, memory_order_relaxed);
    int64_t d = atomic_load_explicit(&c->dirty, memory_order_relaxed);
    /* cache_limit without the lock, and without the dirty room (less room, never more) */
    uint64_t lim = c->cap;
    if (d > 0)
        lim = lim > (uint64_t)d ? lim - (uint64_t)d : 0;
    return have + n < lim;
}

void cache_dirty_add(bs_cache *c, int64_t n)
{
    atomic_fetch_add_explicit(&c->dirty, n, memory_order_relaxed);
}

void cache_set_dirty_room(bs_cache *c, uint32_t pages)
{
    pthread_mutex_lock(&c->mu);
    c->dirty_room = pages;
    pthread_mutex_unlock(&c->mu);
}

/* ------------------------------------------------------------------ statistics */

void cache_count(bs_cache *c, uint64_t hits, uint64_t misses)
{
    if (hits)
        atomic_fetch_add_explicit(&c->hits, hits, memory_order_relaxed);
    if (misses)
        atomic_fetch_add_explicit(&c->misses, misses, memory_order_relaxed);
}

void cache_stats(bs_cache *c, uint64_t *pages, uint64_t *hits, uint64_t *misses)
{
    pthread_mutex_lock(&c->mu); /* nframes changes under c->mu */
    *pages = c->nframes;
    pthread_mutex_unlock(&c->mu);
    *hits = atomic_load(&c->hits);
    *misses = atomic_load(&c->misses);
}

uint64_t cache_retired(bs_cache *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->nretired;
    pthread_mutex_unlock(&c->mu);
    return n;
}
