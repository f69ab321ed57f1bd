"""test_stale_pages.py - a stale page (an older, valid image of a page at its own place: a lost
write, a stale cache in the storage stack) is corruption, not data: the pointer to every page
records the txid the page must carry (format.h "parents vouch for their children").

For each kind of page (branch, leaf, overflow run, freelist, bucket catalog, a bucket's root):
keep the file image after every commit of a history in which pages are freed and reused, take
a page of the final state whose place held another valid image in an earlier state, write that
old image back at its place, reopen: reading everything or check() raises CorruptionError
naming that page.

Layer: tests only; the public API plus raw file images, parsed by tests/_format.py.
"""
import os

import pytest

import btree_store
from btree_store import CorruptionError
from _format import Layout, u32, u64

# every test both ways: pages copied into the cache, and read in place from the mapping
pytestmark = pytest.mark.usefixtures("page_access")

P = 1024


def _history(path):
    """File images after each commit of a history with frees and reuse."""
    images = []
    # The newest commit must carry no commit list (whose own page check would only make
    # opening fall back to the previous commit): the pointers must catch the stale page by
    # themselves. Its overflow value is written early, so it is made durable with two syncs
    # and lists nothing.
    db = btree_store.DB(path, page_size=P, sync=False)

    def snap():
        with open(path, "rb") as f:
            images.append(f.read())

    with db.begin(write=True) as t:
        t.create_bucket("b")
        for i in range(400):
            t.put(b"k%05d" % i, b"v" * (1500 if i % 50 == 0 else 30))
            t.put(b"b%05d" % i, b"w" * 40, bucket="b")
    snap()
    for r in range(6):
        with db.begin(write=True) as t:
            for i in range(r, 400, 3):
                t.put(b"k%05d" % i, bytes([r]) * (1500 if i % 50 == r else 30 + r))
                t.put(b"b%05d" % i, bytes([r]) * (40 + r), bucket="b")
            for i in range(r * 7, r * 7 + 5):
                t.delete(b"k%05d" % i)
        snap()
    # small commits last: their pages (the catalog, a freelist record) come from reused pages
    for r in range(2):
        with db.begin(write=True) as t:
            t.put(b"b00001", b"last %d" % r, bucket="b")
            t.put(b"k00399", b"o%d" % r * 800)
        snap()
    db.close()
    return images


def _read_all(path):
    with btree_store.DB(path) as db:
        with db.begin() as t:
            for b in [None] + list(t.buckets()):
                for k, v in t.iter(bucket=b):
                    bytes(v)
        # a write needs the free set (the freelist chain): write, then roll back
        t = db.begin(write=True)
        try:
            t.put(b"x", b"y")
        finally:
            t.abort()


def _valid_image(img, pgno, n=1):
    """The image at pgno in img if it is a checksummed page of that number."""
    from btree_store import _testing
    pg = img[pgno * P:(pgno + n) * P]
    if len(pg) < P or u64(pg, 8) != pgno:
        return None
    if pg[4] == 4:  # overflow: the CRC covers header + value
        vlen = u32(pg, 28)
        if 32 + vlen > len(img) - pgno * P:
            return None
        full = img[pgno * P:pgno * P + 32 + vlen]
        return full if _testing.crc32c(full[4:]) == u32(full, 0) else None
    return pg if _testing.crc32c(pg[4:]) == u32(pg, 0) else None


def _targets(lay, kind):
    if kind == "root":
        return [lay.catalog["b"]["root"]]
    if kind == "overflow":
        return [first for first, _, _ in lay.overflow_runs]
    if kind == "freelist":
        return list(lay.freelist_pages)
    return lay.pages_of_kind(kind)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stale") / "h.bs")
    images = _history(path)
    return images


@pytest.mark.parametrize("kind", ["branch", "leaf", "overflow", "freelist", "catalog-leaf", "root"])
def test_stale_page_is_corruption(tmp_path, history, kind):
    final = history[-1]
    lay = Layout(final)
    assert lay.problems == []
    cands = []
    for pgno in _targets(lay, kind):
        cur = u64(final, pgno * P + 16)
        for old in history[:-1]:
            img = _valid_image(old, pgno)
            # an older one-page image (whatever the page was then: a lost write of the newer
            # one), or for an overflow run an older run of the same length
            ft = final[pgno * P + 4]
            if img is not None and u64(img, 16) != cur and (
                    (img[4] != 4 and ft != 4) or
                    (img[4] == ft == 4 and u32(img, 24) == u32(final, pgno * P + 24))):
                cands.append((pgno, img))
                break
    assert cands, "the history left no older image of a %s page" % kind
    for pgno, img in cands[:3]:
        data = bytearray(final)
        data[pgno * P:pgno * P + len(img)] = img
        path = str(tmp_path / ("s%d.bs" % pgno))
        with open(path, "wb") as f:
            f.write(data)
        # reading everything (or opening: the freelist is loaded then) names the page
        with pytest.raises(CorruptionError) as ei:
            _read_all(path)
        assert "page %d" % pgno in str(ei.value), (kind, pgno, str(ei.value))
        # and so does check(), when the file opens at all
        try:
            db = btree_store.DB(path, readonly=True)
        except CorruptionError as e:
            assert "page %d" % pgno in str(e)
            continue
        try:
            with pytest.raises(CorruptionError) as ei:
                db.check()
            assert "page %d" % pgno in str(ei.value), (kind, pgno, str(ei.value))
        finally:
            db.close()
        os.remove(path)


def test_check_names_the_meta_page_that_points_at_a_stale_root(tmp_path):
    """check() names the meta page whose bucket record expects another txid than the root
    carries: the slot the newest commit is in (two sync=False commits share slot 1, though
    the second one's txid is even)."""
    import struct
    from _format import reseal_meta
    path = str(tmp_path / "m.bs")
    with btree_store.DB(path, page_size=P, sync=False) as db:
        for i in range(2):
            with db.begin(write=True) as t:
                t.put(b"k%d" % i, b"v")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    slot = {u64(data, s * P + 16): s for s in (0, 1)}[2]
    assert slot == 1
    rec = slot * P + 80  # the default bucket's record: root u64 ... txid u64 at +24
    root = u64(data, rec)
    assert u64(data, rec + 24) == 2
    struct.pack_into("<Q", data, rec + 24, 1)
    reseal_meta(data, slot, P, lists=False)
    with open(path, "wb") as f:
        f.write(data)
    with btree_store.DB(path, readonly=True) as db:
        with pytest.raises(CorruptionError) as ei:
            db.check()
    msg = str(ei.value)
    assert "page %d" % root in msg and "meta page 1 expects transaction 1" in msg, msg
