"""test_check_repair.py - db.check() reports every problem (CorruptionError.problems, the
max_problems limit, `python -m btree_store check`), and db.repair() / `python -m btree_store
repair` rebuilds a damaged freelist from what the newest commit reaches.

Files are damaged by editing pages with tests/_format.py and resealing every checksum, so
that the damage reaches the engine's structural checks rather than its CRC check.

Layer: tests; public API, the CLI in a child process, tests/_format.py to craft the damage.
"""
import os
import struct
import subprocess
import sys

import pytest

import btree_store
from _util import child_env
from _format import FL_ENTRIES, FL_NADD, FL_NDEL, FL_NEXT, FL_NEXT_TXID, layout_of, reseal

P = 4096
HERE = os.path.dirname(os.path.abspath(__file__))


def build(path, buckets=("a", "b"), n=1500):
    """A file with named buckets, a default bucket and free pages (deleted keys); the
    contents as a dict bucket -> {key: value}."""
    want = {None: {}}
    with btree_store.DB(str(path)) as db:
        for name in buckets:
            want[name] = {}
            with db.begin(write=True) as t:
                t.create_bucket(name)
                for i in range(n):
                    k, v = b"%s-%05d" % (name.encode(), i), b"v%d" % i * 8
                    t.put(k, v, bucket=name)
                    want[name][k] = v
        with db.begin(write=True) as t:
            for i in range(300):
                t.put(b"d%04d" % i, b"x" * 30)
                want[None][b"d%04d" % i] = b"x" * 30
        with db.begin(write=True) as t:
            for i in range(0, n, 2):
                k = b"%s-%05d" % (buckets[0].encode(), i)
                t.delete(k, bucket=buckets[0])
                del want[buckets[0]][k]
        db.check()
    return want


def contents(db):
    out = {}
    with db.begin() as t:
        for name in [None] + t.buckets():
            out[name] = {bytes(k): bytes(v) for k, v in t.items(bucket=name)}
    return out


def set_free(path, lay, pages, fl_count=None, next_pgno=None):
    """Make the newest commit's freelist (lay: the file's layout before any edit) a single
    base record listing `pages` (its head page is kept; exact_free lists the rest of the old
    chain as free so that nothing leaks unless asked), with meta fl_count (default
    len(pages))."""
    m = lay.meta
    head = m["fl_head"]
    assert head, "the file has no freelist chain"
    buf = bytearray(open(path, "rb").read())
    o = head * P
    pages = list(pages)
    assert len(pages) <= (P - FL_ENTRIES) // 8
    buf[o + 5] |= 1  # FL_F_BASE
    struct.pack_into("<II", buf, o + FL_NADD, len(pages), 0)
    assert FL_NDEL == FL_NADD + 4
    for i, p in enumerate(pages):
        struct.pack_into("<Q", buf, o + FL_ENTRIES + 8 * i, p)
    struct.pack_into("<QQ", buf, o + FL_NEXT, next_pgno or 0, 0 if not next_pgno else 1)
    assert FL_NEXT_TXID == FL_NEXT + 8
    slot = m["pgno"]
    struct.pack_into("<Q", buf, slot * P + 72, len(pages) if fl_count is None else fl_count)
    reseal(buf, P, pages=[head])
    open(path, "wb").write(bytes(buf))


def exact_free(lay):
    """The free set of a sound layout, as set_free lists it (old chain pages but the head)."""
    return sorted(lay.free + lay.freelist_pages[1:])


def damage_leaf(path, lay, bucket):
    """Break the bounds of one leaf of `bucket` (resealed: only the structure check sees it).
    Returns its page number."""
    pg = min(p for p, k in lay.kinds.items() if k == "leaf" and lay.owner.get(p) == bucket)
    buf = bytearray(open(path, "rb").read())
    struct.pack_into("<H", buf, pg * P + 6, 0xFFF0)  # nkeys far beyond the page
    reseal(buf, P, pages=[pg])
    open(path, "wb").write(bytes(buf))
    return pg


def cli(*args):
    # the same btree_store build as this process (installed or the source tree)
    return subprocess.run([sys.executable, "-m", "btree_store"] + [str(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                          timeout=300)


# ------------------------------------------------------------------ check: every problem
def test_check_reports_every_problem(tmp_path):
    path = tmp_path / "multi.bs"
    build(path)
    lay = layout_of(path)
    pa = damage_leaf(path, lay, "a")
    pb = damage_leaf(path, lay, "b")
    free = exact_free(lay)
    leak = free[-1]
    set_free(path, lay, free[:-1])  # one page leaked as well
    with btree_store.DB(str(path), readonly=True) as db:
        with pytest.raises(btree_store.CorruptionError) as ei:
            db.check()
        probs = ei.value.problems
        assert all(isinstance(p, str) for p in probs)
        text = "\n".join(probs)
        assert "'a'" in text and "'b'" in text, probs
        assert any(("page %d" % pa) in p for p in probs), probs
        assert any(("page %d" % pb) in p for p in probs), probs
        assert any(("%d" % leak) in p and "leaked" in p for p in probs), probs
        msg = str(ei.value)
        assert "%d problems" % len(probs) in msg, msg
        assert probs[0] in msg
        # the limit: the check stops there, the message says "at least"
        with pytest.raises(btree_store.CorruptionError) as ei:
            db.check(max_problems=2)
        assert len(ei.value.problems) == 2
        assert ei.value.problems == probs[:2]
        assert "at least 2 problems" in str(ei.value)
        with pytest.raises(btree_store.CorruptionError) as ei:
            db.check(1)  # positional too
        assert ei.value.problems == probs[:1] and str(ei.value).endswith(probs[0])
        with pytest.raises(btree_store.CorruptionError) as ei:
            db.check(max_problems=2 ** 80)  # "all of them"
        assert ei.value.problems == probs
    # the CLI prints each problem on its own line, exit 1
    p = cli("check", path)
    out = p.stdout.decode()
    assert p.returncode == 1, (out, p.stderr)
    lines = out.splitlines()
    assert lines[0].startswith("%s: CORRUPT" % path)
    for prob in probs:
        assert "  " + prob in lines, (prob, out)
    assert b"Traceback" not in p.stderr


def test_check_clean_file_and_bad_arguments(tmp_path):
    path = tmp_path / "clean.bs"
    build(path, n=200)
    with btree_store.DB(str(path)) as db:
        assert db.check() is None
        assert db.check(max_problems=1) is None
        with pytest.raises(TypeError):
            db.check(max_problems="3")
        with pytest.raises(TypeError):
            db.check(max_problems=True)
        with pytest.raises(ValueError):
            db.check(max_problems=0)
        with pytest.raises(TypeError):
            db.check(3, 4)
    with pytest.raises(btree_store.ClosedError):
        db.check()
    p = cli("check", path)
    assert p.returncode == 0 and b": ok" in p.stdout, p.stdout


def test_check_twice_referenced_and_out_of_range(tmp_path):
    """A free page that a tree uses and a free entry beyond page_count: both reported."""
    path = tmp_path / "dup.bs"
    build(path, n=400)
    lay = layout_of(path)
    used = min(p for p, k in lay.kinds.items() if k == "leaf")
    free = exact_free(lay)
    set_free(path, lay, free + [used])
    with btree_store.DB(str(path), readonly=True) as db:
        with pytest.raises(btree_store.CorruptionError) as ei:
            db.check()
    assert any("page %d is referenced twice" % used in p for p in ei.value.problems), \
        ei.value.problems


# ------------------------------------------------------------------ repair
def _writes_refused(db, want):
    """Commit until the damaged freelist is noticed; what committed before goes into want."""
    with pytest.raises(btree_store.CorruptionError):
        for i in range(200):  # the damaged page is handed out within a few commits
            with db.begin(write=True) as t:
                keys = [b"e-%03d-%02d" % (i, j) for j in range(20)]
                for k in keys:
                    t.put(k, b"n" * 200)
            want[None].update(dict.fromkeys(keys, b"n" * 200))


def _repaired_and_usable(db, want):
    assert contents(db) == want
    db.check()
    with db.begin(write=True) as t:
        for i in range(500):
            t.put(b"after-%04d" % i, b"y" * 100)
    want[None].update({b"after-%04d" % i: b"y" * 100 for i in range(500)})
    db.check()
    assert contents(db) == want


def _reopened_clean(path, want):
    with btree_store.DB(str(path)) as db:
        db.check()
        assert contents(db) == want
    assert layout_of(path).problems == []


def test_repair_free_page_used_by_a_tree(tmp_path, monkeypatch):
    path = tmp_path / "used.bs"
    want = build(path)
    lay = layout_of(path)
    # the leaf that the writes below copy first (the default bucket's last leaf, where the
    # new keys go) listed free: the copy is handed its own page (the pager refuses it)
    used = max(p for p, k in lay.kinds.items() if k == "leaf" and lay.owner.get(p) is None
               and b"d0299" in lay.page(p))
    set_free(path, lay, exact_free(lay) + [used])
    # check_commits off (debug builds also read the environment): the refusal itself is
    # under test, not the state check after each commit
    monkeypatch.delenv("BTREE_STORE_CHECK_COMMITS", raising=False)
    with btree_store.DB(str(path), check_commits=False) as db:
        _writes_refused(db, want)
        with pytest.raises(btree_store.CorruptionError):  # and stays refused
            db.begin(write=True)
        assert contents(db) == want  # reads go on
        assert db.repair() is True
        _repaired_and_usable(db, want)
        assert db.repair() is False  # exact now: a no-op
    _reopened_clean(path, want)


def test_repair_leaked_pages(tmp_path):
    path = tmp_path / "leak.bs"
    want = build(path)
    lay = layout_of(path)
    free = exact_free(lay)
    assert len(free) > 4
    set_free(path, lay, free[: len(free) // 2])
    with btree_store.DB(str(path)) as db:
        with pytest.raises(btree_store.CorruptionError) as ei:
            db.check()
        assert any("leaked" in p for p in ei.value.problems)
        before = db.stat()["free_pages"]
        assert db.repair() is True
        assert db.stat()["free_pages"] >= before + len(free) - len(free) // 2 - 1
        _repaired_and_usable(db, want)
    _reopened_clean(path, want)


def test_repair_broken_chain(tmp_path):
    """The chain's next pointer leads nowhere: the file opens, writes are refused."""
    path = tmp_path / "chain.bs"
    want = build(path)
    lay = layout_of(path)
    set_free(path, lay, exact_free(lay), next_pgno=lay.page_count + 50)
    with btree_store.DB(str(path)) as db:
        with pytest.raises(btree_store.CorruptionError):
            db.begin(write=True)
        with pytest.raises(btree_store.CorruptionError) as ei:
            db.check()
        assert any("freelist" in p for p in ei.value.problems), ei.value.problems
        assert db.repair() is True
        _repaired_and_usable(db, want)
    _reopened_clean(path, want)


def test_repair_wrong_count(tmp_path):
    path = tmp_path / "count.bs"
    want = build(path)
    lay = layout_of(path)
    set_free(path, lay, exact_free(lay), fl_count=len(exact_free(lay)) + 7)
    p = cli("repair", path)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert b"freelist rebuilt" in p.stdout
    p = cli("repair", path)
    assert p.returncode == 0 and b"nothing to repair" in p.stdout, p.stdout
    p = cli("check", path)
    assert p.returncode == 0, p.stdout
    _reopened_clean(path, want)


def test_repair_clean_file_is_a_no_op(tmp_path):
    path = tmp_path / "ok.bs"
    want = build(path, n=300)
    before = open(path, "rb").read()
    with btree_store.DB(str(path)) as db:
        txid = db.stat()["txid"]
        assert db.repair() is False
        assert db.stat()["txid"] == txid
        assert contents(db) == want
    assert open(path, "rb").read() == before


def test_repair_refuses_a_damaged_tree(tmp_path):
    path = tmp_path / "tree.bs"
    build(path, n=600)
    lay = layout_of(path)
    pg = damage_leaf(path, lay, "b")
    before = open(path, "rb").read()
    with btree_store.DB(str(path)) as db:
        with pytest.raises(btree_store.CorruptionError) as ei:
            db.repair()
        msg = str(ei.value)
        assert "only the freelist" in msg and ("page %d" % pg) in msg, msg
    assert open(path, "rb").read() == before
    p = cli("repair", path)
    assert p.returncode == 1 and b"only the freelist" in p.stderr, p.stderr
    assert b"Traceback" not in p.stderr


def test_repair_refusals(tmp_path):
    path = tmp_path / "ro.bs"
    build(path, n=100)
    with btree_store.DB(str(path), readonly=True) as db:
        with pytest.raises(btree_store.ReadonlyError, match="writable"):
            db.repair()
    with btree_store.DB(str(path)) as db:
        t = db.begin()
        with pytest.raises(btree_store.Error, match="no transaction is open"):
            db.repair()
        t.abort()
        with pytest.raises(TypeError):
            db.repair(1)
        assert db.repair() is False
    with pytest.raises(btree_store.ClosedError):
        db.repair()
    p = cli("repair", tmp_path / "missing.bs")
    assert p.returncode == 2


def test_repair_in_memory_db():
    db = btree_store.DB(":memory:")
    with db.begin(write=True) as t:
        for i in range(1000):
            t.put(b"%05d" % i, b"v" * 100)
    with db.begin(write=True) as t:
        for i in range(0, 1000, 3):
            t.delete(b"%05d" % i)
    assert db.repair() is False
    db.check()
    db.close()


# ------------------------------------------------------------------ memory of long walks
def test_long_walks_free_what_they_evict(tmp_path, monkeypatch):
    """check(), txn.stat() and drop_bucket() over a file many times the cache: the frames
    they evict are freed as they go (they leave and re-enter their cache epoch), so few are
    left waiting when they return. Without that, every frame evicted during the walk would still
    be retired (thousands here); bench/long_walk_rss.py measures the RSS. (Pages read into
    copies: read in place from the mapping they take no frames at all.)"""
    monkeypatch.setenv("BTREE_STORE_MAP", "0")
    path = tmp_path / "walk.bs"
    with btree_store.DB(str(path), cache_size=1 << 20, sync=False) as db:
        with db.begin(write=True) as t:
            t.create_bucket("big")
            for i in range(12000):
                t.put(b"%08d" % i, b"v" * 400, bucket="big")
        pages = db.stat()["page_count"]
    assert pages > 1200  # five times the cache's 256 frames
    with btree_store.DB(str(path), cache_size=1 << 20) as db:
        db.check()
        st = db.stat()
        assert st["cache_misses"] > pages // 2  # the walk really went through the cache
        assert st["cache_retired"] < 200, st
        with db.begin() as t:  # the per-bucket statistics walk the tree too
            assert t.stat(bucket="big")["entries"] == 12000
            assert db.stat()["cache_retired"] < 200, db.stat()
        with db.begin(write=True) as t:
            misses = db.stat()["cache_misses"]
            t.drop_bucket("big")
            assert db.stat()["cache_retired"] < 200, db.stat()
        assert db.stat()["cache_misses"] > misses + pages // 2
        db.check()


def test_aio_check_and_repair(tmp_path):
    import asyncio
    from btree_store import aio
    path = tmp_path / "aio.bs"
    want = build(path, n=300)
    lay = layout_of(path)
    free = exact_free(lay)
    set_free(path, lay, free[:-1])

    async def main():
        adb = await aio.open(str(path))
        try:
            with pytest.raises(btree_store.CorruptionError) as ei:
                await adb.check(max_problems=5)
            assert any("leaked" in p for p in ei.value.problems)
            assert await adb.repair() is True
            await adb.check()
            assert await adb.repair() is False
        finally:
            await adb.close()

    asyncio.run(main())
    _reopened_clean(path, want)
