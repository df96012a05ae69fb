#!/bin/sh
# The hattn command where NVRTC cannot be loaded (HATTN_NVRTC_LIBRARY names
# a file that does not exist; runtime/cuda_nvrtc.c reaches NVRTC through
# dlopen): every CUDA request exits with a message that names the library
# and why it did not load, instead of crashing, and the CPU backend works
# as before.  Skips (77) when hattn was built without NVRTC.
set -u
b=${top_builddir:-.}
s=${top_srcdir:-.}
hattn=$b/tools/hattn
spec=$s/examples/mistral_7b.hattn
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

if ! grep -q '^#define HATTN_HAVE_CUDA 1' "$b/config.h"; then
  echo "SKIP: hattn was built without NVRTC"
  exit 77
fi

missing=/nonexistent/libnvrtc.so.13
want="NVRTC ($missing, named by HATTN_NVRTC_LIBRARY) could not be loaded: $missing: "

# expect STATUS CMD...: with NVRTC missing, CMD exits with STATUS and says $want.
expect() {
  st=$1
  shift
  HATTN_NVRTC_LIBRARY=$missing "$@" >"$tmp/out" 2>&1
  got=$?
  if [ "$got" -ne "$st" ] || ! grep -qF -- "$want" "$tmp/out"; then
    echo "FAIL: $* (exit $got, wanted $st and '$want'):"
    sed 's/^/  | /' "$tmp/out" | head -n 20
    fails=$((fails + 1))
  else
    echo "ok: $*"
    sed 's/^/  | /' "$tmp/out" | head -n 2
  fi
}

expect 2 "$hattn" gen "$spec" --backend cuda --arch sm_80 --head-dim 64 --out "$tmp/g"
expect 2 "$hattn" run "$spec" --pattern swa --backend cuda --seqlen 128 --head-dim 64 --out "$tmp/o"
expect 2 "$hattn" verify "$spec" --pattern swa --backend cuda --seqlen 128 --head-dim 64
expect 2 "$hattn" bench --backend cuda --seqlen 1k
tune_st=$(HATTN_NVRTC_LIBRARY=$missing "$hattn" tune "$spec" --pattern swa --backend cuda --seqlen 1k \
  --db "$tmp/k.db" >/dev/null 2>&1; echo $?)
expect "$tune_st" "$hattn" tune "$spec" --pattern swa --backend cuda --seqlen 1k --db "$tmp/k.db"
[ "$tune_st" -ne 0 ] || { echo "FAIL: hattn tune --backend cuda succeeded without NVRTC"; fails=$((fails + 1)); }

# The source needs no NVRTC.
HATTN_NVRTC_LIBRARY=$missing "$hattn" gen "$spec" --backend cuda --arch sm_80 --head-dim 64 --emit source \
  --out "$tmp/src" >"$tmp/out" 2>&1 || { echo "FAIL: gen --emit source without NVRTC:"; cat "$tmp/out"; fails=$((fails + 1)); }

# The CPU backend is unchanged.
if grep -q '^#define HATTN_HAVE_LLVM 1' "$b/config.h"; then
  HATTN_NVRTC_LIBRARY=$missing "$hattn" verify "$spec" --pattern swa --backend cpu --seqlen 200 --head-dim 32 \
    --heads 2 --kv-heads 1 >"$tmp/out" 2>&1 ||
    { echo "FAIL: hattn verify --backend cpu without NVRTC:"; cat "$tmp/out"; fails=$((fails + 1)); }
fi

# With the library there, the same command compiles.
"$hattn" gen "$spec" --backend cuda --arch sm_80 --head-dim 64 --out "$tmp/g2" >"$tmp/out" 2>&1 ||
  { echo "FAIL: hattn gen --backend cuda with NVRTC:"; cat "$tmp/out"; fails=$((fails + 1)); }

[ $fails -eq 0 ] || exit 1
echo "ok: without NVRTC every CUDA request says why, and the CPU backend works"
