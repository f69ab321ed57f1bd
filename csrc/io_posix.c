/*
 * io_posix.c - the real file I/O layer (bs_io_posix): pread/pwrite(v)/fdatasync/flock.
 *
 * Layer: bottom of the engine; calls only the C library / POSIX system calls.
 *
 * Every function returns 0 or a positive errno (never -1). Reads and writes loop over short
 * transfers and EINTR; reads past the end of file zero-fill the rest and report *got.
 * The lock is flock() on the descriptor, so it belongs to the open file description: a child
 * after fork() shares it with the parent, which is why close(f, forked) only closes the
 * descriptor and nothing here ever calls flock(LOCK_UN) (closing the last descriptor of the
 * description releases the lock).
 * bs_file is never completed as a type: this file casts it to its own posix_file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pwritev, fdatasync, flock, O_DIRECTORY under -std=c11 */
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io.h"

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif
#ifndef O_DIRECTORY
#define O_DIRECTORY 0
#endif

#define POSIX_IOV_BATCH 64 /* iovecs per pwritev call (well under any IOV_MAX) */

typedef struct posix_file {
    int fd;
} posix_file;

static inline int posix_fd(bs_file *f) { return ((posix_file *)(void *)f)->fd; }

int bs_io_posix_fd(bs_file *f) { return posix_fd(f); }

static inline int posix_err(void) { return errno ? errno : EIO; }

/* open: readonly never creates (a missing file gives ENOENT even with create). */
static int posix_open(void *arg, const char *path, int readonly, int create, bs_file **out,
                      int *created)
{
    (void)arg;
    int fd = -1, made = 0;
    *out = NULL;
    if (created)
        *created = 0;
    int flags = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        if (create && !readonly) {
            fd = open(path, flags | O_CREAT | O_EXCL, 0644);
            if (fd >= 0) {
                made = 1;
                break;
            }
            if (errno == EINTR)
                continue;
            if (errno != EEXIST)
                return posix_err();
        }
        fd = open(path, flags);
        if (fd >= 0)
            break;
        if (errno == EINTR)
            continue;
        /* Removed between the O_EXCL attempt and this open: try to create it again. */
        if (errno == ENOENT && create && !readonly)
            continue;
        return posix_err();
    }
    if (fd < 0)
        return EAGAIN;
    posix_file *pf = malloc(sizeof *pf);
    if (!pf) {
        close(fd);
        if (made)
            unlink(path);
        return ENOMEM;
    }
    pf->fd = fd;
    *out = (bs_file *)(void *)pf;
    if (created)
        *created = made;
    return 0;
}

static int posix_close(bs_file *f, int forked)
{
    (void)forked; /* the same either way: close the descriptor, never unlock */
    if (!f)
        return 0;
    posix_file *pf = (posix_file *)(void *)f;
    int rc = 0;
    if (close(pf->fd) != 0 && errno != EINTR)
        rc = posix_err();
    free(pf);
    return rc;
}

/* preadv2(RWF_NOWAIT): succeed only when the OS page cache holds the whole range. */
static int posix_read_nowait(bs_file *f, void *buf, size_t len, uint64_t off, size_t *got)
{
    *got = 0;
#if defined(__linux__) && defined(RWF_NOWAIT)
    struct iovec iov = {buf, len};
    if (off > (uint64_t)INT64_MAX || len > (size_t)1 << 30)
        return ENOTSUP;
    ssize_t r;
    do {
        r = preadv2(posix_fd(f), &iov, 1, (off_t)off, RWF_NOWAIT);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? EAGAIN : ENOTSUP;
    if ((size_t)r < len)
        return EAGAIN; /* partly cached, or the end of the file: let the blocking read decide */
    *got = (size_t)r;
    return 0;
#else
    (void)f; (void)buf; (void)len; (void)off;
    return ENOTSUP;
#endif
}

/* One preadv (preadv2 with RWF_NOWAIT for nowait): no retry of short reads but EINTR; the
 * caller takes what came. */
static int posix_readv_at(bs_file *f, const struct iovec *iov, int iovcnt, uint64_t off,
                          int nowait, size_t *got)
{
    *got = 0;
    if (off > (uint64_t)INT64_MAX || iovcnt < 1 || iovcnt > BS_IO_READV_MAX)
        return EINVAL;
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    ssize_t r;
    if (nowait) {
#if defined(__linux__) && defined(RWF_NOWAIT)
        do {
            r = preadv2(posix_fd(f), iov, iovcnt, (off_t)off, RWF_NOWAIT);
        } while (r < 0 && errno == EINTR);
        if (r < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? EAGAIN : ENOTSUP;
        if ((size_t)r < len)
            return EAGAIN;
#else
        return ENOTSUP;
#endif
    } else {
        do {
            r = preadv(posix_fd(f), iov, iovcnt, (off_t)off);
        } while (r < 0 && errno == EINTR);
        if (r < 0)
            return posix_err();
    }
    *got = (size_t)r;
    return 0;
}

static int posix_read_at(bs_file *f, void *buf, size_t len, uint64_t off, size_t *got)
{
    int fd = posix_fd(f);
    uint8_t *p = buf;
    size_t done = 0;
    if (got)
        *got = 0;
    if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return EINVAL;
    while (done < len) {
        size_t want = len - done;
        if (want > (size_t)1 << 30)
            want = (size_t)1 << 30;
        ssize_t r = pread(fd, p + done, want, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int err = posix_err();
            if (got)
                *got = done;
            return err;
        }
        if (r == 0)
            break; /* end of file */
        done += (size_t)r;
    }
    if (done < len)
        memset(p + done, 0, len - done);
    if (got)
        *got = done;
    return 0;
}

static int posix_write_at(bs_file *f, const void *buf, size_t len, uint64_t off)
{
    int fd = posix_fd(f);
    const uint8_t *p = buf;
    if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return EFBIG;
    while (len) {
        size_t want = len > (size_t)1 << 30 ? (size_t)1 << 30 : len;
        ssize_t r = pwrite(fd, p, want, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return posix_err();
        }
        if (r == 0)
            return EIO; /* no progress: do not spin */
        p += r;
        off += (uint64_t)r;
        len -= (size_t)r;
    }
    return 0;
}

static int posix_writev_at(bs_file *f, const struct iovec *iov, int iovcnt, uint64_t off)
{
    int fd = posix_fd(f);
    struct iovec batch[POSIX_IOV_BATCH];
    int idx = 0;        /* first iovec not fully written */
    size_t skip = 0;    /* bytes of iov[idx] already written */
    if (iovcnt < 0)
        return EINVAL;
    uint64_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (off > (uint64_t)INT64_MAX || total > (uint64_t)INT64_MAX - off)
        return EFBIG;
    for (;;) {
        while (idx < iovcnt && skip == iov[idx].iov_len) {
            idx++;
            skip = 0;
        }
        if (idx >= iovcnt)
            return 0;
        int n = 0;
        for (int i = idx; i < iovcnt && n < POSIX_IOV_BATCH; i++) {
            if (iov[i].iov_len == 0 && i != idx)
                continue;
            batch[n].iov_base = (uint8_t *)iov[i].iov_base + (i == idx ? skip : 0);
            batch[n].iov_len = iov[i].iov_len - (i == idx ? skip : 0);
            n++;
        }
        ssize_t r = pwritev(fd, batch, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return posix_err();
        }
        if (r == 0)
            return EIO;
        off += (uint64_t)r;
        size_t left = (size_t)r;
        while (left) {
            size_t avail = iov[idx].iov_len - skip;
            if (left < avail) {
                skip += left;
                left = 0;
            } else {
                left -= avail;
                idx++;
                skip = 0;
            }
        }
    }
}

static int posix_sync(bs_file *f)
{
    int fd = posix_fd(f);
#if defined(__APPLE__) && defined(F_FULLFSYNC)
    if (fcntl(fd, F_FULLFSYNC) == 0)
        return 0;
    /* Some file systems do not support F_FULLFSYNC: fall back to fsync. */
    while (fsync(fd) != 0) {
        if (errno != EINTR)
            return posix_err();
    }
    return 0;
#else
    while (fdatasync(fd) != 0) {
        if (errno != EINTR)
            return posix_err();
    }
    return 0;
#endif
}

static int posix_size(bs_file *f, uint64_t *out)
{
    struct stat st;
    if (fstat(posix_fd(f), &st) != 0)
        return posix_err();
    *out = (uint64_t)st.st_size;
    return 0;
}

static int posix_truncate(bs_file *f, uint64_t len)
{
    if (len > (uint64_t)INT64_MAX)
        return EFBIG;
    while (ftruncate(posix_fd(f), (off_t)len) != 0) {
        if (errno != EINTR)
            return posix_err();
    }
    return 0;
}

static int posix_lock(bs_file *f, int kind)
{
    int op;
    if (kind == BS_LOCK_SH)
        op = LOCK_SH;
    else if (kind == BS_LOCK_EX)
        op = LOCK_EX;
    else
        return EINVAL;
    while (flock(posix_fd(f), op | LOCK_NB) != 0) {
        if (errno != EINTR)
            return posix_err();
    }
    return 0;
}

/* fsync the directory holding path. File systems that cannot fsync a directory (EINVAL,
 * ENOTSUP) count as success: there is nothing more we could do. */
static int posix_sync_dir(void *arg, const char *path)
{
    (void)arg;
    const char *slash = strrchr(path, '/');
    /* the directory's name on the stack when it fits: a commit calls this, and an allocation
     * failing there would fail it */
    char buf[1024], *dir = buf;
    if (!slash) {
        strcpy(buf, ".");
    } else if (slash == path) {
        strcpy(buf, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof buf && !(dir = malloc(n + 1)))
            return ENOMEM;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd;
    do {
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (dir != buf)
        free(dir);
    if (fd < 0)
        return posix_err();
    int rc = 0;
    while (fsync(fd) != 0) {
        if (errno == EINTR)
            continue;
        if (errno != EINVAL && errno != ENOTSUP && errno != EOPNOTSUPP)
            rc = posix_err();
        break;
    }
    close(fd);
    return rc;
}

const bs_io_methods bs_io_posix = {
    .open = posix_open,
    .close = posix_close,
    .read_at = posix_read_at,
    .write_at = posix_write_at,
    .writev_at = posix_writev_at,
    .sync = posix_sync,
    .size = posix_size,
    .truncate = posix_truncate,
    .lock = posix_lock,
    .sync_dir = posix_sync_dir,
    .read_nowait = posix_read_nowait,
    .readv_at = posix_readv_at,
};
