"""test_range_checks.py - a descent checks the node it reaches against the key range its
parent's separators give it: a branch cell repointed (CRC resealed, child txid right) at a
sibling whose keys lie outside that range is CorruptionError, not a wrong answer. The check
reads the node's first and last keys from the summary kept beside a cached image (keys of up to
22 bytes whole, longer ones as a prefix, then the cell), so it runs with keys at, just past and
far past that length, with the sibling read first through the bad cell or already cached
through its own parent; and valid trees of such keys read back whole.

Layer: tests only; the public API plus raw file images, parsed by tests/_format.py.
"""
import struct

import pytest

import btree_store
from btree_store import CorruptionError
from _format import BRANCH_CELL_HDR, PH_SIZE, Layout, reseal, u16, u64

P = 1024


def _keys(klen, n):
    # long keys share a prefix longer than the summary's 22 bytes: only the cell decides
    prefix = b"p" * max(0, klen - 8)
    return [prefix + b"%08d" % i for i in range(n)]


def _build(path, klen, n=200):
    keys = _keys(klen, n)
    with btree_store.DB(path, page_size=P) as db:
        with db.begin(write=True) as txn:
            for k in keys:
                txn.put(k, b"v" + k[-4:])
    return keys


def _cells(page):
    n = u16(page, 6)
    out = []
    for i in range(n):
        off = u16(page, PH_SIZE + 2 * i)
        klen = u16(page, off + 16)
        out.append((off, u64(page, off), u64(page, off + 8),
                    bytes(page[off + BRANCH_CELL_HDR:off + BRANCH_CELL_HDR + klen])))
    return out


@pytest.mark.parametrize("klen", [16, 22, 23, 40])
def test_valid_trees_read_back(tmp_path, klen):
    path = str(tmp_path / "ok.bs")
    keys = _build(path, klen, 1500)
    with btree_store.DB(path) as db:
        with db.begin() as txn:  # first reads: summaries made from the file
            assert all(txn.get(k) == b"v" + k[-4:] for k in keys)
            assert [k for k, _ in txn.iter()] == keys
        with db.begin(write=True) as txn:  # promoted pages: summaries made at commit
            for k in keys[::7]:
                txn.put(k, b"w")
            txn.delete(keys[3])
        with db.begin() as txn:
            assert txn.get(keys[7]) == b"w" and txn.get(keys[3]) is None
            assert list(txn.iter(start=keys[100], stop=keys[110], values=False)) == keys[100:110]
        db.check()


@pytest.mark.parametrize("klen", [16, 22, 23, 40])
@pytest.mark.parametrize("sibling_cached", [False, True])
def test_cell_repointed_at_a_sibling_is_corruption(tmp_path, klen, sibling_cached):
    path = str(tmp_path / "bad.bs")
    keys = _build(path, klen)
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    lay = Layout(buf)
    root = lay.meta["default"]["root"]
    assert lay.meta["default"]["depth"] == 2  # a root branch over leaves
    cells = _cells(lay.page(root))
    assert len(cells) >= 4
    (off1, _c1, _t1, sep1), (_o2, c2, t2, sep2) = cells[1], cells[2]
    # cell 1 now leads to its right sibling: right pgno, right txid, keys >= sep2 > its range
    struct.pack_into("<QQ", buf, root * P + off1, c2, t2)
    reseal(buf, P, pages=[root])
    with open(path, "wb") as f:
        f.write(buf)
    in_cell1 = next(k for k in keys if sep1 <= k < sep2)
    in_cell2 = next(k for k in keys if k >= sep2)
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            if sibling_cached:  # through its own parent cell: fine, and now cached
                assert txn.get(in_cell2) == b"v" + in_cell2[-4:]
            with pytest.raises(CorruptionError, match="outside the range"):
                txn.get(in_cell1)
            with pytest.raises(CorruptionError):
                list(txn.iter(start=in_cell1))


@pytest.mark.parametrize("klen", [16, 40])
def test_memo_does_not_hide_a_child_reached_through_another_parent(tmp_path, klen):
    # A descent remembers, on a cached node, the range it last checked the node against (by
    # the images and cells its bounds come from). A leaf checked through its own parent must
    # be checked again, and fail, when a cell of ANOTHER parent (at the same cell index, with
    # the leaf's right pgno and txid) leads to it.
    path = str(tmp_path / "bad3.bs")
    keys = _build(path, klen, 3000)
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    lay = Layout(buf)
    root = lay.meta["default"]["root"]
    assert lay.meta["default"]["depth"] == 3  # root branch, branches, leaves
    rcells = _cells(lay.page(root))
    b1, b2 = rcells[0][1], rcells[1][1]
    c1, c2 = _cells(lay.page(b1)), _cells(lay.page(b2))
    assert len(c1) >= 3 and len(c2) >= 3
    _o, leaf, leaf_txid, lsep = c1[1]
    off2, _c, _t, bsep = c2[1]
    # cell 1 of b2 now leads to the leaf under cell 1 of b1 (keys below b2's whole range)
    struct.pack_into("<QQ", buf, b2 * P + off2, leaf, leaf_txid)
    reseal(buf, P, pages=[b2])
    with open(path, "wb") as f:
        f.write(buf)
    in_leaf = next(k for k in keys if k >= lsep)
    in_bad = next(k for k in keys if k >= bsep)
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            for _ in range(3):  # through its own parent: fine, cached and remembered
                assert txn.get(in_leaf) == b"v" + in_leaf[-4:]
            with pytest.raises(CorruptionError, match="outside the range"):
                txn.get(in_bad)
            assert txn.get(in_leaf) == b"v" + in_leaf[-4:]  # its own path still reads
            with pytest.raises(CorruptionError, match="outside the range"):
                txn.get(in_bad)
        with db.begin() as txn:  # a later transaction: the memo is the leaf's, not the txn's
            assert txn.get(in_leaf) == b"v" + in_leaf[-4:]
            with pytest.raises(CorruptionError, match="outside the range"):
                txn.get(in_bad)
