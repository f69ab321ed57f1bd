"""test_dbm.py - the dbm/shelve face (btree_store.dbm): mapping behaviour, flags, durability at
sync/close, read-only mode, buckets, and shelve on top of it.

Layer: tests only; public Python API (btree_store.dbm, btree_store.DB).
"""
import os
import shelve
import signal
import subprocess
import sys

import pytest

import btree_store
import btree_store.dbm as bdbm
from _util import child_env


def test_mapping_roundtrip(tmp_path):
    path = str(tmp_path / "d.bs")
    with bdbm.open(path, "c") as d:
        d["a"] = "1"
        d[b"b"] = b"\x00\xff"
        d[bytearray(b"c")] = memoryview(b"3")
        assert d[b"a"] == b"1" and d["b"] == b"\x00\xff" and d.get("c") == b"3"
        assert "a" in d and b"zz" not in d and 5 not in d
        assert len(d) == 3
        assert sorted(d.keys()) == [b"a", b"b", b"c"]
        assert sorted(d) == [b"a", b"b", b"c"]
        del d["c"]
        with pytest.raises(KeyError):
            del d["c"]
        with pytest.raises(KeyError):
            d["missing"]
        assert d.get("missing", b"dflt") == b"dflt"
        assert d.setdefault("s", "v") == b"v" and d.setdefault("s", "w") == b"v"
        with pytest.raises(TypeError):
            d[1] = b"x"
        with pytest.raises(TypeError):
            d[b"x"] = 1
    with bdbm.open(path, "r") as d:
        assert dict((k, d[k]) for k in d) == {b"a": b"1", b"b": b"\x00\xff", b"s": b"v"}
        with pytest.raises(btree_store.Error):
            d["new"] = "x"
    with btree_store.DB(path) as db:
        db.check()
        with db.begin() as txn:
            assert txn.get(b"a") == b"1"


def test_flags(tmp_path):
    path = str(tmp_path / "f.bs")
    with pytest.raises(FileNotFoundError):
        bdbm.open(path, "w")
    with pytest.raises(ValueError):
        bdbm.open(path, "x")
    with bdbm.open(path, "c") as d:
        d["k"] = "v"
    with bdbm.open(path, "w") as d:
        assert d["k"] == b"v"
    with bdbm.open(path, "n") as d:  # always a new, empty database
        assert len(d) == 0
    assert isinstance(btree_store.LockedError("x"), bdbm.error)


def test_sync_makes_writes_durable(tmp_path):
    """A process killed after sync() keeps what it synced and loses what it did not."""
    path = str(tmp_path / "s.bs")
    code = (
        "import sys, time, btree_store.dbm as m\n"
        "d = m.open(sys.argv[1])\n"
        "d['x'] = '1'\n"
        "d.sync()\n"
        "d['y'] = '2'\n"
        "assert d['y'] == b'2'\n"
        "print('synced', flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                         env=child_env())
    try:
        assert p.stdout.readline().strip() == b"synced"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with bdbm.open(path, "r") as d:
        assert d["x"] == b"1" and "y" not in d
    d = bdbm.open(path)
    d["z"] = "3"
    d.close()
    d.close()  # idempotent
    with pytest.raises(btree_store.Error):
        d["w"] = "4"
    with bdbm.open(path, "r") as d2:
        assert d2["z"] == b"3"


def test_bucket_and_shelve(tmp_path):
    path = str(tmp_path / "sh.bs")
    with bdbm.open_shelf(path) as s:
        s["config"] = {"retries": 3, "hosts": ["a", "b"]}
        s["n"] = 42
    with bdbm.open_shelf(path, "r") as s:
        assert s["config"] == {"retries": 3, "hosts": ["a", "b"]} and s["n"] == 42
        assert isinstance(s, shelve.Shelf)
    with bdbm.open(path, "w", bucket="side") as d:
        d["only"] = "here"
    with btree_store.DB(path) as db:
        db.check()
        assert db.buckets() == ["side"]
        assert db.view("side", lambda t: t.get(b"only")) == b"here"
        with db.begin() as txn:
            assert txn.get(b"only") is None


def test_mode_applied_to_new_file(tmp_path):
    path = str(tmp_path / "m.bs")
    with bdbm.open(path, "c", 0o600) as d:
        d["k"] = "v"
    assert os.stat(path).st_mode & 0o777 == 0o600 & ~_umask()


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old
