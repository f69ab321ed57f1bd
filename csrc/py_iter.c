/*
 * py_iter.c - the Iterator type (range scans over one bucket) and the internal _Buffer type
 * whose memoryviews the iterator yields.
 *
 * Layer: CPython binding; calls the engine only through bs.h (cursor API).
 *
 * Two modes. A bytes iterator (iter(txn), txn.keys(), values(), items()) yields bytes
 * copies. A view iterator (txn.iter()) copies each item out of the page (before
 * bs_txn_leave) into byte buffers it owns and yields memoryviews over them; it reuses a
 * buffer, its memoryview and the (key, value) tuple only when nobody else holds them:
 *  - Each yielded object sits in a ring of two entries (two key views, two value views, two
 *    tuples). A step takes an entry that is exclusively the iterator's: the tuple has no
 *    other reference; the memoryview has no other reference, is not released and exports
 *    nothing, its managed buffer has no other view, and the _Buffer has no other export or
 *    reference than that view (baselines recorded when the view was made). Such an entry is
 *    refilled in place (data, length, hash reset): nobody can observe the change.
 *  - Two entries because the loop `for k, v in it:` still holds the previous step's views
 *    (k, v) while next() runs; they are free again one step later. A loop that drops its
 *    views therefore allocates nothing per step.
 *  - When no entry is free (a view or tuple escaped: kept.append(k), dict(it)), the step
 *    makes a fresh _Buffer and memoryview (or tuple) and drops the iterator's reference to
 *    the old one: a kept view keeps its bytes forever.
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

/* Resize the storage of a buffer nobody else can see to hold n bytes (grows geometrically,
 * shrinks a large buffer that is mostly unused). */
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
    {Py_tp_doc, "Internal: the byte buffer behind a memoryview an Iterator yields."},
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

/* ---- view rings ---- */

/* One entry: a _Buffer and (view mode) the memoryview over it, with the reference counts
 * that mean "only the iterator holds them", taken when the view was made. */
typedef struct vent {
    BufObject *buf;
    PyObject *mv;
    Py_ssize_t buf_ref, mbuf_ref;
} vent;

typedef struct vring {
    vent e[2];
    int cur; /* entry holding the loaded item, -1 when none */
} vring;

/* The view of entry e is the iterator's alone: nobody can see a change to it. */
static int vent_exclusive(const vent *e)
{
    PyObject *mv = e->mv;
    if (!mv || Py_REFCNT(mv) != 1)
        return 0;
    PyMemoryViewObject *m = (PyMemoryViewObject *)mv;
    if ((m->flags & _Py_MEMORYVIEW_RELEASED) || m->exports != 0 || !m->mbuf ||
        m->mbuf->exports != 1 || Py_REFCNT(m->mbuf) != e->mbuf_ref)
        return 0;
    if (e->buf->exports != 1 || Py_REFCNT(e->buf) != e->buf_ref)
        return 0;
    return m->view.obj == (PyObject *)e->buf && m->view.buf == (void *)e->buf->data;
}

/* Point the exclusive view of e at n bytes of its (possibly moved) buffer. */
static void vent_retarget(vent *e, Py_ssize_t n)
{
    PyMemoryViewObject *m = (PyMemoryViewObject *)e->mv;
    Py_buffer *mb = &m->mbuf->master;
    e->buf->len = n;
    mb->buf = e->buf->data;
    mb->len = n;
    m->view.buf = e->buf->data;
    m->view.len = n;
    if (m->view.shape)
        m->view.shape[0] = n;
    m->hash = -1; /* a read-only memoryview caches its hash */
}

static void vent_clear(vent *e)
{
    Py_CLEAR(e->mv);
    Py_CLEAR(e->buf);
}

static void vring_clear(vring *r)
{
    vent_clear(&r->e[0]);
    vent_clear(&r->e[1]);
    r->cur = -1;
}

/* Make an entry of r ready for n bytes; view: the entry must carry a memoryview to yield.
 * The entry used becomes e[0] (the newest; e[1] is the older one). *dst receives where to
 * write the n bytes. 0, or -1 with an exception set. */
static int vring_take(py_state *st, vring *r, Py_ssize_t n, int view, char **dst)
{
    vent *e = &r->e[0];
    r->cur = -1;
    if (!view) {
        /* only it.key reads this buffer: entry 0, never exported */
        if (!e->buf && !(e->buf = buf_new(st, n)))
            return -1;
        if (buf_reserve(e->buf, n) < 0)
            return -1;
        e->buf->len = n;
        r->cur = 0;
        *dst = e->buf->data;
        return 0;
    }
    /* the older entry first: the newest is usually still bound to the caller's loop variable */
    int j = vent_exclusive(&r->e[1]) ? 1 : vent_exclusive(&r->e[0]) ? 0 : -1;
    if (j == 1 || j < 0) {
        vent t = r->e[0];
        r->e[0] = r->e[1];
        r->e[1] = t;
    }
    if (j >= 0) {
        if (buf_reserve(e->buf, n) < 0)
            return -1;
        vent_retarget(e, n);
    } else {
        /* both escaped (or not made yet): a fresh buffer and view replace the older entry;
         * whoever holds the old view keeps it and its bytes */
        vent_clear(e);
        if (!(e->buf = buf_new(st, n)))
            return -1;
        e->buf->len = n;
        if (!(e->mv = PyMemoryView_FromObject((PyObject *)e->buf))) {
            Py_CLEAR(e->buf);
            return -1;
        }
        e->buf_ref = Py_REFCNT(e->buf);
        e->mbuf_ref = Py_REFCNT(((PyMemoryViewObject *)e->mv)->mbuf);
    }
    r->cur = 0;
    *dst = e->buf->data;
    return 0;
}

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
    int copy;             /* yield bytes, not memoryviews */
    int state;
    int busy;
    vring kr, vr;         /* view mode: key / value buffers and views */
    Py_ssize_t klen, vlen; /* view mode: the loaded item (-1: none) */
    PyObject *kobj, *vobj; /* bytes mode: the loaded item as bytes (NULL: none) */
    PyObject *tup[2];     /* (key, value) mode: tup[0] holds the loaded item */
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

/* Empty every tuple only we hold (so that its old items do not pin the views), and return
 * the index of one of them (the older first), or -1 when both escaped. Empty means None,
 * never NULL: an allocation below may run a finalizer that finds the tuple
 * (gc.get_objects()) and reads its items. */
static int iter_free_tuple(IterObject *it)
{
    int free_i = -1;
    for (int i = 1; i >= 0; i--) {
        PyObject *t = it->tup[i];
        if (t && Py_REFCNT(t) == 1) {
            PyObject **items = ((PyTupleObject *)t)->ob_item;
            Py_SETREF(items[0], Py_NewRef(Py_None));
            Py_SETREF(items[1], Py_NewRef(Py_None));
            if (free_i < 0)
                free_i = i;
        }
    }
    return free_i;
}

/* Put (k, v) (new references, stolen) into tup[0]: a free tuple, or a new one. */
static int iter_fill_tuple(IterObject *it, int free_i, PyObject *k, PyObject *v)
{
    PyObject *t;
    if (free_i >= 0) {
        t = it->tup[free_i];
        PyObject **items = ((PyTupleObject *)t)->ob_item;
        Py_SETREF(items[0], k);
        Py_SETREF(items[1], v);
        if (!PyObject_GC_IsTracked(t)) /* the GC may have untracked it */
            PyObject_GC_Track(t);
        if (free_i == 1) {
            it->tup[1] = it->tup[0];
            it->tup[0] = t;
        }
        return 0;
    }
    if (!(t = PyTuple_New(2))) {
        Py_DECREF(k);
        Py_DECREF(v);
        return -1;
    }
    PyTuple_SET_ITEM(t, 0, k);
    PyTuple_SET_ITEM(t, 1, v);
    /* the older tuple escaped: its holder keeps it */
    Py_XSETREF(it->tup[1], it->tup[0]);
    it->tup[0] = t;
    return 0;
}

/* Read an overflow value into dst with the GIL released. */
static int iter_read_ov(bs_txn *t, const bs_val *v, char *dst)
{
    int rc;
    if (PY_NOWAIT_REFUSE())
        return BS_WOULDBLOCK;
    bs_txn_set_noio(t, 0);
    Py_BEGIN_ALLOW_THREADS
    rc = bs_read_value(t, v, dst);
    Py_END_ALLOW_THREADS
    return rc;
}

/* Bytes mode: the item as bytes objects. */
static int iter_load_bytes(IterObject *it, bs_txn *t, const bs_val *k, const bs_val *v)
{
    Py_CLEAR(it->kobj);
    Py_CLEAR(it->vobj);
    if (!(it->kobj = PyBytes_FromStringAndSize(k->data, (Py_ssize_t)k->len)))
        return -1;
    if (!it->values)
        return BS_OK;
    if (v->data) {
        it->vobj = PyBytes_FromStringAndSize(v->data, (Py_ssize_t)v->len);
    } else if ((it->vobj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)v->len))) {
        int rc = iter_read_ov(t, v, PyBytes_AS_STRING(it->vobj));
        if (rc != BS_OK) {
            Py_CLEAR(it->vobj);
            return rc;
        }
    }
    return it->vobj ? BS_OK : -1;
}

/* View mode: copy the item into free buffers. */
static int iter_load_views(IterObject *it, bs_txn *t, const bs_val *k, const bs_val *v)
{
    char *dst;
    it->klen = it->vlen = -1;
    /* The key: always copied (it.key), viewed only when keys are yielded. */
    if (vring_take(it->st, &it->kr, (Py_ssize_t)k->len, it->keys, &dst) < 0)
        return -1;
    if (k->len)
        memcpy(dst, k->data, k->len);
    it->klen = (Py_ssize_t)k->len;
    if (!it->values)
        return BS_OK;
    if (vring_take(it->st, &it->vr, (Py_ssize_t)v->len, 1, &dst) < 0)
        return -1;
    if (v->data) {
        if (v->len)
            memcpy(dst, v->data, v->len);
    } else {
        int rc = iter_read_ov(t, v, dst);
        if (rc != BS_OK)
            return rc;
    }
    it->vlen = (Py_ssize_t)v->len;
    return BS_OK;
}

/* Load the current item (inside enter/leave). Returns BS_OK, an engine rc (exception not
 * set), or -1 (exception set). */
static int iter_load(IterObject *it, bs_txn *t, const bs_val *k, const bs_val *v)
{
    int pair = it->keys && it->values;
    int free_i = pair ? iter_free_tuple(it) : -1;
    int rc = it->copy ? iter_load_bytes(it, t, k, v) : iter_load_views(it, t, k, v);
    if (rc != BS_OK || !pair)
        return rc;
    PyObject *ko = it->copy ? it->kobj : it->kr.e[0].mv;
    PyObject *vo = it->copy ? it->vobj : it->vr.e[0].mv;
    return iter_fill_tuple(it, free_i, Py_NewRef(ko), Py_NewRef(vo)) < 0 ? -1 : BS_OK;
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
            PY_CALL_STEP(rc, t, bs_cursor_prev(cur));
        else
            PY_CALL_STEP(rc, t, bs_cursor_next(cur));
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
        PY_CALL_STEP(rc, t, bs_cursor_current(cur, &k, &v));
    if (rc == BS_OK && skip_hi && iter_cmp_obj(k.data, k.len, hi) >= 0) {
        PY_CALL_STEP(rc, t, bs_cursor_prev(cur));
        if (rc == BS_OK)
            PY_CALL_STEP(rc, t, bs_cursor_current(cur, &k, &v));
    }
    if (rc == BS_OK) {
        if (!it->reverse ? (hi && iter_cmp_obj(k.data, k.len, hi) >= 0)
                         : (lo && iter_cmp_obj(k.data, k.len, lo) < 0))
            rc = BS_NOTFOUND;
    }
    if (rc == BS_OK)
        rc = iter_load(it, t, &k, &v);
    if (rc == BS_OK || rc == BS_NOTFOUND) {
        /* the key and value were copied (and compared with the bounds) from pages that may
         * have turned to zeros meanwhile (bs.h bs_txn_copied) */
        int mrc = bs_txn_copied(t);
        if (mrc != BS_OK)
            rc = mrc;
    }
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
        return Py_NewRef(it->tup[0]);
    if (it->copy)
        return Py_NewRef(it->keys ? it->kobj : it->vobj);
    return Py_NewRef(it->keys ? it->kr.e[0].mv : it->vr.e[0].mv);
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

static PyObject *iter_seek(IterObject *it, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"key", NULL};
    static const py_argspec spec = {"seek", names, 1, 1};
    PyObject *a[1];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    Py_buffer k;
    if (py_get_bytes(a[0], &k, "key") < 0)
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
    if (it->state != IT_PENDING && it->state != IT_YIELDED)
        Py_RETURN_NONE;
    if (it->copy)
        return Py_NewRef(it->kobj ? it->kobj : Py_None);
    if (it->klen < 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(it->kr.e[0].buf->data, it->klen);
}

static PyObject *iter_get_value(IterObject *it, void *c)
{
    (void)c;
    if (iter_alive(it) < 0)
        return NULL;
    if (it->state != IT_PENDING && it->state != IT_YIELDED)
        Py_RETURN_NONE;
    if (it->copy)
        return Py_NewRef(it->vobj ? it->vobj : Py_None);
    if (it->vlen < 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(it->vr.e[0].buf->data, it->vlen);
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
                      PyObject *prefix, int reverse, int keys, int values, int copy)
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
    it->copy = copy;
    it->state = IT_INIT;
    it->busy = 0;
    memset(&it->kr, 0, sizeof it->kr);
    memset(&it->vr, 0, sizeof it->vr);
    it->kr.cur = it->vr.cur = -1;
    it->klen = it->vlen = -1;
    it->kobj = it->vobj = NULL;
    it->tup[0] = it->tup[1] = NULL;
    it->weakreflist = NULL;
    PyObject_GC_Track(it);
    if (bucket->p && !(it->bucket = PyBytes_FromStringAndSize(bucket->p, bucket->n)))
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
        PY_CALL_STEP(rc, t, bs_cursor_open(t, b, &it->cur));
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
    Py_VISIT(it->kr.e[0].mv);
    Py_VISIT(it->kr.e[1].mv);
    Py_VISIT(it->vr.e[0].mv);
    Py_VISIT(it->vr.e[1].mv);
    Py_VISIT(it->tup[0]);
    Py_VISIT(it->tup[1]);
    Py_VISIT(it->kobj);
    Py_VISIT(it->vobj);
    return 0;
}

/* Drop what the iterator yields (a cycle through a kept tuple or view is broken here). The
 * loaded item is gone afterwards: it.key / it.value then read None. */
static int iter_clear(IterObject *it)
{
    Py_CLEAR(it->tup[0]);
    Py_CLEAR(it->tup[1]);
    vring_clear(&it->kr);
    vring_clear(&it->vr);
    it->klen = it->vlen = -1;
    Py_CLEAR(it->kobj);
    Py_CLEAR(it->vobj);
    if (it->state == IT_PENDING || it->state == IT_YIELDED)
        it->state = IT_DONE;
    return 0;
}

static void iter_dealloc(IterObject *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    PyObject_GC_UnTrack(it);
    if (it->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)it);
    iter_close_cursor(it);
    iter_clear(it);
    Py_CLEAR(it->lo);
    Py_CLEAR(it->hi);
    Py_CLEAR(it->bucket);
    Py_CLEAR(it->txn);
    PyObject_GC_Del(it);
    Py_DECREF(tp);
}

static PyObject *iter_iter(PyObject *self) { return Py_NewRef(self); }

static PyMethodDef iter_methods[] = {
    {"seek", FASTKW(iter_seek),
     "seek($self, /, key)\n--\n\n"
     "Reposition at the first key >= key (reverse: the last key <= key) inside the\n"
     "iterator's range; the next step yields it. Returns True when there is such a key,\n"
     "False when there is none (the iterator is then exhausted). Works on an exhausted\n"
     "iterator too. Raises TypeError (key not bytes-like), ClosedError (the transaction\n"
     "ended), BucketNotFoundError, DiskError."},
    /* Iterator[T] in annotations evaluated at run time, as the stub (_core.pyi) declares */
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     "__class_getitem__($cls, item, /)\n--\n\n"
     "Iterator[T]: a generic alias, for type annotations (T: what the iterator yields)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef iter_getset[] = {
    {"key", (getter)iter_get_key, NULL,
     "The loaded key as bytes (None before the first step and once exhausted).", NULL},
    {"value", (getter)iter_get_value, NULL,
     "The loaded value as bytes (None if none, or with values=False).", NULL},
    {"reverse", (getter)iter_get_reverse, NULL, "True when walking downwards.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef iter_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(IterObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot iter_slots[] = {
    {Py_tp_doc, "An iterator over a key range of one bucket, made by Txn.iter(), keys(),\n"
                "values(), items() or iter(txn) (never directly). next() yields the next\n"
                "item (see Txn.iter for what an item is); it raises ClosedError once the\n"
                "transaction ended.\n\n"
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
