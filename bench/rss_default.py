"""rss_default.py - RSS of btree_store with the default cache against the database size.

    python bench/rss_default.py N [N ...]

For each N: a random fill of N records (keys b'%016d', 100-byte values, one transaction) into
a fresh file, then reopen and get every key; prints the file size and the growth of the
process's resident set (VmRSS) over the interpreter with the keys built, and the peak of the
fill transaction (VmHWM, the process's high-water mark, read after the fill: run one N per
process for a clean figure). Used for the README's Memory table.

Layer: benchmark; the public Python API of btree_store.
"""
import os
import random
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import btree_store
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
    import btree_store


def rss_mib(field="VmRSS"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def one(n, folder):
    path = os.path.join(folder, "rss_%d.bs" % n)
    keys = [b"%016d" % i for i in range(n)]
    random.Random(1).shuffle(keys)
    value = b"x" * 100
    base = rss_mib()
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            for k in keys:
                txn.put(k, value)
        fill = rss_mib()
    peak = rss_mib("VmHWM")
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            for k in keys:
                txn.get(k)
        read = rss_mib()
        pages = db.stat()["cache_pages"]
    size = os.path.getsize(path) / 2**20
    os.remove(path)
    print("N=%-9d file %7.1f MiB   RSS growth: after the fill +%.1f MiB (peak of the fill "
          "transaction +%.1f MiB), after reopen + get all +%.1f MiB (%d pages cached)"
          % (n, size, fill - base, peak - base, read - base, pages))


def main():
    ns = [int(a) for a in sys.argv[1:]] or [10000, 100000, 1000000]
    with tempfile.TemporaryDirectory() as folder:
        for n in ns:
            one(n, folder)


if __name__ == "__main__":
    main()
