/*
 * meta.h - the two meta pages (format.h META_*): encoding and decoding, choosing the newest
 * valid one at open, the commit-list check of single-sync commits, writing one and retracting
 * a failed one, creating a database and recognizing an interrupted creation.
 *
 * Layer: calls io (through db->io), crc32c and bs_fail (util.c). Called by pager.c (commit)
 * and db.c (open).
 */
#ifndef BS_META_H
#define BS_META_H

#include "internal.h"

/* The page image of m (for meta page m->slot) with its checksum. */
void meta_encode(const bs_meta *m, uint32_t psize, uint8_t *pg);
/* 0 when pg is a valid meta page for `slot` and page size psize (*m filled in); -1 otherwise,
 * *why saying what is wrong. */
int meta_decode(const uint8_t *pg, uint32_t psize, uint64_t slot, bs_meta *m, const char **why);
/* Open: the newest valid meta whose commit is complete (every page of a single-sync commit
 * carries the listed CRC and txid), trying the page size the file says first and then every
 * legal size; sets db->page_size. BS_NOTDB (no magic), BS_VERSION (a newer format),
 * BS_CORRUPT (no valid meta), BS_IOERR/BS_FULL, BS_NOMEM. */
int meta_read(bs_db *db, bs_meta *out);
/* A new file: both meta slots with the empty state of txid 0, synced when db->sync; sets
 * db->meta. */
int meta_create(bs_db *db);
/* True when a file without a valid meta is what a crash during creation leaves (no more than
 * the two meta pages, all zeros or our magic with txid 0): creating it again loses nothing. */
bool meta_interrupted_creation(bs_db *db, uint64_t fsize, uint32_t psize);
/* A live database (another process may be writing it): the meta page whose commit is
 * `want` (the newest one the side file announces), or the oldest valid one newer than that
 * (a commit not announced yet: its writer died before, or is about to). BS_OK; BS_NOTFOUND
 * when neither (the writer is overwriting the slot), *out then being the newest valid one
 * (slot 2 when none is); BS_IOERR, BS_NOMEM. The commit list is not checked: an announced
 * commit had all its pages written. */
int meta_read_live(bs_db *db, uint64_t want, bs_meta *out);
/* Write m into meta page m->slot (no sync); pg is a scratch page of page_size bytes that the
 * caller allocated before the commit wrote anything (no allocation here: out of memory at
 * this point would leave a half-published commit). */
int meta_write(bs_db *db, const bs_meta *m, uint8_t *pg);
/* A commit failed after its meta page was (perhaps) written: rewrite that slot with base (the
 * commit the failed one started from) when base lives in it, else zero it; best effort (pg:
 * the same scratch page). */
void meta_retract(bs_db *db, uint64_t slot, const bs_meta *base, uint8_t *pg);

#endif
