"""test_typing.py - the package is typed (PEP 561): py.typed and _core.pyi sit next to the
modules that are imported (so an installed wheel or sdist ships them), `mypy --strict`
accepts tests/typing/user_script.py (every public call, with assert_type pinning the types)
together with the package's own typed modules and the stub, the script really runs,
`mypy.stubtest` finds the stub equal to the built extension (parameters, defaults, kinds,
every public name), and mypy rejects misuse (a str key, a write on a read transaction, a
wrong keyword, a positional bucket, ...), each on the line it is made.

Skipped only when mypy cannot be imported (the `test` extra installs it).

Layer: tests; runs mypy and the user script in child processes.
"""
import os
import re
import subprocess
import sys

import pytest

import btree_store

mypy = pytest.importorskip("mypy")

HERE = os.path.dirname(os.path.abspath(__file__))
TYPING = os.path.join(HERE, "typing")
PKG = os.path.dirname(os.path.abspath(btree_store.__file__))
ROOT = os.path.dirname(PKG)  # the directory btree_store is imported from
TYPED_MODULES = ["__init__.py", "aio.py", "dbm.py", "_testing.py", "testing.py", "_core.pyi"]


def _env():
    env = dict(os.environ)
    # A source checkout (python/) must be put on the path; an installed package is found in
    # site-packages already, and a site-packages directory on PYTHONPATH makes mypy treat
    # every installed module there (mypy_extensions, ...) as a user module that shadows it.
    if os.path.basename(ROOT) not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mypy-cache"))


def _mypy(cache_dir, *files):
    cmd = [sys.executable, "-m", "mypy", "--strict", "--warn-unreachable",
           "--no-error-summary", "--show-error-codes", "--cache-dir", cache_dir, *files]
    return subprocess.run(cmd, cwd=TYPING, env=_env(), capture_output=True, text=True,
                          timeout=600)


def test_stub_and_marker_are_next_to_the_package():
    assert os.path.isfile(os.path.join(PKG, "py.typed"))
    assert os.path.isfile(os.path.join(PKG, "_core.pyi"))


def test_iterator_is_generic_at_run_time():
    """The stub declares Iterator[T]; annotations evaluated at run time (no `from __future__
    import annotations`, typing.get_type_hints) need the subscript to work too."""
    import types
    import typing

    alias = btree_store.Iterator[bytes]
    assert isinstance(alias, types.GenericAlias)
    assert alias.__origin__ is btree_store.Iterator and alias.__args__ == (bytes,)

    def f(it: btree_store.Iterator[typing.Tuple[memoryview, memoryview]]) -> None: ...

    assert typing.get_type_hints(f)["it"].__origin__ is btree_store.Iterator


def test_user_script_passes_mypy_strict(cache_dir):
    if os.path.basename(ROOT) in ("site-packages", "dist-packages"):
        # installed: name the modules (files given by path would make site-packages a
        # source root, whose other modules then shadow mypy's own dependencies)
        mods = ["btree_store" + ("" if m == "__init__.py" else "." + m.rsplit(".", 1)[0])
                for m in TYPED_MODULES]
        r = _mypy(cache_dir, *[a for m in mods for a in ("-m", m)])
        assert r.returncode == 0, r.stdout + r.stderr
        files = ["user_script.py"]
    else:
        files = ["user_script.py"] + [os.path.join(PKG, m) for m in TYPED_MODULES]
    r = _mypy(cache_dir, *files)
    assert r.returncode == 0, r.stdout + r.stderr


def test_user_script_runs(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(TYPING, "user_script.py"), str(tmp_path)],
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "user_script: ok" in r.stdout


def test_stubtest_finds_stub_equal_to_extension():
    allow = os.path.join(TYPING, "stubtest_allowlist.txt")
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "--allowlist", allow,
                        "btree_store._core"], cwd=TYPING, env=_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


MISUSE = '''\
import btree_store
import btree_store.aio as aio
db = btree_store.DB("x.db")
with db.begin(write=True) as w:
    w.put("key", b"v")  # E: arg-type
    w.put(b"k", 5)  # E: arg-type
    w.create_bucket(b"name")  # E: arg-type
    w.count("bucket")  # E: call-arg
    w.stat("bucket")  # E: call-arg
    w.get(b"k", buckt="b")  # E: call-overload
with db.begin() as r:
    r.put(b"k", b"v")  # E: attr-defined
    r.delete(b"k")  # E: attr-defined
    n: str = r.count()  # E: assignment
    v: bytes = r.get(b"k")  # E: assignment
    key: bytes = next(r.iter(values=False))  # E: assignment
    r.iter(reverse=1, prefix="p")  # E: call-overload
db.copy(3)  # E: arg-type
db.begin(write=True, timeout="1")  # E: call-overload
txn: btree_store.WriteTxn = db.begin()  # E: assignment
btree_store.DB("x.db", page_size="4096")  # E: arg-type
async def f() -> None:
    a = await aio.open("y.db")
    t = await a.begin()
    await t.count("bucket")  # E: call-arg
    await t.put(b"k", "v")  # E: arg-type
    async for key in t.keys():
        text: str = key  # E: assignment
    n: int = await t.get_many([b"k"])  # E: assignment
'''


def test_mypy_rejects_misuse(cache_dir, tmp_path):
    """Every line marked `# E: code` gets exactly that error, and no other line gets one."""
    script = tmp_path / "misuse.py"
    script.write_text(MISUSE)
    r = _mypy(cache_dir, str(script))
    assert r.returncode == 1, r.stdout + r.stderr
    want = {}
    for n, line in enumerate(MISUSE.splitlines(), 1):
        m = re.search(r"# E: ([\w-]+)", line)
        if m:
            want[n] = m.group(1)
    got = {}
    for line in r.stdout.splitlines():
        m = re.match(r".*misuse\.py:(\d+): error: .*\[([\w-]+)\]$", line)
        if m:
            got.setdefault(int(m.group(1)), set()).add(m.group(2))
    assert set(got) == set(want), r.stdout
    for n, code in want.items():
        assert code in got[n], (n, r.stdout)
