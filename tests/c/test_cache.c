// build: csrc/cache.c csrc/util.c csrc/crc32c.c
/*
 * test_cache.c - the shared page cache on its own: inserts and lookups, the capacity bound
 * under CLOCK eviction, a pointer held inside an epoch (a "pin") staying valid while its frame
 * is evicted and the pool recycles frames, reclamation once the epoch is left, replacement of
 * an image, cache_evict, the statistics, and the frame slabs (frames of every page size never
 * overlap, freed frames are reused, a slab emptied and filled again).
 *
 * Layer: test program; calls cache.h (and reads its private counters to see reclamation).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "internal.h"
#include "testutil.h"

#define P 1024u

/* insert an image of pgno filled with a byte derived from (pgno, version) */
static const uint8_t *put(bs_cache *c, uint64_t pgno, int version, bool replace)
{
    bs_frame *f = cache_frame_alloc(c);
    CHECK(f != NULL, "frame alloc");
    memset(cache_frame_data(f), (int)((pgno * 7 + (uint64_t)version) & 0xff), P);
    return cache_insert(c, f, pgno, replace);
}

static int filled(const uint8_t *pg, int byte)
{
    for (uint32_t i = 0; i < P; i++)
        if (pg[i] != (uint8_t)byte)
            return 0;
    return 1;
}

static uint32_t retired_count(bs_cache *c)
{
    uint32_t n = 0;
    for (bs_frame *f = c->retired; f; f = f->next)
        n++;
    return n;
}

static void test_basic_and_bound(void)
{
    bs_cache *c;
    CHECK(cache_open(P, 16 * P, &c) == BS_OK, "open");
    CHECK(cache_capacity(c) == 16, "capacity %u", cache_capacity(c));
    bs_slot *s = cache_slot_acquire(c);
    cache_enter(c, s);
    for (uint64_t p = 2; p < 12; p++)
        put(c, p, 0, false);
    for (uint64_t p = 2; p < 12; p++) {
        const uint8_t *pg = cache_find(c, p);
        CHECK(pg && filled(pg, (int)((p * 7) & 0xff)), "page %llu cached", (unsigned long long)p);
    }
    CHECK(cache_find(c, 1000) == NULL, "absent page");
    /* a second insert without replace keeps the first image */
    const uint8_t *pg = put(c, 5, 1, false);
    CHECK(filled(pg, 35), "kept the older image");
    pg = put(c, 5, 1, true);
    CHECK(filled(pg, 36), "replaced");
    CHECK(filled(cache_find(c, 5), 36), "lookup sees the replacement");
    cache_evict(c, 6);
    CHECK(cache_find(c, 6) == NULL, "evicted");
    cache_leave(s);
    /* far more pages than frames: the bound holds */
    for (uint64_t p = 100; p < 1100; p++) {
        cache_enter(c, s);
        put(c, p, 0, false);
        cache_leave(s);
        CHECK(c->nframes <= cache_capacity(c), "%u frames > capacity", c->nframes);
    }
    uint64_t pages, hits, misses;
    cache_count(c, 3, 4);
    cache_stats(c, &pages, &hits, &misses);
    CHECK(pages == c->nframes && pages == 16, "pages %llu", (unsigned long long)pages);
    CHECK(hits == 3 && misses == 4, "stats %llu %llu", (unsigned long long)hits,
          (unsigned long long)misses);
    cache_slot_release(c, s);
    cache_close(c);
}

static void test_pins_and_reclamation(void)
{
    bs_cache *c;
    CHECK(cache_open(P, 16 * P, &c) == BS_OK, "open");
    bs_slot *reader = cache_slot_acquire(c), *writer = cache_slot_acquire(c);
    CHECK(reader && writer && reader != writer, "slots");
    put(c, 2, 0, false);
    cache_enter(c, reader);
    const uint8_t *pinned = cache_find(c, 2);
    CHECK(pinned != NULL, "page 2 cached");
    int byte = 14;
    /* another transaction churns the cache: page 2 is evicted, many frames are retired and
     * (when reclaimable) recycled through the pool for new images */
    for (uint64_t p = 100; p < 400; p++) {
        cache_enter(c, writer);
        put(c, p, 0, false);
        cache_leave(writer);
    }
    CHECK(cache_find(c, 2) == NULL, "page 2 was evicted");
    CHECK(filled(pinned, byte), "a pinned image stays intact while its reader is inside");
    CHECK(retired_count(c) > 0, "frames retired after the pin wait for the reader");
    /* once nobody is inside an epoch, the next cache operation reclaims everything retired
     * (the frame its own insert evicts included) */
    cache_leave(reader);
    put(c, 1000, 0, false);
    CHECK(retired_count(c) == 0, "%u frames still retired", retired_count(c));
    CHECK(c->retired_tables == NULL, "old tables reclaimed");
    /* a released slot is reused */
    cache_slot_release(c, reader);
    bs_slot *again = cache_slot_acquire(c);
    CHECK(again == reader, "slot reused");
    cache_slot_release(c, again);
    cache_slot_release(c, writer);
    cache_close(c);
}

/* A capacity far beyond the pages cached costs nothing up front: the table starts small and
 * grows with the frames, and every page stays findable through the growth. */
static void test_large_capacity_grows(void)
{
    bs_cache *c;
    CHECK(cache_open(P, (uint64_t)1 << 36, &c) == BS_OK, "open 64 GiB");
    CHECK(cache_capacity(c) == 1u << 26, "capacity %u", cache_capacity(c));
    bs_ctable *t0 = atomic_load(&c->table);
    CHECK(t0->mask + 1 <= 64, "initial table of %u slots", t0->mask + 1);
    CHECK(c->clock_cap <= 1024, "initial clock of %u slots", c->clock_cap);
    bs_slot *s = cache_slot_acquire(c);
    for (uint64_t p = 2; p < 5002; p++) {
        cache_enter(c, s);
        put(c, p, 0, false);
        cache_leave(s);
    }
    bs_ctable *t = atomic_load(&c->table);
    CHECK(c->nframes == 5000 && c->tlive == 5000, "%u frames", c->nframes);
    CHECK(t->mask + 1 >= 5000 * 4 / 3 && t->mask + 1 <= 16384, "table of %u slots", t->mask + 1);
    cache_enter(c, s);
    int all = 1;
    for (uint64_t p = 2; p < 5002; p++)
        all &= cache_find(c, p) && filled(cache_find(c, p), (int)((p * 7) & 0xff));
    CHECK(all, "every page found after the table grew");
    CHECK(c->clock_cap >= 5000 && c->clock_cap <= 8192, "clock of %u slots", c->clock_cap);
    cache_leave(s);
    cache_slot_release(c, s);
    cache_close(c);
}

/* The clock grows in steps up to a capacity that is not a power of two, then CLOCK evicts
 * within it: never more frames than the capacity, every cached image the right one. */
static void test_clock_grows_to_capacity(void)
{
    bs_cache *c;
    CHECK(cache_open(P, 3000 * P, &c) == BS_OK, "open");
    bs_slot *s = cache_slot_acquire(c);
    for (uint64_t p = 2; p < 9002; p++) {
        cache_enter(c, s);
        put(c, p, 1, false);
        cache_leave(s);
        CHECK(c->nframes <= 3000, "%u frames after page %llu", c->nframes, (unsigned long long)p);
    }
    CHECK(c->nframes == 3000 && c->clock_cap == 3000, "%u frames, clock of %u slots",
          c->nframes, c->clock_cap);
    cache_enter(c, s);
    uint32_t found = 0;
    int right = 1;
    for (uint64_t p = 2; p < 9002; p++) {
        const uint8_t *pg = cache_find(c, p);
        if (pg) {
            found++;
            right &= filled(pg, (int)((p * 7 + 1) & 0xff));
        }
    }
    cache_leave(s);
    CHECK(found == 3000 && right, "%u pages found (%s)", found, right ? "right" : "WRONG");
    cache_slot_release(c, s);
    cache_close(c);
}

/* Dirty frames beyond the room displace clean ones; the cache keeps at least 16, and takes
 * room back when the dirty frames are gone. */
static void test_dirty_displaces_clean(void)
{
    bs_cache *c;
    CHECK(cache_open(P, 100 * P, &c) == BS_OK, "open");
    cache_set_dirty_room(c, 20);
    bs_slot *s = cache_slot_acquire(c);
    for (uint64_t p = 2; p < 302; p++) {
        cache_enter(c, s);
        put(c, p, 0, false);
        cache_leave(s);
    }
    CHECK(c->nframes == 100, "%u frames", c->nframes);
    cache_dirty_add(c, 20); /* within the room: nothing moves */
    for (uint64_t p = 400; p < 450; p++)
        put(c, p, 0, false);
    CHECK(c->nframes == 100, "%u frames with dirty pages inside the room", c->nframes);
    cache_dirty_add(c, 50); /* 70 dirty: 50 beyond the room */
    for (uint64_t p = 500; p < 600; p++)
        put(c, p, 0, false);
    CHECK(c->nframes == 50, "%u frames with 50 dirty pages beyond the room", c->nframes);
    cache_dirty_add(c, 1000);
    for (uint64_t p = 600; p < 700; p++)
        put(c, p, 0, false);
    CHECK(c->nframes == 16, "%u frames: never fewer than 16", c->nframes);
    cache_dirty_add(c, -1070);
    for (uint64_t p = 700; p < 900; p++)
        put(c, p, 0, false);
    CHECK(c->nframes == 100, "%u frames once the dirty pages are gone", c->nframes);
    cache_slot_release(c, s);
    cache_close(c);
}

/* frames from the slabs: page-size images that never overlap, across several slabs (more than
 * 2 MiB of frames), freed in an interleaved order and allocated again, for every page size */
static void test_frame_slabs(void)
{
    enum { N = 1200 };
    static bs_frame *fr[N];
    for (uint32_t ps = 1024; ps <= 65536; ps *= 2) {
        unsigned n = ps >= 16384 ? 100 : N; /* 100 x 64 KiB still spans several slabs */
        for (unsigned i = 0; i < n; i++) {
            fr[i] = cache_frame_new(ps);
            CHECK(fr[i] != NULL, "frame %u of page size %u", i, ps);
            if (!fr[i])
                return;
            CHECK(((uintptr_t)cache_frame_data(fr[i]) & 15) == 0, "data alignment");
            memset(cache_frame_data(fr[i]), (int)(i & 0xff), ps);
        }
        for (unsigned i = 0; i < n; i++) {
            const uint8_t *d = cache_frame_data(fr[i]);
            CHECK(d[0] == (uint8_t)i && d[ps - 1] == (uint8_t)i,
                  "frame %u of page size %u was overwritten by another", i, ps);
        }
        for (unsigned i = 0; i < n; i += 2) /* every other one: slabs half empty */
            cache_frame_free(fr[i]);
        for (unsigned i = 0; i < n; i += 2) {
            fr[i] = cache_frame_new(ps);
            CHECK(fr[i] != NULL, "frame %u again", i);
            if (!fr[i])
                return;
            memset(cache_frame_data(fr[i]), 0xEE, ps);
        }
        for (unsigned i = 1; i < n; i += 2) {
            const uint8_t *d = cache_frame_data(fr[i]);
            CHECK(d[0] == (uint8_t)i && d[ps / 2] == (uint8_t)i && d[ps - 1] == (uint8_t)i,
                  "kept frame %u of page size %u was handed out again", i, ps);
        }
        for (unsigned i = 0; i < n; i++)
            cache_frame_free(fr[i]);
    }
    /* a page size outside the slab classes still works (its own allocation) */
    bs_frame *odd = cache_frame_new(3000);
    CHECK(odd != NULL, "odd page size");
    if (odd) {
        memset(cache_frame_data(odd), 1, 3000);
        cache_frame_free(odd);
    }
}

int main(void)
{
    test_frame_slabs();
    test_basic_and_bound();
    test_pins_and_reclamation();
    test_large_capacity_grows();
    test_dirty_displaces_clean();
    test_clock_grows_to_capacity();
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("test_cache: ok\n");
    return 0;
}
