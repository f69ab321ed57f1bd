"""btree_store.testing - test how YOUR code behaves when the disk fails or the power goes.

Layer: pure Python on btree_store.DB and the fault-injecting I/O layer of the engine
(btree_store._testing.FaultIO, csrc/io_fault.c). Public and documented.

A FaultyMachine is a simulated computer holding one database file. Everything the database
writes goes to the real file at once (so reads see it, as through the OS page cache), but the
machine remembers which writes have not been made durable by an fsync yet. A process crash
keeps them (they sit in the OS cache); a power loss loses, tears or reorders them::

    from btree_store.testing import FaultyMachine

    with FaultyMachine(path) as m:           # path: where the database file lives
        db = m.open(sync=True)               # a btree_store.DB on the machine (DB's kwargs)
        with db.begin(write=True) as txn:
            txn.put(b"k", b"v")              # durable once acknowledged (sync=True)
        m.fail_after(3, kind="write", error="ENOSPC")  # the disk fills up after 3 writes
        ...                                  # the app sees btree_store.DiskFullError (an
        m.heal()                             #   OSError); the DB stays consistent
        m.crash()                            # the process dies; unsynced writes survive
        db = m.reopen()                      # a fresh DB on what the crash left
        m.power_loss(mode="tear", seed=7)    # the power goes: unsynced writes are torn
        db = m.reopen()                      # only durable commits are guaranteed here

Calls:

- ``FaultyMachine(path)``: a machine holding the database file at ``path`` (str or
  os.PathLike; the file need not exist yet: ``open()`` creates it as DB does). Writes made
  before the machine existed count as durable.
- ``m.open(**db_kwargs)``: a ``btree_store.DB`` on the machine, with the same keyword
  arguments as ``DB`` (``sync``, ``cache_size``, ``readonly``, ``create``, ...). Several may
  be open, as in one process.
- ``m.fail_after(n, kind="write", error="EIO")``: after ``n`` more successful calls of that
  kind (``"write"``: writes and file resizes, ``"sync"``: fsyncs, ``"read"``: reads that
  miss the database's cache), every such call fails with that errno (``"EIO"`` or
  ``"ENOSPC"``) until ``m.heal()``. The engine reports it as a ``btree_store.Error``
  subclass that is also an ``OSError`` with that ``errno`` (``btree_store.DiskError``;
  ``btree_store.DiskFullError`` for ENOSPC): a failed commit changed nothing; after a failed fsync or
  meta write the handle refuses further writes (reopen it).
- ``m.heal()``: the disk works again.
- ``m.crash()``: the process dies. Every DB opened on ``m`` is dead: it is closed, every call
  on it or its transactions raises a ``btree_store.Error`` subclass (``ClosedError``, whose
  message says that the machine crashed).
  Writes not yet synced stay in the simulated OS cache: a reopened DB sees every commit that
  was acknowledged, durable or not.
- ``m.power_loss(mode="drop", seed=None)``: implies ``crash()``; then every write not yet
  synced is, per mode: ``"drop"`` lost; ``"tear"`` lost, kept whole or torn (each 512-byte
  sector kept or not), each independently; ``"reorder"`` a random subset kept, applied in a
  random order. A file created on the machine whose directory was never synced disappears.
  ``seed`` (int) makes it reproducible; ``None`` picks one, kept in ``m.last_seed``.
  After a power loss a reopened DB holds the last durable commit or a later acknowledged one,
  never a mix and never less.
- ``m.reopen(**db_kwargs)``: close the dead DBs and open a fresh one (``m.open``).
- ``m.close()``: close every DB opened on ``m`` (a power loss is NOT implied); later calls
  raise ``ValueError``. ``with FaultyMachine(path) as m:`` closes it at the end.
- ``m.path``, ``m.closed``, ``m.last_seed``; ``m.unsynced()`` is the number of write records
  not yet durable (0 right after a sync).

The machine is thread-safe. It simulates one file system in memory for its bookkeeping; the
data itself lives in the real file at ``path``.
"""
import errno as _errno
import os
import random
import weakref
from typing import Any, List, Optional, Union

from . import DB
from ._core import _mark_crashed
from ._testing import FaultIO

__all__ = ["FaultyMachine"]

_KINDS = {"write": "write|truncate", "sync": "sync", "read": "read"}
_ERRORS = {"EIO": _errno.EIO, "ENOSPC": _errno.ENOSPC}
_MODES = ("drop", "tear", "reorder")


class FaultyMachine:
    """A simulated machine holding the database file at ``path`` (see the module docstring)."""

    def __init__(self, path: Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]) -> None:
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise TypeError("path must be str or os.PathLike, not %s" % type(path).__name__)
        spath = os.fsdecode(os.fspath(path))
        if spath == ":memory:" or not spath:
            raise ValueError("a FaultyMachine needs a file path, not %r" % spath)
        self.path: str = os.path.abspath(spath)
        self._fio = FaultIO()
        self._fio.powerloss(0)  # the machine logs every unsynced write from now on
        self._dbs: "List[weakref.ref[DB]]" = []  # the DBs opened on the machine
        self._closed = False
        self.last_seed: Optional[int] = None

    # -- helpers
    def _check(self) -> None:
        if self._closed:
            raise ValueError("the FaultyMachine is closed")

    def _live_dbs(self) -> List[DB]:
        out: List[DB] = []
        for r in self._dbs:
            db = r()
            if db is not None:
                out.append(db)
        self._dbs = [weakref.ref(d) for d in out]
        return out

    def _close_dbs(self, crashed: bool = False) -> Optional[Exception]:
        first: Optional[Exception] = None
        for db in self._live_dbs():
            if crashed:
                _mark_crashed(db)  # its ClosedError says so
            try:
                db.close()
            except Exception as e:  # a dead handle may complain; close the others anyway
                if first is None:
                    first = e
        self._dbs = []
        return first

    # -- the API
    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    def open(self, **db_kwargs: Any) -> DB:
        """A btree_store.DB on the machine (same keyword arguments as DB)."""
        self._check()
        for k in ("_io", "_memory_from", "path"):
            if k in db_kwargs:
                raise TypeError("open() got an unexpected keyword argument %r" % k)
        kwargs: Any = dict(db_kwargs, _io=self._fio)  # _io: private, not in the stub
        db = DB(self.path, **kwargs)
        self._dbs.append(weakref.ref(db))
        return db

    def fail_after(self, n: int, kind: str = "write", error: str = "EIO") -> None:
        """After n more successful calls of kind, every such call fails until heal()."""
        self._check()
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError("n must be int, not %s" % type(n).__name__)
        if n < 0:
            raise ValueError("n must be >= 0")
        if not isinstance(kind, str):
            raise TypeError("kind must be str, not %s" % type(kind).__name__)
        if kind not in _KINDS:
            raise ValueError("kind must be 'write', 'sync' or 'read', not %r" % kind)
        if not isinstance(error, str):
            raise TypeError("error must be str, not %s" % type(error).__name__)
        if error not in _ERRORS:
            raise ValueError("error must be 'EIO' or 'ENOSPC', not %r" % error)
        self._fio.fail_after(_KINDS[kind], n, _ERRORS[error])

    def heal(self) -> None:
        """The disk works again (turns fail_after off)."""
        self._check()
        self._fio.heal()

    def crash(self) -> None:
        """The process dies: every DB on the machine is dead; unsynced writes stay cached."""
        self._check()
        self._fio.crash()
        self._close_dbs(crashed=True)

    def power_loss(self, mode: str = "drop", seed: Optional[int] = None) -> None:
        """crash(), then lose / tear / reorder every write not yet synced."""
        self._check()
        if not isinstance(mode, str):
            raise TypeError("mode must be str, not %s" % type(mode).__name__)
        if mode not in _MODES:
            raise ValueError("mode must be 'drop', 'tear' or 'reorder', not %r" % mode)
        if seed is None:
            seed = random.SystemRandom().getrandbits(63)
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError("seed must be int or None, not %s" % type(seed).__name__)
        elif not 0 <= seed < 2**64:
            raise ValueError("seed must be in 0..2**64-1")
        self.last_seed = seed
        self._fio.crash()
        self._close_dbs(crashed=True)
        self._fio.power_loss(mode, seed)

    def reopen(self, **db_kwargs: Any) -> DB:
        """Close the dead DBs and open a fresh one on what survived."""
        self._check()
        self._close_dbs()
        return self.open(**db_kwargs)

    def unsynced(self) -> int:
        """How many write records on the machine are not durable yet."""
        self._check()
        return self._fio.unsynced()

    def close(self) -> None:
        """Close every DB opened on the machine; the machine is unusable afterwards."""
        if self._closed:
            return
        self._closed = True
        self._fio.heal()
        err = self._close_dbs()
        if err is not None:
            raise err

    def __enter__(self) -> "FaultyMachine":
        """Return the machine itself (ValueError if it is closed)."""
        self._check()
        return self

    def __exit__(self, *exc: object) -> None:
        """close() the machine (exceptions propagate)."""
        self.close()

    def __repr__(self) -> str:
        """The path, and whether the machine is closed."""
        return "<btree_store.testing.FaultyMachine %r%s>" % (
            self.path, " closed" if self._closed else "")
