"""_util.py - small helpers shared by the test modules (no fixtures here; see conftest.py).

Layer: tests only; uses the public Python API of btree_store.
"""
import hashlib
import os
import subprocess
import sys

import pytest

import btree_store

# Run a test taking conftest's `db` on a file (the pytest plugin's btree_db) and in memory
# (btree_memory_db): conftest's `db` fixture is parametrized indirectly by fixture name.
ON_FILE_AND_MEMORY = pytest.mark.parametrize("db", ["btree_db", "btree_memory_db"],
                                             indirect=True)

LONG = os.environ.get("BTREE_STORE_LONG") == "1"

# Directory that holds the imported btree_store package (for child processes).
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(btree_store.__file__)))


def child_env():
    """Environment for a child Python that must import the same btree_store build
    (sanitizer variables such as LD_PRELOAD/ASAN_OPTIONS pass through unchanged)."""
    env = dict(os.environ)
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = PKG_PARENT + (os.pathsep + pp if pp else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_child(code, *args, timeout=120, check=False):
    """Run `code` in a fresh interpreter; return CompletedProcess (text mode)."""
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=child_env(),
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("child failed rc=%d\nstdout:\n%s\nstderr:\n%s"
                             % (p.returncode, p.stdout, p.stderr))
    return p


def run_cli_on_pty(args, input_path=None, timeout=300):
    """Run `python -m btree_store ARGS` with stderr on a pseudo-terminal (progress lines are
    shown on a terminal only) and stdin from `input_path` or /dev/null; returns
    (exit code, stderr text)."""
    import pty
    master, slave = pty.openpty()
    stdin = open(input_path, "rb") if input_path else subprocess.DEVNULL
    try:
        p = subprocess.Popen([sys.executable, "-m", "btree_store", *map(str, args)],
                             stdin=stdin, stdout=subprocess.DEVNULL, stderr=slave,
                             env=child_env())
    finally:
        os.close(slave)
        if input_path:
            stdin.close()
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return p.wait(timeout=timeout), b"".join(chunks).decode("utf-8", "replace")


def fork_start(fn):
    """Run fn() in a forked child; return (pid, read end of a pipe carrying its result: the
    text fn returned, or what it raised, with exit status 0 or 3)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            out = fn() or ""
        except BaseException as e:  # noqa: BLE001
            out, code = "child raised %r" % (e,), 3
        try:
            os.write(w, out.encode())
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def fork_join(pid, r):
    """Wait for a fork_start child: (wait status, the text it returned)."""
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return status, b"".join(chunks).decode()


def fork_run(fn):
    """fn() in a forked child, waited for: (wait status, the text it returned)."""
    return fork_join(*fork_start(fn))


def bucket_items(txn, bucket=None):
    """All (key, value) pairs of a bucket as bytes, via a forward iterator."""
    return [(bytes(k), bytes(v)) for k, v in txn.iter(bucket=bucket)]


def dump(db):
    """Whole content of a DB: {bucket (None = default): {key: value}} from one snapshot."""
    out = {}
    with db.begin() as txn:
        out[None] = dict(bucket_items(txn))
        for name in txn.buckets():
            out[name] = dict(bucket_items(txn, name))
    return out


def digest(db, bucket=None):
    h = hashlib.sha256()
    with db.begin() as txn:
        for k, v in txn.iter(bucket=bucket):
            h.update(len(k).to_bytes(4, "little"))
            h.update(k)
            h.update(len(v).to_bytes(4, "little"))
            h.update(v)
    return h.hexdigest()


def load(db, items, bucket=None, batch=None):
    """Put items (iterable of (k, v)) in one or more write transactions."""
    items = list(items)
    batch = batch or max(1, len(items))
    for i in range(0, len(items), batch):
        with db.begin(write=True) as txn:
            if bucket is not None:
                txn.create_bucket(bucket, exist_ok=True)
            for k, v in items[i:i + batch]:
                txn.put(k, v, bucket=bucket)


def file_size(path):
    return os.path.getsize(path)


def page_bytes(path, pgno, page_size):
    with open(path, "rb") as f:
        f.seek(pgno * page_size)
        return f.read(page_size)
