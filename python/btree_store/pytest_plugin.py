"""pytest plugin of btree_store: fixtures for testing code built on btree_store.

Installed with the package and loaded by pytest automatically (entry point ``pytest11``
named ``btree_store``); ``-p no:btree_store`` turns it off. From a source tree that is not
installed, load it with ``-p btree_store.pytest_plugin`` or, in a top-level conftest.py,
``pytest_plugins = ["btree_store.pytest_plugin"]``.

Fixtures
    btree_db          a fresh database file in the test's tmp_path. At teardown, if the
                      test left it open, ``db.check()`` runs (a problem fails the test, as
                      bbolt's MustCheck does) and the database is closed.
    btree_memory_db   the same on a fresh in-memory database (``DB(":memory:")``).
    btree_db_factory  ``btree_db_factory(path=None, **options)`` opens more databases
                      (path None: a new file in tmp_path; ``":memory:"``: in memory); each
                      one still open at teardown is checked and closed the same way.
    btree_faulty_db   a database file in tmp_path on a simulated machine
                      (btree_store.testing.FaultyMachine): ``.db`` the open DB, ``.machine``
                      the machine, ``fail_after()``, ``heal()``, ``crash()``,
                      ``power_loss()`` as on the machine, ``reopen(**options)`` (also sets
                      ``.db``). At teardown the disk is healed, the database reopened on
                      what survived and checked with ``db.check()`` (a problem fails the
                      test), and the machine closed.

Option
    --btree-strict    every database opened in the test process with the default
                      ``check_commits=None`` runs the integrity checker after each commit
                      (``DB(..., check_commits=True)``): a commit that leaves a broken
                      state raises CorruptionError at that commit() instead of at some
                      later read. Slow (a full check per commit); works in release builds.

Layer: the package (testing helpers); uses the public Python API of btree_store and pytest.
"""
import pytest

import btree_store
from btree_store import _core

__all__ = ["btree_db", "btree_memory_db", "btree_db_factory", "btree_faulty_db", "FaultyDB"]


def pytest_addoption(parser):
    group = parser.getgroup("btree_store")
    group.addoption(
        "--btree-strict",
        action="store_true",
        default=False,
        dest="btree_strict",
        help="btree_store: run the integrity checker after every commit of every database "
        "opened with the default check_commits=None (slow; a broken commit raises "
        "CorruptionError at commit()).",
    )


def pytest_configure(config):
    if config.getoption("btree_strict", False):
        config.stash[_STRICT_PREV] = _core._check_commits_default(True)


def pytest_unconfigure(config):
    if _STRICT_PREV in config.stash:
        _core._check_commits_default(config.stash[_STRICT_PREV])
        del config.stash[_STRICT_PREV]


def pytest_report_header(config):
    if config.getoption("btree_strict", False):
        return "btree_store: --btree-strict (every commit is followed by a full check)"
    return None


_STRICT_PREV = pytest.StashKey()


class _Opened:
    """Databases opened for one test: each still open at teardown is checked, then closed."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.dbs = []
        self.counter = 0

    def open(self, path=None, **options):
        if path is None:
            self.counter += 1
            path = self.tmp_path / ("btree%d.db" % self.counter)
        db = btree_store.DB(path, **options)
        self.dbs.append(db)
        return db

    def finish(self):
        problems = []
        for db in self.dbs:
            if db.closed:
                continue
            try:
                db.check()
            except Exception as e:  # noqa: BLE001 - any failure of the checker fails the test
                problems.append("check() of %s failed: %r" % (db.path, e))
            try:
                db.close()
            except Exception as e:  # noqa: BLE001
                problems.append("close() of %s failed: %r" % (db.path, e))
        self.dbs.clear()
        if problems:
            pytest.fail("btree_store teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def btree_db_factory(tmp_path):
    """Open databases for this test: ``btree_db_factory(path=None, **options)`` (path None:
    a new file in tmp_path). Each one still open at teardown is checked and closed."""
    opened = _Opened(tmp_path)
    yield opened.open
    opened.finish()


@pytest.fixture
def btree_db(btree_db_factory):
    """A fresh btree_store.DB file in tmp_path, checked (db.check()) and closed at teardown."""
    return btree_db_factory()


@pytest.fixture
def btree_memory_db(btree_db_factory):
    """A fresh in-memory btree_store.DB, checked and closed (freed) at teardown."""
    return btree_db_factory(":memory:")


class FaultyDB:
    """What the btree_faulty_db fixture gives a test: a database on a FaultyMachine.

    ``db``: the open btree_store.DB (the newest one after reopen()); ``machine``: the
    btree_store.testing.FaultyMachine; ``path``: the database file. ``fail_after(n,
    kind=, error=)``, ``heal()``, ``crash()``, ``power_loss(mode=, seed=)`` are the
    machine's; ``reopen(**options)`` opens a fresh DB on what survived (default: the
    options of the last open), sets ``db`` and returns it."""

    def __init__(self, path, **options):
        from btree_store.testing import FaultyMachine

        self.path = path
        self.machine = FaultyMachine(path)
        self._options = dict(options)
        self.db = self.machine.open(**options)

    def fail_after(self, n, kind="write", error="EIO"):
        self.machine.fail_after(n, kind=kind, error=error)

    def heal(self):
        self.machine.heal()

    def crash(self):
        self.machine.crash()

    def power_loss(self, mode="drop", seed=None):
        self.machine.power_loss(mode=mode, seed=seed)

    def reopen(self, **options):
        if options:
            self._options = dict(options)
        if not self.db.closed:
            self.db.close()
        self.db = self.machine.reopen(**self._options)
        return self.db

    def finish(self):
        """Teardown: heal, reopen on what survived, check, close the machine."""
        if self.machine.closed:  # the test closed it itself: nothing left to check
            return
        problems = []
        try:
            self.machine.heal()
            db = self.reopen()
            db.check()
        except Exception as e:  # noqa: BLE001 - any failure fails the test
            problems.append("reopen + check() of %s failed: %r" % (self.path, e))
        try:
            self.machine.close()
        except Exception as e:  # noqa: BLE001
            problems.append("closing the FaultyMachine of %s failed: %r" % (self.path, e))
        if problems:
            pytest.fail("btree_store teardown: " + "; ".join(problems), pytrace=False)

    def __repr__(self):
        return "<btree_faulty_db %r>" % (self.path,)


@pytest.fixture
def btree_faulty_db(tmp_path):
    """A FaultyDB: a database file in tmp_path on a btree_store.testing.FaultyMachine. At
    teardown the disk is healed, the database reopened and checked, the machine closed."""
    f = FaultyDB(str(tmp_path / "btree_faulty.db"))
    yield f
    f.finish()
