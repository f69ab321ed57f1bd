/*
 * make_seeds.c - writes a few small valid database files (page size 1024: tiny inputs) into
 * the directory given as argv[1], as the seed corpus of the fuzz_open target.
 *
 * Layer: test helper over the public C API (bs.h).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bs.h"

static int fill(const char *path, int nkeys, int big, int buckets)
{
    bs_options o = {0};
    o.page_size = 1024;
    o.create = 1;
    o.cache_size = 1 << 20;
    bs_db *db;
    bs_txn *t;
    bs_bucket *b;
    unlink(path);
    if (bs_db_open(path, &o, &db))
        return 1;
    for (int round = 0; round < 2; round++) {
        if (bs_txn_begin(db, BS_TXN_WRITE, -1, &t))
            return 1;
        bs_txn_enter(t);
        for (int nb = 0; nb <= buckets; nb++) {
            char name[8];
            snprintf(name, sizeof name, "b%d", nb);
            if (bs_bucket_open(t, nb ? name : NULL, nb ? strlen(name) : 0, 1, &b))
                return 1;
            for (int i = 0; i < nkeys; i++) {
                char k[16], v[64];
                snprintf(k, sizeof k, "k%05d", i * 3 + round);
                memset(v, 'a' + i % 26, sizeof v);
                bs_put(t, b, k, strlen(k), v, (size_t)(i % 60), 0);
                if (round && i % 4 == 0)
                    bs_del(t, b, k, strlen(k));
            }
        }
        if (big) {
            static char v[3000];
            memset(v, 'z', sizeof v);
            bs_bucket_open(t, NULL, 0, 0, &b);
            bs_put(t, b, "big", 3, v, sizeof v, 0);
        }
        bs_txn_leave(t);
        if (bs_txn_commit(t))
            return 1;
    }
    return bs_db_close(db);
}

int main(int argc, char **argv)
{
    char p[512];
    if (argc < 2)
        return 2;
    snprintf(p, sizeof p, "%s/empty.db", argv[1]);
    if (fill(p, 0, 0, 0)) return 1;
    snprintf(p, sizeof p, "%s/small.db", argv[1]);
    if (fill(p, 10, 0, 0)) return 1;
    snprintf(p, sizeof p, "%s/tree.db", argv[1]);
    if (fill(p, 120, 1, 0)) return 1;
    snprintf(p, sizeof p, "%s/buckets.db", argv[1]);
    if (fill(p, 30, 1, 2)) return 1;
    return 0;
}
