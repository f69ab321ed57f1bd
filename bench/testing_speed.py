"""testing_speed.py - what a test pays per fresh database: create + put 10 keys + close, of an
in-memory database (goal: under 50 us) and of a file in a temporary folder with sync=False
(goal: under 1 ms). Prints the median of several rounds in microseconds (not asserted).

    PYTHONPATH=python python bench/testing_speed.py [rounds] [per_round]

Layer: benchmark; uses the public Python API of btree_store.
"""
import os
import statistics
import sys
import tempfile
import time

import btree_store


def one_memory(_):
    db = btree_store.DB(":memory:")
    with db.begin(write=True) as txn:
        for i in range(10):
            txn.put(b"k%d" % i, b"v")
    db.close()


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    with tempfile.TemporaryDirectory() as d:
        counter = [0]

        def one_file(_):
            counter[0] += 1
            db = btree_store.DB(os.path.join(d, "t%d.db" % counter[0]), sync=False)
            with db.begin(write=True) as txn:
                for i in range(10):
                    txn.put(b"k%d" % i, b"v")
            db.close()

        for name, fn, goal in (("memory", one_memory, 50), ("file sync=False", one_file, 1000)):
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                for i in range(per):
                    fn(i)
                times.append((time.perf_counter() - t) / per * 1e6)
            print("%-16s create+put 10+close: median %.1f us (min %.1f; goal < %d us)"
                  % (name, statistics.median(times), min(times), goal))


if __name__ == "__main__":
    main()
