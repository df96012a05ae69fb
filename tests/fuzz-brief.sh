#!/bin/sh
# Fuzz the spec parser with libFuzzer for a short while (HATTN_FUZZ_SECONDS,
# default 20), starting from the corpus and the examples.  To fuzz for hours:
#   HATTN_FUZZ_SECONDS=14400 make check TESTS=tests/fuzz-brief.sh
# Crashes are written to tests/fuzz-crashes/ in the build tree.
set -e
b=${top_builddir:-.}
s=${top_srcdir:-.}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$b/tests/fuzz-crashes"
cp "$s"/tests/corpus/* "$s"/examples/*.hattn "$work/corpus/"
exec "$b/tests/fuzz_spec" -max_total_time="${HATTN_FUZZ_SECONDS:-20}" -max_len=4096 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$b/tests/fuzz-crashes/" "$work/corpus"
