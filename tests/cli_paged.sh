#!/bin/sh
# hattn run and verify with paged K and V (--page-size, --page-layout):
# K and V scattered into a shuffled pool of pages (unused pages NaN) and
# read through a block table, checked against the float64 reference on
# the logical tensors; the .npy files stay the logical tensors; bad
# options are refused.  Skips (77) when hattn was built without LLVM.
set -u
. "${top_srcdir:-.}/tests/cli-lib.sh"

printf 'pattern c = causal\npattern w = causal & window(40)\npattern d = causal & document\npattern f = full\n' \
  >"$tmp/p.hattn"
"$hattn" run "$tmp/p.hattn" -p c --seqlen 64 --heads 1 --head-dim 16 >"$tmp/out" 2>&1
if grep -q "built without LLVM" "$tmp/out"; then
  echo "SKIP: hattn was built without LLVM"
  exit 77
fi

# Every page size the tests name, both layouts, prefill and decode, GQA,
# the three dtypes.
for ps in 1 16 64 128; do
  for lay in nhd hnd; do
    expect 0 "paged $ps $lay" "$hattn" verify "$tmp/p.hattn" -p c --seqlen 150,150 -H 8 --kv-heads 2 -d 32 \
      -B 2 --page-size "$ps" --page-layout "$lay"
    expect 0 ": ok" "$hattn" verify "$tmp/p.hattn" -p w --seqlen 1,300 -H 8 --kv-heads 2 -d 64 -B 3 \
      --page-size "$ps" --page-layout "$lay" -t bf16
  done
done
expect 0 "paged 16 nhd" "$hattn" verify "$tmp/p.hattn" -p d --docs 37 --seqlen 200 -H 4 --kv-heads 1 -d 32 \
  --page-size 16 -t fp16
lacks "FAIL"
expect 0 "paged 256 nhd" "$hattn" verify "$tmp/p.hattn" -p f --seqlen 7,500 -H 2 -d 16 --page-size 256
expect 0 "paged 8 nhd seed 5" "$hattn" run "$tmp/p.hattn" -p c --seqlen 100 -H 2 -d 16 --page-size 8 --seed 5

# The .npy files hold the logical K and V: a paged run and a contiguous one
# of the same seed write the same inputs, and verify --in reads them back.
expect 0 "paged 32 hnd seed 7" "$hattn" run "$tmp/p.hattn" -p c --seqlen 90 -H 4 --kv-heads 2 -d 16 --seed 7 \
  --page-size 32 --page-layout hnd --out "$tmp/paged"
expect 0 "seed 7" "$hattn" run "$tmp/p.hattn" -p c --seqlen 90 -H 4 --kv-heads 2 -d 16 --seed 7 --out "$tmp/flat"
for f in q k v o lse; do
  if cmp -s "$tmp/paged/$f.npy" "$tmp/flat/$f.npy"; then
    echo "ok: $f.npy of the paged run equals the contiguous run's"
  else
    echo "FAIL: $f.npy of the paged run differs from the contiguous run's"
    fails=$((fails + 1))
  fi
done
expect 0 "paged 4 nhd from $tmp/paged" "$hattn" verify "$tmp/p.hattn" -p c --in "$tmp/paged" --page-size 4

# Bad options.
expect 2 "--page-size: 3 is not a power of two from 1 to 256" \
  "$hattn" verify "$tmp/p.hattn" -p c --seqlen 10 --page-size 3
expect 2 "--page-size: 512 is not a power of two from 1 to 256" \
  "$hattn" run "$tmp/p.hattn" -p c --seqlen 10 --page-size 512
expect 2 "--page-size" "$hattn" run "$tmp/p.hattn" -p c --seqlen 10 --page-size 0
expect 2 "--page-layout needs --page-size" "$hattn" verify "$tmp/p.hattn" -p c --seqlen 10 --page-layout hnd
expect 2 "--page-layout: expected nhd or hnd, got 'xyz'" \
  "$hattn" verify "$tmp/p.hattn" -p c --seqlen 10 --page-size 4 --page-layout xyz
expect 0 "--page-size P" "$hattn" run --help
expect 0 "--page-layout L" "$hattn" verify --help

echo "cli_paged.sh: $fails failure(s)"
[ "$fails" -eq 0 ]
