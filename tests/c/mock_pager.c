/*
 * mock_pager.c - an in-memory stand-in for the page-access part of pager.c, for the unit tests
 * of btree.c and check.c (tests/c/test_btree.c). Not part of the engine.
 *
 * Layer: tests only; implements the pager_* functions of internal.h that btree.c and check.c
 * call, plus pgvec_push/pgvec_free, on a growable array of in-memory pages.
 *
 * Copy-on-write is simulated honestly: committed pages are read-only; pager_write on one
 * copies it to a new page and frees the old one at commit; pages allocated by the running txn
 * are written in place and freed at once. Freed pages are poisoned (0xA5) so that a stale
 * pointer shows up as garbage. Committed pages are "uncached" after each commit: the first
 * pager_get verifies them with btree_verify_page (like a disk read) and, in noio mode, fails
 * with BS_WOULDBLOCK. Misuse that can only be a btree bug (double free, writing a free page)
 * aborts with a message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock_pager.h"

/* MS_OUTER: allocated by this txn before a (simulated) savepoint: readable, but not owned:
 * pager_write copies it and pager_free only retires it at commit, like the real pager does
 * for pages of an outer savepoint generation. */
enum { MS_FREE = 0, MS_META, MS_COMMITTED, MS_DIRTY, MS_PENDING, MS_OUTER, MS_RETIRED };
#define LIVE(st) ((st) == MS_COMMITTED || (st) == MS_DIRTY || (st) == MS_OUTER)

typedef struct mpage {
    uint8_t *data;
    uint8_t st;
    bool cached;
} mpage;

static struct {
    uint32_t P;
    mpage *pg;
    uint64_t n, cap;
    uint64_t *avail;      /* free page numbers usable now */
    size_t navail, capavail;
    uint64_t txid;
    uint64_t mutations;
} M;

static void die(const char *fmt, unsigned long long a)
{
    fprintf(stderr, "mock pager: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n");
    abort();
}

int pgvec_push(bs_pgvec *v, uint64_t pgno)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 64;
        uint64_t *nv = realloc(v->v, cap * sizeof *nv);
        if (!nv)
            return BS_NOMEM;
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = pgno;
    return BS_OK;
}

void pgvec_free(bs_pgvec *v)
{
    free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
}

static void avail_push(uint64_t pgno)
{
    if (M.navail == M.capavail) {
        M.capavail = M.capavail ? 2 * M.capavail : 256;
        M.avail = realloc(M.avail, M.capavail * sizeof *M.avail);
        if (!M.avail)
            die("out of memory%llu", 0);
    }
    M.avail[M.navail++] = pgno;
}

static void grow(uint64_t n)
{
    if (n > M.cap) {
        uint64_t cap = M.cap ? M.cap : 64;
        while (cap < n)
            cap *= 2;
        M.pg = realloc(M.pg, cap * sizeof *M.pg);
        if (!M.pg)
            die("out of memory%llu", 0);
        memset(M.pg + M.cap, 0, (cap - M.cap) * sizeof *M.pg);
        M.cap = cap;
    }
    for (uint64_t i = M.n; i < n; i++) {
        /* a zeroed memo header before each page, as the cache keeps one (image id 0: the
         * range checks never memoize a mock page) */
        uint8_t *base = calloc(1, BS_IMG_MEMO_BACK + M.P);
        M.pg[i].data = base ? base + BS_IMG_MEMO_BACK : NULL;
        if (!M.pg[i].data)
            die("out of memory%llu", 0);
        memset(M.pg[i].data, 0xA5, M.P);
        M.pg[i].st = MS_FREE;
    }
    M.n = n;
}

void mock_destroy(void)
{
    for (uint64_t i = 0; i < M.n; i++)
        free(M.pg[i].data ? M.pg[i].data - BS_IMG_MEMO_BACK : NULL);
    free(M.pg);
    free(M.avail);
    memset(&M, 0, sizeof M);
}

void mock_init(bs_db *db, bs_txn *txn, uint32_t P)
{
    mock_destroy();
    memset(db, 0, sizeof *db);
    memset(txn, 0, sizeof *txn);
    M.P = P;
    grow(2);
    M.pg[0].st = M.pg[1].st = MS_META;
    M.txid = 1;
    db->page_size = P;
    txn->db = db;
    txn->write = true;
    txn->gen = txn->floor = 1;
    txn->own_tag = 1; /* the dirty pages' tag (internal.h pager_mine), as pager.c sets it */
    txn->txid = M.txid;
    txn->page_count = M.n;
    txn->meta.page_count = M.n;
}

/* the pager's in-frame mark of a dirty page (internal.h pager_mine): tag << 1, generation */
static void set_own(uint64_t pgno, uint64_t own, uint64_t gen)
{
    bs_img_memo *m = pager_memo_of(M.pg[pgno].data);
    m->own = own;
    m->own_gen = gen;
}

static void set_free(uint64_t pgno)
{
    set_own(pgno, 0, 0);
    M.pg[pgno].st = MS_FREE;
    M.pg[pgno].cached = false;
    memset(M.pg[pgno].data, 0xA5, M.P);
    avail_push(pgno);
}

static void rebuild_avail(void)
{
    M.navail = 0;
    for (uint64_t i = M.n; i-- > 2;)
        if (M.pg[i].st == MS_FREE)
            avail_push(i);
}

void mock_commit(bs_txn *txn)
{
    uint64_t nfree = 0;
    for (uint64_t i = 2; i < M.n; i++) {
        mpage *m = &M.pg[i];
        if (m->st == MS_DIRTY || m->st == MS_OUTER) {
            m->st = MS_COMMITTED;
            set_own(i, 0, 0);
        } else if (m->st == MS_PENDING || m->st == MS_RETIRED) {
            m->st = MS_FREE;
            memset(m->data, 0xA5, M.P);
        }
        m->cached = false;
        nfree += m->st == MS_FREE;
    }
    rebuild_avail();
    M.txid++;
    M.mutations++;
    txn->txid = M.txid;
    txn->page_count = M.n;
    txn->meta.page_count = M.n;
    txn->meta.fl_count = nfree;
    txn->meta.fl_head = 0;
}

void mock_abort(bs_txn *txn)
{
    for (uint64_t i = 2; i < M.n; i++) {
        mpage *m = &M.pg[i];
        if (m->st == MS_DIRTY || m->st == MS_OUTER || m->st == MS_RETIRED) {
            m->st = MS_FREE;
            set_own(i, 0, 0);
            memset(m->data, 0xA5, M.P);
        } else if (m->st == MS_PENDING) {
            m->st = MS_COMMITTED; /* may also have been an outer page: it is simply lost */
        }
        m->cached = false;
    }
    rebuild_avail();
    M.mutations++;
    txn->page_count = M.n;
}

void mock_evict(unsigned pct, uint64_t *rng)
{
    for (uint64_t i = 2; i < M.n; i++) {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        if (*rng % 100 < pct)
            M.pg[i].cached = false;
    }
}

void mock_savepoint(void)
{
    for (uint64_t i = 2; i < M.n; i++)
        if (M.pg[i].st == MS_DIRTY) {
            M.pg[i].st = MS_OUTER;
            /* an outer level's page: still ours (its range mark stays), not in place */
            pager_memo_of(M.pg[i].data)->own_gen = 0;
        }
    M.mutations++;
}

uint64_t mock_fingerprint(void) { return M.mutations * 1000003u + M.n; }
uint8_t *mock_page(uint64_t pgno) { return pgno < M.n ? M.pg[pgno].data : NULL; }
uint64_t mock_page_count(void) { return M.n; }
bool mock_page_live(uint64_t pgno)
{
    return pgno < M.n && LIVE(M.pg[pgno].st);
}

uint64_t mock_dirty_pages(void)
{
    uint64_t n = 0;
    for (uint64_t i = 2; i < M.n; i++)
        n += M.pg[i].st == MS_DIRTY;
    return n;
}

static uint64_t alloc_page(bs_txn *txn)
{
    uint64_t p;
    if (M.navail) {
        p = M.avail[--M.navail];
        if (M.pg[p].st != MS_FREE)
            die("free list holds page %llu which is not free", p);
    } else {
        p = M.n;
        grow(M.n + 1);
    }
    M.pg[p].st = MS_DIRTY;
    M.pg[p].cached = true;
    set_own(p, txn->own_tag << 1, txn->gen); /* a new dirty page: not vouched */
    txn->page_count = M.n;
    return p;
}

/* "disk read": verify node pages the first time after a commit */
static int load(bs_txn *txn, uint64_t pgno)
{
    mpage *m = &M.pg[pgno];
    if (m->st == MS_DIRTY || m->st == MS_OUTER || m->cached)
        return BS_OK;
    if (txn->noio)
        return BS_WOULDBLOCK;
    int t = pg_type(m->data);
    if (pg_pgno(m->data) != pgno)
        return bs_fail(BS_CORRUPT, "page %llu: header says page %llu", (unsigned long long)pgno,
                       (unsigned long long)pg_pgno(m->data));
    if (t == PT_BRANCH || t == PT_LEAF) {
        int rc = btree_verify_page(m->data, M.P, txn->page_count);
        if (rc)
            return rc;
    } else if (t != PT_OVERFLOW) {
        return bs_fail(BS_CORRUPT, "page %llu: unexpected type %d", (unsigned long long)pgno, t);
    }
    m->cached = true;
    return BS_OK;
}

/* no shared cache here: the epoch bracket of long walks (check, drop) has nothing to do */
void pager_enter(bs_txn *txn) { (void)txn; }
void pager_leave(bs_txn *txn) { (void)txn; }

int pager_get(bs_txn *txn, uint64_t pgno, int type, const uint8_t **out)
{
    int rc;
    if (pgno < 2 || pgno >= txn->page_count || pgno >= M.n)
        return bs_fail(BS_CORRUPT, "page %llu: out of range", (unsigned long long)pgno);
    mpage *m = &M.pg[pgno];
    if (!LIVE(m->st))
        return bs_fail(BS_CORRUPT, "page %llu: mock: read of a %s page", (unsigned long long)pgno,
                       m->st == MS_PENDING ? "freed" : "free");
    if ((rc = load(txn, pgno)) != BS_OK)
        return rc;
    if (type && pg_type(m->data) != type)
        return bs_fail(BS_CORRUPT, "page %llu: expected type %d, found %d",
                       (unsigned long long)pgno, type, pg_type(m->data));
    *out = m->data;
    return BS_OK;
}

int pager_get_ref(bs_txn *txn, uint64_t pgno, int type, uint64_t txid, uint64_t from,
                  const uint8_t **out)
{
    int rc = pager_get(txn, pgno, type, out);
    if (rc == BS_OK && pg_txid(*out) != txid)
        return bs_fail(BS_CORRUPT, "page %llu: txid %llu, but the pointer on page %llu expects "
                       "%llu", (unsigned long long)pgno, (unsigned long long)pg_txid(*out),
                       (unsigned long long)from, (unsigned long long)txid);
    return rc;
}

/* no mapping here (db->map is NULL): nothing can be damaged */
int pager_map_check(bs_txn *txn)
{
    (void)txn;
    return BS_OK;
}

int pager_write(bs_txn *txn, uint64_t pgno, uint8_t **out, uint64_t *newpgno)
{
    int rc;
    if (pgno < 2 || pgno >= M.n)
        die("pager_write of page %llu out of range", pgno);
    mpage *m = &M.pg[pgno];
    M.mutations++;
    if (m->st == MS_DIRTY) {
        *out = m->data;
        *newpgno = pgno;
        return BS_OK;
    }
    if (m->st != MS_COMMITTED && m->st != MS_OUTER)
        die("pager_write of page %llu which is free or freed", pgno);
    if ((rc = load(txn, pgno)) != BS_OK)
        return rc;
    uint64_t np = alloc_page(txn);
    m = &M.pg[pgno]; /* grow may move the array */
    memcpy(M.pg[np].data, m->data, M.P);
    put64(M.pg[np].data + PH_PGNO, np);
    put64(M.pg[np].data + PH_TXID, M.txid);
    m->st = m->st == MS_OUTER ? MS_RETIRED : MS_PENDING;
    *out = M.pg[np].data;
    *newpgno = np;
    return BS_OK;
}

int pager_new(bs_txn *txn, int type, uint8_t **out, uint64_t *pgno)
{
    M.mutations++;
    uint64_t p = alloc_page(txn);
    uint8_t *d = M.pg[p].data;
    memset(d, 0, M.P);
    d[PH_TYPE] = (uint8_t)type;
    put64(d + PH_PGNO, p);
    put64(d + PH_TXID, M.txid);
    if (type == PT_BRANCH || type == PT_LEAF)
        pg_set_upper(d, M.P);
    *out = d;
    *pgno = p;
    return BS_OK;
}

int pager_free(bs_txn *txn, uint64_t pgno)
{
    (void)txn;
    M.mutations++;
    if (pgno < 2 || pgno >= M.n)
        die("pager_free of page %llu out of range", pgno);
    mpage *m = &M.pg[pgno];
    if (m->st == MS_DIRTY)
        set_free(pgno);
    else if (m->st == MS_COMMITTED)
        m->st = MS_PENDING;
    else if (m->st == MS_OUTER)
        m->st = MS_RETIRED;
    else
        die("double free of page %llu", pgno);
    return BS_OK;
}

/* the mock's allocator never hands out a page in use: reaching this is a btree.c bug */
int pager_freelist_damaged(bs_txn *txn, uint64_t pgno, const char *why)
{
    (void)txn;
    fprintf(stderr, "mock pager: %s\n", why);
    die("btree reported page %llu handed out while in use", (unsigned long long)pgno);
    return BS_CORRUPT;
}

const bs_bounds *pager_bounds(const uint8_t *pg)
{
    (void)pg;
    return NULL; /* the mock keeps no summaries: the range checks read the cells */
}

bool pager_owned(bs_txn *txn, uint64_t pgno)
{
    (void)txn;
    return pgno >= 2 && pgno < M.n && M.pg[pgno].st == MS_DIRTY;
}

int pager_ov_write(bs_txn *txn, const void *data, size_t len, uint64_t *pgno)
{
    if (txn->noio)
        return BS_WOULDBLOCK;
    M.mutations++;
    uint64_t n = fmt_overflow_pages(M.P, len), first = M.n;
    grow(M.n + n);
    txn->page_count = M.n;
    uint8_t *d = M.pg[first].data;
    memset(d, 0, PH_SIZE);
    d[PH_TYPE] = PT_OVERFLOW;
    put64(d + PH_PGNO, first);
    put64(d + PH_TXID, M.txid);
    put32(d + PH_UPPER, (uint32_t)n);
    put32(d + PH_FRAG, (uint32_t)len);
    for (uint64_t i = 0; i < n; i++) {
        M.pg[first + i].st = MS_DIRTY;
        M.pg[first + i].cached = true;
    }
    const uint8_t *s = data;
    for (size_t off = 0; off < len;) {
        uint64_t at = PH_SIZE + off;
        size_t k = M.P - at % M.P;
        if (k > len - off)
            k = len - off;
        memcpy(M.pg[first + at / M.P].data + at % M.P, s + off, k);
        off += k;
    }
    *pgno = first;
    return BS_OK;
}

static int ov_header(bs_txn *txn, uint64_t pgno, uint64_t txid, size_t len, uint64_t *np)
{
    uint64_t n = fmt_overflow_pages(M.P, len);
    if (pgno < 2 || pgno + n > txn->page_count || pgno + n > M.n)
        return bs_fail(BS_CORRUPT, "overflow run at %llu out of range", (unsigned long long)pgno);
    const uint8_t *d = M.pg[pgno].data;
    for (uint64_t i = 0; i < n; i++)
        if (!LIVE(M.pg[pgno + i].st))
            return bs_fail(BS_CORRUPT, "overflow run at %llu: page %llu is free",
                           (unsigned long long)pgno, (unsigned long long)(pgno + i));
    if (pg_type(d) != PT_OVERFLOW || pg_pgno(d) != pgno || get32(d + PH_UPPER) != n ||
        get32(d + PH_FRAG) != len || (txid && pg_txid(d) != txid))
        return bs_fail(BS_CORRUPT, "page %llu: bad overflow header", (unsigned long long)pgno);
    *np = n;
    return BS_OK;
}

int pager_ov_read(bs_txn *txn, uint64_t pgno, uint64_t txid, size_t len, void *dst)
{
    uint64_t n;
    int rc;
    if (txn->noio)
        return BS_WOULDBLOCK;
    if ((rc = ov_header(txn, pgno, txid, len, &n)) != BS_OK)
        return rc;
    uint8_t *o = dst;
    for (size_t off = 0; off < len;) {
        uint64_t at = PH_SIZE + off;
        size_t k = M.P - at % M.P;
        if (k > len - off)
            k = len - off;
        memcpy(o + off, M.pg[pgno + at / M.P].data + at % M.P, k);
        off += k;
    }
    return BS_OK;
}

int pager_ov_free(bs_txn *txn, uint64_t pgno, size_t len)
{
    uint64_t n;
    M.mutations++;
    if (ov_header(txn, pgno, 0, len, &n) != BS_OK)
        die("pager_ov_free of a bad run at %llu", pgno);
    for (uint64_t i = 0; i < n; i++) {
        uint8_t st = M.pg[pgno + i].st;
        if (st == MS_DIRTY)
            set_free(pgno + i);
        else
            M.pg[pgno + i].st = st == MS_OUTER ? MS_RETIRED : MS_PENDING;
    }
    return BS_OK;
}

int pager_ov_check(bs_txn *txn, uint64_t pgno, uint64_t txid, size_t len, int full)
{
    uint64_t n;
    (void)full;
    return ov_header(txn, pgno, txid, len, &n);
}

int pager_read_freelist(bs_txn *txn, const bs_meta *m, bs_pgvec *out, bs_pgvec *chain)
{
    (void)txn;
    (void)chain;
    for (uint64_t i = 2; i < m->page_count && i < M.n; i++)
        if (M.pg[i].st == MS_FREE && pgvec_push(out, i) != BS_OK)
            return BS_NOMEM;
    return BS_OK;
}
