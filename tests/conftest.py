"""conftest.py - shared fixtures for the btree_store test suite.

- `db`: a fresh database in tmp_path; teardown runs db.check() (the test fails if it raises)
  and closes it (bbolt's MustCheck pattern).
- `open_db(path=None, **kw)`: open more databases; every one still open at teardown is
  checked and closed the same way. `reopen(db, **kw)` closes a DB and opens its file again.
- Hypothesis profiles: "ci" (default, modest) and "long" (BTREE_STORE_LONG=1).
- `page_access`: parametrizes a test over both ways of reading pages (copies, mapping).
- An autouse guard dumps every thread's stack and aborts the run if one test hangs.
- The package's pytest plugin (btree_store.pytest_plugin: btree_db, btree_memory_db,
  btree_db_factory, btree_faulty_db, --btree-strict) is loaded by its pytest11 entry point
  when the package is installed; run from the source tree (PYTHONPATH=python) it is loaded
  from here instead.

Layer: tests only; uses the public Python API of btree_store.
"""
import faulthandler
import gc
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import btree_store  # noqa: E402

# Installed, pytest has already imported the plugin through the entry point (registering it
# twice would be an error); from the source tree nothing has, and this loads it.
if "btree_store.pytest_plugin" not in sys.modules:
    pytest_plugins = ["btree_store.pytest_plugin"]

LONG = os.environ.get("BTREE_STORE_LONG") == "1"

_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.register_profile("ci", max_examples=50, stateful_step_count=40, **_common)
settings.register_profile("long", max_examples=400, stateful_step_count=120, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "long" if LONG else "ci"))

# A single test that runs longer than this is taken as a hang: dump all stacks and exit.
HANG_SECONDS = float(os.environ.get("BTREE_STORE_HANG_SECONDS", "900" if LONG else "300"))


def is_closed(db):
    """True when `db` has been closed (every public method raises ClosedError)."""
    try:
        db.stat()
    except btree_store.ClosedError:
        return True
    return False


class DBFactory:
    """Opens databases for one test and checks + closes every one of them at teardown."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.opened = []  # (db, path)
        self.counter = 0

    def new_path(self, name=None):
        self.counter += 1
        return str(self.tmp_path / (name or "db%d.bs" % self.counter))

    def path_of(self, db):
        for d, p in self.opened:
            if d is db:
                return p
        raise KeyError("database not opened by this factory")

    def open(self, path=None, **kw):
        path = path or self.new_path()
        db = btree_store.DB(path, **kw)
        self.opened.append((db, path))
        return db

    def reopen(self, db, **kw):
        path = self.path_of(db)
        db.close()
        return self.open(path, **kw)

    def teardown(self):
        problems = []
        for db, path in self.opened:
            if is_closed(db):
                continue
            try:
                db.check()
            except Exception as e:  # noqa: BLE001 - report any failure of the checker
                problems.append("check() of %s failed: %r" % (path, e))
            try:
                db.close()
            except Exception as e:  # noqa: BLE001
                problems.append("close() of %s failed: %r" % (path, e))
        self.opened.clear()
        gc.collect()
        if problems:
            pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def factory(tmp_path):
    f = DBFactory(tmp_path)
    yield f
    f.teardown()


@pytest.fixture
def open_db(factory):
    return factory.open


@pytest.fixture
def reopen(factory):
    return factory.reopen


@pytest.fixture
def db(request, factory):
    """A fresh database file. Parametrized indirectly with the name of one of the pytest
    plugin's fixtures ("btree_db", "btree_memory_db"), it is that fixture's database: a test
    marked _util.ON_FILE_AND_MEMORY runs once on a file and once in memory."""
    name = getattr(request, "param", None)
    if name:
        return request.getfixturevalue(name)
    return factory.open(factory.new_path("test.bs"))



@pytest.fixture
def db_path(factory):
    """A path for a database the test opens itself (not yet created)."""
    return factory.new_path("test.bs")


@pytest.fixture(params=["copies", "mapped"])
def page_access(request, monkeypatch):
    """Both ways of reading committed pages: copies in the page cache, and in place from a
    read-only shared mapping of the file (the default; BTREE_STORE_MAP=0 for copies,
    csrc/map.h). Child processes
    inherit the choice. Modules opt in with pytestmark = pytest.mark.usefixtures(...)."""
    monkeypatch.setenv("BTREE_STORE_MAP", "1" if request.param == "mapped" else "0")
    return request.param


@pytest.fixture(autouse=True)
def _hang_guard():
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def pytest_report_header(config):
    impl = "?"
    try:
        from btree_store import _testing
        impl = _testing.crc32c_impl()
    except Exception:  # noqa: BLE001
        pass
    return "btree_store from %s; crc32c=%s; long=%s" % (
        os.path.dirname(btree_store.__file__), impl, LONG)
