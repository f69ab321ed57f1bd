"""test_packaging.py - what the sdist ships: built from the source tree with setuptools'
own build_sdist (as pip does), it holds every tracked file its tests need (conftest.py and
the helper modules, tests/c with its headers, tests/typing, tests/data, the fuzz target),
the C sources, the PEP 561 marker and stub, and LICENSE; its metadata carries the license
as the SPDX expression "MIT" (License-Expression, no deprecated License classifier).

Skipped when the tests do not run from a source checkout (an unpacked sdist has no .git).

Layer: tests; runs setuptools.build_meta in a child process.
"""
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import setuptools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, ".git"))
                                and not os.path.isfile(os.path.join(ROOT, ".git")),
                                reason="not a source checkout")


def _tracked():
    p = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    return p.stdout.split() if p.returncode == 0 else None


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """Build the sdist from a copy of the tracked files (the source tree is left alone)."""
    src = str(tmp_path_factory.mktemp("src"))
    files = _tracked()
    if files is None:
        pytest.skip("git is not available")
    for f in files:
        dst = os.path.join(src, f)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), dst)
    out = str(tmp_path_factory.mktemp("sdist"))
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.build_sdist(sys.argv[1]))")
    p = subprocess.run([sys.executable, "-c", code, out], cwd=src, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    name = p.stdout.strip().splitlines()[-1]
    with tarfile.open(os.path.join(out, name)) as t:
        names = t.getnames()
        top = names[0].split("/")[0]
        pkg_info = t.extractfile(top + "/PKG-INFO").read().decode()
    return top, set(n[len(top) + 1:] for n in names if "/" in n), pkg_info, p.stderr


def test_sdist_holds_what_the_tests_need(sdist):
    top, names, _, _ = sdist
    # every tracked file of the tests and the sources, tests/data included
    wanted = [f for f in _tracked() if f.startswith(("tests/", "csrc/", "python/"))]
    for must in ("tests/conftest.py", "tests/_util.py", "tests/_format.py",
                 "tests/typing/user_script.py", "tests/typing/stubtest_allowlist.txt",
                 "python/btree_store/py.typed", "python/btree_store/_core.pyi", "LICENSE",
                 "pyproject.toml", "setup.py", "MANIFEST.in"):
        assert must in names, must
    missing = sorted(f for f in wanted if f not in names)
    assert not missing, missing
    assert any(n.startswith("tests/c/") and n.endswith(".h") for n in names)


def test_license_is_an_spdx_expression(sdist):
    _, _, pkg_info, stderr = sdist
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = f.read()
    assert re.search(r'^license = "MIT"$', pyproject, re.M), "project.license: an SPDX string"
    assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, re.M)
    assert "License :: OSI Approved" not in pkg_info
    if int(setuptools.__version__.split(".")[0]) >= 77:  # what pip's isolated build uses
        assert "License-Expression: MIT" in pkg_info, pkg_info[:2000]
        assert "License-File: LICENSE" in pkg_info
        assert "deprecat" not in stderr.lower(), stderr
    else:  # setup.py hands an older setuptools the {text = ...} form
        assert "License: MIT" in pkg_info, pkg_info[:2000]
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert "MIT License" in text and "Permission is hereby granted" in text
