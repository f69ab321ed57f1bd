/*
 * util.c - error codes, their texts, the thread-local error detail of the engine, and the
 * growth helper for arrays (bs_grow).
 *
 * Layer: engine utility (also the growth helper for arrays); calls only the C library.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local char tl_msg[512];
static _Thread_local int tl_errno;

static const char *const rc_text[BS_RC_COUNT] = {
    [BS_OK] = "success",
    [BS_NOTFOUND] = "not found",
    [BS_EXISTS] = "already exists",
    [BS_CORRUPT] = "database file is corrupt",
    [BS_NOTDB] = "file is not a btree_store database",
    [BS_VERSION] = "database format is not the one this library opens (newer, or an older one to upgrade)",
    [BS_IOERR] = "I/O error",
    [BS_FULL] = "disk full",
    [BS_NOMEM] = "out of memory",
    [BS_READONLY] = "database or transaction is read-only",
    [BS_LOCKED] = "database is locked",
    [BS_BADTXN] = "transaction is no longer usable",
    [BS_MISUSE] = "API misuse",
    [BS_PANIC] = "an earlier commit failed; reopen the database",
    [BS_TOOBIG] = "key or value too large",
    [BS_INUSE] = "transaction is in use by another thread",
    [BS_FORKED] = "database handle was inherited across fork(); open the database again in the child process",
    [BS_WOULDBLOCK] = "operation needs I/O",
    [BS_NOBUCKET] = "bucket not found",
};

const char *bs_strerror(int rc)
{
    if (rc < 0 || rc >= BS_RC_COUNT || !rc_text[rc])
        return "unknown error";
    return rc_text[rc];
}

const char *bs_errmsg(void) { return tl_msg; }
int bs_errno(void) { return tl_errno; }

void bs_clear_error(void)
{
    tl_msg[0] = 0;
    tl_errno = 0;
}

int bs_fail(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
    tl_errno = 0;
    return rc;
}

int bs_fail_io(int err, const char *fmt, ...)
{
    char head[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    snprintf(tl_msg, sizeof tl_msg, "%s: %s", head, strerror(err));
    tl_errno = err;
    return (err == ENOSPC || err == EDQUOT || err == EFBIG) ? BS_FULL : BS_IOERR;
}

int bs_grow(void *pp, size_t *cap, size_t need, size_t elem, size_t first, const char *what)
{
    if (need <= *cap)
        return BS_OK;
    size_t nc = *cap ? *cap : first;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem)
            return bs_fail(BS_NOMEM, "out of memory growing %s", what);
        nc *= 2;
    }
    void *old;
    memcpy(&old, pp, sizeof old);
    void *nv = realloc(old, nc * elem);
    if (!nv)
        return bs_fail(BS_NOMEM, "out of memory growing %s", what);
    memcpy(pp, &nv, sizeof nv);
    *cap = nc;
    return BS_OK;
}
