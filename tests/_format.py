"""_format.py - an independent, read-only parser of the btree_store file format (csrc/format.h).

Used by tests to (a) find pages of each kind to corrupt, (b) verify invariant 3 (every page
below page_count reachable exactly once or free exactly once) without trusting the engine's
own checker, and (c) decode the whole content of a file for comparison with a model.

Layer: tests only; reads bytes, computes CRC32C with btree_store._testing.crc32c.
"""
import struct

PT_META, PT_BRANCH, PT_LEAF, PT_OVERFLOW, PT_FREELIST = 1, 2, 3, 4, 5
PH_SIZE = 32
MAGIC = b"btree_store\0\0\0\0\0"
VERSION = 2
# format version 2: every pointer carries the txid its target's header must have
BRANCH_CELL_HDR = 18          # child u64 | child txid u64 | klen u16 | key
LEAF_OVREF = 16               # overflow reference in a leaf cell: pgno u64 | txid u64
FL_NEXT, FL_NEXT_TXID, FL_NADD, FL_NDEL, FL_ENTRIES = 32, 40, 48, 52, 56
META_FL_TXID, META_LIST_N, META_LIST = 144, 152, 160


class FormatError(Exception):
    pass


def _crc32c(data):
    from btree_store import _testing
    return _testing.crc32c(data)


def u16(b, o):
    return struct.unpack_from("<H", b, o)[0]


def u32(b, o):
    return struct.unpack_from("<I", b, o)[0]


def u64(b, o):
    return struct.unpack_from("<Q", b, o)[0]


def branch_cells(page):
    """The cells of a branch page (bytes of one page): (offset in the page, child pgno, child
    txid, key) for each, in slot order."""
    out = []
    for i in range(u16(page, 6)):
        off = u16(page, PH_SIZE + 2 * i)
        klen = u16(page, off + 16)
        out.append((off, u64(page, off), u64(page, off + 8),
                    bytes(page[off + BRANCH_CELL_HDR:off + BRANCH_CELL_HDR + klen])))
    return out


def page_size_of(data):
    """Page size from whichever meta page has our magic (meta 0 sits at offset 0)."""
    for off in (0,):
        if data[off + 32:off + 48] == MAGIC:
            return u32(data, off + 52)
    raise FormatError("no magic in meta page 0")


def parse_meta(page):
    """Meta page fields, or None when its checksum, type or magic is wrong."""
    if len(page) < 144 or page[32:48] != MAGIC or page[4] != PT_META:
        return None
    if _crc32c(page[4:]) != u32(page, 0):
        return None

    def brec(o):
        return dict(root=u64(page, o), count=u64(page, o + 8), depth=u32(page, o + 16),
                    txid=u64(page, o + 24))

    nlist = u32(page, META_LIST_N)
    if nlist > commit_list_cap(len(page)):  # the engine rejects such a meta (format.h)
        return None
    return dict(
        txid=u64(page, 16), pgno=u64(page, 8), version=u32(page, 48), page_size=u32(page, 52),
        page_count=u64(page, 56), fl_head=u64(page, 64), fl_count=u64(page, 72),
        fl_head_txid=u64(page, META_FL_TXID), default=brec(80), catalog=brec(112),
        # single-fsync commits list (pgno, crc) of every page they wrote; empty for two-sync
        commit_list=[(u64(page, META_LIST + 12 * i), u32(page, META_LIST + 8 + 12 * i))
                     for i in range(nlist)],
    )


class Layout:
    """Parse a whole database file image (bytes).

    Attributes after parsing:
      page_size, metas [meta0 or None, meta1 or None], meta (the newest valid one),
      kinds: dict pgno -> kind, one of "meta", "branch", "leaf", "overflow", "overflow-cont",
             "freelist", "catalog-branch", "catalog-leaf", "free"
      owner: dict pgno -> bucket name (None = default bucket, "" = catalog) for tree pages
      contents: dict bucket (None = default) -> {key: value}
      problems: list of invariant violations found (empty = clean)
    """

    def __init__(self, data, use_meta=None, verify_crc=True):
        self.data = bytes(data)
        self.page_size = P = page_size_of(self.data)
        self.verify_crc = verify_crc
        self.metas = [parse_meta(self.data[i * P:(i + 1) * P]) for i in (0, 1)]
        valid = [m for m in self.metas if m is not None]
        if not valid:
            raise FormatError("no valid meta page")
        if use_meta is not None:
            self.meta = self.metas[use_meta]
        else:
            self.meta = max(valid, key=lambda m: m["txid"])
        self.page_count = self.meta["page_count"]
        self.kinds = {0: "meta", 1: "meta"}
        self.owner = {}
        self.problems = []
        self.contents = {}
        self.overflow_runs = []  # (first pgno, npages, bucket)
        self.overflow_len = {}   # first pgno -> value length
        self._walk()

    # -- helpers --
    def page(self, pgno, n=1):
        P = self.page_size
        return self.data[pgno * P:(pgno + n) * P]

    def _claim(self, pgno, kind, owner=None):
        if not (2 <= pgno < self.page_count):
            self.problems.append("page %d (%s) outside [2, %d)" % (pgno, kind, self.page_count))
            return False
        if pgno in self.kinds:
            self.problems.append("page %d claimed twice (%s and %s)" % (pgno, self.kinds[pgno], kind))
            return False
        self.kinds[pgno] = kind
        if owner is not None or kind.startswith(("branch", "leaf", "overflow")):
            self.owner[pgno] = owner
        return True

    def _check_page(self, pgno, want_type, want_txid=None):
        pg = self.page(pgno)
        if len(pg) < self.page_size:
            self.problems.append("page %d past end of file" % pgno)
            return None
        if want_txid is not None and u64(pg, 16) != want_txid:
            self.problems.append("page %d txid %d, its pointer expects %d (stale)"
                                 % (pgno, u64(pg, 16), want_txid))
        if pg[4] != want_type:
            self.problems.append("page %d type %d, expected %d" % (pgno, pg[4], want_type))
            return None
        if u64(pg, 8) != pgno:
            self.problems.append("page %d header says pgno %d" % (pgno, u64(pg, 8)))
        if self.verify_crc and want_type != PT_OVERFLOW and _crc32c(pg[4:]) != u32(pg, 0):
            self.problems.append("page %d bad checksum" % pgno)
        return pg

    def _walk_tree(self, root, depth, bucket, catalog=False, root_txid=None):
        """Walk one B+tree; returns {key: value} (catalog: {name: bucket record})."""
        out = {}
        if root == 0:
            return out
        prefix = "catalog-" if catalog else ""
        stack = [(root, depth, root_txid)]
        items = []
        while stack:
            pgno, d, want = stack.pop()
            t = self.page(pgno)[4:5]
            is_branch = t == bytes([PT_BRANCH])
            if not self._claim(pgno, prefix + ("branch" if is_branch else "leaf"), bucket):
                continue
            pg = self._check_page(pgno, PT_BRANCH if is_branch else PT_LEAF, want)
            if pg is None:
                continue
            n = u16(pg, 6)
            if is_branch:
                kids = [(u64(pg, u16(pg, 32 + 2 * i)), u64(pg, u16(pg, 32 + 2 * i) + 8))
                        for i in range(n)]
                for c, ctx in reversed(kids):
                    stack.append((c, d - 1, ctx))
            else:
                if d != 1:
                    self.problems.append("leaf %d at depth %d" % (pgno, d))
                for i in range(n):
                    c = u16(pg, 32 + 2 * i)
                    klen, flags, vlen = u16(pg, c), pg[c + 2], u32(pg, c + 4)
                    key = pg[c + 8:c + 8 + klen]
                    if flags & 1:
                        ov = u64(pg, c + 8 + klen)
                        val = self._overflow(ov, vlen, bucket, u64(pg, c + 16 + klen))
                    else:
                        val = pg[c + 8 + klen:c + 8 + klen + vlen]
                    items.append((key, val))
        keys = [k for k, _ in items]
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            self.problems.append("bucket %r: keys not strictly ascending" % (bucket,))
        out = dict(items)
        return out

    def _overflow(self, first, vlen, bucket, want_txid=None):
        P = self.page_size
        n = (PH_SIZE + vlen + P - 1) // P
        self.overflow_runs.append((first, n, bucket))
        self.overflow_len[first] = vlen
        ok = self._claim(first, "overflow", bucket)
        for p in range(first + 1, first + n):
            ok = self._claim(p, "overflow-cont", bucket) and ok
        run = self.page(first, n)
        if len(run) < n * P:
            self.problems.append("overflow run %d past end of file" % first)
            return None
        if run[4] != PT_OVERFLOW or u32(run, 24) != n or u32(run, 28) != vlen:
            self.problems.append("overflow run %d bad header" % first)
        if want_txid is not None and u64(run, 16) != want_txid:
            self.problems.append("overflow run %d txid %d, its pointer expects %d (stale)"
                                 % (first, u64(run, 16), want_txid))
        # the run's checksum covers [4, 32 + vlen): the padding after the value is not covered
        if self.verify_crc and _crc32c(run[4:PH_SIZE + vlen]) != u32(run, 0):
            self.problems.append("overflow run %d bad checksum" % first)
        return run[PH_SIZE:PH_SIZE + vlen]

    def _walk(self):
        m = self.meta
        self.contents[None] = self._walk_tree(m["default"]["root"], m["default"]["depth"], None,
                                              root_txid=m["default"]["txid"])
        if len(self.contents[None]) != m["default"]["count"]:
            self.problems.append("default bucket count %d != %d entries"
                                 % (m["default"]["count"], len(self.contents[None])))
        cat = self._walk_tree(m["catalog"]["root"], m["catalog"]["depth"], "", catalog=True,
                              root_txid=m["catalog"]["txid"])
        self.catalog = {}
        for name, rec in cat.items():
            name = name.decode("utf-8", "replace")
            root, count, depth, rtx = u64(rec, 0), u64(rec, 8), u32(rec, 16), u64(rec, 24)
            self.catalog[name] = dict(root=root, count=count, depth=depth, txid=rtx)
            self.contents[name] = self._walk_tree(root, depth, name, root_txid=rtx)
            if len(self.contents[name]) != count:
                self.problems.append("bucket %r count %d != %d entries"
                                     % (name, count, len(self.contents[name])))
        # freelist chain
        self.free = []
        self.freelist_pages = []
        records = []
        pgno, want, seen = m["fl_head"], m["fl_head_txid"], 0
        while pgno:
            if not self._claim(pgno, "freelist"):
                break
            self.freelist_pages.append(pgno)
            pg = self._check_page(pgno, PT_FREELIST, want)
            if pg is None:
                break
            # records from the newest to the base: the newest mention of a page decides
            nadd, ndel = u32(pg, FL_NADD), u32(pg, FL_NDEL)
            adds = [u64(pg, FL_ENTRIES + 8 * i) for i in range(nadd)]
            dels = [u64(pg, FL_ENTRIES + 8 * (nadd + i)) for i in range(ndel)]
            records.append((adds, dels))
            pgno, want = u64(pg, FL_NEXT), u64(pg, FL_NEXT_TXID)
            seen += 1
            if seen > self.page_count:
                self.problems.append("freelist chain loops")
                break
        decided = set()
        for adds, dels in records:
            for p in adds:
                if p not in decided:
                    decided.add(p)
                    self.free.append(p)
            decided.update(dels)
        if len(self.free) != m["fl_count"]:
            self.problems.append("freelist holds %d pages, meta says %d" % (len(self.free), m["fl_count"]))
        for p in self.free:
            self._claim(p, "free")
        missing = [p for p in range(2, self.page_count) if p not in self.kinds]
        if missing:
            self.problems.append("%d pages neither reachable nor free (leaked), e.g. %s"
                                 % (len(missing), missing[:10]))

    def pages_of_kind(self, kind):
        return sorted(p for p, k in self.kinds.items() if k == kind)

    def live_pages(self):
        """Pages whose content matters for the newest state (not free, not meta)."""
        return sorted(p for p, k in self.kinds.items() if k not in ("free", "meta"))


def layout_of(path, **kw):
    with open(path, "rb") as f:
        return Layout(f.read(), **kw)


# ------------------------------------------------------------------ resealing (crafted files)
# Tests that craft hostile files change bytes and then make every checksum valid again, so
# that the damage reaches the engine's structural checks instead of its CRC check.
META_LIST_ENT = 12


COMMIT_LIST_MAX = 328  # format.h BS_COMMIT_LIST_MAX (64 before session 18)


def commit_list_cap(P):
    return min((P - META_LIST) // META_LIST_ENT, COMMIT_LIST_MAX)


def reseal_page(buf, pgno, P):
    """Recompute the CRC of page pgno in the bytearray buf (an overflow run's CRC covers
    [4, 32 + vlen) of the run). Returns the new CRC (None when the page is past the end)."""
    o = pgno * P
    if o + PH_SIZE > len(buf):
        return None
    if buf[o + 4] == PT_OVERFLOW:
        end = min(o + PH_SIZE + u32(buf, o + 28), len(buf))
    else:
        end = min(o + P, len(buf))
    crc = _crc32c(bytes(buf[o + 4:end]))
    struct.pack_into("<I", buf, o, crc)
    return crc


def reseal_meta(buf, slot, P, lists=True):
    """Reseal meta page `slot`: with lists, every commit-list entry first takes the CRC its
    page now carries (so a commit whose listed pages were changed still validates)."""
    o = slot * P
    if o + P > len(buf) or bytes(buf[o + 32:o + 48]) != MAGIC:
        return
    if lists:
        n = min(u32(buf, o + META_LIST_N), commit_list_cap(P))
        for i in range(n):
            e = o + META_LIST + META_LIST_ENT * i
            pg = u64(buf, e)
            if pg * P + 4 <= len(buf):
                struct.pack_into("<I", buf, e + 8, u32(buf, pg * P))
    struct.pack_into("<I", buf, o, _crc32c(bytes(buf[o + 4:o + P])))


def reseal(buf, P, pages=(), lists=True):
    """Reseal the given pages, then both meta pages (see reseal_meta)."""
    for p in pages:
        if p >= 2:
            reseal_page(buf, p, P)
    for slot in (0, 1):
        reseal_meta(buf, slot, P, lists)
