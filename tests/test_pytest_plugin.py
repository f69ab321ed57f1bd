"""test_pytest_plugin.py - the pytest plugin btree_store.pytest_plugin and check_commits.

- The fixtures in this suite (the plugin is loaded by tests/conftest.py or its entry point).
- In a child pytest on a scratch test file: btree_db / btree_memory_db / btree_db_factory
  pass for a clean database, and the test fails at teardown when check() finds damage;
  --btree-strict makes a commit over a damaged file raise CorruptionError at commit() (a
  release-build switch: DB(check_commits=None) takes the process default it sets), and
  without it the same commit succeeds.
- pyproject.toml declares the pytest11 entry point.

Layer: tests only; uses the public Python API of btree_store, pytest in a subprocess.
"""
import os
import subprocess
import sys
import textwrap

import pytest

import btree_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(btree_store.__file__)))


def damaged_file(path):
    """A database file whose bucket "b" has a damaged page that a commit to the default
    bucket does not read (and that the newest commit does not list): only a full check
    notices it."""
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            txn.create_bucket("b")
            for i in range(2000):
                txn.put(b"k%05d" % i, b"v" * 20, bucket="b")
        with db.begin(write=True) as txn:
            txn.put(b"default", b"1")
        st = db.stat()
        mid, ps = st["page_count"] // 2, st["page_size"]
    with open(path, "r+b") as f:
        f.seek(mid * ps + 300)
        b = f.read(1)
        f.seek(mid * ps + 300)
        f.write(bytes([b[0] ^ 0xFF]))


def test_check_commits_catches_a_broken_state(tmp_path):
    path = tmp_path / "d.db"
    damaged_file(path)
    with btree_store.DB(path, check_commits=False) as db:
        with db.begin(write=True) as txn:
            txn.put(b"a", b"1")  # the commit itself does not read the damaged page
        with pytest.raises(btree_store.CorruptionError):
            db.check()
    with btree_store.DB(path, check_commits=True) as db:
        txn = db.begin(write=True)
        txn.put(b"a", b"2")
        with pytest.raises(btree_store.CorruptionError, match="after commit"):
            txn.commit()
        with db.begin() as t:  # the commit itself stands
            assert t.get(b"a") == b"2"


def test_fixtures_in_this_suite(btree_db, btree_memory_db, btree_db_factory, tmp_path):
    assert btree_memory_db.path == ":memory:"
    assert str(btree_db.path).startswith(str(tmp_path))
    for db in (btree_db, btree_memory_db):
        with db.begin(write=True) as txn:
            txn.put(b"k", b"v")
    extra = btree_db_factory(page_size=1024)
    assert extra.page_size == 1024
    mem = btree_db_factory(":memory:")
    mem.close()  # closed by the test: teardown leaves it alone
    assert btree_db is not extra


def test_faulty_db_fixture(btree_faulty_db):
    f = btree_faulty_db
    with f.db.begin(write=True) as txn:
        txn.put(b"kept", b"1")
    f.fail_after(0, kind="write", error="ENOSPC")  # the disk is full
    with pytest.raises(btree_store.DiskFullError):
        with f.db.begin(write=True) as txn:
            txn.put(b"big", b"x" * 20000)
    f.heal()
    with f.db.begin(write=True) as txn:  # the handle carries on once there is room
        txn.put(b"after", b"2")
    f.crash()
    assert f.db.closed
    db = f.reopen()
    assert db is f.db
    with db.begin() as txn:
        assert dict(txn.items()) == {b"kept": b"1", b"after": b"2"}
    f.power_loss(mode="tear", seed=3)
    with f.reopen().begin() as txn:  # sync=True: every acknowledged commit was durable
        assert dict(txn.items()) == {b"kept": b"1", b"after": b"2"}


def run_child(tmp_path, source, *args):
    """Run pytest on `source` in a child process with only the btree_store plugin."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_child.py").write_text(textwrap.dedent(source))
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    # -p no:btree_store keeps an installed entry point from loading it a second time
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:btree_store",
           "-p", "btree_store.pytest_plugin", "test_child.py", *args]
    return subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=120)


CHILD = """
    import btree_store

    def test_clean(btree_db, btree_memory_db):
        for db in (btree_db, btree_memory_db):
            with db.begin(write=True) as txn:
                txn.put(b"k", b"v")

    def test_damaged_at_teardown(btree_db_factory, tmp_path):
        import test_helper
        path = tmp_path / "x.db"
        test_helper.damaged_file(path)
        db = btree_db_factory(path)
        with db.begin() as txn:
            assert txn.get(b"default") == b"1"

    def test_strict_commit(tmp_path):
        import test_helper
        path = tmp_path / "y.db"
        test_helper.damaged_file(path)
        with btree_store.DB(path) as db:
            txn = db.begin(write=True)
            txn.put(b"a", b"1")
            try:
                txn.commit()
            except btree_store.CorruptionError as e:
                print("STRICT-RAISED", e)
                raise
"""


def test_plugin_in_a_child_pytest(tmp_path):
    helper = open(__file__).read()
    start = helper.index("def damaged_file")
    end = helper.index("def test_check_commits")
    (tmp_path / "test_helper.py").write_text("import btree_store\n\n\n" + helper[start:end])
    r = run_child(tmp_path, CHILD, "-rA")
    out = r.stdout + r.stderr
    assert "PASSED test_child.py::test_clean" in out, out
    assert "ERROR at teardown of test_damaged_at_teardown" in out, out
    assert "btree_store teardown: check() of" in out, out
    assert "1 error" in out, out
    assert "PASSED test_child.py::test_strict_commit" in out, out
    r = run_child(tmp_path, CHILD, "-v", "-rA", "--btree-strict", "-k", "strict or clean")
    out = r.stdout + r.stderr
    assert "--btree-strict (every commit is followed by a full check)" in out, out
    assert "PASSED test_child.py::test_clean" in out, out
    assert "FAILED test_child.py::test_strict_commit" in out, out
    assert "STRICT-RAISED" in out, out
    r = run_child(tmp_path, "def test_x():\n    pass\n", "--help")
    assert "--btree-strict" in r.stdout


FAULTY_CHILD = """
    import btree_store

    def test_unsynced_lost(btree_faulty_db):
        db = btree_faulty_db.reopen(sync=False)
        with db.begin(write=True) as txn:
            txn.put(b"k", b"v")
        btree_faulty_db.power_loss(mode="drop", seed=1)
        with btree_faulty_db.reopen().begin() as txn:
            assert txn.get(b"k") is None       # never synced: lost with the power

    def test_damaged_at_teardown(btree_faulty_db):
        db = btree_faulty_db.db
        with db.begin(write=True) as txn:
            for i in range(3000):
                txn.put(b"k%05d" % i, b"v" * 30)
        with db.begin(write=True) as txn:   # a later commit that does not list that page
            txn.put(b"last", b"1")
        mid = db.stat()["page_count"] // 2
        db.close()
        with open(btree_faulty_db.path, "r+b") as f:   # damage a page behind its back
            f.seek(mid * 4096 + 300)
            f.write(b"\\xff" * 64)
"""


def test_faulty_db_fixture_in_a_child_pytest(tmp_path):
    r = run_child(tmp_path, FAULTY_CHILD, "-rA")
    out = r.stdout + r.stderr
    assert "PASSED test_child.py::test_unsynced_lost" in out, out
    assert "ERROR at teardown of test_damaged_at_teardown" in out, out
    assert "btree_store teardown: reopen + check() of" in out, out
    assert "2 passed, 1 error" in out, out


def test_entry_point_declared():
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert "[project.entry-points.pytest11]" in text
    section = text.split("[project.entry-points.pytest11]", 1)[1].split("\n[", 1)[0]
    assert 'btree_store = "btree_store.pytest_plugin"' in section
    import btree_store.pytest_plugin as plugin
    for name in ("btree_db", "btree_memory_db", "btree_db_factory", "btree_faulty_db",
                 "pytest_addoption"):
        assert hasattr(plugin, name)
