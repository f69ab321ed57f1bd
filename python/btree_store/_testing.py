"""Test-only helpers of btree_store (not part of the public API).

    fio = FaultIO()                      # wraps the real POSIX I/O layer
    fio.fail_nth("write|sync", 3)        # the 3rd write-or-sync call from now fails with EIO
    fio.tear_nth(2, 512)                 # the 2nd write keeps only its first 512 bytes, then EIO
    fio.powerloss(seed); ...; fio.crash()  # drop/tear unsynced writes as a power cut would
    fio.count("any"), fio.fired
    db = btree_store.DB(path, _io=fio)   # one open DB per FaultIO at a time

    crc32c(data, crc=0) -> int; crc32c_impl() -> "sse4.2" | "armv8" | "table"
"""
from ._core import _FaultIO as FaultIO
from ._core import _crc32c as crc32c
from ._core import _crc32c_impl as crc32c_impl

__all__ = ["FaultIO", "crc32c", "crc32c_impl"]
