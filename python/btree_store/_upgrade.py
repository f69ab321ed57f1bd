"""_upgrade.py - converts a database file of on-disk format version 1 (before every pointer
carried its child's txid) into the current format: `python -m btree_store upgrade PATH`.

A pure-Python reader of version-1 pages (CRC32C verified on every page and overflow run) walks
every bucket of the newest valid meta page and writes everything, in key order, into a fresh
file through the public API; that file is synced and renamed over the original (atomic on
POSIX), optionally keeping the original as PATH + ".v1.bak".

Layer: package; uses btree_store.DB and btree_store._testing.crc32c; no engine code for v1.
"""
import os
import struct

MAGIC = b"btree_store\0\0\0\0\0"
PT_META, PT_BRANCH, PT_LEAF, PT_OVERFLOW = 1, 2, 3, 4


class UpgradeError(Exception):
    pass


def _u16(b, o):
    return struct.unpack_from("<H", b, o)[0]


def _u32(b, o):
    return struct.unpack_from("<I", b, o)[0]


def _u64(b, o):
    return struct.unpack_from("<Q", b, o)[0]


class _V1:
    def __init__(self, f):
        from ._testing import crc32c
        self.crc = crc32c
        self.f = f
        head = self._read(0, 64)
        if head[32:48] != MAGIC:
            raise UpgradeError("not a btree_store database (no magic)")
        self.P = _u32(head, 52)
        if self.P < 1024 or self.P > 65536 or self.P & (self.P - 1):
            raise UpgradeError("bad page size %d" % self.P)
        metas = []
        for slot in (0, 1):
            pg = self._read(slot * self.P, self.P)
            if (len(pg) == self.P and pg[32:48] == MAGIC and pg[4] == PT_META and
                    _u64(pg, 8) == slot and self.crc(pg[4:]) == _u32(pg, 0)):
                metas.append(pg)
        if not metas:
            raise UpgradeError("no valid meta page")
        m = max(metas, key=lambda pg: _u64(pg, 16))
        self.version = _u32(m, 48)
        self.page_count = _u64(m, 56)
        self.default = (_u64(m, 80), _u32(m, 96))
        self.catalog = (_u64(m, 112), _u32(m, 128))

    def _read(self, off, n):
        self.f.seek(off)
        return self.f.read(n)

    def page(self, pgno, want):
        if not 2 <= pgno < self.page_count:
            raise UpgradeError("page %d out of range" % pgno)
        pg = self._read(pgno * self.P, self.P)
        if len(pg) < self.P or self.crc(pg[4:]) != _u32(pg, 0) or _u64(pg, 8) != pgno:
            raise UpgradeError("page %d: checksum or page number wrong" % pgno)
        if pg[4] != want:
            raise UpgradeError("page %d: type %d, expected %d" % (pgno, pg[4], want))
        return pg

    def overflow(self, first, vlen):
        run = self._read(first * self.P, 32 + vlen)
        if (len(run) < 32 + vlen or run[4] != PT_OVERFLOW or _u64(run, 8) != first or
                _u32(run, 28) != vlen or self.crc(run[4:]) != _u32(run, 0)):
            raise UpgradeError("overflow run at page %d is damaged" % first)
        return run[32:]

    def items(self, root, depth):
        """(key, value) of one tree, in key order."""
        if not root:
            return
        stack = [(root, depth)]
        steps = 0
        while stack:
            pgno, d = stack.pop()
            steps += 1
            if steps > self.page_count or d < 1:
                raise UpgradeError("tree at page %d is malformed" % root)
            if d > 1:
                pg = self.page(pgno, PT_BRANCH)
                kids = [_u64(pg, _u16(pg, 32 + 2 * i)) for i in range(_u16(pg, 6))]
                stack.extend((c, d - 1) for c in reversed(kids))
                continue
            pg = self.page(pgno, PT_LEAF)
            for i in range(_u16(pg, 6)):
                c = _u16(pg, 32 + 2 * i)
                klen, flags, vlen = _u16(pg, c), pg[c + 2], _u32(pg, c + 4)
                key = pg[c + 8:c + 8 + klen]
                if flags & 1:
                    val = self.overflow(_u64(pg, c + 8 + klen), vlen)
                else:
                    val = pg[c + 8 + klen:c + 8 + klen + vlen]
                yield key, val


def upgrade(path, backup=False, chunk=10000):
    """Rewrite the version-1 file at path in the current format; returns the number of
    entries copied. The original is replaced atomically (kept as path + '.v1.bak' if
    backup)."""
    import btree_store
    with open(path, "rb") as f:
        v1 = _V1(f)
        if v1.version != 1:
            raise UpgradeError("%s is format version %d, not 1: nothing to upgrade"
                               % (path, v1.version))
        tmp = path + ".upgrade-tmp"
        if os.path.exists(tmp):
            os.remove(tmp)
        n = 0
        db = btree_store.DB(tmp, page_size=v1.P)
        try:
            buckets = [(None, v1.default)]
            for name, rec in v1.items(*v1.catalog):
                if len(rec) != 32:
                    raise UpgradeError("catalog entry %r is damaged" % (name,))
                buckets.append((name.decode("utf-8"), (_u64(rec, 0), _u32(rec, 16))))
            for name, (root, depth) in buckets:
                txn = db.begin(write=True)
                try:
                    if name is not None:
                        txn.create_bucket(name)
                    k = 0
                    for key, val in v1.items(root, depth):
                        txn.put(key, val, bucket=name)
                        n += 1
                        k += 1
                        if k % chunk == 0:
                            txn.commit()
                            txn = db.begin(write=True)
                    txn.commit()
                finally:
                    if not txn.closed:
                        txn.abort()
            db.check()
        except BaseException:
            db.close()
            os.remove(tmp)
            raise
        db.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if backup:
        os.link(path, path + ".v1.bak")
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return n
