"""test_sigkill.py - a child process commits a stream of numbered transactions
(sync=True) and prints each number after commit returns; the parent SIGKILLs it at a random
moment, reopens, runs the checker and compares with a model: the database holds exactly the
last acknowledged commit (or the next one, if the kill landed between commit and print).

Layer: tests only; public Python API of btree_store in a child process.
"""
import os
import random
import signal
import subprocess
import sys
import threading
import time

import btree_store

from _util import LONG, child_env, dump

# The workload, shared by the child (which runs it) and the parent (which models it).
WORKLOAD = r'''
def ops(i):
    """Operations of transaction number i (deterministic)."""
    out = [("put", None, b"counter", b"%d" % i)]
    out.append(("put", None, b"k%06d" % i, bytes([i % 256]) * (20000 if i % 10 == 0 else 50 + i % 200)))
    if i % 5 == 0 and i > 7:
        out.append(("del", None, b"k%06d" % (i - 7), None))
    out.append(("put", "b", b"%d" % (i % 50), b"v%d" % i))
    if i % 13 == 0:
        out.append(("drop", "c", None, None))
        for j in range(20):
            out.append(("put", "c", b"%d" % j, b"%d-%d" % (i, j)))
    return out
'''

CHILD = WORKLOAD + r'''
import sys, btree_store
path, start = sys.argv[1], int(sys.argv[2])
db = btree_store.DB(path, sync=True)
print("ready", flush=True)
i = start
while True:
    with db.begin(write=True) as txn:
        txn.create_bucket("b", exist_ok=True)
        txn.create_bucket("c", exist_ok=True)
        for op, b, k, v in ops(i):
            if op == "put":
                txn.put(k, v, bucket=b)
            elif op == "del":
                txn.delete(k, bucket=b)
            else:
                txn.drop_bucket(b)
                txn.create_bucket(b)
    print(i, flush=True)
    i += 1
'''

_ns = {}
exec(WORKLOAD, _ns)
ops = _ns["ops"]


class Model:
    def __init__(self):
        self.n = 0
        self.state = {None: {}}

    def advance_to(self, n):
        assert n >= self.n
        while self.n < n:
            self.n += 1
            s = self.state
            s.setdefault("b", {})
            s.setdefault("c", {})
            for op, b, k, v in ops(self.n):
                if op == "put":
                    s[b][k] = v
                elif op == "del":
                    s[b].pop(k, None)
                else:
                    s[b] = {}
        return self.state


def _run_and_kill(path, start, delay):
    p = subprocess.Popen([sys.executable, "-c", CHILD, path, str(start)], env=child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    ready = threading.Event()

    def reader():
        for line in p.stdout:
            line = line.strip()
            if line == "ready":
                ready.set()
            elif line:
                lines.append(int(line))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    if not ready.wait(60):
        p.kill()
        raise AssertionError("child did not start: %s" % p.stderr.read())
    time.sleep(delay)
    if p.poll() is not None:
        raise AssertionError("child died by itself rc=%s: %s" % (p.returncode, p.stderr.read()))
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t.join(10)
    assert p.returncode == -signal.SIGKILL
    p.stderr.close()
    return lines


def test_sigkill_during_commits(tmp_path):
    path = str(tmp_path / "kill.bs")
    rnd = random.Random(1234)
    model = Model()
    last = 0
    rounds = 25 if LONG else 5
    total_acked = 0
    for r in range(rounds):
        acked = _run_and_kill(path, last + 1, rnd.uniform(0.05, 0.6))
        if acked:
            assert acked == list(range(last + 1, acked[-1] + 1)), "acknowledgements out of order"
            total_acked += len(acked)
        acked_last = acked[-1] if acked else last
        with btree_store.DB(path) as db:
            db.check()
            with db.begin() as txn:
                c = txn.get(b"counter")
            c = int(c) if c is not None else 0
            assert c in (acked_last, acked_last + 1), \
                "round %d: database holds txn %d, last acknowledged %d" % (r, c, acked_last)
            expect = model.advance_to(c)
            got = dump(db)
            if c == 0:
                assert got == {None: {}}
            else:
                assert got == expect, "round %d: content differs from commit %d" % (r, c)
        last = c
    assert total_acked > 0, "the child never committed anything"
