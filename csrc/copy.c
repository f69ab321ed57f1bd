/*
 * copy.c - hot backup and compaction: bs_db_copy (a consistent copy of a read snapshot while a
 * writer goes on) and bs_db_compact (a packed copy swapped in for the open file).
 *
 * Layer: public C API beside db.c. It may call db.c's public functions (transactions,
 * buckets, cursors), the pager (pager_read_freelist, pager_ov_check, the epoch bracket;
 * cache_capacity of cache.h; meta_encode of meta.h), the source database's
 * own bs_io_methods (raw page reads) and the POSIX I/O table, which writes every destination
 * whatever I/O the source uses (so a database on a memory I/O table is written out as a file).
 *
 * How a copy is made
 *  1. A read transaction pins the snapshot: none of its pages is reused while it lives
 *     (architecture invariant 2), so a writer in the same process may commit meanwhile.
 *  2. The destination is written under a temporary name in the destination's directory:
 *     pages 2.. first, the two meta pages last; then fsync, rename (or link, refusing an
 *     existing file) into place, fsync of the directory. Any failure unlinks the temporary
 *     file, so a failed copy leaves nothing behind (a crash may leave a "*.tmp-*" file).
 *  3. Plain copy: pages [2, page_count) of the snapshot are read outside the page cache with
 *     the source's read_at and written as they are; pages free in the snapshot are written as
 *     zeros (a concurrent writer may be reusing them). Both meta pages name the snapshot
 *     (its txid, trees and freelist; no commit list: the copy is synced as a whole).
 *  4. Compact copy: every bucket is read in key order with a cursor and written as a fresh
 *     tree, bottom-up: leaves filled until the next cell does not fit, separators the
 *     shortest prefix that divides two leaves, one open node per level, pages numbered in the
 *     order they are written (the output is strictly sequential). Overflow values are copied
 *     run by run in chunks, their checksum verified on the way. Then the catalog of named
 *     buckets, then the metas. No free pages: page_count is exactly what was written.
 *     The cursor walk leaves and re-enters the cache epoch every COPY_BATCH entries, so a
 *     long walk does not keep every page it touched from being reclaimed.
 *  Memory is bounded: one chunk buffer and one page per tree level, whatever the size.
 *
 * bs_db_compact writes a compact copy next to the file while holding the writer lock and
 * the open lock of the side file exclusively (no other handle may have the file open: it
 * would go on with the old one), renames it over the file, closes the old handle and opens
 * the new file by its name (a memory-less I/O table without a side file opens the copy
 * before the rename instead, so the path always names a locked file). The file shrinks to its live
 * pages: this is how the free tail of a file is given back to the OS (commits themselves do
 * not truncate).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "internal.h"
#include "lockfile.h"
#include "meta.h"

#define ULL(x) ((unsigned long long)(x))
#define COPY_CHUNK (1u << 20)  /* bytes per raw read and per write */
#define COPY_BATCH 4096u       /* entries between two epoch re-entries */

/* ------------------------------------------------------------------ sequential output */

typedef struct cp_out {
    bs_file *f;
    uint32_t P;
    uint64_t pos;   /* bytes produced so far: the next page is pos / P */
    uint8_t *buf;   /* bytes [pos - n, pos) not yet written */
    size_t n, cap;
} cp_out;

static int out_flush(cp_out *o)
{
    if (!o->n)
        return BS_OK;
    int err = bs_io_posix.write_at(o->f, o->buf, o->n, o->pos - o->n);
    if (err)
        return bs_fail_io(err, "writing the copy at byte %llu", ULL(o->pos - o->n));
    o->n = 0;
    return BS_OK;
}

/* Append len bytes (NULL: zeros). */
static int out_put(cp_out *o, const void *p, size_t len)
{
    const uint8_t *s = p;
    int rc;
    while (len) {
        size_t k = o->cap - o->n < len ? o->cap - o->n : len;
        if (s) {
            memcpy(o->buf + o->n, s, k);
            s += k;
        } else {
            memset(o->buf + o->n, 0, k);
        }
        o->n += k;
        o->pos += k;
        len -= k;
        if (o->n == o->cap && (rc = out_flush(o)) != BS_OK)
            return rc;
    }
    return BS_OK;
}

/* Overwrite bytes already produced (an overflow run's checksum, known only at its end). */
static int out_patch(cp_out *o, uint64_t off, const void *p, size_t len)
{
    if (off >= o->pos - o->n) {
        memcpy(o->buf + (off - (o->pos - o->n)), p, len);
        return BS_OK;
    }
    int err = bs_io_posix.write_at(o->f, p, len, off);
    return err ? bs_fail_io(err, "writing the copy at byte %llu", ULL(off)) : BS_OK;
}

/* Both meta slots hold m (the same txid: the next commit overwrites one, the other stays). */
static int out_metas(cp_out *o, const bs_meta *m)
{
    uint32_t P = o->P;
    uint8_t *pg = malloc(2 * (size_t)P);
    if (!pg)
        return bs_fail(BS_NOMEM, "out of memory writing the copy's meta pages");
    bs_meta mm = *m;
    mm.nlist = 0; /* the copy is written and synced before it is renamed into place */
    for (mm.slot = 0; mm.slot < 2; mm.slot++)
        meta_encode(&mm, P, pg + mm.slot * P);
    int err = bs_io_posix.write_at(o->f, pg, 2 * (size_t)P, 0);
    free(pg);
    return err ? bs_fail_io(err, "writing the copy's meta pages") : BS_OK;
}

/* ------------------------------------------------------------------ plain copy */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int copy_plain(bs_txn *txn, cp_out *o, bs_meta *nm)
{
    bs_db *db = txn->db;
    uint32_t P = db->page_size;
    uint64_t npages = txn->meta.page_count;
    bs_pgvec fl = {0}, chain = {0};
    uint8_t *buf = NULL;
    int rc;
    if ((rc = bs_txn_enter(txn)) != BS_OK)
        return rc;
    rc = pager_read_freelist(txn, &txn->meta, &fl, &chain);
    bs_txn_leave(txn);
    if (rc != BS_OK)
        goto fail;
    if (fl.n)
        qsort(fl.v, fl.n, sizeof *fl.v, cmp_u64);
    size_t chunk = COPY_CHUNK / P ? COPY_CHUNK / P : 1, fi = 0;
    if (!(buf = malloc(chunk * P))) {
        rc = bs_fail(BS_NOMEM, "out of memory copying");
        goto fail;
    }
    for (uint64_t pg = BS_META_PAGES; pg < npages;) {
        size_t k = npages - pg < chunk ? (size_t)(npages - pg) : chunk, got = 0;
        int err = db->io->read_at(db->file, buf, k * P, pg * (uint64_t)P, &got);
        if (err) {
            rc = bs_fail_io(err, "reading pages %llu..%llu", ULL(pg), ULL(pg + k - 1));
            goto fail;
        }
        if (got < k * P) {
            /* pages past the end of the file are fine when free: a page allocated and freed
             * again before anything was written there (the copy gets zeros, as for any free
             * page); a page in use there means a truncated file */
            for (uint64_t q = pg + got / P; q < pg + k; q++)
                if (!fl.n || !bsearch(&q, fl.v, fl.n, sizeof *fl.v, cmp_u64)) {
                    rc = bs_fail(BS_CORRUPT,
                                 "page %llu: beyond the end of the file (file truncated?)",
                                 ULL(q));
                    goto fail;
                }
            memset(buf + got, 0, k * P - got);
        }
        for (; fi < fl.n && fl.v[fi] < pg + k; fi++)
            if (fl.v[fi] >= pg)
                memset(buf + (size_t)(fl.v[fi] - pg) * P, 0, P);
        if ((rc = out_put(o, buf, k * P)) != BS_OK)
            goto fail;
        pg += k;
    }
    *nm = txn->meta;
    nm->nlist = 0;
    rc = BS_OK;
fail:
    free(buf);
    pgvec_free(&fl);
    pgvec_free(&chain);
    return rc;
}

/* ------------------------------------------------------------------ compact copy */

typedef struct cp_level {
    uint8_t *pg;         /* the open node of this level (P bytes) */
    unsigned n;          /* its cells */
    uint32_t upper;
    uint8_t *fkey;       /* the separator leading to it (its cell 0 stores no key) */
    size_t fklen;
    uint64_t written;    /* nodes of this level written so far */
} cp_level;

typedef struct cp_build {
    cp_out *o;
    uint32_t P;
    uint64_t txid;
    cp_level lv[BS_MAX_DEPTH];
    uint64_t count;
    uint8_t *last;       /* last key added (leaf level) */
    size_t lastlen;
} cp_build;

static void build_free(cp_build *b)
{
    for (int i = 0; i < BS_MAX_DEPTH; i++) {
        free(b->lv[i].pg);
        free(b->lv[i].fkey);
    }
    free(b->last);
    memset(b, 0, sizeof *b);
}

static int build_init(cp_build *b, cp_out *o, uint64_t txid)
{
    memset(b, 0, sizeof *b);
    b->o = o;
    b->P = o->P;
    b->txid = txid;
    if (!(b->last = malloc(fmt_max_key(o->P) + 1)))
        return bs_fail(BS_NOMEM, "out of memory compacting");
    return BS_OK;
}

static int level_open(cp_build *b, int L)
{
    cp_level *lv = &b->lv[L];
    if (!lv->pg && (!(lv->pg = malloc(b->P)) || !(lv->fkey = malloc(fmt_max_key(b->P) + 1))))
        return bs_fail(BS_NOMEM, "out of memory compacting");
    memset(lv->pg, 0, b->P);
    lv->n = 0;
    lv->upper = b->P;
    return BS_OK;
}

static bool level_fits(const cp_level *lv, uint32_t size)
{
    return lv->upper >= size && PH_SIZE + 2u * (lv->n + 1) <= lv->upper - size;
}

/* Room for a cell of size bytes (level_fits said yes); returns where to write it. */
static uint8_t *level_cell(cp_level *lv, uint32_t size)
{
    lv->upper -= size;
    put16(lv->pg + PH_SIZE + 2u * lv->n, (uint16_t)lv->upper);
    lv->n++;
    return lv->pg + lv->upper;
}

/* Write the open node of level L; *pgno receives its number. */
static int level_write(cp_build *b, int L, uint64_t *pgno)
{
    cp_level *lv = &b->lv[L];
    uint8_t *pg = lv->pg;
    *pgno = b->o->pos / b->P;
    pg[PH_TYPE] = L == 0 ? PT_LEAF : PT_BRANCH;
    pg[PH_FLAGS] = 0;
    pg_set_nkeys(pg, (uint16_t)lv->n);
    put64(pg + PH_PGNO, *pgno);
    put64(pg + PH_TXID, b->txid);
    pg_set_upper(pg, lv->upper);
    pg_set_frag(pg, 0);
    put32(pg + PH_CRC, bs_page_crc(pg, b->P));
    lv->written++;
    return out_put(b->o, pg, b->P);
}

static void set_fkey(cp_level *lv, const uint8_t *key, size_t klen)
{
    memcpy(lv->fkey, key, klen);
    lv->fklen = klen;
}

/* Add (key -> child) to branch level L >= 1. */
static int branch_add(cp_build *b, int L, const uint8_t *key, size_t klen, uint64_t child)
{
    int rc;
    if (L >= BS_MAX_DEPTH)
        return bs_fail(BS_CORRUPT, "compacting: tree deeper than %d levels", BS_MAX_DEPTH);
    cp_level *lv = &b->lv[L];
    if (lv->pg && lv->n && !level_fits(lv, BRANCH_CELL_HDR + (uint32_t)klen)) {
        uint64_t pgno;
        if ((rc = level_write(b, L, &pgno)) != BS_OK ||
            (rc = branch_add(b, L + 1, lv->fkey, lv->fklen, pgno)) != BS_OK)
            return rc;
        lv->n = 0;
    }
    if (!lv->pg || !lv->n) {
        if ((rc = level_open(b, L)) != BS_OK)
            return rc;
        set_fkey(lv, key, klen);
        klen = 0; /* cell 0 stands for minus infinity */
    }
    uint8_t *c = level_cell(lv, BRANCH_CELL_HDR + (uint32_t)klen);
    bcell_set_child(c, child, b->txid); /* every page of the copy carries b->txid */
    put16(c + BC_KLEN, (uint16_t)klen);
    memcpy(c + BRANCH_CELL_HDR, key, klen);
    return BS_OK;
}

/* Add a leaf entry: an inline value (val, vlen) or an overflow run (ovpgno, vlen). */
static int leaf_add(cp_build *b, const uint8_t *key, size_t klen, const void *val, size_t vlen,
                    uint64_t ovpgno)
{
    cp_level *lv = &b->lv[0];
    uint32_t size = LEAF_CELL_HDR + (uint32_t)klen + (ovpgno ? LEAF_OVREF : (uint32_t)vlen);
    int rc;
    if (b->count && key_cmp(key, klen, b->last, b->lastlen) <= 0)
        return bs_fail(BS_CORRUPT, "compacting: keys out of order");
    if (lv->pg && lv->n && !level_fits(lv, size)) {
        uint64_t pgno;
        if ((rc = level_write(b, 0, &pgno)) != BS_OK ||
            (rc = branch_add(b, 1, lv->fkey, lv->fklen, pgno)) != BS_OK)
            return rc;
        lv->n = 0;
        /* the shortest prefix of key that is greater than the previous leaf's last key */
        size_t c = 0;
        while (c < klen && c < b->lastlen && key[c] == b->last[c])
            c++;
        if ((rc = level_open(b, 0)) != BS_OK)
            return rc;
        set_fkey(lv, key, c + 1 < klen ? c + 1 : klen);
    } else if (!lv->pg || !lv->n) {
        if ((rc = level_open(b, 0)) != BS_OK)
            return rc;
        lv->fklen = 0;
    }
    uint8_t *c = level_cell(lv, size);
    put16(c, (uint16_t)klen);
    c[2] = ovpgno ? LEAF_F_OVERFLOW : 0;
    c[3] = 0;
    put32(c + 4, (uint32_t)vlen);
    memcpy(c + LEAF_CELL_HDR, key, klen);
    if (ovpgno) {
        put64(c + LEAF_CELL_HDR + klen, ovpgno);
        put64(c + LEAF_CELL_HDR + klen + 8, b->txid); /* copy_overflow wrote the run so */
    } else if (vlen)
        memcpy(c + LEAF_CELL_HDR + klen, val, vlen);
    memcpy(b->last, key, klen);
    b->lastlen = klen;
    b->count++;
    return BS_OK;
}

/* Write the open nodes bottom-up; the only node of the highest level is the root. */
static int build_finish(cp_build *b, bs_tree *t)
{
    int rc;
    memset(t, 0, sizeof *t);
    if (!b->count)
        return BS_OK;
    for (int L = 0; L < BS_MAX_DEPTH; L++) {
        cp_level *lv = &b->lv[L];
        uint64_t pgno;
        bool root = lv->written == 0;
        if ((rc = level_write(b, L, &pgno)) != BS_OK)
            return rc;
        if (root) {
            t->root = pgno;
            t->root_txid = b->txid;
            t->depth = (uint32_t)L + 1;
            t->count = b->count;
            return BS_OK;
        }
        if ((rc = branch_add(b, L + 1, lv->fkey, lv->fklen, pgno)) != BS_OK)
            return rc;
    }
    return bs_fail(BS_CORRUPT, "compacting: tree deeper than %d levels", BS_MAX_DEPTH);
}

/* Copy the overflow run of a value to the output (verifying its checksum); *out = its first
 * page there. scratch holds COPY_CHUNK bytes. */
static int copy_overflow(bs_txn *txn, cp_out *o, uint64_t src, uint64_t srctxid, size_t len,
                         uint64_t txid, uint8_t *scratch, uint64_t *out)
{
    bs_db *db = txn->db;
    uint32_t P = o->P;
    uint8_t sh[PH_SIZE], dh[PH_SIZE];
    size_t got = 0;
    int rc, err;
    if ((rc = pager_ov_check(txn, src, srctxid, len, 0)) != BS_OK)
        return rc;
    if ((err = db->io->read_at(db->file, sh, PH_SIZE, src * (uint64_t)P, &got)) != 0)
        return bs_fail_io(err, "reading overflow page %llu", ULL(src));
    if (got < PH_SIZE)
        return bs_fail(BS_CORRUPT, "page %llu: beyond the end of the file", ULL(src));
    uint64_t n = fmt_overflow_pages(P, len), first = o->pos / P;
    memset(dh, 0, sizeof dh);
    dh[PH_TYPE] = PT_OVERFLOW;
    put64(dh + PH_PGNO, first);
    put64(dh + PH_TXID, txid);
    put32(dh + PH_UPPER, (uint32_t)n);
    put32(dh + PH_FRAG, (uint32_t)len);
    uint32_t scrc = bs_crc32c(0, sh + 4, PH_SIZE - 4), dcrc = bs_crc32c(0, dh + 4, PH_SIZE - 4);
    if ((rc = out_put(o, dh, PH_SIZE)) != BS_OK)
        return rc;
    for (size_t off = 0; off < len;) {
        size_t k = len - off < COPY_CHUNK ? len - off : COPY_CHUNK;
        err = db->io->read_at(db->file, scratch, k, src * (uint64_t)P + PH_SIZE + off, &got);
        if (err)
            return bs_fail_io(err, "reading overflow pages from %llu", ULL(src));
        if (got < k)
            return bs_fail(BS_CORRUPT, "page %llu: overflow run beyond the end of the file",
                           ULL(src));
        scrc = bs_crc32c(scrc, scratch, k);
        dcrc = bs_crc32c(dcrc, scratch, k);
        if ((rc = out_put(o, scratch, k)) != BS_OK)
            return rc;
        off += k;
    }
    if (scrc != get32(sh + PH_CRC))
        return bs_fail(BS_CORRUPT, "page %llu: overflow run checksum mismatch", ULL(src));
    if ((rc = out_put(o, NULL, (size_t)(n * P - PH_SIZE - len))) != BS_OK)
        return rc;
    uint8_t crc[4];
    put32(crc, dcrc);
    if ((rc = out_patch(o, first * P + PH_CRC, crc, 4)) != BS_OK)
        return rc;
    *out = first;
    return BS_OK;
}

/* Rewrite bucket b (NULL name = default) of txn into a packed tree; called inside enter. */
static int compact_bucket(bs_txn *txn, cp_out *o, bs_bucket *bk, uint64_t txid,
                          uint8_t *scratch, bs_tree *t)
{
    cp_build b;
    bs_cursor *cur = NULL;
    int rc;
    if ((rc = build_init(&b, o, txid)) != BS_OK)
        goto fail;
    if ((rc = bs_cursor_open(txn, bk, &cur)) != BS_OK)
        goto fail;
    unsigned batch = 0;
    for (rc = bs_cursor_seek(cur, BS_SEEK_FIRST, NULL, 0); rc == BS_OK;
         rc = bs_cursor_next(cur)) {
        bs_val k, v;
        if ((rc = bs_cursor_current(cur, &k, &v)) != BS_OK)
            goto fail;
        uint64_t ov = 0;
        if (!v.data && (rc = copy_overflow(txn, o, v.ovpgno, v.ovtxid, v.len, txid, scratch, &ov)) != BS_OK)
            goto fail;
        if ((rc = leaf_add(&b, k.data, k.len, v.data, v.len, ov)) != BS_OK)
            goto fail;
        if (++batch == COPY_BATCH) {
            /* let the cache reclaim what this walk has passed (the cursor keeps page
             * numbers, not pointers) */
            batch = 0;
            pager_leave(txn);
            pager_enter(txn);
        }
    }
    if (rc != BS_NOTFOUND)
        goto fail;
    if (b.count != bk->tree.count) {
        rc = bs_fail(BS_CORRUPT, "compacting: the bucket records %llu entries, %llu found",
                     ULL(bk->tree.count), ULL(b.count));
        goto fail;
    }
    rc = build_finish(&b, t);
fail:
    bs_cursor_close(cur);
    build_free(&b);
    return rc;
}

typedef struct cp_names {
    struct cp_name { uint8_t n[BS_MAX_NAME]; uint8_t len; bs_tree t; } *v;
    size_t n, cap;
} cp_names;

static int names_add(void *ctx, const void *name, size_t nlen)
{
    cp_names *ns = ctx;
    /* out of memory stops the walk: the caller sees fewer names than the catalog counts */
    if (bs_grow(&ns->v, &ns->cap, ns->n + 1, sizeof *ns->v, 16, "the bucket names") != BS_OK)
        return 1;
    if (nlen > BS_MAX_NAME)
        return 1;
    memcpy(ns->v[ns->n].n, name, nlen);
    ns->v[ns->n].len = (uint8_t)nlen;
    ns->n++;
    return 0;
}

static int copy_compact(bs_txn *txn, cp_out *o, bs_meta *nm)
{
    uint64_t txid = txn->meta.txid;
    cp_names ns = {0};
    cp_build cat;
    uint8_t *scratch = malloc(COPY_CHUNK);
    int rc, entered = 0;
    memset(&cat, 0, sizeof cat);
    memset(nm, 0, sizeof *nm);
    nm->txid = txid;
    if (!scratch) {
        rc = bs_fail(BS_NOMEM, "out of memory compacting");
        goto fail;
    }
    if ((rc = bs_txn_enter(txn)) != BS_OK)
        goto fail;
    entered = 1;
    bs_bucket *bk;
    if ((rc = bs_bucket_open(txn, NULL, 0, 0, &bk)) != BS_OK ||
        (rc = compact_bucket(txn, o, bk, txid, scratch, &nm->main)) != BS_OK)
        goto fail;
    if ((rc = bs_bucket_list(txn, names_add, &ns)) != BS_OK)
        goto fail;
    if (ns.n != txn->meta.catalog.count) {
        rc = ns.n < txn->meta.catalog.count ? bs_fail(BS_NOMEM, "out of memory compacting")
                                            : bs_fail(BS_CORRUPT, "compacting: the catalog "
                                                      "records %llu buckets, %zu found",
                                                      ULL(txn->meta.catalog.count), ns.n);
        goto fail;
    }
    for (size_t i = 0; i < ns.n; i++) {
        if ((rc = bs_bucket_open(txn, ns.v[i].n, ns.v[i].len, 0, &bk)) != BS_OK ||
            (rc = compact_bucket(txn, o, bk, txid, scratch, &ns.v[i].t)) != BS_OK)
            goto fail;
    }
    if ((rc = build_init(&cat, o, txid)) != BS_OK)
        goto fail;
    for (size_t i = 0; i < ns.n; i++) {
        uint8_t rec[BREC_SIZE];
        memset(rec, 0, sizeof rec);
        put64(rec + BREC_ROOT, ns.v[i].t.root);
        put64(rec + BREC_COUNT, ns.v[i].t.count);
        put32(rec + BREC_DEPTH, ns.v[i].t.depth);
        put64(rec + BREC_TXID, ns.v[i].t.root_txid);
        if ((rc = leaf_add(&cat, ns.v[i].n, ns.v[i].len, rec, BREC_SIZE, 0)) != BS_OK)
            goto fail;
    }
    if ((rc = build_finish(&cat, &nm->catalog)) != BS_OK)
        goto fail;
    nm->page_count = o->pos / o->P;
    rc = BS_OK;
fail:
    if (entered)
        bs_txn_leave(txn);
    build_free(&cat);
    free(ns.v);
    free(scratch);
    return rc;
}

/* ------------------------------------------------------------------ files */

static _Atomic unsigned tmp_counter;

/* Write the copy of txn's snapshot to a new temporary file next to dest, fsynced and closed;
 * *tmp receives its name (the caller renames or unlinks it). */
static int copy_write_tmp(bs_txn *txn, const char *dest, unsigned flags, char **tmp)
{
    bs_db *db = txn->db;
    cp_out o;
    bs_meta nm;
    int rc, err, created = 0;
    memset(&o, 0, sizeof o);
    *tmp = NULL;
    size_t dl = strlen(dest);
    char *name = malloc(dl + 64);
    if (!name)
        return bs_fail(BS_NOMEM, "out of memory");
    for (int tries = 0; tries < 100; tries++) {
        snprintf(name, dl + 64, "%s.tmp-%ld-%u", dest, (long)getpid(),
                 atomic_fetch_add(&tmp_counter, 1));
        if ((err = bs_io_posix.open(NULL, name, 0, 1, &o.f, &created)) != 0) {
            rc = bs_fail_io(err, "creating %s", name);
            free(name);
            return rc;
        }
        if (created)
            break;
        bs_io_posix.close(o.f, 0); /* someone else's file: leave it alone */
        o.f = NULL;
    }
    if (!o.f) {
        free(name);
        return bs_fail_io(EEXIST, "no free temporary name next to %s", dest);
    }
    o.P = db->page_size;
    o.pos = 2ull * o.P; /* the metas are written last */
    o.cap = COPY_CHUNK < o.P ? o.P : COPY_CHUNK;
    if (!(o.buf = malloc(o.cap))) {
        rc = bs_fail(BS_NOMEM, "out of memory copying");
        goto fail;
    }
    if ((rc = (flags & BS_COPY_COMPACT) ? copy_compact(txn, &o, &nm) : copy_plain(txn, &o, &nm)) !=
            BS_OK ||
        (rc = out_flush(&o)) != BS_OK || (rc = out_metas(&o, &nm)) != BS_OK)
        goto fail;
    if ((err = bs_io_posix.sync(o.f)) != 0) {
        rc = bs_fail_io(err, "syncing %s", name);
        goto fail;
    }
    err = bs_io_posix.close(o.f, 0);
    o.f = NULL;
    if (err) {
        rc = bs_fail_io(err, "closing %s", name);
        goto fail;
    }
    free(o.buf);
    *tmp = name;
    return BS_OK;
fail:
    if (o.f)
        bs_io_posix.close(o.f, 0);
    unlink(name);
    free(name);
    free(o.buf);
    return rc;
}

/* Is db's own file at path? (Only file-backed I/O tables have one.) */
static bool is_own_file(bs_db *db, const struct stat *ds)
{
    struct stat ss;
    if (db->io != &bs_io_posix && db->io != &bs_io_fault)
        return false;
    return stat(db->path, &ss) == 0 && ss.st_dev == ds->st_dev && ss.st_ino == ds->st_ino;
}

static int check_dest(bs_db *db, const char *dest, unsigned flags)
{
    struct stat ds;
    if (!dest[0])
        return bs_fail_io(ENOENT, "empty destination path");
    if (stat(dest, &ds) != 0) {
        if (errno == ENOENT)
            return BS_OK;
        return bs_fail_io(errno, "%s", dest);
    }
    if (is_own_file(db, &ds))
        return bs_fail(BS_MISUSE, "the destination %s is the database itself", dest);
    if (S_ISDIR(ds.st_mode))
        return bs_fail_io(EISDIR, "%s is a directory", dest);
    if (!(flags & BS_COPY_OVERWRITE))
        return bs_fail_io(EEXIST, "%s already exists (pass overwrite to replace it)", dest);
    return BS_OK;
}

/* Move tmp to dest (refusing an existing dest unless overwrite) and sync the directory. */
static int install(const char *tmp, const char *dest, int overwrite)
{
    int err;
    if (overwrite) {
        if (rename(tmp, dest) != 0)
            return bs_fail_io(errno, "renaming the copy to %s", dest);
    } else if (link(tmp, dest) == 0) {
        unlink(tmp);
    } else {
        err = errno;
        struct stat st;
        if (err == EEXIST)
            return bs_fail_io(EEXIST, "%s already exists (pass overwrite to replace it)", dest);
        /* no hard links on this file system: check, then rename */
        if (stat(dest, &st) == 0)
            return bs_fail_io(EEXIST, "%s already exists (pass overwrite to replace it)", dest);
        if (rename(tmp, dest) != 0)
            return bs_fail_io(errno, "renaming the copy to %s", dest);
    }
    if ((err = bs_io_posix.sync_dir(NULL, dest)) != 0)
        return bs_fail_io(err, "syncing the directory of %s", dest);
    return BS_OK;
}

int bs_db_copy(bs_db *db, const char *dest, unsigned flags)
{
    bs_txn *txn = NULL;
    char *tmp = NULL;
    int rc;
    bs_clear_error();
    if ((rc = check_dest(db, dest, flags)) != BS_OK)
        return rc;
    if ((rc = bs_txn_begin(db, 0, 0, &txn)) != BS_OK)
        return rc;
    rc = copy_write_tmp(txn, dest, flags, &tmp);
    bs_txn_abort(txn);
    if (rc != BS_OK)
        return rc;
    rc = install(tmp, dest, (flags & BS_COPY_OVERWRITE) != 0);
    unlink(tmp); /* after a rename or link that worked: already gone (or a second name) */
    free(tmp);
    return rc;
}

int bs_db_compact(bs_db **dbp)
{
    bs_db *db = *dbp, *nd = NULL;
    bs_txn *txn = NULL;
    char *tmp = NULL, *path = NULL;
    int rc, err, late = 0;
    bs_clear_error();
    if (db->readonly)
        return bs_fail(BS_READONLY, "the database was opened read-only");
    if (db->io != &bs_io_posix && db->io != &bs_io_fault)
        return bs_fail(BS_MISUSE, "compact() needs a database file (this database uses another "
                       "I/O layer: copy() it to a file instead)");
    pthread_mutex_lock(&db->mu);
    size_t n = db->ntxn;
    pthread_mutex_unlock(&db->mu);
    if (n)
        return bs_fail(BS_MISUSE, "compact() needs that no transaction is open (%zu are)", n);
    /* other processes would go on using the old file: they must not have it open (the open
     * lock of the side file stays exclusive until this handle is closed) */
    if (db->lf && (rc = lockfile_exclusive(db->lf)) != BS_OK)
        return bs_fail(BS_LOCKED, "compact() needs that no other process or handle has the "
                       "database open");
    /* the writer lock: no commit can happen between the copy and the swap */
    if ((rc = bs_txn_begin(db, BS_TXN_WRITE, 0, &txn)) != BS_OK) {
        if (db->lf)
            lockfile_shared(db->lf);
        return rc;
    }
    if (!(path = strdup(db->path))) {
        rc = bs_fail(BS_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = copy_write_tmp(txn, path, BS_COPY_COMPACT, &tmp)) != BS_OK)
        goto fail;
    bs_options o;
    memset(&o, 0, sizeof o);
    o.page_size = db->page_size;
    o.cache_size = (uint64_t)cache_capacity(db->cache) * db->page_size;
    o.sync = db->sync;
    o.io = db->io;
    o.io_arg = db->io_arg;
    o.map = db->map ? 1 : -1; /* the same way of reading pages */
    /* Open (and lock) the new file before it takes the name, so that the path always names
     * a locked database. An I/O table that serves one file at a time (the fault injector)
     * says EBUSY: it is opened after the old handle is closed instead. */
    if (db->lf) {
        late = 1; /* the new file is opened by its name once this handle is closed */
    } else if ((rc = bs_db_open(tmp, &o, &nd)) != BS_OK) {
        if (!(rc == BS_IOERR && bs_errno() == EBUSY))
            goto fail;
        late = 1;
        bs_clear_error();
    }
    if (rename(tmp, path) != 0) {
        rc = bs_fail_io(errno, "renaming the compacted copy to %s", path);
        goto fail;
    }
    free(tmp);
    tmp = NULL;
    err = bs_io_posix.sync_dir(NULL, path);
    bs_txn_abort(txn);
    txn = NULL;
    bs_db_close(db); /* its file is gone from the directory; the new one has the name */
    *dbp = NULL;
    if (late) {
        if ((rc = bs_db_open(path, &o, &nd)) != BS_OK)
            goto fail; /* the compacted file is in place; the handle is closed */
    } else {
        free(nd->path);
        nd->path = path;
        path = NULL;
    }
    *dbp = nd;
    nd = NULL;
    rc = err ? bs_fail_io(err, "syncing the directory of %s", path ? path : (*dbp)->path)
             : BS_OK;
fail:
    if (nd)
        bs_db_close(nd);
    if (txn)
        bs_txn_abort(txn);
    if (*dbp && (*dbp)->lf)
        lockfile_shared((*dbp)->lf);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(path);
    return rc;
}
