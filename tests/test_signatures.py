"""test_signatures.py - the public API describes itself: inspect.signature() works for every
public callable of btree_store, btree_store.dbm, btree_store.aio and btree_store._testing
(and of every public class found there, walking dir() of each), every public callable and
property has a docstring, and the signatures of the C extension's callables say exactly what
the calls accept (probed: each named parameter is accepted by keyword, positional-only ones
are refused as keywords, unknown keywords and surplus positional arguments are refused).

Layer: tests (public API only). A callable added later without a text signature or a
docstring fails here.
"""
import importlib
import importlib.util
import inspect
import types

import pytest

import btree_store
from btree_store import _core

MODULES = ["btree_store", "btree_store.dbm", "btree_store.aio", "btree_store._testing"]
if importlib.util.find_spec("btree_store.testing") is not None:
    MODULES.append("btree_store.testing")

# Protocol methods a class of ours defines itself are part of its API; the rest of the
# dunder names (and every _private name) are not walked.
PROTOCOL = {
    "__enter__", "__exit__", "__aenter__", "__aexit__", "__iter__", "__next__",
    "__aiter__", "__anext__", "__await__", "__len__", "__getitem__", "__setitem__",
    "__delitem__", "__contains__", "__call__",
}


def _ours(obj):
    mod = getattr(obj, "__module__", None) or ""
    return mod == "btree_store" or mod.startswith("btree_store.")


def _public_names(mod):
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n in dir(mod) if not n.startswith("_")]
    return [n for n in names if not n.startswith("__")]


def _defining_class(cls, name):
    for base in cls.__mro__:
        if name in base.__dict__:
            return base
    return None


def _walk():
    """(qualified name, object, kind) for every public callable and property."""
    seen = set()
    out = []
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for name in _public_names(mod):
            obj = getattr(mod, name)
            if isinstance(obj, types.ModuleType) or not callable(obj):
                continue
            if not _ours(obj):
                continue  # re-exported from elsewhere (typing, os, ...)
            key = id(obj)
            if key in seen:
                continue
            seen.add(key)
            out.append((f"{modname}.{name}", obj, "callable"))
            if not isinstance(obj, type):
                continue
            for attr in dir(obj):
                if attr.startswith("_") and attr not in PROTOCOL:
                    continue
                owner = _defining_class(obj, attr)
                if owner is None or not _ours(owner):
                    continue  # inherited from object, Exception, collections.abc, ...
                raw = owner.__dict__[attr]
                qual = f"{modname}.{name}.{attr}"
                if (owner, attr) in seen:
                    continue
                seen.add((owner, attr))
                if isinstance(raw, (property, types.GetSetDescriptorType,
                                    types.MemberDescriptorType)):
                    out.append((qual, raw, "property"))
                elif callable(raw) or isinstance(raw, (classmethod, staticmethod)):
                    out.append((qual, getattr(obj, attr), "callable"))
    return out


WALK = _walk()


def test_walk_finds_the_api():
    names = {q for q, _, _ in WALK}
    for must in ["btree_store.DB", "btree_store.DB.begin", "btree_store.Txn.pop",
                 "btree_store.Txn.__exit__", "btree_store.Txn.drop_bucket",
                 "btree_store.Iterator.seek", "btree_store.Iterator.__next__",
                 "btree_store.Error", "btree_store.dbm.open", "btree_store.aio.open",
                 "btree_store.aio.AsyncTxn.get", "btree_store._testing.FaultIO.fail_nth"]:
        assert must in names, must
    assert len(WALK) > 100


@pytest.mark.parametrize("qual,obj", [(q, o) for q, o, k in WALK if k == "callable"],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_signature_and_doc(qual, obj):
    sig = inspect.signature(obj)  # raises ValueError when there is none
    if getattr(obj, "__text_signature__", None) is None and isinstance(
            obj, (types.BuiltinFunctionType, types.MethodDescriptorType)):
        pytest.fail(f"{qual}: no __text_signature__")
    assert sig is not None
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"{qual} has no docstring"


@pytest.mark.parametrize("qual,obj", [(q, o) for q, o, k in WALK if k == "property"],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_property_doc(qual, obj):
    assert obj.__doc__ and obj.__doc__.strip(), f"{qual} has no docstring"


def test_exceptions_keep_a_plain_doc():
    # the text signature lives in the type's internal doc; __doc__ is the plain text
    assert btree_store.Error.__doc__.startswith("Base class")
    assert str(inspect.signature(btree_store.CorruptionError)) == "(*args)"


# ---- the C callables' signatures say what the calls accept ----

ARGPARSE = ("unexpected keyword argument", "takes no keyword arguments", "positional-only",
            "positional argument", "takes no arguments", "takes exactly", "missing required",
            "keywords must be strings")


def _is_argparse_error(e):
    return isinstance(e, TypeError) and any(m in str(e) for m in ARGPARSE)


class _Probe:
    """Fresh objects for each call (a call may commit, close, ...)."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.n = 0
        self.live = []

    def db(self):
        self.n += 1
        db = btree_store.DB(str(self.tmp / f"p{self.n}.db"), sync=False)
        self.live.append(db)
        return db

    def target(self, cls):
        if cls is _core.DB:
            return self.db()
        db = self.db()
        if cls is btree_store.WriteTxn:
            return db.begin(write=True)
        if cls is btree_store.Txn:
            return db.begin()
        if cls is btree_store.Iterator:
            return db.begin().iter()
        if cls is _core._FaultIO:
            return _core._FaultIO()
        raise AssertionError(cls)

    def close(self):
        for db in self.live:
            try:
                db.close()
            except btree_store.Error:
                pass


C_CLASSES = [_core.DB, btree_store.Txn, btree_store.WriteTxn, btree_store.Iterator,
             _core._FaultIO]


def _c_methods():
    for cls in C_CLASSES:
        for name, raw in cls.__dict__.items():
            if isinstance(raw, types.MethodDescriptorType) and (
                    not name.startswith("_") or name in PROTOCOL):
                yield cls, name


def _call(probe, cls, name, args, kwargs):
    obj = probe.target(cls)
    try:
        getattr(obj, name)(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any outcome but an argument error is fine
        return e
    return None


@pytest.mark.parametrize("cls,name", list(_c_methods()),
                         ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_c_method_accepts_its_signature(tmp_path, cls, name):
    sig = inspect.signature(getattr(cls, name))
    params = list(sig.parameters.values())[1:]  # without self
    kinds = inspect.Parameter
    probe = _Probe(tmp_path)
    try:
        var_kw = any(p.kind == kinds.VAR_KEYWORD for p in params)
        var_pos = any(p.kind == kinds.VAR_POSITIONAL for p in params)
        for p in params:
            if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY):
                e = _call(probe, cls, name, (), {p.name: None})
                assert not (_is_argparse_error(e) and p.name in str(e) and
                            "missing" not in str(e)), f"{name}({p.name}=...) refused: {e}"
                assert not (isinstance(e, TypeError) and "unexpected keyword" in str(e)), \
                    f"{name}({p.name}=...) refused: {e}"
            elif p.kind == kinds.POSITIONAL_ONLY:
                e = _call(probe, cls, name, (), {p.name: None})
                assert _is_argparse_error(e), f"{name}({p.name}=...) must be refused: {e}"
        if not var_kw:
            e = _call(probe, cls, name, (), {"no_such_argument": None})
            assert _is_argparse_error(e), f"{name}(no_such_argument=...) accepted: {e}"
        if not var_pos:
            npos = sum(p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
                       for p in params)
            e = _call(probe, cls, name, (None,) * (npos + 1), {})
            assert _is_argparse_error(e), f"{name} with {npos + 1} positional accepted: {e}"
        required = [p for p in params if p.default is p.empty and
                    p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)]
        if required:
            e = _call(probe, cls, name, (), {})
            assert _is_argparse_error(e), f"{name}() without arguments accepted: {e}"
    finally:
        probe.close()


def test_constructor_signatures(tmp_path):
    sig = inspect.signature(btree_store.DB)
    path = str(tmp_path / "c.db")
    for p in sig.parameters.values():
        if p.name == "path":
            continue
        value = {"cache_size": 1 << 20, "page_size": 4096}.get(p.name, False)
        if p.name == "create":
            value = True
        with btree_store.DB(path, **{p.name: value}) as db:
            assert not db.closed
    with btree_store.DB(path=path) as db:
        assert db.path == path
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        btree_store.DB(path, nope=1)
    with pytest.raises(TypeError, match="positional argument"):
        btree_store.DB(path, False)
    with pytest.raises(TypeError, match="missing required argument 'path'"):
        btree_store.DB()
    with pytest.raises(TypeError, match="unexpected keyword"):
        _core._FaultIO(x=1)
    with pytest.raises(TypeError, match="positional"):
        _core._FaultIO(1)


def test_pop_default_is_positional(tmp_path):
    with btree_store.DB(str(tmp_path / "p.db")) as db, db.begin(write=True) as txn:
        txn[b"a"] = b"1"
        assert txn.pop(b"missing", b"d") == b"d"
        assert txn.pop(b"a") == b"1"
        with pytest.raises(KeyError):
            txn.pop(b"a")
        with pytest.raises(TypeError, match="positional-only"):
            txn.pop(b"a", default=b"d")
        with pytest.raises(TypeError, match="at most 2 positional"):
            txn.pop(b"a", b"d", b"e")
        assert txn.drop_bucket(name="nope") is False
        txn.create_bucket("b")
        assert txn.drop_bucket("b") is True
        with pytest.raises(TypeError, match="missing required argument 'name'"):
            txn.drop_bucket()
        it = txn.iter()
        assert it.seek(key=b"") is False
        with pytest.raises(TypeError, match="positional-only"):
            txn.__exit__(exc_type=None, exc_value=None, traceback=None)
        with pytest.raises(TypeError, match="missing required"):
            txn.__exit__(None)
        with pytest.raises(TypeError, match="positional-only"):
            db.__exit__(exc_type=None, exc_value=None, traceback=None)
        with pytest.raises(TypeError, match="missing required"):
            db.__exit__(None, None)
        with pytest.raises(TypeError, match="at most 3 positional"):
            db.__exit__(None, None, None, None)
        assert not db.closed
    assert db.closed


def test_c_types_keep_their_text_signature():
    """The C types' signatures come from the start of their docstrings; CPython 3.9 drops it
    there unless the binding keeps it (py_keep_text_signature): __text_signature__ holds it,
    __doc__ does not show it, and the Python subclass DB inherits it."""
    from btree_store import _testing
    assert _core.DB.__text_signature__.startswith("(path, *, readonly=False")
    assert _testing.FaultIO.__text_signature__ == "()"
    for tp in (_core.DB, _testing.FaultIO):
        assert not tp.__doc__.startswith(("DB(", "FaultIO(")), tp.__doc__[:40]
    assert str(inspect.signature(btree_store.DB)) == _core.DB.__text_signature__
