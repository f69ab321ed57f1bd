"""bench_vs_lmdb.py - btree_store side by side with py-lmdb (pip install lmdb), in one run.

    python bench/bench_vs_lmdb.py [--n 100000] [--value-size 100] [--durable 300] [--dir DIR]

Measures, for both stores, from Python: sequential fill, random fill, random reads, full scan,
random deletes (each in one transaction), small durable commits (sync on, one put per
commit), and random reads from 2 threads vs 1 thread on a database larger than btree_store's
page cache. Prints operations per second and the ratio btree_store / lmdb (> 1: btree_store
is faster). Not part of the test suite; small sizes by default, --n to scale.

Layer: benchmark; public Python API of btree_store and lmdb.
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time

try:
    import btree_store
except ImportError:  # running from a source checkout after build_ext --inplace
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
    import btree_store

try:
    import lmdb
except ImportError:
    sys.exit("this benchmark needs py-lmdb: pip install lmdb")


def keys_for(n, rnd):
    ks = [b"%016d" % i for i in range(n)]
    shuffled = ks[:]
    rnd.shuffle(shuffled)
    return ks, shuffled


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class BS:
    name = "btree_store"

    def __init__(self, path, sync=True, cache_size=64 * 2**20):
        self.db = btree_store.DB(path, sync=sync, cache_size=cache_size)

    def fill(self, items):
        with self.db.begin(write=True) as txn:
            put = txn.put
            for k, v in items:
                put(k, v)

    def reads(self, keys):
        with self.db.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is None:
                    raise AssertionError("missing key")

    def scan(self):
        n = 0
        with self.db.begin() as txn:
            for k, v in txn.iter():
                n += 1
        return n

    def deletes(self, keys):
        with self.db.begin(write=True) as txn:
            d = txn.delete
            for k in keys:
                d(k)

    def durable(self, items):
        for k, v in items:
            with self.db.begin(write=True) as txn:
                txn.put(k, v)

    def close(self):
        self.db.close()


class LM:
    name = "lmdb"

    def __init__(self, path, sync=True, cache_size=None):
        self.env = lmdb.open(path, map_size=1 << 36, subdir=False, sync=sync, metasync=sync,
                             lock=True, max_readers=64, readahead=False)

    def fill(self, items):
        with self.env.begin(write=True) as txn:
            put = txn.put
            for k, v in items:
                put(k, v)

    def reads(self, keys):
        with self.env.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is None:
                    raise AssertionError("missing key")

    def scan(self):
        n = 0
        with self.env.begin() as txn:
            for k, v in txn.cursor():
                n += 1
        return n

    def deletes(self, keys):
        with self.env.begin(write=True) as txn:
            d = txn.delete
            for k in keys:
                d(k)

    def durable(self, items):
        for k, v in items:
            with self.env.begin(write=True) as txn:
                txn.put(k, v)

    def close(self):
        self.env.close()


def run_one(cls, folder, args, rnd_seed):
    rnd = random.Random(rnd_seed)
    n = args.n
    val = os.urandom(args.value_size)
    ks, shuffled = keys_for(n, rnd)
    res = {}
    path = os.path.join(folder, cls.name + "-seq")
    st = cls(path)
    res["sequential fill"] = n / timed(lambda: st.fill((k, val) for k in ks))
    st.close()
    path = os.path.join(folder, cls.name + "-rand")
    st = cls(path)
    res["random fill"] = n / timed(lambda: st.fill((k, val) for k in shuffled))
    reads = [rnd.choice(ks) for _ in range(n)]
    st.reads(reads[:1000])  # warm up
    res["random reads"] = n / timed(lambda: st.reads(reads))
    res["full scan"] = n / timed(st.scan)
    dels = shuffled[: n // 2]
    res["random deletes"] = len(dels) / timed(lambda: st.deletes(dels))
    st.close()
    path = os.path.join(folder, cls.name + "-durable")
    st = cls(path, sync=True)
    items = [(b"d%08d" % i, val) for i in range(args.durable)]
    res["durable commits (1 put)"] = len(items) / timed(lambda: st.durable(items))
    st.close()
    return res


def drop_os_cache(path):
    """Evict a database's files from the OS page cache (Linux), so reads go to the device."""
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in os.listdir(path)]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def threaded_reads(cls, folder, args, cold=False):
    """Random reads from 1 and 2 threads on a DB larger than btree_store's cache. cold: the
    OS page cache is emptied before each phase, so the reads wait for the device."""
    n = args.n
    path = os.path.join(folder, cls.name + "-mt")
    val = os.urandom(args.value_size)
    ks = [b"%016d" % i for i in range(n)]
    data_bytes = n * (16 + args.value_size)
    cache = max(1 << 20, data_bytes // 8)
    st = cls(path, cache_size=cache)
    st.fill((k, val) for k in ks)
    st.close()
    st = cls(path, cache_size=cache)
    m = args.thread_reads // (20 if cold else 1)
    rnds = [random.Random(s) for s in (1, 2, 3)]
    plans = [[r.choice(ks) for _ in range(m)] for r in rnds]
    if cold:
        drop_os_cache(path)
    else:
        st.reads(plans[2][:1000])
    one = m / timed(lambda: st.reads(plans[2]))
    ts = [threading.Thread(target=st.reads, args=(p,)) for p in plans[:2]]

    def both():
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    if cold:
        drop_os_cache(path)
    two = 2 * m / timed(both)
    st.close()
    return one, two


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100000, help="records (default 100000)")
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--durable", type=int, default=300, help="durable one-put commits")
    ap.add_argument("--thread-reads", type=int, default=100000, help="reads per thread")
    ap.add_argument("--dir", default=None, help="folder for the database files")
    args = ap.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="bench_", dir=args.dir)
    try:
        print("n=%d value=%dB durable=%d; btree_store %s, lmdb %s (py-lmdb %s)" % (
            args.n, args.value_size, args.durable, btree_store.__version__,
            ".".join(map(str, lmdb.version())), lmdb.__version__))
        r_bs = run_one(BS, folder, args, 1)
        r_lm = run_one(LM, folder, args, 1)
        print("%-26s %14s %14s %8s" % ("operation", "btree_store/s", "lmdb/s", "ratio"))
        for op in r_bs:
            print("%-26s %14.0f %14.0f %8.2f" % (op, r_bs[op], r_lm[op], r_bs[op] / r_lm[op]))
        b1, b2 = threaded_reads(BS, folder, args)
        l1, l2 = threaded_reads(LM, folder, args)
        print("%-26s %14.0f %14.0f %8.2f" % ("random reads, 1 thread", b1, l1, b1 / l1))
        print("%-26s %14.0f %14.0f %8.2f" % ("random reads, 2 threads", b2, l2, b2 / l2))
        print("2 threads / 1 thread: btree_store %.2fx, lmdb %.2fx (DB %d MiB, btree_store "
              "cache 1/8 of it, data in the OS page cache)" % (
                  b2 / b1, l2 / l1, args.n * (16 + args.value_size) >> 20))
        if hasattr(os, "posix_fadvise"):
            b1, b2 = threaded_reads(BS, folder, args, cold=True)
            l1, l2 = threaded_reads(LM, folder, args, cold=True)
            print("%-26s %14.0f %14.0f %8.2f" % ("cold reads, 1 thread", b1, l1, b1 / l1))
            print("%-26s %14.0f %14.0f %8.2f" % ("cold reads, 2 threads", b2, l2, b2 / l2))
            print("2 threads / 1 thread, OS cache emptied first: btree_store %.2fx, lmdb %.2fx"
                  % (b2 / b1, l2 / l1))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
