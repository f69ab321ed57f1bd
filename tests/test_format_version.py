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


@pytest.mark.parametrize("backup", [False, True])
def test_upgrade_command_converts_everything(tmp_path, backup):
    import subprocess
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "data"))
    import make_v1_fixture
    path = str(tmp_path / "old.btree")
    shutil.copy(FIXTURE, path)
    args = [sys.executable, "-m", "btree_store", "upgrade", path] + (["--backup"] if backup else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert os.path.exists(path + ".v1.bak") == backup
    assert not os.path.exists(path + ".upgrade-tmp")
    with btree_store.DB(path) as db:
        db.check()
        model = make_v1_fixture.model()
        assert sorted(db.buckets()) == sorted(b for b in model if b is not None)
        with db.begin() as t:
            for b, want in model.items():
                assert {bytes(k): bytes(v) for k, v in t.iter(bucket=b)} == want
    # a second upgrade refuses: the file is current now
    p = subprocess.run(args[:5], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "not 1" in p.stdout + p.stderr
