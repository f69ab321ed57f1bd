/*
 * map.c - read-only shared windows over database files, the address reservation they live
 * in, and the SIGBUS containment (see map.h).
 *
 * Layer: called by pager.c and db.c; calls only the C library and POSIX.
 *
 * The reservation is made once per process (the largest of 64, 16, 4 GiB that the system
 * grants, PROT_NONE, never released) and handed out in BS_MAP_SLOT slots under region_mu. A
 * window is an mmap(MAP_FIXED) of the file over its slots; closing puts PROT_NONE memory
 * back over them. bs_map_slots[i] names the window that covers slot i (what
 * bs_map_page_of and the SIGBUS handler read).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE under -std=c11 */
#endif
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "map.h"

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif
/* mincore()'s vector is unsigned char * on Linux and char * on macOS and the BSDs (a
 * -Wpointer-sign error under -Werror there); void * converts to either. */
#define MINCORE_VEC(v) ((void *)(v))

_Atomic uintptr_t bs_map_lo;
_Atomic size_t bs_map_len;
bs_mwin *_Atomic bs_map_slots[BS_MAP_SLOTS];

static pthread_mutex_t region_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *region;          /* the reservation (NULL: not made, or refused) */
static uint32_t region_nslots;
static bool region_tried;
static bool slot_used[BS_MAP_SLOTS];
static struct sigaction prev_bus; /* the SIGBUS handler before ours */
static uintptr_t sys_page;
static unsigned sys_shift;       /* log2 sys_page */

/* mapped beyond the last usable page: a 16-bit slot offset, a 16-bit key length and a 16-bit
 * inline value length from a page never read past the mapping */
#define MAP_TAIL (256u << 10)
#define MAP_MIN_WINDOW ((size_t)1 << BS_MAP_SLOT_SHIFT)
/* records of at least this many bytes go on huge pages (a window of >= 64 Ki pages: a file of
 * >= 128 MiB with 4 KiB pages) */
#define MAP_HUGE_META ((size_t)16 << 20)

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    uintptr_t a = (uintptr_t)si->si_addr;
    uintptr_t off = a - atomic_load_explicit(&bs_map_lo, memory_order_relaxed);
    if (off < atomic_load_explicit(&bs_map_len, memory_order_relaxed)) {
        bs_mwin *w = atomic_load_explicit(&bs_map_slots[off >> BS_MAP_SLOT_SHIFT],
                                          memory_order_acquire);
        if (w && a >= (uintptr_t)w->base && a < (uintptr_t)w->base + w->len) {
            int saved = errno;
            void *pa = (void *)(a & ~(sys_page - 1));
            void *r = mmap(pa, sys_page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                           -1, 0);
            errno = saved;
            if (r != MAP_FAILED) {
                atomic_store_explicit(w->damaged, 1, memory_order_seq_cst);
                return; /* the access is retried and reads zeros */
            }
        }
    }
    /* not ours: whoever handled SIGBUS before us */
    if (prev_bus.sa_flags & SA_SIGINFO) {
        if (prev_bus.sa_sigaction) {
            prev_bus.sa_sigaction(sig, si, uc);
            return;
        }
    } else if (prev_bus.sa_handler != SIG_DFL && prev_bus.sa_handler != SIG_IGN) {
        prev_bus.sa_handler(sig);
        return;
    }
    /* default action: die of SIGBUS when the access is retried */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGBUS, &dfl, NULL);
}

static void region_child(void) { pthread_mutex_init(&region_mu, NULL); }

/* region_mu held */
static bool region_make(void)
{
    if (region_tried)
        return region != NULL;
    region_tried = true;
    long ps = sysconf(_SC_PAGESIZE);
    sys_page = ps > 0 ? (uintptr_t)ps : 4096u;
    sys_shift = (unsigned)__builtin_ctzll((unsigned long long)sys_page);
    for (uint32_t n = BS_MAP_SLOTS; n >= 16; n /= 4) {
        size_t len = (size_t)n << BS_MAP_SLOT_SHIFT;
        void *p = mmap(NULL, len + MAP_MIN_WINDOW, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            continue;
        /* slot-aligned start (the rest is given back) */
        uintptr_t lo = ((uintptr_t)p + MAP_MIN_WINDOW - 1) & ~(uintptr_t)(MAP_MIN_WINDOW - 1);
        if (lo > (uintptr_t)p)
            munmap(p, lo - (uintptr_t)p);
        uintptr_t end = (uintptr_t)p + len + MAP_MIN_WINDOW;
        if (end > lo + len)
            munmap((void *)(lo + len), end - (lo + len));
        region = (uint8_t *)lo;
        region_nslots = n;
        break;
    }
    if (!region)
        return false;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &prev_bus) != 0) {
        munmap(region, (size_t)region_nslots << BS_MAP_SLOT_SHIFT);
        region = NULL;
        return false;
    }
    pthread_atfork(NULL, NULL, region_child);
    atomic_store(&bs_map_lo, (uintptr_t)region);
    atomic_store(&bs_map_len, (size_t)region_nslots << BS_MAP_SLOT_SHIFT);
    return true;
}

/* A window of at least `pages` pages (plus room), or NULL. */
static bs_mwin *window_new(bs_map *m, uint64_t pages)
{
    uint64_t want = pages * 2 * m->page_size + MAP_TAIL;
    if (want < pages) /* overflow */
        return NULL;
    uint64_t ns = (want + MAP_MIN_WINDOW - 1) >> BS_MAP_SLOT_SHIFT;
    bs_mwin *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    pthread_mutex_lock(&region_mu);
    if (!region_make() || ns > region_nslots) {
        pthread_mutex_unlock(&region_mu);
        free(w);
        return NULL;
    }
    uint32_t s0 = 0, run = 0;
    for (uint32_t i = 0; i < region_nslots && run < ns; i++) {
        if (slot_used[i]) {
            run = 0;
        } else if (run++ == 0) {
            s0 = i;
        }
    }
    if (run < ns) {
        pthread_mutex_unlock(&region_mu);
        free(w);
        return NULL;
    }
    w->len = (size_t)ns << BS_MAP_SLOT_SHIFT;
    w->base = region + ((size_t)s0 << BS_MAP_SLOT_SHIFT);
    w->shift = m->shift;
    w->npages = (w->len - MAP_TAIL) >> m->shift;
    size_t bounds_at = (size_t)w->npages * sizeof(bs_mpage);
    size_t res_at = (bounds_at + (size_t)w->npages * BS_MAP_BOUNDS + 15u) & ~(size_t)15u;
    size_t ngroups = (w->len >> sys_shift) / BS_MAP_RES_SPAN + 1u;
    w->meta_len = res_at + ngroups * sizeof(bs_mres);
    w->damaged = &m->damaged;
    w->slot0 = s0;
    w->nslots = (uint32_t)ns;
    void *meta = mmap(NULL, w->meta_len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *p = meta == MAP_FAILED ? MAP_FAILED
                                 : mmap(w->base, w->len, PROT_READ, MAP_SHARED | MAP_FIXED,
                                        m->fd, 0);
    if (p == MAP_FAILED) {
        if (meta != MAP_FAILED)
            munmap(meta, w->meta_len);
        /* the slots keep (or get back) their PROT_NONE reservation */
        mmap(w->base, w->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
             -1, 0);
        pthread_mutex_unlock(&region_mu);
        free(w);
        return NULL;
    }
    w->meta = meta;
    w->bounds = (uint8_t (*)[BS_MAP_BOUNDS])(void *)((uint8_t *)meta + bounds_at);
#ifdef MADV_HUGEPAGE
    /* a large file's records: huge pages, so that a descent's record costs no TLB miss (a
     * small one keeps 4 KiB pages: a huge page would be mostly zeros) */
    if (w->meta_len >= MAP_HUGE_META)
        madvise(meta, w->meta_len, MADV_HUGEPAGE);
#endif
    w->res = (bs_mres *)(void *)((uint8_t *)meta + res_at);
    for (uint32_t i = 0; i < ns; i++) {
        slot_used[s0 + i] = true;
        atomic_store_explicit(&bs_map_slots[s0 + i], w, memory_order_release);
    }
    pthread_mutex_unlock(&region_mu);
    return w;
}

static void window_free(bs_mwin *w)
{
    pthread_mutex_lock(&region_mu);
    mmap(w->base, w->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
         -1, 0);
    for (uint32_t i = 0; i < w->nslots; i++) {
        atomic_store_explicit(&bs_map_slots[w->slot0 + i], NULL, memory_order_release);
        slot_used[w->slot0 + i] = false;
    }
    pthread_mutex_unlock(&region_mu);
    munmap(w->meta, w->meta_len);
    free(w);
}

bs_map *map_open(int fd, uint32_t page_size, uint32_t shift, uint64_t page_count)
{
    bs_map *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->fd = fd;
    m->page_size = page_size;
    m->shift = shift;
    pthread_mutex_init(&m->mu, NULL);
    bs_mwin *w = window_new(m, page_count);
    if (!w) {
        pthread_mutex_destroy(&m->mu);
        free(m);
        return NULL;
    }
    atomic_store(&m->cur, w);
    return m;
}

void map_close(bs_map *m)
{
    if (!m)
        return;
    bs_mwin *w = atomic_load(&m->cur);
    while (w) {
        bs_mwin *prev = w->prev;
        window_free(w);
        w = prev;
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

bs_mwin *map_window_for(bs_map *m, uint64_t pgno)
{
    pthread_mutex_lock(&m->mu);
    bs_mwin *w = atomic_load(&m->cur);
    if (pgno >= w->npages) {
        bs_mwin *nw = m->stuck ? NULL : window_new(m, pgno + 1);
        m->stuck = nw == NULL;
        if (nw) {
            nw->prev = w;
            atomic_store_explicit(&m->cur, nw, memory_order_release);
            w = nw;
        } else {
            w = NULL;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return w;
}

static uint32_t now_ms(void)
{
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0)
#endif
        clock_gettime(CLOCK_MONOTONIC, &ts);
    uint32_t ms = (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
    return ms ? ms : 1u; /* 0 means "never probed" */
}

bool map_resident(bs_mwin *w, const uint8_t *pg, size_t len)
{
    uintptr_t off = (uintptr_t)(pg - w->base);
    uintptr_t s0 = off >> sys_shift, s1 = (off + len - 1) >> sys_shift;
    uintptr_t g = s0 / BS_MAP_RES_SPAN;
    if (s1 / BS_MAP_RES_SPAN != g) { /* across two groups (never with power-of-two pages) */
        unsigned char vec[BS_MAP_RES_SPAN];
        uintptr_t n = s1 - s0 + 1;
        if (n > sizeof vec ||
            mincore(w->base + (s0 << sys_shift), n << sys_shift, MINCORE_VEC(vec)) != 0)
            return false;
        for (uintptr_t i = 0; i < n; i++)
            if (!(vec[i] & 1))
                return false;
        return true;
    }
    unsigned a = (unsigned)(s0 % BS_MAP_RES_SPAN), b = (unsigned)(s1 % BS_MAP_RES_SPAN);
    uint64_t want = (b == 63u ? ~0ull : (2ull << b) - 1u) & ~((1ull << a) - 1u);
    bs_mres *r = &w->res[g];
    uint32_t now = now_ms();
    uint32_t st = atomic_load_explicit(&r->stamp, memory_order_acquire);
    if (st && (uint32_t)(now - st) < BS_MAP_RES_MS &&
        (atomic_load_explicit(&r->mask, memory_order_relaxed) & want) == want)
        return true;
    unsigned char vec[BS_MAP_RES_SPAN];
    uintptr_t gs = g * BS_MAP_RES_SPAN, n = BS_MAP_RES_SPAN;
    if ((gs + n) << sys_shift > w->len)
        n = (w->len >> sys_shift) - gs;
    if (mincore(w->base + (gs << sys_shift), n << sys_shift, MINCORE_VEC(vec)) != 0)
        return false;
    uint64_t m = 0;
    for (uintptr_t i = 0; i < n; i++)
        m |= (uint64_t)(vec[i] & 1) << i;
    atomic_store_explicit(&r->mask, m, memory_order_relaxed);
    atomic_store_explicit(&r->stamp, now, memory_order_release);
    return (m & want) == want;
}

bool map_covers(bs_map *m, uint64_t end)
{
    if (end <= atomic_load_explicit(&m->fsize, memory_order_relaxed))
        return true;
    struct stat st;
    if (fstat(m->fd, &st) != 0 || st.st_size < 0)
        return false;
    atomic_store_explicit(&m->fsize, (uint64_t)st.st_size, memory_order_relaxed);
    return end <= (uint64_t)st.st_size;
}
