"""test_side_file_hostile.py - the side file PATH-lock deleted or replaced under live handles.

A handle that has the database open keeps using the side file it mapped. When that file is
unlinked (or another file is renamed over it) a new opener used to find no side file in use,
build a fresh one and believe itself alone: two writers at once, each on its own write lock,
and the commit of one silently overwritten by the other (an acknowledged durable commit
lost, check() clean). A new opener now refuses (LockedError naming the side file) while any
handle that joined another side file of the same database is open; once they are closed the
database opens as before.

Layer: tests only; public Python API of btree_store (a child interpreter for the other
process).
"""
import os

import pytest

import btree_store
from btree_store import LockedError

from _util import run_child

CHILD = r'''
import sys, btree_store
try:
    db = btree_store.DB(sys.argv[1])
except btree_store.LockedError as e:
    print("locked:", e)
    sys.exit(0)
with db.begin(write=True, timeout=0) as txn:  # a second writer beside the parent's
    for i in range(300):
        txn.put(b"B%05d" % i, b"y" * 100)
db.close()
print("wrote")
'''


def _fill(db, tag, n=300):
    with db.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"%s%05d" % (tag, i), b"x" * 100)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_new_opener_refuses_while_handles_use_a_removed_side_file(tmp_path, how):
    path = str(tmp_path / "s.bs")
    lock = path + "-lock"
    a = btree_store.DB(path)
    try:
        _fill(a, b"k")
        if how == "deleted":
            os.unlink(lock)
        else:
            junk = str(tmp_path / "junk")
            with open(junk, "wb") as f:
                f.write(b"\0" * 16384)
            os.replace(junk, lock)
        # the live handle goes on writing: a write transaction is open while others try
        txn = a.begin(write=True)
        for i in range(300):
            txn.put(b"A%05d" % i, b"a" * 100)
        # another process: refused, not a second writer
        p = run_child(CHILD, path, check=True)
        assert p.stdout.startswith("locked:") and "-lock" in p.stdout, p.stdout
        # another handle in this process: refused too
        with pytest.raises(LockedError, match="-lock"):
            btree_store.DB(path)
        txn.commit()
        with a.begin() as r:
            assert sum(1 for k in r.keys() if k.startswith(b"A")) == 300
        a.check()
    finally:
        a.close()
    # alone now: a new side file, the acknowledged commit is there
    with btree_store.DB(path) as db:
        db.check()
        with db.begin() as r:
            keys = list(r.keys())
        assert sum(1 for k in keys if k.startswith(b"A")) == 300
        assert not any(k.startswith(b"B") for k in keys)
        p = run_child(CHILD, path, check=True)  # another process may join it now
        assert p.stdout.startswith("wrote"), p.stdout
        with db.begin() as r:
            assert sum(1 for k in r.keys() if k.startswith(b"B")) == 300


def test_two_openers_at_once_without_a_side_file_both_open(tmp_path):
    """No side file and several processes opening at the same moment: none is refused (the
    check looks only at handles that joined a side file, not at openers on their way)."""
    path = str(tmp_path / "race.bs")
    with btree_store.DB(path) as db:
        _fill(db, b"k", 10)
    code = r'''
import sys, btree_store
for i in range(200):
    with btree_store.DB(sys.argv[1]) as db:
        with db.begin() as txn:
            assert txn.get(b"k00001") is not None
print("ok")
'''
    import subprocess
    import sys
    from _util import child_env
    procs = [subprocess.Popen([sys.executable, "-c", code, path], env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err

