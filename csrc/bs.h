/*
 * bs.h - the public C API of the btree_store engine (implemented in db.c, btree.c, check.c).
 *
 * Layer: the only header the CPython binding (py_*.c) includes from the engine. The engine
 * never includes Python.h; the binding never touches pages.
 *
 * Conventions
 *  - Every function returns a bs_rc (BS_OK == 0) unless stated otherwise. After a failure the
 *    calling thread can read a message naming the detail (page number, errno, limit) with
 *    bs_errmsg() and the saved errno with bs_errno(); both are thread-local and stay valid
 *    until the thread's next engine call.
 *  - Each function below lists the errors it can return. Some come from any call that reads
 *    pages and are listed as "read errors": BS_CORRUPT (a page failed verification; the
 *    message names it), BS_IOERR (bs_errno() holds the errno), BS_NOMEM, and BS_WOULDBLOCK
 *    (no-I/O mode only: the call needs the disk and changed nothing). Every call that takes a
 *    bs_db or bs_txn also returns BS_FORKED when used in a child after fork() (open again in
 *    the child). Calls inside a write transaction return BS_BADTXN once an earlier change
 *    failed half way: only abort (or rolling back to a savepoint taken before the failure)
 *    is left.
 *  - Ownership: bs_db_open gives a bs_db the caller frees with bs_db_close. bs_txn_begin
 *    gives a bs_txn that bs_txn_commit or bs_txn_abort frees (commit frees it even when it
 *    fails). Buckets handles belong to their transaction. Cursors are freed by
 *    bs_cursor_close, which never touches the transaction (it may already be gone), but a
 *    cursor must not be used after its transaction ended.
 *  - Threads: a bs_db may be used from many threads. A bs_txn (and its cursors) is used by one
 *    thread at a time: every data call sits between bs_txn_enter and bs_txn_leave, and
 *    bs_txn_enter returns BS_INUSE while another thread is inside the same transaction.
 *    Pointers returned by bs_get / bs_cursor_current point into pages and stay valid only
 *    until bs_txn_leave (or the next modifying call on a write transaction). Pages read in
 *    place from the file's mapping can turn to zeros under them (another process truncated
 *    the file: SIGBUS, contained), so a caller that copied bytes from them calls
 *    bs_txn_copied before it uses the copy.
 *  - No-I/O mode: bs_txn_set_noio(txn, 1) makes data calls return BS_WOULDBLOCK, before they
 *    change anything, instead of touching the disk. The binding tries every call that way
 *    with the GIL held (a page-cache hit costs no system call and no GIL switch), and on
 *    BS_WOULDBLOCK repeats it with no-I/O off and the GIL released.
 */
#ifndef BS_H
#define BS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bs_rc {
    BS_OK = 0,
    BS_NOTFOUND,   /* key / bucket absent, cursor past the end */
    BS_EXISTS,     /* put with BS_NOOVERWRITE on an existing key; bucket exists (create only) */
    BS_CORRUPT,    /* a page or meta failed verification; message names the page */
    BS_NOTDB,      /* the file is not a btree_store database */
    BS_VERSION,    /* the file's format is newer, or older (convert it with the upgrade command) */
    BS_IOERR,      /* a system call failed; bs_errno() has errno */
    BS_FULL,       /* ENOSPC / EDQUOT / EFBIG while writing; bs_errno() has errno */
    BS_NOMEM,
    BS_READONLY,   /* write attempted on a read-only database or transaction */
    BS_LOCKED,     /* file locked by another process/handle, or writer wait timed out */
    BS_BADTXN,     /* transaction already failed (must be aborted) or is finished */
    BS_MISUSE,     /* API misuse: bad argument, nested write txn in one thread, ... */
    BS_PANIC,      /* an earlier commit failed mid-write: reopen the database */
    BS_TOOBIG,     /* key or value over the limit */
    BS_INUSE,      /* transaction in use by another thread at the same time */
    BS_FORKED,     /* handle inherited across fork(): open the database again in the child */
    BS_WOULDBLOCK, /* no-I/O mode: the call needs the disk; nothing was changed */
    BS_NOBUCKET,   /* bucket does not exist (or was dropped in this transaction) */
    BS_RC_COUNT
} bs_rc;

const char *bs_strerror(int rc);  /* static text for a code */
const char *bs_errmsg(void);      /* thread-local detail of this thread's last failure */
int bs_errno(void);               /* thread-local errno saved with BS_IOERR / BS_FULL */

typedef struct bs_db bs_db;
typedef struct bs_txn bs_txn;
typedef struct bs_bucket bs_bucket;
typedef struct bs_cursor bs_cursor;
struct bs_io_methods; /* io.h */

typedef struct bs_options {
    uint32_t page_size;   /* for a new file; 0 = 4096. Existing files keep their own. */
    uint64_t cache_size;  /* bytes of shared page cache (a hard cap on clean pages); 0 = a
                           * quarter of RAM (or of the cgroup limit), at least 64 MiB; frames
                           * are allocated on first use */
    int readonly;         /* open read-only with a shared lock */
    int create;           /* create the file when missing */
    int sync;             /* fsync at commit (0: survives a process crash, not power loss) */
    const struct bs_io_methods *io; /* NULL = the POSIX layer */
    void *io_arg;         /* passed to io->open */
    int check_commits;    /* after every commit, run the integrity checker and compare
                           * the writer's free set with the persisted one: a difference fails
                           * bs_txn_commit with BS_CORRUPT (the commit itself stands). Costs a
                           * full check per commit: for tests (pytest --btree-strict). */
    int map;              /* POSIX files: read committed pages in place from a read-only
                           * shared mapping of the file (1), or through the page cache's own
                           * copies (-1); 0 = mapped unless the environment variable
                           * BTREE_STORE_MAP is "0" */
} bs_options;

/* Open or create a database.
 * Errors: BS_NOTDB (not a btree_store file, or empty and readonly), BS_VERSION (a newer
 * format), BS_CORRUPT (no valid meta page; a damaged freelist instead opens the file for
 * reading and refuses writes), BS_LOCKED (another handle or process holds the file lock),
 * BS_IOERR (missing file without create, permissions, ...; bs_errno() has the errno),
 * BS_FULL (no space to create it), BS_MISUSE (bad page_size), BS_NOMEM. */
int bs_db_open(const char *path, const bs_options *opt, bs_db **out);
/* Close: all transactions must have ended (else BS_MISUSE and nothing happens).
 * In a child after fork() it only closes the child's descriptor (BS_OK).
 * Errors: BS_MISUSE, BS_IOERR (closing the descriptor failed; the handle is freed anyway). */
int bs_db_close(bs_db *db);
uint32_t bs_db_page_size(const bs_db *db);   /* no errors */
size_t bs_db_max_key(const bs_db *db);       /* no errors: the longest key in bytes */

typedef struct bs_stat {
    uint32_t page_size;
    uint64_t page_count;     /* high-water mark of the newest commit */
    uint64_t free_pages;     /* pages on the freelist (reusable or pinned by readers) */
    uint32_t depth;          /* depth of the default bucket's tree */
    uint64_t entries;        /* entries in the default bucket */
    uint64_t txid;           /* id of the newest commit */
    uint64_t file_size;      /* bytes */
    uint64_t buckets;        /* named buckets */
    uint64_t readers;        /* live read transactions (of other handles and processes: one
                              * per handle that has any) */
    uint64_t oldest_reader;  /* txid of the oldest live reader's snapshot (0 if none) */
    uint64_t pinned_pages;   /* freed pages not yet reusable because of live readers */
    uint64_t cache_pages;    /* pages in the shared cache */
    uint64_t cache_hits, cache_misses;
    uint64_t durable_txid;   /* newest commit known to be on stable storage */
    uint64_t cache_retired;  /* cache frames evicted, not yet freed (a transaction's epoch
                              * may still hold them) */
} bs_stat;
/* Errors: BS_FORKED, BS_IOERR (reading the file size). */
int bs_db_stat(bs_db *db, bs_stat *st);

/* Integrity check of the newest commit: every page below page_count reachable exactly once
 * or free exactly once, checksums, key order, node bounds, counts. BS_OK or BS_CORRUPT
 * with bs_errmsg() describing the first problem. Runs in its own read transaction.
 * Errors: BS_CORRUPT, BS_IOERR, BS_NOMEM, BS_FORKED. */
int bs_db_check(bs_db *db);
/* The same check, reporting every problem (bbolt's Tx.Check streams them): fn (may be NULL)
 * gets each one, a message naming the page and the pointer, at most max_problems of them
 * (0 = 1), from the calling thread, with no lock held; it returns nonzero to stop the check
 * (BS_NOMEM). BS_CORRUPT when there was any, bs_errmsg() summarising them (the first few and
 * the count). A damaged node is reported and its subtree skipped: the pages below it are
 * then reported as leaked too. Errors: BS_CORRUPT, BS_IOERR, BS_NOMEM, BS_FORKED. */
int bs_db_check_report(bs_db *db, size_t max_problems,
                       int (*fn)(void *ctx, const char *problem), void *ctx);
/* Rebuild the freelist (the answer to "the freelist is damaged"): every tree of the newest
 * commit is walked, and every page below page_count that none of them reaches becomes free;
 * that free set is written as a new, durable commit, and a handle whose writes were refused
 * because of a damaged freelist (BS_CORRUPT from bs_txn_begin) can write again. On a file
 * whose freelist is already exact it changes nothing (*rebuilt = 0; else 1; may be NULL).
 * Only the freelist is rebuilt: damage in a tree itself (a node, a key order, a count, an
 * overflow run) is refused with BS_CORRUPT and nothing written (read what is readable and
 * copy it to a new file instead). Needs that no other transaction of this handle is open
 * (BS_MISUSE) and no write transaction is active (BS_LOCKED; it does not wait).
 * Errors: BS_READONLY (read-only handle), BS_MISUSE, BS_LOCKED, BS_CORRUPT, BS_PANIC,
 * BS_IOERR / BS_FULL (writing or syncing: as for a commit), BS_NOMEM, BS_FORKED. */
int bs_db_repair(bs_db *db, int *rebuilt);

/* ---- backup and compaction (copy.c) ---- */
#define BS_COPY_COMPACT 1u   /* write only live data, every tree freshly packed */
#define BS_COPY_OVERWRITE 2u /* replace an existing dest (else BS_IOERR with errno EEXIST) */
/* Write a consistent copy of the newest commit to a new file dest while other threads go on
 * reading and committing (a read transaction pins the snapshot for the duration). Without
 * BS_COPY_COMPACT the snapshot's pages are copied as they are (free pages as zeros) under
 * meta pages naming that snapshot; with it, each bucket becomes a fresh tree built in key
 * order with full leaves, overflow values copied, no free pages. The source is read through
 * its own I/O table, dest is always written with the POSIX one. dest is written under a
 * temporary name in its directory, fsynced and renamed into place: on any failure nothing is
 * left at dest or under the temporary name. Errors: BS_IOERR/BS_FULL with errno (ENOENT for a
 * missing directory, EEXIST for an existing dest, EISDIR), BS_MISUSE when dest is the
 * database's own file, BS_CORRUPT for damage met on the way. Long: call without locks. */
int bs_db_copy(bs_db *db, const char *dest, unsigned flags);
/* Compact in place: a compact copy of the newest commit is written next to the file (under
 * the writer lock), opened, renamed over the file, and then the old handle is closed: on
 * BS_OK *dbp is a new handle on the compacted file, with the same options. The file keeps
 * only its live pages (the free tail goes back to the OS). Needs that no transaction of this
 * handle is open (BS_MISUSE), a writable database (BS_READONLY) and a file-based I/O table
 * (BS_MISUSE otherwise). On failure *dbp is unchanged and usable, except in the one case where
 * the new file was in place but could not be reopened: then *dbp is NULL (closed). */
int bs_db_compact(bs_db **dbp);

/* Make every commit made so far durable (one fsync of the file), whatever sync setting
 * they were made with. Pages those commits freed become reusable for later writers.
 * Returns BS_OK; BS_IOERR (+errno) or BS_FULL when the fsync fails, which also puts the
 * database in the panic state (an fsync error cannot be retried); BS_READONLY is never
 * returned: on a read-only handle it syncs nothing and returns BS_OK; BS_FORKED in a child
 * after fork(). */
int bs_db_sync(bs_db *db);

/* ---- transactions ---- */
#define BS_TXN_WRITE 1u
#define BS_TXN_SYNC 2u    /* write txn: commit durably, whatever the database's sync setting */
#define BS_TXN_NOSYNC 4u  /* write txn: commit without fsync (durable at the next sync point) */
/* Begin. Write: waits for the writer lock up to timeout_ms (<0: forever; 0: try once).
 * Errors: BS_LOCKED (the wait expired), BS_MISUSE (this thread already has an open write
 * transaction), BS_PANIC (an earlier commit failed while writing: reopen), BS_READONLY (a
 * write transaction on a read-only database), BS_CORRUPT (write: the freelist is damaged,
 * the database can only be read), BS_NOMEM, BS_FORKED. */
int bs_txn_begin(bs_db *db, unsigned flags, long timeout_ms, bs_txn **out);
/* Commit frees txn, also on failure. A read transaction, or one that changed nothing, just
 * ends. Errors: BS_INUSE (txn untouched) while another thread is inside it; BS_BADTXN (a
 * change failed earlier: rolled back); BS_IOERR or BS_FULL while writing or syncing: the
 * previous commit stays the durable one, and the database panics (later write transactions
 * get BS_PANIC until it is reopened) unless the error was BS_FULL on the data pages; read
 * errors (deferred rebalancing reads pages); BS_NOMEM (nothing durable changes); BS_FORKED.
 * With bs_options.check_commits (or, in debug builds, BTREE_STORE_CHECK_COMMITS=1 at open):
 * BS_CORRUPT when the state after the commit breaks an invariant (the commit is durable all
 * the same); a check that cannot get memory is skipped and the commit reports BS_OK.
 * Abort frees txn (no errors); it must not be called while another thread is inside the
 * transaction (the binding serializes this). */
int bs_txn_commit(bs_txn *txn);
void bs_txn_abort(bs_txn *txn);
int bs_txn_is_write(const bs_txn *txn); /* no errors: 1 or 0 */
uint64_t bs_txn_id(const bs_txn *txn); /* no errors: snapshot txid (read) or the txid being
                                        * built (write) */

int bs_txn_enter(bs_txn *txn);    /* Errors: BS_INUSE (another thread is inside), BS_FORKED */
void bs_txn_leave(bs_txn *txn);   /* no errors */
void bs_txn_set_noio(bs_txn *txn, int on); /* no errors */

/* Savepoints (write transactions): a stack. rollback undoes everything since the newest
 * savepoint and removes it (a failure inside the savepoint is undone with it); release keeps
 * the changes and removes it. On an error nothing changes (the stack included).
 * Errors: savepoint: BS_READONLY (read transaction), BS_BADTXN, BS_NOMEM; rollback and
 * release: BS_MISUSE (no savepoint, or a read transaction), BS_NOMEM. */
int bs_txn_savepoint(bs_txn *txn);
int bs_txn_rollback(bs_txn *txn);
int bs_txn_release(bs_txn *txn);

/* ---- buckets ---- */
/* name == NULL: the default bucket (always exists, no errors). create: make it if missing
 * (write txn). The handle lives as long as the transaction. Names are 1..255 bytes.
 * Errors: BS_NOBUCKET (missing and !create), BS_MISUSE (bad name length), BS_READONLY
 * (create on a read transaction), BS_BADTXN, read errors, BS_FULL (creating it grew the
 * file past its maximum). */
int bs_bucket_open(bs_txn *txn, const void *name, size_t nlen, int create, bs_bucket **out);
/* Drop a named bucket and free all its pages (overflow included).
 * Errors: BS_NOBUCKET (missing), BS_MISUSE (bad name), BS_READONLY, BS_BADTXN, read errors
 * (BS_WOULDBLOCK always in no-I/O mode: dropping walks the tree). */
int bs_bucket_drop(bs_txn *txn, const void *name, size_t nlen);
/* Calls fn for each named bucket in name order; stops early if fn returns nonzero.
 * Errors: read errors. */
int bs_bucket_list(bs_txn *txn, int (*fn)(void *ctx, const void *name, size_t nlen), void *ctx);
/* Entries in the bucket (O(1)). Errors: BS_NOBUCKET (dropped), BS_BADTXN, read errors (a
 * handle opened after a rolled-back savepoint is reloaded from the catalog). */
int bs_bucket_count(bs_txn *txn, bs_bucket *b, uint64_t *out);
/* Statistics of one bucket's tree in this transaction's view (stat.c walks every node; the
 * pages of overflow values are counted from their sizes, not read). Errors: BS_NOBUCKET
 * (dropped), BS_BADTXN, BS_CORRUPT, read errors, BS_WOULDBLOCK (no-I/O mode: repeat). */
typedef struct bs_bucket_stats {
    uint64_t entries;
    uint32_t depth;          /* levels of the tree (0: empty) */
    uint64_t branch_pages, leaf_pages, overflow_pages;
    uint64_t key_bytes, value_bytes; /* sums of the key and value lengths */
} bs_bucket_stats;
int bs_bucket_stat(bs_txn *txn, bs_bucket *b, bs_bucket_stats *out);

/* ---- data ---- */
typedef struct bs_val {
    const void *data;  /* NULL when the value lives in an overflow run: use bs_read_value */
    size_t len;
    uint64_t ovpgno;   /* first page of the overflow run, or 0 */
    uint64_t ovtxid;   /* txid the run's header must carry (engine-internal) */
} bs_val;

/* Errors: BS_NOTFOUND (no such key, also for a key longer than any stored), BS_NOBUCKET
 * (the bucket was dropped), BS_BADTXN, read errors. */
int bs_get(bs_txn *txn, bs_bucket *b, const void *key, size_t klen, bs_val *val);
/* Copy a value (inline or overflow, checksum verified) into dst[0..val->len).
 * Errors: read errors (an overflow run: BS_CORRUPT on a checksum mismatch). */
int bs_read_value(bs_txn *txn, const bs_val *val, void *dst);
/* After copying bytes out of what bs_get / bs_cursor_current returned (before leave): BS_IOERR
 * when a page read in place from the mapping turned to zeros since those pointers were
 * looked up (a truncation by another process between the call's last page access and the
 * copy), so the copy is thrown away instead of returned; else BS_OK. One load, no system
 * call. bs_read_value does it itself. */
int bs_txn_copied(bs_txn *txn);

/* Put (flags BS_NOOVERWRITE: keep an existing value) and delete.
 * Errors: BS_EXISTS (put with BS_NOOVERWRITE and the key is there), BS_NOTFOUND (delete of a
 * missing key), BS_TOOBIG (key over bs_db_max_key, value over 2^32-1 bytes), BS_READONLY
 * (read transaction), BS_NOBUCKET (dropped), BS_BADTXN, BS_FULL (disk full while spilling or
 * writing an overflow run, or the file reached its maximum size), read errors. These leave
 * the transaction usable: BS_EXISTS, BS_NOTFOUND, BS_TOOBIG, BS_WOULDBLOCK; any other error
 * marks it failed (BS_BADTXN from then on). */
#define BS_NOOVERWRITE 1u
int bs_put(bs_txn *txn, bs_bucket *b, const void *key, size_t klen,
           const void *val, size_t vlen, unsigned flags);
int bs_del(bs_txn *txn, bs_bucket *b, const void *key, size_t klen);

/* Prefetch hints for batch calls (the binding's put_many and delete_many): a random key at
 * 1M records waits for memory (the dirty table's slot, the leaf's header, its cells), and a
 * batch knows its next keys. Before the operation on item i, call bs_hint_step with the key of
 * item i + BS_HINT_AHEAD (NULL past the end); start with bs_hint_start and BS_HINT_AHEAD
 * steps for the first keys. A step reads only pages already verified or written by this
 * transaction (stopping at any other), requests cache lines, changes no state and has no
 * result: the operations are exactly what they would be without it. No errors; a step on a
 * dropped bucket or a failed transaction does nothing. */
#define BS_HINT_AHEAD 3
typedef struct bs_hint {
    uint64_t pgno[2], txid[2]; /* the leaves of the last two keys (0: none), newest first */
} bs_hint;
void bs_hint_start(bs_hint *h);
void bs_hint_step(bs_txn *txn, bs_bucket *b, bs_hint *h, const void *key, size_t klen);

/* ---- cursors ---- */
enum { BS_SEEK_GE = 1, BS_SEEK_LE, BS_SEEK_FIRST, BS_SEEK_LAST };
/* Every cursor call also returns BS_NOBUCKET (its bucket was dropped) and BS_BADTXN. */
int bs_cursor_open(bs_txn *txn, bs_bucket *b, bs_cursor **out); /* Errors: BS_NOMEM */
void bs_cursor_close(bs_cursor *cur);                           /* no errors */
/* Position: BS_SEEK_GE (first key >= key), BS_SEEK_LE (last key <= key), FIRST, LAST.
 * Errors: BS_NOTFOUND (no such key; cursor unpositioned), BS_MISUSE (bad op), read errors. */
int bs_cursor_seek(bs_cursor *cur, int op, const void *key, size_t klen);
/* Errors: BS_NOTFOUND past the end (or unpositioned), read errors. */
int bs_cursor_next(bs_cursor *cur);
int bs_cursor_prev(bs_cursor *cur);
/* Current item; key->data points into a page or the cursor (valid until leave/next step).
 * Errors: BS_NOTFOUND (unpositioned), read errors. */
int bs_cursor_current(bs_cursor *cur, bs_val *key, bs_val *val);

#ifdef __cplusplus
}
#endif
#endif
