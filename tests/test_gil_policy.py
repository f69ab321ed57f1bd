"""test_gil_policy.py - the binding's GIL policy (py_internal.h): one thread alone keeps the
GIL through engine calls that need no disk; while another thread uses btree_store too, data
calls (get, get_many, put, delete, seeks) let the GIL go, so that the other thread runs Python
code during them; once the other thread stops, the GIL is kept again.

Shown with the test probe of _core (py_testing.c): armed, the next call released because of
sharing stops inside the released region until another thread lets it go, which that thread
can only do (it needs the GIL to run the Python code that calls _gil_probe_release) if the
call really released the GIL. No timing is asserted: the sleeps below only make sure that the
policy's window (a fixed span of monotonic time) has passed.

Layer: tests only; public Python API of btree_store and the test-only functions of _core.
"""
import threading
import time

import pytest

from btree_store import _core
from _util import run_child


def _fill(db, n=2000):
    with db.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"k%06d" % i, b"v%06d" % i * 4)
    with db.begin() as txn:  # every page verified: no get below needs the disk
        assert sum(1 for _ in txn.items()) == n


def _go_single(txn):
    """Calls from this thread alone until the policy stops sharing (two windows without a
    switch of threads, each ended by `check` calls in a row)."""
    pol = _core._gil_policy()
    txn.get(b"k000000")  # this thread is the last caller (a switch if it was not)
    for _ in range(3):
        if not _core._gil_policy()["share"]:
            return
        time.sleep(pol["window_ns"] / 1e9 * 1.25)
        for _ in range(pol["check"]):
            txn.get(b"k000000")
    assert not _core._gil_policy()["share"], "sharing went on without another thread"


def _use_from_other_thread(txn):
    errors = []

    def run():
        try:
            assert txn.get(b"k000001") == b"v000001" * 4
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert not errors, errors


def _probed(call):
    """Run call() on this thread with the probe armed, while a watcher thread waits for the
    probe and lets the held call go. Returns (call's result, what the watcher saw)."""
    seen = {}

    def watcher():
        seen["fired"] = _core._gil_probe_wait()
        seen["ran_python"] = True  # this thread holds the GIL here
        _core._gil_probe_release()

    _core._gil_probe(True)
    w = threading.Thread(target=watcher)
    try:
        w.start()
        res = call()
    finally:
        _core._gil_probe(False)  # wakes the watcher if the call never released the GIL
        w.join()
    return res, seen


CALLS = {
    "get": lambda t, w: t.get(b"k000007"),
    "contains": lambda t, w: b"k000007" in t,
    "get_many": lambda t, w: t.get_many([b"k%06d" % i for i in range(500)])[7],
    "iter_seek": lambda t, w: next(iter(t.iter(start=b"k000007")))[1].tobytes(),
    "put": lambda t, w: w.put(b"new", b"x"),
}


@pytest.mark.parametrize("what", sorted(CALLS))
def test_gil_released_while_threads_share(db, what):
    _fill(db)
    call = CALLS[what]
    with db.begin() as txn, db.begin() as other:
        wtxn = db.begin(write=True) if what == "put" else None
        try:
            # one thread: every call keeps the GIL (the probe never fires)
            _go_single(txn)
            _core._gil_probe(True)
            try:
                for _ in range(3):
                    call(txn, wtxn)
                assert _core._gil_policy()["probe"] == "armed"
            finally:
                _core._gil_probe(False)
            assert not _core._gil_policy()["share"]

            # another thread makes a call: from the next call on, the GIL is let go, and the
            # watcher runs Python code while this thread is inside the engine call
            _use_from_other_thread(other)
            assert _core._gil_policy()["share"]
            res, seen = _probed(lambda: call(txn, wtxn))
            assert seen == {"fired": True, "ran_python": True}
            if what != "put":
                assert res in (True, b"v000007" * 4)
            else:
                assert res is True and wtxn.get(b"new") == b"x"

            # the other thread is gone: after the window the GIL is kept again
            _go_single(txn)
            _core._gil_probe(True)
            try:
                call(txn, wtxn)
                assert _core._gil_policy()["probe"] == "armed"
            finally:
                _core._gil_probe(False)
        finally:
            if wtxn is not None:
                wtxn.abort()


def test_cursor_steps_keep_the_gil(db):
    """Iterating is cheaper per step than a GIL hand-over: steps keep the GIL even while
    threads share (only the seek that starts an iterator lets it go)."""
    _fill(db)
    with db.begin() as txn, db.begin() as other:
        it = iter(txn.keys())
        assert next(it) == b"k000000"
        _use_from_other_thread(other)
        assert _core._gil_policy()["share"]
        _core._gil_probe(True)
        try:
            assert [next(it) for _ in range(100)][-1] == b"k000100"
            assert _core._gil_policy()["probe"] == "armed"
        finally:
            _core._gil_probe(False)


ALONE_SCRIPT = r"""
import sys, threading
import btree_store
from btree_store import _core

def tries():
    return _core._gil_policy()["noio_tries"]

db = btree_store.DB(sys.argv[1])
with db.begin(write=True) as w:
    for i in range(3000):
        w.put(b"k%06d" % i, b"v" * 50)
db.close()
db = btree_store.DB(sys.argv[1])  # every page unverified again
out = []
assert _core._gil_policy()["alone"]
before = tries()
with db.begin() as txn:
    for i in range(0, 3000, 7):
        assert txn.get(b"k%06d" % i) == b"v" * 50
with db.begin(write=True) as w:
    w.put(b"new", b"x")
    w.delete(b"k000001")
out.append(tries() - before)           # alone: no call was tried in no-I/O mode

stop = threading.Event()
t = threading.Thread(target=stop.wait)
t.start()
out.append(_core._gil_policy()["alone"])
before = tries()
with db.begin() as txn:
    for i in range(1, 3000, 7):
        assert txn.get(b"k%06d" % i) in (b"v" * 50, None)
out.append(tries() - before)           # another thread exists: each get tried without I/O
stop.set()
t.join()
out.append(_core._gil_policy()["alone"])
print(out)
"""


def test_one_thread_alone_skips_the_no_io_attempt(tmp_path):
    """With no other thread in the process, nobody could use a GIL released for a disk wait,
    so data calls run with I/O allowed at once: no no-I/O attempt (and no residency probe
    before a mapped page's first touch). A second Python thread, even one that never touches
    btree_store, brings the no-I/O attempt back for every call; when it ends, it goes again.
    In a fresh interpreter: pytest's own process may hold threads of other tests."""
    r = run_child(ALONE_SCRIPT, tmp_path / "a.db")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[0,", "False,", "%d," % len(range(1, 3000, 7)), "True]"]
