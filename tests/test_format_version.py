"""test_format_version.py - files of the previous on-disk format (version 1, before parent
pointers carried their child's txid) are refused with a message that says how to convert them.

Layer: tests only; public API on the committed fixture tests/data/v1_sample.btree (written by
tests/data/make_v1_fixture.py under a format-1 build), copied so the fixture never changes.
"""
import hashlib
import os
import shutil

import pytest

import btree_store
from btree_store import CorruptionError

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "v1_sample.btree")


@pytest.mark.parametrize("readonly", [False, True])
def test_v1_file_refused_with_upgrade_hint(tmp_path, readonly):
    path = str(tmp_path / "old.btree")
    shutil.copy(FIXTURE, path)
    before = hashlib.sha256(open(path, "rb").read()).hexdigest()
    with pytest.raises(CorruptionError) as ei:
        btree_store.DB(path, readonly=readonly)
    msg = str(ei.value)
    assert "version 1" in msg and "python -m btree_store upgrade" in msg and path in msg
    # refusing it changed nothing
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == before
