"""btree_store.dbm - the standard library's dbm interface over a btree_store database.

    import btree_store.dbm
    with btree_store.dbm.open("cache.bs", "c") as d:
        d["key"] = "value"              # str is stored as UTF-8, like the dbm modules
        d[b"raw"] = b"\\x00\\x01"
        print(d[b"key"])                # b'value'
        with d.batch():                 # many writes, one transaction
            for i in range(1000):
                d[b"n%d" % i] = b"x"
    with btree_store.dbm.open_shelf("objects.bs") as s:   # shelve.Shelf on top of it
        s["config"] = {"retries": 3}

    btree_store.dbm.register()          # dbm.open(), dbm.whichdb() and shelve.open() now
                                        # recognise btree_store files (and create them)

Each write (d[k] = v, del d[k]) is its own transaction, committed without fsync: it survives
a crash of the process at once, and a power loss once sync() or close() returned. batch()
groups writes into one transaction (all or nothing). Flags: 'r' read-only (a missing file is
FileNotFoundError), 'w' read-write (the file must exist), 'c' create when missing, 'n' a new
empty database: 'n' takes the file's lock before it empties the file, so a database another
handle has open is never destroyed (error is raised instead). The mapping lives in the default
bucket, or in `bucket=`; the file is an ordinary btree_store database.

Layer: package; uses only the public Python API (btree_store.DB, Txn) and the standard
library's dbm/shelve modules (register() hooks into them).
"""
from __future__ import annotations

import builtins
import collections.abc
import contextlib
import errno as _errno
import fcntl
import os
import shelve
from typing import Any, Callable, Iterator, Optional, TypeVar, Union

from . import DB, Error, Txn, WriteTxn

_T = TypeVar("_T")
#: What the dbm functions accept as a file name.
PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
#: What a key or value may be: bytes-like, or str (stored as UTF-8).
KeyLike = Union[bytes, bytearray, memoryview, str]

__all__ = ["open", "open_shelf", "error", "whichdb", "register", "BtreeDBM"]

#: The magic of a btree_store file: 16 bytes at offset 32 of each meta page (after the page
#: header, whose byte 4 is the page type, 1 for a meta page).
MAGIC = b"btree_store\0\0\0\0\0"
_MAGIC_AT = 32

#: The name register() gives this module in the standard library's dbm.
NAME = "btree_store.dbm"


class error(OSError):
    """What the dbm interface raises for a database it cannot open or use (locked, corrupt,
    closed, read-only). An OSError, like the standard dbm modules' errors: error(message) or
    error(errno, strerror[, filename])."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)


def _b(x: object, what: str) -> bytes:
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError("%s must be bytes or str, not %s" % (what, type(x).__name__))


def _empty_under_lock(path: Union[str, bytes], mode: int) -> None:
    """Flag 'n': make `path` an empty file while holding its exclusive lock (the lock the
    engine takes), so that a database another handle has open is left alone."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (_errno.EWOULDBLOCK, _errno.EAGAIN, _errno.EACCES):
                raise error(_errno.EWOULDBLOCK,
                            "%s is open in another handle or process: flag 'n' would destroy "
                            "it" % os.fsdecode(path), path) from None
            raise
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class BtreeDBM(collections.abc.MutableMapping):  # type: ignore[type-arg]
    """A dbm-style mapping of bytes to bytes stored in a btree_store database.

    BtreeDBM(path, flag="c", mode=0o666, *, bucket=None, **db_options): flag 'r', 'w', 'c'
    or 'n' as in dbm.open(); mode the permission bits of a new file; bucket a named bucket
    to keep the mapping in; db_options passed on to btree_store.DB (sync defaults to
    False: writes become durable at sync() and close()). Keys and values may be bytes-like
    or str (stored as UTF-8); values come back as bytes. Raises ValueError (bad flag),
    FileNotFoundError ('r'/'w' and no file), error (locked, corrupt, not a database).
    """

    def __init__(self, path: PathLike, flag: str = "c", mode: int = 0o666, *,
                 bucket: Optional[str] = None, **db_options: Any) -> None:
        if flag not in ("r", "w", "c", "n"):
            raise ValueError("flag must be 'r', 'w', 'c' or 'n', not %r" % (flag,))
        path = os.fspath(path)
        self._db: Optional[DB] = None
        self._txn: Optional[WriteTxn] = None
        self._depth = 0
        existed = os.path.exists(path)
        if flag in ("r", "w") and not existed:
            raise FileNotFoundError(_errno.ENOENT, "no such database file", path)
        if flag == "n" and existed:
            _empty_under_lock(path, mode)
        self._readonly = flag == "r"
        db_options.setdefault("sync", False)  # fsync at sync()/close(), not at each write
        try:
            self._db = DB(path, readonly=self._readonly, create=flag in ("c", "n"),
                          **db_options)
        except OSError:
            raise
        except Error as e:  # locked, corrupt, not a database: what dbm callers catch
            raise error(str(e)) from e
        self._path = path
        if not existed and mode != 0o666:
            try:
                os.chmod(path, mode & ~_umask())
            except OSError:
                pass
        self._bucket = bucket
        if bucket is not None and not self._readonly:
            self._db.exec(bucket, lambda t: None)  # create the bucket if missing

    # -- transactions
    def _check_open(self) -> DB:
        if self._db is None:
            raise error("the dbm object is closed")
        return self._db

    def _read(self, fn: Callable[[Txn], _T]) -> _T:
        db = self._check_open()
        if self._txn is not None:
            return fn(self._txn)
        with db.begin(bucket=self._bucket) as txn:
            return fn(txn)

    def _write(self, fn: Callable[[WriteTxn], _T]) -> _T:
        db = self._check_open()
        if self._readonly:
            raise error("the database was opened read-only (flag 'r')")
        if self._txn is not None:
            return fn(self._txn)
        with db.begin(write=True, bucket=self._bucket) as txn:
            return fn(txn)

    @contextlib.contextmanager
    def batch(self) -> Iterator[BtreeDBM]:
        """Group the writes made inside the block into one transaction: it commits when the
        block ends normally and is rolled back when it raises. Reads inside the block see
        the block's writes. Nested batch() blocks join the outermost one."""
        db = self._check_open()
        if self._readonly:
            raise error("the database was opened read-only (flag 'r')")
        if self._txn is not None:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        txn = self._txn = db.begin(write=True, bucket=self._bucket)
        try:
            yield self
        except BaseException:
            self._txn = None
            txn.abort()
            raise
        self._txn = None
        txn.commit()

    # -- mapping protocol
    def __getitem__(self, key: KeyLike) -> bytes:
        """d[key]: the value (bytes); KeyError when missing."""
        k = _b(key, "key")
        value = self._read(lambda t: t.get(k))
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: KeyLike, default: Any = None) -> Any:
        """The value of key (bytes), or default when missing."""
        k = _b(key, "key")
        value = self._read(lambda t: t.get(k))
        return default if value is None else value

    def __setitem__(self, key: KeyLike, value: KeyLike) -> None:
        """d[key] = value, in a transaction of its own (or the open batch())."""
        k, v = _b(key, "key"), _b(value, "value")
        self._write(lambda t: t.put(k, v))

    def __delitem__(self, key: KeyLike) -> None:
        """del d[key]; KeyError when missing."""
        k = _b(key, "key")
        if not self._write(lambda t: t.delete(k)):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        """key in d (False for a key of a type that cannot be a key)."""
        try:
            k = _b(key, "key")
        except TypeError:
            return False
        return self._read(lambda t: t.get(k) is not None)

    def __len__(self) -> int:
        """Number of keys."""
        return self._read(lambda t: t.count())

    def keys(self) -> list[bytes]:  # type: ignore[override]
        """The keys, in order, as a list of bytes (as the dbm modules return them)."""
        return self._read(lambda t: [bytes(k) for k in t.iter(values=False)])

    def __iter__(self) -> Iterator[bytes]:
        """Iterate over the keys (a snapshot taken now, in key order)."""
        return iter(self.keys())

    def setdefault(self, key: KeyLike, default: KeyLike = b"") -> bytes:  # type: ignore[override]
        """The value of key; when missing, store default under it first and return it."""
        k = _b(key, "key")

        def fn(t: WriteTxn) -> bytes:
            value = t.get(k)
            if value is None:
                value = _b(default, "value")
                t.put(k, value)
            return value

        if self._readonly:
            value = self._read(lambda t: t.get(k))
            if value is not None:
                return value
        return self._write(fn)

    def clear(self) -> None:
        """Delete every key, in one transaction."""

        def fn(t: WriteTxn) -> None:
            for k in [bytes(k) for k in t.iter(values=False)]:
                t.delete(k)

        self._write(fn)

    # -- life cycle
    def sync(self) -> None:
        """Make every write so far durable (fsync). Writes made inside an unfinished batch()
        are not committed yet and are not included."""
        db = self._check_open()
        if self._readonly:
            return
        fn = getattr(db, "sync", None)
        if callable(fn):
            fn()
            return
        fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Commit nothing pending (a batch() still open is rolled back), fsync, close."""
        if self._db is None:
            return
        try:
            if self._txn is not None:
                txn, self._txn = self._txn, None
                txn.abort()
            self.sync()
        finally:
            db, self._db = self._db, None
            db.close()

    def __enter__(self) -> BtreeDBM:
        """Return the mapping itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the mapping (see close())."""
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing can be reported from a finalizer
            pass

    def __repr__(self) -> str:
        state = "closed" if self._db is None else os.fsdecode(self._path)
        return "<btree_store.dbm.BtreeDBM %s>" % state


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def open(file: PathLike, flag: str = "c", mode: int = 0o666,  # noqa: A001 - dbm's name
         **kw: Any) -> BtreeDBM:
    """Open a btree_store database as a dbm mapping: flag 'r' (read-only), 'w' (existing
    file), 'c' (created when missing) or 'n' (always a new empty database); mode the
    permission bits of a new file; kw passed on to BtreeDBM (bucket=, DB options).
    Raises FileNotFoundError, error (locked, corrupt, not a database), ValueError."""
    return BtreeDBM(file, flag, mode, **kw)


def open_shelf(file: PathLike, flag: str = "c", protocol: Optional[int] = None,
               writeback: bool = False, **kw: Any) -> shelve.Shelf[Any]:
    """A shelve.Shelf (pickled values, str keys) stored in a btree_store database opened
    with open(file, flag, **kw); protocol and writeback as in shelve.Shelf."""
    return shelve.Shelf(BtreeDBM(file, flag, **kw), protocol=protocol, writeback=writeback)


def whichdb(filename: PathLike) -> Optional[str]:
    """NAME when `filename` is a btree_store file, None when it cannot be read, '' otherwise
    (the standard dbm.whichdb() answers after register())."""
    try:
        with builtins.open(os.fsencode(filename), "rb") as f:
            # meta page 0 starts the file; when it is damaged, meta page 1 (one page later,
            # page sizes 1024..65536) still names the format
            for offset in (0, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
                f.seek(offset)
                page = f.read(_MAGIC_AT + len(MAGIC))
                if page[4:5] == b"\x01" and page[_MAGIC_AT:] == MAGIC:
                    return NAME
    except OSError:
        return None
    return ""


_std_whichdb: Optional[Callable[[Any], Optional[str]]] = None


def _whichdb_hook(filename: Any) -> Optional[str]:
    if whichdb(filename) == NAME:
        return NAME
    assert _std_whichdb is not None
    return _std_whichdb(filename)


def register(default: bool = True) -> None:
    """Teach the standard library's dbm about btree_store: dbm.whichdb() names btree_store
    files "btree_store.dbm" and dbm.open() (so shelve.open() too) opens them with this
    module. With default=True (the default) new files that dbm.open()/shelve.open() create
    are btree_store files as well. Calling it again is harmless."""
    global _std_whichdb
    import dbm as std_dbm
    import sys

    std: Any = std_dbm  # (its private tables are not in typeshed)

    mod = sys.modules[__name__]
    if _std_whichdb is None:
        _std_whichdb = std.whichdb
        std.whichdb = _whichdb_hook
    if default and std._defaultmod is not mod:
        # dbm.open() finds its modules lazily when no default is set: do it now, since
        # setting the default skips that search
        for name in std._names:
            if name not in std._modules:
                try:
                    std._modules[name] = __import__(name, fromlist=["open"])
                except ImportError:
                    continue
        std._defaultmod = mod
    std._modules[NAME] = mod
    if error not in std.error:
        std.error = tuple(std.error) + (error,)
