/*
 * py_iter.c - the Iterator type (range scans over one bucket) and the internal _Buffer type
 * whose memoryviews the iterator yields.
 *
 * Layer: CPython binding; calls the engine only through bs.h (cursor API).
 *
 * Buffers and views: each step copies the current key and value out of the page
 * (before bs_txn_leave) into buffers the iterator owns, and yields memoryviews over them.
 *  - A _Buffer counts its exports (live memoryviews). With no export it may be resized
 *    (realloc); with exports it is overwritten in place when big enough, else replaced by a
 *    NEW _Buffer (the old one lives on as long as its views): a view kept past its step shows
 *    old or overwritten bytes, never freed memory.
 *  - Steady state allocates nothing: the result tuple is reused when only the iterator holds
 *    it (like dict iterators), and a memoryview is yielded again (showing the new item) when
 *    it is not released, still views the current buffer and has the new length (its cached
 *    hash is reset); a view held from an earlier step therefore shows the current item.
 *
 * Range: [lo, hi) where lo = max(start, prefix) and hi = min(stop, successor(prefix)).
 * Forward iteration seeks >= lo and stops at hi; reverse seeks <= hi, skips hi itself, and
 * stops below lo. On a write transaction the engine's cursor re-seeks after changes, so the
 * iterator sees the transaction's own writes to keys it has not reached yet.
 *
 * States: INIT (nothing loaded), PENDING (seek() loaded an item that next() yields without
 * stepping), YIELDED (the loaded item was yielded; next() steps), DONE (exhausted, or an
 * engine error such as BucketNotFoundError or DiskError was raised by a step: like a
 * generator, it then stops; seek() may revive it). it.key / it.value are bytes copies of the
 * loaded item (None in INIT/DONE); like every other use, they raise ClosedError once the
 * transaction ended.
 */
#include "py_internal.h"

#include <string.h>

#include "structmember.h"

/* ---- _Buffer ---- */

typedef struct BufObject {
    PyObject_HEAD
    char *data;         /* never NULL */
    Py_ssize_t len;     /* bytes exported by the next getbuffer */
    Py_ssize_t cap;
    Py_ssize_t exports; /* live Py_buffer exports */
} BufObject;

static BufObject *buf_new(py_state *st, Py_ssize_t cap)
{
    if (cap < 64)
        cap = 64;
    BufObject *b = PyObject_New(BufObject, st->Buf_type);
    if (!b)
        return NULL;
    b->data = PyMem_Malloc((size_t)cap);
    if (!b->data) {
        Py_DECREF(b);
        PyErr_NoMemory();
        return NULL;
    }
    b->len = 0;
    b->cap = cap;
    b->exports = 0;
    return b;
}

/* Resize a buffer that has no exports to hold n bytes (grows geometrically, shrinks a large
 * buffer that is mostly unused). */
static int buf_reserve(BufObject *b, Py_ssize_t n)
{
    Py_ssize_t cap = b->cap;
    if (n > cap) {
        cap = cap + cap / 2;
        if (cap < n)
            cap = n;
    } else if (cap > (1 << 20) && n < cap / 4) {
        cap = n < 64 ? 64 : n;
    } else {
        return 0;
    }
    char *p = PyMem_Realloc(b->data, (size_t)cap);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static int buf_getbuffer(BufObject *self, Py_buffer *view, int flags)
{
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->len, 1, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void buf_releasebuffer(BufObject *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static void buf_dealloc(BufObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyMem_Free(self->data); /* no exports: every view holds a reference to us */
    PyObject_Free(self);
    Py_DECREF(tp);
}

static PyType_Slot buf_slots[] = {
    {Py_tp_doc, "Internal: a reusable byte buffer behind the memoryviews an Iterator yields."},
    {Py_tp_dealloc, buf_dealloc},
    {Py_bf_getbuffer, buf_getbuffer},
    {Py_bf_releasebuffer, buf_releasebuffer},
    {0, NULL},
};

static PyType_Spec buf_spec = {
    .name = "btree_store._Buffer",
    .basicsize = sizeof(BufObject),
    .flags = Py_TPFLAGS_DEFAULT | PY_TPFLAGS_NONEW,
    .slots = buf_slots,
};

/* ---- Iterator ---- */

enum { IT_INIT, IT_PENDING, IT_YIELDED, IT_DONE };

typedef struct IterObject {
    PyObject_HEAD
    py_state *st;
    TxnObject *txn;       /* strong (root or bound) */
    bs_cursor *cur;       /* NULL once closed */
    PyObject *bucket;     /* bytes: the bucket name (for messages), or NULL */
    PyObject *lo, *hi;    /* bytes bounds, or NULL */
    int reverse, keys, values;
    int state;
    int busy;
    BufObject *kbuf, *vbuf;
    Py_ssize_t klen, vlen; /* the loaded item */
    PyObject *kmv, *vmv;  /* single-view mode: the cached memoryview */
    PyObject *result;     /* (key, value) mode: the cached tuple */
    PyObject *weakreflist;
} IterObject;

static int iter_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static int iter_cmp_obj(const void *a, size_t alen, PyObject *bytes)
{
    return iter_cmp(a, alen, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
}

/* A memoryview we made may be handed out again, showing the new item, when it is not
 * released, still views the current buffer, and has the new length. Whoever still holds it
 * from an earlier step sees the new bytes: "a view is valid until the next step". */
static int mv_reusable(PyObject *mv, BufObject *b, Py_ssize_t n)
{
    if (!mv)
        return 0;
    PyMemoryViewObject *m = (PyMemoryViewObject *)mv;
    if (m->flags & _Py_MEMORYVIEW_RELEASED)
        return 0;
    Py_buffer *v = PyMemoryView_GET_BUFFER(mv);
    if (v->obj != (PyObject *)b || v->buf != (void *)b->data || v->len != n)
        return 0;
    m->hash = -1; /* a read-only memoryview caches its hash */
    return 1;
}

/* Make *bufp ready to receive n bytes for the view in *slot (slot NULL: no view wanted).
 * *dst receives where to write; *need_view tells whether a new memoryview must be made
 * (after the bytes are written). */
static int iter_prepare(py_state *st, BufObject **bufp, PyObject **slot, Py_ssize_t n,
                        char **dst, int *need_view)
{
    BufObject *b = *bufp;
    if (slot && mv_reusable(*slot, b, n)) {
        *dst = b->data;
        *need_view = 0;
        return 0;
    }
    if (slot)
        Py_CLEAR(*slot); /* may drop our own export */
    if (b->exports == 0) {
        if (buf_reserve(b, n) < 0)
            return -1;
    } else if (b->cap < n) {
        BufObject *nb = buf_new(st, n);
        if (!nb)
            return -1;
        Py_SETREF(*bufp, nb);
        b = nb;
    }
    b->len = n;
    *dst = b->data;
    *need_view = slot != NULL;
    return 0;
}

/* Copy the current item into the buffers and prepare the views. Inside enter/leave.
 * Returns BS_OK, an engine rc (exception not set), or -1 (exception set). */
static int iter_load(IterObject *it, bs_txn *t, const bs_val *k, const bs_val *v)
{
    PyObject **kslot = it->keys ? &it->kmv : NULL;
    PyObject **vslot = it->values ? &it->vmv : NULL;
    if (it->keys && it->values) {
        /* Empty our tuple when only we hold it (it is refilled below without allocating),
         * so that its old views do not pin the buffers; else let the holder keep it. Empty
         * means None, never NULL: an allocation below may run a finalizer that finds the
         * tuple (gc.get_objects()) and reads its items. */
        if (it->result && Py_REFCNT(it->result) == 1) {
            PyObject **items = ((PyTupleObject *)it->result)->ob_item;
            Py_SETREF(items[0], Py_NewRef(Py_None));
            Py_SETREF(items[1], Py_NewRef(Py_None));
        } else {
            Py_CLEAR(it->result);
        }
    }
    char *dst;
    int need_view;
    /* The key: always copied (it.key), viewed only when keys are yielded. */
    it->klen = it->vlen = -1;
    if (iter_prepare(it->st, &it->kbuf, kslot, (Py_ssize_t)k->len, &dst, &need_view) < 0)
        return -1;
    if (k->len)
        memcpy(dst, k->data, k->len);
    it->klen = (Py_ssize_t)k->len;
    if (need_view && !(*kslot = PyMemoryView_FromObject((PyObject *)it->kbuf)))
        return -1;
    if (!it->values)
        return BS_OK;
    if (iter_prepare(it->st, &it->vbuf, vslot, (Py_ssize_t)v->len, &dst, &need_view) < 0)
        return -1;
    if (v->data) {
        if (v->len)
            memcpy(dst, v->data, v->len);
    } else {
        int rc;
        bs_txn_set_noio(t, 0);
        Py_BEGIN_ALLOW_THREADS
        rc = bs_read_value(t, v, dst);
        Py_END_ALLOW_THREADS
        if (rc != BS_OK)
            return rc;
    }
    it->vlen = (Py_ssize_t)v->len;
    if (need_view && !(*vslot = PyMemoryView_FromObject((PyObject *)it->vbuf)))
        return -1;
    if (it->keys && it->values) {
        if (it->result) {
            PyObject **items = ((PyTupleObject *)it->result)->ob_item;
            Py_SETREF(items[0], Py_NewRef(it->kmv));
            Py_SETREF(items[1], Py_NewRef(it->vmv));
            if (!PyObject_GC_IsTracked(it->result)) /* the GC may have untracked it */
                PyObject_GC_Track(it->result);
        } else if (!(it->result = PyTuple_Pack(2, it->kmv, it->vmv))) {
            return -1;
        }
    }
    return BS_OK;
}

static int iter_usable(IterObject *it)
{
    if (it->busy) {
        PyErr_SetString(it->st->Error, "iterator is being used by another thread");
        return -1;
    }
    TxnObject *r = PY_TXN_ROOT(it->txn);
    if (!r->txn || it->txn->db->closed || !it->cur) {
        PyErr_SetString(it->st->ClosedError, "the iterator's transaction is finished");
        return -1;
    }
    return 0;
}

enum { MOVE_STEP, MOVE_FIRST, MOVE_SEEK };

/* Move the cursor and load the item. 1 loaded, 0 exhausted, -1 error. */
static int iter_move(IterObject *it, int how, const char *key, size_t klen)
{
    if (iter_usable(it) < 0)
        return -1;
    bs_txn *t = py_txn_enter(it->txn, 0);
    if (!t)
        return -1;
    it->busy = 1;
    bs_cursor *cur = it->cur;
    PyObject *lo = it->lo, *hi = it->hi;
    int rc;
    bs_val k, v;
    int skip_hi = 0;

    if (how == MOVE_STEP) {
        if (it->reverse)
            PY_CALL(rc, t, bs_cursor_prev(cur));
        else
            PY_CALL(rc, t, bs_cursor_next(cur));
    } else if (!it->reverse) {
        const char *target = NULL;
        size_t tlen = 0;
        if (how == MOVE_SEEK) {
            target = key;
            tlen = klen;
        }
        if (lo && (!target || iter_cmp_obj(target, tlen, lo) < 0)) {
            target = PyBytes_AS_STRING(lo);
            tlen = (size_t)PyBytes_GET_SIZE(lo);
        }
        if (target && hi && iter_cmp_obj(target, tlen, hi) >= 0)
            rc = BS_NOTFOUND;
        else if (target)
            PY_CALL(rc, t, bs_cursor_seek(cur, BS_SEEK_GE, target, tlen));
        else
            PY_CALL(rc, t, bs_cursor_seek(cur, BS_SEEK_FIRST, NULL, 0));
    } else {
        if (how == MOVE_SEEK && !(hi && iter_cmp_obj(key, klen, hi) >= 0)) {
            PY_CALL(rc, t, bs_cursor_seek(cur, BS_SEEK_LE, key, klen));
        } else if (hi) {
            skip_hi = 1;
            PY_CALL(rc, t, bs_cursor_seek(cur, BS_SEEK_LE, PyBytes_AS_STRING(hi),
                                          (size_t)PyBytes_GET_SIZE(hi)));
        } else {
            PY_CALL(rc, t, bs_cursor_seek(cur, BS_SEEK_LAST, NULL, 0));
        }
    }
    if (rc == BS_OK)
        PY_CALL(rc, t, bs_cursor_current(cur, &k, &v));
    if (rc == BS_OK && skip_hi && iter_cmp_obj(k.data, k.len, hi) >= 0) {
        PY_CALL(rc, t, bs_cursor_prev(cur));
        if (rc == BS_OK)
            PY_CALL(rc, t, bs_cursor_current(cur, &k, &v));
    }
    if (rc == BS_OK) {
        if (!it->reverse ? (hi && iter_cmp_obj(k.data, k.len, hi) >= 0)
                         : (lo && iter_cmp_obj(k.data, k.len, lo) < 0))
            rc = BS_NOTFOUND;
    }
    if (rc == BS_OK)
        rc = iter_load(it, t, &k, &v);
    int ret;
    if (rc == BS_OK) {
        ret = 1;
    } else if (rc == BS_NOTFOUND) {
        ret = 0;
    } else {
        ret = -1;
        if (rc > 0) {
            if (rc == BS_NOBUCKET && it->bucket)
                py_raise_nobucket(it->st, PyBytes_AS_STRING(it->bucket),
                                  PyBytes_GET_SIZE(it->bucket));
            else
                py_raise(it->st, rc);
        }
    }
    py_txn_leave(it->txn);
    it->busy = 0;
    it->state = ret == 1 ? (how == MOVE_SEEK ? IT_PENDING : IT_YIELDED) : IT_DONE;
    return ret;
}

static PyObject *iter_current(IterObject *it)
{
    if (it->keys && it->values)
        return Py_NewRef(it->result);
    return Py_NewRef(it->keys ? it->kmv : it->vmv);
}

static PyObject *iter_next(IterObject *it)
{
    int r;
    switch (it->state) {
    case IT_PENDING:
        if (iter_usable(it) < 0)
            return NULL;
        it->state = IT_YIELDED;
        return iter_current(it);
    case IT_INIT:
        r = iter_move(it, MOVE_FIRST, NULL, 0);
        break;
    case IT_YIELDED:
        r = iter_move(it, MOVE_STEP, NULL, 0);
        break;
    default:
        if (iter_usable(it) < 0)
            return NULL;
        return NULL; /* StopIteration */
    }
    if (r <= 0)
        return NULL;
    return iter_current(it);
}

static PyObject *iter_seek(IterObject *it, PyObject *arg)
{
    Py_buffer k;
    if (py_get_bytes(arg, &k, "key") < 0)
        return NULL;
    int r = iter_move(it, MOVE_SEEK, k.buf, (size_t)k.len);
    PyBuffer_Release(&k);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static int iter_alive(IterObject *it)
{
    if (!PY_TXN_ROOT(it->txn)->txn || it->txn->db->closed) {
        PyErr_SetString(it->st->ClosedError, "the iterator's transaction is finished");
        return -1;
    }
    return 0;
}

static PyObject *iter_get_key(IterObject *it, void *c)
{
    (void)c;
    if (iter_alive(it) < 0)
        return NULL;
    if ((it->state != IT_PENDING && it->state != IT_YIELDED) || it->klen < 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(it->kbuf->data, it->klen);
}

static PyObject *iter_get_value(IterObject *it, void *c)
{
    (void)c;
    if (iter_alive(it) < 0)
        return NULL;
    if ((it->state != IT_PENDING && it->state != IT_YIELDED) || it->vlen < 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(it->vbuf->data, it->vlen);
}

static PyObject *iter_get_reverse(IterObject *it, void *c)
{
    (void)c;
    return PyBool_FromLong(it->reverse);
}

/* Copy an optional bytes-like bound into a bytes object. */
static int iter_bound(PyObject *o, const char *what, PyObject **out)
{
    *out = NULL;
    if (!o)
        return 0;
    Py_buffer v;
    if (py_get_bytes(o, &v, what) < 0)
        return -1;
    *out = PyBytes_FromStringAndSize(v.buf, v.len);
    PyBuffer_Release(&v);
    return *out ? 0 : -1;
}

/* The smallest key greater than every key starting with p, or NULL (no bound). */
static PyObject *iter_prefix_end(PyObject *p)
{
    Py_ssize_t n = PyBytes_GET_SIZE(p);
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(p);
    while (n > 0 && s[n - 1] == 0xFF)
        n--;
    if (n == 0)
        return NULL;
    /* A fresh object (never the shared one-byte singletons) that we may write into. */
    PyObject *r = PyBytes_FromStringAndSize(NULL, n);
    if (r) {
        unsigned char *d = (unsigned char *)PyBytes_AS_STRING(r);
        memcpy(d, s, (size_t)n);
        d[n - 1]++;
    }
    return r;
}

PyObject *py_iter_new(TxnObject *txn, const py_name *bucket, PyObject *start, PyObject *stop,
                      PyObject *prefix, int reverse, int keys, int values)
{
    py_state *st = txn->st;
    if (!keys && !values) {
        PyErr_SetString(PyExc_ValueError, "keys and values cannot both be False");
        return NULL;
    }
    PyObject *lo = NULL, *hi = NULL, *pfx = NULL, *pend = NULL;
    IterObject *it = NULL;
    if (iter_bound(start, "start", &lo) < 0 || iter_bound(stop, "stop", &hi) < 0 ||
        iter_bound(prefix, "prefix", &pfx) < 0)
        goto fail;
    if (pfx) {
        if (!lo || iter_cmp_obj(PyBytes_AS_STRING(lo), (size_t)PyBytes_GET_SIZE(lo), pfx) < 0)
            Py_XSETREF(lo, Py_NewRef(pfx));
        if (PyBytes_GET_SIZE(pfx) > 0) {
            pend = iter_prefix_end(pfx);
            if (!pend && PyErr_Occurred())
                goto fail;
            if (pend && (!hi || iter_cmp_obj(PyBytes_AS_STRING(pend),
                                             (size_t)PyBytes_GET_SIZE(pend), hi) < 0))
                Py_XSETREF(hi, Py_NewRef(pend));
        }
    }

    it = PyObject_GC_New(IterObject, st->Iter_type);
    if (!it)
        goto fail;
    it->st = st;
    it->txn = (TxnObject *)Py_NewRef((PyObject *)txn);
    it->cur = NULL;
    it->bucket = NULL;
    it->lo = lo;
    it->hi = hi;
    lo = hi = NULL;
    it->reverse = reverse;
    it->keys = keys;
    it->values = values;
    it->state = IT_INIT;
    it->busy = 0;
    it->kbuf = it->vbuf = NULL;
    it->klen = it->vlen = -1;
    it->kmv = it->vmv = it->result = NULL;
    it->weakreflist = NULL;
    PyObject_GC_Track(it);
    if (bucket->p && !(it->bucket = PyBytes_FromStringAndSize(bucket->p, bucket->n)))
        goto fail;
    if (!(it->kbuf = buf_new(st, 64)) || !(it->vbuf = buf_new(st, 64)))
        goto fail;
    if (it->lo && it->hi &&
        iter_cmp_obj(PyBytes_AS_STRING(it->lo), (size_t)PyBytes_GET_SIZE(it->lo), it->hi) >= 0)
        it->state = IT_DONE; /* empty range; the cursor is still opened (seek, errors) */

    bs_txn *t = py_txn_enter(txn, 0);
    if (!t)
        goto fail;
    bs_bucket *b;
    int rc = py_txn_open_bucket(t, bucket, 0, &b);
    if (rc == BS_OK)
        PY_CALL(rc, t, bs_cursor_open(t, b, &it->cur));
    if (rc != BS_OK) {
        if (rc == BS_NOBUCKET)
            py_raise_nobucket(st, bucket->p, bucket->n);
        else
            py_raise(st, rc);
    }
    py_txn_leave(txn);
    if (rc != BS_OK)
        goto fail;
    Py_XDECREF(pfx);
    Py_XDECREF(pend);
    return (PyObject *)it;

fail:
    Py_XDECREF(lo);
    Py_XDECREF(hi);
    Py_XDECREF(pfx);
    Py_XDECREF(pend);
    Py_XDECREF(it);
    return NULL;
}

static void iter_close_cursor(IterObject *it)
{
    if (it->cur) {
        /* bs_cursor_close never touches the transaction (it may be gone already). */
        bs_cursor_close(it->cur);
        it->cur = NULL;
    }
}

static int iter_traverse(IterObject *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(it));
    Py_VISIT(it->txn);
    Py_VISIT(it->kmv);
    Py_VISIT(it->vmv);
    Py_VISIT(it->result);
    return 0;
}

static int iter_clear(IterObject *it)
{
    Py_CLEAR(it->kmv);
    Py_CLEAR(it->vmv);
    Py_CLEAR(it->result);
    return 0;
}

static void iter_dealloc(IterObject *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    PyObject_GC_UnTrack(it);
    if (it->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)it);
    iter_close_cursor(it);
    Py_CLEAR(it->kmv);
    Py_CLEAR(it->vmv);
    Py_CLEAR(it->result);
    Py_CLEAR(it->kbuf);
    Py_CLEAR(it->vbuf);
    Py_CLEAR(it->lo);
    Py_CLEAR(it->hi);
    Py_CLEAR(it->bucket);
    Py_CLEAR(it->txn);
    PyObject_GC_Del(it);
    Py_DECREF(tp);
}

static PyObject *iter_iter(PyObject *self) { return Py_NewRef(self); }

static PyMethodDef iter_methods[] = {
    {"seek", (PyCFunction)iter_seek, METH_O,
     "seek($self, key, /)\n--\n\nReposition at the first key >= key (reverse: the last key <= key)\n"
     "inside the range; the next step yields it. False when there is none."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef iter_getset[] = {
    {"key", (getter)iter_get_key, NULL, "The current key as bytes (None if none).", NULL},
    {"value", (getter)iter_get_value, NULL,
     "The current value as bytes (None if none, or values=False).", NULL},
    {"reverse", (getter)iter_get_reverse, NULL, "True when walking downwards.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef iter_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(IterObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot iter_slots[] = {
    {Py_tp_doc, "An iterator over a key range of one bucket (see Txn.iter).\n\n"
                "After a step raised an error from the database (BucketNotFoundError, "
                "DiskError, ...)\nthe iterator is finished, as a generator would be; "
                "seek() repositions it."},
    {Py_tp_dealloc, iter_dealloc},
    {Py_tp_traverse, iter_traverse},
    {Py_tp_clear, iter_clear},
    {Py_tp_iter, iter_iter},
    {Py_tp_iternext, iter_next},
    {Py_tp_methods, iter_methods},
    {Py_tp_getset, iter_getset},
    {Py_tp_members, iter_members},
    {0, NULL},
};

static PyType_Spec iter_spec = {
    .name = "btree_store.Iterator",
    .basicsize = sizeof(IterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | PY_TPFLAGS_NONEW,
    .slots = iter_slots,
};

int py_iter_init_type(PyObject *m, py_state *st)
{
    st->Buf_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &buf_spec, NULL);
    if (!st->Buf_type)
        return -1;
    py_no_new(st->Buf_type);
    st->Iter_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &iter_spec, NULL);
    if (!st->Iter_type)
        return -1;
    py_no_new(st->Iter_type);
    return py_add_type(m, "Iterator", st->Iter_type);
}
