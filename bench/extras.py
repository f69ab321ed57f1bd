"""extras.py - the bench lines that are not one-engine-at-a-time throughput figures.

    python bench/extras.py [--n N] [--only threads,procs,memory,check] [--json FILE] [--dir DIR]

  threads  random gets from 1 thread and from 2 threads (each doing --gets gets) on one open
           store of N records, btree_store and py-lmdb, default settings. "warm": the file is
           in the OS page cache (read once before), "cold": the OS cache is emptied with
           posix_fadvise(DONTNEED) before each phase. The store is reopened for every phase,
           so btree_store's own cache starts empty each time; "hot" is warm with every key of
           the phase read once (untimed) before the timed pass, so every page the pass needs
           is verified already. Reports gets/s and 2T/1T.
  procs    the same with 1 and 2 reader PROCESSES (spawned interpreters, started together).
           Two modes: "beside_writer" (the parent keeps the file open for writing, as an
           application would) and "readers_only" (the parent closed it). A mode in which a
           second process cannot open the file prints n/a with the error.
  memory   create + 10 puts (one transaction) + close: DB(':memory:') when in-memory
           databases exist, and a file-backed one in a temporary folder with sync=False (and
           sync=True for reference). Median and 90th percentile in microseconds.
  check    a ~200 MB file (1.1M records, in a bucket) opened with cache_size=1 MiB in a child
           process: RSS before, and peak RSS (VmHWM) after check() and after drop_bucket()
           + commit. Reports the growth in MiB.

Nothing here is asserted: the figures are printed (and written to --json).

Layer: benchmark; the public Python API of btree_store and py-lmdb.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import btree_store
except ImportError:  # a source checkout after build_ext --inplace
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
    import btree_store

try:
    import lmdb
except ImportError:
    lmdb = None

VALUE_SIZE = 100


def child_env():
    env = dict(os.environ)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(btree_store.__file__)))
    env["PYTHONPATH"] = pkg + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def drop_os_cache(path):
    """Evict a file from the OS page cache (Linux), so reads wait for the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm_os_cache(path):
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


# ------------------------------------------------------------------ stores (btree_store, lmdb)

class BS:
    name = "btree_store"

    @staticmethod
    def file(folder):
        return os.path.join(folder, "data.bs")

    def __init__(self, folder, readonly=False, **kw):
        self.db = btree_store.DB(self.file(folder), readonly=readonly, **kw)

    def fill(self, items):
        with self.db.begin(write=True) as txn:
            put = txn.put
            for k, v in items:
                put(k, v)

    def gets(self, keys):
        with self.db.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is None:
                    raise AssertionError("missing key")

    def close(self):
        self.db.close()


class LM:
    name = "lmdb"

    @staticmethod
    def file(folder):
        return os.path.join(folder, "data.mdb")

    def __init__(self, folder, readonly=False):
        # map_size: LMDB's required limit on the file size (address space only); valgrind
        # cannot reserve 256 GiB, hence the variable
        self.env = lmdb.open(self.file(folder), subdir=False, readonly=readonly,
                             map_size=int(os.environ.get("BENCH_LMDB_MAP_SIZE", 1 << 38)))

    def fill(self, items):
        with self.env.begin(write=True) as txn:
            put = txn.put
            for k, v in items:
                put(k, v)

    def gets(self, keys):
        with self.env.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is None:
                    raise AssertionError("missing key")

    def close(self):
        self.env.close()


STORES = {"btree_store": BS, "lmdb": LM}


def make_items(n, seed=1):
    rnd = random.Random(seed)
    blob = b"".join(rnd.randbytes(min(1 << 20, n - i) * VALUE_SIZE)  # randbytes < 2**31 bits
                   for i in range(0, n, 1 << 20))
    items = [(b"%016d" % i, blob[i * VALUE_SIZE:(i + 1) * VALUE_SIZE]) for i in range(n)]
    rnd.shuffle(items)
    return items


def build(cls, folder, items):
    os.makedirs(folder, exist_ok=True)
    st = cls(folder)
    st.fill(items)
    st.close()


def plan(n, m, seed):
    rnd = random.Random(seed)
    return [b"%016d" % rnd.randrange(n) for _ in range(m)]


# ------------------------------------------------------------------------------------ threads

def threads_line(cls, folder, n, m, cold, hot=False):
    path = cls.file(folder)
    plans = [plan(n, m, s) for s in (11, 12, 13)]

    def phase(nthreads):
        if cold:
            drop_os_cache(path)
        else:
            warm_os_cache(path)
        st = cls(folder)
        try:
            if hot:
                for p in [plans[2]] if nthreads == 1 else plans[:nthreads]:
                    st.gets(p)
            if nthreads == 1:
                t = time.perf_counter()
                st.gets(plans[2])
                return m / (time.perf_counter() - t)
            ts = [threading.Thread(target=st.gets, args=(p,)) for p in plans[:nthreads]]
            t = time.perf_counter()
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            return nthreads * m / (time.perf_counter() - t)
        finally:
            st.close()

    one = phase(1)
    two = phase(2)
    return {"one": one, "two": two, "ratio": two / one}


# -------------------------------------------------------------------------------- processes

READER_CODE = r"""
import sys, time, random
engine, folder, n, m, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, sys.argv[6])
import extras
try:
    st = extras.STORES[engine](folder, readonly=True)
except Exception as exc:
    print("ERR %s: %s" % (type(exc).__name__, exc), flush=True)
    sys.exit(0)
keys = extras.plan(n, m, seed)
st.gets(keys[:1000])
print("READY", flush=True)
sys.stdin.readline()
t = time.perf_counter()
st.gets(keys)
print("DONE %.6f" % (time.perf_counter() - t), flush=True)
"""


def procs_phase(cls, folder, n, m, nprocs):
    ps = [subprocess.Popen([sys.executable, "-c", READER_CODE, cls.name, folder, str(n), str(m),
                            str(21 + i), HERE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True, env=child_env()) for i in range(nprocs)]
    try:
        for p in ps:
            line = p.stdout.readline().strip()
            if line != "READY":
                return None, line or "reader process failed"
        t = time.perf_counter()
        for p in ps:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in ps:
            line = p.stdout.readline().strip()
            if not line.startswith("DONE"):
                return None, line or "reader process failed"
        wall = time.perf_counter() - t
        return nprocs * m / wall, None
    finally:
        for p in ps:
            try:
                p.stdin.close()
            except OSError:
                pass
            p.wait(60)


def procs_line(cls, folder, n, m, mode):
    warm_os_cache(cls.file(folder))
    holder = cls(folder) if mode == "beside_writer" else None
    try:
        one, err = procs_phase(cls, folder, n, m, 1)
        if err:
            return {"one": None, "two": None, "ratio": None, "note": err}
        two, err = procs_phase(cls, folder, n, m, 2)
        if err:
            return {"one": one, "two": None, "ratio": None, "note": err}
        return {"one": one, "two": two, "ratio": two / one}
    finally:
        if holder is not None:
            holder.close()


# ----------------------------------------------------------------------------------- memory

def memory_available():
    """True when DB(':memory:') opens an in-memory database (and leaves no file behind)."""
    if hasattr(btree_store.DB, "memory"):
        return True
    cwd = os.getcwd()
    tmp = tempfile.mkdtemp(prefix="memprobe_")
    try:
        os.chdir(tmp)
        try:
            btree_store.DB(":memory:").close()
        except Exception:
            return False
        return not os.listdir(tmp)
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def small_cycle(open_db, reps):
    ts = []
    items = [(b"k%02d" % i, b"v" * 20) for i in range(10)]
    for i in range(reps):
        t = time.perf_counter()
        db = open_db(i)
        with db.begin(write=True) as txn:
            for k, v in items:
                txn.put(k, v)
        db.close()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return {"median_us": 1e6 * statistics.median(ts), "p90_us": 1e6 * ts[int(0.9 * len(ts))],
            "reps": reps}


def memory_lines(root):
    out = {}
    if memory_available():
        out["memory"] = small_cycle(lambda i: btree_store.DB(":memory:"), 2000)
        out["memory"]["goal_us"] = 50
    else:
        out["memory"] = {"note": "DB(':memory:') does not exist in this build"}
    for sync in (False, True):
        folder = tempfile.mkdtemp(prefix="small_", dir=root)
        try:
            r = small_cycle(lambda i: btree_store.DB(os.path.join(folder, "%d.bs" % i), sync=sync),
                            300 if sync else 1000)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not sync:
            r["goal_us"] = 1000
        out["file_sync_%s" % sync] = r
    return out


# ------------------------------------------------------------------------------------ check

RSS_CODE = r"""
import sys, btree_store
def status():
    d = {}
    for line in open('/proc/self/status'):
        if line.startswith(('VmRSS', 'VmHWM')):
            k, v = line.split(':')
            d[k] = int(v.split()[0]) / 1024.0
    return d
db = btree_store.DB(sys.argv[1], cache_size=1 << 20)
with db.begin() as txn:
    txn.get(b'x', bucket='b')
base = status()
with open('/proc/self/clear_refs', 'w') as f:   # reset VmHWM to the current RSS
    f.write('5')
if sys.argv[2] == 'check':
    db.check()
else:
    with db.begin(write=True) as txn:
        txn.drop_bucket('b')
after = status()
db.close()
print(base['VmRSS'], after['VmHWM'], after['VmRSS'])
"""


def check_lines(root, n):
    folder = tempfile.mkdtemp(prefix="rss_", dir=root)
    path = os.path.join(folder, "big.bs")
    try:
        items = make_items(n, 5)
        db = btree_store.DB(path)
        with db.begin(write=True) as txn:
            txn.create_bucket("b")
            put = txn.put
            for k, v in items:
                put(k, v, bucket="b")
        db.close()
        del items
        size = os.path.getsize(path)
        out = {"file_mib": size / 2**20, "records": n, "cache_size_mib": 1}
        for op in ("check", "drop"):
            if op == "drop":
                shutil.copyfile(path, path + ".copy")
                target = path + ".copy"
            else:
                target = path
            p = subprocess.run([sys.executable, "-c", RSS_CODE, target, op],
                               capture_output=True, text=True, env=child_env())
            if p.returncode != 0:
                out[op] = {"note": p.stderr.strip().splitlines()[-1] if p.stderr else "failed"}
                continue
            base, peak, end = map(float, p.stdout.split())
            out[op] = {"rss_before_mib": base, "peak_mib": peak, "growth_mib": peak - base,
                       "rss_after_mib": end}
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="records for threads/procs")
    ap.add_argument("--gets", type=int, default=200_000, help="gets per thread/process (warm)")
    ap.add_argument("--cold-gets", type=int, default=20_000, help="gets per thread, cold")
    ap.add_argument("--check-n", type=int, default=1_100_000, help="records of the RSS file")
    ap.add_argument("--only", default="threads,procs,memory,check")
    ap.add_argument("--json")
    ap.add_argument("--dir", help="parent folder for the files (default: temp dir)")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    root = tempfile.mkdtemp(prefix="extras_", dir=args.dir)
    report = {"n": args.n, "gets": args.gets, "cold_gets": args.cold_gets,
              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": " ".join(sys.argv), "cpus": os.cpu_count()}
    stores = [BS] + ([LM] if lmdb is not None else [])
    try:
        if only & {"threads", "procs"}:
            items = make_items(args.n)
            for cls in stores:
                build(cls, os.path.join(root, cls.name), items)
            del items
        if "threads" in only:
            report["threads"] = {}
            for label in ("warm", "hot", "cold"):
                cold = label == "cold"
                if cold and not hasattr(os, "posix_fadvise"):
                    continue
                for cls in stores:
                    r = threads_line(cls, os.path.join(root, cls.name), args.n,
                                     args.cold_gets if cold else args.gets, cold,
                                     hot=label == "hot")
                    report["threads"]["%s/%s" % (label, cls.name)] = r
                    print("threads %-4s %-12s 1T %9.0f gets/s  2T %9.0f gets/s  2T/1T %.2fx"
                          % (label, cls.name, r["one"], r["two"], r["ratio"]), flush=True)
        if "procs" in only:
            report["procs"] = {}
            for mode in ("beside_writer", "readers_only"):
                for cls in stores:
                    r = procs_line(cls, os.path.join(root, cls.name), args.n, args.gets, mode)
                    report["procs"]["%s/%s" % (mode, cls.name)] = r
                    if r["ratio"] is None:
                        print("procs   %-13s %-12s n/a (%s)" % (mode, cls.name, r["note"]),
                              flush=True)
                    else:
                        print("procs   %-13s %-12s 1P %9.0f gets/s  2P %9.0f gets/s  2P/1P %.2fx"
                              % (mode, cls.name, r["one"], r["two"], r["ratio"]), flush=True)
        if "memory" in only:
            report["memory"] = memory_lines(root)
            for k, r in report["memory"].items():
                if "note" in r:
                    print("create+10 puts+close %-16s n/a (%s)" % (k, r["note"]))
                else:
                    print("create+10 puts+close %-16s median %8.1f us  p90 %8.1f us%s" % (
                        k, r["median_us"], r["p90_us"],
                        "  (goal < %d us)" % r["goal_us"] if "goal_us" in r else ""), flush=True)
        if "check" in only:
            r = check_lines(root, args.check_n)
            report["check"] = r
            for op in ("check", "drop"):
                x = r[op]
                if "note" in x:
                    print("%s of %.0f MiB, 1 MiB cache: failed (%s)" % (op, r["file_mib"], x["note"]))
                else:
                    print("%-5s of a %.0f MiB file, cache_size 1 MiB: RSS %.1f MiB -> peak %.1f MiB"
                          " (growth %.1f MiB)" % (op, r["file_mib"], x["rss_before_mib"],
                                                  x["peak_mib"], x["growth_mib"]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
