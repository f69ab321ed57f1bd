// build: csrc/io_posix.c csrc/io_fault.c
/*
 * test_io.c - the POSIX I/O table (open/create, read/write/writev, zero-fill past EOF, size,
 * truncate, sync, flock conflicts, close after fork keeps the lock) and the fault controller
 * (fail_nth, sticky, tear at a 512 boundary, fail_after + heal; the machine: a crash kills
 * the handles and keeps the unsynced writes, a power loss drops / tears / reorders them,
 * a file whose directory was never synced vanishes).
 *
 * Layer: test program; calls only io.h (the I/O tables), nothing above them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io.h"
#include "testutil.h"

static char dir[64];

static const bs_io_methods *P = &bs_io_posix;
static const bs_io_methods *F = &bs_io_fault;

static void fill(uint8_t *p, size_t n, uint8_t tag)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(tag ^ (i * 31 + (i >> 9)));
}

static char *path_of(const char *name)
{
    static char buf[4][128];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", dir, name);
    return b;
}

/* Whole file contents via stdio (independent of the code under test). */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc(sz > 0 ? (size_t)sz : 1);
    *n = fread(b, 1, (size_t)sz, fp);
    fclose(fp);
    return b;
}

static void test_posix(void)
{
    const char *path = path_of("posix.db");
    bs_file *f = NULL, *g = NULL;
    int created = -1;
    uint8_t a[10000], b[10000];

    CHECK_EQ(P->open(NULL, path, 0, 0, &f, &created), ENOENT);
    CHECK_EQ(P->open(NULL, path, 1, 1, &f, &created), ENOENT); /* readonly never creates */
    CHECK_EQ(P->open(NULL, path, 0, 1, &f, &created), 0);
    CHECK_EQ(created, 1);
    CHECK_EQ(P->sync_dir(NULL, path), 0);
    CHECK_EQ(P->sync_dir(NULL, "relative-name"), 0);

    uint64_t sz = 99;
    CHECK_EQ(P->size(f, &sz), 0);
    CHECK_EQ(sz, 0);
    fill(a, sizeof a, 1);
    CHECK_EQ(P->write_at(f, a, 5000, 100), 0);
    CHECK_EQ(P->size(f, &sz), 0);
    CHECK_EQ(sz, 5100);
    size_t got = 0;
    memset(b, 0xAA, sizeof b);
    CHECK_EQ(P->read_at(f, b, 4000, 100, &got), 0);
    CHECK_EQ(got, 4000);
    CHECK(!memcmp(a, b, 4000));
    /* past EOF: zero fill and report the real count */
    memset(b, 0xAA, sizeof b);
    CHECK_EQ(P->read_at(f, b, 1000, 4600, &got), 0);
    CHECK_EQ(got, 500);
    CHECK(!memcmp(a + 4500, b, 500));
    for (int i = 500; i < 1000; i++)
        CHECK(b[i] == 0 || (fprintf(stderr, "byte %d\n", i), 0));
    CHECK_EQ(P->read_at(f, b, 10, 1 << 20, &got), 0);
    CHECK_EQ(got, 0);
    /* readv_at: consecutive bytes into several buffers, short at the end of the file */
    {
        uint8_t r[3][1000];
        memset(r, 0xAA, sizeof r);
        struct iovec iv[3] = {{r[0], 1000}, {r[1], 1000}, {r[2], 1000}};
        CHECK_EQ(P->readv_at(f, iv, 3, 1100, 0, &got), 0);
        CHECK_EQ(got, 3000);
        CHECK(!memcmp(r, a + 1000, 3000));
        memset(r, 0xAA, sizeof r);
        CHECK_EQ(P->readv_at(f, iv, 3, 3100, 0, &got), 0);
        CHECK_EQ(got, 2000); /* 5100 - 3100: the third buffer untouched */
        CHECK(!memcmp(r, a + 3000, 2000));
        CHECK_EQ(r[2][0], 0xAA);
        /* nowait: the range was just written, so it is cached; all or EAGAIN */
        int e = P->readv_at(f, iv, 3, 1100, 1, &got);
        CHECK(e == 0 || e == ENOTSUP || e == EAGAIN);
        if (e == 0)
            CHECK_EQ(got, 3000);
        CHECK_EQ(P->readv_at(f, iv, 3, 3100, 1, &got), e == ENOTSUP ? ENOTSUP : EAGAIN);
        CHECK_EQ(P->readv_at(f, iv, 0, 0, 0, &got), EINVAL);
    }
    /* hole reads back as zeros */
    CHECK_EQ(P->read_at(f, b, 100, 0, &got), 0);
    CHECK_EQ(got, 100);
    for (int i = 0; i < 100; i++)
        CHECK_EQ(b[i], 0);

    /* writev with more iovecs than one batch, some empty, odd lengths */
    struct iovec iov[200];
    size_t total = 0;
    fill(a, sizeof a, 7);
    for (int i = 0; i < 200; i++) {
        size_t l = (i % 7 == 3) ? 0 : (size_t)(i % 13) * 7 + 1;
        iov[i].iov_base = a + total;
        iov[i].iov_len = l;
        total += l;
    }
    CHECK(total < sizeof a);
    CHECK_EQ(P->writev_at(f, iov, 200, 3), 0);
    CHECK_EQ(P->read_at(f, b, total, 3, &got), 0);
    CHECK_EQ(got, total);
    CHECK(!memcmp(a, b, total));
    CHECK_EQ(P->writev_at(f, iov, 0, 0), 0);
    CHECK_EQ(P->sync(f), 0);

    CHECK_EQ(P->truncate(f, 1000), 0);
    CHECK_EQ(P->size(f, &sz), 0);
    CHECK_EQ(sz, 1000);
    CHECK_EQ(P->truncate(f, 8192), 0);
    CHECK_EQ(P->size(f, &sz), 0);
    CHECK_EQ(sz, 8192);
    CHECK_EQ(P->close(f, 0), 0);

    /* reopen: not created; readonly cannot write */
    CHECK_EQ(P->open(NULL, path, 0, 1, &f, &created), 0);
    CHECK_EQ(created, 0);
    CHECK_EQ(P->open(NULL, path, 1, 0, &g, &created), 0);
    CHECK_EQ(created, 0);
    CHECK(P->write_at(g, a, 10, 0) == EBADF);

    /* locks: exclusive vs shared between two opens of the same path */
    CHECK_EQ(P->lock(f, BS_LOCK_EX), 0);
    int r = P->lock(g, BS_LOCK_SH);
    CHECK(r == EWOULDBLOCK || r == EAGAIN);
    r = P->lock(g, BS_LOCK_EX);
    CHECK(r == EWOULDBLOCK || r == EAGAIN);
    CHECK_EQ(P->lock(f, 99), EINVAL);

    /* a child closing its inherited copy (forked) must not release the parent's lock */
    pid_t pid = fork();
    if (pid == 0)
        _exit(P->close(f, 1) == 0 ? 0 : 1);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    r = P->lock(g, BS_LOCK_SH);
    CHECK(r == EWOULDBLOCK || r == EAGAIN);

    CHECK_EQ(P->close(f, 0), 0); /* releases the lock */
    CHECK_EQ(P->lock(g, BS_LOCK_SH), 0);
    CHECK_EQ(P->open(NULL, path, 1, 0, &f, NULL), 0);
    CHECK_EQ(P->lock(f, BS_LOCK_SH), 0); /* two shared locks */
    r = P->lock(f, BS_LOCK_EX);
    CHECK(r == EWOULDBLOCK || r == EAGAIN);
    CHECK_EQ(P->close(f, 0), 0);
    CHECK_EQ(P->close(g, 0), 0);
    unlink(path);
}

static void test_fault_fail(void)
{
    const char *path = path_of("fail.db");
    bs_fault *fc = bs_fault_new(&bs_io_posix);
    bs_file *f = NULL, *f2 = NULL;
    int created = 0;
    uint8_t a[4096], b[4096];
    size_t got;

    CHECK(fc != NULL);
    CHECK_EQ(F->open(fc, path, 0, 1, &f, &created), 0);
    CHECK_EQ(created, 1);
    /* several handles per controller (one machine); the lock still excludes */
    CHECK_EQ(F->open(fc, path, 0, 1, &f2, &created), 0);
    CHECK_EQ(created, 0);
    CHECK_EQ(F->sync_dir(fc, path), 0);
    CHECK_EQ(F->lock(f, BS_LOCK_EX), 0);
    CHECK(F->lock(f2, BS_LOCK_EX) != 0);
    CHECK_EQ(F->close(f2, 0), 0);
    fill(a, sizeof a, 3);

    /* the 3rd write from now fails with ENOSPC and writes nothing; the 4th works */
    bs_fault_fail_nth(fc, BS_FAULT_WRITE, 3, ENOSPC, 0);
    CHECK_EQ(F->write_at(f, a, 4096, 0), 0);
    CHECK_EQ(F->read_at(f, b, 4096, 0, &got), 0); /* reads not counted by this mask */
    CHECK_EQ(F->write_at(f, a, 4096, 4096), 0);
    CHECK_EQ(bs_fault_fired(fc), 0);
    struct iovec iov[2] = {{a, 100}, {a + 100, 412}};
    CHECK_EQ(F->writev_at(f, iov, 2, 8192), ENOSPC);
    CHECK_EQ(bs_fault_fired(fc), 1);
    uint64_t sz = 0;
    CHECK_EQ(F->size(f, &sz), 0);
    CHECK_EQ(sz, 8192); /* nothing written */
    CHECK_EQ(F->writev_at(f, iov, 2, 8192), 0);
    CHECK_EQ(F->size(f, &sz), 0);
    CHECK_EQ(sz, 8192 + 512);
    CHECK_EQ(bs_fault_count(fc, BS_FAULT_WRITE), 4);
    CHECK_EQ(bs_fault_count(fc, BS_FAULT_READ), 1);
    CHECK_EQ(bs_fault_count(fc, BS_FAULT_ANY), 5);

    /* sticky over write|sync: the 2nd such call fails and every later one too */
    bs_fault_fail_nth(fc, BS_FAULT_WRITE | BS_FAULT_SYNC, 2, 0, 1);
    CHECK_EQ(F->sync(f), 0);
    CHECK_EQ(F->write_at(f, a, 10, 0), EIO); /* err 0 means EIO */
    CHECK_EQ(F->sync(f), EIO);
    CHECK_EQ(F->write_at(f, a, 10, 0), EIO);
    CHECK_EQ(F->read_at(f, b, 10, 0, &got), 0);
    CHECK_EQ(F->truncate(f, 8192), 0);
    CHECK_EQ(F->lock(f, BS_LOCK_EX), 0);
    CHECK_EQ(bs_fault_count(fc, BS_FAULT_SYNC), 2);
    CHECK_EQ(bs_fault_count(fc, BS_FAULT_TRUNCATE), 1);

    /* reads: fail the 1st */
    bs_fault_fail_nth(fc, BS_FAULT_READ, 1, EIO, 0);
    CHECK_EQ(F->read_at(f, b, 10, 0, &got), EIO);
    CHECK_EQ(F->read_at(f, b, 10, 0, &got), 0);
    CHECK_EQ(F->write_at(f, a, 10, 0), 0); /* resetting fail_nth cleared the sticky state */
    bs_fault_fail_nth(fc, BS_FAULT_TRUNCATE, 1, EPERM, 0);
    CHECK_EQ(F->truncate(f, 0), EPERM);
    CHECK_EQ(F->size(f, &sz), 0);
    CHECK_EQ(sz, 8192);
    bs_fault_fail_nth(fc, 0, 0, 0, 0);

    /* tear the 2nd write at 512 bytes: only the first 512 reach the file, then EIO */
    uint8_t z[4096];
    memset(z, 0, sizeof z);
    CHECK_EQ(F->write_at(f, z, 4096, 0), 0);
    bs_fault_tear_nth(fc, 2, 512);
    CHECK_EQ(F->write_at(f, z, 4096, 4096), 0);
    CHECK_EQ(F->write_at(f, a, 4096, 0), EIO);
    CHECK_EQ(F->read_at(f, b, 4096, 0, &got), 0);
    CHECK(!memcmp(b, a, 512));
    CHECK(!memcmp(b + 512, z, 4096 - 512));
    /* torn writev across iovecs: keep 1024 of 300 + 3796 */
    struct iovec iv2[2] = {{a, 300}, {a + 300, 3796}};
    bs_fault_tear_nth(fc, 1, 1024);
    CHECK_EQ(F->writev_at(f, iv2, 2, 4096), EIO);
    CHECK_EQ(F->read_at(f, b, 4096, 4096, &got), 0);
    CHECK(!memcmp(b, a, 1024));
    CHECK(!memcmp(b + 1024, z, 4096 - 1024));
    CHECK_EQ(F->writev_at(f, iv2, 2, 4096), 0); /* tear fired once */
    CHECK_EQ(F->close(f, 0), 0);

    /* the controller can serve another open after close */
    CHECK_EQ(F->open(fc, path, 0, 1, &f, &created), 0);
    CHECK_EQ(created, 0);
    CHECK_EQ(F->read_at(f, b, 4096, 4096, &got), 0);
    CHECK(!memcmp(b, a, 4096));
    CHECK_EQ(F->close(f, 0), 0);
    bs_fault_free(fc);
    unlink(path);
}

/* Expected file for one crash outcome: base, then applied (idx, keep) pairs in order. */
typedef struct wr { uint64_t off; size_t len; const uint8_t *data; } wr;

static int matches(const uint8_t *file, size_t fsz, const uint8_t *base, size_t bsz,
                   const wr *w, const size_t *keep, const int *order, int n)
{
    size_t cap = bsz;
    for (int i = 0; i < n; i++)
        if (keep[i] && w[i].off + keep[i] > cap)
            cap = (size_t)w[i].off + keep[i];
    if (cap != fsz)
        return 0;
    uint8_t *e = calloc(1, cap ? cap : 1);
    memcpy(e, base, bsz);
    for (int k = 0; k < n; k++) {
        int i = order[k];
        memcpy(e + w[i].off, w[i].data, keep[i]);
    }
    int ok = !memcmp(e, file, fsz);
    free(e);
    return ok;
}

/* Is `file` equal to base + some subset of the two writes, each whole, in some order? */
static int is_reorder_state(const uint8_t *file, size_t fsz, const uint8_t *base, size_t bsz,
                            const wr *w)
{
    static const int orders[2][2] = {{0, 1}, {1, 0}};
    size_t keep[2];
    for (int k0 = 0; k0 < 2; k0++)
        for (int k1 = 0; k1 < 2; k1++)
            for (int o = 0; o < 2; o++) {
                keep[0] = k0 ? w[0].len : 0;
                keep[1] = k1 ? w[1].len : 0;
                if (matches(file, fsz, base, bsz, w, keep, orders[o], 2))
                    return 1;
            }
    return 0;
}

/* Torn: every 512-byte sector holds the base's bytes, or those of a write covering it, or
 * zeros past the base; the size is the base's or ends inside a write. */
static int is_tear_state(const uint8_t *file, size_t fsz, const uint8_t *base, size_t bsz,
                         const wr *w)
{
    static const uint8_t zero[512];
    if (fsz < bsz || fsz % 512)
        return 0;
    for (size_t s = 0; s < fsz; s += 512) {
        int ok = (s < bsz && !memcmp(file + s, base + s, 512)) ||
                 (s >= bsz && !memcmp(file + s, zero, 512));
        for (int i = 0; i < 2 && !ok; i++)
            ok = s >= w[i].off && s + 512 <= w[i].off + w[i].len &&
                 !memcmp(file + s, w[i].data + (s - w[i].off), 512);
        if (!ok)
            return 0;
    }
    return 1;
}

static void test_fault_machine(void)
{
    const char *path = path_of("crash.db");
    enum { NSEED = 40 };
    static uint8_t A[12288], B[4096], C[8192], D[4096];
    fill(A, sizeof A, 0x11);
    fill(B, sizeof B, 0x22);
    fill(C, sizeof C, 0x33);
    fill(D, sizeof D, 0x44);
    int seen[4][3] = {{0}}; /* per mode: the base, everything, something else */
    {
        /* the checkers themselves */
        wr w[2] = {{4096, sizeof B, B}, {6144, sizeof C, C}};
        static uint8_t fake[14336];
        memcpy(fake, A, sizeof A);
        CHECK(is_reorder_state(fake, sizeof A, A, sizeof A, w));
        CHECK(is_tear_state(fake, sizeof A, A, sizeof A, w));
        memcpy(fake + 4096, B, 512);
        CHECK(!is_reorder_state(fake, sizeof A, A, sizeof A, w)); /* a partial write */
        CHECK(is_tear_state(fake, sizeof A, A, sizeof A, w));
        memcpy(fake + 4608, B, 512); /* B's first sector at the wrong place */
        CHECK(!is_tear_state(fake, sizeof A, A, sizeof A, w));
        CHECK(!is_tear_state(A, 8192, A, sizeof A, w)); /* shorter than the base */
    }
    for (int mode = BS_POWERLOSS_DROP; mode <= BS_POWERLOSS_REORDER; mode++) {
        for (uint64_t seed = 1; seed <= NSEED; seed++) {
            bs_fault *fc = bs_fault_new(NULL);
            bs_file *f = NULL, *g = NULL;
            int created;
            unlink(path);
            CHECK_EQ(F->open(fc, path, 0, 1, &f, &created), 0);
            bs_fault_powerloss(fc, 1, 0); /* the file exists: its directory entry is durable */
            CHECK_EQ(F->write_at(f, A, sizeof A, 0), 0);
            CHECK_EQ(F->sync(f), 0);
            CHECK_EQ(bs_fault_unsynced(fc, path), 0);
            /* B (overwrite inside) and C (overlapping B, extending the file): unsynced */
            CHECK_EQ(F->write_at(f, B, sizeof B, 4096), 0);
            struct iovec iov[3] = {{C, 1000}, {C + 1000, 0}, {C + 1000, sizeof C - 1000}};
            CHECK_EQ(F->writev_at(f, iov, 3, 6144), 0);
            CHECK_EQ(bs_fault_unsynced(fc, path), 2);
            uint8_t tmp[8192];
            size_t got = 0;
            CHECK_EQ(F->read_at(f, tmp, sizeof C, 6144, &got), 0);
            CHECK(got == sizeof C && !memcmp(tmp, C, sizeof C));

            /* a process crash: the handle is dead, the writes stay, the log too */
            CHECK_EQ(bs_fault_crash(fc), 1);
            CHECK_EQ(bs_fault_fired(fc), 1);
            uint64_t sz;
            CHECK_EQ(F->read_at(f, tmp, 10, 0, &got), EIO);
            CHECK_EQ(F->write_at(f, tmp, 10, 0), EIO);
            CHECK_EQ(F->writev_at(f, iov, 3, 0), EIO);
            CHECK_EQ(F->sync(f), EIO);
            CHECK_EQ(F->size(f, &sz), EIO);
            CHECK_EQ(F->truncate(f, 0), EIO);
            CHECK_EQ(F->lock(f, BS_LOCK_SH), EIO);
            CHECK_EQ(bs_fault_crash(fc), 0); /* nothing alive any more */
            /* the lock went with the process: a new handle locks, sees B and C */
            CHECK_EQ(F->open(fc, path, 0, 0, &g, &created), 0);
            CHECK_EQ(F->lock(g, BS_LOCK_EX), 0);
            CHECK_EQ(F->read_at(g, tmp, sizeof B, 4096, &got), 0);
            CHECK(!memcmp(tmp, B, 2048) && !memcmp(tmp + 2048, C, 2048));
            CHECK_EQ(F->close(f, 0), 0);
            CHECK_EQ(F->close(g, 0), 0); /* a close keeps the log */
            CHECK_EQ(bs_fault_unsynced(fc, path), 2);
            CHECK_EQ(F->open(fc, path, 0, 0, &g, &created), 0);

            CHECK_EQ(bs_fault_power_loss(fc, mode, seed * 0x1234567ull), 0);
            CHECK_EQ(F->read_at(g, tmp, 10, 0, &got), EIO); /* the power loss crashed it */
            CHECK_EQ(F->close(g, 0), 0);
            CHECK_EQ(bs_fault_unsynced(fc, NULL), 0);
            size_t fsz = 0;
            uint8_t *file = slurp(path, &fsz);
            wr w[2] = {{4096, sizeof B, B}, {6144, sizeof C, C}};
            CHECK(file != NULL);
            if (file) {
                int base = fsz == sizeof A && !memcmp(file, A, sizeof A);
                int all = fsz == 6144 + sizeof C && !memcmp(file + 4096, B, 2048) &&
                          !memcmp(file + 6144, C, sizeof C);
                if (mode == BS_POWERLOSS_DROP)
                    CHECK(base);
                else if (mode == BS_POWERLOSS_TEAR)
                    CHECK(is_tear_state(file, fsz, A, sizeof A, w));
                else
                    CHECK(is_reorder_state(file, fsz, A, sizeof A, w));
                seen[mode][base ? 0 : all ? 1 : 2] = 1;
            }
            free(file);

            /* the machine works again; a truncate and writes after a sync */
            CHECK_EQ(F->open(fc, path, 0, 0, &f, &created), 0);
            CHECK_EQ(F->write_at(f, D, sizeof D, 0), 0);
            CHECK_EQ(F->sync(f), 0);
            CHECK_EQ(F->write_at(f, A, 4096, 0), 0);    /* unsynced overwrite of D */
            CHECK_EQ(F->truncate(f, 2048), 0);          /* unsynced shrink */
            CHECK_EQ(F->write_at(f, B, 1024, 8192), 0); /* unsynced, past the cut */
            CHECK_EQ(bs_fault_power_loss(fc, mode, seed), 0);
            CHECK_EQ(F->close(f, 0), 0);
            file = slurp(path, &fsz);
            CHECK(file != NULL);
            if (file) {
                CHECK(fsz >= 2048);
                if (mode == BS_POWERLOSS_DROP)
                    CHECK(fsz >= sizeof A && !memcmp(file, D, sizeof D));
                for (size_t s = 0; s < 4 && s * 512 < fsz; s++) {
                    const uint8_t *q = file + s * 512;
                    CHECK(!memcmp(q, D + s * 512, 512) || !memcmp(q, A + s * 512, 512));
                }
            }
            free(file);
            bs_fault_free(fc);
        }
    }
    CHECK(seen[BS_POWERLOSS_TEAR][0] && seen[BS_POWERLOSS_TEAR][1] && seen[BS_POWERLOSS_TEAR][2]);
    CHECK(seen[BS_POWERLOSS_REORDER][0] && seen[BS_POWERLOSS_REORDER][1] &&
          seen[BS_POWERLOSS_REORDER][2]);
    {
        bs_fault *bad = bs_fault_new(NULL);
        CHECK_EQ(bs_fault_power_loss(bad, 0, 0), EINVAL); /* no such mode */
        bs_fault_free(bad);
    }
    unlink(path);

    /* the directory: a file created on the machine vanishes at power loss until its
     * directory is synced; logging off forgets the log */
    for (int dsync = 0; dsync < 2; dsync++) {
        bs_fault *fc = bs_fault_new(NULL);
        bs_file *f;
        int created = 0;
        bs_fault_powerloss(fc, 1, 5);
        CHECK_EQ(F->open(fc, path, 0, 1, &f, &created), 0);
        CHECK_EQ(created, 1);
        CHECK_EQ(F->write_at(f, A, 4096, 0), 0);
        CHECK_EQ(F->sync(f), 0);
        CHECK_EQ(bs_fault_unsynced(fc, path), 1); /* the directory entry */
        if (dsync) {
            CHECK_EQ(F->sync_dir(fc, path), 0);
            CHECK_EQ(bs_fault_unsynced(fc, path), 0);
        }
        CHECK_EQ(bs_fault_power_loss(fc, BS_POWERLOSS_TEAR, 9), 0);
        CHECK_EQ(F->close(f, 0), 0);
        CHECK_EQ(access(path, F_OK) == 0, dsync);
        bs_fault_free(fc);
        unlink(path);
    }
    bs_fault *fc = bs_fault_new(NULL);
    bs_file *f;
    int cr = 0;
    CHECK_EQ(F->open(fc, path, 0, 1, &f, &cr), 0);
    bs_fault_powerloss(fc, 1, 5);
    CHECK_EQ(F->write_at(f, A, 4096, 0), 0);
    bs_fault_powerloss(fc, 0, 0);
    CHECK_EQ(bs_fault_power_loss(fc, BS_POWERLOSS_DROP, 1), 0); /* nothing logged */
    CHECK_EQ(F->close(f, 0), 0);
    size_t fsz;
    uint8_t *file = slurp(path, &fsz);
    CHECK(file && fsz == 4096 && !memcmp(file, A, 4096));
    free(file);

    /* fail_after: n successes, then every call of the kind until heal */
    CHECK_EQ(F->open(fc, path, 0, 0, &f, &cr), 0);
    bs_fault_fail_after(fc, BS_FAULT_WRITE, 2, ENOSPC);
    CHECK_EQ(F->write_at(f, A, 512, 0), 0);
    CHECK_EQ(F->sync(f), 0); /* another kind: not counted */
    CHECK_EQ(F->write_at(f, A, 512, 0), 0);
    CHECK_EQ(F->write_at(f, A, 512, 0), ENOSPC);
    CHECK_EQ(F->write_at(f, A, 512, 0), ENOSPC);
    CHECK_EQ(F->sync(f), 0);
    bs_fault_heal(fc);
    CHECK_EQ(F->write_at(f, A, 512, 0), 0);
    bs_fault_fail_after(fc, BS_FAULT_SYNC, 0, EIO);
    CHECK_EQ(F->sync(f), EIO);
    CHECK_EQ(F->write_at(f, A, 512, 0), 0);
    bs_fault_heal(fc);
    CHECK_EQ(F->sync(f), 0);
    CHECK_EQ(F->close(f, 0), 0);
    bs_fault_free(fc);
    unlink(path);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/bs_io_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_posix();
    test_fault_fail();
    test_fault_machine();
    rmdir(dir);
    if (failures) {
        fprintf(stderr, "test_io: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_io: ok\n");
    return 0;
}
