"""multiproc_read.py - random reads from 1 and from 2 reader processes on one database, for
btree_store and py-lmdb side by side (issue 10: reads scale with processes).

    python bench/multiproc_read.py [--n 200000] [--gets 300000] [--reps 3] [--writer] [--dir DIR]
                                   [--before PYTHONPATH] [--write-n 200000] [--no-strace]

Each engine gets a file of N keys b'%016d' with 100-byte values. A "run" starts P reader
processes (P = 1, then 2; fork start method), each opens the file itself, takes one snapshot
and does --gets random gets (its own order) after all of them have opened (a barrier); the
figure is total gets / wall time from the barrier to the last reader done, median of --reps.
With --writer, a writer process commits small sync=False transactions into the same file
during the 2-process runs (readers beside a live writer; on 2 cores it takes CPU from them). Prints gets/s for 1 and 2 processes and the
ratio 2/1 for each engine, and btree_store's ratio against lmdb's, with the issue's goals
(2/1 >= 1.8, and >= lmdb's 2/1) marked PASS/FAIL.

Then the two other figures of issue 10:
- syscalls of a read transaction: a child process opens the file, then does 2000 read
  transactions of one get each (their pages cached by a first pass) between two marker stat()
  calls, under strace -f; the figure
  is the system calls between the markers per transaction, for btree_store and py-lmdb (whose
  reader table costs none after the first transaction). Skipped without strace (--no-strace).
- with --before DIR (a PYTHONPATH holding an older btree_store build, e.g. main before issue
  10, 7f507c0): commit_small and fill_random of bench/compare.py with no other process
  present, this build against that one, alternating builds --reps times; the goal is within
  5% (after/before >= 0.95).

Layer: benchmark; the public Python API of btree_store and py-lmdb.
"""
import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _fill_bs(path, n):
    """N keys b'%016d' with 100-byte values in one transaction (bench/multiproc_write.py's
    children use it too)."""
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


STRACE_CHILD = r"""
import os, sys
engine, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
keys = [b"%016d" % (i * 7919 % n) for i in range(2000)]
if engine == "btree_store":
    import btree_store
    db = btree_store.DB(path, readonly=True)
    with db.begin() as txn:  # the first one registers the slot
        txn.get(keys[0])
    def one(k):
        with db.begin() as txn:
            txn.get(k)
else:
    import lmdb
    env = lmdb.open(path, readonly=True, lock=True, subdir=False)
    with env.begin() as txn:
        txn.get(keys[0])
    def one(k):
        with env.begin(buffers=True) as txn:
            txn.get(k)
for k in keys:  # warm: the pages these gets need are cached, the allocator is grown
    one(k)
try:
    os.stat("/__bs_mark_begin__")
except OSError:
    pass
for k in keys:
    one(k)
try:
    os.stat("/__bs_mark_end__")
except OSError:
    pass
"""


def marked_syscalls(out):
    """System call counts by name in an `strace -f -o out` log, between the child's writes
    of the markers __bs_mark_begin__ and __bs_mark_end__ (bench/multiproc_write.py uses it
    too)."""
    inside, calls = False, {}
    with open(out) as f:
        for line in f:
            if "__bs_mark_begin__" in line:
                inside = True
                continue
            if "__bs_mark_end__" in line:
                break
            if inside:
                body = line.split(None, 1)[1] if line[:1].isdigit() else line
                name = body.split("(", 1)[0].strip()
                if name and not name.startswith(("+++", "---", "<...")):
                    calls[name] = calls.get(name, 0) + 1
    return calls


def strace_read_txn(engine, path, n, d):
    """System calls per read transaction (one get) in a process that has the file open."""
    out = os.path.join(d, "strace_%s.txt" % engine)
    env = dict(os.environ)
    subprocess.run(["strace", "-f", "-qq", "-o", out, sys.executable, "-c", STRACE_CHILD,
                    engine, path, str(n)], check=True, env=env)
    calls = marked_syscalls(out)
    return sum(calls.values()) / 2000.0, calls


def compare_writes(before, n, reps, d):
    """commit_small and fill_random (bench/compare.py) of this build and of `before`."""
    runs = {"after": {}, "before": {}}
    import btree_store  # this build: the one this script imports
    here_pp = os.path.dirname(os.path.dirname(os.path.abspath(btree_store.__file__)))
    for r in range(reps):
        for which, pp in (("after", here_pp), ("before", before)):
            js = os.path.join(d, "cmp_%s_%d.json" % (which, r))
            env = dict(os.environ, PYTHONPATH=pp)
            subprocess.run([sys.executable, os.path.join(HERE, "compare.py"), "--n", str(n),
                            "--engines", "btree_store", "--reps", "1", "--workloads",
                            "commit_small", "fill_random", "--dir", d, "--json", js],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            with open(js) as f:
                res = json.load(f)["results"]["btree_store"]
            for wl in ("commit_small", "fill_random"):
                runs[which].setdefault(wl, []).append(res[wl]["median"])
    return {wl: (statistics.median(runs["after"][wl]), statistics.median(runs["before"][wl]))
            for wl in ("commit_small", "fill_random")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200000)
    ap.add_argument("--gets", type=int, default=300000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--writer", action="store_true")
    ap.add_argument("--before", default=None,
                    help="PYTHONPATH of an older btree_store build for the write figures")
    ap.add_argument("--write-n", type=int, default=200000, help="records of fill_random")
    ap.add_argument("--no-strace", action="store_true")
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
    rb = res["btree_store", 2] / res["btree_store", 1]
    print("goal: 2 reader processes >= 1.8x one: %.2f %s" % (rb, "PASS" if rb >= 1.8 else "FAIL"))
    if "lmdb" in engines:
        print("goal: >= py-lmdb's ratio in this run: %.2f vs %.2f %s" % (
            rb, rl, "PASS" if rb >= rl else "FAIL"))
    if not a.no_strace and shutil.which("strace"):
        for e in engines:
            per, calls = strace_read_txn(e, os.path.join(d, e + ".db"), a.n, d)
            print("syscalls per read transaction (1 get), %s: %.3f %s" % (
                e, per, dict(sorted(calls.items())) if calls else ""))
    elif not a.no_strace:
        print("strace not installed: no syscall count")
    if a.before:
        w = compare_writes(a.before, a.write_n, a.reps, d)
        for wl, (after, before) in w.items():
            r = after / before
            print("goal: %s with no other process, this build / before: %.0f / %.0f = %.3f %s" % (
                wl, after, before, r, "PASS" if r >= 0.95 else "FAIL"))
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
