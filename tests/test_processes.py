"""test_processes.py - processes: the file lock (a second writer process, readonly
openers while a writer is active, readers together), fork() children that touch an inherited
DB, multiprocessing with the fork start method, and a writer process killed mid-commit.

Documented behaviour pinned here: a writer holds an exclusive lock for as long as its DB is
open, so a readonly open from another process (or another handle) gets LockedError at once
(clean refusal), and readonly handles share the lock among themselves.

Layer: tests only; public Python API of btree_store in this and child processes.
"""
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import btree_store
from btree_store import Error, LockedError

from _util import child_env, run_child

TRY_OPEN = r'''
import sys, time, json, btree_store
path, ro = sys.argv[1], sys.argv[2] == "1"
t0 = time.monotonic()
try:
    db = btree_store.DB(path, readonly=ro)
except Exception as e:
    print(json.dumps({"exc": type(e).__name__, "msg": str(e), "t": time.monotonic() - t0}))
else:
    with db.begin() as txn:
        v = txn.get(b"k")
    db.check()
    db.close()
    print(json.dumps({"exc": None, "value": v.decode() if v is not None else None,
                      "t": time.monotonic() - t0}))
'''


def _try_open(path, readonly):
    p = run_child(TRY_OPEN, path, "1" if readonly else "0", check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_second_writer_process_locked(db, db_path):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"v")
    r = _try_open(db_path, readonly=False)
    assert r["exc"] == "LockedError", r
    assert r["t"] < 5, "the lock must be refused at once, not waited for"
    # the writer is unaffected
    with db.begin(write=True) as txn:
        txn.put(b"k", b"v2")
    db.close()
    r = _try_open(db_path, readonly=False)  # lock released by close
    assert r["exc"] is None and r["value"] == "v2", r


def test_readonly_process_while_writer_active(db, db_path):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"v")
    r = _try_open(db_path, readonly=True)
    assert r["exc"] == "LockedError", r
    assert r["t"] < 5


def test_readonly_processes_share(db_path, open_db):
    db = open_db(db_path)
    with db.begin(write=True) as txn:
        txn.put(b"k", b"shared")
    db.close()
    ro = open_db(db_path, readonly=True)
    r = _try_open(db_path, readonly=True)
    assert r["exc"] is None and r["value"] == "shared", r
    r = _try_open(db_path, readonly=False)  # a writer is refused while readers hold it
    assert r["exc"] == "LockedError", r
    with ro.begin() as txn:
        assert txn.get(b"k") == b"shared"


def test_second_handle_same_process_locked(db, db_path):
    with pytest.raises(LockedError):
        btree_store.DB(db_path)
    with pytest.raises(LockedError):
        btree_store.DB(db_path, readonly=True)
    with db.begin(write=True) as txn:  # the first handle still works
        txn.put(b"a", b"1")


def _fork_child(fn):
    """Run fn() in a forked child; return (exit status, text written by the child)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            out = fn()
        except BaseException as e:  # noqa: BLE001
            out = "child raised %r" % (e,)
            code = 3
        try:
            os.write(w, (out or "").encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return status, b"".join(chunks).decode()


def test_fork_child_cannot_use_inherited_db(db, db_path):
    with db.begin(write=True) as txn:
        for i in range(100):
            txn.put(b"%d" % i, b"v")
    rtxn = db.begin()
    it = rtxn.iter()
    next(it)

    def child():
        results = []
        for name, call in [("begin", lambda: db.begin()),
                           ("begin_write", lambda: db.begin(write=True)),
                           ("get", lambda: rtxn.get(b"1")),
                           ("next", lambda: next(it)),
                           ("check", lambda: db.check()),
                           ("stat", lambda: db.stat())]:
            try:
                call()
                results.append("%s: no error" % name)
            except Error as e:
                if "open" not in str(e).lower():
                    results.append("%s: message does not say to open again: %s" % (name, e))
            except Exception as e:  # noqa: BLE001
                results.append("%s: wrong exception %r" % (name, e))
        # releasing the inherited objects in the child must not disturb the parent
        try:
            rtxn.abort()
        except Error:
            pass
        try:
            db.close()
        except Error:
            pass
        return "\n".join(results)

    status, out = _fork_child(child)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, out)
    assert out == "", out
    # the parent keeps working, its reader included
    assert bytes(next(it)[0]) == b"1"
    rtxn.abort()
    with db.begin(write=True) as txn:
        txn.put(b"after", b"fork")
    with db.begin() as txn:
        assert txn.get(b"after") == b"fork"
        assert len(txn) == 101
    db.check()
    # and still holds its lock: the child's close did not release it
    r = _try_open(db_path, readonly=False)
    assert r["exc"] == "LockedError", r


def test_fork_child_can_open_other_db(db, tmp_path):
    with db.begin(write=True) as txn:
        txn.put(b"parent", b"1")
    other = str(tmp_path / "child.bs")

    def child():
        with btree_store.DB(other) as d:
            with d.begin(write=True) as txn:
                txn.put(b"child", b"1")
            d.check()
        return "ok"

    status, out = _fork_child(child)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
    assert out == "ok"
    with btree_store.DB(other) as d:
        with d.begin() as txn:
            assert txn.get(b"child") == b"1"


def _mp_worker(args):
    path, n = args
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            for i in range(n):
                txn.put(b"%d" % i, b"%d" % (i * i))
        db.check()
        with db.begin() as txn:
            return len(txn)


def test_multiprocessing_fork_each_child_own_db(db, tmp_path):
    with db.begin(write=True) as txn:  # the parent has a DB open while forking
        txn.put(b"p", b"1")
    keep = db.begin()
    ctx = multiprocessing.get_context("fork")
    paths = [str(tmp_path / ("mp%d.bs" % i)) for i in range(4)]
    with ctx.Pool(2) as pool:
        counts = pool.map(_mp_worker, [(p, 100 * (i + 1)) for i, p in enumerate(paths)])
    assert counts == [100, 200, 300, 400]
    for i, p in enumerate(paths):
        with btree_store.DB(p) as d:
            with d.begin() as txn:
                assert len(txn) == 100 * (i + 1)
                assert txn.get(b"7") == b"49"
    assert keep.get(b"p") == b"1"
    keep.abort()
    with db.begin(write=True) as txn:
        txn.put(b"p", b"2")


KILL_WRITER = r'''
import sys, btree_store
db = btree_store.DB(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    with db.begin(write=True) as txn:
        n = int(txn.get(b"n") or b"0")
        for j in range(300):
            txn.put(b"%d-%d" % (i, j), b"x" * (100 + (j * 37) % 3000))
        n += 300
        if i >= 2:
            for j in range(300):
                txn.delete(b"%d-%d" % (i - 2, j))
            n -= 300
        txn.put(b"n", b"%d" % n)
    i += 1
'''


@pytest.mark.parametrize("seed", range(3))
def test_writer_killed_mid_commit_releases_lock(tmp_path, seed):
    path = str(tmp_path / "k.bs")
    p = subprocess.Popen([sys.executable, "-c", KILL_WRITER, path], env=child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(random.Random(seed).uniform(0.1, 0.8))
        assert p.poll() is None, p.stderr.read()
        r = _try_open(path, readonly=False)
        assert r["exc"] == "LockedError", r
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
    with btree_store.DB(path) as db:  # the OS released the lock with the process
        db.check()
        with db.begin() as txn:
            n = txn.get(b"n")
            assert len(txn) == (0 if n is None else int(n) + 1)
        with db.begin(write=True) as txn:
            txn.put(b"after", b"kill")
        db.check()
