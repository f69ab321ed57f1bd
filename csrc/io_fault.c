/*
 * io_fault.c - fault-injecting I/O layer for tests: bs_io_fault + the bs_fault controller,
 * which models one MACHINE (its OS page cache, its disk, its directory entries).
 *
 * Layer: bottom of the engine; calls only the inner bs_io_methods table it wraps (normally
 * bs_io_posix) and the C library.
 *
 * Usage: bs_options.io = &bs_io_fault, bs_options.io_arg = a bs_fault from bs_fault_new().
 * Any number of files may be open on one controller at a time (several handles on one path
 * too: a new DB reopening a path after a crash). Free the controller only after every file
 * opened on it is closed. One mutex in the controller is held across each whole call
 * (including the inner I/O), so the state stays consistent when the engine calls from
 * several threads and several handles.
 *
 * Kinds counted: read_at (READ), write_at / writev_at (WRITE, one call each), sync (SYNC),
 * truncate (TRUNCATE). open, close, size, lock and sync_dir are never counted and never fail
 * by injection.
 *
 *   fail_nth   the n-th call of the masked kinds (counted from the moment it is set) fails with
 *              err without doing anything; sticky: every later such call fails too.
 *   fail_after after n more successful calls of the masked kinds, every such call fails with
 *              err (nothing done) until bs_fault_heal(). n = 0: the next call already fails.
 *   tear_nth   the n-th write call (counted from the moment it is set) writes only its first
 *              `keep` bytes, then returns EIO. fail_nth / fail_after win on the same call.
 *   kill_nth   the n-th call of the masked kinds (counted from the moment it is set) kills the
 *              process with SIGKILL before it does anything: a process dying at an exact point
 *              of the commit protocol, for tests with several processes on one file (the
 *              killed process's writes so far are in the OS page cache, as after a real kill).
 *   heal       turns fail_nth, fail_after, tear_nth and kill_nth off.
 *
 * The machine (while logging is on: bs_fault_powerloss(fc, 1, seed)). Writes go to the real
 * file at once (every handle sees them, as through a shared page cache), but the controller
 * keeps, PER PATH, the log of writes and truncates not yet made durable: each record saves
 * the bytes and the file size it changed. A successful sync of any handle on that path
 * forgets the path's log. Files created on the machine (open reported created) have an
 * unsynced directory entry until sync_dir is called for a path in the same directory.
 *   crash      the process dies: every handle open on the machine is dead from now on (every
 *              call but close fails with EIO; its descriptor and lock are released at once, so
 *              the path can be opened again). The logs stay: the OS cache survives a process.
 *              Closing a file (dead or not) keeps its log too.
 *   power_loss implies crash; then, for every path with a log: a file whose directory entry
 *              was never synced disappears (unlinked, log forgotten); otherwise every logged
 *              record is undone in reverse order (the file is exactly as at its last successful
 *              sync, or as when logging started), then some are applied again, by a splitmix64
 *              PRNG seeded with seed:
 *                drop     none: the file is as at its last sync.
 *                tear     the records in their original order, each independently applied
 *                         whole (1/3), lost (1/3) or torn (1/3): each 512-byte sector of it
 *                         (counted from its offset) reaches the disk with probability 1/2.
 *                         A torn truncate is lost.
 *                reorder  a subset: with probability 1/2 a prefix of random length (0..all),
 *                         else each record independently with probability 1/2; the subset is
 *                         applied whole in a random order (so a later write may land before
 *                         an earlier one it overlaps).
 *              Then every log is forgotten (the machine restarted; what is on disk is durable).
 *   replaced   a path whose file another file was renamed over outside the machine (compact()
 *              writes, fsyncs and renames its packed copy with the POSIX table): its log and
 *              unsynced directory entry are about the unlinked file, and are forgotten at the
 *              next open of the path or power loss (the file identity is its st_dev/st_ino,
 *              taken at an open while the path has no unsynced state).
 * bs_file is never completed as a type: this file casts it to its own fault_file.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"

enum { K_READ = 0, K_WRITE, K_SYNC, K_TRUNCATE, K_COUNT };

typedef struct fault_rec {
    int is_trunc;
    uint64_t off;       /* write: offset; truncate: new length */
    size_t len;         /* write: bytes written (new) */
    uint8_t *newb;      /* write: the bytes written */
    uint8_t *oldb;      /* write: bytes overwritten; truncate: bytes cut off */
    size_t oldlen;
    uint64_t size_before;
} fault_rec;

/* One path on the machine: its unsynced log and directory state. */
typedef struct fault_path {
    struct fault_path *next;
    char *path;
    int dir_unsynced;   /* created on the machine, its directory never synced since */
    fault_rec *log;     /* changes since the last successful sync */
    size_t nlog, caplog;
    int have_id;        /* dev/ino: the file the log and dir_unsynced are about */
    dev_t dev;
    ino_t ino;
} fault_path;

typedef struct fault_file {
    struct bs_fault *fc;  /* NULL if the controller was freed first (misuse) */
    struct fault_file *next; /* the controller's list of open handles */
    const bs_io_methods *io; /* the inner table */
    bs_file *inner;     /* NULL once dead (closed by the crash) */
    fault_path *fp;
    int dead;           /* crashed: every call fails with EIO */
} fault_file;

struct bs_fault {
    const bs_io_methods *inner;
    pthread_mutex_t mu;
    uint64_t count[K_COUNT];
    /* fail_nth */
    unsigned fail_mask;
    uint64_t fail_n, fail_seen;
    int fail_err, fail_sticky, fail_done;
    /* fail_after */
    unsigned fa_mask;
    uint64_t fa_left;
    int fa_err;
    /* tear_nth */
    uint64_t tear_n, tear_seen;
    size_t tear_keep;
    /* kill_nth */
    unsigned kill_mask;
    uint64_t kill_n, kill_seen;
    /* the machine */
    int pl_on;
    uint64_t pl_seed;
    int fired;
    fault_file *files;  /* open handles */
    fault_path *paths;
};

static inline fault_file *ff_of(bs_file *f) { return (fault_file *)(void *)f; }

static void fault_log_clear(fault_path *fp)
{
    for (size_t i = 0; i < fp->nlog; i++) {
        free(fp->log[i].newb);
        free(fp->log[i].oldb);
    }
    free(fp->log);
    fp->log = NULL;
    fp->nlog = fp->caplog = 0;
}

/* The record of path (created if missing; NULL when out of memory). Called with mu held. */
static fault_path *fault_path_get(bs_fault *fc, const char *path)
{
    for (fault_path *p = fc->paths; p; p = p->next)
        if (strcmp(p->path, path) == 0)
            return p;
    fault_path *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    if (!(p->path = strdup(path))) {
        free(p);
        return NULL;
    }
    p->next = fc->paths;
    fc->paths = p;
    return p;
}

/* The identity of the file now at fp->path (0; ENOENT when there is none). */
static int fault_path_stat(const fault_path *fp, dev_t *dev, ino_t *ino)
{
    struct stat st;
    if (stat(fp->path, &st) != 0)
        return errno;
    *dev = st.st_dev;
    *ino = st.st_ino;
    return 0;
}

/* True when fp has unsynced state (a log, an unsynced directory entry) about a file that no
 * longer has its name: another file was renamed over it outside the machine (compact()
 * writes its packed copy with the POSIX table, fsyncs it and renames it into place). That
 * state is moot: the file it was about is unlinked, and the one with the name is durable as
 * it is. Called with mu held. */
static int fault_path_replaced(const fault_path *fp)
{
    dev_t dev = 0;
    ino_t ino = 0;
    if (!fp->have_id || (!fp->nlog && !fp->dir_unsynced))
        return 0;
    if (fault_path_stat(fp, &dev, &ino) != 0)
        return 0; /* removed: handled by the caller */
    return dev != fp->dev || ino != fp->ino;
}

/* After the inner open of fp's path worked: take the identity of the file opened when fp
 * has no unsynced state, forget that state when it is about a replaced file. */
static void fault_path_opened(fault_path *fp)
{
    if (fault_path_replaced(fp)) {
        fault_log_clear(fp);
        fp->dir_unsynced = 0;
    }
    if (!fp->nlog && !fp->dir_unsynced)
        fp->have_id = fault_path_stat(fp, &fp->dev, &fp->ino) == 0;
}

/* ---- controller API ---- */

bs_fault *bs_fault_new(const bs_io_methods *inner)
{
    bs_fault *fc = calloc(1, sizeof *fc);
    if (!fc)
        return NULL;
    if (pthread_mutex_init(&fc->mu, NULL) != 0) {
        free(fc);
        return NULL;
    }
    fc->inner = inner ? inner : &bs_io_posix;
    return fc;
}

void bs_fault_free(bs_fault *fc)
{
    if (!fc)
        return;
    for (fault_file *f = fc->files; f; f = f->next)
        f->fc = NULL; /* misuse: file still open; every call on it fails with EIO */
    for (fault_path *p = fc->paths, *n; p; p = n) {
        n = p->next;
        fault_log_clear(p);
        free(p->path);
        free(p);
    }
    pthread_mutex_destroy(&fc->mu);
    free(fc);
}

void bs_fault_fail_nth(bs_fault *fc, unsigned mask, uint64_t n, int err, int sticky)
{
    pthread_mutex_lock(&fc->mu);
    fc->fail_mask = mask & BS_FAULT_ANY;
    fc->fail_n = n;
    fc->fail_seen = 0;
    fc->fail_err = err > 0 ? err : EIO;
    fc->fail_sticky = sticky;
    fc->fail_done = 0;
    pthread_mutex_unlock(&fc->mu);
}

void bs_fault_fail_after(bs_fault *fc, unsigned mask, uint64_t n, int err)
{
    pthread_mutex_lock(&fc->mu);
    fc->fa_mask = mask & BS_FAULT_ANY;
    fc->fa_left = n;
    fc->fa_err = err > 0 ? err : EIO;
    pthread_mutex_unlock(&fc->mu);
}

void bs_fault_heal(bs_fault *fc)
{
    pthread_mutex_lock(&fc->mu);
    fc->fail_mask = 0;
    fc->fail_n = 0;
    fc->fail_done = 0;
    fc->fa_mask = 0;
    fc->tear_n = 0;
    fc->kill_n = 0;
    pthread_mutex_unlock(&fc->mu);
}

void bs_fault_kill_nth(bs_fault *fc, unsigned mask, uint64_t n)
{
    pthread_mutex_lock(&fc->mu);
    fc->kill_mask = mask & BS_FAULT_ANY;
    fc->kill_n = n;
    fc->kill_seen = 0;
    pthread_mutex_unlock(&fc->mu);
}

void bs_fault_tear_nth(bs_fault *fc, uint64_t n, size_t keep)
{
    pthread_mutex_lock(&fc->mu);
    fc->tear_n = n;
    fc->tear_seen = 0;
    fc->tear_keep = keep;
    pthread_mutex_unlock(&fc->mu);
}

void bs_fault_powerloss(bs_fault *fc, int on, uint64_t seed)
{
    pthread_mutex_lock(&fc->mu);
    fc->pl_on = on != 0;
    fc->pl_seed = seed;
    for (fault_path *p = fc->paths; p; p = p->next) {
        fault_log_clear(p); /* everything before now counts as durable */
        p->dir_unsynced = 0;
    }
    pthread_mutex_unlock(&fc->mu);
}

uint64_t bs_fault_count(bs_fault *fc, unsigned kind_mask)
{
    uint64_t n = 0;
    pthread_mutex_lock(&fc->mu);
    for (int k = 0; k < K_COUNT; k++)
        if (kind_mask & (1u << k))
            n += fc->count[k];
    pthread_mutex_unlock(&fc->mu);
    return n;
}

int bs_fault_fired(bs_fault *fc)
{
    pthread_mutex_lock(&fc->mu);
    int r = fc->fired;
    pthread_mutex_unlock(&fc->mu);
    return r;
}

uint64_t bs_fault_unsynced(bs_fault *fc, const char *path)
{
    uint64_t n = 0;
    pthread_mutex_lock(&fc->mu);
    for (fault_path *p = fc->paths; p; p = p->next)
        if (!path || strcmp(p->path, path) == 0)
            n += p->nlog + (p->dir_unsynced ? 1 : 0);
    pthread_mutex_unlock(&fc->mu);
    return n;
}

static uint64_t fault_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Kill every handle (mu held): the process died. Returns how many were alive. */
static int fault_kill_all(bs_fault *fc)
{
    int n = 0;
    for (fault_file *f = fc->files; f; f = f->next) {
        if (f->dead)
            continue;
        f->dead = 1;
        n++;
        if (f->inner) {
            (void)f->io->close(f->inner, 0); /* a dead process's descriptors and locks go */
            f->inner = NULL;
        }
    }
    if (n)
        fc->fired = 1;
    return n;
}

int bs_fault_crash(bs_fault *fc)
{
    pthread_mutex_lock(&fc->mu);
    int n = fault_kill_all(fc);
    pthread_mutex_unlock(&fc->mu);
    return n;
}

/* Apply a logged write (whole, or only the sectors in the mask when torn). */
static int fault_apply_write(const bs_io_methods *io, bs_file *f, const fault_rec *e, int torn,
                             uint64_t *s)
{
    if (!torn)
        return e->len ? io->write_at(f, e->newb, e->len, e->off) : 0;
    int rc = 0;
    for (size_t pos = 0; pos < e->len; pos += 512) {
        size_t l = e->len - pos < 512 ? e->len - pos : 512;
        if ((fault_rand(s) & 1) && !rc)
            rc = io->write_at(f, e->newb + pos, l, e->off + pos);
    }
    return rc;
}

static int fault_apply(const bs_io_methods *io, bs_file *f, const fault_rec *e, int torn,
                       uint64_t *s)
{
    if (e->is_trunc)
        return torn ? 0 : io->truncate(f, e->off);
    return fault_apply_write(io, f, e, torn, s);
}

/* Power loss on one path (mu held; no handle is alive). */
static int fault_powerloss_path(bs_fault *fc, fault_path *fp, int mode, uint64_t *s)
{
    const bs_io_methods *io = fc->inner;
    int rc = 0, r;
    if (fault_path_replaced(fp)) { /* about a file that lost its name: nothing to lose */
        fp->dir_unsynced = 0;
        fault_log_clear(fp);
        return 0;
    }
    if (fp->dir_unsynced) {
        if (unlink(fp->path) != 0 && errno != ENOENT)
            rc = errno;
        fp->dir_unsynced = 0;
        fault_log_clear(fp);
        return rc;
    }
    if (!fp->nlog)
        return 0;
    bs_file *f = NULL;
    int created = 0;
    if ((r = io->open(NULL, fp->path, 0, 0, &f, &created)) != 0) {
        fault_log_clear(fp);
        return r == ENOENT ? 0 : r; /* removed meanwhile: nothing to lose */
    }
    for (size_t i = fp->nlog; i-- > 0;) {
        fault_rec *e = &fp->log[i];
        if (e->is_trunc) {
            if ((r = io->truncate(f, e->size_before)) && !rc)
                rc = r;
            if (e->oldlen && (r = io->write_at(f, e->oldb, e->oldlen, e->off)) && !rc)
                rc = r;
        } else {
            if (e->oldlen && (r = io->write_at(f, e->oldb, e->oldlen, e->off)) && !rc)
                rc = r;
            if ((r = io->truncate(f, e->size_before)) && !rc)
                rc = r;
        }
    }
    size_t n = fp->nlog, m = 0;
    size_t *pick = malloc((n ? n : 1) * sizeof *pick);
    if (!pick) {
        rc = rc ? rc : ENOMEM;
        goto out;
    }
    if (mode == BS_POWERLOSS_TEAR) {
        for (size_t i = 0; i < n; i++) {
            uint64_t x = fault_rand(s) % 3;
            if (x == 1)
                continue; /* lost */
            if ((r = fault_apply(io, f, &fp->log[i], x == 2, s)) && !rc)
                rc = r;
        }
    } else if (mode == BS_POWERLOSS_REORDER) {
        if (fault_rand(s) & 1) {
            m = (size_t)(fault_rand(s) % (n + 1));
            for (size_t i = 0; i < m; i++)
                pick[i] = i;
        } else {
            for (size_t i = 0; i < n; i++)
                if (fault_rand(s) & 1)
                    pick[m++] = i;
        }
        for (size_t i = m; i > 1; i--) { /* Fisher-Yates */
            size_t j = (size_t)(fault_rand(s) % i);
            size_t t = pick[i - 1];
            pick[i - 1] = pick[j];
            pick[j] = t;
        }
        for (size_t k = 0; k < m; k++)
            if ((r = fault_apply(io, f, &fp->log[pick[k]], 0, s)) && !rc)
                rc = r;
    }
    free(pick);
out:
    if ((r = io->sync(f)) && !rc)
        rc = r;
    if ((r = io->close(f, 0)) && !rc)
        rc = r;
    fault_log_clear(fp);
    return rc;
}

int bs_fault_power_loss(bs_fault *fc, int mode, uint64_t seed)
{
    if (mode != BS_POWERLOSS_DROP && mode != BS_POWERLOSS_TEAR && mode != BS_POWERLOSS_REORDER)
        return EINVAL;
    pthread_mutex_lock(&fc->mu);
    fault_kill_all(fc);
    fc->fired = 1;
    uint64_t s = seed;
    int rc = 0, r;
    for (fault_path *p = fc->paths; p; p = p->next)
        if ((r = fault_powerloss_path(fc, p, mode, &s)) && !rc)
            rc = r;
    pthread_mutex_unlock(&fc->mu);
    return rc;
}

/* ---- injection decisions (called with fc->mu held) ---- */

/* Count a call of kind k; return the injected error or 0. */
static int fault_check(bs_fault *fc, int k)
{
    unsigned bit = 1u << k;
    fc->count[k]++;
    if (fc->kill_n && (fc->kill_mask & bit) && ++fc->kill_seen == fc->kill_n) {
        (void)kill(getpid(), SIGKILL); /* does not return */
        for (;;)
            pause();
    }
    if (fc->fa_mask & bit) {
        if (!fc->fa_left) {
            fc->fired = 1;
            return fc->fa_err;
        }
        fc->fa_left--;
    }
    if (!fc->fail_n || !(fc->fail_mask & bit))
        return 0;
    fc->fail_seen++;
    if ((fc->fail_done && fc->fail_sticky) || fc->fail_seen == fc->fail_n) {
        fc->fail_done = 1;
        fc->fired = 1;
        return fc->fail_err;
    }
    return 0;
}

/* Enter a call on ff: lock; fail with EIO if crashed or orphaned. */
static int fault_enter(fault_file *ff, bs_fault **fcp)
{
    bs_fault *fc = ff->fc;
    *fcp = fc;
    if (!fc)
        return 0;
    pthread_mutex_lock(&fc->mu);
    return ff->dead || !ff->inner ? EIO : 0;
}

static void fault_leave(bs_fault *fc)
{
    if (fc)
        pthread_mutex_unlock(&fc->mu);
}

static int fault_log_push(fault_file *ff, fault_rec *e)
{
    fault_path *fp = ff->fp;
    if (fp->nlog == fp->caplog) {
        size_t cap = fp->caplog ? fp->caplog * 2 : 16;
        fault_rec *v = realloc(fp->log, cap * sizeof *v);
        if (!v)
            return ENOMEM;
        fp->log = v;
        fp->caplog = cap;
    }
    fp->log[fp->nlog++] = *e;
    return 0;
}

/* Powerloss: before writing buf[0..len) at off, save what it overwrites. The record is
 * pushed (taking ownership of copies) only by fault_log_commit after the write. */
static int fault_log_prepare(bs_fault *fc, fault_file *ff, const uint8_t *buf, size_t len,
                             uint64_t off, fault_rec *e)
{
    int rc;
    memset(e, 0, sizeof *e);
    e->off = off;
    e->len = len;
    if ((rc = fc->inner->size(ff->inner, &e->size_before)) != 0)
        return rc;
    if (len == 0)
        return 0;
    e->newb = malloc(len);
    e->oldb = malloc(len);
    if (!e->newb || !e->oldb) {
        rc = ENOMEM;
        goto fail;
    }
    memcpy(e->newb, buf, len);
    if (off < e->size_before) {
        size_t got = 0;
        if ((rc = fc->inner->read_at(ff->inner, e->oldb, len, off, &got)) != 0)
            goto fail;
        e->oldlen = got;
    }
    return 0;
fail:
    free(e->newb);
    free(e->oldb);
    e->newb = e->oldb = NULL;
    return rc;
}

static void fault_rec_free(fault_rec *e)
{
    free(e->newb);
    free(e->oldb);
    e->newb = e->oldb = NULL;
}

/* ---- the bs_io_methods table ---- */

static int fault_open(void *arg, const char *path, int readonly, int create, bs_file **out,
                      int *created)
{
    bs_fault *fc = arg;
    int created_here = 0;
    *out = NULL;
    if (!fc)
        return EINVAL;
    if (!created)
        created = &created_here;
    pthread_mutex_lock(&fc->mu);
    int rc = 0;
    fault_file *ff = calloc(1, sizeof *ff);
    fault_path *fp = fault_path_get(fc, path);
    if (!ff || !fp) {
        free(ff);
        rc = ENOMEM;
        goto out;
    }
    if ((rc = fc->inner->open(NULL, path, readonly, create, &ff->inner, created)) != 0) {
        free(ff);
        goto out;
    }
    if (*created) {
        fault_log_clear(fp); /* a new file: what an older one of that name did is moot */
        fp->dir_unsynced = 0;
        fault_path_opened(fp);
        fp->dir_unsynced = fc->pl_on;
    } else {
        fault_path_opened(fp);
    }
    ff->fc = fc;
    ff->io = fc->inner;
    ff->fp = fp;
    ff->next = fc->files;
    fc->files = ff;
    *out = (bs_file *)(void *)ff;
out:
    pthread_mutex_unlock(&fc->mu);
    return rc;
}

static int fault_close(bs_file *f, int forked)
{
    if (!f)
        return 0;
    fault_file *ff = ff_of(f);
    bs_fault *fc = ff->fc;
    if (fc)
        pthread_mutex_lock(&fc->mu);
    int rc = ff->inner ? ff->io->close(ff->inner, forked) : 0;
    if (fc) {
        for (fault_file **pp = &fc->files; *pp; pp = &(*pp)->next)
            if (*pp == ff) {
                *pp = ff->next;
                break;
            }
        pthread_mutex_unlock(&fc->mu);
    }
    free(ff);
    return rc;
}

static int fault_read_at(bs_file *f, void *buf, size_t len, uint64_t off, size_t *got)
{
    fault_file *ff = ff_of(f);
    bs_fault *fc;
    int rc = fault_enter(ff, &fc);
    if (got)
        *got = 0;
    if (!fc)
        return EIO;
    if (!rc)
        rc = fault_check(fc, K_READ);
    if (!rc)
        rc = fc->inner->read_at(ff->inner, buf, len, off, got);
    fault_leave(fc);
    return rc;
}

/* Decide the fate of a write call: 0 go ahead (*keep = len), EIO after tearing at *keep, or
 * another injected error (nothing written). */
static int fault_write_decide(bs_fault *fc, size_t len, size_t *keep, int *tear)
{
    *keep = len;
    *tear = 0;
    int hit_tear = 0;
    if (fc->tear_n) {
        fc->tear_seen++;
        hit_tear = fc->tear_seen == fc->tear_n;
    }
    int rc = fault_check(fc, K_WRITE);
    if (rc)
        return rc;
    if (hit_tear) {
        *tear = 1;
        if (fc->tear_keep < len)
            *keep = fc->tear_keep;
        fc->fired = 1;
    }
    return 0;
}

/* Write the first `keep` bytes of the gathered write (flat buffer or iov), logging it first
 * when powerloss is on. */
static int fault_do_write(bs_fault *fc, fault_file *ff, const uint8_t *flat,
                          const struct iovec *iov, int iovcnt, size_t keep, size_t total,
                          uint64_t off)
{
    int rc = 0;
    uint8_t *tmp = NULL;
    fault_rec e;
    int logging = fc->pl_on;
    if (logging && !flat && keep) {
        /* gather the bytes for the log */
        tmp = malloc(keep);
        if (!tmp)
            return ENOMEM;
        size_t pos = 0;
        for (int i = 0; i < iovcnt && pos < keep; i++) {
            size_t n = iov[i].iov_len < keep - pos ? iov[i].iov_len : keep - pos;
            memcpy(tmp + pos, iov[i].iov_base, n);
            pos += n;
        }
        flat = tmp;
    }
    if (logging && (rc = fault_log_prepare(fc, ff, flat, keep, off, &e)) != 0)
        goto out;
    if (flat) {
        rc = fc->inner->write_at(ff->inner, flat, keep, off);
    } else if (keep == total) {
        rc = fc->inner->writev_at(ff->inner, iov, iovcnt, off);
    } else {
        /* torn writev: a shortened copy of the iov array */
        struct iovec *cut = malloc((size_t)(iovcnt ? iovcnt : 1) * sizeof *cut);
        if (!cut) {
            rc = ENOMEM;
        } else {
            int n = 0;
            size_t pos = 0;
            for (int i = 0; i < iovcnt && pos < keep; i++) {
                size_t l = iov[i].iov_len < keep - pos ? iov[i].iov_len : keep - pos;
                cut[n].iov_base = iov[i].iov_base;
                cut[n].iov_len = l;
                n++;
                pos += l;
            }
            rc = fc->inner->writev_at(ff->inner, cut, n, off);
            free(cut);
        }
    }
    if (logging) {
        /* log even a failed write: part of it may have reached the file */
        int lrc = fault_log_push(ff, &e);
        if (lrc) {
            fault_rec_free(&e);
            if (!rc)
                rc = lrc;
        }
    }
out:
    free(tmp);
    return rc;
}

static int fault_write_at(bs_file *f, const void *buf, size_t len, uint64_t off)
{
    fault_file *ff = ff_of(f);
    bs_fault *fc;
    int rc = fault_enter(ff, &fc);
    if (!fc)
        return EIO;
    size_t keep;
    int tear = 0;
    if (!rc)
        rc = fault_write_decide(fc, len, &keep, &tear);
    if (!rc)
        rc = fault_do_write(fc, ff, buf, NULL, 0, keep, len, off);
    if (!rc && tear)
        rc = EIO;
    fault_leave(fc);
    return rc;
}

static int fault_writev_at(bs_file *f, const struct iovec *iov, int iovcnt, uint64_t off)
{
    fault_file *ff = ff_of(f);
    bs_fault *fc;
    int rc = fault_enter(ff, &fc);
    if (!fc)
        return EIO;
    size_t total = 0, keep;
    int tear = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (!rc)
        rc = fault_write_decide(fc, total, &keep, &tear);
    if (!rc)
        rc = fault_do_write(fc, ff, NULL, iov, iovcnt, keep, total, off);
    if (!rc && tear)
        rc = EIO;
    fault_leave(fc);
    return rc;
}

static int fault_sync(bs_file *f)
{
    fault_file *ff = ff_of(f);
    bs_fault *fc;
    int rc = fault_enter(ff, &fc);
    if (!fc)
        return EIO;
    if (!rc)
        rc = fault_check(fc, K_SYNC);
    if (!rc)
        rc = fc->inner->sync(ff->inner);
    if (!rc)
        fault_log_clear(ff->fp); /* durable now */
    fault_leave(fc);
    return rc;
}

static int fault_size(bs_file *f, uint64_t *out)
{
    fault_file *ff = ff_of(f);
    bs_fault *fc;
    int rc = fault_enter(ff, &fc);
    if (!fc)
        return EIO;
    if (!rc)
        rc = fc->inner->size(ff->inner, out);
    fault_leave(fc);
    return rc;
}

static int fault_truncate(bs_file *f, uint64_t len)
{
    fault_file *ff = ff_of(f);
    bs_fault *fc;
    int rc = fault_enter(ff, &fc);
    if (!fc)
        return EIO;
    if (!rc)
        rc = fault_check(fc, K_TRUNCATE);
    if (rc)
        goto out;
    if (fc->pl_on) {
        fault_rec e;
        memset(&e, 0, sizeof e);
        e.is_trunc = 1;
        e.off = len;
        if ((rc = fc->inner->size(ff->inner, &e.size_before)) != 0)
            goto out;
        if (len < e.size_before) {
            size_t cut = (size_t)(e.size_before - len), got = 0;
            e.oldb = malloc(cut);
            if (!e.oldb) {
                rc = ENOMEM;
                goto out;
            }
            if ((rc = fc->inner->read_at(ff->inner, e.oldb, cut, len, &got)) != 0) {
                fault_rec_free(&e);
                goto out;
            }
            e.oldlen = got;
        }
        rc = fc->inner->truncate(ff->inner, len);
        int lrc = fault_log_push(ff, &e);
        if (lrc) {
            fault_rec_free(&e);
            if (!rc)
                rc = lrc;
        }
    } else {
        rc = fc->inner->truncate(ff->inner, len);
    }
out:
    fault_leave(fc);
    return rc;
}

static int fault_lock(bs_file *f, int kind)
{
    fault_file *ff = ff_of(f);
    bs_fault *fc;
    int rc = fault_enter(ff, &fc);
    if (!fc)
        return EIO;
    if (!rc)
        rc = fc->inner->lock(ff->inner, kind);
    fault_leave(fc);
    return rc;
}

/* Length of the directory part of path ("" -> 0 means the current directory). */
static size_t fault_dirlen(const char *path)
{
    const char *sl = strrchr(path, '/');
    return sl ? (size_t)(sl - path) : 0;
}

static int fault_sync_dir(void *arg, const char *path)
{
    bs_fault *fc = arg;
    if (!fc)
        return EINVAL;
    pthread_mutex_lock(&fc->mu);
    int rc = fc->inner->sync_dir(NULL, path);
    if (!rc) {
        size_t dl = fault_dirlen(path);
        for (fault_path *p = fc->paths; p; p = p->next)
            if (fault_dirlen(p->path) == dl && strncmp(p->path, path, dl) == 0)
                p->dir_unsynced = 0;
    }
    pthread_mutex_unlock(&fc->mu);
    return rc;
}

const bs_io_methods bs_io_fault = {
    .open = fault_open,
    .close = fault_close,
    .read_at = fault_read_at,
    .write_at = fault_write_at,
    .writev_at = fault_writev_at,
    .sync = fault_sync,
    .size = fault_size,
    .truncate = fault_truncate,
    .lock = fault_lock,
    .sync_dir = fault_sync_dir,
};
