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

from setuptools import Extension, setup

debug = os.environ.get("BTREE_STORE_DEBUG") == "1"
args = ["-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden", "-D_GNU_SOURCE"]
if debug:
    args += ["-g", "-UNDEBUG"]
    if not any(f.startswith("-O") for f in os.environ.get("CFLAGS", "").split()):
        args += ["-O0"]
else:
    args += ["-O2"]

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
