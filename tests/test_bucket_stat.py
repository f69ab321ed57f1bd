"""test_bucket_stat.py - txn.stat(bucket=...): one bucket's entries, depth, pages by kind
(branch, leaf, overflow) and the bytes of its keys and values, compared with an independent
walk of the file (tests/_format.py, which reads the on-disk format without the engine); the
view of a write transaction (its own changes) and of a read snapshot; db.stat() counting the
entries of every bucket; bad input (unknown or dropped bucket, wrong types, positional
bucket, closed transaction or database) and a corrupt leaf.

Layer: tests (public Python API; tests/_format.py reads the file).
"""
import os

import pytest

import btree_store
from _format import layout_of

KEYS = ("entries", "depth", "branch_pages", "leaf_pages", "overflow_pages", "key_bytes",
        "value_bytes")


def _fill(db):
    """Default bucket: 3000 small values and 3 overflow values; 'big': 800 keys; 'one': 1;
    'empty': none. Returns {bucket: {key: value}}."""
    data = {None: {}, "big": {}, "one": {}, "empty": {}}
    with db.begin(write=True) as txn:
        for i in range(3000):
            k, v = b"key%06d" % i, b"v" * (i % 70)
            txn.put(k, v)
            data[None][k] = v
        for i, n in enumerate((9000, 20000, 70000)):
            k, v = b"ov%d" % i, bytes([i + 1]) * n
            txn.put(k, v)
            data[None][k] = v
        for name in ("big", "one", "empty"):
            txn.create_bucket(name)
        for i in range(800):
            k, v = b"b%05d" % i, b"%d" % (i * 7)
            txn.put(k, v, bucket="big")
            data["big"][k] = v
        txn.put(b"only", b"", bucket="one")
        data["one"][b"only"] = b""
    return data


def _expected(layout, data, bucket):
    kinds = {"branch": 0, "leaf": 0, "overflow": 0}
    for pgno, owner in layout.owner.items():
        if owner != bucket:
            continue
        kind = layout.kinds[pgno]
        if kind.startswith("catalog-"):
            continue
        kinds["overflow" if kind.startswith("overflow") else kind] += 1
    items = data[bucket]
    return {
        "entries": len(items),
        "branch_pages": kinds["branch"],
        "leaf_pages": kinds["leaf"],
        "overflow_pages": kinds["overflow"],
        "key_bytes": sum(len(k) for k in items),
        "value_bytes": sum(len(v) for v in items.values()),
    }


def test_stat_matches_an_independent_walk_of_the_file(db):
    data = _fill(db)
    path = db.path
    layout = layout_of(path)
    assert not layout.problems
    depths = {None: layout.meta["default"]["depth"]}
    depths.update({n: r["depth"] for n, r in layout.catalog.items()})
    with db.begin() as txn:
        for bucket in (None, "big", "one", "empty"):
            st = txn.stat(bucket=bucket)
            assert sorted(st) == sorted(KEYS)
            assert all(type(v) is int for v in st.values())
            want = _expected(layout, data, bucket)
            want["depth"] = depths[bucket]
            assert st == want, bucket
            assert st["entries"] == txn.count(bucket=bucket)
    with db.begin() as txn:
        st = txn.stat()
    assert st["depth"] >= 2 and st["branch_pages"] >= 1 and st["overflow_pages"] >= 3
    assert st["overflow_pages"] >= (9000 + 20000 + 70000) // db.page_size
    assert st["depth"] == db.stat()["depth"]
    empty = {"entries": 0, "depth": 0, "branch_pages": 0, "leaf_pages": 0,
             "overflow_pages": 0, "key_bytes": 0, "value_bytes": 0}
    with db.begin(bucket="empty") as txn:
        assert txn.stat() == empty  # a bound transaction: its own bucket by default


def test_pages_of_every_tree_add_up_in_a_compact_copy(db, tmp_path):
    """In a compact copy there are no free pages: the metas, the catalog tree and the pages
    stat() reports for each bucket are the whole file."""
    _fill(db)
    dest = str(tmp_path / "compact.db")
    db.copy(dest, compact=True)
    with btree_store.DB(dest, readonly=True) as c:
        st = c.stat()
        assert st["free_pages"] == 0
        layout = layout_of(dest)
        catalog = sum(1 for k in layout.kinds.values() if k.startswith("catalog-"))
        total = 2 + catalog
        with c.begin() as txn:
            for bucket in [None] + txn.buckets():
                s = txn.stat(bucket=bucket)
                total += s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
        assert total == st["page_count"]


def test_write_transaction_sees_its_own_changes_snapshot_does_not(db):
    with db.begin(write=True) as txn:
        txn.put(b"a", b"12345")
    reader = db.begin()
    with db.begin(write=True) as txn:
        txn.put(b"bb", b"x" * 10)
        txn.delete(b"a")
        txn.create_bucket("new")
        txn.put(b"k", b"vv", bucket="new")
        st = txn.stat()
        assert (st["entries"], st["key_bytes"], st["value_bytes"]) == (1, 2, 10)
        assert txn.stat(bucket="new")["entries"] == 1
        assert txn.stat(bucket="new")["leaf_pages"] == 1
    st = reader.stat()
    assert (st["entries"], st["key_bytes"], st["value_bytes"], st["leaf_pages"]) == (1, 1, 5, 1)
    with pytest.raises(btree_store.BucketNotFoundError):
        reader.stat(bucket="new")  # created after the snapshot
    reader.abort()


def test_db_stat_counts_entries_of_every_bucket(db):
    data = _fill(db)
    st = db.stat()
    assert st["entries"] == sum(len(v) for v in data.values())
    assert st["bucket_entries"] == {b: len(v) for b, v in data.items()}
    with db.begin() as txn:
        assert st["entries"] == sum(txn.stat(bucket=b)["entries"] for b in data)


def test_bad_input(db, tmp_path):
    with db.begin(write=True) as txn:
        txn.create_bucket("x")
        txn.put(b"k", b"v", bucket="x")
    with db.begin() as txn:
        with pytest.raises(btree_store.BucketNotFoundError):
            txn.stat(bucket="missing")
        with pytest.raises(TypeError):
            txn.stat(bucket=5)
        with pytest.raises(TypeError):
            txn.stat(bucket=b"x")  # names are str
        with pytest.raises(TypeError):
            txn.stat("x")  # keyword-only
        with pytest.raises(TypeError):
            txn.stat(buckt="x")
        with pytest.raises(ValueError):
            txn.stat(bucket="")
        with pytest.raises(ValueError):
            txn.stat(bucket="n" * 256)
    with db.begin(write=True) as txn:
        txn.drop_bucket("x")
        with pytest.raises(btree_store.BucketNotFoundError):
            txn.stat(bucket="x")
    txn = db.begin()
    txn.abort()
    with pytest.raises(btree_store.ClosedError):
        txn.stat()
    other = btree_store.DB(str(tmp_path / "other.db"))
    live = other.begin()
    other.close()
    with pytest.raises(btree_store.ClosedError):
        live.stat()


def test_corrupt_leaf_raises_corruption_error(tmp_path):
    path = str(tmp_path / "c.db")
    with btree_store.DB(path) as d:
        with d.begin(write=True) as txn:
            txn.create_bucket("b")
            for i in range(2000):
                txn.put(b"%06d" % i, b"x" * 20, bucket="b")
        with d.begin(write=True) as txn:  # the newest commit's page list names only this page
            txn.put(b"later", b"1")
        P = d.page_size
    layout = layout_of(path)
    leaves = [p for p, k in layout.kinds.items() if k == "leaf" and layout.owner[p] == "b"]
    victim = leaves[len(leaves) // 2]
    with open(path, "r+b") as f:
        f.seek(victim * P + P // 2)
        b = f.read(1)
        f.seek(victim * P + P // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    with btree_store.DB(path, readonly=True) as d:
        with d.begin() as txn:
            with pytest.raises(btree_store.CorruptionError):
                txn.stat(bucket="b")
            assert txn.stat()["entries"] == 1  # the default bucket is intact
    os.remove(path)


def test_shared_pages_in_a_crafted_tree_raise_corruption_error(tmp_path):
    """A hostile file whose root branch points every child at the same subtree (each page
    still valid on its own, checksums resealed): the walk reports CorruptionError (the
    counts do not match, or more pages are reachable than the file has) instead of counting
    the shared pages again and again: a walk stops once it has seen more pages than the
    file holds, so a DAG of shared pages cannot make it run for long."""
    import struct
    from _format import reseal, u16, u64

    path = str(tmp_path / "dag.db")
    with btree_store.DB(path) as d:
        with d.begin(write=True) as txn:
            for i in range(30000):
                txn.put(b"%08d" % i, b"x" * 40)
        with d.begin() as txn:
            assert txn.stat()["depth"] >= 3
        P = d.page_size
    layout = layout_of(path)
    root = layout.meta["default"]["root"]
    buf = bytearray(open(path, "rb").read())
    o = root * P
    n = u16(buf, o + 6)
    kids = [(u64(buf, o + u16(buf, o + 32 + 2 * i)), u64(buf, o + u16(buf, o + 32 + 2 * i) + 8))
            for i in range(n)]
    # every pointer of the root to its largest child: n copies of the biggest subtree are
    # more pages than the file has
    child, ctx = max(kids, key=lambda k: u16(buf, k[0] * P + 6))
    assert n * u16(buf, child * P + 6) > layout.page_count
    for i in range(n):
        c = u16(buf, o + 32 + 2 * i)
        struct.pack_into("<QQ", buf, o + c, child, ctx)
    reseal(buf, P, pages=[root])
    with open(path, "wb") as f:
        f.write(buf)
    with btree_store.DB(path, readonly=True) as d:
        with d.begin() as txn:
            with pytest.raises(btree_store.CorruptionError) as ei:
                txn.stat()
    assert "more pages reachable than the file has" in str(ei.value), ei.value
