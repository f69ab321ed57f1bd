"""ab_builds.py - a wall-time A/B of builds of btree_store on compare.py's fill_random and
delete_random, with every build loaded in ONE process and run interleaved on the same data.

    python bench/ab_builds.py N REPS NAME=PKGDIR[,NAME=PKGDIR...] [--lmdb] [--dir DIR] [--batch]

PKGDIR is a built package folder (python/btree_store of a worktree after build_ext
--inplace, or a copy of one): each is copied under NAME (the extension's relative imports
make two builds importable side by side). Each repetition runs every build (the order
alternates) and, with --lmdb, py-lmdb: a fresh store, N random-order puts of b'%016d' keys
and 100-byte values in one write transaction and a durable commit, then N/2 random deletes
in one transaction (profile_workload.py's data). Per run it prints wall and CPU time of the
put loop, of the fill's commit, of the delete loop and of its commit; at the end the median
and the minimum of each. On a machine other work loads, the minimum and the interleaving
say more than one compare.py run per build: both builds meet the same background in turn.
--batch: the same data through the batch calls instead (compare.py's put_many, get_many):
txn.put_many(items) (py-lmdb: Cursor.putmulti), then txn.get_many(keys) in a read
transaction (py-lmdb: Cursor.getmulti) reported as "gets", then txn.delete_many(keys)
(py-lmdb: a loop of txn.delete, it has no batch delete).

Layer: benchmark; the public Python API of btree_store and py-lmdb.
"""
import argparse
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

PHASES = ("fill", "puts", "fcommit", "delete", "dels", "dcommit", "cpu_puts", "cpu_dels",
          "gets")


def run_one(res, name, opener, root, items, keys, batch=False):
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    db = opener(root)
    lm = name == "lmdb"
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    with db.begin(write=True) as txn:
        if batch and lm:
            txn.cursor().putmulti(items)
        elif batch:
            txn.put_many(items)
        else:
            put = txn.put
            for k, v in items:
                put(k, v)
        t1, c1 = time.perf_counter(), time.process_time()
    t2 = time.perf_counter()
    gets = 0.0
    if batch:
        gc.collect()
        g0 = time.perf_counter()
        with db.begin() as txn:
            if lm:
                got_v = txn.cursor().getmulti(keys)
            else:
                got_v = txn.get_many(keys)
            assert len(got_v) == len(keys)
        gets = time.perf_counter() - g0
        del got_v
    gc.collect()
    t3, c3 = time.perf_counter(), time.process_time()
    with db.begin(write=True) as txn:
        if batch and not lm:
            txn.delete_many(keys)
        else:
            d = txn.delete
            for k in keys:
                d(k)
        t4, c4 = time.perf_counter(), time.process_time()
    t5 = time.perf_counter()
    db.close()
    got = (t2 - t0, t1 - t0, t2 - t1, t5 - t3, t4 - t3, t5 - t4, c1 - c0, c4 - c3, gets)
    r = res.setdefault(name, {k: [] for k in PHASES})
    for k, x in zip(PHASES, got):
        r[k].append(x)
    g = dict(zip(PHASES, got))
    print("  %-8s fill %.3f (puts %.3f cpu %.3f, commit %.3f)  delete %.3f (dels %.3f cpu %.3f, "
          "commit %.3f)  gets %.3f  load %.2f" % (name, g["fill"], g["puts"], g["cpu_puts"],
                                                  g["fcommit"], g["delete"], g["dels"],
                                                  g["cpu_dels"], g["dcommit"], g["gets"],
                                                  os.getloadavg()[0]), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("reps", type=int)
    ap.add_argument("builds", help="NAME=PKGDIR[,NAME=PKGDIR...]")
    ap.add_argument("--lmdb", action="store_true")
    ap.add_argument("--dir", default=None, help="parent folder of the stores (default: temp)")
    ap.add_argument("--batch", action="store_true",
                    help="put_many / get_many / delete_many (py-lmdb: putmulti, getmulti)")
    args = ap.parse_args()
    stage = tempfile.mkdtemp(prefix="ab_pkgs_")
    work = tempfile.mkdtemp(prefix="ab_work_", dir=args.dir)
    sys.path.insert(0, stage)
    builds = []
    for spec in args.builds.split(","):
        name, d = spec.split("=", 1)
        shutil.copytree(d, os.path.join(stage, name),
                        ignore=shutil.ignore_patterns("__pycache__"))
        builds.append((name, importlib.import_module(name)))
    openers = [(name, lambda root, m=mod: m.DB(os.path.join(root, "data.bs")))
               for name, mod in builds]
    if args.lmdb:
        import lmdb
        openers_l = [("lmdb", lambda root: lmdb.open(os.path.join(root, "data.mdb"),
                                                     subdir=False, map_size=1 << 38))]
    else:
        openers_l = []
    items = extras.make_items(args.n)
    keys = [k for k, _v in items[: args.n // 2]]
    random.Random(3).shuffle(keys)
    res = {}
    root = os.path.join(work, "db")
    try:
        for rep in range(args.reps):
            order = openers if rep % 2 == 0 else openers[::-1]
            for name, opener in order + openers_l:
                run_one(res, name, opener, root, items, keys, args.batch)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)
    print("median (min) in seconds:")
    for name, r in res.items():
        print("  %-8s " % name + "  ".join("%s %.3f (%.3f)" % (k, statistics.median(v), min(v))
                                           for k, v in r.items()))


if __name__ == "__main__":
    main()
