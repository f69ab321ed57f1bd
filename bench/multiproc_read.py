"""multiproc_read.py - random reads from 1 and from 2 reader processes on one database, for
btree_store and py-lmdb side by side (issue 10: reads scale with processes).

    python bench/multiproc_read.py [--n 200000] [--gets 300000] [--reps 3] [--writer] [--dir DIR]

Each engine gets a file of N keys b'%016d' with 100-byte values. A "run" starts P reader
processes (P = 1, then 2; fork start method), each opens the file itself, takes one snapshot
and does --gets random gets (its own order) after all of them have opened (a barrier); the
figure is total gets / wall time from the barrier to the last reader done, median of --reps.
With --writer, a writer process commits small sync=False transactions into the same file
during the 2-process runs (readers beside a live writer; on 2 cores it takes CPU from them). Prints gets/s for 1 and 2 processes and the
ratio 2/1 for each engine, and btree_store's ratio against lmdb's.

Layer: benchmark; the public Python API of btree_store and py-lmdb.
"""
import argparse
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time


def _fill_bs(path, n):
    import btree_store
    rnd = random.Random(1)
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            for i in range(n):
                txn.put(b"%016d" % i, rnd.randbytes(100))


def _fill_lmdb(path, n):
    import lmdb
    rnd = random.Random(1)
    env = lmdb.open(path, map_size=1 << 32, subdir=False)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"%016d" % i, rnd.randbytes(100))
    env.close()


def _reader(engine, path, n, gets, seed, barrier, out):
    keys = [b"%016d" % random.Random(seed).randrange(n) for _ in range(gets)]
    if engine == "btree_store":
        import btree_store
        db = btree_store.DB(path, readonly=True)
        barrier.wait()
        t0 = time.perf_counter()
        with db.begin() as txn:
            get = txn.get
            for k in keys:
                get(k)
        t1 = time.perf_counter()
        db.close()
    else:
        import lmdb
        env = lmdb.open(path, readonly=True, lock=True, subdir=False)
        barrier.wait()
        t0 = time.perf_counter()
        with env.begin(buffers=True) as txn:
            get = txn.get
            for k in keys:
                get(k)
        t1 = time.perf_counter()
        env.close()
    out.put((t0, t1))


def _writer(engine, path, stop):
    i = 0
    if engine == "btree_store":
        import btree_store
        db = btree_store.DB(path, sync=False)
        while not stop.is_set():
            with db.begin(write=True) as txn:
                txn.put(b"w%08d" % (i % 1000), b"x" * 100)
            i += 1
        db.close()
    else:
        import lmdb
        env = lmdb.open(path, map_size=1 << 32, subdir=False, sync=False)
        while not stop.is_set():
            with env.begin(write=True) as txn:
                txn.put(b"w%08d" % (i % 1000), b"x" * 100)
            i += 1
        env.close()


def run(engine, path, n, gets, procs, seed, writer=False):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    stop = ctx.Event()
    w = ctx.Process(target=_writer, args=(engine, path, stop)) if procs > 1 and writer else None
    if w:
        w.start()
    ps = [ctx.Process(target=_reader, args=(engine, path, n, gets, seed + i, barrier, out))
          for i in range(procs)]
    for p in ps:
        p.start()
    barrier.wait()
    times = [out.get() for _ in ps]
    for p in ps:
        p.join()
    if w:
        stop.set()
        w.join()
    return procs * gets / (max(t1 for _, t1 in times) - min(t0 for t0, _ in times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200000)
    ap.add_argument("--gets", type=int, default=300000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--writer", action="store_true")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="mpread_", dir=a.dir)
    engines = ["btree_store"]
    try:
        import lmdb  # noqa: F401
        engines.append("lmdb")
    except ImportError:
        print("py-lmdb not installed: btree_store only")
    res = {}
    for e in engines:
        path = os.path.join(d, e + ".db")
        (_fill_bs if e == "btree_store" else _fill_lmdb)(path, a.n)
        for procs in (1, 2):
            res[e, procs] = statistics.median(
                run(e, path, a.n, a.gets, procs, 10 * r, a.writer) for r in range(a.reps))
    print("n=%d gets/process=%d reps=%d cpus=%d writer=%s" % (a.n, a.gets, a.reps,
                                                           os.cpu_count(), a.writer))
    print("%-12s %14s %14s %8s" % ("engine", "1 proc gets/s", "2 procs gets/s", "2/1"))
    for e in engines:
        print("%-12s %14.0f %14.0f %8.2f" % (e, res[e, 1], res[e, 2], res[e, 2] / res[e, 1]))
    if "lmdb" in engines:
        rb = res["btree_store", 2] / res["btree_store", 1]
        rl = res["lmdb", 2] / res["lmdb", 1]
        print("btree_store ratio / lmdb ratio: %.2f (>= 1: scales at least as well)" % (rb / rl))
        print("btree_store / lmdb, 1 proc: %.2f, 2 procs: %.2f" % (
            res["btree_store", 1] / res["lmdb", 1], res["btree_store", 2] / res["lmdb", 2]))


if __name__ == "__main__":
    main()
