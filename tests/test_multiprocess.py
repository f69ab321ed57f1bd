"""test_multiprocess.py - many processes on one database (issue 10, docs/ARCHITECTURE.md "Many
processes"): a writer process with reader processes checking every snapshot, multiprocessing
pools (fork and spawn), two writer processes on the same counters, a long reader while another
process commits and reuses pages, SIGKILL of readers holding slots and of writers mid-commit,
stale page caches, and the side file PATH-lock being stale, corrupt or missing.

Synchronisation is by pipes and by what the database holds, never by sleeping; the numbers of
rounds grow with BTREE_STORE_LONG=1.

Layer: tests only; public Python API of btree_store in this and child processes (os.fork
children open their own handles; multiprocessing workers too).
"""
import errno
import multiprocessing
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import pytest

import btree_store
from btree_store import LockedError
from btree_store._testing import FaultIO

import _format
from _util import LONG, child_env, fork_join as _join, fork_run, fork_start as _fork

# every test both ways: pages copied into the cache, and read in place from the mapping
pytestmark = pytest.mark.usefixtures("page_access")

NKEYS = 40


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _value(i, amount, gen):
    # an amount, then filler whose size varies (pages split, merge and get reused)
    return struct.pack("<qq", amount, gen) + b"f" * ((i * 97 + gen * 31) % 700)


def _amount(v):
    return struct.unpack_from("<qq", v)[0]


def _seed(path):
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            for i in range(NKEYS):
                txn.put(b"k%03d" % i, _value(i, 0, 0))
            txn.put(b"gen", b"0")


def _snapshot_ok(txn):
    """(gen, error or None): the amounts of one snapshot sum to zero and carry its gen."""
    gen = int(txn.get(b"gen"))
    total = 0
    n = 0
    for k, v in txn.items():
        if not (len(k) == 4 and k.startswith(b"k")):
            continue  # other keys of the test
        n += 1
        total += _amount(v)
        if struct.unpack_from("<qq", v)[1] > gen:
            return gen, "key %r written by a later commit than the snapshot's %d" % (k, gen)
    if n != NKEYS or total != 0:
        return gen, "snapshot %d: %d keys summing to %d" % (gen, n, total)
    return gen, None


def _writer_commits(path, n, seed, sync=True, report=None):
    """n commits moving amounts between keys (sum zero), gen counting commits; with report (a
    pipe's write end) a byte after each commit, and the handle is left open (not closed)."""
    rnd = random.Random(seed)
    db = btree_store.DB(path, sync=sync)
    with db if report is None else _nullctx():
        for _ in range(n):
            with db.begin(write=True, timeout=None) as txn:
                gen = int(txn.get(b"gen")) + 1
                for _ in range(rnd.randrange(1, 6)):
                    a, b = rnd.sample(range(NKEYS), 2)
                    d = rnd.randrange(1, 1000)
                    va, vb = txn.get(b"k%03d" % a), txn.get(b"k%03d" % b)
                    txn.put(b"k%03d" % a, _value(a, _amount(va) + d, gen))
                    txn.put(b"k%03d" % b, _value(b, _amount(vb) - d, gen))
                txn.put(b"gen", b"%d" % gen)
            if report is not None:
                os.write(report, b"c")
    return db if report is not None else None


def test_writer_and_four_reader_processes(tmp_path):
    path = str(tmp_path / "wr.bs")
    _seed(path)
    n = 5000 if LONG else 1000  # the 1,000 commits (~1.3 s)

    def reader():
        seen, last = 0, -1
        with btree_store.DB(path, readonly=True) as db:
            while last < n:
                with db.begin() as txn:
                    gen, err = _snapshot_ok(txn)
                if err:
                    return err
                if gen < last:
                    return "snapshot went back from %d to %d" % (last, gen)
                last = gen
                seen += 1
        return "ok %d" % seen

    readers = [_fork(reader) for _ in range(4)]
    writer = _fork(lambda: _writer_commits(path, n, 1))
    status, out = _join(*writer)
    assert status == 0, out
    for rd in readers:
        status, out = _join(*rd)
        assert status == 0 and out.startswith("ok "), out
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            assert _snapshot_ok(txn) == (n, None)
        db.check()


def _pool_read(path):
    with btree_store.DB(path, readonly=True) as db:
        with db.begin() as txn:
            return _snapshot_ok(txn)


def _pool_write(args):
    path, i = args
    with btree_store.DB(path) as db:
        with db.begin(write=True, timeout=None) as txn:
            txn.put(b"w%d" % i, b"%d" % (i * i))
    return i


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pool_beside_parent_writer(tmp_path, method):
    path = str(tmp_path / "pool.bs")
    _seed(path)
    _writer_commits(path, 5, 2)
    db = btree_store.DB(path)  # the parent keeps its writer handle open throughout
    try:
        keep = db.begin()
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(2) as pool:
            got = pool.map(_pool_read, [path] * 4)
            assert got == [(5, None)] * 4
            assert sorted(pool.map(_pool_write, [(path, i) for i in range(6)])) == list(range(6))
            with db.begin(write=True) as txn:
                txn.put(b"gen", b"6")
            assert pool.map(_pool_read, [path] * 2) == [(6, None)] * 2
        assert keep.get(b"gen") == b"5"  # our old snapshot did not move
        keep.abort()
        with db.begin() as txn:
            assert [txn.get(b"w%d" % i) for i in range(6)] == [b"%d" % (i * i) for i in range(6)]
        db.check()
    finally:
        db.close()


def test_two_writer_processes_exact_sum(tmp_path):
    path = str(tmp_path / "sum.bs")
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            for c in range(5):
                txn.put(b"c%d" % c, b"0")
    n = 400 if LONG else 60

    def incr():
        with btree_store.DB(path) as db:
            for i in range(n):
                with db.begin(write=True, timeout=None) as txn:
                    for c in range(5):
                        txn.put(b"c%d" % c, b"%d" % (int(txn.get(b"c%d" % c)) + 1 + c))
                    txn.put(b"pad%d-%d" % (os.getpid(), i % 7), b"p" * (i % 900))
        return "ok"

    kids = [_fork(incr) for _ in range(2)]
    for k in kids:
        status, out = _join(*k)
        assert status == 0 and out == "ok", out
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            assert [int(txn.get(b"c%d" % c)) for c in range(5)] == [2 * n * (1 + c) for c in range(5)]
        db.check()


def test_reader_snapshot_while_other_process_commits(tmp_path):
    path = str(tmp_path / "snap.bs")
    _seed(path)
    n = 3000 if LONG else 1000  # the 1,000 commits, twice (~3 s)
    db = btree_store.DB(path)
    try:
        _writer_commits(path, 20, 3)
        snap = db.begin()
        before = dict(snap.items())
        status, out = _join(*_fork(lambda: _writer_commits(path, n, 4)))
        assert status == 0, out
        assert dict(snap.items()) == before  # exactly its snapshot, after n commits elsewhere
        assert _snapshot_ok(snap) == (20, None)
        snap.abort()
        # with the reader gone, the pages it pinned are reused: the file stops growing
        status, out = _join(*_fork(lambda: _writer_commits(path, 30, 5)))
        assert status == 0, out
        grown = db.stat()["page_count"]
        status, out = _join(*_fork(lambda: _writer_commits(path, n, 6)))
        assert status == 0, out
        with db.begin() as txn:
            assert _snapshot_ok(txn) == (20 + n + 30 + n, None)
        assert db.stat()["page_count"] <= grown * 1.1 + 8, (grown, db.stat())
        db.check()
    finally:
        db.close()


def _flat_commits(db, n):
    """n commits rewriting the same keys; the page count they add."""
    start = db.stat()["page_count"]
    for i in range(n):
        with db.begin(write=True, timeout=None) as txn:
            for j in range(10):
                txn.put(b"flat%d" % j, b"%04d" % i * 750)  # overflow runs: many pages
    return db.stat()["page_count"] - start


def _hold_reader(path, w):
    def run():
        with btree_store.DB(path, readonly=True) as d:
            txn = d.begin()
            txn.get(b"gen")
            os.write(w, b"r")
            signal.pause()
    return run


@pytest.mark.parametrize("block", range(2))
def test_sigkill_readers_and_writers(tmp_path, block):
    """SIGKILL of a reader process holding a slot, or of a writer process at a random point
    of its commits (an exact random write-or-sync call of the commit protocol through
    FaultIO.kill_nth, or a random delay after an acknowledged commit): the others go on, the
    dead reader's slot is reclaimed (commits reuse pages again), nothing acknowledged is lost
    and at most the one commit in flight is there besides, check() is clean. Where the kills
    landed is printed (-s), not asserted."""
    path = str(tmp_path / "kill.bs")
    _seed(path)
    rounds = 500 if LONG else 100  # 2 blocks: the 200 kills by default
    rnd = random.Random(block)
    landed = {}
    db = btree_store.DB(path)
    try:
        _flat_commits(db, 3)
        for rnd_i in range(rounds):
            if rnd.random() < 0.5:
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    try:
                        _hold_reader(path, w)()
                    finally:
                        os._exit(0)
                os.close(w)
                assert os.read(r, 1) == b"r"
                os.close(r)
                # the live reader pins what commits free
                _flat_commits(db, 3)
                st = db.stat()
                assert st["readers"] == 1 and st["pinned_pages"] > 0, st
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                _flat_commits(db, 2)
                st = db.stat()  # the dead reader's slot was reclaimed: nothing pinned
                assert st["readers"] == 0 and st["pinned_pages"] == 0, st
            else:
                with db.begin() as txn:
                    gen0 = int(txn.get(b"gen"))
                # where the kill lands: "io", the child's FaultIO kills it just before its
                # kill_at-th write-or-sync call (~6 a commit: data pages, syncs, the meta
                # page), an exact random point of the commit protocol; "signal", the parent
                # kills it a random 0-2 ms after its want-th acknowledged commit
                mode = "io" if rnd.random() < 0.7 else "signal"
                kill_at = rnd.randrange(1, 150)
                want = rnd.randrange(1, 30) if mode == "signal" else 0
                delay = rnd.random() * 0.002
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    try:
                        fio = FaultIO()
                        if mode == "io":
                            fio.kill_nth("write|sync", kill_at)

                        def note(tag):  # the phase, and the write|sync calls made before it
                            os.write(w, b"%s%d\n" % (tag, fio.count("write|sync")))

                        with btree_store.DB(path, _io=fio) as d:
                            for i in range(1000000):
                                note(b"b")
                                with d.begin(write=True, timeout=None) as txn:
                                    g = int(txn.get(b"gen")) + 1
                                    for j in range(i % 5 + 1):
                                        k = b"k%03d" % ((i * 7 + j) % NKEYS)
                                        txn.put(k, _value(0, _amount(txn.get(k)), g))
                                    txn.put(b"big%d" % (i % 3), b"b" * (i * 997 % 9000))
                                    txn.put(b"gen", b"%d" % g)
                                    note(b"s")  # bs_txn_commit from here
                                note(b"c")
                    finally:
                        os._exit(0)
                os.close(w)
                buf = b""
                if mode == "signal":
                    while buf.count(b"c") < want:
                        chunk = os.read(r, 4096)
                        assert chunk, buf[-200:]
                        buf += chunk
                    time.sleep(delay)  # where this lands is up to the scheduler
                    os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)  # "io": it kills itself
                assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
                while True:
                    chunk = os.read(r, 4096)
                    if not chunk:
                        break
                    buf += chunk
                os.close(r)
                notes = [(x[:1], int(x[1:])) for x in buf.split(b"\n") if x]
                acked = sum(1 for tag, _ in notes if tag == b"c")
                assert mode == "signal" or acked < kill_at, (acked, kill_at)
                with db.begin(write=True, timeout=60) as txn:  # the write lock was released
                    g = int(txn.get(b"gen"))
                    # every acknowledged commit is there, and at most the one in flight more
                    assert gen0 + acked <= g <= gen0 + acked + 1, (g, gen0, acked, mode)
                    txn.put(b"after", b"%d" % rnd_i)
                with db.begin() as txn:
                    gen, err = _snapshot_ok(txn)
                    assert err is None, err
                # count where the kill landed (not asserted: in "signal" mode it is timing)
                tag, calls = notes[-1] if notes else (b"o", 0)
                if tag != b"s":
                    where = "outside a commit"
                elif g == gen0 + acked + 1:
                    where = "in commit, after its meta page was written"
                elif mode == "signal":
                    where = "in commit, before its meta page was written"
                elif kill_at == calls + 1:
                    where = "in commit, before any of its writes"
                else:
                    where = "in commit, between its data writes and its meta page"
                landed[mode, where] = landed.get((mode, where), 0) + 1
            db.check()
        with btree_store.DB(path, readonly=True) as other:
            other.check()
    finally:
        db.close()
    print("writer kills landed:", ", ".join(
        "%s %s: %d" % (m, w, n) for (m, w), n in sorted(landed.items())))


def _tree_pages(path):
    """{pgno: (kind, txid in its header)} of the newest state's tree pages, from the file."""
    lay = _format.layout_of(path)
    assert not lay.problems, lay.problems
    return {p: (lay.kinds[p], _format.u64(lay.page(p), 16)) for p in lay.live_pages()}


def test_stale_cache_after_other_process_reuses_pages(tmp_path, page_access):
    """Process A caches every page of its tree; process B rewrites the tree four times, so
    that the page numbers A cached now hold B's pages (the file's page headers show the same
    pgno with B's txid); A's next transaction reads B's data, rereading every page it had
    cached under the old version (never its cached old copy)."""
    path = str(tmp_path / "stale.bs")
    a = btree_store.DB(path)
    try:
        with a.begin(write=True) as txn:
            for i in range(300):
                txn.put(b"%04d" % i, b"old-%d" % i * 20)
        with a.begin() as txn:  # A caches every page
            assert sum(1 for _ in txn.items()) == 300
        st0 = a.stat()
        pc = st0["page_count"]
        mine = _tree_pages(path)  # the pages A read, all written by A's commit
        assert {t for _, t in mine.values()} == {st0["txid"]}, mine
        if page_access == "copies":
            assert st0["cache_pages"] >= len(mine), (st0, mine)

        def rewrite():
            with btree_store.DB(path) as b:
                for rnd in range(4):  # later rounds reuse the pages the earlier ones freed
                    with b.begin(write=True) as txn:
                        for i in range(300):
                            txn.put(b"%04d" % i, b"n%d-%d" % (rnd, i) * 20)
            return "ok"

        status, out = _join(*_fork(rewrite))
        assert status == 0 and out == "ok", out
        assert a.stat()["page_count"] <= 2 * pc + 4  # page numbers were reused
        now = _tree_pages(path)
        # B's tree lives on page numbers A has cached: same pgno, a later txid in its header
        reused = {p for p in mine if p in now and now[p][1] > mine[p][1]}
        assert len(reused) * 2 >= len(mine), (mine, now)
        assert any(now[p][0] == "leaf" for p in reused), (mine, now)
        with a.begin() as txn:
            got = dict(txn.items())
        assert got == {b"%04d" % i: b"n3-%d" % i * 20 for i in range(300)}
        st1 = a.stat()
        assert st1["txid"] == st0["txid"] + 4, (st0, st1)
        if page_access == "copies":
            # each reused page was a cached copy of the old version: reread, not a hit
            assert st1["cache_misses"] - st0["cache_misses"] >= len(reused), (st0, st1)
        a.check()
    finally:
        a.close()


def test_side_file_rebuilt_when_stale_corrupt_or_missing(tmp_path):
    path = str(tmp_path / "side.bs")
    lock = path + "-lock"
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            txn.put(b"k", b"v")
        assert os.path.exists(lock)
    assert not os.path.exists(lock)  # the last handle removes it
    for junk in (b"", b"garbage" * 10, b"\xff" * 20000, None):
        if junk is None:
            # stale: left by a killed process that held a reader slot
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                try:
                    _hold_reader(path, w)()
                finally:
                    os._exit(0)
            os.close(w)
            assert os.read(r, 1) == b"r"
            os.close(r)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            assert os.path.exists(lock)
        else:
            with open(lock, "wb") as f:
                f.write(junk)
        with btree_store.DB(path) as db:
            with db.begin() as txn:
                assert txn.get(b"k") == b"v"
            with open(lock, "rb") as f:
                assert f.read(8) == b"BSLOCK\r\n"
            _flat_commits(db, 10)
            st = db.stat()  # no stale slot pins anything
            assert st["readers"] == 0 and st["pinned_pages"] == 0, st
            with btree_store.DB(path, readonly=True) as ro:
                with ro.begin() as txn:
                    assert txn.get(b"flat0") == b"0009" * 750
            db.check()


def test_side_file_of_another_file_while_in_use(tmp_path):
    path = str(tmp_path / "a.bs")
    other = str(tmp_path / "b.bs")
    with btree_store.DB(other) as db:
        with db.begin(write=True) as txn:
            txn.put(b"k", b"b")
    db = btree_store.DB(path)
    try:
        os.replace(other, path)  # the file is replaced while db has the old one open
        with pytest.raises(LockedError, match="another file"):
            btree_store.DB(path)
    finally:
        db.close()
    with btree_store.DB(path) as d2:  # alone now: rebuilt for the new file
        with d2.begin() as txn:
            assert txn.get(b"k") == b"b"


def test_same_thread_two_handles_write_is_misuse(tmp_path):
    path = str(tmp_path / "two.bs")
    a = btree_store.DB(path)
    b = btree_store.DB(path)
    try:
        w = a.begin(write=True)
        with pytest.raises(btree_store.Error, match="already has an open write transaction"):
            b.begin(write=True)  # would wait for itself forever
        w.abort()
        with b.begin(write=True) as txn:
            txn.put(b"x", b"1")
        with a.begin() as txn:
            assert txn.get(b"x") == b"1"
    finally:
        a.close()
        b.close()


def test_compact_needs_no_other_handle(tmp_path):
    path = str(tmp_path / "c.bs")
    a = btree_store.DB(path)
    try:
        with a.begin(write=True) as txn:
            for i in range(500):
                txn.put(b"%d" % i, b"x" * 300)
        with a.begin(write=True) as txn:
            for i in range(450):
                txn.delete(b"%d" % i)
        b = btree_store.DB(path, readonly=True)
        with pytest.raises(LockedError, match="no other"):
            a.compact()
        b.close()
        a.compact()
        with btree_store.DB(path, readonly=True) as c:
            with c.begin() as txn:
                assert len(txn) == 50
        with a.begin(write=True) as txn:
            txn.put(b"after", b"compact")
        a.check()
    finally:
        a.close()


WRITER_LOOP = r'''
import sys, btree_store
db = btree_store.DB(sys.argv[1])
i = 0
def commit():
    global i
    with db.begin(write=True) as txn:  # commit i: txid i + 1, keys "0".."499" and "n"
        txn.put(b"%d" % (i % 500), b"v" * (i % 2000))
        txn.put(b"n", b"%d" % i)
    i += 1
for _ in range(21):
    commit()
txn = db.begin(write=True)  # a write transaction open: its puts are not committed
txn.put(b"uncommitted", b"x" * 3000)
print("ready %d" % db.stat()["txid"], flush=True)
sys.stdin.readline()
txn.abort()
print("go", flush=True)
while True:
    commit()
'''


def _cli(cmd, path):
    r = subprocess.run([sys.executable, "-m", "btree_store", cmd, path], env=child_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and not r.stderr, (cmd, r.stdout, r.stderr)
    return r.stdout


def _cli_stat(path):
    st = {}
    for line in _cli("stat", path).splitlines():
        k, _, v = line.partition("  ")
        st[k.strip()] = v.strip()
    return int(st["txid"]), int(st["entries"])


def _cli_check_entries(path):
    out = _cli("check", path)
    m = re.fullmatch(re.escape(path) + r": ok \(\d+ pages, (\d+) entries, 0 named buckets\)\n",
                     out)
    assert m, out
    return int(m.group(1))


def test_cli_stat_and_check_beside_live_writer(tmp_path):
    # "python -m btree_store stat|check PATH run beside a live application": first beside a
    # writer holding a write transaction open (they show exactly what it committed, not its
    # uncommitted puts), then beside one committing all the time (one consistent snapshot:
    # commit i has txid i + 1 and min(i + 1, 500) + 1 entries)
    path = str(tmp_path / "cli.bs")
    p = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, path], env=child_env(),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline().split()
        assert line[:1] == ["ready"], (line, p.stderr.read())
        t1 = int(line[1])
        assert t1 == 21
        assert _cli_stat(path) == (t1, 22)
        assert _cli_check_entries(path) == 22
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "go", p.stderr.read()
        txid, entries = _cli_stat(path)
        assert txid >= t1 and entries == min(txid, 500) + 1, (txid, entries)
        entries = _cli_check_entries(path)
        assert 22 <= entries <= 501, entries
        assert p.poll() is None, p.stderr.read()
    finally:
        p.kill()
        p.wait(60)
        p.stdin.close()
        p.stdout.close()
        p.stderr.close()
    with btree_store.DB(path) as db:
        db.check()
        st = db.stat()
        assert st["txid"] >= txid and st["entries"] == min(st["txid"], 500) + 1, st
        with db.begin() as txn:
            assert int(txn.get(b"n")) == st["txid"] - 1
            assert txn.get(b"uncommitted") is None


def _unprivileged(fn):
    """fn() in a forked child without root's override of file permissions (root ignores
    directory and file modes; CI runs as root in a container): as nobody:nogroup there."""
    def run():
        if os.geteuid() == 0:
            import grp
            import pwd
            os.setgroups([])
            os.setgid(grp.getgrnam("nogroup").gr_gid if _has_group("nogroup")
                      else pwd.getpwnam("nobody").pw_gid)
            os.setuid(pwd.getpwnam("nobody").pw_uid)
        return fn()
    return fork_run(run)


def _has_group(name):
    import grp
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _open_readonly_report(path):
    """A readonly open as text: 'ok <value> <side file exists>' or '<exception>: <message>'."""
    def run():
        try:
            db = btree_store.DB(path, readonly=True)
        except Exception as e:  # noqa: BLE001
            return "%s: %s" % (type(e).__name__, e)
        try:
            with db.begin() as txn:
                v = txn.get(b"k")
            db.check()
            return "ok %s %s" % (v.decode(), os.path.exists(path + "-lock"))
        finally:
            db.close()
    return run


def test_readonly_directory_refused_unless_no_writer_can_exist():
    """A readonly open in a directory where the side file cannot be created (run as an
    unprivileged user): refused with PermissionError naming the side file while the file is
    writable (a writer could come and reuse the pages it reads, unseen), and allowed, with
    no side file, once the file has no write permission bit (no writer can exist)."""
    try:
        import pwd
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to run the unprivileged child as")
    d = tempfile.mkdtemp(prefix="bs_rodir_")  # under the system temp dir: nobody may enter
    path = os.path.join(d, "x.bs")
    try:
        os.chmod(d, 0o755)
        with btree_store.DB(path) as db:
            with db.begin(write=True) as txn:
                txn.put(b"k", b"v")
        os.chmod(path, 0o644)
        os.chmod(d, 0o555)
        status, out = _unprivileged(_open_readonly_report(path))
        assert status == 0, out
        assert out.startswith("PermissionError: ") and path + "-lock" in out, out
        assert "cannot be written by anyone" in out, out
        os.chmod(path, 0o444)  # no writer can exist
        status, out = _unprivileged(_open_readonly_report(path))
        assert status == 0 and out == "ok v False", out
        # with the directory writable again the reader registers in a side file as usual
        os.chmod(d, 0o777)
        status, out = _unprivileged(_open_readonly_report(path))
        assert status == 0 and out == "ok v True", out
    finally:
        os.chmod(d, 0o755)
        shutil.rmtree(d)


READONLY_FS = r"""
import os, subprocess, sys, btree_store
d = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "none", d], check=True)
path = os.path.join(d, "x.bs")
with btree_store.DB(path) as db:
    with db.begin(write=True) as txn:
        txn.put(b"k", b"v")
subprocess.run(["mount", "-o", "remount,ro", d], check=True)
with btree_store.DB(path, readonly=True) as db:
    with db.begin() as txn:
        v = txn.get(b"k")
    db.check()
print("read", v.decode(), os.path.exists(path + "-lock"))
try:
    btree_store.DB(path)
except OSError as e:
    print("write", type(e).__name__, e.errno)
"""


def test_readonly_open_on_a_read_only_file_system(tmp_path):
    """On a file system mounted read-only (a tmpfs in a private mount namespace of an
    unprivileged user namespace) no writer can exist: a readonly open reads without the side
    file; a writable open fails with the OS error."""
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) is not installed: no way to mount a read-only file system")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("user and mount namespaces are not permitted here (unshare -rm: %s)"
                    % probe.stderr.strip())
    d = tmp_path / "mnt"
    d.mkdir()
    p = subprocess.run(["unshare", "-rm", sys.executable, "-c", READONLY_FS, str(d)],
                       env=child_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.splitlines() == ["read v False", "write OSError %d" % errno.EROFS], p.stdout


def test_writer_keeps_its_reusable_pages_when_another_process_commits(tmp_path):
    """Catching up replays what other processes' freelist records changed: pages this
    handle could reuse and nobody touched stay reusable even while an old reader elsewhere
    pins what the other commits freed (no needless file growth)."""
    path = str(tmp_path / "keep.bs")
    a = btree_store.DB(path)
    try:
        with a.begin(write=True) as txn:
            for i in range(300):
                txn.put(b"big%03d" % i, b"x" * 2000)
        with a.begin(write=True) as txn:
            for i in range(300):
                txn.delete(b"big%03d" % i)
        for i in range(3):  # the freed pages become reusable here
            with a.begin(write=True) as txn:
                txn.put(b"tick", b"%d" % i)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # a reader elsewhere holds the newest snapshot
            os.close(r)
            try:
                _hold_reader(path, w)()
            finally:
                os._exit(0)
        os.close(w)
        try:
            assert os.read(r, 1) == b"r"

            def small():
                with btree_store.DB(path) as b:
                    with b.begin(write=True) as txn:
                        txn.put(b"tick", b"other")
                return "ok"

            status, out = _join(*_fork(small))
            assert status == 0 and out == "ok", out
            pc = a.stat()["page_count"]
            with a.begin(write=True) as txn:  # ~150 pages of new data from reusable pages
                for i in range(150):
                    txn.put(b"new%03d" % i, b"y" * 2000)
            assert a.stat()["page_count"] <= pc + 4, (pc, a.stat())
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
        a.check()
    finally:
        a.close()


def _read_calls():
    """Read system calls this process has made so far (/proc/self/io syscr)."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("syscr:"):
                return int(line.split()[1])
    raise AssertionError("no syscr in /proc/self/io")


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io (Linux)")
def test_writer_catch_up_replays_records_not_the_whole_freelist(tmp_path):
    """A writer whose free set is one commit behind (another process committed) catches up by
    replaying the freelist records written since, not by reloading the whole chain: with a
    free set of ~18,000 pages (a chain of ~150 records of 1 KiB pages) evicted from a small
    cache, the catch-up after the other process's small commit makes a handful of read calls
    (the meta pages, the check of the commit's listed pages, the new record: 7 when written);
    a reload reads the whole chain (160 calls before the change, at least 19 at 8 pages a
    read)."""
    path = str(tmp_path / "cu.bs")
    a = btree_store.DB(path, page_size=1024, cache_size=16 * 1024)
    try:
        with a.begin(write=True) as txn:
            for i in range(300):
                txn.put(b"live%03d" % i, b"l" * 700)
            for i in range(2000):
                txn.put(b"big%04d" % i, b"x" * 9000)
        with a.begin(write=True) as txn:
            for i in range(2000):
                txn.delete(b"big%04d" % i)
        for i in range(3):
            with a.begin(write=True) as txn:
                txn.put(b"tick", b"%d" % i)
        assert a.stat()["free_pages"] > 15000, a.stat()

        def small():
            with btree_store.DB(path) as b:
                with b.begin(write=True) as txn:
                    txn.put(b"tick", b"other")
            return "ok"

        status, out = fork_run(small)
        assert status == 0 and out == "ok", out
        with a.begin() as txn:  # evict the chain from the cache
            assert sum(1 for _ in txn.items()) == 301
        probe = _read_calls()
        base = _read_calls() - probe  # the reads of /proc/self/io itself
        before = _read_calls()
        txn = a.begin(write=True)
        calls = _read_calls() - before - base
        try:
            assert txn.get(b"tick") == b"other"
            txn.put(b"mine", b"1")
            txn.commit()
        finally:
            if not txn.closed:
                txn.abort()
        assert calls <= 16, calls  # 7 here (meta pages, commit-list check, new record)
        a.check()
        with a.begin(write=True) as txn:  # the caught-up free set serves new pages
            for i in range(100):
                txn.put(b"new%03d" % i, b"n" * 9000)
        a.check()
    finally:
        a.close()


# the side file's header (csrc/lockfile.h lf_header): where the newest txid and the
# committing flag live
LF_LATEST_TXID, LF_COMMITTING = 40, 72


def _start_unsynced_writer(path, n, seed):
    """Fork a writer process that makes n sync=False commits (_writer_commits with seed) and then waits with its handle open, nothing synced; return its pid once it has
    reported all n. The caller kills it (SIGKILL) and reaps it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            keep = _writer_commits(path, n, seed, sync=False, report=w)
            signal.pause()
            keep.close()  # killed here: a later commit would overwrite the same slot
        finally:
            os._exit(0)
    os.close(w)
    got = b""
    while len(got) < n:
        b = os.read(r, n - len(got))
        assert b, "the writer process ended before its commits"
        got += b
    os.close(r)
    return pid


def _hold_a_lost_commit(db, path, seed):
    """A writer process makes 5 sync=False commits; db begins a read transaction on the newest
    (never durable), the writer is killed and the meta slot of its commits torn (zeros), so
    that commit is lost. Returns the read transaction, which still holds its snapshot."""
    from _format import parse_meta

    pid = _start_unsynced_writer(path, 5, seed)
    held = db.begin()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with open(path, "r+b") as f:
        metas = [parse_meta(f.read(4096)) for _ in range(2)]
        slot = max(range(2), key=lambda s: metas[s]["txid"])
        f.seek(slot * 4096)
        f.write(b"\0" * 4096)
    return held


@pytest.mark.parametrize("tear", ["zeros", "half", "one_byte"])
@pytest.mark.parametrize("committing", [True, False])
def test_writer_killed_mid_overwrite_of_unsynced_meta_slot(tmp_path, tear, committing):
    """A writer process makes sync=False commits (they all go to the meta slot that does not
    hold the durable commit) and is killed while overwriting that slot again: the slot is
    torn (its checksum fails). Another process that has the file open, a process opening it
    afterwards and a reopen all find a valid commit at or after the last durable one (the
    announced, lost commit is given up, not waited for), write on top of it, and check() is
    clean."""
    import mmap
    from _format import parse_meta

    path = str(tmp_path / "torn.bs")
    _seed(path)
    _writer_commits(path, 3, 7)  # durable commits: gen 3 is the newest durable one
    db = btree_store.DB(path)  # a live process beside the writer (this one)
    try:
        with db.begin() as txn:
            assert _snapshot_ok(txn) == (3, None)
        pid = _start_unsynced_writer(path, 4, 8)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with open(path, "r+b") as f:
            head = f.read(2 * 4096)
            metas = [parse_meta(head[s * 4096:(s + 1) * 4096]) for s in range(2)]
            assert all(metas), metas
            slot = max(range(2), key=lambda s: metas[s]["txid"])  # the unsynced commits' slot
            durable = metas[1 - slot]["txid"]
            if tear == "zeros":
                f.seek(slot * 4096)
                f.write(b"\0" * 4096)
            elif tear == "half":
                f.seek(slot * 4096 + 2048)
                f.write(os.urandom(2048))
            else:
                f.seek(slot * 4096 + 100)
                b = f.read(1)
                f.seek(slot * 4096 + 100)
                f.write(bytes([b[0] ^ 0x40]))
        assert parse_meta(open(path, "rb").read(2 * 4096)[slot * 4096:(slot + 1) * 4096]) is None
        with open(path + "-lock", "r+b") as f:  # what the killed writer left announced
            m = mmap.mmap(f.fileno(), 4096)
            assert struct.unpack_from("<Q", m, LF_LATEST_TXID)[0] == metas[slot]["txid"]
            if committing:
                struct.pack_into("<Q", m, LF_COMMITTING, 1)
            m.close()

        def other_reader():
            with btree_store.DB(path, readonly=True) as d:
                with d.begin() as txn:
                    gen, err = _snapshot_ok(txn)
                    d.check()
                    return "%d %s" % (gen, err)

        status, out = fork_run(other_reader)
        assert status == 0 and out == "3 None", out
        with db.begin() as txn:  # the live process: the durable commit, not the lost one
            assert _snapshot_ok(txn) == (3, None)
        with db.begin(write=True, timeout=60) as txn:
            txn.put(b"gen", b"4")
        with db.begin() as txn:
            assert _snapshot_ok(txn) == (4, None)
        assert db.stat()["txid"] > durable
        # the lost commit's txid stays taken: a reader that still holds that snapshot would
        # otherwise take pages of the new commit (same txid, same page numbers) for its own
        assert db.stat()["txid"] > metas[slot]["txid"], (db.stat()["txid"], metas[slot]["txid"])
        db.check()
    finally:
        db.close()
    with btree_store.DB(path) as d:
        with d.begin() as txn:
            assert _snapshot_ok(txn) == (4, None)
        d.check()
        with d.begin(write=True) as txn:  # and writes go on
            txn.put(b"gen", b"5")
        d.check()


def test_write_lock_from_another_process_makes_its_unsynced_commit_durable(tmp_path):
    """The durability horizon across processes: a writer that takes the write lock after
    another process's sync=False commit makes that commit durable (one fsync) before it
    writes, so the pages the other process freed are reused at once instead of waiting (a
    power cut can no longer bring back the commit that still used them). Without it they
    would wait and the file grow by ~100 pages (the measurement: bench/results/
    multiproc_write.md)."""
    path = str(tmp_path / "hz.bs")
    a = btree_store.DB(path)
    try:
        with a.begin(write=True) as txn:
            txn.put(b"seed", b"1")
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.close(go_w)
            try:
                b = btree_store.DB(path, sync=False)
                with b.begin(write=True) as txn:
                    for i in range(200):
                        txn.put(b"b%03d" % i, b"x" * 2000)
                with b.begin(write=True) as txn:  # frees ~100 pages, not durable
                    for i in range(200):
                        txn.delete(b"b%03d" % i)
                os.write(w, b"%d %d" % (b.stat()["txid"], b.stat()["durable_txid"]))
                os.read(go_r, 1)  # stays alive, handle open, nothing synced
            finally:
                os._exit(0)
        os.close(w)
        os.close(go_r)
        try:
            btxid, bdurable = map(int, os.read(r, 64).split())
            assert bdurable < btxid  # the other process's newest commit is not durable
            st = a.stat()
            assert st["txid"] == btxid and st["durable_txid"] < btxid, st
            pc = st["page_count"]
            with a.begin(write=True, sync=False) as txn:  # needs ~100 pages (2 values a leaf)
                for i in range(200):
                    txn.put(b"a%03d" % i, b"y" * 2000)
            st = a.stat()
            assert st["durable_txid"] >= btxid, st  # made durable when the lock changed hands
            assert st["page_count"] - pc <= 10, (pc, st)  # the pages b freed were reused
        finally:
            os.write(go_w, b"x")
            os.close(go_w)
            os.waitpid(pid, 0)
            os.close(r)
        a.check()
    finally:
        a.close()


def test_reader_holding_a_lost_commit_is_told_its_snapshot_was_lost(tmp_path):
    """A reader that holds the snapshot of a sync=False commit which was then lost with its
    torn meta slot (its writer killed while overwriting it) reads that snapshot while its
    pages are intact; once the writers that went on from the durable commit reused one of
    them, the read fails with a CorruptionError that says the snapshot was lost (the side
    file records the lost commits: lockfile.h lost_lo/lost_hi), not that the file is damaged,
    and a new transaction reads the current state."""
    path = str(tmp_path / "lost.bs")
    _seed(path)
    _writer_commits(path, 3, 7)  # durable: gen 3
    db = btree_store.DB(path)
    try:
        held = _hold_a_lost_commit(db, path, 8)  # gen 8, never durable, then lost

        def writer():
            _writer_commits(path, 30, 9)  # from the durable gen 3, reusing pages
            return "ok"

        status, out = fork_run(writer)
        assert status == 0 and out == "ok", out
        with pytest.raises(btree_store.CorruptionError, match="snapshot .* was lost"):
            _snapshot_ok(held)
        held.abort()
        with db.begin() as txn:
            assert _snapshot_ok(txn) == (33, None)
        db.check()
    finally:
        db.close()


POSIX_LOCKS_CHILD = r"""
import os, signal, sys
import btree_store
from btree_store import LockedError
path = sys.argv[1]
db = btree_store.DB(path)
with db.begin(write=True) as txn:
    txn.put(b"k", b"parent")
try:
    btree_store.DB(path, readonly=True)
except LockedError as e:
    assert "already open in this process" in str(e), e
    print("second handle refused")
r, w = os.pipe()
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:  # the child opens the file again beside its parent and holds the write lock
    d = btree_store.DB(path)
    txn = d.begin(write=True)
    txn.put(b"k", b"child")
    os.write(w, b"1")
    os.read(go_r, 1)
    txn.commit()
    d.close()
    os._exit(0)
os.read(r, 1)
try:
    db.begin(write=True, timeout=0)
except LockedError:
    print("write lock held by the child")
os.write(go_w, b"1")
os.waitpid(pid, 0)
with db.begin() as txn:
    print("parent reads", bytes(txn.get(b"k")).decode())
db.check()
db.close()
db = btree_store.DB(path)  # closed, the same process may open it again
db.close()
print("reopened")
"""


# the two ways onto the process-owned lock path on Linux: asked for, and the run-time fallback
# where F_OFD_SETLK is defined but the kernel answers EINVAL (Linux < 3.15, some macOS SDKs),
# simulated by BTREE_STORE_TEST_OFD_EINVAL (lockfile.c lk_ofd_known)
POSIX_PATH_ENVS = {"asked": {"BTREE_STORE_POSIX_LOCKS": "1"},
                   "ofd_einval": {"BTREE_STORE_TEST_OFD_EINVAL": "1"}}


@pytest.mark.parametrize("how", sorted(POSIX_PATH_ENVS))
def test_process_owned_lock_fallback_on_linux(tmp_path, how):
    """BTREE_STORE_POSIX_LOCKS=1 makes the side file use the plain process-owned fcntl locks
    of systems without open file description locks (macOS), and so does a kernel that refuses
    F_OFD_GETLK with EINVAL at the first open (ofd_einval): a second handle of a file in one
    process is refused with a clear LockedError (the two would share their locks, and closing
    either would release them), a fork() child opens the file again and its write lock
    excludes the parent's writer, its commit is seen, and the multi-process tests that use one
    handle per process pass on that path."""
    path = str(tmp_path / "posix.bs")
    env = dict(child_env(), **POSIX_PATH_ENVS[how])
    out = subprocess.run([sys.executable, "-c", POSIX_LOCKS_CHILD, path], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n") == ["second handle refused", "write lock held by the child",
                                      "parent reads child", "reopened", ""], out.stdout
    tests = ["test_two_writer_processes_exact_sum", "test_writer_and_four_reader_processes",
             "test_stale_cache_after_other_process_reuses_pages",
             "test_reader_holding_a_lost_commit_is_told_its_snapshot_was_lost",
             "test_write_lock_from_another_process_makes_its_unsynced_commit_durable"]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.abspath(__file__), "-k", " or ".join(tests)],
                       env=env, capture_output=True, text=True, timeout=600,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


PROC_LOCKS_CHILD = r"""
import os, sys, btree_store
path = sys.argv[1]
db = btree_store.DB(path)  # a new file: its first opener builds the side file
with db.begin(write=True) as txn:
    txn.put(b"k", b"v")
st = os.stat(path)
dev = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
kinds = set()
with open("/proc/locks") as f:
    for line in f:
        parts = line.split()
        if parts[1] != "->" and parts[5] == dev:  # held (not waited for) on the data file
            kinds.add(parts[1])
print(" ".join(sorted(kinds)))
db.close()
"""


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs /proc/locks (Linux)")
def test_process_owned_lock_path_takes_no_flock_of_the_data_file(tmp_path):
    """On macOS and the BSDs flock() and fcntl() locks of a file conflict with each other
    (one lock list: XNU's kern_lockf.c), the opener's own included: the shared flock every
    opener took on the data file made the join lock's test (lockfile_join: is a write lock
    on the join byte free?) see a lock, and the first open of every database was refused as
    "the side file was deleted or replaced". There the data file gets no flock
    (lockfile_no_data_flock); the path of BTREE_STORE_POSIX_LOCKS, which stands for macOS
    here, does the same, so the locks the data file carries there are the join lock alone.
    Linux keeps the shared flock (which an older btree_store's exclusive one conflicts with)
    beside the open file description join lock. A kernel that refuses open file description
    locks (EINVAL, simulated) gets the process-owned path: POSIX locks only."""
    cases = [(POSIX_PATH_ENVS["asked"], "POSIX"), (POSIX_PATH_ENVS["ofd_einval"], "POSIX"),
             ({"BTREE_STORE_POSIX_LOCKS": "0"}, "FLOCK OFDLCK"),
             ({"BTREE_STORE_TEST_OFD_EINVAL": "0"}, "FLOCK OFDLCK")]
    for i, (envs, want) in enumerate(cases):
        path = str(tmp_path / ("locks%d.bs" % i))
        env = dict(child_env(), **envs)
        out = subprocess.run([sys.executable, "-c", PROC_LOCKS_CHILD, path], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == want, (envs, out.stdout)


@pytest.mark.parametrize("record", ["deltas", "base"])
def test_catch_up_keeps_what_other_commits_freed_reusable_for_readers_past_them(tmp_path,
                                                                             record):
    """A writer that catches up with commits another handle made (here in this process: the
    same path as another process's) puts the pages they freed in pending groups of the commits
    that freed them, not all in one group of the newest: a reader holding a snapshot between
    them holds back only what newer commits freed. deltas: the other handle's two commits wrote
    delta records (1 KiB pages: the base is long enough to keep them), the first frees ~250
    pages, the reader holds it, the second frees a few; base: the other handle's one commit
    rewrote the chain as a base, so the free set this handle knew keeps its place. Both
    sync=True (no fsync at the hand-over): before, every such page waited for the reader and
    the next commit grew the file by ~100 (deltas) / ~60 (base) pages."""
    path = str(tmp_path / "cu.bs")
    a = btree_store.DB(path, page_size=1024 if record == "deltas" else 4096)
    b = btree_store.DB(path)
    r = btree_store.DB(path, readonly=True)
    try:
        with a.begin(write=True) as txn:
            for i in range(6000 if record == "deltas" else 3000):
                txn.put(b"k%05d" % i, b"v" * 200)
        with a.begin(write=True) as txn:  # a free set of a's own
            if record == "deltas":
                for i in range(3000):
                    txn.delete(b"k%05d" % i)
            else:
                for i in range(1000):
                    txn.delete(b"k%05d" % i)
                for i in range(1000, 3000, 2):
                    txn.delete(b"k%05d" % i)
        for j in range(2):
            with a.begin(write=True) as txn:
                txn.put(b"a%d" % j, b"1")
        if record == "deltas":
            f0 = a.stat()["free_pages"]
            with b.begin(write=True) as txn:  # frees ~250 pages
                for i in range(3000, 4000):
                    txn.delete(b"k%05d" % i)
            assert b.stat()["free_pages"] - f0 > 200, (f0, b.stat())
        snap = a.stat()["txid"]
        held = r.begin()  # a snapshot of that commit (or of a's last one: base)
        with b.begin(write=True) as txn:
            txn.put(b"b", b"1")
        pc = a.stat()["page_count"]
        with a.begin(write=True) as txn:
            st = a.stat()  # the free set as caught up
            assert st["readers"] >= 1 and st["oldest_reader"] == snap, st
            assert st["pinned_pages"] <= 12, st  # what the second (base: only) commit freed
            for i in range(2500 if record == "deltas" else 1000):  # fits in the free pages
                txn.put(b"n%05d" % i, b"w" * 200)
        assert a.stat()["page_count"] - pc <= 4, (pc, a.stat())
        held.abort()
        a.check()
    finally:
        r.close()
        b.close()
        a.close()


def test_readers_of_two_lost_commits_are_both_told(tmp_path):
    """Two losses in a row with a durable commit between them: a sync=False writer process is
    killed with its meta slot torn, a writer goes on durably from the commit before, a second
    sync=False writer is killed the same way, and writers go on again. A reader holding the
    first lost snapshot and one holding the second are both told that their snapshot was lost
    (the side file keeps a ring of lost ranges, lockfile.h lost[]); with only the newest range
    recorded, the first reader got the plain stale-page error."""
    path = str(tmp_path / "lost2.bs")
    _seed(path)
    _writer_commits(path, 3, 7)  # durable: gen 3
    db = btree_store.DB(path)
    held = []
    try:
        for k, (seed, after) in enumerate(((8, 2), (10, 30))):
            held.append(_hold_a_lost_commit(db, path, seed))

            def writer():
                _writer_commits(path, after, 20 + k)  # durable, reusing pages
                return "ok"

            status, out = fork_run(writer)
            assert status == 0 and out == "ok", out
        for txn in held:
            with pytest.raises(btree_store.CorruptionError, match="snapshot .* was lost"):
                _snapshot_ok(txn)
            txn.abort()
        held = []
        with db.begin() as txn:
            assert _snapshot_ok(txn) == (3 + 2 + 30, None)
        db.check()
    finally:
        for txn in held:
            txn.abort()
        db.close()
