// build: csrc/util.c csrc/crc32c.c csrc/io_posix.c csrc/io_fault.c csrc/io_mem.c csrc/cache.c csrc/freelist.c csrc/meta.c csrc/pager.c csrc/db.c csrc/lockfile.c csrc/btree.c csrc/check.c csrc/copy.c csrc/map.c
/*
 * test_io_mem.c - the in-memory I/O table (bs_io_mem) on its own: reads past the end are
 * zero-filled with *got, writes grow the buffer and zero any gap, truncate shrinks and grows
 * (bytes cut off read as zeros when the file grows again), read_nowait never blocks,
 * sync/lock/sync_dir succeed without a file, an image is loaded from a path (ENOENT, EISDIR);
 * then the engine end to end on it: a database that never touches the file system (its
 * name is never created), many pages, check, copy out to a real file that opens and checks,
 * and that file loaded back into memory; the page cache growing from its small start up to
 * a small capacity and evicting from there.
 *
 * Layer: test program; calls io.h and the public engine API (bs.h).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bs.h"
#include "io.h"
#include "testutil.h"

static const bs_io_methods *M = &bs_io_mem;

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static void test_table(void)
{
    bs_file *f = NULL;
    int created = 0;
    uint8_t buf[70000], out[70000];
    size_t got = 123;
    uint64_t sz = 1;
    CHECK_EQ(M->open(NULL, "/nonexistent/dir/x.db", 0, 1, &f, &created), 0);
    CHECK(f != NULL);
    CHECK_EQ(created, 1);
    CHECK_EQ(M->size(f, &sz), 0);
    CHECK_EQ(sz, 0);
    memset(out, 0xAA, sizeof out);
    CHECK_EQ(M->read_at(f, out, 100, 0, &got), 0);
    CHECK_EQ(got, 0);
    CHECK(all_zero(out, 100));
    CHECK_EQ(M->read_nowait(f, out, 100, 0, &got), EAGAIN); /* nothing there: "not cached" */

    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    /* a write past the end: the gap reads as zeros */
    CHECK_EQ(M->write_at(f, buf, 4096, 8192), 0);
    CHECK_EQ(M->size(f, &sz), 0);
    CHECK_EQ(sz, 12288);
    CHECK_EQ(M->read_at(f, out, 12288, 0, &got), 0);
    CHECK_EQ(got, 12288);
    CHECK(all_zero(out, 8192));
    CHECK(memcmp(out + 8192, buf, 4096) == 0);
    /* a read across the end: what is there, then zeros */
    memset(out, 0xAA, sizeof out);
    CHECK_EQ(M->read_at(f, out, 8192, 8192, &got), 0);
    CHECK_EQ(got, 4096);
    CHECK(memcmp(out, buf, 4096) == 0);
    CHECK(all_zero(out + 4096, 4096));
    CHECK_EQ(M->read_nowait(f, out, 4096, 8192, &got), 0);
    CHECK_EQ(got, 4096);
    /* writev, growing the buffer several times over */
    struct iovec iov[3] = {{buf, 1000}, {buf + 1000, 0}, {buf + 1000, sizeof buf - 1000}};
    CHECK_EQ(M->writev_at(f, iov, 3, 100000), 0);
    CHECK_EQ(M->size(f, &sz), 0);
    CHECK_EQ(sz, 100000 + sizeof buf);
    CHECK_EQ(M->read_at(f, out, sizeof buf, 100000, &got), 0);
    CHECK_EQ(got, sizeof buf);
    CHECK(memcmp(out, buf, sizeof buf) == 0);
    /* truncate down, then up: the cut bytes come back as zeros */
    CHECK_EQ(M->truncate(f, 9000), 0);
    CHECK_EQ(M->size(f, &sz), 0);
    CHECK_EQ(sz, 9000);
    CHECK_EQ(M->truncate(f, 12288), 0);
    CHECK_EQ(M->read_at(f, out, 4096, 8192, &got), 0);
    CHECK_EQ(got, 4096);
    CHECK(memcmp(out, buf, 808) == 0);
    CHECK(all_zero(out + 808, 4096 - 808));
    /* and a write after a shrink zeroes what lay between the end and the write */
    CHECK_EQ(M->truncate(f, 0), 0);
    CHECK_EQ(M->write_at(f, buf, 10, 5000), 0);
    CHECK_EQ(M->read_at(f, out, 5010, 0, &got), 0);
    CHECK(all_zero(out, 5000));
    CHECK(memcmp(out + 5000, buf, 10) == 0);
    /* no file: these do nothing and succeed */
    CHECK_EQ(M->sync(f), 0);
    CHECK_EQ(M->lock(f, BS_LOCK_EX), 0);
    CHECK_EQ(M->lock(f, BS_LOCK_SH), 0);
    CHECK_EQ(M->sync_dir(NULL, "/nonexistent/dir/x.db"), 0);
    CHECK_EQ(M->close(f, 0), 0);
    /* an absurd offset is refused, not wrapped */
    CHECK_EQ(M->open(NULL, "x", 0, 1, &f, &created), 0);
    CHECK_EQ(M->write_at(f, buf, 10, UINT64_MAX - 5), EFBIG);
    CHECK_EQ(M->close(f, 0), 0);
    /* loading images */
    f = (bs_file *)1;
    CHECK_EQ(M->open("/nonexistent/bs_mem_image", "x", 0, 1, &f, &created), ENOENT);
    CHECK(f == NULL);
    CHECK_EQ(M->open("/tmp", "x", 0, 1, &f, &created), EISDIR);
    char img[64];
    snprintf(img, sizeof img, "/tmp/bs_test_io_mem_%d.img", (int)getpid());
    FILE *fp = fopen(img, "wb");
    CHECK(fp != NULL);
    if (fp) {
        fwrite(buf, 1, 50000, fp);
        fclose(fp);
    }
    CHECK_EQ(M->open(img, "x", 1, 0, &f, &created), 0);
    CHECK_EQ(created, 0);
    CHECK_EQ(M->size(f, &sz), 0);
    CHECK_EQ(sz, 50000);
    CHECK_EQ(M->read_at(f, out, 50000, 0, &got), 0);
    CHECK(memcmp(out, buf, 50000) == 0);
    CHECK_EQ(M->write_at(f, "zz", 2, 0), 0); /* the memory copy, not the file */
    CHECK_EQ(M->close(f, 0), 0);
    fp = fopen(img, "rb");
    if (fp) {
        CHECK_EQ(fread(out, 1, 2, fp), 2);
        CHECK(out[0] == buf[0] && out[1] == buf[1]);
        fclose(fp);
    }
    unlink(img);
}

static void put_many(bs_db *db, int n, int vlen)
{
    bs_txn *t;
    bs_bucket *b;
    char k[32];
    uint8_t *v = malloc((size_t)vlen);
    memset(v, 'v', (size_t)vlen);
    CHECK_EQ(bs_txn_begin(db, BS_TXN_WRITE, 0, &t), BS_OK);
    bs_txn_enter(t);
    CHECK_EQ(bs_bucket_open(t, NULL, 0, 0, &b), BS_OK);
    for (int i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "key%08d", i);
        CHECK_EQ(bs_put(t, b, k, (size_t)kl, v, (size_t)vlen, 0), BS_OK);
    }
    bs_txn_leave(t);
    CHECK_EQ(bs_txn_commit(t), BS_OK);
    free(v);
}

static uint64_t count(bs_db *db)
{
    bs_txn *t;
    bs_bucket *b;
    uint64_t n = 0;
    CHECK_EQ(bs_txn_begin(db, 0, 0, &t), BS_OK);
    bs_txn_enter(t);
    CHECK_EQ(bs_bucket_open(t, NULL, 0, 0, &b), BS_OK);
    CHECK_EQ(bs_bucket_count(t, b, &n), BS_OK);
    bs_txn_leave(t);
    bs_txn_abort(t);
    return n;
}

static void test_engine(void)
{
    char name[64], out[64];
    struct stat st;
    snprintf(name, sizeof name, "/tmp/bs_test_io_mem_%d.name", (int)getpid());
    snprintf(out, sizeof out, "/tmp/bs_test_io_mem_%d.db", (int)getpid());
    unlink(name);
    unlink(out);
    bs_options o;
    memset(&o, 0, sizeof o);
    o.create = 1;
    o.sync = 1;
    o.io = &bs_io_mem;
    o.cache_size = 64 * 4096; /* 64 pages: the cache grows to that and then evicts */
    bs_db *db = NULL;
    CHECK_EQ(bs_db_open(name, &o, &db), BS_OK);
    if (!db)
        return;
    put_many(db, 3000, 200);
    put_many(db, 1500, 10); /* overwrite half: pages freed and reused */
    CHECK_EQ(count(db), 3000);
    CHECK_EQ(bs_db_check(db), BS_OK);
    bs_stat s;
    CHECK_EQ(bs_db_stat(db, &s), BS_OK);
    CHECK(s.page_count > 64);
    CHECK(s.cache_pages <= 64);
    CHECK_EQ(s.file_size, s.page_count * 4096ull);
    CHECK_EQ(s.durable_txid, s.txid);
    CHECK(stat(name, &st) != 0 && errno == ENOENT); /* nothing on the file system */
    CHECK_EQ(bs_db_compact(&db), BS_MISUSE);       /* no file to compact in place */
    CHECK(db != NULL);
    CHECK_EQ(bs_db_copy(db, out, 0), BS_OK);
    CHECK_EQ(bs_db_close(db), BS_OK);
    CHECK(stat(name, &st) != 0 && errno == ENOENT);

    /* the copy is a normal file */
    bs_options fo;
    memset(&fo, 0, sizeof fo);
    fo.readonly = 1;
    CHECK_EQ(bs_db_open(out, &fo, &db), BS_OK);
    if (db) {
        CHECK_EQ(count(db), 3000);
        CHECK_EQ(bs_db_check(db), BS_OK);
        CHECK_EQ(bs_db_close(db), BS_OK);
    }
    /* and loads back into memory, where it can change without touching the file */
    o.io_arg = out;
    CHECK_EQ(bs_db_open(out, &o, &db), BS_OK);
    if (db) {
        CHECK_EQ(count(db), 3000);
        put_many(db, 4000, 5);
        CHECK_EQ(count(db), 4000);
        CHECK_EQ(bs_db_check(db), BS_OK);
        CHECK_EQ(bs_db_close(db), BS_OK);
    }
    CHECK_EQ(bs_db_open(out, &fo, &db), BS_OK);
    if (db) {
        CHECK_EQ(count(db), 3000);
        CHECK_EQ(bs_db_close(db), BS_OK);
    }
    /* an image that is not a database */
    FILE *fp = fopen(out, "wb");
    if (fp) {
        fputs("definitely not a btree_store database, but long enough to look at", fp);
        fclose(fp);
    }
    CHECK_EQ(bs_db_open(out, &o, &db), BS_NOTDB);
    unlink(out);
}

int main(void)
{
    test_table();
    test_engine();
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("test_io_mem: ok\n");
    return 0;
}
