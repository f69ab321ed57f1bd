"""test_memory.py - in-memory databases: DB(":memory:") and DB.memory(from_path=...).

The same engine and format as a file, on the memory I/O table (csrc/io_mem.c): buckets,
transactions, iterators, snapshots, savepoints, overflow values, check(); copy() out to a
file that then opens normally; from_path loads a file (verified like a file: corrupt or
foreign files are refused, the file is never changed or locked); two memory databases are
independent; nothing is created on the file system; bad arguments and closed handles;
check_commits (the switch behind pytest --btree-strict).

Layer: tests only; uses the public Python API of btree_store.
"""
import os
import threading

import pytest

import btree_store
from btree_store import _core


def fill(db, n=200, bucket=None, vlen=20):
    with db.begin(write=True) as txn:
        if bucket:
            txn.create_bucket(bucket)
        for i in range(n):
            txn.put(b"k%05d" % i, b"v%d" % i * (vlen // 2 + 1), bucket=bucket)


def contents(db, bucket=None):
    with db.begin() as txn:
        return dict(txn.items(bucket=bucket))


def test_memory_basic_semantics(btree_memory_db):
    db = btree_memory_db
    assert db.path == ":memory:"
    assert "memory" in repr(db)
    fill(db, 300)
    fill(db, 50, bucket="b1")
    with db.begin(write=True) as txn:
        assert txn.delete(b"k00001")
        assert not txn.delete(b"nope")
        txn.put(b"big", b"x" * 100000)  # an overflow value
    with db.begin() as txn:
        assert txn.get(b"k00001") is None
        assert txn.get(b"k00002") == b"v2" * 11
        assert txn.get(b"big") == b"x" * 100000
        assert len(txn) == 300
        assert txn.count(bucket="b1") == 50
        keys = list(txn.keys(b"k00010", b"k00013"))
        assert keys == [b"k00010", b"k00011", b"k00012"]
        assert list(txn.keys(reverse=True))[0] == b"k00299"
    assert db.buckets() == ["b1"]
    st = db.stat()
    assert st["entries"] == 350
    assert st["durable_txid"] == st["txid"]
    assert st["file_size"] == st["page_count"] * st["page_size"]
    db.check()


def test_memory_transactions_abort_savepoints_snapshots(btree_memory_db):
    db = btree_memory_db
    fill(db, 10)
    snap = db.begin()
    with pytest.raises(RuntimeError):
        with db.begin(write=True) as txn:
            txn.put(b"k00000", b"changed")
            raise RuntimeError("abort it")
    with db.begin(write=True) as txn:
        txn.put(b"new", b"1")
        txn.drop_bucket("missing")
    # the snapshot taken before still sees the old state
    assert snap.get(b"new") is None
    assert len(snap) == 10
    snap.abort()
    with db.begin() as txn:
        assert txn.get(b"k00000") == b"v0" * 11
        assert txn.get(b"new") == b"1"

    def boom(multi):
        multi.execute("ok", lambda t: t.put(b"a", b"1"))
        try:
            multi.execute("bad", lambda t: (t.put(b"b", b"2"), 1 / 0))
        except ZeroDivisionError:
            pass

    db.exec_multi(boom)
    assert db.buckets() == ["ok"]
    db.check()


def test_memory_readers_and_writer_in_threads(btree_memory_db):
    db = btree_memory_db
    fill(db, 100)
    errors = []

    def reader():
        try:
            for _ in range(30):
                with db.begin() as txn:
                    n = len(txn)
                    assert n >= 100
                    assert sum(1 for _ in txn.keys()) == n
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(30):
        with db.begin(write=True) as txn:
            for j in range(20):
                txn.put(b"w%03d-%02d" % (i, j), b"y" * 300)
    for t in threads:
        t.join()
    assert not errors
    assert db.stat()["entries"] == 100 + 30 * 20
    db.check()


def test_memory_copy_out_then_open_the_file(tmp_path, btree_memory_db):
    db = btree_memory_db
    fill(db, 500)
    fill(db, 40, bucket="other")
    dest = tmp_path / "out.db"
    db.copy(dest)
    db.copy(str(tmp_path / "compact.db"), compact=True)
    with pytest.raises(FileExistsError):
        db.copy(dest)
    db.copy(dest, overwrite=True)
    for p in (dest, tmp_path / "compact.db"):
        with btree_store.DB(p, readonly=True) as f:
            f.check()
            assert contents(f) == contents(db)
            assert contents(f, "other") == contents(db, "other")


def test_memory_from_path_loads_and_never_touches_the_file(tmp_path):
    path = tmp_path / "src.db"
    with btree_store.DB(path, page_size=8192) as f:
        fill(f, 1000, vlen=100)
        fill(f, 20, bucket="bk")
    before = path.read_bytes()
    # the source stays usable (and locked) by a writer meanwhile: memory never locks it
    writer = btree_store.DB(path)
    try:
        mem = btree_store.DB.memory(from_path=path)
        assert mem.page_size == 8192
        mem.check()
        assert len(contents(mem)) == 1000
        assert len(contents(mem, "bk")) == 20
        with mem.begin(write=True) as txn:
            txn.put(b"only-in-memory", b"1")
            txn.drop_bucket("bk")
        mem.check()
        mem.close()
    finally:
        writer.close()
    assert path.read_bytes() == before
    with btree_store.DB(path) as f:
        with f.begin() as txn:
            assert txn.get(b"only-in-memory") is None
        assert f.buckets() == ["bk"]
    # str, bytes and PathLike are all accepted
    for p in (str(path), os.fsencode(str(path))):
        with btree_store.DB.memory(from_path=p) as m:
            assert m.stat()["entries"] == 1020
    # readonly is allowed when loading
    with btree_store.DB(":memory:", readonly=True, _memory_from=path) as m:
        assert m.readonly
        with pytest.raises(btree_store.ReadonlyError):
            with m.begin(write=True):
                pass


def test_memory_from_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        btree_store.DB.memory(from_path=tmp_path / "missing.db")
    assert ei.value.filename == str(tmp_path / "missing.db")
    with pytest.raises(IsADirectoryError):
        btree_store.DB.memory(from_path=tmp_path)
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"SQLite format 3\0" + b"\0" * 8192)
    with pytest.raises(btree_store.CorruptionError):
        btree_store.DB.memory(from_path=foreign)
    # a file whose meta pages are both damaged is refused, as the file itself would be
    good = tmp_path / "good.db"
    with btree_store.DB(good) as f:
        fill(f, 2000)
        mid = f.stat()["page_count"] // 2
        with f.begin(write=True) as txn:  # the newest commit does not list page `mid`
            txn.put(b"zzz", b"1")
    data = bytearray(good.read_bytes())
    ps = 4096
    for slot in (0, 1):
        data[slot * ps + 100] ^= 0xFF
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(data))
    with pytest.raises(btree_store.CorruptionError):
        btree_store.DB(bad)
    with pytest.raises(btree_store.CorruptionError):
        btree_store.DB.memory(from_path=bad)
    # a damaged data page loads (as the file would) and check() reports it
    data = bytearray(good.read_bytes())
    data[mid * ps + 200] ^= 0xFF
    bad.write_bytes(bytes(data))
    with btree_store.DB(bad) as f:
        with pytest.raises(btree_store.CorruptionError):
            f.check()
    with btree_store.DB.memory(from_path=bad) as m:
        with pytest.raises(btree_store.CorruptionError):
            m.check()
    # an empty file gives a fresh database
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with btree_store.DB.memory(from_path=empty) as m:
        assert m.stat()["entries"] == 0
        fill(m, 3)
        m.check()
    assert empty.read_bytes() == b""


def test_two_memory_databases_are_independent():
    a = btree_store.DB(":memory:")
    b = btree_store.DB.memory()
    try:
        with a.begin(write=True) as txn:
            txn.put(b"k", b"a")
        with b.begin(write=True) as txn:
            txn.put(b"k", b"b")
            txn.create_bucket("only-b")
        # both writers at once: there is no lock shared between them
        ta = a.begin(write=True, timeout=0)
        tb = b.begin(write=True, timeout=0)
        ta.put(b"x", b"1")
        tb.abort()
        ta.commit()
        assert contents(a) == {b"k": b"a", b"x": b"1"}
        assert contents(b) == {b"k": b"b"}
        assert a.buckets() == [] and b.buckets() == ["only-b"]
    finally:
        a.close()
        b.close()


def test_memory_creates_nothing_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with btree_store.DB(":memory:") as db:
        fill(db, 100)
        db.sync()
        db.check()
    with btree_store.DB(b":memory:") as db:
        fill(db, 10)
    assert os.listdir(tmp_path) == []
    # "./:memory:" is a real file of that name
    with btree_store.DB("./:memory:") as db:
        fill(db, 1)
    assert os.listdir(tmp_path) == [":memory:"]


def test_memory_close_frees_it_and_cannot_reopen():
    db = btree_store.DB(":memory:")
    fill(db, 10)
    db.close()
    db.close()  # idempotent
    with pytest.raises(btree_store.ClosedError):
        db.begin()
    with pytest.raises(btree_store.ClosedError):
        db.copy("/nonexistent/never")
    # a new ":memory:" is a new, empty database
    with btree_store.DB(":memory:") as db2:
        assert db2.stat()["entries"] == 0
    assert "cannot be reopened" in btree_store.DB.memory.__doc__
    assert ":memory:" in btree_store.DB.__doc__


def test_memory_compact_refused_copy_works(tmp_path):
    with btree_store.DB.memory() as db:
        fill(db, 10)
        with pytest.raises(btree_store.Error, match="copy"):
            db.compact()
        assert db.stat()["entries"] == 10  # still usable
        db.copy(tmp_path / "c.db", compact=True)


def test_memory_bad_arguments(tmp_path):
    with pytest.raises(TypeError):
        btree_store.DB.memory(tmp_path)  # from_path is keyword-only
    with pytest.raises(TypeError):
        btree_store.DB.memory(bogus=1)
    with pytest.raises(ValueError):
        btree_store.DB.memory(page_size=1000)
    with pytest.raises(TypeError):
        btree_store.DB.memory(page_size="4096")
    with pytest.raises(ValueError):
        btree_store.DB.memory(cache_size=-1)
    with pytest.raises(TypeError):
        btree_store.DB.memory(from_path=12)
    with pytest.raises(ValueError, match="read-only"):
        btree_store.DB(":memory:", readonly=True)
    with pytest.raises(ValueError):
        btree_store.DB(str(tmp_path / "f.db"), _memory_from=tmp_path / "f.db")
    with pytest.raises(ValueError):
        btree_store.DB(":memory:", _io=object())
    with btree_store.DB.memory(page_size=1024, cache_size=0) as db:
        assert db.page_size == 1024
        fill(db, 500)
        db.check()


def test_memory_many_small_databases():
    # what a hypothesis test does: a fresh database per example
    for i in range(300):
        with btree_store.DB(":memory:") as db:
            with db.begin(write=True) as txn:
                txn.put(b"i", b"%d" % i)
            with db.begin() as txn:
                assert txn.get(b"i") == b"%d" % i


def test_check_commits_option_and_default():
    assert _core._check_commits_default() is False
    with btree_store.DB(":memory:", check_commits=True) as db:
        fill(db, 300)
        with db.begin(write=True) as txn:
            for i in range(0, 300, 2):
                txn.delete(b"k%05d" % i)
        db.check()
    old = _core._check_commits_default(True)
    try:
        assert old is False
        assert _core._check_commits_default() is True
        with btree_store.DB.memory() as db:
            fill(db, 10)
        with btree_store.DB.memory(check_commits=False) as db:
            fill(db, 10)
    finally:
        _core._check_commits_default(old)
    assert _core._check_commits_default() is False
    with pytest.raises(TypeError):
        _core._check_commits_default(1, 2)
