/*
 * lockfile.h - the side file PATH-lock that lets many processes use one database: a small
 * shared memory header (the newest commit, the durability horizon) and a table of reader
 * slots, mapped by every process, plus OFD byte locks on it (docs/ARCHITECTURE.md, "Many
 * processes").
 *
 * Layer: bottom of the engine beside io_*.c: POSIX calls (open, fcntl, mmap) and bs_fail only;
 * knows nothing of pages. Called by db.c (and copy.c for compaction).
 *
 * Locks (fcntl open file description locks, F_OFD_SETLK; plain fcntl locks where OFD locks
 * do not exist, where the kernel refuses them (EINVAL, found out at the first open) or
 * BTREE_STORE_POSIX_LOCKS is set, see lockfile.c), one byte each:
 *   byte 0      the open lock: shared while a handle has the database open; exclusive while
 *               one handle (re)builds the side file, which it may do only when no other
 *               handle has it open, and while compact() swaps the file.
 *   byte 1      the write lock: held from begin(write=True) to commit/abort.
 *   byte 2 + i  ownership of reader slot i, for the life of the handle. A slot whose lock can
 *               be taken belongs to nobody: its owner closed or died (the OS released it).
 * The side file never holds data: missing, stale or corrupt, it is rebuilt by the next opener
 * that finds no other handle open.
 * One more lock lives on the DATA file (its own read-only descriptor, byte LF_JOIN_BYTE, far
 * past any page): shared by every handle that joined a side file, from lockfile_join to
 * lockfile_close. A side file found unused (exclusive open lock) while that lock is held
 * elsewhere was deleted or replaced under live handles, which go on with the old one: the
 * opener refuses (BS_LOCKED) instead of rebuilding it and becoming a second writer.
 */
#ifndef BS_LOCKFILE_H
#define BS_LOCKFILE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define LF_SIZE 16384u      /* the whole side file */
#define LF_HEADER 256u
#define LF_NSLOTS ((LF_SIZE - LF_HEADER) / 16u)
#define LF_VERSION 2u       /* 2: the ring of lost ranges (1: one range, 128-byte header) */
#define LF_LOST 8u          /* lost ranges remembered */

typedef struct lf_slot {
    _Atomic uint64_t gen;   /* bumped by every new owner */
    _Atomic uint64_t snap;  /* oldest snapshot txid + 1 a reader of the owner holds; 0: none */
} lf_slot;

typedef struct lf_header {
    uint8_t magic[8];                 /* "BSLOCK\r\n" */
    uint32_t version, nslots;
    uint64_t layout_size;             /* LF_SIZE */
    uint64_t data_dev, data_ino;      /* the database file this side file belongs to */
    _Atomic uint64_t latest_txid;     /* newest committed txid (published after its meta) */
    _Atomic uint64_t latest_slot;     /* the meta page holding it */
    _Atomic uint64_t durable_txid;    /* newest commit known to be on stable storage */
    _Atomic uint64_t durable_slot;    /* the meta page holding that one */
    _Atomic uint64_t committing;      /* nonzero while a writer is inside commit */
    _Atomic uint64_t slot_hw;         /* slots [0, slot_hw) have ever been used */
    _Atomic uint64_t txid_hw;         /* highest txid any writer committed (0: none known):
                                       * a commit lost with a torn meta page keeps its txid
                                       * taken, so no later commit reuses it */
    _Atomic uint64_t lost_n;          /* losses recorded: the newest is lost[(lost_n - 1) %
                                       * LF_LOST], the LF_LOST newest are kept */
    uint64_t pad0;
    struct {
        _Atomic uint64_t lo, hi;      /* the commits (lo, hi] were announced and then lost,
                                       * the database went on from commit lo (0, 0: none) */
    } lost[LF_LOST];
    uint8_t pad[LF_HEADER - 112 - 16 * LF_LOST];
} lf_header;

#define LF_JOIN_BYTE ((int64_t)1 << 62) /* offset of the join lock in the data file */

typedef struct bs_lockfile {
    int fd;
    int data_fd;            /* the data file, holding the join lock; -1 before lockfile_join */
    lf_header *hdr;         /* the mapping (LF_SIZE bytes) */
    lf_slot *slots;
    int64_t slot;           /* our slot, -1 before lockfile_slot_acquire */
    char *path;             /* PATH-lock */
    uint64_t dev, ino;      /* of the side file */
} bs_lockfile;

/* Open (creating) dbpath + "-lock", map it and take the open lock: exclusive if no other
 * handle has it open (*exclusive = 1: the caller must then call lockfile_init), else shared
 * (waits while another handle rebuilds it). A shared side file must pass lockfile_check.
 * 0, or an errno value (EACCES, EROFS ... the caller decides; EIO for a short file; EBUSY:
 * process-owned locks and this process has the file open already). */
int lockfile_open(const char *dbpath, bs_lockfile **out, int *exclusive);
/* Exclusive holder only: write a fresh header and empty slots for the database (dev, ino),
 * whose newest commit is (txid, slot) and durable commit (dtxid, dslot), then downgrade the
 * open lock to shared. BS_OK or BS_IOERR. */
int lockfile_init(bs_lockfile *lf, uint64_t dev, uint64_t ino, uint64_t txid, uint64_t slot,
                  uint64_t dtxid, uint64_t dslot);
/* Shared holder: BS_OK when the header is valid and names the database (dev, ino). A bad
 * header that no other handle uses is rebuilt by the caller: *rebuild = 1 and the open lock
 * is exclusive again (call lockfile_init). Else BS_LOCKED with a message. */
int lockfile_check(bs_lockfile *lf, uint64_t dev, uint64_t ino, int *rebuild);
/* With the open lock held (exclusive when about to build the side file: rebuilding != 0):
 * take the join lock on the data file dbpath (dev, ino: the file the handle opened). A
 * rebuilding opener first checks that no other handle holds it: else BS_LOCKED (the side
 * file was deleted or replaced while they had the database open). BS_OK, BS_LOCKED,
 * BS_IOERR. */
int lockfile_join(bs_lockfile *lf, const char *dbpath, uint64_t dev, uint64_t ino,
                  int rebuilding);
/* True where an opener must not take the shared flock of the data file: systems whose
 * flock() and fcntl() locks conflict with each other (macOS and the BSDs), where that flock,
 * even the opener's own, would make lockfile_join's test refuse every rebuild; and the
 * process-owned lock path (BTREE_STORE_POSIX_LOCKS stands for macOS in tests). dbpath: the
 * database file, which the first call probes for open file description locks. */
bool lockfile_no_data_flock(const char *dbpath);
/* Take a free reader slot for this handle. BS_OK, or BS_LOCKED when all are held. */
int lockfile_slot_acquire(bs_lockfile *lf);
/* forked != 0: an inherited copy in a child: unmap and close, touch no lock or slot. Else
 * clear our slot and, when no other handle has it open, remove the side file. */
void lockfile_close(bs_lockfile *lf, int forked);

/* The write lock (byte 1): timeout_ms < 0 waits forever, 0 tries once. BS_OK, BS_LOCKED
 * (held elsewhere until the timeout), BS_IOERR. */
int lockfile_write_lock(bs_lockfile *lf, long timeout_ms);
void lockfile_write_unlock(bs_lockfile *lf);
/* Try to make the open lock exclusive (no other handle has the database open): BS_OK or
 * BS_LOCKED. lockfile_shared goes back to shared. */
int lockfile_exclusive(bs_lockfile *lf);
void lockfile_shared(bs_lockfile *lf);

/* The oldest snapshot (txid + 1, UINT64_MAX for none) that a reader of another handle
 * holds, reclaiming the slots of dead owners on the way; *count (optional): how many other
 * handles hold one. One fcntl per other handle that has a reader open; none when this
 * handle is alone. */
uint64_t lockfile_oldest(bs_lockfile *lf, uint64_t *count);

/* Publish the oldest snapshot (txid + 1, or 0) our readers hold. Sequentially consistent:
 * a load of latest_txid after it sees every commit a writer could have started from without
 * seeing this store. */
static inline void lockfile_publish(bs_lockfile *lf, uint64_t snap1)
{
    atomic_store(&lf->slots[lf->slot].snap, snap1);
}

/* Record that the commits (kept, upto] were announced and lost (a torn meta slot): a reader
 * still holding one learns it when a page it needs was reused (lockfile_lost). The same loss
 * seen again (the newest range starts at `kept`) grows that range; another takes the next
 * entry of the ring (the oldest of LF_LOST is forgotten). Write-lock holder only. */
static inline void lockfile_note_lost(bs_lockfile *lf, uint64_t kept, uint64_t upto)
{
    lf_header *h = lf->hdr;
    if (upto <= kept)
        return;
    uint64_t n = atomic_load(&h->lost_n);
    if (n) {
        uint64_t i = (n - 1) % LF_LOST;
        if (atomic_load(&h->lost[i].lo) == kept) {
            if (atomic_load(&h->lost[i].hi) < upto)
                atomic_store(&h->lost[i].hi, upto); /* only wider: readers may look */
            return;
        }
    }
    uint64_t i = n % LF_LOST;
    atomic_store(&h->lost[i].hi, 0); /* never a range wider than the truth meanwhile */
    atomic_store(&h->lost[i].lo, kept);
    atomic_store(&h->lost[i].hi, upto);
    atomic_store(&h->lost_n, n + 1);
}

/* Whether the commit `txid` is one that was announced and then lost; *kept (optional): the
 * commit the database went on from. A reader racing with lockfile_note_lost may miss a
 * range being written (a later commit's loss: txids only grow) or see the one it replaces. */
static inline bool lockfile_lost(const bs_lockfile *lf, uint64_t txid, uint64_t *kept)
{
    const lf_header *h = lf->hdr;
    for (unsigned i = 0; i < LF_LOST; i++) {
        uint64_t hi = atomic_load(&h->lost[i].hi), lo = atomic_load(&h->lost[i].lo);
        if (txid <= hi && txid > lo) {
            if (kept)
                *kept = lo;
            return true;
        }
    }
    return false;
}

static inline uint64_t lockfile_published(const bs_lockfile *lf)
{
    return atomic_load_explicit(&lf->slots[lf->slot].snap, memory_order_relaxed);
}

#endif
