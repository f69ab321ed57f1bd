"""Test-only helpers of btree_store (not part of the public API).

    fio = FaultIO()                      # wraps the real POSIX I/O layer
    fio.fail_nth("write|sync", 3)        # the 3rd write-or-sync call from now fails with EIO
    fio.tear_nth(2, 512)                 # the 2nd write keeps only its first 512 bytes, then EIO
    fio.fail_after("write", 5, errno.ENOSPC); fio.heal()  # after 5 more writes, all fail
    fio.kill_nth("write|sync", 7)        # the process gets SIGKILL just before that 7th call
    fio.powerloss(seed)                  # the machine logs unsynced writes per path from now on
    fio.crash()                          # the process dies: its files are dead, writes stay
    fio.power_loss("drop"|"tear"|"reorder", seed)  # crash + lose/tear/reorder unsynced writes
    fio.unsynced(path=None), fio.count("any"), fio.fired
    db = btree_store.DB(path, _io=fio)   # any number of DBs per FaultIO (one machine)
The public wrapper is btree_store.testing.FaultyMachine; the model is described in
csrc/io_fault.c.

    crc32c(data, crc=0) -> int; crc32c_impl() -> "sse4.2" | "armv8" | "table"
"""
from ._core import _FaultIO as FaultIO
from ._core import _crc32c as crc32c
from ._core import _crc32c_impl as crc32c_impl

__all__ = ["FaultIO", "crc32c", "crc32c_impl"]
