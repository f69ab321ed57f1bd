"""lone_writer.py - what the side file (issue 10) costs a process that has the database alone:
btree_store builds compared on compare.py's commit_small and fill_random workloads, by
instruction counts, system calls and interleaved wall-clock runs.

    python bench/lone_writer.py callgrind --builds old=PYTHONPATH,new=PYTHONPATH [--n 200000]
                                          [--keep DIR]
    python bench/lone_writer.py strace    --builds old=PYTHONPATH,new=PYTHONPATH
    python bench/lone_writer.py wall      --builds old=PYTHONPATH,new=PYTHONPATH [--reps 15]
                                          [--n 200000] [--commit-rounds 3]

Each PYTHONPATH holds one btree_store build (e.g. a worktree of the commit before the side
file, built in place: its python/ folder). Every run is a fresh process with the database
alone (the side file present, no other process).

- callgrind: `valgrind --tool=callgrind` of one child per build and workload (commit_small:
  500 durable commits of one put into a fresh file, compare.py's data; fill_random: N puts in
  random order in one transaction, then its durable commit); the figure is the inclusive
  instruction count of the engine's entry points bs_txn_begin + bs_put + bs_txn_commit (the
  binding and Python excluded: they are not what the side file changes), per commit and per
  put, and the part of them spent in the side-file functions (lockfile_*, writer_refresh).
- strace: system calls between two marker stat() calls (bench/multiproc_read.py
  marked_syscalls), per write transaction of one put (sync=True: commit_small's; sync=False)
  and per read transaction of one get, 500 of each after 1000 warm ones.
- wall: bench/compare.py --workloads commit_small,fill_random, one repetition per run,
  builds alternating run by run --reps times; median and spread (min-max) of each build and
  the ratio of medians. Wall time on a loaded machine is noise; the two other modes are not.

Layer: benchmark; the public Python API of btree_store (and valgrind, strace).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from multiproc_read import marked_syscalls  # noqa: E402
# the child strace watches: 1,000 transactions, then 500 between two stat() markers
from multiproc_write import STRACE_CHILD  # noqa: E402

CHILD = r"""
import os, random, sys
import btree_store
mode, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
VALUE_SIZE = 100
rnd = random.Random(1)
vals = [rnd.randbytes(VALUE_SIZE) for _ in range(min(n, 1000))]
db = btree_store.DB(path)
if mode == "commit_small":   # compare.py's commit_small: 500 durable commits of one put
    for i in range(500):
        with db.begin(write=True) as txn:
            txn.put(b"c%015d" % i, vals[i % len(vals)])
else:                        # compare.py's fill_random: n puts in random order, one commit
    keys = [b"%016d" % i for i in range(n)]
    rnd.shuffle(keys)
    items = [(k, vals[i % len(vals)]) for i, k in enumerate(keys)]
    with db.begin(write=True) as txn:
        put = txn.put
        for k, v in items:
            put(k, v)
db.close()
"""


ENTRY = ("bs_txn_begin", "bs_put", "bs_txn_commit")
SIDE = ("writer_refresh", "lockfile_write_lock", "lockfile_write_unlock", "lockfile_oldest",
        "reader_refresh", "publish_readers_locked")


def fresh(d, name):
    path = os.path.join(d, name)
    for p in (path, path + "-lock"):
        if os.path.exists(p):
            os.remove(p)
    return path


def inclusive(out):
    """Inclusive Ir by function name from callgrind_annotate --inclusive=yes."""
    r = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
                       capture_output=True, text=True, check=True).stdout
    res = {}
    for line in r.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+\S*?:?(\w+)\s", line + " ")
        m = m or re.match(r"\s*([\d,]+)\s+\S+?:(\w+)", line)
        if m:
            name = m.group(2)
            res.setdefault(name, int(m.group(1).replace(",", "")))
    return res


def do_callgrind(builds, d, n, keep=None):
    rows = []
    for name, pp in builds:
        for mode in ("commit_small", "fill_random"):
            out = os.path.join(keep or d, "cg.%s.%s" % (name, mode))
            env = dict(os.environ, PYTHONPATH=pp)
            subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                            sys.executable, "-c", CHILD, mode, fresh(d, "cg.db"), str(n)],
                           check=True, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            inc = inclusive(out)
            ops = 500 if mode == "commit_small" else n
            entry = sum(inc.get(f, 0) for f in ENTRY)
            side = {f: inc[f] for f in SIDE if f in inc}
            rows.append((name, mode, ops, entry, {f: inc.get(f, 0) for f in ENTRY}, side))
    print("callgrind, inclusive instructions of bs_txn_begin + bs_put + bs_txn_commit")
    print("%-6s %-13s %8s %14s %14s %12s" % ("build", "workload", "ops", "Ir total",
                                               "Ir per op", "side file"))
    for name, mode, ops, entry, parts, side in rows:
        print("%-6s %-13s %8d %14d %14.1f %12d  %s  side: %s" % (
            name, mode, ops, entry, entry / ops, sum(side.values()), parts, side))
    by = {(r[0], r[1]): r[3] for r in rows}
    names = [b[0] for b in builds]
    if len(names) == 2:
        for mode in ("commit_small", "fill_random"):
            a, b = by[names[1], mode], by[names[0], mode]
            print("%s: %s / %s = %.3f" % (mode, names[1], names[0], a / b))


def do_strace(builds, d):
    print("system calls per transaction (500, after 1000 warm ones), strace -f")
    for name, pp in builds:
        for what in ("read", "write_nosync", "write_sync"):
            out = os.path.join(d, "strace_%s_%s.txt" % (name, what))
            env = dict(os.environ, PYTHONPATH=pp)
            subprocess.run(["strace", "-f", "-qq", "-o", out, sys.executable, "-c",
                            STRACE_CHILD, fresh(d, "st.db"), what], check=True, env=env)
            calls = marked_syscalls(out)
            print("%-6s %-13s %6.2f  %s" % (name, what, sum(calls.values()) / 500.0,
                                             {k: v / 500.0 for k, v in sorted(calls.items())}))


def do_wall(builds, d, n, reps, rounds):
    runs = {}
    for r in range(reps):
        for name, pp in (builds if r % 2 == 0 else builds[::-1]):
            js = os.path.join(d, "cmp_%s_%d.json" % (name, r))
            env = dict(os.environ, PYTHONPATH=pp)
            subprocess.run([sys.executable, os.path.join(HERE, "compare.py"), "--n", str(n),
                            "--engines", "btree_store", "--reps", "1", "--commit-rounds",
                            str(rounds), "--workloads", "commit_small", "fill_random",
                            "--dir", d, "--json", js],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            with open(js) as f:
                res = json.load(f)["results"]["btree_store"]
            for wl in ("commit_small", "fill_random"):
                runs.setdefault((name, wl), []).append(res[wl]["median"])
    print("wall clock, compare.py, %d runs per build alternating, n=%d" % (reps, n))
    for wl in ("commit_small", "fill_random"):
        for name, _ in builds:
            v = runs[name, wl]
            print("%-6s %-13s median %10.0f  min %10.0f  max %10.0f  runs %s" % (
                name, wl, statistics.median(v), min(v), max(v),
                " ".join("%.0f" % x for x in v)))
        if len(builds) == 2:
            a = statistics.median(runs[builds[1][0], wl])
            b = statistics.median(runs[builds[0][0], wl])
            print("%s: %s / %s = %.3f (higher is faster)" % (wl, builds[1][0], builds[0][0],
                                                             a / b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("callgrind", "strace", "wall"))
    ap.add_argument("--builds", required=True, help="NAME=PYTHONPATH,NAME=PYTHONPATH")
    ap.add_argument("--n", type=int, default=200000)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--commit-rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", default=None, help="callgrind: leave its output files here")
    a = ap.parse_args()
    builds = [tuple(b.split("=", 1)) for b in a.builds.split(",")]
    d = tempfile.mkdtemp(prefix="lonew_", dir=a.dir)
    try:
        if a.what == "callgrind":
            do_callgrind(builds, d, a.n, a.keep)
        elif a.what == "strace":
            do_strace(builds, d)
        else:
            do_wall(builds, d, a.n, a.reps, a.commit_rounds)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
