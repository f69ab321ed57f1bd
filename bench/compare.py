"""compare.py - btree_store side by side with its peers, every workload in one run.

    python bench/compare.py [--n N] [--engines E ...] [--reps 3] [--json FILE] [--plot FILE.png]
                            [--dir DIR] [--workloads W,W ...]

Engines: btree_store, lmdb (py-lmdb), sqlite3 (WITHOUT ROWID, WAL, synchronous=FULL),
leveldb (plyvel) and gdbm (dbm.gnu); an engine whose module does not import is skipped with a
note. Settings are each engine's defaults; the only setting given is py-lmdb's map_size (LMDB
needs one; it only reserves address space).

Data: N keys b'%016d', each with its own 100-byte random value, written in random order
(fill_seq: in key order); one write transaction per fill, durable commits.

Workloads, in this order for every engine (interleaved: each workload runs on every engine
before the next one starts, the engine order rotates between repetitions, each repetition
uses fresh folders on the same disk; the reported figure is the median of --reps runs, of
--reps x --commit-rounds runs for the two commit workloads):
  fill_seq       N puts in key order, one transaction           (records/s)
  fill_random    N puts in random order, one transaction        (records/s)
  read_random    N gets in another random order, one snapshot    (gets/s)
  scan           a full forward iteration                        (records/s)
  reopen_gets    close, reopen, 100k random gets (open included) (gets/s); before the
                 timed part the store's files are read once (untimed, every engine), so
                 that each starts with its files in the OS page cache (see warm_files)
  bytes_per_record  size of the closed files / N                 (bytes, lower is better)
  delete_random  N/2 deletes in random order, one transaction    (deletes/s)
  commit_small   500 durable commits of 1 put each, fresh file   (commits/s)
  commit_batch   100 durable commits of 100 puts each, fresh file (records/s)
  put_many       N pairs through the batch call in one transaction, fresh file (records/s):
                 btree_store txn.put_many, py-lmdb Cursor.putmulti, sqlite3 executemany
  get_many       N random keys through the batch call (gets/s): btree_store txn.get_many,
                 py-lmdb Cursor.getmulti
A workload an engine lacks (no batch call) is reported as null with a note.

Prints one table of medians, plus btree_store / engine for every peer (> 1: btree_store is
faster; for bytes_per_record < 1 is smaller) and the goal against py-lmdb. --json writes every
run; --plot draws a bar chart of the ratios (needs matplotlib, `pip install .[bench]`).

Layer: benchmark; the public Python API of btree_store and of each peer.
"""
import argparse
import gc
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time

try:
    import btree_store
except ImportError:  # a source checkout after build_ext --inplace
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "python"))
    import btree_store

VALUE_SIZE = 100
SMALL_COMMITS = 500
BATCH_COMMITS = 100
BATCH_SIZE = 100
REOPEN_GETS = 100_000

# (name, unit, higher is better)
WORKLOADS = [
    ("fill_seq", "records/s", True),
    ("fill_random", "records/s", True),
    ("read_random", "gets/s", True),
    ("scan", "records/s", True),
    ("reopen_gets", "gets/s", True),
    ("bytes_per_record", "bytes", False),
    ("delete_random", "deletes/s", True),
    ("commit_small", "commits/s", True),
    ("commit_batch", "records/s", True),
    ("put_many", "records/s", True),
    ("get_many", "gets/s", True),
]
WORKLOAD_NAMES = [w[0] for w in WORKLOADS]
# the workloads that run on the store fill_random made (--workloads adds fill_random for them)
# durable-commit workloads: each takes ~0.1 s, while a shared disk's fsync latency drifts by
# 3x over seconds, so each repetition runs them --commit-rounds times, engines alternating
COMMIT_WORKLOADS = {"commit_small", "commit_batch"}
NEED_MAIN = {"read_random", "scan", "reopen_gets", "bytes_per_record", "delete_random",
             "get_many"}

# Goals: btree_store / py-lmdb, default settings on both sides (bytes_per_record: at most).
GOALS_VS_LMDB = {
    "fill_seq": 1.3, "fill_random": 1.2, "read_random": 1.2, "scan": 1.3, "reopen_gets": 1.0,
    "bytes_per_record": 0.85, "delete_random": 1.2, "commit_small": 1.5, "commit_batch": 1.0,
    "put_many": 1.5, "get_many": 1.5,
}


class Unsupported(Exception):
    """The engine has no such call (reported as null with the message as note)."""


def dir_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


# ---------------------------------------------------------------------------------------------
# Engines. Each works in a folder of its own; `open()` creates or reopens the store there.

class Engine:
    name = "?"

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def size(self):
        return dir_size(self.folder)

    def put_many(self, items):
        raise Unsupported("%s has no batch put" % self.name)

    def get_many(self, keys):
        raise Unsupported("%s has no batch get" % self.name)


class TxnEngine(Engine):
    """An engine whose transactions have put/get/delete (btree_store, py-lmdb): the loops
    are the same code for both, so they cost the same from Python; `begin(write)` opens one."""

    def begin(self, write=False):
        raise NotImplementedError

    def fill(self, items):
        with self.begin(write=True) as txn:
            put = txn.put
            for k, v in items:
                put(k, v)

    def gets(self, keys):
        with self.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is None:
                    raise AssertionError("missing key")

    def deletes(self, keys):
        with self.begin(write=True) as txn:
            d = txn.delete
            for k in keys:
                d(k)

    def commits(self, batches):
        for batch in batches:
            with self.begin(write=True) as txn:
                put = txn.put
                for k, v in batch:
                    put(k, v)


class BtreeStore(TxnEngine):
    name = "btree_store"

    @staticmethod
    def available():
        return True, "btree_store %s" % getattr(btree_store, "__version__", "?")

    def open(self):
        self.db = btree_store.DB(os.path.join(self.folder, "data.bs"))

    def close(self):
        self.db.close()

    def begin(self, write=False):
        return self.db.begin(write=write)

    def scan(self):
        n = 0
        with self.db.begin() as txn:
            for _kv in txn.iter():
                n += 1
        return n

    def put_many(self, items):
        with self.db.begin(write=True) as txn:
            if not hasattr(txn, "put_many"):
                raise Unsupported("txn.put_many does not exist in this build")
            txn.put_many(items)

    def get_many(self, keys):
        with self.db.begin() as txn:
            if not hasattr(txn, "get_many"):
                raise Unsupported("txn.get_many does not exist in this build")
            vals = txn.get_many(keys)
        if len(vals) != len(keys) or None in vals:
            raise AssertionError("get_many: missing keys")


class Lmdb(TxnEngine):
    name = "lmdb"

    @staticmethod
    def available():
        try:
            import lmdb
        except ImportError:
            return False, "py-lmdb is not installed (pip install lmdb)"
        return True, "py-lmdb %s (LMDB %s)" % (lmdb.__version__, ".".join(map(str, lmdb.version())))

    def open(self):
        import lmdb
        # map_size is LMDB's required setting (the largest the file may grow), not a tuning.
        self.env = lmdb.open(os.path.join(self.folder, "data.mdb"), subdir=False,
                             map_size=1 << 38)

    def close(self):
        self.env.close()

    def size(self):
        return os.path.getsize(os.path.join(self.folder, "data.mdb"))  # not the lock file

    def begin(self, write=False):
        return self.env.begin(write=write)

    def scan(self):
        n = 0
        with self.env.begin() as txn:
            for _kv in txn.cursor():
                n += 1
        return n

    def put_many(self, items):
        with self.env.begin(write=True) as txn:
            txn.cursor().putmulti(items)

    def get_many(self, keys):
        with self.env.begin() as txn:
            vals = txn.cursor().getmulti(keys)
        if len(vals) != len(keys):
            raise AssertionError("getmulti: missing keys")


class Sqlite(Engine):
    name = "sqlite3"

    @staticmethod
    def available():
        import sqlite3
        return True, "sqlite %s" % sqlite3.sqlite_version

    def open(self):
        import sqlite3
        self.conn = sqlite3.connect(os.path.join(self.folder, "data.sqlite"),
                                    isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL)"
                          " WITHOUT ROWID")

    def close(self):
        self.conn.close()

    def fill(self, items):
        ex = self.conn.execute
        ex("BEGIN")
        for kv in items:
            ex("INSERT OR REPLACE INTO kv VALUES (?, ?)", kv)
        ex("COMMIT")

    def gets(self, keys):
        ex = self.conn.execute
        ex("BEGIN")
        for k in keys:
            if ex("SELECT v FROM kv WHERE k = ?", (k,)).fetchone() is None:
                raise AssertionError("missing key")
        ex("COMMIT")

    def scan(self):
        n = 0
        for _kv in self.conn.execute("SELECT k, v FROM kv ORDER BY k"):
            n += 1
        return n

    def deletes(self, keys):
        ex = self.conn.execute
        ex("BEGIN")
        for k in keys:
            ex("DELETE FROM kv WHERE k = ?", (k,))
        ex("COMMIT")

    def commits(self, batches):
        ex = self.conn.execute
        for batch in batches:
            ex("BEGIN")
            for kv in batch:
                ex("INSERT OR REPLACE INTO kv VALUES (?, ?)", kv)
            ex("COMMIT")

    def put_many(self, items):
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", items)
        self.conn.execute("COMMIT")


class LevelDB(Engine):
    """LevelDB has no transactions: a fill is one atomic WriteBatch written with sync=True."""
    name = "leveldb"

    @staticmethod
    def available():
        try:
            import plyvel
        except ImportError:
            return False, "plyvel is not installed (pip install plyvel)"
        return True, "plyvel %s (LevelDB %s)" % (plyvel.__version__, plyvel.__leveldb_version__)

    def open(self):
        import plyvel
        self.db = plyvel.DB(os.path.join(self.folder, "data.ldb"), create_if_missing=True)

    def close(self):
        self.db.close()

    def fill(self, items):
        with self.db.write_batch(sync=True) as wb:
            put = wb.put
            for k, v in items:
                put(k, v)

    def gets(self, keys):
        with self.db.snapshot() as snap:
            get = snap.get
            for k in keys:
                if get(k) is None:
                    raise AssertionError("missing key")

    def scan(self):
        n = 0
        with self.db.snapshot() as snap:
            for _kv in snap.iterator():
                n += 1
        return n

    def deletes(self, keys):
        with self.db.write_batch(sync=True) as wb:
            d = wb.delete
            for k in keys:
                d(k)

    def commits(self, batches):
        for batch in batches:
            self.fill(batch)


class Gdbm(Engine):
    """dbm.gnu: no transactions; a fill ends with sync(), a commit is the writes + sync()."""
    name = "gdbm"

    @staticmethod
    def available():
        try:
            import dbm.gnu  # noqa: F401
        except ImportError:
            return False, "dbm.gnu is not available in this Python"
        return True, "dbm.gnu"

    def open(self):
        import dbm.gnu
        self.db = dbm.gnu.open(os.path.join(self.folder, "data.gdbm"), "c")

    def close(self):
        self.db.close()

    def fill(self, items):
        d = self.db
        for k, v in items:
            d[k] = v
        d.sync()

    def gets(self, keys):
        d = self.db
        for k in keys:
            d[k]  # KeyError when missing

    def scan(self):
        d = self.db
        n = 0
        k = d.firstkey()
        while k is not None:
            d[k]
            n += 1
            k = d.nextkey(k)
        return n

    def deletes(self, keys):
        d = self.db
        for k in keys:
            del d[k]
        d.sync()

    def commits(self, batches):
        for batch in batches:
            self.fill(batch)


ENGINES = {cls.name: cls for cls in (BtreeStore, Lmdb, Sqlite, LevelDB, Gdbm)}


# ---------------------------------------------------------------------------------------------

class Data:
    """Every key list the workloads use, built once (same for every engine)."""

    def __init__(self, n, seed):
        rnd = random.Random(seed)
        blob = b"".join(rnd.randbytes(min(1 << 20, n - i) * VALUE_SIZE)  # randbytes < 2**31 bits
                       for i in range(0, n, 1 << 20))
        self.keys = [b"%016d" % i for i in range(n)]
        vals = [blob[i * VALUE_SIZE:(i + 1) * VALUE_SIZE] for i in range(n)]
        del blob
        self.seq_items = list(zip(self.keys, vals))
        self.rand_items = self.seq_items[:]
        rnd.shuffle(self.rand_items)
        self.read_keys = self.keys[:]
        rnd.shuffle(self.read_keys)
        self.reopen_keys = [rnd.choice(self.keys) for _ in range(min(n, REOPEN_GETS))]
        self.delete_keys = self.read_keys[: n // 2]
        rnd.shuffle(self.delete_keys)
        self.small_batches = [[(b"c%015d" % i, vals[i % n])] for i in range(SMALL_COMMITS)]
        bk = list(range(BATCH_COMMITS * BATCH_SIZE))
        rnd.shuffle(bk)
        self.big_batches = [[(b"%016d" % bk[j * BATCH_SIZE + i], vals[(j * BATCH_SIZE + i) % n])
                             for i in range(BATCH_SIZE)] for j in range(BATCH_COMMITS)]


def warm_files(folder):
    """Read every file under folder once, so that the OS page cache holds it. reopen_gets
    calls it for every engine before its timed part: what the earlier workloads leave in the
    page cache differs by engine and decides the figure. btree_store serves read_random and
    scan from its own cache and never touches its file's page cache meanwhile, py-lmdb reads
    its file through a mapping; on the shared VM the kernel drops pages nobody touches (a 10M
    run: 352 MB read from the disk in btree_store's reopen_gets, 0 in py-lmdb's, whose
    read_random had just read its pages back; /proc/self/io read_bytes). Warm for both is
    the state a reopen soon after the writes meets, and it measures the engines, not the
    disk."""
    buf = bytearray(8 << 20)
    for root, _dirs, files in os.walk(folder):
        for f in files:
            with open(os.path.join(root, f), "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass


def timed(fn, *args):
    gc.collect()
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


class Run:
    """One repetition: each workload on every engine in turn."""

    def __init__(self, classes, root, data):
        self.data = data
        self.root = root
        self.classes = classes
        self.main = {}          # engine name -> open store filled at random (fill_random)

    def folder(self, cls, what):
        return os.path.join(self.root, "%s-%s" % (cls.name, what))

    def fresh(self, cls, what):
        e = cls(self.folder(cls, what))
        e.open()
        return e

    def drop(self, e):
        e.close()
        shutil.rmtree(e.folder, ignore_errors=True)

    def workload(self, name, cls):
        d = self.data
        n = len(d.keys)
        if name == "fill_seq":
            e = self.fresh(cls, "seq")
            t = timed(e.fill, d.seq_items)
            self.drop(e)
            return n / t
        if name == "fill_random":
            e = self.fresh(cls, "main")
            t = timed(e.fill, d.rand_items)
            self.main[cls.name] = e
            return n / t
        e = self.main.get(cls.name)  # None unless fill_random ran (--workloads)
        if name == "read_random":
            return n / timed(e.gets, d.read_keys)
        if name == "scan":
            got = [0]

            def scan():
                got[0] = e.scan()
            t = timed(scan)
            if got[0] != n:
                raise AssertionError("scan saw %d records, expected %d" % (got[0], n))
            return n / t
        if name == "reopen_gets":
            e.close()
            warm_files(e.folder)

            def reopen():
                e.open()
                e.gets(d.reopen_keys)
            return len(d.reopen_keys) / timed(reopen)
        if name == "bytes_per_record":
            e.close()
            size = e.size()
            e.open()
            return size / n
        if name == "delete_random":
            return len(d.delete_keys) / timed(e.deletes, d.delete_keys)
        if name == "commit_small":
            f = self.fresh(cls, "small")
            t = timed(f.commits, d.small_batches)
            self.drop(f)
            return len(d.small_batches) / t
        if name == "commit_batch":
            f = self.fresh(cls, "batch")
            t = timed(f.commits, d.big_batches)
            self.drop(f)
            return BATCH_COMMITS * BATCH_SIZE / t
        if name == "put_many":
            f = self.fresh(cls, "many")
            try:
                t = timed(f.put_many, d.rand_items)
            finally:
                self.drop(f)
            return n / t
        if name == "get_many":
            # after delete_random: ask for the keys still there
            keys = d.read_keys[n // 2:]
            return len(keys) / timed(e.get_many, keys)
        raise ValueError(name)

    def finish(self):
        for e in self.main.values():
            self.drop(e)
        self.main.clear()


def median(xs):
    xs = sorted(xs)
    m = len(xs)
    return xs[m // 2] if m % 2 else (xs[m // 2 - 1] + xs[m // 2]) / 2


def run(args, out=print):
    classes, versions, notes = [], {}, {}
    for name in args.engines:
        cls = ENGINES[name]
        ok, info = cls.available()
        if ok:
            classes.append(cls)
            versions[name] = info
        else:
            notes[name] = info
            out("skipping %s: %s" % (name, info))
    t0 = time.time()
    data = Data(args.n, args.seed)
    out("n=%d, %d-byte values, %d repetitions; data built in %.1fs; %s" % (
        args.n, VALUE_SIZE, args.reps, time.time() - t0, ", ".join(versions.values())))
    runs = {cls.name: {w: [] for w in WORKLOAD_NAMES} for cls in classes}
    wnotes = {cls.name: {} for cls in classes}
    root_parent = args.dir or tempfile.gettempdir()
    selected = set(getattr(args, "workloads", None) or WORKLOAD_NAMES)
    if selected & NEED_MAIN:
        selected.add("fill_random")  # they work on the store fill_random leaves open
    for rep in range(args.reps):
        order = classes[rep % len(classes):] + classes[:rep % len(classes)]
        root = tempfile.mkdtemp(prefix="compare_", dir=root_parent)
        r = Run(order, root, data)
        try:
            for w in WORKLOAD_NAMES:
                if w not in selected:
                    continue
                rounds = args.commit_rounds if w in COMMIT_WORKLOADS else 1
                for cls in [c for _ in range(rounds) for c in order]:
                    if w in wnotes[cls.name]:
                        continue
                    try:
                        v = r.workload(w, cls)
                    except Unsupported as exc:
                        wnotes[cls.name][w] = str(exc)
                        continue
                    runs[cls.name][w].append(v)
                    if args.verbose:
                        out("  rep %d %-16s %-12s %14.1f" % (rep + 1, w, cls.name, v))
        finally:
            r.finish()
            shutil.rmtree(root, ignore_errors=True)
        out("repetition %d/%d done (%.0fs so far)" % (rep + 1, args.reps, time.time() - t0))
    results = {}
    for cls in classes:
        res = {}
        for w, unit, _hib in WORKLOADS:
            xs = runs[cls.name][w]
            res[w] = {"unit": unit, "runs": xs, "median": median(xs) if xs else None,
                      "min": min(xs) if xs else None, "max": max(xs) if xs else None}
            if w in wnotes[cls.name]:
                res[w]["note"] = wnotes[cls.name][w]
        results[cls.name] = res
    return {
        "n": args.n, "value_size": VALUE_SIZE, "reps": args.reps, "seed": args.seed,
        "workloads": [{"name": w, "unit": u, "higher_is_better": h} for w, u, h in WORKLOADS],
        "engines": versions, "skipped_engines": notes, "results": results,
        "goals_vs_lmdb": GOALS_VS_LMDB,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "loadavg_end": list(os.getloadavg())},
        "seconds": round(time.time() - t0, 1), "command": " ".join(sys.argv),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def ratio(report, engine, w):
    """btree_store / engine (None when either is missing)."""
    res = report["results"]
    a = res.get("btree_store", {}).get(w, {}).get("median")
    b = res.get(engine, {}).get(w, {}).get("median")
    if a is None or b is None or b == 0:
        return None
    return a / b


def ran(report, w):
    """False for a workload that --workloads left out (no engine has a run or a note)."""
    return any(r[w]["runs"] or r[w].get("note") for r in report["results"].values())


def fmt(v):
    if v is None:
        return "n/a"
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e4:
        return "%.0fk" % (v / 1e3)
    if v >= 100:
        return "%.0f" % v
    return "%.1f" % v


def table(report):
    engines = list(report["results"])
    peers = [e for e in engines if e != "btree_store"]
    head = ["workload"] + engines + ["bs/%s" % p for p in peers]
    if "lmdb" in peers:
        head.append("goal vs lmdb")
    rows = [head]
    for w in WORKLOAD_NAMES:
        if not ran(report, w):
            continue
        row = [w]
        for e in engines:
            row.append(fmt(report["results"][e][w]["median"]))
        for p in peers:
            r = ratio(report, p, w)
            row.append("n/a" if r is None else "%.2fx" % r)
        if "lmdb" in peers:
            g = GOALS_VS_LMDB[w]
            row.append(("<= %.2fx" if w == "bytes_per_record" else ">= %.2fx") % g)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i])
                       for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    out = "\n".join(lines)
    notes = []
    for e in engines:
        for w in WORKLOAD_NAMES:
            note = report["results"][e][w].get("note")
            if note:
                notes.append("%s %s: n/a (%s)" % (e, w, note))
    for e, why in report["skipped_engines"].items():
        notes.append("%s: skipped (%s)" % (e, why))
    if notes:
        out += "\n" + "\n".join(notes)
    return out


def markdown_table(report):
    """The table as GitHub markdown (medians, with min-max ranges, and ratios)."""
    engines = list(report["results"])
    peers = [e for e in engines if e != "btree_store"]
    head = ["workload"] + engines + ["btree_store / %s" % p for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in WORKLOAD_NAMES:
        if not ran(report, w):
            continue
        row = [w]
        for e in engines:
            r = report["results"][e][w]
            if r["median"] is None:
                row.append("n/a")
            elif r["min"] == r["max"] or w == "bytes_per_record":
                row.append(fmt(r["median"]))
            else:
                row.append("%s (%s-%s)" % (fmt(r["median"]), fmt(r["min"]), fmt(r["max"])))
        for p in peers:
            r = ratio(report, p, w)
            row.append("n/a" if r is None else "%.2fx" % r)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    peers = [e for e in report["results"] if e != "btree_store"]
    ws = [w for w in WORKLOAD_NAMES if any(ratio(report, p, w) is not None for p in peers)]
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(ws)), 4.8))
    width = 0.8 / max(1, len(peers))
    for i, p in enumerate(peers):
        vals = [ratio(report, p, w) or 0 for w in ws]
        vals = [1 / v if (w == "bytes_per_record" and v) else v for w, v in zip(ws, vals)]
        ax.bar([x + (i - (len(peers) - 1) / 2) * width for x in range(len(ws))], vals, width,
               label="vs %s" % p)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(ws)))
    ax.set_xticklabels([("bytes/record (inverse)" if w == "bytes_per_record" else w) for w in ws],
                       rotation=30, ha="right")
    ax.set_ylabel("btree_store speed / peer speed (> 1: btree_store faster)")
    ax.set_yscale("log")
    ax.set_title("btree_store vs peers, N=%s, median of %d (default settings)" % (
        "{:,}".format(report["n"]), report["reps"]))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="records (default 1,000,000)")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES),
                    help="any of %s (default: all that import); commas also work" % (
                        ", ".join(ENGINES)))
    ap.add_argument("--reps", type=int, default=3, help="repetitions, median taken (default 3)")
    ap.add_argument("--json", help="write every run and the medians to this file")
    ap.add_argument("--plot", help="write a bar chart of the ratios (PNG, needs matplotlib)")
    ap.add_argument("--dir", help="parent folder for the database folders (default: temp dir)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--verbose", "-v", action="store_true", help="print every single run")
    ap.add_argument("--commit-rounds", type=int, default=5,
                    help="runs of commit_small/commit_batch per repetition, engines "
                         "alternating, each on a fresh file (default 5); the median is over "
                         "every run")
    ap.add_argument("--workloads", nargs="+", default=None,
                    help="run only these (commas also work; default: all): %s" % (
                        ", ".join(WORKLOAD_NAMES)))
    args = ap.parse_args(argv)
    if args.workloads:
        args.workloads = [x for w in args.workloads for x in w.split(",") if x]
        for x in args.workloads:
            if x not in WORKLOAD_NAMES:
                ap.error("unknown workload %r (choose from %s)" % (x, ", ".join(WORKLOAD_NAMES)))
    names = [x for e in args.engines for x in e.split(",") if x]
    for x in names:
        if x not in ENGINES:
            ap.error("unknown engine %r (choose from %s)" % (x, ", ".join(ENGINES)))
    if "btree_store" not in names:
        names.insert(0, "btree_store")
    args.engines = names
    if args.n < 10 or args.reps < 1 or args.commit_rounds < 1:
        ap.error("--n must be >= 10, --reps and --commit-rounds >= 1")
    report = run(args)
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.plot:
        plot(report, args.plot)


if __name__ == "__main__":
    main()
