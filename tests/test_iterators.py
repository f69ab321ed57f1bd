"""test_iterators.py - txn.iter() ranges, reverse, prefix, seek, key/value properties,
keys=/values= flags, memoryviews over reused buffers, ClosedError after the transaction ends,
iteration of a write transaction that changes under the iterator, constant memory (tracemalloc).

Layer: tests only; public Python API of btree_store.
"""
import gc
import random
import tracemalloc

import pytest

import btree_store
from btree_store import ClosedError

from _util import LONG

KEYS = [b"", b"a", b"aa", b"ab", b"abc", b"b", b"ba", b"bb", b"c", b"c\x00", b"d", b"\xff"]


@pytest.fixture
def filled(db):
    with db.begin(write=True) as txn:
        for k in KEYS:
            txn.put(k, b"v:" + k)
    return db


def keys_of(it):
    return [bytes(k) for k, _ in it]


def test_full_forward_and_reverse(filled):
    with filled.begin() as txn:
        assert keys_of(txn.iter()) == sorted(KEYS)
        assert keys_of(txn.iter(reverse=True)) == sorted(KEYS, reverse=True)
        items = [(bytes(k), bytes(v)) for k, v in txn.iter()]
        assert items == [(k, b"v:" + k) for k in sorted(KEYS)]


def test_iterator_type(filled):
    with filled.begin() as txn:
        it = txn.iter()
        assert isinstance(it, btree_store.Iterator)
        assert iter(it) is it
        k, v = next(it)
        assert isinstance(k, memoryview) and isinstance(v, memoryview)


@pytest.mark.parametrize("start,stop", [
    (None, None), (b"a", None), (None, b"b"), (b"ab", b"c"), (b"ab", b"ab"), (b"c", b"a"),
    (b"", b"\xff"), (b"\x00", b"\xff\xff"), (b"abb", b"bz"), (b"zzz", None), (None, b""),
])
@pytest.mark.parametrize("reverse", [False, True])
def test_ranges(filled, start, stop, reverse):
    want = sorted(k for k in KEYS if (start is None or k >= start) and (stop is None or k < stop))
    if reverse:
        want.reverse()
    with filled.begin() as txn:
        assert keys_of(txn.iter(start, stop, reverse=reverse)) == want
        assert keys_of(txn.iter(start=start, stop=stop, reverse=reverse)) == want


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"b", b"c", b"x", b"\xff", b"abcd"])
@pytest.mark.parametrize("reverse", [False, True])
def test_prefix(filled, prefix, reverse):
    want = sorted((k for k in KEYS if k.startswith(prefix)), reverse=reverse)
    with filled.begin() as txn:
        assert keys_of(txn.iter(prefix=prefix, reverse=reverse)) == want
        # combined with a range: the intersection
        want2 = [k for k in want if k >= b"ab"]
        assert keys_of(txn.iter(b"ab", prefix=prefix, reverse=reverse)) == want2


def test_prefix_ff_boundaries(db):
    keys = [b"\xff", b"\xff\xff", b"\xff\xff\x00", b"\xfe\xff", b"\xff\xfe"]
    with db.begin(write=True) as txn:
        for k in keys:
            txn.put(k, b"")
    with db.begin() as txn:
        assert keys_of(txn.iter(prefix=b"\xff\xff")) == [b"\xff\xff", b"\xff\xff\x00"]
        assert keys_of(txn.iter(prefix=b"\xff")) == sorted(k for k in keys if k[:1] == b"\xff")
        assert keys_of(txn.iter(prefix=b"\xff\xff", reverse=True)) == [b"\xff\xff\x00", b"\xff\xff"]


def test_keys_values_flags(filled):
    with filled.begin() as txn:
        ks = [bytes(k) for k in txn.iter(values=False)]
        assert ks == sorted(KEYS)
        vs = [bytes(v) for v in txn.iter(keys=False)]
        assert vs == [b"v:" + k for k in sorted(KEYS)]
        ks = [bytes(k) for k in txn.iter(b"b", values=False, reverse=True)]
        assert ks == sorted((k for k in KEYS if k >= b"b"), reverse=True)


def test_key_value_properties(filled):
    with filled.begin() as txn:
        it = txn.iter(b"b")
        k, v = next(it)
        assert bytes(it.key) == bytes(k) == b"b"
        assert bytes(it.value) == bytes(v) == b"v:b"
        next(it)
        assert bytes(it.key) == b"ba"
        assert bytes(it.value) == b"v:ba"


def test_seek(filled):
    with filled.begin() as txn:
        it = txn.iter()
        it.seek(b"abb")
        assert keys_of(it) == [k for k in sorted(KEYS) if k >= b"abb"]
        it = txn.iter(reverse=True)
        it.seek(b"abb")
        assert keys_of(it) == [k for k in sorted(KEYS, reverse=True) if k <= b"abb"]
        it = txn.iter()
        assert bytes(next(it)[0]) == b""
        it.seek(b"c")
        assert bytes(next(it)[0]) == b"c"
        it.seek(b"a")  # seeking backwards works too
        assert bytes(next(it)[0]) == b"a"
        it.seek(b"\xff\x00")  # past the last key
        assert list(it) == []
        it.seek(b"d")  # an exhausted iterator can be repositioned
        assert keys_of(it) == [b"d", b"\xff"]


def test_empty_and_missing(db):
    with db.begin() as txn:
        assert list(txn.iter()) == []
        assert list(txn.iter(reverse=True)) == []
        assert list(txn.iter(prefix=b"a")) == []


def test_views_reused_and_bytes_stable(db):
    with db.begin(write=True) as txn:
        for i in range(100):
            txn.put(b"key%03d" % i, b"value%03d" % i)
    with db.begin() as txn:
        it = txn.iter()
        k0, v0 = next(it)
        kb, vb = bytes(k0), bytes(v0)
        assert kb == b"key000"
        k1, v1 = next(it)
        # bytes() copies stay what they were
        assert kb == b"key000" and vb == b"value000"
        assert bytes(k1) == b"key001"
        # an old view may show other bytes now, but reading it is safe
        assert len(bytes(k0)) == len(k0)
        assert bytes(k0) in (b"key000", b"key001")
        rest = [(bytes(k), bytes(v)) for k, v in it]
        assert len(rest) == 98


def test_views_kept_while_buffers_grow(db):
    """Growing the iterator's buffers while old views are alive must never free memory under
    them (AddressSanitizer proves it in CI): keep every view and read them all."""
    rnd = random.Random(4)
    model = {}
    with db.begin(write=True) as txn:
        for i in range(400):
            k = b"%04d" % i + b"k" * (i * 4)          # keys grow up to ~1.6 KB
            v = rnd.randbytes(i * 40)                  # values grow into overflow sizes
            txn.put(k, v)
            model[k] = v
    with db.begin() as txn:
        kept = []
        copies = []
        for k, v in txn.iter():
            kept.append((k, v))
            copies.append((bytes(k), bytes(v)))
        assert copies == sorted(model.items())
        total = 0
        for k, v in kept:  # old views: safe to read, whatever they show
            total += len(bytes(k)) + len(bytes(v))
            assert len(k) <= 2000
        assert total > 0
        # reverse too
        kept = [kv for kv in txn.iter(reverse=True)]
        for k, v in kept:
            bytes(k), bytes(v)


def test_iterator_after_txn_end_raises_closed(filled):
    for how in ("abort", "commit", "with"):
        txn = filled.begin()
        it = txn.iter()
        next(it)
        k, v = it.key, it.value
        if how == "abort":
            txn.abort()
        elif how == "commit":
            txn.commit()
        else:
            with txn:
                pass
        with pytest.raises(ClosedError):
            next(it)
        with pytest.raises(ClosedError):
            it.seek(b"a")
        # it.key / it.value are bytes copies: ClosedError, or the last item's bytes
        for attr, last in (("key", k), ("value", v)):
            try:
                assert getattr(it, attr) == last
            except ClosedError:
                pass
    wtxn = filled.begin(write=True)
    it = wtxn.iter()
    next(it)
    wtxn.commit()
    with pytest.raises(ClosedError):
        next(it)


def test_iterator_outlives_everything(db_path):
    db = btree_store.DB(db_path)
    with db.begin(write=True) as txn:
        txn.put(b"a", b"1")
    txn = db.begin()
    it = txn.iter()
    del txn
    gc.collect()
    # the iterator keeps its transaction alive
    assert bytes(next(it)[0]) == b"a"
    db.close()
    with pytest.raises(ClosedError):
        next(it)
    del it, db
    gc.collect()


def _next_after(model, last, stop, reverse):
    ks = sorted(model)
    if reverse:
        cand = [k for k in ks if (last is None or k < last)]
        return cand[-1] if cand else None
    cand = [k for k in ks if (last is None or k > last) and (stop is None or k < stop)]
    return cand[0] if cand else None


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_iterate_while_modifying(db, reverse, seed):
    """Documented semantics: next() continues with the smallest key greater than the last one
    returned (largest smaller one in reverse), in the current state of the transaction."""
    rnd = random.Random(seed)
    model = {}
    with db.begin(write=True) as txn:
        for i in range(0, 600, 2):
            k = b"%04d" % i
            model[k] = b"v" * rnd.randint(0, 300)
            txn.put(k, model[k])
    with db.begin(write=True) as txn:
        it = txn.iter(reverse=reverse)
        last = None
        steps = 0
        while True:
            want = _next_after(model, last, None, reverse)
            try:
                k, v = next(it)
            except StopIteration:
                assert want is None, "iterator ended early, expected %r" % want
                break
            k = bytes(k)
            assert k == want, (steps, k, want)
            assert bytes(v) == model[k]
            last = k
            steps += 1
            # change the tree under the iterator: around the current key, far away, big values
            for _ in range(rnd.randint(0, 6)):
                j = b"%04d" % rnd.randint(0, 620)
                r = rnd.random()
                if r < 0.4:
                    txn.delete(j)
                    model.pop(j, None)
                elif r < 0.5:
                    txn.delete(k)
                    model.pop(k, None)
                else:
                    val = b"n" * rnd.choice([0, 10, 500, 5000])
                    txn.put(j, val)
                    model[j] = val
            if rnd.random() < 0.05:  # many deletions at once (merges)
                for j in list(model)[: len(model) // 3]:
                    txn.delete(j)
                    del model[j]
        assert steps > 10
    db.check()


def test_iterate_write_txn_bucket_dropped(db):
    with db.begin(write=True) as txn:
        txn.create_bucket("b")
        for i in range(50):
            txn.put(b"%d" % i, b"x", bucket="b")
    with db.begin(write=True) as txn:
        it = txn.iter(bucket="b")
        next(it)
        txn.drop_bucket("b")
        # the iterator's bucket is gone: an Error (not a crash), or simply the end
        try:
            rest = list(it)
        except btree_store.Error:
            pass
        else:
            assert rest == []
    db.check()


def _peak_for(db, n):
    with db.begin() as txn:
        gc.collect()
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            total = count = 0
            for k, v in txn.iter():
                total += len(k) + len(v)
                count += 1
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert count == n
    assert total == n * (16 + 100)
    return peak


def _load(db, n):
    with db.begin(write=True) as txn:
        val = b"x" * 100
        for i in range(n):
            txn.put(b"%016d" % i, val)


def test_iteration_memory_does_not_grow(open_db):
    small_n = 20000
    big_n = 1000000  # a million records: the claim is "no allocation per step", at scale
    small = open_db()
    _load(small, small_n)
    big = open_db()
    _load(big, big_n)
    p_small = _peak_for(small, small_n)
    p_big = _peak_for(big, big_n)
    assert p_big <= p_small * 1.5 + 64 * 1024, (p_small, p_big)
