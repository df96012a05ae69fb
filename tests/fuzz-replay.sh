#!/bin/sh
# Replay the parser's fuzz target over the corpus and the example specs,
# with mutations (tests/fuzz_replay_main.c).
set -e
exec "${top_builddir:-.}/tests/fuzz_spec_replay" "${top_srcdir:-.}"/tests/corpus/* "${top_srcdir:-.}"/examples/*.hattn
