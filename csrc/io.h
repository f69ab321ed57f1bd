/*
 * io.h - the file I/O layer as a table of function pointers (SQLite's VFS idea, cut down).
 *
 * Layer: bottom of the engine. The pager does every read, write, sync, size, truncate and
 * lock of the database file through a bs_io_methods table; io_posix.c is the real one,
 * io_fault.c wraps another table to inject faults (tests only). Nothing here includes
 * Python.h or knows about pages.
 *
 * Return convention: 0 on success, else a positive errno value (EIO, ENOSPC, EAGAIN ...).
 * read_at: short reads past the end of file fill the rest with zeros and report the number
 * of bytes really read in *got (so the pager can tell truncation from corruption).
 * write_at / writev_at: all-or-error (loops over short writes internally).
 */
#ifndef BS_IO_H
#define BS_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct bs_file bs_file; /* opaque per implementation */

enum { BS_LOCK_SH = 1, BS_LOCK_EX = 2 };

typedef struct bs_io_methods {
    /* Open (creating if `create` and missing) path. readonly: O_RDONLY. *created = 1 when the
     * file did not exist before. arg is bs_options.io_arg. */
    int (*open)(void *arg, const char *path, int readonly, int create, bs_file **out, int *created);
    /* Close the descriptor. forked != 0: called in a child after fork(); must not unlock. */
    int (*close)(bs_file *f, int forked);
    int (*read_at)(bs_file *f, void *buf, size_t len, uint64_t off, size_t *got);
    int (*write_at)(bs_file *f, const void *buf, size_t len, uint64_t off);
    int (*writev_at)(bs_file *f, const struct iovec *iov, int iovcnt, uint64_t off);
    int (*sync)(bs_file *f);                 /* fdatasync (F_FULLFSYNC on macOS) */
    int (*size)(bs_file *f, uint64_t *out);
    int (*truncate)(bs_file *f, uint64_t len);
    /* Non-blocking advisory whole-file lock (flock): EWOULDBLOCK/EAGAIN when held elsewhere. */
    int (*lock)(bs_file *f, int kind);
    /* fsync the directory holding path (after creating the file). */
    int (*sync_dir)(void *arg, const char *path);
    /* Optional (NULL = not available): read only if the whole range is already in the OS
     * page cache, without blocking on the device. 0 with *got == len, else EAGAIN (would
     * block, or only part is cached) or ENOTSUP. The pager uses it while holding the GIL and
     * releases the GIL only for reads that must wait for the disk. */
    int (*read_nowait)(bs_file *f, void *buf, size_t len, uint64_t off, size_t *got);
    /* Optional (NULL = not available): read consecutive bytes from off into iovcnt buffers
     * (at most BS_IO_READV_MAX) with one call, *got = bytes read (short at the end of the
     * file; no zero fill). nowait: as read_nowait (0 only when the whole range was cached).
     * Read-ahead uses it to read a group of pages straight into their cache frames. */
    int (*readv_at)(bs_file *f, const struct iovec *iov, int iovcnt, uint64_t off, int nowait,
                    size_t *got);
} bs_io_methods;

#define BS_IO_READV_MAX 16

/* The real POSIX implementation (io_posix.c). */
extern const bs_io_methods bs_io_posix;
/* The descriptor of a file bs_io_posix opened (for mapping it, map.c). */
int bs_io_posix_fd(bs_file *f);

/* In-memory files (io_mem.c): the database lives in a heap buffer that close() frees; no
 * file system access at all (path is only a name; sync, sync_dir and lock do nothing).
 * io_arg: NULL to start empty, or a path (const char *) whose bytes are loaded at open. */
extern const bs_io_methods bs_io_mem;

/* ---- fault injection (io_fault.c); tests only ---- */
/* A fault controller wraps an inner table (normally &bs_io_posix). The pager does not know
 * about it: the binding passes &bs_io_fault as bs_options.io and the controller as io_arg. */
typedef struct bs_fault bs_fault;

enum {
    BS_FAULT_READ = 1, BS_FAULT_WRITE = 2, BS_FAULT_SYNC = 4, BS_FAULT_TRUNCATE = 8,
    BS_FAULT_ANY = 15
};

extern const bs_io_methods bs_io_fault;

bs_fault *bs_fault_new(const bs_io_methods *inner);
void bs_fault_free(bs_fault *fc);
/* Fail the n-th call (1-based, counted over the kinds in mask, from now) with err. After it
 * fires, if sticky, every later call of those kinds fails too (like a dead disk). n = 0 off. */
void bs_fault_fail_nth(bs_fault *fc, unsigned mask, uint64_t n, int err, int sticky);
/* Tear the n-th write: only its first `keep` bytes (a multiple of 512) reach the file, then
 * the call fails with EIO. */
void bs_fault_tear_nth(bs_fault *fc, uint64_t n, size_t keep);
/* After n more successful calls of the kinds in mask, every such call fails with err until
 * bs_fault_heal() (a full disk: ENOSPC; a dying one: EIO). */
void bs_fault_fail_after(bs_fault *fc, unsigned mask, uint64_t n, int err);
/* The n-th call (1-based, counted over the kinds in mask, from now) kills the process with
 * SIGKILL before it does anything. n = 0 off. */
void bs_fault_kill_nth(bs_fault *fc, unsigned mask, uint64_t n);
/* Turn fail_nth, fail_after, tear_nth and kill_nth off. */
void bs_fault_heal(bs_fault *fc);
/* The machine model (see io_fault.c's header). on: log unsynced writes per path from now on
 * (everything before counts as durable); seed is kept for callers. */
void bs_fault_powerloss(bs_fault *fc, int on, uint64_t seed);
/* The process dies: every handle open on fc is dead (EIO) and its descriptor closed; the
 * unsynced logs stay. Returns how many live handles it killed. */
int bs_fault_crash(bs_fault *fc);
enum { BS_POWERLOSS_DROP = 1, BS_POWERLOSS_TEAR = 2, BS_POWERLOSS_REORDER = 3 };
/* Crash, then lose / tear / reorder every unsynced write on the machine (io_fault.c). 0 or
 * an errno (EINVAL: bad mode). */
int bs_fault_power_loss(bs_fault *fc, int mode, uint64_t seed);
/* Unsynced records of path (NULL: all paths), an unsynced directory entry counting one. */
uint64_t bs_fault_unsynced(bs_fault *fc, const char *path);
/* Calls seen so far per kind (counters never reset), and whether an injected fault fired. */
uint64_t bs_fault_count(bs_fault *fc, unsigned kind_mask);
int bs_fault_fired(bs_fault *fc);

#endif
