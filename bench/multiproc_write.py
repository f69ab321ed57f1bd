"""multiproc_write.py - the cost of sharing one database's write lock between processes
(issue 10): write transactions handed between two writer processes, and the system calls of
a write and a read transaction in a process alone.

    python bench/multiproc_write.py [--builds NAME=PYTHONPATH,...] [--turns 300] [--reps 3]
                                    [--n 20000] [--no-strace] [--dir DIR]

--builds names the btree_store builds to compare (each a PYTHONPATH holding one; default:
the one this script imports, as "this"). Each is measured in every repetition, in
alternation, so that the machine's load falls on all of them alike.

- handover: two writer processes (fork) on one file of N keys b'%016d' with 100-byte values
  take turns strictly (a pipe passes the turn): each turn is one write transaction that
  overwrites 10 random keys and commits, with sync=False, then the same with sync=True.
  Figure: commits/s over 2 x --turns commits (median of --reps), and the file's size at the
  end (pages freed by a commit another process made with sync=False wait until a durable
  commit: the durability horizon). "single" is one process doing the same commits alone.
- syscalls (strace -f, between two marker stat() calls, as bench/multiproc_read.py): per
  write transaction of one put, sync=False and sync=True, and per read transaction of one
  get, in a process that has the file open alone.

Layer: benchmark; the public Python API of btree_store only.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multiproc_read import marked_syscalls  # noqa: E402 (bench/ beside this file)

CHILD = r"""
import json, multiprocessing as mp, os, random, sys, time
import btree_store
path, n, turns, sync = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
mode = sys.argv[5]
sys.path.insert(0, sys.argv[6])  # bench/: the fill of multiproc_read.py
from multiproc_read import _fill_bs

def turn(db, rnd):
    with db.begin(write=True, sync=sync) as txn:
        for _ in range(10):
            txn.put(b"%016d" % rnd.randrange(n), rnd.randbytes(100))

def writer(me, rx, tx, out):
    try:
        rnd = random.Random(me)
        db = btree_store.DB(path)
        out.put("ready")
        for _ in range(turns):
            rx.recv()
            turn(db, rnd)
            tx.send(1)
        db.close()
    except BaseException:
        import traceback
        traceback.print_exc()
        os._exit(1)

_fill_bs(path, n)
if mode == "single":
    rnd = random.Random(0)
    db = btree_store.DB(path)
    t0 = time.perf_counter()
    for _ in range(2 * turns):
        turn(db, rnd)
    t1 = time.perf_counter()
    db.close()
else:
    ctx = mp.get_context("fork")
    a_rx, b_tx = ctx.Pipe(False)   # B -> A
    b_rx, a_tx = ctx.Pipe(False)   # A -> B
    out = ctx.Queue()
    pa = ctx.Process(target=writer, args=(1, a_rx, a_tx, out))
    pb = ctx.Process(target=writer, args=(2, b_rx, b_tx, out))
    pa.start(); pb.start()
    out.get(); out.get()
    t0 = time.perf_counter()
    b_tx.send(1)                   # A's first turn
    pa.join(); pb.join()
    t1 = time.perf_counter()
    assert pa.exitcode == 0 and pb.exitcode == 0
with btree_store.DB(path) as db:
    db.check()
print(json.dumps({"cps": 2 * turns / (t1 - t0), "size": os.path.getsize(path)}))
"""

STRACE_CHILD = r"""
import os, sys
import btree_store
path, what = sys.argv[1], sys.argv[2]
db = btree_store.DB(path)
def one(i):
    if what == "read":
        with db.begin() as txn:
            txn.get(b"%016d" % (i % 1000))
    else:
        with db.begin(write=True, sync=(what == "write_sync")) as txn:
            txn.put(b"%016d" % (i % 1000), b"%08d" % i * 12)  # a new value: a real commit
for i in range(1000):
    one(i)
try:
    os.stat("/__bs_mark_begin__")
except OSError:
    pass
for i in range(1000, 1500):
    one(i)
try:
    os.stat("/__bs_mark_end__")
except OSError:
    pass
db.close()
"""


def run_handover(pp, d, n, turns, sync, mode):
    path = os.path.join(d, "h_%d_%s.db" % (sync, mode))
    for p in (path, path + "-lock"):
        if os.path.exists(p):
            os.remove(p)
    env = dict(os.environ, PYTHONPATH=pp)
    r = subprocess.run([sys.executable, "-c", CHILD, path, str(n), str(turns),
                        "1" if sync else "0", mode, os.path.dirname(os.path.abspath(__file__))],
                       env=env, capture_output=True, text=True,
                       timeout=600)
    if r.returncode:
        raise SystemExit("%s (%s, sync=%s) failed:\n%s" % (pp, mode, sync, r.stderr))
    import json
    return json.loads(r.stdout.strip().splitlines()[-1])


def strace_calls(pp, d, what):
    path = os.path.join(d, "s_%s.db" % what)
    for p in (path, path + "-lock"):
        if os.path.exists(p):
            os.remove(p)
    out = os.path.join(d, "strace_%s.txt" % what)
    env = dict(os.environ, PYTHONPATH=pp)
    subprocess.run(["strace", "-f", "-qq", "-o", out, sys.executable, "-c", STRACE_CHILD,
                    path, what], check=True, env=env)
    calls = marked_syscalls(out)
    return sum(calls.values()) / 500.0, {k: v / 500.0 for k, v in sorted(calls.items())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--builds", default=None)
    ap.add_argument("--turns", type=int, default=300)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    if a.builds:
        builds = [tuple(b.split("=", 1)) for b in a.builds.split(",")]
    else:
        import btree_store
        builds = [("this", os.path.dirname(os.path.dirname(os.path.abspath(btree_store.__file__))))]
    d = tempfile.mkdtemp(prefix="mpwrite_", dir=a.dir)
    res = {}
    for _ in range(a.reps):
        for name, pp in builds:
            for sync in (False, True):
                for mode in ("handover", "single"):
                    r = run_handover(pp, d, a.n, a.turns, sync, mode)
                    res.setdefault((name, sync, mode), []).append(r)
    print("n=%d turns=%d (x2 processes) reps=%d cpus=%d" % (a.n, a.turns, a.reps, os.cpu_count()))
    print("%-10s %-6s %-9s %12s %12s" % ("build", "sync", "mode", "commits/s", "file KiB"))
    for (name, sync, mode), rs in res.items():
        print("%-10s %-6s %-9s %12.0f %12.0f   (runs: %s)" % (
            name, sync, mode, statistics.median(r["cps"] for r in rs),
            statistics.median(r["size"] for r in rs) / 1024,
            " ".join("%.0f" % r["cps"] for r in rs)))
    if not a.no_strace and shutil.which("strace"):
        for name, pp in builds:
            for what in ("read", "write_nosync", "write_sync"):
                per, calls = strace_calls(pp, d, what)
                print("syscalls per %s txn, %s: %.2f %s" % (what, name, per, calls))
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
