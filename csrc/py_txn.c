/*
 * py_txn.c - the Txn type of btree_store._core: get/put/delete/pop/replace, the mapping
 * protocol, buckets, iterators, commit/abort, savepoints and bucket-bound views (_bind).
 *
 * Layer: CPython binding; calls the engine only through bs.h.
 *
 * A "root" Txn owns one engine transaction (bs_txn) and is linked into its DB's list of live
 * transactions. A "bound" Txn (txn._bind(bucket), used by DB.exec/exec_multi) shares its
 * root's engine transaction, defaults its calls to another bucket, and cannot commit or
 * abort it. Every data call is: argument checks (types, sizes) -> py_txn_enter -> engine
 * calls through PY_CALL -> build the Python result -> py_txn_leave.
 */
#include "py_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "structmember.h"

#define PY_MAX_VALUE 0xFFFFFFFFu

/* ---- the GIL policy (py_internal.h) ---- */

py_gil_policy py_gil;

static uint64_t gil_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void py_gil_note_slow(unsigned long me)
{
    if (me != py_gil.last) {
        int first = py_gil.last == 0; /* the process's first data call: no switch */
        py_gil.last = me;
        py_gil.run = 0;
        if (first) {
            py_gil.key = me;
            return;
        }
        py_gil.switched = 1;
        if (!py_gil.share) {
            py_gil.share = 1;
            py_gil.key = 0;
            py_gil.mark_ns = gil_now_ns();
        }
        return;
    }
    /* sharing, another call of the same thread: every PY_GIL_CHECK in a row, look */
    if (++py_gil.run % PY_GIL_CHECK != 0)
        return;
    uint64_t now = gil_now_ns();
    if (now - py_gil.mark_ns < PY_GIL_WINDOW_NS)
        return;
    py_gil.mark_ns = now;
    if (py_gil.switched) {
        py_gil.switched = 0;
    } else { /* one thread alone for a whole window */
        py_gil.share = 0;
        py_gil.key = me;
    }
}

/* ---- enter / leave ---- */

bs_txn *py_txn_enter(TxnObject *self, int need_write)
{
    TxnObject *r = PY_TXN_ROOT(self);
    DBObject *db = self->db;
    if (!r->txn) {
        PyErr_SetString(self->st->ClosedError, r->ended_by_close && db->closed_why
                                                   ? db->closed_why : "transaction is finished");
        return NULL;
    }
    if (db->closed) {
        PyErr_SetString(self->st->ClosedError, py_db_closed_msg(db));
        return NULL;
    }
    if (db->fork_gen != py_fork_gen) {
        py_raise_forked(self->st);
        return NULL;
    }
    if (need_write && !r->write) {
        PyErr_SetString(self->st->ReadonlyError, "transaction is read-only");
        return NULL;
    }
    if (r->busy) {
        PyErr_SetString(self->st->Error, "transaction is being used by another thread");
        return NULL;
    }
    int rc = bs_txn_enter(r->txn);
    if (rc != BS_OK) {
        py_raise(self->st, rc);
        return NULL;
    }
    unsigned long me = PyThread_get_thread_ident();
    r->busy = 1;
    r->busy_thread = me;
    py_gil_note(me);
    db->active++;
    return r->txn;
}

void py_txn_leave(TxnObject *self)
{
    TxnObject *r = PY_TXN_ROOT(self);
    bs_txn_leave(r->txn);
    r->busy = 0;
    self->db->active--;
}

void py_txn_finish(TxnObject *root)
{
    if (root->txn) {
        bs_txn *t = root->txn;
        root->txn = NULL;
        if (root->db->fork_gen == py_fork_gen)
            bs_txn_abort(t);
        /* else: inherited across fork(); the parent owns it */
    }
    py_db_unlink_txn(root->db, root);
}

int py_txn_bucket(TxnObject *self, PyObject *arg, py_name *out)
{
    if (arg && arg != Py_None)
        return py_bucket_name(arg, out);
    if (self->bucket)
        return py_bucket_name(self->bucket, out);
    out->p = NULL;
    out->n = 0;
    return 0;
}

int py_txn_open_bucket(bs_txn *t, const py_name *nm, int create, bs_bucket **out)
{
    int rc;
    PY_CALL_STEP(rc, t, bs_bucket_open(t, nm->p, (size_t)nm->n, create, out));
    return rc;
}

static PyObject *txn_raise(TxnObject *self, const py_name *nm, int rc)
{
    if (rc == BS_NOBUCKET)
        return py_raise_nobucket(self->st, nm->p, nm->n);
    return py_raise(self->st, rc);
}

TxnObject *py_txn_alloc(DBObject *db, int write, PyObject *bucket)
{
    TxnObject *self = PyObject_GC_New(TxnObject, write ? db->st->WriteTxn_type : db->st->Txn_type);
    if (!self)
        return NULL;
    self->st = db->st;
    self->db = (DBObject *)Py_NewRef((PyObject *)db);
    self->root = NULL;
    self->txn = NULL;
    self->bucket = bucket ? Py_NewRef(bucket) : NULL;
    self->write = write;
    self->busy = 0;
    self->busy_thread = 0;
    self->ended_by_close = 0;
    self->id = 0;
    self->prev = self->next = NULL;
    self->weakreflist = NULL;
    PyObject_GC_Track(self);
    return self;
}

void py_txn_attach(TxnObject *self, bs_txn *txn)
{
    self->txn = txn;
    self->id = bs_txn_id(txn);
    py_db_link_txn(self->db, self);
}

/* ---- argument helpers ---- */

static int txn_key(TxnObject *self, PyObject *o, Py_buffer *v)
{
    if (py_get_bytes(o, v, "key") < 0)
        return -1;
    if ((size_t)v->len > self->db->max_key) {
        PyErr_Format(PyExc_ValueError, "key is %zd bytes; the limit is %zu bytes", v->len,
                     self->db->max_key);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

static int txn_value(PyObject *o, Py_buffer *v)
{
    if (py_get_bytes(o, v, "value") < 0)
        return -1;
    if ((unsigned long long)v->len > PY_MAX_VALUE) {
        PyErr_Format(PyExc_ValueError, "value is %zd bytes; the limit is %llu bytes (2**32-1)",
                     v->len, (unsigned long long)PY_MAX_VALUE);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* txn_key for the lookups (get, [], in): an exact bytes key is used where it lies, without
 * a reference (the caller's argument outlives the call); v->obj is NULL then, and
 * txn_key_release releases only what txn_key acquired. */
static inline int txn_key_ref(TxnObject *self, PyObject *o, Py_buffer *v)
{
    if (PyBytes_CheckExact(o) && (size_t)PyBytes_GET_SIZE(o) <= self->db->max_key) {
        v->buf = PyBytes_AS_STRING(o);
        v->len = PyBytes_GET_SIZE(o);
        v->obj = NULL;
        return 0;
    }
    return txn_key(self, o, v);
}

static inline void txn_key_release(Py_buffer *v)
{
    if (v->obj)
        PyBuffer_Release(v);
}

/* The value as bytes (inside enter/leave). Overflow values are read with the GIL released
 * straight into the new bytes object. */
static PyObject *txn_value_bytes(TxnObject *self, bs_txn *t, const bs_val *v)
{
    int rc;
    if (v->data) {
        PyObject *o = PyBytes_FromStringAndSize(v->data, (Py_ssize_t)v->len);
        if (o && (rc = bs_txn_copied(t)) != BS_OK) { /* the page turned to zeros (bs.h) */
            Py_DECREF(o);
            return py_raise(self->st, rc);
        }
        return o;
    }
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)v->len);
    if (!b)
        return NULL;
    char *dst = PyBytes_AS_STRING(b);
    if (PY_NOWAIT_REFUSE()) {
        Py_DECREF(b);
        return py_raise(self->st, BS_WOULDBLOCK);
    }
    bs_txn_set_noio(t, 0);
    Py_BEGIN_ALLOW_THREADS
    rc = bs_read_value(t, v, dst);
    Py_END_ALLOW_THREADS
    if (rc != BS_OK) {
        Py_DECREF(b);
        return py_raise(self->st, rc);
    }
    return b;
}

/* Look a key up. Returns the value (want_value) or Py_True; NULL without an exception when
 * the key is missing; NULL with one on error. */
static PyObject *txn_lookup(TxnObject *self, const py_name *nm, const Py_buffer *k,
                            int want_value)
{
    bs_txn *t = py_txn_enter(self, 0);
    if (!t)
        return NULL;
    PyObject *res = NULL;
    bs_bucket *b;
    bs_val v;
    /* the default bucket's handle is always open (no I/O, no PY_CALL needed) */
    int rc = nm->p ? py_txn_open_bucket(t, nm, 0, &b) : bs_bucket_open(t, NULL, 0, 0, &b);
    if (rc == BS_OK)
        PY_CALL(rc, t, bs_get(t, b, k->buf, (size_t)k->len, &v));
    if (rc == BS_OK)
        res = want_value ? txn_value_bytes(self, t, &v) : Py_NewRef(Py_True);
    else if (rc != BS_NOTFOUND)
        txn_raise(self, nm, rc);
    py_txn_leave(self);
    return res;
}

/* put: 1 stored, 0 key existed (no overwrite), -1 error. */
static int txn_store(TxnObject *self, const py_name *nm, const Py_buffer *k, const Py_buffer *v,
                     unsigned flags)
{
    bs_txn *t = py_txn_enter(self, 1);
    if (!t)
        return -1;
    int ret = -1;
    bs_bucket *b;
    /* the default bucket's handle is always open (no I/O, no PY_CALL needed) */
    int rc = nm->p ? py_txn_open_bucket(t, nm, 0, &b) : bs_bucket_open(t, NULL, 0, 0, &b);
    if (rc == BS_OK)
        PY_CALL(rc, t, bs_put(t, b, k->buf, (size_t)k->len, v->buf, (size_t)v->len, flags));
    if (rc == BS_OK)
        ret = 1;
    else if (rc == BS_EXISTS && (flags & BS_NOOVERWRITE))
        ret = 0;
    else
        txn_raise(self, nm, rc);
    py_txn_leave(self);
    return ret;
}

/* delete: 1 deleted, 0 missing, -1 error. */
static int txn_remove(TxnObject *self, const py_name *nm, const Py_buffer *k)
{
    bs_txn *t = py_txn_enter(self, 1);
    if (!t)
        return -1;
    int ret = -1;
    bs_bucket *b;
    /* the default bucket's handle is always open (no I/O, no PY_CALL needed) */
    int rc = nm->p ? py_txn_open_bucket(t, nm, 0, &b) : bs_bucket_open(t, NULL, 0, 0, &b);
    if (rc == BS_OK)
        PY_CALL(rc, t, bs_del(t, b, k->buf, (size_t)k->len));
    if (rc == BS_OK)
        ret = 1;
    else if (rc == BS_NOTFOUND)
        ret = 0;
    else
        txn_raise(self, nm, rc);
    py_txn_leave(self);
    return ret;
}

/* ---- data methods ---- */

static PyObject *txn_get(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"key", "default", "bucket", NULL};
    static const py_argspec spec = {"get", names, 2, 1};
    PyObject *a[3];
    if (!kwnames && nargs == 1) { /* txn.get(key): the call of every random read */
        a[0] = args[0];
        a[1] = a[2] = NULL;
    } else if (py_parse_args(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    py_name nm;
    Py_buffer k;
    if (py_txn_bucket(self, a[2], &nm) < 0 || txn_key_ref(self, a[0], &k) < 0)
        return NULL;
    PyObject *res = txn_lookup(self, &nm, &k, 1);
    txn_key_release(&k);
    if (!res && !PyErr_Occurred())
        res = Py_NewRef(a[1] ? a[1] : Py_None);
    return res;
}

static PyObject *txn_put(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", "overwrite", "bucket", NULL};
    static const py_argspec spec = {"put", names, 3, 2};
    PyObject *a[4];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    int overwrite = py_arg_bool(a[2], 1);
    if (overwrite < 0)
        return NULL;
    py_name nm;
    Py_buffer k, v;
    if (py_txn_bucket(self, a[3], &nm) < 0 || txn_key(self, a[0], &k) < 0)
        return NULL;
    if (txn_value(a[1], &v) < 0) {
        PyBuffer_Release(&k);
        return NULL;
    }
    int r = txn_store(self, &nm, &k, &v, overwrite ? 0 : BS_NOOVERWRITE);
    PyBuffer_Release(&v);
    PyBuffer_Release(&k);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *txn_delete(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"key", "bucket", NULL};
    static const py_argspec spec = {"delete", names, 1, 1};
    PyObject *a[2];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    py_name nm;
    Py_buffer k;
    if (py_txn_bucket(self, a[1], &nm) < 0 || txn_key(self, a[0], &k) < 0)
        return NULL;
    int r = txn_remove(self, &nm, &k);
    PyBuffer_Release(&k);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

/* pop (replace == NULL) or replace (value given): read the old value, then delete / put it,
 * in one enter..leave. Returns the old value, or NULL without an exception when missing. */
static PyObject *txn_swap(TxnObject *self, const py_name *nm, const Py_buffer *k,
                          const Py_buffer *v)
{
    bs_txn *t = py_txn_enter(self, 1);
    if (!t)
        return NULL;
    PyObject *old = NULL;
    bs_bucket *b;
    bs_val val;
    int rc = py_txn_open_bucket(t, nm, 0, &b);
    if (rc == BS_OK)
        PY_CALL(rc, t, bs_get(t, b, k->buf, (size_t)k->len, &val));
    if (rc == BS_OK) {
        if (!(old = txn_value_bytes(self, t, &val)))
            goto done;
    } else if (rc != BS_NOTFOUND) {
        txn_raise(self, nm, rc);
        goto done;
    }
    if (v)
        PY_CALL(rc, t, bs_put(t, b, k->buf, (size_t)k->len, v->buf, (size_t)v->len, 0));
    else if (old)
        PY_CALL(rc, t, bs_del(t, b, k->buf, (size_t)k->len));
    else
        rc = BS_OK;
    if (rc != BS_OK) {
        Py_CLEAR(old);
        txn_raise(self, nm, rc);
    }
done:
    py_txn_leave(self);
    return old;
}

static PyObject *txn_pop(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"key", "default", "bucket", NULL};
    static const py_argspec spec = {"pop", names, 2, 1};
    PyObject *a[3];
    if (py_parse_posonly(&spec, 2, args, nargs, kwnames, a) < 0) /* pop(key, [default], /) */
        return NULL;
    py_name nm;
    Py_buffer k;
    if (py_txn_bucket(self, a[2], &nm) < 0 || txn_key(self, a[0], &k) < 0)
        return NULL;
    PyObject *res = txn_swap(self, &nm, &k, NULL);
    PyBuffer_Release(&k);
    if (!res && !PyErr_Occurred()) {
        if (a[1])
            return Py_NewRef(a[1]);
        PyErr_SetObject(PyExc_KeyError, a[0]);
    }
    return res;
}

static PyObject *txn_replace(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", "bucket", NULL};
    static const py_argspec spec = {"replace", names, 2, 2};
    PyObject *a[3];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    py_name nm;
    Py_buffer k, v;
    if (py_txn_bucket(self, a[2], &nm) < 0 || txn_key(self, a[0], &k) < 0)
        return NULL;
    if (txn_value(a[1], &v) < 0) {
        PyBuffer_Release(&k);
        return NULL;
    }
    PyObject *res = txn_swap(self, &nm, &k, &v);
    PyBuffer_Release(&v);
    PyBuffer_Release(&k);
    if (!res && !PyErr_Occurred())
        res = Py_NewRef(Py_None);
    return res;
}

/* Entries in a bucket; -1 on error. */
static long long txn_count_impl(TxnObject *self, const py_name *nm)
{
    bs_txn *t = py_txn_enter(self, 0);
    if (!t)
        return -1;
    bs_bucket *b;
    uint64_t n = 0;
    int rc = py_txn_open_bucket(t, nm, 0, &b);
    if (rc == BS_OK)
        PY_CALL_STEP(rc, t, bs_bucket_count(t, b, &n));
    if (rc != BS_OK)
        txn_raise(self, nm, rc);
    py_txn_leave(self);
    return rc == BS_OK ? (long long)n : -1;
}

static PyObject *txn_count(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"bucket", NULL};
    static const py_argspec spec = {"count", names, 0, 0};
    PyObject *a[1];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    py_name nm;
    if (py_txn_bucket(self, a[0], &nm) < 0)
        return NULL;
    long long n = txn_count_impl(self, &nm);
    if (n < 0)
        return NULL;
    return PyLong_FromLongLong(n);
}

/* txn.stat(*, bucket=None): one bucket's tree walked (bs_bucket_stat). */
static PyObject *txn_stat(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"bucket", NULL};
    static const py_argspec spec = {"stat", names, 0, 0};
    PyObject *a[1];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    py_name nm;
    if (py_txn_bucket(self, a[0], &nm) < 0)
        return NULL;
    bs_txn *t = py_txn_enter(self, 0);
    if (!t)
        return NULL;
    bs_bucket *b;
    bs_bucket_stats s;
    memset(&s, 0, sizeof s);
    int rc = py_txn_open_bucket(t, &nm, 0, &b);
    if (rc == BS_OK)
        PY_CALL(rc, t, bs_bucket_stat(t, b, &s));
    if (rc != BS_OK)
        txn_raise(self, &nm, rc);
    py_txn_leave(self);
    if (rc != BS_OK)
        return NULL;
    return Py_BuildValue("{sKsIsKsKsKsKsK}", "entries", (unsigned long long)s.entries, "depth",
                         (unsigned int)s.depth, "branch_pages",
                         (unsigned long long)s.branch_pages, "leaf_pages",
                         (unsigned long long)s.leaf_pages, "overflow_pages",
                         (unsigned long long)s.overflow_pages, "key_bytes",
                         (unsigned long long)s.key_bytes, "value_bytes",
                         (unsigned long long)s.value_bytes);
}

/* ---- batch calls ----
 * put_many / get_many / delete_many read their input in chunks of BATCH items: the Python
 * iteration (which may run any Python code) happens outside py_txn_enter, then the chunk goes
 * to the engine in one enter..leave with the bucket opened once. Items are applied in input
 * order; when the input raises or holds a bad item, the items before it have been applied. */

#define BATCH 256

typedef struct txn_batch {
    Py_buffer *k, *v; /* BATCH each (v only for pairs) */
    int n;
} txn_batch;

static int batch_init(txn_batch *b, int pairs)
{
    b->n = 0;
    b->v = NULL;
    b->k = PyMem_Calloc(BATCH, sizeof *b->k);
    if (b->k && pairs)
        b->v = PyMem_Calloc(BATCH, sizeof *b->v);
    if (!b->k || (pairs && !b->v)) {
        PyMem_Free(b->k);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void batch_release(txn_batch *b)
{
    for (int i = 0; i < b->n; i++) {
        PyBuffer_Release(&b->k[i]);
        if (b->v)
            PyBuffer_Release(&b->v[i]);
    }
    b->n = 0;
}

static void batch_free(txn_batch *b)
{
    batch_release(b);
    PyMem_Free(b->k);
    PyMem_Free(b->v);
}

/* Fill b from it. 1: chunk full, 0: input exhausted, -1: error (exception set; b holds the
 * good items before the bad one). *index counts the items read (for messages). */
static int batch_fill(TxnObject *self, PyObject *it, txn_batch *b, const char *fname,
                      Py_ssize_t *index)
{
    while (b->n < BATCH) {
        PyObject *item = PyIter_Next(it);
        if (!item)
            return PyErr_Occurred() ? -1 : 0;
        Py_ssize_t idx = (*index)++;
        int r;
        if (!b->v) {
            r = txn_key(self, item, &b->k[b->n]);
        } else {
            /* a bytes-like item is a sequence of ints, never a pair */
            int flat = PyBytes_Check(item) || PyByteArray_Check(item) ||
                       PyMemoryView_Check(item) || PyUnicode_Check(item);
            PyObject *seq = flat ? NULL : PySequence_Fast(item, "");
            if (!seq || PySequence_Fast_GET_SIZE(seq) != 2) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError,
                             "%s(): item %zd must be a (key, value) pair, not %.100s", fname,
                             idx, Py_TYPE(item)->tp_name);
                Py_XDECREF(seq);
                Py_DECREF(item);
                return -1;
            }
            PyObject **kv = PySequence_Fast_ITEMS(seq);
            r = txn_key(self, kv[0], &b->k[b->n]);
            if (r == 0 && (r = txn_value(kv[1], &b->v[b->n])) < 0)
                PyBuffer_Release(&b->k[b->n]);
            Py_DECREF(seq);
        }
        Py_DECREF(item);
        if (r < 0)
            return -1;
        b->n++;
    }
    return 1;
}

/* An iterator over the input: a dict gives its items. */
static PyObject *batch_iter(PyObject *src, int pairs)
{
    if (pairs && PyDict_Check(src)) {
        PyObject *items = PyDict_Items(src);
        if (!items)
            return NULL;
        PyObject *it = PyObject_GetIter(items);
        Py_DECREF(items);
        return it;
    }
    return PyObject_GetIter(src);
}

/* The append check: k sorts after the key p[0..ln). */
static int batch_after(const Py_buffer *k, const char *p, Py_ssize_t ln)
{
    Py_ssize_t n = ln < k->len ? ln : k->len;
    int c = n ? memcmp(k->buf, p, (size_t)n) : 0;
    return c > 0 || (c == 0 && k->len > ln);
}

/* The bucket's last key (NULL *out if empty). Inside enter/leave. */
static int batch_last_key(bs_txn *t, bs_bucket *b, PyObject **out)
{
    bs_cursor *cur;
    bs_val k, v;
    int rc;
    *out = NULL;
    PY_CALL_STEP(rc, t, bs_cursor_open(t, b, &cur));
    if (rc != BS_OK)
        return rc;
    PY_CALL(rc, t, bs_cursor_seek(cur, BS_SEEK_LAST, NULL, 0));
    if (rc == BS_OK)
        PY_CALL_STEP(rc, t, bs_cursor_current(cur, &k, &v));
    if (rc == BS_OK && !(*out = PyBytes_FromStringAndSize(k.data, (Py_ssize_t)k.len)))
        rc = -1;
    if (rc == BS_OK && (rc = bs_txn_copied(t)) != BS_OK) /* the page turned to zeros (bs.h) */
        Py_CLEAR(*out);
    bs_cursor_close(cur);
    return rc == BS_NOTFOUND ? BS_OK : rc;
}

enum { B_PUT, B_GET, B_DEL };

/* Apply one chunk. Returns 0 or -1 (exception set). *count: items written / deleted;
 * out: get_many's list. */
static int batch_flush(TxnObject *self, const py_name *nm, txn_batch *bt, int op,
                       unsigned flags, int append, PyObject **last, int *first,
                       Py_ssize_t *count, PyObject *out, Py_ssize_t base)
{
    if (bt->n == 0)
        return 0;
    bs_txn *t = py_txn_enter(self, op != B_GET);
    if (!t)
        return -1;
    bs_bucket *b;
    int rc = py_txn_open_bucket(t, nm, 0, &b), err = 0;
    if (rc == BS_OK && append && *first) {
        rc = batch_last_key(t, b, last);
        *first = 0;
    }
    /* the prefetch pipeline (bs_hint_step, bs.h): while item i is applied, the leaves of the
     * next items are on their way into the CPU cache */
    bs_hint h;
    int hint = rc == BS_OK && op != B_GET;
    if (hint) {
        bs_hint_start(&h);
        for (int j = 0; j < BS_HINT_AHEAD && j < bt->n; j++)
            bs_hint_step(t, b, &h, bt->k[j].buf, (size_t)bt->k[j].len);
    }
    for (int i = 0; rc == BS_OK && i < bt->n; i++) {
        const Py_buffer *k = &bt->k[i];
        if (hint) {
            const Py_buffer *nk = i + BS_HINT_AHEAD < bt->n ? &bt->k[i + BS_HINT_AHEAD] : NULL;
            bs_hint_step(t, b, &h, nk ? nk->buf : NULL, nk ? (size_t)nk->len : 0);
        }
        if (op == B_PUT) {
            int after = 1;
            if (append && i > 0)
                after = batch_after(k, bt->k[i - 1].buf, bt->k[i - 1].len);
            else if (append && *last)
                after = batch_after(k, PyBytes_AS_STRING(*last), PyBytes_GET_SIZE(*last));
            {
                if (!after) {
                    PyErr_Format(PyExc_ValueError,
                                 "put_many(append=True): key of item %zd is not greater than "
                                 "the key before it (or the bucket's last key)",
                                 base + i);
                    rc = -1;
                    break;
                }
            }
            const Py_buffer *v = &bt->v[i];
            PY_CALL(rc, t, bs_put(t, b, k->buf, (size_t)k->len, v->buf, (size_t)v->len, flags));
            if (rc == BS_OK)
                (*count)++;
            else if (rc == BS_EXISTS && (flags & BS_NOOVERWRITE))
                rc = BS_OK;
        } else if (op == B_DEL) {
            PY_CALL(rc, t, bs_del(t, b, k->buf, (size_t)k->len));
            if (rc == BS_OK)
                (*count)++;
            else if (rc == BS_NOTFOUND)
                rc = BS_OK;
        } else {
            bs_val v;
            PY_CALL(rc, t, bs_get(t, b, k->buf, (size_t)k->len, &v));
            PyObject *o;
            if (rc == BS_OK)
                o = txn_value_bytes(self, t, &v);
            else if (rc == BS_NOTFOUND)
                o = Py_NewRef(Py_None);
            else
                break;
            rc = BS_OK;
            if (!o) {
                rc = -1;
            } else if (base + i < PyList_GET_SIZE(out)) {
                PyObject *old = PyList_GET_ITEM(out, base + i); /* the presized list's None */
                PyList_SET_ITEM(out, base + i, o);
                Py_DECREF(old);
            } else {
                if (PyList_Append(out, o) < 0)
                    rc = -1;
                Py_DECREF(o);
            }
        }
    }
    if (rc == BS_OK && append) { /* the next chunk's first key is compared with this one */
        const Py_buffer *k = &bt->k[bt->n - 1];
        Py_XSETREF(*last, PyBytes_FromStringAndSize(k->buf, k->len));
        if (!*last)
            rc = -1;
    }
    if (rc > 0)
        txn_raise(self, nm, rc);
    else if (rc < 0)
        err = 1;
    py_txn_leave(self);
    batch_release(bt);
    return rc == BS_OK && !err ? 0 : -1;
}

/* The common driver of the three batch calls. */
static PyObject *txn_batch_run(TxnObject *self, PyObject *src, PyObject *bucket, int op,
                               unsigned flags, int append, const char *fname)
{
    py_name nm;
    if (py_txn_bucket(self, bucket, &nm) < 0)
        return NULL;
    /* fail early on a finished or read-only transaction, before reading the input */
    bs_txn *t0 = py_txn_enter(self, op != B_GET);
    if (!t0)
        return NULL;
    py_txn_leave(self);
    PyObject *it = batch_iter(src, op == B_PUT);
    if (!it)
        return NULL;
    /* get_many's list is presized for a list or tuple: None in every slot (other threads may
     * see the list while the GIL is released for the disk), replaced as the values come; an
     * input list that changes size meanwhile is handled (extra values are appended, unused
     * slots cut off at the end) */
    Py_ssize_t presize = op != B_GET ? 0 : PyList_CheckExact(src) ? PyList_GET_SIZE(src)
                                         : PyTuple_CheckExact(src) ? PyTuple_GET_SIZE(src) : 0;
    PyObject *out = op == B_GET ? PyList_New(presize) : NULL, *last = NULL, *res = NULL;
    txn_batch bt;
    Py_ssize_t count = 0, index = 0;
    int first = 1;
    if ((op == B_GET && !out) || batch_init(&bt, op == B_PUT) < 0) {
        Py_DECREF(it);
        Py_XDECREF(out);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < presize; i++)
        PyList_SET_ITEM(out, i, Py_NewRef(Py_None));
    for (;;) {
        Py_ssize_t base = index;
        int r = batch_fill(self, it, &bt, fname, &index);
        if (r < 0) {
            /* apply the good items read before the failure, then raise the failure
             * (a failure of the flush itself comes first: it is about earlier items) */
            PyObject *et, *ev, *etb;
            PyErr_Fetch(&et, &ev, &etb);
            if (batch_flush(self, &nm, &bt, op, flags, append, &last, &first, &count, out,
                            base) < 0) {
                Py_XDECREF(et);
                Py_XDECREF(ev);
                Py_XDECREF(etb);
            } else {
                PyErr_Restore(et, ev, etb);
            }
            goto done;
        }
        if (batch_flush(self, &nm, &bt, op, flags, append, &last, &first, &count, out, base) < 0)
            goto done;
        if (r == 0)
            break;
    }
    if (op == B_GET && index < PyList_GET_SIZE(out) &&
        PyList_SetSlice(out, index, PyList_GET_SIZE(out), NULL) < 0)
        goto done;
    res = op == B_GET ? Py_NewRef(out) : PyLong_FromSsize_t(count);
done:
    batch_free(&bt);
    Py_DECREF(it);
    Py_XDECREF(out);
    Py_XDECREF(last);
    return res;
}

static PyObject *txn_put_many(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"items", "bucket", "overwrite", "append", NULL};
    static const py_argspec spec = {"put_many", names, 1, 1};
    PyObject *a[4];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    int overwrite, append;
    if ((overwrite = py_arg_bool(a[2], 1)) < 0 || (append = py_arg_bool(a[3], 0)) < 0)
        return NULL;
    return txn_batch_run(self, a[0], a[1], B_PUT, overwrite ? 0 : BS_NOOVERWRITE, append,
                         "put_many");
}

static PyObject *txn_get_many(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"keys", "bucket", NULL};
    static const py_argspec spec = {"get_many", names, 1, 1};
    PyObject *a[2];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    return txn_batch_run(self, a[0], a[1], B_GET, 0, 0, "get_many");
}

static PyObject *txn_delete_many(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"keys", "bucket", NULL};
    static const py_argspec spec = {"delete_many", names, 1, 1};
    PyObject *a[2];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    return txn_batch_run(self, a[0], a[1], B_DEL, 0, 0, "delete_many");
}

/* ---- mapping protocol ---- */

static Py_ssize_t txn_length(TxnObject *self)
{
    py_name nm;
    if (py_txn_bucket(self, NULL, &nm) < 0)
        return -1;
    long long n = txn_count_impl(self, &nm);
    if (n > PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_OverflowError, "too many entries for len(); use count()");
        return -1;
    }
    return (Py_ssize_t)n;
}

static PyObject *txn_subscript(TxnObject *self, PyObject *key)
{
    py_name nm;
    Py_buffer k;
    if (py_txn_bucket(self, NULL, &nm) < 0 || txn_key_ref(self, key, &k) < 0)
        return NULL;
    PyObject *res = txn_lookup(self, &nm, &k, 1);
    txn_key_release(&k);
    if (!res && !PyErr_Occurred())
        PyErr_SetObject(PyExc_KeyError, key);
    return res;
}

static int txn_ass_subscript(TxnObject *self, PyObject *key, PyObject *value)
{
    py_name nm;
    Py_buffer k, v;
    int r;
    if (py_txn_bucket(self, NULL, &nm) < 0 || txn_key(self, key, &k) < 0)
        return -1;
    if (value) {
        if (txn_value(value, &v) < 0) {
            PyBuffer_Release(&k);
            return -1;
        }
        r = txn_store(self, &nm, &k, &v, 0);
        PyBuffer_Release(&v);
    } else {
        r = txn_remove(self, &nm, &k);
        if (r == 0)
            PyErr_SetObject(PyExc_KeyError, key);
    }
    PyBuffer_Release(&k);
    return r > 0 ? 0 : -1;
}

static int txn_contains(TxnObject *self, PyObject *key)
{
    py_name nm;
    Py_buffer k;
    if (py_txn_bucket(self, NULL, &nm) < 0 || txn_key_ref(self, key, &k) < 0)
        return -1;
    PyObject *res = txn_lookup(self, &nm, &k, 0);
    txn_key_release(&k);
    if (res) {
        Py_DECREF(res);
        return 1;
    }
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *txn_iter_slot(TxnObject *self)
{
    py_name nm;
    if (py_txn_bucket(self, NULL, &nm) < 0)
        return NULL;
    return py_iter_new(self, &nm, NULL, NULL, NULL, 0, 1, 0, 1);
}

static PyObject *txn_iter(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"start", "stop", "reverse", "bucket", "keys",
                                        "values", "prefix", NULL};
    static const py_argspec spec = {"iter", names, 2, 0};
    PyObject *a[7];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    /* One at a time: a __bool__ that raises must not run the next one with its error set. */
    int reverse, keys, values;
    if ((reverse = py_arg_bool(a[2], 0)) < 0 || (keys = py_arg_bool(a[4], 1)) < 0 ||
        (values = py_arg_bool(a[5], 1)) < 0)
        return NULL;
    py_name nm;
    if (py_txn_bucket(self, a[3], &nm) < 0)
        return NULL;
    return py_iter_new(self, &nm, a[0] == Py_None ? NULL : a[0], a[1] == Py_None ? NULL : a[1],
                       a[6] == Py_None ? NULL : a[6], reverse, keys, values, 0);
}

/* keys() / values() / items(): bytes iterators over a range. */
static PyObject *txn_iter_bytes(TxnObject *self, const py_argspec *spec, PyObject *const *args,
                                Py_ssize_t nargs, PyObject *kwnames, int keys, int values)
{
    PyObject *a[5];
    if (py_parse_args(spec, args, nargs, kwnames, a) < 0)
        return NULL;
    int reverse = py_arg_bool(a[2], 0);
    if (reverse < 0)
        return NULL;
    py_name nm;
    if (py_txn_bucket(self, a[3], &nm) < 0)
        return NULL;
    return py_iter_new(self, &nm, a[0] == Py_None ? NULL : a[0], a[1] == Py_None ? NULL : a[1],
                       a[4] == Py_None ? NULL : a[4], reverse, keys, values, 1);
}

static const char *const txn_range_names[] = {"start", "stop", "reverse", "bucket", "prefix",
                                              NULL};

static PyObject *txn_keys(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const py_argspec spec = {"keys", txn_range_names, 2, 0};
    return txn_iter_bytes(self, &spec, args, nargs, kwnames, 1, 0);
}

static PyObject *txn_values(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const py_argspec spec = {"values", txn_range_names, 2, 0};
    return txn_iter_bytes(self, &spec, args, nargs, kwnames, 0, 1);
}

static PyObject *txn_items(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const py_argspec spec = {"items", txn_range_names, 2, 0};
    return txn_iter_bytes(self, &spec, args, nargs, kwnames, 1, 1);
}

/* ---- buckets ---- */

static PyObject *txn_create_bucket(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    static const char *const names[] = {"name", "exist_ok", NULL};
    static const py_argspec spec = {"create_bucket", names, 2, 1};
    PyObject *a[2];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    int exist_ok = py_arg_bool(a[1], 1);
    if (exist_ok < 0)
        return NULL;
    py_name nm;
    if (py_bucket_name(a[0], &nm) < 0)
        return NULL;
    bs_txn *t = py_txn_enter(self, 1);
    if (!t)
        return NULL;
    bs_bucket *b;
    int rc = BS_NOBUCKET;
    if (!exist_ok) {
        rc = py_txn_open_bucket(t, &nm, 0, &b);
        if (rc == BS_OK) {
            py_raise_msg(self->st->BucketExistsError, "bucket %R already exists", a[0]);
            py_txn_leave(self);
            return NULL;
        }
    }
    if (rc == BS_NOBUCKET)
        rc = py_txn_open_bucket(t, &nm, 1, &b);
    if (rc != BS_OK)
        txn_raise(self, &nm, rc);
    py_txn_leave(self);
    if (rc != BS_OK)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *txn_drop_bucket(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"name", NULL};
    static const py_argspec spec = {"drop_bucket", names, 1, 1};
    PyObject *a[1];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    py_name nm;
    if (py_bucket_name(a[0], &nm) < 0)
        return NULL;
    bs_txn *t = py_txn_enter(self, 1);
    if (!t)
        return NULL;
    int rc;
    PY_CALL(rc, t, bs_bucket_drop(t, nm.p, (size_t)nm.n));
    if (rc != BS_OK && rc != BS_NOBUCKET)
        py_raise(self->st, rc);
    py_txn_leave(self);
    if (rc == BS_OK)
        Py_RETURN_TRUE;
    if (rc == BS_NOBUCKET)
        Py_RETURN_FALSE;
    return NULL;
}

/* Names collected by bs_bucket_list, in plain C memory (the retry runs without the GIL). */
typedef struct txn_names {
    char *buf;
    size_t len, cap;
    size_t *end; /* end offset of name i */
    size_t n, capn;
    int nomem;
} txn_names;

static int txn_collect(void *ctx, const void *name, size_t nlen)
{
    txn_names *nl = ctx;
    if (nl->len + nlen > nl->cap) {
        size_t cap = nl->cap ? nl->cap * 2 : 1024;
        while (cap < nl->len + nlen)
            cap *= 2;
        char *p = realloc(nl->buf, cap);
        if (!p)
            goto nomem;
        nl->buf = p;
        nl->cap = cap;
    }
    if (nl->n == nl->capn) {
        size_t capn = nl->capn ? nl->capn * 2 : 32;
        size_t *p = realloc(nl->end, capn * sizeof *p);
        if (!p)
            goto nomem;
        nl->end = p;
        nl->capn = capn;
    }
    memcpy(nl->buf + nl->len, name, nlen);
    nl->len += nlen;
    nl->end[nl->n++] = nl->len;
    return 0;
nomem:
    nl->nomem = 1;
    return 1;
}

static int txn_list_names(bs_txn *t, txn_names *nl)
{
    nl->len = nl->n = 0;
    nl->nomem = 0;
    return bs_bucket_list(t, txn_collect, nl);
}

PyObject *py_txn_buckets(TxnObject *self)
{
    bs_txn *t = py_txn_enter(self, 0);
    if (!t)
        return NULL;
    txn_names nl;
    memset(&nl, 0, sizeof nl);
    int rc;
    PY_CALL(rc, t, txn_list_names(t, &nl));
    if (rc != BS_OK)
        py_raise(self->st, rc);
    py_txn_leave(self);
    PyObject *list = NULL;
    if (rc != BS_OK)
        goto done;
    if (nl.nomem) {
        PyErr_NoMemory();
        goto done;
    }
    if (!(list = PyList_New((Py_ssize_t)nl.n)))
        goto done;
    for (size_t i = 0, start = 0; i < nl.n; start = nl.end[i], i++) {
        /* names are written as UTF-8 (py_bucket_name): anything else is damage (behind a valid
         * checksum) or a file written through the C API; report it rather than hand out a
         * name that could not be passed back as bucket= */
        PyObject *s = PyUnicode_DecodeUTF8(nl.buf + start, (Py_ssize_t)(nl.end[i] - start),
                                           "strict");
        if (!s) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                PyObject *raw = PyBytes_FromStringAndSize(nl.buf + start,
                                                          (Py_ssize_t)(nl.end[i] - start));
                if (raw) {
                    PyErr_Format(self->st->CorruptionError,
                                 "the bucket catalog holds a name that is not UTF-8: %R", raw);
                    Py_DECREF(raw);
                }
            }
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, s);
    }
    if (PyList_Sort(list) < 0)
        Py_CLEAR(list);
done:
    free(nl.buf);
    free(nl.end);
    return list;
}

/* {None: entries of the default bucket, name: entries, ...} in this snapshot. */
PyObject *py_txn_bucket_counts(TxnObject *self)
{
    PyObject *names = py_txn_buckets(self), *d = NULL;
    if (!names)
        return NULL;
    if (!(d = PyDict_New()))
        goto fail;
    for (Py_ssize_t i = -1; i < PyList_GET_SIZE(names); i++) {
        PyObject *key = i < 0 ? Py_None : PyList_GET_ITEM(names, i);
        py_name nm = {NULL, 0};
        if (i >= 0 && py_bucket_name(key, &nm) < 0)
            goto fail;
        long long n = txn_count_impl(self, &nm);
        PyObject *v = n < 0 ? NULL : PyLong_FromLongLong(n);
        if (!v)
            goto fail;
        int r = PyDict_SetItem(d, key, v);
        Py_DECREF(v);
        if (r < 0)
            goto fail;
    }
    Py_DECREF(names);
    return d;
fail:
    Py_DECREF(names);
    Py_XDECREF(d);
    return NULL;
}

static PyObject *txn_buckets(TxnObject *self, PyObject *Py_UNUSED(ignored))
{
    return py_txn_buckets(self);
}

/* ---- end of a transaction ---- */

static PyObject *txn_commit(TxnObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->root)
        return py_raise_msg(self->st->Error,
                            "a bound transaction cannot be committed: its owner commits it");
    if (!self->txn) {
        PyErr_SetString(self->st->ClosedError,
                        !self->ended_by_close ? "transaction is finished"
                        : self->db->closed_why ? self->db->closed_why
                                               : "database was closed before the commit");
        return NULL;
    }
    if (self->db->closed) {
        PyErr_SetString(self->st->ClosedError, py_db_closed_msg(self->db));
        return NULL;
    }
    if (self->db->fork_gen != py_fork_gen)
        return py_raise_forked(self->st);
    if (self->busy) {
        PyErr_SetString(self->st->Error, "transaction is being used by another thread");
        return NULL;
    }
    if (!self->write) {
        py_txn_finish(self);
        Py_RETURN_NONE;
    }
    bs_txn *t = self->txn;
    DBObject *db = self->db;
    int rc;
    self->busy = 1;
    self->busy_thread = PyThread_get_thread_ident();
    db->active++;
    Py_BEGIN_ALLOW_THREADS
    rc = bs_txn_commit(t);
    Py_END_ALLOW_THREADS
    db->active--;
    self->busy = 0;
    self->txn = NULL; /* freed by bs_txn_commit, also on failure */
    py_db_unlink_txn(db, self);
    if (rc != BS_OK)
        return py_raise(self->st, rc);
    Py_RETURN_NONE;
}

static PyObject *txn_abort(TxnObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->root)
        return py_raise_msg(self->st->Error,
                            "a bound transaction cannot be aborted: its owner ends it");
    if (!self->txn)
        Py_RETURN_NONE;
    if (self->busy) {
        PyErr_SetString(self->st->Error, "transaction is being used by another thread");
        return NULL;
    }
    py_txn_finish(self);
    Py_RETURN_NONE;
}

static PyObject *txn_enter_cm(TxnObject *self, PyObject *Py_UNUSED(ignored))
{
    TxnObject *r = PY_TXN_ROOT(self);
    if (!r->txn || self->db->closed) {
        PyErr_SetString(self->st->ClosedError, "transaction is finished");
        return NULL;
    }
    return Py_NewRef((PyObject *)self);
}

static PyObject *txn_exit_cm(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    PyObject *a[3];
    if (py_parse_exit(args, nargs, kwnames, a) < 0)
        return NULL;
    if (self->root) /* a bound view: its owner ends the transaction */
        Py_RETURN_FALSE;
    PyObject *et = a[0];
    if (!self->txn) {
        if (et == Py_None && self->ended_by_close) {
            PyErr_SetString(self->st->ClosedError, "database was closed before the commit");
            return NULL;
        }
        Py_RETURN_FALSE;
    }
    PyObject *r = et == Py_None ? txn_commit(self, NULL) : txn_abort(self, NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

/* ---- savepoints and bound views ---- */

static PyObject *txn_sp_call(TxnObject *self, int (*fn)(bs_txn *))
{
    bs_txn *t = py_txn_enter(self, 1);
    if (!t)
        return NULL;
    int rc;
    PY_CALL(rc, t, fn(t));
    if (rc != BS_OK)
        py_raise(self->st, rc);
    py_txn_leave(self);
    if (rc != BS_OK)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *txn_savepoint(TxnObject *self, PyObject *Py_UNUSED(ignored))
{
    return txn_sp_call(self, bs_txn_savepoint);
}

static PyObject *txn_rollback(TxnObject *self, PyObject *Py_UNUSED(ignored))
{
    return txn_sp_call(self, bs_txn_rollback);
}

static PyObject *txn_release(TxnObject *self, PyObject *Py_UNUSED(ignored))
{
    return txn_sp_call(self, bs_txn_release);
}

static PyObject *txn_bind(TxnObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"bucket", "create", NULL};
    static const py_argspec spec = {"_bind", names, 2, 1};
    PyObject *a[2];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    int create = py_arg_bool(a[1], 0);
    if (create < 0)
        return NULL;
    py_name nm;
    if (py_bucket_name(a[0], &nm) < 0)
        return NULL;
    bs_txn *t = py_txn_enter(self, create);
    if (!t)
        return NULL;
    bs_bucket *b;
    int rc = py_txn_open_bucket(t, &nm, create, &b);
    if (rc != BS_OK)
        txn_raise(self, &nm, rc);
    py_txn_leave(self);
    if (rc != BS_OK)
        return NULL;
    TxnObject *r = PY_TXN_ROOT(self);
    TxnObject *v = PyObject_GC_New(TxnObject, r->write ? self->st->WriteTxn_type : self->st->Txn_type);
    if (!v)
        return NULL;
    v->st = self->st;
    v->db = (DBObject *)Py_NewRef((PyObject *)self->db);
    v->root = (TxnObject *)Py_NewRef((PyObject *)r);
    v->txn = NULL;
    v->bucket = Py_NewRef(a[0]);
    v->write = r->write;
    v->busy = 0;
    v->busy_thread = 0;
    v->ended_by_close = 0;
    v->id = r->id;
    v->prev = v->next = NULL;
    v->weakreflist = NULL;
    PyObject_GC_Track(v);
    return (PyObject *)v;
}

/* ---- properties, repr, GC ---- */

static PyObject *txn_get_write(TxnObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->write);
}

static PyObject *txn_get_closed(TxnObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(!PY_TXN_ROOT(self)->txn || self->db->closed);
}

static PyObject *txn_get_id(TxnObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->id);
}

static PyObject *txn_get_bucket(TxnObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->bucket ? self->bucket : Py_None);
}

static PyObject *txn_get_db(TxnObject *self, void *c)
{
    (void)c;
    return Py_NewRef((PyObject *)self->db);
}

static PyObject *txn_repr(TxnObject *self)
{
    int live = PY_TXN_ROOT(self)->txn && !self->db->closed;
    if (self->bucket)
        return PyUnicode_FromFormat("<btree_store.Txn %s id=%llu bucket=%R%s %s>",
                                    self->write ? "write" : "read",
                                    (unsigned long long)self->id, self->bucket,
                                    self->root ? " bound" : "", live ? "active" : "finished");
    return PyUnicode_FromFormat("<btree_store.Txn %s id=%llu%s %s>",
                                self->write ? "write" : "read", (unsigned long long)self->id,
                                self->root ? " bound" : "", live ? "active" : "finished");
}

static void txn_finalize(TxnObject *self)
{
    /* A transaction dropped without commit/abort is aborted (releases the writer lock). */
    if (!self->root && self->txn && !self->busy)
        py_txn_finish(self);
}

static int txn_traverse(TxnObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->db);
    Py_VISIT(self->root);
    Py_VISIT(self->bucket);
    return 0;
}

static int txn_clear(TxnObject *self)
{
    /* db and root stay until dealloc: a live transaction needs them. */
    (void)self;
    return 0;
}

static void txn_dealloc(TxnObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
        return;
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (!self->root) {
        if (self->txn && !self->busy)
            py_txn_finish(self);
        else
            py_db_unlink_txn(self->db, self);
    }
    Py_CLEAR(self->root);
    Py_CLEAR(self->bucket);
    Py_CLEAR(self->db);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}


static PyMethodDef txn_methods[] = {
    {"get", FASTKW(txn_get),
     "get($self, /, key, default=None, *, bucket=None)\n--\n\n"
     "Return the value stored under key (bytes), or default when the key is missing.\n"
     "key: a bytes-like object. bucket: a named bucket (None: the transaction's bucket).\n"
     "Raises TypeError (str or non-bytes key), ValueError (key too long),\n"
     "BucketNotFoundError, ClosedError, CorruptionError, DiskError."},
    {"put", FASTKW(txn_put),
     "put($self, /, key, value, overwrite=True, *, bucket=None)\n--\n\n"
     "Store value under key (both bytes-like). Returns True when stored; with\n"
     "overwrite=False an existing key keeps its value and False is returned.\n"
     "Raises ReadonlyError (read transaction), TypeError, ValueError (key longer than\n"
     "db.max_key_size, value of 2**32 bytes or more), BucketNotFoundError, ClosedError,\n"
     "DiskFullError, DiskError."},
    {"delete", FASTKW(txn_delete),
     "delete($self, /, key, *, bucket=None)\n--\n\n"
     "Remove key. Returns True if it existed, False if not.\n"
     "Raises ReadonlyError, TypeError, ValueError, BucketNotFoundError, ClosedError,\n"
     "DiskError."},
    {"pop", FASTKW(txn_pop),
     "pop($self, key, /, *default, bucket=None)\n--\n\n"
     "Remove key and return its value (bytes). When the key is missing, return default if\n"
     "one was given (pop(key, default)), else raise KeyError.\n"
     "Raises ReadonlyError, TypeError, ValueError, BucketNotFoundError, ClosedError,\n"
     "DiskError."},
    {"replace", FASTKW(txn_replace),
     "replace($self, /, key, value, *, bucket=None)\n--\n\n"
     "Store value under key and return the previous value (bytes; None if there was\n"
     "none). Raises like put()."},
    {"count", FASTKW(txn_count),
     "count($self, /, *, bucket=None)\n--\n\n"
     "Number of entries in the bucket (O(1): kept in the bucket's record).\n"
     "Raises BucketNotFoundError, ClosedError."},
    {"stat", FASTKW(txn_stat),
     "stat($self, /, *, bucket=None)\n--\n\n"
     "Statistics of one bucket (None: the transaction's bucket) in this transaction's view,\n"
     "as a dict: entries, depth (levels of its tree, 0 when empty), branch_pages,\n"
     "leaf_pages, overflow_pages (pages of the values stored outside the tree), key_bytes\n"
     "and value_bytes (sums of the key and value lengths). It walks the whole tree: O(pages).\n"
     "Raises BucketNotFoundError, TypeError (a name that is not a str), ClosedError,\n"
     "CorruptionError, DiskError."},
    {"put_many", FASTKW(txn_put_many),
     "put_many($self, /, items, *, bucket=None, overwrite=True, append=False)\n--\n\n"
     "Store every (key, value) pair of items (an iterable of pairs, or a dict) in order and\n"
     "return how many were written (overwrite=False skips existing keys). append=True is for\n"
     "sorted input: each key must be greater than the one before it and than the bucket's\n"
     "last key, else ValueError. If the input raises or holds a bad item, the pairs before\n"
     "it stay written in the transaction (abort it to undo them).\n"
     "Raises like put(), and TypeError for an item that is not a pair."},
    {"get_many", FASTKW(txn_get_many),
     "get_many($self, /, keys, *, bucket=None)\n--\n\n"
     "A list with the value (bytes) of each key of the iterable keys, None where missing.\n"
     "Raises like get()."},
    {"delete_many", FASTKW(txn_delete_many),
     "delete_many($self, /, keys, *, bucket=None)\n--\n\n"
     "Remove every key of the iterable keys; return how many existed. On an error the keys\n"
     "before it stay deleted in the transaction. Raises like delete()."},
    {"iter", FASTKW(txn_iter),
     "iter($self, /, start=None, stop=None, *, reverse=False, bucket=None, keys=True, "
     "values=True, prefix=None)\n--\n\n"
     "Return an Iterator over the keys in [start, stop) in byte order (reverse: downwards\n"
     "from below stop), only those starting with prefix if given (bounds: bytes-like or\n"
     "None). Yields (key, value) pairs of memoryviews, or only keys (values=False) or only\n"
     "values (keys=False); a buffer is reused only once nobody holds its view, so a kept\n"
     "view never changes. keys()/values()/items() yield bytes instead. On a write\n"
     "transaction the iterator continues after the last key it yielded, so it sees this\n"
     "transaction's changes to keys it has not reached yet.\n"
     "Raises ValueError (keys=False and values=False), TypeError (bad bound),\n"
     "BucketNotFoundError, ClosedError."},
    {"keys", FASTKW(txn_keys),
     "keys($self, /, start=None, stop=None, *, reverse=False, bucket=None, prefix=None)\n--\n\n"
     "An Iterator over the keys in [start, stop) (and with prefix), as bytes. iter(txn) is\n"
     "keys() of the whole bucket. Like every Iterator it makes one pass. Raises like iter()."},
    {"values", FASTKW(txn_values),
     "values($self, /, start=None, stop=None, *, reverse=False, bucket=None, prefix=None)\n--\n\n"
     "An Iterator over the values of the keys in [start, stop) (and with prefix), as bytes.\n"
     "Raises like iter()."},
    {"items", FASTKW(txn_items),
     "items($self, /, start=None, stop=None, *, reverse=False, bucket=None, prefix=None)\n--\n\n"
     "An Iterator over the (key, value) pairs in [start, stop) (and with prefix), as bytes.\n"
     "Raises like iter()."},
    {"create_bucket", FASTKW(txn_create_bucket),
     "create_bucket($self, /, name, exist_ok=True)\n--\n\n"
     "Create the named bucket (name: str of 1..255 UTF-8 bytes) if it does not exist.\n"
     "Returns None. Raises BucketExistsError (it exists and exist_ok is false),\n"
     "ReadonlyError, TypeError / ValueError (bad name), ClosedError, DiskError."},
    {"drop_bucket", FASTKW(txn_drop_bucket),
     "drop_bucket($self, /, name)\n--\n\n"
     "Drop the named bucket and all its data. Returns True, or False if it did not exist.\n"
     "Raises ReadonlyError, TypeError / ValueError (bad name), ClosedError, DiskError."},
    {"buckets", (PyCFunction)txn_buckets, METH_NOARGS,
     "buckets($self, /)\n--\n\n"
     "The names of the named buckets in this snapshot, as a sorted list of str.\n"
     "Raises ClosedError, CorruptionError."},
    {"commit", (PyCFunction)txn_commit, METH_NOARGS,
     "commit($self, /)\n--\n\n"
     "Make the changes durable (see sync= of DB and begin) and end the transaction; on a\n"
     "read transaction just end it. Returns None. Raises ClosedError (already ended, or the\n"
     "database was closed first), Error (a bound view), DiskFullError / DiskError (nothing\n"
     "was committed), PanicError."},
    {"abort", (PyCFunction)txn_abort, METH_NOARGS,
     "abort($self, /)\n--\n\n"
     "Discard the changes and end the transaction (a no-op if it already ended). Returns\n"
     "None. Raises Error on a bound view or while another thread is inside a call."},
    {"__enter__", (PyCFunction)txn_enter_cm, METH_NOARGS,
     "__enter__($self, /)\n--\n\nReturn the transaction itself (ClosedError if it ended)."},
    {"__exit__", FASTKW(txn_exit_cm),
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\n"
     "Commit when the block ended normally, abort when it raised; returns False\n"
     "(exceptions propagate). A bound view leaves the transaction to its owner."},
    {"_savepoint", (PyCFunction)txn_savepoint, METH_NOARGS,
     "_savepoint($self, /)\n--\n\nPush a savepoint (internal: used by DB.exec_multi)."},
    {"_rollback", (PyCFunction)txn_rollback, METH_NOARGS,
     "_rollback($self, /)\n--\n\nUndo everything since the newest savepoint and pop it."},
    {"_release", (PyCFunction)txn_release, METH_NOARGS,
     "_release($self, /)\n--\n\nKeep the changes since the newest savepoint and pop it."},
    {"_bind", FASTKW(txn_bind),
     "_bind($self, /, bucket, create=False)\n--\n\nA view of this transaction whose calls default to\n"
     "bucket; it shares the engine transaction and cannot commit or abort it."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef txn_getset[] = {
    {"write", (getter)txn_get_write, NULL, "True for a write transaction.", NULL},
    {"closed", (getter)txn_get_closed, NULL,
     "True once the transaction ended (or its database was closed).", NULL},
    {"id", (getter)txn_get_id, NULL,
     "Transaction id: the snapshot's txid (read) or the txid being built (write).", NULL},
    {"bucket", (getter)txn_get_bucket, NULL,
     "The bucket calls default to (None: the default bucket).", NULL},
    {"db", (getter)txn_get_db, NULL, "The DB this transaction belongs to.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef txn_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(TxnObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot txn_slots[] = {
    {Py_tp_doc, "A transaction (made by DB.begin(), never directly): a read-only snapshot\n"
                "of one commit, or the write transaction (a WriteTxn).\n\n"
                "A Txn is a collections.abc.Mapping of bytes keys to bytes values over its\n"
                "bucket: len(), txn[key] (KeyError when missing), key in txn, iter(txn)\n"
                "(bytes keys). Use it as a context manager: commits on normal exit, aborts\n"
                "on exception."},
    {Py_tp_finalize, txn_finalize},
    {Py_tp_dealloc, txn_dealloc},
    {Py_tp_traverse, txn_traverse},
    {Py_tp_clear, txn_clear},
    {Py_tp_repr, txn_repr},
    {Py_tp_iter, txn_iter_slot},
    {Py_tp_methods, txn_methods},
    {Py_tp_getset, txn_getset},
    {Py_tp_members, txn_members},
    {Py_mp_length, txn_length},
    {Py_mp_subscript, txn_subscript},
    {Py_mp_ass_subscript, txn_ass_subscript},
    {Py_sq_contains, txn_contains},
    {0, NULL},
};

static PyType_Spec txn_spec = {
    .name = "btree_store.Txn",
    .basicsize = sizeof(TxnObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE | PY_TPFLAGS_NONEW,
    .slots = txn_slots,
};

/* A write transaction: a Txn whose type says it is writable, so that it can be registered
 * as a MutableMapping while read transactions are only Mappings. */
static PyType_Slot wtxn_slots[] = {
    {Py_tp_doc, "A write transaction (made by DB.begin(write=True)): a Txn that may change\n"
                "the database, and a collections.abc.MutableMapping (txn[key] = value,\n"
                "del txn[key]). Use it as a context manager: commits on normal exit, aborts\n"
                "on exception."},
    {Py_tp_traverse, txn_traverse},
    {Py_tp_clear, txn_clear},
    {Py_tp_dealloc, txn_dealloc},
    {Py_tp_finalize, txn_finalize},
    {0, NULL},
};

static PyType_Spec wtxn_spec = {
    .name = "btree_store.WriteTxn",
    .basicsize = sizeof(TxnObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | PY_TPFLAGS_NONEW,
    .slots = wtxn_slots,
};

int py_txn_init_type(PyObject *m, py_state *st)
{
    st->Txn_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &txn_spec, NULL);
    if (!st->Txn_type)
        return -1;
    py_no_new(st->Txn_type);
    if (py_add_type(m, "Txn", st->Txn_type) < 0)
        return -1;
    /* bases as a tuple: Python 3.9 accepts nothing else */
    PyObject *bases = PyTuple_Pack(1, (PyObject *)st->Txn_type);
    if (!bases)
        return -1;
    st->WriteTxn_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &wtxn_spec, bases);
    Py_DECREF(bases);
    if (!st->WriteTxn_type)
        return -1;
    py_no_new(st->WriteTxn_type);
    return py_add_type(m, "WriteTxn", st->WriteTxn_type);
}
