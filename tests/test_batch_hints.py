"""test_batch_hints.py - the prefetch pipeline of the batch calls (bs_hint_step: put_many and
delete_many look up the leaves of the next items while they apply the current one) on every
kind of page it may meet: the transaction's own dirty pages (a tree that splits and spreads
between an item's hint and its put), committed pages read in place, dirty pages spilled to
the file (which the hint must not read), the dirty pages of an outer savepoint level, and
crafted files whose pages the hint must not trust (a branch cell repointed at another leaf,
with the right pgno and txid). The hint has no result: what these assert is that every call
gives exactly what the same calls one by one give, that a crafted page is CorruptionError
as before, and (under ASan in CI) that the hint reads no freed or unverified memory.

Layer: tests only; the public API plus raw file images, parsed by tests/_format.py.
"""
import random
import struct

import pytest

import btree_store
from btree_store import CorruptionError
from _format import Layout, branch_cells, reseal

P = 1024


def _key(i):
    return b"%016d" % i


def _check(db, model):
    with db.begin() as txn:
        assert list(txn.items()) == sorted(model.items())
    db.check()


def test_dirty_tree_that_splits_between_hint_and_put(tmp_path):
    # random order, small pages: nearly every few items a leaf overflows (shift to a
    # neighbour, 2 -> 3 spread, split, a new root) after the hints of the next items ran
    rnd = random.Random(1)
    ids = list(range(30000))
    rnd.shuffle(ids)
    model = {}
    with btree_store.DB(str(tmp_path / "d.bs"), page_size=P) as db:
        with db.begin(write=True) as txn:
            items = [(_key(i), b"v%d" % i * (1 + i % 7)) for i in ids]
            assert txn.put_many(items) == len(items)
            model.update(items)
            assert txn.stat()["depth"] >= 3
            # overwrites, existing keys kept, new keys, in one call
            more = [(_key(i), b"w%d" % i) for i in rnd.sample(range(40000), 5000)]
            n_new = sum(k not in model for k, _ in more)
            assert txn.put_many(more, overwrite=False) == n_new
            for k, v in more:
                model.setdefault(k, v)
            gone = [_key(i) for i in rnd.sample(range(40000), 20000)]
            assert txn.delete_many(gone) == sum(k in model for k in set(gone))
            for k in gone:
                model.pop(k, None)
            assert txn.get_many(sorted(model)[:100]) == [model[k] for k in sorted(model)[:100]]
        _check(db, model)


def test_committed_pages_read_in_place(tmp_path):
    rnd = random.Random(2)
    path = str(tmp_path / "m.bs")
    model = {_key(i): b"v%d" % i for i in range(20000)}
    with btree_store.DB(path, page_size=P) as db:
        with db.begin(write=True) as txn:
            txn.put_many(sorted(model.items()), append=True)
    with btree_store.DB(path) as db:  # reopened: the committed pages come from the mapping
        with db.begin() as txn:  # a read first: records vouch for the pages now
            assert txn.get_many([_key(i) for i in range(0, 20000, 97)]) == [
                model[_key(i)] for i in range(0, 20000, 97)]
        for rep in range(3):
            with db.begin(write=True) as txn:
                items = [(_key(rnd.randrange(30000)), b"r%d" % rep) for _ in range(3000)]
                txn.put_many(items)
                model.update(items)
                gone = [_key(rnd.randrange(30000)) for _ in range(3000)]
                txn.delete_many(gone)
                for k in gone:
                    model.pop(k, None)
        _check(db, model)


def test_spilled_dirty_pages(tmp_path):
    # a cache far smaller than the transaction's dirty pages: leaves spill to the file and
    # come back while the batch runs (the hint stops at a spilled page: reading it is I/O)
    rnd = random.Random(3)
    ids = list(range(40000))
    rnd.shuffle(ids)
    model = {}
    with btree_store.DB(str(tmp_path / "s.bs"), page_size=P, cache_size=256 << 10) as db:
        with db.begin(write=True) as txn:
            items = [(_key(i), b"x" * 40) for i in ids]
            txn.put_many(items)
            model.update(items)
            gone = [_key(i) for i in ids[::3]]
            assert txn.delete_many(gone) == len(gone)
            for k in gone:
                del model[k]
        _check(db, model)


def test_outer_savepoint_level(tmp_path):
    # pages dirty in the outer level are the hint's (pager_get_mine) but a write copies them
    model = {}
    with btree_store.DB(str(tmp_path / "sp.bs"), page_size=P) as db:
        with db.begin(write=True) as txn:
            base = [(_key(i), b"a") for i in range(0, 20000, 2)]
            txn.put_many(base)
            model.update(base)
            txn._savepoint()
            txn.put_many([(_key(i), b"b") for i in range(1, 20000, 2)])
            txn.delete_many([_key(i) for i in range(0, 20000, 4)])
            txn._rollback()
            txn._savepoint()
            more = [(_key(i), b"c") for i in range(19999, 0, -3)]
            txn.put_many(more)
            model.update(more)
            txn._release()
        _check(db, model)


def _repointed(path, n):
    """A tree of depth 3 (P-byte pages) where cell 1 of the second branch leads to the leaf
    under cell 1 of the first (right pgno and txid: keys below the branch's whole range).
    Returns (a key of that leaf, a key whose descent goes through the bad cell)."""
    keys = [_key(i) for i in range(n)]
    with btree_store.DB(path, page_size=P) as db:
        with db.begin(write=True) as txn:
            txn.put_many([(k, b"v" + k[-4:]) for k in keys])
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    lay = Layout(buf)
    root = lay.meta["default"]["root"]
    assert lay.meta["default"]["depth"] == 3
    rcells = branch_cells(lay.page(root))
    b1, b2 = rcells[0][1], rcells[1][1]
    c1, c2 = branch_cells(lay.page(b1)), branch_cells(lay.page(b2))
    _o, leaf, leaf_txid, lsep = c1[1]
    off2, _c, _t, bsep = c2[1]
    struct.pack_into("<QQ", buf, b2 * P + off2, leaf, leaf_txid)
    reseal(buf, P, pages=[b2])
    with open(path, "wb") as f:
        f.write(buf)
    return next(k for k in keys if k >= lsep), next(k for k in keys if k >= bsep)


@pytest.mark.parametrize("op", ["put_many", "delete_many"])
@pytest.mark.parametrize("vouched", [False, True])
def test_repointed_cell_through_a_batch(tmp_path, op, vouched):
    # The hint follows branch cells without the range check (a wrong leaf is a wasted
    # prefetch); the put that follows checks, so the bad cell is CorruptionError as before,
    # whether the leaf it leads to was vouched for by a read (the hint then reads it) or not.
    path = str(tmp_path / "bad.bs")
    in_leaf, in_bad = _repointed(path, 3000)
    with btree_store.DB(path) as db:
        if vouched:
            with db.begin() as txn:
                assert txn.get(in_leaf) == b"v" + in_leaf[-4:]
        with pytest.raises(CorruptionError, match="outside the range"):
            with db.begin(write=True) as txn:
                good = [in_leaf] * 5 + [in_bad] * 5 + [in_leaf]
                if op == "put_many":
                    txn.put_many([(k, b"new") for k in good])
                else:
                    txn.delete_many(good)
        with db.begin() as txn:  # nothing committed
            assert txn.get(in_leaf) == b"v" + in_leaf[-4:]
