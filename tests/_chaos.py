"""_chaos.py - the pieces the API chaos tests share: the exceptions a call may raise
(ALLOWED), hostile argument objects, pools of valid and invalid arguments, the random-call
Driver (every public method, property and dunder of DB, Txn, bound Txn, Iterator and the
memoryviews iterators yield, with choices from hypothesis or a seeded random.Random),
finalizer bombs (_Bomb), the collector of exceptions raised in finalizers (_Unraisables), and
_run_driver (one sequence of calls, then every file reopened and checked).

Used by test_api_random_calls.py, test_api_regressions.py and test_thread_chaos.py.

Layer: tests only; public Python API of btree_store (plus the private _bind/_savepoint
methods that exec_multi uses).
"""
import array
import copy
import errno
import gc
import itertools
import math
import mmap
import os
import pickle
import random
import shutil
import sys
import tempfile
import weakref

from hypothesis import strategies as st

import btree_store
from btree_store import Error, _testing

from _util import LONG


class Boom(Exception):
    """Raised by user objects and callbacks; must propagate unchanged."""


# Opening a missing path or a directory raises the standard OSError subclasses.
ALLOWED = (Error, TypeError, ValueError, KeyError, OverflowError, Boom, FileNotFoundError,
           IsADirectoryError, NotADirectoryError, PermissionError)


# ------------------------------------------------------------------ hostile argument objects

class BadBool:
    def __bool__(self):
        raise Boom("__bool__")


class BadIndex:
    def __index__(self):
        raise Boom("__index__")

    def __float__(self):
        raise Boom("__float__")


class BadBuffer:
    def __buffer__(self, flags):  # Python 3.12+; a plain non-buffer before that
        raise Boom("__buffer__")


class BadEq(bytes):
    def __eq__(self, other):
        raise Boom("__eq__")

    def __hash__(self):
        raise Boom("__hash__")


class BadStr(str):
    def __eq__(self, other):
        raise Boom("__eq__")

    def __hash__(self):
        raise Boom("__hash__")

    def __len__(self):
        raise Boom("__len__")


class BadPath:
    def __fspath__(self):
        raise Boom("__fspath__")


def _released():
    m = memoryview(b"released")
    m.release()
    return m


_HUGE_MAP = []


def _huge_value():
    """A 4 GiB + 1 byte anonymous mapping (never touched: costs only address space)."""
    if not _HUGE_MAP:
        try:
            _HUGE_MAP.append(mmap.mmap(-1, 2**32 + 1))
        except (OSError, ValueError, OverflowError, MemoryError):
            _HUGE_MAP.append(b"x" * 70000)
    return _HUGE_MAP[0]


def key_pool(max_key):
    """Factories of key arguments: mostly valid (a small key space), some invalid."""
    small = [b"", b"a", b"b", b"k1", b"k2", b"k3", b"\x00", b"\xff", b"\xff\xff", b"zz"]
    good = [(lambda v=v: v) for v in small]
    good += [
        lambda: bytearray(b"k1"),
        lambda: memoryview(b"k2"),
        lambda: memoryview(b"xk3")[1:],
        lambda: memoryview(bytearray(b"a")),
        lambda: memoryview(b"ab").cast("B", (1, 2)),
        lambda: array.array("B", b"k1"),
        lambda: b"K" * max_key,
        lambda: BadEq(b"k1"),
        lambda: memoryview(b"kxkx1x")[::2],       # non-contiguous: b"kk1"
        lambda: memoryview(bytearray(8)).cast("i"),
    ]
    bad = [
        _released,
        lambda: "k1",
        lambda: 1,
        lambda: None,
        lambda: 2**100,
        lambda: 1.5,
        lambda: BadBuffer(),
        lambda: BadIndex(),
        lambda: b"K" * (max_key + 1),
        lambda: b"K" * 70000,
        lambda: [b"k1"],
    ]
    return good, bad


def value_pool():
    small = [b"", b"v", b"value-1", b"\x00" * 7]
    good = [(lambda v=v: v) for v in small]
    good += [
        lambda: bytearray(b"ba"),
        lambda: memoryview(b"mv-value"),
        lambda: b"M" * 1500,
        lambda: b"O" * 9000,         # overflow pages
        lambda: bytes(range(256)) * 300,   # several overflow pages
        lambda: array.array("q", range(10)),
        lambda: memoryview(b"vxvxvx")[::2],
    ]
    bad = [
        _released,
        lambda: "v",
        lambda: 7,
        lambda: None,
        lambda: 1e300,
        lambda: BadBuffer(),
        lambda: object(),
        _huge_value,
    ]
    return good, bad


BUCKETS = ["b1", "b2", "b3"]
# (good, bad) factories of each kind of argument
BUCKET_ARGS = (
    [lambda: None, lambda: None, lambda: None, lambda: "b1", lambda: "b1", lambda: "b2",
     lambda: "b2", lambda: "b3", lambda: "a\x00b",
     lambda: "x" * 255, lambda: "\u00e9" * 127, lambda: "\U0001f600" * 63,
     lambda: BadStr("b1")],
    [lambda: "", lambda: "x" * 256, lambda: "\u00e9" * 128, lambda: "\ud800", lambda: b"b1",
     lambda: 1, lambda: ["b1"], lambda: "\U0001f600" * 64],
)
BOOLS = (
    [lambda: True, lambda: False, lambda: 0, lambda: 1, lambda: None, lambda: [],
     lambda: 2**100],
    [lambda: BadBool()],
)
TIMEOUTS = (
    [lambda: None, lambda: 0, lambda: 0.0, lambda: 0.001, lambda: 0.01, lambda: -0.0,
     lambda: 1e300, lambda: 1e-300, lambda: 10**20, lambda: True, lambda: 2**63],
    [lambda: -1, lambda: math.nan, lambda: math.inf, lambda: -math.inf, lambda: 2**2000,
     lambda: "1", lambda: BadIndex()],
)
SIZES = (
    [lambda: None, lambda: 0, lambda: 1, lambda: 1024, lambda: 4096, lambda: 65536,
     lambda: 2**31, lambda: 2**62, lambda: 2**64, lambda: 2**1000, lambda: True],
    [lambda: 512, lambda: 3000, lambda: 131072, lambda: -1, lambda: -(2**100),
     lambda: 4096.0, lambda: "4096", lambda: BadIndex()],
)


# ------------------------------------------------------------------ the random-call driver

MISSING = object()


class Driver:
    """Holds the live objects of one example and performs random calls on them."""

    def __init__(self, src, tmpdir):
        self.src = src
        self.tmpdir = tmpdir
        self.paths = [os.path.join(tmpdir, "main.bs")]
        self.dbs = []
        self.txns = []
        self.iters = []
        self.views = []
        self.keep = []            # results kept alive for a while (tuples, views, bytes)
        self.depth = 0
        self.steps = 0
        self.max_steps = 100 if LONG else 50
        self.fios = []            # FaultIO controllers of databases opened with one
        if self.randint(0, 3) == 3:  # a quarter of the examples run on fault-injecting I/O
            self.fios.append(_testing.FaultIO())
            db = btree_store.DB(self.paths[0], _io=self.fios[0])
        else:
            db = btree_store.DB(self.paths[0])
        self.dbs.append(db)
        with db.begin(write=True) as txn:  # something to find, in every bucket
            for name in [None, "b1", "b2"]:
                if name:
                    txn.create_bucket(name)
                for k in (b"a", b"k1", b"k3", b"zz"):
                    txn.put(k, b"v" * (len(k) * 700), bucket=name)
        self.keys = key_pool(db.max_key_size)
        self.values = value_pool()
        # how often an argument is drawn from the invalid pool: 0..4 in 32
        self.hostility = self.randint(0, 4, label="hostility")

    # -- drawing

    def randint(self, lo, hi, label=None):
        return self.src.randint(lo, hi, label)

    def pick(self, seq, label=None):
        return self.src.pick(seq, label)

    def chance(self, p_in_8):
        # True for the high draws: hypothesis favours (and shrinks towards) 0 = False
        return self.randint(0, 7) >= 8 - p_in_8

    def arg(self, pools):
        return self.val(pools)()

    def val(self, pools):
        good, bad = pools
        hostile = self.randint(0, 31) >= 32 - self.hostility
        return self.pick(bad if hostile else good)

    def key(self):
        return self.arg(self.keys)

    def value(self):
        return self.arg(self.values)

    def bucket(self):
        return self.arg(BUCKET_ARGS)

    def flag(self):
        return self.arg(BOOLS)

    def mostly_true(self):
        return True if not self.chance(2) else self.flag()

    def timeout(self):
        return self.arg(TIMEOUTS)

    def obj(self, seq):
        return self.pick(seq) if seq else None

    def any_db(self):
        live = [db for db in self.dbs if not db.closed]
        return self.obj(self.dbs if self.chance(2) or not live else live)

    def any_txn(self):
        live = [t for t in self.txns if not t.closed]
        if not live and not self.chance(1):  # mostly work on a live transaction
            db = self.any_db()
            if db is not None and not db.closed:
                t, e = self.call(db.begin, (not self.chance(3),), {"timeout": 0})
                if e is None:
                    live = [t]
        return self.obj(self.txns if self.chance(1) or not live else live)

    def any_iter(self):
        return self.obj(self.iters)

    def call(self, fn, args=(), kwargs=None, absurd=False, stop_ok=False):
        """Call fn; the result is kept (Txn / Iterator / views go to the pools). Returns
        (result, exception)."""
        try:
            r = fn(*args, **(kwargs or {}))
        except ALLOWED as e:
            return None, e
        except MemoryError as e:
            if absurd:
                return None, e
            raise
        except StopIteration as e:
            if stop_ok:
                return None, e
            raise
        self.absorb(r)
        return r, None

    def absorb(self, r):
        if isinstance(r, btree_store.Txn):
            self.txns.append(r)
        elif isinstance(r, btree_store.Iterator):
            self.iters.append(r)
        elif isinstance(r, memoryview):
            self.views.append(r)
        elif isinstance(r, tuple):
            for x in r:
                if isinstance(x, memoryview):
                    self.views.append(x)
            self.keep.append(r)
        elif isinstance(r, btree_store.DB):
            if r not in self.dbs:
                self.dbs.append(r)
        if len(self.views) > 12:
            del self.views[: len(self.views) - 12]
        if len(self.keep) > 8:
            del self.keep[:4]

    def args_for(self, params):
        """params: list of (name, factory, positional_ok). Returns (args, kwargs)."""
        args, kwargs = [], {}
        positional = True
        for name, factory, pos_ok in params:
            if self.randint(0, 63) >= 64 - self.hostility:  # omit (may be required)
                positional = False
                continue
            v = factory()
            if positional and pos_ok and self.chance(5):
                args.append(v)
            else:
                positional = False
                kwargs[name] = v
        r = 63 - self.randint(0, 63)
        if r < self.hostility:
            if r % 2:
                kwargs["bogus"] = 1
            else:
                args.append(b"extra")
        return args, kwargs

    # -- callbacks for exec / view / exec_multi

    def callback(self, kind):
        nsteps = self.randint(0, 3)
        ending = self.pick(["return", "return", "raise", "keep"])

        def fn(obj):
            if kind == "multi":
                for _ in range(nsteps):
                    self.multi_step(obj)
            else:
                if isinstance(obj, btree_store.Txn):
                    self.txns.append(obj)
                for _ in range(nsteps):
                    self.step()
            if ending == "raise":
                raise Boom("callback")
            if ending == "keep":
                self.keep.append(obj)
            return ending

        return fn

    def multi_step(self, multi):
        what = self.randint(0, 5)
        if what == 0:
            self.txns.append(multi.txn)
        elif what <= 3:
            self.call(multi.execute, (self.bucket(), self.callback("txn")))
        else:
            self.step()

    # -- one random call

    def step(self):
        self.steps += 1
        if self.steps > self.max_steps or self.depth > 3:
            return
        if all(db.closed for db in self.dbs) and self.chance(4):
            db = self.dbs[0] if self.dbs else btree_store.DB.__new__(btree_store.DB)
            self.call(db.__init__, (self.paths[0],))  # reopen a closed DB object
            if db not in self.dbs:
                self.dbs.append(db)
        self.depth += 1
        try:
            kind = self.pick(["txn", "txn", "txn", "txn", "txn", "db", "db", "iter", "iter",
                              "view", "misc"], label="kind")
            getattr(self, "step_" + kind)()
        finally:
            self.depth -= 1

    def step_db(self):
        db = self.any_db()
        if db is None:
            return self.step_misc()
        op = self.pick([
            "begin", "begin", "begin", "begin", "begin_write", "begin_write", "exec", "exec",
            "view", "exec_multi", "exec_multi", "check", "stat", "buckets", "enter", "props",
            "reinit", "copy", "open_other", "close", "exit"], label="db_op")
        if op == "begin":
            a, kw = self.args_for([("write", self.flag, True), ("bucket", self.bucket, False),
                                   ("timeout", self.timeout, False)])
            self.call(db.begin, a, kw)
        elif op == "begin_write":
            kw = {}
            if self.chance(4):
                kw["timeout"] = self.timeout()
            if self.chance(2):
                kw["bucket"] = self.bucket()
            self.call(db.begin, (True,), kw)
        elif op == "close":
            self.call(db.close)
        elif op == "check":
            self.call(db.check)
        elif op == "stat":
            r, e = self.call(db.stat)
            if e is None:
                assert isinstance(r, dict) and r["page_size"] == db.page_size
        elif op == "buckets":
            self.call(db.buckets)
        elif op in ("exec", "view"):
            a = [self.bucket(), self.callback("txn")]
            if self.chance(1):
                a = a[:self.randint(0, 1)]
            self.call(getattr(db, op), a)
        elif op == "exec_multi":
            self.call(db.exec_multi, (self.callback("multi"),))
        elif op == "enter":
            self.call(db.__enter__)
        elif op == "exit":
            n = self.randint(0, 4)
            exc = [None, Boom, Boom("x"), None][:n]
            self.call(db.__exit__, exc)
        elif op == "props":
            for name in ("path", "closed", "readonly", "max_key_size", "page_size"):
                self.call(getattr, (db, name))
            repr(db)
            weakref.ref(db)
        elif op == "reinit":
            a, kw = self.open_args(db.path if db.path is not None else self.paths[0])
            self.call(db.__init__, a, kw, absurd=True)
        elif op == "copy":
            c, e = self.call(copy.copy, (db,))
            if e is None:
                self.call(c.begin)
                self.call(getattr, (c, "max_key_size"))
                self.call(c.close)
            self.call(pickle.dumps, (db,))
        elif op == "open_other":
            path = self.pick(self.paths + [os.path.join(self.tmpdir, "other.bs")])
            a, kw = self.open_args(path)
            r, e = self.call(btree_store.DB, a, kw, absurd=True)
            if e is None and path not in self.paths:
                self.paths.append(path)

    def open_args(self, path):
        path = os.fsdecode(path)
        p = self.pick([lambda: path, lambda: path.encode(), lambda: BadPath(), lambda: 3,
                       lambda: path + "\x00", lambda: self.tmpdir,
                       lambda: os.path.join(self.tmpdir, "missing", "x.bs")] + [lambda: path] * 5)()
        a, kw = [p], {}
        for name, pool in (("readonly", BOOLS), ("create", BOOLS), ("sync", BOOLS),
                           ("cache_size", SIZES), ("page_size", SIZES)):
            if self.chance(2):
                kw[name] = self.arg(pool)
        if self.randint(0, 31) == 0:
            kw["_io"] = self.pick([None, 1, "x"])
        elif self.chance(1):  # an I/O failure somewhere ahead (DiskError, PanicError)
            fio = _testing.FaultIO()
            fio.fail_nth(self.pick(["write", "sync", "read", "write|sync", "truncate", "any"]),
                         self.randint(1, 60), errno=self.pick([errno.EIO, errno.ENOSPC]),
                         sticky=self.chance(2))
            kw["_io"] = fio
            self.fios.append(fio)
        return a, kw

    def step_txn(self):
        txn = self.any_txn()
        if txn is None:
            return self.step_db()
        op = self.pick([
            "put", "put", "put", "put", "get", "get", "iter", "iter", "iter", "delete", "pop",
            "replace", "count", "create_bucket", "create_bucket", "drop_bucket", "buckets",
            "commit", "abort", "enter", "exit", "savepoint", "savepoint", "rollback",
            "release", "bind", "bind", "len", "getitem", "setitem", "delitem", "contains",
            "dunder_iter", "props", "copy", "drop"], label="txn_op")
        K, V, B = self.key, self.value, self.bucket
        if op == "get":
            self.call(txn.get, *self.args_for([("key", K, True), ("default", self.flag, True),
                                               ("bucket", B, False)]))
        elif op == "put":
            self.call(txn.put, *self.args_for([("key", K, True), ("value", V, True),
                                               ("overwrite", self.flag, True),
                                               ("bucket", B, False)]))
        elif op == "delete":
            self.call(txn.delete, *self.args_for([("key", K, True), ("bucket", B, False)]))
        elif op == "pop":
            self.call(txn.pop, *self.args_for([("key", K, True), ("default", self.flag, True),
                                               ("bucket", B, False)]))
        elif op == "replace":
            self.call(txn.replace, *self.args_for([("key", K, True), ("value", V, True),
                                                   ("bucket", B, False)]))
        elif op == "count":
            self.call(txn.count, *self.args_for([("bucket", B, True)]))
        elif op == "iter":
            kb = lambda: None if self.chance(2) else self.key()  # noqa: E731
            self.call(txn.iter, *self.args_for([
                ("start", kb, True), ("stop", kb, True), ("reverse", self.flag, False),
                ("bucket", B, False), ("keys", self.mostly_true, False),
                ("values", self.mostly_true, False),
                ("prefix", kb, False)]))
        elif op == "create_bucket":
            self.call(txn.create_bucket, *self.args_for([("name", B, True),
                                                         ("exist_ok", self.flag, True)]))
        elif op == "drop_bucket":
            self.call(txn.drop_bucket, (B(),))
        elif op == "buckets":
            self.call(txn.buckets)
        elif op == "commit":
            self.call(txn.commit)
        elif op == "abort":
            self.call(txn.abort)
        elif op == "enter":
            self.call(txn.__enter__)
        elif op == "exit":
            n = self.randint(0, 3)
            self.call(txn.__exit__, [self.pick([None, Boom, ValueError]), None, None][:n])
        elif op == "savepoint":
            self.call(txn._savepoint)
        elif op == "rollback":
            self.call(txn._rollback)
        elif op == "release":
            self.call(txn._release)
        elif op == "bind":
            self.call(txn._bind, *self.args_for([("bucket", B, True),
                                                 ("create", self.flag, True)]))
        elif op == "len":
            self.call(len, (txn,))
        elif op == "getitem":
            self.call(txn.__getitem__, (K(),))
        elif op == "setitem":
            self.call(txn.__setitem__, (K(), V()))
        elif op == "delitem":
            self.call(txn.__delitem__, (K(),))
        elif op == "contains":
            self.call(txn.__contains__, (K(),))
        elif op == "dunder_iter":
            it, e = self.call(iter, (txn,))
            if e is None:
                self.call(list, (itertools.islice(it, 5),))
        elif op == "props":
            for name in ("write", "closed", "id", "bucket", "db"):
                self.call(getattr, (txn, name))
            repr(txn)
            weakref.ref(txn)
        elif op == "copy":
            self.call(copy.copy, (txn,))
            self.call(pickle.dumps, (txn,))
            self.call(type(txn))
        elif op == "drop":
            self.txns.remove(txn)
            del txn

    def step_iter(self):
        it = self.any_iter()
        if it is None:
            return self.step_txn()
        op = self.pick(["next", "next", "next", "seek", "key", "value",
                                        "props", "list", "drop"], label="iter_op")
        if op == "next":
            self.call(next, (it,), stop_ok=True)
        elif op == "seek":
            self.call(it.seek, (self.key(),))
        elif op == "key":
            self.call(getattr, (it, "key"))
        elif op == "value":
            self.call(getattr, (it, "value"))
        elif op == "props":
            self.call(getattr, (it, "reverse"))
            self.call(iter, (it,))
            repr(it)
            self.call(type(it))
        elif op == "list":
            r, e = self.call(list, (itertools.islice(it, self.randint(0, 20)),))
            if e is None:
                for x in r:
                    self.absorb(x)
        elif op == "drop":
            self.iters.remove(it)

    def step_view(self):
        if not self.views:
            return self.step_iter()
        v = self.pick(self.views)
        op = self.pick(["bytes", "release", "tobytes", "hash", "index",
                                        "as_key", "as_value", "seek", "cast"], label="view_op")
        if op == "bytes":
            self.call(bytes, (v,))
        elif op == "release":
            self.call(v.release)
        elif op == "tobytes":
            self.call(v.tobytes)
        elif op == "hash":
            self.call(hash, (v,))
        elif op == "index":
            self.call(lambda: v[0] if len(v) else None)
        elif op == "cast":
            self.call(lambda: self.views.append(v.cast("B")))
        elif op in ("as_key", "as_value"):
            txn = self.any_txn()
            if txn is not None:
                if op == "as_key":
                    self.call(txn.put, (v, b"from-view"))
                else:
                    self.call(txn.put, (b"k1", v))
        elif op == "seek":
            it = self.any_iter()
            if it is not None:
                self.call(it.seek, (v,))

    def step_misc(self):
        op = self.pick(["gc", "bomb", "bomb", "open", "drop_txns", "fault", "fault"],
                       label="misc_op")
        if op == "gc":
            gc.collect()
        elif op == "bomb":
            self.bomb()
        elif op == "open":
            r, e = self.call(btree_store.DB, (self.paths[0],))
        elif op == "drop_txns":  # the last references: write transactions abort in dealloc
            del self.txns[:], self.iters[:]
        elif op == "fault" and self.fios:
            for _ in range(self.randint(1, 3)):
                self.fault(self.pick(self.fios))

    def fault(self, fio):
        """Drive a FaultIO controller: new faults, torn writes, power loss."""
        op = self.pick(["fail", "tear", "powerloss", "crash", "count", "misc", "fail_after",
                        "heal", "power_loss", "unsynced"], label="fault_op")
        if op == "fail":
            kind = self.val((["read", "write", "sync", "truncate", "any", "write|sync"],
                             ["bogus", "", "read|", 1]))
            n = self.val(([1, 2, 3, 5, 10, 30], [0, -1, 2**64, 1.5]))
            err = self.val(([errno.EIO, errno.ENOSPC, errno.EDQUOT], [0, -5, 2**40]))
            self.call(fio.fail_nth, (kind, n), {"errno": err, "sticky": self.chance(2)})
        elif op == "tear":
            self.call(fio.tear_nth, (self.val(([1, 2, 3], [0, -1])),
                                     self.val(([0, 512, 1024, 4096], [100, 2**70]))))
        elif op == "powerloss":
            self.call(fio.powerloss, (self.val(([0, 1, 12345], [-1, None])),),
                      {"on": not self.chance(2)})
        elif op == "crash":
            self.call(fio.crash)
        elif op == "fail_after":
            kind = self.val((["read", "write", "sync", "write|sync"], ["nope", 3]))
            n = self.val(([0, 1, 4, 20], [-1, 2**64, "2"]))
            err = self.val(([errno.EIO, errno.ENOSPC], [0, 2**40, "EIO"]))
            self.call(fio.fail_after, (kind, n), {"errno": err})
        elif op == "heal":
            self.call(fio.heal)
        elif op == "power_loss":
            mode = self.val((["drop", "tear", "reorder"], ["off", None, 1]))
            seed = self.val(([0, 7, 2**64 - 1, None], [-1, 2**64, 1.5]))
            self.call(fio.power_loss, (mode,), {"seed": seed})
        elif op == "unsynced":
            self.call(fio.unsynced, (self.pick([None, self.paths[0], 5]),))
        elif op == "count":
            self.call(fio.count, (self.pick(["any", "read", "write|sync", "x", None]),))
        else:
            self.call(getattr, (fio, "fired"))
            self.call(getattr, (fio, "in_use"))
            repr(fio)

    def bomb(self):
        """A garbage cycle whose __del__ makes one call, run by the collector at whatever
        allocation triggers it, possibly inside a call of the binding."""
        target = self.pick(["db_close", "txn_commit", "txn_abort", "txn_put",
                                            "iter_next", "db_begin", "db_check"])
        if target.startswith("db"):
            obj = self.any_db()
        elif target.startswith("txn"):
            obj = self.any_txn()
        else:
            obj = self.any_iter()
        if obj is None:
            return
        action = {
            "db_close": lambda o: o.close(),
            "db_begin": lambda o: o.begin(write=True, timeout=0),
            "db_check": lambda o: o.check(),
            "txn_commit": lambda o: o.commit(),
            "txn_abort": lambda o: o.abort(),
            "txn_put": lambda o: o.put(b"bomb", b"x" * 5000),
            "iter_next": lambda o: next(o, None),
        }[target]
        _Bomb(obj, action)


class _Bomb:
    def __init__(self, obj, action):
        self.obj = obj
        self.action = action
        self.cycle = self

    def __del__(self):
        try:
            r = self.action(self.obj)
            if isinstance(r, btree_store.Txn):
                r.abort()
        except ALLOWED:
            pass


class _Unraisables:
    """Collects exceptions raised inside finalizers (sys.unraisablehook)."""

    def __init__(self):
        self.bad = []

    def __enter__(self):
        self.old = sys.unraisablehook
        sys.unraisablehook = self.hook
        return self

    def hook(self, u):
        if not isinstance(u.exc_value, ALLOWED):
            self.bad.append("%r in %r" % (u.exc_value, u.object))

    def __exit__(self, *a):
        sys.unraisablehook = self.old


def _finish(driver):
    """Close every database of the example; then reopen each file and check it."""
    problems = []
    for db in driver.dbs:
        try:
            db.close()
        except Error as e:
            problems.append("close(): %r" % e)
    driver.dbs.clear()
    driver.txns.clear()
    driver.iters.clear()
    driver.views.clear()
    driver.keep.clear()
    gc.collect()
    for path in driver.paths:
        if not os.path.exists(path):
            continue
        try:
            db = btree_store.DB(path, create=False)
        except btree_store.CorruptionError as e:
            problems.append("reopen %s: %r" % (path, e))
            continue
        try:
            db.check()
            with db.begin() as txn:
                for name in [None] + txn.buckets():
                    n = sum(1 for _ in txn.iter(bucket=name))
                    assert n == txn.count(bucket=name), (path, name)
        except Error as e:
            problems.append("check %s: %r" % (path, e))
        finally:
            db.close()
    return problems


class HypothesisSource:
    """Choices drawn by hypothesis (the driver must then be deterministic: no automatic GC)."""

    def __init__(self, data):
        self.data = data

    def randint(self, lo, hi, label=None):
        return self.data.draw(st.integers(lo, hi), label=label)

    def pick(self, seq, label=None):
        return self.data.draw(st.sampled_from(seq), label=label)


class RandomSource:
    def __init__(self, seed):
        self.rnd = random.Random(seed)

    def randint(self, lo, hi, label=None):
        return self.rnd.randint(lo, hi)

    def pick(self, seq, label=None):
        return self.rnd.choice(seq)


def _run_driver(src, gc_threshold=None):
    """One random sequence of calls; gc_threshold None: automatic collection off (garbage is
    collected, and finalizers run, only at the driver's explicit gc steps)."""
    tmpdir = tempfile.mkdtemp(prefix="bs_chaos_")
    old_threshold = gc.get_threshold()
    gc.collect()
    if gc_threshold:
        gc.set_threshold(*gc_threshold)
    else:
        gc.disable()
    try:
        with _Unraisables() as unr:
            driver = Driver(src, tmpdir)
            try:
                while driver.steps < driver.max_steps:
                    driver.step()
            finally:
                problems = _finish(driver)
        assert not unr.bad, unr.bad
        assert not problems, problems
    finally:
        gc.enable()
        gc.set_threshold(*old_threshold)
        shutil.rmtree(tmpdir, ignore_errors=True)
