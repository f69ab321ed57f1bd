"""test_dbm.py - the dbm/shelve face (btree_store.dbm): mapping behaviour, flags ('n' never
destroys a database another handle has open), one transaction per write and batch(), fsync at
sync/close, read-only mode, buckets, shelve on top of it, register() with the standard dbm and
shelve modules, and the behaviours the standard library's own backend-generic dbm and shelve
tests expect of a backend (with those very tests run against it when the interpreter ships them).

Layer: tests only; public Python API (btree_store.dbm, btree_store.DB), the stdlib dbm/shelve.
"""
import dbm
import io
import os
import pickle
import shelve
import signal
import subprocess
import sys
import unittest

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
        with pytest.raises(bdbm.error):
            d["new"] = "x"
        with pytest.raises(bdbm.error):
            del d["a"]
        with pytest.raises(bdbm.error):
            d.setdefault("zz", "1")
        assert d.setdefault("a") == b"1"  # an existing key needs no write
    with btree_store.DB(path) as db:
        db.check()
        with db.begin() as txn:
            assert txn.get(b"a") == b"1"


def test_flags(tmp_path):
    path = str(tmp_path / "f.bs")
    with pytest.raises(FileNotFoundError):
        bdbm.open(path, "w")
    with pytest.raises(FileNotFoundError):
        bdbm.open(path, "r")
    with pytest.raises(ValueError):
        bdbm.open(path, "x")
    assert not os.path.exists(path)
    with bdbm.open(path, "c") as d:
        d["k"] = "v"
    with bdbm.open(path, "w") as d:
        assert d["k"] == b"v"
    with bdbm.open(path, "n") as d:  # always a new, empty database
        assert len(d) == 0
    junk = tmp_path / "junk.bs"
    junk.write_bytes(b"not a database" * 1000)
    with pytest.raises(bdbm.error):
        bdbm.open(str(junk), "c")
    with bdbm.open(str(junk), "n") as d:  # 'n' ignores what the file held
        assert len(d) == 0
        d["a"] = "b"
    with bdbm.open(str(junk), "r") as d:
        assert d["a"] == b"b"


def test_error_is_an_oserror_class(tmp_path):
    assert isinstance(bdbm.error, type) and issubclass(bdbm.error, OSError)
    path = str(tmp_path / "e.bs")
    junk = tmp_path / "junk.bs"
    junk.write_bytes(b"\x01" * 9000)
    with pytest.raises(bdbm.error) as ei:
        bdbm.open(str(junk), "w")  # not a database
    assert isinstance(ei.value.__cause__, btree_store.Error)
    d = bdbm.open(path)
    try:
        with bdbm.open(path, "w") as d2:  # a second handle opens beside d
            d2["k"] = "v"
        assert d["k"] == b"v"
    finally:
        d.close()
    with pytest.raises(bdbm.error):
        d["x"] = "y"  # closed
    with pytest.raises(bdbm.error):
        len(d)


def test_flag_n_does_not_destroy_an_open_database(tmp_path):
    path = str(tmp_path / "n.bs")
    d = bdbm.open(path, "c")
    d["keep"] = "me"
    with pytest.raises(bdbm.error):
        bdbm.open(path, "n")  # this process has it open
    d["more"] = "data"  # the open handle goes on working, in the same file
    d.close()
    # another process holds it open
    code = ("import sys, time, btree_store.dbm as m\n"
            "d = m.open(sys.argv[1], 'w')\n"
            "print('open', flush=True)\n"
            "sys.stdin.readline()\n"
            "d['child'] = 'wrote'\n"
            "d.close()\n")
    p = subprocess.Popen([sys.executable, "-c", code, path], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=child_env())
    try:
        assert p.stdout.readline().strip() == b"open"
        with pytest.raises(bdbm.error):
            bdbm.open(path, "n")
        assert os.path.getsize(path) > 0
    finally:
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    with bdbm.open(path, "r") as d:
        assert dict((k, d[k]) for k in d) == {b"keep": b"me", b"more": b"data",
                                             b"child": b"wrote"}
    with btree_store.DB(path) as db:
        db.check()


def _txid(d):
    return d._db.stat()["txid"]


def test_each_write_is_a_transaction_and_batch_groups(tmp_path):
    path = str(tmp_path / "t.bs")
    with bdbm.open(path) as d:
        t0 = _txid(d)
        d["a"] = "1"
        d["b"] = "2"
        del d["a"]
        assert _txid(d) == t0 + 3
        with d.batch():
            for i in range(100):
                d[b"k%d" % i] = b"v"
            assert len(d) == 101 and d[b"k5"] == b"v"  # reads see the batch
            with d.batch():  # nested: joins the outer one
                d["inner"] = "x"
            assert _txid(d) == t0 + 3
        assert _txid(d) == t0 + 4
        with pytest.raises(RuntimeError):
            with d.batch():
                d["gone"] = "1"
                del d["b"]
                raise RuntimeError("roll back")
        assert "gone" not in d and d["b"] == b"2" and _txid(d) == t0 + 4
        d.clear()  # one transaction
        assert len(d) == 0 and _txid(d) == t0 + 5
    with bdbm.open(path, "r") as d:
        with pytest.raises(bdbm.error):
            with d.batch():
                pass


def test_writes_survive_a_process_crash_and_a_batch_is_atomic(tmp_path):
    """SIGKILL without sync(): each finished write is there; an unfinished batch is not."""
    path = str(tmp_path / "s.bs")
    code = (
        "import sys, time, btree_store.dbm as m\n"
        "d = m.open(sys.argv[1])\n"
        "d['x'] = '1'\n"
        "d['y'] = '2'\n"
        "b = d.batch(); b.__enter__()\n"
        "d['z'] = '3'\n"
        "del d['x']\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                         env=child_env())
    try:
        assert p.stdout.readline().strip() == b"ready"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with bdbm.open(path, "r") as d:
        assert dict((k, d[k]) for k in d) == {b"x": b"1", b"y": b"2"}
    d = bdbm.open(path)
    d["z"] = "3"
    d.close()
    d.close()  # idempotent
    with pytest.raises(bdbm.error):
        d["w"] = "4"
    with bdbm.open(path, "r") as d2:
        assert d2["z"] == b"3"
    with btree_store.DB(path) as db:
        db.check()


def test_sync_and_close_fsync_the_file(tmp_path, monkeypatch):
    path = str(tmp_path / "f.bs")
    d = bdbm.open(path)
    if callable(getattr(d._db, "sync", None)):  # the engine makes it durable itself
        d["a"] = "1"
        d.sync()
        d.close()
        return
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.fstat(fd).st_ino)
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ino = os.stat(path).st_ino
    d["a"] = "1"
    assert synced == []  # a write alone does not fsync
    d.sync()
    assert synced == [ino]
    d["b"] = "2"
    d.close()
    assert synced == [ino, ino]
    with bdbm.open(path, "r") as d:
        d.sync()  # nothing to make durable
    assert synced == [ino, ino]


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


# ------------------------------------------------------------------ the standard dbm and shelve
@pytest.fixture
def std_dbm():
    """Restore the standard dbm module's global state after a test that calls register()."""
    saved = (dbm.whichdb, dbm._defaultmod, dict(dbm._modules), dbm.error, bdbm._std_whichdb)
    yield dbm
    dbm.whichdb, dbm._defaultmod, modules, dbm.error, bdbm._std_whichdb = saved
    dbm._modules.clear()
    dbm._modules.update(modules)


class _FakePath:
    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return self.path


def test_register_whichdb_open_and_shelve(tmp_path, std_dbm):
    path = str(tmp_path / "r.bs")
    with bdbm.open(path) as d:
        d["k"] = "v"
    dumb_path = str(tmp_path / "dumb")
    import dbm.dumb
    with dbm.dumb.open(dumb_path, "c") as d:
        d["k"] = "dumb"
    assert dbm.whichdb(path) == ""  # not registered yet: unknown
    bdbm.register()
    bdbm.register()  # idempotent
    for name in (path, os.fsencode(path), _FakePath(path), _FakePath(os.fsencode(path))):
        assert dbm.whichdb(name) == "btree_store.dbm"
    assert dbm.whichdb(str(tmp_path / "missing")) is None
    damaged = tmp_path / "damaged.bs"
    damaged.write_bytes(b"\0" * 64 + open(path, "rb").read()[64:])  # meta page 0 wiped
    assert dbm.whichdb(str(damaged)) == "btree_store.dbm"
    (tmp_path / "short").write_bytes(b"btree")
    assert dbm.whichdb(str(tmp_path / "short")) == ""
    assert dbm.whichdb(dumb_path) == "dbm.dumb"  # other formats still recognised
    with dbm.open(path) as d:  # 'r'
        assert isinstance(d, bdbm.BtreeDBM) and d["k"] == b"v"
    with dbm.open(dumb_path) as d:
        assert d["k"] == b"dumb"
    new = str(tmp_path / "new")
    with dbm.open(new, "c") as d:  # new files are btree_store files (default=True)
        d["x"] = "y"
    assert open(new, "rb").read(48)[32:] == bdbm.MAGIC
    with shelve.open(str(tmp_path / "shelf")) as s:
        s["obj"] = {"a": [1, 2]}
    assert dbm.whichdb(str(tmp_path / "shelf")) == "btree_store.dbm"
    with shelve.open(str(tmp_path / "shelf"), "r") as s:
        assert s["obj"] == {"a": [1, 2]}
    dbm.open(path, "w").close()
    with bdbm.open(path):
        dbm.open(path, "w").close()  # beside an open handle
    junk = tmp_path / "junk.bs"
    junk.write_bytes(b"\x01" * 9000)
    with pytest.raises(dbm.error):  # the standard except clause catches ours
        bdbm.open(str(junk), "w")


def test_register_without_default(tmp_path, std_dbm):
    before = dbm._defaultmod
    path = str(tmp_path / "r.bs")
    with bdbm.open(path) as d:
        d["k"] = "v"
    bdbm.register(default=False)
    assert dbm._defaultmod is before
    with dbm.open(path, "r") as d:
        assert d["k"] == b"v"


# Behaviours the standard library's backend-generic dbm tests check, against btree_store.dbm
# as the default dbm module.
SAMPLE = {"a": b"Python:", "b": b"Programming", "c": b"the", "d": b"way", "f": b"Guido",
          "g": b"intended"}


@pytest.fixture
def as_default(tmp_path, std_dbm):
    bdbm.register()
    return str(tmp_path / "anydbm")


def _fill(path):
    f = dbm.open(path, "n")
    for k, v in SAMPLE.items():
        f[k.encode("ascii")] = v
    f.close()


def test_anydbm_behaviours(as_default, tmp_path):
    path = as_default
    with pytest.raises(dbm.error):
        dbm.open(path)  # missing, flag 'r'
    f = dbm.open(path, "c")
    assert list(f.keys()) == []
    for k, v in SAMPLE.items():
        f[k.encode("ascii")] = v
    assert sorted(k.decode() for k in f.keys()) == sorted(SAMPLE)
    f.close()
    # modification and setdefault
    f = dbm.open(path, "c")
    f[b"g"] = b"indented"
    assert f.setdefault(b"xxx", b"foo") == b"foo" and f[b"xxx"] == b"foo"
    f.close()
    # read
    _fill(path)
    f = dbm.open(path, "r")
    assert all(f[k.encode()] == v for k, v in SAMPLE.items())
    assert f.get(b"a") == SAMPLE["a"] and f.get(b"xxx", b"foo") == b"foo"
    assert f.get(b"xxx") is None
    with pytest.raises(KeyError):
        f[b"xxx"]
    assert b"a" in f and f[b"a"] == b"Python:"
    f.close()
    # 'n' over a file with invalid contents
    with open(path, "w") as w:
        w.write("not a database")
    with dbm.open(path, "n") as f:
        assert len(f) == 0
    # empty values
    with dbm.open(path, "n") as f:
        assert f.keys() == []
        f[b"empty"] = b""
        assert f.keys() == [b"empty"] and b"empty" in f
        assert f[b"empty"] == b"" and f.get(b"empty") == b"" and f.setdefault(b"empty") == b""
    # paths: bytes, os.PathLike of str and of bytes
    dbm.open(os.fsencode(path + "1"), "c").close()
    dbm.open(_FakePath(path + "2"), "c").close()
    dbm.open(_FakePath(os.fsencode(path + "3")), "c").close()
    for i in "123":
        assert dbm.whichdb(path + i) == "btree_store.dbm"
    # keys and clear
    with dbm.open(path, "n") as d:
        a = [(b"a", b"b"), (b"12345678910", b"019237410982340912840198242")]
        for k, v in a:
            d[k] = v
        assert sorted(d.keys()) == sorted(k for k, v in a)
        assert all(k in d and d[k] == v for k, v in a)
        assert b"xxx" not in d
        assert len(d) == 2
        d.clear()
        assert len(d) == 0 and all(k not in d for k, _ in a)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_shelve_mapping_behaviours(as_default, protocol):
    """What the standard library's mapping-protocol tests check of a file shelf."""
    reference = {"key1": "value1", "key2": 2, "key3": (1, 2, 3)}
    with shelve.open(as_default + str(protocol), protocol=protocol) as s:
        assert not s and len(s) == 0 and list(s.keys()) == []
        with pytest.raises(KeyError):
            s["key1"]
        s.update(reference)
        assert s and len(s) == 3
        assert sorted(s.keys()) == sorted(reference)
        assert sorted(map(repr, s.values())) == sorted(map(repr, reference.values()))
        assert sorted(s.items()) == sorted(reference.items())
        assert all(s[k] == v for k, v in reference.items())
        assert s.get("key2") == 2 and s.get("nope") is None and s.get("nope", 3) == 3
        assert s.setdefault("key1", "other") == "value1"
        assert s.setdefault("key4", [4]) == [4]
        assert s.pop("key4") == [4]
        with pytest.raises(KeyError):
            s.pop("key4")
        assert s.pop("key4", "d") == "d"
        k, v = s.popitem()
        assert reference[k] == v and k not in s and len(s) == 2
        s.update([("t1", 1)], t2=2)
        assert s["t1"] == 1 and s["t2"] == 2
        del s["t1"]
        assert "t1" not in s
        assert s == dict(s.items())
    s.close()
    with pytest.raises(ValueError):
        len(s)


def _run_unittest(case):
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    out = io.StringIO()
    result = unittest.TextTestRunner(stream=out, verbosity=2).run(suite)
    assert result.testsRun > 5, out.getvalue()
    assert result.wasSuccessful() and not result.skipped, out.getvalue()


def test_cpython_dbm_and_shelve_tests_pass(as_default, tmp_path, monkeypatch):
    """The interpreter's own backend-generic dbm and shelve tests, with btree_store.dbm as
    the backend (they are imported, not copied; interpreters without the test package skip)."""
    test_dbm = pytest.importorskip("test.test_dbm")
    test_shelve = pytest.importorskip("test.test_shelve")
    mapping_tests = pytest.importorskip("test.mapping_tests")
    monkeypatch.chdir(tmp_path)  # they work in a folder under the current directory
    _run_unittest(type("BtreeStoreAnyDBM", (test_dbm.AnyDBMTestCase, unittest.TestCase),
                       {"module": bdbm}))
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        _run_unittest(type("BtreeStoreShelve%d" % proto,
                           (test_shelve.TestShelveFileBase,
                            mapping_tests.BasicTestMappingProtocol),
                           {"dbm_mod": bdbm, "_args": {"protocol": proto}}))
