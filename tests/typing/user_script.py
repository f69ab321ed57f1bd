"""user_script.py - a user's program that calls every public call of btree_store (DB, Txn,
WriteTxn, Iterator, buckets, batch calls, copy/compact, stat/check, the exceptions,
btree_store.aio, btree_store.dbm with shelve, btree_store._testing, btree_store.testing and
btree_store.hypothesis). tests/test_typing.py
runs `mypy --strict` on it (assert_type pins the types the stubs give) and then runs it:
every call here really happens, so the stubs describe what the calls do.

Usage: python user_script.py DIRECTORY (files are created in it).

Layer: tests (public API only, as a user sees it).
"""
from __future__ import annotations

import asyncio
import io
import os
import shelve
import sys
import unittest
from typing import TYPE_CHECKING, Any, Optional

import btree_store
import btree_store.aio as aio
import btree_store.dbm as bdbm
from btree_store import DB, Iterator, Txn, WriteTxn
from btree_store._testing import FaultIO, crc32c, crc32c_impl
from btree_store.hypothesis import LayerMachine
from btree_store.testing import FaultyMachine
from hypothesis import settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:
    def assert_type(value, typ):
        return value


def sync_api(d: str) -> None:
    path = os.path.join(d, "user.db")
    with DB(path, sync=False, cache_size=1 << 20, page_size=4096) as db:
        assert_type(db, DB)
        assert_type(db.path, "str | bytes")
        assert db.readonly is False
        assert db.max_key_size > 0 and db.page_size == 4096

        with db.begin(write=True) as w:
            assert_type(w, WriteTxn)
            assert w.put(b"k1", b"v1")
            assert not w.put(b"k1", b"other", False)
            w[b"k2"] = bytearray(b"v2")
            w[memoryview(b"k3")] = b"v3"
            del w[b"k3"]
            assert w.delete(b"k2") and not w.delete(b"k2")
            prev: Optional[bytes] = w.replace(b"k1", b"v1b")
            assert prev == b"v1"
            assert w.pop(b"k1") == b"v1b"
            assert w.pop(b"missing", None) is None
            w.create_bucket("users")
            w.create_bucket("users", exist_ok=True)
            w.create_bucket("tmp")
            assert w.drop_bucket("tmp")
            n: int = w.put_many([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
            assert n == 3
            assert w.put_many({b"u1": b"alice", b"u2": b"bob"}, bucket="users") == 2
            assert w.put_many([(b"d", b"4")], overwrite=False, append=True) == 1
            assert w.delete_many([b"d", b"zz"]) == 1
            assert w.id > 0 and w.write and not w.closed and w.bucket is None
            assert_type(w.db, btree_store._core.DB)

        with db.begin() as r:
            assert_type(r, Txn)
            v = r.get(b"a")
            assert_type(v, "bytes | None")
            assert v == b"1"
            d2 = r.get(b"nope", b"dflt")
            assert_type(d2, bytes)
            assert r.get(b"u1", bucket="users") == b"alice"
            assert r.count() == 3 and r.count(bucket="users") == 2 and len(r) == 3
            many = r.get_many([b"a", b"x"])
            assert_type(many, "list[bytes | None]")
            assert many == [b"1", None]
            assert b"a" in r and r[b"b"] == b"2"
            keys = list(r)
            assert_type(keys, "list[bytes]")
            assert keys == [b"a", b"b", b"c"]
            assert dict(r) == {b"a": b"1", b"b": b"2", b"c": b"3"}
            kk: Iterator[bytes] = r.keys(prefix=b"a")
            assert list(kk) == [b"a"]
            assert list(r.values(b"b")) == [b"2", b"3"]
            assert list(r.items(reverse=True, bucket="users"))[0] == (b"u2", b"bob")
            it = r.iter(b"a", b"c")
            assert_type(it, "Iterator[tuple[memoryview, memoryview]]")
            pairs = [(bytes(k), bytes(val)) for k, val in it]
            assert pairs == [(b"a", b"1"), (b"b", b"2")]
            kit = r.iter(values=False)
            assert_type(kit, "Iterator[memoryview]")
            assert kit.seek(b"b") and not kit.reverse
            assert bytes(next(kit)) == b"b" and kit.key == b"b" and kit.value is None
            vit = r.iter(keys=False, reverse=True)
            assert_type(vit, "Iterator[memoryview]")
            assert [bytes(x) for x in vit] == [b"3", b"2", b"1"]
            assert r.buckets() == ["users"]
            r.commit()
        txn = db.begin(False, bucket="users", timeout=None, sync=None)
        assert txn.bucket == "users"
        txn.abort()

        try:
            db.begin(write=True).create_bucket("users", exist_ok=False)
        except btree_store.BucketExistsError:
            pass
        try:
            db.begin(bucket="no such bucket")
        except btree_store.BucketNotFoundError as e:
            assert isinstance(e, KeyError)

        assert db.exec("users", lambda t: t.put(b"u3", b"carol"))
        assert db.view("users", lambda t: t.count()) == 3

        def multi(m: btree_store._Multi) -> int:
            m.execute("orders", lambda t: t.put(b"o1", b"x"))
            return m.txn.count(bucket="orders")

        assert db.exec_multi(multi) == 1
        assert db.buckets() == ["orders", "users"]
        st = db.stat()
        assert st["entries"] == 3 + 3 + 1
        db.check()
        db.sync()
        db.copy(os.path.join(d, "backup.db"))
        db.copy(os.path.join(d, "backup.db"), True, overwrite=True)
        db.compact()
    closed: bool = db.closed
    assert closed
    db.close()

    with DB(os.path.join(d, "backup.db"), readonly=True, create=False) as ro:
        assert ro.readonly
        try:
            with ro.begin(write=True):
                pass
        except btree_store.ReadonlyError:
            pass
    mem = DB.memory(from_path=os.path.join(d, "backup.db"), check_commits=True)
    assert_type(mem, DB)
    with mem:
        assert mem.view("users", lambda t: t.get(b"u1")) == b"alice"
    with DB(":memory:", check_commits=False) as m2:
        assert m2.stat()["entries"] == 0

    errors: list[type[btree_store.Error]] = [
        btree_store.CorruptionError, btree_store.ClosedError, btree_store.LockedError,
        btree_store.PanicError, btree_store.DiskError, btree_store.DiskFullError,
        btree_store.BucketNotFoundError, btree_store.BucketExistsError,
        btree_store.ReadonlyError,
    ]
    assert all(issubclass(e, btree_store.Error) for e in errors)
    try:
        DB(os.path.join(d, "missing", "x.db"))
    except FileNotFoundError as e:
        assert e.filename is not None
    assert btree_store.__version__

    fio = FaultIO()
    # _io is a hidden test-only option (not in the text signature, so not in the stub)
    with DB(os.path.join(d, "faults.db"), _io=fio) as fdb:  # type: ignore[call-arg]
        fio.fail_nth("sync", 1)
        try:
            with fdb.begin(write=True) as w2:
                w2.put(b"x", b"y")
        except btree_store.DiskError as e:
            assert e.errno is not None
        assert fio.fired and fio.in_use and fio.count("any") > 0
    assert isinstance(crc32c(b"abc", 0), int) and crc32c_impl() in ("sse4.2", "armv8", "table")


async def async_api(d: str) -> None:
    async with aio.open(os.path.join(d, "async.db"), sync=False) as adb:
        assert_type(adb, aio.AsyncDB)
        assert not adb.closed and not adb.readonly
        assert adb.page_size > 0 and adb.max_key_size > 0 and adb.path
        assert_type(adb.db, DB)
        async with adb.begin(write=True) as w:
            assert_type(w, aio.AsyncTxn)
            assert await w.put(b"a", b"1")
            await w.put(b"b", b"2", False, bucket=None)
            await w.create_bucket("logs")
            assert await w.put_many([(b"l1", b"x"), (b"l2", b"y")], bucket="logs") == 2
            assert await w.delete_many([b"l2"], bucket="logs") == 1
            assert await w.replace(b"a", b"1b") == b"1"
            assert await w.pop(b"b") == b"2"
            assert await w.delete(b"a")
            await w.put(b"a", b"1")
            assert w.write and w.id > 0 and not w.closed and w.bucket is None
            assert_type(w.txn, Txn)
            assert w.db is adb
        tmp = await adb.begin(write=True)
        await tmp.create_bucket("gone")
        assert await tmp.drop_bucket("gone")
        await tmp.abort()
        async with adb.begin(bucket="logs") as r:
            assert await r.get(b"l1") == b"x"
            assert await r.count() == 1 and await r.count(bucket="logs") == 1
            assert await r.contains(b"l1") and await r.contains(b"a", bucket=None) is False
            assert await r.get_many([b"l1", b"zz"]) == [b"x", None]
            assert [k async for k in r] == [b"l1"]
            ait = r.iter(prefix=b"l")
            assert_type(ait, "aio.AsyncIterator[tuple[memoryview, memoryview]]")
            assert_type(r.iter(values=False), "aio.AsyncIterator[memoryview]")
            assert_type(r.keys(), "aio.AsyncIterator[bytes]")
            assert_type(r.items(), "aio.AsyncIterator[tuple[bytes, bytes]]")
            assert await ait.seek(b"l1") and not ait.reverse
            got = [(bytes(k), bytes(v)) async for k, v in ait]
            assert got == [(b"l1", b"x")] and ait.key is None and ait.value is None
            assert [k async for k in r.keys()] == [b"l1"]
            assert [v async for v in r.values()] == [b"x"]
            assert [kv async for kv in r.items()] == [(b"l1", b"x")]
            assert await r.buckets() == ["logs"]
            st = await r.stat()
            assert st["entries"] == 1
        t2 = await adb.begin()
        await t2.commit()
        assert await adb.exec("logs", lambda t: t.put(b"l3", b"z"))
        assert await adb.view("logs", lambda t: t.count()) == 2
        assert await adb.exec_multi(lambda m: m.txn.count()) == 1
        assert await adb.buckets() == ["logs"]
        assert (await adb.stat())["entries"] == 3
        await adb.check()
        await adb.sync()
        await adb.copy(os.path.join(d, "async-copy.db"), compact=True)
        await adb.compact()
    adb2 = await aio.open(os.path.join(d, "async-copy.db"), readonly=True)
    await adb2.close()
    wrapped = aio.AsyncDB(DB(os.path.join(d, "async-copy.db")))
    await wrapped.close()


def dbm_api(d: str) -> None:
    path = os.path.join(d, "dbm.db")
    with bdbm.open(path, "c") as f:
        assert_type(f, bdbm.BtreeDBM)
        f[b"k"] = b"v"
        f["s"] = "text"
        assert f[b"s"] == b"text" and f.get(b"zz") is None and b"k" in f and len(f) == 2
        assert f.keys() == [b"k", b"s"] and list(f) == [b"k", b"s"]
        assert f.setdefault(b"n", b"1") == b"1"
        with f.batch() as b:
            b[b"x"] = b"1"
            del b[b"x"]
        f.sync()
    assert bdbm.whichdb(path) == bdbm.NAME
    try:
        bdbm.open(os.path.join(d, "nope.db"), "r")
    except FileNotFoundError:
        pass
    assert issubclass(bdbm.error, OSError)
    g = bdbm.open(path, "w", 0o600)
    g.clear()
    assert len(g) == 0
    g[b"k"] = b"v"
    g.close()
    with bdbm.open_shelf(os.path.join(d, "shelf.db")) as sh:
        sh["obj"] = {"a": [1, 2]}
        assert sh["obj"] == {"a": [1, 2]}
    bdbm.register()
    import dbm as std_dbm

    with shelve.open(os.path.join(d, "std-shelf")) as sh2:
        sh2["n"] = 1
    assert std_dbm.whichdb(os.path.join(d, "std-shelf")) == bdbm.NAME
    with std_dbm.open(path, "r") as std:
        assert std[b"k"] == b"v"
    x: Any = bdbm.BtreeDBM(path, "r")
    x.close()


def testing_api(d: str) -> None:
    """btree_store.testing (a simulated machine: disk faults, crash, power loss) and
    btree_store.hypothesis (a state machine for the user's own data layer)."""
    with FaultyMachine(os.path.join(d, "machine.db")) as m:
        db = m.open(sync=True)
        assert_type(db, DB)
        with db.begin(write=True) as w:
            w.put(b"k", b"durable")
        m.fail_after(0, kind="write", error="ENOSPC")
        try:
            with db.begin(write=True) as w:
                w.put(b"k", b"x" * 100000)
        except btree_store.DiskFullError:
            pass
        m.heal()
        m.crash()
        db = m.reopen()
        with db.begin(write=True, sync=False) as w:
            w.put(b"k2", b"maybe")
        assert m.unsynced() > 0 and not m.closed
        m.power_loss(mode="tear", seed=7)
        db = m.reopen()
        with db.begin() as r:
            assert r.get(b"k") == b"durable"
        assert m.last_seed == 7 and m.path

    class Counters:
        def __init__(self, db: DB) -> None:
            self.db = db

        def incr(self, name: bytes) -> int:
            with self.db.begin(write=True) as w:
                n = int(w.get(name, b"0")) + 1
                w.put(name, b"%d" % n)
                return n

        def as_dict(self) -> dict[bytes, int]:
            with self.db.begin() as r:
                return {k: int(v) for k, v in r.items()}

    class CounterMachine(LayerMachine):
        operations = st.sampled_from([b"a", b"b"])
        backend = "memory"

        def open_layer(self, db: DB) -> Counters:
            return Counters(db)

        def apply(self, layer: Counters, op: bytes) -> int:
            return layer.incr(op)

        def apply_model(self, model: dict[bytes, int], op: bytes) -> int:
            model[op] = model.get(op, 0) + 1
            return model[op]

        def read_state(self, layer: Counters) -> dict[bytes, int]:
            return layer.as_dict()

    case = CounterMachine.TestCase
    case.settings = settings(max_examples=3, stateful_step_count=5, deadline=None,
                             database=None)
    result = unittest.TextTestRunner(stream=io.StringIO()).run(
        unittest.defaultTestLoader.loadTestsFromTestCase(case))
    assert result.wasSuccessful() and result.testsRun == 1, result.errors + result.failures


def main() -> None:
    d = sys.argv[1]
    sync_api(d)
    asyncio.run(async_api(d))
    dbm_api(d)
    testing_api(d)
    print("user_script: ok")


if __name__ == "__main__":
    main()
