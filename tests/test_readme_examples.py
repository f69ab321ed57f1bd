"""test_readme_examples.py - the examples of README.md's "Testing your code" section run.

Every fenced python block of that section is preceded by a marker comment that says how
to run it: ``<!-- example: python -->`` (the block is a script, run in a child Python in a
scratch folder, it must exit 0) or ``<!-- example: pytest ARGS -->`` (the block is a test
file, run by a child pytest with the btree_store plugin and ARGS; every test in it must
pass). A block without a marker, or a section that no longer shows one of the features,
fails the test, so the README cannot drift from the code.

Layer: tests only; runs README code through the public API in child processes.
"""
import os
import re
import subprocess
import sys

import pytest

import btree_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(btree_store.__file__)))
SECTION = "## Testing your code"

# what the section must show working (a string that appears in some runnable block)
FEATURES = [
    'DB(":memory:")',          # a memory database per hypothesis example
    "DB.memory(from_path=",    # a file loaded into memory
    ".copy(",                  # a memory database written out
    "btree_db",                # the fixtures
    "btree_memory_db",
    "btree_db_factory",
    "LayerMachine",            # the state-machine base class
    "FaultyMachine",           # the simulated machine: full disk, failing fsync, power cut
    'error="ENOSPC"',
    "power_loss(",
    ".crash()",
    "btree_faulty_db",
]
STRICT_ARG = "--btree-strict"


def section_text():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert SECTION + "\n" in text, "README.md has no %r section" % SECTION
    body = text.split(SECTION + "\n", 1)[1]
    return re.split(r"^## ", body, maxsplit=1, flags=re.M)[0]


def examples():
    """[(kind, args, code)] of the section, in order."""
    body = section_text()
    out = []
    for m in re.finditer(r"(?:<!-- example: ([^>]*?) -->\n)?```python\n(.*?)^```", body,
                         flags=re.S | re.M):
        marker, code = m.group(1), m.group(2)
        assert marker, "a python block without an example marker:\n" + code[:200]
        kind, *args = marker.split()
        assert kind in ("python", "pytest"), marker
        out.append((kind, args, code))
    return out


def _ids():
    try:
        return ["%d-%s" % (i, k) for i, (k, _a, _c) in enumerate(examples())]
    except AssertionError:
        return ["unparsable"]


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("BTREE_STORE_LONG", None)
    return env


def test_section_shows_every_feature():
    exs = examples()
    code = "\n".join(c for _k, _a, c in exs)
    missing = [f for f in FEATURES if f not in code]
    assert not missing, "README examples do not show %s" % missing
    assert any(STRICT_ARG in a for _k, a, _c in exs), "no example runs with --btree-strict"
    assert {k for k, _a, _c in exs} == {"python", "pytest"}


@pytest.mark.parametrize("index", range(len(_ids())), ids=_ids())
def test_readme_example_runs(index, tmp_path):
    kind, args, code = examples()[index]
    if kind == "python":
        (tmp_path / "example.py").write_text(code)
        r = subprocess.run([sys.executable, "example.py"], cwd=str(tmp_path), env=child_env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, "README example failed:\n%s\n%s%s" % (code, r.stdout, r.stderr)
        return
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_example.py").write_text(code)
    # -p no:btree_store keeps an installed entry point from loading the plugin twice
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
           "-p", "no:btree_store", "-p", "btree_store.pytest_plugin", "test_example.py", *args]
    r = subprocess.run(cmd, cwd=str(tmp_path), env=child_env(), capture_output=True, text=True,
                       timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, "README example failed:\n%s\n%s" % (code, out)
    assert re.search(r"\d+ passed", out) and " failed" not in out and " error" not in out, out
