"""profile_workload.py - one workload of compare.py, alone, to run under a profiler.

    python bench/profile_workload.py build  ENGINE FOLDER N          # random fill, one txn
    python bench/profile_workload.py fill   ENGINE FOLDER N          # same (profile this)
    python bench/profile_workload.py gen    ENGINE FOLDER N          # fill's data only
    python bench/profile_workload.py reads  ENGINE FOLDER N M        # M random gets
    python bench/profile_workload.py hits   ENGINE FOLDER N M        # M gets over 1000 keys
    python bench/profile_workload.py cached btree_store FOLDER N M   # get_many(all), M gets
    python bench/profile_workload.py getmany btree_store FOLDER N M  # get_many(all), then
                                                   # get_many of M random keys
    python bench/profile_workload.py noop   ENGINE FOLDER N M        # open + key list only
    python bench/profile_workload.py reopen ENGINE FOLDER N M [PASSES]  # open, PASSES (1)
                                                   # passes of the same M random gets
    python bench/profile_workload.py fill_random ENGINE FOLDER N     # fill's put loop
    python bench/profile_workload.py delete_random ENGINE FOLDER N   # fill, then N/2 deletes
    python bench/profile_workload.py put_many btree_store FOLDER N   # fill with put_many
    python bench/profile_workload.py fill_seq ENGINE FOLDER N        # fill in key order

ENGINE is btree_store or lmdb, default settings (the 64 MiB default cache for btree_store).
`noop` does everything `reads` does except the gets, so the instruction count of the gets is
reads - noop. fill_random / delete_random / put_many / fill_seq are compare.py's workloads of those
names (same handle: delete_random deletes from the store fill_random left cached, one write
transaction, durable commit). Profile one part with callgrind's --toggle-collect on the
binding's C function: txn_put (fill_random's puts), txn_delete (the deletes), txn_put_many,
txn_exit_cm (the commits); `reopen` is compare.py's reopen_gets (every page is a first touch
after the open): collect txn_get, and the difference between PASSES=2 and PASSES=1 is the
gets without first touches, so first-touch cost = 2 * pass1 - pass2 (same keys, same
pages). Instructions per op = Ir of that function inclusive / its count
(callgrind_annotate --inclusive=yes). Used for bench/PROFILE.md, e.g.

    valgrind --tool=callgrind --callgrind-out-file=cg.reads python bench/profile_workload.py \
        reads btree_store /tmp/p 1000000 200000
    callgrind_annotate --inclusive=yes cg.reads | head -60

Layer: benchmark; the public Python API of btree_store and py-lmdb.
"""
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import btree_store  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
sys.path.insert(0, HERE)
import extras  # noqa: E402


def bench_fill(st, items):
    st.fill(items)


def bench_put_many(st, items):
    with st.db.begin(write=True) as txn:
        txn.put_many(items)


def bench_deletes(st, keys):
    env = getattr(st, "env", None) or st.db
    with env.begin(write=True) as txn:
        d = txn.delete
        for k in keys:
            d(k)


def main():
    what, engine, folder, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cls = extras.STORES[engine]
    if what == "gen":  # the data of `fill` only: subtract it from fill's count
        extras.make_items(n)
        return
    if what in ("build", "fill"):
        os.makedirs(folder, exist_ok=True)
        items = extras.make_items(n)
        st = cls(folder)
        st.fill(items)
        st.close()
        return
    if what in ("fill_random", "delete_random", "put_many", "fill_seq"):
        os.makedirs(folder, exist_ok=True)
        items = extras.make_items(n)
        if what == "fill_seq":
            items.sort()
        keys = [k for k, _v in items[: n // 2]]
        random.Random(3).shuffle(keys)
        st = cls(folder)
        if what == "put_many":
            bench_put_many(st, items)
        else:
            bench_fill(st, items)
        if what == "delete_random":
            bench_deletes(st, keys)
        st.close()
        return
    m = int(sys.argv[5])
    rnd = random.Random(7)
    if what == "hits":
        few = [b"%016d" % rnd.randrange(n) for _ in range(1000)]
        keys = [few[i % 1000] for i in range(m)]
    else:
        keys = [b"%016d" % rnd.randrange(n) for _ in range(m)]
    st = cls(folder)
    if what == "cached":  # every page cached first (profile txn_get only: --toggle-collect)
        with st.db.begin() as txn:
            txn.get_many([b"%016d" % i for i in range(n)])
    if what == "getmany":  # the same by a scan (profile txn_get_many only)
        with st.db.begin() as txn:
            for _ in txn.items():
                pass
    if what == "getmany":
        with st.db.begin() as txn:
            if len(txn.get_many(keys)) != m:
                raise AssertionError("get_many: wrong length")
        st.close()
        return
    if what == "reopen":
        for _ in range(int(sys.argv[6]) if len(sys.argv) > 6 else 1):
            st.gets(keys)
    elif what != "noop":
        st.gets(keys)
    st.close()


if __name__ == "__main__":
    main()
