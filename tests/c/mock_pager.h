/*
 * mock_pager.h - test-only controls of the in-memory pager (mock_pager.c).
 *
 * Layer: tests only; declares the mock's own helpers (the pager_* functions themselves are
 * declared in csrc/internal.h).
 */
#ifndef BS_MOCK_PAGER_H
#define BS_MOCK_PAGER_H

#include "internal.h"

/* Reset the mock to an empty file of page size P; fill *db and *txn (a write txn). */
void mock_init(bs_db *db, bs_txn *txn, uint32_t P);
void mock_destroy(void);
/* Commit: dirty pages become read-only, pages freed by the txn become free. Updates
 * txn->meta.page_count / fl_count (the caller sets meta.main / meta.catalog). */
void mock_commit(bs_txn *txn);
/* Abort: drop the dirty pages, keep the committed ones (the caller restores its trees). */
void mock_abort(bs_txn *txn);
/* Forget that committed pages are "cached" (each with probability pct/100), so the next
 * pager_get of them needs "I/O": BS_WOULDBLOCK when txn->noio. */
void mock_evict(unsigned pct, uint64_t *rng);
/* Simulate a savepoint: pages dirtied so far stay readable but are no longer owned
 * (pager_write copies them, pager_free retires them at commit). */
void mock_savepoint(void);
/* A fingerprint of the page states (changes when anything is allocated/freed/copied). */
uint64_t mock_fingerprint(void);
/* Raw bytes of a page (corruption tests). */
uint8_t *mock_page(uint64_t pgno);
uint64_t mock_page_count(void);
/* The page is in use (committed or dirty), not free. */
bool mock_page_live(uint64_t pgno);
uint64_t mock_dirty_pages(void);
#endif
