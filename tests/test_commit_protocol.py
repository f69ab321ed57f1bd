"""test_commit_protocol.py - the commit protocol's edge cases, deterministically.

- Single-fsync commits (format.h "commit list"): a small commit writes its pages and its meta
  page before one fsync, and the meta lists every page it wrote with its CRC. Opening must fall
  back to the previous commit when any listed page is missing, torn, or still holds older
  contents; and must use the new commit when all of them arrived.
- Large commits (more pages than a meta page can list, 328 at 4096-byte pages) use two fsyncs
  and carry no list; a 100-put commit over a 10k-record file fits the list and makes one.
- The writer lock belongs to a thread for the life of the process: a new thread that happens
  to reuse a dead thread's id is not mistaken for the owner of its write transaction.

Layer: tests only; the public Python API plus raw reads/writes of the file (format.h offsets).
"""
import random
import struct
import threading

import pytest

import btree_store
from btree_store import _testing

from _format import Layout

P = 4096
META_LIST_N, META_LIST, ENT = 152, 160, 12  # format.h (version 2)
CAP = (P - META_LIST) // ENT  # fmt_commit_list_cap(4096) = 328
VAL_A = b"a" * 600  # commit A's values: 6000 of them fill ~900 pages, more than CAP


def meta_pages(data):
    """(txid, slot, [(pgno, crc)]) for both meta pages, newest first."""
    out = []
    for slot in (0, 1):
        pg = data[slot * P:(slot + 1) * P]
        txid = struct.unpack_from("<Q", pg, 16)[0]
        n = struct.unpack_from("<I", pg, META_LIST_N)[0]
        lst = [struct.unpack_from("<QI", pg, META_LIST + ENT * i) for i in range(min(n, CAP))]
        out.append((txid, slot, lst))
    return sorted(out, reverse=True)


def build(path):
    """Commit A (many pages, two fsyncs) then commit B (one small put: single fsync)."""
    db = btree_store.DB(path)
    with db.begin(write=True) as txn:
        for i in range(6000):
            txn.put(b"k%05d" % i, VAL_A)
    with db.begin(write=True) as txn:
        txn.put(b"k00010", b"B")
    db.close()
    with open(path, "rb") as f:
        return bytearray(f.read())


def contents(path):
    with btree_store.DB(path) as db:
        db.check()
        with db.begin() as txn:
            return txn.get(b"k00010"), len(txn)


@pytest.mark.parametrize("damage", ["zero", "bitflip", "older"])
def test_single_sync_commit_falls_back_when_a_listed_page_is_bad(tmp_path, damage):
    path = str(tmp_path / "s.bs")
    data = build(path)
    (txb, slotb, listb), (txa, _, lista) = meta_pages(data)
    assert txb == txa + 1
    assert lista == [], "the big first commit must have used two fsyncs (no list)"
    assert 0 < len(listb) <= CAP, "the one-put commit must be a single-fsync commit"
    assert contents(path) == (b"B", 6000)
    pgno, _crc = listb[len(listb) // 2]
    page = bytearray(data[pgno * P:(pgno + 1) * P])
    if damage == "zero":
        page[:] = bytes(P)                     # the write never reached the disk
    elif damage == "bitflip":
        page[P // 2] ^= 0x10                   # a torn / damaged write
    else:
        # the page still holds a valid older version of itself (a lost write): same number,
        # valid checksum, but an older txid
        struct.pack_into("<Q", page, 16, txa)
        struct.pack_into("<I", page, 0, _testing.crc32c(bytes(page[4:])))
    data[pgno * P:(pgno + 1) * P] = page
    with open(path, "wb") as f:
        f.write(data)
    # the commit is not complete: opening must give exactly the previous commit
    assert contents(path) == (VAL_A, 6000)
    with btree_store.DB(path) as db:
        assert db.stat()["txid"] == txa
        # and the database keeps working from there: the next commit reuses B's slot
        with db.begin(write=True) as txn:
            txn.put(b"k00010", b"C")
        db.check()
    assert contents(path) == (b"C", 6000)


def test_single_sync_commit_used_when_complete(tmp_path):
    path = str(tmp_path / "s.bs")
    data = build(path)
    (txb, _, listb), _ = meta_pages(data)
    # every listed page carries the listed CRC and the commit's txid
    for pgno, crc in listb:
        page = data[pgno * P:(pgno + 1) * P]
        assert struct.unpack_from("<I", page, 0)[0] == crc
        assert struct.unpack_from("<Q", page, 16)[0] == txb
    assert contents(path) == (b"B", 6000)


def test_damaged_newest_meta_falls_back_to_previous(tmp_path):
    path = str(tmp_path / "s.bs")
    data = build(path)
    (txb, slotb, _), (txa, _, _) = meta_pages(data)
    data[slotb * P + 200] ^= 1
    with open(path, "wb") as f:
        f.write(data)
    assert contents(path) == (VAL_A, 6000)


def test_hundred_put_commit_makes_one_fsync(tmp_path):
    """A durable commit of 100 random puts into a 10k-record file writes ~100 pages (leaves,
    their branches, the freelist record): more than the 64 the commit list held before
    session 18, fewer than it holds now (CAP). It must be a single-fsync commit whose meta
    lists every page it wrote."""
    path = str(tmp_path / "b.bs")
    fio = _testing.FaultIO()
    rnd = random.Random(7)
    keys = [b"%016d" % i for i in range(10000)]
    rnd.shuffle(keys)
    db = btree_store.DB(path, _io=fio)
    with db.begin(write=True) as txn:
        for k in keys:
            txn.put(k, rnd.randbytes(100))
    with db.begin(write=True) as txn:  # the first commit after opening may sync more
        txn.put(keys[0], b"warm")
    for _ in range(3):
        s0 = fio.count("sync")
        with db.begin(write=True) as txn:
            for k in rnd.sample(keys, 100):
                txn.put(k, rnd.randbytes(100))
        assert fio.count("sync") - s0 == 1
    db.close()
    (txid, _, lst), _ = meta_pages((tmp_path / "b.bs").read_bytes())
    assert 64 < len(lst) <= CAP, len(lst)
    with btree_store.DB(path) as db:
        assert db.stat()["txid"] == txid  # the listed commit is the one opening picks
        db.check()


@pytest.mark.parametrize("n, newest", [(CAP, True), (CAP + 1, False)])
def test_commit_list_length_range_check(tmp_path, n, newest):
    """A meta may list up to CAP pages (format.h fmt_commit_list_cap); one claiming more is
    invalid, and opening falls back to the other meta page."""
    path = str(tmp_path / "s.bs")
    data = build(path)
    (txb, slotb, _), (txa, _, _) = meta_pages(data)
    o = slotb * P
    crc2 = struct.unpack_from("<I", data, 2 * P)[0]  # page 2: written by commit A
    struct.pack_into("<I", data, o + META_LIST_N, n)
    for i in range(min(n, CAP)):
        struct.pack_into("<QI", data, o + META_LIST + ENT * i, 2, crc2)
    struct.pack_into("<I", data, o, _testing.crc32c(bytes(data[o + 4:o + P])))
    with open(path, "wb") as f:
        f.write(data)
    with btree_store.DB(path) as db:
        assert db.stat()["txid"] == (txb if newest else txa)


def test_writer_identity_is_not_a_reused_thread_id(tmp_path):
    db = btree_store.DB(str(tmp_path / "t.bs"))
    held = []

    def start_and_exit():
        held.append(db.begin(write=True))  # the thread exits with the transaction open

    t = threading.Thread(target=start_and_exit)
    t.start()
    t.join()
    errors = []

    def try_write():
        try:
            db.begin(write=True, timeout=0.2)
        except Exception as e:  # noqa: BLE001 - recorded and checked below
            errors.append(e)

    # new threads (the OS may hand out the dead thread's id again) must wait and time out,
    # not be told they already own the write transaction
    for _ in range(5):
        t = threading.Thread(target=try_write)
        t.start()
        t.join()
    assert len(errors) == 5
    assert all(isinstance(e, btree_store.LockedError) for e in errors), errors
    held[0].abort()
    with db.begin(write=True) as txn:
        txn.put(b"x", b"y")
    db.check()
    db.close()


def test_cache_hits_make_no_io_calls(tmp_path):
    """Once the pages are cached, gets, scans and read transactions call no I/O function."""
    fio = _testing.FaultIO()
    db = btree_store.DB(str(tmp_path / "c.bs"), _io=fio)
    with db.begin(write=True) as txn:
        for i in range(5000):
            txn.put(b"%06d" % i, b"v" * 50)
    with db.begin() as txn:  # warm: every page is in the cache after this
        assert sum(1 for _ in txn.iter()) == 5000
    before = fio.count("any")
    for _ in range(3):
        with db.begin() as txn:
            for i in range(0, 5000, 7):
                assert txn.get(b"%06d" % i) == b"v" * 50
            assert sum(1 for _ in txn.iter(reverse=True)) == 5000
    assert fio.count("any") == before
    # a write transaction that only touches cached pages makes no I/O call until commit
    txn = db.begin(write=True)
    for i in range(0, 5000, 11):
        txn.put(b"%06d" % i, b"w")
    assert fio.count("any") == before
    txn.commit()
    assert fio.count("write") > 0 and fio.count("sync") > 0
    db.check()
    db.close()


def test_unsynced_commit_lists_accumulate_in_page_order(tmp_path):
    """sync=False commits: each list holds the pages of the commits since the durable one
    that are still referenced (the base list minus what the commit freed, plus its own
    pages), in page order, each with the CRC and a txid its page carries. (Covers
    pager.c base_list_unfreed and the merge: a freed page left in the list fails the
    in-use check.)"""
    path = str(tmp_path / "u.bs")
    rnd = random.Random(5)
    keys = [b"%06d" % i for i in range(3000)]
    with btree_store.DB(path, sync=False) as db:
        with db.begin(write=True, sync=True) as txn:
            for k in keys:
                txn.put(k, rnd.randbytes(40))
        sizes = []
        for _ in range(4):
            with db.begin(write=True) as txn:
                for k in rnd.sample(keys, 20):
                    txn.put(k, rnd.randbytes(40))
            data = (tmp_path / "u.bs").read_bytes()
            (txid, _, lst), (older, _, _) = meta_pages(data)
            assert db.stat()["durable_txid"] == 1 and txid == db.stat()["txid"]
            pgnos = [p for p, _ in lst]
            assert pgnos == sorted(set(pgnos)), pgnos
            kinds = Layout(data).kinds  # what the newest commit makes of every page
            in_use = {p for p, kind in kinds.items() if kind not in ("free", "meta")}
            assert set(pgnos) <= in_use, [(p, kinds.get(p)) for p in sorted(set(pgnos) - in_use)]
            for pgno, crc in lst:
                page = data[pgno * P:(pgno + 1) * P]
                assert struct.unpack_from("<I", page, 0)[0] == crc
                assert 1 < struct.unpack_from("<Q", page, 16)[0] <= txid
            sizes.append(len(lst))
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # the unsynced set grows


def test_open_reads_listed_pages_in_runs(tmp_path):
    """Opening checks every page of a single-sync commit's list; pages with consecutive numbers
    (a commit that grew the file) are read together, 16 at a time at 4 KiB pages, not one
    read each."""
    path = str(tmp_path / "r.bs")
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:  # ~300 new pages, at the end of the file
            for i in range(9000):
                txn.put(b"%08d" % i, b"r" * 100)
    (txid, _, lst), _ = meta_pages((tmp_path / "r.bs").read_bytes())
    assert len(lst) > 200, len(lst)  # a listed commit (one fsync)
    fio = _testing.FaultIO()
    db = btree_store.DB(path, _io=fio, readonly=True)
    reads = fio.count("read")
    assert db.stat()["txid"] == txid
    db.close()
    assert reads < len(lst) // 4, (reads, len(lst))  # one read per listed page before
