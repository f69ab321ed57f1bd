"""test_api_errors.py - errors and small API points: the standard OSError subclasses with
.filename for a failing open, messages that say each thing once, BucketExistsError,
count()'s keyword-only bucket, the lock-timeout message with the time actually waited, and
db.stat() counting the entries of every bucket.

Layer: tests only; public Python API of btree_store.
"""
import os
import re
import threading

import pytest

import btree_store
from btree_store import BucketExistsError, Error, LockedError


def test_missing_file(tmp_path):
    p = str(tmp_path / "missing.bs")
    for kw in ({"create": False}, {"readonly": True}):
        with pytest.raises(FileNotFoundError) as ei:
            btree_store.DB(p, **kw)
        assert ei.value.filename == p and ei.value.errno == 2
    p2 = str(tmp_path / "no" / "dir.bs")
    with pytest.raises(FileNotFoundError) as ei:
        btree_store.DB(p2)
    assert ei.value.filename == p2


def test_directory(tmp_path):
    with pytest.raises(IsADirectoryError) as ei:
        btree_store.DB(str(tmp_path))
    assert ei.value.filename == str(tmp_path)


def test_permission_denied(tmp_path):
    p = str(tmp_path / "ro.bs")
    btree_store.DB(p).close()
    os.chmod(p, 0o444)
    try:
        fd = os.open(p, os.O_RDWR)  # root may write anyway: then the open must work
    except PermissionError:
        fd = None
    if fd is not None:
        os.close(fd)
        btree_store.DB(p).close()
    else:
        with pytest.raises(PermissionError) as ei:
            btree_store.DB(p)
        assert ei.value.filename == p and "readonly=True" in str(ei.value)
    with btree_store.DB(p, readonly=True) as db:
        assert db.readonly


def test_not_a_database_says_it_once(tmp_path):
    p = tmp_path / "junk.bs"
    p.write_bytes(b"x" * 8192)
    with pytest.raises(btree_store.CorruptionError) as ei:
        btree_store.DB(str(p))
    msg = str(ei.value)
    assert msg.count("not a btree_store database") == 1, msg
    assert str(p) in msg


def test_bucket_exists_error(db):
    with db.begin(write=True) as txn:
        txn.create_bucket("b")
        txn.create_bucket("b")  # exist_ok=True by default
        with pytest.raises(BucketExistsError, match="'b'"):
            txn.create_bucket("b", exist_ok=False)
        assert issubclass(BucketExistsError, Error)
        assert btree_store.BucketExistsError is BucketExistsError
        assert "BucketExistsError" in btree_store.__all__
        txn.create_bucket("c", exist_ok=False)


def test_count_bucket_is_keyword_only(db):
    with db.begin(write=True) as txn:
        txn.create_bucket("b")
        txn.put(b"k", b"v", bucket="b")
        assert txn.count(bucket="b") == 1 and txn.count() == 0
        with pytest.raises(TypeError):
            txn.count("b")


def test_lock_timeout_reports_time_waited(db):
    w = db.begin(write=True)
    errors = []

    def other():
        try:
            db.begin(write=True, timeout=0.35)
        except LockedError as e:
            errors.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    w.abort()
    assert len(errors) == 1
    m = re.search(r"after ([0-9.]+) s", errors[0])
    assert m, errors[0]
    assert float(m.group(1)) >= 0.35  # at least the timeout; never one wait slice (0.1 s)


def test_stat_counts_every_bucket(db):
    with db.begin(write=True) as txn:
        txn.put_many([(b"d%d" % i, b"") for i in range(5)])
        for name, n in (("a", 3), ("b", 7), ("é", 1)):
            txn.create_bucket(name)
            txn.put_many([(b"%d" % i, b"v") for i in range(n)], bucket=name)
        txn.create_bucket("empty")
    st = db.stat()
    assert st["entries"] == 5 + 3 + 7 + 1
    assert st["bucket_entries"] == {None: 5, "a": 3, "b": 7, "é": 1, "empty": 0}
    assert st["buckets"] == 4
