"""test_cli.py - the command line (`python -m btree_store`, the `btree-store` script): demo,
stat, check (every problem listed), dump/load in LMDB's mdb_dump text format (and the round
trip through LMDB's own mdb_load/mdb_dump), copy/compact, the scripting commands, progress on
a terminal only, and one-line errors with the documented exit codes (never a traceback).

Layer: tests only; runs the package's __main__ in child interpreters (subprocess), builds and
inspects databases with the public Python API.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

import btree_store
from _util import child_env, dump as dump_db, run_cli_on_pty

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, input=None, cwd=None, timeout=120):
    """Run the command line; returns CompletedProcess with bytes stdout/stderr."""
    return subprocess.run([sys.executable, "-m", "btree_store", *map(str, args)],
                          input=input, env=child_env(), cwd=cwd, capture_output=True,
                          timeout=timeout)


def ok(*args, **kw):
    p = cli(*args, **kw)
    assert p.returncode == 0, (args, p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert b"Traceback" not in p.stderr
    return p


def fails(code, *args, **kw):
    """Run and expect exit `code` with exactly one line on stderr and no traceback."""
    p = cli(*args, **kw)
    assert p.returncode == code, (args, p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    err = p.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("btree-store: error: "), err
    return err


def make_db(path, content):
    """content: {bucket or None: {key: value}}"""
    with btree_store.DB(str(path)) as db:
        with db.begin(write=True) as txn:
            for bucket, items in content.items():
                if bucket is not None:
                    txn.create_bucket(bucket)
                for k, v in items.items():
                    txn.put(k, v, bucket=bucket)


def read_db(path):
    with btree_store.DB(str(path), readonly=True) as db:
        db.check()
        return dump_db(db)


BINARY = {
    None: {b"": b"empty key", b"plain": b"", b"\x00\x01\xff": b"\n\r\\ \x00",
           b"big": bytes(range(256)) * 40},
    "alpha": {bytes([i]) * (i % 7 + 1): b"v%d" % i for i in range(256)},
    "beta gamma": {b"k\n1": b"", b"k\\2": b"\x00", b"caf\xc3\xa9": b"\xe2\x82\xac"},
    "empty": {},
}


# ------------------------------------------------------------------ program, help, demo
def test_demo_runs(tmp_path):
    p = ok("demo", cwd=str(tmp_path))
    out = p.stdout.decode().lower()
    assert len(out.splitlines()) >= 3, out
    for word in ("commit", "reopen"):
        assert word in out, "demo output does not mention %r:\n%s" % (word, out)
    # it cleans up after itself: nothing left in the working directory
    assert list(tmp_path.iterdir()) == []


def test_unknown_command_and_usage_fail(tmp_path):
    assert cli("no-such-command").returncode == 2
    assert cli().returncode == 2
    assert cli("dump", "x", "--all", "--bucket", "b").returncode == 2  # exclusive options
    assert b"Traceback" not in cli("dump").stderr


def _script_entry():
    """module, function of [project.scripts] btree-store in pyproject.toml."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r'^btree-store\s*=\s*"([\w.]+):(\w+)"', text, re.M)
    assert m, "pyproject.toml declares no btree-store script"
    return m.group(1), m.group(2)


def test_script_and_module_are_the_same_program():
    module, func = _script_entry()
    runner = ("import importlib, sys; sys.argv[0] = 'btree-store'; "
              "sys.exit(getattr(importlib.import_module(%r), %r)())" % (module, func))
    as_module = ok("--help").stdout
    p = subprocess.run([sys.executable, "-c", runner, "--help"], env=child_env(),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == as_module
    assert as_module.startswith(b"usage: btree-store ")
    for cmd in (b"stat", b"check", b"dump", b"load", b"copy", b"compact", b"get", b"put",
                b"delete", b"list", b"demo"):
        assert cmd in as_module
    version = ok("--version").stdout.decode().strip()
    assert version == "btree-store %s" % btree_store.__version__
    # the installed console script, when this interpreter has one (pip install)
    script = os.path.join(os.path.dirname(sys.executable), "btree-store")
    if os.path.exists(script):
        p = subprocess.run([script, "--help"], env=child_env(), capture_output=True,
                           timeout=60)
        assert p.returncode == 0 and p.stdout == as_module


# ------------------------------------------------------------------ stat, check
def test_stat(tmp_path):
    path = tmp_path / "s.bs"
    make_db(path, BINARY)
    out = ok("stat", path).stdout.decode()
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert int(fields["page_size"]) == 4096
    assert int(fields["file_size"]) == os.path.getsize(path)
    assert "alpha" in fields["named_buckets"] and "empty" in fields["named_buckets"]
    out = ok("stat", path, "--bucket", "alpha").stdout.decode()
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert int(fields["entries"]) == 256
    assert "bucket" in fields
    err = fails(1, "stat", path, "--bucket", "nope")
    assert "nope" in err


def test_check_clean(tmp_path):
    path = tmp_path / "c.bs"
    make_db(path, BINARY)
    out = ok("check", path).stdout.decode()
    assert out.startswith("%s: ok" % path)
    assert "%d entries" % sum(len(v) for v in BINARY.values()) in out


def _pages_with(path, marker, page_size=4096):
    data = path.read_bytes()
    return [i for i in range(len(data) // page_size)
            if marker in data[i * page_size:(i + 1) * page_size]]


def test_check_lists_every_problem(tmp_path):
    """Damage one leaf in each of two buckets: check exits 1 and names both buckets."""
    path = tmp_path / "bad.bs"
    with btree_store.DB(str(path)) as db:
        for name in ("first", "second"):
            with db.begin(write=True) as txn:  # one commit each: the leaves are not copied
                txn.create_bucket(name)
                for i in range(300):
                    txn.put(b"%s-marker-%04d" % (name.encode(), i), b"x" * 40, bucket=name)
        for i in range(3):  # later commits: the damaged ones are not the newest two
            with db.begin(write=True) as txn:
                txn.put(b"later", b"%d" % i)
    pages = {name: _pages_with(path, b"%s-marker-0150" % name.encode())
             for name in ("first", "second")}
    assert all(pages.values()), pages
    with open(path, "r+b") as f:
        for pgnos in pages.values():
            for pgno in pgnos:
                f.seek(pgno * 4096 + 2000)
                f.write(b"\xa5" * 16)
    p = cli("check", path)
    out = p.stdout.decode()
    assert p.returncode == 1, (out, p.stderr)
    assert out.startswith("%s: CORRUPT" % path), out
    problems = out.splitlines()[1:]
    assert len(problems) >= 2, out
    assert any("'first'" in line for line in problems), out
    assert any("'second'" in line for line in problems), out
    assert b"Traceback" not in p.stderr


def test_check_of_a_foreign_or_missing_file(tmp_path):
    junk = tmp_path / "junk.bs"
    junk.write_bytes(b"this is not a database" * 500)
    p = cli("check", junk)
    assert p.returncode == 1 and b"CORRUPT" in p.stdout and b"Traceback" not in p.stderr
    fails(2, "check", tmp_path / "missing.bs")


# ------------------------------------------------------------------ dump / load
def test_dump_format(tmp_path):
    path = tmp_path / "d.bs"
    make_db(path, {None: {b"k": b"\x00\xff"}, "b": {b"x": b""}})
    text = ok("dump", path).stdout.decode()
    lines = text.splitlines()
    assert lines[:3] == ["VERSION=3", "format=bytevalue", "type=btree"]
    assert re.fullmatch(r"mapsize=\d+", lines[3])
    assert lines[4:] == ["HEADER=END", " 6b", " 00ff", "DATA=END"]
    lines = ok("dump", path, "--bucket", "b").stdout.decode().splitlines()
    assert lines[:4] == ["VERSION=3", "format=bytevalue", "database=b", "type=btree"]
    assert lines[-4:] == ["HEADER=END", " 78", " ", "DATA=END"]
    lines = ok("dump", path, "-p").stdout.decode().splitlines()
    assert lines[1] == "format=print" and lines[-3:] == [" k", " \\00\\ff", "DATA=END"]
    whole = ok("dump", path, "--all").stdout.decode()
    assert whole.count("HEADER=END") == 2 and whole.count("database=") == 1
    fails(1, "dump", path, "--bucket", "missing")


@pytest.mark.parametrize("printable", [False, True])
def test_dump_load_roundtrip(tmp_path, printable):
    src = tmp_path / "src.bs"
    make_db(src, BINARY)
    opt = ["-p"] if printable else []
    ok("dump", src, "--all", "-o", tmp_path / "all.txt", *opt)
    ok("load", tmp_path / "dst.bs", "-i", tmp_path / "all.txt")
    assert read_db(tmp_path / "dst.bs") == BINARY  # the empty bucket is kept too
    # stdin/stdout, one bucket, loaded under another name
    text = ok("dump", src, "--bucket", "alpha", *opt).stdout
    ok("load", tmp_path / "dst.bs", "--bucket", "renamed", input=text)
    got = read_db(tmp_path / "dst.bs")
    assert got["renamed"] == BINARY["alpha"] and got["alpha"] == BINARY["alpha"]


def test_load_overwrite_and_no_overwrite(tmp_path):
    path = tmp_path / "o.bs"
    make_db(path, {None: {b"a": b"old", b"b": b"keep"}})
    stream = b"VERSION=3\nformat=print\ntype=btree\nHEADER=END\n a\n new\n c\n 3\nDATA=END\n"
    ok("load", path, "-N", input=stream)
    assert read_db(path)[None] == {b"a": b"old", b"b": b"keep", b"c": b"3"}
    ok("load", path, input=stream)
    assert read_db(path)[None] == {b"a": b"new", b"b": b"keep", b"c": b"3"}


def test_load_accepts_print_escapes_and_lmdb_headers(tmp_path):
    stream = (b"VERSION=3\nformat=print\ndatabase=p\ntype=btree\nmapsize=1048576\n"
              b"maxreaders=126\ndb_pagesize=4096\nHEADER=END\n"
              b" a\\\\b\n \\00\\0a\\FF\n"       # escaped backslash, hex escapes (any case)
              b" x\\y\n plain text\n"           # a lone backslash (older mdb_dump) is kept
              b"DATA=END\n\n"                   # a blank line between sections
              b"VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n 01\n \nDATA=END")
    ok("load", tmp_path / "p.bs", input=stream)  # the last line has no newline
    assert read_db(tmp_path / "p.bs") == {None: {b"\x01": b""},
                                          "p": {b"a\\b": b"\x00\n\xff",
                                                b"x\\y": b"plain text"}}


BAD_INPUT = [
    (b"", 0, "empty input"),
    (b"VERSION=9\nHEADER=END\nDATA=END\n", 1, "version"),
    (b"hello\n", 1, "VERSION"),
    (b"VERSION=3\nformat=bytevalue\n", 2, "HEADER=END"),
    (b"VERSION=3\nformat=zz\nHEADER=END\nDATA=END\n", 2, "format"),
    (b"VERSION=3\ntype=hash\nHEADER=END\nDATA=END\n", 2, "btree"),
    (b"VERSION=3\ndupsort=1\nHEADER=END\nDATA=END\n", 2, "dupsort"),
    (b"VERSION=3\nnonsense\nHEADER=END\nDATA=END\n", 2, "keyword=value"),
    (b"VERSION=3\nHEADER=END\n 61\n 62\n 6\n 00\nDATA=END\n", 5, "odd"),
    (b"VERSION=3\nHEADER=END\n 61\n 62\n zz\n 00\nDATA=END\n", 5, "hex"),
    (b"VERSION=3\nHEADER=END\n 61\n 62\n 63\nDATA=END\n", 6, "without a value"),
    (b"VERSION=3\nHEADER=END\n 61\n 62\nfoo\n", 5, "data line"),
    (b"VERSION=3\nHEADER=END\n 61\n 62\n", 4, "DATA=END"),
    (b"VERSION=3\nHEADER=END\n 61\n 62\nDATA=END\nVERSION=3\nHEADER=END\n 61\n", 8,
     "without a value"),
    (b"VERSION=3\nHEADER=END\n 61\n 62\nDATA=END\nVERSION=3\nHEADER=END\n 61\n 62\n", 9,
     "DATA=END"),
    (b"VERSION=3\nHEADER=END\n %s\n 00\nDATA=END\n" % (b"ab" * 5000), 4, "key"),
    (b"VERSION=3\ndatabase=%s\nHEADER=END\nDATA=END\n" % (b"n" * 300), 2, "255"),
    (b"VERSION=3\ndatabase=\xff\xfe\nHEADER=END\nDATA=END\n", 2, "UTF-8"),
]


@pytest.mark.parametrize("stream,lineno,word", BAD_INPUT)
def test_load_rejects_bad_input_with_its_line_number(tmp_path, stream, lineno, word):
    path = tmp_path / "bad.bs"
    err = fails(2, "load", path, input=stream)
    if lineno:
        assert "line %d:" % lineno in err, err
    assert word.lower() in err.lower(), err
    assert not path.exists()  # nothing created
    # into an existing database: nothing changes (one transaction)
    make_db(path, {None: {b"a": b"1"}})
    fails(2, "load", path, input=stream)
    assert read_db(path) == {None: {b"a": b"1"}}


def test_load_input_file_errors(tmp_path):
    fails(2, "load", tmp_path / "x.bs", "-i", tmp_path / "no-such-dump.txt")
    assert not (tmp_path / "x.bs").exists()


# ------------------------------------------------------------------ LMDB's own tools
LMDB = shutil.which("mdb_load") and shutil.which("mdb_dump")


def _mdb(*args, input=None):
    p = subprocess.run(list(args), input=input, capture_output=True, timeout=120)
    assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-2000:])
    return p.stdout


def _sections(text):
    """{database name or None: [data lines]} of a dump stream (independent of the loader)."""
    out = {}
    name, data, inside = None, None, False
    for line in text.decode("latin-1").splitlines():
        if line.startswith("VERSION="):
            name, data, inside = None, [], False
        elif line.startswith("database="):
            name = line[len("database="):]
        elif line == "HEADER=END":
            inside = True
        elif line == "DATA=END":
            out[name] = data
            inside = False
        elif inside:
            data.append(line)
    return out


# LMDB refuses empty keys and keys over 511 bytes; everything else of the test data is kept.
LMDB_DATA = {
    None: {b"plain": b"", b"\x00\x01\xff": b"\n\r\\ \x00", b"big": bytes(range(256)) * 40,
           b"\xff" * 500: b"long key"},
    "alpha": {bytes([i]) * (i % 7 + 1): b"v%d" % i for i in range(256)},
    "beta gamma": {b"k\n1": b"", b"k\\z": b"\x00", b"caf\xc3\xa9": b"\xe2\x82\xac"},
    "empty": {},
}


@pytest.mark.skipif(not LMDB, reason="LMDB's mdb_load/mdb_dump are not installed "
                                     "(Debian: apt-get install lmdb-utils)")
def test_roundtrip_through_lmdb_tools(tmp_path):
    """btree_store -> dump -> mdb_load -> mdb_dump -> load -> btree_store, with several
    buckets, binary keys and empty values; the data lines LMDB writes are the ones we wrote."""
    src = tmp_path / "src.bs"
    make_db(src, LMDB_DATA)
    ours = ok("dump", src, "--all").stdout
    env = str(tmp_path / "lmdb.mdb")
    _mdb("mdb_load", "-n", env, input=ours)  # a file, not a directory
    names = _mdb("mdb_dump", "-n", "-l", env).decode().split("\n")
    assert sorted(filter(None, names)) == ["alpha", "beta gamma", "empty"]
    # every named database, as LMDB dumps it, carries exactly our data lines
    theirs_named = _mdb("mdb_dump", "-n", "-a", env)
    ours_s, theirs_s = _sections(ours), _sections(theirs_named)
    for name in ("alpha", "beta gamma", "empty"):
        assert theirs_s[name] == ours_s[name], name
        single = _mdb("mdb_dump", "-n", "-s", name, env)
        assert _sections(single)[name] == ours_s[name]
    # back into btree_store: LMDB's -a stream of several databases
    dst = tmp_path / "dst.bs"
    ok("load", dst, input=theirs_named)
    got = read_db(dst)
    for name in ("alpha", "beta gamma", "empty"):
        assert got[name] == LMDB_DATA[name], name
    # LMDB's main database holds the default bucket's keys beside its own records of the
    # named databases (keyed by name)
    main = _mdb("mdb_dump", "-n", env)
    ok("load", dst, "--bucket", "main", input=main)
    got = read_db(dst)["main"]
    names = {b"alpha", b"beta gamma", b"empty"}
    assert set(got) == set(LMDB_DATA[None]) | names
    assert {k: v for k, v in got.items() if k not in names} == LMDB_DATA[None]
    # format=print as mdb_dump -p writes it
    printed = _mdb("mdb_dump", "-n", "-p", "-s", "alpha", env)
    assert b"format=print" in printed
    ok("load", dst, "--bucket", "alpha-print", input=printed)
    got = read_db(dst)["alpha-print"]
    if b"\n \\\\\\\\\n" not in printed:
        # mdb_dump 0.9.24 writes a backslash without doubling it, so a key of two backslashes
        # reads back as one (LMDB's own mdb_load does the same): leave those keys out
        got = {k: v for k, v in got.items() if b"\\" not in k}
        want = {k: v for k, v in LMDB_DATA["alpha"].items() if b"\\" not in k}
    else:
        want = LMDB_DATA["alpha"]
    assert got == want and len(want) >= 255
    # and our format=print output read by mdb_load -s (a name given on the command line)
    ours_p = ok("dump", src, "-p").stdout
    env2 = str(tmp_path / "lmdb2.mdb")
    _mdb("mdb_load", "-n", "-s", "fromprint", env2, input=ours_p)
    back = _sections(_mdb("mdb_dump", "-n", "-s", "fromprint", env2))["fromprint"]
    # mdb_load 0.9.24 mangles the doubled backslash of format=print (a bug of that version;
    # the escape is the documented one): compare the records without a backslash
    clean = {k: v for k, v in LMDB_DATA[None].items() if b"\\" not in k + v}
    assert len(clean) == 2
    assert {k: v for k, v in _pairs(back) if k in clean} == clean
    assert [k for k, v in _pairs(back)] == sorted(LMDB_DATA[None])


def _pairs(lines):
    items = [bytes.fromhex(line[1:]) for line in lines]
    return list(zip(items[0::2], items[1::2]))


# ------------------------------------------------------------------ copy, compact
@pytest.mark.parametrize("compact", [False, True])
def test_copy(tmp_path, compact):
    src = tmp_path / "src.bs"
    make_db(src, BINARY)
    dst = tmp_path / "dst.bs"
    ok("copy", src, dst, *(["--compact"] if compact else []))
    assert read_db(dst) == BINARY
    err = fails(2, "copy", src, dst)  # never overwrites
    assert "exists" in err
    assert read_db(dst) == BINARY
    fails(2, "copy", tmp_path / "missing.bs", tmp_path / "d2.bs")
    assert not (tmp_path / "d2.bs").exists()


def test_compact(tmp_path):
    path = tmp_path / "c.bs"
    with btree_store.DB(str(path)) as db:
        with db.begin(write=True) as txn:
            for i in range(20000):
                txn.put(b"%08d" % i, b"v" * 100)
        with db.begin(write=True) as txn:
            for i in range(20000):
                if i % 100:
                    txn.delete(b"%08d" % i)
    before = os.path.getsize(path)
    out = ok("compact", path).stdout.decode()
    after = os.path.getsize(path)
    assert after < before
    assert "%d" % after in out
    got = read_db(path)[None]
    assert got == {b"%08d" % i: b"v" * 100 for i in range(0, 20000, 100)}
    fails(2, "compact", tmp_path / "missing.bs")


# ------------------------------------------------------------------ scripting commands
def test_get_put_delete_list(tmp_path):
    path = tmp_path / "g.bs"
    ok("put", path, "user:1", "alice")  # creates the file
    ok("put", path, "user:2", "bob")
    ok("put", path, "other", "x")
    ok("put", path, "k", "v", "--bucket", "side")  # creates the bucket
    ok("put", path, "bin", input=b"\x00\n\xff")  # value from stdin
    assert ok("get", path, "user:1").stdout == b"alice"
    assert ok("get", path, "bin").stdout == b"\x00\n\xff"
    assert ok("get", path, "62696e", "--hex").stdout == b"000aff\n"
    assert ok("get", path, "k", "-b", "side").stdout == b"v"
    assert ok("list", path).stdout == b"bin\nother\nuser:1\nuser:2\n"
    assert ok("list", path, "--prefix", "user:").stdout == b"user:1\nuser:2\n"
    assert ok("list", path, "--prefix", "7573", "-x", "-v").stdout == \
        b"757365723a31\t616c696365\n757365723a32\t626f62\n"
    assert ok("list", path, "-b", "side", "--values").stdout == b"k\tv\n"
    fails(1, "put", path, "user:1", "eve", "--no-overwrite")
    assert ok("get", path, "user:1").stdout == b"alice"
    ok("put", path, "user:1", "eve")
    assert ok("get", path, "user:1").stdout == b"eve"
    ok("delete", path, "user:1")
    fails(1, "delete", path, "user:1")
    fails(1, "get", path, "user:1")
    fails(1, "get", path, "k", "--bucket", "nope")
    fails(1, "list", path, "--bucket", "nope")
    fails(2, "get", path, "zz", "--hex")  # not hex
    fails(2, "get", tmp_path / "missing.bs", "k")
    fails(2, "list", tmp_path / "missing.bs")
    fails(2, "delete", tmp_path / "missing.bs", "k")
    fails(2, "put", path, "x" * 5000, "v")  # key too long
    assert not (tmp_path / "missing.bs").exists()


# ------------------------------------------------------------------ failures
def test_locked_missing_corrupt_and_directory(tmp_path):
    path = tmp_path / "l.bs"
    make_db(path, BINARY)
    junk = tmp_path / "junk.bs"
    junk.write_bytes(b"\x00" * 8192 + b"garbage" * 100)
    with btree_store.DB(str(path)) as db:  # open here: the commands work beside it
        for args in (("stat", path), ("dump", path), ("list", path), ("get", path, "plain"),
                     ("put", path, "a", "b"), ("check", path)):
            r = subprocess.run([sys.executable, "-m", "btree_store", *map(str, args)],
                               env=child_env(), capture_output=True, timeout=300)
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        with db.begin() as txn:  # and this handle sees what the other process put
            assert txn.get(b"a") == b"b"
    for cmd in ("stat", "dump", "list"):
        err = fails(2, cmd, tmp_path / "nope.bs")
        assert "no such file" in err, err
        fails(1, cmd, junk)
        err = fails(2, cmd, tmp_path)
        assert "directory" in err, err
    assert not (tmp_path / "nope.bs").exists()


def test_closed_pipe_is_quiet(tmp_path):
    """`btree-store list x | head`: the reader goes away early."""
    path = tmp_path / "p.bs"
    make_db(path, {None: {b"key-%06d" % i: b"v" * 20 for i in range(30000)}})
    for args in (("list", path), ("dump", path), ("list", path, "-v")):
        p = subprocess.Popen([sys.executable, "-m", "btree_store", *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
        first = p.stdout.readline()
        assert first
        p.stdout.close()
        err = p.stderr.read()
        p.stderr.close()
        rc = p.wait(timeout=120)
        assert rc == 141, (args, rc, err)
        assert err == b"", err


# ------------------------------------------------------------------ progress

def test_progress_on_a_terminal_only(tmp_path):
    path = tmp_path / "big.bs"
    make_db(path, {None: {b"%07d" % i: b"v" * 30 for i in range(5000)}, "b": {b"k": b"v"}})
    dumpfile = tmp_path / "d.txt"
    rc, err = run_cli_on_pty(["dump", path, "--all", "-o", dumpfile])
    assert rc == 0, err
    assert re.search(r"dump: 5,001 / 5,001 records [\d.,]+ records/s in [\d.]+s", err), err
    rc, err = run_cli_on_pty(["load", tmp_path / "new.bs"], input_path=dumpfile)
    assert rc == 0, err
    size = os.path.getsize(dumpfile)
    assert re.search(r"load: [\d.]+ [KM]iB / [\d.]+ [KM]iB [\d.]+ [KM]?i?B/s in", err), err
    assert size > 100000
    rc, err = run_cli_on_pty(["check", path])
    assert rc == 0 and "check:" in err, err
    # not a terminal: nothing on stderr
    for args in (["dump", path, "--all", "-o", tmp_path / "d2.txt"],
                 ["load", tmp_path / "new2.bs", "-i", dumpfile], ["check", path]):
        p = ok(*args)
        assert p.stderr == b"", (args, p.stderr)
    assert read_db(tmp_path / "new.bs") == read_db(path)
