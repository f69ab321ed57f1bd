"""ab_reads.py - interleaved A/B of read_random (warm) and reopen_gets between builds of
btree_store (and py-lmdb), in ONE process, for a machine too noisy for separate runs.

    python bench/ab_reads.py N REPS NAME=PKGDIR[,NAME=PKGDIR...] [lmdb]
    e.g. python bench/ab_reads.py 10000000 4 A=/tmp/base/btree_store,B=python/btree_store lmdb

Each PKGDIR (a built btree_store package directory) is copied under the name NAME and
imported as such, so the builds live side by side. The files are ABDIR/bs/data.bs and
ABDIR/lm/data.mdb (ABDIR, default /tmp/ab_reads), built beforehand with
`python bench/profile_workload.py build ENGINE ABDIR/bs N` (lm for lmdb). Per repetition and
build (order alternating): reopen_gets as compare.py times it (file read once into the OS
cache, then open + 100k random gets), then a warm-up of 2M (or what the shuffle has left)
gets, then 3 timed passes of ABM (default 500k) gets. Keys follow compare.py's layout: key
objects made in key order, read in a shuffled order. Prints each run and, at the end, the
median and minimum of wall and CPU time (CPU time: a process descheduled by other load does
not count). Nothing is asserted.

Layer: benchmark; the public Python API of btree_store and py-lmdb.
"""
import gc
import importlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import extras  # noqa: E402


def gets(db, ks):
    with db.begin() as txn:
        get = txn.get
        for k in ks:
            if get(k) is None:
                raise AssertionError("missing key")


def main():
    n, reps = int(sys.argv[1]), int(sys.argv[2])
    use_lmdb = len(sys.argv) > 4 and sys.argv[4] == "lmdb"
    d0 = os.environ.get("ABDIR", "/tmp/ab_reads")
    bs_file, lm_file = d0 + "/bs/data.bs", d0 + "/lm/data.mdb"
    m = int(os.environ.get("ABM", 500000))
    stage = tempfile.mkdtemp(prefix="ab_reads_")
    sys.path.insert(0, stage)
    builds = []
    for spec in sys.argv[3].split(","):
        name, d = spec.split("=")
        shutil.copytree(d, os.path.join(stage, name), ignore=shutil.ignore_patterns("__pycache__"))
        builds.append((name, importlib.import_module(name)))
    if use_lmdb:
        import lmdb
    keys = [b"%016d" % i for i in range(n)]
    rk = keys[:]
    random.Random(5).shuffle(rk)
    res = {}

    def run(name, opener, path, rep):
        r = res.setdefault(name, {"read_cpu": [], "read_wall": [], "reopen_cpu": [],
                                  "reopen_wall": []})
        rnd = random.Random(100 + rep)
        ro = [rnd.choice(keys) for _ in range(100000)]
        extras.warm_os_cache(path)
        gc.collect()
        c, t = time.process_time(), time.perf_counter()
        db = opener()
        gets(db, ro)
        r["reopen_wall"].append(time.perf_counter() - t)
        r["reopen_cpu"].append(time.process_time() - c)
        gets(db, rk[m * 4:m * 4 + 2000000])  # warm-up: ~every leaf verified
        for j in range(3):
            ks = rk[m * j:m * (j + 1)]
            c, t = time.process_time(), time.perf_counter()
            gets(db, ks)
            r["read_wall"].append(time.perf_counter() - t)
            r["read_cpu"].append(time.process_time() - c)
        db.close()
        print("  %-6s reopen %.0fk/s (cpu %.0fk/s)  read %.0f ns (cpu %.0f ns)  load %.2f" % (
            name, 1e2 / r["reopen_wall"][-1], 1e2 / r["reopen_cpu"][-1],
            min(r["read_wall"][-3:]) / m * 1e9, min(r["read_cpu"][-3:]) / m * 1e9,
            os.getloadavg()[0]), flush=True)

    try:
        for rep in range(reps):
            for name, mod in (builds if rep % 2 == 0 else builds[::-1]):
                run(name, lambda mod=mod: mod.DB(bs_file), bs_file, rep)
            if use_lmdb:
                run("lmdb", lambda: lmdb.open(lm_file, subdir=False, map_size=1 << 38),
                    lm_file, rep)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print("median (min): read ns/get, reopen gets/s")
    for name, r in res.items():
        print("  %-6s read wall %.0f (%.0f) cpu %.0f (%.0f)   reopen wall %.0fk (%.0fk) "
              "cpu %.0fk (%.0fk)" % (
                  name, statistics.median(r["read_wall"]) / m * 1e9, min(r["read_wall"]) / m * 1e9,
                  statistics.median(r["read_cpu"]) / m * 1e9, min(r["read_cpu"]) / m * 1e9,
                  1e2 / statistics.median(r["reopen_wall"]), 1e2 / min(r["reopen_wall"]),
                  1e2 / statistics.median(r["reopen_cpu"]), 1e2 / min(r["reopen_cpu"])))


if __name__ == "__main__":
    main()
