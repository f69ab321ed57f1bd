/*
 * freelist.h - the set of free pages: which pages the writer may reuse now, which wait for
 * old readers (pending groups by the commit that freed them), how the set is persisted as a
 * chain of freelist records (format.h FL_*), and how it is read back.
 *
 * Layer: pure bookkeeping on memory and page images; does no I/O and calls only the C
 * library, bs_fail (util.c) and format.h. Called by pager.c (allocation, commit, loading),
 * db.c (release against the oldest reader, statistics, teardown) and check.c (page lists).
 * The writer owns db->fl (under db->wmu ownership); pending groups are also read by
 * statistics, under db->mu.
 *
 * The persisted form
 *  - A chain of records, newest first. The last one may be a base (flag FL_F_BASE): a
 *    complete list of free pages. Every record before it is a delta: pages added to the free
 *    set and pages taken from it by one commit. Replaying the chain from the base up (the
 *    newest mention of a page decides) gives the free set, which must hold exactly
 *    meta.fl_count pages.
 *  - A commit writes one delta record (prepended to the chain); when the deltas outweigh the
 *    base, or there are FL_MAX_DELTAS of them, it writes a new base instead, and the old
 *    chain's pages become free pages of that commit.
 *  - Invariant 3 of pager.c: the free set written by commit T holds the reusable pages, every
 *    pending group, the pages T freed (its old chain included when it compacted) and the pages
 *    T allocated and freed again.
 */
#ifndef BS_FREELIST_H
#define BS_FREELIST_H

#include "internal.h"

#define FL_MAX_DELTAS 32

/* ---- the free set in memory ---- */
void freelist_destroy(bs_freelist *fl);
/* Merge pages (any order; the array is sorted in place) into the reusable set. BS_NOMEM
 * leaves the set unchanged (never when its capacity already holds them). */
int freelist_merge(bs_pgvec *reusable, uint64_t *pages, size_t n);
/* The lowest reusable page, removed from the set; false when there is none. */
bool freelist_take(bs_freelist *fl, uint64_t *pgno);
/* n contiguous reusable pages, the lowest such run: removed from the set and written to
 * pages[0..n-1] highest first; false when there is no such run. */
bool freelist_take_run(bs_freelist *fl, uint64_t n, uint64_t *pages);
/* Pages freed by commit txid wait until no reader can see them: *pages is moved into a
 * pending group (and left empty). BS_NOMEM leaves both unchanged (never after
 * freelist_reserve_pend). */
int freelist_pend(bs_freelist *fl, uint64_t txid, bs_pgvec *pages);
/* Room for one more pending group, so that the next freelist_pend cannot fail. */
int freelist_reserve_pend(bs_freelist *fl);
/* Invariant 2: pending groups of commits <= oldest (the oldest live snapshot) become
 * reusable. */
void freelist_release(bs_freelist *fl, uint64_t oldest);
/* Pages in pending groups newer than oldest (kept for readers). */
uint64_t freelist_pinned(const bs_freelist *fl, uint64_t oldest);
/* Pages in the free set: reusable + pending. */
uint64_t freelist_count(const bs_freelist *fl);

/* The in-memory free set and chain of fl against a persisted one (persisted: the replayed
 * free set, any order, sorted in place; chain: its record pages, head first). BS_OK when
 * they are the same sets (reusable + pending = persisted, chain = fl->chain), else BS_CORRUPT
 * naming the first difference; BS_NOMEM. */
int freelist_compare(const bs_freelist *fl, bs_pgvec *persisted, const bs_pgvec *chain);

/* ---- verification and replay of the persisted chain ---- */
/* Structure of a freelist page that passed its CRC: entry counts within the page (a base has
 * no deletions), next and every entry inside [2, page_count). BS_OK or BS_CORRUPT. */
int freelist_verify_page(const uint8_t *pg, uint32_t psize, uint64_t pgno, uint64_t page_count);

typedef struct fl_replay {
    struct fl_ent *v; size_t n, cap;
    uint32_t seq;        /* records seen, from the head */
    uint64_t limit;      /* at most this many records (a loop is corrupt) */
    bool base_seen;
    size_t ndelta;       /* delta records seen */
    uint64_t *txid;      /* txid[i]: the header txid of record i + 1 (the commit that wrote it) */
    size_t captxid;
} fl_replay;
/* Start a replay of a chain that may have at most `limit` records (the meta's page count). */
void freelist_replay_init(fl_replay *r, uint64_t limit);
/* Feed the next record of the chain, from the head (pgno is its page number, pg its
 * verified image). BS_CORRUPT for a loop or a delta after the base; BS_NOMEM. */
int freelist_replay_page(fl_replay *r, uint64_t pgno, const uint8_t *pg);
/* The free set the records describe (appended to *out, ascending) and must hold `count`
 * pages; *ndelta (optional) the number of delta records. BS_CORRUPT when the counts differ. */
int freelist_replay_finish(fl_replay *r, uint64_t count, bs_pgvec *out, size_t *ndelta);
void freelist_replay_free(fl_replay *r);
/* Install a replayed free set as the reusable set of fl (pages is taken over, any order),
 * with the chain that holds it. BS_CORRUPT when a page is listed twice (nothing installed). */
int freelist_install(bs_freelist *fl, bs_pgvec *pages, bs_pgvec *chain, size_t ndelta);

/* ---- another process committed (lockfile.h) ----
 * freelist_pend_all: fl was just reloaded from the newest commit (every free page reusable)
 * and nothing is known of what changed: every page waits in one group of `txid` (the newest
 * commit: conservative). BS_OK, or BS_NOMEM leaving fl as loaded. */
int freelist_pend_all(bs_freelist *fl, uint64_t txid);
/* freelist_catch_up, the usual path, with no reload: fl is the free set this process knew at an
 * older commit; r holds the delta records other processes wrote since (fed from the head,
 * no base among them) and newchain their pages, head first. The newest mention of a page
 * decides: one taken leaves the set, one added waits in a group of the commit whose record
 * added it (the record's header txid, never above `txid` nor above a newer record's: readers
 * of snapshots from that commit on cannot see it, invariant 2); pages nobody touched keep
 * what they were. The chain becomes newchain + the old chain. BS_CORRUPT when
 * the result does not hold `count` pages or lists one of live[0..nlive) (fl unchanged: the
 * caller reloads), BS_NOMEM (unchanged). */
int freelist_catch_up(bs_freelist *fl, fl_replay *r, const bs_pgvec *newchain, uint64_t txid,
                      uint64_t count, const uint64_t *live, size_t nlive);
/* g was built by freelist_catch_up (from an empty set) from a whole chain whose base record
 * was written by commit base_txid, the only commit since the one whose free set `old` is
 * (this process's): the pages only the base mentions (g's group of base_txid) that were free
 * in old keep the place they had there (reusable, or pending in a group of old's txid), since
 * no commit between could have taken and freed them again. BS_OK, BS_NOMEM (g unchanged). */
int freelist_keep_known(bs_freelist *g, const bs_freelist *old, uint64_t base_txid);

/* ---- the record a commit writes (pager_commit step a) ----
 * 1. freelist_plan: decides keep / delta / compact and how many chain pages to allocate
 *    (compaction first adds the old chain to txn->freed);
 * 2. the pager allocates plan.npages freelist pages (which moves pages between the lists);
 * 3. freelist_collect: the sorted add and del lists from the lists as they are now;
 * 4. freelist_fill: writes the entries into the pages, links the chain, and says what the
 *    new meta's fl_head/fl_count are. */
typedef struct fl_record {
    bool keep;          /* the free set did not change: the chain stays as it is */
    bool compact;       /* write a new base instead of a delta */
    size_t npages;      /* chain pages to allocate */
    bs_pgvec add, del;  /* sorted entries (collect) */
} fl_record;
int freelist_plan(const bs_freelist *fl, bs_txn *txn, fl_record *r);
int freelist_collect(const bs_freelist *fl, const bs_txn *txn, fl_record *r);
/* pgs[i] are the images of the allocated pages, chain->v[i] their numbers (chain->n ==
 * r->npages); on success chain also holds the old chain when a delta was written, and
 * *head, *count, *ndelta describe the new chain. */
int freelist_fill(const bs_freelist *fl, const bs_txn *txn, fl_record *r, uint32_t psize,
                  uint8_t *const *pgs, bs_pgvec *chain, uint64_t *head, uint64_t *count,
                  size_t *ndelta);
void freelist_record_free(fl_record *r);

#endif
