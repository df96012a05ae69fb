#!/bin/sh
# hattn run and verify with variable-length batches (--kv-lens, --q-lens):
# sequences of their own lengths padded to the longest, checked against
# the float64 reference of each sequence alone; lengths 0, 1, the maximum
# and odd values, decode and prefill, paged K and V; the .npy files hold
# the padded batch and verify --in reads them back; bad options and
# unsupported combinations are refused.  Skips (77) without LLVM.
set -u
. "${top_srcdir:-.}/tests/cli-lib.sh"

printf 'pattern c = causal\npattern w = causal & window(37)\npattern s = sink(4) | window(20)\npattern d = causal & document\npattern a = causal with alibi, softcap(30)\n' \
  >"$tmp/p.hattn"
"$hattn" run "$tmp/p.hattn" -p c --seqlen 64 --heads 1 --head-dim 16 >"$tmp/out" 2>&1
if grep -q "built without LLVM" "$tmp/out"; then
  echo "SKIP: hattn was built without LLVM"
  exit 77
fi

# Decode: up to 4 queries per sequence, the batch taken from the lengths,
# lk the longest key length.
expect 0 "kv 4x2x301x64" "$hattn" verify "$tmp/p.hattn" -p c --seqlen 4 --kv-lens 301,0,1,77 --q-lens 4,1,0,3 \
  -H 8 --kv-heads 2 -d 64
expect 0 "lens 4/301,1/0,0/1,3/77" "$hattn" verify "$tmp/p.hattn" -p w --seqlen 4 --kv-lens 301,0,1,77 \
  --q-lens 4,1,0,3 -H 8 --kv-heads 2 -d 64 -t bf16
# Prefill: q_len = k_len; lq and lk the longest.
for p in c w s a; do
  expect 0 ": ok" "$hattn" verify "$tmp/p.hattn" -p "$p" --kv-lens 130,1,0,67 --q-lens 130,1,0,67 -H 8 \
    --kv-heads 2 -d 32
done
lacks "FAIL"
# Only key lengths: every entry has --seqlen's queries.
expect 0 "q 3x4x2x32 kv 3x2x90x32" "$hattn" verify "$tmp/p.hattn" -p c --seqlen 2 --kv-lens 90,5,33 -H 4 \
  --kv-heads 2 -d 32 -t fp16
# --seqlen N,M pads the keys further than the longest.
expect 0 "kv 2x1x200x16" "$hattn" verify "$tmp/p.hattn" -p c --seqlen 3,200 --kv-lens 50,120 -H 2 --kv-heads 1 \
  -d 16
# Paged K and V: only each sequence's pages are read.
expect 0 "paged 16 hnd" "$hattn" verify "$tmp/p.hattn" -p w --seqlen 1 --kv-lens 150,7,64 -H 8 --kv-heads 2 \
  -d 64 --page-size 16 --page-layout hnd -t bf16

# The .npy files hold the padded batch, which verify --in reads back
# with the same lengths.
expect 0 "wrote $tmp/var" "$hattn" run "$tmp/p.hattn" -p c --seqlen 4 --kv-lens 99,1,40 --q-lens 4,1,2 -H 4 \
  --kv-heads 2 -d 16 --seed 11 --out "$tmp/var"
expect 0 "from $tmp/var" "$hattn" verify "$tmp/p.hattn" -p c --in "$tmp/var" --kv-lens 99,1,40 --q-lens 4,1,2
expect 0 "kv 3x2x99x16" "$hattn" verify "$tmp/p.hattn" -p c --in "$tmp/var" --kv-lens 99,1,40

# Bad options and what is not supported.
expect 2 "--kv-lens has 2 lengths, but the batch is 3" \
  "$hattn" run "$tmp/p.hattn" -p c --seqlen 4 -B 3 --kv-lens 10,20
expect 2 "--q-lens has 3 lengths and --kv-lens 2" \
  "$hattn" run "$tmp/p.hattn" -p c --q-lens 1,2,3 --kv-lens 10,20
expect 2 "--kv-lens: expected lengths A,B,..." "$hattn" run "$tmp/p.hattn" -p c --seqlen 4 --kv-lens 10,-1
expect 2 "--kv-lens: expected lengths A,B,..." "$hattn" run "$tmp/p.hattn" -p c --seqlen 4 --kv-lens 10,,3
expect 2 "k_lens[0] is 100, above lk 64" "$hattn" run "$tmp/p.hattn" -p c --seqlen 4,64 --kv-lens 100,3
expect 2 "q_lens[1] is 9, above lq 4" "$hattn" run "$tmp/p.hattn" -p c --seqlen 4,64 --q-lens 1,9
expect 2 "pattern 'd' uses document(), blocks(), random() or topk()" \
  "$hattn" verify "$tmp/p.hattn" -p d --seqlen 4 --kv-lens 100,3
expect 2 "not with offsets_set" "$hattn" run "$tmp/p.hattn" -p c --seqlen 4 --kv-lens 100,3 --q-offset 2
expect 0 "--kv-lens A,B,.." "$hattn" run --help
expect 0 "--q-lens A,B,.." "$hattn" verify --help

echo "cli_varlen.sh: $fails failure(s)"
[ "$fails" -eq 0 ]
