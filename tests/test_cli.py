"""test_cli.py - README command (1) runs the demo: `python -m btree_store demo`
creates a database in a temporary folder, writes, reads, commits, reopens and prints what it did.

Layer: tests only; runs the package's __main__ in a child interpreter.
"""
import subprocess
import sys

from _util import child_env


def test_demo_runs(tmp_path):
    p = subprocess.run([sys.executable, "-m", "btree_store", "demo"], env=child_env(),
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout.lower()
    assert len(out.splitlines()) >= 3, p.stdout
    for word in ("commit", "reopen"):
        assert word in out, "demo output does not mention %r:\n%s" % (word, p.stdout)
    # it cleans up after itself: nothing left in the working directory
    assert list(tmp_path.iterdir()) == []


def test_unknown_command_fails(tmp_path):
    p = subprocess.run([sys.executable, "-m", "btree_store", "no-such-command"], env=child_env(),
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
