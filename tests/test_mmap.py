"""test_mmap.py - committed pages read in place from a read-only shared mapping of the file
(the default; BTREE_STORE_MAP=0 reads into copies; csrc/map.h): the mapping is used (no page
frames cached for reads), a page reused by another process is verified again, and a file
truncated under a live reader (in this process or by another one) raises DiskError instead
of killing the interpreter with SIGBUS.

The truncation scenarios run in a child interpreter, so that a SIGBUS that was not contained
fails the test instead of killing pytest.

Layer: tests only; the public Python API, subprocesses.
"""
import subprocess
import sys
import textwrap

import pytest

import btree_store
from _util import child_env


pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX mappings")


def _fill(path, n=3000, page_size=4096):
    db = btree_store.DB(path, page_size=page_size)
    with db.begin(write=True) as t:
        for i in range(n):
            t.put(b"k%06d" % i, b"v%06d" % i * 4)
    db.close()


def _child(script, env_extra=None):
    env = child_env()  # the btree_store build this test imported (installed or in place)
    env["BTREE_STORE_MAP"] = "1"
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_mapped_reads_cache_no_frames(tmp_path, monkeypatch):
    """Reads through the mapping keep no page copies: the page cache stays empty, while the
    same reads through copies fill it."""
    path = str(tmp_path / "m.db")
    _fill(path)
    pages = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("BTREE_STORE_MAP", mode)
        db = btree_store.DB(path)
        with db.begin() as t:
            for i in range(0, 3000, 7):
                assert t.get(b"k%06d" % i) == b"v%06d" % i * 4
        pages[mode] = db.stat()["cache_pages"]
        db.close()
    assert pages["0"] > 10
    assert pages["1"] == 0


def test_mapping_is_the_default(tmp_path, monkeypatch):
    """Without BTREE_STORE_MAP a file's pages are read in place (no frames); "0" turns it off."""
    path = str(tmp_path / "d.db")
    _fill(path)
    pages = {}
    for mode in (None, "0"):
        if mode is None:
            monkeypatch.delenv("BTREE_STORE_MAP", raising=False)
        else:
            monkeypatch.setenv("BTREE_STORE_MAP", mode)
        with btree_store.DB(path) as db:
            with db.begin() as t:
                for i in range(0, 3000, 7):
                    assert t.get(b"k%06d" % i) == b"v%06d" % i * 4
            pages[mode] = db.stat()["cache_pages"]
    assert pages[None] == 0 and pages["0"] > 10


def test_mapped_page_reused_by_another_process(tmp_path, monkeypatch):
    """A page verified through the mapping, then freed and rewritten by a commit of another
    process (the mapping shows the new bytes at once), is verified again at the txid the new
    parent expects: the reader sees the new data, never the old summary."""
    monkeypatch.setenv("BTREE_STORE_MAP", "1")
    path = str(tmp_path / "r.db")
    _fill(path, n=2000)
    db = btree_store.DB(path)
    with db.begin() as t:
        assert t.get(b"k000010") == b"v000010" * 4
    for r in range(3):
        res = _child("""
            import btree_store
            db = btree_store.DB(%r)
            with db.begin(write=True) as t:
                for i in range(2000):
                    t.put(b"k%%06d" %% i, b"r%d-%%06d" %% i)
            db.close()
            print("ok")
        """ % (path, r))
        assert res.returncode == 0 and "ok" in res.stdout, res.stderr
        with db.begin() as t:
            for i in range(0, 2000, 13):
                assert t.get(b"k%06d" % i) == b"r%d-%06d" % (r, i)
    db.check()
    db.close()


_TRUNCATE_IN_PROCESS = """
    import os, sys, btree_store
    path = %r
    db = btree_store.DB(path)
    t = db.begin()
    for i in range(0, 3000, 5):
        assert t.get(b"k%%06d" %% i) == b"v%%06d" %% i * 4
    %s
    try:
        for i in range(3000):
            t.get(b"k%%06d" %% i)
        print("no error")
    except btree_store.DiskError as e:
        print("DiskError", e)
    try:
        t.get(b"k000001")
        print("no error after")
    except btree_store.Error as e:
        print("again", type(e).__name__)
    t.abort()
    db.close()
    print("alive")
"""


@pytest.mark.parametrize("who", ["this process", "another process"])
def test_truncated_under_a_live_reader(tmp_path, who):
    path = str(tmp_path / "t.db")
    _fill(path)
    if who == "this process":
        cut = "os.truncate(path, 2 * 4096)"
    else:
        cut = ("import subprocess; subprocess.run([sys.executable, '-c', "
               "'import os, sys; os.truncate(sys.argv[1], 2 * 4096)', path], check=True)")
    res = _child(_TRUNCATE_IN_PROCESS % (path, cut))
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    out = res.stdout
    assert "DiskError" in out and "mapping" in out, out
    assert "again DiskError" in out, out
    assert "alive" in out, out


def test_fault_outside_the_mapping_still_kills(tmp_path):
    """The SIGBUS handler only contains faults inside the windows: any other SIGBUS keeps its
    default action (the process dies of SIGBUS)."""
    path = str(tmp_path / "o.db")
    _fill(path, n=10)
    other = str(tmp_path / "other.bin")
    with open(other, "wb") as f:
        f.write(b"x" * 8192)
    res = _child("""
        import mmap, os, btree_store
        db = btree_store.DB(%r)
        with db.begin() as t:
            t.get(b"k000001")
        f = open(%r, "r+b")
        m = mmap.mmap(f.fileno(), 8192)
        os.truncate(%r, 0)
        import faulthandler; faulthandler.disable()
        m[4096]
        print("survived")
    """ % (path, other, other))
    # SIGBUS (-7); under AddressSanitizer its own report and abort
    assert res.returncode != 0, (res.returncode, res.stdout, res.stderr)
    assert "survived" not in res.stdout


_TRUNCATE_BEFORE_THE_COPY = """
    import os, sys, btree_store
    path = %r
    P = 65536
    value = bytes(range(256)) * 117  # inline: the cell ends the leaf page, past its key
    db = btree_store.DB(path, page_size=P)
    with db.begin(write=True) as t:
        t.put(b"big", value)
    t = db.begin()
    assert t.get(b"big") == value  # the leaf is verified and recorded: used as it is from now
    # the leaf's last OS page goes: the lookup reads its header, slots and key (all before
    # the cut) and finds it; only copying the value touches the cut page
    os.truncate(path, 3 * P - 4096)
    try:
        got = %s
        print("zeros" if got != value else "same")
    except btree_store.DiskError as e:
        print("DiskError", e)
    t.abort()
    db.close()
    print("alive")
"""


@pytest.mark.parametrize("how", ["get", "get_many", "iter", "values", "write_get"])
def test_truncated_between_the_lookup_and_the_copy(tmp_path, how):
    """A get whose pages were all read before the file was truncated, and whose value is
    copied from a page the truncation removed: the copy faults, the SIGBUS handler maps zeros
    there and the read went on, so the call returned the value with zeros in it (once). Now
    every call that copies out of the mapping checks the damage flag after the copy
    (bs_txn_copied): DiskError instead."""
    path = str(tmp_path / "c.db")
    expr = {"get": 't.get(b"big")',
            "get_many": 't.get_many([b"big"])[0]',
            "iter": 'bytes(next(iter(t.iter()))[1])',  # one step: the next one would see it
            "values": 'next(iter(t.values()))',
            "write_get": 't.get(b"big")'}[how]
    script = _TRUNCATE_BEFORE_THE_COPY % (path, expr)
    if how == "write_get":  # a write transaction reads committed pages in place too
        script = script.replace("t = db.begin()", "t = db.begin(write=True)")
    res = _child(script)
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    assert "DiskError" in res.stdout and "alive" in res.stdout, res.stdout
