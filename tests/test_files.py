"""test_files.py - the file itself. Foreign files, newer format versions, truncated
and empty files; the on-disk format read back by an independent Python parser (tests/_format.py)
including invariant 3 (no page leaked or owned twice); freelist reuse within a session and
across close/reopen (pages freed by the last commit before a close are not lost).

Layer: tests only; public Python API of btree_store, btree_store._testing.crc32c, raw file bytes.
"""
import os
import random
import struct

import pytest

import btree_store
from btree_store import CorruptionError

import _format
from _format import layout_of


def _make_db(path, n=300, page_size=4096, buckets=("b1",)):
    model = {None: {}}
    rnd = random.Random(n)
    with btree_store.DB(path, page_size=page_size) as db:
        with db.begin(write=True) as txn:
            for i in range(n):
                k, v = b"key%05d" % i, rnd.randbytes(rnd.randint(0, 200))
                txn.put(k, v)
                model[None][k] = v
            txn.put(b"big", b"B" * (3 * page_size))
            model[None][b"big"] = b"B" * (3 * page_size)
            for b in buckets:
                txn.create_bucket(b)
                model[b] = {}
                for i in range(n // 2):
                    k, v = b"bk%d" % i, b"%d" % i
                    txn.put(k, v, bucket=b)
                    model[b][k] = v
    return model


def _assert_open_refused(path, words, **kw):
    with pytest.raises(CorruptionError) as ei:
        btree_store.DB(path, **kw)
    msg = str(ei.value).lower()
    assert msg, "empty error message"
    assert any(w in msg for w in words), "unclear message: %r" % msg
    return msg


# ---------------------------------------------------------------- refused files
@pytest.mark.parametrize("content", [
    b"SQLite format 3\x00" + b"\x00" * 8176,
    bytes(range(256)) * 32,
    b"hello world\n" * 1000,
], ids=["sqlite", "bytes", "text"])
def test_foreign_file_refused(tmp_path, content):
    path = str(tmp_path / "foreign.bs")
    with open(path, "wb") as f:
        f.write(content)
    _assert_open_refused(path, ["not a btree_store", "not a database", "magic", "foreign"])
    _assert_open_refused(path, ["not a btree_store", "not a database", "magic", "foreign"],
                         readonly=True)
    with open(path, "rb") as f:
        assert f.read() == content, "a refused file must not be modified"


def _rewrite_meta(path, pgno, page_size, mutate):
    with open(path, "r+b") as f:
        f.seek(pgno * page_size)
        pg = bytearray(f.read(page_size))
        mutate(pg)
        pg[0:4] = struct.pack("<I", _crc32c(bytes(pg[4:])))
        f.seek(pgno * page_size)
        f.write(pg)


def _crc32c(b):
    from btree_store import _testing
    return _testing.crc32c(b)


def test_crc32c_helper():
    from btree_store import _testing
    assert _testing.crc32c(b"123456789") == 0xE3069283
    assert _testing.crc32c(b"") == 0
    assert _testing.crc32c(b"6789", _testing.crc32c(b"12345")) == 0xE3069283
    assert _testing.crc32c_impl() in ("sse4.2", "armv8", "table")
    data = random.Random(1).randbytes(100000)
    for n in (0, 1, 7, 8, 9, 63, 64, 65, 4095, 100000):
        a = _testing.crc32c(data[:n])
        b = _testing.crc32c(data[n // 2:n], _testing.crc32c(data[:n // 2]))
        assert a == b


def test_newer_version_refused(db_path):
    _make_db(db_path, n=20)
    for pg in (0, 1):
        _rewrite_meta(db_path, pg, 4096, lambda p: p.__setitem__(slice(48, 52), struct.pack("<I", 3)))
    _assert_open_refused(db_path, ["newer", "version"])
    _assert_open_refused(db_path, ["newer", "version"], readonly=True)


def test_newer_version_in_newest_meta_only(db_path):
    # A newer version in one meta (with a valid checksum) is still a newer format: refuse,
    # never fall back silently to the other meta and then overwrite the newer one.
    _make_db(db_path, n=20)
    lay = layout_of(db_path)
    newest = 0 if lay.metas[0] and lay.meta is lay.metas[0] else 1
    _rewrite_meta(db_path, newest, 4096, lambda p: p.__setitem__(slice(48, 52), struct.pack("<I", 99)))
    _assert_open_refused(db_path, ["newer", "version"])


@pytest.mark.parametrize("length", [1, 31, 100, 512, 4095, 4096, 4097, 8191])
def test_truncated_header_refused(db_path, length):
    # After two commits both meta pages describe commits (txid 1 and 2): a file cut inside the
    # meta pages lost committed data and must not be taken for an interrupted creation.
    _make_db(db_path, n=50)
    with btree_store.DB(db_path) as db:
        with db.begin(write=True) as txn:
            txn.put(b"second", b"commit")
        assert db.stat()["txid"] >= 2
    with open(db_path, "r+b") as f:
        f.truncate(length)
    with pytest.raises(CorruptionError) as ei:
        btree_store.DB(db_path)
    assert str(ei.value)


def test_empty_file(db_path):
    # An empty file is what a crash during the very first creation can leave behind: opening it
    # for writing initialises it as a new database (like SQLite and LMDB do).
    open(db_path, "wb").close()
    with pytest.raises(CorruptionError):
        btree_store.DB(db_path, readonly=True)
    with btree_store.DB(db_path) as db:
        db.check()
        with db.begin(write=True) as txn:
            txn.put(b"a", b"1")
    with btree_store.DB(db_path) as db:
        with db.begin() as txn:
            assert txn.get(b"a") == b"1"
        db.check()


def test_directory_path_is_an_error(tmp_path):
    with pytest.raises((btree_store.Error, OSError)):
        btree_store.DB(str(tmp_path))


# ---------------------------------------------------------------- independent format reader
@pytest.mark.parametrize("page_size", [1024, 4096])
def test_format_read_back_independently(db_path, page_size):
    model = _make_db(db_path, n=600, page_size=page_size, buckets=("b1", "zeta"))
    lay = layout_of(db_path)
    assert lay.page_size == page_size
    assert lay.problems == []
    assert lay.meta["version"] == 2
    for b, m in model.items():
        assert lay.contents[b] == m, b
    assert sorted(lay.catalog) == ["b1", "zeta"]
    assert os.path.getsize(db_path) >= lay.page_count * page_size
    with btree_store.DB(db_path) as db:
        st = db.stat()
        assert st["page_count"] == lay.page_count
        assert st["txid"] == lay.meta["txid"]
        assert st["free_pages"] == len(lay.free)
        assert st["entries"] == sum(len(m) for m in model.values())  # every bucket
        assert st["bucket_entries"] == {b: len(m) for b, m in model.items()}
        assert st["depth"] == lay.meta["default"]["depth"]


def test_meta_pages_alternate(db_path):
    _make_db(db_path, n=10)
    with btree_store.DB(db_path) as db:
        for i in range(4):
            with db.begin(write=True) as txn:
                txn.put(b"x", b"%d" % i)
            t = db.stat()["txid"]
            lay = layout_of(db_path)
            assert lay.meta["txid"] == t
            assert lay.metas[t % 2] is not None and lay.metas[t % 2]["txid"] == t
            other = lay.metas[1 - t % 2]
            assert other is not None and other["txid"] == t - 1


# ---------------------------------------------------------------- freelist
def test_put_delete_cycles_do_not_grow(db, db_path):
    sizes = []
    for cycle in range(40):
        with db.begin(write=True) as txn:
            for i in range(400):
                txn.put(b"%05d" % i, b"v" * 120)
            txn.put(b"ov", b"O" * 20000)
        with db.begin(write=True) as txn:
            for i in range(400):
                txn.delete(b"%05d" % i)
            txn.delete(b"ov")
        sizes.append(db.stat()["page_count"])
    assert sizes[-1] <= sizes[4], "file keeps growing: %s" % sizes
    db.check()
    db.close()
    lay = layout_of(db_path)
    assert lay.problems == []


def test_freed_pages_survive_close(tmp_path):
    """Pages freed by the last commit before a close are on the freelist after reopening and
    get reused (the Rust btree-store crate leaks them)."""
    path = str(tmp_path / "f.bs")
    counts = []
    for cycle in range(30):
        with btree_store.DB(path) as db:
            with db.begin(write=True) as txn:
                for i in range(300):
                    txn.put(b"%05d" % i, b"%d" % cycle * 40)
            # this last commit frees the pages of the previous version of every leaf
        lay = layout_of(path)
        assert lay.problems == [], lay.problems
        counts.append(lay.page_count)
    # lost pages would make the file grow by a full copy of the data every cycle; reuse keeps
    # the high-water mark flat once the working set is reached
    assert max(counts[15:]) <= max(counts[:15]), "pages freed before close are lost: %s" % counts
    with btree_store.DB(path) as db:
        db.check()
        st = db.stat()
        assert st["free_pages"] > 0


def test_free_pages_counted_after_reopen(db, reopen, db_path):
    with db.begin(write=True) as txn:
        for i in range(2000):
            txn.put(b"%05d" % i, b"x" * 100)
    with db.begin(write=True) as txn:
        for i in range(2000):
            txn.delete(b"%05d" % i)
    st = db.stat()
    freed = st["free_pages"]
    assert freed >= 40
    db = reopen(db)
    st2 = db.stat()
    assert st2["free_pages"] == freed
    assert st2["page_count"] == st["page_count"]
    with db.begin(write=True) as txn:
        for i in range(2000):
            txn.put(b"%05d" % i, b"x" * 100)
    # the freed pages were reused: the file did not grow by another full load
    assert db.stat()["page_count"] <= st["page_count"] + 4


def test_layout_after_many_operations(db, db_path):
    rnd = random.Random(9)
    for _ in range(15):
        with db.begin(write=True) as txn:
            txn.create_bucket("b%d" % rnd.randint(0, 3), exist_ok=True)
            for _ in range(200):
                b = rnd.choice([None] + txn.buckets())
                k = b"%d" % rnd.randint(0, 500)
                if rnd.random() < 0.6:
                    txn.put(k, rnd.randbytes(rnd.choice([10, 100, 3000, 9000])), bucket=b)
                else:
                    txn.delete(k, bucket=b)
            if rnd.random() < 0.3 and txn.buckets():
                txn.drop_bucket(rnd.choice(txn.buckets()))
    from _util import dump
    expect = dump(db)
    db.close()
    lay = layout_of(db_path)
    assert lay.problems == []
    assert {b: m for b, m in lay.contents.items()} == expect


@pytest.mark.parametrize("kind", ["write", "sync"])
def test_failed_create_on_a_full_disk_leaves_no_file(tmp_path, kind):
    """A creation whose first writes or syncs fail (ENOSPC, EIO) leaves no file behind."""
    import errno
    from btree_store._testing import FaultIO
    for err in (errno.ENOSPC, errno.EIO):
        for n in (1, 2, 3):
            path = tmp_path / ("%s%d-%d.bs" % (kind, n, err))
            fio = FaultIO()
            fio.fail_nth(kind, n, err)
            try:
                btree_store.DB(str(path), _io=fio).close()
            except btree_store.Error as e:
                assert isinstance(e, OSError) and e.errno == err
                assert os.listdir(tmp_path) == [], (kind, n, err)
            else:
                assert path.exists()
                os.unlink(path)


def test_failed_create_out_of_descriptors_leaves_no_file(tmp_path):
    """EMFILE at each descriptor a creation opens (the file, its side file PATH-lock, the
    directory it syncs): the open fails with an Error that is an OSError (EMFILE) and leaves
    neither the file nor its side file behind; with enough descriptors it works. In a child:
    the limit is the whole process's."""
    from _util import run_child
    code = r'''
import errno, os, resource, sys
import btree_store
d = sys.argv[1]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
failed = opened = 0
for spare in range(8):
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, hard), hard))
    fds = []
    try:
        while True:
            fds.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    for _ in range(spare):
        os.close(fds.pop())
    path = os.path.join(d, "e%d.bs" % spare)
    try:
        btree_store.DB(path).close()
        ok, err = True, None
    except btree_store.Error as e:
        ok, err = False, e
    for f in fds:
        os.close(f)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if ok:
        opened += 1
        assert os.path.exists(path)
        os.unlink(path)
    else:
        failed += 1
        assert isinstance(err, OSError) and err.errno == errno.EMFILE, repr(err)
        assert os.listdir(d) == [], (spare, repr(err), os.listdir(d))
print(failed, opened)
'''
    r = run_child(code, str(tmp_path), check=True)
    failed, opened = map(int, r.stdout.split())
    assert failed >= 3 and opened >= 1  # the file, the side file and the directory failed
