#!/bin/sh
# hattn run, verify and gen from the command line: verify passes for several
# patterns, shapes and dtypes; run writes the five .npy files with the right
# headers and sizes; --in reads them back; and every failure path exits with
# its status and a message.  Skips (77) when hattn was built without LLVM.
set -u
. "${top_srcdir:-.}/tests/cli-lib.sh"
cli_shown=3

fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}

cat >"$tmp/s.hattn" <<'EOF'
pattern local   = causal & window(100) with softcap(30)
pattern sinkwin = sink(4) | causal & window(64)
pattern alibi   = causal with alibi
pattern docs    = causal & document
pattern routed  = causal & topk(2)
pattern bird    = random(2, 5) | window(32, 32) | global(16)
pattern enc     = full with scale(0.05)
EOF
printf 'pattern only = causal\n' >"$tmp/one.hattn"

# --help for each command, and the command list.
for c in run verify gen; do expect 0 "usage: hattn $c" "$hattn" $c --help; done
expect 0 "verify FILE" "$hattn" --help

"$hattn" run "$tmp/one.hattn" --seqlen 64 --heads 1 --head-dim 16 >"$tmp/out" 2>&1
if grep -q "built without LLVM" "$tmp/out"; then
  echo "SKIP: hattn was built without LLVM"
  exit 77
fi

# verify: patterns, GQA, Lq != Lk, dtypes.
small="--heads 4 --kv-heads 2 --head-dim 64 --seed 1"
for p in local sinkwin alibi enc bird routed; do
  expect 0 ": ok" "$hattn" verify "$tmp/s.hattn" --pattern $p --seqlen 300 $small
done
expect 0 ": ok" "$hattn" verify "$tmp/s.hattn" --pattern docs --seqlen 300 --doc-lens 100,37,0,90 $small
expect 0 ": ok" "$hattn" verify "$tmp/s.hattn" --pattern local --seqlen 70,333 $small
expect 0 ": ok" "$hattn" verify "$tmp/s.hattn" --pattern sinkwin --seqlen 1,500 $small
expect 0 ": ok" "$hattn" verify "$tmp/one.hattn" --seqlen 200 --batch 2 --heads 3 --kv-heads 1 --head-dim 128
for t in fp16 bf16; do
  for p in local alibi docs; do
    expect 0 "$t seed 3 | " "$hattn" verify "$tmp/s.hattn" --pattern $p --seqlen 256 --dtype $t --docs 100 \
      --heads 2 --head-dim 128 --seed 3
  done
done
expect 0 "tolerance 1e-05: ok" "$hattn" verify "$tmp/one.hattn" --seqlen 128 --heads 2 --head-dim 32 --threads 1
# --q-offset, --k-offset: a chunk of queries, a slice of the keys, refusals.
expect 0 "q_offset 100 k_offset 0 | " "$hattn" verify "$tmp/s.hattn" --pattern sinkwin --seqlen 64,300 --q-offset 100 $small
expect 0 "q_offset -20 k_offset 150 | " "$hattn" verify "$tmp/s.hattn" --pattern local --seqlen 200,100 \
  --q-offset -20 --k-offset 150 $small
expect 0 "q_offset 200 k_offset 0 | " "$hattn" verify "$tmp/s.hattn" --pattern docs --seqlen 64,300 --q-offset 200 \
  --docs 90 --dtype bf16 $small
expect 0 "q_offset 236 k_offset 64 | " "$hattn" verify "$tmp/s.hattn" --pattern alibi --seqlen 64,300 --k-offset 64 $small
expect 2 "hattn verify: k_offset is -1; key positions are never negative" "$hattn" verify "$tmp/one.hattn" \
  --seqlen 64 --k-offset -1 $small
expect 2 "hattn: --q-offset: expected an integer in [-1073741823, 1073741823], got '2x'" "$hattn" verify \
  "$tmp/one.hattn" --seqlen 64 --q-offset 2x $small
expect 2 "hattn run: document() with k_offset 5 is not supported" "$hattn" run "$tmp/s.hattn" --pattern docs \
  --seqlen 64 --k-offset 5 $small
expect 2 "hattn run: random() with offsets is not supported" "$hattn" run "$tmp/s.hattn" --pattern bird \
  --seqlen 64 --q-offset 3 $small
expect 0 "seed " "$hattn" run "$tmp/one.hattn" --seqlen 128 --heads 2 --head-dim 32

# run --out: five files, with their headers and sizes.  A rank-3 or rank-4
# header of these sizes is 128 bytes.
expect 0 "wrote $tmp/a" "$hattn" run "$tmp/one.hattn" --seqlen 96,160 --batch 2 --heads 4 --kv-heads 2 \
  --head-dim 32 --seed 5 --threads 1 --out "$tmp/a"
check_npy() { # FILE DESCR SHAPE BYTES
  [ -f "$1" ] || { fail "$1 was not written"; return; }
  head -c 10 "$1" | od -An -c | tr -d ' \n' | grep -q '223NUMPY001\\0' || fail "$1: bad magic or version"
  head -c 128 "$1" | grep -aqF "{'descr': '$2', 'fortran_order': False, 'shape': ($3), }" ||
    fail "$1: header is not descr $2 shape ($3): $(head -c 128 "$1" | tail -c 118)"
  n=$(wc -c <"$1" | tr -d ' ')
  [ "$n" -eq $((128 + $4)) ] || fail "$1: $n bytes, wanted 128 + $4"
}
check_npy "$tmp/a/q.npy" "<f4" "2, 4, 96, 32" $((2 * 4 * 96 * 32 * 4))
check_npy "$tmp/a/k.npy" "<f4" "2, 2, 160, 32" $((2 * 2 * 160 * 32 * 4))
check_npy "$tmp/a/v.npy" "<f4" "2, 2, 160, 32" $((2 * 2 * 160 * 32 * 4))
check_npy "$tmp/a/o.npy" "<f4" "2, 4, 96, 32" $((2 * 4 * 96 * 32 * 4))
check_npy "$tmp/a/lse.npy" "<f4" "2, 4, 96" $((2 * 4 * 96 * 4))
expect 0 "wrote $tmp/bf" "$hattn" run "$tmp/one.hattn" --seqlen 64 --heads 2 --head-dim 16 --dtype bf16 --out "$tmp/bf"
check_npy "$tmp/bf/q.npy" "<u2" "1, 2, 64, 16" $((2 * 64 * 16 * 2))
check_npy "$tmp/bf/lse.npy" "<f4" "1, 2, 64" $((2 * 64 * 4))
expect 0 "wrote $tmp/hf" "$hattn" run "$tmp/one.hattn" --seqlen 64 --heads 2 --head-dim 16 --dtype fp16 --out "$tmp/hf/x/y"
check_npy "$tmp/hf/x/y/o.npy" "<f2" "1, 2, 64, 16" $((2 * 64 * 16 * 2))
if command -v python3 >/dev/null 2>&1 && python3 -c "import numpy" 2>/dev/null; then
  python3 - "$tmp/a" <<'EOF' || fail "numpy disagrees with the files in $tmp/a"
import sys, numpy as np
d = sys.argv[1]
q, k, v, o, l = (np.load(d + "/" + n + ".npy") for n in ("q", "k", "v", "o", "lse"))
assert q.shape == (2, 4, 96, 32) and k.shape == (2, 2, 160, 32) and l.shape == (2, 4, 96)
assert q.dtype == np.float32 and -1 <= q.min() and q.max() < 1 and np.isfinite(o).all()
EOF
fi

# --in: the same inputs give the same output, bit for bit with one thread;
# the options not given come from the files.
expect 0 "from $tmp/a" "$hattn" verify "$tmp/one.hattn" --in "$tmp/a" --threads 1 --out "$tmp/b"
cmp -s "$tmp/a/o.npy" "$tmp/b/o.npy" || fail "verify --in $tmp/a wrote another o.npy"
cmp -s "$tmp/a/q.npy" "$tmp/b/q.npy" || fail "verify --in $tmp/a wrote another q.npy"
expect 0 "bf16 from" "$hattn" verify "$tmp/one.hattn" --in "$tmp/bf"
expect 0 ": ok" "$hattn" verify "$tmp/one.hattn" --in "$tmp/a" --batch 2 --heads 4 --kv-heads 2 --seqlen 96,160 --head-dim 32 --dtype fp32

# Errors in the options.
expect 2 "no pattern 'nope'" "$hattn" verify "$tmp/s.hattn" --pattern nope --seqlen 64
expect 2 "has 7 patterns: name one with --pattern" "$hattn" run "$tmp/s.hattn" --seqlen 64
expect 2 "--dtype: unknown dtype 'fp8' (expected fp32, fp16 or bf16)" "$hattn" run "$tmp/one.hattn" --seqlen 64 --dtype fp8
expect 2 "--kv-heads 3 must divide --heads 8" "$hattn" run "$tmp/one.hattn" --seqlen 64 --kv-heads 3
# Without a GPU driver the cuda backend says so; with one, it verifies.
if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  expect 0 "tolerance 0.01: ok" "$hattn" verify "$tmp/one.hattn" --seqlen 300 --backend cuda --head-dim 64
else
  expect 2 "no CUDA driver: libcuda.so.1" "$hattn" run "$tmp/one.hattn" --seqlen 64 --backend cuda
fi
expect 2 "unknown backend 'tpu'" "$hattn" verify "$tmp/one.hattn" --seqlen 64 --backend tpu
expect 2 "--seqlen is required" "$hattn" run "$tmp/one.hattn"
expect 2 "--seqlen is required" "$hattn" verify "$tmp/one.hattn" --heads 2
expect 2 "--seqlen: expected a positive length" "$hattn" run "$tmp/one.hattn" --seqlen 0
expect 2 "--seed: expected a non-negative integer" "$hattn" run "$tmp/one.hattn" --seqlen 64 --seed x
expect 2 "--head-dim 2048 is above the limit of 1024" "$hattn" run "$tmp/one.hattn" --seqlen 64 --head-dim 2k
expect 2 "hattn run: " "$hattn" run "$tmp/one.hattn" --seqlen 64 --head-dim 64 --block 64,64 --rows 3
expect 2 "--doc-lens: expected" "$hattn" verify "$tmp/s.hattn" --pattern docs --seqlen 64 --doc-lens 10,x
expect 2 "cannot open $tmp/none.hattn" "$hattn" run "$tmp/none.hattn" --seqlen 64

# Errors in --in files: each names the file.
mkdir "$tmp/c"
cp "$tmp/a/k.npy" "$tmp/a/v.npy" "$tmp/c/"
head -c 1000 "$tmp/a/q.npy" >"$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy is truncated: its shape needs 98304 bytes of data, the file holds 872" \
  "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
head -c 100 "$tmp/a/q.npy" >"$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy is truncated inside its header" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
printf 'PK\003\004 not an npy file' >"$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy is not a .npy file" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
# mkhdr DICT: a version 1.0 header of 128 bytes.
mkhdr() { printf '\223NUMPY\001\000\166\000%-117s\n' "$1"; }
{ mkhdr "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 4, 96, 32), }"; tail -c +129 "$tmp/a/q.npy"; } >"$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy is stored in Fortran order" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
{ mkhdr "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 4, 96, 32), }"; tail -c +129 "$tmp/a/q.npy"; } >"$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy has dtype '<i4'" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
{ mkhdr "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 4, 96, 32), }"; tail -c +129 "$tmp/a/q.npy"; } >"$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy has dtype '>f4'" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
{ mkhdr "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4, 96, 32, 1), }"; tail -c +129 "$tmp/a/q.npy"; } >"$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy has a malformed header: 'shape' has more than 4 dimensions" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
{ mkhdr "{'descr': '<f4', 'shape': (2, 4, 96, 32), }"; tail -c +129 "$tmp/a/q.npy"; } >"$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy has a malformed header" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
{ mkhdr "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2, 96, 32), }"; tail -c +129 "$tmp/a/q.npy"; } >"$tmp/c/q.npy"
expect 2 "$tmp/c/k.npy has shape (2, 2, 160, 32), but the options ask for (4, 2, 160, 32)" \
  "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
mkhdr "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4, 0, 32), }" >"$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy has a dimension of 0; every dimension must be in [1, 2^31)" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
{ cat "$tmp/a/q.npy"; printf 'x'; } >"$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy has bytes after the 98304 bytes of data" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
cp "$tmp/a/q.npy" "$tmp/c/q.npy"
expect 2 "$tmp/c/q.npy has shape (2, 4, 96, 32), but the options ask for (2, 4, 96, 64)" \
  "$hattn" verify "$tmp/one.hattn" --in "$tmp/c" --head-dim 64
expect 2 "$tmp/c/q.npy holds '<f4' elements, but the dtype is bf16" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c" --dtype bf16
cp "$tmp/bf/v.npy" "$tmp/c/v.npy"
expect 2 "$tmp/c/v.npy holds '<u2' elements, but the dtype is fp32" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"
rm "$tmp/c/v.npy"
expect 2 "cannot open $tmp/c/v.npy" "$hattn" verify "$tmp/one.hattn" --in "$tmp/c"

# --db: the runtime's lookup compiles and stores the first time, then loads.
expect 0 "kernel compiled" "$hattn" verify "$tmp/one.hattn" --seqlen 200 --heads 2 --db "$tmp/k.db"
expect 0 "kernel db" "$hattn" verify "$tmp/one.hattn" --seqlen 200 --heads 2 --db "$tmp/k.db"
# A stored binary that fails its checksum is ignored, rebuilt and stored again.
if command -v sqlite3 >/dev/null; then
  sqlite3 "$tmp/k.db" "UPDATE kernels SET binary = zeroblob(length(binary))"
  expect 0 "fails its checksum: it is rebuilt; compiling the kernel again" "$hattn" verify "$tmp/one.hattn" \
    --seqlen 200 --heads 2 --db "$tmp/k.db"
  expect 0 "kernel db" "$hattn" verify "$tmp/one.hattn" --seqlen 200 --heads 2 --db "$tmp/k.db"
fi

# gen --backend cuda: readable source and cubins (NVRTC runs without a GPU).
if "$hattn" gen "$tmp/one.hattn" --backend cuda --arch sm_80,sm_90a --out "$tmp/cu" >"$tmp/out" 2>&1; then
  expect 0 "$tmp/cu/" "$hattn" gen "$tmp/one.hattn" --backend cuda --arch sm_90a --emit source --out "$tmp/cu"
  head -1 "$tmp"/cu/*.cu | grep -q "^// Generated by hattn" || { echo "FAIL: generated source lacks its first line"; fails=$((fails + 1)); }
  [ "$(ls "$tmp"/cu/*.cubin | wc -l)" -eq 2 ] || { echo "FAIL: expected two cubins"; fails=$((fails + 1)); }
elif grep -q "built without NVRTC" "$tmp/out"; then
  echo "skip: gen --backend cuda (no NVRTC)"
else
  echo "FAIL: gen --backend cuda:"; sed 's/^/  | /' "$tmp/out"; fails=$((fails + 1))
fi

# gen: what does not need a working compiler.
expect 2 "--arch is required with --backend cuda" "$hattn" gen "$tmp/one.hattn" --backend cuda --out "$tmp/g"
expect 2 "--emit: expected source or cubin" "$hattn" gen "$tmp/one.hattn" --backend cuda --arch sm_90a --emit ptx --out "$tmp/g"
expect 2 "--arch: expected archs such as sm_80,sm_90a" "$hattn" gen "$tmp/one.hattn" --backend cuda --arch sm_70 --out "$tmp/g"
expect 2 "--cpu is required" "$hattn" gen "$tmp/one.hattn" --out "$tmp/g"
expect 2 "--out is required" "$hattn" gen "$tmp/one.hattn" --cpu x86-64-v3
expect 2 "--cpu: expected an LLVM CPU name" "$hattn" gen "$tmp/one.hattn" --cpu 'x"; int y' --out "$tmp/g"
expect 2 "no pattern 'nope'" "$hattn" gen "$tmp/s.hattn" --pattern nope --cpu x86-64-v3 --out "$tmp/g"
expect 2 "--dtype: unknown dtype" "$hattn" gen "$tmp/one.hattn" --cpu x86-64-v3 --out "$tmp/g" --dtype f32
expect 2 "--vec: expected 8 or 16" "$hattn" gen "$tmp/one.hattn" --cpu x86-64-v3 --out "$tmp/g" --vec 4
expect 2 "--name: expected a C identifier" "$hattn" gen "$tmp/one.hattn" --cpu x86-64-v3 --out "$tmp/g" --name 9lives
expect 2 "--needs: expected extensions as LLVM names them" \
  "$hattn" gen "$tmp/one.hattn" --cpu x86-64-v3 --out "$tmp/g" --needs 'avx2;fma'
printf '# comments only\n' >"$tmp/empty.hattn"
expect 2 "the spec has no patterns" "$hattn" gen "$tmp/empty.hattn" --cpu x86-64-v3 --out "$tmp/g"
# A CPU name that is not an x86-64 level: the registration checks its vector
# level only, and says so.
expect 0 "the registration checks only the x86-64-v4 features for CPU znver4" \
  "$hattn" gen "$tmp/s.hattn" --cpu znver4 --out "$tmp/g" --dtype bf16 --head-dim 64
expect 0 "hattn_kernels.h  7 kernels for znver4: bf16, head_dim 64" \
  "$hattn" gen "$tmp/s.hattn" --cpu znver4 --out "$tmp/g" --dtype bf16 --head-dim 64 --needs avx512f,avx512bf16
head -n 1 "$tmp/g/hattn_kernels.h" | grep -q 'Generated by `hattn gen`' || fail "gen: the header does not say it is generated"
[ "$(ls "$tmp/g"/hattn_cpu_*_bf16_d64.o | wc -l)" -eq 7 ] || fail "gen: expected 7 object files in $tmp/g"

if [ $fails -ne 0 ]; then
  echo "$fails failures"
  exit 1
fi
exit 0
