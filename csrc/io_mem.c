/*
 * io_mem.c - an in-memory "file" behind the I/O table (bs_io_mem): the database lives in one
 * growable heap buffer; no file, no fsync, no lock, nothing on the file system.
 *
 * Layer: bottom of the engine, beside io_posix.c; calls only the C library (and, to load an
 * image, open/pread/close on the path given as io_arg). Knows nothing about pages.
 *
 * - open(arg, path, ...): path is only a name (never touched). arg NULL: the file starts
 *   empty (*created = 1, so the engine creates a fresh database). arg non-NULL: a path
 *   (const char *) whose bytes are read into the buffer, so the engine opens that image and
 *   verifies it as it would the file (errors: the errno of open/read, ENOENT for a missing
 *   file, EISDIR for a directory).
 * - read_at / read_nowait copy out of the buffer (past the end: zero-filled, *got says how
 *   much was there); read_nowait never blocks, so the binding never releases the GIL for a
 *   memory database. write_at / writev_at grow the buffer (the gap, if any, reads as zeros);
 *   truncate shrinks or grows it; sync, sync_dir and lock do nothing and succeed.
 * - Threads: readers and the writer may call at the same time; a rwlock guards the buffer
 *   (reads share it, writes that may move the buffer take it exclusively).
 * - close frees the buffer: a memory database cannot be reopened. close(f, forked) in a child
 *   after fork() frees the child's copy only if no parent thread held the lock at fork time.
 * bs_file is never completed as a type: this file casts it to its own mem_file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"

typedef struct mem_file {
    pthread_rwlock_t lock;
    unsigned char *buf;
    uint64_t len; /* bytes in the "file" */
    uint64_t cap; /* bytes allocated at buf */
} mem_file;

static inline mem_file *mem_of(bs_file *f) { return (mem_file *)(void *)f; }

/* The largest file we accept: the offsets must fit a size_t with room to double. */
#define MEM_MAX ((uint64_t)(SIZE_MAX / 4))

/* Make room for `need` bytes (lock held exclusively). New bytes beyond len are not touched
 * here: the callers zero what they expose. */
static int mem_reserve(mem_file *m, uint64_t need)
{
    if (need <= m->cap)
        return 0;
    if (need > MEM_MAX)
        return EFBIG;
    uint64_t cap = m->cap ? m->cap : 16384;
    while (cap < need)
        cap *= 2;
    unsigned char *nb = realloc(m->buf, (size_t)cap);
    if (!nb)
        return ENOMEM;
    m->buf = nb;
    m->cap = cap;
    return 0;
}

/* Extend len to at least end, zeroing the gap (lock held exclusively, room reserved). */
static void mem_extend(mem_file *m, uint64_t end)
{
    if (end > m->len) {
        memset(m->buf + m->len, 0, (size_t)(end - m->len));
        m->len = end;
    }
}

static int mem_load(mem_file *m, const char *src)
{
    int fd, err = 0;
    do {
        fd = open(src, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return errno ? errno : EIO;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err = errno ? errno : EIO;
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        err = EISDIR;
        goto done;
    }
    if ((uint64_t)st.st_size > MEM_MAX) {
        err = EFBIG;
        goto done;
    }
    if (st.st_size > 0 && (err = mem_reserve(m, (uint64_t)st.st_size)) != 0)
        goto done;
    /* Read until end of file (it may change size under us: keep what was there). */
    for (;;) {
        if (m->len == m->cap && (err = mem_reserve(m, m->cap + 1)) != 0)
            goto done;
        ssize_t n = pread(fd, m->buf + m->len, (size_t)(m->cap - m->len), (off_t)m->len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = errno ? errno : EIO;
            goto done;
        }
        if (n == 0)
            break;
        m->len += (uint64_t)n;
    }
done:
    close(fd);
    return err;
}

static int mem_open(void *arg, const char *path, int readonly, int create, bs_file **out,
                    int *created)
{
    (void)path;
    (void)readonly;
    (void)create;
    *out = NULL;
    if (created)
        *created = 0;
    mem_file *m = calloc(1, sizeof *m);
    if (!m)
        return ENOMEM;
    if (pthread_rwlock_init(&m->lock, NULL) != 0) {
        free(m);
        return ENOMEM;
    }
    if (arg) {
        int err = mem_load(m, (const char *)arg);
        if (err) {
            pthread_rwlock_destroy(&m->lock);
            free(m->buf);
            free(m);
            return err;
        }
    } else if (created) {
        *created = 1;
    }
    *out = (bs_file *)(void *)m;
    return 0;
}

static int mem_close(bs_file *f, int forked)
{
    mem_file *m = mem_of(f);
    if (!m)
        return 0;
    /* After fork() a parent thread may have held the lock mid-realloc: then leave the
     * child's copy alone (the engine leaks the rest of a forked handle the same way). */
    if (forked && pthread_rwlock_trywrlock(&m->lock) != 0)
        return 0;
    if (forked)
        pthread_rwlock_unlock(&m->lock);
    pthread_rwlock_destroy(&m->lock);
    free(m->buf);
    free(m);
    return 0;
}

static void mem_copy_out(mem_file *m, void *buf, size_t len, uint64_t off, size_t *got)
{
    size_t have = 0;
    if (off < m->len)
        have = (m->len - off) < len ? (size_t)(m->len - off) : len;
    if (have)
        memcpy(buf, m->buf + off, have);
    if (have < len)
        memset((unsigned char *)buf + have, 0, len - have);
    if (got)
        *got = have;
}

static int mem_read_at(bs_file *f, void *buf, size_t len, uint64_t off, size_t *got)
{
    mem_file *m = mem_of(f);
    pthread_rwlock_rdlock(&m->lock);
    mem_copy_out(m, buf, len, off, got);
    pthread_rwlock_unlock(&m->lock);
    return 0;
}

static int mem_read_nowait(bs_file *f, void *buf, size_t len, uint64_t off, size_t *got)
{
    mem_file *m = mem_of(f);
    size_t have;
    pthread_rwlock_rdlock(&m->lock);
    mem_copy_out(m, buf, len, off, &have);
    pthread_rwlock_unlock(&m->lock);
    if (got)
        *got = have;
    return have == len ? 0 : EAGAIN; /* as the POSIX one: a short read is "not cached" */
}

static int mem_writev_at(bs_file *f, const struct iovec *iov, int iovcnt, uint64_t off)
{
    mem_file *m = mem_of(f);
    uint64_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (off > MEM_MAX || total > MEM_MAX - off)
        return EFBIG;
    pthread_rwlock_wrlock(&m->lock);
    int err = mem_reserve(m, off + total);
    if (!err) {
        mem_extend(m, off);
        uint64_t pos = off;
        for (int i = 0; i < iovcnt; i++) {
            if (iov[i].iov_len)
                memcpy(m->buf + pos, iov[i].iov_base, iov[i].iov_len);
            pos += iov[i].iov_len;
        }
        if (pos > m->len)
            m->len = pos;
    }
    pthread_rwlock_unlock(&m->lock);
    return err;
}

static int mem_write_at(bs_file *f, const void *buf, size_t len, uint64_t off)
{
    struct iovec iov = {(void *)buf, len};
    return mem_writev_at(f, &iov, 1, off);
}

static int mem_sync(bs_file *f)
{
    (void)f;
    return 0;
}

static int mem_size(bs_file *f, uint64_t *out)
{
    mem_file *m = mem_of(f);
    pthread_rwlock_rdlock(&m->lock);
    *out = m->len;
    pthread_rwlock_unlock(&m->lock);
    return 0;
}

static int mem_truncate(bs_file *f, uint64_t len)
{
    mem_file *m = mem_of(f);
    int err = 0;
    pthread_rwlock_wrlock(&m->lock);
    if (len > m->len) {
        if ((err = mem_reserve(m, len)) == 0)
            mem_extend(m, len);
    } else {
        m->len = len;
        /* Give memory back when the file shrank to under a quarter of the buffer. */
        if (m->cap > 65536 && len < m->cap / 4) {
            uint64_t cap = len < 16384 ? 16384 : len;
            unsigned char *nb = realloc(m->buf, (size_t)cap);
            if (nb) {
                m->buf = nb;
                m->cap = cap;
            }
        }
    }
    pthread_rwlock_unlock(&m->lock);
    return err;
}

static int mem_lock(bs_file *f, int kind)
{
    (void)f;
    (void)kind;
    return 0; /* nobody else can reach this memory */
}

static int mem_sync_dir(void *arg, const char *path)
{
    (void)arg;
    (void)path;
    return 0;
}

const bs_io_methods bs_io_mem = {
    .open = mem_open,
    .close = mem_close,
    .read_at = mem_read_at,
    .write_at = mem_write_at,
    .writev_at = mem_writev_at,
    .sync = mem_sync,
    .size = mem_size,
    .truncate = mem_truncate,
    .lock = mem_lock,
    .sync_dir = mem_sync_dir,
    .read_nowait = mem_read_nowait,
};
