"""setup.py - builds the C extension btree_store._core from csrc/ (engine + CPython binding).

Extra compiler flags come from the environment (CFLAGS), so CI can add -Werror or
sanitizers without editing this file. BTREE_STORE_DEBUG=1 builds with -O0 -g.

Layer: build tooling; compiles csrc/ (engine + binding) and packages python/btree_store.
"""
import glob
import os

from setuptools import Extension, setup

debug = os.environ.get("BTREE_STORE_DEBUG") == "1"
args = ["-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden", "-D_GNU_SOURCE"]
args += ["-O0", "-g"] if debug else ["-O2"]

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
