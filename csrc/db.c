/*
 * db.c - the engine's public API (bs.h): opening and locking a file, transactions with
 * snapshot isolation, the reader registry, buckets and the catalog, savepoints, commit
 * orchestration, stat and check.
 *
 * Layer: calls btree.c, check.c, pager.c, and the cache (cache.h), the freelist (freelist.h)
 * and the meta pages (meta.h) through their interfaces only (and io through db->io for
 * open/lock/close).
 *
 * Concurrency model
 *  - db->mu guards db->meta (the newest commit), the reader registry and db->ntxn; it is held
 *    only for a few instructions (never across I/O), so readers never wait for a commit's
 *    fsync.
 *  - One writer at a time: db->wmu/wcond hold `writer_active`; the freelist (db->fl) belongs
 *    to the writer. A thread that already owns the write transaction gets BS_MISUSE instead
 *    of deadlocking on itself.
 *  - A read transaction copies the meta at begin and never changes; page pointers it gets
 *    from the shared cache stay valid between bs_txn_enter and bs_txn_leave (epoch slots in
 *    cache.c). bs_txn_enter fails with BS_INUSE when two threads use one transaction at once.
 *  - fork(): pthread_atfork bumps bs_fork_generation in the child; every entry point compares
 *    it with the generation recorded at open and answers BS_FORKED. The child never touches
 *    the parent's lock (closing a forked handle only closes the descriptor).
 *
 * Catalog: a B+tree (meta.catalog) mapping bucket name (1..255 bytes) -> 32-byte bucket record
 * (format.h). The default bucket's record lives in the meta page itself. Bucket records are
 * written back to the catalog at commit for every bucket whose tree changed.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "freelist.h"
#include "internal.h"
#include "lockfile.h"
#include "meta.h"

_Atomic uint64_t bs_fork_generation = 1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void local_writers_forget(void);
static void on_fork_child(void)
{
    atomic_fetch_add(&bs_fork_generation, 1);
    local_writers_forget(); /* the parent's writers are not ours */
}
static void register_atfork(void) { pthread_atfork(NULL, NULL, on_fork_child); }

/* A number unique to the calling thread for the life of the process (pthread_t values are
 * reused once a thread exits, which would make a new thread look like a dead writer). */
static _Atomic uint64_t thread_counter;
static _Thread_local uint64_t thread_token;
static uint64_t bs_thread_token(void)
{
    if (!thread_token)
        thread_token = atomic_fetch_add(&thread_counter, 1) + 1;
    return thread_token;
}

static inline bool forked(const bs_db *db)
{
    return atomic_load_explicit(&bs_fork_generation, memory_order_relaxed) != db->fork_gen;
}

static int fail_forked(void) { return bs_fail(BS_FORKED, "open the database again in the child process"); }

uint32_t bs_db_page_size(const bs_db *db) { return db->page_size; }
size_t bs_db_max_key(const bs_db *db) { return fmt_max_key(db->page_size); }

/* ------------------------------------------------------------------ open / close */

/* The default cache_size: a quarter of the memory this process may use (physical RAM, or the
 * cgroup v2 limit when that is lower), at least 64 MiB. The cache allocates frames on first
 * use and never holds more than one per page of the file, so a file smaller than this costs
 * its own size, and the default grows with the database up to the quarter of RAM. */
static uint64_t default_cache_size;
static pthread_once_t default_cache_once = PTHREAD_ONCE_INIT;

static void db_compute_default_cache_size(void)
{
    uint64_t mem = 0;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0)
        mem = (uint64_t)pages * (uint64_t)psz;
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");
    if (f) {
        unsigned long long lim;
        if (fscanf(f, "%llu", &lim) == 1 && lim > 0 && (!mem || lim < mem))
            mem = lim;
        fclose(f);
    }
    uint64_t c = mem / 4;
    default_cache_size = c < (64ull << 20) ? 64ull << 20 : c;
}

/* computed once per process: the memory and cgroup limits are read at the first open only
 * (a test suite opens thousands of databases) */
static uint64_t db_default_cache_size(void)
{
    pthread_once(&default_cache_once, db_compute_default_cache_size);
    return default_cache_size;
}

/* No writer can exist for a file on a read-only file system, or one without any write
 * permission bit (short of root changing it). */
static bool db_no_writer_possible(const char *path)
{
    struct statvfs vfs;
    struct stat st;
    if (statvfs(path, &vfs) == 0 && (vfs.f_flag & ST_RDONLY))
        return true;
    return stat(path, &st) == 0 && !(st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH));
}

/* Open the side file (lockfile.h). *excl: we are alone and must (re)build it. A readonly
 * open where it cannot be created goes on without it only if no writer can exist. */
static int db_open_lockfile(bs_db *db, const char *path, int readonly, int *excl)
{
    int err = lockfile_open(path, &db->lf, excl);
    if (!err)
        return BS_OK;
    db->lf = NULL;
    *excl = 1;
    if (err == ENOMEM)
        return bs_fail(BS_NOMEM, "out of memory");
    if (err == EBUSY)
        return bs_fail(BS_LOCKED, "%s is already open in this process: without open file "
                       "description locks (macOS, kernels without them, or BTREE_STORE_POSIX_LOCKS "
                       "set) the locks belong to the process, so it may have one handle of a "
                       "file", path);
    if (readonly && (err == EACCES || err == EROFS || err == EPERM) &&
        db_no_writer_possible(path))
        return BS_OK;
    return bs_fail_io(err, "opening the lock file %s-lock (every process that opens the "
                      "database needs it%s)", path,
                      readonly ? "; read-only opens go without it only when the database "
                                 "file cannot be written by anyone" : "");
}

static void db_free(bs_db *db)
{
    if (!db)
        return;
    lockfile_close(db->lf, 0);
    map_close(db->map);
    cache_close(db->cache);
    freelist_destroy(&db->fl);
    free(db->readers);
    free(db->fl_broken);
    free(db->path);
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->wmu);
    pthread_cond_destroy(&db->wcond);
    free(db);
}

int bs_db_open(const char *path, const bs_options *opt, bs_db **out)
{
    bs_options o = {0};
    int rc, err, created = 0, remove_on_fail = 0;
    if (opt)
        o = *opt;
    *out = NULL;
    bs_clear_error();
    pthread_once(&atfork_once, register_atfork);
    if (!o.page_size)
        o.page_size = BS_PAGE_DEFAULT;
    if (o.page_size < BS_PAGE_MIN || o.page_size > BS_PAGE_MAX || (o.page_size & (o.page_size - 1)))
        return bs_fail(BS_MISUSE, "page_size must be a power of two from 1024 to 65536, not %u",
                       o.page_size);
    if (!o.cache_size)
        o.cache_size = db_default_cache_size();
    if (!o.io)
        o.io = &bs_io_posix;

    bs_db *db = calloc(1, sizeof *db);
    if (!db)
        return bs_fail(BS_NOMEM, "out of memory");
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->wmu, NULL);
    pthread_cond_init(&db->wcond, NULL);
    db->io = o.io;
    db->io_arg = o.io_arg;
    db->readonly = o.readonly;
    db->sync = o.sync;
    db->fork_gen = atomic_load(&bs_fork_generation);
    db->path = strdup(path);
    if (!db->path) {
        rc = bs_fail(BS_NOMEM, "out of memory");
        goto fail;
    }
    err = db->io->open(o.io_arg, path, o.readonly, o.create && !o.readonly, &db->file, &created);
    if (err) {
        rc = bs_fail_io(err, "opening %s", path);
        db->file = NULL;
        goto fail;
    }
    /* Many processes (docs/ARCHITECTURE.md): files get the side file; everyone takes a
     * shared flock on the data file, which only refuses (and is refused by) an older
     * btree_store that locks it exclusively, except where flock and fcntl locks conflict
     * (macOS: lockfile_no_data_flock; the join lock does that job there). Memory databases
     * keep the exclusive lock. */
    int use_lf = o.io == &bs_io_posix || o.io == &bs_io_fault, excl = 1;
    err = use_lf && lockfile_no_data_flock(path)
              ? 0
              : db->io->lock(db->file, use_lf || o.readonly ? BS_LOCK_SH : BS_LOCK_EX);
    if (err) {
        if (err == EWOULDBLOCK || err == EAGAIN)
            rc = bs_fail(BS_LOCKED, "%s is locked by another process or handle%s", path,
                         use_lf ? " (an older btree_store version has it open)"
                                : o.readonly ? " (a writer has it open)" : "");
        else
            rc = bs_fail_io(err, "locking %s", path);
        goto fail;
    }
    if (use_lf && (rc = db_open_lockfile(db, path, o.readonly, &excl)) != BS_OK) {
        /* (EMFILE, ENOSPC, ...) a file this call created goes again, if nobody else opened
         * it meanwhile (an exclusive lock is then ours) and it is still empty */
        uint64_t sz = 1;
        remove_on_fail = created && db->io->lock(db->file, BS_LOCK_EX) == 0 &&
                         db->io->size(db->file, &sz) == 0 && sz == 0;
        goto fail;
    }
    /* a file this call created (and now holds locked) goes again if the creation fails */
    remove_on_fail = created && excl;
    uint64_t fsize = 0;
    if ((err = db->io->size(db->file, &fsize)) != 0) {
        rc = bs_fail_io(err, "reading the size of %s", path);
        goto fail;
    }
    bs_meta m;
    int fresh = 0;
    if (fsize == 0) {
        if (o.readonly || !excl) {
            rc = bs_fail(o.readonly ? BS_NOTDB : BS_LOCKED, "%s is empty, %s", path,
                         o.readonly ? "not a btree_store database"
                                    : "and another process has it open (creating it?)");
            goto fail;
        }
        fresh = 1;
    } else if ((rc = meta_read(db, &m)) != BS_OK) {
        /* Others have the file open: a live writer may have overwritten both meta slots, or
         * grown the file past the size read first, while we read them (a slow reader, a fast
         * writer): read them again a few times before calling the file corrupt. */
        for (int tries = 0; rc == BS_CORRUPT && !excl && tries < 50; tries++) {
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
            bs_clear_error();
            rc = meta_read(db, &m);
        }
    }
    if (!fresh && rc != BS_OK) {
        /* An interrupted creation never held a commit: starting it again loses nothing. */
        if (rc == BS_IOERR || rc == BS_FULL || rc == BS_VERSION || o.readonly || !excl ||
            !meta_interrupted_creation(db, fsize, o.page_size))
            goto fail;
        fresh = 1;
    }
    if (fresh) {
        db->page_size = o.page_size;
        if ((rc = meta_create(db)) != BS_OK)
            goto fail;
        if (created && db->sync && (err = db->io->sync_dir(o.io_arg, path)) != 0) {
            rc = bs_fail_io(err, "syncing the directory of %s", path);
            goto fail;
        }
        m = db->meta;
    }
    db->meta = m;
    atomic_store(&db->dir_unsynced, !o.readonly && !(fresh && created && db->sync));
    db->fl_txid = m.txid;
    /* The durability horizon: what opening found is made durable now (it may be a commit a
     * crashed process wrote and never synced, or one made with sync=False), so that the
     * pages it freed may be reused and its meta slot stays untouched until the next durable
     * commit. A fresh file's creation was synced (or is txid 0 either way). */
    atomic_store(&db->durable_txid, m.txid);
    db->durable_slot = m.slot;
    if (db->lf) {
        struct stat st;
        if (stat(path, &st) != 0) {
            rc = bs_fail_io(errno, "reading the status of %s", path);
            goto fail;
        }
        db->dev = (uint64_t)st.st_dev;
        db->ino = (uint64_t)st.st_ino;
    }
    if (db->lf && !excl) {
        /* others have it open: the horizon they share (a writer refreshes it at begin) */
        int rebuild = 0;
        if ((rc = lockfile_check(db->lf, db->dev, db->ino, &rebuild)) != BS_OK)
            goto fail;
        excl = rebuild;
        if (!rebuild) {
            atomic_store(&db->durable_txid, atomic_load(&db->lf->hdr->durable_txid));
            db->durable_slot = atomic_load(&db->lf->hdr->durable_slot);
        }
    }
    if (db->lf && (rc = lockfile_join(db->lf, path, db->dev, db->ino, excl)) != BS_OK)
        goto fail;
    if (excl && !fresh && (err = db->io->sync(db->file)) != 0) {
        if (!o.readonly) {
            rc = bs_fail_io(err, "syncing %s", path);
            goto fail;
        }
        db->durable_slot = 2; /* unknown: the first writer syncs (lockfile.h) */
    } else if (excl && !fresh && !o.readonly) {
        /* what opening found is now called durable: its directory entry must be too (a
         * crashed process may have created the file with sync=False and never synced it) */
        if ((err = db->io->sync_dir(o.io_arg, path)) != 0) {
            rc = bs_fail_io(err, "syncing the directory of %s", path);
            goto fail;
        }
        atomic_store(&db->dir_unsynced, 0);
    }
    if (db->lf && excl) {
        if ((rc = lockfile_init(db->lf, db->dev, db->ino, m.txid, m.slot,
                                m.txid, db->durable_slot)) != BS_OK)
            goto fail;
        db->durable_slot = m.slot; /* a readonly handle never writes; the writer re-reads */
    }
    if (db->lf && (rc = lockfile_slot_acquire(db->lf)) != BS_OK)
        goto fail;
    for (db->page_shift = 0; (1u << db->page_shift) < db->page_size; db->page_shift++)
        ;
    if ((rc = cache_open(db->page_size, o.cache_size, &db->cache)) != BS_OK)
        goto fail;
    db->spill_limit = cache_capacity(db->cache) > 1024 ? cache_capacity(db->cache) : 1024;
    /* dirty pages beyond 64 MiB displace clean ones: a big write transaction stays within
     * cache_size + 64 MiB of page frames */
    cache_set_dirty_room(db->cache, (uint32_t)((64u << 20) / db->page_size));
    /* a bulk load spills its leaves past the dirty room (pager_spill) */
    db->spill_early = (64u << 20) / db->page_size < db->spill_limit ? (64u << 20) / db->page_size
                                                                     : 0;
    if (o.map == 0) {
        const char *mv = getenv("BTREE_STORE_MAP");
        o.map = mv && strcmp(mv, "0") == 0 ? -1 : 1;
    }
    /* pages read in place (map.h); when the map cannot be made, through frames as before */
    if (o.map > 0 && o.io == &bs_io_posix)
        db->map = map_open(bs_io_posix_fd(db->file), db->page_size, db->page_shift,
                           db->meta.page_count);
    db->check_commits = o.check_commits != 0;
#ifndef NDEBUG
    {
        const char *ck = getenv("BTREE_STORE_CHECK_COMMITS");
        db->check_commits = db->check_commits || (ck && strcmp(ck, "1") == 0);
    }
#endif
    if (db->lf && !excl) {
        /* Other handles are open: commits may reuse pages of what we just read at any
         * moment (we hold no snapshot yet). The first write transaction loads the free set
         * under the write lock instead. */
        db->fl_txid = UINT64_MAX;
    } else if ((rc = pager_load_freelist(db, &db->meta)) != BS_OK) {
        /* The data is still readable: open, refuse writes, let check() report it. */
        if (rc != BS_CORRUPT || !(db->fl_broken = strdup(bs_errmsg())))
            goto fail;
        freelist_destroy(&db->fl);
        bs_clear_error();
    }
    *out = db;
    return BS_OK;
fail:
    if (remove_on_fail)
        (void)unlink(db->path); /* while the lock is held: nobody else has used it */
    if (db->file)
        db->io->close(db->file, 0);
    db_free(db);
    return rc;
}

int bs_db_close(bs_db *db)
{
    if (!db)
        return BS_OK;
    if (forked(db)) {
        /* A copy inherited across fork(): close our descriptor (the lock stays with the
         * parent's open file description) and leave the rest of the copied memory alone:
         * its mutexes may have been held by threads that do not exist here. */
        db->io->close(db->file, 1);
        lockfile_close(db->lf, 1);
        return BS_OK;
    }
    pthread_mutex_lock(&db->mu);
    size_t n = db->ntxn;
    pthread_mutex_unlock(&db->mu);
    if (n)
        return bs_fail(BS_MISUSE, "%zu transactions are still open", n);
    int err = db->io->close(db->file, 0);
    db_free(db);
    if (err)
        return bs_fail_io(err, "closing the database");
    return BS_OK;
}

/* ------------------------------------------------------------------ readers */

static uint64_t oldest_reader_locked(bs_db *db, uint64_t *count)
{
    uint64_t m = UINT64_MAX, c = 0;
    for (size_t i = 0; i < db->nreaders; i++)
        if (db->readers[i].snap) {
            c++;
            if (db->readers[i].snap < m)
                m = db->readers[i].snap;
        }
    if (count)
        *count = c;
    return m;
}

static int reader_add_locked(bs_db *db, uint64_t snap, size_t *idx)
{
    for (size_t i = 0; i < db->nreaders; i++)
        if (!db->readers[i].snap) {
            db->readers[i].snap = snap;
            *idx = i;
            return BS_OK;
        }
    int rc = bs_grow(&db->readers, &db->capreaders, db->nreaders + 1, sizeof *db->readers, 16,
                     "the reader table");
    if (rc)
        return rc;
    db->readers[db->nreaders].snap = snap;
    *idx = db->nreaders++;
    return BS_OK;
}

/* Our slot in the side file: the oldest snapshot (+ 1) of this handle's readers, or 0. */
static void publish_readers_locked(bs_db *db)
{
    uint64_t m = oldest_reader_locked(db, NULL);
    uint64_t v = m == UINT64_MAX ? 0 : m;
    if (lockfile_published(db->lf) != v)
        lockfile_publish(db->lf, v);
}

/* Read-begin: when the side file announces a commit newer than the one we know (a memory
 * load), read its meta page. A meta page being overwritten is waited for; one a dead writer
 * left half written (neither page holds the announced commit or a newer one, and nobody
 * holds the write lock) gives way to the valid one, the durable commit. */
static int reader_refresh(bs_db *db)
{
    for (unsigned tries = 0;; tries++) {
        uint64_t want = atomic_load(&db->lf->hdr->latest_txid);
        pthread_mutex_lock(&db->mu);
        uint64_t known = db->meta.txid;
        pthread_mutex_unlock(&db->mu);
        if (want <= known)
            return BS_OK;
        bs_meta m;
        int rc = meta_read_live(db, want, &m);
        if (rc == BS_NOTFOUND && tries >= 1000 && m.slot < 2) {
            /* our own writer shares the lock (one open file description): ask only while
             * no writer of this handle is active, holding wmu so that none starts */
            pthread_mutex_lock(&db->wmu);
            bool got = !db->writer_active && lockfile_write_lock(db->lf, 0) == BS_OK;
            if (got) {
                /* the writer died: its commit is lost, the valid page stands (the next
                 * writer rereads everything) */
                lf_header *h = db->lf->hdr;
                if (atomic_load(&h->latest_txid) == want) {
                    uint64_t hw = atomic_load(&h->txid_hw);
                    lockfile_note_lost(db->lf, m.txid, hw > want ? hw : want);
                    atomic_store(&h->committing, 1);
                    atomic_store(&h->latest_slot, m.slot);
                    atomic_store(&h->latest_txid, m.txid);
                }
                lockfile_write_unlock(db->lf);
                pthread_mutex_lock(&db->mu);
                db->meta = m;
                pthread_mutex_unlock(&db->mu);
            }
            pthread_mutex_unlock(&db->wmu);
            bs_clear_error();
            tries = 0;
            if (got)
                continue;
        }
        if (rc == BS_NOTFOUND) {
            sched_yield();
            continue;
        }
        if (rc != BS_OK)
            return rc;
        pthread_mutex_lock(&db->mu);
        if (m.txid > db->meta.txid)
            db->meta = m;
        pthread_mutex_unlock(&db->mu);
        return BS_OK;
    }
}

/* The freelist records of m's chain written after commit `known`, fed into r from the head,
 * and their pages (newchain, head first). *complete = false when the walk does not end at
 * the chain this process knew (`head`, the head of db->fl's chain, 0 for none): a base
 * record newer than `known` replaced it, or the chain is not what we knew. known == 0: the
 * whole chain, its base included (*complete = true when it ends there). */
static int fl_records_since(bs_db *db, const bs_meta *m, uint64_t known, uint64_t head,
                            fl_replay *r, bs_pgvec *newchain, bool *complete)
{
    bs_txn t;
    memset(&t, 0, sizeof t);
    t.db = db;
    t.meta = *m;
    t.txid = m->txid;
    t.page_count = m->page_count;
    t.slot = cache_slot_acquire(db->cache);
    if (!t.slot)
        return bs_fail(BS_NOMEM, "out of memory");
    *complete = true;
    pager_enter(&t);
    uint64_t pgno = m->fl_head, want = m->fl_head_txid, from = m->slot;
    int rc = BS_OK;
    while (pgno && want > known) {
        const uint8_t *pg;
        if ((rc = pager_get_ref(&t, pgno, PT_FREELIST, want, from, &pg)) != BS_OK)
            break;
        bool base = pg[PH_FLAGS] & FL_F_BASE;
        if (base && known) {
            *complete = false;
            break;
        }
        if ((rc = freelist_replay_page(r, pgno, pg)) != BS_OK ||
            (rc = pgvec_push(newchain, pgno)) != BS_OK)
            break;
        if (base) {
            pgno = 0;
            break;
        }
        from = pgno;
        want = get64(pg + FL_NEXT_TXID);
        pgno = get64(pg + FL_NEXT);
    }
    if (rc == BS_OK && *complete && pgno != head)
        *complete = false;
    pager_leave(&t);
    cache_slot_release(db->cache, t.slot);
    return rc;
}

/* db->fl was just loaded from m's chain (every free page reusable) after commits of other
 * processes: each page waits in a group of the commit whose record last added it (the base's
 * commit for the pages of the base: some may have been taken and freed again before it, the
 * base does not say; but when the base's commit is the first since the free set this
 * process knew, `old` at commit `known`, the pages free in old keep their place there),
 * never above t, so that readers of snapshots of those commits or newer do not hold it back. The chain pages are read again from the cache. When that fails
 * (memory, a chain that does not walk again as loaded) every page waits in one group of t.
 * BS_OK, or BS_NOMEM leaving fl as loaded. */
static int fl_group_by_commit(bs_db *db, const bs_meta *m, uint64_t t, const bs_freelist *old,
                              uint64_t known)
{
    fl_replay r;
    bs_pgvec chain = {0};
    bs_freelist g;
    memset(&g, 0, sizeof g);
    bool complete = false;
    freelist_replay_init(&r, m->page_count);
    uint64_t live[2] = {m->main.root, m->catalog.root};
    int rc = fl_records_since(db, m, 0, 0, &r, &chain, &complete);
    if (rc == BS_OK && !complete)
        rc = BS_CORRUPT;
    if (rc == BS_OK)
        rc = freelist_catch_up(&g, &r, &chain, t, m->fl_count, live, 2);
    /* the base's commit the first since the set this process knew: what that set held free
     * keeps its place (freelist_keep_known) */
    if (rc == BS_OK && r.base_seen && r.seq && known != UINT64_MAX &&
        r.txid[r.seq - 1] == known + 1)
        rc = freelist_keep_known(&g, old, known + 1);
    freelist_replay_free(&r);
    pgvec_free(&chain);
    if (rc == BS_OK && g.chain.n == db->fl.chain.n) {
        /* the same set and chain, by commit: the loaded one's groups and reusable pages go */
        g.ndelta = db->fl.ndelta;
        freelist_destroy(&db->fl);
        db->fl = g;
        return BS_OK;
    }
    freelist_destroy(&g);
    bs_clear_error();
    return freelist_pend_all(&db->fl, t);
}

/* Write-begin, holding the write lock of the side file: catch up with the commits other
 * processes made since this process last knew (the meta, the free set), and the shared
 * durability horizon. */
static int writer_refresh(bs_db *db)
{
    lf_header *h = db->lf->hdr;
    uint64_t latest = atomic_load(&h->latest_txid);
    bool crashed = atomic_load(&h->committing) != 0;
    uint64_t known = db->fl_txid; /* readers may have moved db->meta on already;
                                   * UINT64_MAX: not loaded yet (opened beside others) */
    int rc, err;
    if (latest != known || crashed) {
        /* what opening would pick: a writer that died in its commit may have left a newer
         * complete commit, or retracted one */
        bs_meta m;
        if ((rc = meta_read(db, &m)) != BS_OK)
            return rc;
        /* commits announced (or counted) above what is on disk were lost with a torn meta
         * slot: readers that still hold one of them are told so when a page they need has
         * been reused (pager.c) */
        uint64_t hw0 = atomic_load(&h->txid_hw);
        if (hw0 < latest)
            hw0 = latest;
        if (hw0 > m.txid)
            lockfile_note_lost(db->lf, m.txid, hw0); /* nothing new when known already */
        if (m.txid != known) {
            /* readers of other handles may need pages recent commits freed: those wait in
             * a group of the newest commit (conservative) */
            uint64_t t = m.txid > latest ? m.txid : latest;
            if (known != UINT64_MAX && known > t)
                t = known;
            /* what changed since: a replay of the records of the commits we did not see
             * against the free set we knew (freelist.h, freelist_catch_up) */
            bool replayed = false;
            if (known != UINT64_MAX && m.txid > known) {
                fl_replay r;
                bs_pgvec newchain = {0};
                bool complete = false;
                freelist_replay_init(&r, m.page_count);
                rc = fl_records_since(db, &m, known, db->fl.chain.n ? db->fl.chain.v[0] : 0,
                                      &r, &newchain, &complete);
                if (rc == BS_OK && complete) {
                    uint64_t live[2] = {m.main.root, m.catalog.root};
                    rc = freelist_catch_up(&db->fl, &r, &newchain, t, m.fl_count, live, 2);
                    replayed = rc == BS_OK;
                }
                freelist_replay_free(&r);
                pgvec_free(&newchain);
                if (rc == BS_NOMEM)
                    return rc;
                bs_clear_error(); /* the reload below reports a damaged chain */
            }
            if (!replayed) {
                /* a base record replaced the chain (or nothing was known): reload it; every
                 * free page waits for the readers of the commits we did not see */
                bs_freelist old = db->fl;
                memset(&db->fl, 0, sizeof db->fl);
                rc = pager_load_freelist(db, &m);
                if (rc == BS_OK)
                    rc = fl_group_by_commit(db, &m, t, &old, known);
                if (rc != BS_OK) {
                    freelist_destroy(&db->fl);
                    db->fl = old;
                    return rc;
                }
                freelist_destroy(&old);
            }
            db->fl_txid = m.txid;
        }
        pthread_mutex_lock(&db->mu);
        db->meta = m;
        pthread_mutex_unlock(&db->mu);
        if (m.txid != latest) {
            atomic_store(&h->latest_slot, m.slot);
            atomic_store(&h->latest_txid, m.txid);
        }
        atomic_store(&h->committing, 0);
    }
    if (latest != known && db->meta.txid > atomic_load(&h->durable_txid)) {
        /* the write lock came from another handle whose newest commit is not durable
         * (sync=False): one fsync makes it so, and the pages it freed reusable now. Cheaper
         * than letting them wait for the shared horizon (bench/results/multiproc_write.md:
         * two processes alternating sync=False commits, 1.5x the commits/s, 1/7 the file) */
        if ((err = db->io->sync(db->file)) != 0) {
            atomic_store(&db->panic, 1); /* as bs_db_sync: what was unsynced may be gone */
            return bs_fail_io(err, "syncing %s", db->path);
        }
        atomic_store(&h->durable_slot, db->meta.slot);
        atomic_store(&h->durable_txid, db->meta.txid);
    }
    uint64_t dtxid = atomic_load(&h->durable_txid), dslot = atomic_load(&h->durable_slot);
    if (dslot > 1 || dtxid > db->meta.txid ||
        (dslot == db->meta.slot) != (dtxid == db->meta.txid)) {
        /* set up by a handle that could not sync (slot 2), or a horizon that cannot be true
         * (a damaged side file: newer than the newest commit, or naming the newest commit's
         * slot for an older one, which would let this commit overwrite the durable meta
         * and reuse pages not yet durably free): make what is there durable now */
        if ((err = db->io->sync(db->file)) != 0)
            return bs_fail_io(err, "syncing %s", db->path);
        atomic_store(&h->durable_slot, db->meta.slot);
        atomic_store(&h->durable_txid, db->meta.txid);
    }
    atomic_store(&db->durable_txid, atomic_load(&h->durable_txid));
    db->durable_slot = atomic_load(&h->durable_slot);
    uint64_t hw = atomic_load(&h->txid_hw);
    db->txid_floor = hw > latest ? hw : latest; /* latest: as read before any give-way */
    return BS_OK;
}

/* ------------------------------------------------------------------ transactions */

static int bucket_handle_new(bs_txn *txn, const void *name, size_t nlen, const bs_tree *t,
                             bs_bucket **out)
{
    int rc = bs_grow(&txn->buckets, &txn->capbuckets, txn->nbuckets + 1, sizeof *txn->buckets,
                     8, "the bucket handles");
    if (rc)
        return rc;
    bs_bucket *b = calloc(1, sizeof *b);
    if (!b)
        return bs_fail(BS_NOMEM, "out of memory");
    b->tree = *t;
    b->nlen = (uint8_t)nlen;
    if (nlen)
        memcpy(b->name, name, nlen);
    b->idx = (unsigned)txn->nbuckets;
    txn->buckets[txn->nbuckets++] = b;
    *out = b;
    return BS_OK;
}

static int wait_writer(bs_db *db, long timeout_ms)
{
    uint64_t self = bs_thread_token();
    struct timespec deadline;
    if (timeout_ms > 0) {
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&db->wmu);
    if (db->writer_active && db->writer_thread == self) {
        pthread_mutex_unlock(&db->wmu);
        return bs_fail(BS_MISUSE, "this thread already has an open write transaction "
                                  "(commit or abort it first)");
    }
    while (db->writer_active) {
        if (timeout_ms == 0) {
            pthread_mutex_unlock(&db->wmu);
            return bs_fail(BS_LOCKED, "another write transaction is active");
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&db->wcond, &db->wmu);
        } else if (pthread_cond_timedwait(&db->wcond, &db->wmu, &deadline) == ETIMEDOUT &&
                   db->writer_active) {
            pthread_mutex_unlock(&db->wmu);
            return bs_fail(BS_LOCKED, "timed out after %ld ms waiting for the write lock",
                           timeout_ms);
        }
    }
    db->writer_active = 1;
    db->writer_thread = self;
    pthread_mutex_unlock(&db->wmu);
    return BS_OK;
}

/* The write transactions open in this process on files with a side file, by thread: a
 * thread that holds one on a handle and asks for one on another handle of the same file
 * would wait for itself forever (BS_MISUSE instead, as on one handle). */
#define MAX_LOCAL_WRITERS 64
static pthread_mutex_t local_writers_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { const bs_db *db; uint64_t dev, ino, thread; } local_writers[MAX_LOCAL_WRITERS];
static _Atomic int local_writers_n; /* entries in use (changed under local_writers_mu) */

static void local_writers_forget(void)
{
    pthread_mutex_init(&local_writers_mu, NULL); /* another thread may have held it */
    memset(local_writers, 0, sizeof local_writers);
    atomic_store(&local_writers_n, 0);
}

static bool local_writer_conflict(const bs_db *db, uint64_t self)
{
    /* none in use: no entry of this thread (one it made itself it would see counted; other
     * threads' entries never conflict), and a lone writer skips the lock and the scan
     * (~1,000 instructions of a write transaction's begin, bench/results/lone_writer_s20.md) */
    if (atomic_load_explicit(&local_writers_n, memory_order_relaxed) == 0)
        return false;
    bool hit = false;
    pthread_mutex_lock(&local_writers_mu);
    for (int i = 0; i < MAX_LOCAL_WRITERS && !hit; i++)
        hit = local_writers[i].db && local_writers[i].db != db && local_writers[i].thread == self &&
              local_writers[i].dev == db->dev && local_writers[i].ino == db->ino;
    pthread_mutex_unlock(&local_writers_mu);
    return hit;
}

static void local_writer_set(const bs_db *db, uint64_t self, bool on)
{
    pthread_mutex_lock(&local_writers_mu);
    for (int i = 0; i < MAX_LOCAL_WRITERS; i++) {
        if (on && !local_writers[i].db) {
            local_writers[i].db = db;
            local_writers[i].dev = db->dev;
            local_writers[i].ino = db->ino;
            local_writers[i].thread = self;
            atomic_fetch_add_explicit(&local_writers_n, 1, memory_order_relaxed);
            break;
        }
        if (!on && local_writers[i].db == db) {
            local_writers[i].db = NULL;
            atomic_fetch_sub_explicit(&local_writers_n, 1, memory_order_relaxed);
            break;
        }
    }
    pthread_mutex_unlock(&local_writers_mu);
}

static void release_writer(bs_db *db)
{
    if (db->lf_writing) {
        db->lf_writing = false;
        local_writer_set(db, 0, false);
        lockfile_write_unlock(db->lf);
    }
    pthread_mutex_lock(&db->wmu);
    db->writer_active = 0;
    pthread_cond_signal(&db->wcond);
    pthread_mutex_unlock(&db->wmu);
}

int bs_txn_begin(bs_db *db, unsigned flags, long timeout_ms, bs_txn **out)
{
    int rc;
    bool write = flags & BS_TXN_WRITE;
    *out = NULL;
    bs_clear_error();
    if (forked(db))
        return fail_forked();
    if (write) {
        if (db->readonly)
            return bs_fail(BS_READONLY, "the database was opened read-only");
        if (atomic_load(&db->panic))
            return bs_fail(BS_PANIC, "a commit failed while writing; close and reopen the database");
        if ((rc = wait_writer(db, timeout_ms)) != BS_OK)
            return rc;
        if (db->lf) {
            /* the machine-wide write lock, then what other processes committed meanwhile */
            if (local_writer_conflict(db, bs_thread_token())) {
                release_writer(db);
                return bs_fail(BS_MISUSE, "this thread already has an open write transaction "
                               "on another handle of this file (commit or abort it first)");
            }
            if ((rc = lockfile_write_lock(db->lf, timeout_ms)) != BS_OK) {
                release_writer(db);
                return rc;
            }
            db->lf_writing = true;
            local_writer_set(db, bs_thread_token(), true);
            if ((rc = writer_refresh(db)) != BS_OK) {
                release_writer(db);
                return rc;
            }
        }
        if (atomic_load(&db->panic)) {
            release_writer(db);
            return bs_fail(BS_PANIC, "a commit failed while writing; close and reopen the database");
        }
        /* read as the writer: a write transaction that finds the freelist damaged sets it */
        if (db->fl_broken && !(flags & BS_TXN_REPAIR_)) {
            release_writer(db);
            return bs_fail(BS_CORRUPT, "the freelist is damaged (%s); the database can be read "
                           "but not written", db->fl_broken);
        }
    }
    bs_txn *txn = malloc(sizeof *txn);
    if (txn)
        memset(txn, 0, TXN_ZERO_SIZE); /* not the 5 KiB commit list: meta_copy fills it */
    if (!txn) {
        rc = bs_fail(BS_NOMEM, "out of memory");
        goto fail_nolock;
    }
    txn->db = db;
    txn->write = write;
    atomic_init(&txn->busy, 0);
    txn->slot = cache_slot_acquire(db->cache);
    if (!txn->slot) {
        rc = bs_fail(BS_NOMEM, "out of memory");
        goto fail_nolock;
    }
    uint64_t foreign = write && db->lf ? lockfile_oldest(db->lf, NULL) : UINT64_MAX;
retry_read:
    if (!write && db->lf && (rc = reader_refresh(db)) != BS_OK)
        goto fail_nolock;
    pthread_mutex_lock(&db->mu);
    meta_copy(&txn->meta, &db->meta);
    if (write) {
        uint64_t oldest = oldest_reader_locked(db, NULL); /* snapshot + 1, or UINT64_MAX */
        if (foreign < oldest)
            oldest = foreign;
        uint64_t horizon = atomic_load(&db->durable_txid); /* invariant 2 */
        if (oldest != UINT64_MAX && oldest - 1 < horizon)
            horizon = oldest - 1;
        freelist_release(&db->fl, horizon);
        txn->sync = (flags & BS_TXN_SYNC) ? true : (flags & BS_TXN_NOSYNC) ? false : db->sync;
        /* above every txid another process ever committed (writer_refresh): a reader may
         * still hold a commit that was lost with its torn meta page, whose pages carry its
         * txid; reusing that txid would let such a reader accept our pages as its own */
        uint64_t base = db->txid_floor > txn->meta.txid ? db->txid_floor : txn->meta.txid;
        if (base >= BS_TXID_END - 1) {
            /* a commit with a txid the format refuses would make the file unopenable once
             * both meta slots hold one: refuse the transaction, the file stays as it is */
            pthread_mutex_unlock(&db->mu);
            if (base == txn->meta.txid)
                rc = bs_fail(BS_CORRUPT, "%s: commit %llu leaves no transaction id for "
                             "another commit", db->path, (unsigned long long)base);
            else
                rc = bs_fail(BS_CORRUPT, "%s-lock is damaged: it says transaction id %llu "
                             "was committed, beyond what the format holds; close every "
                             "handle of the database so that it is rebuilt", db->path,
                             (unsigned long long)base);
            goto fail_nolock;
        }
        txn->txid = base + 1;
    } else {
        txn->txid = txn->meta.txid;
        /* snapshot ids are stored +1 so that 0 can mean "free entry" */
        if ((rc = reader_add_locked(db, txn->meta.txid + 1, &txn->reader_idx)) != BS_OK) {
            pthread_mutex_unlock(&db->mu);
            goto fail_nolock;
        }
        if (db->lf) {
            /* publish before reading any page, then make sure no commit was announced
             * meanwhile (a writer that began before the publish did not see it): LMDB's retry */
            publish_readers_locked(db);
            if (atomic_load(&db->lf->hdr->latest_txid) > txn->meta.txid) {
                db->readers[txn->reader_idx].snap = 0;
                publish_readers_locked(db);
                pthread_mutex_unlock(&db->mu);
                goto retry_read;
            }
        }
    }
    db->ntxn++;
    pthread_mutex_unlock(&db->mu);
    txn->page_count = txn->meta.page_count;
    txn->catalog = txn->meta.catalog;
    pager_txn_init(txn);
    bs_bucket *b;
    if ((rc = bucket_handle_new(txn, NULL, 0, &txn->meta.main, &b)) != BS_OK) {
        bs_txn_abort(txn);
        return rc;
    }
    if (write && !db->fl_checked && !(flags & BS_TXN_REPAIR_)) {
        /* Hostile files (docs/HOSTILE_FILES.md): before the handle's first write transaction
         * changes anything, no page of the free set it loaded may be a node of a tree (a
         * crafted freelist would otherwise hand out a live page of a tree this transaction
         * never touches). Once per handle: later free pages are the engine's own. */
        if (freelist_count(&db->fl)) {
            pager_enter(txn);
            rc = check_free_set(txn, &db->fl);
            pager_leave(txn);
            if (rc != BS_OK) {
                bs_txn_abort(txn);
                return rc;
            }
        }
        db->fl_checked = true;
    }
    *out = txn;
    return BS_OK;
fail_nolock:
    if (txn) {
        cache_slot_release(db->cache, txn->slot);
        free(txn);
    }
    if (write)
        release_writer(db);
    return rc;
}

static void txn_free(bs_txn *txn)
{
    bs_db *db = txn->db;
    pager_abort(txn);
    btree_txn_free(txn);
    for (size_t i = 0; i < txn->nbuckets; i++)
        free(txn->buckets[i]);
    free(txn->buckets);
    cache_slot_release(db->cache, txn->slot);
    cache_count(db->cache, txn->hits, txn->misses);
    pthread_mutex_lock(&db->mu);
    if (!txn->write) {
        db->readers[txn->reader_idx].snap = 0;
        if (db->lf)
            publish_readers_locked(db);
    }
    db->ntxn--;
    pthread_mutex_unlock(&db->mu);
    if (txn->write)
        release_writer(db);
    free(txn);
}

void bs_txn_abort(bs_txn *txn)
{
    if (!txn)
        return;
    if (forked(txn->db))
        return; /* the copy in a child: nothing of it may be touched */
    txn_free(txn);
}

int bs_txn_is_write(const bs_txn *txn) { return txn->write; }
uint64_t bs_txn_id(const bs_txn *txn) { return txn->txid; }
void bs_txn_set_noio(bs_txn *txn, int on) { txn->noio = on != 0; }

int bs_txn_enter(bs_txn *txn)
{
    int zero = 0;
    if (BS_UNLIKELY(forked(txn->db)))
        return fail_forked();
    if (!atomic_compare_exchange_strong(&txn->busy, &zero, 1))
        return bs_fail(BS_INUSE, "the transaction is being used by another thread");
    bs_clear_error();
    pager_enter(txn);
    return BS_OK;
}

void bs_txn_leave(bs_txn *txn)
{
    pager_leave(txn);
    atomic_store_explicit(&txn->busy, 0, memory_order_release);
}

static void encode_record(const bs_tree *t, uint8_t *r)
{
    memset(r, 0, BREC_SIZE);
    put64(r + BREC_ROOT, t->root);
    put64(r + BREC_COUNT, t->count);
    put32(r + BREC_DEPTH, t->depth);
    put64(r + BREC_TXID, t->root_txid);
}

/* A bucket record from the catalog (format.h BUCKET RECORD), every field range-checked: the
 * root inside the file and written no later than the transaction reading it, a count no tree
 * of this file could hold, no unknown flags. */
static int decode_record(const bs_txn *txn, const bs_val *v, bs_tree *t)
{
    if (v->len != BREC_SIZE || !v->data)
        return bs_fail(BS_CORRUPT, "catalog: bucket record of %zu bytes", v->len);
    const uint8_t *r = v->data;
    uint64_t page_count = txn->page_count;
    memset(t, 0, sizeof *t);
    t->root = get64(r + BREC_ROOT);
    t->count = get64(r + BREC_COUNT);
    t->depth = get32(r + BREC_DEPTH);
    t->root_txid = get64(r + BREC_TXID);
    if ((t->root == 0) != (t->depth == 0) || (t->root && (t->root < 2 || t->root >= page_count)) ||
        t->depth > BS_MAX_DEPTH || (!t->root && t->count) || (t->root == 0) != (t->root_txid == 0) ||
        t->root_txid > txn->txid || get32(r + BREC_FLAGS) != 0 ||
        t->count > fmt_count_max(txn->db->page_size, page_count))
        return bs_fail(BS_CORRUPT, "catalog: bad bucket record (root %llu, txid %llu, depth %u, "
                       "count %llu, flags %u)", (unsigned long long)t->root,
                       (unsigned long long)t->root_txid, t->depth,
                       (unsigned long long)t->count, get32(r + BREC_FLAGS));
    return BS_OK;
}

/* Hostile files: a bucket's root must not be a page of another tree. A crafted record that
 * points at the catalog's own pages, the default bucket's root, the freelist or another
 * bucket's root passes every page check (the page is valid and carries the txid the record
 * names), and reads would return that tree's records as the bucket's data. What is cheap to
 * know is checked at every catalog lookup: the catalog's root, the pages the lookup just
 * went through (w: the leaf holding the record included) and every child of the branches on
 * that path (with a catalog of depth 1 or 2: all of its pages), the default bucket's root, the
 * freelist head, the roots recorded next to it in the same catalog leaf, and the roots of the
 * buckets this transaction holds open. Another tree's non-root pages, and roots recorded in
 * other catalog leaves, are caught before the handle's first write when its free set is not
 * empty (check.c check_free_set)
 * and by check(); docs/HOSTILE_FILES.md. */
static int foreign_root(const bs_txn *txn, const bs_tree *t, const bt_where *w,
                        const void *name, size_t nlen)
{
    const char *what = NULL;
    char other[BS_MAX_NAME * 4 + 16];
    uint64_t root = t->root;
    if (!root)
        return BS_OK;
    if (root == txn->meta.catalog.root || root == txn->catalog.root)
        what = "a page of the bucket catalog";
    for (unsigned L = 0; !what && L < w->depth; L++) {
        if (w->path[L] == root)
            what = "a page of the bucket catalog";
        for (unsigned i = 0; !what && L + 1 < w->depth && i < pg_nkeys(w->pg[L]); i++)
            if (bcell_child(node_cell(w->pg[L], i)) == root)
                what = "a page of the bucket catalog"; /* a child of the path's branches */
    }
    if (!what && (root == txn->meta.main.root || root == txn->buckets[0]->tree.root))
        what = "the root of the default bucket";
    if (!what && root == txn->meta.fl_head)
        what = "a freelist page";
    const uint8_t *leaf = w->depth ? w->pg[w->depth - 1] : NULL;
    for (unsigned i = 0; !what && leaf && i < pg_nkeys(leaf); i++) {
        const uint8_t *c = node_cell(leaf, i);
        if (i == w->idx || (lcell_flags(c) & LEAF_F_OVERFLOW) || lcell_vlen(c) != BREC_SIZE ||
            get64(lcell_val(c) + BREC_ROOT) != root)
            continue;
        snprintf(other, sizeof other, "the root of bucket '%.*s'", (int)lcell_klen(c),
                 (const char *)lcell_key(c));
        what = other;
    }
    for (size_t i = 1; !what && i < txn->nbuckets; i++) {
        const bs_bucket *b = txn->buckets[i];
        if (b->dropped || b->stale || b->tree.root != root ||
            (b->nlen == nlen && memcmp(b->name, name, nlen) == 0))
            continue;
        snprintf(other, sizeof other, "the root of bucket '%.*s'", (int)b->nlen,
                 (const char *)b->name);
        what = other;
    }
    if (!what)
        return BS_OK;
    return bs_fail(BS_CORRUPT, "catalog: bad bucket record: bucket '%.*s' has root page %llu, "
                   "which is %s (crafted or damaged catalog)", (int)nlen, (const char *)name,
                   (unsigned long long)root, what);
}

/* The record of bucket `name` from the catalog, decoded and checked (decode_record,
 * foreign_root): BS_OK, BS_NOTFOUND, or an error */
static int catalog_lookup(bs_txn *txn, const void *name, size_t nlen, bs_tree *t)
{
    bs_val v;
    bt_where w;
    int rc = btree_get_where(txn, &txn->catalog, name, nlen, &v, &w);
    if (rc == BS_OK && (rc = decode_record(txn, &v, t)) == BS_OK)
        rc = foreign_root(txn, t, &w, name, nlen);
    return rc;
}

static int txn_usable(bs_txn *txn)
{
    if (txn->failed)
        return bs_fail(BS_BADTXN, "the transaction failed earlier and must be aborted");
    return BS_OK;
}

static int release_all_savepoints(bs_txn *txn);

/* bs_options.check_commits (or debug builds with BTREE_STORE_CHECK_COMMITS=1 at open): after
 * each commit, the whole new state is checked (invariant 3: every page below page_count reachable once or free once,
 * and the free counts match; invariant 4 on every page) and the writer's in-memory free set
 * and chain must be exactly the persisted ones. A difference fails the commit call with
 * BS_CORRUPT (the commit itself is durable). A check that runs out of memory is skipped and
 * the commit reports BS_OK: BS_NOMEM from bs_txn_commit means nothing durable changed (bs.h).
 * Called while the writer is still held. */
static int debug_check_commit(bs_db *db)
{
    bs_txn *t;
    bs_pgvec fl = {0}, chain = {0};
    uint64_t txid = db->meta.txid;
    int rc = bs_txn_begin(db, 0, 0, &t);
    if (rc)
        return rc == BS_NOMEM ? BS_OK : rc;
    pager_enter(t);
    if ((rc = check_db(t)) == BS_OK &&
        (rc = pager_read_freelist(t, &t->meta, &fl, &chain)) == BS_OK)
        rc = freelist_compare(&db->fl, &fl, &chain);
    pager_leave(t);
    bs_txn_abort(t);
    pgvec_free(&fl);
    pgvec_free(&chain);
    if (rc == BS_NOMEM)
        return BS_OK; /* the check could not run; the commit is durable and reports success */
    if (rc) {
        char why[400];
        snprintf(why, sizeof why, "%s", bs_errmsg());
        rc = bs_fail(BS_CORRUPT, "state check after commit %llu failed: %s",
                     (unsigned long long)txid, why);
    }
    return rc;
}

/* fsync the file, and its directory once after it was created (a failed fsync of the file
 * panics the handle: it cannot be retried safely). */
static int db_sync_file(bs_db *db)
{
    int err = db->io->sync(db->file);
    if (err) {
        atomic_store(&db->panic, 1);
        return bs_fail_io(err, "syncing %s", db->path);
    }
    if (atomic_load(&db->dir_unsynced)) {
        if ((err = db->io->sync_dir(db->io_arg, db->path)) != 0)
            return bs_fail_io(err, "syncing the directory of %s", db->path);
        atomic_store(&db->dir_unsynced, 0);
    }
    return BS_OK;
}

/* A durable commit that changes nothing still makes its base durable (the sync=False
 * commits before it survive a power loss from now on, as after any durable commit): one
 * fsync, then the horizon moves to the base, here and in the side file (we hold the write
 * lock). A failed fsync panics, as in a commit. */
static int commit_nothing_durably(bs_txn *txn)
{
    bs_db *db = txn->db;
    if (txn->meta.txid <= atomic_load(&db->durable_txid))
        return BS_OK;
    int rc = db_sync_file(db);
    if (rc != BS_OK)
        return rc;
    atomic_store(&db->durable_txid, txn->meta.txid);
    db->durable_slot = txn->meta.slot;
    if (db->lf) {
        atomic_store(&db->lf->hdr->durable_slot, txn->meta.slot);
        atomic_store(&db->lf->hdr->durable_txid, txn->meta.txid);
    }
    return BS_OK;
}

int bs_txn_commit(bs_txn *txn)
{
    bs_db *db = txn->db;
    int rc = BS_OK;
    if (forked(db))
        return fail_forked();
    int zero = 0;
    if (!atomic_compare_exchange_strong(&txn->busy, &zero, 1))
        return bs_fail(BS_INUSE, "the transaction is being used by another thread");
    if (!txn->write || txn->mod_seq == 0) {
        if (txn->write && txn->failed)
            rc = bs_fail(BS_BADTXN, "the transaction failed earlier; it was rolled back");
        else if (txn->write && txn->sync)
            rc = commit_nothing_durably(txn);
        txn_free(txn);
        return rc;
    }
    if (txn->failed) {
        txn_free(txn);
        return bs_fail(BS_BADTXN, "the transaction failed earlier; it was rolled back");
    }
    assert(!atomic_load(&db->panic)); /* invariant 5: no writer starts after a failed commit */
    txn->noio = false;
    pager_enter(txn);
    if ((rc = release_all_savepoints(txn)) != BS_OK)
        goto fail;
    /* deferred rebalancing, then bucket records into the catalog */
    for (size_t i = 0; i < txn->nbuckets; i++) {
        bs_bucket *b = txn->buckets[i];
        if (!b->dropped && b->tree.needs_rebalance && (rc = btree_rebalance(txn, &b->tree)) != BS_OK)
            goto fail;
    }
    for (size_t i = 1; i < txn->nbuckets; i++) {
        bs_bucket *b = txn->buckets[i];
        if (b->dropped || !b->tree.dirty)
            continue;
        uint8_t rec[BREC_SIZE];
        encode_record(&b->tree, rec);
        if ((rc = btree_put(txn, &txn->catalog, b->name, b->nlen, rec, BREC_SIZE, 0)) != BS_OK)
            goto fail;
    }
    if (txn->catalog.needs_rebalance && (rc = btree_rebalance(txn, &txn->catalog)) != BS_OK)
        goto fail;
    bs_meta nm;
    meta_copy(&nm, &txn->meta);
    nm.main = txn->buckets[0]->tree;
    nm.catalog = txn->catalog;
    nm.main.dirty = nm.main.needs_rebalance = false;
    nm.catalog.dirty = nm.catalog.needs_rebalance = false;
    if (db->lf)
        atomic_store(&db->lf->hdr->committing, 1);
    rc = pager_commit(txn, &nm);
    if (rc == BS_OK)
        db->fl_txid = nm.txid;
    if (rc == BS_OK && db->lf) {
        /* announce the commit to every process (after its meta page is written) */
        lf_header *h = db->lf->hdr;
        if (atomic_load(&db->durable_txid) != atomic_load(&h->durable_txid)) {
            atomic_store(&h->durable_slot, db->durable_slot);
            atomic_store(&h->durable_txid, atomic_load(&db->durable_txid));
        }
        atomic_store(&h->latest_slot, nm.slot);
        atomic_store(&h->latest_txid, nm.txid);
        if (atomic_load(&h->txid_hw) < nm.txid)
            atomic_store(&h->txid_hw, nm.txid);
        atomic_store(&h->committing, 0);
    }
fail:
    pager_leave(txn);
    if (txn->repair) { /* still the writer: nobody reads db->fl_broken meanwhile */
        if (rc == BS_OK) {
            free(db->fl_broken);
            db->fl_broken = NULL;
            db->fl_checked = true; /* the free set is what no tree reaches */
        } else if (!db->fl_broken) {
            /* the in-memory free set was replaced but not persisted: refuse writes until a
             * repair succeeds */
            char why[400];
            snprintf(why, sizeof why, "a repair failed (%s); run repair again", bs_errmsg());
            db->fl_broken = strdup(why);
        }
    }
    if (rc == BS_OK && db->check_commits)
        rc = debug_check_commit(db); /* still the writer: db->fl cannot change meanwhile */
    txn_free(txn);
    return rc;
}

/* ------------------------------------------------------------------ savepoints */

int bs_txn_savepoint(bs_txn *txn)
{
    if (!txn->write)
        return bs_fail(BS_READONLY, "savepoints need a write transaction");
    int rc = txn_usable(txn);
    if (rc)
        return rc;
    if ((rc = bs_grow(&txn->sp, &txn->capsp, txn->nsp + 1, sizeof *txn->sp, 4,
                      "the savepoints")) != BS_OK)
        return rc;
    bs_savepoint *sp = &txn->sp[txn->nsp];
    memset(sp, 0, sizeof *sp);
    sp->buckets = malloc(txn->nbuckets * sizeof *sp->buckets);
    if (!sp->buckets)
        return bs_fail(BS_NOMEM, "out of memory");
    for (size_t i = 0; i < txn->nbuckets; i++)
        sp->buckets[i] = *txn->buckets[i];
    sp->nbuckets = txn->nbuckets;
    sp->catalog = txn->catalog;
    if ((rc = pager_savepoint(txn, sp)) != BS_OK) {
        free(sp->buckets);
        sp->buckets = NULL;
        return rc;
    }
    txn->nsp++;
    return BS_OK;
}

int bs_txn_rollback(bs_txn *txn)
{
    if (!txn->write || !txn->nsp)
        return bs_fail(BS_MISUSE, "no savepoint to roll back to");
    bs_savepoint *sp = &txn->sp[txn->nsp - 1];
    int rc = pager_rollback(txn, sp);
    if (rc)
        return rc; /* nothing changed: the savepoint is still there */
    for (size_t i = 0; i < txn->nbuckets; i++) {
        if (i < sp->nbuckets) {
            *txn->buckets[i] = sp->buckets[i];
        } else {
            /* opened after the savepoint: its record in the (restored) catalog is the truth
             * again, whether it was created, dropped or re-created since: reload it on next
             * use (a bucket created after the savepoint is then simply not found) */
            bs_bucket *b = txn->buckets[i];
            b->stale = true;
            b->dropped = true;
            memset(&b->tree, 0, sizeof(bs_tree));
        }
    }
    txn->catalog = sp->catalog;
    free(sp->buckets);
    txn->nsp--;
    txn->mod_seq++;
    /* a failure inside the savepoint is undone with it */
    txn->failed = false;
    return BS_OK;
}

int bs_txn_release(bs_txn *txn)
{
    if (!txn->write || !txn->nsp)
        return bs_fail(BS_MISUSE, "no savepoint to release");
    bs_savepoint *sp = &txn->sp[txn->nsp - 1];
    int rc = pager_release(txn, sp);
    if (rc)
        return rc; /* nothing changed: the savepoint is still there */
    free(sp->buckets);
    txn->nsp--;
    return BS_OK;
}

static int release_all_savepoints(bs_txn *txn)
{
    int rc = BS_OK;
    while (txn->nsp && (rc = bs_txn_release(txn)) == BS_OK)
        ;
    return rc;
}

/* ------------------------------------------------------------------ buckets */

static int bucket_reload(bs_txn *txn, bs_bucket *b);

static int check_name(const void *name, size_t nlen)
{
    if (!name || nlen < 1 || nlen > BS_MAX_NAME)
        return bs_fail(BS_MISUSE, "bucket names are 1 to 255 bytes, not %zu", name ? nlen : 0);
    return BS_OK;
}

static bs_bucket *find_handle(bs_txn *txn, const void *name, size_t nlen)
{
    for (size_t i = 1; i < txn->nbuckets; i++) {
        bs_bucket *b = txn->buckets[i];
        if (b->nlen == nlen && memcmp(b->name, name, nlen) == 0)
            return b;
    }
    return NULL;
}

/* The result of a read that used pages in place (map.h): when the mapping was damaged
 * meanwhile (SIGBUS: a page turned to zeros under us), whatever the read concluded from those
 * bytes (not found, corruption, even success) becomes BS_IOERR. */
static inline int map_rc(bs_txn *txn, int rc)
{
    if (BS_UNLIKELY(txn->db->map != NULL) && rc != BS_WOULDBLOCK) {
        int mrc = pager_map_check(txn);
        if (mrc)
            return mrc;
    }
    return rc;
}

static int bucket_open_named(bs_txn *txn, const void *name, size_t nlen, int create,
                             bs_bucket **out);

int bs_bucket_open(bs_txn *txn, const void *name, size_t nlen, int create, bs_bucket **out)
{
    if (!name) { /* every lookup of the default bucket: no frame to set up */
        *out = txn->buckets[0];
        return BS_OK;
    }
    return bucket_open_named(txn, name, nlen, create, out);
}

static int bucket_open_named(bs_txn *txn, const void *name, size_t nlen, int create,
                             bs_bucket **out)
{
    int rc;
    if ((rc = check_name(name, nlen)) != BS_OK || (rc = txn_usable(txn)) != BS_OK)
        return rc;
    bs_bucket *b = find_handle(txn, name, nlen);
    if (b && b->dropped && b->stale) {
        rc = bucket_reload(txn, b);
        if (rc != BS_OK && rc != BS_NOBUCKET)
            return rc;
    }
    if (b && !b->dropped) {
        *out = b;
        return BS_OK;
    }
    bs_tree t = {0};
    if (!b) {
        rc = map_rc(txn, catalog_lookup(txn, name, nlen, &t));
        if (rc == BS_OK)
            return bucket_handle_new(txn, name, nlen, &t, out);
        if (rc != BS_NOTFOUND)
            return rc;
    }
    if (!create)
        return bs_fail(BS_NOBUCKET, "bucket '%.*s' does not exist", (int)nlen, (const char *)name);
    if (!txn->write)
        return bs_fail(BS_READONLY, "creating a bucket needs a write transaction");
    uint8_t rec[BREC_SIZE];
    encode_record(&t, rec);
    rc = btree_put(txn, &txn->catalog, name, nlen, rec, BREC_SIZE, 0);
    if (rc) {
        if (rc != BS_WOULDBLOCK)
            txn->failed = true;
        return rc;
    }
    if (b) { /* dropped earlier in this transaction: the name comes back, empty */
        b->dropped = false;
        b->tree = t;
    } else if ((rc = bucket_handle_new(txn, name, nlen, &t, &b)) != BS_OK) {
        txn->failed = true;
        return rc;
    }
    b->tree.dirty = true;
    txn->mod_seq++;
    *out = b;
    return BS_OK;
}

int bs_bucket_drop(bs_txn *txn, const void *name, size_t nlen)
{
    int rc;
    bs_bucket *b;
    if (!txn->write)
        return bs_fail(BS_READONLY, "dropping a bucket needs a write transaction");
    if ((rc = bs_bucket_open(txn, name, nlen, 0, &b)) != BS_OK)
        return rc;
    if (txn->noio)
        return BS_WOULDBLOCK; /* freeing walks the whole tree */
    if ((rc = btree_free_all(txn, &b->tree)) != BS_OK ||
        (rc = btree_del(txn, &txn->catalog, name, nlen)) != BS_OK) {
        txn->failed = true;
        return rc;
    }
    b->dropped = true;
    memset(&b->tree, 0, sizeof b->tree);
    txn->mod_seq++;
    return BS_OK;
}

int bs_bucket_list(bs_txn *txn, int (*fn)(void *ctx, const void *name, size_t nlen), void *ctx)
{
    bs_cursor cur;
    int rc;
    memset(&cur, 0, sizeof cur);
    cur.txn = txn;
    cur.tree = &txn->catalog;
    rc = btree_cursor_seek(&cur, BS_SEEK_FIRST, NULL, 0);
    while (rc == BS_OK) {
        bs_val k, v;
        if ((rc = btree_cursor_current(&cur, &k, &v)) != BS_OK)
            break;
        if (fn(ctx, k.data, k.len))
            break;
        rc = btree_cursor_step(&cur, 1);
    }
    free(cur.kbuf);
    return rc == BS_NOTFOUND ? BS_OK : rc;
}

static int bucket_reload(bs_txn *txn, bs_bucket *b)
{
    bs_tree t;
    int rc = catalog_lookup(txn, b->name, b->nlen, &t);
    if (rc == BS_NOTFOUND) {
        b->stale = false;
        return bs_fail(BS_NOBUCKET, "bucket '%.*s' does not exist", (int)b->nlen,
                       (const char *)b->name);
    }
    if (rc != BS_OK)
        return rc;
    b->tree = t;
    b->stale = false;
    b->dropped = false;
    return BS_OK;
}

static int bucket_ok(bs_txn *txn, bs_bucket *b)
{
    if (BS_UNLIKELY(b->dropped)) {
        if (b->stale)
            return bucket_reload(txn, b);
        return bs_fail(BS_NOBUCKET, "bucket '%.*s' was dropped", (int)b->nlen, (const char *)b->name);
    }
    return txn_usable(txn);
}

int bs_bucket_count(bs_txn *txn, bs_bucket *b, uint64_t *out)
{
    int rc = bucket_ok(txn, b);
    if (rc)
        return rc;
    *out = b->tree.count;
    return BS_OK;
}

/* ------------------------------------------------------------------ data */

int bs_get(bs_txn *txn, bs_bucket *b, const void *key, size_t klen, bs_val *val)
{
    int rc = bucket_ok(txn, b);
    if (rc)
        return rc;
    if (klen > fmt_max_key(txn->db->page_size))
        return BS_NOTFOUND;
    return btree_get(txn, &b->tree, key, klen, val); /* (which ends with map_rc's check) */
}

int bs_read_value(bs_txn *txn, const bs_val *val, void *dst)
{
    if (val->data) {
        memcpy(dst, val->data, val->len);
        return bs_txn_copied(txn);
    }
    return pager_ov_read(txn, val->ovpgno, val->ovtxid, val->len, dst);
}

int bs_txn_copied(bs_txn *txn)
{
    return map_rc(txn, BS_OK);
}

static int write_prologue(bs_txn *txn, bs_bucket *b, size_t klen)
{
    int rc;
    if (!txn->write)
        return bs_fail(BS_READONLY, "the transaction is read-only");
    if ((rc = bucket_ok(txn, b)) != BS_OK)
        return rc;
    if (klen > fmt_max_key(txn->db->page_size))
        return bs_fail(BS_TOOBIG, "key of %zu bytes is over the limit of %u bytes", klen,
                       fmt_max_key(txn->db->page_size));
    if (pager_spill_due(txn)) {
        if (txn->noio)
            return BS_WOULDBLOCK;
        if ((rc = pager_spill(txn)) != BS_OK)
            return rc;
    }
    return BS_OK;
}

static int write_epilogue(bs_txn *txn, int rc)
{
    if (rc != BS_OK && rc != BS_NOTFOUND && rc != BS_EXISTS && rc != BS_WOULDBLOCK &&
        rc != BS_TOOBIG)
        txn->failed = true; /* a change may have stopped half way */
    return rc;
}

int bs_put(bs_txn *txn, bs_bucket *b, const void *key, size_t klen, const void *val,
           size_t vlen, unsigned flags)
{
    int rc = write_prologue(txn, b, klen);
    if (rc)
        return rc;
    if ((uint64_t)vlen > UINT32_MAX)
        return bs_fail(BS_TOOBIG, "value of %zu bytes is over the limit of 4294967295 bytes", vlen);
    return write_epilogue(txn, btree_put(txn, &b->tree, key, klen, val, vlen, flags));
}

int bs_del(bs_txn *txn, bs_bucket *b, const void *key, size_t klen)
{
    int rc = write_prologue(txn, b, 0);
    if (rc)
        return rc;
    if (klen > fmt_max_key(txn->db->page_size))
        return BS_NOTFOUND;
    return write_epilogue(txn, btree_del(txn, &b->tree, key, klen));
}

void bs_hint_start(bs_hint *h)
{
    memset(h, 0, sizeof *h);
}

void bs_hint_step(bs_txn *txn, bs_bucket *b, bs_hint *h, const void *key, size_t klen)
{
    if (b->dropped || txn->failed)
        return;
    if (key && klen > fmt_max_key(txn->db->page_size))
        key = NULL;
    btree_hint(txn, &b->tree, h, key, klen);
}

/* ------------------------------------------------------------------ cursors */

int bs_cursor_open(bs_txn *txn, bs_bucket *b, bs_cursor **out)
{
    int rc = bucket_ok(txn, b);
    if (rc)
        return rc;
    bs_cursor *cur = calloc(1, sizeof *cur);
    if (!cur)
        return bs_fail(BS_NOMEM, "out of memory");
    cur->txn = txn;
    cur->tree = &b->tree;
    *out = cur;
    return BS_OK;
}

void bs_cursor_close(bs_cursor *cur)
{
    if (!cur)
        return;
    free(cur->kbuf);
    free(cur);
}

static bs_bucket *cursor_bucket(bs_cursor *cur)
{
    return (bs_bucket *)((char *)cur->tree - offsetof(bs_bucket, tree));
}

int bs_cursor_seek(bs_cursor *cur, int op, const void *key, size_t klen)
{
    int rc = bucket_ok(cur->txn, cursor_bucket(cur));
    if (rc)
        return rc;
    if (op < BS_SEEK_GE || op > BS_SEEK_LAST)
        return bs_fail(BS_MISUSE, "bad seek operation %d", op);
    return map_rc(cur->txn, btree_cursor_seek(cur, op, key, klen));
}

int bs_cursor_next(bs_cursor *cur)
{
    int rc = bucket_ok(cur->txn, cursor_bucket(cur));
    return rc ? rc : map_rc(cur->txn, btree_cursor_step(cur, 1));
}

int bs_cursor_prev(bs_cursor *cur)
{
    int rc = bucket_ok(cur->txn, cursor_bucket(cur));
    return rc ? rc : map_rc(cur->txn, btree_cursor_step(cur, -1));
}

int bs_cursor_current(bs_cursor *cur, bs_val *key, bs_val *val)
{
    int rc = bucket_ok(cur->txn, cursor_bucket(cur));
    return rc ? rc : map_rc(cur->txn, btree_cursor_current(cur, key, val));
}

/* ------------------------------------------------------------------ stat / check */

int bs_db_stat(bs_db *db, bs_stat *st)
{
    if (forked(db))
        return fail_forked();
    memset(st, 0, sizeof *st);
    uint64_t nr;
    int rc;
    if (db->lf && (rc = reader_refresh(db)) != BS_OK) /* what other processes committed */
        return rc;
    uint64_t fnr = 0, foreign = db->lf ? lockfile_oldest(db->lf, &fnr) : UINT64_MAX;
    pthread_mutex_lock(&db->mu);
    bs_meta m = db->meta;
    uint64_t oldest = oldest_reader_locked(db, &nr);
    nr += fnr; /* other handles (and processes) count as one reader each */
    if (foreign < oldest)
        oldest = foreign;
    st->pinned_pages = nr ? freelist_pinned(&db->fl, oldest - 1) : 0;
    pthread_mutex_unlock(&db->mu);
    st->page_size = db->page_size;
    st->page_count = m.page_count;
    st->free_pages = m.fl_count;
    st->depth = m.main.depth;
    st->entries = m.main.count;
    st->txid = m.txid;
    st->buckets = m.catalog.count;
    st->readers = nr;
    st->oldest_reader = nr ? oldest - 1 : 0;
    st->durable_txid = atomic_load(&db->durable_txid);
    cache_stats(db->cache, &st->cache_pages, &st->cache_hits, &st->cache_misses);
    st->cache_retired = cache_retired(db->cache);
    int err = db->io->size(db->file, &st->file_size);
    if (err)
        return bs_fail_io(err, "reading the file size");
    return BS_OK;
}

int bs_db_sync(bs_db *db)
{
    if (forked(db))
        return fail_forked();
    if (db->readonly)
        return BS_OK;
    pthread_mutex_lock(&db->mu);
    bs_meta m = db->meta; /* published: every write of this commit has been issued */
    pthread_mutex_unlock(&db->mu);
    int rc = db_sync_file(db);
    if (rc != BS_OK)
        return rc;
    /* Move the horizon only while no writer is active: the horizon and its slot belong to
     * the writer, which picks its meta slot from them (keeping it is always safe). */
    pthread_mutex_lock(&db->wmu);
    if (db->lf && !db->writer_active) {
        /* shared horizon: only under the write lock, and only the announced commit (a
         * newer one than what we synced may exist) */
        if (lockfile_write_lock(db->lf, 0) == BS_OK) {
            lf_header *h = db->lf->hdr;
            uint64_t lt = atomic_load(&h->latest_txid);
            if (lt > atomic_load(&h->durable_txid) && !atomic_load(&h->committing) &&
                db->io->sync(db->file) == 0) {
                atomic_store(&h->durable_slot, atomic_load(&h->latest_slot));
                atomic_store(&h->durable_txid, lt);
            }
            atomic_store(&db->durable_txid, atomic_load(&h->durable_txid));
            db->durable_slot = atomic_load(&h->durable_slot);
            lockfile_write_unlock(db->lf);
        }
        bs_clear_error();
    } else if (!db->writer_active && m.txid > atomic_load(&db->durable_txid)) {
        atomic_store(&db->durable_txid, m.txid);
        db->durable_slot = m.slot;
    }
    pthread_mutex_unlock(&db->wmu);
    return BS_OK;
}

int bs_db_check(bs_db *db)
{
    bs_txn *txn;
    int rc = bs_txn_begin(db, 0, 0, &txn);
    if (rc)
        return rc;
    pager_enter(txn);
    rc = check_db(txn);
    pager_leave(txn);
    bs_txn_abort(txn);
    return rc;
}

int bs_db_check_report(bs_db *db, size_t max_problems,
                       int (*fn)(void *ctx, const char *problem), void *ctx)
{
    bs_txn *txn;
    int rc = bs_txn_begin(db, 0, 0, &txn);
    if (rc)
        return rc;
    pager_enter(txn);
    rc = check_db_report(txn, max_problems, fn, ctx);
    pager_leave(txn);
    bs_txn_abort(txn);
    return rc;
}

static int cmp_pgno(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* bs_db_repair: the free set is every page no tree of the newest commit reaches. The old
 * chain's readable pages are freed by the repair commit (they stay intact until it is
 * durable: a fallback to the commit before still finds them), the rest is reusable at once:
 * no other transaction of this handle is open, and the commit before is made durable first,
 * so neither a reader nor a fallback can need them. */
int bs_db_repair(bs_db *db, int *rebuilt)
{
    bs_txn *txn;
    bs_pgvec fr = {0}, oldchain = {0};
    int rc;
    if (rebuilt)
        *rebuilt = 0;
    if (forked(db))
        return fail_forked();
    if (db->readonly)
        return bs_fail(BS_READONLY, "repair rewrites the freelist: open the database writable");
    if ((rc = bs_txn_begin(db, BS_TXN_WRITE | BS_TXN_SYNC | BS_TXN_REPAIR_, 0, &txn)) != BS_OK) {
        if (rc == BS_LOCKED)
            rc = bs_fail(BS_LOCKED, "repair needs the write lock: a write transaction is active");
        return rc;
    }
    pthread_mutex_lock(&db->mu);
    size_t others = db->ntxn - 1;
    pthread_mutex_unlock(&db->mu);
    if (others) {
        rc = bs_fail(BS_MISUSE, "repair needs that no other transaction of this handle is open "
                     "(%zu open): end them first", others);
        goto out;
    }
    pager_enter(txn);
    rc = check_free_pages(txn, &fr, &oldchain);
    bool clean = false;
    if (rc == BS_OK && !db->fl_broken) {
        int crc = check_db(txn);
        if (crc == BS_OK)
            clean = true;
        else if (crc != BS_CORRUPT)
            rc = crc;
    }
    pager_leave(txn);
    if (rc != BS_OK || clean)
        goto out;
    if (txn->meta.txid > atomic_load(&db->durable_txid)) {
        int err = db->io->sync(db->file);
        if (err) {
            atomic_store(&db->panic, 1);
            rc = bs_fail_io(err, "syncing %s before the repair", db->path);
            goto out;
        }
        atomic_store(&db->durable_txid, txn->meta.txid);
        db->durable_slot = txn->meta.slot;
    }
    /* the new free set: fr minus the old chain, DESCENDING; the old chain freed by this txn */
    bs_pgvec sorted;
    if ((rc = pgvec_copy(&sorted, &oldchain)) != BS_OK)
        goto out;
    if (sorted.n)
        qsort(sorted.v, sorted.n, sizeof *sorted.v, cmp_pgno);
    size_t k = 0;
    for (size_t i = 0, j = 0; i < fr.n; i++) {
        while (j < sorted.n && sorted.v[j] < fr.v[i])
            j++;
        if (j == sorted.n || sorted.v[j] != fr.v[i])
            fr.v[k++] = fr.v[i];
    }
    fr.n = k;
    pgvec_free(&sorted);
    for (size_t i = 0; i < k / 2; i++) {
        uint64_t x = fr.v[i];
        fr.v[i] = fr.v[k - 1 - i];
        fr.v[k - 1 - i] = x;
    }
    pthread_mutex_lock(&db->mu); /* statistics read the pending groups under db->mu */
    freelist_destroy(&db->fl);
    db->fl.reusable = fr;
    pthread_mutex_unlock(&db->mu);
    memset(&fr, 0, sizeof fr);
    pgvec_free(&txn->freed);
    txn->freed = oldchain;
    memset(&oldchain, 0, sizeof oldchain);
    txn->repair = true;
    txn->mod_seq++;
    rc = bs_txn_commit(txn); /* frees txn */
    txn = NULL;
    if (rc == BS_OK && rebuilt)
        *rebuilt = 1;
out:
    if (txn)
        bs_txn_abort(txn);
    pgvec_free(&fr);
    pgvec_free(&oldchain);
    return rc;
}
