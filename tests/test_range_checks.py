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
from _format import PH_SIZE, Layout, branch_cells, reseal, u16

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
    cells = branch_cells(lay.page(root))
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
    rcells = branch_cells(lay.page(root))
    b1, b2 = rcells[0][1], rcells[1][1]
    c1, c2 = branch_cells(lay.page(b1)), branch_cells(lay.page(b2))
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


def _leaf_keys(page):
    """[(cell offset, key)] of a leaf page, in slot order."""
    out = []
    for i in range(u16(page, 6)):
        off = u16(page, PH_SIZE + 2 * i)
        out.append((off, bytes(page[off + 8:off + 8 + u16(page, off)])))
    return out


def _crafted_neighbour(path, which):
    """A tree of leaves about 85% full (random inserts) under one root branch, where the leaf
    under root cell 1 (the right neighbour of the leaf under cell 0) holds a key outside its
    separators: its first key moved below sep1 ("low") or its last key at or past sep2
    ("high"), the page's own order kept, resealed. Returns (keys, leaf 0's keys, sibling)."""
    import random
    keys = _keys(16, 200)
    order = keys[:]
    random.Random(7).shuffle(order)
    with btree_store.DB(path, page_size=P) as db:
        with db.begin(write=True) as txn:
            for k in order:
                txn.put(k, b"v" + k[-4:])
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    lay = Layout(buf)
    root = lay.meta["default"]["root"]
    assert lay.meta["default"]["depth"] == 2
    cells = branch_cells(lay.page(root))
    assert len(cells) >= 4
    leaf0, sib, sep1, sep2 = cells[0][1], cells[1][1], cells[1][3], cells[2][3]
    lkeys = _leaf_keys(lay.page(sib))
    if which == "high":
        off, key = lkeys[-1]
        new = sep2[:8] + b"99999999"  # >= sep2: past the sibling's range
    else:
        off, key = lkeys[0]
        new = max(k for k in keys if k < sep1)  # leaf 0's last key: below sep1
    assert len(new) == len(key)
    buf[sib * P + off + 8:sib * P + off + 8 + len(key)] = new
    reseal(buf, P, pages=[sib])
    with open(path, "wb") as f:
        f.write(buf)
    leaf0_keys = [k for _o, k in _leaf_keys(lay.page(leaf0))]
    return keys, leaf0_keys, sib


@pytest.mark.parametrize("which", ["low", "high"])
@pytest.mark.parametrize("path_", ["merge", "spread"])
def test_crafted_neighbour_is_not_merged_into_a_node(tmp_path, which, path_):
    """A write that moves cells between siblings reads the neighbour through the parent (the
    commit's rebalance: merge or redistribute; an insert's spread to a neighbour with room).
    The neighbour was read with no range check, so a crafted sibling holding keys outside its
    separators was merged into the node and the commit stored the tree out of order,
    silently. Now the neighbour is checked against its separators like a descent's child:
    CorruptionError naming the sibling page, nothing committed, the file reads as before."""
    path = str(tmp_path / "nb.bs")
    keys, leaf0_keys, sib = _crafted_neighbour(path, which)
    with btree_store.DB(path) as db:
        with pytest.raises(CorruptionError, match=r"page %d: keys outside the range" % sib):
            with db.begin(write=True) as txn:
                if path_ == "merge":  # leaf 0 nearly empty: merged with its right neighbour
                    for k in leaf0_keys[1:]:
                        txn.delete(k)
                else:  # leaf 0 overflows: it gives cells to its right neighbour
                    for i in range(60):
                        txn.put(leaf0_keys[0] + b"%02d" % i, b"n" * 20)
        with db.begin() as txn:
            assert [txn.get(k) for k in leaf0_keys] == [b"v" + k[-4:] for k in leaf0_keys]
