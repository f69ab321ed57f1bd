"""test_c_units.py - compiles and runs every C unit test tests/c/test_*.c (see notes/TEAM.md).

Each C test's FIRST line is `// build: <space-separated csrc/*.c or tests/c/*.c files>`; it is
compiled with `cc -std=c11 -O1 -g -Wall -Wextra -Werror -D_GNU_SOURCE -Icsrc` plus those
files and `-lpthread`, and must exit 0; otherwise the test fails with the program's output.
When CFLAGS carries -fsanitize=... (the sanitizer pass of .ci/run), the same sanitizers are
compiled in (the program then needs no LD_PRELOAD, which is removed from its environment).

Layer: tests only; runs the C compiler and the test programs.
"""
import glob
import os
import shlex
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CDIR = os.path.join(ROOT, "tests", "c")
SOURCES = sorted(glob.glob(os.path.join(CDIR, "test_*.c")))
BASE_FLAGS = ["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE",
              "-I" + os.path.join(ROOT, "csrc")]


def _compiler():
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler found (cc/gcc)"
    return cc


def _sanitizer_flags():
    flags = shlex.split(os.environ.get("CFLAGS", ""))
    return [f for f in flags if f.startswith(("-fsanitize", "-fno-sanitize", "-fno-omit-frame-pointer"))]


def _env():
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    return env


def _build_line(src):
    with open(src, encoding="utf-8") as f:
        first = f.readline().strip()
    assert first.startswith("// build:"), \
        "%s: first line must be '// build: <files>', got %r" % (os.path.relpath(src, ROOT), first)
    files = first[len("// build:"):].split()
    for rel in files:
        assert os.path.exists(os.path.join(ROOT, rel)), "%s: build file %s missing" % (src, rel)
    return [os.path.join(ROOT, rel) for rel in files]


def test_c_unit_tests_exist():
    assert SOURCES, "no C unit tests found under tests/c/test_*.c"


@pytest.mark.parametrize("src", SOURCES, ids=[os.path.basename(s) for s in SOURCES])
def test_c_unit(src, tmp_path):
    deps = _build_line(src)
    exe = str(tmp_path / os.path.splitext(os.path.basename(src))[0])
    san = _sanitizer_flags()
    cmd = [_compiler()] + BASE_FLAGS + san + [src] + [d for d in deps if d != src] + \
        ["-o", exe, "-lpthread"] + (["-lm"])
    p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, "compile failed: %s\n%s%s" % (" ".join(cmd), p.stdout, p.stderr)
    env = _env()
    if san:
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
        env["UBSAN_OPTIONS"] = env.get("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    p = subprocess.run([exe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, "%s exited %d\n--- stdout\n%s\n--- stderr\n%s" % (
        os.path.basename(src), p.returncode, p.stdout[-20000:], p.stderr[-20000:])
