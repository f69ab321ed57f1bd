"""btree_store.aio: asyncio access to a btree_store database, for event-loop code.

    import btree_store.aio as aio

    async with aio.open("data.bs") as db:                   # opened in a worker thread
        async with db.begin(write=True) as txn:             # commits on exit (in a thread)
            await txn.put(b"user:1", b"alice")
        async with db.begin() as txn:                       # a read-only snapshot
            value = await txn.get(b"user:1")
            async for key, val in txn.iter(prefix=b"user:"):
                print(bytes(key), bytes(val))

Where the work runs:
  - An operation whose pages are all in the cache runs inline, on the event loop's thread:
    the binding tries it in its no-I/O mode (``_core._try_nowait``), which costs no system
    call and no thread switch.
  - An operation that would have to wait for the disk (a cache miss the OS does not hold, an
    overflow value, a spill of a large transaction, a bucket drop) gives up before changing
    anything and is repeated on the transaction's worker thread; so are a write
    transaction's begin (which may wait for the writer lock) and commit (the fsync), the
    batch writes (put_many, delete_many: many engine calls, which may spill), and the
    database-level calls (open, close, check, repair, stat, buckets, sync, copy, compact, exec,
    view, exec_multi).
  - A transaction's operations run in the order they are awaited: once one is on the
    worker, the following ones queue behind it there until it is done.

Threads: every transaction that needs a thread gets one worker thread of its own (a
single-thread executor) for its lifetime; a write transaction gets it at begin, because the
engine ties the writer lock to the thread that began the transaction (a thread that began
a write transaction may not begin another until it ends; any thread may then use the
transaction, one call at a time). Idle workers are kept by the AsyncDB for the next
transaction, so a transaction that hits the cache creates no thread.

Iterators yield what ``Txn.iter`` yields (memoryviews the iterator may reuse on its next
step: ``bytes(view)`` keeps one). An iterator step that has to wait resumes on the worker
after the last key it yielded, exactly like the synchronous iterator's ``next()``.

Cancellation: cancelling a coroutine stops waiting for its operation, not the operation once
it runs on the worker; an operation still queued is dropped. A cancelled ``commit()`` may
or may not have committed (check ``txn.closed`` and the data); a cancelled write ``begin``
aborts the transaction it would have returned.

Layer: the Python package, on top of the public API of btree_store (DB, Txn, Iterator) and
the binding's internal no-wait call.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import threading
from typing import (TYPE_CHECKING, Any, Callable, Generator, Generic, Iterable, Literal,
                    Optional, TypeVar, cast, overload)

from . import DB, Iterator, Txn, WriteTxn, _core, _Multi
from ._core import _try_nowait

if TYPE_CHECKING:  # keys and values: any bytes-like object (as in the synchronous API)
    from typing_extensions import Buffer as _Bytes

__all__ = ["AsyncDB", "AsyncTxn", "AsyncIterator", "open"]

_T = TypeVar("_T")
_BLOCKED: Any = object()  # _try_nowait's answer when the call would have waited
_STOP: Any = object()  # next()'s default: the iterator is exhausted
_IDLE_WORKERS = 4  # idle worker threads an AsyncDB keeps for later transactions


def _new_worker() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="btree_store.aio")


class AsyncDB:
    """AsyncDB(db): asyncio access to an open :class:`btree_store.DB`.

    ``btree_store.aio.open(path, **options)`` opens the file in a worker thread and returns
    one. Closing the AsyncDB closes the DB. Use ``async with``, or ``await
    close()``. ``begin()`` starts an :class:`AsyncTxn`.
    """

    __slots__ = ("_db", "_idle", "_lock", "__weakref__")

    def __init__(self, db: DB) -> None:
        if not isinstance(db, _core.DB):
            raise TypeError(f"AsyncDB needs a btree_store.DB, not {type(db).__name__}")
        self._db = db
        self._idle: list[concurrent.futures.ThreadPoolExecutor] = []
        self._lock = threading.Lock()

    # ---- workers ----
    def _take_worker(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _new_worker()

    def _give_back(self, worker: concurrent.futures.ThreadPoolExecutor) -> None:
        with self._lock:
            if len(self._idle) < _IDLE_WORKERS and not self._db.closed:
                self._idle.append(worker)
                return
        worker.shutdown(wait=False)

    def _shutdown_workers(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.shutdown(wait=False)

    async def _in_thread(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """fn(*args, **kwargs) on a worker of our own (never one that may hold a write
        transaction), returned to the pool afterwards."""
        worker = self._take_worker()
        try:
            return await asyncio.wrap_future(worker.submit(fn, *args, **kwargs))
        finally:
            self._give_back(worker)

    # ---- properties ----
    @property
    def db(self) -> DB:
        """The wrapped synchronous DB."""
        return self._db

    @property
    def path(self) -> str | bytes:
        """The path given when the database was opened."""
        return self._db.path

    @property
    def closed(self) -> bool:
        """True once the database is closed."""
        return self._db.closed

    @property
    def readonly(self) -> bool:
        """True when the database was opened read-only."""
        return self._db.readonly

    @property
    def max_key_size(self) -> int:
        """Longest key in bytes."""
        return self._db.max_key_size

    @property
    def page_size(self) -> int:
        """Page size of the file in bytes."""
        return self._db.page_size

    def __repr__(self) -> str:
        return f"<btree_store.aio.AsyncDB {self._db!r}>"

    # ---- transactions ----
    def begin(self, write: bool = False, *, bucket: Optional[str] = None,
              timeout: Optional[float] = None) -> _Begin:
        """Start a transaction: ``txn = await db.begin(...)`` or ``async with
        db.begin(...) as txn`` (commits on normal exit, aborts on exception). Arguments as
        ``DB.begin``; a write transaction waits for the writer lock on its worker thread,
        without blocking the event loop."""
        return _Begin(self, bool(write), bucket, timeout)

    async def _begin(self, write: bool, bucket: Optional[str],
                     timeout: Optional[float]) -> AsyncTxn:
        loop = asyncio.get_running_loop()
        db = self._db
        if not write:
            txn = _try_nowait(_BLOCKED, db.begin, False, bucket=bucket)
            if txn is _BLOCKED:
                txn = await loop.run_in_executor(
                    None, functools.partial(db.begin, False, bucket=bucket))
            return AsyncTxn(self, txn, None, loop)
        worker = self._take_worker()
        cf = worker.submit(db.begin, True, bucket=bucket, timeout=timeout)
        try:
            txn = await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            # The begin may still be running on the worker: abort what it returns there.
            def undo(f: concurrent.futures.Future[WriteTxn]) -> None:
                try:
                    if not f.cancelled() and f.exception() is None:
                        f.result().abort()
                finally:
                    self._give_back(worker)

            cf.add_done_callback(undo)
            raise
        except BaseException:
            self._give_back(worker)
            raise
        return AsyncTxn(self, txn, worker, loop)

    # ---- database-level calls (on a worker thread) ----
    async def close(self) -> None:
        """Close the database (on a worker thread: it waits for calls in flight). Live
        transactions are aborted, as by ``DB.close``."""
        try:
            await self._in_thread(self._db.close)
        finally:
            self._shutdown_workers()

    async def check(self, max_problems: int = 100) -> None:
        """``DB.check(max_problems)`` on a worker thread (CorruptionError.problems lists
        every problem found)."""
        return await self._in_thread(self._db.check, max_problems)

    async def repair(self) -> bool:
        """``DB.repair()`` (rebuild a damaged freelist) on a worker thread."""
        return await self._in_thread(self._db.repair)

    async def stat(self) -> dict[str, Any]:
        """``DB.stat()`` on a worker thread."""
        return await self._in_thread(self._db.stat)

    async def buckets(self) -> list[str]:
        """``DB.buckets()`` on a worker thread."""
        return await self._in_thread(self._db.buckets)

    async def sync(self) -> None:
        """``DB.sync()`` (one fsync making every commit durable) on a worker thread."""
        return await self._in_thread(self._db.sync)

    async def copy(self, dest: str | bytes | os.PathLike[str] | os.PathLike[bytes],
                   compact: bool = False, *, overwrite: bool = False) -> None:
        """``DB.copy(dest, compact, overwrite=...)`` on a worker thread: a consistent
        backup of the newest commit while other transactions go on."""
        return await self._in_thread(self._db.copy, dest, compact, overwrite=overwrite)

    async def compact(self) -> None:
        """``DB.compact()`` on a worker thread (no transaction of this DB may be open)."""
        return await self._in_thread(self._db.compact)

    async def exec(self, bucket: str, fn: Callable[[WriteTxn], _T]) -> _T:
        """``DB.exec(bucket, fn)`` on a worker thread: fn is a plain (synchronous) function
        that gets the write transaction."""
        return await self._in_thread(self._db.exec, bucket, fn)

    async def view(self, bucket: str, fn: Callable[[Txn], _T]) -> _T:
        """``DB.view(bucket, fn)`` on a worker thread (fn synchronous)."""
        return await self._in_thread(self._db.view, bucket, fn)

    async def exec_multi(self, fn: Callable[[_Multi], _T]) -> _T:
        """``DB.exec_multi(fn)`` on a worker thread (fn synchronous)."""
        return await self._in_thread(self._db.exec_multi, fn)

    async def __aenter__(self) -> AsyncDB:
        """Return the AsyncDB itself."""
        return self

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> None:
        """Close the database (see close())."""
        await self.close()


class _Begin:
    """What ``AsyncDB.begin`` returns: awaitable (gives the AsyncTxn) and an async context
    manager (commits on normal exit, aborts on exception)."""

    __slots__ = ("_adb", "_args", "_txn")

    def __init__(self, adb: AsyncDB, write: bool, bucket: Optional[str],
                 timeout: Optional[float]) -> None:
        self._adb = adb
        self._args = (write, bucket, timeout)
        self._txn: Optional[AsyncTxn] = None

    def __await__(self) -> Generator[Any, None, AsyncTxn]:
        return self._adb._begin(*self._args).__await__()

    async def __aenter__(self) -> AsyncTxn:
        self._txn = await self._adb._begin(*self._args)
        return self._txn

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> bool:
        assert self._txn is not None
        return await self._txn.__aexit__(et, ev, tb)


class AsyncTxn:
    """A transaction of an :class:`AsyncDB` (from ``await db.begin()``); the async face of
    a :class:`btree_store.Txn`, with the same calls and arguments, awaited. Use ``async
    with`` (commits on normal exit, aborts on exception) or ``await commit()`` /
    ``await abort()``. ``async for key in txn`` yields the keys as bytes."""

    __slots__ = ("_adb", "_txn", "_worker", "_loop", "_pending", "_inline", "_offloaded",
                 "__weakref__")

    def __init__(self, adb: AsyncDB, txn: Txn,
                 worker: Optional[concurrent.futures.ThreadPoolExecutor],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._adb = adb
        self._txn = txn
        self._worker = worker
        self._loop = loop
        self._pending = 0  # operations submitted to the worker and not finished
        self._inline = 0  # operations that ran on the loop's thread (tests, diagnostics)
        self._offloaded = 0  # operations that ran on the worker

    # ---- where a call runs ----
    def _submit(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> asyncio.Future[_T]:
        """Queue fn on our worker (FIFO); the future resolves on the loop."""
        if self._worker is None:
            self._worker = self._adb._take_worker()
        self._pending += 1
        self._offloaded += 1
        try:
            cf = self._worker.submit(fn, *args, **kwargs)
        except BaseException:
            self._pending -= 1
            raise
        cf.add_done_callback(self._done_threadsafe)
        return asyncio.wrap_future(cf, loop=self._loop)

    def _done_threadsafe(self, cf: concurrent.futures.Future[Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._done)
        except RuntimeError:  # the loop is closed: nothing will queue behind us any more
            self._done()

    def _done(self) -> None:
        self._pending -= 1
        self._maybe_release()

    def _maybe_release(self) -> None:
        """Give the worker back once the transaction ended and nothing is queued on it."""
        if self._pending == 0 and self._worker is not None and self._txn.closed:
            worker, self._worker = self._worker, None
            self._adb._give_back(worker)

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """fn inline when it needs no disk and nothing is queued, else on the worker."""
        if self._pending == 0:
            r = _try_nowait(_BLOCKED, fn, *args, **kwargs)
            if r is not _BLOCKED:
                self._inline += 1
                return r  # type: ignore[no-any-return]
        return await self._submit(fn, *args, **kwargs)

    async def _on_worker(self, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            return await self._submit(fn, *args)
        finally:
            self._maybe_release()

    # ---- properties ----
    @property
    def txn(self) -> Txn:
        """The wrapped synchronous Txn (use it only from coroutines of this loop, and only
        while no operation of this AsyncTxn is in flight)."""
        return self._txn

    @property
    def _wtxn(self) -> WriteTxn:
        # the write calls (a read transaction raises ReadonlyError from them, as Txn does)
        return cast(WriteTxn, self._txn)

    @property
    def db(self) -> AsyncDB:
        """The AsyncDB this transaction belongs to."""
        return self._adb

    @property
    def write(self) -> bool:
        """True for a write transaction."""
        return self._txn.write

    @property
    def closed(self) -> bool:
        """True once the transaction ended."""
        return self._txn.closed

    @property
    def id(self) -> int:
        """The transaction id (see ``Txn.id``)."""
        return self._txn.id

    @property
    def bucket(self) -> Optional[str]:
        """The bucket calls default to (None: the default bucket)."""
        return self._txn.bucket

    def __repr__(self) -> str:
        return f"<btree_store.aio.AsyncTxn {self._txn!r}>"

    # ---- data calls ----
    async def get(self, key: _Bytes, default: Any = None, *,
                  bucket: Optional[str] = None) -> Any:
        """The value of key (bytes), or default."""
        return await self._call(self._txn.get, key, default, bucket=bucket)

    async def put(self, key: _Bytes, value: _Bytes, overwrite: bool = True, *,
                  bucket: Optional[str] = None) -> bool:
        """Store value under key; with overwrite=False an existing key is kept and False
        returned."""
        return await self._call(self._wtxn.put, key, value, overwrite, bucket=bucket)

    async def delete(self, key: _Bytes, *, bucket: Optional[str] = None) -> bool:
        """Remove key; True if it existed."""
        return await self._call(self._wtxn.delete, key, bucket=bucket)

    async def pop(self, key: _Bytes, *args: Any, bucket: Optional[str] = None) -> Any:
        """Remove key and return its value; ``pop(key, default)`` returns default when it is
        missing, ``pop(key)`` raises KeyError."""
        return await self._call(self._wtxn.pop, key, *args, bucket=bucket)

    async def replace(self, key: _Bytes, value: _Bytes, *,
                      bucket: Optional[str] = None) -> Optional[bytes]:
        """Store value under key and return the previous value (None if there was none)."""
        return await self._call(self._wtxn.replace, key, value, bucket=bucket)

    async def count(self, *, bucket: Optional[str] = None) -> int:
        """Number of entries in the bucket (O(1))."""
        return await self._call(self._txn.count, bucket=bucket)

    async def stat(self, *, bucket: Optional[str] = None) -> dict[str, int]:
        """``Txn.stat``: one bucket's entries, depth, pages by kind and key/value bytes
        (inline when its pages are cached, else on the worker)."""
        return await self._call(self._txn.stat, bucket=bucket)

    async def get_many(self, keys: Iterable[_Bytes], *,
                       bucket: Optional[str] = None) -> list[Optional[bytes]]:
        """The value (bytes) of each key, None where missing (``Txn.get_many``); the
        keys are collected first, so any iterable may be given."""
        return await self._call(self._txn.get_many, list(keys), bucket=bucket)

    async def put_many(self, items: Any, *, bucket: Optional[str] = None,
                       overwrite: bool = True, append: bool = False) -> int:
        """``Txn.put_many`` (pairs, or a dict) on the transaction's worker thread (a batch
        is made of many engine calls and may spill to disk); returns how many were
        written."""
        return await self._on_worker(functools.partial(
            self._wtxn.put_many, items, bucket=bucket, overwrite=overwrite, append=append))

    async def delete_many(self, keys: Iterable[_Bytes], *, bucket: Optional[str] = None) -> int:
        """``Txn.delete_many`` on the transaction's worker thread; returns how many of the
        keys existed."""
        return await self._on_worker(functools.partial(
            self._wtxn.delete_many, keys, bucket=bucket))

    async def contains(self, key: _Bytes, *, bucket: Optional[str] = None) -> bool:
        """True if key is present (``key in txn`` of the synchronous API)."""
        if bucket is None:
            return await self._call(self._txn.__contains__, key)
        return await self._call(_contains_in, self._txn, key, bucket)

    @overload
    def iter(self, start: Optional[_Bytes] = None, stop: Optional[_Bytes] = None, *,
             reverse: bool = False, bucket: Optional[str] = None, keys: Literal[True] = True,
             values: Literal[True] = True, prefix: Optional[_Bytes] = None,
             ) -> AsyncIterator[tuple[memoryview, memoryview]]: ...

    @overload
    def iter(self, start: Optional[_Bytes] = None, stop: Optional[_Bytes] = None, *,
             reverse: bool = False, bucket: Optional[str] = None, keys: Literal[True] = True,
             values: Literal[False], prefix: Optional[_Bytes] = None,
             ) -> AsyncIterator[memoryview]: ...

    @overload
    def iter(self, start: Optional[_Bytes] = None, stop: Optional[_Bytes] = None, *,
             reverse: bool = False, bucket: Optional[str] = None, keys: Literal[False],
             values: Literal[True] = True, prefix: Optional[_Bytes] = None,
             ) -> AsyncIterator[memoryview]: ...

    @overload
    def iter(self, start: Optional[_Bytes] = None, stop: Optional[_Bytes] = None, *,
             reverse: bool = False, bucket: Optional[str] = None, keys: bool = True,
             values: bool = True, prefix: Optional[_Bytes] = None) -> AsyncIterator[Any]: ...

    def iter(self, start: Optional[_Bytes] = None, stop: Optional[_Bytes] = None, *,
             reverse: bool = False, bucket: Optional[str] = None, keys: bool = True,
             values: bool = True, prefix: Optional[_Bytes] = None) -> AsyncIterator[Any]:
        """An async iterator over [start, stop) (arguments and items as ``Txn.iter``):
        ``async for key, value in txn.iter(...)``."""
        return AsyncIterator(self, functools.partial(
            self._txn.iter, start, stop, reverse=reverse, bucket=bucket, keys=keys,
            values=values, prefix=prefix))

    def keys(self, start: Optional[_Bytes] = None, stop: Optional[_Bytes] = None, *,
             reverse: bool = False, bucket: Optional[str] = None,
             prefix: Optional[_Bytes] = None) -> AsyncIterator[bytes]:
        """``async for key in txn.keys(...)``: the keys as bytes (``Txn.keys``)."""
        return AsyncIterator(self, functools.partial(
            self._txn.keys, start, stop, reverse=reverse, bucket=bucket, prefix=prefix))

    def values(self, start: Optional[_Bytes] = None, stop: Optional[_Bytes] = None, *,
               reverse: bool = False, bucket: Optional[str] = None,
               prefix: Optional[_Bytes] = None) -> AsyncIterator[bytes]:
        """``async for value in txn.values(...)``: the values as bytes (``Txn.values``)."""
        return AsyncIterator(self, functools.partial(
            self._txn.values, start, stop, reverse=reverse, bucket=bucket, prefix=prefix))

    def items(self, start: Optional[_Bytes] = None, stop: Optional[_Bytes] = None, *,
              reverse: bool = False, bucket: Optional[str] = None,
              prefix: Optional[_Bytes] = None) -> AsyncIterator[tuple[bytes, bytes]]:
        """``async for key, value in txn.items(...)``: (bytes, bytes) pairs
        (``Txn.items``)."""
        return AsyncIterator(self, functools.partial(
            self._txn.items, start, stop, reverse=reverse, bucket=bucket, prefix=prefix))

    def __aiter__(self) -> _KeyIterator:
        """async for key in atxn: the keys of the bucket, as bytes."""
        return _KeyIterator(self.iter(values=False))

    # ---- buckets ----
    async def create_bucket(self, name: str, exist_ok: bool = True) -> None:
        """Create a named bucket (see ``Txn.create_bucket``)."""
        return await self._call(self._wtxn.create_bucket, name, exist_ok)

    async def drop_bucket(self, name: str) -> bool:
        """Drop a named bucket and all its data; False if it did not exist."""
        return await self._call(self._wtxn.drop_bucket, name)

    async def buckets(self) -> list[str]:
        """Sorted names of the named buckets in this transaction's snapshot."""
        return await self._call(self._txn.buckets)

    # ---- the end ----
    async def commit(self) -> None:
        """Commit (a write transaction: on the worker thread, where it waits for the fsync;
        a read transaction just ends)."""
        if self._txn.write:
            return await self._on_worker(self._txn.commit)
        await self._call(self._txn.commit)
        self._maybe_release()

    async def abort(self) -> None:
        """Discard the changes and end the transaction (no-op if it already ended)."""
        if self._txn.write:
            return await self._on_worker(self._txn.abort)
        await self._call(self._txn.abort)
        self._maybe_release()

    async def __aenter__(self) -> AsyncTxn:
        """Return the AsyncTxn itself."""
        return self

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> bool:
        """Commit when the block ended normally, abort when it raised (the commit runs on a
        worker thread); returns False."""
        exit_ = self._txn.__exit__
        if self._txn.write:
            r = await self._on_worker(exit_, et, ev, tb)
        else:
            r = await self._call(exit_, et, ev, tb)
            self._maybe_release()
        return bool(r)


def _contains_in(txn: Txn, key: Any, bucket: str) -> bool:
    # (a bound view of the transaction answers `in` for its bucket without reading the value)
    return key in txn._bind(bucket)


class AsyncIterator(Generic[_T]):
    """``async for`` over a range of a transaction (from ``AsyncTxn.iter``). Steps that hit
    the cache run inline; one that would wait for the disk runs on the transaction's worker
    and continues after the last key yielded, as ``Iterator.__next__`` does."""

    __slots__ = ("_atxn", "_make", "_it", "_last", "_broken")

    def __init__(self, atxn: AsyncTxn, make: Callable[[], Iterator[_T]]) -> None:
        self._atxn = atxn
        self._make = make
        self._it: Optional[Iterator[_T]] = None
        self._last: Optional[bytes] = None  # key of the last item yielded (for a resume)
        self._broken = False  # an inline step gave up: the synchronous iterator is finished

    def __aiter__(self) -> AsyncIterator[_T]:
        """Return the AsyncIterator itself."""
        return self

    async def __anext__(self) -> _T:
        """The next item, as Txn.iter() would yield it (StopAsyncIteration at the end)."""
        atxn = self._atxn
        it = self._it
        if atxn._pending == 0:
            if it is None:
                it = _try_nowait(_BLOCKED, self._make)
                if it is not _BLOCKED:
                    self._it = it
            if it is not _BLOCKED:
                r = _try_nowait(_BLOCKED, next, it, _STOP)
                if r is not _BLOCKED:
                    atxn._inline += 1
                    return self._yielded(r)
                self._broken = True
        # The step gave up (its iterator is then finished), or work is queued: continue on
        # the worker from the last key yielded.
        return self._yielded(await atxn._submit(self._resume))

    def _yielded(self, r: Any) -> _T:
        if r is _STOP:
            raise StopAsyncIteration
        assert self._it is not None
        self._last = self._it.key
        return cast(_T, r)

    def _resume(self) -> Any:
        """On the worker: the next item after self._last (the first one if none)."""
        it, last = self._it, self._last
        if it is None:
            it = self._it = self._make()
            return next(it, _STOP)
        if not self._broken:  # a step queued behind other work: the iterator is intact
            return next(it, _STOP)
        self._broken = False
        if last is None:  # the first step gave up: start again
            it = self._it = self._make()
            return next(it, _STOP)
        if not it.seek(last):
            return _STOP
        if it.key == last:
            next(it)  # the pending item is the one already yielded
        return next(it, _STOP)

    async def seek(self, key: _Bytes) -> bool:
        """Move to the first key >= key (<= key in reverse); the next step yields it. True
        if there is one in the range."""
        atxn = self._atxn
        if self._it is None:
            it = await atxn._call(self._make)
            self._it = it
        self._last = None
        self._broken = False
        return await atxn._call(self._it.seek, key)

    @property
    def key(self) -> Optional[bytes]:
        """A bytes copy of the current key (None before the first step and at the end)."""
        return None if self._it is None else self._it.key

    @property
    def value(self) -> Optional[bytes]:
        """A bytes copy of the current value (None before the first step and at the end)."""
        return None if self._it is None else self._it.value

    @property
    def reverse(self) -> bool:
        """True for a reverse (downward) iterator."""
        return bool(self._make.keywords["reverse"])  # type: ignore[attr-defined]


class _KeyIterator:
    """``async for key in txn``: the keys as bytes."""

    __slots__ = ("_it",)

    def __init__(self, it: AsyncIterator[memoryview]) -> None:
        self._it = it

    def __aiter__(self) -> _KeyIterator:
        return self

    async def __anext__(self) -> bytes:
        return bytes(await self._it.__anext__())


class _Opening:
    """What ``open()`` returns: awaitable (gives the AsyncDB) and an async context manager
    (closes the database on exit)."""

    __slots__ = ("_path", "_options", "_adb")

    def __init__(self, path: Any, options: dict[str, Any]) -> None:
        self._path = path
        self._options = options
        self._adb: Optional[AsyncDB] = None

    async def _open(self) -> AsyncDB:
        loop = asyncio.get_running_loop()
        db = await loop.run_in_executor(
            None, functools.partial(DB, self._path, **self._options))
        return AsyncDB(db)

    def __await__(self) -> Generator[Any, None, AsyncDB]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncDB:
        self._adb = await self._open()
        return self._adb

    async def __aexit__(self, et: Any, ev: Any, tb: Any) -> None:
        assert self._adb is not None
        await self._adb.close()


def open(path: str | bytes | os.PathLike[str] | os.PathLike[bytes],  # noqa: A001
         **options: Any) -> _Opening:
    """Open a database for asyncio: ``db = await aio.open(path, **options)`` or ``async with
    aio.open(path, **options) as db``. The options are those of ``btree_store.DB``; the
    file is opened on a worker thread."""
    return _Opening(path, options)
