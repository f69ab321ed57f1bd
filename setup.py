"""setup.py - builds the C extension btree_store._core from csrc/ (engine + CPython binding).

Extra compiler flags come from the environment (CFLAGS), so CI can add -Werror or
sanitizers without editing this file. BTREE_STORE_DEBUG=1 builds with asserts on (-UNDEBUG:
Python's own flags carry -DNDEBUG) and -g, at -O0 unless CFLAGS chooses an -O level (the
sanitizer pass keeps its -O1); debug builds also honour BTREE_STORE_CHECK_COMMITS=1 (see
csrc/db.c).

Layer: build tooling; compiles csrc/ (engine + binding) and packages python/btree_store.
"""
import glob
import os
import sys

import setuptools
from setuptools import Extension, setup


def _old_setuptools_compat():
    """pyproject.toml gives the license as an SPDX string (setuptools >= 77, which pip uses:
    the build-system pin). An older setuptools running this file directly (python setup.py
    build_ext --inplace) rejects that form: hand it the older {text = ...} form instead."""
    try:
        major = int(setuptools.__version__.split(".")[0])
        from setuptools.config import pyprojecttoml
    except (ValueError, ImportError):
        return
    if major >= 77 or not hasattr(pyprojecttoml, "load_file"):
        return
    load_file = pyprojecttoml.load_file

    def compat_load_file(path):
        data = load_file(path)
        project = data.get("project", {})
        if isinstance(project.get("license"), str):
            project["license"] = {"text": project["license"]}
            project.pop("license-files", None)
        return data

    pyprojecttoml.load_file = compat_load_file


_old_setuptools_compat()

debug = os.environ.get("BTREE_STORE_DEBUG") == "1"
args = ["-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden", "-D_GNU_SOURCE"]
if debug:
    args += ["-g", "-UNDEBUG"]
    if not any(f.startswith("-O") for f in os.environ.get("CFLAGS", "").split()):
        args += ["-O0"]
else:
    args += ["-O2"]


def _macos_deployment_target():
    """preadv/pwritev exist in macOS's libc since 11.0 (docs/ARCHITECTURE.md, Platforms): an
    interpreter built for an older macOS would compile against an older target, where clang's
    availability warnings on those calls are errors under -Werror. Raise the target to 11.0
    unless the environment already asks for 11 or later."""
    if sys.platform != "darwin":
        return
    want = os.environ.get("MACOSX_DEPLOYMENT_TARGET", "")
    try:
        major = int(want.split(".")[0])
    except ValueError:
        major = 0
    if major < 11:
        os.environ["MACOSX_DEPLOYMENT_TARGET"] = "11.0"


_macos_deployment_target()

sources = sorted(glob.glob(os.path.join("csrc", "*.c")))

setup(
    ext_modules=[
        Extension(
            "btree_store._core",
            sources=sources,
            depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),
            include_dirs=["csrc"],
            extra_compile_args=args,
            libraries=["pthread"],
        )
    ],
)
