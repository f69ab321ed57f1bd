"""btree_store.dbm - the standard library's dbm interface over a btree_store database.

    import btree_store.dbm, shelve
    with btree_store.dbm.open("cache.bs", "c") as d:
        d["key"] = "value"              # str is stored as UTF-8, like the dbm modules
        d[b"raw"] = b"\\x00\\x01"
        print(d[b"key"])                # b'value'
    with btree_store.dbm.open_shelf("objects.bs") as s:   # shelve.Shelf on top of it
        s["config"] = {"retries": 3}

Writes are gathered in one write transaction and made durable by sync() and close() (the
dbm modules promise nothing stronger); reads see them at once. The database file can be
used with btree_store.DB as well: the mapping lives in the default bucket, or in `bucket=`.

Layer: package; uses only the public Python API (btree_store.DB, Txn).
"""
import collections.abc
import os
import shelve

from . import DB, Error

__all__ = ["open", "open_shelf", "error", "BtreeDBM"]

#: What dbm.open callers catch.
error = (Error, OSError)


def _b(x, what):
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError("%s must be bytes or str, not %s" % (what, type(x).__name__))


class BtreeDBM(collections.abc.MutableMapping):
    """A dbm-style mapping of bytes to bytes stored in a btree_store database."""

    def __init__(self, path, flag="c", mode=0o666, *, bucket=None, **db_options):
        if flag not in ("r", "w", "c", "n"):
            raise ValueError("flag must be 'r', 'w', 'c' or 'n', not %r" % (flag,))
        path = os.fspath(path)
        if flag == "w" and not os.path.exists(path):
            raise FileNotFoundError(path)
        if flag == "n" and os.path.exists(path):
            os.remove(path)
        self._readonly = flag == "r"
        self._db = DB(path, readonly=self._readonly, create=flag in ("c", "n"), **db_options)
        if flag in ("c", "n") and mode != 0o666:
            try:
                os.chmod(path, mode & ~_umask())
            except OSError:
                pass
        self._bucket = bucket
        self._txn = None
        if bucket is not None and not self._readonly:
            self._db.exec(bucket, lambda t: None)  # create the bucket if missing

    # -- transactions: one write transaction collects the writes until sync()/close()
    def _reader(self):
        if self._db is None:
            raise Error("the dbm object is closed")
        if self._txn is not None:
            return self._txn
        return None

    def _writer(self):
        if self._db is None:
            raise Error("the dbm object is closed")
        if self._readonly:
            raise Error("the database was opened read-only (flag 'r')")
        if self._txn is None:
            self._txn = self._db.begin(write=True, bucket=self._bucket)
        return self._txn

    def _read(self, fn):
        txn = self._reader()
        if txn is not None:
            return fn(txn)
        with self._db.begin(bucket=self._bucket) as txn:
            return fn(txn)

    # -- mapping protocol
    def __getitem__(self, key):
        value = self._read(lambda t: t.get(_b(key, "key")))
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key, default=None):
        value = self._read(lambda t: t.get(_b(key, "key")))
        return default if value is None else value

    def __setitem__(self, key, value):
        self._writer().put(_b(key, "key"), _b(value, "value"))

    def __delitem__(self, key):
        if not self._writer().delete(_b(key, "key")):
            raise KeyError(key)

    def __contains__(self, key):
        try:
            k = _b(key, "key")
        except TypeError:
            return False
        return self._read(lambda t: k in t)

    def __len__(self):
        return self._read(len)

    def keys(self):
        return self._read(lambda t: [bytes(k) for k in t.iter(values=False)])

    def __iter__(self):
        return iter(self.keys())

    def setdefault(self, key, default=b""):
        k = _b(key, "key")
        value = self._read(lambda t: t.get(k))
        if value is None:
            value = _b(default, "value")
            self._writer().put(k, value)
        return value

    # -- life cycle
    def sync(self):
        """Commit the writes made so far (durably)."""
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.commit()

    def close(self):
        if self._db is None:
            return
        try:
            self.sync()
        finally:
            db, self._db = self._db, None
            db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing can be reported from a finalizer
            pass

    def __repr__(self):
        state = "closed" if self._db is None else os.fspath(self._db.path)
        return "<btree_store.dbm.BtreeDBM %s>" % state


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def open(file, flag="c", mode=0o666, **kw):  # noqa: A001 - the dbm modules' name
    """Open a btree_store database as a dbm mapping (flag 'r', 'w', 'c' or 'n')."""
    return BtreeDBM(file, flag, mode, **kw)


def open_shelf(file, flag="c", protocol=None, writeback=False, **kw):
    """shelve.Shelf (pickled values, str keys) stored in a btree_store database."""
    return shelve.Shelf(BtreeDBM(file, flag, **kw), protocol=protocol, writeback=writeback)
