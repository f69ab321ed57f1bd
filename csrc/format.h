/*
 * format.h - the on-disk format of a btree_store file, and inline accessors for it.
 *
 * Layer: engine (bottom). Includes only the C library. Every other engine file that
 * reads or writes page bytes does so through the accessors below; nobody else hard-codes
 * an offset. All integers are little-endian, fixed width. P = page size (a power of two,
 * 1024..65536, fixed at creation and stored in the meta pages).
 *
 * FILE:  page 0 and page 1 are the two meta pages; every other page (2 .. page_count-1) is a
 *        branch, leaf, overflow or freelist page, or free. Bytes past page_count*P are junk
 *        left by a crash and are ignored (and reused as the file grows again).
 *
 * COMMON PAGE HEADER (every page, 32 bytes)
 *   OFFSET SIZE MEANING
 *     0     4   CRC32C (Castagnoli) of bytes [4, P) of the page; for an overflow run, of
 *               bytes [4, 32 + vlen) of the run (the padding after the value is not covered)
 *     4     1   page type: 1 meta, 2 branch, 3 leaf, 4 overflow, 5 freelist
 *     5     1   flags (0; reserved)
 *     6     2   nkeys: number of slots (branch, leaf); 0 otherwise
 *     8     8   pgno: the page's own number (catches misdirected writes)
 *    16     8   txid: id of the transaction that wrote the page
 *    24     4   branch/leaf: upper = offset where the cell area starts (cells lie in [upper, P))
 *               overflow: npages of the run;  freelist: number of entries on this page
 *    28     4   branch/leaf: frag = dead bytes inside [upper, P) left by removed cells
 *               overflow: length of the value in bytes;  freelist, meta: 0
 *
 * BRANCH AND LEAF PAGES (slotted pages)
 *    32   2*n   slot array: u16 offset of cell i, cells in ascending key order
 *   ...         free gap up to `upper`, then the cells
 *   Keys compare as unsigned bytes (memcmp), a shorter key before its extensions.
 *   Branch cell:  OFFSET SIZE MEANING
 *                   0     8   child pgno
 *                   8     8   child txid: the txid the child page's header must carry
 *                  16     2   klen
 *                  18  klen   key
 *                 Cell 0's key is ignored and stored empty (it stands for minus infinity);
 *                 child i holds the keys k with key_i <= k < key_{i+1}.
 *   Leaf cell:    OFFSET SIZE MEANING
 *                   0     2   klen
 *                   2     1   flags (bit 0: the value lives in an overflow run)
 *                   3     1   0
 *                   4     4   vlen
 *                   8  klen   key
 *                   -  vlen   the value inline, or (overflow) 16 bytes: u64 first pgno of the
 *                             run | u64 txid its header must carry (the run's length in
 *                             pages is derived from vlen)
 *
 * OVERFLOW RUN (n = ceil((32 + vlen) / P) contiguous pages)
 *    32  vlen   the value bytes, spanning the run; the common header appears only on the
 *               first page. Pages 2..n of the run have no header of their own.
 *
 * FREELIST PAGE (a chain from the meta's fl_head; each commit that changes the free set
 *                prepends a delta record; every so often a commit writes a complete base)
 *    32     8   next freelist page (0 = end of chain)
 *    40     8   txid the next page's header must carry (0 when next is 0)
 *    48     4   nadd: page numbers this record puts on the freelist
 *    52     4   ndel: page numbers this record takes off it
 *    56   8*(nadd+ndel)  the page numbers, the nadd first
 *    header flags bit 0 (FL_F_BASE): a base record, a complete list (ndel = 0); a base is the
 *    tail of the chain. The free set is the chain replayed from the tail to the head: the
 *    newest record that mentions a page decides whether it is free. The add and del lists of
 *    one commit are disjoint, so their split over several pages does not matter.
 *
 * META PAGE (pgno 0 and 1; the one with the higher valid txid whose commit list checks out
 *            wins; a commit is written to the meta page that does NOT hold the newest durable
 *            commit, so that one survives any power cut until a newer commit is durable)
 *    32    16   magic "btree_store\0\0\0\0\0"
 *    48     4   format version (BS_FORMAT_VERSION)
 *    52     4   page size P
 *    56     8   page_count: the high-water mark; pages [0, page_count) are in use or free
 *    64     8   freelist head pgno (0 = empty)
 *    72     8   number of free page numbers stored in the freelist chain
 *    80    32   default bucket record (below)
 *   112    32   catalog record: the tree of named buckets (name -> bucket record)
 *   144     8   txid the freelist head page's header must carry (0 when the head is 0)
 *   152     4   n = number of entries in the commit list (0: a two-sync commit)
 *   156     4   0
 *   160  12*n   commit list: u64 pgno | u32 CRC32C of every page this commit references that
 *               was written since the newest durable commit (its own pages, and those of
 *               earlier sync=False commits it still references). A commit
 *               made with one fsync (data and meta together) is valid only if every listed
 *               page has that CRC and a txid no newer than the meta; otherwise opening falls back
 *               to the other meta page. n <= fmt_commit_list_cap(P) (at most 328, see there).
 *     -     -   zero up to P
 *
 * BUCKET RECORD (32 bytes; in the meta page, and as the value of each catalog entry)
 *     0     8   root pgno (0 = empty tree that has no page yet)
 *     8     8   number of entries (keys)
 *    16     4   depth (0 when root is 0; 1 = the root is a leaf)
 *    20     4   flags (0)
 *    24     8   txid the root page's header must carry (0 when root is 0)
 *
 * PARENTS VOUCH FOR THEIR CHILDREN (format version 2)
 *   A page's own header (CRC, pgno, txid) proves that it is *a* page once written at its
 *   place, not that it is the version its parent means: an older, valid image (a lost write,
 *   a stale cache in the storage stack, a page restored from a backup) vouches for itself just
 *   as well. So every pointer to a page also records the txid that page's header must carry:
 *   branch cells, bucket records (meta and catalog), overflow references, the freelist chain's
 *   next links and the meta's freelist head. The pager compares the header with the pointer
 *   whenever it hands out a page reached through one (disk read or cache hit; a cache hit that
 *   mismatches is reread from the file once, which also keeps several processes' caches
 *   coherent when a page number is reused) and reports a mismatch as BS_CORRUPT naming the
 *   page, the pointer's page and both txids. Reads also check that a node's keys lie within
 *   the separators its parent gives it (search and cursors check the first and last key of
 *   each node against the bounds they descended through; check() checks every key).
 *
 *   Why the txid and not a checksum of the child (a Merkle tree, as redb does): the writer
 *   copies pages top-down and knows a page's txid when it makes the pointer (it is the
 *   writing transaction's own txid), while a child checksum is known only once the child's
 *   bytes are final, which for a spilled page or a deferred rebalance is long after its
 *   parent was changed: it would need a bottom-up pass over every dirty path at commit and a
 *   parent rewrite for every spill. The txid costs 8 bytes per pointer and one compare.
 *
 *   Cost (measured at 4096-byte pages, 16-byte keys, 1M keys inserted in order, 8-byte values):
 *   a branch cell grows from 10 + klen to 18 + klen bytes, so a branch page holds 113 children
 *   instead of 146 (-23%); 8404 leaves then need 76 branch pages instead of 59 and the tree
 *   stays at depth 3 (depth 4 comes at about 113^2 = 12.8k leaves instead of 21k). Leaf pages
 *   are unchanged except for overflow references (16 bytes instead of 8). Each page handed
 *   out through a pointer costs one 8-byte compare, and a descent two key compares per level
 *   for the range check. bench/NOTES-format-v2.md has the numbers and how they were taken.
 *
 *   What it detects: any page image older than the transaction that last wrote the page as
 *   its parent knows it: a lost write of a committed page, a page whose number was freed and
 *   reused (the old image has an older txid), a page transplanted from another place (pgno),
 *   or from another file or state whose txids differ.
 *   What it does not: two images written by the same transaction. A page written more than
 *   once in one transaction (spilled, then changed and written again at commit; written,
 *   freed and reused inside the transaction; rewritten after a savepoint rollback) has the
 *   same txid every time, so losing the later write leaves an image its parent accepts. Such
 *   a commit is still caught by the commit list when it used one fsync; with two fsyncs the
 *   file's own sync is the only guard. Nor does it detect a whole-file rollback to an older
 *   consistent state (both meta pages lost with their data), or a page transplanted from
 *   another file that happens to carry the same pgno and txid.
 */
#ifndef BS_FORMAT_H
#define BS_FORMAT_H

#include <stdint.h>
#include <string.h>

#define BS_FORMAT_VERSION 2u
#define BS_MAGIC "btree_store\0\0\0\0\0"
#define BS_MAGIC_LEN 16
#define BS_PAGE_MIN 1024u
#define BS_PAGE_MAX 65536u
#define BS_PAGE_DEFAULT 4096u
#define BS_META_PAGES 2u

enum { PT_META = 1, PT_BRANCH = 2, PT_LEAF = 3, PT_OVERFLOW = 4, PT_FREELIST = 5 };

#define PH_CRC 0
#define PH_TYPE 4
#define PH_FLAGS 5
#define PH_NKEYS 6
#define PH_PGNO 8
#define PH_TXID 16
#define PH_UPPER 24
#define PH_FRAG 28
#define PH_SIZE 32u

#define LEAF_CELL_HDR 8u   /* klen u16, flags u8, pad u8, vlen u32 */
#define LEAF_OVREF 16u     /* overflow reference: first pgno u64, txid u64 */
#define BRANCH_CELL_HDR 18u /* child u64, child txid u64, klen u16 */
#define BC_CHILD 0
#define BC_TXID 8
#define BC_KLEN 16
#define LEAF_F_OVERFLOW 1u

#define FL_NEXT 32
#define FL_NEXT_TXID 40
#define FL_NADD 48
#define FL_NDEL 52
#define FL_ENTRIES 56
#define FL_F_BASE 1u

#define META_MAGIC 32
#define META_VERSION 48
#define META_PAGESIZE 52
#define META_PAGECOUNT 56
#define META_FL_HEAD 64
#define META_FL_COUNT 72
#define META_DEFAULT 80
#define META_CATALOG 112
#define META_FL_TXID 144
#define META_LIST_N 152
#define META_LIST 160
#define META_LIST_ENT 12u

#define BREC_ROOT 0
#define BREC_COUNT 8
#define BREC_DEPTH 16
#define BREC_FLAGS 20
#define BREC_TXID 24
#define BREC_SIZE 32u

/* ---- little-endian loads and stores (compile to plain moves on x86/arm64) ---- */
static inline uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "btree_store currently supports little-endian hosts only"
#endif

/* ---- common header ---- */
static inline uint8_t pg_type(const uint8_t *pg) { return pg[PH_TYPE]; }
static inline uint16_t pg_nkeys(const uint8_t *pg) { return get16(pg + PH_NKEYS); }
static inline uint64_t pg_pgno(const uint8_t *pg) { return get64(pg + PH_PGNO); }
static inline uint64_t pg_txid(const uint8_t *pg) { return get64(pg + PH_TXID); }
static inline uint32_t pg_upper(const uint8_t *pg) { return get32(pg + PH_UPPER); }
static inline uint32_t pg_frag(const uint8_t *pg) { return get32(pg + PH_FRAG); }
static inline void pg_set_nkeys(uint8_t *pg, uint16_t n) { put16(pg + PH_NKEYS, n); }
static inline void pg_set_upper(uint8_t *pg, uint32_t v) { put32(pg + PH_UPPER, v); }
static inline void pg_set_frag(uint8_t *pg, uint32_t v) { put32(pg + PH_FRAG, v); }

/* ---- slotted nodes ---- */
static inline uint16_t node_slot(const uint8_t *pg, unsigned i) { return get16(pg + PH_SIZE + 2 * i); }
static inline const uint8_t *node_cell(const uint8_t *pg, unsigned i) { return pg + node_slot(pg, i); }
/* free bytes between the slot array and the cell area (not counting frag) */
static inline uint32_t node_gap(const uint8_t *pg) { return pg_upper(pg) - (PH_SIZE + 2u * pg_nkeys(pg)); }

/* leaf cell fields */
static inline uint16_t lcell_klen(const uint8_t *c) { return get16(c); }
static inline uint8_t lcell_flags(const uint8_t *c) { return c[2]; }
static inline uint32_t lcell_vlen(const uint8_t *c) { return get32(c + 4); }
static inline const uint8_t *lcell_key(const uint8_t *c) { return c + LEAF_CELL_HDR; }
static inline const uint8_t *lcell_val(const uint8_t *c) { return c + LEAF_CELL_HDR + lcell_klen(c); }
static inline uint64_t lcell_ovpgno(const uint8_t *c) { return get64(lcell_val(c)); }
static inline uint64_t lcell_ovtxid(const uint8_t *c) { return get64(lcell_val(c) + 8); }
static inline uint32_t lcell_size(const uint8_t *c)
{
    return LEAF_CELL_HDR + lcell_klen(c) +
           ((lcell_flags(c) & LEAF_F_OVERFLOW) ? LEAF_OVREF : lcell_vlen(c));
}

/* branch cell fields */
static inline uint64_t bcell_child(const uint8_t *c) { return get64(c + BC_CHILD); }
static inline uint64_t bcell_txid(const uint8_t *c) { return get64(c + BC_TXID); }
static inline uint16_t bcell_klen(const uint8_t *c) { return get16(c + BC_KLEN); }
static inline const uint8_t *bcell_key(const uint8_t *c) { return c + BRANCH_CELL_HDR; }
static inline uint32_t bcell_size(const uint8_t *c) { return BRANCH_CELL_HDR + bcell_klen(c); }
/* repoint a branch cell at a (new) child and the txid that child carries */
static inline void bcell_set_child(uint8_t *c, uint64_t child, uint64_t txid)
{
    put64(c + BC_CHILD, child);
    put64(c + BC_TXID, txid);
}

/* ---- size limits derived from the page size ---- */
/* largest cell, slot included, that a node accepts: two always fit, so a split always works */
static inline uint32_t fmt_max_cell(uint32_t psize) { return (psize - PH_SIZE) / 2u; }
/* largest key: P/2 - 64 (1984 at 4096, 448 at 1024, 32704 at 65536) */
static inline uint32_t fmt_max_key(uint32_t psize) { return psize / 2u - 64u; }
/* a value is stored inline when its whole leaf cell (slot included) fits fmt_max_cell */
static inline int fmt_value_inline(uint32_t psize, size_t klen, size_t vlen)
{
    return 2u + LEAF_CELL_HDR + klen + vlen <= fmt_max_cell(psize);
}
/* pages in an overflow run holding vlen bytes */
static inline uint64_t fmt_overflow_pages(uint32_t psize, uint64_t vlen)
{
    return (PH_SIZE + vlen + psize - 1) / psize;
}
/* entries on one freelist page */
static inline uint32_t fmt_freelist_cap(uint32_t psize) { return (psize - FL_ENTRIES) / 8u; }

/* most entries a tree in a file of page_count pages can hold: every entry takes a leaf cell
 * (LEAF_CELL_HDR bytes at least) and its slot; a bucket record's count above this is corrupt */
static inline uint64_t fmt_count_max(uint32_t psize, uint64_t page_count)
{
    uint64_t pages = page_count > 2 ? page_count - 2 : 0; /* page_count <= 2^63 / psize */
    return pages * ((psize - PH_SIZE) / (2u + LEAF_CELL_HDR));
}

/* Entries of a meta page's commit list: as many as the page holds after META_LIST, at most
 * BS_COMMIT_LIST_MAX (what a 4096-byte meta holds: 72 at 1024, 157 at 2048, 328 from 4096 on).
 * The bound caps the in-memory copy of a meta (bs_meta), which every transaction holds.
 *
 * COMPATIBILITY. Until session 18 the cap was min(that, 64). A reader range-checks n against
 * the cap, so:
 *  - files written before remain fully readable and writable (their lists never exceed 64);
 *  - a file written now may hold a meta with 64 < n <= 328 (a single-sync commit of 65..328
 *    pages). An older build rejects that meta as invalid ("commit list") and falls back to
 *    the other meta page, which holds the newest durable commit before it, intact
 *    (invariant 1 of pager.c): it opens the file at that older commit (the commits since are
 *    lost if it then writes), and if both metas carry long lists it refuses the file as
 *    having no valid meta. It never reads a mixed state. So opening a file written now
 *    needs this code; there is no format version bump, since every older file is valid as
 *    it is and stays valid for older builds until this code commits to it. */
#define BS_COMMIT_LIST_MAX 328u
static inline uint32_t fmt_commit_list_cap(uint32_t psize)
{
    uint32_t n = (psize - META_LIST) / META_LIST_ENT;
    return n < BS_COMMIT_LIST_MAX ? n : BS_COMMIT_LIST_MAX;
}

/* 8 key bytes as an integer that orders as memcmp orders them (big-endian value) */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KEY_WORD(p) __builtin_bswap64(get64(p))
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define KEY_WORD(p) get64(p)
#endif

/* key order: memcmp, then length. Returns < 0, 0, > 0 (only the sign is meaningful).
 * Compares 8 bytes at a time inline (the searches call it ~25 times a lookup, and a call to
 * the C library's memcmp costs more than comparing a 16-byte key word by word). */
static inline int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
#ifdef KEY_WORD
    for (; n >= 8; n -= 8, a += 8, b += 8) {
        uint64_t x = KEY_WORD(a), y = KEY_WORD(b);
        if (x != y)
            return x < y ? -1 : 1;
    }
    for (; n; n--, a++, b++)
        if (*a != *b)
            return *a < *b ? -1 : 1;
#else
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
#endif
    return alen < blen ? -1 : (alen > blen);
}

#endif
