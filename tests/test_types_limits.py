"""test_types_limits.py - accepted types, wrong types, empty keys, key/value size
limits, large (overflow) values, the page_size option.

Layer: tests only; public Python API of btree_store.
"""
import array
import mmap
import os
import pathlib
import random

import pytest

import btree_store
from btree_store import Error

MAX_VALUE = 2**32 - 1


def test_bytes_like_keys_and_values(db):
    with db.begin(write=True) as txn:
        txn.put(b"bytes", b"v1")
        txn.put(bytearray(b"bytearray"), bytearray(b"v2"))
        txn.put(memoryview(b"memoryview"), memoryview(b"v3"))
        txn.put(memoryview(b"xxsliceyy")[2:7], memoryview(b"__v4__")[2:4])
        arr = array.array("I", [1, 2, 3])
        txn.put(b"array", arr)
        txn[bytearray(b"setitem")] = memoryview(b"v5")
    with db.begin() as txn:
        assert txn.get(b"bytes") == b"v1"
        assert txn.get(b"bytearray") == b"v2"
        assert txn.get(bytearray(b"memoryview")) == b"v3"
        assert txn.get(memoryview(b"slice")) == b"v4"
        assert txn.get(b"array") == arr.tobytes()
        assert txn[b"setitem"] == b"v5"
        assert memoryview(b"slice") in txn
        assert bytearray(b"bytes") in txn


def test_value_buffer_is_copied(db):
    buf = bytearray(b"original")
    with db.begin(write=True) as txn:
        txn.put(b"k", buf)
        buf[:] = b"mutated!"
        assert txn.get(b"k") == b"original"
    with db.begin() as txn:
        assert txn.get(b"k") == b"original"


@pytest.mark.parametrize("bad", ["str", 1, None, 1.5, object(), ["l"]])
def test_wrong_key_types(db, bad):
    with db.begin(write=True) as txn:
        with pytest.raises(TypeError):
            txn.put(bad, b"v")
        with pytest.raises(TypeError):
            txn.get(bad)
        with pytest.raises(TypeError):
            txn.delete(bad)
        with pytest.raises(TypeError):
            txn[bad] = b"v"
        with pytest.raises(TypeError):
            txn[bad]
        with pytest.raises(TypeError):
            del txn[bad]
        with pytest.raises(TypeError):
            bad in txn  # noqa: B015
        # the transaction is still usable after the TypeErrors
        txn.put(b"ok", b"1")
    with db.begin() as txn:
        assert txn.get(b"ok") == b"1"
        assert len(txn) == 1


@pytest.mark.parametrize("bad", ["str", 1, None, 2.5])
def test_wrong_value_types(db, bad):
    with db.begin(write=True) as txn:
        with pytest.raises(TypeError):
            txn.put(b"k", bad)
        with pytest.raises(TypeError):
            txn[b"k"] = bad
        assert txn.get(b"k") is None
        txn.put(b"k", b"fine")
    with db.begin() as txn:
        assert txn.get(b"k") == b"fine"


def test_empty_key_and_value(db, reopen):
    with db.begin(write=True) as txn:
        assert txn.put(b"", b"empty key")
        assert txn.put(b"a", b"")
        assert txn.get(b"") == b"empty key"
        assert txn.get(b"a") == b""
        assert b"" in txn
    db = reopen(db)
    with db.begin() as txn:
        assert txn.get(b"") == b"empty key"
        assert txn.get(b"a") == b""
        assert [bytes(k) for k, _ in txn.iter()] == [b"", b"a"]
    with db.begin(write=True) as txn:
        assert txn.delete(b"")
        assert b"" not in txn


@pytest.mark.parametrize("page_size", [1024, 4096, 65536])
def test_max_key_size(open_db, reopen, page_size):
    db = open_db(page_size=page_size)
    m = db.max_key_size
    assert isinstance(m, int)
    if page_size == 4096:
        assert m >= 1024
    assert m < page_size
    big = bytes(random.Random(page_size).randbytes(m))
    with db.begin(write=True) as txn:
        assert txn.put(big, b"v")
        # a max-size key with a big value (overflow) too
        assert txn.put(big[:-1] + b"\x00", b"w" * (3 * page_size))
        with pytest.raises(ValueError):
            txn.put(big + b"x", b"v")
        with pytest.raises(ValueError):
            txn[big + b"x"] = b"v"
        # still usable after the ValueError
        assert txn.get(big) == b"v"
        # many max-size keys force splits of branch pages holding max-size separators
        for i in range(60):
            txn.put(i.to_bytes(2, "big") + big[2:], b"%d" % i)
    db = reopen(db)
    with db.begin() as txn:
        assert txn.get(big) == b"v"
        assert txn.get(big[:-1] + b"\x00") == b"w" * (3 * page_size)
        for i in range(60):
            assert txn.get(i.to_bytes(2, "big") + big[2:]) == b"%d" % i
        # lookups of an oversize key: not found or ValueError, never a crash
        try:
            assert txn.get(big + b"x") is None
        except ValueError:
            pass
    db.check()


def test_large_values_round_trip(db, reopen):
    rnd = random.Random(5)
    vals = {
        b"1MiB": rnd.randbytes(2**20),
        b"5MiB": rnd.randbytes(5 * 2**20 + 17),
        b"odd": rnd.randbytes(4096 * 3 - 32),  # exactly fills an overflow run
        b"odd2": rnd.randbytes(4096 * 3 - 31),
    }
    with db.begin(write=True) as txn:
        for k, v in vals.items():
            txn.put(k, memoryview(bytearray(v)))
        assert txn.get(b"5MiB") == vals[b"5MiB"]
    db = reopen(db)
    with db.begin() as txn:
        for k, v in vals.items():
            got = txn.get(k)
            assert len(got) == len(v)
            assert got == v
        items = {bytes(k): bytes(v) for k, v in txn.iter()}
        assert items == vals
    size1 = db.stat()["page_count"]
    # replace and delete big values: their pages are freed and reused
    for i in range(4):
        with db.begin(write=True) as txn:
            txn.put(b"5MiB", rnd.randbytes(5 * 2**20 + 17))
            txn.delete(b"1MiB")
            txn.put(b"1MiB", rnd.randbytes(2**20))
    db.check()
    assert db.stat()["page_count"] <= size1 * 2.2, "overflow pages are not reused"


def test_inline_overflow_boundary(db, reopen):
    # value sizes around the inline/overflow threshold (cell of ~P/2)
    model = {}
    with db.begin(write=True) as txn:
        for klen in (0, 1, 10, 100):
            for vlen in range(1900, 2100, 7):
                k = b"k" * klen + b"%05d" % vlen
                v = bytes([vlen % 251]) * vlen
                txn.put(k, v)
                model[k] = v
    db = reopen(db)
    with db.begin() as txn:
        for k, v in model.items():
            assert txn.get(k) == v
        assert len(txn) == len(model)
    # change them across the threshold both ways
    with db.begin(write=True) as txn:
        for i, k in enumerate(sorted(model)):
            v = b"s" * (i % 50) if i % 2 else b"L" * (5000 + i)
            txn.put(k, v)
            model[k] = v
    with db.begin() as txn:
        assert {bytes(k): bytes(v) for k, v in txn.iter()} == model


def _huge_view():
    """A read-only memoryview longer than 2**32-1 bytes without touching memory: an anonymous
    mapping is reserved, not committed, until its pages are touched."""
    try:
        m = mmap.mmap(-1, 2**32, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                      prot=mmap.PROT_READ)
    except (OSError, ValueError, OverflowError, MemoryError):
        return None, None
    return m, memoryview(m)


def test_value_over_4gib_is_value_error(db):
    m, view = _huge_view()
    if view is None:
        # Cannot reserve 4 GiB of address space here: fall back to the documented constant.
        limit = getattr(btree_store, "MAX_VALUE_SIZE", None)
        if limit is None:
            pytest.skip("cannot map 4 GiB and the binding exposes no MAX_VALUE_SIZE")
        assert limit == MAX_VALUE
        return
    try:
        assert len(view) == MAX_VALUE + 1
        with db.begin(write=True) as txn:
            with pytest.raises(ValueError):
                txn.put(b"huge", view)
            txn.put(b"small", b"ok")
        with db.begin() as txn:
            assert txn.get(b"huge") is None
            assert txn.get(b"small") == b"ok"
    finally:
        view.release()
        m.close()
    limit = getattr(btree_store, "MAX_VALUE_SIZE", None)
    if limit is not None:
        assert limit == MAX_VALUE


@pytest.mark.parametrize("page_size", [1024, 2048, 4096, 8192, 16384, 32768, 65536])
def test_page_size_option(open_db, reopen, page_size, tmp_path):
    db = open_db(page_size=page_size)
    assert db.stat()["page_size"] == page_size
    rnd = random.Random(page_size)
    model = {rnd.randbytes(rnd.randint(1, 60)): rnd.randbytes(rnd.randint(0, page_size))
             for _ in range(400)}
    with db.begin(write=True) as txn:
        for k, v in model.items():
            txn.put(k, v)
    db = reopen(db)  # no page_size given: the file's own is used
    assert db.stat()["page_size"] == page_size
    db = reopen(db, page_size=4096 if page_size != 4096 else 1024)  # ignored for existing files
    assert db.stat()["page_size"] == page_size
    with db.begin() as txn:
        for k, v in model.items():
            assert txn.get(k) == v
    assert db.stat()["file_size"] >= db.stat()["page_count"] * page_size - page_size


@pytest.mark.parametrize("bad", [0, 512, 1000, 3000, 4097, 131072, 2**20, 2**31])
def test_bad_page_size(tmp_path, bad):
    path = str(tmp_path / "bad.bs")
    if bad == 0:
        # 0 may mean "default" at the C level; from Python it is either the default or refused
        try:
            db = btree_store.DB(path, page_size=0)
        except ValueError:
            return
        assert db.stat()["page_size"] == 4096
        db.close()
        return
    with pytest.raises(ValueError):
        btree_store.DB(path, page_size=bad)


def test_bad_constructor_arguments(tmp_path):
    path = str(tmp_path / "x.bs")
    with pytest.raises(TypeError):
        btree_store.DB(path, no_such_option=1)
    with pytest.raises(TypeError):
        btree_store.DB(12345)
    with pytest.raises(TypeError):
        btree_store.DB(path, True)  # options are keyword-only
    with pytest.raises((ValueError, OverflowError)):
        btree_store.DB(path, cache_size=-1)


def test_pathlike_and_small_cache(tmp_path):
    path = pathlib.Path(tmp_path) / "p.bs"
    db = btree_store.DB(path, cache_size=64 * 1024)
    try:
        rnd = random.Random(3)
        model = {}
        with db.begin(write=True) as txn:
            for i in range(5000):
                k = rnd.randbytes(12)
                model[k] = rnd.randbytes(rnd.randint(10, 200))
                txn.put(k, model[k])
        with db.begin() as txn:
            for k, v in model.items():
                assert txn.get(k) == v
        st = db.stat()
        # the DB is far larger than the cache, which stays bounded (the engine may keep a
        # small minimum number of frames)
        assert st["page_count"] * st["page_size"] > 8 * 64 * 1024
        assert st["cache_pages"] * st["page_size"] <= max(2 * 64 * 1024, 64 * st["page_size"])
        db.check()
    finally:
        db.close()
    assert os.path.exists(path)


def test_errors_are_btree_store_errors(db):
    # Every failure the engine reports derives from btree_store.Error (or is a TypeError /
    # ValueError for bad arguments): spot check a few.
    with db.begin(write=True) as txn:
        with pytest.raises(Error):
            db.begin(write=True)  # nested write txn in one thread
        txn.put(b"a", b"1")
