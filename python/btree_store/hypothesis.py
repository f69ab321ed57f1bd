"""btree_store.hypothesis: a hypothesis state machine that tests YOUR data layer on btree_store.

Subclass ``LayerMachine`` and say how to open your layer on a database, how to apply one
operation to the layer and to a dict model, and how to read the layer's state back as a
dict. The base class supplies the rules around it: run a random operation, run one on a
disk that fails (EIO or ENOSPC after a few writes or fsyncs; the process then restarts),
reopen (clean close), crash (the process dies) and power loss (unsynced writes lost, torn
or reordered), and an invariant after every step: the layer's state equals the model's,
and ``db.check()`` finds the database clean. ::

    import hypothesis.strategies as st
    from btree_store.hypothesis import LayerMachine

    class CounterMachine(LayerMachine):
        operations = st.tuples(st.sampled_from(["incr", "reset"]), st.sampled_from("abc"))

        def open_layer(self, db):
            return Counters(db)                 # your code
        def apply(self, layer, op):
            return layer.incr(op[1]) if op[0] == "incr" else layer.reset(op[1])
        def apply_model(self, model, op):       # mutate the dict; return the expected result
            model[op[1]] = model.get(op[1], 0) + 1 if op[0] == "incr" else 0
            return model[op[1]]
        def read_state(self, layer):
            return layer.as_dict()

    TestCounters = CounterMachine.TestCase

Contract: one operation is atomic (one write transaction, or none). The layer's result of
``apply`` must equal the model's result of ``apply_model``. An operation that raises one
of ``expected_errors`` in the model must raise one of them in the layer too (and the other
way round), and then the state must be unchanged. An operation on a failing disk may
raise one of ``disk_errors`` (default ``(btree_store.DiskError,)``, which includes
DiskFullError; name your own exception if your layer translates them): then, after the
restart, the state must be the one before it or the one after it; if it returned, the one
after.

Durability: with ``db_options`` sync=True (the default) every operation that returned is
durable; with sync=False only those before the last ``db.sync()`` (the ``sync`` rule) or
reopen are, so after a power loss the layer must show ONE acknowledged state at or after
the last durable one (never a mix, never older); after a crash or a clean reopen it must
show the newest.

Class attributes: ``operations`` (a strategy of operations; None: write your own rules and
call ``self.execute(op)``), ``db_options`` (keyword arguments of the database), ``backend``
("auto": the fault-injecting machine of btree_store.testing when the package has it, else
"file"; "file": a real file, reopen only; "memory": ``DB(":memory:")``, reopened through
``copy()`` and ``DB.memory(from_path=...)``; "faulty": btree_store.testing.FaultyMachine,
with crash, power loss and disk faults), ``expected_errors``, ``disk_errors``,
``disk_faults`` (False: no failing-disk rule), ``check_db`` (run db.check() in the
invariant). Hooks: ``close_layer(layer)`` (before a clean close), ``initial_model()``.
In the machine, ``self.db`` and ``self.layer`` are the open database and layer,
``self.model`` is the newest acknowledged state and ``self.machine`` the FaultyMachine
(None on the other backends), for rules of your own; ``execute(op)`` and
``execute_with_fault(op, after, kind, error)`` are what the generated rules call.

hypothesis is an optional dependency of btree_store: importing this module without it
raises ImportError saying so.

Layer: the package (testing helpers); uses the public Python API of btree_store, its
testing module (FaultyMachine) and hypothesis.
"""
import copy
import os
import shutil
import tempfile
from typing import Any, Dict, Optional, Tuple, Type

try:
    import hypothesis.strategies as st
    from hypothesis import note
    from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
except ImportError as _e:  # pragma: no cover - exercised in a child process by the tests
    raise ImportError(
        "btree_store.hypothesis needs the hypothesis package, which btree_store does not "
        "install by itself: pip install hypothesis (or pip install btree-store[test])"
    ) from _e

import btree_store

__all__ = ["LayerMachine"]

POWER_LOSS_MODES = ("drop", "tear", "reorder")
FAULT_KINDS = ("write", "sync")
FAULT_ERRORS = ("EIO", "ENOSPC")
# calls before the disk fails: mostly within one small commit, sometimes later
FAULT_AFTER = st.one_of(st.integers(0, 8), st.integers(0, 100))


def _faulty_machine_class():
    try:
        from btree_store.testing import FaultyMachine
    except ImportError:
        return None
    return FaultyMachine


class LayerMachine(RuleBasedStateMachine):
    """Base class of a state machine that checks a user's data layer against a dict model
    (see the module's documentation). Subclass it; run it with ``MyMachine.TestCase``
    (a unittest TestCase pytest collects) or ``hypothesis.stateful.
    run_state_machine_as_test(MyMachine)``."""

    # (annotated, so that a subclass under mypy --strict may set them: tests/typing)
    operations: Optional["st.SearchStrategy[Any]"] = None
    db_options: Dict[str, Any] = {}
    backend: str = "auto"
    expected_errors: Tuple[Type[BaseException], ...] = ()
    disk_errors: Tuple[Type[BaseException], ...] = (btree_store.DiskError,)
    disk_faults: bool = True
    check_db: bool = True

    # -- what a subclass provides ---------------------------------------------------------

    def open_layer(self, db: btree_store.DB) -> Any:
        """Return the user's layer opened on the btree_store database `db`."""
        raise NotImplementedError("LayerMachine subclasses define open_layer(db)")

    def close_layer(self, layer: Any) -> None:
        """Called before the database is closed cleanly (not on crash or power loss)."""

    def apply(self, layer: Any, op: Any) -> Any:
        """Apply operation `op` to the layer; return its result (compared with the model's)."""
        raise NotImplementedError("LayerMachine subclasses define apply(layer, op)")

    def apply_model(self, model: Any, op: Any) -> Any:
        """Apply `op` to the dict `model` in place; return the result the layer must give."""
        raise NotImplementedError("LayerMachine subclasses define apply_model(model, op)")

    def read_state(self, layer: Any) -> Any:
        """Return the layer's whole state, as a value comparable with the model (a dict)."""
        raise NotImplementedError("LayerMachine subclasses define read_state(layer)")

    def initial_model(self) -> Any:
        """The model of the freshly created database."""
        return {}

    # -- the machinery ----------------------------------------------------------------------

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        ops = cls.__dict__.get("operations")
        if ops is not None:
            def operation(self, op):
                self.execute(op)
            operation.__name__ = "operation"
            operation.__qualname__ = cls.__qualname__ + ".operation"
            cls.operation = rule(op=ops)(operation)

            def operation_on_a_failing_disk(self, op, after, kind, error):
                self.execute_with_fault(op, after, kind, error)
            operation_on_a_failing_disk.__qualname__ = (
                cls.__qualname__ + ".operation_on_a_failing_disk")
            cls.operation_on_a_failing_disk = precondition(
                lambda self: self.machine is not None and self.disk_faults)(
                rule(op=ops, after=FAULT_AFTER, kind=st.sampled_from(FAULT_KINDS),
                     error=st.sampled_from(FAULT_ERRORS))(operation_on_a_failing_disk))

    def __init__(self):
        super().__init__()
        backend = self.backend
        self._machine_class = None
        if backend in ("auto", "faulty"):
            self._machine_class = _faulty_machine_class()
            if self._machine_class is None:
                if backend == "faulty":
                    raise ImportError("backend='faulty' needs btree_store.testing.FaultyMachine")
                backend = "file"
            else:
                backend = "faulty"
        if backend not in ("file", "memory", "faulty"):
            raise ValueError("backend must be 'auto', 'file', 'memory' or 'faulty', not %r"
                             % (backend,))
        self._backend = backend
        self._options = dict(self.db_options)
        self._sync = bool(self._options.get("sync", True))
        self._dir = tempfile.mkdtemp(prefix="btree_layer_")
        self._path = os.path.join(self._dir, "layer.db")
        self.machine = None
        if backend == "memory":
            self.db = btree_store.DB(":memory:", **self._options)
        elif backend == "file":
            self.db = btree_store.DB(self._path, **self._options)
        else:
            self.machine = self._machine_class(self._path)
            self.db = self.machine.open(**self._options)
        self.layer = self.open_layer(self.db)
        # acknowledged states, oldest first: [0] is the last durable one, [-1] the newest
        self._states = [self.initial_model()]

    @property
    def model(self) -> Any:
        """The newest acknowledged state (do not change it; operations go through execute)."""
        return self._states[-1]

    def _model_after(self, op):
        """(model after op, the expected result, the expected error or None)."""
        model = copy.deepcopy(self._states[-1])
        expected = expected_error = None
        try:
            expected = self.apply_model(model, op)
        except self.expected_errors as e:
            expected_error = e
        return model, expected, expected_error

    def execute(self, op: Any) -> Any:
        """Apply `op` to the model and the layer and compare the results; a subclass's own
        rules call this."""
        model, expected, expected_error = self._model_after(op)
        result = None
        try:
            result = self.apply(self.layer, op)
        except self.expected_errors as e:
            if expected_error is None:
                raise AssertionError("operation %r: the layer raised %r, the model returned %r"
                                     % (op, e, expected)) from e
            note("operation %r raised %r (the model: %r)" % (op, e, expected_error))
            return
        if expected_error is not None:
            raise AssertionError("operation %r: the model raised %r, the layer returned %r"
                                 % (op, expected_error, result))
        assert result == expected, (
            "operation %r: the layer returned %r, the model %r" % (op, result, expected))
        if model == self._states[-1]:
            return
        if self._sync:
            self._states = [model]
        else:
            self._states.append(model)

    def execute_with_fault(self, op, after, kind, error):
        """Run `op` on a disk that fails (``fail_after(after, kind, error)``), then let the
        process restart (crash and reopen). If the layer raised one of ``disk_errors`` the
        state must be the one before the operation or the one after it; if it returned,
        the one after."""
        prev = list(self._states)
        self.machine.fail_after(after, kind=kind, error=error)
        failed = None
        try:
            self.execute(op)
        except self.disk_errors as e:
            failed = e
        finally:
            self.machine.heal()
        self.layer = None
        self.machine.crash()
        db = self.machine.reopen(**self._options)
        what = "operation %r on a disk failing after %d %s calls (%s)" % (op, after, kind, error)
        if failed is None:
            self._match(db, [len(self._states) - 1], what + ", which returned")
            return
        note("%s raised %r" % (what, failed))
        model, _expected, expected_error = self._model_after(op)
        self._states = prev + ([model] if expected_error is None and model != prev[-1] else [])
        i = self._match(db, list(range(len(prev) - 1, len(self._states))),
                        what + ", which raised %r" % (failed,))
        if i == len(prev) - 1:
            self._states = prev

    def _reopened(self, db, allowed, what):
        """Open the layer on the reopened `db`; its state must be one of `allowed`
        (indexes into self._states). After a power loss the state it shows is the only one
        left (and it is on the disk now); otherwise it is the newest, and what was durable
        stays as it was (a reopen is not assumed to make anything durable)."""
        i = self._match(db, allowed, what)
        if len(allowed) > 1:
            self._states = [self._states[i]]

    def _match(self, db, allowed, what):
        """Open the layer on `db`; return the index in `allowed` of the state it shows."""
        self.db = db
        self.layer = self.open_layer(db)
        state = self.read_state(self.layer)
        for i in reversed(allowed):
            if state == self._states[i]:
                note("after %s: acknowledged state %d of %d (0: last durable)"
                     % (what, i, len(self._states) - 1))
                return i
        raise AssertionError(
            "after %s the layer shows %r; allowed were the acknowledged states %r"
            % (what, state, [self._states[i] for i in allowed]))

    @rule()
    def reopen(self):
        """Close the layer and the database cleanly and open both again."""
        self.close_layer(self.layer)
        self.layer = None
        if self._backend == "memory":
            self.db.copy(self._path)
            self.db.close()
            db = btree_store.DB.memory(from_path=self._path, **{
                k: v for k, v in self._options.items() if k in ("cache_size", "check_commits")})
            os.unlink(self._path)
        else:
            self.db.close()
            if self.machine is not None:
                db = self.machine.reopen(**self._options)
            else:
                db = btree_store.DB(self._path, **self._options)
        self._reopened(db, [len(self._states) - 1], "reopen")

    @precondition(lambda self: not self._sync)
    @rule()
    def sync(self):
        """db.sync(): every acknowledged operation becomes durable."""
        self.db.sync()
        self._states = self._states[-1:]

    @precondition(lambda self: self.machine is not None)
    @rule()
    def crash(self):
        """The process dies between two operations: what it wrote stays in the OS cache, so
        the newest acknowledged state must survive."""
        self.layer = None
        self.machine.crash()
        self._reopened(self.machine.reopen(**self._options), [len(self._states) - 1], "crash")

    @precondition(lambda self: self.machine is not None)
    @rule(mode=st.sampled_from(POWER_LOSS_MODES), seed=st.integers(0, 2**32 - 1))
    def power_loss(self, mode, seed):
        """The power fails: writes not yet synced are dropped, torn or reordered. The layer
        must show one acknowledged state at or after the last durable one."""
        self.layer = None
        self.machine.power_loss(mode=mode, seed=seed)
        self._reopened(self.machine.reopen(**self._options), list(range(len(self._states))),
                       "power_loss(mode=%r, seed=%d)" % (mode, seed))

    @invariant()
    def layer_matches_model(self):
        if self.layer is None:
            return
        state = self.read_state(self.layer)
        assert state == self._states[-1], (
            "the layer shows %r, the model %r" % (state, self._states[-1]))
        if self.check_db:
            self.db.check()

    def teardown(self):
        try:
            if self.layer is not None:
                self.close_layer(self.layer)
                self.layer = None
            if self.machine is not None:
                self.machine.close()
            elif not self.db.closed:
                self.db.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
