"""test_residency.py - the no-I/O mode's page-cache test before a mapped page's first touch
(csrc/map.c map_resident): a page the OS does not hold is refused (the call would wait for
the device with the GIL held), and once the OS holds it again the next no-I/O call uses it,
although the group's last probe said it was absent (a hint of absence is never trusted).

Layer: tests only; the public Python API and _core._try_nowait (runs one call in no-I/O
mode), posix_fadvise to drop the file's pages from the OS page cache.
"""
import os

import pytest

import btree_store
from btree_store._core import _try_nowait

N = 20000


def _drop_from_os_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise")
def test_first_touch_without_io_follows_the_os_cache(tmp_path):
    path = str(tmp_path / "r.bs")
    db = btree_store.DB(path)
    with db.begin(write=True) as t:
        for i in range(N):
            t.put(b"%08d" % i, b"v%d" % i * 10)
    db.close()
    _drop_from_os_cache(path)
    db = btree_store.DB(path)
    blocked = object()
    try:
        with db.begin() as t:
            key = b"%08d" % (N // 2)
            if _try_nowait(blocked, t.get, key) is not blocked:
                pytest.skip("the file system kept the file in the OS cache")
            with open(path, "rb") as f:  # the OS holds every page again
                while f.read(1 << 20):
                    pass
            assert _try_nowait(blocked, t.get, key) == b"v%d" % (N // 2) * 10
            assert _try_nowait(blocked, t.get, b"%08d" % 7) == b"v7" * 10
    finally:
        db.close()
