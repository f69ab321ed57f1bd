/*
 * py_nowait.c - the "no-wait" mode of the binding, for event-loop callers (btree_store.aio):
 * _core._try_nowait(blocked, fn, *args, **kwargs) calls fn on the calling thread with every
 * engine call in no-I/O mode and WITHOUT the fallback that PY_CALL normally takes (repeating
 * the call with the GIL released and the disk allowed). A call that would have to wait for
 * the disk (a cache miss the OS does not hold, an overflow value, a spill, a free-page walk)
 * gives up instead and _try_nowait returns `blocked`; otherwise it returns fn's result (or
 * raises what fn raised). The engine guarantees that a call answering BS_WOULDBLOCK changed
 * nothing, so the caller can repeat the same operation on a worker thread.
 *
 * Layer: CPython binding; calls the engine only through bs.h (indirectly, through fn).
 *
 * The mode is a thread-local flag (py_nowait), so other threads (the workers that do the
 * waiting) are never affected; py_blocked records that a call gave up. Not every binding
 * call is restartable after giving up: a call made of several engine calls may have done
 * the first ones (an iterator step that moved the cursor but could not read an overflow
 * value is finished, like after any error). btree_store.aio only retries calls that are
 * safe to repeat and resumes iterators from the last key they yielded.
 */
#include "py_internal.h"

_Thread_local int py_nowait;
int py_nowait_active;
_Thread_local int py_blocked;

static PyObject *nowait_try(PyObject *m, PyObject *const *args, Py_ssize_t nargsf,
                            PyObject *kwnames)
{
    (void)m;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "_try_nowait(blocked, fn, /, *args, **kwargs) needs "
                                         "a sentinel and a callable");
        return NULL;
    }
    PyObject *blocked = args[0], *fn = args[1];
    int saved_nowait = py_nowait, saved_blocked = py_blocked;
    py_nowait = 1;
    py_blocked = 0;
    py_nowait_active++;
    PyObject *res = PyObject_Vectorcall(fn, args + 2, (size_t)(nargs - 2), kwnames);
    py_nowait_active--;
    int gave_up = py_blocked;
    py_nowait = saved_nowait;
    py_blocked = saved_blocked;
    if (gave_up) {
        /* The error (or a result built around a refused call) is not the answer: the caller
         * repeats the operation where it may wait. */
        if (res)
            Py_DECREF(res);
        else
            PyErr_Clear();
        return Py_NewRef(blocked);
    }
    return res;
}

static PyMethodDef nowait_functions[] = {
    {"_try_nowait", FASTKW(nowait_try),
     "_try_nowait($module, blocked, fn, /, *args, **kwargs)\n--\n\n"
     "Call fn(*args, **kwargs) allowing no engine call to wait for the disk; return blocked\n"
     "when one would have had to (nothing was changed by that call). Internal: used by\n"
     "btree_store.aio to run cache hits on the event loop."},
    {NULL, NULL, 0, NULL},
};

int py_nowait_init(PyObject *m) { return PyModule_AddFunctions(m, nowait_functions); }
