/*
 * io_fault.c - fault-injecting I/O layer for tests (bs_io_fault + the bs_fault controller).
 *
 * Layer: bottom of the engine; calls only the inner bs_io_methods table it wraps (normally
 * bs_io_posix) and the C library.
 *
 * Usage: bs_options.io = &bs_io_fault, bs_options.io_arg = a bs_fault from bs_fault_new().
 * ONE controller serves ONE open file at a time: a second open while a file is open gives
 * EBUSY. Free the controller only after that file is closed.
 *
 * Kinds counted: read_at (READ), write_at / writev_at (WRITE, one call each), sync (SYNC),
 * truncate (TRUNCATE). open, close, size, lock and sync_dir are never counted and never fail
 * by injection (after a crash, every call on the crashed file but close fails with EIO).
 *
 *   fail_nth  the n-th call of the masked kinds (counted from the moment it is set) fails with
 *             err without doing anything; sticky: every later such call fails too.
 *   tear_nth  the n-th write call (counted from the moment it is set) writes only its first
 *             `keep` bytes, then returns EIO. fail_nth wins when both hit the same call.
 *   powerloss Writes go to the real file at once (reads must see them), but each one first
 *             saves the bytes and file size it changes; truncates save what they cut. A
 *             successful sync forgets the log (all durable). bs_fault_crash() undoes the log
 *             in reverse order (the file is then exactly as at the last successful sync, or
 *             as when powerloss/open started), then re-applies, in an order shuffled by a
 *             splitmix64 PRNG from the seed, each logged write whole (1/3), torn at a random
 *             512-byte multiple below its length (1/3, possibly nothing) or lost (1/3), and
 *             each logged truncate with probability 1/2. After that the file is dead: every
 *             call on it fails with EIO until it is closed. The log is per open file; closing
 *             the file forgets it (closed data counts as durable). Powerloss mode stays on
 *             for later opens until turned off.
 * A mutex in the controller is held across each whole call (including the inner I/O), so the
 * log stays consistent when the engine calls from several threads.
 * bs_file is never completed as a type: this file casts it to its own fault_file.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

typedef struct fault_file {
    struct bs_fault *fc;  /* NULL if the controller was freed first (misuse) */
    const bs_io_methods *io; /* the inner table */
    bs_file *inner;
    int dead;           /* crashed: every call fails with EIO */
    fault_rec *log;     /* powerloss: changes since the last successful sync */
    size_t nlog, caplog;
} fault_file;

struct bs_fault {
    const bs_io_methods *inner;
    pthread_mutex_t mu;
    uint64_t count[K_COUNT];
    /* fail_nth */
    unsigned fail_mask;
    uint64_t fail_n, fail_seen;
    int fail_err, fail_sticky, fail_done;
    /* tear_nth */
    uint64_t tear_n, tear_seen;
    size_t tear_keep;
    /* powerloss */
    int pl_on;
    uint64_t pl_seed;
    int fired;
    fault_file *file;   /* the one open file, or NULL */
};

static inline fault_file *ff_of(bs_file *f) { return (fault_file *)(void *)f; }

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
    if (fc->file)
        fc->file->fc = NULL; /* misuse: file still open; it keeps working without faults */
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

void bs_fault_tear_nth(bs_fault *fc, uint64_t n, size_t keep)
{
    pthread_mutex_lock(&fc->mu);
    fc->tear_n = n;
    fc->tear_seen = 0;
    fc->tear_keep = keep;
    pthread_mutex_unlock(&fc->mu);
}

static void fault_log_clear(fault_file *ff)
{
    for (size_t i = 0; i < ff->nlog; i++) {
        free(ff->log[i].newb);
        free(ff->log[i].oldb);
    }
    free(ff->log);
    ff->log = NULL;
    ff->nlog = ff->caplog = 0;
}

void bs_fault_powerloss(bs_fault *fc, int on, uint64_t seed)
{
    pthread_mutex_lock(&fc->mu);
    fc->pl_on = on != 0;
    fc->pl_seed = seed;
    if (fc->file)
        fault_log_clear(fc->file); /* everything before now counts as durable */
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

static uint64_t fault_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Undo the log (reverse order), then re-apply a random subset in random order. */
static int fault_crash_file(bs_fault *fc, fault_file *ff)
{
    const bs_io_methods *io = fc->inner;
    int rc = 0, r;
    for (size_t i = ff->nlog; i-- > 0;) {
        fault_rec *e = &ff->log[i];
        if (e->is_trunc) {
            if ((r = io->truncate(ff->inner, e->size_before)) && !rc)
                rc = r;
            if (e->oldlen && (r = io->write_at(ff->inner, e->oldb, e->oldlen, e->off)) && !rc)
                rc = r;
        } else {
            if (e->oldlen && (r = io->write_at(ff->inner, e->oldb, e->oldlen, e->off)) && !rc)
                rc = r;
            if ((r = io->truncate(ff->inner, e->size_before)) && !rc)
                rc = r;
        }
    }
    size_t n = ff->nlog;
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return rc ? rc : ENOMEM;
    uint64_t s = fc->pl_seed;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = n; i > 1; i--) { /* Fisher-Yates */
        size_t j = (size_t)(fault_rand(&s) % i);
        size_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    for (size_t k = 0; k < n; k++) {
        fault_rec *e = &ff->log[order[k]];
        uint64_t x = fault_rand(&s);
        if (e->is_trunc) {
            if ((x & 1) && (r = io->truncate(ff->inner, e->off)) && !rc)
                rc = r;
            continue;
        }
        size_t keep, chunks = (e->len + 511) / 512;
        switch (x % 3) {
        case 0: /* whole */
            keep = e->len;
            break;
        case 1: /* torn: a 512-byte multiple strictly below len (possibly 0) */
            keep = chunks ? (size_t)((x >> 8) % chunks) * 512 : 0;
            break;
        default: /* lost */
            keep = 0;
            break;
        }
        if (keep && (r = io->write_at(ff->inner, e->newb, keep, e->off)) && !rc)
            rc = r;
    }
    free(order);
    return rc;
}

int bs_fault_crash(bs_fault *fc)
{
    pthread_mutex_lock(&fc->mu);
    fault_file *ff = fc->file;
    int rc;
    if (!ff) {
        rc = EINVAL;
    } else if (ff->dead) {
        rc = 0; /* already crashed */
    } else {
        rc = fault_crash_file(fc, ff);
        fault_log_clear(ff);
        ff->dead = 1;
        fc->fired = 1;
    }
    pthread_mutex_unlock(&fc->mu);
    return rc;
}

/* ---- injection decisions (called with fc->mu held) ---- */

/* Count a call of kind k; return the injected error or 0. */
static int fault_check(bs_fault *fc, int k)
{
    unsigned bit = 1u << k;
    fc->count[k]++;
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
    return ff->dead ? EIO : 0;
}

static void fault_leave(bs_fault *fc)
{
    if (fc)
        pthread_mutex_unlock(&fc->mu);
}

static int fault_log_push(fault_file *ff, fault_rec *e)
{
    if (ff->nlog == ff->caplog) {
        size_t cap = ff->caplog ? ff->caplog * 2 : 16;
        fault_rec *v = realloc(ff->log, cap * sizeof *v);
        if (!v)
            return ENOMEM;
        ff->log = v;
        ff->caplog = cap;
    }
    ff->log[ff->nlog++] = *e;
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
    *out = NULL;
    if (!fc)
        return EINVAL;
    pthread_mutex_lock(&fc->mu);
    int rc = 0;
    fault_file *ff = NULL;
    if (fc->file) {
        rc = EBUSY;
        goto out;
    }
    ff = calloc(1, sizeof *ff);
    if (!ff) {
        rc = ENOMEM;
        goto out;
    }
    if ((rc = fc->inner->open(NULL, path, readonly, create, &ff->inner, created)) != 0) {
        free(ff);
        goto out;
    }
    ff->fc = fc;
    ff->io = fc->inner;
    fc->file = ff;
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
    int rc = ff->io->close(ff->inner, forked);
    fault_log_clear(ff);
    if (fc) {
        if (fc->file == ff)
            fc->file = NULL;
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
        fault_log_clear(ff); /* durable now */
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

static int fault_sync_dir(void *arg, const char *path)
{
    bs_fault *fc = arg;
    if (!fc)
        return EINVAL;
    return fc->inner->sync_dir(NULL, path);
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
