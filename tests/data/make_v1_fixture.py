"""make_v1_fixture.py - writes tests/data/v1_sample.btree, a small database in on-disk format
version 1 (the format before parent pointers carried the txid of their child), and describes
its expected content for the upgrade tests.

Layer: tests only. model() is pure and is what the tests compare against. main() must run
under a build of btree_store whose engine still writes format version 1 (any commit before
format version 2, e.g. `git worktree add /tmp/v1 <commit>` and build it there):

    PYTHONPATH=/tmp/v1/python python tests/data/make_v1_fixture.py tests/data/v1_sample.btree

The file uses 1024-byte pages so that a few hundred keys already give branch pages (depth 2),
overflow values, several buckets (one of them empty, one dropped) and a non-empty freelist.
"""
import os
import sys

PAGE_SIZE = 1024


def _value(i, n):
    return bytes((i * 7 + j) % 251 for j in range(n))


def model():
    """{bucket name (None = default): {key: value}} after every step of main()."""
    default = {}
    for i in range(900):
        n = 3000 if i % 97 == 0 else 5 + i % 40
        default[b"k%05d" % i] = _value(i, n)
    for i in range(0, 900, 3):          # deleted in a later commit
        del default[b"k%05d" % i]
    alpha = {b"a" + bytes([i % 256, i // 256]): b"v%d" % i for i in range(400)}
    beta = {bytes([0xff]) * (i % 5 + 1) + b"%03d" % i: _value(i, 20000 if i == 7 else 12)
            for i in range(60)}
    beta[b""] = b"the empty key"
    return {None: default, "alpha": alpha, "beta": beta, "empty": {}}


def main(path):
    import btree_store
    if os.path.exists(path):
        os.remove(path)
    m = model()
    db = btree_store.DB(path, page_size=PAGE_SIZE)
    try:
        with db.begin(write=True) as t:
            for i in range(900):
                n = 3000 if i % 97 == 0 else 5 + i % 40
                t.put(b"k%05d" % i, _value(i, n))
        with db.begin(write=True) as t:
            for name in ("alpha", "beta", "empty", "doomed"):
                t.create_bucket(name)
            for k, v in m["alpha"].items():
                t.put(k, v, bucket="alpha")
            for k, v in m["beta"].items():
                t.put(k, v, bucket="beta")
            for i in range(50):
                t.put(b"d%d" % i, b"x" * 100, bucket="doomed")
        with db.begin(write=True) as t:
            for i in range(0, 900, 3):
                t.delete(b"k%05d" % i)
            t.drop_bucket("doomed")
        db.check()
        st = db.stat()
        assert st["free_pages"] > 0 and st["depth"] >= 2, st
    finally:
        db.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else
         os.path.join(os.path.dirname(os.path.abspath(__file__)), "v1_sample.btree"))
