"""long_walk_rss.py - the RSS growth of the long walks (check() and drop_bucket()) over a
~200 MB file opened with cache_size=1 MiB: their memory should be bounded by the cache size
plus a map of the file's pages, not grow with the file.

    python bench/long_walk_rss.py [--n 1100000] [--dir DIR] [--json FILE]

Builds the file (N records of ~170 bytes in one bucket), then runs each walk in a fresh child
process: RSS before, peak RSS (VmHWM, reset just before the walk) and RSS after, in MiB; drop
is drop_bucket() + commit on a copy of the file. The measurement itself is
bench/extras.py's "check" line (shared code). Nothing is asserted.

Layer: benchmark; the public Python API of btree_store (through bench/extras.py).
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import extras  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_100_000, help="records of the file")
    ap.add_argument("--dir", default=None, help="folder for the file (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    r = extras.check_lines(args.dir or tempfile.gettempdir(), args.n)
    print("btree_store %s, a %.0f MiB file (%d records), cache_size 1 MiB"
          % (extras.btree_store.__version__, r["file_mib"], r["records"]))
    for op in ("check", "drop"):
        x = r[op]
        if "note" in x:
            print("%-5s n/a (%s)" % (op, x["note"]))
            continue
        print("%-5s RSS %.1f MiB -> peak %.1f MiB (growth %.1f MiB), after %.1f MiB"
              % (op, x["rss_before_mib"], x["peak_mib"], x["growth_mib"], x["rss_after_mib"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
