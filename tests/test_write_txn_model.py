"""test_write_txn_model.py - model-based stress of write transactions: random puts,
deletes, overflow values, bucket create/drop, nested savepoints rolled back or released and
iterators stepped in between, on a tiny page cache, checked against a dict model after every
read, and by check() and a full comparison after every commit or abort (check_commits=True:
every commit also compares the writer's free set with the persisted one); old read snapshots
stay open across commits (pinning freed pages) and must keep their contents; the file is
reopened now and then.

BTREE_STORE_LONG=1 runs many more seeds.

Layer: tests only; public Python API of btree_store (plus the private _savepoint/_rollback/
_release).
"""
import bisect
import os
import random

import pytest

import btree_store

from _util import LONG


def _model_stress(path, seed):
    """Random write transactions (puts, deletes, overflow values, bucket create/drop,
    nested savepoints rolled back or released, iterators stepped in between) on a tiny page
    cache, checked against a dict model after every call that reads, and by check() and a
    full comparison after every commit or abort; old read snapshots stay open across commits
    (pinning freed pages) and must keep their contents; the file is reopened now and then."""
    rnd = random.Random(seed)
    db = btree_store.DB(path, page_size=rnd.choice([1024, 1024, 4096]),
                        cache_size=rnd.choice([1, 8192, 65536]), sync=False, check_commits=True)
    model = {None: {}}
    readers = []  # (read transaction, the model it must keep seeing)

    def val():
        return bytes([rnd.randrange(256)]) * rnd.choice([0, 3, 100, 900, 5000])

    try:
        for _ in range(rnd.randrange(2, 8)):
            txn = db.begin(write=True)
            m = {b: dict(kv) for b, kv in model.items()}
            saved, iters = [], []
            for _ in range(rnd.randrange(30, 250)):
                op = rnd.randrange(20)
                b = rnd.choice(list(m))
                key = b"%04d" % rnd.randrange(3000)
                if op < 8:
                    v = val()
                    txn.put(key, v, bucket=b)
                    m[b][key] = v
                elif op < 11:
                    if m[b] and rnd.random() < 0.8:
                        key = rnd.choice(list(m[b]))
                    assert txn.delete(key, bucket=b) == (key in m[b])
                    m[b].pop(key, None)
                elif op == 11:
                    name = "b%d" % rnd.randrange(4)
                    txn.create_bucket(name)
                    m.setdefault(name, {})
                elif op == 12 and len(m) > 1:
                    name = rnd.choice([x for x in m if x])
                    assert txn.drop_bucket(name)
                    del m[name]
                elif op == 13:
                    txn._savepoint()
                    saved.append({b: dict(kv) for b, kv in m.items()})
                elif op == 14 and saved:
                    if rnd.random() < 0.5:
                        txn._rollback()
                        m = saved.pop()
                    else:
                        txn._release()
                        saved.pop()
                elif op == 15:
                    iters.append([b, txn.iter(bucket=b, reverse=rnd.random() < 0.5), None])
                elif op == 16 and iters:
                    # next() continues after the last key it returned, in the current state
                    entry = rnd.choice(iters)
                    ib, it, last = entry
                    for _ in range(rnd.randrange(1, 30)):
                        try:
                            k, v = next(it)
                            k, v = bytes(k), bytes(v)
                        except StopIteration:
                            k = None
                        except btree_store.BucketNotFoundError:
                            assert ib not in m
                            iters.remove(entry)  # an iterator that raised is finished
                            break
                        keys = sorted(m[ib])
                        if it.reverse:
                            i = bisect.bisect_left(keys, last) if last is not None else len(keys)
                            exp = keys[i - 1] if i > 0 else None
                        else:
                            i = bisect.bisect_right(keys, last) if last is not None else 0
                            exp = keys[i] if i < len(keys) else None
                        assert k == exp and (k is None or v == m[ib][k]), (k, exp)
                        if k is None:
                            iters.remove(entry)
                            break
                        entry[2] = last = k
                elif op == 17:
                    assert txn.get(key, bucket=b) == m[b].get(key)
                elif op == 18:
                    assert txn.count(bucket=b) == len(m[b])
                else:
                    assert {bytes(k): bytes(v) for k, v in txn.iter(bucket=b)} == m[b]
            if rnd.random() < 0.8:
                txn.commit()
                model = m
            else:
                txn.abort()
            db.check()
            for r, snap in readers:  # old snapshots stay intact while freed pages are reused
                for b in snap:
                    assert {bytes(k): bytes(v) for k, v in r.iter(bucket=b)} == snap[b]
            if readers and rnd.random() < 0.5:
                readers.pop(0)[0].abort()
            if rnd.random() < 0.3:
                readers.append((db.begin(), {b: dict(kv) for b, kv in model.items()}))
            if rnd.random() < 0.15:  # reopen: nothing freed may be lost or reused twice
                readers.clear()
                db.close()
                db = btree_store.DB(path, cache_size=rnd.choice([1, 8192, 65536]), sync=False,
                                    check_commits=True)
                db.check()
            with db.begin() as r:
                assert sorted(x for x in model if x) == r.buckets()
                for b in model:
                    assert {bytes(k): bytes(v) for k, v in r.iter(bucket=b)} == model[b]
    finally:
        readers.clear()
        db.close()


@pytest.mark.parametrize("block", range(2))
def test_write_txn_model_stress(tmp_path, block):
    n = 500 if LONG else 40
    for seed in range(block * 1000, block * 1000 + n):
        path = str(tmp_path / ("m%d.bs" % seed))
        try:
            _model_stress(path, seed)
        except BaseException as e:
            raise AssertionError("seed %d failed: %r" % (seed, e)) from e
        os.unlink(path)
