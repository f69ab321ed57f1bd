"""test_processes.py - processes: many processes on one file (a second writer process, readonly
openers while a writer is active, readers together, a second handle in one process), fork()
children that touch an inherited DB and open the file again, multiprocessing with the fork
start method, and a writer process killed mid-commit.

Documented behaviour pinned here (docs/ARCHITECTURE.md, "Many processes"): any number of
processes and handles may open a file; write transactions are serialised machine-wide (a
second writer waits for `timeout` and gets LockedError); an inherited handle refuses use in
a fork() child, and the child's close never releases the parent's locks.

Layer: tests only; public Python API of btree_store in this and child processes.
"""
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import btree_store
from btree_store import Error, LockedError

from _util import child_env, fork_run as _fork_child, run_child

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


HOLD_WRITE = r'''
import sys, btree_store
db = btree_store.DB(sys.argv[1])
txn = db.begin(write=True)
txn.put(b"k", b"held")
print("holding", flush=True)
sys.stdin.readline()
txn.commit()
db.close()
print("done", flush=True)
'''


TRY_WRITE = r'''
import sys, json, btree_store
db = btree_store.DB(sys.argv[1])
try:
    with db.begin(write=True, timeout=float(sys.argv[2])) as txn:
        txn.put(b"w", b"child")
except btree_store.LockedError as e:
    print(json.dumps({"exc": "LockedError", "msg": str(e)}))
else:
    print(json.dumps({"exc": None}))
db.close()
'''


def _try_write(path, timeout):
    p = run_child(TRY_WRITE, path, str(timeout), check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_second_writer_process_opens_and_writes(db, db_path):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"v")
    r = _try_open(db_path, readonly=False)  # opens, reads, checks beside our open handle
    assert r["exc"] is None and r["value"] == "v", r
    assert _try_write(db_path, 0)["exc"] is None
    with db.begin() as txn:  # we see the other process's commit
        assert txn.get(b"w") == b"child"
    # while we hold a write transaction, the other process's writer waits and times out
    w = db.begin(write=True)
    w.put(b"k", b"ours")
    r = _try_write(db_path, 0.2)
    assert r["exc"] == "LockedError", r
    w.commit()
    with db.begin(write=True) as txn:  # and our writer goes on after theirs
        txn.put(b"k", b"v2")
    r = _try_open(db_path, readonly=True)
    assert r["exc"] is None and r["value"] == "v2", r


def test_writer_process_blocks_our_writer_until_commit(db, db_path):
    p = subprocess.Popen([sys.executable, "-c", HOLD_WRITE, db_path], env=child_env(),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "holding", p.stderr.read()
        with pytest.raises(LockedError):
            db.begin(write=True, timeout=0)
        with db.begin() as txn:  # readers are never blocked
            assert txn.get(b"k") is None
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "done", p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(60)
        for f in (p.stdin, p.stdout, p.stderr):
            f.close()
    with db.begin(write=True, timeout=60) as txn:
        assert txn.get(b"k") == b"held"
        txn.put(b"k", b"after")


def test_readonly_process_while_writer_active(db, db_path):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"v")
    w = db.begin(write=True)  # an open write transaction does not block readers elsewhere
    w.put(b"k", b"uncommitted")
    r = _try_open(db_path, readonly=True)
    assert r["exc"] is None and r["value"] == "v", r
    w.abort()


def test_readonly_processes_share(db_path, open_db):
    db = open_db(db_path)
    with db.begin(write=True) as txn:
        txn.put(b"k", b"shared")
    db.close()
    ro = open_db(db_path, readonly=True)
    r = _try_open(db_path, readonly=True)
    assert r["exc"] is None and r["value"] == "shared", r
    r = _try_open(db_path, readonly=False)  # a writer opens beside readers too
    assert r["exc"] is None and r["value"] == "shared", r
    with ro.begin() as txn:
        assert txn.get(b"k") == b"shared"
    with pytest.raises(btree_store.ReadonlyError):
        ro.begin(write=True)


def test_second_handle_same_process(db, db_path):
    with db.begin(write=True) as txn:
        txn.put(b"a", b"0")
    other = btree_store.DB(db_path)
    ro = btree_store.DB(db_path, readonly=True)
    try:
        with other.begin(write=True) as txn:
            txn.put(b"a", b"1")
        with db.begin() as txn, ro.begin() as t2:
            assert txn.get(b"a") == b"1" and t2.get(b"a") == b"1"
        w = db.begin(write=True)  # one writer machine-wide, handles included
        errors = []

        def try_other():
            try:
                other.begin(write=True, timeout=0)
            except LockedError as e:
                errors.append(e)

        t = threading.Thread(target=try_other)
        t.start()
        t.join()
        assert len(errors) == 1
        with pytest.raises(Error, match="already has an open write transaction"):
            other.begin(write=True)  # this thread would wait for itself
        w.put(b"a", b"2")
        w.commit()
        with other.begin(write=True, timeout=60) as txn:
            assert txn.get(b"a") == b"2"
            txn.put(b"a", b"3")
        with db.begin() as txn:
            assert txn.get(b"a") == b"3"
        other.check()
    finally:
        other.close()
        ro.close()


FORKED_MSG = ("database handle was inherited across fork(); open the database again in the "
              "child process")


def test_fork_child_cannot_use_inherited_db(db, db_path):
    """Every use of an inherited handle, its transactions (a read one and a write one open
    across the fork) and iterators raises btree_store.Error itself (no subclass: nothing
    went wrong with the file or a lock) with the message naming fork() as the cause."""
    with db.begin(write=True) as txn:
        for i in range(100):
            txn.put(b"%d" % i, b"v")
    rtxn = db.begin()
    it = rtxn.iter()
    next(it)
    wtxn = db.begin(write=True)
    wtxn.put(b"parent", b"w")

    def child():
        results = []
        for name, call in [("begin", lambda: db.begin()),
                           ("begin_write", lambda: db.begin(write=True, timeout=0)),
                           ("get", lambda: rtxn.get(b"1")),
                           ("next", lambda: next(it)),
                           ("write_get", lambda: wtxn.get(b"parent")),
                           ("put", lambda: wtxn.put(b"child", b"c")),
                           ("commit", lambda: wtxn.commit()),
                           ("check", lambda: db.check()),
                           ("stat", lambda: db.stat())]:
            try:
                call()
                results.append("%s: no error" % name)
            except Exception as e:  # noqa: BLE001
                if type(e) is not Error:
                    results.append("%s: %s, not btree_store.Error: %s" % (name, type(e), e))
                elif str(e) != FORKED_MSG:
                    results.append("%s: message does not name fork(): %s" % (name, e))
        # releasing the inherited objects in the child must not disturb the parent
        for release in (wtxn.abort, rtxn.abort, db.close):
            try:
                release()
            except Error:
                pass
        return "\n".join(results)

    status, out = _fork_child(child)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, out)
    assert out == "", out
    wtxn.commit()  # the parent's write transaction survived the child's attempts
    # the parent keeps working, its reader included
    assert bytes(next(it)[0]) == b"1"
    rtxn.abort()
    with db.begin(write=True) as txn:
        txn.put(b"after", b"fork")
    with db.begin() as txn:
        assert txn.get(b"after") == b"fork"
        assert txn.get(b"parent") == b"w" and txn.get(b"child") is None
        assert len(txn) == 102
    db.check()


def test_fork_child_opens_again_and_keeps_parent_locks(db, db_path):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"parent")
    w = db.begin(write=True)  # held across fork(): the child must not release it
    w.put(b"k", b"uncommitted")

    def child():
        try:
            db.close()  # the inherited handle: closes the descriptors only
        except Error:
            pass
        with btree_store.DB(db_path) as d:
            with d.begin() as txn:
                got = txn.get(b"k")
            try:
                d.begin(write=True, timeout=0)
                locked = "no"
            except LockedError:
                locked = "yes"
            d.check()
        return "%s %s" % (got.decode(), locked)

    status, out = _fork_child(child)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, out)
    assert out == "parent yes"
    w.commit()

    def child2():
        with btree_store.DB(db_path) as d:
            with d.begin(write=True, timeout=60) as txn:
                txn.put(b"c", txn.get(b"k"))
        return "ok"

    status, out = _fork_child(child2)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, out)
    assert out == "ok"
    with db.begin() as txn:
        assert txn.get(b"c") == b"uncommitted"


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
def test_writer_killed_mid_commit_releases_locks(tmp_path, seed):
    path = str(tmp_path / "k.bs")
    p = subprocess.Popen([sys.executable, "-c", KILL_WRITER, path], env=child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(random.Random(seed).uniform(0.1, 0.8))
        assert p.poll() is None, p.stderr.read()
        r = _try_open(path, readonly=False)  # opens, reads and checks beside the writer
        assert r["exc"] is None, r
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
