"""test_copy.py - hot backup (DB.copy) and compaction (DB.copy(compact=True), DB.compact).

What is proven here: a copy equals the snapshot it started from and not the commits made
while it ran; every bucket, overflow value and empty value survives both kinds of copy;
a compact copy and an in-place compact are smaller, hold the same data and pass check();
the file given back to the OS after deleting everything; bad destinations and bad states
raise clear errors; an injected I/O failure during a copy leaves no file behind.

Layer: tests only; uses the public Python API of btree_store (and _testing.FaultIO).
"""
import errno
import os
import pathlib
import random
import threading
import time

import pytest

import btree_store
from btree_store import _testing
from _util import LONG, bucket_items


def fill(db, n=3000, seed=1):
    """Several buckets, overflow values, empty values and an empty bucket; returns the model."""
    rnd = random.Random(seed)
    model = {None: {}, "big": {}, "empty": {}, "z" * 200: {}}
    with db.begin(write=True) as t:
        for name in model:
            if name:
                t.create_bucket(name)
        keys = list(range(n))
        rnd.shuffle(keys)
        for i in keys:
            k, v = b"key:%08d" % i, bytes(rnd.getrandbits(8) for _ in range(i % 40))
            t.put(k, v)
            model[None][k] = v
        for i in range(60):
            k = b"ov%03d" % i
            v = os.urandom(rnd.choice([3000, 5000, 20000, 70000]))
            t.put(k, v, bucket="big")
            model["big"][k] = v
        t.put(b"", b"", bucket="big")
        model["big"][b""] = b""
        t.put(b"only", b"", bucket="z" * 200)
        model["z" * 200][b"only"] = b""
    return model


def content(db):
    with db.begin() as t:
        return {b: dict(bucket_items(t, b)) for b in [None] + t.buckets()}


def assert_content(path, model):
    with btree_store.DB(path, readonly=True) as d:
        d.check()
        assert content(d) == model


def files_in(directory):
    """The files, without the side file PATH-lock of a database someone has open."""
    names = os.listdir(directory)
    return sorted(n for n in names if not (n.endswith("-lock") and n[:-5] in names))


@pytest.mark.parametrize("compact", [False, True])
def test_copy_equals_source(open_db, tmp_path, compact):
    db = open_db()
    model = fill(db)
    dest = tmp_path / "copy.bs"
    db.copy(dest, compact=compact)
    assert_content(str(dest), model)
    # the copy is an ordinary database: it can be written and reopened
    with btree_store.DB(str(dest)) as d:
        with d.begin(write=True) as t:
            t.put(b"new", b"x")
            t.delete(b"key:00000005")
            t.put(b"more", b"y" * 9000, bucket="big")
        d.check()
    with btree_store.DB(str(dest)) as d:
        d.check()
        with d.begin() as t:
            assert t.get(b"new") == b"x" and t.get(b"key:00000005") is None
            assert t.get(b"more", bucket="big") == b"y" * 9000


@pytest.mark.parametrize("compact", [False, True])
def test_copy_while_a_writer_commits(open_db, tmp_path, compact):
    """Another thread commits again and again while the copy runs (it rewrites keys, so it
    frees pages of the copy's snapshot and would reuse them if the snapshot were not pinned):
    the copy equals the state when it started, none of the later commits."""
    db = open_db(cache_size=32 * 4096)  # small cache: the copy really reads the file
    with db.begin(write=True) as t:
        for i in range(30000):
            t.put(b"k%06d" % i, b"old-%d" % i)
        t.put(b"big", b"B" * 50000)
    before = content(db)
    dest = tmp_path / "c.bs"
    errors = []

    def run_copy():
        try:
            db.copy(dest, compact=compact)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    th = threading.Thread(target=run_copy)
    th.start()
    # commits start once the copy's read transaction exists (or the copy is already done)
    while th.is_alive() and db.stat()["readers"] == 0:
        time.sleep(0.0005)
    n = 0
    while th.is_alive() or n < 3:
        n += 1
        with db.begin(write=True) as t:
            for i in range(0, 30000, 101):
                t.put(b"k%06d" % i, b"new-%d" % n)
            t.delete(b"k%06d" % (7 * n + 1))
            t.put(b"big", b"C" * (1000 + n))
            t.put(b"w%d" % n, b"")
    th.join()
    assert not errors, errors
    assert_content(str(dest), before)
    with db.begin() as t:  # the source has every commit
        assert t.get(b"w%d" % n) == b"" and t.get(b"big") == b"C" * (1000 + n)


def test_copy_from_snapshot_not_later(open_db, tmp_path):
    """The copy is taken at the newest commit when it starts: a later commit is absent, an
    earlier one present, an uncommitted write transaction is not in it."""
    db = open_db()
    with db.begin(write=True) as t:
        t.put(b"a", b"1")
    w = db.begin(write=True)
    w.put(b"b", b"uncommitted")
    db.copy(tmp_path / "c.bs")  # from another thread's view: the copy does not wait
    w.commit()
    with db.begin(write=True) as t:
        t.put(b"c", b"3")
    assert_content(str(tmp_path / "c.bs"), {None: {b"a": b"1"}})


def test_compact_copy_is_smaller(open_db, tmp_path):
    db = open_db()
    model = fill(db, n=6000)
    with db.begin(write=True) as t:  # free pages, half-empty leaves
        for i in range(0, 6000, 3):
            t.delete(b"key:%08d" % i)
            del model[None][b"key:%08d" % i]
        for i in range(0, 60, 2):
            t.delete(b"ov%03d" % i, bucket="big")
            del model["big"][b"ov%03d" % i]
    plain, packed = tmp_path / "plain.bs", tmp_path / "packed.bs"
    db.copy(plain)
    db.copy(packed, compact=True)
    assert_content(str(plain), model)
    assert_content(str(packed), model)
    assert os.path.getsize(plain) == db.stat()["page_count"] * db.page_size
    assert os.path.getsize(packed) < 0.8 * os.path.getsize(plain)
    with btree_store.DB(str(packed), readonly=True) as d:
        st = d.stat()
        assert st["free_pages"] == 0
        assert st["file_size"] == st["page_count"] * d.page_size


def test_compact_in_place(open_db, factory):
    db = open_db()
    path = factory.path_of(db)
    model = fill(db, n=4000)
    with db.begin(write=True) as t:
        for i in range(1000, 4000):
            t.delete(b"key:%08d" % i)
            del model[None][b"key:%08d" % i]
    size = os.path.getsize(path)
    db.compact()
    assert os.path.getsize(path) < size
    db.check()
    assert content(db) == model
    # the handle works on the new file: write, reopen
    with db.begin(write=True) as t:
        t.put(b"after", b"compact")
    db.check()
    db.close()
    model[None][b"after"] = b"compact"
    assert_content(path, model)
    assert files_in(os.path.dirname(path)) == [os.path.basename(path)]


def test_compact_gives_the_free_tail_back(open_db, factory):
    """Filling a database and then deleting nearly everything leaves the file at its largest
    size, mostly free pages; compact() brings it down to a few pages and keeps the rest."""
    n = 200000 if LONG else 50000
    db = open_db(sync=False)
    path = factory.path_of(db)
    keys = list(range(n))
    random.Random(5).shuffle(keys)
    with db.begin(write=True) as t:
        for i in keys:
            t.put(b"%012d" % i, b"value-%d" % i)
    with db.begin(write=True) as t:
        for i in keys[10:]:
            t.delete(b"%012d" % i)
    big = os.path.getsize(path)
    st = db.stat()
    assert st["free_pages"] > 0.9 * st["page_count"]
    db.compact()
    st = db.stat()
    assert st["free_pages"] == 0 and st["page_count"] <= 4
    assert os.path.getsize(path) == st["page_count"] * db.page_size < big / 100
    with db.begin() as t:
        assert dict(bucket_items(t)) == {b"%012d" % i: b"value-%d" % i for i in keys[:10]}


def test_compact_refused_with_open_transactions(open_db):
    db = open_db()
    with db.begin(write=True) as t:
        t.put(b"a", b"1")
    r = db.begin()
    with pytest.raises(btree_store.Error, match="no transaction is open"):
        db.compact()
    r.abort()
    w = db.begin(write=True)
    with pytest.raises(btree_store.Error, match="no transaction is open"):
        db.compact()
    w.abort()
    db.compact()
    with db.begin() as t:
        assert t.get(b"a") == b"1"


def test_compact_readonly_and_closed(open_db, factory):
    db = open_db()
    path = factory.path_of(db)
    db.close()
    with pytest.raises(btree_store.ClosedError):
        db.compact()
    with pytest.raises(btree_store.ClosedError):
        db.copy(path + ".x")
    ro = btree_store.DB(path, readonly=True)
    try:
        with pytest.raises(btree_store.ReadonlyError):
            ro.compact()
        ro.copy(path + ".ro-copy")  # a read-only database can be copied
        assert_content(path + ".ro-copy", {None: {}})
    finally:
        ro.close()


def test_copy_path_types(open_db, tmp_path):
    db = open_db()
    with db.begin(write=True) as t:
        t.put(b"k", b"v")
    for i, dest in enumerate([str(tmp_path / "s.bs"), os.fsencode(str(tmp_path / "b.bs")),
                              pathlib.Path(tmp_path / "p.bs")]):
        db.copy(dest, compact=bool(i % 2))
        assert_content(os.fsdecode(dest), {None: {b"k": b"v"}})
    for bad in (None, 5, 3.0, [str(tmp_path / "l.bs")]):
        with pytest.raises(TypeError):
            db.copy(bad)
    with pytest.raises(ValueError):
        db.copy(str(tmp_path / "nul\0.bs"))
    with pytest.raises(TypeError):
        db.copy()


def test_copy_errors(open_db, factory, tmp_path):
    db = open_db()
    src = factory.path_of(db)
    with db.begin(write=True) as t:
        t.put(b"k", b"v")
    before = files_in(tmp_path)
    with pytest.raises(FileNotFoundError) as ei:
        db.copy(tmp_path / "missing" / "c.bs")
    assert ei.value.filename == str(tmp_path / "missing" / "c.bs")
    assert str(ei.value).count(str(tmp_path)) == 1 and ".tmp-" not in str(ei.value), ei.value
    for compact in (False, True):
        with pytest.raises(ValueError, match="the database itself"):
            db.copy(src, compact=compact, overwrite=True)
        with pytest.raises((ValueError, FileExistsError)):
            db.copy(src, compact=compact)
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError):
        db.copy(tmp_path / "adir", overwrite=True)
    assert files_in(tmp_path) == sorted(before + ["adir"])
    # an existing destination: refused unless overwrite=True
    dest = tmp_path / "exists.bs"
    dest.write_bytes(b"precious")
    with pytest.raises(FileExistsError) as ei:
        db.copy(dest)
    assert ei.value.errno == errno.EEXIST and ei.value.filename == str(dest)
    # each thing said once: the path (as .filename), the reason, the way out
    assert str(ei.value).count(str(dest)) == 1 and "overwrite=True" in str(ei.value), ei.value
    assert dest.read_bytes() == b"precious"
    db.copy(dest, overwrite=True)
    assert_content(str(dest), {None: {b"k": b"v"}})
    db.check()


@pytest.mark.parametrize("compact", [False, True])
def test_copy_larger_than_the_cache(open_db, tmp_path, compact):
    """A database many times the cache: the copy reads what the cache cannot hold and is
    complete; the cache stays within its size."""
    db = open_db(cache_size=16 * 4096)
    with db.begin(write=True) as t:
        for i in range(30000):
            t.put(b"%08d" % i, b"x" * 20)
    assert db.stat()["page_count"] > 10 * 16
    db.copy(tmp_path / "c.bs", compact=compact)
    assert db.stat()["cache_pages"] <= 16
    with btree_store.DB(str(tmp_path / "c.bs"), readonly=True) as d:
        d.check()
        with d.begin() as t:
            assert t.count() == 30000
            assert dict(bucket_items(t)) == {b"%08d" % i: b"x" * 20 for i in range(30000)}


@pytest.mark.parametrize("compact", [False, True])
def test_copy_under_fault_injection(tmp_path, compact):
    """Fail the n-th read of the source for n = 1, 2, ...: each failed copy raises DiskError
    and leaves no file (neither dest nor a temporary one); the first copy that gets through
    is complete."""
    path = str(tmp_path / "src.bs")
    with btree_store.DB(path) as d:
        model = fill(d, n=2000)
    ok = False
    for n in range(1, 400):
        fio = _testing.FaultIO()
        db = btree_store.DB(path, _io=fio, cache_size=16 * 4096)
        try:
            dest = tmp_path / "dest.bs"
            fio.fail_nth("read", n)
            try:
                db.copy(dest, compact=compact)
            except btree_store.DiskError as e:
                assert fio.fired and e.errno == errno.EIO
                assert files_in(tmp_path) == ["src.bs"], n
                continue
            assert not fio.fired
            ok = True
            break
        finally:
            db.close()
    assert ok and n > 1, "the copy never read the file, or never finished"
    assert_content(str(tmp_path / "dest.bs"), model)
    with btree_store.DB(path) as d:
        d.check()


def test_compact_under_fault_injection(tmp_path):
    """compact() through FaultIO, the n-th read failing: a failed run raises DiskError and
    leaves the original file, intact and usable, alone in its directory; a run that gets
    through leaves the compact file in place with the same data."""
    path = str(tmp_path / "src.bs")
    with btree_store.DB(path) as d:
        model = fill(d, n=1500)
        with d.begin(write=True) as t:
            for k in list(model[None])[::2]:
                t.delete(k)
                del model[None][k]
    size = os.path.getsize(path)
    for n in range(1, 400):
        fio = _testing.FaultIO()
        db = btree_store.DB(path, _io=fio, cache_size=16 * 4096)
        try:
            fio.fail_nth("read", n)
            try:
                db.compact()
            except btree_store.DiskError:
                assert fio.fired
                assert files_in(tmp_path) == ["src.bs"]
                if db.closed:
                    # FaultIO serves one file at a time, so the compact file is opened only
                    # after it took the name: the failure hit that reopen, the file is done
                    assert os.path.getsize(path) < size
                    assert_content(path, model)
                else:
                    assert os.path.getsize(path) == size
                    db.check()
                    assert content(db) == model
                continue
            assert not fio.fired
            fio.fail_nth("read", 0)  # off: the check below reads too
            db.check()
            assert content(db) == model
            break
        finally:
            db.close()
    assert os.path.getsize(path) < size
    assert files_in(tmp_path) == ["src.bs"]
    assert_content(path, model)


def test_compact_keeps_options_and_lock(open_db, factory, tmp_path):
    db = open_db(page_size=1024, cache_size=1 << 20)
    path = factory.path_of(db)
    fill(db, n=500)
    db.compact()
    assert db.page_size == 1024
    # the compacted file is open by this handle: another one may open it beside
    with btree_store.DB(path, readonly=True) as other:
        other.check()
    db.check()


@pytest.mark.parametrize("compact", [False, True])
def test_copy_when_free_pages_lie_past_the_end_of_the_file(tmp_path, compact):
    """A page allocated and freed again before it was ever written leaves page_count past the
    end of the file; those pages are free, so a copy gives zeros for them (a page in use
    there would be a truncated file)."""
    src = tmp_path / "src.bs"
    with btree_store.DB(str(src)) as db:
        with db.begin(write=True) as txn:
            for i in range(100):
                txn.put(b"%08d" % i, b"value %d" % i * 3)
            txn.create_bucket("b")
            txn.put_many([(b"k%d" % i, b"v") for i in range(500)], bucket="b")
        with db.begin(write=True) as txn:
            txn.delete_many([b"%08d" % i for i in range(0, 100, 2)])
        st = db.stat()
        assert os.path.getsize(src) < st["page_count"] * st["page_size"]  # the case itself
        db.copy(tmp_path / "dst.bs", compact=compact)
    with btree_store.DB(str(tmp_path / "dst.bs")) as d:
        d.check()
        with d.begin() as t:
            assert [bytes(k) for k in t.keys()] == [b"%08d" % i for i in range(1, 100, 2)]
            assert t.count(bucket="b") == 500
