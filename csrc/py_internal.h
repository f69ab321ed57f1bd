/*
 * py_internal.h - declarations shared by the CPython binding files (py_*.c) of btree_store._core.
 *
 * Layer: the binding. It calls the engine only through bs.h (and io.h for the test-only fault
 * controller); it never touches pages. Objects:
 *   DBObject    (py_db.c)      one bs_db; keeps the list of its live Txn objects
 *   TxnObject   (py_txn.c)     one bs_txn (a "root" Txn), or a "bound" view of another Txn's
 *                              bs_txn on another bucket (txn._bind), which cannot end it
 *   IterObject  (py_iter.c)    one bs_cursor; yields bytes, or memoryviews over BufObjects it
 *                              reuses while nobody else holds them
 *   BufObject   (py_iter.c)    a byte buffer exporting the buffer protocol with an export count
 *   FaultIOObject (py_testing.c) a bs_fault controller (tests only)
 *
 * Threads and the GIL:
 *  - A data call on a transaction runs between py_txn_enter() and py_txn_leave(). Enter marks
 *    the root Txn busy (a second thread gets Error at once) and counts the call in the DB's
 *    `active` counter; DB.close() waits for that counter to fall to zero before it aborts the
 *    live transactions and closes the engine handle.
 *  - Engine data calls go through PY_CALL: first tried in no-I/O mode with the GIL held, then,
 *    on BS_WOULDBLOCK, repeated with no-I/O off and the GIL released; while another thread
 *    uses btree_store too, run with the GIL released at once (the GIL policy below).
 *  - Every Python object that a call returns is built before py_txn_leave() (page pointers
 *    die at leave).
 */
#ifndef BS_PY_INTERNAL_H
#define BS_PY_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>
#include <stdint.h>

#include "bs.h"

#if PY_VERSION_HEX < 0x03090000
#error "btree_store._core needs Python 3.9 or newer"
#endif
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
#endif

/* ---- module state (py_module.c) ---- */
typedef struct py_state {
    PyTypeObject *DB_type;
    PyTypeObject *Txn_type;
    PyTypeObject *WriteTxn_type; /* subtype of Txn for write transactions */
    PyTypeObject *Iter_type;
    PyTypeObject *Buf_type;
    PyTypeObject *FaultIO_type;
    PyObject *Error;
    PyObject *CorruptionError;
    PyObject *ReadonlyError;
    PyObject *ClosedError;
    PyObject *LockedError;
    PyObject *PanicError;
    PyObject *DiskError;
    PyObject *DiskFullError;
    PyObject *BucketNotFoundError;
    PyObject *BucketExistsError;
    int check_commits_default; /* DB(check_commits=None) uses this (pytest --btree-strict) */
} py_state;

extern PyModuleDef py_module_def;

/* Module state for a type defined by this module, or for a Python subclass of one (walks the
 * MRO). Never fails for our own types. */
py_state *py_state_from_type(PyTypeObject *tp);

/* Incremented in the child by a pthread_atfork handler: objects remember the value they were
 * created under and refuse to run (Error) when it changed. */
extern volatile uint64_t py_fork_gen;

/* ---- errors (py_module.c) ---- */
/* The one mapping of engine codes to exceptions; message bs_strerror(rc) [+ ": " bs_errmsg()].
 * Always returns NULL. */
PyObject *py_raise(py_state *st, int rc);
/* Raise exc with a printf-style message; returns NULL. */
PyObject *py_raise_msg(PyObject *exc, const char *fmt, ...);
PyObject *py_raise_forked(py_state *st);
PyObject *py_raise_nobucket(py_state *st, const char *name, Py_ssize_t nlen);

/* ---- argument parsing: the one convention of the binding (py_module.c) ----
 * Every method that takes arguments is METH_FASTCALL | METH_KEYWORDS (FASTKW below) and
 * parses them with py_parse_args against a py_argspec; a type's constructor (tp_new /
 * tp_init, which receive a tuple and a dict) uses py_parse_tuple with the same spec. The
 * docstring of each callable starts with its text signature ("name($self, /, key, *,
 * bucket=None)\n--\n\n"), which must say exactly what the spec accepts (tests/
 * test_signatures.py checks it): `bucket=` is keyword-only everywhere.
 * names: NULL-terminated parameter names; the first `npos` may be passed by position, the
 * rest are keyword-only; the first `nreq` are required. out[i] receives a borrowed reference
 * or NULL when the argument was not given. py_parse_posonly is py_parse_args where the first
 * `posonly` names may NOT be passed by keyword (positional-only, before "/" in the
 * signature: pop(key, [default], /) and __exit__). */
typedef struct py_argspec {
    const char *fname;
    const char *const *names;
    int npos;
    int nreq;
} py_argspec;
int py_parse_args_full(const py_argspec *spec, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames, PyObject **out);
/* py_parse_args: positional arguments only, as many as allowed and required, are taken here
 * (the common call, e.g. txn.get(key)); the rest goes to py_parse_args_full. */
static inline int py_parse_args(const py_argspec *spec, PyObject *const *args,
                                Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    if (kwnames || nargs < spec->nreq || nargs > spec->npos)
        return py_parse_args_full(spec, args, nargs, kwnames, out);
    for (int i = 0; spec->names[i]; i++)
        out[i] = i < nargs ? args[i] : NULL;
    return 0;
}
int py_parse_posonly(const py_argspec *spec, int posonly, PyObject *const *args,
                     Py_ssize_t nargs, PyObject *kwnames, PyObject **out);
int py_parse_tuple(const py_argspec *spec, PyObject *args, PyObject *kwds, PyObject **out);
/* The arguments of __exit__(exc_type, exc_value, traceback, /) into exc[3]; -1 on error. */
int py_parse_exit(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **exc);
#define FASTKW(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL | METH_KEYWORDS
/* Truth value of an optional argument (NULL -> dflt); -1 on error. */
int py_arg_bool(PyObject *o, int dflt);

/* A bucket name: NULL p = the default bucket. Points into a str's cached UTF-8. */
typedef struct py_name {
    const char *p;
    Py_ssize_t n;
} py_name;
/* Validate a bucket name (str, 1..255 UTF-8 bytes): TypeError / ValueError. */
int py_bucket_name(PyObject *o, py_name *out);

#ifdef Py_TPFLAGS_DISALLOW_INSTANTIATION
#define PY_TPFLAGS_NONEW Py_TPFLAGS_DISALLOW_INSTANTIATION
#else
#define PY_TPFLAGS_NONEW 0
#endif

/* Add a type to the module under name (no reference stolen). */
int py_add_type(PyObject *m, const char *name, PyTypeObject *tp);
/* Make a heap type impossible to instantiate from Python. */
void py_no_new(PyTypeObject *tp);
/* Keep the text signature at the start of the spec's Py_tp_doc ("DB(path, *, ...)\n--\n\n")
 * as the type's __text_signature__, so that inspect.signature() works for the type and its
 * Python subclasses: CPython 3.9's PyType_FromSpec drops it from tp_doc (__doc__ never shows
 * it); later versions keep it, and there this does nothing. -1 on error. */
int py_keep_text_signature(PyTypeObject *tp, const PyType_Spec *spec);

/* Get a read-only contiguous buffer of a bytes-like argument (str -> TypeError; a
 * non-contiguous buffer is copied into a contiguous one). what names
 * the argument in messages. */
int py_get_bytes(PyObject *o, Py_buffer *view, const char *what);

/* ---- DB (py_db.c) ---- */
struct TxnObject;

typedef struct DBObject {
    PyObject_HEAD
    py_state *st;
    bs_db *db;                 /* NULL when closed (or never opened) */
    PyObject *path;            /* os.fspath(path) as given */
    PyObject *io;              /* FaultIO object or NULL */
    int memory;                /* an in-memory database (":memory:"): no file at all */
    int closed;                /* set first by close(): new calls raise ClosedError */
    const char *closed_why;    /* that ClosedError's message when not the plain one (a static
                                * string: testing.FaultyMachine's crash sets it) */
    int switching;             /* a thread is inside bs_db_open (__init__) or bs_db_close
                                * with the GIL released: others wait for it */
    int readonly;
    size_t max_key;
    uint32_t page_size;
    Py_ssize_t active;         /* calls inside the engine (enter..leave, or GIL-released) */
    struct TxnObject *txns;    /* live root transactions (doubly linked, not owning) */
    uint64_t fork_gen;
    PyObject *weakreflist;
} DBObject;

int py_db_init_type(PyObject *m, py_state *st);
/* ClosedError / forked Error when the DB cannot be used; 0 when fine. */
int py_db_check_usable(DBObject *db);
/* The message of the ClosedError for a call on a closed db. */
const char *py_db_closed_msg(const DBObject *db);
/* Link/unlink a live root transaction. */
void py_db_link_txn(DBObject *db, struct TxnObject *txn);
void py_db_unlink_txn(DBObject *db, struct TxnObject *txn);

/* ---- Txn (py_txn.c) ---- */
typedef struct TxnObject {
    PyObject_HEAD
    py_state *st;
    DBObject *db;              /* strong */
    struct TxnObject *root;    /* strong; NULL for a root transaction (owns txn) */
    bs_txn *txn;               /* root only: engine handle; NULL once finished */
    PyObject *bucket;          /* str bound bucket name, or NULL for the default bucket */
    int write;
    int busy;                  /* root only: a call is inside the engine */
    unsigned long busy_thread; /* root only: thread ident of that call */
    int ended_by_close;        /* root only: aborted by DB.close(), not by the user */
    uint64_t id;
    struct TxnObject *prev, *next; /* DB's live list (root only) */
    PyObject *weakreflist;
} TxnObject;

#define PY_TXN_ROOT(t) ((t)->root ? (t)->root : (t))

int py_txn_init_type(PyObject *m, py_state *st);
/* A new root Txn, not yet attached to an engine transaction (a finished one until then).
 * py_txn_attach gives it txn (ownership) and links it into db's list; it allocates nothing,
 * so no finalizer (that might close the DB) runs between bs_txn_begin and the link. */
TxnObject *py_txn_alloc(DBObject *db, int write, PyObject *bucket);
void py_txn_attach(TxnObject *self, bs_txn *txn);
/* Abort the engine transaction of a root Txn (if live) and unlink it. GIL held. */
void py_txn_finish(TxnObject *root);
/* Start a data call: checks (closed, finished, forked, write, busy), bs_txn_enter, marks
 * busy and counts the call. Returns the engine txn, or NULL with an exception set. */
bs_txn *py_txn_enter(TxnObject *self, int need_write);
void py_txn_leave(TxnObject *self);
/* Name of the bucket a call uses: arg (str or None) or the txn's bound bucket. */
int py_txn_bucket(TxnObject *self, PyObject *arg, py_name *out);
/* Open a bucket inside enter/leave (PY_CALL); returns a bs_rc. */
int py_txn_open_bucket(bs_txn *t, const py_name *nm, int create, bs_bucket **out);

/* ---- no-wait mode (py_nowait.c) ----
 * Set on a thread by _core._try_nowait: PY_CALL then gives up on BS_WOULDBLOCK (setting
 * py_blocked) instead of repeating the call with the disk allowed; code that reads an
 * overflow value checks PY_NOWAIT_REFUSE() first. */
extern _Thread_local int py_nowait;
extern _Thread_local int py_blocked;
/* Calls of _try_nowait in progress, on any thread (GIL held when changed): a thread that is
 * alone (py_gil_alone) is in no-wait mode exactly when this is not 0, which spares it the
 * thread-local read (__tls_get_addr in a shared object) on every call. */
extern int py_nowait_active;
int py_nowait_init(PyObject *m);
/* True (and py_blocked set) when this thread may not wait for the disk now. */
#define PY_NOWAIT_REFUSE() (py_nowait ? (py_blocked = 1) : 0)

/* ---- the GIL policy (py_txn.c) ----
 * One thread alone pays nothing for threads: an engine call runs with the GIL held (no-I/O
 * mode) and the GIL is dropped only when the call must wait for the disk (BS_WOULDBLOCK, then
 * repeated with the GIL released). When the process has no other Python thread at all
 * (py_gil_alone), nobody could use the GIL meanwhile: descents then run with I/O allowed
 * and the GIL held, skipping the no-I/O attempt's residency probes (mincore, ~13% of
 * 100k gets after reopening a 10M-record file). Releasing and taking back an uncontended
 * GIL costs ~50-150 ns a call, a tenth of a cached get.
 * While another thread is using btree_store too, a held GIL serializes the two: then a data
 * call (a tree descent: get/put/delete, a seek, a count or stat) runs with the GIL released
 * from the start, the no-I/O attempt skipped. "Another thread is using it" is what the
 * binding can see for free: py_txn_enter (GIL held) compares the caller's thread ident with
 * that of the previous data call, process-wide (any DB: two threads on two databases
 * serialize on the GIL just the same). A different thread turns sharing on; it stays on
 * while such switches keep happening: every PY_GIL_CHECK calls of one thread in a row,
 * PY_GIL_WINDOW_NS or more after the last look, sharing goes off unless a switch came in
 * between. So one thread pays one compare a call; two threads release from their first
 * call after a switch, which the interpreter's switch interval (5 ms) forces when both want
 * the GIL; a thread that stops leaves the other releasing for at most ~2 windows.
 * CPython has no portable way to ask "is a thread waiting for the GIL" (3.9-3.13: only
 * private fields of the runtime), hence the switch test.
 * Cursor steps (PY_CALL_STEP) keep the GIL: a step costs less than a GIL hand-over.
 * All fields are read and written with the GIL held (the module declares no per-interpreter
 * GIL, so one GIL guards them for every interpreter). */
#define PY_GIL_WINDOW_NS 20000000u /* 20 ms: 4 default switch intervals */
#define PY_GIL_CHECK 64u
typedef struct py_gil_policy {
    unsigned long key;   /* not sharing: thread ident of the last data call; sharing: 0 */
    unsigned long last;  /* thread ident of the last data call */
    int share;           /* release the GIL around data calls */
    int switched;        /* a switch happened since mark */
    unsigned run;        /* calls of `last` in a row while sharing */
    uint64_t mark_ns;    /* CLOCK_MONOTONIC of the last look at the window */
    unsigned long noio_tries; /* engine calls tried in no-I/O mode (for the tests) */
} py_gil_policy;
extern py_gil_policy py_gil;
/* True when no other thread could want the GIL: this interpreter has one thread state and
 * there is no other interpreter. Then a call that must wait for the disk may as well wait
 * with the GIL held, so it runs with I/O allowed at once: no no-I/O attempt, no residency
 * probe (mincore) before the first touch of a mapped page, no second try. The thread list
 * is read without the runtime's head lock: a thread state is added by a thread that does
 * not hold the GIL only through PyGILState_Ensure / PyThreadState_New, and removed by its
 * own thread with the GIL held; a stale answer costs that new thread one wait for the
 * disk with the GIL held, never a wrong result (the pointer read is never dereferenced
 * beyond the head, which lives until its thread takes the GIL to end). */
static inline int py_gil_alone(void)
{
    PyThreadState *ts = PyThreadState_Get();
    return !ts->prev && !ts->next && PyInterpreterState_Next(PyInterpreterState_Head()) == NULL;
}

/* A call py_gil_note cannot settle with one compare: a switch, or any call while sharing. */
void py_gil_note_slow(unsigned long me);
/* py_txn_enter's part (GIL held): note the calling thread. One compare on the single-thread
 * path (key is that thread). */
static inline void py_gil_note(unsigned long me)
{
    if (me != py_gil.key)
        py_gil_note_slow(me);
}

/* Test probe (_core._gil_probe*, py_testing.c): when armed, the next call released because
 * of sharing waits inside the released region until another thread lets it go. */
extern _Atomic int py_gil_probe_armed;
void py_gil_probe_wait(void);

/* An engine call, GIL policy above. Sharing: run once with I/O allowed and the GIL
 * released. The only thread there is (py_gil_alone): run once with I/O allowed and the GIL
 * held. Else (or in no-wait mode): tried in no-I/O mode with the GIL held; on BS_WOULDBLOCK
 * repeated with the GIL released (unless in no-wait mode). EXPR is evaluated once or
 * twice: it must be a plain engine call, touching no Python object. */
#define PY_CALL(rc, t, EXPR)                                                                  \
    do {                                                                                      \
        if (py_gil.share && !py_nowait) {                                                     \
            bs_txn_set_noio((t), 0);                                                          \
            Py_BEGIN_ALLOW_THREADS                                                            \
            if (atomic_load_explicit(&py_gil_probe_armed, memory_order_relaxed))              \
                py_gil_probe_wait();                                                          \
            (rc) = (EXPR);                                                                    \
            Py_END_ALLOW_THREADS                                                              \
        } else if (py_gil_alone() && !py_nowait_active) {                                     \
            bs_txn_set_noio((t), 0);                                                          \
            (rc) = (EXPR);                                                                    \
        } else                                                                                \
            PY_CALL_STEP(rc, t, EXPR);                                                        \
    } while (0)

/* The same without the sharing and alone branches: for calls cheaper than a GIL hand-over
 * (cursor steps), which keep the GIL unless they must wait for the disk; a cursor step is
 * too cheap for py_gil_alone's three calls into the runtime. */
#define PY_CALL_STEP(rc, t, EXPR)                                                             \
    do {                                                                                      \
        py_gil.noio_tries++;                                                                  \
        bs_txn_set_noio((t), 1);                                                              \
        (rc) = (EXPR);                                                                        \
        if ((rc) == BS_WOULDBLOCK && !PY_NOWAIT_REFUSE()) {                                   \
            bs_txn_set_noio((t), 0);                                                          \
            Py_BEGIN_ALLOW_THREADS                                                            \
            (rc) = (EXPR);                                                                    \
            Py_END_ALLOW_THREADS                                                              \
        }                                                                                     \
    } while (0)

/* ---- Iterator (py_iter.c) ---- */
int py_iter_init_type(PyObject *m, py_state *st);
/* txn.iter(...) (memoryviews, copy=0), iter(txn) and txn.keys()/values()/items() (bytes,
 * copy=1). */
PyObject *py_iter_new(TxnObject *txn, const py_name *bucket, PyObject *start, PyObject *stop,
                      PyObject *prefix, int reverse, int keys, int values, int copy);

/* ---- testing (py_testing.c) ---- */
int py_testing_init(PyObject *m, py_state *st);
/* The bs_fault controller of a FaultIO object (TypeError if o is not one); marks it in use by
 * a DB (Error if it already is). */
struct bs_fault *py_faultio_acquire(py_state *st, PyObject *o);
void py_faultio_release(PyObject *o);

#endif
