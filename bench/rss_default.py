"""rss_default.py - RSS of btree_store with the default cache against the database size.

    python bench/rss_default.py N [N ...]
    python bench/rss_default.py --cache-size MIB N     (an explicit cache_size, in MiB)

For each N: a random fill of N records (keys b'%016d', 100-byte values, one transaction) into
a fresh file, then reopen and get every key; prints the file size and the growth of the
process's resident set (VmRSS) over the interpreter with the keys built, and the peak of the
fill transaction (VmHWM, the process's high-water mark, read after the fill: run one N per
process for a clean figure). Used for the README's Memory table. Just before the fill's
commit (where its dirty pages peak) it also prints the process's anonymous and file-backed
resident memory (RssAnon: the page frames and everything private; RssFile: pages of the
mapped file the transaction read, shared with the OS page cache), so that a transaction's
own memory can be held against cache_size.

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


def one(n, folder, cache_mib=None):
    path = os.path.join(folder, "rss_%d.bs" % n)
    keys = [b"%016d" % i for i in range(n)]
    random.Random(1).shuffle(keys)
    value = b"x" * 100
    base, base_anon = rss_mib(), rss_mib("RssAnon")
    opts = {} if cache_mib is None else {"cache_size": cache_mib << 20}
    with btree_store.DB(path, **opts) as db:
        with db.begin(write=True) as txn:
            for k in keys:
                txn.put(k, value)
            anon, mapped = rss_mib("RssAnon") - base_anon, rss_mib("RssFile")
        fill = rss_mib()
    peak = rss_mib("VmHWM")
    with btree_store.DB(path, **opts) as db:
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
    print("            before the fill's commit: RssAnon +%.1f MiB, RssFile %.1f MiB "
          "(cache_size %s)" % (anon, mapped, "default" if cache_mib is None else
                               "%d MiB" % cache_mib))


def main():
    args, cache_mib = sys.argv[1:], None
    if args[:1] == ["--cache-size"]:
        cache_mib, args = int(args[1]), args[2:]
    ns = [int(a) for a in args] or [10000, 100000, 1000000]
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as folder:
        for n in ns:
            one(n, folder, cache_mib)


if __name__ == "__main__":
    main()
