"""Command line of btree_store: `btree-store` (the console script) and `python -m btree_store`
are the same program.

    btree-store stat PATH [--bucket B]        statistics of the file, or of one bucket
    btree-store check PATH                    integrity check; lists every problem found
    btree-store repair PATH                   rebuild a damaged freelist (trees must be sound)
    btree-store dump PATH [--bucket B | --all] [-o FILE] [-p]
                                              LMDB mdb_dump text format (to stdout by default)
    btree-store load PATH [--bucket B] [-i FILE] [-N]
                                              read that format (mdb_dump output, several
                                              databases, format=bytevalue or print)
    btree-store copy SRC DST [--compact]      consistent copy of a database file
    btree-store compact PATH                  compact a database file in place
    btree-store get PATH KEY | put PATH KEY [VALUE] | delete PATH KEY | list PATH [--prefix P]
                                              scripting (--bucket B; --hex for binary data)
    btree-store demo                          a guided tour in a temporary folder
    btree-store --version

Exit codes: 0 success; 1 a problem with the data (a corrupt file, a key or bucket that is not
there, a key that exists under put --no-overwrite); 2 anything that kept the command from
running (usage, a missing or locked file, bad dump input, I/O errors); 130 interrupted; 141 the
reader of the output went away (as a program killed by SIGPIPE). Expected failures print one
line on stderr, never a traceback. Long work (dump, load, copy, compact, check) shows its
progress on stderr, with rate and ETA, only when stderr is a terminal.

main(argv) returns the exit code.

Layer: package; uses the public Python API (btree_store.DB, Txn) and _dumpfmt.
"""
import argparse
import glob
import os
import stat as _stat
import sys
import tempfile
import threading
import time

import btree_store
from btree_store import _dumpfmt

PROG = "btree-store"

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


# ------------------------------------------------------------------ errors, progress, helpers
class CliError(Exception):
    """An expected failure: main() prints its message on one line and exits with .code."""

    def __init__(self, msg, code=2):
        super().__init__(msg)
        self.code = code


class Progress:
    """Progress on stderr (count, rate, ETA), drawn only when stderr is a terminal, at most
    four times a second, plus one final line. Quiet otherwise."""

    def __init__(self, label, total=None, unit="records", stream=None):
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.on = self.stream.isatty()
        except (AttributeError, ValueError):
            self.on = False
        self.label = label
        self.total = total
        self.unit = unit
        self.n = 0
        self.start = time.monotonic()
        self._last = 0.0

    def _fmt(self, n):
        if self.unit == "bytes":
            for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
                if n >= div:
                    return "%.1f %s" % (n / div, suffix)
            return "%d B" % n
        return "{:,}".format(int(n))

    def update(self, n):
        self.n = n
        if not self.on:
            return
        now = time.monotonic()
        if now - self._last >= 0.25:
            self._last = now
            self._draw(now, final=False)

    def _draw(self, now, final):
        elapsed = max(now - self.start, 1e-9)
        parts = ["%s:" % self.label]
        if self.n is None:
            parts.append("%.1fs elapsed" % elapsed)
        else:
            count = self._fmt(self.n)
            if self.total:
                count += " / %s" % self._fmt(self.total)
            if self.unit != "bytes":
                count += " " + self.unit
            parts.append(count)
            if self.total and not final:
                parts.append("(%d%%)" % min(100, 100 * self.n // self.total))
            rate = self.n / elapsed
            parts.append("%s/s" % (self._fmt(rate) if self.unit == "bytes"
                                   else "%s %s" % (self._fmt(rate), self.unit)))
            if final:
                parts.append("in %.1fs" % elapsed)
            elif self.total and rate > 0 and self.n < self.total:
                eta = int((self.total - self.n) / rate)
                parts.append("ETA %d:%02d" % (eta // 60, eta % 60))
            else:
                parts.append("%.1fs elapsed" % elapsed)
        try:
            self.stream.write("\r" + " ".join(parts) + "\x1b[K" + ("\n" if final else ""))
            self.stream.flush()
        except (OSError, ValueError):
            self.on = False

    def finish(self):
        if self.on:
            self._draw(time.monotonic(), final=True)


def _in_thread(fn, progress, poll=None, done=None):
    """Run fn() (one long call into the engine) while the main thread draws progress from
    poll() (a count, or None for elapsed time only); done(), if given, is the final count
    (and total) once fn() returned. Without a terminal: just fn()."""
    if not progress.on:
        return fn()
    box = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            box["error"] = e

    t = threading.Thread(target=work, name="btree-store-work", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.1)
        try:
            progress.update(poll() if poll else None)
        except OSError:
            pass
    if "error" in box:
        raise box["error"]
    if done is not None:
        progress.total = done()
        progress.update(progress.total)
    else:
        progress.update(poll() if poll else None)
    progress.finish()
    return box.get("value")


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _written(dest):
    """Bytes a copy to dest has written so far: the engine writes dest.tmp-PID-N (this
    process's PID) and renames it to dest at the end."""
    pattern = glob.escape(os.fspath(dest)) + ".tmp-%d-*" % os.getpid()
    sizes = [_size(p) for p in glob.glob(pattern)]
    return max(sizes) if sizes else _size(dest)


def _open(path, *, write=False, create=False):
    """Open a database, turning the expected failures into a CliError with one clear line."""
    path = os.fspath(path)
    if not create and not os.path.lexists(path):
        raise CliError("%s: no such file" % path)
    if os.path.isdir(path):
        raise CliError("%s: is a directory, not a database file" % path)
    try:
        return btree_store.DB(path, readonly=not write, create=create)
    except btree_store.LockedError as e:
        raise CliError(_msg(e)) from None
    except btree_store.CorruptionError as e:
        raise CliError(_msg(e), 1) from None
    except PermissionError:
        raise CliError("%s: permission denied" % path) from None
    except (btree_store.Error, OSError) as e:
        raise CliError("%s: %s" % (path, _msg(e))) from None


def _msg(e):
    return str(e) or type(e).__name__


def _key_arg(text, hexmode, what="key"):
    if hexmode:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise CliError("%s %r is not hex" % (what, text)) from None
    return os.fsencode(text)


def _bucket_guard(txn, bucket):
    if bucket is not None and bucket not in txn.buckets():
        raise CliError("no bucket named %r" % bucket, 1)


def _out_line(out, data, hexmode):
    out.write((bytes(data).hex().encode("ascii") if hexmode else bytes(data)))


# ------------------------------------------------------------------ commands
def cmd_stat(args, out):
    db = _open(args.path)
    with db:
        if args.bucket is None:
            st = dict(db.stat())
            st["named_buckets"] = db.buckets()
        else:
            with db.begin() as txn:
                _bucket_guard(txn, args.bucket)
                st = {"bucket": args.bucket}
                fn = getattr(txn, "stat", None)
                if fn is not None:
                    st.update(fn(bucket=args.bucket))
                st.setdefault("entries", txn.count(bucket=args.bucket))
    width = max(len(k) for k in st)
    for k, v in st.items():
        out.write(("%-*s  %s\n" % (width, k, v)).encode("utf-8", "backslashreplace"))
    return 0


def cmd_check(args, out):
    path = args.path
    problems = []
    try:
        db = _open(path)
    except CliError as e:
        if e.code != 1:
            raise
        problems.append(str(e))
        db = None
    pages = entries = nbuckets = 0
    if db is not None:
        with db:
            st = db.stat()
            pages = st["page_count"]
            try:
                _in_thread(db.check, Progress("check"))
            except btree_store.CorruptionError as e:
                # every problem the checker found, one a line
                problems.extend(getattr(e, "problems", None) or [_msg(e)])
            # Read every record of every bucket, so that problems beyond the first one the
            # checker reports are listed too (each bucket is read on its own).
            try:
                with db.begin() as txn:
                    names = [None] + txn.buckets()
                    total = 0
                    for name in names:
                        total += txn.count(bucket=name)
                    prog = Progress("check: reading", total=total)
                    for name in names:
                        nbuckets += name is not None
                        try:
                            entries += _scan_bucket(txn, name, prog, entries)
                        except btree_store.CorruptionError as e:
                            label = "default bucket" if name is None else "bucket %r" % name
                            problems.append("%s: %s" % (label, _msg(e)))
                    prog.finish()
            except btree_store.CorruptionError as e:
                problems.append(_msg(e))
    seen = set()
    unique = [p for p in problems if not (p in seen or seen.add(p))]
    if unique:
        out.write(("%s: CORRUPT (%d problem%s)\n" % (path, len(unique),
                                                     "" if len(unique) == 1 else "s")
                   ).encode("utf-8", "backslashreplace"))
        for p in unique:
            out.write(("  %s\n" % p).encode("utf-8", "backslashreplace"))
        return 1
    out.write(("%s: ok (%d pages, %d entries, %d named buckets)\n"
               % (path, pages, entries, nbuckets)).encode("utf-8", "backslashreplace"))
    return 0


def _scan_bucket(txn, name, prog, done):
    expect = txn.count(bucket=name)
    n = 0
    prev = None
    for k, _v in txn.iter(bucket=name):
        k = bytes(k)
        if prev is not None and k <= prev:
            raise btree_store.CorruptionError("keys out of order after %r" % prev[:40])
        prev = k
        n += 1
        if not n & 1023:
            prog.update(done + n)
    prog.update(done + n)
    if n != expect:
        raise btree_store.CorruptionError("the bucket counts %d entries but %d were read"
                                          % (expect, n))
    return n


def _mapsize(file_size):
    """A map size for LMDB's mdb_load that comfortably holds the data: four times the file,
    at least 64 MiB, rounded up to a MiB."""
    size = max(4 * file_size, 64 << 20)
    return (size + (1 << 20) - 1) & ~((1 << 20) - 1)


def cmd_dump(args, out):
    db = _open(args.path)
    with db:
        mapsize = _mapsize(db.stat()["file_size"])
        with db.begin() as txn:
            if args.all:
                names = txn.buckets()
                if txn.count() or not names:
                    names = [None] + names
            else:
                _bucket_guard(txn, args.bucket)
                names = [args.bucket]
            total = sum(txn.count(bucket=n) for n in names)
            for n in names:
                if n is not None and ("\n" in n or "\r" in n):
                    raise CliError("bucket name %r contains a line break: the dump format "
                                   "cannot hold it" % n)
            if args.output:
                try:
                    f = open(args.output, "wb")
                except OSError as e:
                    raise CliError("%s: %s" % (args.output, e.strerror or e)) from None
            else:
                f = out
            ok = False
            try:
                prog = Progress("dump", total=total)
                n = 0
                for name in names:
                    _dumpfmt.write_header(f, name=name, printable=args.printable,
                                          mapsize=mapsize)
                    for k, v in txn.iter(bucket=name):
                        _dumpfmt.write_record(f, k, v, args.printable)
                        n += 1
                        if not n & 1023:
                            prog.update(n)
                    _dumpfmt.write_footer(f)
                f.flush()
                prog.update(n)
                prog.finish()
                ok = True
            finally:
                if f is not out:
                    f.close()
                    if not ok:
                        try:
                            os.unlink(args.output)
                        except OSError:
                            pass
    return 0


def cmd_load(args, out):
    if args.input and args.input != "-":
        try:
            f = open(args.input, "rb")
        except OSError as e:
            raise CliError("%s: %s" % (args.input, e.strerror or e)) from None
        label = args.input
    else:
        f = sys.stdin.buffer
        label = "<stdin>"
    try:
        return _load(args, f, label)
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _load(args, f, label):
    total = None
    try:
        st = os.fstat(f.fileno())
        if st.st_size and _stat.S_ISREG(st.st_mode):
            total = st.st_size - f.tell()
    except (OSError, ValueError, AttributeError):
        pass
    existed = os.path.lexists(args.path)
    db = _open(args.path, write=True, create=True)
    try:
        return _load_into(db, args, f, label, total)
    except BaseException:
        if not existed:  # a failed load into a new file leaves no file behind
            try:
                db.close()
                os.unlink(args.path)
            except OSError:
                pass
        raise


def _load_into(db, args, f, label, total):
    reader = _dumpfmt.Reader(f)
    prog = Progress("load", total=total, unit="bytes")
    n = 0
    with db:
        # One write transaction: bad input anywhere leaves the database as it was.
        txn = db.begin(write=True)
        try:
            for section in reader:
                target = args.bucket if args.bucket is not None else section.name
                if target is not None:
                    try:
                        txn.create_bucket(target, exist_ok=True)
                    except ValueError as e:
                        raise _dumpfmt.DumpError(reader.lineno, _msg(e)) from None
                for k, v in section:
                    try:
                        txn.put(k, v, not args.no_overwrite, bucket=target)
                    except ValueError as e:
                        raise _dumpfmt.DumpError(reader.lineno, _msg(e)) from None
                    n += 1
                    if not n & 1023:
                        prog.update(reader.bytes_read)
            prog.update(reader.bytes_read)
            txn.commit()
        except _dumpfmt.DumpError as e:
            txn.abort()
            raise CliError("%s: %s (nothing was loaded)" % (label, e)) from None
        except BaseException:
            if not txn.closed:
                txn.abort()
            raise
    prog.finish()
    return 0


def _need(name):
    if not hasattr(btree_store.DB, name):
        raise CliError("this build of btree_store has no DB.%s()" % name)


def cmd_copy(args, out):
    _need("copy")
    if os.path.lexists(args.dst):
        raise CliError("%s: already exists (refusing to overwrite it)" % args.dst)
    db = _open(args.src)
    with db:
        st = db.stat()
        total = st["file_size"]
        if args.compact:
            total = max(st["page_count"] - st["free_pages"], 1) * st["page_size"]
        prog = Progress("copy", total=total, unit="bytes")
        try:
            _in_thread(lambda: db.copy(args.dst, compact=args.compact), prog,
                       lambda: _written(args.dst), lambda: _size(args.dst))
        except BaseException:
            if os.path.lexists(args.dst):
                try:
                    os.unlink(args.dst)
                except OSError:
                    pass
            raise
    return 0


def cmd_compact(args, out):
    _need("compact")
    db = _open(args.path, write=True)
    with db:
        before = _size(args.path)
        st = db.stat()
        live = max(st["page_count"] - st["free_pages"], 1) * st["page_size"]
        # the compact copy is written next to the file (PATH.tmp-PID-N), then renamed over it
        tmp = glob.escape(os.fspath(args.path)) + ".tmp-%d-*" % os.getpid()
        _in_thread(db.compact, Progress("compact", total=live, unit="bytes"),
                   lambda: max([_size(p) for p in glob.glob(tmp)] or [0]),
                   lambda: _size(args.path))
    after = _size(args.path)
    out.write(("%s: %d -> %d bytes\n" % (args.path, before, after)).encode("utf-8",
                                                                         "backslashreplace"))
    return 0


def cmd_repair(args, out):
    db = _open(args.path, write=True)
    with db:
        try:
            rebuilt = _in_thread(db.repair, Progress("repair"))
        except btree_store.CorruptionError as e:
            raise CliError("%s: %s" % (args.path, _msg(e)), 1) from None
        free = db.stat()["free_pages"]
    if rebuilt:
        msg = "%s: freelist rebuilt from the newest commit (%d free pages); writes work again" % (
            args.path, free)
    else:
        msg = "%s: the freelist is exact; nothing to repair" % args.path
    out.write((msg + "\n").encode("utf-8", "backslashreplace"))
    return 0


def cmd_get(args, out):
    key = _key_arg(args.key, args.hex)
    db = _open(args.path)
    with db:
        with db.begin() as txn:
            _bucket_guard(txn, args.bucket)
            value = txn.get(key, bucket=args.bucket)
    if value is None:
        raise CliError("key not found: %r" % (key,), 1)
    _out_line(out, value, args.hex)
    if args.hex or out_isatty(out):
        out.write(b"\n")
    return 0


def out_isatty(out):
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def cmd_put(args, out):
    key = _key_arg(args.key, args.hex)
    if args.value is None:
        value = sys.stdin.buffer.read()
        if args.hex:
            value = _key_arg(value.decode("ascii", "replace").strip(), True, "value")
    else:
        value = _key_arg(args.value, args.hex, "value")
    db = _open(args.path, write=True, create=True)
    with db:
        with db.begin(write=True) as txn:
            if args.bucket is not None:
                txn.create_bucket(args.bucket, exist_ok=True)
            try:
                done = txn.put(key, value, not args.no_overwrite, bucket=args.bucket)
            except ValueError as e:
                raise CliError(_msg(e)) from None
    if not done:
        raise CliError("key exists: %r (not overwritten)" % (key,), 1)
    return 0


def cmd_delete(args, out):
    key = _key_arg(args.key, args.hex)
    db = _open(args.path, write=True)
    with db:
        with db.begin(write=True) as txn:
            _bucket_guard(txn, args.bucket)
            found = txn.delete(key, bucket=args.bucket)
    if not found:
        raise CliError("key not found: %r" % (key,), 1)
    return 0


def cmd_list(args, out):
    prefix = _key_arg(args.prefix, args.hex, "prefix") if args.prefix is not None else None
    db = _open(args.path)
    with db:
        with db.begin() as txn:
            _bucket_guard(txn, args.bucket)
            if args.values:
                for k, v in txn.iter(prefix=prefix, bucket=args.bucket):
                    _out_line(out, k, args.hex)
                    out.write(b"\t")
                    _out_line(out, v, args.hex)
                    out.write(b"\n")
            else:
                for k in txn.iter(prefix=prefix, bucket=args.bucket, values=False):
                    _out_line(out, k, args.hex)
                    out.write(b"\n")
    return 0


def cmd_demo(args, out):
    return demo(keep=args.dir)


# ------------------------------------------------------------------ argument parsing
# ---- upgrade: convert a file of an older on-disk format (btree_store/_upgrade.py) ----
def cmd_upgrade(args, out):
    from . import _upgrade
    try:
        n = _upgrade.upgrade(args.path, backup=args.backup)
    except (_upgrade.UpgradeError, btree_store.Error, OSError) as e:
        print("upgrade failed: %s" % _msg(e), file=sys.stderr)
        return 1
    print("%s: converted to format version 2 (%d entries)%s"
         % (args.path, n, "; original kept as %s.v1.bak" % args.path if args.backup else ""), file=sys.stderr)
    return 0


def _add_upgrade(add):
    p = add("upgrade", cmd_upgrade, "convert a database file of format version 1 to the "
                                    "current format (a rewritten copy renamed over it)")
    p.add_argument("path")
    p.add_argument("--backup", action="store_true", help="keep the original as PATH.v1.bak")


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="btree_store command line (also run as python -m btree_store)")
    parser.add_argument("--version", action="version",
                        version="%s %s" % (PROG, btree_store.__version__))
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")

    def add(name, fn, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    def bucket_opt(p, what="the bucket to use (default: the default bucket)"):
        p.add_argument("--bucket", "-b", metavar="B", help=what)

    p = add("stat", cmd_stat, "print statistics of a database file (or of one bucket)")
    p.add_argument("path")
    bucket_opt(p, "statistics of this bucket")

    p = add("check", cmd_check, "check the integrity of a database file: exit 0 when clean, "
                                "1 when corrupt (each problem listed)")
    p.add_argument("path")

    p = add("repair", cmd_repair, "rebuild the freelist of a database file from what its newest "
                                  "commit reaches (the answer to a damaged freelist; a damaged "
                                  "tree is refused, exit 1)")
    p.add_argument("path")

    p = add("dump", cmd_dump, "write buckets in LMDB's mdb_dump text format")
    p.add_argument("path")
    g = p.add_mutually_exclusive_group()
    bucket_opt(g, "dump this bucket (default: the default bucket)")
    g.add_argument("--all", "-a", action="store_true",
                   help="dump the default bucket (when not empty) and every named bucket")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    p.add_argument("-p", "--printable", action="store_true",
                   help="format=print: printable bytes as-is (default: hex, format=bytevalue)")

    p = add("load", cmd_load, "read mdb_dump text (several databases, format=bytevalue or "
                              "print) into a database file, in one transaction")
    p.add_argument("path")
    bucket_opt(p, "load every section into this bucket (default: the section's database=, "
                  "or the default bucket)")
    p.add_argument("-i", "--input", metavar="FILE", help="read FILE (default: stdin)")
    p.add_argument("-N", "--no-overwrite", action="store_true",
                   help="keep the value of keys that already exist")

    p = add("copy", cmd_copy, "write a consistent copy of a database file")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--compact", action="store_true",
                   help="write only live pages, fully packed")

    p = add("compact", cmd_compact, "compact a database file in place and give its free "
                                    "space back to the file system")
    p.add_argument("path")

    hex_help = "KEY, VALUE, --prefix and the output are hex"
    p = add("get", cmd_get, "print the value of KEY (exit 1 when missing)")
    p.add_argument("path")
    p.add_argument("key")
    bucket_opt(p)
    p.add_argument("-x", "--hex", action="store_true", help=hex_help)

    p = add("put", cmd_put, "store VALUE under KEY (VALUE from stdin when omitted)")
    p.add_argument("path")
    p.add_argument("key")
    p.add_argument("value", nargs="?")
    bucket_opt(p, "the bucket (created when missing)")
    p.add_argument("-x", "--hex", action="store_true", help=hex_help)
    p.add_argument("-N", "--no-overwrite", action="store_true",
                   help="exit 1 and change nothing when KEY exists")

    p = add("delete", cmd_delete, "delete KEY (exit 1 when missing)")
    p.add_argument("path")
    p.add_argument("key")
    bucket_opt(p)
    p.add_argument("-x", "--hex", action="store_true", help=hex_help)

    p = add("list", cmd_list, "print the keys (one a line), in order")
    p.add_argument("path")
    p.add_argument("--prefix", "-P", metavar="P", help="only keys starting with P")
    bucket_opt(p)
    p.add_argument("-v", "--values", action="store_true", help="print KEY<TAB>VALUE lines")
    p.add_argument("-x", "--hex", action="store_true", help=hex_help)

    p = add("demo", cmd_demo, "create, fill, reopen and check a demo database")
    p.add_argument("--dir", help="folder for the database (default: a new temporary one)")
    _add_upgrade(add)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "fn", None) is None:
        parser.print_help(sys.stderr)
        return 2
    out = sys.stdout.buffer
    try:
        rc = args.fn(args, out)
        out.flush()
        return rc
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except CliError as e:
        return _fail(str(e), e.code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except btree_store.CorruptionError as e:
        return _fail(_msg(e), 1)
    except btree_store.BucketNotFoundError as e:
        return _fail("no bucket named %s" % e, 1)
    except (btree_store.Error, OSError) as e:
        return _fail(_msg(e), 2)


def _fail(msg, code):
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _silence_stdout()
    try:
        sys.stderr.write("%s: error: %s\n" % (PROG, msg))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return code


def _silence_stdout():
    """The reader of stdout went away: point the descriptor at /dev/null so that the flush at
    interpreter exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
