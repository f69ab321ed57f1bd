/*
 * py_module.c - the btree_store._core extension module: multi-phase init, module state,
 * the exception hierarchy, the one bs_rc -> exception mapping, and small argument helpers
 * shared by the other py_*.c files.
 *
 * Layer: CPython binding; calls the engine only through bs.h.
 */
#include "py_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>

volatile uint64_t py_fork_gen;

static void py_atfork_child(void) { py_fork_gen++; }

/* ---- module state ---- */

py_state *py_state_from_type(PyTypeObject *tp)
{
    PyObject *mro = tp->tp_mro;
    if (mro && PyTuple_Check(mro)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
            PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
            if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE))
                continue;
            PyObject *mod = ((PyHeapTypeObject *)t)->ht_module;
            if (mod && PyModule_GetDef(mod) == &py_module_def)
                return (py_state *)PyModule_GetState(mod);
        }
    }
    return NULL;
}

static py_state *py_get_state(PyObject *m) { return (py_state *)PyModule_GetState(m); }

static int py_module_traverse(PyObject *m, visitproc visit, void *arg)
{
    py_state *st = py_get_state(m);
    if (!st)
        return 0;
    Py_VISIT(st->DB_type);
    Py_VISIT(st->Txn_type);
    Py_VISIT(st->WriteTxn_type);
    Py_VISIT(st->Iter_type);
    Py_VISIT(st->Buf_type);
    Py_VISIT(st->FaultIO_type);
    Py_VISIT(st->Error);
    Py_VISIT(st->CorruptionError);
    Py_VISIT(st->ReadonlyError);
    Py_VISIT(st->ClosedError);
    Py_VISIT(st->LockedError);
    Py_VISIT(st->PanicError);
    Py_VISIT(st->DiskError);
    Py_VISIT(st->DiskFullError);
    Py_VISIT(st->BucketNotFoundError);
    Py_VISIT(st->BucketExistsError);
    return 0;
}

static int py_module_clear(PyObject *m)
{
    py_state *st = py_get_state(m);
    if (!st)
        return 0;
    Py_CLEAR(st->DB_type);
    Py_CLEAR(st->Txn_type);
    Py_CLEAR(st->WriteTxn_type);
    Py_CLEAR(st->Iter_type);
    Py_CLEAR(st->Buf_type);
    Py_CLEAR(st->FaultIO_type);
    Py_CLEAR(st->Error);
    Py_CLEAR(st->CorruptionError);
    Py_CLEAR(st->ReadonlyError);
    Py_CLEAR(st->ClosedError);
    Py_CLEAR(st->LockedError);
    Py_CLEAR(st->PanicError);
    Py_CLEAR(st->DiskError);
    Py_CLEAR(st->DiskFullError);
    Py_CLEAR(st->BucketNotFoundError);
    Py_CLEAR(st->BucketExistsError);
    return 0;
}

static void py_module_free(void *m) { py_module_clear((PyObject *)m); }

/* ---- exceptions ---- */

/* A new exception class btree_store.<name>. Its type's internal doc starts with the text
 * signature "<name>(*args)" (so inspect.signature() works on it, as on our other types);
 * __doc__ is then set to the plain doc, which leaves the internal one (tp_doc) in place. */
static PyObject *py_new_exc(PyObject *m, const char *name, PyObject *bases, const char *doc)
{
    char full[96], sigdoc[512];
    snprintf(full, sizeof full, "btree_store.%s", name);
    snprintf(sigdoc, sizeof sigdoc, "%s(*args)\n--\n\n%s", name, doc);
    PyObject *exc = PyErr_NewExceptionWithDoc(full, sigdoc, bases, NULL);
    if (!exc)
        return NULL;
    PyObject *plain = PyUnicode_FromString(doc);
    if (!plain || PyObject_SetAttrString(exc, "__doc__", plain) < 0) {
        Py_XDECREF(plain);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(plain);
    if (PyModule_AddObject(m, name, Py_NewRef(exc)) < 0) {
        Py_DECREF(exc);
        Py_DECREF(exc);
        return NULL;
    }
    return exc;
}

static int py_init_exceptions(PyObject *m, py_state *st)
{
    PyObject *bases = NULL;
    if (!(st->Error = py_new_exc(m, "Error", PyExc_Exception, "Base class of every btree_store error.")))
        return -1;
    if (!(st->CorruptionError = py_new_exc(m, "CorruptionError", st->Error,
              "The file is damaged (a checksum, a pointer or a structure does not match), not a\n"
              "btree_store database, or of a newer format version than this build reads.")))
        return -1;
    if (!(st->ReadonlyError = py_new_exc(m, "ReadonlyError", st->Error,
              "A write on a read-only transaction, or on a database opened with readonly=True.")))
        return -1;
    if (!(st->ClosedError = py_new_exc(m, "ClosedError", st->Error,
              "Use of a closed database, or of a finished transaction or its iterators.")))
        return -1;
    if (!(st->LockedError = py_new_exc(m, "LockedError", st->Error,
              "The database file is locked by another process, or begin(write=True, timeout=...)\n"
              "timed out waiting for the writer lock.")))
        return -1;
    if (!(st->PanicError = py_new_exc(m, "PanicError", st->Error,
              "An earlier commit failed while writing: the handle refuses further writes; close\n"
              "and reopen the database (the file holds the last good commit).")))
        return -1;
    if (!(bases = PyTuple_Pack(2, st->Error, PyExc_OSError)))
        return -1;
    st->DiskError = py_new_exc(m, "DiskError", bases, "An I/O error of the operating system (also an OSError): .errno holds the errno.");
    Py_DECREF(bases);
    if (!st->DiskError)
        return -1;
    if (!(st->DiskFullError = py_new_exc(m, "DiskFullError", st->DiskError,
              "The disk is full (ENOSPC, EDQUOT or EFBIG); the failed commit changed nothing.")))
        return -1;
    if (!(bases = PyTuple_Pack(2, st->Error, PyExc_KeyError)))
        return -1;
    st->BucketNotFoundError = py_new_exc(m, "BucketNotFoundError", bases,
                                         "The named bucket does not exist (also a KeyError).");
    Py_DECREF(bases);
    if (!st->BucketNotFoundError)
        return -1;
    if (!(st->BucketExistsError = py_new_exc(m, "BucketExistsError", st->Error,
              "create_bucket(name, exist_ok=False) on a bucket that exists.")))
        return -1;
    return 0;
}

PyObject *py_raise_msg(PyObject *exc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (msg) {
        PyErr_SetObject(exc, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

PyObject *py_raise_forked(py_state *st)
{
    PyErr_SetString(st->Error, bs_strerror(BS_FORKED));
    return NULL;
}

PyObject *py_raise_nobucket(py_state *st, const char *name, Py_ssize_t nlen)
{
    if (!name)
        return py_raise(st, BS_NOBUCKET);
    PyObject *s = PyUnicode_DecodeUTF8(name, nlen, "replace");
    if (!s)
        return NULL;
    py_raise_msg(st->BucketNotFoundError, "bucket %R does not exist", s);
    Py_DECREF(s);
    return NULL;
}

PyObject *py_raise(py_state *st, int rc)
{
    const char *detail = bs_errmsg();
    PyObject *msg;
    /* These details say the whole thing themselves ("x is not a btree_store database"):
     * say it once. */
    int self_contained = rc == BS_NOTDB || rc == BS_VERSION || rc == BS_LOCKED;
    if (detail && detail[0] && self_contained)
        msg = PyUnicode_FromString(detail);
    else if (detail && detail[0])
        msg = PyUnicode_FromFormat("%s: %s", bs_strerror(rc), detail);
    else
        msg = PyUnicode_FromString(bs_strerror(rc));
    if (!msg)
        return NULL;
    /* (%s decodes as UTF-8 with errors="replace": a message quoting a file name cannot fail.) */
    PyObject *exc_type;
    switch (rc) {
    case BS_CORRUPT:
    case BS_NOTDB:
    case BS_VERSION:
        exc_type = st->CorruptionError;
        break;
    case BS_READONLY:
        exc_type = st->ReadonlyError;
        break;
    case BS_LOCKED:
        exc_type = st->LockedError;
        break;
    case BS_PANIC:
        exc_type = st->PanicError;
        break;
    case BS_IOERR:
    case BS_FULL: {
        int err = bs_errno();
        if (err == 0)
            err = rc == BS_FULL ? ENOSPC : EIO;
        exc_type = rc == BS_FULL ? st->DiskFullError : st->DiskError;
        PyObject *exc = PyObject_CallFunction(exc_type, "iO", err, msg);
        Py_DECREF(msg);
        if (exc) {
            PyErr_SetObject(exc_type, exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    case BS_NOMEM:
        Py_DECREF(msg);
        return PyErr_NoMemory();
    case BS_TOOBIG:
        exc_type = PyExc_ValueError;
        break;
    case BS_NOBUCKET:
        exc_type = st->BucketNotFoundError;
        break;
    case BS_INUSE:
        Py_DECREF(msg);
        PyErr_SetString(st->Error, "transaction is being used by another thread");
        return NULL;
    default: /* BS_BADTXN, BS_MISUSE, BS_FORKED, BS_NOTFOUND, BS_EXISTS, ... */
        exc_type = st->Error;
        break;
    }
    PyErr_SetObject(exc_type, msg);
    Py_DECREF(msg);
    return NULL;
}

/* ---- arguments ---- */

/* Positional arguments into out[] (the rest NULL); returns the number of names. */
static int py_args_positional(const py_argspec *spec, PyObject *const *args, Py_ssize_t nargs,
                              PyObject **out)
{
    int n = 0;
    while (spec->names[n])
        out[n++] = NULL;
    if (nargs > spec->npos) {
        if (spec->npos == 0)
            PyErr_Format(PyExc_TypeError, "%s() takes no positional arguments", spec->fname);
        else
            PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional argument%s (%zd given)",
                         spec->fname, spec->npos, spec->npos == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    return n;
}

/* One keyword argument key=value into out[] (n names). */
static int py_args_keyword(const py_argspec *spec, int posonly, int n, PyObject *key,
                           PyObject *value, PyObject **out)
{
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "%s() keywords must be strings", spec->fname);
        return -1;
    }
    int i;
    for (i = 0; i < n; i++)
        if (PyUnicode_CompareWithASCIIString(key, spec->names[i]) == 0)
            break;
    if (i < posonly) {
        PyErr_Format(PyExc_TypeError, "%s() got some positional-only arguments passed as "
                     "keyword arguments: '%s'", spec->fname, spec->names[i]);
        return -1;
    }
    if (i == n) {
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                     spec->fname, key);
        return -1;
    }
    if (out[i]) {
        PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                     spec->fname, spec->names[i]);
        return -1;
    }
    out[i] = value;
    return 0;
}

static int py_args_required(const py_argspec *spec, PyObject **out)
{
    for (int i = 0; i < spec->nreq; i++) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", spec->fname,
                         spec->names[i]);
            return -1;
        }
    }
    return 0;
}

int py_parse_args_full(const py_argspec *spec, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames, PyObject **out)
{
    return py_parse_posonly(spec, 0, args, nargs, kwnames, out);
}

int py_parse_posonly(const py_argspec *spec, int posonly, PyObject *const *args,
                     Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    int n = py_args_positional(spec, args, nargs, out);
    if (n < 0)
        return -1;
    if (kwnames) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t j = 0; j < nkw; j++)
            if (py_args_keyword(spec, posonly, n, PyTuple_GET_ITEM(kwnames, j), args[nargs + j],
                                out) < 0)
                return -1;
    }
    return py_args_required(spec, out);
}

int py_parse_exit(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **exc)
{
    static const char *const names[] = {"exc_type", "exc_value", "traceback", NULL};
    static const py_argspec spec = {"__exit__", names, 3, 3};
    return py_parse_posonly(&spec, 3, args, nargs, kwnames, exc);
}

int py_parse_tuple(const py_argspec *spec, PyObject *args, PyObject *kwds, PyObject **out)
{
    Py_ssize_t nargs = args ? PyTuple_GET_SIZE(args) : 0;
    int n = py_args_positional(spec, nargs ? &PyTuple_GET_ITEM(args, 0) : NULL, nargs, out);
    if (n < 0)
        return -1;
    if (kwds) {
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(kwds, &pos, &key, &value))
            if (py_args_keyword(spec, 0, n, key, value, out) < 0)
                return -1;
    }
    return py_args_required(spec, out);
}

int py_arg_bool(PyObject *o, int dflt)
{
    if (!o)
        return dflt;
    return PyObject_IsTrue(o);
}

int py_bucket_name(PyObject *o, py_name *out)
{
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "bucket name must be str, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(o, &n);
    if (!p)
        return -1; /* UnicodeEncodeError (a ValueError) for lone surrogates */
    if (n < 1 || n > 255) {
        PyErr_Format(PyExc_ValueError, "bucket name must be 1..255 UTF-8 bytes, not %zd", n);
        return -1;
    }
    out->p = p;
    out->n = n;
    return 0;
}

int py_get_bytes(PyObject *o, Py_buffer *view, const char *what)
{
    if (PyBytes_CheckExact(o)) {
        /* what PyObject_GetBuffer(o, view, PyBUF_SIMPLE) fills in for bytes, without its
         * calls (the hot path of every get/put): PyBuffer_Release drops the reference */
        view->buf = PyBytes_AS_STRING(o);
        view->obj = Py_NewRef(o);
        view->len = PyBytes_GET_SIZE(o);
        view->itemsize = 1;
        view->readonly = 1;
        view->ndim = 1;
        view->format = NULL;
        view->shape = NULL;
        view->strides = NULL;
        view->suboffsets = NULL;
        view->internal = NULL;
        return 0;
    }
    if (PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object, not str", what);
        return -1;
    }
    if (PyObject_GetBuffer(o, view, PyBUF_SIMPLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            /* Not C-contiguous (e.g. memoryview(b)[::2]): use a contiguous copy. */
            PyErr_Clear();
            PyObject *copy = PyBytes_FromObject(o);
            if (copy) {
                int r = PyObject_GetBuffer(copy, view, PyBUF_SIMPLE);
                Py_DECREF(copy); /* the view keeps it alive */
                return r;
            }
            if (PyErr_ExceptionMatches(PyExc_BufferError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "%s: %.100s does not export a usable buffer",
                             what, Py_TYPE(o)->tp_name);
            }
            return -1;
        }
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object, not %.100s", what,
                         Py_TYPE(o)->tp_name);
        }
        return -1;
    }
    return 0;
}

int py_add_type(PyObject *m, const char *name, PyTypeObject *tp)
{
    Py_INCREF(tp);
    if (PyModule_AddObject(m, name, (PyObject *)tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    return 0;
}

void py_no_new(PyTypeObject *tp)
{
#ifdef Py_TPFLAGS_DISALLOW_INSTANTIATION
    (void)tp; /* the spec carries the flag */
#else
    tp->tp_new = NULL;
    PyType_Modified(tp);
#endif
}

int py_keep_text_signature(PyTypeObject *tp, const PyType_Spec *spec)
{
#if PY_VERSION_HEX < 0x030A0000
    /* __doc__ (in the type's dict, set by PyType_Ready) stays without the signature; the
     * __text_signature__ getter reads tp_doc, which a heap type frees with PyObject_Free */
    for (const PyType_Slot *s = spec->slots; s->slot; s++) {
        if (s->slot != Py_tp_doc || !s->pfunc)
            continue;
        size_t n = strlen(s->pfunc) + 1;
        char *doc = PyObject_Malloc(n);
        if (!doc) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(doc, s->pfunc, n);
        PyObject_Free((void *)tp->tp_doc);
        tp->tp_doc = doc;
        PyType_Modified(tp);
    }
#else
    (void)tp;
    (void)spec;
#endif
    return 0;
}

/* ---- module ---- */

static int py_module_exec(PyObject *m)
{
    static int atfork_done;
    py_state *st = py_get_state(m);
    if (!atfork_done) {
        if (pthread_atfork(NULL, NULL, py_atfork_child) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed");
            return -1;
        }
        atfork_done = 1;
    }
    if (py_init_exceptions(m, st) < 0)
        return -1;
    if (py_iter_init_type(m, st) < 0)
        return -1;
    if (py_txn_init_type(m, st) < 0)
        return -1;
    if (py_db_init_type(m, st) < 0)
        return -1;
    if (py_testing_init(m, st) < 0)
        return -1;
    if (py_nowait_init(m) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot py_module_slots[] = {
    {Py_mod_exec, (void *)py_module_exec},
    {0, NULL},
};

PyModuleDef py_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "btree_store._core",
    .m_doc = "C core of btree_store: the engine and its CPython binding.",
    .m_size = sizeof(py_state),
    .m_slots = py_module_slots,
    .m_traverse = py_module_traverse,
    .m_clear = py_module_clear,
    .m_free = py_module_free,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&py_module_def); }
