#!/bin/sh
# The hattn command on hostile and misleading input (issue 12): every case
# answers with its message and exit status, within seconds and under a
# memory limit, however large the sizes the input asks for.
set -u
. "${top_srcdir:-.}/tests/cli-lib.sh"

# The limits every command runs under: seconds of wall time, and KiB of
# address space (not under AddressSanitizer, which reserves terabytes).
secs=20
kib=786432
case "${CFLAGS:-}" in *-fsanitize=address*) kib=unlimited ;; esac
if grep -q __asan_init "$hattn" 2>/dev/null; then kib=unlimited; fi
# OpenBLAS (the bench's baseline, linked into the command) starts a thread
# per core when it loads, and hattn's pool one per core, each with its own
# stack: on a many-core machine (16 on the GPU machine) that alone passes
# the limit.  Two threads: the limit measures hattn's work, not the cores.
OPENBLAS_NUM_THREADS=1 HATTN_NUM_THREADS=2
export OPENBLAS_NUM_THREADS HATTN_NUM_THREADS

# expect (cli-lib.sh) runs each command within $secs seconds and $kib KiB
# of address space.
cli_run() {
  (ulimit -v "$kib" && exec timeout "$secs" "$@")
}

printf 'pattern p = causal\n' >"$tmp/causal.hattn"
printf 'pattern p = causal & document\n' >"$tmp/doc.hattn"
printf 'pattern p = causal & blocks(L)\n' >"$tmp/blocks.hattn"
printf '2 2\n11\n11\n' >"$tmp/l.txt"

# Misleading messages.
# A directory where a file belongs.
mkdir -p "$tmp/in/q.npy" "$tmp/dir"
expect 2 "cannot read $tmp/in/q.npy: it is a directory, not a .npy file" \
  "$hattn" run "$tmp/causal.hattn" --in "$tmp/in"
expect 2 "hattn: --layout: cannot read $tmp/dir: it is a directory, not a layout file" \
  "$hattn" plan "$tmp/blocks.hattn" --seqlen 4 --layout "L=$tmp/dir"
# A layout given twice.
expect 2 "hattn: --layout: layout 'L' is given twice (L=$tmp/l.txt and L=$tmp/dir)" \
  "$hattn" plan "$tmp/blocks.hattn" --seqlen 4 --layout "L=$tmp/l.txt" --layout "L=$tmp/dir"
expect 0 "pairs    10 visible of 16" "$hattn" plan "$tmp/blocks.hattn" --seqlen 4 --layout "L=$tmp/l.txt"
# A length of 40 digits is a length too large, not a missing comma.
expect 2 "hattn: --doc-lens: expected a non-negative length such as 4096 or 128k (below 2^31), got '1234567890123456789012345678901234567890'" \
  "$hattn" plan "$tmp/doc.hattn" --seqlen 256 --doc-lens 64,1234567890123456789012345678901234567890
expect 2 "hattn: --doc-lens: expected lengths separated by commas, got an empty one" \
  "$hattn" plan "$tmp/doc.hattn" --seqlen 256 --doc-lens 64,,64
# CR-only line ends count as lines.
printf 'pattern a = causal\rpattern b = windw(3)\r' >"$tmp/cr.hattn"
expect 2 "$tmp/cr.hattn:2:13: error: unknown mask atom 'windw'" "$hattn" check "$tmp/cr.hattn"

# Sizes past the documented limits.
# 2000 model blocks of 1024 x 1024 in 135 KB of spec (8 GB of grids).
{
  echo 'pattern p = causal'
  i=0
  while [ $i -lt 2000 ]; do
    printf 'model m%04d { layers 1024 heads 1024 head_dim 64 layer 0-1023 : p }\n' $i
    i=$((i + 1))
  done
} >"$tmp/models.hattn"
expect 2 "$tmp/models.hattn:18:7: error: model 'm0016' has 1048576 (layer, head) cells, and the models of one file may have at most 16777216 (2^24) in all" \
  "$hattn" check "$tmp/models.hattn"

# A plan past the documented limits (hattn plan --seqlen 16m grew to 24 GB).
expect 2 "hattn plan: the block plan of 16777216 queries x 16777216 keys in tiles of 128 x 128 would classify more than 67108864 (2^26) blocks, the limit: use larger tiles or shorter sequences" \
  "$hattn" plan "$tmp/causal.hattn" --seqlen 16m
expect 2 "hattn plan: the block plan of 16777216 queries x 16777216 keys in tiles of 1 x 128 would take more than 268435456 bytes (256 MiB), the limit" \
  "$hattn" plan "$tmp/causal.hattn" --seqlen 16m --block 1,128
expect 0 "pairs    8,590,000,128 visible" "$hattn" plan "$tmp/causal.hattn" --seqlen 16m,128k

# Counting the pairs of causal & document at 16m took 17 s in documents of
# 4k, 79 s in documents of 1.
expect 2 "hattn plan: counting the visible pairs of pattern 'p' at 16777216 x 16777216 exactly would take more than 16777216 (2^24) steps, the limit" \
  "$hattn" plan "$tmp/doc.hattn" --seqlen 16m --docs 4k
expect 2 "hattn: --docs: 16777216 keys in documents of 1 make 16777216 documents, more than the limit of 1048576 (2^20)" \
  "$hattn" plan "$tmp/doc.hattn" --seqlen 16m --docs 1
expect 2 "hattn: --docs: 2147483647 keys in documents of 1 make 2147483647 documents, more than the limit of 1048576 (2^20)" \
  "$hattn" plan "$tmp/doc.hattn" --seqlen 1,2147483647 --docs 1

# The keys a layer keeps, found per key over one period of distances, took
# minutes for window(8) & stride(4093) at 16m.
printf 'pattern p = window(8) & stride(4093)\nmodel m { layers 1 heads 1 head_dim 64 layer 0 : p }\n' >"$tmp/keep.hattn"
expect 2 "hattn report: pattern 'p': finding the keys it keeps at 16777216 tokens would take more than 268435456 (2^28) steps, the limit" \
  "$hattn" report "$tmp/keep.hattn" --seqlen 16m
expect 0 "density" "$hattn" report "$tmp/keep.hattn" --seqlen 4k

# The receptive field is counted within 2^28 steps, else said not to be
# (causal & stride(2): every block PARTIAL, half the keys never seen).
printf 'pattern p = causal & stride(2)\nmodel m { layers 2 heads 1 head_dim 64 layer 0-1 : p }\n' >"$tmp/reach.hattn"
expect 0 "reach   not counted: the receptive field at 65,536 tokens takes more than 2^28 steps" \
  "$hattn" report "$tmp/reach.hattn" --seqlen 64k
expect 0 "reach     50.000%  of the 4,096 positions" "$hattn" report "$tmp/reach.hattn" --seqlen 4k

# topk(K) and random(R, S) hold at most the key blocks that exist (topk took
# 27 s and 8.5 GB at seqlen 1, and exited 2 with no message at 64k).
printf 'pattern p = causal & topk(2147483647)\n' >"$tmp/topk.hattn"
printf 'pattern p = causal | random(2147483647, 3)\n' >"$tmp/random.hattn"
expect 0 "counted as the 1 most recent eligible blocks" "$hattn" plan "$tmp/topk.hattn" --seqlen 1
expect 0 "counted as the 1024 most recent eligible blocks" "$hattn" plan "$tmp/topk.hattn" --seqlen 64k
expect 0 "pairs    4,294,967,296 visible" "$hattn" plan "$tmp/random.hattn" --seqlen 64k
expect 0 "tolerance 1e-05: ok" "$hattn" verify "$tmp/topk.hattn" --seqlen 200 -H 2 -d 16

echo "$fails failure(s)"
[ "$fails" -eq 0 ]
