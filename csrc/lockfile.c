/*
 * lockfile.c - the side file PATH-lock (lockfile.h): opening, (re)building and mapping it,
 * the open lock, the write lock and the reader slots, all as one-byte fcntl locks.
 *
 * Layer: bottom of the engine beside io_*.c; calls POSIX and bs_fail (util.c) only.
 *
 * Lock kind: open file description locks (F_OFD_SETLK, Linux >= 3.15) belong to the open
 * file description, like flock(): two handles in one process do not share them, a child
 * after fork() shares its parent's (and never releases them: it only closes), and they go
 * away when the last descriptor closes, so a dead process's locks are gone. Where F_OFD_*
 * does not exist (macOS), where the running kernel answers EINVAL to them (Linux < 3.15, found
 * out once per process at run time), or when BTREE_STORE_POSIX_LOCKS is set (to test that
 * path on Linux), plain fcntl locks are used: those belong to the process, so two handles of one file
 * in one process would share their locks and closing either would release them. There a
 * second open of a file the process has open is refused (EBUSY, before it opens the side
 * file), and a fork() child's inherited copy of a file the child opened again is not closed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* F_OFD_SETLK */
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "lockfile.h"

/* The lock commands: OFD locks where they exist, unless the environment variable
 * BTREE_STORE_POSIX_LOCKS is set (non-empty, not "0") at the first open: then the plain
 * process-owned fcntl locks of systems without OFD locks (macOS), so that their path is
 * tested on Linux too. Where F_OFD_SETLK is defined at compile time but the running kernel
 * does not know it (Linux before 3.15; macOS SDKs that define the constants for a kernel that
 * answers EINVAL), the first open finds out by a harmless F_OFD_GETLK on the database file and
 * takes the process-owned path too. BTREE_STORE_TEST_OFD_EINVAL (non-empty, not "0") makes
 * that probe see EINVAL, to test this fallback on Linux. Chosen once per process, before any
 * lock is taken. */
static int lk_set_cmd, lk_setw_cmd; /* 0 until lk_choose */
static pthread_mutex_t lk_mu = PTHREAD_MUTEX_INITIALIZER;

static bool lk_env(const char *name)
{
    const char *e = getenv(name);
    return e && *e && strcmp(e, "0") != 0;
}

#ifdef F_OFD_SETLK
/* false when the kernel refuses open file description locks as an unknown command (EINVAL)
 * on the database file at dbpath; true when it knows them (or the probe cannot tell: then the
 * lock calls report whatever is wrong). The probe tests a lock, it takes none, and the
 * process holds no lock of ours yet, so closing its descriptor releases nothing. */
static bool lk_ofd_known(const char *dbpath)
{
    int fd = dbpath ? open(dbpath, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0)
        return true;
    struct flock fl;
    memset(&fl, 0, sizeof fl); /* l_pid must be 0 for F_OFD_GETLK */
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)LF_JOIN_BYTE;
    fl.l_len = 1;
    int err = 0;
    if (lk_env("BTREE_STORE_TEST_OFD_EINVAL"))
        err = EINVAL; /* as an old kernel answers */
    else
        while (fcntl(fd, F_OFD_GETLK, &fl) != 0 && (err = errno) == EINTR)
            err = 0;
    close(fd);
    return err != EINVAL;
}
#endif

/* dbpath: the database file (it exists), for the run-time probe of the first call. */
static void lk_choose(const char *dbpath)
{
    pthread_mutex_lock(&lk_mu);
    if (!lk_set_cmd) {
        int posix = lk_env("BTREE_STORE_POSIX_LOCKS");
#ifdef F_OFD_SETLK
        if (!posix && lk_ofd_known(dbpath)) {
            lk_setw_cmd = F_OFD_SETLKW;
            lk_set_cmd = F_OFD_SETLK;
        } else {
            posix = 1;
        }
#else
        (void)dbpath;
        posix = 1;
#endif
        if (posix) {
            lk_setw_cmd = F_SETLKW;
            lk_set_cmd = F_SETLK;
        }
    }
    pthread_mutex_unlock(&lk_mu);
}

#define LK_SET lk_set_cmd
#define LK_SETW lk_setw_cmd

static bool lk_process_owned(void)
{
    return lk_set_cmd == F_SETLK;
}

/* flock() on the BSDs and macOS is a whole-file lock in the same per-file list as fcntl()
 * locks (XNU and FreeBSD kern_lockf.c: one lf_advlock for both, a flock owned by the open file
 * description, an fcntl lock by the process or, OFD, by its own description), so the two
 * kinds conflict, even within one process: an opener's shared flock of the data file makes
 * lockfile_join's F_GETLK of a write lock on LF_JOIN_BYTE report a lock, and every first
 * open (a rebuild) was refused as "side file deleted or replaced". There the data file gets
 * no flock: the join lock, a shared fcntl lock, conflicts with an older btree_store's
 * exclusive flock by the same rule. On Linux the two kinds are independent. */
bool lockfile_no_data_flock(const char *dbpath)
{
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
    defined(__OpenBSD__) || defined(__DragonFly__)
    (void)dbpath;
    return true;
#else
    lk_choose(dbpath);
    return lk_process_owned(); /* the macOS path as tested on Linux */
#endif
}

/* Process-owned locks: every descriptor of a file shares the process's locks, and closing
 * any of them releases them all. So one process may hold one handle of a database: a second
 * open is refused before it opens the side file (opening and closing it would drop the first
 * handle's locks). The side files this process has open, by (dev, ino) and the pid that
 * opened them (a fork() child's copy of the table is not its own); opens and closes hold
 * lk_mu throughout, so none of them races with another. */
#define LK_OPEN_MAX 64
static struct { uint64_t dev, ino; pid_t pid; } lk_open[LK_OPEN_MAX];

static int lk_find(uint64_t dev, uint64_t ino)
{
    pid_t me = getpid();
    for (int i = 0; i < LK_OPEN_MAX; i++)
        if (lk_open[i].pid == me && lk_open[i].dev == dev && lk_open[i].ino == ino)
            return i;
    return -1;
}

static int lk_add(uint64_t dev, uint64_t ino)
{
    pid_t me = getpid();
    for (int i = 0; i < LK_OPEN_MAX; i++)
        if (lk_open[i].pid != me) { /* free, or left by the parent of a fork() */
            lk_open[i].dev = dev;
            lk_open[i].ino = ino;
            lk_open[i].pid = me;
            return 0;
        }
    return EMFILE;
}

_Static_assert(sizeof(lf_header) == LF_HEADER, "lf_header layout");
_Static_assert(sizeof(lf_slot) == 16, "lf_slot layout");

static const uint8_t lf_magic[8] = {'B', 'S', 'L', 'O', 'C', 'K', '\r', '\n'};

/* One byte lock: 0 or errno (EAGAIN/EACCES: held elsewhere). */
static int lk(int fd, int cmd, short type, off_t byte)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    while (fcntl(fd, cmd, &fl) != 0) {
        if (errno == EINTR)
            continue;
        return errno == EACCES ? EAGAIN : errno;
    }
    return 0;
}

static void lf_unmap(bs_lockfile *lf)
{
    if (lf->hdr)
        munmap(lf->hdr, LF_SIZE);
    lf->hdr = NULL;
    lf->slots = NULL;
}

static int lockfile_open_locked(bs_lockfile *lf, int *exclusive, bool owned);

int lockfile_open(const char *dbpath, bs_lockfile **out, int *exclusive)
{
    *out = NULL;
    bs_lockfile *lf = calloc(1, sizeof *lf);
    size_t n = strlen(dbpath);
    if (!lf || !(lf->path = malloc(n + 6))) {
        free(lf);
        return ENOMEM;
    }
    memcpy(lf->path, dbpath, n);
    memcpy(lf->path + n, "-lock", 6);
    lf->slot = -1;
    lf->data_fd = -1;
    lf->fd = -1;
    lk_choose(dbpath);
    bool owned = lk_process_owned();
    if (owned)
        pthread_mutex_lock(&lk_mu);
    int err = lockfile_open_locked(lf, exclusive, owned);
    if (owned)
        pthread_mutex_unlock(&lk_mu);
    if (err) {
        free(lf->path);
        free(lf);
        return err;
    }
    *out = lf;
    return 0;
}

static int lockfile_open_locked(bs_lockfile *lf, int *exclusive, bool owned)
{
    int err = 0;
    struct stat pre;
    if (owned && stat(lf->path, &pre) == 0 &&
        lk_find((uint64_t)pre.st_dev, (uint64_t)pre.st_ino) >= 0)
        return EBUSY; /* see lk_find */
    for (int tries = 0;; tries++) {
        int fd = open(lf->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            err = errno;
            break;
        }
        int excl = 1;
        err = lk(fd, LK_SET, F_WRLCK, 0);
        if (err == EAGAIN) {
            excl = 0;
            err = lk(fd, LK_SETW, F_RDLCK, 0); /* waits while another handle rebuilds it */
        }
        struct stat a, b;
        if (!err && fstat(fd, &a) != 0)
            err = errno;
        if (err) {
            close(fd);
            break;
        }
        /* the last handle of another process may have removed it between our open and our
         * lock: then the path names another file (or none) and ours is an orphan */
        if ((stat(lf->path, &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) &&
            tries < 1000) {
            close(fd);
            continue;
        }
        if (excl && (uint64_t)a.st_size != LF_SIZE && ftruncate(fd, LF_SIZE) != 0) {
            err = errno;
            close(fd);
            break;
        }
        if (!excl && (uint64_t)a.st_size < LF_SIZE) {
            /* in use but short: a rebuild was interrupted; lockfile_check decides */
            if (lk(fd, LK_SET, F_WRLCK, 0) == 0 && ftruncate(fd, LF_SIZE) == 0) {
                excl = 1;
            } else {
                close(fd);
                err = EIO;
                break;
            }
        }
        void *p = mmap(NULL, LF_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED || (owned && (err = lk_add((uint64_t)a.st_dev,
                                                         (uint64_t)a.st_ino)) != 0)) {
            if (p == MAP_FAILED)
                err = errno;
            else
                munmap(p, LF_SIZE);
            close(fd);
            break;
        }
        lf->fd = fd;
        lf->dev = (uint64_t)a.st_dev;
        lf->ino = (uint64_t)a.st_ino;
        lf->hdr = p;
        lf->slots = (lf_slot *)((uint8_t *)p + LF_HEADER);
        *exclusive = excl;
        return 0;
    }
    return err;
}

int lockfile_init(bs_lockfile *lf, uint64_t dev, uint64_t ino, uint64_t txid, uint64_t slot,
                  uint64_t dtxid, uint64_t dslot)
{
    lf_header *h = lf->hdr;
    /* nobody else maps it now (we hold the open lock exclusively) */
    memset((uint8_t *)h + sizeof h->magic, 0, LF_SIZE - sizeof h->magic);
    memset(h->magic, 0, sizeof h->magic);
    h->version = LF_VERSION;
    h->nslots = LF_NSLOTS;
    h->layout_size = LF_SIZE;
    h->data_dev = dev;
    h->data_ino = ino;
    atomic_store(&h->latest_txid, txid);
    atomic_store(&h->latest_slot, slot);
    atomic_store(&h->durable_txid, dtxid);
    atomic_store(&h->durable_slot, dslot);
    atomic_store(&h->committing, 0);
    atomic_store(&h->slot_hw, 0);
    atomic_thread_fence(memory_order_seq_cst);
    memcpy(h->magic, lf_magic, sizeof lf_magic); /* valid from here on */
    int err = lk(lf->fd, LK_SET, F_RDLCK, 0);  /* downgrade: others may come in */
    if (err)
        return bs_fail_io(err, "locking %s", lf->path);
    return BS_OK;
}

int lockfile_check(bs_lockfile *lf, uint64_t dev, uint64_t ino, int *rebuild)
{
    const lf_header *h = lf->hdr;
    *rebuild = 0;
    const char *why = NULL;
    if (memcmp(h->magic, lf_magic, sizeof lf_magic) != 0)
        why = "it is not a btree_store lock file";
    else if (h->version != LF_VERSION || h->nslots != LF_NSLOTS || h->layout_size != LF_SIZE)
        why = "it has another layout (another btree_store version has the database open?)";
    else if (h->data_dev != dev || h->data_ino != ino)
        why = "it belongs to another file (was the database file replaced while other "
              "processes had it open?)";
    else
        return BS_OK;
    /* damaged but unused (its users crashed while it was rebuilt): rebuild it ourselves */
    if (lk(lf->fd, LK_SET, F_WRLCK, 0) == 0) {
        *rebuild = 1;
        return BS_OK;
    }
    return bs_fail(BS_LOCKED, "%s: %s, and other processes use it", lf->path, why);
}

int lockfile_join(bs_lockfile *lf, const char *dbpath, uint64_t dev, uint64_t ino,
                  int rebuilding)
{
    int fd = open(dbpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bs_fail_io(errno, "opening %s for its join lock", dbpath);
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_dev != dev || (uint64_t)st.st_ino != ino) {
        close(fd);
        return bs_fail(BS_LOCKED, "%s was replaced while it was being opened", dbpath);
    }
    if (rebuilding) {
        struct flock fl;
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = (off_t)LF_JOIN_BYTE;
        fl.l_len = 1;
        int err = 0;
#ifdef F_OFD_GETLK
        int getlk = lk_process_owned() ? F_GETLK : F_OFD_GETLK;
#else
        int getlk = F_GETLK;
#endif
        while (fcntl(fd, getlk, &fl) != 0 && (err = errno) == EINTR)
            err = 0;
        if (err) {
            close(fd);
            return bs_fail_io(err, "testing the join lock of %s", dbpath);
        }
        if (fl.l_type != F_UNLCK) {
            close(fd);
            return bs_fail(BS_LOCKED, "%s: the side file was deleted or replaced while other "
                           "handles have the database open (they go on with the old one); "
                           "close them before opening it again", lf->path);
        }
    }
    int err = lk(fd, LK_SET, F_RDLCK, (off_t)LF_JOIN_BYTE);
    if (err) {
        close(fd);
        return bs_fail_io(err, "taking the join lock of %s", dbpath);
    }
    lf->data_fd = fd;
    return BS_OK;
}

int lockfile_slot_acquire(bs_lockfile *lf)
{
    for (uint32_t i = 0; i < LF_NSLOTS; i++) {
        int err = lk(lf->fd, LK_SET, F_WRLCK, 2 + (off_t)i);
        if (err == EAGAIN)
            continue;
        if (err)
            return bs_fail_io(err, "locking a reader slot of %s", lf->path);
        lf->slot = i;
        atomic_store(&lf->slots[i].snap, 0);
        atomic_fetch_add(&lf->slots[i].gen, 1);
        uint64_t hw = atomic_load(&lf->hdr->slot_hw);
        while (hw < i + 1u && !atomic_compare_exchange_weak(&lf->hdr->slot_hw, &hw, i + 1u))
            ;
        return BS_OK;
    }
    return bs_fail(BS_LOCKED, "all %u reader slots of %s are in use (too many open handles)",
                   LF_NSLOTS, lf->path);
}

void lockfile_close(bs_lockfile *lf, int forked)
{
    if (!lf)
        return;
    bool owned = lk_process_owned();
    if (owned)
        pthread_mutex_lock(&lk_mu);
    if (lf->data_fd >= 0) {
        /* first: an opener that finds the side file gone once we removed it must not see
         * our join lock. Unlocked explicitly: a forked child that still shares the open file
         * description (it cannot use the inherited handle) would keep it held; a child never
         * unlocks (its parent's lock) */
        if (!forked)
            (void)lk(lf->data_fd, LK_SET, F_UNLCK, (off_t)LF_JOIN_BYTE);
        close(lf->data_fd);
        lf->data_fd = -1;
    }
    if (!forked && lf->hdr) {
        if (lf->slot >= 0)
            atomic_store(&lf->slots[lf->slot].snap, 0);
        /* the last handle removes the side file (it holds nothing worth keeping); a newcomer
         * that opened it meanwhile sees that the path is gone once it has its lock */
        struct stat a, b;
        if (lk(lf->fd, LK_SET, F_WRLCK, 0) == 0 && fstat(lf->fd, &a) == 0 &&
            stat(lf->path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
            (void)unlink(lf->path);
    }
    lf_unmap(lf);
    int mine = owned && lf->fd >= 0 ? lk_find(lf->dev, lf->ino) : -1;
    if (owned && forked && mine >= 0) {
        /* a fork() child's inherited copy of a file the child opened again itself: closing
         * this descriptor would release the child's own locks; it stays open (close-on-exec)
         * until the child exits */
    } else if (lf->fd >= 0) {
        if (mine >= 0)
            lk_open[mine].pid = 0;
        close(lf->fd); /* releases our locks (unless a forked child still shares them) */
    }
    if (owned)
        pthread_mutex_unlock(&lk_mu);
    free(lf->path);
    free(lf);
}

int lockfile_write_lock(bs_lockfile *lf, long timeout_ms)
{
    if (timeout_ms < 0) {
        int err = lk(lf->fd, LK_SETW, F_WRLCK, 1);
        return err ? bs_fail_io(err, "taking the write lock of %s", lf->path) : BS_OK;
    }
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long wait_us = 50;
    for (;;) {
        int err = lk(lf->fd, LK_SET, F_WRLCK, 1);
        if (!err)
            return BS_OK;
        if (err != EAGAIN)
            return bs_fail_io(err, "taking the write lock of %s", lf->path);
        clock_gettime(CLOCK_MONOTONIC, &now);
        long el = (long)(now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (el >= timeout_ms)
            return bs_fail(BS_LOCKED, "another process has a write transaction open");
        /* fcntl has no timed wait: poll, backing off to 5 ms */
        struct timespec d = {0, wait_us * 1000};
        nanosleep(&d, NULL);
        if (wait_us < 5000)
            wait_us *= 2;
    }
}

void lockfile_write_unlock(bs_lockfile *lf)
{
    (void)lk(lf->fd, LK_SET, F_UNLCK, 1);
}

int lockfile_exclusive(bs_lockfile *lf)
{
    if (lk(lf->fd, LK_SET, F_WRLCK, 0) != 0)
        return bs_fail(BS_LOCKED, "other processes (or handles) have the database open");
    return BS_OK;
}

void lockfile_shared(bs_lockfile *lf)
{
    (void)lk(lf->fd, LK_SET, F_RDLCK, 0);
}

uint64_t lockfile_oldest(bs_lockfile *lf, uint64_t *count)
{
    uint64_t m = UINT64_MAX, c = 0;
    uint64_t hw = atomic_load(&lf->hdr->slot_hw);
    if (hw > LF_NSLOTS)
        hw = LF_NSLOTS;
    for (uint64_t i = 0; i < hw; i++) {
        if ((int64_t)i == lf->slot)
            continue;
        uint64_t s = atomic_load(&lf->slots[i].snap);
        if (!s)
            continue;
        /* a slot whose lock we can take has no owner: it died holding a reader */
        if (lk(lf->fd, LK_SET, F_WRLCK, 2 + (off_t)i) == 0) {
            atomic_store(&lf->slots[i].snap, 0);
            (void)lk(lf->fd, LK_SET, F_UNLCK, 2 + (off_t)i);
            continue;
        }
        s = atomic_load(&lf->slots[i].snap);
        if (s)
            c++;
        if (s && s < m)
            m = s;
    }
    if (count)
        *count = c;
    return m;
}
