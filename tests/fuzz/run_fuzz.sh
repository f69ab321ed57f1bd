#!/usr/bin/env bash
# run_fuzz.sh - build the libFuzzer target tests/fuzz/fuzz_open.c with clang (ASan+UBSan) and
# run it for a bounded time on a seed corpus of small valid databases made by the C engine:
# first as is (arbitrary bytes: mostly stopped by the checksums), then built with -DFUZZ_RESEAL
# (every page's CRC and the meta commit lists recomputed before opening: crafted files whose
# checksums are all valid), each for the given time.
#
# Usage: tests/fuzz/run_fuzz.sh [seconds]    (default 60; BTREE_STORE_FUZZ_SECONDS overrides)
# Needs clang (Debian: apt-get install clang). Exits non-zero on any crash or sanitizer report.
# Layer: test tooling; builds the engine's C files with the fuzz target, never the binding.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${BTREE_STORE_FUZZ_SECONDS:-${1:-60}}"
out="${TMPDIR:-/tmp}/btree_store_fuzz"
rm -rf "$out" && mkdir -p "$out/corpus" "$out/artifacts"
engine="csrc/util.c csrc/crc32c.c csrc/cache.c csrc/freelist.c csrc/meta.c csrc/pager.c csrc/db.c csrc/lockfile.c csrc/btree.c csrc/check.c csrc/io_posix.c csrc/io_fault.c csrc/map.c"
CC="${FUZZ_CC:-clang}"
# seed corpus: a few small databases written by the engine itself
$CC -std=c11 -O1 -g -D_GNU_SOURCE -Icsrc tests/fuzz/make_seeds.c $engine -lpthread -o "$out/make_seeds"
"$out/make_seeds" "$out/corpus"
for variant in open reseal; do
    defs=""
    [ "$variant" = reseal ] && defs="-DFUZZ_RESEAL"
    mkdir -p "$out/artifacts_$variant" "$out/corpus_$variant"
    cp "$out/corpus/"* "$out/corpus_$variant/"
    $CC -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -D_GNU_SOURCE $defs -Icsrc tests/fuzz/fuzz_open.c $engine -lpthread -o "$out/fuzz_$variant"
    echo "fuzzing fuzz_open ($variant) for ${secs}s"
    "$out/fuzz_$variant" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$out/artifacts_$variant/" -print_final_stats=1 "$out/corpus_$variant" 2>&1 | tail -n 25
done
