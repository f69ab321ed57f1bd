/*
 * map.h - read-only shared mappings of database files (the POSIX file table only): committed
 * pages are read in place from a PROT_READ, MAP_SHARED window over the file, so every process
 * shares the OS page cache and a miss costs no copy and no fresh memory. Per page of a window
 * the pager keeps what it knows of the image in place (bs_mpage: the header txid it verified
 * the image at and the range-check memo, one cache line; the bounds summary in an array
 * beside it), found from the page pointer alone (bs_map_page_of, bs_map_bounds_of) through
 * one process-wide address reservation.
 *
 * Layer: called by pager.c (page access), db.c (open/close) and internal.h's memo inlines.
 * Calls only the C library and POSIX (mmap, sigaction).
 *
 * Windows: a window maps the file from offset 0 with room beyond its end (growth by this or
 * another process needs no new window for a while); one too small for a page number gets a
 * bigger successor, and older windows stay mapped until the map is closed (a reader may hold
 * pointers into them). All windows lie in one reservation of the address space (PROT_NONE,
 * made at the first map), cut into BS_MAP_SLOT-sized slots, so that a pointer is tested for
 * "mapped page" with one subtraction and compare.
 *
 * SIGBUS: a file truncated by another process (or an I/O error while a page is read in) makes
 * an access to the mapping raise SIGBUS. A process-wide handler, installed with the first
 * window, maps an anonymous zero page over the faulting page of one of our windows and sets
 * the map's `damaged` flag, so the access reads zeros and returns; the pager then fails the
 * operation with BS_IOERR (and every later one of the handle). Faults elsewhere go to the
 * handler that was installed before ours.
 */
#ifndef BS_MAP_H
#define BS_MAP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"

#define BS_MAP_SLOT_SHIFT 28u              /* 256 MiB slots */
#define BS_MAP_SLOTS 256u                  /* at most 64 GiB of windows at once */

/* What the pager knows of one page image in a window (zero-filled on first touch): what a
 * descent reads at every level (the txid the image was verified at, the range-check memo),
 * one cache line a page, aligned. The bounds summary, read only when the memo misses, is
 * kept apart (bs_mwin.bounds) so that the records of a large file take fewer lines and
 * fewer TLB entries (issue 11, 10M records). */
typedef struct bs_mpage {
    _Alignas(64) bs_img_memo memo; /* range-check memo (internal.h), image_id: this image's */
    _Atomic uint64_t vtxid;    /* header txid of the image verified here; 0 = none */
    _Atomic uint32_t busy;     /* a thread is verifying it */
} bs_mpage;
_Static_assert(sizeof(bs_mpage) == 64, "one cache line a mapped page");
#define BS_MAP_BOUNDS 48u      /* bytes of a page's bounds summary (bs_bounds, internal.h) */

/* What one mincore() said of a residency group (BS_MAP_RES_SPAN system pages, aligned) of a
 * window: bit i set = system page i of the group was in the OS page cache at `stamp`
 * (milliseconds of CLOCK_MONOTONIC_COARSE, 0 = never probed). A hint only (map_resident). */
typedef struct bs_mres {
    _Atomic uint64_t mask;
    _Atomic uint32_t stamp;
} bs_mres;
#define BS_MAP_RES_SPAN 64u

typedef struct bs_mwin {
    uint8_t *base;             /* file offset 0 */
    size_t len;                /* bytes mapped */
    uint64_t npages;           /* pages usable through it (a tail of 256 KiB stays mapped
                                * beyond the last, so 16-bit offsets and lengths read from a
                                * page never leave the mapping) */
    bs_mpage *meta;            /* npages entries */
    uint8_t (*bounds)[BS_MAP_BOUNDS]; /* npages entries: page i's bounds summary (same
                                * mapping as meta) */
    bs_mres *res;              /* len / (BS_MAP_RES_SPAN system pages) groups (same mapping) */
    size_t meta_len;           /* of meta, bounds and res together */
    uint32_t shift;            /* log2 page size */
    uint32_t slot0, nslots;
    _Atomic int *damaged;      /* the map's flag */
    struct bs_mwin *prev;      /* older windows of the same map */
} bs_mwin;

typedef struct bs_map {
    bs_mwin *_Atomic cur;      /* the newest window */
    pthread_mutex_t mu;        /* making a window */
    _Atomic int damaged;       /* a SIGBUS hit one of our windows: reads fail from now on */
    int fd;
    uint32_t page_size, shift;
    int stuck;                 /* a bigger window could not be made (under mu) */
    _Atomic uint64_t fsize;    /* the file's size when last looked at (map_covers) */
} bs_map;

/* Map fd (page size 1 << shift) with room for page_count pages and more. NULL when the map
 * cannot be made (no address space, mmap refused): the caller reads through frames. */
bs_map *map_open(int fd, uint32_t page_size, uint32_t shift, uint64_t page_count);
void map_close(bs_map *m);                   /* no transaction may be left; NULL: no-op */
/* The file holds the bytes [0, end) (looked up again when the last size known is smaller):
 * a page beyond the end of the file is never touched through the mapping (SIGBUS). */
bool map_covers(bs_map *m, uint64_t end);
/* A window holding pgno (the current one, or a new bigger one), or NULL (no room: the pager
 * reads that page through a frame). */
bs_mwin *map_window_for(bs_map *m, uint64_t pgno);

/* Whether the len bytes at pg (inside window w) are in the OS page cache, so that reading
 * them costs no wait (the no-I/O mode's test before a first touch). One mincore() covers the
 * page's whole residency group, and its answer is kept for the group for BS_MAP_RES_MS: a
 * page the hint calls resident is trusted that long (if the OS dropped it meanwhile, the
 * read waits for the device once with the GIL held: slower, never wrong); one it calls
 * absent is probed again. False when mincore fails. */
#define BS_MAP_RES_MS 1000u
bool map_resident(bs_mwin *w, const uint8_t *pg, size_t len);

/* ---- the pointer test (private to map.c but for these inlines) ---- */
extern _Atomic uintptr_t bs_map_lo;
extern _Atomic size_t bs_map_len;
extern bs_mwin *_Atomic bs_map_slots[BS_MAP_SLOTS];

/* The bs_mpage of a page pointer inside a window, or NULL (a frame's image). */
static inline bs_mpage *bs_map_page_of(const uint8_t *pg)
{
    uintptr_t off = (uintptr_t)pg - atomic_load_explicit(&bs_map_lo, memory_order_relaxed);
    if (off >= atomic_load_explicit(&bs_map_len, memory_order_relaxed))
        return NULL;
    bs_mwin *w = atomic_load_explicit(&bs_map_slots[off >> BS_MAP_SLOT_SHIFT],
                                      memory_order_acquire);
    return &w->meta[((uintptr_t)pg - (uintptr_t)w->base) >> w->shift];
}

/* The bounds summary kept for a page pointer inside a window, or NULL (a frame's image). */
static inline uint8_t *bs_map_bounds_of(const uint8_t *pg)
{
    uintptr_t off = (uintptr_t)pg - atomic_load_explicit(&bs_map_lo, memory_order_relaxed);
    if (off >= atomic_load_explicit(&bs_map_len, memory_order_relaxed))
        return NULL;
    bs_mwin *w = atomic_load_explicit(&bs_map_slots[off >> BS_MAP_SLOT_SHIFT],
                                      memory_order_acquire);
    return w->bounds[((uintptr_t)pg - (uintptr_t)w->base) >> w->shift];
}

#endif
