"""btree_store: a persistent embedded key-value store.

One database file holds a durable copy-on-write B+tree with named buckets, ACID
transactions (MVCC: readers never block the writer) and range iterators.

    import btree_store
    with btree_store.DB("data.db") as db:
        with db.begin(write=True) as txn:      # commits on normal exit, aborts on exception
            txn.put(b"key", b"value")
        with db.begin() as txn:                # read-only snapshot
            print(txn.get(b"key"))

Keys and values are bytes-like objects (bytes, bytearray, memoryview; str is a TypeError).
txn.iter() yields memoryviews over buffers it reuses only once nobody holds their views (a
kept view never changes); iter(txn), keys(), values() and items() yield bytes.
"""
from __future__ import annotations

import collections.abc as _abc
import os as _os
from typing import Any, Callable, TypeVar

from . import _core
from ._core import (
    BucketExistsError,
    BucketNotFoundError,
    ClosedError,
    CorruptionError,
    DiskError,
    DiskFullError,
    Error,
    Iterator,
    LockedError,
    PanicError,
    ReadonlyError,
    Txn,
    WriteTxn,
)

__version__ = "0.1.0"

_T = TypeVar("_T")
_DB = TypeVar("_DB", bound="DB")

__all__ = [
    "DB",
    "Txn",
    "WriteTxn",
    "Iterator",
    "Error",
    "CorruptionError",
    "ReadonlyError",
    "ClosedError",
    "LockedError",
    "PanicError",
    "DiskError",
    "DiskFullError",
    "BucketNotFoundError",
    "BucketExistsError",
    "__version__",
]


# A transaction is a mapping of bytes keys to bytes values (its default or bound bucket);
# a write transaction is a mutable one.
_abc.Mapping.register(Txn)
_abc.MutableMapping.register(WriteTxn)


class _Multi:
    """The object exec_multi() passes to its function: runs closures against buckets of the
    one shared write transaction, each inside a savepoint."""

    __slots__ = ("_txn",)

    def __init__(self, txn: WriteTxn) -> None:
        self._txn = txn

    @property
    def txn(self) -> WriteTxn:
        """The shared write transaction (bound to the default bucket)."""
        return self._txn

    def execute(self, bucket: str, fn: Callable[[WriteTxn], _T]) -> _T:
        """Run fn(txn_bound_to_bucket) inside a savepoint of the shared transaction; the
        bucket is created if missing. If fn raises, everything it did (and the bucket's
        creation) is rolled back and the exception propagates; the rest of the transaction
        is untouched. Returns fn's result."""
        txn = self._txn
        # Open an existing bucket before the savepoint, so that a rollback restores its
        # state; a bucket created inside the savepoint is dropped again by a rollback.
        try:
            bound = txn._bind(bucket)
        except BucketNotFoundError:
            bound = None
        txn._savepoint()
        try:
            if bound is None:
                bound = txn._bind(bucket, create=True)
            result = fn(bound)
        except BaseException:
            txn._rollback()
            raise
        txn._release()
        return result


class DB(_core.DB):
    """DB(path, *, readonly=False, create=True, sync=True, cache_size=None, page_size=4096, check_commits=None)

    A btree_store database file, opened (and locked) at construction. Use it as a context
    manager, or call close(). ``begin(write=False, *, bucket=None, timeout=None, sync=None)``
    starts a transaction; exec(), view() and exec_multi() run a function in one.

    path: str, bytes or os.PathLike. readonly: open for reading only. create: create the
    file when missing. sync: commits fsync (False: a commit survives a crash of the process
    at once, a power loss once db.sync() or a synced commit returned). cache_size: bytes of
    page cache. page_size: a power of two from 1024 to 65536, fixed when the file is created.
    Raises FileNotFoundError, PermissionError, IsADirectoryError (with .filename),
    LockedError (another process has it open), CorruptionError (not a btree_store file,
    damaged, or a newer format), DiskError, TypeError / ValueError (bad options).

    ``DB(":memory:")`` (or ``DB.memory()``) is an in-memory database: the same engine,
    format and semantics, in a heap buffer (no file, no fsync, no lock). Closing it frees
    it: it cannot be reopened; ``copy(path)`` writes it out as a normal file first. (To
    open a file that is really named ``:memory:``, say ``./:memory:``.)

    ``check_commits=True`` runs the integrity checker after every commit; a problem makes
    that commit() raise CorruptionError (the commit itself stands). It costs a full check
    per commit: it is meant for tests. ``None`` takes the process-wide default, which
    ``pytest --btree-strict`` (the btree_store pytest plugin) turns on.
    """

    @classmethod
    def memory(cls: type[_DB], *,
               from_path: str | bytes | _os.PathLike[str] | _os.PathLike[bytes] | None = None,
               page_size: int | None = None, cache_size: int | None = None,
               check_commits: bool | None = None) -> _DB:
        """A new in-memory database (see DB(":memory:")): no file, no fsync, no lock.

        from_path: a database file (str, bytes or os.PathLike) whose bytes are loaded into
        memory and then opened and verified as the file would be (CorruptionError,
        FileNotFoundError, ...); the file itself is only read, never changed or locked, so
        it should not be written by anyone while it loads (copy() a live database first).
        A changed memory database is saved with copy(path). page_size applies to a new
        database only. Closing frees the memory: it cannot be reopened."""
        kw: dict[str, Any] = {}
        if page_size is not None:
            kw["page_size"] = page_size
        if cache_size is not None:
            kw["cache_size"] = cache_size
        if from_path is not None:
            kw["_memory_from"] = from_path
        return cls(":memory:", check_commits=check_commits, **kw)

    def exec(self, bucket: str, fn: Callable[[WriteTxn], _T]) -> _T:
        """Run fn(txn) in a write transaction bound to `bucket` (created if missing).
        Commits if fn returns, aborts if it raises; returns fn's result."""
        txn = self.begin(write=True)
        try:
            txn.create_bucket(bucket)
            result = fn(txn._bind(bucket))
        except BaseException:
            txn.abort()
            raise
        txn.commit()
        return result

    def view(self, bucket: str, fn: Callable[[Txn], _T]) -> _T:
        """Run fn(txn) in a read-only transaction bound to `bucket` (BucketNotFoundError if
        it does not exist); returns fn's result."""
        txn = self.begin(bucket=bucket)
        try:
            return fn(txn)
        finally:
            txn.abort()

    def exec_multi(self, fn: Callable[[_Multi], _T]) -> _T:
        """Run fn(multi) in one write transaction; multi.execute(bucket, fn2) runs
        fn2(txn) against `bucket` (created if missing) inside a savepoint, so an exception
        from fn2 that fn catches undoes only fn2's changes. Commits if fn returns, aborts if
        it raises; returns fn's result."""
        txn = self.begin(write=True)
        try:
            result = fn(_Multi(txn))
        except BaseException:
            txn.abort()
            raise
        txn.commit()
        return result
