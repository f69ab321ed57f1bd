/*
 * meta.c - the meta pages (see meta.h): encode/decode, choosing the newest valid one at open,
 * the commit-list check of single-sync commits, write/retract, creation and interrupted
 * creation.
 *
 * Layer: calls io (through db->io), crc32c and bs_fail (util.c). Called by pager.c and db.c.
 */
#include <stdlib.h>
#include <string.h>

#include "meta.h"

void meta_encode(const bs_meta *m, uint32_t P, uint8_t *pg)
{
    memset(pg, 0, P);
    pg[PH_TYPE] = PT_META;
    put64(pg + PH_PGNO, m->slot);
    put64(pg + PH_TXID, m->txid);
    memcpy(pg + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN);
    put32(pg + META_VERSION, BS_FORMAT_VERSION);
    put32(pg + META_PAGESIZE, P);
    put64(pg + META_PAGECOUNT, m->page_count);
    put64(pg + META_FL_HEAD, m->fl_head);
    put64(pg + META_FL_COUNT, m->fl_count);
    put64(pg + META_FL_TXID, m->fl_head_txid);
    const bs_tree *t[2] = {&m->main, &m->catalog};
    for (int i = 0; i < 2; i++) {
        uint8_t *r = pg + (i ? META_CATALOG : META_DEFAULT);
        put64(r + BREC_ROOT, t[i]->root);
        put64(r + BREC_COUNT, t[i]->count);
        put32(r + BREC_DEPTH, t[i]->depth);
        put64(r + BREC_TXID, t[i]->root_txid);
    }
    put32(pg + META_LIST_N, m->nlist);
    for (uint32_t i = 0; i < m->nlist; i++) {
        put64(pg + META_LIST + META_LIST_ENT * i, m->list[i].pgno);
        put32(pg + META_LIST + META_LIST_ENT * i + 8, m->list[i].crc);
    }
    put32(pg + PH_CRC, bs_page_crc(pg, P));
}

static int tree_decode(const uint8_t *r, uint32_t P, uint64_t page_count, uint64_t txid,
                       bs_tree *t)
{
    t->root = get64(r + BREC_ROOT);
    t->count = get64(r + BREC_COUNT);
    t->depth = get32(r + BREC_DEPTH);
    t->root_txid = get64(r + BREC_TXID);
    t->dirty = t->needs_rebalance = false;
    t->edge = 0;
    if (get32(r + BREC_FLAGS) != 0 || t->count > fmt_count_max(P, page_count))
        return -1;
    if (t->root == 0)
        return (t->depth == 0 && t->count == 0 && t->root_txid == 0) ? 0 : -1;
    /* the root was written by this commit or an earlier one */
    if (t->root < BS_META_PAGES || t->root >= page_count || t->depth < 1 ||
        t->depth > BS_MAX_DEPTH || t->root_txid == 0 || t->root_txid > txid)
        return -1;
    return 0;
}

/* 0 valid, -1 invalid; *why says what */
int meta_decode(const uint8_t *pg, uint32_t P, uint64_t slot, bs_meta *m, const char **why)
{
    if (memcmp(pg + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN) != 0)
        return *why = "no magic", -1;
    if (get32(pg + META_VERSION) > BS_FORMAT_VERSION)
        return *why = "newer version", -1;
    if (get32(pg + META_VERSION) < BS_FORMAT_VERSION)
        return *why = "older version", -1;
    if (get32(pg + META_PAGESIZE) != P)
        return *why = "page size", -1;
    if (get32(pg + PH_CRC) != bs_page_crc(pg, P))
        return *why = "checksum", -1;
    if (pg_type(pg) != PT_META || pg_pgno(pg) != slot || get32(pg + META_VERSION) == 0)
        return *why = "header", -1;
    m->txid = pg_txid(pg);
    m->slot = slot;
    if (m->txid >= BS_TXID_END)
        return *why = "transaction id out of range", -1;
    m->page_count = get64(pg + META_PAGECOUNT);
    m->fl_head = get64(pg + META_FL_HEAD);
    m->fl_count = get64(pg + META_FL_COUNT);
    m->fl_head_txid = get64(pg + META_FL_TXID);
    if (m->page_count < BS_META_PAGES || m->page_count > (UINT64_MAX >> 1) / P)
        return *why = "fields", -1;
    if (m->fl_head && (m->fl_head < BS_META_PAGES || m->fl_head >= m->page_count))
        return *why = "freelist head", -1;
    if ((m->fl_head == 0) != (m->fl_head_txid == 0) || m->fl_head_txid > m->txid)
        return *why = "freelist head txid", -1;
    if (m->fl_count >= m->page_count)
        return *why = "freelist count", -1;
    if (tree_decode(pg + META_DEFAULT, P, m->page_count, m->txid, &m->main) ||
        tree_decode(pg + META_CATALOG, P, m->page_count, m->txid, &m->catalog))
        return *why = "tree record", -1;
    if (m->main.root && m->main.root == m->catalog.root) /* hostile files: one page, two trees */
        return *why = "tree record (the default bucket's root is the catalog's)", -1;
    m->nlist = get32(pg + META_LIST_N);
    if (m->nlist > fmt_commit_list_cap(P))
        return *why = "commit list", -1;
    for (uint32_t i = 0; i < m->nlist; i++) {
        m->list[i].pgno = get64(pg + META_LIST + META_LIST_ENT * i);
        m->list[i].crc = get32(pg + META_LIST + META_LIST_ENT * i + 8);
        if (m->list[i].pgno < BS_META_PAGES || m->list[i].pgno >= m->page_count)
            return *why = "commit list entry", -1;
    }
    return 0;
}

/* A commit with a commit list is real only if every listed page reached the file: each must
 * carry the listed CRC (which covers its pgno and txid), and a txid no newer than the commit.
 * The list names every page the commit references that was written since the last durable
 * commit (pager.c), so a meta that arrived without its pages is never chosen. buf holds
 * BS_PAGE_MAX bytes: entries naming consecutive pages (lists are written in page order) are
 * read together, up to BS_PAGE_MAX / P pages a call. */
static int meta_commit_complete(bs_db *db, const bs_meta *m, uint32_t P, uint8_t *buf)
{
    uint32_t per_read = BS_PAGE_MAX / P;
    for (uint32_t i = 0; i < m->nlist;) {
        uint32_t k = 1;
        while (k < per_read && i + k < m->nlist && m->list[i + k].pgno == m->list[i].pgno + k)
            k++;
        size_t got = 0;
        int err = db->io->read_at(db->file, buf, (size_t)k * P, m->list[i].pgno * (uint64_t)P, &got);
        if (err)
            return bs_fail_io(err, "reading page %llu", (unsigned long long)m->list[i].pgno);
        for (uint32_t j = 0; j < k; j++, i++) {
            const uint8_t *pg = buf + (size_t)j * P;
            if (got < (size_t)(j + 1) * P || get32(pg + PH_CRC) != m->list[i].crc ||
                bs_page_crc(pg, P) != m->list[i].crc || pg_txid(pg) > m->txid ||
                pg_pgno(pg) != m->list[i].pgno)
                return BS_NOTFOUND;
        }
    }
    return BS_OK;
}

/* Every page a commit references reached the file before its meta, so the pages past the end
 * of the file are free ones (allocated and freed again without being written), and each free
 * page number is stored in a freelist page inside the file. A hostile meta claiming more
 * (page_count near 2^63) would make the checker's page map and the freelist replay as large
 * as it says: refused as not fitting the file. */
static bool meta_fits_file(const bs_meta *m, uint32_t P, uint64_t fsize)
{
    uint64_t fpages = fsize / P + (fsize % P != 0);
    return m->fl_count <= fpages * fmt_freelist_cap(P) && m->page_count <= fpages + m->fl_count;
}

int meta_read(bs_db *db, bs_meta *out)
{
    uint8_t *buf = malloc(BS_PAGE_MAX);
    if (!buf)
        return bs_fail(BS_NOMEM, "out of memory reading the meta pages");
    int rc = BS_OK, found = 0, magic = 0, newer = 0, older = 0;
    bs_meta best = {0};
    uint32_t best_p = 0;
    size_t got = 0;
    int err;
    /* page size candidates: what page 0 says first, then every legal size */
    uint32_t cands[8];
    int nc = 0;
    uint64_t fsize = 0;
    if ((err = db->io->size(db->file, &fsize)) != 0) {
        rc = bs_fail_io(err, "reading the size of %s", db->path);
        goto out;
    }
    if ((err = db->io->read_at(db->file, buf, 64, 0, &got)) != 0) {
        rc = bs_fail_io(err, "reading the meta page");
        goto out;
    }
    if (got >= 64 && memcmp(buf + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN) == 0) {
        uint32_t p = get32(buf + META_PAGESIZE);
        if (p >= BS_PAGE_MIN && p <= BS_PAGE_MAX && !(p & (p - 1)))
            cands[nc++] = p;
    }
    for (uint32_t p = BS_PAGE_MIN; p <= BS_PAGE_MAX; p *= 2)
        if (!nc || p != cands[0])
            cands[nc++] = p;
    for (int ci = 0; ci < nc && !found; ci++) {
        uint32_t P = cands[ci];
        bs_meta cand[2];
        int ncand = 0;
        for (uint64_t slot = 0; slot < 2; slot++) {
            if ((err = db->io->read_at(db->file, buf, P, slot * P, &got)) != 0) {
                rc = bs_fail_io(err, "reading meta page %llu", (unsigned long long)slot);
                goto out;
            }
            const char *why = "";
            if (got >= META_MAGIC + BS_MAGIC_LEN &&
                memcmp(buf + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN) == 0)
                magic = 1;
            if (got < P)
                continue;
            if (memcmp(buf + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN) == 0) {
                magic = 1;
                /* a checksummed meta of a newer format: the file belongs to a newer library */
                if (get32(buf + META_VERSION) > BS_FORMAT_VERSION &&
                    get32(buf + META_PAGESIZE) == P && get32(buf + PH_CRC) == bs_page_crc(buf, P))
                    newer = (int)get32(buf + META_VERSION);
                /* one of an older format: refused, the upgrade command converts it */
                if (get32(buf + META_VERSION) < BS_FORMAT_VERSION &&
                    get32(buf + META_PAGESIZE) == P && get32(buf + PH_CRC) == bs_page_crc(buf, P))
                    older = (int)get32(buf + META_VERSION);
            }
            if (meta_decode(buf, P, slot, &cand[ncand], &why) == 0 &&
                meta_fits_file(&cand[ncand], P, fsize))
                ncand++;
        }
        /* newest first; a single-sync commit whose pages did not all arrive is skipped */
        if (ncand == 2 && cand[1].txid > cand[0].txid) {
            bs_meta tmp = cand[0];
            cand[0] = cand[1];
            cand[1] = tmp;
        }
        if (newer || older)
            break;
        for (int i = 0; i < ncand && !found; i++) {
            rc = meta_commit_complete(db, &cand[i], P, buf);
            if (rc == BS_OK) {
                best = cand[i];
                best_p = P;
                found = 1;
            } else if (rc != BS_NOTFOUND) {
                goto out;
            }
        }
        rc = BS_OK;
    }
    if (!found || newer || older) {
        if (newer)
            rc = bs_fail(BS_VERSION, "file format version %d is newer than supported version %u",
                         newer, BS_FORMAT_VERSION);
        else if (older)
            rc = bs_fail(BS_VERSION, "%s uses file format version %d, which this version of "
                         "btree_store no longer opens (it needs format %u); convert it with: "
                         "python -m btree_store upgrade %s", db->path, older,
                         BS_FORMAT_VERSION, db->path);
        else if (!magic)
            rc = bs_fail(BS_NOTDB, "%s is not a btree_store database (no magic)", db->path);
        else
            rc = bs_fail(BS_CORRUPT, "%s: no valid meta page (both meta pages 0 and 1 are "
                         "corrupt or the file is truncated)", db->path);
        goto out;
    }
    db->page_size = best_p;
    *out = best;
out:
    free(buf);
    return rc;
}

int meta_write(bs_db *db, const bs_meta *m, uint8_t *pg)
{
    uint32_t P = db->page_size;
    meta_encode(m, P, pg);
    int err = db->io->write_at(db->file, pg, P, m->slot * (uint64_t)P);
    if (err)
        return bs_fail_io(err, "writing meta page %llu", (unsigned long long)m->slot);
    return BS_OK;
}

/* A commit failed after its meta page was (perhaps) written: give that slot back what it held
 * before, best effort, so that a reopen in this boot finds the previous commit. When the base
 * commit lives in that slot (a sync=False commit, not durable yet: the durable one is in the
 * other slot), its image is written again: zeros would lose an acknowledged commit that no
 * crash took. Otherwise zeros, and the other slot's commit is found (after a power cut either
 * state is acceptable: the failed commit was never acknowledged). */
void meta_retract(bs_db *db, uint64_t slot, const bs_meta *base, uint8_t *pg)
{
    if (base && base->slot == slot && base->txid > 0)
        meta_encode(base, db->page_size, pg);
    else
        memset(pg, 0, db->page_size);
    (void)(db->io->write_at(db->file, pg, db->page_size, slot * (uint64_t)db->page_size));
}

int meta_create(bs_db *db)
{
    uint32_t P = db->page_size;
    uint8_t *pg = calloc(2, P);
    if (!pg)
        return bs_fail(BS_NOMEM, "out of memory creating the database");
    bs_meta m = {0};
    m.page_count = BS_META_PAGES;
    m.slot = 0;
    meta_encode(&m, P, pg);
    /* slot 1 holds the same empty state; it is written as txid 0 too but must say pgno 1 */
    memcpy(pg + P, pg, P);
    put64(pg + P + PH_PGNO, 1);
    put32(pg + P + PH_CRC, bs_page_crc(pg + P, P));
    int err = db->io->write_at(db->file, pg, 2 * (size_t)P, 0);
    free(pg);
    if (err)
        return bs_fail_io(err, "writing the new database's meta pages");
    if (db->sync && (err = db->io->sync(db->file)) != 0)
        return bs_fail_io(err, "syncing the new database");
    db->meta = m;
    return BS_OK;
}

/* True when the file is what a crash during creation leaves: no more than the two meta pages,
 * and either all zeros or our magic with transaction id 0 in every meta slot that has it.
 * Anything else without a valid meta (a foreign file, a damaged database) is refused. */
bool meta_interrupted_creation(bs_db *db, uint64_t fsize, uint32_t psize)
{
    uint8_t hdr[64];
    size_t got = 0;
    if (db->io->read_at(db->file, hdr, sizeof hdr, 0, &got) != 0)
        return false;
    if (got >= META_MAGIC + BS_MAGIC_LEN && memcmp(hdr + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN) == 0) {
        uint32_t p = get32(hdr + META_PAGESIZE);
        if (p >= BS_PAGE_MIN && p <= BS_PAGE_MAX && !(p & (p - 1)))
            psize = p;
        if (pg_txid(hdr) != 0)
            return false;
    }
    if (fsize > 2ull * psize)
        return false;
    uint8_t *buf = malloc(fsize ? fsize : 1);
    if (!buf)
        return false;
    bool ok = db->io->read_at(db->file, buf, fsize, 0, &got) == 0 && got == fsize;
    for (uint64_t slot = 0; ok && slot < 2; slot++) {
        uint64_t off = slot * psize;
        if (off >= fsize)
            break;
        size_t n = fsize - off < psize ? (size_t)(fsize - off) : psize;
        bool zero = true;
        for (size_t i = 0; i < n && zero; i++)
            zero = buf[off + i] == 0;
        if (zero)
            continue;
        /* a torn creation write leaves a prefix of our image: magic (if it got that far) and
         * a zero txid */
        ok = n >= META_MAGIC + BS_MAGIC_LEN &&
             memcmp(buf + off + META_MAGIC, BS_MAGIC, BS_MAGIC_LEN) == 0 &&
             pg_txid(buf + off) == 0 && buf[off + PH_TYPE] == PT_META;
    }
    free(buf);
    return ok;
}

int meta_read_live(bs_db *db, uint64_t want, bs_meta *out)
{
    uint32_t P = db->page_size;
    uint8_t *buf = malloc(2 * (size_t)P);
    if (!buf)
        return bs_fail(BS_NOMEM, "out of memory reading the meta pages");
    size_t got = 0;
    int err = db->io->read_at(db->file, buf, 2 * (size_t)P, 0, &got);
    if (err) {
        free(buf);
        return bs_fail_io(err, "reading the meta pages");
    }
    bs_meta m[2];
    int ok[2] = {0, 0};
    for (uint64_t slot = 0; slot < 2; slot++) {
        const char *why = "";
        ok[slot] = got >= (slot + 1) * P && meta_decode(buf + slot * P, P, slot, &m[slot], &why) == 0;
    }
    free(buf);
    int pick = -1;
    for (int i = 0; i < 2; i++)  /* the announced commit */
        if (ok[i] && m[i].txid == want)
            pick = i;
    for (int i = 0; i < 2 && pick < 0; i++)  /* else the oldest one newer than it */
        if (ok[i] && m[i].txid > want && (!ok[1 - i] || m[1 - i].txid <= want || m[i].txid < m[1 - i].txid))
            pick = i;
    if (pick >= 0) {
        *out = m[pick];
        return BS_OK;
    }
    out->txid = 0;
    out->slot = 2;
    for (int i = 0; i < 2; i++)
        if (ok[i] && (out->slot == 2 || m[i].txid > out->txid))
            *out = m[i];
    return BS_NOTFOUND;
}
