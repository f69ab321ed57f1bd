"""test_crafted_files.py - hostile files: every checksum valid, the pages inconsistent.

A file comes from users, downloads and backups, so opening one must never crash, hang or
corrupt the process, whatever bytes it holds. The files here are crafted from real databases
and then resealed (tests/_format.py: reseal), so that the damage reaches the engine's
structural checks instead of its CRC check:
  - targeted cases: the freelist lists a page that a tree still uses (the write path must
    notice before it overwrites the page, fail with CorruptionError naming it and refuse
    writes from then on while reads go on), out-of-range counts and txids in records;
  - the crafted-file fuzzer (tests/_crafted.py): pages transplanted between states of the same
    file and between files, header fields, cells, freelist records, meta and catalog records
    edited, all resealed; each case runs a fixed workload in a child process, and only
    btree_store.Error subclasses may come out: no crash, no hang, no other exception.

Layer: tests only; the public Python API, btree_store._testing.crc32c and tests/_format.py.
"""
import os
import random
import struct

import pytest

import btree_store
from btree_store import CorruptionError

import _crafted
from _format import FL_ENTRIES, FL_NADD, Layout, reseal, u16, u32, u64
from _util import LONG, child_env

P = 1024
BUCKETS = ["alpha", "beta", "gamma-" + "g" * 30]


def _build(path):
    """A database with several buckets, overflow values, a catalog of several pages and a
    freelist of several records; returns {bucket: {key: value}} of its newest state."""
    rnd = random.Random(5)
    model = {None: {}}
    with btree_store.DB(path, page_size=P) as db:
        with db.begin(write=True) as txn:
            for i in range(600):
                k, v = b"k%05d" % i, rnd.randbytes(rnd.randint(5, 60))
                txn.put(k, v)
                model[None][k] = v
            for i in range(6):
                k, v = b"ov%d" % i, rnd.randbytes(rnd.randint(1500, 4000))
                txn.put(k, v)
                model[None][k] = v
            for b in BUCKETS:
                txn.create_bucket(b)
                model[b] = {}
                for i in range(150):
                    k, v = b"%s-%04d" % (b[:1].encode(), i), rnd.randbytes(rnd.randint(5, 40))
                    txn.put(k, v, bucket=b)
                    model[b][k] = v
                k, v = b"big", rnd.randbytes(3000)
                txn.put(k, v, bucket=b)
                model[b][k] = v
            for i in range(40):  # a catalog with branch pages
                name = "filler-%03d-%s" % (i, "f" * 24)
                txn.create_bucket(name)
                txn.put(b"x", b"y", bucket=name)
                model[name] = {b"x": b"y"}
        for rnd_commit in range(3):  # deletes: a freelist with several records
            with db.begin(write=True) as txn:
                for k in sorted(model[None])[rnd_commit::4]:
                    txn.delete(k)
                    del model[None][k]
                b = BUCKETS[rnd_commit]
                for k in sorted(model[b])[::3]:
                    txn.delete(k, bucket=b)
                    del model[b][k]
    return model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("crafted")
    path = str(d / "base.bs")
    model = _build(path)
    with open(path, "rb") as f:
        data = f.read()
    lay = Layout(data)
    assert lay.problems == [], lay.problems
    assert len(lay.free) >= 10 and len(lay.freelist_pages) >= 2
    return dict(data=data, layout=lay, model=model)


def _write(tmp_path, data, name="c.bs"):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _list_in_place_of_lowest(data, lay, pgno):
    """The file with page pgno (in use) listed on the freelist in place of the lowest free
    page (the counts stay right)."""
    buf = bytearray(data)
    lowest = min(lay.free)
    for fp in lay.freelist_pages:  # the newest record that mentions it decides
        o = fp * P
        for i in range(u32(buf, o + FL_NADD)):
            if u64(buf, o + FL_ENTRIES + 8 * i) == lowest:
                struct.pack_into("<Q", buf, o + FL_ENTRIES + 8 * i, pgno)
                reseal(buf, P, [fp])
                return bytes(buf)
    raise AssertionError("free page %d not found in an add record" % lowest)


def _read_all_or_corrupt(db, model):
    try:
        _read_all(db, model)
    except CorruptionError:
        pass


def _read_all(db, model):
    """Every key of every bucket has its value; iteration and counts agree."""
    with db.begin() as txn:
        for b, items in model.items():
            assert txn.count(bucket=b) == len(items)
            assert [(bytes(k), bytes(v)) for k, v in txn.iter(bucket=b)] == sorted(items.items())
            for k, v in items.items():
                assert txn.get(k, bucket=b) == v


def _write_all(db, model):
    """A write transaction that touches every tree: rewrites every value (overflow values
    with new ones), deletes some keys, creates a bucket."""
    with db.begin(write=True) as txn:
        for b, items in model.items():
            for i, k in enumerate(sorted(items)):
                v = items[k]
                if i % 5 == 0:
                    txn.delete(k, bucket=b)
                else:
                    txn.put(k, bytes(reversed(v)) + (b"!" * 2000 if len(v) > 1000 else b"!"),
                            bucket=b)
        txn.create_bucket("new-one")
        txn.put(b"n", b"v" * 3000, bucket="new-one")


def _in_use_pages(lay):
    """(label, pgno) for one page of every kind a tree or the freelist uses, below the lowest
    free page or not."""
    out = []
    for kind in ("branch", "leaf", "overflow", "overflow-cont", "catalog-branch",
                 "catalog-leaf", "freelist"):
        pages = lay.pages_of_kind(kind)
        if pages:
            out.append((kind + "-first", pages[0]))
            out.append((kind + "-last", pages[-1]))
    for b in BUCKETS:
        out.append(("root-of-" + b[:5], lay.catalog[b]["root"]))
    out.append(("default-root", lay.meta["default"]["root"]))
    out.append(("catalog-root", lay.meta["catalog"]["root"]))
    return out


def test_freelist_lists_a_page_in_use(tmp_path, corpus):
    """For a page of every kind in use, listed on the freelist: opening works, reads return
    the true data, the write transaction that would reuse the page (the workload rewrites
    every tree, so it gets there) fails with CorruptionError naming it, later write
    transactions are refused (sticky) while reads go on, and after reopening the file reads
    as before or (an overflow value already written over the page) reports CorruptionError,
    never wrong data."""
    lay, data, model = corpus["layout"], corpus["data"], corpus["model"]
    for label, pgno in _in_use_pages(lay):
        path = _write(tmp_path, _list_in_place_of_lowest(data, lay, pgno), "%s.bs" % label)
        with btree_store.DB(path) as db:
            _read_all(db, model)
            with pytest.raises(CorruptionError, match=r"page %d\b" % pgno):
                _write_all(db, model)
            with pytest.raises(CorruptionError, match="freelist"):
                with db.begin(write=True) as txn:
                    txn.put(b"more", b"x")
            _read_all_or_corrupt(db, model)  # reads go on
            with pytest.raises(CorruptionError):
                db.check()
        with btree_store.DB(path) as db:
            _read_all_or_corrupt(db, model)


def test_freelist_lists_pages_in_use_anywhere(tmp_path, corpus):
    """Any page in use, listed anywhere in the free set (not only as the lowest page): the
    write workload either fails with CorruptionError or commits, never crashes; a failure is
    sticky; reads of the file as it was stay right until something commits."""
    lay, data, model = corpus["layout"], corpus["data"], corpus["model"]
    rnd = random.Random(3)
    for label, pgno in _in_use_pages(lay):
        buf = bytearray(data)
        fp = rnd.choice([p for p in lay.freelist_pages if u32(buf, p * P + FL_NADD)])
        i = rnd.randrange(u32(buf, fp * P + FL_NADD))
        struct.pack_into("<Q", buf, fp * P + FL_ENTRIES + 8 * i, pgno)
        reseal(buf, P, [fp])
        path = _write(tmp_path, buf, "any-%s.bs" % label)
        with btree_store.DB(path) as db:
            _read_all(db, model)
            try:
                _write_all(db, model)
            except CorruptionError:
                with pytest.raises(CorruptionError, match="freelist"):
                    db.begin(write=True)
                _read_all(db, model)
            else:
                continue  # the listed page was never handed out, or handed out harmlessly
            try:
                db.check()
            except CorruptionError:
                pass


def test_first_write_copies_the_listed_page(tmp_path):
    """Once a crash: the freelist lists a bucket's root, and the first write copies
    that very root; the allocation handed the root back and shadow() indexed an empty
    savepoint stack (SIGSEGV). Now the handle's first write transaction finds the listed
    root before it changes anything (check_free_set): CorruptionError naming the page and its
    bucket, writes refused from then on, reads right."""
    path = str(tmp_path / "first.bs")
    b = "first"
    model = {None: {}, b: {b"a": b"1"}}
    with btree_store.DB(path, page_size=P) as db:
        with db.begin(write=True) as txn:  # the bucket's root gets a low page number
            txn.create_bucket(b)
            txn.put(b"a", b"1", bucket=b)
        with db.begin(write=True) as txn:
            for i in range(300):
                txn.put(b"k%04d" % i, b"v" * 40)
        with db.begin(write=True) as txn:
            for i in range(300):
                txn.delete(b"k%04d" % i)
    with open(path, "rb") as f:
        data = f.read()
    lay = Layout(data)
    root = lay.catalog[b]["root"]
    assert root < min(lay.free), (root, lay.free)
    with open(path, "wb") as f:
        f.write(_list_in_place_of_lowest(data, lay, root))
    for _ in range(2):
        with btree_store.DB(path) as db:
            with pytest.raises(CorruptionError, match=r"page %d\b.*bucket 'first'" % root):
                db.begin(write=True)
            with pytest.raises(CorruptionError, match="freelist"):
                db.begin(write=True)
            _read_all(db, model)


def _write_default_only(db, n=1500):
    """A write transaction that touches only the default bucket and needs many pages (it
    reuses every free page it can)."""
    with db.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"zz%05d" % i, b"q" * 40)


def test_freelist_lists_a_page_of_another_tree(tmp_path, corpus):
    """The freelist lists a page of a tree the write transaction never touches (a named
    bucket's root, branch and leaves, the catalog's pages), every CRC valid. Before any
    write: check() reports the page as owned twice; reads are right. The handle's first write
    transaction refuses at begin (CorruptionError naming the page and its tree) before it
    changes anything (once, the page was handed out and overwritten: the other bucket lost
    it); writes stay refused, reads stay right; repair() rebuilds the freelist, after which
    check() is clean, the data is intact and writes work, also after reopening."""
    lay, data, model = corpus["layout"], corpus["data"], corpus["model"]
    victim = BUCKETS[1]
    cases = [("root", lay.catalog[victim]["root"])]
    cases += [(lay.kinds[p], p) for p, o in sorted(lay.owner.items())
              if o == victim and p != cases[0][1]][:3]
    cases += [(k, lay.pages_of_kind(k)[0]) for k in ("catalog-branch", "catalog-leaf")
              if lay.pages_of_kind(k)]
    cases.append(("catalog-root", lay.meta["catalog"]["root"]))
    assert len(cases) >= 5, cases
    for label, pgno in cases:
        path = _write(tmp_path, _list_in_place_of_lowest(data, lay, pgno), "other-%d.bs" % pgno)
        with btree_store.DB(path) as db:
            with pytest.raises(CorruptionError) as ei:
                db.check()
            assert any(("page %d is referenced twice (freelist and" % pgno) in p
                       for p in ei.value.problems), (label, ei.value.problems)
            _read_all(db, model)
            # (a tree root the meta records is already refused at open)
            with pytest.raises(CorruptionError, match=r"freelist.*lists page %d, which is "
                                                      r"(also a page of the|the root)" % pgno):
                _write_default_only(db)
            with pytest.raises(CorruptionError, match="freelist"):
                db.begin(write=True)
            _read_all(db, model)
            assert db.repair() is True
            db.check()
            _read_all(db, model)
            _write_default_only(db)
            db.check()
        with btree_store.DB(path) as db:
            db.check()
            m2 = {b: dict(items) for b, items in model.items()}
            m2[None].update({b"zz%05d" % i: b"q" * 40 for i in range(1500)})
            _read_all(db, m2)


def test_freelist_lists_an_overflow_page_of_another_tree(tmp_path, corpus):
    """An overflow run listed as free is not found before writing (the check at the first
    write transaction reads no leaves): a write transaction that never touches that value
    reuses the run and commits. Reads never return wrong data: the value's reader gets
    CorruptionError naming the page, every other value is right; check() reports it, and
    repair() refuses (a tree itself is damaged)."""
    lay, data, model = corpus["layout"], corpus["data"], corpus["model"]
    assert lay.overflow_runs
    first = lay.overflow_runs[0][0]
    path = _write(tmp_path, _list_in_place_of_lowest(data, lay, first), "ov.bs")
    with btree_store.DB(path) as db:
        _read_all(db, model)
        _write_default_only(db)
        lost = []
        with db.begin() as txn:
            for b, items in model.items():
                for k, v in items.items():
                    try:
                        got = txn.get(k, bucket=b)
                    except CorruptionError as e:
                        assert "page %d" % first in str(e)
                        lost.append((b, k))
                    else:
                        assert got == v, (b, k)
        assert len(lost) == 1, lost
        with pytest.raises(CorruptionError):
            db.check()
        with pytest.raises(CorruptionError, match="trees themselves are damaged"):
            db.repair()


def _edit_meta(data, fn, slots=(0, 1)):
    buf = bytearray(data)
    for s in slots:
        fn(buf, s * P)
    reseal(buf, P)
    return bytes(buf)


@pytest.mark.parametrize("count", [2 ** 63, 2 ** 64 - 1, 2 ** 62, 10 ** 9])
def test_default_bucket_count_out_of_range(tmp_path, corpus, count):
    """A meta whose default-bucket count no tree of the file could hold is not a valid meta
    (count() and len() raised SystemError for counts >= 2^63)."""
    def fn(buf, o):
        struct.pack_into("<Q", buf, o + 80 + 8, count)
    path = _write(tmp_path, _edit_meta(corpus["data"], fn))
    with pytest.raises(CorruptionError, match="no valid meta"):
        btree_store.DB(path)


@pytest.mark.parametrize("count", [2 ** 63, 2 ** 64 - 1, 10 ** 9])
def test_bucket_record_count_out_of_range(tmp_path, corpus, count):
    """The same for a named bucket's record in the catalog: CorruptionError from every call
    that reads the record, never SystemError."""
    lay, data = corpus["layout"], corpus["data"]
    b = BUCKETS[0]
    buf = bytearray(data)
    leaf = _catalog_leaf_cell(buf, lay, b.encode())
    struct.pack_into("<Q", buf, leaf[1] + 8, count)
    reseal(buf, P, [leaf[0]])
    path = _write(tmp_path, buf)
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            with pytest.raises(CorruptionError, match="bucket record"):
                txn.count(bucket=b)
            with pytest.raises(CorruptionError, match="bucket record"):
                txn.get(b"a-0001", bucket=b)
            assert txn.count() == len(corpus["model"][None])
        with pytest.raises(CorruptionError):
            db.check()


def _catalog_leaf_cell(buf, lay, name):
    """(leaf pgno, offset of the bucket record value) of catalog entry `name`."""
    for pgno in lay.pages_of_kind("catalog-leaf"):
        o = pgno * P
        for i in range(struct.unpack_from("<H", buf, o + 6)[0]):
            c = o + struct.unpack_from("<H", buf, o + 32 + 2 * i)[0]
            klen = struct.unpack_from("<H", buf, c)[0]
            if bytes(buf[c + 8:c + 8 + klen]) == name:
                return pgno, c + 8 + klen
    raise AssertionError("bucket %r not in the catalog" % name)


@pytest.mark.parametrize("field,value", [
    ("txid", 2 ** 63), ("txid", 2 ** 64 - 1), ("flags", 1), ("depth", 40), ("root", 1),
])
def test_bucket_record_fields_out_of_range(tmp_path, corpus, field, value):
    lay, data = corpus["layout"], corpus["data"]
    b = BUCKETS[2]
    buf = bytearray(data)
    leaf, off = _catalog_leaf_cell(buf, lay, b.encode())
    o = {"root": 0, "depth": 16, "flags": 20, "txid": 24}[field]
    struct.pack_into("<Q" if field in ("root", "txid") else "<I", buf, off + o, value)
    reseal(buf, P, [leaf])
    path = _write(tmp_path, buf)
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            with pytest.raises(CorruptionError, match="bucket record"):
                txn.get(b"a-0001", bucket=b)
        with pytest.raises(CorruptionError):
            with db.begin(write=True) as txn:
                txn.put(b"k", b"v", bucket=b)


# ------------------------------------------------------------------ a root that is not the bucket's
def _repoint(data, lay, name, root, depth):
    """The file with bucket `name`'s record pointing at page `root` (depth `depth`, the txid
    that page carries), resealed: every page check passes."""
    buf = bytearray(data)
    leaf, off = _catalog_leaf_cell(buf, lay, name.encode())
    struct.pack_into("<QQIIQ", buf, off, root, 1, depth, 0, u64(buf, root * P + 16))
    reseal(buf, P, [leaf])
    return bytes(buf)


def _tree_depth(lay, pgno):
    """Depth of the subtree at pgno (1 = a leaf)."""
    d, o = 1, pgno * P
    while lay.data[o + 4] == 2:  # a branch: follow its first child
        o = u64(lay.data, o + u16(lay.data, o + 32)) * P
        d += 1
    return d


def _same_leaf_other(lay, name):
    """Another bucket whose record lies in the same catalog leaf as `name`'s."""
    leaf = _catalog_leaf_cell(bytearray(lay.data), lay, name.encode())[0]
    for other in lay.catalog:
        if other != name and lay.catalog[other]["root"] and \
                _catalog_leaf_cell(bytearray(lay.data), lay, other.encode())[0] == leaf:
            return other
    raise AssertionError("no other bucket in the leaf of %r" % name)


def _foreign_roots(lay):
    """(label, page) of pages that are roots of trees other than BUCKETS[0]'s, or catalog
    pages, that a crafted record can point at."""
    b = BUCKETS[0]
    own_leaf = _catalog_leaf_cell(bytearray(lay.data), lay, b.encode())[0]
    other = _same_leaf_other(lay, b)
    out = [("catalog-root", lay.meta["catalog"]["root"], None), ("own-catalog-leaf", own_leaf, None),
           ("default-root", lay.meta["default"]["root"], None),
           ("same-leaf-bucket", lay.catalog[other]["root"], other)]
    out += [("catalog-leaf", p, None) for p in lay.pages_of_kind("catalog-leaf")
            if p != own_leaf][:2]
    return out


def test_catalog_trees_are_a_two_level_corpus(corpus):
    lay = corpus["layout"]
    assert lay.meta["catalog"]["depth"] == 2  # the cases below reach leaves through a branch
    assert len(lay.pages_of_kind("catalog-leaf")) >= 3


@pytest.mark.parametrize("case", range(6))
def test_bucket_root_is_a_page_of_another_tree(tmp_path, corpus, case):
    """A bucket record whose root is a page of another tree (the catalog's root or one of its
    leaves, the leaf holding the record itself, the default bucket's root, another bucket's
    root), with the txid that page carries: every page check passes, and reads returned the
    other tree's records as the bucket's data (catalog records as keys and values). Now
    opening the bucket is CorruptionError naming the bucket, the page and what it is; the
    other buckets read right (but for the bucket whose root it names in the same catalog
    leaf: which of the two records lies is unknown, both refuse); check() reports it."""
    lay, data, model = corpus["layout"], corpus["data"], corpus["model"]
    b = BUCKETS[0]
    label, root, sharer = _foreign_roots(lay)[case]
    path = _write(tmp_path, _repoint(data, lay, b, root, _tree_depth(lay, root)))
    others = {k: v for k, v in model.items() if k not in (b, sharer)}
    with btree_store.DB(path) as db:
        for call in (lambda t: t.count(bucket=b), lambda t: list(t.iter(bucket=b)),
                     lambda t: t.get(b"a-0001", bucket=b)):
            with db.begin() as txn:
                with pytest.raises(CorruptionError, match=r"bucket '%s' has root page %d, which "
                                   r"is (a page of the bucket catalog|the root of)" % (b, root)):
                    call(txn)
        _read_all(db, others)
        with pytest.raises(CorruptionError):
            db.check()
        with pytest.raises(CorruptionError):
            with db.begin(write=True) as txn:
                txn.put(b"k", b"v", bucket=b)
        _read_all(db, others)


def test_bucket_root_is_the_root_of_a_bucket_open_in_the_transaction(tmp_path, corpus):
    """The record of a bucket in another catalog leaf names the root of a bucket the
    transaction already opened: the second open is CorruptionError naming both."""
    lay, data, model = corpus["layout"], corpus["data"], corpus["model"]
    victim, owner = BUCKETS[2], BUCKETS[0]
    assert _catalog_leaf_cell(bytearray(data), lay, victim.encode())[0] != \
        _catalog_leaf_cell(bytearray(data), lay, owner.encode())[0]
    root = lay.catalog[owner]["root"]
    path = _write(tmp_path, _repoint(data, lay, victim, root, lay.catalog[owner]["depth"]))
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            assert txn.count(bucket=owner) == len(model[owner])
            with pytest.raises(CorruptionError, match=r"bucket '%s' has root page %d, which is "
                               r"the root of bucket '%s'" % (victim, root, owner)):
                txn.count(bucket=victim)


@pytest.mark.parametrize("what", ["root", "leaf"])
def test_pages_shared_by_two_trees_refuse_writes(tmp_path, corpus, what):
    """What a lookup cannot see (the root of a bucket recorded in another catalog leaf, not
    open; a non-root page of another bucket): the handle's first write transaction walks the
    trees (check_free_set) and refuses before it changes anything, naming the page and both
    trees, at every write transaction; reads of the other buckets go on; check() reports
    it."""
    lay, data, model = corpus["layout"], corpus["data"], corpus["model"]
    victim, owner = BUCKETS[2], BUCKETS[0]
    if what == "root":
        page, depth = lay.catalog[owner]["root"], lay.catalog[owner]["depth"]
    else:
        page = [p for p, o in sorted(lay.owner.items())
                if o == owner and lay.kinds[p] == "leaf"][1]
        depth = 1
    path = _write(tmp_path, _repoint(data, lay, victim, page, depth))
    others = {k: v for k, v in model.items() if k != victim}
    with btree_store.DB(path) as db:
        for _ in range(2):
            with pytest.raises(CorruptionError, match=r"page %d is a page of two trees \(bucket "
                               r"'%s' and bucket '%s'" % (page, owner, victim)):
                db.begin(write=True)
        _read_all(db, others)
        with pytest.raises(CorruptionError, match="referenced twice"):
            db.check()


def test_default_root_is_the_catalog_root(tmp_path, corpus):
    """A meta whose default bucket and catalog share a root is not a valid meta."""
    def fn(buf, o):
        buf[o + 80:o + 112] = buf[o + 112:o + 144]
    path = _write(tmp_path, _edit_meta(corpus["data"], fn))
    with pytest.raises(CorruptionError, match="no valid meta"):
        btree_store.DB(path)


def test_bucket_root_is_a_freelist_page(tmp_path, corpus):
    lay, data, model = corpus["layout"], corpus["data"], corpus["model"]
    b = BUCKETS[0]
    for fp in lay.freelist_pages[:2]:
        path = _write(tmp_path, _repoint(data, lay, b, fp, 1), "fl-%d.bs" % fp)
        with btree_store.DB(path) as db:
            with db.begin() as txn:
                with pytest.raises(CorruptionError, match=r"page %d\b" % fp):
                    list(txn.iter(bucket=b))


def test_count_that_undercounts(tmp_path, corpus):
    """A default-bucket count of 0 for a tree with keys: deleting a key is CorruptionError,
    the count never wraps around to 2^64-1."""
    def fn(buf, o):
        struct.pack_into("<Q", buf, o + 80 + 8, 0)
    path = _write(tmp_path, _edit_meta(corpus["data"], fn))
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            assert len(txn) == 0
        k = sorted(corpus["model"][None])[0]
        with pytest.raises(CorruptionError, match="empty"):
            with db.begin(write=True) as txn:
                txn.delete(k)
        with db.begin() as txn:
            assert len(txn) == 0


@pytest.mark.parametrize("txid", [2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1])
def test_meta_txid_out_of_range(tmp_path, corpus, txid):
    """A meta txid near 2^64 would wrap the next commit's txid: the meta is refused and the
    other one (the previous commit) opens."""
    lay, data = corpus["layout"], corpus["data"]
    newest = 0 if lay.metas[0] is lay.meta else 1

    def fn(buf, o):
        struct.pack_into("<Q", buf, o + 16, txid)
    path = _write(tmp_path, _edit_meta(data, fn, slots=(newest,)))
    with btree_store.DB(path) as db:
        assert db.stat()["txid"] == lay.meta["txid"] - 1
        with db.begin(write=True) as txn:
            txn.put(b"after", b"x")
        db.check()


def test_meta_page_count_beyond_the_file(tmp_path, corpus):
    """A meta whose page count the file cannot hold (the pages past its end must all be free,
    and each free page is listed inside the file) is not a valid meta: check() allocated a
    page map that large (MemoryError) for page_count near 2^37."""
    lay, data = corpus["layout"], corpus["data"]
    newest = 0 if lay.metas[0] is lay.meta else 1

    def fn(buf, o):
        struct.pack_into("<Q", buf, o + 56, 2 ** 37)
    path = _write(tmp_path, _edit_meta(data, fn, slots=(newest,)))
    with btree_store.DB(path) as db:
        assert db.stat()["txid"] == lay.meta["txid"] - 1  # the other meta
        db.check()


# ------------------------------------------------------------------ the crafted-file fuzzer
def _cases():
    n = int(os.environ.get("BTREE_STORE_CRAFTED_CASES", "0")) or (3000 if LONG else 300)
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        n = max(n // 4, 60)  # the sanitizer pass runs everything several times slower
    return n


def test_crafted_files_fuzz(tmp_path):
    """The crafted-file fuzzer: cases run in child processes (a crash is a failed test that
    names the case seed, not a dead pytest); each child reports the seed it is running, so
    the parent restarts after the seed that crashed to keep going and lists every failure."""
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    _crafted.build_corpus(str(corpus_dir))
    failures, stats = _crafted.run_batches(str(corpus_dir), str(tmp_path / "work"),
                                           range(_cases()), env=child_env(),
                                           timeout=_crafted.CASE_TIMEOUT)
    assert not failures, "crafted cases failed (replay: python tests/_crafted.py SEED):\n" + \
        "\n".join(failures[:20])
    assert stats["opened"] > stats["cases"] // 4, stats  # the cases reach past open
    assert stats["wrote"] > 0, stats


# ------------------------------------------------------------------ a failed create
@pytest.mark.parametrize("kind,n,err", [("write", 1, "ENOSPC"), ("sync", 1, "EIO"),
                                        ("write", 1, "EIO"), ("sync", 1, "ENOSPC")])
def test_failed_create_leaves_no_file(tmp_path, kind, n, err):
    """Creating a database that fails part way (disk full, I/O error while writing or
    syncing the new meta pages) removes the half-made file it created; an existing file is
    never removed by a failed open."""
    import errno as _errno
    from btree_store import _testing
    path = str(tmp_path / "new.bs")
    fio = _testing.FaultIO()
    fio.fail_nth(kind, n, errno=getattr(_errno, err))
    with pytest.raises(btree_store.DiskError):
        btree_store.DB(path, _io=fio)
    assert fio.fired
    assert not os.path.exists(path)
    # an existing (empty) file that the open did not create stays where it is
    open(path, "wb").close()
    fio = _testing.FaultIO()
    fio.fail_nth(kind, n, errno=getattr(_errno, err))
    with pytest.raises(btree_store.DiskError):
        btree_store.DB(path, _io=fio)
    assert os.path.exists(path)
    with btree_store.DB(path) as db:  # and a later open makes it a database
        db.check()
