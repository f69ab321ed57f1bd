/*
 * py_testing.c - test-only pieces of btree_store._core, re-exported by btree_store._testing:
 * the FaultIO type (a bs_fault controller wrapping the POSIX I/O layer, modelling one machine:
 * fail the n-th call or every call after n, tear a write, kill the process, simulate a power
 * loss) and the CRC32C functions. btree_store.testing.FaultyMachine is built on it. The GIL
 * probe (_gil_probe, _gil_probe_wait, _gil_probe_release, _gil_policy): shows that a call
 * made while threads share btree_store runs with the GIL released (py_internal.h).
 *
 * Layer: CPython binding; calls io.h (fault controller) and crc32c.h only.
 */
#include "py_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "crc32c.h"
#include "io.h"

typedef struct FaultIOObject {
    PyObject_HEAD
    bs_fault *fc;
    int in_use; /* how many open DBs use it */
} FaultIOObject;

struct bs_fault *py_faultio_acquire(py_state *st, PyObject *o)
{
    if (!PyObject_TypeCheck(o, st->FaultIO_type)) {
        PyErr_Format(PyExc_TypeError, "_io must be a btree_store._testing.FaultIO, not %.100s",
                     Py_TYPE(o)->tp_name);
        return NULL;
    }
    FaultIOObject *f = (FaultIOObject *)o;
    f->in_use++;
    return f->fc;
}

void py_faultio_release(PyObject *o)
{
    FaultIOObject *f = (FaultIOObject *)o;
    if (f->in_use > 0)
        f->in_use--;
}

/* "read" | "write" | "sync" | "truncate" | "any", or several joined by '|'. */
static int fio_kind(PyObject *o, unsigned *mask)
{
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "kind must be str, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s)
        return -1;
    static const struct { const char *name; unsigned bit; } kinds[] = {
        {"read", BS_FAULT_READ},         {"write", BS_FAULT_WRITE}, {"sync", BS_FAULT_SYNC},
        {"truncate", BS_FAULT_TRUNCATE}, {"any", BS_FAULT_ANY},
    };
    unsigned m = 0;
    const char *p = s, *end = s + n;
    while (p <= end) {
        const char *bar = memchr(p, '|', (size_t)(end - p));
        const char *e = bar ? bar : end;
        size_t len = (size_t)(e - p);
        while (len && p[0] == ' ') {
            p++;
            len--;
        }
        while (len && p[len - 1] == ' ')
            len--;
        size_t i;
        for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            if (strlen(kinds[i].name) == len && memcmp(kinds[i].name, p, len) == 0)
                break;
        if (i == sizeof kinds / sizeof kinds[0]) {
            PyErr_Format(PyExc_ValueError,
                         "bad kind %R: use read, write, sync, truncate or any, joined by '|'", o);
            return -1;
        }
        m |= kinds[i].bit;
        p = e + 1;
    }
    *mask = m;
    return 0;
}

static int fio_u64(PyObject *o, const char *what, uint64_t *out)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be int, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s must be in 0..2**64-1", what);
        }
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *fio_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    static const char *const names[] = {NULL};
    static const py_argspec spec = {"FaultIO", names, 0, 0};
    PyObject *none[1];
    if (py_parse_tuple(&spec, args, kwds, none) < 0)
        return NULL;
    FaultIOObject *self = (FaultIOObject *)tp->tp_alloc(tp, 0);
    if (!self)
        return NULL;
    self->fc = bs_fault_new(&bs_io_posix);
    if (!self->fc) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void fio_dealloc(FaultIOObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->fc)
        bs_fault_free(self->fc); /* no DB uses it: a DB holds a reference while open */
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *fio_fail_nth(FaultIOObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"kind", "n", "errno", "sticky", NULL};
    static const py_argspec spec = {"fail_nth", names, 4, 2};
    PyObject *a[4];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    unsigned mask;
    uint64_t n;
    int err = EIO;
    if (fio_kind(a[0], &mask) < 0 || fio_u64(a[1], "n", &n) < 0)
        return NULL;
    if (a[2]) {
        err = (int)PyLong_AsLong(a[2]);
        if (err == -1 && PyErr_Occurred())
            return NULL;
        if (err <= 0) {
            PyErr_SetString(PyExc_ValueError, "errno must be a positive errno value");
            return NULL;
        }
    }
    int sticky = py_arg_bool(a[3], 0);
    if (sticky < 0)
        return NULL;
    bs_fault_fail_nth(self->fc, mask, n, err, sticky);
    Py_RETURN_NONE;
}

static PyObject *fio_kill_nth(FaultIOObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"kind", "n", NULL};
    static const py_argspec spec = {"kill_nth", names, 2, 2};
    PyObject *a[2];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    unsigned mask;
    uint64_t n;
    if (fio_kind(a[0], &mask) < 0 || fio_u64(a[1], "n", &n) < 0)
        return NULL;
    bs_fault_kill_nth(self->fc, mask, n);
    Py_RETURN_NONE;
}

static PyObject *fio_tear_nth(FaultIOObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"n", "keep", NULL};
    static const py_argspec spec = {"tear_nth", names, 2, 2};
    PyObject *a[2];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    uint64_t n, keep;
    if (fio_u64(a[0], "n", &n) < 0 || fio_u64(a[1], "keep", &keep) < 0)
        return NULL;
    if (keep % 512 != 0 || keep > SIZE_MAX) {
        PyErr_SetString(PyExc_ValueError, "keep must be a multiple of 512");
        return NULL;
    }
    bs_fault_tear_nth(self->fc, n, (size_t)keep);
    Py_RETURN_NONE;
}

static PyObject *fio_powerloss(FaultIOObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    static const char *const names[] = {"seed", "on", NULL};
    static const py_argspec spec = {"powerloss", names, 2, 0};
    PyObject *a[2];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    uint64_t seed = 0;
    if (a[0] && fio_u64(a[0], "seed", &seed) < 0)
        return NULL;
    int on = py_arg_bool(a[1], 1);
    if (on < 0)
        return NULL;
    bs_fault_powerloss(self->fc, on, seed);
    Py_RETURN_NONE;
}

static int fio_errno(PyObject *o, int *err)
{
    if (!o)
        return 0;
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "errno must be int, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        v = -1;
    }
    if (v <= 0 || v > 4095) {
        PyErr_SetString(PyExc_ValueError, "errno must be a positive errno value");
        return -1;
    }
    *err = (int)v;
    return 0;
}

static PyObject *fio_fail_after(FaultIOObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"kind", "n", "errno", NULL};
    static const py_argspec spec = {"fail_after", names, 3, 2};
    PyObject *a[3];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    unsigned mask;
    uint64_t n;
    int err = EIO;
    if (fio_kind(a[0], &mask) < 0 || fio_u64(a[1], "n", &n) < 0 || fio_errno(a[2], &err) < 0)
        return NULL;
    bs_fault_fail_after(self->fc, mask, n, err);
    Py_RETURN_NONE;
}

static PyObject *fio_heal(FaultIOObject *self, PyObject *Py_UNUSED(ignored))
{
    bs_fault_heal(self->fc);
    Py_RETURN_NONE;
}

static PyObject *fio_crash(FaultIOObject *self, PyObject *Py_UNUSED(ignored))
{
    int n;
    bs_fault *fc = self->fc;
    Py_BEGIN_ALLOW_THREADS
    n = bs_fault_crash(fc);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(n > 0);
}

static PyObject *fio_power_loss(FaultIOObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"mode", "seed", NULL};
    static const py_argspec spec = {"power_loss", names, 2, 0};
    PyObject *a[2];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    int mode = BS_POWERLOSS_DROP;
    if (a[0]) {
        if (!PyUnicode_Check(a[0])) {
            PyErr_Format(PyExc_TypeError, "mode must be str, not %.100s", Py_TYPE(a[0])->tp_name);
            return NULL;
        }
        if (PyUnicode_CompareWithASCIIString(a[0], "drop") == 0)
            mode = BS_POWERLOSS_DROP;
        else if (PyUnicode_CompareWithASCIIString(a[0], "tear") == 0)
            mode = BS_POWERLOSS_TEAR;
        else if (PyUnicode_CompareWithASCIIString(a[0], "reorder") == 0)
            mode = BS_POWERLOSS_REORDER;
        else {
            PyErr_Format(PyExc_ValueError, "bad mode %R: use 'drop', 'tear' or 'reorder'", a[0]);
            return NULL;
        }
    }
    uint64_t seed = 0;
    if (a[1] && a[1] != Py_None && fio_u64(a[1], "seed", &seed) < 0)
        return NULL;
    int rc;
    bs_fault *fc = self->fc;
    Py_BEGIN_ALLOW_THREADS
    rc = bs_fault_power_loss(fc, mode, seed);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *fio_unsynced(FaultIOObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"path", NULL};
    static const py_argspec spec = {"unsynced", names, 1, 0};
    PyObject *a[1];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    if (!a[0] || a[0] == Py_None)
        return PyLong_FromUnsignedLongLong(bs_fault_unsynced(self->fc, NULL));
    PyObject *b = NULL;
    if (!PyUnicode_FSConverter(a[0], &b))
        return NULL;
    uint64_t n = bs_fault_unsynced(self->fc, PyBytes_AS_STRING(b));
    Py_DECREF(b);
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *fio_count(FaultIOObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"kind", NULL};
    static const py_argspec spec = {"count", names, 1, 0};
    PyObject *a[1];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    unsigned mask = BS_FAULT_ANY;
    if (a[0] && fio_kind(a[0], &mask) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(bs_fault_count(self->fc, mask));
}

static PyObject *fio_get_fired(FaultIOObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(bs_fault_fired(self->fc));
}

static PyObject *fio_get_in_use(FaultIOObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->in_use > 0);
}

static PyObject *fio_repr(FaultIOObject *self)
{
    return PyUnicode_FromFormat("<btree_store._testing.FaultIO calls=%llu fired=%s%s>",
                                (unsigned long long)bs_fault_count(self->fc, BS_FAULT_ANY),
                                bs_fault_fired(self->fc) ? "True" : "False",
                                self->in_use ? " in use" : "");
}


static PyMethodDef fio_methods[] = {
    {"fail_nth", FASTKW(fio_fail_nth),
     "fail_nth($self, /, kind, n, errno=5, sticky=False)\n--\n\nThe n-th call (1-based, counted "
     "from now over kind) fails with errno; sticky: every later one too. n=0: off."},
    {"kill_nth", FASTKW(fio_kill_nth),
     "kill_nth($self, /, kind, n)\n--\n\nThe n-th call (1-based, counted from now over kind) "
     "kills the process with SIGKILL before it does anything. n=0: off."},
    {"tear_nth", FASTKW(fio_tear_nth),
     "tear_nth($self, /, n, keep)\n--\n\nThe n-th write keeps only its first `keep` bytes (a multiple of "
     "512), then fails with EIO."},
    {"powerloss", FASTKW(fio_powerloss),
     "powerloss($self, /, seed=0, on=True)\n--\n\nFrom now, remember unsynced writes for power_loss()."},
    {"fail_after", FASTKW(fio_fail_after),
     "fail_after($self, /, kind, n, errno=5)\n--\n\nAfter n more successful calls of kind, every "
     "such call fails with errno until heal()."},
    {"heal", (PyCFunction)fio_heal, METH_NOARGS,
     "heal($self, /)\n--\n\nTurn fail_nth, fail_after, tear_nth and kill_nth off."},
    {"crash", (PyCFunction)fio_crash, METH_NOARGS,
     "crash($self, /)\n--\n\nThe process dies: every file open on this machine is dead (EIO); "
     "unsynced writes stay. False when no live file was open."},
    {"power_loss", FASTKW(fio_power_loss),
     "power_loss($self, /, mode='drop', seed=0)\n--\n\ncrash(), then lose ('drop'), tear "
     "('tear') or reorder ('reorder') every write not yet synced (see io_fault.c)."},
    {"unsynced", FASTKW(fio_unsynced),
     "unsynced($self, /, path=None)\n--\n\nRecords not yet durable (of path, or of all)."},
    {"count", FASTKW(fio_count), "count($self, /, kind='any')\n--\n\nCalls of that kind seen so far."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fio_getset[] = {
    {"fired", (getter)fio_get_fired, NULL, "True once an injected fault fired.", NULL},
    {"in_use", (getter)fio_get_in_use, NULL, "True while an open DB uses it.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot fio_slots[] = {
    {Py_tp_doc, "FaultIO()\n--\n\nFault-injecting wrapper of the POSIX I/O layer (tests only): "
                "pass as DB(path, _io=fio)."},
    {Py_tp_new, fio_new},
    {Py_tp_dealloc, fio_dealloc},
    {Py_tp_repr, fio_repr},
    {Py_tp_methods, fio_methods},
    {Py_tp_getset, fio_getset},
    {0, NULL},
};

static PyType_Spec fio_spec = {
    .name = "btree_store._testing.FaultIO",
    .basicsize = sizeof(FaultIOObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = fio_slots,
};

/* ---- CRC32C ---- */

static PyObject *py_crc32c(PyObject *m, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    (void)m;
    static const char *const names[] = {"data", "crc", NULL};
    static const py_argspec spec = {"crc32c", names, 2, 1};
    PyObject *a[2];
    if (py_parse_args(&spec, args, nargs, kwnames, a) < 0)
        return NULL;
    uint32_t crc = 0;
    if (a[1]) {
        if (!PyLong_Check(a[1])) {
            PyErr_Format(PyExc_TypeError, "crc must be int, not %.100s", Py_TYPE(a[1])->tp_name);
            return NULL;
        }
        unsigned long long v = PyLong_AsUnsignedLongLongMask(a[1]);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        crc = (uint32_t)v;
    }
    Py_buffer b;
    if (py_get_bytes(a[0], &b, "data") < 0)
        return NULL;
    if (b.len > 65536) {
        Py_BEGIN_ALLOW_THREADS
        crc = bs_crc32c(crc, b.buf, (size_t)b.len);
        Py_END_ALLOW_THREADS
    } else {
        crc = bs_crc32c(crc, b.buf, (size_t)b.len);
    }
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(crc);
}

static PyObject *py_crc32c_impl(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    return PyUnicode_FromString(bs_crc32c_impl());
}

/* _mark_crashed(db): the ClosedError of every later call on db (closed by the caller next)
 * says that its machine crashed, not just "database is closed" (testing.FaultyMachine). */
static PyObject *py_mark_crashed(PyObject *m, PyObject *db)
{
    py_state *st = (py_state *)PyModule_GetState(m);
    if (!PyObject_TypeCheck(db, st->DB_type)) {
        PyErr_Format(PyExc_TypeError, "db must be a btree_store.DB, not %.100s",
                     Py_TYPE(db)->tp_name);
        return NULL;
    }
    ((DBObject *)db)->closed_why =
        "database is closed: its FaultyMachine crashed or lost power (m.crash() / "
        "m.power_loss()); open it again with m.reopen()";
    Py_RETURN_NONE;
}

/* ---- the GIL probe ----
 * _gil_probe(True) arms it: the next engine call that PY_CALL runs with the GIL released
 * because threads share btree_store (not a retry after BS_WOULDBLOCK) marks it fired and
 * waits, still without the GIL, until _gil_probe_release() or _gil_probe(False) (or a minute
 * has passed: a broken build then fails instead of hanging). _gil_probe_wait() waits with
 * the GIL released until the probe fired or was disarmed, and says whether it fired. So a
 * test thread can only return from _gil_probe_wait and call _gil_probe_release while
 * another thread is inside an engine call if that call let the GIL go. */
_Atomic int py_gil_probe_armed;
static pthread_mutex_t probe_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t probe_cv = PTHREAD_COND_INITIALIZER;
static int probe_fired, probe_open; /* under probe_mu; open: a fired call may go on */

void py_gil_probe_wait(void)
{
    pthread_mutex_lock(&probe_mu);
    if (atomic_exchange(&py_gil_probe_armed, 0)) {
        probe_fired = 1;
        pthread_cond_broadcast(&probe_cv);
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 60;
        while (!probe_open && pthread_cond_timedwait(&probe_cv, &probe_mu, &dl) == 0)
            ;
    }
    pthread_mutex_unlock(&probe_mu);
}

static PyObject *py_gil_probe(PyObject *m, PyObject *arg)
{
    (void)m;
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    pthread_mutex_lock(&probe_mu);
    probe_fired = 0;
    probe_open = !on;
    atomic_store(&py_gil_probe_armed, on);
    pthread_cond_broadcast(&probe_cv);
    pthread_mutex_unlock(&probe_mu);
    Py_RETURN_NONE;
}

static PyObject *py_gil_probe_wait_py(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    int fired;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&probe_mu);
    while (!probe_fired && atomic_load(&py_gil_probe_armed))
        pthread_cond_wait(&probe_cv, &probe_mu);
    fired = probe_fired;
    pthread_mutex_unlock(&probe_mu);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(fired);
}

static PyObject *py_gil_probe_release(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    pthread_mutex_lock(&probe_mu);
    probe_open = 1;
    pthread_cond_broadcast(&probe_cv);
    pthread_mutex_unlock(&probe_mu);
    Py_RETURN_NONE;
}

static PyObject *py_gil_policy_py(PyObject *m, PyObject *Py_UNUSED(ignored))
{
    (void)m;
    pthread_mutex_lock(&probe_mu);
    const char *probe = probe_fired ? "fired" : atomic_load(&py_gil_probe_armed) ? "armed" : "off";
    pthread_mutex_unlock(&probe_mu);
    return Py_BuildValue("{s:O,s:K,s:I,s:s,s:O,s:k}", "share", py_gil.share ? Py_True : Py_False,
                         "window_ns", (unsigned long long)PY_GIL_WINDOW_NS, "check",
                         (unsigned)PY_GIL_CHECK, "probe", probe, "alone",
                         py_gil_alone() ? Py_True : Py_False, "noio_tries", py_gil.noio_tries);
}

static PyMethodDef testing_functions[] = {
    {"_gil_probe", (PyCFunction)py_gil_probe, METH_O,
     "_gil_probe($module, on, /)\n--\n\nArm (True) or disarm (False) the GIL probe."},
    {"_gil_probe_wait", (PyCFunction)py_gil_probe_wait_py, METH_NOARGS,
     "_gil_probe_wait($module, /)\n--\n\nWait until the probe fired (True) or was disarmed."},
    {"_gil_probe_release", (PyCFunction)py_gil_probe_release, METH_NOARGS,
     "_gil_probe_release($module, /)\n--\n\nLet the call held by the probe go on."},
    {"_gil_policy", (PyCFunction)py_gil_policy_py, METH_NOARGS,
     "_gil_policy($module, /)\n--\n\nThe GIL policy's state: share, window_ns, check, probe, alone, noio_tries."},
    {"_mark_crashed", (PyCFunction)py_mark_crashed, METH_O,
     "_mark_crashed($module, db, /)\n--\n\nLater ClosedErrors of db say its machine crashed."},
    {"_crc32c", FASTKW(py_crc32c),
     "_crc32c($module, /, data, crc=0)\n--\n\nCRC32C of data, continuing crc."},
    {"_crc32c_impl", (PyCFunction)py_crc32c_impl, METH_NOARGS,
     "_crc32c_impl($module, /)\n--\n\nThe implementation in use: 'sse4.2', 'armv8' or 'table'."},
    {NULL, NULL, 0, NULL},
};

int py_testing_init(PyObject *m, py_state *st)
{
    st->FaultIO_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &fio_spec, NULL);
    if (!st->FaultIO_type || py_keep_text_signature(st->FaultIO_type, &fio_spec) < 0)
        return -1;
    if (py_add_type(m, "_FaultIO", st->FaultIO_type) < 0)
        return -1;
    return PyModule_AddFunctions(m, testing_functions);
}
