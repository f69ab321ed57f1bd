/*
 * py_db.c - the DB type of btree_store._core: open/close, begin, check, stat, buckets.
 *
 * Layer: CPython binding; calls the engine only through bs.h. bs_db_open, bs_txn_begin,
 * bs_db_check_report, bs_db_repair, bs_db_stat, bs_db_copy, bs_db_compact and bs_db_close run
 * with the GIL released.
 *
 * Closing: close() first sets `closed` (every new call raises ClosedError), then
 * aborts every live transaction that no thread is inside, waits (GIL released, short sleeps)
 * until the calls in flight on other threads have left the engine, aborts the rest, and only
 * then calls bs_db_close. A DB is closed by its finalizer when the last reference goes.
 */
#include "py_internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "io.h"
#include "structmember.h"

/* ---- helpers ---- */

const char *py_db_closed_msg(const DBObject *db)
{
    return db->closed_why ? db->closed_why : "database is closed";
}

int py_db_check_usable(DBObject *db)
{
    if (db->closed || !db->db) {
        PyErr_SetString(db->st->ClosedError, py_db_closed_msg(db));
        return -1;
    }
    if (db->fork_gen != py_fork_gen) {
        py_raise_forked(db->st);
        return -1;
    }
    if (db->switching) { /* only compact() switches an open handle */
        PyErr_SetString(db->st->Error, "the database is being compacted by another thread");
        return -1;
    }
    return 0;
}

void py_db_link_txn(DBObject *db, TxnObject *txn)
{
    txn->prev = NULL;
    txn->next = db->txns;
    if (db->txns)
        db->txns->prev = txn;
    db->txns = txn;
}

void py_db_unlink_txn(DBObject *db, TxnObject *txn)
{
    if (txn->prev)
        txn->prev->next = txn->next;
    else if (db->txns == txn)
        db->txns = txn->next;
    if (txn->next)
        txn->next->prev = txn->prev;
    txn->prev = txn->next = NULL;
}

static void db_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    Py_BEGIN_ALLOW_THREADS
    nanosleep(&ts, NULL);
    Py_END_ALLOW_THREADS
}

static double db_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void db_release_io(DBObject *self)
{
    if (self->io) {
        py_faultio_release(self->io);
        Py_CLEAR(self->io);
    }
}

/* Close the engine handle (see the header comment). 0, or -1 with an exception set. */
static int db_close_impl(DBObject *self)
{
    self->closed = 1;
    while (self->switching) /* another thread is opening or closing the handle: wait */
        db_sleep_ms(1);
    if (!self->db)
        return 0;
    if (self->fork_gen != py_fork_gen) {
        /* Inherited across fork(): never touch the parent's transactions; bs_db_close only
         * releases the child's memory and descriptor. */
        while (self->txns) {
            TxnObject *t = self->txns;
            t->txn = NULL;
            t->ended_by_close = 1;
            py_db_unlink_txn(self, t);
        }
        bs_db *d = self->db;
        self->db = NULL;
        bs_db_close(d);
        db_release_io(self);
        return 0;
    }
    unsigned long me = PyThread_get_thread_ident();
    for (;;) {
        TxnObject *t, *next;
        for (t = self->txns; t; t = next) {
            next = t->next;
            if (!t->busy) {
                t->ended_by_close = 1;
                py_txn_finish(t);
            } else if (t->busy_thread == me) {
                /* Reached from a finalizer run inside one of our own calls on this thread:
                 * waiting would deadlock. The DB stays marked closed; dealloc closes it. */
                PyErr_SetString(self->st->Error,
                                "cannot close the database from inside a call that is using it");
                return -1;
            }
        }
        if (!self->txns && self->active == 0)
            break;
        db_sleep_ms(1);
        if (!self->db || self->switching) { /* another thread's close() got there first */
            while (self->switching)
                db_sleep_ms(1);
            return 0;
        }
    }
    bs_db *d = self->db;
    self->db = NULL;
    self->switching = 1;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = bs_db_close(d);
    Py_END_ALLOW_THREADS
    self->switching = 0;
    if (rc == BS_MISUSE) {
        /* An engine transaction we do not know of is still open: nothing was closed; keep
         * the handle (and its I/O) so that a later close() can finish the job. */
        self->db = d;
        py_raise(self->st, rc);
        return -1;
    }
    db_release_io(self);
    if (rc != BS_OK) {
        py_raise(self->st, rc);
        return -1;
    }
    return 0;
}

/* An open that failed: the standard OSError subclass (FileNotFoundError, PermissionError,
 * IsADirectoryError, ...) with .filename for a failing open of the path itself or of its
 * side file PATH-lock (then with the engine's explanation), else the usual mapping. */
static void db_raise_open(DBObject *self, int rc, PyObject *fspath, int readonly)
{
    int err = bs_errno();
    static const char lockmsg[] = "opening the lock file ";
    if (rc == BS_IOERR && (err == EACCES || err == EPERM || err == EROFS) &&
        strncmp(bs_errmsg(), lockmsg, sizeof lockmsg - 1) == 0) {
        PyObject *lock = PyUnicode_Check(fspath) ? PyUnicode_FromFormat("%U-lock", fspath)
                                                 : PyBytes_FromFormat("%s-lock",
                                                                      PyBytes_AS_STRING(fspath));
        PyObject *msg = lock ? PyUnicode_FromString(bs_errmsg()) : NULL;
        PyObject *exc = msg ? PyObject_CallFunction(PyExc_OSError, "iOO", err, msg, lock) : NULL;
        Py_XDECREF(msg);
        Py_XDECREF(lock);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return;
    }
    if (rc == BS_IOERR && (err == ENOENT || err == EACCES || err == EPERM || err == EISDIR ||
                           err == ENOTDIR || err == EROFS)) {
        const char *hint = "";
        if ((err == EACCES || err == EPERM || err == EROFS) && !readonly)
            hint = " (to read a file you may not write, pass readonly=True)";
        PyObject *msg = PyUnicode_FromFormat("%s%s", strerror(err), hint);
        if (!msg)
            return;
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iOO", err, msg, fspath);
        Py_DECREF(msg);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return;
    }
    py_raise(self->st, rc);
}

/* ---- type slots ---- */

static PyObject *db_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    py_state *st = py_state_from_type(tp);
    if (!st) {
        PyErr_SetString(PyExc_TypeError, "btree_store DB type without its module");
        return NULL;
    }
    DBObject *self = (DBObject *)tp->tp_alloc(tp, 0);
    if (!self)
        return NULL;
    self->st = st;
    self->closed = 1;
    self->fork_gen = py_fork_gen;
    return (PyObject *)self;
}

/* Is this os.fspath() result the special name ":memory:" (str or bytes)? */
static int db_is_memory_name(PyObject *fspath)
{
    if (PyUnicode_Check(fspath))
        return PyUnicode_CompareWithASCIIString(fspath, ":memory:") == 0;
    return PyBytes_Check(fspath) && PyBytes_GET_SIZE(fspath) == 8 &&
           memcmp(PyBytes_AS_STRING(fspath), ":memory:", 8) == 0;
}

static int db_init(DBObject *self, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {"path", "readonly", "create", "sync", "cache_size",
                                        "page_size", "check_commits", "_io", "_memory_from",
                                        NULL};
    static const py_argspec spec = {"DB", names, 1, 1};
    PyObject *a[9];
    if (py_parse_tuple(&spec, args, kwds, a) < 0)
        return -1;
    PyObject *path = a[0], *cache_obj = a[4], *psize_obj = a[5], *io = a[7] ? a[7] : Py_None;
    PyObject *check_obj = a[6] ? a[6] : Py_None, *from_obj = a[8] ? a[8] : Py_None;
    int readonly, create, sync;
    /* one at a time: a __bool__ that raises must not run the next one with its error set */
    if ((readonly = py_arg_bool(a[1], 0)) < 0 || (create = py_arg_bool(a[2], 1)) < 0 ||
        (sync = py_arg_bool(a[3], 1)) < 0)
        return -1;
    if (self->db) {
        PyErr_SetString(self->st->Error, "DB.__init__ called on an open database");
        return -1;
    }
    bs_options opt;
    memset(&opt, 0, sizeof opt);
    opt.readonly = readonly;
    opt.create = create;
    opt.sync = sync;
    opt.cache_size = 0; /* the engine's default (bs.h) */
    opt.page_size = 4096;
    if (check_obj == Py_None) {
        opt.check_commits = self->st->check_commits_default;
    } else {
        int on = PyObject_IsTrue(check_obj);
        if (on < 0)
            return -1;
        opt.check_commits = on;
    }
    if (cache_obj && cache_obj != Py_None) {
        if (!PyLong_Check(cache_obj)) {
            PyErr_Format(PyExc_TypeError, "cache_size must be int, not %.100s",
                         Py_TYPE(cache_obj)->tp_name);
            return -1;
        }
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(cache_obj, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (overflow < 0 || (overflow == 0 && v < 0)) {
            PyErr_SetString(PyExc_ValueError, "cache_size must be >= 0");
            return -1;
        }
        opt.cache_size = overflow > 0 ? UINT64_MAX / 2 : (uint64_t)v;
    }
    if (psize_obj && psize_obj != Py_None) {
        if (!PyLong_Check(psize_obj)) {
            PyErr_Format(PyExc_TypeError, "page_size must be int, not %.100s",
                         Py_TYPE(psize_obj)->tp_name);
            return -1;
        }
        int overflow;
        long v = PyLong_AsLongAndOverflow(psize_obj, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (overflow || v < 1024 || v > 65536 || (v & (v - 1))) {
            PyErr_SetString(PyExc_ValueError,
                            "page_size must be a power of two from 1024 to 65536");
            return -1;
        }
        opt.page_size = (uint32_t)v;
    }

    PyObject *fspath = PyOS_FSPath(path);
    if (!fspath)
        return -1;
    int memory = db_is_memory_name(fspath);
    PyObject *pbytes = NULL, *frombytes = NULL, *fromfs = NULL;
    if (from_obj != Py_None && !memory) {
        Py_DECREF(fspath);
        PyErr_SetString(PyExc_ValueError, "_memory_from needs the path \":memory:\"");
        return -1;
    }
    if (memory && io != Py_None) {
        Py_DECREF(fspath);
        PyErr_SetString(PyExc_ValueError, "an in-memory database takes no _io");
        return -1;
    }
    if (memory && readonly && from_obj == Py_None) {
        Py_DECREF(fspath);
        PyErr_SetString(PyExc_ValueError, "a new in-memory database cannot be read-only "
                        "(DB.memory(from_path=...) loads a file first)");
        return -1;
    }
    if (from_obj != Py_None) {
        if (!(fromfs = PyOS_FSPath(from_obj))) {
            Py_DECREF(fspath);
            return -1;
        }
        if (!PyUnicode_FSConverter(fromfs, &frombytes)) {
            Py_DECREF(fromfs);
            Py_DECREF(fspath);
            return -1;
        }
    }
    if (!PyUnicode_FSConverter(fspath, &pbytes)) {
        Py_XDECREF(frombytes);
        Py_XDECREF(fromfs);
        Py_DECREF(fspath);
        return -1;
    }
    /* __fspath__ may have let another thread in: check again, with no Python code from here
     * to the open (which marks the handle as switching, so close() and __init__ wait). */
    while (self->switching)
        db_sleep_ms(1);
    if (self->db) {
        Py_XDECREF(frombytes);
        Py_XDECREF(fromfs);
        Py_DECREF(fspath);
        Py_DECREF(pbytes);
        PyErr_SetString(self->st->Error, "DB.__init__ called on an open database");
        return -1;
    }
    if (memory) {
        opt.io = &bs_io_mem;
        opt.io_arg = frombytes ? PyBytes_AS_STRING(frombytes) : NULL;
    } else if (io != Py_None) {
        struct bs_fault *fc = py_faultio_acquire(self->st, io);
        if (!fc) {
            Py_DECREF(fspath);
            Py_DECREF(pbytes);
            return -1;
        }
        opt.io = &bs_io_fault;
        opt.io_arg = fc;
        Py_XSETREF(self->io, Py_NewRef(io));
    }

    bs_db *d = NULL;
    int rc;
    /* A memory database loaded from a file is opened under that file's name, so that the
     * engine's messages name it (io_mem never touches the name itself). */
    const char *cpath = PyBytes_AS_STRING(frombytes ? frombytes : pbytes);
    self->switching = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = bs_db_open(cpath, &opt, &d);
    Py_END_ALLOW_THREADS
    self->switching = 0;
    Py_DECREF(pbytes);
    Py_XDECREF(frombytes);
    if (rc != BS_OK) {
        db_release_io(self);
        db_raise_open(self, rc, fromfs ? fromfs : fspath, fromfs ? 1 : readonly);
        Py_XDECREF(fromfs);
        Py_DECREF(fspath);
        return -1;
    }
    Py_XDECREF(fromfs);
    Py_XSETREF(self->path, fspath);
    self->memory = memory;
    self->db = d;
    self->closed = 0;
    self->readonly = readonly;
    self->max_key = bs_db_max_key(d);
    self->page_size = bs_db_page_size(d);
    self->fork_gen = py_fork_gen;
    return 0;
}

/* Close, reporting a failure as unraisable (ctx: the object named in the report, or NULL);
 * the caller's pending exception is kept. */
static void db_close_unraisable(DBObject *self, PyObject *ctx)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *saved = PyErr_GetRaisedException();
    if (db_close_impl(self) < 0)
        PyErr_WriteUnraisable(ctx);
    PyErr_SetRaisedException(saved);
#else
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (db_close_impl(self) < 0)
        PyErr_WriteUnraisable(ctx);
    PyErr_Restore(et, ev, tb);
#endif
}

static void db_finalize(DBObject *self)
{
    if (self->db)
        db_close_unraisable(self, (PyObject *)self);
}

static int db_traverse(DBObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->io);
    Py_VISIT(self->path);
    return 0;
}

static int db_clear(DBObject *self)
{
    /* The FaultIO object must outlive the engine handle: clear it only once closed. */
    if (!self->db)
        Py_CLEAR(self->io);
    return 0;
}

static void db_dealloc(DBObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return; /* resurrected */
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->db && !self->txns && self->active == 0) {
        /* Still open: a subclass's __del__ replaced our finalizer (slot_tp_finalize does not
         * chain to the base's), or closing failed. Nothing can be using the handle now:
         * every Txn holds a reference to us, and no other thread can reach us any more
         * (untracked, weak references cleared) while bs_db_close runs without the GIL. */
        db_close_unraisable(self, NULL);
    }
    if (self->db) {
        /* Only when closing failed: never free a handle that might be in use; leak it. */
        self->db = NULL;
    }
    db_release_io(self);
    Py_CLEAR(self->path);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- methods ---- */

static PyObject *db_begin(DBObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"write", "bucket", "timeout", "sync", NULL};
    static const py_argspec spec = {"begin", names, 1, 0};
    PyObject *a[4];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    int write = py_arg_bool(a[0], 0);
    if (write < 0)
        return NULL;
    py_name nm = {NULL, 0};
    PyObject *bucket = NULL;
    if (a[1] && a[1] != Py_None) {
        if (py_bucket_name(a[1], &nm) < 0)
            return NULL;
        bucket = a[1];
    }
    double timeout = -1.0;
    if (a[2] && a[2] != Py_None) {
        timeout = PyFloat_AsDouble(a[2]);
        if (timeout == -1.0 && PyErr_Occurred())
            return NULL;
        if (!(timeout >= 0.0) || isinf(timeout)) {
            PyErr_SetString(PyExc_ValueError, "timeout must be a finite number >= 0 or None");
            return NULL;
        }
    }
    unsigned syncflag = 0; /* sync=None: the database's setting */
    if (a[3] && a[3] != Py_None) {
        int s = py_arg_bool(a[3], 0);
        if (s < 0)
            return NULL;
        if (!write) {
            PyErr_SetString(PyExc_ValueError, "sync= applies to write transactions only");
            return NULL;
        }
        syncflag = s ? BS_TXN_SYNC : BS_TXN_NOSYNC;
    }
    /* Allocated before the engine transaction exists: from bs_txn_begin to the link into
     * our list nothing may allocate, as a collection could run a finalizer that closes us. */
    TxnObject *txn = py_txn_alloc(self, write, bucket);
    if (!txn)
        return NULL;
    if (py_db_check_usable(self) < 0) {
        Py_DECREF(txn);
        return NULL;
    }

    bs_txn *t = NULL;
    int rc;
    double started = db_now();
    if (!write) {
        bs_db *d = self->db;
        self->active++;
        Py_BEGIN_ALLOW_THREADS
        rc = bs_txn_begin(d, 0, 0, &t);
        Py_END_ALLOW_THREADS
        self->active--;
    } else {
        /* Wait in slices so that Ctrl-C and close() are noticed while waiting. */
        double deadline = timeout >= 0 ? started + timeout : 0;
        for (;;) {
            long slice = 100;
            if (timeout >= 0) {
                double left_ms = (deadline - db_now()) * 1000.0; /* compared as a double: */
                if (left_ms < (double)slice)                    /* it may be 1e303 */
                    slice = left_ms <= 0 ? 0 : (long)ceil(left_ms);
            }
            bs_db *d = self->db;
            self->active++;
            Py_BEGIN_ALLOW_THREADS
            rc = bs_txn_begin(d, BS_TXN_WRITE | syncflag, slice, &t);
            Py_END_ALLOW_THREADS
            self->active--;
            if (rc != BS_LOCKED)
                break;
            if (timeout >= 0 && db_now() >= deadline)
                break;
            if (PyErr_CheckSignals() < 0 || py_db_check_usable(self) < 0) {
                Py_DECREF(txn);
                return NULL;
            }
        }
    }
    if (rc != BS_OK) {
        if (rc == BS_LOCKED && write && timeout >= 0) {
            /* the engine waited one slice; report the whole wait */
            char msg[160];
            snprintf(msg, sizeof msg,
                     "timed out after %.3f s waiting for the write lock (another write "
                     "transaction is active)",
                     db_now() - started);
            PyErr_SetString(self->st->LockedError, msg);
        } else if (rc == BS_MISUSE && write)
            py_raise_msg(self->st->Error, "this thread already has an open write transaction "
                                          "on this database (commit or abort it first)");
        else
            py_raise(self->st, rc);
        Py_DECREF(txn);
        return NULL;
    }
    if (self->closed) {
        /* close() ran while we waited: it is waiting for us to leave. */
        bs_txn_abort(t);
        Py_DECREF(txn);
        PyErr_SetString(self->st->ClosedError, py_db_closed_msg(self));
        return NULL;
    }
    py_txn_attach(txn, t);
    if (bucket) {
        bs_txn *et = py_txn_enter(txn, 0);
        if (!et) {
            py_txn_finish(txn);
            Py_DECREF(txn);
            return NULL;
        }
        bs_bucket *b;
        rc = py_txn_open_bucket(et, &nm, 0, &b);
        py_txn_leave(txn);
        if (rc != BS_OK) {
            if (rc == BS_NOBUCKET)
                py_raise_nobucket(self->st, nm.p, nm.n);
            else
                py_raise(self->st, rc);
            py_txn_finish(txn);
            Py_DECREF(txn);
            return NULL;
        }
    }
    return (PyObject *)txn;
}

static PyObject *db_close(DBObject *self, PyObject *Py_UNUSED(ignored))
{
    if (db_close_impl(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The problems bs_db_check_report streams, kept without the GIL (strings copied). */
typedef struct check_list {
    char **v;
    size_t n, cap;
} check_list;

static int check_collect(void *ctx, const char *problem)
{
    check_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(problem)))
        return -1;
    l->n++;
    return 0;
}

static void check_list_free(check_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* CorruptionError(summary) with .problems = [str, ...] */
static PyObject *check_raise(DBObject *self, const check_list *l)
{
    PyObject *list = PyList_New((Py_ssize_t)l->n), *exc = NULL;
    if (!list)
        return NULL;
    for (size_t i = 0; i < l->n; i++) {
        PyObject *s = PyUnicode_DecodeUTF8(l->v[i], (Py_ssize_t)strlen(l->v[i]), "replace");
        if (!s)
            goto out;
        PyList_SET_ITEM(list, (Py_ssize_t)i, s);
    }
    exc = PyObject_CallFunction(self->st->CorruptionError, "s",
                                bs_errmsg()[0] ? bs_errmsg() : bs_strerror(BS_CORRUPT));
    if (!exc || PyObject_SetAttrString(exc, "problems", list) < 0)
        goto out;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
out:
    Py_XDECREF(exc);
    Py_DECREF(list);
    return NULL;
}

static PyObject *db_check(DBObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"max_problems", NULL};
    static const py_argspec spec = {"check", names, 1, 0};
    PyObject *a[1];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    size_t max = 100;
    if (a[0]) {
        if (!PyLong_Check(a[0]) || PyBool_Check(a[0]))
            return PyErr_Format(PyExc_TypeError, "max_problems must be an int, not %.100s",
                                Py_TYPE(a[0])->tp_name);
        Py_ssize_t m = PyLong_AsSsize_t(a[0]);
        if (m == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return NULL;
            PyErr_Clear();
            m = PY_SSIZE_T_MAX; /* "all of them" */
        }
        if (m < 1)
            return py_raise_msg(PyExc_ValueError, "max_problems must be at least 1, not %zd", m);
        max = (size_t)m;
    }
    if (py_db_check_usable(self) < 0)
        return NULL;
    int rc;
    bs_db *d = self->db;
    check_list l = {NULL, 0, 0};
    self->active++;
    Py_BEGIN_ALLOW_THREADS
    rc = bs_db_check_report(d, max, check_collect, &l);
    Py_END_ALLOW_THREADS
    self->active--;
    PyObject *res = NULL;
    if (rc == BS_CORRUPT)
        check_raise(self, &l);
    else if (rc != BS_OK)
        py_raise(self->st, rc);
    else
        res = Py_NewRef(Py_None);
    check_list_free(&l);
    return res;
}

static PyObject *db_repair(DBObject *self, PyObject *Py_UNUSED(ignored))
{
    if (py_db_check_usable(self) < 0)
        return NULL;
    if (self->readonly)
        return py_raise_msg(self->st->ReadonlyError, "repair() rewrites the freelist: it needs "
                                                     "a writable database (this one was opened "
                                                     "read-only)");
    if (self->txns) {
        size_t n = 0;
        for (TxnObject *t = self->txns; t; t = t->next)
            n++;
        return py_raise_msg(self->st->Error, "repair() needs that no transaction is open on "
                            "this database (%zu open): end them first", n);
    }
    int rc, rebuilt = 0;
    bs_db *d = self->db;
    self->active++;
    Py_BEGIN_ALLOW_THREADS
    rc = bs_db_repair(d, &rebuilt);
    Py_END_ALLOW_THREADS
    self->active--;
    if (rc != BS_OK) {
        if (rc == BS_MISUSE)
            return py_raise_msg(self->st->Error, "%s", bs_errmsg());
        return py_raise(self->st, rc);
    }
    return PyBool_FromLong(rebuilt);
}

/* ---- copy / compact (engine: copy.c) ---- */

/* An engine error of copy(): file-name errors become the standard OSError subclasses
 * (FileNotFoundError, FileExistsError, ...) with .filename; the rest as everywhere. */
static PyObject *db_copy_raise(DBObject *self, int rc, PyObject *dest)
{
    int err = bs_errno();
    if (rc == BS_IOERR && (err == ENOENT || err == EEXIST || err == EISDIR || err == ENOTDIR ||
                           err == EACCES || err == EPERM || err == EROFS)) {
        /* str() of the OSError says "[Errno N] strerror: 'dest'": the path once (the
         * engine's message names it and a temporary name too) */
        PyObject *exc = PyObject_CallFunction(
            PyExc_OSError, "isO", err,
            err == EEXIST ? "File exists (pass overwrite=True to replace it)" : strerror(err),
            dest);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    if (rc == BS_MISUSE)
        return py_raise_msg(PyExc_ValueError, "%s", bs_errmsg());
    return py_raise(self->st, rc);
}

static PyObject *db_copy(DBObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"dest", "compact", "overwrite", NULL};
    static const py_argspec spec = {"copy", names, 2, 1};
    PyObject *a[3];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    int compact = py_arg_bool(a[1], 0);
    if (compact < 0)
        return NULL;
    int overwrite = py_arg_bool(a[2], 0);
    if (overwrite < 0)
        return NULL;
    if (py_db_check_usable(self) < 0)
        return NULL;
    PyObject *fspath = PyOS_FSPath(a[0]);
    if (!fspath)
        return NULL;
    PyObject *pbytes = NULL;
    if (!PyUnicode_FSConverter(fspath, &pbytes)) {
        Py_DECREF(fspath);
        return NULL;
    }
    /* __fspath__ may have run anything, close() included */
    if (py_db_check_usable(self) < 0) {
        Py_DECREF(fspath);
        Py_DECREF(pbytes);
        return NULL;
    }
    unsigned flags = (compact ? BS_COPY_COMPACT : 0) | (overwrite ? BS_COPY_OVERWRITE : 0);
    bs_db *d = self->db;
    const char *cpath = PyBytes_AS_STRING(pbytes);
    int rc;
    self->active++;
    Py_BEGIN_ALLOW_THREADS
    rc = bs_db_copy(d, cpath, flags);
    Py_END_ALLOW_THREADS
    self->active--;
    Py_DECREF(pbytes);
    if (rc != BS_OK) {
        db_copy_raise(self, rc, fspath);
        Py_DECREF(fspath);
        return NULL;
    }
    Py_DECREF(fspath);
    Py_RETURN_NONE;
}

static PyObject *db_compact(DBObject *self, PyObject *Py_UNUSED(ignored))
{
    if (py_db_check_usable(self) < 0)
        return NULL;
    if (self->readonly)
        return py_raise_msg(self->st->ReadonlyError, "compact() needs a writable database "
                                                     "(this one was opened read-only)");
    if (self->txns || self->active) {
        size_t n = 0;
        for (TxnObject *t = self->txns; t; t = t->next)
            n++;
        return py_raise_msg(self->st->Error, "compact() needs that no transaction is open on "
                            "this database (%zu open, %zd calls in progress): end them first",
                            n, self->active);
    }
    /* switching: other threads' calls raise Error, close() waits for us */
    self->switching = 1;
    bs_db *d = self->db;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = bs_db_compact(&d);
    Py_END_ALLOW_THREADS
    self->db = d;
    self->switching = 0;
    if (!d) { /* the compacted file is in place but could not be reopened */
        self->closed = 1;
        db_release_io(self);
    }
    if (rc != BS_OK) {
        if (rc == BS_MISUSE)
            return py_raise_msg(self->st->Error, "%s", bs_errmsg());
        return py_raise(self->st, rc);
    }
    Py_RETURN_NONE;
}

static PyObject *db_sync(DBObject *self, PyObject *Py_UNUSED(ignored))
{
    if (py_db_check_usable(self) < 0)
        return NULL;
    int rc;
    bs_db *d = self->db;
    self->active++;
    Py_BEGIN_ALLOW_THREADS
    rc = bs_db_sync(d);
    Py_END_ALLOW_THREADS
    self->active--;
    if (rc != BS_OK)
        return py_raise(self->st, rc);
    Py_RETURN_NONE;
}

static int db_dict_set(PyObject *d, const char *key, unsigned long long v)
{
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    if (!o)
        return -1;
    int r = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return r;
}

PyObject *py_txn_buckets(TxnObject *self);       /* py_txn.c */
PyObject *py_txn_bucket_counts(TxnObject *self); /* py_txn.c */
static PyObject *db_begin(DBObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames);

/* Entries of every bucket in a fresh read snapshot: (total, {None: n, name: n, ...}). */
static int db_bucket_entries(DBObject *self, unsigned long long *total, PyObject **per)
{
    PyObject *txn = db_begin(self, NULL, 0, NULL);
    if (!txn)
        return -1;
    PyObject *d = py_txn_bucket_counts((TxnObject *)txn);
    py_txn_finish((TxnObject *)txn);
    Py_DECREF(txn);
    if (!d)
        return -1;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    *total = 0;
    while (PyDict_Next(d, &pos, &k, &v))
        *total += PyLong_AsUnsignedLongLong(v);
    *per = d;
    return 0;
}

static PyObject *db_stat(DBObject *self, PyObject *Py_UNUSED(ignored))
{
    if (py_db_check_usable(self) < 0)
        return NULL;
    bs_stat s;
    memset(&s, 0, sizeof s);
    int rc;
    bs_db *d = self->db;
    self->active++;
    Py_BEGIN_ALLOW_THREADS
    rc = bs_db_stat(d, &s);
    Py_END_ALLOW_THREADS
    self->active--;
    if (rc != BS_OK)
        return py_raise(self->st, rc);
    unsigned long long total;
    PyObject *per;
    if (db_bucket_entries(self, &total, &per) < 0)
        return NULL;
    PyObject *dict = PyDict_New();
    if (!dict || PyDict_SetItemString(dict, "bucket_entries", per) < 0) {
        Py_DECREF(per);
        Py_XDECREF(dict);
        return NULL;
    }
    Py_DECREF(per);
    if (db_dict_set(dict, "page_size", s.page_size) < 0 ||
        db_dict_set(dict, "page_count", s.page_count) < 0 ||
        db_dict_set(dict, "free_pages", s.free_pages) < 0 ||
        db_dict_set(dict, "depth", s.depth) < 0 ||
        db_dict_set(dict, "entries", total) < 0 ||
        db_dict_set(dict, "txid", s.txid) < 0 ||
        db_dict_set(dict, "file_size", s.file_size) < 0 ||
        db_dict_set(dict, "buckets", s.buckets) < 0 ||
        db_dict_set(dict, "readers", s.readers) < 0 ||
        db_dict_set(dict, "oldest_reader", s.oldest_reader) < 0 ||
        db_dict_set(dict, "durable_txid", s.durable_txid) < 0 ||
        db_dict_set(dict, "pinned_pages", s.pinned_pages) < 0 ||
        db_dict_set(dict, "cache_pages", s.cache_pages) < 0 ||
        db_dict_set(dict, "cache_hits", s.cache_hits) < 0 ||
        db_dict_set(dict, "cache_misses", s.cache_misses) < 0 ||
        db_dict_set(dict, "cache_retired", s.cache_retired) < 0) {
        Py_DECREF(dict);
        return NULL;
    }
    return dict;
}


static PyObject *db_buckets(DBObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *txn = db_begin(self, NULL, 0, NULL);
    if (!txn)
        return NULL;
    PyObject *res = py_txn_buckets((TxnObject *)txn);
    py_txn_finish((TxnObject *)txn);
    Py_DECREF(txn);
    return res;
}

static PyObject *db_enter(DBObject *self, PyObject *Py_UNUSED(ignored))
{
    if (py_db_check_usable(self) < 0)
        return NULL;
    return Py_NewRef((PyObject *)self);
}

static PyObject *db_exit(DBObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    PyObject *a[3];
    if (py_parse_exit(args, nargs, kwnames, a) < 0)
        return NULL;
    if (db_close_impl(self) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyObject *db_repr(DBObject *self)
{
    return PyUnicode_FromFormat("<btree_store.DB path=%R %s>",
                                self->path ? self->path : Py_None,
                                self->db && !self->closed ? "open" : "closed");
}

/* ---- properties ---- */

static PyObject *db_get_path(DBObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->path ? self->path : Py_None);
}

static PyObject *db_get_closed(DBObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->closed || !self->db);
}

static PyObject *db_get_readonly(DBObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->readonly);
}

static PyObject *db_get_max_key(DBObject *self, void *c)
{
    (void)c;
    if (!self->path) { /* never opened */
        PyErr_SetString(self->st->ClosedError, "database is not open");
        return NULL;
    }
    return PyLong_FromSize_t(self->max_key);
}

static PyObject *db_get_page_size(DBObject *self, void *c)
{
    (void)c;
    if (!self->path) {
        PyErr_SetString(self->st->ClosedError, "database is not open");
        return NULL;
    }
    return PyLong_FromUnsignedLong(self->page_size);
}

static PyMethodDef db_methods[] = {
    {"begin", FASTKW(db_begin),
     "begin($self, /, write=False, *, bucket=None, timeout=None, sync=None)\n--\n\n"
     "Start a transaction and return it (a Txn; a WriteTxn when write is true).\n\n"
     "write=False gives a read-only snapshot of the newest commit: any number of them run\n"
     "beside the one write transaction and never wait. write=True waits for the writer lock\n"
     "(at most `timeout` seconds, None: forever; LockedError on expiry, saying how long it\n"
     "waited). `bucket` (str) binds the transaction's calls to a named bucket\n"
     "(BucketNotFoundError if it does not exist). `sync` (write transactions only; None: the\n"
     "database's setting) chooses whether this commit fsyncs.\n"
     "Raises ClosedError (closed DB), ReadonlyError (write=True on a read-only DB), Error\n"
     "(this thread already has a write transaction open here), ValueError (bad timeout,\n"
     "sync= on a read transaction), TypeError / ValueError (bad bucket name)."},
    {"sync", (PyCFunction)db_sync, METH_NOARGS,
     "sync($self, /)\n--\n\n"
     "Make every commit made so far durable with one fsync, those made with sync=False too.\n"
     "Returns None. Raises ClosedError, DiskError (a failed fsync: reopen the database)."},
    {"close", (PyCFunction)db_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Abort the live transactions (waiting for calls in flight on other threads to leave)\n"
     "and close the file. Idempotent; returns None. Raises Error when called from inside a\n"
     "call that uses this database (a finalizer), DiskError when closing the file failed."},
    {"check", FASTKW(db_check),
     "check($self, /, max_problems=100)\n--\n\n"
     "Verify the whole file (every page reachable once or free once, checksums, key order,\n"
     "counts) against the newest commit. Returns None when it is sound. Otherwise raises\n"
     "CorruptionError whose .problems lists every problem found (str, each naming the page\n"
     "and the pointer; at most max_problems, the check stops there) and whose message\n"
     "summarises them (the first few and the count). Pages below a damaged node are listed\n"
     "as leaked too. Raises ClosedError, DiskError, TypeError / ValueError (max_problems)."},
    {"repair", (PyCFunction)db_repair, METH_NOARGS,
     "repair($self, /)\n--\n\n"
     "Rebuild the freelist: every page no tree of the newest commit reaches becomes free,\n"
     "written as a new durable commit; a handle whose writes were refused because the\n"
     "freelist is damaged can write again. Returns True when it rewrote the freelist, False\n"
     "when it was already exact (nothing written). Only the freelist is rebuilt: damage in a\n"
     "tree raises CorruptionError and changes nothing. Raises ReadonlyError (read-only DB),\n"
     "Error (a transaction is open on this DB), LockedError, ClosedError, DiskError."},
    {"stat", (PyCFunction)db_stat, METH_NOARGS,
     "stat($self, /)\n--\n\n"
     "Statistics of the database, as a dict: page_size, page_count, free_pages, depth (of\n"
     "the default bucket's tree), entries (in every bucket), bucket_entries ({None: default\n"
     "bucket, name: n, ...}), txid, durable_txid, file_size, buckets, readers,\n"
     "oldest_reader, pinned_pages, cache_pages, cache_hits, cache_misses, cache_retired\n"
     "(frames evicted but not yet freed).\n"
     "Raises ClosedError, CorruptionError, DiskError."},
    {"copy", FASTKW(db_copy),
     "copy($self, /, dest, compact=False, *, overwrite=False)\n--\n\n"
     "Write a consistent copy of the newest commit to the new file `dest` (str, bytes or\n"
     "os.PathLike) while other threads go on reading and writing. compact=True writes only\n"
     "live data, every bucket freshly packed (smaller, no free pages). dest is written under\n"
     "a temporary name, fsynced and renamed into place; a failed copy leaves no file behind.\n"
     "Returns None. Raises FileExistsError (dest exists and not overwrite), ValueError (dest\n"
     "is this database's own file), OSError subclasses with .filename for dest, ClosedError,\n"
     "CorruptionError, DiskError."},
    {"compact", (PyCFunction)db_compact, METH_NOARGS,
     "compact($self, /)\n--\n\n"
     "Rewrite the file in place with only its live data (a compact copy swapped in\n"
     "atomically, the handle reopened on it), giving the free space back to the OS.\n"
     "Returns None. Raises Error when a transaction is open on this DB, ReadonlyError on a\n"
     "read-only DB, ClosedError, DiskError."},
    {"buckets", (PyCFunction)db_buckets, METH_NOARGS,
     "buckets($self, /)\n--\n\n"
     "The names of the named buckets in the newest commit, as a sorted list of str.\n"
     "Raises ClosedError, CorruptionError, DiskError."},
    {"__enter__", (PyCFunction)db_enter, METH_NOARGS,
     "__enter__($self, /)\n--\n\nReturn the database itself (ClosedError if it is closed)."},
    {"__exit__", FASTKW(db_exit),
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\n"
     "Close the database (see close()); returns False: exceptions propagate."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef db_getset[] = {
    {"path", (getter)db_get_path, NULL, "The path given to DB() (after os.fspath()).", NULL},
    {"closed", (getter)db_get_closed, NULL, "True once the database is closed.", NULL},
    {"readonly", (getter)db_get_readonly, NULL, "True when opened with readonly=True.", NULL},
    {"max_key_size", (getter)db_get_max_key, NULL,
     "Longest key in bytes (depends on the page size).", NULL},
    {"page_size", (getter)db_get_page_size, NULL, "Page size of the file in bytes.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef db_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(DBObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot db_slots[] = {
    {Py_tp_doc,
     "DB(path, *, readonly=False, create=True, sync=True, cache_size=None, "
     "page_size=4096, check_commits=None)\n--\n\n"
     "A btree_store database file, opened (and locked) at construction.\n\n"
     "path: str, bytes or os.PathLike. readonly: open for reading only. create: create the\n"
     "file when missing. sync: commits fsync (False: a commit survives a crash of the\n"
     "process at once, a power loss once db.sync() or a synced commit returned).\n"
     "cache_size: bytes of page cache, a hard cap (None: a quarter of RAM, grown with use).\n"
     "page_size: a power of two from 1024 to 65536, fixed\n"
     "when the file is created.\n\n"
     "Use it as a context manager, or call close(). Raises FileNotFoundError,\n"
     "PermissionError, IsADirectoryError (with .filename), LockedError (another process\n"
     "has it open), CorruptionError (not a btree_store file, damaged, or a newer format),\n"
     "DiskError, TypeError / ValueError (bad options).\n\n"
     "path \":memory:\" opens a new in-memory database: the same engine and format in a\n"
     "heap buffer, no file, no fsync, no lock; close() frees it (it cannot be reopened:\n"
     "copy() it to a file to keep it; DB.memory(from_path=...) loads a file).\n"
     "check_commits=True runs the integrity checker after every commit (slow; for tests):\n"
     "a problem makes commit() raise CorruptionError. None takes the process-wide default\n"
     "(pytest --btree-strict turns it on)."},
    {Py_tp_new, db_new},
    {Py_tp_init, db_init},
    {Py_tp_finalize, db_finalize},
    {Py_tp_dealloc, db_dealloc},
    {Py_tp_traverse, db_traverse},
    {Py_tp_clear, db_clear},
    {Py_tp_repr, db_repr},
    {Py_tp_methods, db_methods},
    {Py_tp_getset, db_getset},
    {Py_tp_members, db_members},
    {0, NULL},
};

static PyType_Spec db_spec = {
    .name = "btree_store._core.DB",
    .basicsize = sizeof(DBObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = db_slots,
};

/* _core._check_commits_default(on=None): the check_commits setting of DB(check_commits=None);
 * sets it when on is given; returns the setting before the call. */
static PyObject *db_check_commits_default(PyObject *m, PyObject *const *args, Py_ssize_t nargs,
                                          PyObject *kwnames)
{
    static const char *const names[] = {"on", NULL};
    static const py_argspec spec = {"_check_commits_default", names, 1, 0};
    PyObject *a[1];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    py_state *st = PyModule_GetState(m);
    int old = st->check_commits_default;
    if (a[0] && a[0] != Py_None) {
        int on = PyObject_IsTrue(a[0]);
        if (on < 0)
            return NULL;
        st->check_commits_default = on;
    }
    return PyBool_FromLong(old);
}

static PyMethodDef db_module_functions[] = {
    {"_check_commits_default", (PyCFunction)(void (*)(void))db_check_commits_default,
     METH_FASTCALL | METH_KEYWORDS,
     "_check_commits_default($module, /, on=None)\n--\n\n"
     "The check_commits setting that DB(check_commits=None) uses (initially False); with\n"
     "`on`, set it. Returns the setting as it was before the call. The pytest plugin's\n"
     "--btree-strict option turns it on for the session."},
    {NULL, NULL, 0, NULL},
};

int py_db_init_type(PyObject *m, py_state *st)
{
    st->DB_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &db_spec, NULL);
    if (!st->DB_type || py_keep_text_signature(st->DB_type, &db_spec) < 0)
        return -1;
    if (PyModule_AddFunctions(m, db_module_functions) < 0)
        return -1;
    return py_add_type(m, "DB", st->DB_type);
}
