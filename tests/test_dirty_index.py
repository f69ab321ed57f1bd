"""test_dirty_index.py - write transactions large enough that the pager indexes its dirty
pages by page number (internal.h, DIRTY_IX_MIN: more than 1024 dirty pages), through
everything that changes the dirty map while the index is there: pages made, copied, freed
and reused inside the transaction, savepoint levels rolled back and released, overflow runs
made and freed, leaves spilled to the file and read back (a small cache). Every step is
checked against a dict model, inside the transaction and after the commit and a reopen.

Layer: tests only; the public API (and WriteTxn._savepoint/_rollback/_release, what
DB.exec uses).
"""
import random

import pytest

import btree_store


def _key(i):
    return b"%016d" % i


def _val(rng, big):
    if big:
        return bytes([rng.randrange(256)]) * rng.randrange(5000, 20000)  # an overflow run
    return rng.randbytes(rng.randrange(50, 400))


def _check(txn, model, rng, n=400):
    for k in rng.sample(sorted(model), min(n, len(model))):
        assert txn.get(k) == model[k]
    for _ in range(n // 4):
        k = _key(rng.randrange(10**7, 2 * 10**7))  # never written
        assert txn.get(k) is None


def _churn(txn, model, rng, n, nkeys):
    for _ in range(n):
        k = _key(rng.randrange(nkeys))
        if rng.random() < 0.3 and k in model:
            assert txn.delete(k)
            del model[k]
        else:
            v = _val(rng, rng.random() < 0.02)
            txn.put(k, v)
            model[k] = v


@pytest.mark.parametrize("cache_size", [None, 4 << 20])
def test_large_transaction_with_savepoints_matches_a_model(tmp_path, cache_size):
    rng = random.Random(11)
    path = str(tmp_path / "ix.bs")
    model = {}
    kw = {} if cache_size is None else {"cache_size": cache_size}
    with btree_store.DB(path, **kw) as db:
        with db.begin(write=True) as txn:
            _churn(txn, model, rng, 60_000, 200_000)  # ~4k leaves: the index is built
            _check(txn, model, rng)
            for level in range(6):
                txn._savepoint()
                saved = dict(model)
                _churn(txn, model, rng, 8_000, 200_000)
                txn._savepoint()
                inner = dict(model)
                _churn(txn, model, rng, 8_000, 200_000)
                _check(txn, model, rng)
                if level % 2:
                    txn._rollback()
                    model = inner
                else:
                    txn._release()
                _check(txn, model, rng)
                if level % 3 == 2:
                    txn._rollback()
                    model = saved
                else:
                    txn._release()
                _check(txn, model, rng)
        db.check()
        # a committed tree: deletes copy clean leaves (and free them at commit), puts reuse
        # the pages the previous commit freed
        for rnd in range(2):
            with db.begin(write=True) as txn:
                for k in rng.sample(sorted(model), len(model) // 3):
                    assert txn.delete(k)
                    del model[k]
                _churn(txn, model, rng, 20_000, 300_000)
                _check(txn, model, rng)
            db.check()
        with db.begin(write=True) as txn:  # aborted: nothing of it stays
            _churn(txn, dict(model), rng, 30_000, 300_000)
            txn.abort()
    with btree_store.DB(path) as db:
        db.check()
        with db.begin() as txn:
            assert dict(txn.iter()) == model
