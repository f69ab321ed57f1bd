"""_crafted.py - the crafted-file fuzzer: real databases mutated with every checksum resealed.

A corpus of real files (several states of one database, and another database) is built by the
engine; each case (a seed) takes one state and applies 1..3 mutations: whole pages transplanted
between states of the same file and between files, header fields, cells (offsets, lengths,
page numbers, txids, key order), freelist records, overflow headers, meta fields, commit lists
and catalog records edited; then every changed page and both meta pages are resealed
(tests/_format.py: reseal), commit lists included, so the damage gets past the CRC checks.
Each mutated file runs a fixed workload: open, every bucket iterated both ways, every key
read, counts, stat, check(), a write transaction (puts, deletes, overflow values, a bucket
created and one dropped, commit), the reads again, reopen, reads and check() again. Only
btree_store.Error subclasses may come out: any other exception, a crash or a hang fails.

Cases run in a child process (run_batches): a crash or a hang there is reported with the seed
of the case and the parent starts a new child after it. Replay one case in the foreground:
    PYTHONPATH=python python tests/_crafted.py SEED

Layer: tests only; the public Python API of btree_store and tests/_format.py.
"""
import faulthandler
import os
import random
import struct
import subprocess
import sys
import tempfile
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import btree_store  # noqa: E402
from _format import (FL_ENTRIES, PT_BRANCH, PT_FREELIST, PT_LEAF, PT_OVERFLOW,  # noqa: E402
                     Layout, reseal, u16, u32, u64)

P = 1024
CASE_TIMEOUT = 60   # seconds one case may take before the child counts as hung
STATES = {}         # name -> (bytes, Layout or None), filled by load_corpus


# ------------------------------------------------------------------ the corpus
def _snap(path, d, name):
    with open(path, "rb") as f:
        data = f.read()
    with open(os.path.join(d, name + ".img"), "wb") as f:
        f.write(data)


def build_corpus(d):
    """Images a0..a4 (one database after each of its commits) and b0..b2 (another one)."""
    rnd = random.Random(1234)
    pa = os.path.join(d, "a.bs")
    with btree_store.DB(pa, page_size=P) as db:
        with db.begin(write=True) as txn:
            for i in range(500):
                txn.put(b"key%05d" % i, rnd.randbytes(rnd.randint(3, 70)))
            for i in range(5):
                txn.put(b"ov%d" % i, rnd.randbytes(rnd.randint(1100, 4000)))
            for b in ("one", "two", "three"):
                txn.create_bucket(b)
                for i in range(120):
                    txn.put(b"%s%04d" % (b.encode(), i), rnd.randbytes(rnd.randint(3, 50)),
                            bucket=b)
                txn.put(b"big", rnd.randbytes(2500), bucket=b)
            for i in range(30):
                txn.create_bucket("fill-%02d-%s" % (i, "z" * 25))
        _snap(pa, d, "a0")
        with db.begin(write=True) as txn:
            for i in range(0, 500, 3):
                txn.delete(b"key%05d" % i)
            txn.delete(b"ov1")
            for i in range(0, 120, 2):
                txn.delete(b"one%04d" % i, bucket="one")
        _snap(pa, d, "a1")
        with db.begin(write=True, sync=False) as txn:  # a commit with a commit list
            txn.put(b"key00001", b"changed")
            txn.put(b"new", b"n" * 30, bucket="two")
        _snap(pa, d, "a2")
        with db.begin(write=True) as txn:
            txn.drop_bucket("three")
            for i in range(1, 500, 5):
                txn.put(b"key%05d" % i, rnd.randbytes(20))
            txn.put(b"ov9", rnd.randbytes(5000))
        _snap(pa, d, "a3")
        with db.begin(write=True) as txn:
            for i in range(2, 500, 7):
                txn.delete(b"key%05d" % i)
            for i in range(10):
                txn.drop_bucket("fill-%02d-%s" % (i, "z" * 25))
        _snap(pa, d, "a4")
    pb = os.path.join(d, "b.bs")
    with btree_store.DB(pb, page_size=P) as db:
        with db.begin(write=True) as txn:
            for i in range(300):
                txn.put(b"other%04d" % i, rnd.randbytes(rnd.randint(10, 90)))
            txn.create_bucket("one")
            for i in range(200):
                txn.put(b"one%04d" % i, rnd.randbytes(15), bucket="one")
            txn.put(b"bigb", rnd.randbytes(3000))
        _snap(pb, d, "b0")
        with db.begin(write=True) as txn:
            for i in range(0, 300, 2):
                txn.delete(b"other%04d" % i)
        _snap(pb, d, "b1")
        with db.begin(write=True) as txn:
            txn.create_bucket("bee")
            for i in range(50):
                txn.put(b"x%d" % i, b"y" * i, bucket="bee")
        _snap(pb, d, "b2")
    os.remove(pa)
    os.remove(pb)


def load_corpus(d):
    STATES.clear()
    for name in sorted(os.listdir(d)):
        if name.endswith(".img"):
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            STATES[name[:-4]] = (data, Layout(data))


# ------------------------------------------------------------------ mutations
def _pages(lay, *kinds):
    return [p for p, k in lay.kinds.items() if k in kinds]


def _any_page(rnd, lay):
    return rnd.choice(sorted(lay.kinds))


def _value(rnd, old, lay, width):
    """An interesting value for a field of `width` bytes that held `old`."""
    pc, tx = lay.page_count, lay.meta["txid"]
    cands = [0, 1, 2, old + 1, old - 1, old * 2, old ^ (1 << rnd.randrange(8 * width)),
             pc, pc - 1, pc + 1, tx, tx + 1, tx - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 32 - 1,
             2 ** 31, 2 ** 16 - 1, P, P - 1, P + 1, rnd.getrandbits(8 * width),
             _any_page(rnd, lay), rnd.randrange(64)]
    return rnd.choice(cands) % (1 << (8 * width))


def _put(buf, off, width, v):
    struct.pack_into({1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[width], buf, off, v)


def _get(buf, off, width):
    return struct.unpack_from({1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[width], buf, off)[0]


def _edit(rnd, buf, lay, off, width):
    if off + width <= len(buf):
        _put(buf, off, width, _value(rnd, _get(buf, off, width), lay, width))


def m_transplant(rnd, buf, lay, name):
    """A whole page (or run) from another state of the same file or from another file."""
    same = [n for n in STATES if n[0] == name[0] and n != name]
    other = [n for n in STATES if n[0] != name[0]]
    src = rnd.choice(same if (same and rnd.random() < 0.6) else other)
    sdata, slay = STATES[src]
    sp = rnd.choice([p for p in slay.kinds if p >= 2])
    n = 1
    if slay.kinds[sp] == "overflow":
        n = (32 + slay.overflow_len.get(sp, 0) + P - 1) // P
    dp = sp if rnd.random() < 0.5 else rnd.choice([p for p in lay.kinds if p >= 2])
    chunk = bytearray(sdata[sp * P:(sp + n) * P])
    if rnd.random() < 0.6 and len(chunk) >= 16:
        struct.pack_into("<Q", chunk, 8, dp)  # make it claim its new place
    end = dp * P + len(chunk)
    if end > len(buf):
        buf.extend(bytes(end - len(buf)))
    buf[dp * P:end] = chunk
    return [dp]


def m_swap(rnd, buf, lay, name):
    """Two pages of the file exchanged, each claiming its new place."""
    a, b = rnd.sample([p for p in lay.kinds if p >= 2], 2)
    pa, pb = bytearray(buf[a * P:(a + 1) * P]), bytearray(buf[b * P:(b + 1) * P])
    struct.pack_into("<Q", pa, 8, b)
    struct.pack_into("<Q", pb, 8, a)
    buf[a * P:(a + 1) * P], buf[b * P:(b + 1) * P] = pb, pa
    return [a, b]


HEADER = [(4, 1), (5, 1), (6, 2), (8, 8), (16, 8), (24, 4), (28, 4)]


def m_header(rnd, buf, lay, name):
    p = rnd.choice([p for p in lay.kinds if p >= 2])
    off, w = rnd.choice(HEADER)
    _edit(rnd, buf, lay, p * P + off, w)
    return [p]


def _cells(buf, p):
    o = p * P
    n = min(u16(buf, o + 6), (P - 32) // 2)
    return [o + u16(buf, o + 32 + 2 * i) for i in range(n) if u16(buf, o + 32 + 2 * i) < P - 18]


def m_cell(rnd, buf, lay, name):
    nodes = _pages(lay, "branch", "leaf", "catalog-branch", "catalog-leaf")
    p = rnd.choice(nodes)
    o = p * P
    n = u16(buf, o + 6)
    cells = _cells(buf, p)
    what = rnd.randrange(6)
    if what == 0 and n:  # a slot offset
        _edit(rnd, buf, lay, o + 32 + 2 * rnd.randrange(n), 2)
    elif what == 1 and n >= 2:  # key order: two slots exchanged, or one duplicated
        i, j = rnd.sample(range(n), 2)
        si, sj = u16(buf, o + 32 + 2 * i), u16(buf, o + 32 + 2 * j)
        _put(buf, o + 32 + 2 * i, 2, sj)
        if rnd.random() < 0.7:
            _put(buf, o + 32 + 2 * j, 2, si)
    elif what == 2 and cells:  # a key byte
        c = rnd.choice(cells)
        hdr = 18 if buf[o + 4] == PT_BRANCH else 8
        klen = u16(buf, c + (16 if hdr == 18 else 0))
        if klen and c + hdr + klen <= o + P:
            k = c + hdr + rnd.randrange(klen)
            buf[k] = rnd.randrange(256)
    elif cells:
        c = rnd.choice(cells)
        if buf[o + 4] == PT_BRANCH:
            off, w = rnd.choice([(0, 8), (8, 8), (16, 2)])
            _edit(rnd, buf, lay, c + off, w)
        else:
            klen = u16(buf, c)
            fields = [(0, 2), (2, 1), (3, 1), (4, 4)]
            if buf[c + 2] & 1:
                fields += [(8 + klen, 8), (16 + klen, 8)] * 2
            off, w = rnd.choice(fields)
            if c + off + w <= o + P:
                _edit(rnd, buf, lay, c + off, w)
    return [p]


def m_record(rnd, buf, lay, name):
    """A bucket record in the catalog (the value of a catalog leaf cell)."""
    leaves = _pages(lay, "catalog-leaf")
    if not leaves:
        return m_meta(rnd, buf, lay, name)
    p = rnd.choice(leaves)
    cells = _cells(buf, p)
    if not cells:
        return [p]
    c = rnd.choice(cells)
    v = c + 8 + u16(buf, c)
    off, w = rnd.choice([(0, 8), (8, 8), (16, 4), (20, 4), (24, 8)])
    if v + off + w <= p * P + P:
        _edit(rnd, buf, lay, v + off, w)
    return [p]


def m_freelist(rnd, buf, lay, name):
    fls = lay.freelist_pages or _pages(lay, "freelist")
    if not fls:
        return m_meta(rnd, buf, lay, name)
    p = rnd.choice(fls)
    o = p * P
    n = min(u32(buf, o + 48) + u32(buf, o + 52), (P - FL_ENTRIES) // 8)
    what = rnd.randrange(5)
    if what == 0 and n:  # an entry: a page in use, a meta page, a duplicate, out of range
        i = rnd.randrange(n)
        live = lay.live_pages()
        v = rnd.choice([rnd.choice(live) if live else 0, 0, 1, lay.page_count,
                        u64(buf, o + FL_ENTRIES + 8 * rnd.randrange(n)), _any_page(rnd, lay)])
        _put(buf, o + FL_ENTRIES + 8 * i, 8, v)
    elif what == 1:
        buf[o + 5] ^= 1  # base / delta
    else:
        off, w = rnd.choice([(32, 8), (40, 8), (48, 4), (52, 4)])
        _edit(rnd, buf, lay, o + off, w)
    return [p]


def m_overflow(rnd, buf, lay, name):
    runs = _pages(lay, "overflow")
    if not runs:
        return m_header(rnd, buf, lay, name)
    p = rnd.choice(runs)
    off, w = rnd.choice([(16, 8), (24, 4), (28, 4), (8, 8), (4, 1)])
    _edit(rnd, buf, lay, p * P + off, w)
    return [p]


META = [(16, 8), (56, 8), (64, 8), (72, 8), (144, 8), (152, 4)] + \
       [(r + off, w) for r in (80, 112) for off, w in ((0, 8), (8, 8), (16, 4), (20, 4), (24, 8))]


def m_meta(rnd, buf, lay, name):
    newest = 0 if lay.metas[0] is lay.meta else 1
    slot = newest if rnd.random() < 0.8 else 1 - newest
    o = slot * P
    if rnd.random() < 0.2 and u32(buf, o + 152):  # a commit list entry
        i = rnd.randrange(min(u32(buf, o + 152), 64))
        _edit(rnd, buf, lay, o + 160 + 12 * i, 8)
    else:
        off, w = rnd.choice(META)
        _edit(rnd, buf, lay, o + off, w)
    return []


def m_byte(rnd, buf, lay, name):
    p = rnd.choice([p for p in lay.kinds if p >= 2])
    for _ in range(rnd.randint(1, 3)):
        buf[p * P + rnd.randrange(4, P)] = rnd.randrange(256)
    return [p]


MUTATORS = [(m_transplant, 4), (m_swap, 1), (m_header, 3), (m_cell, 4), (m_record, 2),
            (m_freelist, 3), (m_overflow, 1), (m_meta, 3), (m_byte, 1)]


def make_case(seed):
    """(name of the source state, mutated image, [mutator names]) for one seed."""
    rnd = random.Random(seed)
    name = rnd.choice(sorted(STATES))
    data, lay = STATES[name]
    buf = bytearray(data)
    touched, names = set(), []
    fns = [f for f, _ in MUTATORS]
    weights = [w for _, w in MUTATORS]
    for _ in range(rnd.choice((1, 1, 1, 2, 2, 3))):
        f = rnd.choices(fns, weights)[0]
        names.append(f.__name__)
        touched.update(f(rnd, buf, lay, name))
    reseal(buf, P, sorted(touched), lists=rnd.random() < 0.9)
    return name, bytes(buf), names


# ------------------------------------------------------------------ the workload
E = btree_store.Error


def _reads(db):
    names = []
    try:
        names = db.buckets()
    except E:
        pass
    try:
        db.stat()
    except E:
        pass
    try:
        with db.begin() as txn:
            try:
                len(txn)
            except E:
                pass
            for b in [None] + names[:8]:
                keys = []
                for rev in (False, True):
                    try:
                        for n, (k, v) in enumerate(txn.iter(bucket=b, reverse=rev)):
                            if not rev:
                                keys.append(bytes(k))
                            if n > 5000:
                                break
                    except E:
                        pass
                for k in keys[:200]:
                    try:
                        txn.get(k, bucket=b)
                    except E:
                        pass
                if keys:
                    try:
                        for n, _ in enumerate(txn.iter(keys[len(keys) // 2], bucket=b)):
                            if n > 20:
                                break
                    except E:
                        pass
                try:
                    txn.count(bucket=b)
                except E:
                    pass
    except E:
        pass


def _writes(db):
    with db.begin(write=True) as txn:
        names = txn.buckets()
        for b in [None] + names[:3]:
            keys = []
            for n, (k, _) in enumerate(txn.iter(bucket=b)):
                keys.append(bytes(k))
                if n > 150:
                    break
            for i, k in enumerate(keys):
                if i % 3 == 0:
                    txn.delete(k, bucket=b)
                else:
                    txn.put(k, b"w" * (i % 9 * 9), bucket=b)
            txn.put(b"ov-new", b"o" * 2500, bucket=b)
        txn.create_bucket("crafted-new")
        txn.put(b"k", b"v", bucket="crafted-new")
        if len(names) > 1:
            txn.drop_bucket(names[-1])


def workload(path, stats):
    try:
        db = btree_store.DB(path)
    except E:
        return
    stats["opened"] += 1
    try:
        _reads(db)
        try:
            db.check()
        except E:
            pass
        try:
            _writes(db)
            stats["wrote"] += 1
        except E:
            pass
        _reads(db)
    finally:
        try:
            db.close()
        except E:
            pass
    try:
        db = btree_store.DB(path)
    except E:
        return
    try:
        _reads(db)
        try:
            db.check()
        except E:
            pass
    finally:
        try:
            db.close()
        except E:
            pass


def run_case(seed, workdir, stats):
    name, data, muts = make_case(seed)
    path = os.path.join(workdir, "case.bs")
    with open(path, "wb") as f:
        f.write(data)
    workload(path, stats)
    return name, muts


# ------------------------------------------------------------------ batches in child processes
def _child(corpus_dir, workdir, first, last):
    load_corpus(corpus_dir)
    os.makedirs(workdir, exist_ok=True)
    for seed in range(first, last):
        print("START %d" % seed, flush=True)
        faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)
        stats = {"opened": 0, "wrote": 0}
        try:
            name, muts = run_case(seed, workdir, stats)
        except Exception as e:  # noqa: BLE001 - anything but btree_store.Error is a bug
            tb = traceback.format_exc().strip().splitlines()
            print("FAIL %d %r at %s" % (seed, e, " | ".join(tb[-3:])), flush=True)
            continue
        finally:
            faulthandler.cancel_dump_traceback_later()
        print("DONE %d %d %d %s %s" % (seed, stats["opened"], stats["wrote"], name,
                                       "+".join(muts)), flush=True)


def run_batches(corpus_dir, workdir, seeds, env=None, timeout=CASE_TIMEOUT):
    """Run the cases of `seeds` (a range) in child processes; returns (failures, stats)."""
    seeds = list(seeds)
    failures = []
    stats = {"cases": 0, "opened": 0, "wrote": 0, "children": 0}
    i = 0
    while i < len(seeds):
        first, last = seeds[i], seeds[-1] + 1
        stats["children"] += 1
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--batch", corpus_dir,
                              workdir, str(first), str(last)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=timeout * (last - first) + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        started = None
        for line in out.splitlines():
            w = line.split()
            if not w:
                continue
            if w[0] == "START":
                started = int(w[1])
            elif w[0] == "DONE":
                stats["cases"] += 1
                stats["opened"] += int(w[2]) > 0
                stats["wrote"] += int(w[3]) > 0
                started = None
            elif w[0] == "FAIL":
                stats["cases"] += 1
                failures.append("seed %s: %s" % (w[1], " ".join(w[2:])))
                started = None
        if p.returncode == 0 and started is None:
            break
        if started is None:  # died between cases, or before the first
            failures.append("child for seeds %d.. exited with %d: %s" % (first, p.returncode,
                                                                        err[-2000:]))
            break
        stats["cases"] += 1
        failures.append("seed %d: crashed or hung (exit %d): %s" % (started, p.returncode,
                                                                    err[-1500:]))
        i = seeds.index(started) + 1
    return failures, stats


def main(argv):
    if argv[:1] == ["--batch"]:
        _child(argv[1], argv[2], int(argv[3]), int(argv[4]))
        return 0
    seed = int(argv[0])
    with tempfile.TemporaryDirectory() as d:
        build_corpus(d)
        load_corpus(d)
        name, data, muts = make_case(seed)
        print("seed %d: state %s, mutations %s" % (seed, name, muts))
        stats = {"opened": 0, "wrote": 0}
        run_case(seed, d, stats)
        print("ok", stats)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
