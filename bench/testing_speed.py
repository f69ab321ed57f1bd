"""testing_speed.py - what a test pays per fresh database: create + put 10 keys + close, of an
in-memory database (goal: under 50 us) and of a file in a temporary folder with sync=False
(goal: under 1 ms). Prints the median of several rounds in microseconds (not asserted).

    PYTHONPATH=python python bench/testing_speed.py [rounds] [per_round]

Measured on the 2-core build machine (Python 3.11, release build; medians, other jobs
running, so wall times vary): memory 126 us before the cache change of 2026-12-02 (the
clock array was sized for the whole default cache, a quarter of RAM, and calloc zeroed it
on every open), 4.5 - 13 us after; file sync=False about 200 us unloaded (system calls:
create, lock, three writes, close; no fsync). Counted by callgrind, which does not depend on
the load, one memory create + 10 puts + close went from 12.5 M to 80 k instructions:

    PY=$(python -c 'import sys; print(sys.executable)')   # not a pyenv shim
    PYTHONPATH=python valgrind --tool=callgrind $PY bench/testing_speed.py --memory-only 100
    PYTHONPATH=python valgrind --tool=callgrind $PY bench/testing_speed.py --memory-only 300
    (callgrind_annotate's PROGRAM TOTALS of the two: the difference / 200 per round)

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
    if len(sys.argv) > 2 and sys.argv[1] == "--memory-only":  # for callgrind: no timing
        for i in range(int(sys.argv[2])):
            one_memory(i)
        return
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
