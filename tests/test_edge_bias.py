"""test_edge_bias.py - the edge bias of write descents (csrc/btree.c bt_descend): after a put
that landed past the last key, the next write compares each node's last key first. The
results must be those of the binary search whatever comes next: another append, an
overwrite of the last key, a key just below it (same leaf), a key far to the left, a delete
of the last key, splits of the right edge, in the default bucket and a named one, across
commits and savepoint rollbacks. Checked against a dict and with check().

Layer: tests only; the public Python API of btree_store.
"""
import random

import btree_store


def _key(i):
    return b"%012d" % i


def _run(db, bucket, seed):
    rnd = random.Random(seed)
    model = {}
    top = 0
    for rnd_txn in range(4):
        with db.begin(write=True) as txn:
            for step in range(6000):
                r = rnd.random()
                if r < 0.70 or not model:  # append (past the last key)
                    top += rnd.randint(2, 5)
                    k, v = _key(top), b"a%d" % step
                elif r < 0.78:  # overwrite the last key
                    k, v = _key(top), b"o%d" % step
                elif r < 0.86:  # just below the last key: the same leaf, not past it
                    k, v = _key(top - 1), b"b%d" % step
                elif r < 0.92:  # anywhere
                    k, v = _key(rnd.randint(0, top)), b"r%d" % step
                else:  # delete the last key (and the edge moves left)
                    last = max(model)
                    assert txn.delete(last, bucket=bucket) is True
                    del model[last]
                    continue
                txn.put(k, v, bucket=bucket)
                model[k] = v
                if step % 997 == 0:
                    assert txn.get(k, bucket=bucket) == v
            if rnd_txn == 2:
                # a savepoint rolled back after appends: the hint survives, the pages do not
                txn._savepoint()
                for j in range(1, 300):
                    txn.put(_key(top + j), b"gone", bucket=bucket)
                txn._rollback()
                txn.put(_key(top + 1), b"after", bucket=bucket)  # the edge after a rollback
                model[_key(top + 1)] = b"after"
                top += 1
    with db.begin() as txn:
        got = dict((bytes(k), bytes(v)) for k, v in txn.items(bucket=bucket))
    assert got == model
    db.check()  # raises CorruptionError on any inconsistency


def test_edge_bias_default_bucket(tmp_path):
    db = btree_store.DB(str(tmp_path / "e.db"))
    try:
        _run(db, None, 1)
    finally:
        db.close()


def test_edge_bias_named_bucket(tmp_path):
    db = btree_store.DB(str(tmp_path / "e.db"))
    try:
        with db.begin(write=True) as txn:
            txn.create_bucket("seq")
        _run(db, "seq", 2)
    finally:
        db.close()
