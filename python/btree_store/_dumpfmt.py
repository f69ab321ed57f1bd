"""_dumpfmt.py - LMDB's portable text dump format (what mdb_dump writes and mdb_load reads).

A stream holds one or more sections, one per database:

    VERSION=3
    format=bytevalue            (or "print": printable bytes as-is, '\\\\' and '\\HH' escapes)
    database=NAME               (absent for the main/default database)
    type=btree
    mapsize=1048576             (other header keywords are informational)
    HEADER=END
     6b6579                     (one line per key, then one per value; a leading space;
     76616c7565                  lowercase hex pairs in format=bytevalue)
    DATA=END

write_header()/write_record()/write_footer() produce it; Reader parses it (several sections,
either format) and raises DumpError with the line number of the first bad line.

Layer: package, pure Python (no database access); used by the command line (__main__.py).
"""
import re

__all__ = ["DumpError", "Section", "Reader", "write_header", "write_record", "write_footer",
           "encode_print", "decode_print"]

# Header keywords mdb_dump writes that carry no meaning for btree_store.
_INFO_KEYWORDS = {"mapsize", "mapaddr", "maxreaders", "db_pagesize"}
# Flags that change only the key order of an LMDB database: the data itself loads fine.
_ORDER_FLAGS = {"reversekey", "integerkey"}
# Flags of LMDB's duplicate-key databases: several values per key cannot be represented.
_DUP_FLAGS = {"dupsort", "dupfixed", "integerdup", "reversedup"}

_PRINTABLE = frozenset(range(0x20, 0x7F))
_HEX = b"0123456789abcdefABCDEF"


class DumpError(ValueError):
    """Bad dump input; .lineno is the 1-based line number (0 when not about a line)."""

    def __init__(self, lineno, msg):
        self.lineno = lineno
        self.msg = msg
        super().__init__("line %d: %s" % (lineno, msg) if lineno else msg)


def encode_print(data):
    """format=print encoding of bytes: printable ASCII as-is, backslash doubled, every other
    byte as a backslash and two hex digits."""
    out = bytearray()
    for c in data:
        if c == 0x5C:
            out += b"\\\\"
        elif c in _PRINTABLE:
            out.append(c)
        else:
            out += b"\\%02x" % c
    return bytes(out)


_ESCAPE = re.compile(rb"\\(\\|[0-9A-Fa-f]{2})?")


def decode_print(text):
    """Inverse of encode_print. A backslash followed by neither a backslash nor two hex
    digits is kept as a literal backslash (some mdb_dump versions do not double it)."""
    if b"\\" not in text:
        return bytes(text)

    def sub(m):
        g = m.group(1)
        if g is None:
            return b"\\"
        if g == b"\\":
            return b"\\"
        return bytes((int(g, 16),))

    return _ESCAPE.sub(sub, text)


def write_header(out, *, name=None, printable=False, mapsize=None):
    """Write a section header to the binary stream `out`. `name` is the bucket (None: the
    default bucket, which maps to LMDB's main database)."""
    lines = [b"VERSION=3", b"format=print" if printable else b"format=bytevalue"]
    if name is not None:
        raw = name.encode("utf-8")
        if b"\n" in raw or b"\r" in raw:
            raise DumpError(0, "bucket name %r contains a line break: the dump format cannot "
                               "hold it" % (name,))
        lines.append(b"database=" + raw)
    lines.append(b"type=btree")
    if mapsize:
        lines.append(b"mapsize=%d" % mapsize)
    lines.append(b"HEADER=END")
    out.write(b"\n".join(lines) + b"\n")


def write_record(out, key, value, printable=False):
    """Write one key/value pair (two lines)."""
    if printable:
        out.write(b" " + encode_print(key) + b"\n " + encode_print(value) + b"\n")
    else:
        out.write(b" %s\n %s\n" % (bytes(key).hex().encode("ascii"),
                                   bytes(value).hex().encode("ascii")))


def write_footer(out):
    out.write(b"DATA=END\n")


class Section:
    """One database of a dump stream: .name (str, or None for the main database), .printable,
    .header (dict of the other keywords). Iterating it yields (key, value) bytes pairs; it
    must be consumed before the Reader moves to the next section."""

    def __init__(self, reader, name, printable, header):
        self._reader = reader
        self.name = name
        self.printable = printable
        self.header = header

    def __iter__(self):
        return self._reader._records(self)


class Reader:
    """Parse a dump stream from a binary file object. Iterating yields Section objects.
    .lineno is the number of the last line read; .bytes_read counts the bytes consumed."""

    def __init__(self, f):
        self._f = f
        self.lineno = 0
        self.bytes_read = 0
        self._pending = None  # a Section whose records were not consumed yet

    def _line(self):
        raw = self._f.readline()
        if not raw:
            return None
        self.lineno += 1
        self.bytes_read += len(raw)
        if raw.endswith(b"\n"):
            raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
        else:
            # the last line of the stream lacks its newline: fine for the text, but the
            # line is complete only if nothing follows
            pass
        return raw

    def __iter__(self):
        while True:
            if self._pending is not None:
                for _ in self._records(self._pending):  # skip what the caller left
                    pass
            line = self._line()
            while line is not None and not line.strip():
                line = self._line()  # blank lines between sections
            if line is None:
                if self.lineno == 0:
                    raise DumpError(0, "empty input: no dump header")
                return
            yield self._header(line)

    def _header(self, line):
        if not line.startswith(b"VERSION="):
            raise DumpError(self.lineno, "expected VERSION=3 at the start of a section, found "
                                         "%s" % _show(line))
        try:
            version = int(line[8:])
        except ValueError:
            version = -1
        if not 1 <= version <= 3:
            raise DumpError(self.lineno, "unsupported dump version %s" % _show(line[8:]))
        name = None
        printable = False
        header = {}
        while True:
            line = self._line()
            if line is None:
                raise DumpError(self.lineno, "unexpected end of input inside a header "
                                             "(no HEADER=END)")
            if line == b"HEADER=END":
                break
            if line.startswith(b" "):
                raise DumpError(self.lineno, "data line before HEADER=END")
            key, eq, val = line.partition(b"=")
            if not eq:
                raise DumpError(self.lineno, "expected keyword=value in the header, found %s"
                                % _show(line))
            try:
                key = key.decode("ascii")
            except UnicodeDecodeError:
                raise DumpError(self.lineno, "bad header keyword %s" % _show(key)) from None
            if key == "format":
                if val == b"print":
                    printable = True
                elif val == b"bytevalue":
                    printable = False
                else:
                    raise DumpError(self.lineno, "unknown format %s (bytevalue or print)"
                                    % _show(val))
            elif key == "database":
                try:
                    name = val.decode("utf-8")
                except UnicodeDecodeError:
                    raise DumpError(self.lineno, "database name is not UTF-8") from None
                if not name:
                    name = None
                elif len(val) > 255:
                    raise DumpError(self.lineno, "database name longer than 255 bytes")
            elif key == "type":
                if val != b"btree":
                    raise DumpError(self.lineno, "unsupported database type %s (btree only)"
                                    % _show(val))
            elif key in _DUP_FLAGS:
                if val.strip() not in (b"0", b""):
                    raise DumpError(self.lineno, "%s databases (several values per key) "
                                                 "cannot be loaded" % key)
            else:
                header[key] = val.decode("utf-8", "replace")
        section = Section(self, name, printable, header)
        self._pending = section
        return section

    def _records(self, section):
        if self._pending is not section:
            return
        decode = decode_print if section.printable else self._unhex
        while True:
            line = self._line()
            if line is None:
                self._pending = None
                raise DumpError(self.lineno, "unexpected end of input (no DATA=END)")
            if line == b"DATA=END":
                self._pending = None
                return
            key = decode(self._data(line))
            line = self._line()
            if line is None or line == b"DATA=END":
                self._pending = None
                raise DumpError(self.lineno, "a key without a value")
            value = decode(self._data(line))
            yield key, value

    def _data(self, line):
        if not line.startswith(b" "):
            raise DumpError(self.lineno, "expected a data line (starting with a space) or "
                                         "DATA=END, found %s" % _show(line))
        return line[1:]

    def _unhex(self, text):
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            pass
        if len(text) % 2:
            raise DumpError(self.lineno, "odd number of hex digits")
        raise DumpError(self.lineno, "not hex pairs: %s" % _show(text))


def _show(b, limit=40):
    s = repr(bytes(b[:limit]))[1:]
    return s + ("..." if len(b) > limit else "")
