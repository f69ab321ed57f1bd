"""test_aio.py - btree_store.aio: asyncio transactions, iterators and the database calls.

Every test drives an event loop with asyncio.run (no pytest-asyncio). What is checked:
results equal the synchronous API's; cache hits run inline (no worker thread is created)
while operations that need the disk (overflow values, pages missing from the cache under
FaultIO, whose I/O has no non-blocking read, spills) run on the transaction's worker; the
event loop keeps running while a commit, or a write begin waiting for the writer lock, is
in flight (proved with events, never with timings); iterators resume correctly after a step
had to move to the worker; cancellation and errors leave the database usable.

Layer: tests only; uses the public API of btree_store and btree_store.aio (and the private
counters of AsyncTxn to see where an operation ran).
"""
import asyncio
import threading

import pytest

import btree_store
from btree_store import _testing, aio

BIG = 20000  # a value this long is stored in overflow pages: reading it needs the disk


def run(coro):
    return asyncio.run(coro)


def big(i):
    return bytes([i % 251]) * BIG


def fill(db, n=200, bucket=None, every_big=0):
    with db.begin(write=True) as t:
        if bucket:
            t.create_bucket(bucket)
        for i in range(n):
            v = big(i) if every_big and i % every_big == 0 else b"v%d" % i
            t.put(b"k%04d" % i, v, bucket=bucket)


def sync_items(db, **kw):
    with db.begin() as t:
        return [tuple(bytes(x) for x in item) if isinstance(item, tuple) else bytes(item)
                for item in t.iter(**kw)]


async def async_items(txn, **kw):
    out = []
    async for item in txn.iter(**kw):
        out.append(tuple(bytes(x) for x in item) if isinstance(item, tuple) else bytes(item))
    return out


# ---- basics ----

def test_roundtrip_and_sync_view(open_db, tmp_path):
    path = str(tmp_path / "a.bs")

    async def main():
        async with aio.open(path) as adb:
            assert isinstance(adb, aio.AsyncDB) and not adb.closed
            async with adb.begin(write=True) as txn:
                assert txn.write and not txn.closed
                assert await txn.put(b"a", b"1") is True
                assert await txn.put(b"a", b"x", overwrite=False) is False
                assert await txn.put(b"b", b"2") is True
                assert await txn.replace(b"b", b"3") == b"2"
                assert await txn.pop(b"zz", b"dflt") == b"dflt"
                with pytest.raises(KeyError):
                    await txn.pop(b"zz")
                await txn.create_bucket("orders")
                await txn.put(b"o1", b"apples", bucket="orders")
                assert await txn.count() == 2
                assert await txn.count(bucket="orders") == 1
                assert await txn.contains(b"a") and not await txn.contains(b"q")
                assert await txn.contains(b"o1", bucket="orders")
                assert await txn.buckets() == ["orders"]
                await txn.put(b"gone", b"x")
                assert await txn.delete(b"gone") is True
                assert await txn.delete(b"gone") is False
            assert txn.closed
            async with adb.begin() as r:
                assert not r.write
                assert await r.get(b"a") == b"1"
                assert await r.get(b"b") == b"3"
                assert await r.get(b"nope", b"d") == b"d"
                assert await r.get(b"o1", bucket="orders") == b"apples"
                assert [k async for k in r] == [b"a", b"b"]
            assert await adb.buckets() == ["orders"]
            st = await adb.stat()
            assert st["page_size"] == adb.page_size
            await adb.check()
        assert adb.closed

    run(main())
    db = open_db(path)
    with db.begin() as t:
        assert dict((bytes(k), bytes(v)) for k, v in t.iter()) == {b"a": b"1", b"b": b"3"}


def test_await_begin_commit_abort_and_exception(open_db):
    db = open_db()

    async def main():
        adb = aio.AsyncDB(db)
        txn = await adb.begin(write=True)
        await txn.put(b"k", b"v")
        await txn.commit()
        assert txn.closed
        with pytest.raises(btree_store.ClosedError):
            await txn.put(b"k2", b"v")
        with pytest.raises(btree_store.ClosedError):
            await txn.commit()
        txn = await adb.begin(write=True)
        await txn.put(b"k3", b"v")
        await txn.abort()
        await txn.abort()  # no-op once ended
        with pytest.raises(ZeroDivisionError):
            async with adb.begin(write=True) as t:
                await t.put(b"k4", b"v")
                1 / 0
        async with adb.begin() as r:
            assert await r.get(b"k") == b"v"
            assert await r.get(b"k3") is None and await r.get(b"k4") is None
            with pytest.raises(btree_store.ReadonlyError):
                await r.put(b"x", b"y")
            with pytest.raises(TypeError):
                await r.get("str key")
            with pytest.raises(btree_store.BucketNotFoundError):
                await r.get(b"k", bucket="missing")

    run(main())


def test_database_level_calls(open_db):
    db = open_db()

    async def main():
        adb = aio.AsyncDB(db)
        assert adb.db is db and adb.path == db.path and not adb.readonly
        assert adb.max_key_size == db.max_key_size
        assert await adb.exec("b", lambda t: t.put(b"x", b"1")) is True
        assert await adb.view("b", lambda t: t.get(b"x")) == b"1"

        def multi(m):
            m.execute("c", lambda t: t.put(b"y", b"2"))
            return "done"

        assert await adb.exec_multi(multi) == "done"
        assert await adb.buckets() == ["b", "c"]
        with pytest.raises(TypeError):
            aio.AsyncDB("not a db")

    run(main())


# ---- where operations run ----

def test_cache_hits_run_inline_without_a_thread(open_db):
    db = open_db()
    fill(db, 300)
    # warm the cache
    assert len(sync_items(db)) == 300

    async def main():
        adb = aio.AsyncDB(db)
        before = threading.active_count()
        async with adb.begin() as r:
            for i in range(300):
                assert await r.get(b"k%04d" % i) == b"v%d" % i
            assert len(await async_items(r)) == 300
            assert r._offloaded == 0 and r._inline >= 600
            assert r._worker is None
        async with adb.begin(write=True) as w:  # the write begin runs on a worker...
            for i in range(50):
                await w.put(b"k%04d" % i, b"new")  # ...its cached puts inline
            assert w._inline == 50 and w._offloaded == 0
            assert w._worker is not None  # the one that began it (and will commit it)
        assert w._offloaded == 1  # the commit
        assert threading.active_count() <= before + 1  # at most the one pooled worker

    run(main())


def test_overflow_values_and_misses_go_to_the_worker(factory):
    path = factory.new_path()
    db = factory.open(path)
    fill(db, 100, every_big=10)
    db.close()
    # FaultIO has no non-blocking read: every page missing from the engine's cache needs I/O
    db = factory.open(path, _io=_testing.FaultIO())

    async def main():
        adb = aio.AsyncDB(db)
        async with adb.begin() as r:
            assert await r.get(b"k0001") == b"v1"  # cold cache: the pages are read on the worker
            assert r._offloaded == 1 and r._inline == 0
            assert await r.get(b"k0002") == b"v2"  # now cached
            assert r._inline == 1
            assert await r.get(b"k0010") == big(10)  # overflow value: always the worker
            assert r._offloaded == 2
            worker = r._worker
            assert worker is not None
        assert r._worker is None and worker in adb._idle  # returned for the next transaction
        async with adb.begin(write=True) as w:
            assert w._worker is worker  # reused
            await w.put(b"huge", b"h" * BIG)  # an overflow run is written at put: the worker
            await w.put(b"small", b"s")
            assert w._offloaded == 1 and w._inline == 1
        async with adb.begin() as r:
            assert await r.get(b"huge") == b"h" * BIG

    run(main())


def test_try_nowait_refuses_and_changes_nothing(open_db):
    from btree_store._core import _try_nowait

    db = open_db()
    blocked = object()
    with db.begin(write=True) as t:
        t.put(b"big", big(1))
        assert _try_nowait(blocked, t.put, b"big2", big(2)) is blocked
        assert t.get(b"big2") is None
        assert _try_nowait(blocked, t.get, b"big") is blocked
        assert _try_nowait(blocked, t.replace, b"big", b"x") is blocked
        assert t.get(b"big") == big(1)
        assert _try_nowait(blocked, t.put, b"small", b"s") is True
        assert _try_nowait(blocked, t.get, key=b"small") == b"s"
        with pytest.raises(TypeError):
            _try_nowait(blocked, t.get, "str")
        with pytest.raises(TypeError):
            _try_nowait(blocked)
    # the mode ends with the call: a plain call afterwards may wait again
    with db.begin() as t:
        assert t.get(b"big") == big(1) and t.get(b"big2") is None


# ---- the loop is not blocked ----

class _GatedTxn:
    """A stand-in for a write Txn whose commit() waits for `release` (so the test can look
    at the loop while the commit is in flight) and records the thread it ran on."""

    def __init__(self, txn):
        self._txn = txn
        self.loop_thread = threading.get_ident()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.thread = None

    def __getattr__(self, name):
        return getattr(self._txn, name)

    def commit(self):
        self.thread = threading.get_ident()
        if self.thread == self.loop_thread:
            raise AssertionError("commit() ran on the event loop's thread")
        self.entered.set()
        assert self.release.wait(120)
        return self._txn.commit()


def test_event_loop_runs_while_a_commit_is_in_flight(factory):
    fio = _testing.FaultIO()
    db = factory.open(_io=fio)

    async def main():
        loop = asyncio.get_running_loop()
        adb = aio.AsyncDB(db)
        txn = await adb.begin(write=True)
        await txn.put(b"k", b"v")
        gate = _GatedTxn(txn._txn)
        txn._txn = gate
        syncs = fio.count("sync")
        commit = asyncio.ensure_future(txn.commit())
        # wait (without blocking the loop) until the worker is inside commit()
        await loop.run_in_executor(None, gate.entered.wait)
        ticked = asyncio.Event()
        loop.call_soon(ticked.set)  # a loop callback that must run during the commit
        await ticked.wait()
        assert not commit.done()
        async with adb.begin() as r:  # other transactions go on meanwhile
            assert await r.get(b"k") is None
        assert fio.count("sync") == syncs  # nothing synced yet: the commit is held
        gate.release.set()
        await commit
        assert gate.thread != threading.get_ident()  # the commit ran on the worker
        assert fio.count("sync") > syncs
        async with adb.begin() as r:
            assert await r.get(b"k") == b"v"

    run(main())


def test_event_loop_runs_while_a_write_begin_waits_for_the_lock(open_db):
    db = open_db()
    holding = threading.Event()
    release = threading.Event()

    def sync_writer():
        with db.begin(write=True) as t:
            t.put(b"from", b"thread")
            holding.set()
            assert release.wait(120)

    th = threading.Thread(target=sync_writer)
    th.start()
    assert holding.wait(60)

    async def main():
        adb = aio.AsyncDB(db)
        begin = asyncio.ensure_future(adb.begin(write=True, timeout=60))
        ticks = 0
        for _ in range(20):  # the loop keeps running while the begin waits in its thread
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 20 and not begin.done()
        async with adb.begin() as r:
            assert await r.get(b"from") is None
        release.set()
        txn = await begin
        assert await txn.get(b"from") == b"thread"
        await txn.put(b"from", b"loop")
        await txn.commit()

    try:
        run(main())
    finally:
        release.set()
        th.join()
    with db.begin() as t:
        assert t.get(b"from") == b"loop"


def test_cancelled_write_begin_releases_the_writer_lock(open_db):
    db = open_db()
    holding = threading.Event()
    release = threading.Event()

    def sync_writer():
        with db.begin(write=True):
            holding.set()
            assert release.wait(120)

    th = threading.Thread(target=sync_writer)
    th.start()
    assert holding.wait(60)

    async def main():
        adb = aio.AsyncDB(db)
        begin = asyncio.ensure_future(adb.begin(write=True))
        for _ in range(5):
            await asyncio.sleep(0)
        begin.cancel()
        with pytest.raises(asyncio.CancelledError):
            await begin
        release.set()
        # the cancelled begin got the lock once the thread let go, and gave it back
        async with adb.begin(write=True, timeout=60) as txn:
            await txn.put(b"after", b"cancel")

    try:
        run(main())
    finally:
        release.set()
        th.join()
    with db.begin() as t:
        assert t.get(b"after") == b"cancel"


# ---- concurrency inside the loop ----

def test_many_writers_are_serialized(open_db):
    db = open_db()
    fill(db, 0)

    async def bump(adb, i):
        async with adb.begin(write=True) as txn:
            n = int(await txn.get(b"n", b"0"))
            await asyncio.sleep(0)  # let the other writers queue up
            await txn.put(b"n", b"%d" % (n + 1))
            await txn.put(b"w%d" % i, big(i) if i % 3 == 0 else b"x")

    async def main():
        adb = aio.AsyncDB(db)
        await asyncio.gather(*(bump(adb, i) for i in range(12)))
        async with adb.begin() as r:
            assert await r.get(b"n") == b"12"
            assert await r.count() == 13

    run(main())


def test_concurrent_operations_on_one_transaction_keep_their_order(open_db):
    db = open_db()
    fill(db, 60, every_big=4)

    async def main():
        adb = aio.AsyncDB(db)
        async with adb.begin() as r:
            keys = [b"k%04d" % i for i in range(60)]
            got = await asyncio.gather(*(r.get(k) for k in keys))
            assert got == [big(i) if i % 4 == 0 else b"v%d" % i for i in range(60)]
            assert r._offloaded >= 15
        async with adb.begin(write=True) as w:
            # a put of a big value (worker) then gets of it: each sees the one before
            ops = []
            for i in range(20):
                ops.append(w.put(b"x", big(i)))
                ops.append(w.get(b"x"))
            res = await asyncio.gather(*ops)
            assert res[1::2] == [big(i) for i in range(20)]

    run(main())


# ---- iterators ----

@pytest.mark.parametrize("kw", [
    {}, {"reverse": True}, {"prefix": b"k00"}, {"start": b"k0013", "stop": b"k0077"},
    {"start": b"k0013", "stop": b"k0077", "reverse": True}, {"keys": False},
    {"values": False, "reverse": True},
])
def test_async_iteration_equals_sync_iteration(factory, kw):
    path = factory.new_path()
    db = factory.open(path)
    fill(db, 150, every_big=7)
    expect = sync_items(db, **kw)
    db.close()
    db = factory.open(path, _io=_testing.FaultIO(), cache_size=0)  # misses need the worker

    async def main():
        adb = aio.AsyncDB(db)
        async with adb.begin() as r:
            got = await async_items(r, **kw)
            assert r._offloaded > 0  # some steps resumed on the worker
            assert got == expect
            it = r.iter(**kw)
            assert it.key is None and it.reverse == bool(kw.get("reverse"))

    run(main())


def test_iterator_seek_and_key_value(open_db):
    db = open_db()
    fill(db, 50, every_big=5)

    async def main():
        adb = aio.AsyncDB(db)
        async with adb.begin() as r:
            it = r.iter()
            assert await it.seek(b"k0020") is True
            k, v = await it.__anext__()
            assert bytes(k) == b"k0020" and bytes(v) == big(20)
            assert it.key == b"k0020" and it.value == big(20)
            k, v = await it.__anext__()
            assert bytes(k) == b"k0021"
            assert await it.seek(b"zzz") is False
            with pytest.raises(StopAsyncIteration):
                await it.__anext__()
            rit = r.iter(reverse=True)
            assert await rit.seek(b"k0030a") is True
            assert bytes((await rit.__anext__())[0]) == b"k0030"
            assert bytes((await rit.__anext__())[0]) == b"k0029"

    run(main())


def test_write_iteration_sees_its_own_changes_like_sync(factory):
    def script_sync(txn):
        out = []
        for k, v in txn.iter():
            k = bytes(k)
            out.append((k, bytes(v)))
            n = int(k[1:])
            if n % 5 == 0:
                txn.put(b"k%04d" % (n + 2), big(n))  # ahead of the iterator: seen
                txn.delete(b"k%04d" % (n + 1))  # the next one: skipped
        return out

    async def script_async(txn):
        out = []
        async for k, v in txn.iter():
            k = bytes(k)
            out.append((k, bytes(v)))
            n = int(k[1:])
            if n % 5 == 0:
                await txn.put(b"k%04d" % (n + 2), big(n))
                await txn.delete(b"k%04d" % (n + 1))
        return out

    a, b = factory.open(), factory.open()
    fill(a, 80)
    fill(b, 80)
    with a.begin(write=True) as t:
        expect = script_sync(t)

    async def main():
        adb = aio.AsyncDB(b)
        async with adb.begin(write=True) as t:
            got = await script_async(t)
            assert t._offloaded > 1  # the big puts and the steps queued behind them
        return got

    assert run(main()) == expect
    assert sync_items(a) == sync_items(b)


# ---- closing ----

def test_close_ends_transactions_and_workers(factory):
    path = factory.new_path()
    first = factory.open(path)
    fill(first, 20, every_big=2)
    first.close()

    async def main():
        adb = await aio.open(path)
        r = await adb.begin()
        assert await r.get(b"k0000") == big(0)  # r now has a worker
        w = await adb.begin(write=True)
        await w.put(b"a", b"b")
        await adb.close()
        assert adb.closed and r.closed and w.closed
        assert adb._idle == []
        with pytest.raises(btree_store.ClosedError):
            await r.get(b"k0001")
        with pytest.raises(btree_store.ClosedError):
            await w.commit()
        with pytest.raises(btree_store.ClosedError):
            await adb.stat()
        with pytest.raises(btree_store.ClosedError):
            await adb.begin()

    run(main())
    db = factory.open(path)
    with db.begin() as t:
        assert t.get(b"a") is None


# ---- the newer calls: batch calls, stat, keys/values/items, copy/compact/sync ----

def test_newer_calls_equal_the_synchronous_api(open_db, tmp_path):
    db = open_db()
    fill(db, 120, bucket="b", every_big=40)

    async def main():
        adb = aio.AsyncDB(db)
        async with adb.begin(write=True) as w:
            pairs = ((b"g%03d" % i, b"%d" % i) for i in range(50))  # a generator
            assert await w.put_many(pairs, bucket="b") == 50
            assert await w.put_many({b"g000": b"no"}, bucket="b", overwrite=False) == 0
            assert await w.put_many([(b"z1", b"1"), (b"z2", b"2")], bucket="b",
                                    append=True) == 2
            assert await w.delete_many(iter([b"z2", b"missing"]), bucket="b") == 1
            assert await w.get_many((k for k in [b"g001", b"nope"]), bucket="b") == [b"1", None]
            assert await w.stat(bucket="b") == w.txn.stat(bucket="b")
        with db.begin(bucket="b") as t:
            want_stat = t.stat()
            want_keys, want_values = list(t.keys()), list(t.values(reverse=True))
            want_items = list(t.items(b"g010", b"k0050"))
            want_many = t.get_many([b"k0000", b"k0001", b"x"])
        async with adb.begin(bucket="b") as r:
            assert await r.stat() == want_stat and want_stat["entries"] == 171
            assert [k async for k in r.keys()] == want_keys
            assert [v async for v in r.values(reverse=True)] == want_values
            assert [kv async for kv in r.items(b"g010", b"k0050")] == want_items
            assert await r.get_many([b"k0000", b"k0001", b"x"]) == want_many
            assert await r.count() == 171 and await r.count(bucket="b") == 171
            with pytest.raises(TypeError):
                await r.count("b")  # keyword-only, as in Txn.count
            with pytest.raises(TypeError):
                await r.stat("b")
            with pytest.raises(TypeError):
                await r.get_many(["str key"])
            with pytest.raises(btree_store.BucketNotFoundError):
                await r.stat(bucket="missing")
            with pytest.raises(btree_store.ReadonlyError):
                await r.put_many([(b"a", b"b")])
            with pytest.raises(btree_store.ReadonlyError):
                await r.delete_many([b"a"])
        with pytest.raises(btree_store.ClosedError):
            await r.stat()

        await adb.sync()
        dest = str(tmp_path / "copy.bs")
        await adb.copy(dest, compact=True)
        with pytest.raises(FileExistsError):
            await adb.copy(dest)  # exists, overwrite=False
        await adb.copy(dest, overwrite=True)
        with btree_store.DB(dest, readonly=True) as c:
            with c.begin(bucket="b") as t:
                assert list(t.items()) == list(db.begin(bucket="b").items())
        before = db.stat()["page_count"]
        async with adb.begin(write=True) as w:
            await w.delete_many([k for k in want_keys], bucket="b")
        await adb.compact()
        assert db.stat()["page_count"] < before
        t = db.begin()
        with pytest.raises(btree_store.Error):
            await adb.compact()  # a transaction is open
        t.abort()
        await adb.check()

    run(main())


def test_database_calls_run_on_a_worker_thread(open_db, tmp_path):
    db = open_db()
    fill(db, 50)
    loop_thread = threading.get_ident()
    seen = {}

    def spy(name):
        real = getattr(db, name)

        def call(*a, **kw):
            seen[name] = threading.get_ident()
            return real(*a, **kw)
        setattr(db, name, call)  # an instance attribute of the btree_store.DB subclass

    for name in ("sync", "copy", "compact", "check", "stat", "buckets"):
        spy(name)

    async def main():
        adb = aio.AsyncDB(db)
        await adb.sync()
        await adb.copy(str(tmp_path / "c.bs"))
        await adb.compact()
        await adb.check()
        await adb.stat()
        await adb.buckets()

    run(main())
    assert set(seen) == {"sync", "copy", "compact", "check", "stat", "buckets"}
    assert loop_thread not in seen.values()


def test_batch_and_stat_calls_where_they_run(factory):
    path = factory.new_path()
    db = factory.open(path)
    fill(db, 200)
    db.close()
    db = factory.open(path, _io=_testing.FaultIO())  # a page missing from the cache: I/O

    async def main():
        adb = aio.AsyncDB(db)
        keys = [b"k%04d" % i for i in range(0, 200, 3)]
        async with adb.begin() as r:
            want = [b"v%d" % i for i in range(0, 200, 3)]
            assert await r.get_many(keys) == want  # cold: on the worker
            assert r._offloaded == 1 and r._inline == 0
            st = await r.stat()  # every page is cached now: inline
            assert r._inline == 1 and r._offloaded == 1
            assert st["entries"] == 200
            assert await r.get_many(keys) == want
            assert r._inline == 2
        async with adb.begin(write=True) as w:
            n = w._offloaded
            assert await w.put_many([(b"n1", b"1")]) == 1  # a batch write: the worker
            assert await w.delete_many([b"n1"]) == 1
            assert w._offloaded == n + 2

    run(main())


@pytest.mark.parametrize("call", ["keys", "values", "items"])
def test_keys_values_items_resume_after_a_miss(factory, call):
    path = factory.new_path()
    db = factory.open(path)
    fill(db, 150, every_big=7)
    with db.begin() as t:
        expect = list(getattr(t, call)(reverse=call == "values"))
    db.close()
    db = factory.open(path, _io=_testing.FaultIO(), cache_size=0)

    async def main():
        adb = aio.AsyncDB(db)
        async with adb.begin() as r:
            got = [x async for x in getattr(r, call)(reverse=call == "values")]
            assert r._offloaded > 0
            assert got == expect and all(
                type(x) is bytes for item in got
                for x in (item if isinstance(item, tuple) else (item,)))

    run(main())
