"""test_api_random_calls.py - random call sequences must not crash, hang or corrupt.

hypothesis draws random sequences of calls on DB, Txn, bound Txn, Iterator and the
memoryviews iterators yield (the Driver of _chaos.py): every public method, property and
dunder, context managers, the iterator protocol, exec/view/exec_multi with callbacks that
call back into the database (and close it), commit/abort in odd orders, close() and
re-__init__ at random points, finalizers (__del__ of garbage cycles collected at random
allocation points) that close databases or end transactions in the middle of calls.
Arguments come from a pool of valid and invalid values. Every call must succeed or raise
Error (any subclass), TypeError, ValueError, KeyError, OverflowError, or the exception a
user object raised itself (Boom); MemoryError only for absurd sizes. After every example
each database file, reopened, passes check().

Default run about 15 s; BTREE_STORE_LONG=1 runs many more examples.

Layer: tests only; public Python API of btree_store (through _chaos.py).
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _chaos import HypothesisSource, RandomSource, _run_driver
from _util import LONG


@settings(max_examples=150 if LONG else 30, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.data())
def test_random_call_sequences(data):
    _run_driver(HypothesisSource(data))


@pytest.mark.parametrize("block", range(4))
def test_random_calls_with_finalizers_inside_calls(block):
    """The same driver with seeded random choices and the collector running every few
    allocations: garbage cycles whose __del__ closes the DB, ends transactions or steps
    iterators are collected inside the binding's calls."""
    n = 60 if LONG else 8
    for seed in range(block * 1000, block * 1000 + n):
        try:
            _run_driver(RandomSource(seed), gc_threshold=(5 + seed % 60, 10, 10))
        except BaseException as e:
            raise AssertionError("seed %d failed: %r" % (seed, e)) from e
