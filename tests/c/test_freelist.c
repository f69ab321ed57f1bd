// build: csrc/util.c csrc/crc32c.c csrc/io_posix.c csrc/io_fault.c csrc/cache.c csrc/freelist.c csrc/meta.c csrc/pager.c csrc/db.c csrc/lockfile.c csrc/btree.c csrc/check.c csrc/map.c
/*
 * test_freelist.c - the free set and its persisted chain (freelist.h): replay of base and
 * delta records (the newest mention decides, counts checked), damaged chains and pages
 * (a delta after the base, a loop, bad counts and page numbers, duplicates), pending groups
 * released against the oldest reader, the commit record as a delta and as a base rewrite
 * (plan / collect / fill, then replayed back), the comparison of the in-memory free set with
 * a persisted one, catching up with records other processes wrote (freelist_catch_up), and,
 * end to end on a real file, the debug
 * whole-state check after each commit catching an in-memory free set that disagrees with
 * the file.
 *
 * Layer: test program; calls freelist.h on memory, and bs.h (plus internal.h to tamper) for
 * the end-to-end part.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "freelist.h"
#include "internal.h"
#include "testutil.h"

#define P 1024u
#define NPAGES 1000u /* page count of the imaginary file */

/* a freelist record page: adds, then dels (na/nd entries), next page */
static void mkrec(uint8_t *pg, uint64_t pgno, int base, const uint64_t *add, uint32_t na,
                  const uint64_t *del, uint32_t nd, uint64_t next)
{
    memset(pg, 0, P);
    pg[PH_TYPE] = PT_FREELIST;
    put64(pg + PH_PGNO, pgno);
    if (base)
        pg[PH_FLAGS] |= FL_F_BASE;
    for (uint32_t i = 0; i < na; i++)
        put64(pg + FL_ENTRIES + 8 * i, add[i]);
    for (uint32_t i = 0; i < nd; i++)
        put64(pg + FL_ENTRIES + 8 * (na + i), del[i]);
    put32(pg + FL_NADD, na);
    put32(pg + FL_NDEL, nd);
    put64(pg + FL_NEXT, next);
    /* format version 2: the chain runs from newer to older pages, and each link carries the
     * txid of the page it names (here 100 - pgno: lower numbers are newer) */
    put64(pg + PH_TXID, 100 - pgno);
    put64(pg + FL_NEXT_TXID, next ? 100 - next : 0);
}

static int same(const bs_pgvec *v, const uint64_t *want, size_t n)
{
    if (v->n != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v->v[i] != want[i])
            return 0;
    return 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_replay(void)
{
    static uint8_t newest[P], older[P], base[P];
    /* base {3,4,6}; older delta: +7 -4; newest delta: +4 -6  =>  {3,4,7} */
    mkrec(base, 12, 1, (uint64_t[]){3, 4, 6}, 3, NULL, 0, 0);
    mkrec(older, 11, 0, (uint64_t[]){7}, 1, (uint64_t[]){4}, 1, 12);
    mkrec(newest, 10, 0, (uint64_t[]){4}, 1, (uint64_t[]){6}, 1, 11);
    const uint8_t *chain[3] = {newest, older, base};
    for (int i = 0; i < 3; i++)
        CHECK(freelist_verify_page(chain[i], P, 10 + (uint64_t)i, NPAGES) == BS_OK, "%s",
              bs_errmsg());
    fl_replay r;
    bs_pgvec out = {0};
    size_t nd = 99;
    freelist_replay_init(&r, NPAGES);
    for (int i = 0; i < 3; i++)
        CHECK(freelist_replay_page(&r, 10 + (uint64_t)i, chain[i]) == BS_OK, "%s", bs_errmsg());
    CHECK(freelist_replay_finish(&r, 3, &out, &nd) == BS_OK, "%s", bs_errmsg());
    CHECK(same(&out, (uint64_t[]){3, 4, 7}, 3), "replayed set (%zu pages)", out.n);
    CHECK(nd == 2, "%zu delta records", nd);
    freelist_replay_free(&r);
    pgvec_free(&out);

    /* the meta's count must match */
    freelist_replay_init(&r, NPAGES);
    for (int i = 0; i < 3; i++)
        freelist_replay_page(&r, 10 + (uint64_t)i, chain[i]);
    CHECK(freelist_replay_finish(&r, 4, &out, NULL) == BS_CORRUPT, "count mismatch accepted");
    CHECK(strstr(bs_errmsg(), "meta says 4") != NULL, "message: %s", bs_errmsg());
    freelist_replay_free(&r);
    pgvec_free(&out);

    /* a base alone */
    freelist_replay_init(&r, NPAGES);
    CHECK(freelist_replay_page(&r, 12, base) == BS_OK, "base");
    CHECK(freelist_replay_finish(&r, 3, &out, &nd) == BS_OK && nd == 0, "base alone");
    CHECK(same(&out, (uint64_t[]){3, 4, 6}, 3), "base set");
    freelist_replay_free(&r);
    pgvec_free(&out);
}

static void test_damaged(void)
{
    static uint8_t base[P], delta[P], pg[P];
    mkrec(base, 12, 1, (uint64_t[]){3}, 1, NULL, 0, 13);
    mkrec(delta, 13, 0, (uint64_t[]){4}, 1, NULL, 0, 0);
    fl_replay r;
    freelist_replay_init(&r, NPAGES);
    CHECK(freelist_replay_page(&r, 12, base) == BS_OK, "base");
    CHECK(freelist_replay_page(&r, 13, delta) == BS_CORRUPT, "delta after the base accepted");
    CHECK(strstr(bs_errmsg(), "after the base") != NULL, "message: %s", bs_errmsg());
    freelist_replay_free(&r);

    /* a chain that loops: more records than the file has pages */
    freelist_replay_init(&r, 3);
    mkrec(delta, 13, 0, NULL, 0, NULL, 0, 13);
    int rc = BS_OK;
    for (int i = 0; i < 4 && rc == BS_OK; i++)
        rc = freelist_replay_page(&r, 13, delta);
    CHECK(rc == BS_CORRUPT && strstr(bs_errmsg(), "loop"), "loop: %d %s", rc, bs_errmsg());
    freelist_replay_free(&r);

    /* page verification */
    mkrec(pg, 20, 1, (uint64_t[]){3}, 1, (uint64_t[]){4}, 1, 0);
    CHECK(freelist_verify_page(pg, P, 20, NPAGES) == BS_CORRUPT, "base with deletions");
    mkrec(pg, 20, 0, (uint64_t[]){NPAGES}, 1, NULL, 0, 0);
    CHECK(freelist_verify_page(pg, P, 20, NPAGES) == BS_CORRUPT, "entry beyond page count");
    mkrec(pg, 20, 0, (uint64_t[]){1}, 1, NULL, 0, 0);
    CHECK(freelist_verify_page(pg, P, 20, NPAGES) == BS_CORRUPT, "a meta page as free");
    mkrec(pg, 20, 0, NULL, 0, NULL, 0, NPAGES + 5);
    CHECK(freelist_verify_page(pg, P, 20, NPAGES) == BS_CORRUPT, "next out of range");
    mkrec(pg, 20, 0, NULL, 0, NULL, 0, 0);
    put32(pg + FL_NADD, fmt_freelist_cap(P));
    put32(pg + FL_NDEL, 1);
    CHECK(freelist_verify_page(pg, P, 20, NPAGES) == BS_CORRUPT, "more entries than fit");

    /* a page listed twice is refused at install, nothing installed */
    bs_freelist fl = {0};
    bs_pgvec pages = {0}, chain = {0};
    pgvec_push(&pages, 5);
    pgvec_push(&pages, 9);
    pgvec_push(&pages, 5);
    pgvec_push(&chain, 30);
    CHECK(freelist_install(&fl, &pages, &chain, 0) == BS_CORRUPT, "duplicate accepted");
    CHECK(fl.reusable.n == 0 && fl.chain.n == 0, "installed anyway");
    pgvec_free(&pages);
    pgvec_free(&chain);
    freelist_destroy(&fl);
}

static void test_pending(void)
{
    bs_freelist fl = {0};
    bs_pgvec a = {0}, b = {0}, c = {0};
    pgvec_push(&fl.reusable, 50); /* descending */
    pgvec_push(&a, 11);
    pgvec_push(&a, 10);
    pgvec_push(&b, 12);
    pgvec_push(&c, 13);
    CHECK(freelist_pend(&fl, 5, &a) == BS_OK && a.n == 0, "pend 5");
    CHECK(freelist_pend(&fl, 7, &b) == BS_OK, "pend 7");
    CHECK(freelist_pend(&fl, 9, &c) == BS_OK, "pend 9");
    CHECK(freelist_count(&fl) == 5, "count %llu", (unsigned long long)freelist_count(&fl));
    /* a reader on snapshot 4 pins everything freed after it */
    CHECK(freelist_pinned(&fl, 4) == 4, "pinned %llu", (unsigned long long)freelist_pinned(&fl, 4));
    freelist_release(&fl, 4);
    CHECK(fl.reusable.n == 1 && fl.npend == 3, "nothing released below 5");
    /* oldest reader on snapshot 7: the groups of 5 and 7 become reusable, 9 waits */
    freelist_release(&fl, 7);
    CHECK(fl.npend == 1 && fl.pend[0].txid == 9, "group 9 still pending");
    CHECK(freelist_pinned(&fl, 7) == 1, "one page pinned");
    CHECK(freelist_count(&fl) == 5, "count unchanged by release");
    uint64_t p;
    CHECK(freelist_take(&fl, &p) && p == 10, "lowest first: %llu", (unsigned long long)p);
    uint64_t run[2];
    CHECK(freelist_take_run(&fl, 2, run) && run[0] == 12 && run[1] == 11, "run 11..12");
    CHECK(!freelist_take_run(&fl, 2, run), "no run of two left");
    freelist_release(&fl, UINT64_MAX); /* no reader at all */
    CHECK(fl.npend == 0, "all released");
    CHECK(freelist_take(&fl, &p) && p == 13, "13 next");
    CHECK(freelist_take(&fl, &p) && p == 50, "50 last");
    CHECK(!freelist_take(&fl, &p), "empty");
    freelist_destroy(&fl);
}

static void test_compare(void)
{
    bs_freelist fl = {0};
    bs_pgvec file = {0}, chain = {0};
    pgvec_push(&fl.reusable, 9);
    pgvec_push(&fl.reusable, 4);
    bs_pgvec g = {0};
    pgvec_push(&g, 6);
    freelist_pend(&fl, 2, &g);
    pgvec_push(&fl.chain, 30);
    pgvec_push(&chain, 30);
    uint64_t same_set[] = {6, 9, 4};
    for (int i = 0; i < 3; i++)
        pgvec_push(&file, same_set[i]);
    CHECK(freelist_compare(&fl, &file, &chain) == BS_OK, "%s", bs_errmsg());
    pgvec_push(&file, 7);
    CHECK(freelist_compare(&fl, &file, &chain) == BS_CORRUPT &&
          strstr(bs_errmsg(), "page 7 is free in the file but not in memory"), "%s", bs_errmsg());
    file.n = 2; /* {4, 6} after the sort */
    CHECK(freelist_compare(&fl, &file, &chain) == BS_CORRUPT &&
          strstr(bs_errmsg(), "page 9 is free in memory but not in the file"), "%s", bs_errmsg());
    chain.v[0] = 31;
    file.n = 3;
    CHECK(freelist_compare(&fl, &file, &chain) == BS_CORRUPT && strstr(bs_errmsg(), "chain"),
          "%s", bs_errmsg());
    pgvec_free(&file);
    pgvec_free(&chain);
    freelist_destroy(&fl);
}

/* plan / collect / fill of one commit, with "allocated" chain pages numbered from first */
static void record(bs_freelist *fl, bs_txn *txn, uint64_t first, fl_record *r, bs_pgvec *chain,
                   uint8_t pages[][P], uint64_t *head, uint64_t *count, size_t *ndelta)
{
    CHECK(freelist_plan(fl, txn, r) == BS_OK, "plan");
    uint8_t *pgs[4];
    CHECK(r->npages <= 4, "%zu pages", r->npages);
    for (size_t i = 0; i < r->npages; i++) {
        mkrec(pages[i], first + i, 0, NULL, 0, NULL, 0, 0);
        put64(pages[i] + PH_TXID, txn->txid); /* as pager_new makes them */
        pgs[i] = pages[i];
        pgvec_push(chain, first + i);
    }
    if (!r->keep)
        CHECK(freelist_collect(fl, txn, r) == BS_OK, "collect");
    CHECK(freelist_fill(fl, txn, r, P, pgs, chain, head, count, ndelta) == BS_OK, "fill: %s",
          bs_errmsg());
}

static void test_commit_record(void)
{
    static uint8_t pages[4][P];
    bs_db db;
    bs_txn txn;
    memset(&db, 0, sizeof db);
    memset(&txn, 0, sizeof txn);
    db.page_size = P;
    txn.db = &db;
    txn.txid = 60;               /* the old chain's head (page 50) was written by txid 50 */
    txn.meta.txid = 59;
    txn.meta.fl_head_txid = 50;
    bs_freelist fl = {0};
    fl_record r;
    bs_pgvec chain = {0};
    uint64_t head, count;
    size_t ndelta;

    /* a delta: the previous chain is one base page (50); this commit freed 20, took 30 */
    pgvec_push(&fl.chain, 50);
    pgvec_push(&fl.reusable, 40);
    txn.meta.fl_count = 2; /* 30 (taken now) and 40 */
    pgvec_push(&txn.freed, 20);
    pgvec_push(&txn.alloc_from_free, 30);
    record(&fl, &txn, 60, &r, &chain, pages, &head, &count, &ndelta);
    CHECK(!r.keep && !r.compact && r.npages == 1, "delta of one page");
    CHECK(head == 60 && same(&chain, (uint64_t[]){60, 50}, 2), "delta in front of the chain");
    CHECK(ndelta == 1, "ndelta %zu", ndelta);
    CHECK(count == 2, "count %llu (40 and 20)", (unsigned long long)count);
    CHECK(!(pages[0][PH_FLAGS] & FL_F_BASE) && get32(pages[0] + FL_NADD) == 1 &&
          get32(pages[0] + FL_NDEL) == 1 && get64(pages[0] + FL_ENTRIES) == 20 &&
          get64(pages[0] + FL_ENTRIES + 8) == 30 && get64(pages[0] + FL_NEXT) == 50,
          "delta record contents");
    CHECK(freelist_verify_page(pages[0], P, 60, NPAGES) == BS_OK, "%s", bs_errmsg());
    freelist_record_free(&r);
    pgvec_free(&chain);

    /* nothing changed: the chain is kept as it is */
    pgvec_free(&txn.freed);
    pgvec_free(&txn.alloc_from_free);
    record(&fl, &txn, 60, &r, &chain, pages, &head, &count, &ndelta);
    CHECK(r.keep && r.npages == 0, "keep");
    CHECK(head == 50 && same(&chain, (uint64_t[]){50}, 1) && count == 2 && ndelta == 0,
          "kept chain");
    freelist_record_free(&r);
    pgvec_free(&chain);

    /* base rewrite: the deltas (1) outweigh the base (1 page); reusable 40, pending 45,
     * freed 20, allocated-and-freed 21, old chain pages 50 and 51 */
    pgvec_free(&fl.chain);
    pgvec_push(&fl.chain, 51);
    pgvec_push(&fl.chain, 50);
    fl.ndelta = 1;
    bs_pgvec pend = {0};
    pgvec_push(&pend, 45);
    freelist_pend(&fl, 3, &pend);
    pgvec_push(&txn.freed, 20);
    pgvec_push(&txn.local_free, 21);
    record(&fl, &txn, 70, &r, &chain, pages, &head, &count, &ndelta);
    CHECK(r.compact && r.npages == 1, "compact into one page");
    CHECK(same(&chain, (uint64_t[]){70}, 1) && head == 70 && ndelta == 0, "new chain alone");
    CHECK(count == 6, "count %llu", (unsigned long long)count);
    CHECK((pages[0][PH_FLAGS] & FL_F_BASE) && get32(pages[0] + FL_NDEL) == 0 &&
          get64(pages[0] + FL_NEXT) == 0, "a base record");
    fl_replay rp;
    bs_pgvec out = {0};
    freelist_replay_init(&rp, NPAGES);
    CHECK(freelist_replay_page(&rp, 70, pages[0]) == BS_OK, "replay the base");
    CHECK(freelist_replay_finish(&rp, count, &out, NULL) == BS_OK, "%s", bs_errmsg());
    CHECK(same(&out, (uint64_t[]){20, 21, 40, 45, 50, 51}, 6),
          "base holds reusable, pending, freed, local and the old chain");
    freelist_replay_free(&rp);
    pgvec_free(&out);
    freelist_record_free(&r);
    pgvec_free(&chain);
    pgvec_free(&txn.freed);
    pgvec_free(&txn.local_free);
    freelist_destroy(&fl);
}

/* End to end: the debug check after each commit (C unit tests build with asserts on). */
static void test_commit_check(void)
{
    char path[] = "/tmp/bs_test_freelist_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    unlink(path);
    setenv("BTREE_STORE_CHECK_COMMITS", "1", 1);
    bs_options o = {0};
    o.page_size = P;
    o.sync = 1; /* durable commits: pages freed by unsynced commits wait (durability horizon) */
    o.create = 1;
    bs_db *db = NULL;
    CHECK(bs_db_open(path, &o, &db) == BS_OK, "open: %s", bs_errmsg());
    unsetenv("BTREE_STORE_CHECK_COMMITS");
    CHECK(db->check_commits, "check turned on");
    char k[32], v[200];
    memset(v, 'v', sizeof v);
    for (int round = 0; round < 3; round++) {
        bs_txn *t;
        bs_bucket *b;
        CHECK(bs_txn_begin(db, BS_TXN_WRITE, -1, &t) == BS_OK, "begin");
        bs_txn_enter(t);
        bs_bucket_open(t, NULL, 0, 0, &b);
        for (int i = 0; i < 200; i++) {
            int kl = snprintf(k, sizeof k, "k%05d", i);
            if (round == 1 && i % 2)
                CHECK(bs_del(t, b, k, (size_t)kl) == BS_OK, "del");
            else
                CHECK(bs_put(t, b, k, (size_t)kl, v, sizeof v, 0) == BS_OK, "put");
        }
        bs_txn_leave(t);
        CHECK(bs_txn_commit(t) == BS_OK, "commit %d: %s", round, bs_errmsg());
    }
    /* lose one free page from the writer's memory: the next commit must notice */
    bs_txn *t;
    bs_bucket *b;
    CHECK(bs_txn_begin(db, BS_TXN_WRITE, -1, &t) == BS_OK, "begin");
    CHECK(db->fl.reusable.n > 1, "free pages to lose (%zu)", db->fl.reusable.n);
    uint64_t lost = db->fl.reusable.v[0]; /* the highest: not reused by this small commit */
    memmove(db->fl.reusable.v, db->fl.reusable.v + 1, (db->fl.reusable.n - 1) * 8);
    db->fl.reusable.n--;
    bs_txn_enter(t);
    bs_bucket_open(t, NULL, 0, 0, &b);
    CHECK(bs_put(t, b, "x", 1, "y", 1, 0) == BS_OK, "put");
    bs_txn_leave(t);
    int rc = bs_txn_commit(t);
    CHECK(rc == BS_CORRUPT && strstr(bs_errmsg(), "state check after commit"),
          "tampering not caught: %d %s (page %llu)", rc, bs_errmsg(), (unsigned long long)lost);
    CHECK(bs_db_close(db) == BS_OK, "close");
    /* what the check saw is real: that commit persisted a free count that disagrees with
     * its chain (exactly what an inexact in-memory free set does to a file) */
    CHECK(bs_db_open(path, &o, &db) == BS_OK, "reopen: %s", bs_errmsg());
    CHECK(bs_db_check(db) == BS_CORRUPT, "check passed a damaged freelist");
    bs_db_close(db);
    unlink(path);
}

/* The free set this handle knew in test_catch_up: reusable {12, 11, 10} (descending),
 * pending {20, 21} of txid 5, chain {40} (one delta record). */
static void known_set(bs_freelist *fl)
{
    bs_pgvec g = {0};
    memset(fl, 0, sizeof *fl);
    pgvec_push(&fl->reusable, 12);
    pgvec_push(&fl->reusable, 11);
    pgvec_push(&fl->reusable, 10);
    pgvec_push(&g, 20);
    pgvec_push(&g, 21);
    CHECK(freelist_pend(fl, 5, &g) == BS_OK, "pend");
    pgvec_push(&fl->chain, 40);
    fl->ndelta = 1;
}

/* Another process wrote two delta records on top of the chain {40} this handle knew: the
 * newest mention decides; untouched pages keep their place (reusable or pending); the chain
 * grows by the new records; a wrong count or a live page listed leaves the set unchanged. */
static void test_catch_up(void)
{
    bs_freelist fl;
    bs_pgvec newchain = {0};
    known_set(&fl);
    /* older record 31: took 11 and 21, freed 60 and 61; newer record 30: took 60, freed 11 */
    static uint8_t newer[P], older[P];
    const uint64_t add_o[] = {60, 61}, del_o[] = {11, 21}, add_n[] = {11}, del_n[] = {60};
    mkrec(older, 31, 0, add_o, 2, del_o, 2, 40);
    mkrec(newer, 30, 0, add_n, 1, del_n, 1, 31);
    for (int round = 0; round < 3; round++) {
        fl_replay r;
        freelist_replay_init(&r, NPAGES);
        CHECK(freelist_replay_page(&r, 30, newer) == BS_OK && freelist_replay_page(&r, 31, older) == BS_OK,
              "replay");
        newchain.n = 0;
        pgvec_push(&newchain, 30);
        pgvec_push(&newchain, 31);
        uint64_t live[2] = {round == 1 ? 61 : 2, 3};
        /* free after: 12, 10 reusable; 20 pending (5); 11, 61 pending (txid 9) = 5 pages */
        int rc = freelist_catch_up(&fl, &r, &newchain, 9, round == 0 ? 6 : 5, live, 2);
        freelist_replay_free(&r);
        if (round < 2) {
            CHECK(rc == BS_CORRUPT, "round %d: accepted", round);
            CHECK(freelist_count(&fl) == 5 && fl.reusable.n == 3 && fl.npend == 1 &&
                  fl.chain.n == 1 && fl.ndelta == 1, "round %d: changed anyway", round);
            continue;
        }
        CHECK(rc == BS_OK, "catch up: %s", bs_errmsg());
        const uint64_t reus[] = {12, 10}, chain[] = {30, 31, 40};
        CHECK(same(&fl.reusable, reus, 2), "reusable");
        CHECK(same(&fl.chain, chain, 3) && fl.ndelta == 3, "chain");
        CHECK(fl.npend == 2 && fl.pend[0].txid == 5 && fl.pend[0].pages.n == 1 &&
              fl.pend[0].pages.v[0] == 20, "old group keeps 20 only");
        const uint64_t nw[] = {11, 61};
        CHECK(fl.pend[1].txid == 9 && same(&fl.pend[1].pages, nw, 2), "new group 11, 61");
    }
    pgvec_free(&newchain);
    freelist_destroy(&fl);

    /* the same records below a newer commit: each added page waits in a group of the commit
     * whose record added it (record 31 is commit 69, record 30 commit 70: mkrec), not all in
     * one group of the newest, so that a reader of snapshot 69 holds back 11 only */
    known_set(&fl);
    fl_replay r;
    freelist_replay_init(&r, NPAGES);
    CHECK(freelist_replay_page(&r, 30, newer) == BS_OK && freelist_replay_page(&r, 31, older) == BS_OK,
          "replay");
    newchain.n = 0;
    pgvec_push(&newchain, 30);
    pgvec_push(&newchain, 31);
    uint64_t live[2] = {2, 3};
    int rc = freelist_catch_up(&fl, &r, &newchain, 75, 5, live, 2);
    freelist_replay_free(&r);
    CHECK(rc == BS_OK, "catch up by commit: %s", bs_errmsg());
    CHECK(fl.npend == 3 && fl.pend[0].txid == 5 && fl.pend[1].txid == 69 &&
          fl.pend[1].pages.n == 1 && fl.pend[1].pages.v[0] == 61 && fl.pend[2].txid == 70 &&
          fl.pend[2].pages.n == 1 && fl.pend[2].pages.v[0] == 11, "groups by commit");
    freelist_release(&fl, 69);
    const uint64_t reus69[] = {61, 20, 12, 10};
    CHECK(same(&fl.reusable, reus69, 4) && fl.npend == 1 && fl.pend[0].txid == 70,
          "a reader of 69 holds back 70's page only");
    pgvec_free(&newchain);
    freelist_destroy(&fl);
}

/* A whole chain reloaded after one commit of another process whose base record lists every
 * free page (group 90: 30, 31, 20, 21, 50): the pages the known set held keep their place
 * there (30, 31 reusable; 20, 21 pending with txid 5: numbered below the reusable ones, so
 * that an order by page number instead of by place would swap them), the one it did not know
 * (50) stays in the base's group. */
static void test_keep_known(void)
{
    bs_freelist old = {0}, g = {0};
    bs_pgvec p5 = {0}, base = {0};
    pgvec_push(&old.reusable, 31);
    pgvec_push(&old.reusable, 30);
    pgvec_push(&p5, 20);
    pgvec_push(&p5, 21);
    CHECK(freelist_pend(&old, 5, &p5) == BS_OK, "pend");
    const uint64_t in_base[] = {50, 21, 31, 20, 30};
    for (size_t i = 0; i < 5; i++)
        pgvec_push(&base, in_base[i]);
    CHECK(freelist_pend(&g, 90, &base) == BS_OK, "pend");
    CHECK(freelist_keep_known(&g, &old, 90) == BS_OK, "keep known: %s", bs_errmsg());
    bs_pgvec reus = g.reusable;
    qsort(reus.v, reus.n, sizeof *reus.v, cmp_u64);
    const uint64_t want_reus[] = {30, 31};
    CHECK(same(&reus, want_reus, 2), "reusable: the known set's reusable pages only");
    int seen5 = 0, seen90 = 0;
    for (size_t i = 0; i < g.npend; i++) {
        bs_pgvec *v = &g.pend[i].pages;
        qsort(v->v, v->n, sizeof *v->v, cmp_u64);
        if (g.pend[i].txid == 5) {
            const uint64_t w5[] = {20, 21};
            CHECK(same(v, w5, 2), "group 5: 20, 21");
            seen5++;
        } else if (g.pend[i].txid == 90) {
            const uint64_t w90[] = {50};
            CHECK(same(v, w90, 1), "group 90: 50");
            seen90++;
        } else {
            CHECK(0, "unexpected group %llu", (unsigned long long)g.pend[i].txid);
        }
    }
    CHECK(seen5 == 1 && seen90 == 1 && freelist_count(&g) == 5, "groups 5 and 90, 5 pages");
    freelist_destroy(&g);
    freelist_destroy(&old);
}

int main(void)
{
    test_catch_up();
    test_keep_known();
    test_replay();
    test_damaged();
    test_pending();
    test_compare();
    test_commit_record();
    test_commit_check();
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("test_freelist: ok\n");
    return 0;
}
