"""Command line of btree_store.

    python -m btree_store demo          create a database in a temporary folder, write, read,
                                        commit, reopen, verify, check; print each step
    python -m btree_store check PATH    run the integrity checker on a database file
    python -m btree_store stat PATH     print the statistics of a database file

main(argv) returns the exit code: 0 on success, 1 when the check fails or the demo finds a
wrong value, 2 for usage errors and files that cannot be opened.
"""
import argparse
import os
import sys
import tempfile

import btree_store


def _say(out, msg):
    print(msg, file=out)
    out.flush()


def demo(out=None, keep=None):
    """Run the demo, printing what it does. Returns an exit code. The database goes to a new
    temporary folder that is removed at the end, or to the folder `keep`, where it stays."""
    out = out or sys.stdout
    if keep:
        os.makedirs(keep, exist_ok=True)
        return _demo(out, keep)
    with tempfile.TemporaryDirectory(prefix="btree_store_demo_") as folder:
        rc = _demo(out, folder)
    _say(out, "removed the temporary folder %s" % folder)
    return rc


def _demo(out, folder):
    path = os.path.join(folder, "demo.bs")
    users = {b"user:%03d" % i: b"name %d" % i for i in range(1, 101)}
    orders = {b"order:%05d" % i: b"user:%03d bought %d items" % (i % 100 + 1, i % 7 + 1)
              for i in range(1, 501)}
    big = bytes(range(256)) * 4096  # 1 MiB: stored in overflow pages

    _say(out, "btree_store %s demo" % btree_store.__version__)
    _say(out, "1. create a new database: %s" % path)
    with btree_store.DB(path) as db:
        _say(out, "   page size %d bytes, keys up to %d bytes"
             % (db.page_size, db.max_key_size))
        _say(out, "2. one write transaction: %d keys in bucket 'users', %d in bucket 'orders',"
             " a 1 MiB value in the default bucket" % (len(users), len(orders)))
        with db.begin(write=True) as txn:
            txn.create_bucket("users")
            txn.create_bucket("orders")
            for k, v in users.items():
                txn.put(k, v, bucket="users")
            for k, v in orders.items():
                txn.put(k, v, bucket="orders")
            txn.put(b"big", big)
            _say(out, "   inside the transaction: %d users, %d orders (not yet durable)"
                 % (txn.count(bucket="users"), txn.count(bucket="orders")))
        _say(out, "3. committed (transaction id %d)" % db.stat()["txid"])

        with db.begin(bucket="users") as txn:
            _say(out, "4. read back: users[user:042] = %r" % txn[b"user:042"])
            first = [(bytes(k), bytes(v)) for k, v in txn.iter(prefix=b"user:00")][:3]
            _say(out, "   first users by prefix 'user:00': %r" % first)
            last = [bytes(k) for k in txn.iter(reverse=True, values=False)][:2]
            _say(out, "   last two keys in reverse order: %r" % last)

        _say(out, "5. an aborted transaction leaves nothing behind")
        try:
            with db.begin(write=True) as txn:
                txn.put(b"user:999", b"ghost", bucket="users")
                raise RuntimeError("changed my mind")
        except RuntimeError:
            pass
        with db.begin() as txn:
            ghost = txn.get(b"user:999", bucket="users")
            _say(out, "   user:999 after the abort: %r" % ghost)
    _say(out, "6. closed the database")

    _say(out, "7. reopen and verify every key")
    bad = 0
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            _say(out, "   buckets: %s" % txn.buckets())
            for k, v in users.items():
                bad += txn.get(k, bucket="users") != v
            for k, v in orders.items():
                bad += txn.get(k, bucket="orders") != v
            bad += txn.get(b"big") != big
            bad += txn.get(b"user:999", bucket="users") is not None
        _say(out, "   %d keys and the 1 MiB value checked: %s"
             % (len(users) + len(orders), "all correct" if not bad else "%d WRONG" % bad))
        _say(out, "8. integrity check of the whole file")
        try:
            db.check()
        except btree_store.CorruptionError as e:
            _say(out, "   FAILED: %s" % e)
            return 1
        st = db.stat()
        _say(out, "   clean: %d pages of %d bytes (%d free), file %d bytes, tree depth %d"
             % (st["page_count"], st["page_size"], st["free_pages"], st["file_size"],
                st["depth"]))
    _say(out, "done: %s" % ("all steps succeeded" if not bad else "WRONG VALUES FOUND"))
    return 1 if bad else 0


def _open(path, out):
    if not os.path.exists(path):
        _say(out, "error: %s: no such file" % path)
        return None
    try:
        return btree_store.DB(path, readonly=True, create=False)
    except btree_store.CorruptionError as e:
        _say(out, "%s: CORRUPT: %s" % (path, e))
        return False
    except (btree_store.Error, OSError) as e:
        _say(out, "error: cannot open %s: %s" % (path, e))
        return None


def check(path, out=None):
    out = out or sys.stdout
    db = _open(path, out)
    if db is None:
        return 2
    if db is False:
        return 1
    with db:
        try:
            db.check()
        except btree_store.CorruptionError as e:
            _say(out, "%s: CORRUPT: %s" % (path, e))
            return 1
    _say(out, "%s: ok" % path)
    return 0


def stat(path, out=None):
    out = out or sys.stdout
    db = _open(path, out)
    if db is None:
        return 2
    if db is False:
        return 1
    with db:
        st = db.stat()
        st["named_buckets"] = db.buckets()
    width = max(len(k) for k in st)
    for k, v in st.items():
        _say(out, "%-*s  %s" % (width, k, v))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m btree_store",
                                     description="btree_store command line")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    p = sub.add_parser("demo", help="create, fill, reopen and check a demo database")
    p.add_argument("--dir", help="folder for the database (default: a new temporary one)")
    p = sub.add_parser("check", help="check the integrity of a database file")
    p.add_argument("path")
    p = sub.add_parser("stat", help="print statistics of a database file")
    p.add_argument("path")
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        return demo(keep=args.dir)
    if args.cmd == "check":
        return check(args.path)
    if args.cmd == "stat":
        return stat(args.path)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
